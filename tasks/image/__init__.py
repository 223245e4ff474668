"""What the image tasks share: data, partitions, grids, the small CNN, devices, DP planning."""
