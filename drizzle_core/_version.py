"""The package version (one place: the CLI, plugins and metadata read it)."""

__version__ = "0.1.0"
