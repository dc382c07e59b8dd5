"""The package version (pyproject.toml's)."""

VERSION = "0.1.0"
