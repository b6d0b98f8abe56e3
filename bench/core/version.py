"""The package version (one place; ``bench.__version__`` and provenance read it)."""

__version__ = "0.1.0"
