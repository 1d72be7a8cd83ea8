"""The package version, in one place: cards and reports record it."""

__version__ = "0.1.0"
