"""Shared by the tests that change one field of a dataclass at a time (round trips, unit keys)."""

from __future__ import annotations

import types
import typing


def other_value(value: object, tp: object) -> object:
    """A valid value of annotation `tp` different from `value`."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return next(v for v in typing.get_args(tp) if v != value)
    if origin is tuple and typing.get_origin(typing.get_args(tp)[0]) is typing.Literal:
        # a tuple of choices (distinct): one fewer, or another choice
        assert isinstance(value, tuple)
        if len(value) > 1:
            return value[:-1]
        return (other_value(value[0] if value else None, typing.get_args(tp)[0]),)
    if origin in (typing.Union, types.UnionType):
        return other_value(value, next(a for a in typing.get_args(tp) if isinstance(value, a)))
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value * 0.5 + 0.3
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple):
        return (*value, value[-1] if value else 1)
    raise AssertionError(f"no other value for {value!r} ({tp})")
