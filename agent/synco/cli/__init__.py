"""Synco's command line: one module per command."""
