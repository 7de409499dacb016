"""``python -m delegation.worker``: run the delegation worker until SIGINT/SIGTERM."""

from delegation.worker.main import main

main()
