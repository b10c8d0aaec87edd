"""Local servers that speak real protocols, for offline runs and tests (the OCI store, the hub)."""
