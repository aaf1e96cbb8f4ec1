"""Randomized subspace (power) iteration as ``ctx.iterate``'s functions: what runs for PCA and TruncatedSVD.

Halko, Martinsson & Tropp's randomized range finder, on the Gram matrix
``C = Xc' Xc`` (``Xc = X - 1 mean'``; no centering for TruncatedSVD) so the
state is small: an orthonormal (d, l) basis ``Q``, l = components +
oversamples. One iteration:

* ``local`` (each cached block): ``Xc' (Xc Q)`` -- two passes over the rows,
  the centering done implicitly (``Xc Q = X Q - 1 (mean' Q)``) so a CSR block
  is never densified or copied;
* ``combine``: ``a + b``;
* ``update`` (the reducer): ``Q <- orth(C Q)`` by QR for the first
  ``n_iter`` iterations; the last one is the Rayleigh-Ritz step instead: the
  eigen-decomposition of ``Q' C Q`` (l x l) gives the singular values
  squared and rotates ``Q`` into the singular vectors.

So a fit is ``n_iter + 1`` passes over the data, as scikit-learn's
``randomized_svd`` (``n_iter`` power iterations and one to project).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class PowerState:
    """The basis the workers multiply next, and after the last step the Ritz values."""

    Q: np.ndarray                 # (d, l) orthonormal; after the Ritz step: right singular vectors, by value
    values: np.ndarray | None     # (l,) eigenvalues of Q' C Q (singular values squared), descending; last step only
    done: int                     # iterations applied


class GramTimes:
    """``local``: one block's ``Xc' (Xc Q)``, with ``Xc = X - 1 mean'`` (``mean`` None: ``X`` itself)."""

    __slots__ = ("mean",)

    def __init__(self, mean: np.ndarray | None) -> None:
        self.mean = mean

    def __call__(self, partition: list[Any], state: PowerState) -> np.ndarray:
        X = partition[0]
        Q = state.Q
        Y = np.asarray(X @ Q)
        if self.mean is None:
            return np.asarray(X.T @ Y)
        Y -= self.mean @ Q
        Z = np.asarray(X.T @ Y)
        Z -= np.outer(self.mean, Y.sum(axis=0))
        return Z

    def __reduce__(self):
        return (GramTimes, (self.mean,))


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


class PowerUpdate:
    """``update``: ``orth(C Q)`` for ``n_iter`` iterations, then the Rayleigh-Ritz step."""

    __slots__ = ("n_iter",)

    def __init__(self, n_iter: int) -> None:
        self.n_iter = n_iter

    def __call__(self, state: PowerState, Z: np.ndarray) -> PowerState:
        if state.done < self.n_iter:
            Q, _ = np.linalg.qr(Z)
            return PowerState(Q, None, state.done + 1)
        B = state.Q.T @ Z
        values, U = np.linalg.eigh(0.5 * (B + B.T))
        order = np.argsort(values)[::-1]
        return PowerState(state.Q @ U[:, order], np.maximum(values[order], 0.0), state.done + 1)

    def __reduce__(self):
        return (PowerUpdate, (self.n_iter,))


def state_top_value(state: PowerState) -> float:
    """What the progress bar shows: the largest Ritz value once known, else nan."""
    return float(state.values[0]) if state.values is not None else float("nan")
