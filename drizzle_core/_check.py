"""Argument checks shared by every layer: a bad argument fails at the call, naming the culprit."""

from __future__ import annotations

from typing import Any


def check_group_size(g: Any, where: str = "group_size") -> None:
    """A group size is a positive int or ``"auto"``."""
    if g == "auto":
        return
    if isinstance(g, bool) or not isinstance(g, int):
        raise ValueError(f"{where} must be a positive int or 'auto', got {g!r}")
    if g <= 0:
        raise ValueError(f"{where} must be a positive int or 'auto', got {g}")


def fn_name(f: Any) -> str:
    """A user function's name, for labels and messages."""
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__name__
    return str(name)


def check_callable(f: Any, op: str) -> None:
    if not callable(f):
        raise TypeError(f"Dataset.{op} needs a callable, got {type(f).__name__}: {f!r}")
