"""Releasing synthetic data from a run and auditing it for membership inference."""
