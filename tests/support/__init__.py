"""Fixtures' building blocks: real components started for tests and cleaned up after."""
