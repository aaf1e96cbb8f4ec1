"""Exceptions a user of drizzle_core can see.

Every error names its culprit (the function, the job/stage/partition, the
worker, the transport) because the code that failed usually ran in another
process, where the user cannot put a breakpoint.
"""

from __future__ import annotations

import linecache
import re

# A frame's line in a formatted traceback (also inside an exception group's "  | " margin)
_FRAME = re.compile(r'^(?P<margin>[ |]*)File "(?P<file>[^"]+)", line (?P<line>\d+), in ')


def with_source_lines(tb: str) -> str:
    """``tb`` with the source line of each frame that has none, read from the driver's copy of the file.

    A worker on another host may not have the user's script at the path its
    frames name (or at all): its traceback then shows no code. The driver
    ran that script, so its linecache has the lines. Frames whose file the
    driver cannot read either (``<stdin>``, a notebook cell) stay as they are.
    """
    lines = tb.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        m = _FRAME.match(line)
        if m is None:
            continue
        margin = m.group("margin")
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following.startswith(margin + "  ") and _FRAME.match(following) is None:
            continue  # the worker had the source
        name = m.group("file")
        if name.startswith("<") and name.endswith(">"):
            continue
        code = linecache.getline(name, int(m.group("line"))).strip()
        if code:
            out.append(f"{margin}  {code}")
    return "\n".join(out)


class DrizzleError(Exception):
    """Base class of every error raised by the engine itself."""


class RemoteTraceback(Exception):
    """Carries a traceback formatted on a worker; set as ``__cause__``.

    Python prints the cause before the error, so the user sees the remote
    frames first, then the driver-side error naming job, stage and partition
    (the same trick ``concurrent.futures.process`` uses).
    """

    def __init__(self, tb: str) -> None:
        tb = with_source_lines(tb)
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class TaskError(DrizzleError):
    """A user function raised inside a task on a worker.

    ``job``, ``stage`` and ``partition`` locate the task; ``worker`` names
    the worker; ``remote_traceback`` is the formatted traceback from there;
    ``exception`` is the original exception when it could be pickled back;
    its notes (``add_note``: the worker notes which shuffle a map-side task
    wrote for) end the message. ``call_site`` is the action that ran the job
    (``"sum() at etl.py:12"``) when an action of a Dataset did: the message
    then starts with it, so the line the user wrote comes first.
    """

    call_site: str | None = None

    def __init__(
        self,
        message: str,
        *,
        job: int,
        stage: int,
        partition: int,
        worker: str,
        remote_traceback: str,
        exception: BaseException | None = None,
    ) -> None:
        notes = getattr(exception, "__notes__", None)
        if isinstance(notes, list) and notes:
            message = f"{message} ({'; '.join(str(n) for n in notes)})"
        super().__init__(message)
        self.job = job
        self.stage = stage
        self.partition = partition
        self.worker = worker
        self.remote_traceback = with_source_lines(remote_traceback)
        self.exception = exception

    def add_call_site(self, site: str) -> None:
        """Name the user's call that ran the job (once: an action run by another keeps the outer one)."""
        if self.call_site is None and self.args:
            self.call_site = site
            self.args = (f"{site}: {self.args[0]}", *self.args[1:])


class TaskTimeoutError(TaskError):
    """A task ran longer than the Context's ``task_timeout`` and was interrupted.

    Not retried: a task that hangs once (a deadlock, an endless loop, a
    server that never answers) usually hangs again. ``exception`` is the
    :class:`TaskTimeout` raised inside it.
    """


class TaskTimeout(BaseException):
    """Raised inside a task that ran past ``task_timeout`` (on the worker, in the task's thread).

    A ``BaseException``, like ``KeyboardInterrupt``: a task's own ``except
    Exception`` (a retry loop, say) must not swallow it and go on hanging.
    """


class WorkerLostError(DrizzleError):
    """A worker died or its connection dropped while work was in flight."""

    def __init__(self, message: str, *, worker: str) -> None:
        super().__init__(message)
        self.worker = worker


class SerializationError(DrizzleError, TypeError):
    """A function or value could not be serialized to be sent to workers."""


class TransportError(DrizzleError):
    """A transport could not start, connect or move a message."""
