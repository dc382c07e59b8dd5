"""Certificates of smoothed models: the bounds (pure math) and the certify driver."""
