"""The Temporal worker and the local stack (dev server, embedded LLM)."""
