"""Training: the options table and the one place that decides each value (config), loss, step, loop,
training state, snapshots and the launcher."""
