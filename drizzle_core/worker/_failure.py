"""The traceback of a failed task, as the worker sends it: pointing at the user's file and line.

Why it needs more than ``traceback.format_exc()``: cloudpickle (3.1 on)
sends a function defined in ``__main__``, a notebook or any module pickled
by value with its code's file name replaced by ``"<dynamic-code>"`` (so
that the same function pickles to the same bytes wherever it was defined).
The worker's frames of that code then say ``File "<dynamic-code>", line 4``
and show no source. The function's globals still name the module's file:
cloudpickle keeps ``__file__`` (with ``__name__`` and ``__package__``) in
the globals it rebuilds. So each such frame gets that file back, and its
source line from the worker's linecache; when the worker cannot read the
file (another host), the driver fills the line in from its own copy
(:class:`drizzle_core.RemoteTraceback`). Line numbers are exact either
way: cloudpickle keeps the code's line table.

A shuffle's map-side task also says which shuffle it wrote for (an error in
``reduce_by_key``'s function happens there): a note naming the shuffle's
call site is added to the exception, so it shows in the traceback and in
the driver's :class:`~drizzle_core.TaskError`.

Only the failure path runs this; a task that succeeds never does.
"""

from __future__ import annotations

import traceback
from types import TracebackType
from typing import Any

from ..protocol import MAP, Task

DYNAMIC = "<dynamic-code>"  # cloudpickle's file name for code pickled by value
NOTE_PREFIX = "in the map side of "  # the note a map-side task's exception gets (read by TaskError)


def task_traceback(e: BaseException, nodes: dict[int, Any], task: Task) -> str:
    """The formatted traceback of ``e``, raised by ``task`` (whose program's nodes are ``nodes``)."""
    if task.kind == MAP:
        reader = nodes.get(task.out[0])
        label = getattr(reader, "label", None)
        if label:
            note = f"{NOTE_PREFIX}{label}"
            if note not in (getattr(e, "__notes__", None) or ()):
                e.add_note(note)
    return format_exception(e)


def format_exception(e: BaseException) -> str:
    """``traceback.format_exception(e)``, with the real file (and source line) of code pickled by value."""
    te = traceback.TracebackException.from_exception(e)
    # Every exception of the chain (causes, contexts, groups), each beside its TracebackException:
    # an explicit stack, never recursion.
    todo: list[tuple[traceback.TracebackException, BaseException | None]] = [(te, e)]
    seen: set[int] = set()
    while todo:
        t, exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        _fix_frames(t, exc.__traceback__)
        if t.__cause__ is not None:
            todo.append((t.__cause__, exc.__cause__))
        if t.__context__ is not None:
            todo.append((t.__context__, exc.__context__))
        for sub_t, sub in zip(getattr(t, "exceptions", None) or (), getattr(exc, "exceptions", None) or ()):
            todo.append((sub_t, sub))
    return "".join(te.format())


def _fix_frames(t: traceback.TracebackException, tb: TracebackType | None) -> None:
    """Give the frames of ``<dynamic-code>`` the file their function's globals name."""
    frames = [f for f, _ in traceback.walk_tb(tb)]
    stack = t.stack
    if len(frames) != len(stack):  # not the frames the summary was made of: leave it as it is
        return
    for i, (fs, frame) in enumerate(zip(stack, frames)):
        if fs.filename != DYNAMIC:
            continue
        real = frame.f_globals.get("__file__")
        if not isinstance(real, str) or not real:
            continue  # a function of a notebook cell or of ``python -c``: no file to name
        stack[i] = traceback.FrameSummary(
            real, fs.lineno, fs.name, lookup_line=True, locals=None,
            end_lineno=getattr(fs, "end_lineno", None), colno=getattr(fs, "colno", None),
            end_colno=getattr(fs, "end_colno", None))
        if fs.locals is not None:
            stack[i].locals = fs.locals
