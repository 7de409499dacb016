"""All presentation: the `delegation` command line (typer), tables, progress bars, the report's chart."""
