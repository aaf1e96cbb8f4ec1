"""The user's data as a source's partitions: what ``Context.parallelize`` splits, and how.

Policy, by kind of input (checked in this order):

* **numpy array** — split by rows (``np.array_split``); each partition is its
  contiguous row slice, an ndarray, so partition functions stay vectorized.
* **scipy.sparse matrix** — split by rows into CSR slices.
* **pandas DataFrame** — split by rows into lists of *records*, each a plain
  tuple of the row's values in column order
  (``df.itertuples(index=False, name=None)``); the index is dropped. Iterating
  a DataFrame yields its column names, so taking it as just another iterable
  gave a silent wrong answer. Records are what ``map``, ``filter`` and
  ``collect`` work on (as in a PySpark RDD of rows), and a two-column frame is
  at once a key-value dataset for ``reduce_by_key`` and ``join``. Tuples rather
  than dicts: smaller to pickle and hashable. For names pass
  ``df.to_dict("records")``, to keep the index ``df.reset_index()``, for
  vectorized partitions (ndarray slices) ``df.to_numpy()``.
* **pandas Series** — its values (``s.tolist()``), the index dropped.
* **a mapping** (a dict) — refused: iterating it yields only its keys, which
  is rarely what was meant (PySpark does exactly that, silently). The error
  says to pass ``d.items()`` for (key, value) pairs or ``list(d)`` for keys.
* **str / bytes** — refused: they would be split into characters.
* **any other iterable** — listed and split into contiguous lists.

pandas is never imported here: a DataFrame or Series is recognised by the
module of its class (as a scipy.sparse matrix is), so drizzle_core depends on
neither and pays nothing for them when they are absent.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def split_input(data: Any, num_partitions: Any) -> list[Any]:
    """``data`` as ``num_partitions`` contiguous partitions, by the policy of the module docstring.

    Raises ValueError for a bad partition count or a 0-d array and TypeError
    for input that would split into something else than its rows, each
    saying what to pass instead.
    """
    n = num_partitions
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"parallelize: num_partitions must be a positive int, got {n!r}")
    if isinstance(data, np.ndarray):
        if data.ndim == 0:
            raise ValueError("parallelize: a 0-d array has no rows to split")
        return [np.ascontiguousarray(p) for p in np.array_split(data, n, axis=0)]
    if _is_sparse(data):
        csr = data.tocsr()
        bounds = np.cumsum([0] + [len(c) for c in np.array_split(np.arange(csr.shape[0]), n)])
        return [csr[a:b] for a, b in itertools.pairwise(bounds)]
    kind = _pandas_kind(data)
    if kind == "DataFrame":
        return _split_list(list(data.itertuples(index=False, name=None)), n)
    if kind == "Series":
        return _split_list(data.tolist(), n)
    if isinstance(data, Mapping):
        raise TypeError(f"parallelize got a {type(data).__name__}, whose iteration yields only its keys: "
                        f"pass d.items() for (key, value) pairs, or list(d) if the keys are what you want")
    if isinstance(data, (str, bytes, bytearray)) or not isinstance(data, Iterable):
        raise TypeError(f"parallelize needs an iterable or a numpy array, got {type(data).__name__}")
    return _split_list(list(data), n)


def _split_list(items: list[Any], n: int) -> list[list[Any]]:
    """``n`` contiguous slices whose lengths differ by at most one (the first ones longer)."""
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        parts.append(items[start:end])
        start = end
    return parts


def _is_sparse(data: Any) -> bool:
    if "scipy.sparse" not in sys.modules and not type(data).__module__.startswith("scipy.sparse"):
        return False
    import scipy.sparse

    return bool(scipy.sparse.issparse(data))


def _pandas_kind(data: Any) -> str | None:
    """"DataFrame" or "Series" for a pandas one (or a subclass's, e.g. geopandas), else None."""
    if "pandas" not in sys.modules:  # nothing can be a pandas object yet: one dict lookup
        return None
    for cls in type(data).__mro__:
        # "pandas.core.frame" up to pandas 2, "pandas" from pandas 3 on
        if cls.__name__ in ("DataFrame", "Series") and cls.__module__.partition(".")[0] == "pandas":
            return cls.__name__
    return None
