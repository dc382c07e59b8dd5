"""Split photos (never crops) into train / validation / test, deterministically from content.

Photos are ranked by SHA-256(salt + photo hash) and cut at the configured proportions, so the
split depends only on the files' contents (not names, order or machine), crops of one photo can
never land in two splits, and adding a photo moves at most a few others across a boundary.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def split_counts(n: int, proportions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Photos per split; validation and test get at least one photo each when n >= 3."""
    total = sum(proportions)
    n_val = round(n * proportions[1] / total)
    n_test = round(n * proportions[2] / total)
    if n >= 3:
        n_val = max(n_val, 1) if proportions[1] > 0 else 0
        n_test = max(n_test, 1) if proportions[2] > 0 else 0
    n_train = n - n_val - n_test
    return n_train, n_val, n_test


def assign_splits(
    hashes: list[str], proportions: tuple[float, float, float], salt: str = "smoothrecon-split"
) -> dict[str, str]:
    """photo hash -> 'train' | 'val' | 'test'."""
    ranked = sorted(hashes, key=lambda h: hashlib.sha256(f"{salt}:{h}".encode()).hexdigest())
    n_train, n_val, _ = split_counts(len(ranked), proportions)
    out = {}
    for i, h in enumerate(ranked):
        out[h] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out
