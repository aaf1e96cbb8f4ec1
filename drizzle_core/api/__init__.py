"""The user's API: Context, Dataset and iterate — the one place Context and Dataset refer to each other.

Also what a library built on top needs (streaming here; ``drizzle_ml`` uses
the same names from ``drizzle_core``):
the :class:`GroupSizeController` protocol, the :class:`GroupMetrics` it is
told, :class:`AutoGroupSize` (``"auto"``) and the :class:`AIMD` behind it, and
:func:`portable_hash` (partition data the way a shuffle does).
Streaming imports these names only, never this package's private modules
(a test enforces it).
"""

from ..driver import AIMD, GroupMetrics
from ..lineage import portable_hash
from ._context import AutoGroupSize, Context, GroupSizeController, register_stream
from ._dataset import Dataset
from ._iterate import IterateResult
from ._keyed import KeyedIterateResult
from ._progress import ProgressBar
from ._stats import StatCounter

__all__ = ["AIMD", "AutoGroupSize", "Context", "Dataset", "GroupMetrics", "GroupSizeController", "IterateResult",
           "KeyedIterateResult", "ProgressBar", "StatCounter", "portable_hash", "register_stream"]
