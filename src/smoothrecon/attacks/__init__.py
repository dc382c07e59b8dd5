"""Attacks on a reconstruction network: L2 PGD, the gradient-free check, threat models."""
