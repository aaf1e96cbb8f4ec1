"""The live dashboard: ``Context(dashboard=True)`` serves a web page of what the Context is doing.

Workers (alive, lost, replaced, joined), each group as it finishes (G and
the G asked for, coordination share, plan / serialize / launch times, jobs
stamped from templates), a task timeline per worker, stream batches
(latency p50/p99, events per second, lag) and iterate loops' convergence.
It reads what the scheduler records anyway (its metrics, its trace hook,
the streams' batch metrics) from a thread of its own, and is closed with
the Context. Nothing imports this package but the Context, and only when a
dashboard is asked for: without one it costs nothing.

It sits below the API layer: it is given the scheduler, and reads streams
through a Protocol (:class:`StreamLike`), so the Context imports it
downward. The guide: docs/guides/dashboard.md.
"""

from ._address import Address, parse
from ._recorder import GroupSpan, Recorder, WorkerEvent
from ._server import Dashboard
from ._snapshot import Collector
from ._watch import IterateWatch, StreamLike

__all__ = ["Address", "Collector", "Dashboard", "GroupSpan", "IterateWatch", "Recorder", "StreamLike",
           "WorkerEvent", "parse"]
