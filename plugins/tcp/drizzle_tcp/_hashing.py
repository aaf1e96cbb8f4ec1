"""Do the workers of a session hash alike? The check behind the handshake's ``hash`` fields.

``drizzle_core.portable_hash`` hashes the usual keys (str, numbers,
tuples, dates, enums, dataclasses, ...) the same in every process, but
falls back to Python's ``hash`` for the rest: instances of classes with
their own ``__hash__``. Python salts the hash of str and bytes per process
(PYTHONHASHSEED), so two workers with different seeds send such equal keys
to different reducers, and a reduce_by_key returns a key twice.

Policy (the least surprising we found; documented in the README, "Across
machines"):

* Daemons the driver starts itself (``workers=N``, and their replacements)
  get the driver's seed in their environment (``worker_env``: the driver's
  PYTHONHASHSEED, else one random seed per driver process), so they always
  agree.
* A daemon started by hand has the seed of its own environment. Every
  worker of a session must hash like the session's first worker (worker 0):
  the driver sends worker 0's ``hash`` description in its hello to every
  later worker (at start, ``add_worker``, ``replace_worker``); a daemon that
  hashes differently refuses the driver, with a message saying what to set,
  and the driver raises it as a ``TransportError`` naming the address (and
  checks the daemon's reply itself too).
* The comparison is of a *probe* — the hash of a fixed string — not of the
  seed's text: it is what decides buckets, it tells two "random" seeds apart
  (which never agree) and also catches two Python versions that hash strings
  differently with the same seed. The seed and the Python version are
  reported only to write the message.
* The driver's own seed is not compared: the driver never buckets keys
  (map tasks do, on the workers). A session of one hand-started daemon with
  a random seed therefore works; a second worker must then hash like it,
  which only a process with a fixed, equal seed can.
"""

from __future__ import annotations

import os
import platform
from typing import Any

PROBE = "drizzle: do these processes hash strings alike?"


def describe() -> dict[str, Any]:
    """How this process hashes: ``{"seed": "0" | "random", "probe": int, "python": "3.11.7"}``."""
    seed = os.environ.get("PYTHONHASHSEED", "").strip() or "random"
    return {"seed": seed, "probe": hash(PROBE), "python": platform.python_version()}


def mismatch(mine: Any, reference: Any) -> str | None:
    """None if ``mine`` hashes like ``reference`` (both from :func:`describe`; the reference may name its
    ``worker``), else why not and what to do, as a sentence about "it" (the worker described by ``mine``)."""
    if not isinstance(mine, dict) or not isinstance(reference, dict):
        return "it did not say how it hashes keys (install the same drizzle-core on every host)"
    if isinstance(mine.get("probe"), int) and mine.get("probe") == reference.get("probe"):
        return None
    who = reference.get("worker") or "the session's first worker"
    seed, other = mine.get("seed"), reference.get("seed")
    if seed != other:
        why = f"it runs with PYTHONHASHSEED={seed}, {who} with PYTHONHASHSEED={other}"
    elif seed == "random":
        why = f"it and {who} both run with PYTHONHASHSEED=random, which is another seed in every process"
    elif mine.get("python") != reference.get("python"):
        why = (f"it runs Python {mine.get('python')} and {who} Python {reference.get('python')}, which hash "
               f"strings differently even with the same PYTHONHASHSEED={seed}")
    else:
        why = f"it hashes strings unlike {who}, although both say PYTHONHASHSEED={seed}"
    return (f"{why}. Every worker of a session must hash keys alike, or keys that fall back to Python's "
            f"hash() (instances of classes with their own __hash__) are split across reducers: start every "
            f"`drizzle worker` with the same PYTHONHASHSEED (e.g. `export PYTHONHASHSEED=0` before it), and "
            f"give the driver that PYTHONHASHSEED too when it also starts workers itself (workers=N)")
