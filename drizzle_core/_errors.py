"""Exceptions a user of drizzle_core can see.

Every error names its culprit (the function, the job/stage/partition, the
worker, the transport) because the code that failed usually ran in another
process, where the user cannot put a breakpoint.
"""

from __future__ import annotations


class DrizzleError(Exception):
    """Base class of every error raised by the engine itself."""


class RemoteTraceback(Exception):
    """Carries a traceback formatted on a worker; set as ``__cause__``.

    Python prints the cause before the error, so the user sees the remote
    frames first, then the driver-side error naming job, stage and partition
    (the same trick ``concurrent.futures.process`` uses).
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class TaskError(DrizzleError):
    """A user function raised inside a task on a worker.

    ``job``, ``stage`` and ``partition`` locate the task; ``worker`` names
    the worker; ``remote_traceback`` is the formatted traceback from there;
    ``exception`` is the original exception when it could be pickled back.
    """

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
        super().__init__(message)
        self.job = job
        self.stage = stage
        self.partition = partition
        self.worker = worker
        self.remote_traceback = remote_traceback
        self.exception = exception


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
