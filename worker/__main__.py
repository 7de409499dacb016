"""``python -m worker``: run the delegation worker until SIGINT/SIGTERM."""

from worker.main import main

main()
