"""Shared fixtures: every test that starts worker processes must leave none behind."""

from __future__ import annotations

import os
import time

import pytest

pytest.register_assert_rewrite("support", "bookkeeping", "conformance")

import support  # noqa: E402  (after the rewrite is registered: its asserts say what differed)


def child_pids(parent: int | None = None) -> set[int]:
    """Live processes whose parent is ``parent`` (this process by default), from /proc."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces, so split after ')'
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry))
    return found


def wait_no_children(before: set[int], timeout: float = 10.0) -> set[int]:
    """Wait until no child started since ``before`` is alive; return those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = child_pids() - before
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def no_orphans():
    """Fail the test if it leaves a child process running."""
    before = child_pids()
    yield
    left = wait_no_children(before)
    assert not left, f"processes left running: {sorted(left)}"


@pytest.fixture(scope="module", autouse=True)
def _stop_module_contexts():
    """The contexts ``support.context`` made for a module's tests are stopped when the module ends."""
    yield
    support.stop_contexts()
