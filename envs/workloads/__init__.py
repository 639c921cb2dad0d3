"""Workload generators and public-trace loaders, one module per family; they know no env."""
