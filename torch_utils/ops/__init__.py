"""Low-level ops used by the networks and the augmentation pipeline (upstream-compatible API)."""
