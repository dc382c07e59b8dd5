"""The command line: the parser (`main`) and what each subcommand does (`commands`)."""

from smoothrecon.cli.main import main

__all__ = ["main"]
