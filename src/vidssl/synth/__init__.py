"""Synthetic data with known ground truth, in the real datasets' formats."""
