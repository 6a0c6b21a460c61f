"""The synco agent's node: its persisted state, its watcher, and (to come) its loop and services."""
