"""Generated from proto/synco/v1 by scripts/gen-proto; do not edit."""
