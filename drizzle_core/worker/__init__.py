"""Worker runtime: the local scheduler and block store every transport runs in its workers.

A transport feeds it messages and gives it a ``send``; the runtime decides
what runs (dependency counting, shuffle writes, result batching).
"""

from ._runtime import WorkerRuntime

__all__ = ["WorkerRuntime"]
