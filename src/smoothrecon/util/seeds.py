"""The one seed rule of the project and the generators it seeds.

Every random draw (noise, attack starts, masks, crops) takes a torch.Generator seeded from
`derived_seed(parts...)`, so the same run gives the same numbers on every machine.
"""

from __future__ import annotations

import hashlib

import torch


def derived_seed(*parts: object) -> int:
    """A 48-bit seed from any printable parts, the same on every machine and run: the one
    seed rule of the project (noise, attack starts, masks)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:6], "little")


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed` (noise is drawn where the data is)."""
    return torch.Generator(device=device).manual_seed(int(seed))
