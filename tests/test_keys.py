"""Every hashable key meets its equals in one reducer (issue 9, item 3).

Python salts its hash of str and bytes, and of everything built on them,
per process; a shuffle that bucketed by it would split equal keys across
reducers. Here each kind of key goes through reduce_by_key, group_by_key
and join on two workers of every transport, as do equal keys of different
types or representations (1, 1.0, True, Decimal(1); one instant in two
time zones; a namedtuple and its tuple). ``portable_hash`` is checked to
agree across processes with different PYTHONHASHSEEDs, and the seed policy
for keys it leaves to ``hash()`` (classes with their own ``__hash__``): the
workers a driver starts share one seed, and a tcp daemon started by hand
that hashes differently is refused with a message that says what to set.

The key classes live at module level, where the workers import them from
(as they would a user's module); ``test_keys_defined_in_main`` runs a
script whose classes live in ``__main__`` and so travel by value.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from support import context
from test_tcp import SECRET, Daemon, _env

import drizzle_core as dz
from drizzle_core import portable_hash
from drizzle_core.net._process import hash_seed

pytestmark = pytest.mark.timeout(120)

TESTS = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------ key kinds
class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 0
    HIGH = 1


class Mode(enum.StrEnum):
    READ = "r"
    WRITE = "w"


@dataclasses.dataclass(frozen=True)
class Person:
    name: str
    city: str
    note: str = dataclasses.field(default="", compare=False)  # not compared: not hashed either


Point = collections.namedtuple("Point", "label x")


class Account:
    """A user class whose ``__hash__`` is Python's over str fields: only a shared PYTHONHASHSEED helps."""

    def __init__(self, bank: str, number: str) -> None:
        self.bank = bank
        self.number = number

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Account) and (self.bank, self.number) == (other.bank, other.number)

    def __hash__(self) -> int:
        return hash((self.bank, self.number))

    def __repr__(self) -> str:
        return f"Account({self.bank!r}, {self.number!r})"


_UTC = datetime.UTC
_TZ = [datetime.timezone(datetime.timedelta(hours=h)) for h in (-7, 0, 2, 9)]


def _numbers(i: int) -> list[Any]:
    same = [i, float(i), decimal.Decimal(i), fractions.Fraction(i), complex(i, 0)]
    return same + ([bool(i), Level(i)] if i < 2 else [])


#: kind -> for key number i, every representation of that one key (all equal to each other)
KINDS: dict[str, Any] = {
    "str": lambda i: [f"key-{i}", "".join(["key-", str(i)])],
    "str-unicode": lambda i: [f"ключ-{i}-é\U0001f600"] if i else [Mode.READ, "r"],  # a StrEnum equals its str
    "bytes": lambda i: [b"k%d" % i, bytes(bytearray(b"k%d" % i))],
    "numbers": _numbers,
    # (Decimal(1) == numpy.int64(1) raises: numpy scalars go with ints, floats and strs)
    "numpy": lambda i: [(np.int64(i), np.str_(f"s{i}")), (float(i), f"s{i}"), (np.float64(i), np.str_(f"s{i}"))],
    "floats": lambda i: [i / 4, decimal.Decimal(i) / 4, fractions.Fraction(i, 4)],
    "none-bool": lambda i: [[None], [True, 1, 1.0], [False, 0], ["None"]][i % 4],
    "tuple": lambda i: [(f"k{i}", i, (None, "x")), (f"k{i}", float(i), (None, "x"))],
    "namedtuple": lambda i: [Point(f"p{i}", i), (f"p{i}", i), Point(f"p{i}", float(i))],
    "frozenset": lambda i: [frozenset({f"a{i}", "b", i}), frozenset([i, "b", f"a{i}"]),
                            frozenset({float(i), f"a{i}", "b"})],
    "enum": lambda i: [(list(Colour)[i % 3], i // 3)],
    "dataclass": lambda i: [Person(f"n{i}", "Oslo"), Person(f"n{i}", "Oslo", note="ignored")],
    "date": lambda i: [datetime.date(2024, 2, 27) + datetime.timedelta(days=i)],
    "datetime": lambda i: [(datetime.datetime(2024, 3, 31, 1, tzinfo=_UTC) + datetime.timedelta(minutes=97 * i))
                           .astimezone(z) for z in _TZ],  # one instant in four time zones
    "naive-datetime-time": lambda i: [(datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=3600 * i + 1),
                                       datetime.time(i % 24, 30), datetime.timedelta(hours=i))],
    "decimal": lambda i: [decimal.Decimal(f"{i}.10"), decimal.Decimal(f"{i}.1"), decimal.Decimal(f"{i}.100")],
    "user-class": lambda i: [Account("DNB", f"{1000 + i}")],
}
N_KEYS = 9
TRANSPORTS = ["inline", "local", "tcp"]


def key_forms(kind: str) -> list[list[Any]]:
    """Per distinct key, its equal representations."""
    return [KINDS[kind](i) for i in range(N_KEYS)]


def records(kind: str, copies: int = 4) -> tuple[list[tuple[Any, int]], list[Any]]:
    """(key, 1) records, each key in all its forms ``copies`` times over; and one canonical key each."""
    forms = key_forms(kind)
    out = [(form, 1) for _ in range(copies) for same in forms for form in same]
    canon = [same[0] for same in forms]
    return out, canon


def distinct(canon: list[Any]) -> list[Any]:
    """Canonical keys without repeats (by equality: "none-bool" has several equal ones)."""
    seen: list[Any] = []
    for k in canon:
        if k not in seen:
            seen.append(k)
    return seen


def by_key(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A dict of ``pairs``, failing on a key that came back twice (split across reducers)."""
    out: dict[Any, Any] = {}
    for k, v in pairs:
        assert k not in out, f"key {k!r} came back twice: from two reducers"
        out[k] = v
    return out


# ------------------------------------------------------------------ shuffles
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reduce_by_key_gives_one_record_per_key(transport, kind):
    ctx = context(transport)
    recs, canon = records(kind)
    got = by_key(ctx.parallelize(recs, 8).reduce_by_key(lambda a, b: a + b, 4).collect())
    expected: Counter = Counter()
    for k, v in recs:
        expected[k] += v
    assert len(got) == len(distinct(canon)) == len(expected)
    assert got == dict(expected)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_group_by_key_gives_one_group_per_key(transport, kind):
    ctx = context(transport)
    recs, canon = records(kind)
    got = by_key(ctx.parallelize(recs, 7).group_by_key(3).collect())
    expected: Counter = Counter(k for k, _ in recs)
    assert len(got) == len(distinct(canon))
    assert {k: len(vs) for k, vs in got.items()} == dict(expected)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_join_matches_every_pair_of_equal_keys(transport, kind):
    ctx = context(transport)
    left, _ = records(kind, copies=2)
    # the right side in the forms' reverse order: a key meets its equal in another representation
    right = [(form, -1) for same in key_forms(kind) for form in reversed(same)]
    joined = ctx.parallelize(left, 6).join(ctx.parallelize(right, 5), 4).collect()
    left_n, right_n = Counter(k for k, _ in left), Counter(k for k, _ in right)
    assert len(joined) == sum(n * right_n[k] for k, n in left_n.items())
    assert Counter(k for k, _ in joined) == Counter({k: n * right_n[k] for k, n in left_n.items()})
    assert all(v == (1, -1) for _, v in joined)


# ------------------------------------------------------------------ portable_hash itself
def _portable_keys() -> list[Any]:
    """Keys of every kind that ``portable_hash`` hashes itself (all but the user class)."""
    return [form for kind in KINDS if kind != "user-class" for same in key_forms(kind) for form in same]


def test_equal_keys_hash_alike():
    for kind in KINDS:
        for same in key_forms(kind):
            assert len({portable_hash(k) for k in same}) == 1, (kind, same)
    assert portable_hash(float("nan")) == portable_hash(float("nan"))  # one NaN bucket, not one per address


def test_deeply_nested_keys_do_not_recurse():
    key: Any = ("leaf", 1.5)
    for i in range(50_000):
        key = (key, frozenset({i})) if i % 2 else (key,)
    assert isinstance(portable_hash(key), int)


_HASHES_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from drizzle_core import portable_hash
import test_keys
keys = test_keys._portable_keys()
users = [f for s in test_keys.key_forms("user-class") for f in s]
print(json.dumps({{"portable": [portable_hash(k) for k in keys], "hash": [hash(k) for k in users]}}))
"""


def _hashes_in_a_process(seed: str) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, "-c", _HASHES_SCRIPT.format(tests=TESTS)], capture_output=True,
                         text=True, env=env, timeout=60, check=True)
    return json.loads(out.stdout)


def test_portable_hash_agrees_across_processes_with_different_seeds():
    one, two, rand = _hashes_in_a_process("1"), _hashes_in_a_process("2"), _hashes_in_a_process("random")
    mine = [portable_hash(k) for k in _portable_keys()]
    assert one["portable"] == two["portable"] == rand["portable"] == mine
    # ... which Python's hash of the user class does not: why the workers need one seed
    assert one["hash"] != two["hash"]


# ------------------------------------------------------------------ seeds of the workers a driver starts
def test_hash_seed_is_the_drivers_or_one_of_its_own(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    own = hash_seed()
    assert own.isdigit() and 1 <= int(own) <= 4294967295 and hash_seed() == own
    monkeypatch.setenv("PYTHONHASHSEED", "random")
    assert hash_seed() == own
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    assert hash_seed() == "0"
    assert dz.transport.worker_env()["PYTHONHASHSEED"] == "0"
    monkeypatch.setenv("PYTHONHASHSEED", "seven")
    with pytest.raises(ValueError, match="PYTHONHASHSEED='seven'"):
        hash_seed()


def _seed_and_probe(it):
    return [(os.environ.get("PYTHONHASHSEED"), hash("probe"), os.getpid())]


def _workers_hashing(ctx: dz.Context) -> list[tuple[str, int, int]]:
    n = ctx.num_workers
    return [p[0] for p in ctx.parallelize(range(n), n).map_partitions(_seed_and_probe).glom()]


@pytest.mark.parametrize("transport", ["local", "tcp"])
def test_workers_and_their_replacements_share_the_drivers_seed(transport, no_orphans):
    with dz.Context(transport=transport, workers=2) as ctx:
        before = _workers_hashing(ctx)
        assert {(s, h) for s, h, _ in before} == {(hash_seed(), before[0][1])}
        os.kill(before[1][2], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:  # the loss is noticed, the replacement joins
            after = _workers_hashing(ctx)
            if (after[1][2] != before[1][2] and len(ctx.live_workers) == 2) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert after[1][2] != before[1][2]
        assert {(s, h) for s, h, _ in after} == {(s, h) for s, h, _ in before}
        recs, _ = records("user-class")
        assert len(ctx.parallelize(recs, 6).reduce_by_key(lambda a, b: a + b, 3).collect()) == N_KEYS


# ------------------------------------------------------------------ tcp daemons started by hand
def test_a_hand_started_daemon_with_another_seed_is_refused(tmp_path, no_orphans):
    other = "1" if hash_seed() != "1" else "2"
    daemon = Daemon(tmp_path, env=_env(PYTHONHASHSEED=other))
    try:
        with dz.Context(transport="tcp", workers=1, secret=SECRET) as ctx:
            with pytest.raises(dz.TransportError) as err:
                ctx.add_worker(daemon.address)
            msg = str(err.value)
            assert daemon.address in msg and f"PYTHONHASHSEED={other}" in msg
            assert f"PYTHONHASHSEED={hash_seed()}" in msg and "export PYTHONHASHSEED=0" in msg
            assert ctx.num_workers == 1 and ctx.parallelize(range(10), 2).sum() == 45
        # the refused daemon was never claimed: a driver whose workers hash like it may use it
        with dz.Context(transport="tcp", workers=[daemon.address], secret=SECRET) as ctx:
            recs, _ = records("user-class")
            assert len(ctx.parallelize(recs, 4).reduce_by_key(lambda a, b: a + b, 2).collect()) == N_KEYS
        assert "PYTHONHASHSEED" in daemon.log_path.read_text()  # it says why on its side too
    finally:
        daemon.close()


def test_two_hand_started_daemons_with_random_seeds_are_refused(tmp_path, no_orphans):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    daemons = [Daemon(tmp_path / d, env=_env(PYTHONHASHSEED="random")) for d in "ab"]
    try:
        with pytest.raises(dz.TransportError, match="both run with PYTHONHASHSEED=random") as err:
            dz.Context(transport="tcp", workers=[d.address for d in daemons], secret=SECRET)
        assert daemons[1].address in str(err.value) and daemons[0].address in str(err.value)
        # alone, one of them is a whole session: nothing to disagree with
        with dz.Context(transport="tcp", workers=[daemons[0].address], secret=SECRET) as ctx:
            assert ctx.parallelize(range(10), 2).sum() == 45
    finally:
        for d in daemons:
            d.close()


def test_hand_started_daemons_with_one_seed_keep_user_class_keys_together(tmp_path, no_orphans):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    daemons = [Daemon(tmp_path / d, env=_env(PYTHONHASHSEED="12345")) for d in "ab"]
    try:
        with dz.Context(transport="tcp", workers=[d.address for d in daemons], secret=SECRET) as ctx:
            assert {s for s, _, _ in _workers_hashing(ctx)} == {"12345"}
            recs, canon = records("user-class")
            got = by_key(ctx.parallelize(recs, 8).reduce_by_key(lambda a, b: a + b, 4).collect())
            assert got == {k: 4 for k in canon}
    finally:
        for d in daemons:
            d.close()


# ------------------------------------------------------------------ keys of classes in the user's __main__
_MAIN_SCRIPT = """
import dataclasses, enum, json, operator, sys
import drizzle_core as dz

@dataclasses.dataclass(frozen=True)
class K:
    name: str

class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"

class Tag:
    def __init__(self, name):
        self.name = name
    def __eq__(self, other):
        return isinstance(other, Tag) and self.name == other.name
    def __hash__(self):
        return hash(self.name)

def pair(x):
    return ((K("k%d" % (x % 3)), list(Colour)[x % 2], Tag("t%d" % (x % 2))), 1)

if __name__ == "__main__":
    with dz.Context(transport=sys.argv[1], workers=2) as ctx:
        out = ctx.parallelize(range(600), 6).map(pair).reduce_by_key(operator.add, 4).collect()
        keys = ctx.parallelize(range(60), 5).map(lambda x: (K("j%d" % (x % 4)), x))
        joined = keys.join(keys.reduce_by_key(operator.add, 2), 3).count()
    print(json.dumps({"records": len(out), "total": sum(v for _, v in out), "joined": joined}))
"""


@pytest.mark.parametrize("transport", ["local", "tcp"])
def test_keys_defined_in_main(transport, tmp_path, no_orphans):
    """Classes of the user's script travel by value (cloudpickle); their instances still meet."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(_MAIN_SCRIPT))
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)  # as a user runs it: the driver's own seed is random
    out = subprocess.run([sys.executable, str(script), transport], capture_output=True, text=True, env=env,
                         timeout=100, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"records": 6, "total": 600, "joined": 60}
