"""The ``dask`` transport: the tcp transport, its daemons hosted by long-running tasks on a Dask cluster.

``Context(transport="dask", client=client, workers=N)`` on any Dask cluster
the user runs (``LocalCluster``, ``SLURMCluster``, ``KubeCluster``,
``Client("tcp://scheduler:8786")``): Dask places, watches and cleans up the
hosts (``_launcher``); Drizzle keeps its own authenticated worker-to-worker
protocol (``drizzle_tcp``: HMAC handshake with a fresh secret per session,
frame MACs, shuffles worker to worker), so no Dask round trip is on the
per-task path.

Options: ``client`` (a ``distributed.Client``; default the current one,
``distributed.get_client()``), ``workers`` (how many Drizzle workers; None:
one per Dask worker; more than the Dask workers is allowed: they share), and
every option of the tcp transport (``start_timeout``, ``frame_mac``,
``tls_cert``/``tls_key``/``tls_ca``, ``keepalive``, ``worker_log_level``,
``replace_lost``, ``connect_deadline``, ...), except ``launcher``.
"""

from __future__ import annotations

from typing import Any

from drizzle_tcp import TcpTransport

from . import _input
from ._launcher import DaskLauncher, check_client

#: seconds a daemon may take to listen once its host task runs (the tcp transport's default start_timeout)
START_TIMEOUT = 60.0


class DaskTransport(TcpTransport):
    """Drizzle workers as children of Dask tasks; see the module docstring."""

    name = "dask"

    def __init__(self, workers: int | None = None, *, client: Any = None, **options: Any) -> None:
        if "launcher" in options:
            raise TypeError("the dask transport brings its own launcher (DaskLauncher): drop launcher=")
        client = default_client() if client is None else client
        check_client(client)
        if workers is None:
            workers = len(client.scheduler_info(n_workers=-1)["workers"])
            if not workers:
                raise ValueError(f"the Dask cluster at {client.scheduler.address} has no workers, so workers=None "
                                 f"(one per Dask worker) means none: start some, or give workers=N")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0:
            raise ValueError(f"the dask transport takes a number of workers (an int > 0), got {workers!r}")
        self.client = client
        self.dask_launcher = DaskLauncher(client, start_timeout=options.get("start_timeout", START_TIMEOUT))
        super().__init__(workers, launcher=self.dask_launcher, **options)

    def from_dask(self, ctx: Any, collection: Any, **options: Any) -> Any:
        """``Context.from_dask``: see :func:`drizzle_dask.from_dask`."""
        return _input.from_dask(ctx, self, collection, **options)


def default_client() -> Any:
    """The current distributed.Client, or an error saying to pass one."""
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        raise ValueError("the dask transport needs a distributed.Client: pass client=Client(...) to "
                         "Context(transport='dask', ...), or create one first") from None
