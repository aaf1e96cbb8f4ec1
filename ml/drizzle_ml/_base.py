"""What every estimator shares: parameters, input validation, the fit's context.

Parameters follow scikit-learn: the constructor only stores its keyword
arguments (validated at ``fit``, so ``set_params`` can change them), and
``get_params`` reads them back by the constructor's signature.

Validation runs on the driver *before* any worker is started or any data is
shipped: a bad input is a ``ValueError`` naming the culprit, never a remote
traceback from iteration 17.
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

import drizzle_core as dz


class ConvergenceWarning(UserWarning):
    """``max_iter`` iterations ran before the stopping criterion was met."""


class BaseEstimator:
    """``get_params`` / ``set_params`` / ``repr`` from the constructor's signature."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters, by name (``deep`` is accepted for scikit-learn)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BaseEstimator:
        """Set constructor parameters by name; returns self. Unknown names are a ValueError."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__}.set_params: unknown parameter {name!r}; "
                                 f"valid ones are {sorted(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = []
        for name, value in self.get_params().items():
            if _same(value, defaults.get(name, inspect.Parameter.empty)):
                continue
            shown.append(f"{name}=<array {value.shape}>" if isinstance(value, np.ndarray) else f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def _record_gd_fit(self, fit: Any, n_features: int) -> None:
        """The fitted attributes every gradient-descent estimator sets, and its convergence warning."""
        self.n_iter_ = fit.iterations
        self.loss_curve_ = [s.loss for s in fit.history]
        self.n_features_in_ = n_features
        self.iterate_seconds_ = fit.seconds
        if not fit.converged:
            warnings.warn(f"{type(self).__name__} did not converge in {fit.iterations} iterations "
                          f"(max |gradient| {fit.state.grad_max:.3g} > tol {self.tol}); "  # type: ignore[attr-defined]
                          "raise max_iter or tol", ConvergenceWarning, stacklevel=3)

    def _check_fitted(self, attr: str) -> None:
        if not hasattr(self, attr):
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit first")


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


# ---------------------------------------------------------------- validation
def check_X(X: Any, *, name: str = "X", n_features: int | None = None) -> np.ndarray | sp.csr_matrix:
    """``X`` as a C-contiguous float64 array or a float64 CSR matrix, checked.

    2-D, at least one row and one column, finite. Other sparse formats are
    converted to CSR (row slices of CSR are what the partitions hold).
    """
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        if not np.isfinite(X.data).all():
            raise ValueError(f"{name} contains NaN or infinity")
    else:
        try:
            X = np.asarray(X, dtype=np.float64, order="C")
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a numeric array or a scipy.sparse matrix: {e}") from None
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}; "
                             "reshape a single feature with X.reshape(-1, 1)")
        if not np.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinity")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but the estimator was fitted with {n_features}")
    return X


def check_y(y: Any, n_samples: int, *, numeric: bool) -> np.ndarray:
    """``y`` as a 1-D array of ``n_samples`` labels (float64 when ``numeric``)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"X and y have different numbers of samples: {n_samples} and {y.shape[0]}")
    if numeric:
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"y must be numeric: {e}") from None
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
    elif y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity")
    return y


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_float(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)


def check_group_size(value: Any) -> int | str:
    if value == "auto" and isinstance(value, str):
        return value
    return check_int(value, "group_size")


def check_context(context: Any) -> None:
    if context is not None and not isinstance(context, dz.Context):
        raise ValueError(f"context must be a drizzle_core.Context or None, got {type(context).__name__}")


def check_num_partitions(value: Any) -> int | None:
    return None if value is None else check_int(value, "num_partitions")


@contextlib.contextmanager
def fit_context(context: dz.Context | None) -> Iterator[dz.Context]:
    """The context to fit with: the caller's, or a local one that lives for this fit only.

    A context made here has one worker per core (the local transport's
    default); stopping it on the way out means a fit leaves no process behind.
    """
    if context is not None:
        yield context
        return
    with dz.Context(transport="local") as ctx:
        yield ctx
