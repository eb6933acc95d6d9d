"""The package version, in one place (read by the reports and the command line)."""

__version__ = "0.1.0"
