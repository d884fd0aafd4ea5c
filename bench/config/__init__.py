"""Settings: the typed run configuration and its input checks (no torch, no Hydra)."""
