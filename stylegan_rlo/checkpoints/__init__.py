"""Network pickles in the official format: the safe loader and writer (pickles) and its bounds (limits)."""
