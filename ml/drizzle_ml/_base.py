"""What every estimator shares: scikit-learn's estimator protocol, the fit's context, input checks.

The estimators are scikit-learn estimators (``sklearn.base.BaseEstimator``
and the mixins, ``__sklearn_tags__``, ``validate_data``), so ``Pipeline``,
``clone``, ``GridSearchCV`` and ``check_estimator`` treat them as their own.
The one thing scikit-learn does not expect is the ``context`` parameter: a
live set of worker processes, which can be neither copied nor pickled. So:

* ``clone`` (``__sklearn_clone__``) and ``copy.deepcopy`` *share* the
  context: the clone fits on the same workers, as GridSearchCV's clones of
  an estimator with ``n_jobs=...`` share a joblib backend.
* pickling (``pickle``, ``joblib.dump``) drops it: a loaded model has
  ``context=None``. Nothing fitted depends on a context (``predict`` and the
  other methods are numpy on the driver), so it predicts anywhere, and a
  refit runs on that process's default context (:mod:`._context`).

Parameters are validated at ``fit`` (so ``set_params`` can change them),
on the driver *before* any worker is asked for anything: a bad input is a
``ValueError`` naming the culprit, never a remote traceback from iteration 17.
"""

from __future__ import annotations

import copy
import numbers
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_array

import drizzle_core as dz

__all__ = ["ConvergenceWarning", "DrizzleEstimator"]


class DrizzleEstimator(BaseEstimator):
    """scikit-learn's BaseEstimator plus a ``context`` that clones share and pickles leave out."""

    context: dz.Context | None

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True          # CSR throughout (other formats are converted)
        return tags

    def __sklearn_clone__(self) -> DrizzleEstimator:
        ctx = self.__dict__.get("context")
        if ctx is None:
            return super().__sklearn_clone__()
        proxy = copy.copy(self)                # shallow, and without the context: clone the rest as usual
        proxy.context = None
        new = proxy.__sklearn_clone__()
        new.context = ctx
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if state.get("context") is not None:
            state = dict(state, context=None)  # a copy: never touch the live object's __dict__
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> DrizzleEstimator:
        ctx = self.__dict__.get("context")
        if ctx is not None:
            memo[id(ctx)] = ctx                # "copied" as itself: the copy fits on the same workers
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


# ---------------------------------------------------------------- validation
def check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_float(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[Any, ...]) -> Any:
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_group_size(value: Any) -> int | str:
    if value == "auto" and isinstance(value, str):
        return value
    return check_int(value, "group_size")


def check_context(context: Any) -> None:
    if context is not None and not isinstance(context, dz.Context):
        raise ValueError(f"context must be a drizzle_core.Context or None, got {type(context).__name__}")


def check_num_partitions(value: Any) -> int | None:
    return None if value is None else check_int(value, "num_partitions")


def check_common(est: Any) -> None:
    """The engine parameters every estimator has: ``group_size``, ``num_partitions``, ``context``."""
    check_group_size(est.group_size)
    check_num_partitions(est.num_partitions)
    check_context(est.context)


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray | None:
    """``sample_weight`` as float64 (n_samples,), finite and >= 0 with a positive sum; None stays None.

    A scalar is every sample's weight (scikit-learn's convention).
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        w = np.full(n_samples, float(sample_weight))  # type: ignore[arg-type]
    else:
        w = check_array(sample_weight, ensure_2d=False, dtype=np.float64, input_name="sample_weight")
        if w.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D (n_samples,), got shape {w.shape}")
        if w.shape[0] != n_samples:
            raise ValueError(f"sample_weight has {w.shape[0]} values, but X has {n_samples} samples")
    if not np.isfinite(w).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (w < 0).any():
        raise ValueError("sample_weight must be >= 0; it has negative values")
    if not w.sum() > 0:
        raise ValueError("sample_weight sums to zero: there is nothing to fit")
    return np.ascontiguousarray(w)


def weight_sum(w: np.ndarray | None, n: int) -> float:
    return float(n) if w is None else float(w.sum())


def is_csr(X: Any) -> bool:
    return sp.issparse(X) and X.format == "csr"
