"""PageRank's worker-side functions for ``iterate_by_key``: numpy and scipy only (workers never import scikit-learn).

The state is one key per *block* of vertices (a contiguous range of ids),
whose value is ``(x_b, p_b)``: the block's ranks and its personalization.
Block b's data is the column block of the transition matrix cut by
destination block (``S_cb``, the CSR rows of block c, columns of block b) and
the mask of its dangling vertices, so one iteration is, per block, a few
sparse matrix-vector products: numpy's speed, not a Python call per vertex.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def send(b: int, value: tuple[np.ndarray, np.ndarray], data: list[Any]) -> list[tuple[int, np.ndarray]]:
    """Block b's rank flowing along its out-links, one vector per destination block (its own always, so
    every block is updated, also one no link reaches)."""
    x, _ = value
    targets, _dangling = data[0]
    out = [(c, S @ x) for c, S in targets]
    if not any(c == b for c, _ in targets):
        out.append((b, np.zeros(x.shape[0])))
    return out


def dangling_mass(b: int, value: tuple[np.ndarray, np.ndarray], data: list[Any]) -> float:
    """The rank held by block b's vertices without out-links (spread over every vertex by personalization)."""
    return float(value[0][data[0][1]].sum())


def add(a: Any, b: Any) -> Any:
    return a + b


class Update:
    """``x_c = d (M' x + dangling p_c) + (1 - d) p_c``: networkx's update, per block (dangling weights = p)."""

    __slots__ = ("damping",)

    def __init__(self, damping: float) -> None:
        self.damping = damping

    def __reduce__(self) -> tuple[Any, ...]:
        return (Update, (self.damping,))

    def __call__(self, c: int, old: tuple[np.ndarray, np.ndarray], contributions: np.ndarray,
                 dangling: float | None) -> tuple[np.ndarray, np.ndarray]:
        _, p = old
        d = self.damping
        return d * (contributions + (dangling or 0.0) * p) + (1.0 - d) * p, p


def change(c: int, old: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray]) -> float:
    """The L1 change of block c's ranks: networkx's convergence measure, summed over blocks."""
    return float(np.abs(new[0] - old[0]).sum())


class Below:
    __slots__ = ("bound",)

    def __init__(self, bound: float) -> None:
        self.bound = bound

    def __reduce__(self) -> tuple[Any, ...]:
        return (Below, (self.bound,))

    def __call__(self, err: float) -> bool:
        return err < self.bound
