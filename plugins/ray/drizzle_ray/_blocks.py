"""``from_ray``: a cached Drizzle dataset of a Ray Dataset's blocks, each read on the node that holds it.

How a block reaches a task without the driver: the driver materializes the
Ray Dataset, takes its blocks' ObjectRefs (``iter_internal_ref_bundles``:
one partition per block, or per block slice) and hands them to every host
actor (``RayLauncher.hold``: refs travel as refs, Ray counts the actors as
borrowers). Partition ``p`` is a :class:`RayBlock` — a key and a position,
a few bytes — preferred on a Drizzle worker whose node holds block ``p``
(``ray.experimental.get_object_locations``), else anywhere. The task that
reads it asks its host actor over a Unix socket (``_host``); the actor
``ray.get``s the block (from its node's object store, or fetched by Ray
from the node that holds it) and sends the columns back as numpy arrays.
Data never passes through the driver.

Records: ``format="rows"`` (default) yields one dict per row, as
``Dataset.iter_rows()`` does (1-d columns as Python scalars, tensor
columns as ndarrays); ``format="numpy"`` yields one record per block, the
dict of column -> ndarray that ``iter_batches(batch_format="numpy")`` gives.

Lifetime: the dataset is cached (read once); the refs are held by the
actors for the rest of the session, because a lost Drizzle worker's
partitions are read again from them (lineage recovery). A block Ray lost
with its node is rebuilt by Ray from its own lineage when it can be (Ray
Data's read tasks are retryable); when it cannot, reading the partition
fails with Ray's error, named with the partition.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from ._host import BLOCKS_ENV, recv_frame, send_frame

FORMATS = ("rows", "numpy")


@dataclass(frozen=True)
class RayBlock:
    """One partition of a ``from_ray`` dataset: block ``position`` of dataset ``key`` (rows start..end)."""

    key: str
    position: int
    start: int | None = None
    end: int | None = None
    format: str = "rows"

    def columns(self) -> dict[str, Any]:
        """The block's columns, from this worker's host actor (only inside a ray transport's daemon)."""
        path = os.environ.get(BLOCKS_ENV)
        if not path:
            raise RuntimeError(f"{self!r} is read by the Ray actor hosting the worker: it can only be read by a "
                               f"worker of Context(transport='ray') ({BLOCKS_ENV} is not set here)")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            send_frame(sock, (self.key, self.position, self.start, self.end))
            status, value = recv_frame(sock)
        if status != "ok":
            raise RuntimeError(f"the host actor could not read ray block {self.position} of from_ray dataset "
                               f"{self.key}:\n{value}")
        return value

    def __iter__(self):
        cols = self.columns()
        if self.format == "numpy":
            yield cols
            return
        names = list(cols)
        if not names:
            return
        # 1-d columns as Python scalars (as Ray's iter_rows gives for Arrow blocks), tensor columns per row
        values = [c.tolist() if getattr(c, "ndim", 1) == 1 else c for c in cols.values()]
        for i in range(len(values[0])):
            yield {name: col[i] for name, col in zip(names, values)}


def _pieces(bundle: Any) -> list[tuple[Any, int | None, int | None]]:
    """(block ref, slice start, slice end) of each block of a RefBundle (ray 2.40's tuples or 2.60's entries)."""
    blocks = list(bundle.blocks)
    slices = list(getattr(bundle, "slices", None) or [None] * len(blocks))
    out = []
    for entry, cut in zip(blocks, slices):
        ref = entry.ref if hasattr(entry, "ref") else entry[0]
        if cut is None:
            out.append((ref, None, None))
        else:
            out.append((ref, int(cut.start_offset), int(cut.end_offset)))
    return out


def block_refs(dataset: Any) -> list[tuple[Any, int | None, int | None]]:
    """Every block (or block slice) of a Ray Dataset, materialized, in the dataset's order."""
    import ray.data

    if not isinstance(dataset, ray.data.Dataset):
        raise TypeError(f"from_ray reads a ray.data.Dataset, got {type(dataset).__name__}")
    materialized = dataset.materialize()
    return [piece for bundle in materialized.iter_internal_ref_bundles() for piece in _pieces(bundle)]


def place(refs: list[Any], node_of_worker: dict[int, str]) -> list[int | None]:
    """For each block, a live worker on a node that holds it (spread over that node's workers), else None."""
    import ray.experimental

    workers_on: dict[str, list[int]] = {}
    for worker, node in sorted(node_of_worker.items()):
        workers_on.setdefault(node, []).append(worker)
    locations = ray.experimental.get_object_locations(refs) if refs else {}
    load = dict.fromkeys(node_of_worker, 0)
    prefer: list[int | None] = []
    for ref in refs:
        nodes = (locations.get(ref) or {}).get("node_ids") or []
        here = [w for n in nodes for w in workers_on.get(n, [])]
        if here:
            best = min(here, key=lambda w: (load[w], w))
            load[best] += 1
            prefer.append(best)
        else:
            prefer.append(None)
    return prefer


def new_key() -> str:
    return uuid.uuid4().hex[:16]
