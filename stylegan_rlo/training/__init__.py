"""Training: the options table (options), the one place that decides each value (config), loss, step, loop,
training state, snapshots and the launcher."""
