"""Protocol: what crosses a process boundary — message tags, tasks, block ids, programs, framing.

The driver's scheduler and the worker runtime are its only readers and
writers; both import it, neither imports the other.
"""

from . import _messages as messages
from ._program import Program
from ._stamp import pack_instances, stamp, unpack_instances
from ._task import MAP, RESULT, Block, Task, shuffle_blocks
from ._wire import DEFAULT_MAX_FRAME, decode, encode, roundtrip

__all__ = ["DEFAULT_MAX_FRAME", "MAP", "RESULT", "Block", "Program", "Task", "decode", "encode", "messages",
           "pack_instances", "roundtrip", "shuffle_blocks", "stamp", "unpack_instances"]
