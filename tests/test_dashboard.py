"""The live dashboard, looked at in a real browser: headless Chromium, from Debian's package.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``, what Playwright
itself does underneath), by the small client below: no test dependency, and one page stays open while
the Context runs, so the test sees the page itself update (``--dump-dom`` loads a page once and prints
it; it cannot watch a stream). The tests skip only when there is no Chromium, saying why; CI installs it
(.ci/run).

What is checked is what a user would look at: the page loads and shows the workers; the numbers of the
groups table and the tiles are ctx.metrics' (to the digits shown); the stream card counts up while a
stream runs and ends on its summary's figures; a lost worker shows as lost and replaced; a screenshot
is a real picture of the page. And the rules: off, nothing is imported or started; on, an address other
than loopback is answered only with the token; closing the Context leaves no thread or socket.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import support

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars"]
WIDTH, HEIGHT = 1280, 1800


def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """The pipe's ends moved to fds >= 10, so that putting Chromium's on 3 and 4 cannot clobber one of them."""
    out = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return out  # type: ignore[return-value]


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol on a pipe (JSON messages ended by NUL)."""

    def __init__(self, profile: pathlib.Path) -> None:
        to_chrome_r, self._to_chrome = _high(os.pipe())
        self._from_chrome, from_chrome_w = _high(os.pipe())
        # Chromium reads commands on fd 3 and writes replies on fd 4: bash (dash takes fds up to 9 only) puts them there
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", script, CHROMIUM, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._ids = iter(range(1, 1 << 30))
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self.errors: list[str] = []  # JavaScript exceptions and console errors of the page
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for method in ("Page.enable", "Runtime.enable"):
            self.call(method, session=self.session)
        self.call("Emulation.setDeviceMetricsOverride", session=self.session, width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": {"message": "Chromium closed the pipe"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                elif msg.get("method") == "Runtime.exceptionThrown":
                    self.errors.append(json.dumps(msg["params"]["exceptionDetails"])[:500])
                elif msg.get("method") == "Runtime.consoleAPICalled" and msg["params"]["type"] == "error":
                    self.errors.append(json.dumps(msg["params"]["args"])[:500])

    def call(self, method: str, session: str | None = None, timeout: float = 30.0, **params) -> dict:
        mid = next(self._ids)
        msg = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies and -1 not in self._replies:
                left = deadline - time.monotonic()
                assert left > 0, f"Chromium did not answer {method} in {timeout} s"
                self._cond.wait(left)
            reply = self._replies.pop(mid, None) or self._replies[-1]
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=self.session, url=url)
        self.wait_for("document.readyState === 'complete' && document.getElementById('overview') !== null")

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-able)."""
        out = self.call("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True,
                        awaitPromise=True)
        assert "exceptionDetails" not in out, out["exceptionDetails"]
        return out["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"the page never showed: {expression}"
            time.sleep(0.05)

    def screenshot(self) -> bytes:
        data = self.call("Page.captureScreenshot", session=self.session, format="png", captureBeyondViewport=True)
        return base64.b64decode(data["data"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group Chromium leads, started here
            self.proc.wait(10)
        os.close(self._to_chrome)
        self._reader.join(5)
        os.close(self._from_chrome)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no Chromium: `apt-get install -y chromium` (Debian's package) could not be run here")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()
    assert not b.errors, f"the page had JavaScript errors: {b.errors}"


@pytest.fixture(scope="module")
def ctx():
    with dz.Context(transport="local", workers=2, dashboard="127.0.0.1:0") as c:
        yield c


def _table(browser: Browser, table: str, key: str) -> dict[int, dict[str, str]]:
    """The rows of a table of the page: {row key: {data-field: text}}."""
    rows = browser.js(f"""Array.from(document.querySelectorAll('#{table} tbody tr')).map(tr => [tr.dataset.{key},
        Object.fromEntries(Array.from(tr.querySelectorAll('[data-field]')).map(c => [c.dataset.field,
        c.textContent]))])""")
    return {int(k): v for k, v in rows}


def _tile(browser: Browser, scope: str, field: str) -> str:
    return browser.js(f"document.querySelector(`{scope} [data-field='{field}']`).textContent")


def _ms(text: str) -> float:
    return float(text) / 1e3


def _step(state, total):
    return 0.5 * state + total / 1000.0


# ------------------------------------------------------------------ in the browser


def test_the_page_shows_the_workers_and_the_groups_as_ctx_metrics_has_them(ctx, browser):
    ds = ctx.parallelize(range(2000), 4).cache()
    assert ctx.run_jobs([(ds, sum)] * 40, group_size=8) == [[sum(range(i * 500, i * 500 + 500)) for i in range(4)]] * 40
    data = ctx.parallelize(np.arange(100.0), 4)
    out = ctx.iterate(data, 0.0, local=lambda p, s: float(p.sum()), combine=lambda a, b: a + b,
                      update=_step, iterations=50, group_size=10)
    assert ctx.dashboard_url.startswith("http://127.0.0.1:")
    browser.open(ctx.dashboard_url)
    metrics = ctx.metrics
    browser.wait_for(f"document.body.dataset.groups === '{len(metrics)}'")

    workers = _table(browser, "workers-table", "worker")
    assert sorted(workers) == [0, 1] and {w["state"] for w in workers.values()} == {"alive"}
    assert browser.js("document.querySelector('#workers-table tbody tr td:nth-child(2)').textContent") == \
        ctx.workers[0]

    shown = _table(browser, "groups-table", "group")
    assert len(shown) == min(12, len(metrics))
    by_group = {m.group: m for m in metrics}
    for g, row in shown.items():
        m = by_group[g]
        assert (int(row["jobs"]), int(row["planned"]), int(row["stamped"]), int(row["tasks"]), int(row["workers"]),
                int(row["recoveries"])) == (m.jobs, m.planned_size, m.stamped, m.tasks, m.workers, m.recoveries)
        assert abs(float(row["coordination"].rstrip("%")) / 100 - m.coordination) <= 0.0005 + 1e-9
        for field, value in (("plan", m.plan_s), ("serialize", m.serialize_s), ("launch", m.launch_s),
                             ("wall", m.wall_s)):
            assert abs(_ms(row[field]) - value) <= 0.000005 + 1e-9, (field, row[field], value)
    assert max(shown) == metrics[-1].group
    assert any(int(r["stamped"]) > 0 for r in shown.values()), "iterations repeat a shape: jobs are stamped"
    assert _tile(browser, "#overview", "groups") == str(len(metrics))
    assert _tile(browser, "#overview", "stamped") == f"{sum(m.stamped for m in metrics):,}"
    assert _tile(browser, "#overview", "jobs-done") == f"{sum(m.jobs for m in metrics):,}"
    assert _tile(browser, "#overview", "current-g") == f"{metrics[-1].jobs} ({metrics[-1].planned_size})"
    assert _tile(browser, "#overview", "workers-alive") == "2 / 2"

    # the iterate loop: its iteration count, and its scalar state plotted
    card = "#iterates [data-iterate='1']"
    browser.wait_for(f"document.querySelector(`{card} [data-field='status']`)?.textContent === 'done'")
    assert _tile(browser, card, "iteration") == f"{out.iterations} / 50"
    assert float(_tile(browser, card, "latest")) == pytest.approx(out.state, rel=1e-3)
    assert browser.js(f"document.querySelectorAll(`{card} [data-chart='state'] path`).length") == 1
    # the task timeline: every worker's lane has tasks
    assert browser.js("document.querySelectorAll('#timeline svg rect').length") > 0
    assert browser.js("document.querySelectorAll('#timeline svg text').length") >= 2


def test_the_page_updates_while_a_stream_runs(ctx, browser):
    browser.open(ctx.dashboard_url)  # loaded once: what changes below changes in this page, without a reload
    browser.wait_for("document.body.dataset.live === '1'")
    stream = ctx.stream(dz.GeneratorSource(lambda p, b, t: list(range(50)), 2), batch_interval=0.05)
    stream.map(lambda x: (x % 5, 1)).reduce_by_key(lambda a, b: a + b).collect_sink()
    card = "#streams [data-stream='1']"
    done = threading.Event()
    runner = threading.Thread(target=lambda: (stream.run(duration=2.5), done.set()))
    runner.start()
    seen = []
    try:
        browser.wait_for(f"document.querySelector(`{card}`) !== null")
        while not done.is_set():
            seen.append(int(_tile(browser, card, "batches").replace(",", "")))
            time.sleep(0.2)
    finally:
        runner.join(30)
    counts = sorted(set(seen))
    assert len(counts) >= 3 and seen == sorted(seen), f"the batch count did not count up while it ran: {seen}"
    # when it is over, the card shows the run's own figures
    n = len(stream.metrics)
    browser.wait_for(f"document.querySelector(`{card} [data-field='batches']`).textContent === '{n}' && "
                     f"document.querySelector(`{card} [data-field='running']`).textContent === 'stopped'")
    summary = stream.metrics_summary()
    assert abs(_ms(_tile(browser, card, "latency-p50")) - summary.latency_p50) <= 0.000005 + 1e-9
    assert abs(_ms(_tile(browser, card, "latency-p99")) - summary.latency_p99) <= 0.000005 + 1e-9
    assert abs(int(_tile(browser, card, "events-per-s").replace(",", "")) - summary.events_per_s) <= 0.5
    assert _tile(browser, card, "events") == f"{summary.events:,}"
    assert browser.js(f"document.querySelectorAll(`{card} [data-chart='latency'] path`).length") == 2
    browser.wait_for(f"document.body.dataset.groups === '{len(ctx.metrics)}'")


def test_a_lost_worker_shows_as_lost_then_replaced(ctx, browser):
    browser.open(ctx.dashboard_url)
    victim = support.worker_pids(ctx)[1]
    os.kill(victim, signal.SIGKILL)
    support.wait_dead([victim])
    ds = ctx.parallelize(range(100), 4)
    assert ctx.run_jobs([(ds, sum)] * 4, group_size=4)[0] == [sum(range(q * 25, q * 25 + 25)) for q in range(4)]
    support.wait_all_live(ctx)
    row = "#workers-table tr[data-worker='1']"
    browser.wait_for(f"document.querySelector(`{row} [data-field='replaced']`)?.textContent === '1' && "
                     f"document.querySelector(`{row} [data-field='state']`).textContent === 'alive'")
    row = _table(browser, "workers-table", "worker")[1]
    assert row["lost"] == "1" and row["state"] == "alive"
    events = browser.js("document.getElementById('worker-events').textContent")
    assert "lost" in events and "replaced" in events


def test_a_screenshot_is_a_picture_of_the_page(ctx, browser, tmp_path):
    browser.open(ctx.dashboard_url)
    browser.wait_for(f"document.body.dataset.groups === '{len(ctx.metrics)}' && "
                     "document.querySelectorAll('#timeline svg rect').length > 0")
    png = browser.screenshot()
    (tmp_path / "dashboard.png").write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert width == WIDTH and height >= 900
    # the PNG decoded (by the browser's own decoder, into a canvas that is not shown) and looked at
    seen = browser.js(f"""(async () => {{
        const img = new Image();
        img.src = "data:image/png;base64,{base64.b64encode(png).decode()}";
        await img.decode();
        const c = document.createElement("canvas");
        c.width = img.width; c.height = img.height;
        const g = c.getContext("2d");
        g.drawImage(img, 0, 0);
        const px = g.getImageData(0, 0, c.width, c.height).data;
        const at = (x, y) => Array.from(px.slice((y * c.width + x) * 4, (y * c.width + x) * 4 + 3));
        const colours = new Set();
        let strong = 0;
        for (let y = 0; y < c.height; y += 3) for (let x = 0; x < c.width; x += 3) {{
            const i = (y * c.width + x) * 4, r = px[i], gr = px[i + 1], b = px[i + 2];
            colours.add((r << 16) | (gr << 8) | b);
            if (Math.max(r, gr, b) - Math.min(r, gr, b) > 100) strong += 1;
        }}
        return {{header: at(20, 10), background: at(3, c.height - 3), colours: colours.size, strong}};
    }})()""")
    assert max(seen["header"]) < 80, f"the page's dark header bar is missing: {seen}"  # #1d2430
    assert min(seen["background"]) > 200, f"the page's light background is missing: {seen}"
    assert seen["colours"] > 100, f"a blank or unstyled page: {seen}"
    assert seen["strong"] > 200, f"no chart or timeline colours: {seen}"  # saturated pixels: lines, bars, tasks


# ------------------------------------------------------------------ the rules, over HTTP


def _get(url: str, host: str | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read(), dict(e.headers)


def test_the_state_is_json_and_the_page_loads_nothing_from_elsewhere(ctx):
    status, body, headers = _get(ctx.dashboard_url + "api/state")
    assert status == 200 and headers["Content-Type"] == "application/json"
    state = json.loads(body)
    assert state["groups"]["count"] == len(ctx.metrics)
    assert [w["name"] for w in state["workers"]] == ctx.workers
    status, page, headers = _get(ctx.dashboard_url)
    assert status == 200 and b"EventSource" in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    own = page.replace(b"http://www.w3.org/2000/svg", b"")  # SVG's namespace, a name: nothing is fetched from it
    assert b"http://" not in own and b"https://" not in own and b"//cdn" not in own
    # a page elsewhere reaching the loopback dashboard through a rebound DNS name is refused
    port = ctx.dashboard_url.split(":")[2].rstrip("/")
    assert _get(ctx.dashboard_url, host=f"evil.example:{port}")[0] == 403
    assert _get(ctx.dashboard_url + "nothing")[0] == 404


def test_beyond_loopback_only_requests_with_the_token_are_answered(monkeypatch, caplog):
    # An address other than loopback, without listening beyond loopback in a test: 127.0.0.1 taken for one.
    import drizzle_core.dashboard._address as address

    monkeypatch.setattr(address, "is_loopback", lambda host: False)
    caplog.set_level(logging.INFO, logger="drizzle.dashboard")
    with dz.Context(transport="inline", workers=1, dashboard="127.0.0.1:0") as c:
        url = c.dashboard_url
        assert "?token=" in url
        token = url.split("?token=")[1]
        assert len(token) >= 32
        base = url.split("?")[0]
        assert _get(base)[0] == 403
        assert _get(base + "api/state")[0] == 403
        assert _get(base + "events?token=" + token[:-1] + ("A" if token[-1] != "A" else "B"))[0] == 403
        assert _get(base + "api/state?token=" + token)[0] == 200
        assert _get(url)[0] == 200
    logged = [r for r in caplog.records if token in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING  # printed once, and seen by default


def test_addresses_are_checked_before_any_worker_starts():
    assert not address_loopback("0.0.0.0:8787") and not address_loopback("example.com:80")
    assert address_loopback("127.0.0.1:0") and address_loopback("[::1]:0") and address_loopback("localhost:1")
    for bad, match in (("nope", "host:port"), ("127.0.0.1:99999", "port"), ("::1:80", "brackets"),
                       (":80", "host is missing"), ("h:x", "port")):
        with pytest.raises(ValueError, match=match):
            dz.Context(transport="inline", workers=1, dashboard=bad)
    for bad in (1.5, [8787], -1):
        with pytest.raises((TypeError, ValueError), match="dashboard"):
            dz.Context(transport="inline", workers=1, dashboard=bad)


def address_loopback(value: str) -> bool:
    from drizzle_core.dashboard import parse

    return parse(value).loopback


def test_a_taken_port_is_an_error_and_true_falls_back_to_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"dashboard: cannot listen on 127.0.0.1:{port}"):
            dz.Context(transport="inline", workers=1, dashboard=f"127.0.0.1:{port}")
    with socket.socket() as default:
        default.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # taken by something else already: as good
            default.bind(("127.0.0.1", 8787))
            default.listen()
        with dz.Context(transport="inline", workers=1, dashboard=True) as c:
            assert c.dashboard_url.startswith("http://127.0.0.1:") and ":8787/" not in c.dashboard_url
            assert _get(c.dashboard_url + "api/state")[0] == 200


def _sockets() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:"):
                out.add(link)
    return out


def test_closing_the_context_leaves_no_thread_or_socket():
    before = _sockets()
    c = dz.Context(transport="inline", workers=1, dashboard=0)
    url = c.dashboard_url
    port = int(url.split(":")[2].rstrip("/"))
    c.run_jobs([(c.parallelize(range(10), 2), sum)] * 3)
    events = urllib.request.urlopen(url + "events", timeout=10)  # an open page's event stream
    assert events.readline().startswith(b"data: {")
    idle = socket.create_connection(("127.0.0.1", port))  # a connection that never sends its request
    mine = f"drizzle-dashboard-{port}"
    assert sum(t.name.startswith(mine) for t in threading.enumerate()) >= 3  # server, collector, the event stream
    t0 = time.monotonic()
    c.stop()
    assert time.monotonic() - t0 < 3.0, "stop() waited for the open connections"
    assert [t.name for t in threading.enumerate() if t.name.startswith(mine)] == []
    rest = events.read()  # the stream ended (the server shut it down), rather than hanging
    assert b"data" not in rest or rest.endswith(b"\n\n")
    with contextlib.suppress(ConnectionResetError):  # reset: still in the listening socket's queue when it closed
        assert idle.recv(1) == b""  # shut down by the server
    events.close()
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert _sockets() <= before, "a socket of the dashboard is still open"
    assert c.dashboard_url == url  # still says where it was


def test_without_a_dashboard_nothing_is_imported_or_started():
    code = ("import sys, threading, drizzle_core as dz\n"
            "with dz.Context(transport='inline', workers=1) as c:\n"
            "    c.run_jobs([(c.parallelize(range(10), 2), sum)] * 3)\n"
            "    assert c.dashboard_url is None and c._scheduler.trace is None\n"
            "    print(sorted(m for m in sys.modules if 'dashboard' in m or m == 'http.server'),\n"
            "          [t.name for t in threading.enumerate()])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] ['MainThread']"


def test_a_user_trace_is_still_written_with_a_dashboard(tmp_path):
    path = tmp_path / "trace.json"
    with dz.Context(transport="inline", workers=1, trace=path, dashboard=0) as c:
        c.run_jobs([(c.parallelize(range(10), 2), sum)] * 4, group_size=2)
        state = json.loads(_get(c.dashboard_url + "api/state")[1])
        assert state["groups"]["count"] == len(c.metrics) == 2
    events = json.loads(path.read_text())["traceEvents"]
    assert sum(1 for e in events if e.get("name") == "plan") == 2
    assert sum(1 for e in events if e.get("cat") == "task") == 8
