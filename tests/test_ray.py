"""The ``ray`` transport: conformance, properties, Ray's failures (a worker, a node, the driver), from_ray.

One Ray cluster for the whole session (``ray_cluster``): ``ray.cluster_utils.
Cluster``, Ray's own multi-node-on-one-host harness, started by this module
and ended with ``shutdown()``, which kills exactly the processes it started
(never ``ray stop``, which would kill every Ray on the machine). Why it and
not two ``ray start`` commands: its processes are this test process's
children, so ``no_orphans`` sees any it leaves, a node is added and killed
in-process (``add_node`` / ``remove_node``), and nothing depends on parsing
``ray start``'s output; it starts in 3-5 s here. It is kept small: no
dashboard, 100 MB of object store per node, and the GCS's health checks
made fast (0.3 s x 3) so a node whose raylet is killed is declared dead in
about a second, as a cluster configured for quick failover would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import ray
import reference
from conformance import ProcessConformance, TransportConformance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipelines import build, pipelines
from support import alive, check_pipelines, context, count_call, kill_self_once, wait_all_live, wait_dead, worker_pids

import drizzle_core as dz
from drizzle_core.transport import TransportError

pytestmark = [pytest.mark.timeout(120),
              # Ray's own modules warn at import and at shutdown; this module tests Drizzle, not them
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::ResourceWarning")]

MB = 1024**2


@pytest.fixture(scope="session", autouse=True)
def ray_cluster(tmp_path_factory):
    """A one-node Ray cluster for the session, this process its driver (see the module docstring)."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED")}
    os.environ["RAY_AUTH_MODE"] = "disabled"   # a token file elsewhere on the machine must not switch auth on
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage-reporting actor (and no network attempt)
    os.environ.pop("RAY_ADDRESS", None)
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=6, include_dashboard=False, object_store_memory=100 * MB,
        _system_config={"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                        "health_check_timeout_ms": 300, "health_check_failure_threshold": 3}))
    try:
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        from ray.data import DataContext
        DataContext.get_current().enable_progress_bars = False
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ray_pids(ctx: dz.Context) -> dict[str, list[int]]:
    """The task processes, their daemons (supervisors) and the actors hosting them, by pid on this host."""
    tasks = worker_pids(ctx)
    daemons = [_ppid(p) for p in tasks]
    return {"tasks": tasks, "daemons": daemons, "actors": [_ppid(p) for p in daemons]}


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


class TestRay(TransportConformance, ProcessConformance):
    transport = "ray"


# ------------------------------------------------------------ properties
jobs_strategy = st.lists(st.tuples(pipelines(), st.sampled_from(["sum", "list", "len"])), min_size=1, max_size=4)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.integers(-50, 50), max_size=30), partitions=st.integers(1, 5), jobs=jobs_strategy,
       group_size=st.integers(1, 20))
def test_ray_matches_reference(items, partitions, jobs, group_size):
    check_pipelines(context("ray", 2), items, partitions, jobs, group_size)


def _killer(directory: str, n: int):
    """Identity map that SIGKILLs its own worker at the n-th record any worker sees, once (pickled by value)."""
    def kill(x):
        if count_call(directory) >= n:
            kill_self_once(directory)
        return x
    return kill


_FUNCS = {"sum": sum, "list": list}


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.integers(-20, 20), min_size=5, max_size=30), partitions=st.integers(2, 5),
       jobs=st.lists(st.tuples(pipelines(), st.sampled_from(["sum", "list"])), min_size=1, max_size=3),
       group_size=st.integers(1, 10), kill_at=st.integers(1, 20))
def test_a_worker_killed_mid_group_gives_the_reference_result(tmp_path_factory, items, partitions, jobs,
                                                              group_size, kill_at):
    ctx = context("ray", 2)
    tmp = str(tmp_path_factory.mktemp("kill"))
    src = ctx.parallelize(items, partitions)
    built = [(build(ctx, src.map(_killer(tmp, kill_at)), steps), _FUNCS[fn]) for steps, fn in jobs]
    expected = [[_FUNCS[fn](part) for part in reference.partitions(build(ctx, src, steps))] for steps, fn in jobs]
    n0 = len(ctx.metrics)
    assert ctx.run_jobs(built, group_size=group_size) == expected
    killed = os.path.exists(os.path.join(tmp, "killed"))
    # one loss; a group planned ahead that it hit too counts it as well ("lost ... during group 1, 2")
    recoveries = [m.recoveries for m in ctx.metrics[n0:]]
    assert (max(recoveries) == 1) if killed else (sum(recoveries) == 0), recoveries
    wait_all_live(ctx)  # the replacement actor joins (a new actor in the same bundle)


# ------------------------------------------------------- Ray's failures
def test_a_node_killed_loses_its_worker_and_a_replacement_joins_elsewhere(ray_cluster, no_orphans, caplog):
    """Kill a node's raylet: Ray declares the node and the actor on it dead and says so (Lost) while the
    daemon's sockets are still open; the driver fences that daemon (it leaves), the survivor carries on with
    the exact result, and the replacement actor starts in the same bundle, which Ray moved to the live node."""
    node = ray_cluster.add_node(num_cpus=1, object_store_memory=100 * MB)
    try:
        ray_cluster.wait_for_nodes()
        # SPREAD over two nodes puts one bundle on each
        with dz.Context(transport="ray", workers=2, placement="SPREAD") as ctx:
            pids = _ray_pids(ctx)
            raylet = node.all_processes["raylet"][0].process
            on_victim = [i for i, a in enumerate(pids["actors"]) if _ppid(a) == raylet.pid]
            assert len(on_victim) == 1, (pids, raylet.pid)
            victim = on_victim[0]
            data = ctx.parallelize(range(200), 4).map(lambda x: (x % 5, x)).reduce_by_key(lambda a, b: a + b)
            expected = {k: sum(range(k, 200, 5)) for k in range(5)}
            assert dict(data.collect()) == expected
            os.kill(raylet.pid, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while alive(pids["daemons"][victim]) and time.monotonic() < deadline:
                assert dict(data.collect()) == expected  # the jobs' polls read Ray's news
                time.sleep(0.05)
            assert wait_dead([pids["daemons"][victim], pids["tasks"][victim]], 5) == []
            assert any("ActorDiedError" in r.getMessage() for r in caplog.records if r.name == "drizzle.ray")
            assert dict(data.collect()) == expected
            wait_all_live(ctx, timeout=30)                    # the bundle moved to the head node
            after = _ray_pids(ctx)
            assert after["tasks"][1 - victim] == pids["tasks"][1 - victim]
            assert _ppid(after["actors"][victim]) != raylet.pid
            assert dict(data.collect()) == expected
    finally:
        ray_cluster.remove_node(node, allow_graceful=False)


_DRIVER = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = {path!r}
    import ray
    from support import worker_pids
    import drizzle_core as dz
    with dz.Context(transport="ray", workers=1, address={address!r}) as ctx:  # it calls ray.init itself
        assert ctx.parallelize(range(10), 2).sum() == 45 and ray.is_initialized()
    assert not ray.is_initialized()  # ... and shuts down the Ray it started
    ctx = dz.Context(transport="ray", workers=2, address={address!r})
    tasks = worker_pids(ctx)
    def ppid(pid):
        stat = open(f"/proc/{{pid}}/stat").read()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    daemons = [ppid(p) for p in tasks]
    print(" ".join(map(str, tasks + daemons + [ppid(p) for p in daemons])), flush=True)
    time.sleep(600)
""")


def test_a_driver_killed_takes_its_actors_and_daemons_with_it(ray_cluster, no_orphans, tmp_path):
    """The driver (a Ray driver the transport initialized itself, by address, and shut down at close) is
    killed with SIGKILL: Ray ends the actors it owned, and their daemons die with them."""
    script = _DRIVER.format(path=sys.path, address=ray_cluster.address)
    log = tmp_path / "driver.log"  # a file, not a pipe: Ray's log lines must never fill a pipe and stall it
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=err)
    pids: list[int] = []
    try:
        line = proc.stdout.readline().decode()
        if not line:
            proc.wait(timeout=30)
            pytest.fail(f"the driver ended: {log.read_text(errors='replace')[-3000:]}")
        pids = [int(p) for p in line.split()]
        assert len(pids) == 6, line
        assert all(alive(p) for p in pids)
        proc.kill()
        proc.wait(timeout=10)
        assert wait_dead(pids, timeout=10) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


# ------------------------------------------------------------ bad input
def test_ray_client_address_is_refused_with_what_to_do_instead():
    with pytest.raises(TransportError, match=r"Ray Client.*ray job submit"):
        dz.Context(transport="ray", workers=2, address="ray://10.0.0.5:10001")


def test_impossible_resources_name_requested_and_available(no_orphans):
    t0 = time.monotonic()
    with pytest.raises(TransportError, match=r"could not place 2 workers \(\{'CPU': 64.0\} each.*requested "
                                             r"\{'CPU': 128.0\} in total; the cluster has \{'CPU': 6.0.*available"):
        dz.Context(transport="ray", workers=2, resources_per_worker={"CPU": 64}, placement_timeout=1)
    assert time.monotonic() - t0 < 10

    def left() -> list:  # the group asked for is removed, not left pending in the cluster
        return [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"
                and any(b.get("CPU") == 64 for b in pg["bundles"].values())]
    deadline = time.monotonic() + 10
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left() == []


@pytest.mark.parametrize("bad, match", [
    (dict(placement="TIGHT"), r"placement must be one of .*PACK.*got 'TIGHT'"),
    (dict(resources_per_worker={"CPU": -1}), r"resources_per_worker: 'CPU': -1"),
    (dict(resources_per_worker={"CPU": 0}), r"asks for nothing"),
    (dict(placement_timeout=0), r"placement_timeout must be a positive"),
])
def test_bad_options_are_errors_naming_them(bad, match):
    with pytest.raises(ValueError, match=match):
        dz.Context(transport="ray", workers=2, **bad)


def test_drizzle_transports_lists_ray():
    out = subprocess.run([sys.executable, "-m", "drizzle_core._cli", "transports"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    line = next((row for row in out.stdout.splitlines() if row.split()[:1] == ["ray"]), None)
    assert line is not None and "drizzle-ray" in line, out.stdout


# -------------------------------------------------------------- from_ray
def test_from_ray_reads_blocks_where_they_are_and_again_after_a_loss(no_orphans):
    """Rows and numpy batches of a computed Ray Dataset; the cached partitions of a lost worker are read again
    from the Ray blocks the actors hold (its replacement gets them too)."""
    ds = ray.data.range(400, override_num_blocks=4).map_batches(lambda b: {"id": b["id"], "sq": b["id"] ** 2})
    with dz.Context(transport="ray", workers=2) as ctx:
        rows = ctx.from_ray(ds)
        assert rows.num_partitions == 4
        assert rows.take(3) == [{"id": 0, "sq": 0}, {"id": 1, "sq": 1}, {"id": 2, "sq": 4}]
        assert sorted(r["id"] for r in rows.collect()) == list(range(400))
        assert rows.map(lambda r: r["sq"]).sum() == sum(i * i for i in range(400))
        # each block was read by a worker beside it, and both read some (spread over the node's two)
        where = rows.map_partitions(lambda it: [(os.getpid(), len(list(it)))]).collect()
        assert len({pid for pid, _ in where}) == 2 and sum(n for _, n in where) == 400
        batches = ctx.from_ray(ds, format="numpy").collect()
        assert [sorted(b) for b in batches] == [["id", "sq"]] * 4
        assert np.array_equal(np.sort(np.concatenate([b["id"] for b in batches])), np.arange(400))
        with pytest.raises(ValueError, match=r"format must be one of 'rows', 'numpy'"):
            ctx.from_ray(ds, format="pandas")
        os.kill(worker_pids(ctx)[1], signal.SIGKILL)
        assert rows.map(lambda r: r["sq"]).sum() == sum(i * i for i in range(400))
        wait_all_live(ctx)
        assert sorted(r["id"] for r in rows.collect()) == list(range(400))


def test_from_ray_needs_a_ray_dataset(no_orphans):
    with dz.Context(transport="ray", workers=1) as ctx, pytest.raises(TypeError, match=r"ray\.data\.Dataset"):
        ctx.from_ray([1, 2, 3])
