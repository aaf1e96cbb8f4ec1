"""Errors point at the user's code: the file and line of a remote frame, the action's and the shuffle's call.

Functions of ``__main__`` (and lambdas, and modules registered with
``cloudpickle.register_pickle_by_value``) travel by value; cloudpickle names
their code's file ``"<dynamic-code>"``, and a worker's traceback said so,
with no source. Here a module loaded from a file of the test's own and
registered by value stands for the user's script.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import linecache
import os
import sys
import textwrap

import cloudpickle
import pytest

import drizzle_core as dz
from drizzle_core._errors import with_source_lines
from drizzle_core.worker._failure import format_exception

pytestmark = pytest.mark.timeout(60)

USER_CODE = textwrap.dedent('''
    def parse(x):
        return int(x)


    def checked(x):
        try:
            return parse(x)
        except ValueError as e:
            raise RuntimeError(f"bad record {x!r}") from e


    def broken_add(a, b):
        return a + b  # str + int for mixed values
''')


@pytest.fixture(scope="module")
def ctx():
    with dz.Context(workers=2) as c:
        yield c


def _load_by_value(path, name):
    """Import ``path`` as module ``name`` and have cloudpickle send its functions by value, as ``__main__``'s."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    cloudpickle.register_pickle_by_value(mod)
    return mod


@pytest.fixture
def user_module(tmp_path, request):
    name = f"user_code_{request.node.name.split('[')[0]}"
    path = tmp_path / f"{name}.py"
    path.write_text(USER_CODE)
    mod = _load_by_value(path, name)
    yield mod, str(path)
    cloudpickle.unregister_pickle_by_value(mod)
    del sys.modules[name]


def _line_of(text: str) -> int:
    return USER_CODE.splitlines().index(text) + 1


def test_remote_frames_name_the_users_file_line_and_source(ctx, user_module):
    mod, path = user_module
    ds = ctx.parallelize(["1", "2", "x", "4"], 2)
    with pytest.raises(dz.TaskError) as info:
        ds.map(mod.checked).collect()
    tb = info.value.remote_traceback
    assert "<dynamic-code>" not in tb, tb
    # both exceptions of the chain: the cause (in parse) and the error (in checked), with their code
    assert f'File "{path}", line {_line_of("    return int(x)")}, in parse\n    return int(x)' in tb, tb
    raise_line = _line_of('        raise RuntimeError(f"bad record {x!r}") from e')
    assert f'File "{path}", line {raise_line}, in checked\n    raise RuntimeError' in tb, tb
    assert str(info.value.__cause__).count(path) >= 2  # the RemoteTraceback the user sees printed first


def test_source_comes_from_the_driver_when_the_worker_cannot_read_the_file(ctx, user_module):
    mod, path = user_module
    lines = linecache.getlines(path)  # the driver ran the script: its linecache holds it
    assert lines
    os.remove(path)  # ... and the workers cannot read it (as on another host)
    ds = ctx.parallelize(["x"], 1)
    with pytest.raises(dz.TaskError) as info:
        ds.map(mod.parse).collect()
    tb = info.value.remote_traceback
    assert f'File "{path}", line {_line_of("    return int(x)")}, in parse\n    return int(x)' in tb, tb


def test_with_source_lines_fills_only_frames_without_code(tmp_path):
    src = tmp_path / "script.py"
    src.write_text("a = 1\nb = a / 0\n")
    tb = (f'Traceback (most recent call last):\n  File "{src}", line 2, in <module>\n'
          '  File "<stdin>", line 1, in <module>\n'
          f'  File "{src}", line 1, in f\n    already = "shown"\nZeroDivisionError: division by zero\n')
    out = with_source_lines(tb)
    assert 'line 2, in <module>\n    b = a / 0\n  File "<stdin>", line 1, in <module>\n  File' in out, out
    assert 'already = "shown"' in out and "a = 1" not in out  # a frame with its code keeps it


def test_format_exception_restores_files_in_exception_groups(tmp_path):
    path = tmp_path / "grouped.py"
    code = "def boom(n):\n    raise ExceptionGroup('two', [ValueError(n), KeyError(n)])\n"
    path.write_text(code)
    glb = {"__file__": str(path), "__name__": "grouped"}
    exec(compile(code, "<dynamic-code>", "exec"), glb)  # the file name cloudpickle gives code it sends by value
    try:
        glb["boom"](3)
    except ExceptionGroup as e:
        text = format_exception(e)
    assert "<dynamic-code>" not in text and f'File "{path}", line 2, in boom' in text, text
    assert "raise ExceptionGroup" in text


def test_an_error_in_sum_names_the_sum_line(ctx):
    ds = ctx.parallelize(["a", 1, 2, 3], 2)
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(dz.TaskError) as info:
        ds.sum()
    msg = str(info.value)
    assert msg.startswith(f"sum() at test_errors_user_code.py:{line}: "), msg
    assert info.value.call_site == f"sum() at test_errors_user_code.py:{line}"
    assert "TypeError" in msg


def test_an_action_built_on_another_names_the_one_the_user_called(ctx):
    ds = ctx.parallelize([1, 2, "three"], 2)
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(dz.TaskError) as info:
        ds.mean()  # runs stats(), which runs the job
    assert str(info.value).startswith(f"mean() at test_errors_user_code.py:{line}: "), str(info.value)


def test_an_error_in_reduce_by_keys_function_names_the_reduce_by_key_line(ctx, user_module):
    mod, _path = user_module
    pairs = ctx.parallelize([("k", "a"), ("k", 1), ("j", 2)], 1)
    line = inspect.currentframe().f_lineno + 1
    summed = pairs.reduce_by_key(mod.broken_add)
    with pytest.raises(dz.TaskError) as info:
        summed.collect()
    msg = str(info.value)
    assert f"in the map side of reduce_by_key(broken_add) at test_errors_user_code.py:{line}" in msg, msg
    assert msg.startswith(f"collect() at test_errors_user_code.py:{line + 2}: "), msg
    assert "in the map side of reduce_by_key" in info.value.remote_traceback


def test_a_dataset_captured_by_a_task_is_named_before_anything_is_sent(ctx):
    data = ctx.parallelize(range(4), 2)
    other = ctx.parallelize(range(4), 2)
    groups = len(ctx.metrics)
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(dz.SerializationError) as info:
        data.map(lambda x: other.count() + x).collect()
    msg = str(info.value)
    assert "a Dataset cannot be used inside a task" in msg and "zip_partitions" in msg and "collect()" in msg, msg
    assert f"test_errors_user_code.py:{line}" in msg, msg  # where the function was defined and used
    assert len(ctx.metrics) == groups  # nothing ran
    assert data.map(lambda x: x + 1).sum() == 10  # and the context goes on


def test_a_context_captured_by_a_task_is_named(ctx):
    with pytest.raises(dz.SerializationError, match="a Context cannot be used inside a task"):
        ctx.parallelize(range(4), 2).map(lambda x: ctx.num_workers).collect()
    with pytest.raises(dz.SerializationError, match=r"cannot serialize the data of parallelize.*a Dataset cannot"):
        ctx.parallelize([ctx.parallelize([1], 1)], 1).collect()


def test_copies_of_a_context_or_dataset_are_the_same_handle(ctx):
    ds = ctx.parallelize(range(3), 1)
    assert copy.copy(ctx) is ctx and copy.deepcopy(ctx) is ctx
    assert copy.copy(ds) is ds and copy.deepcopy({"d": ds})["d"] is ds
