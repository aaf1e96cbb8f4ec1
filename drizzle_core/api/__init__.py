"""The user's API: Context, Dataset and iterate — the one place Context and Dataset refer to each other."""

from ._context import Context, register_stream
from ._dataset import Dataset
from ._iterate import IterateResult

__all__ = ["Context", "Dataset", "IterateResult", "register_stream"]
