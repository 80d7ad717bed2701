"""The `fieldgate` command line: thin typer commands over the `gateway` package."""
