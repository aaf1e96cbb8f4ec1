"""Frame encoding: pickle protocol 5 with out-of-band buffers.

A frame is::

    u64 body_len | u32 nbuf | u64 len(buffer_i) * nbuf | main pickle | buffer_0 ... buffer_n-1

``body_len`` counts the main pickle and the buffers. Large numpy arrays go
out of band: the sender passes their memory to ``sendmsg`` without a copy,
and the receiver reads the whole body into one ``bytearray`` with
``recv_into`` and unpickles arrays as views into it. Messages that plain
pickle cannot handle (lambdas inside results) fall back to cloudpickle.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import cloudpickle

HEADER = struct.Struct("<QI")
LENGTH = struct.Struct("<Q")
DEFAULT_MAX_FRAME = 1 << 34  # 16 GiB: a sanity bound, configurable per transport


def encode(obj: Any) -> list[Any]:
    """``obj`` as a list of buffers to write in order (header first)."""
    bufs: list[pickle.PickleBuffer] = []
    try:
        main = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    except (pickle.PicklingError, TypeError, AttributeError):
        bufs = []
        main = cloudpickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    if not bufs:
        return [HEADER.pack(len(main), 0), main]
    raws = [b.raw() for b in bufs]
    lengths = [r.nbytes for r in raws]
    header = HEADER.pack(len(main) + sum(lengths), len(raws)) + struct.pack(f"<{len(raws)}Q", *lengths)
    return [header, main, *raws]


def decode(body: bytes | bytearray | memoryview, lengths: tuple[int, ...]) -> Any:
    """Inverse of :func:`encode` for one frame body (without the header)."""
    if not lengths:
        return pickle.loads(body)
    view = memoryview(body)
    main_len = len(view) - sum(lengths)
    buffers = []
    offset = main_len
    for n in lengths:
        buffers.append(view[offset:offset + n])
        offset += n
    return pickle.loads(view[:main_len], buffers=buffers)


def roundtrip(obj: Any) -> Any:
    """Encode and decode ``obj``, as a trip over a socket would (for in-process transports)."""
    frame = encode(obj)
    header = bytes(frame[0])
    _body_len, nbuf = HEADER.unpack_from(header, 0)
    lengths = struct.unpack_from(f"<{nbuf}Q", header, 12) if nbuf else ()
    return decode(b"".join(bytes(p) for p in frame[1:]), lengths)
