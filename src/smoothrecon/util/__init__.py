"""Plumbing every layer shares: atomic files, progress bars, device and precision, ranks, seeds."""
