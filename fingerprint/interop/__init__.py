"""Bridges to other toolkits (optional extras; the core never imports this package)."""
