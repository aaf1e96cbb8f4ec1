"""``from_dask``: a Dask collection's partitions as a cached Drizzle dataset, read beside where they are.

What a partition becomes (the ``records`` option, for dataframes):

* a dask **array**: its blocks along the rows (it is rechunked first so that
  only axis 0 is split), each an ndarray partition, as ``parallelize`` makes
  of an ndarray: ``map`` sees rows, ``map_partitions`` the block, ``sum``
  sums along axis 0.
* a dask **dataframe**: ``records="dicts"`` (default) one dict per row,
  ``{column: value}`` (what ``map``/``filter``/``key_by`` on rows expect, like
  a Spark Row); ``"tuples"`` one tuple per row, in column order;
  ``"frames"`` the partition's pandas DataFrame as the partition's only
  record (for code that works on frames). ``index=True`` makes the index a
  column first (``reset_index``). A **Series** gives its values
  (``"frames"``: the pandas Series).
* a dask **bag**: its partitions' items.

How it is read, without the driver in between: the collection is persisted
on the Dask cluster, ``Client.who_has`` says which Dask worker holds each
partition, and partition p's loader is preferred on the Drizzle worker
hosted by that Dask worker (``from_partitions(prefer=)``). The loader runs
in the Drizzle worker process, which is not a Dask worker: it opens a
``distributed.Client`` to the scheduler once per process (cached,
``direct_to_workers=True``), and gathers the key, which comes straight from
the Dask worker holding it — beside it, over loopback. The driver holds the
persisted collection while the dataset lives, so a Drizzle worker lost later
re-reads its partitions from Dask (lineage); Dask recomputes a lost key.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

#: seconds a loader waits for its key (it is in memory: this only bounds a cluster in trouble)
READ_TIMEOUT = 120.0
#: seconds a dropped dataset's Dask futures are kept before they are released (see ``_release_later``)
RELEASE_GRACE = 2.0
RECORDS = ("dicts", "tuples", "frames")


@dataclass(frozen=True)
class DaskBlock:
    """One partition to read: a key of a persisted collection, and what to make of it."""

    scheduler: str
    key: Any
    kind: str                      # "array" | "frame" | "series" | "bag"
    records: str = "dicts"
    index: bool = False
    security: Any = None           # the driver client's distributed.Security (TLS to the cluster), if any
    timeout: float = READ_TIMEOUT

    def read(self) -> Any:
        data = _fetch(self)
        if self.kind == "array":
            return np.asarray(data)
        if self.kind == "bag":
            return list(data)
        if self.index:
            data = data.reset_index()
        if self.records == "frames":
            return [data]
        if self.kind == "series" or getattr(data, "ndim", 2) == 1:
            return data.tolist()
        if self.records == "tuples":
            return list(data.itertuples(index=False, name=None))
        return data.to_dict("records")


def load(blocks: Any) -> Any:
    """The map_partitions function of a from_dask dataset: read the partition's one block."""
    out: Any = []
    for block in blocks:
        out = block.read()
    return out


_lock = threading.Lock()
#: (scheduler address) -> this process's client to it (a Drizzle worker process makes one, once)
_clients: dict[str, Any] = {}


def _client_for(block: DaskBlock) -> Any:
    from distributed import Client

    with _lock:
        client = _clients.get(block.scheduler)
        if client is None or client.status != "running":
            client = Client(block.scheduler, set_as_default=False, direct_to_workers=True,
                            security=block.security, timeout=block.timeout)
            _clients[block.scheduler] = client
        return client


def _fetch(block: DaskBlock) -> Any:
    from distributed import Future

    client = _client_for(block)
    # "memory": the driver holds the key in memory (it waited for it); gathering it asks the scheduler who has
    # it and reads it straight from that worker (it falls back to the scheduler, and waits, if it moved)
    future = Future(block.key, client=client, state="memory")
    try:
        return future.result(timeout=block.timeout)
    except TimeoutError:
        raise TimeoutError(f"from_dask: the Dask key {block.key!r} did not arrive from the cluster at "
                           f"{block.scheduler} within {block.timeout:.0f}s") from None
    finally:
        future.release()


def _normalize(collection: Any) -> tuple[str, Any]:
    """The kind of a collection, and the collection as it is persisted (arrays: split along rows only)."""
    import dask

    if not dask.is_dask_collection(collection):
        raise TypeError(f"from_dask takes a dask array, dataframe, series or bag, got {type(collection).__name__}")
    module = type(collection).__module__
    name = type(collection).__name__
    if name == "Array" and module.startswith("dask.array"):
        if collection.ndim == 0:
            raise ValueError("from_dask: a 0-d dask array has no rows to partition")
        if any(len(c) > 1 for c in collection.chunks[1:]):
            collection = collection.rechunk({axis: -1 for axis in range(1, collection.ndim)})
        return "array", collection
    if name == "Bag" and module.startswith("dask.bag"):
        return "bag", collection
    if module.startswith("dask.dataframe") or module.startswith("dask_expr"):
        if name == "DataFrame":
            return "frame", collection
        if name == "Series":
            return "series", collection
    raise TypeError(f"from_dask takes a dask array, dataframe, series or bag, got {module}.{name}")


def from_dask(ctx: Any, transport: Any, collection: Any, *, records: str = "dicts", index: bool = False,
              timeout: float = READ_TIMEOUT) -> Any:
    """A cached Drizzle dataset of ``collection``'s partitions, each read beside the Dask worker holding it."""
    import distributed

    if records not in RECORDS:
        raise ValueError(f"from_dask: records must be one of {RECORDS}, got {records!r}")
    kind, collection = _normalize(collection)
    client = transport.client
    persisted = client.persist(collection)
    futures = distributed.futures_of(persisted)
    for f in futures:  # wait until each is in memory (without bringing it here)
        if f.exception() is not None:
            f.result()  # raises the computation's own error, with its traceback
    keys = _partition_keys(futures, _partitions(kind, collection))
    who_has = {_key(k): v for k, v in client.who_has(futures).items()}
    dask_to_drizzle: dict[str, list[int]] = {}
    for index_, worker in sorted(transport.dask_launcher.placement().items()):
        dask_to_drizzle.setdefault(worker, []).append(index_)
    prefer: list[int | None] = []
    for p, key in enumerate(keys):
        holders = [w for w in who_has.get(_key(key), ()) if w in dask_to_drizzle]
        here = dask_to_drizzle[holders[p % len(holders)]] if holders else []
        prefer.append(here[p % len(here)] if here else None)
    security = client.security if getattr(client.security, "require_encryption", False) else None
    scheduler = client.scheduler.address
    parts = [[DaskBlock(scheduler, key, kind, records, index, security, timeout)] for key in keys]
    label = f"from_dask({type(collection).__name__} of {len(keys)} partitions)"
    ds = ctx.from_partitions(parts, prefer=prefer, label=label).map_partitions(load).cache()
    # The Dask data lives as long as the dataset (lineage re-reads it), and a little longer: see _release_later
    weakref.finalize(ds, _release_later, client, futures)
    return ds


def _partitions(kind: str, collection: Any) -> int:
    return collection.numblocks[0] if kind == "array" else collection.npartitions


def _partition_keys(futures: list[Any], n: int) -> list[Any]:
    """The persisted keys in partition order.

    Not ``__dask_keys__()``: a persisted dataframe's expression has names of its
    own, aliases of its futures' keys. Every future of one persisted collection
    is ``(name, i, 0, ...)`` for partition (row block) i.
    """
    keys = sorted((f.key for f in futures), key=lambda k: k[1:])
    if len(keys) != n or not all(isinstance(k, tuple) and len(k) >= 2 and k[0] == keys[0][0] for k in keys):
        raise TypeError(f"from_dask: cannot tell the {n} partitions of this collection apart from its persisted "
                        f"keys {keys[:3]}...")
    return keys


def _release_later(client: Any, futures: list[Any]) -> None:
    """Release a dropped dataset's futures ``RELEASE_GRACE`` seconds from now, not at once.

    Why. The same collection persisted again (``from_dask(ddf)`` twice in a
    row) has the same keys. Released at once, the client's last reference to
    a key goes, the scheduler is told to forget it, and the new persist's
    futures can be marked done by the scheduler's answer to the previous
    persist, still on its way: the driver then hands out a key the scheduler
    no longer has, and a worker's read of it is cancelled ("cancelled for
    reason: unknown", in every plain run of 150 back-to-back reads).
    Held a moment longer, a persist meanwhile only adds a reference: nothing
    is forgotten, and after the grace nothing of the old persist is in flight.
    """
    loop = getattr(client, "loop", None)
    if loop is None or client.status != "running":
        _release(futures)
        return
    try:
        # the client's loop is the only thread that may schedule on it: add_callback is its thread-safe door
        loop.add_callback(loop.call_later, RELEASE_GRACE, _release, futures)
    except RuntimeError:  # the loop is closing (interpreter exit): release now
        _release(futures)


def _release(futures: list[Any]) -> None:
    for f in futures:
        f.release()


def _key(key: Any) -> Any:
    """A key as ``who_has`` returns it (tuples may come back as lists)."""
    return tuple(key) if isinstance(key, list) else key
