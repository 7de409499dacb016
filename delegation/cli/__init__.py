"""The ``delegation`` command line (typer)."""
