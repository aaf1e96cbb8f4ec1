"""The one Context the documentation's examples share (``ctx`` in every page but getting-started).

Starting two worker processes takes ~0.6 s on the 2-core CI machine; one per page made the doctest build twice
as long. The context stops at exit.
"""

from __future__ import annotations

import atexit

import drizzle_core as dz

_shared: list[dz.Context] = []


def context() -> dz.Context:
    """The shared ``dz.Context(workers=2)``, started on first use."""
    if not _shared:
        _shared.append(dz.Context(workers=2))
        atexit.register(_shared[0].stop)
    return _shared[0]
