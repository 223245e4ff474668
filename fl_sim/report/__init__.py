"""Reports and comparisons, made from run folders alone (they read files, never a live run)."""
