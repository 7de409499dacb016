"""The Temporal worker: builds the dependencies and runs it (`python -m delegation.worker`)."""
