"""Calls through tapejit._runtime.unlinked: same results as a plain call, exceptions propagate, no
copy of the callee in the caller, and a caller loaded from the disk cache finds its callee."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit, types

from tapejit._runtime.unlinked import unlinked


@njit
def _bump(a, i):
    if i >= a.shape[0]:
        raise IndexError("bump: index past the end")
    a[i] += 1.0
    return a.sum()


_bump_unlinked = unlinked(_bump)


@njit
def _twice(a, i):
    return 2.0 * _bump_unlinked(a, i)


def test_an_unlinked_call_returns_what_the_callee_returns_and_raises_what_it_raises():
    a = np.zeros(4)
    assert _twice(a, 2) == 2.0
    assert _twice(a, 2) == 4.0
    np.testing.assert_array_equal(a, [0.0, 0.0, 2.0, 0.0])
    with pytest.raises(IndexError, match="bump: index past the end"):
        _twice(a, 7)


def test_the_caller_holds_no_copy_of_the_callee():
    a = np.zeros(4)
    _twice(a, 0)
    caller_ir = next(iter(_twice.inspect_llvm().values()))
    callee_name = next(iter(_bump.overloads.values())).fndesc.llvm_func_name
    assert "define" in caller_ir and callee_name not in caller_ir
    assert "tapejit_unlinked_resolve" in caller_ir


@njit
def _fill(a, x):
    a[:] = x


@njit
def _returns_a_float(a, x):
    return x


_fill_later = unlinked(_fill, types.none)
_wrongly_declared = unlinked(_returns_a_float, types.none)


@njit
def _fill_if(a, x, go):
    if go:
        _fill_later(a, x)
    return a[0]


@njit
def _misdeclared(a, x):
    _wrongly_declared(a, x)


def test_a_declared_return_type_defers_the_callees_compile_to_its_first_call():
    a = np.zeros(3)
    assert _fill_if(a, 5.0, False) == 0.0
    assert not _fill.signatures                     # the caller compiled, the callee not yet
    assert _fill_if(a, 5.0, True) == 5.0
    assert len(_fill.signatures) == 1
    np.testing.assert_array_equal(a, [5.0, 5.0, 5.0])


def test_a_wrongly_declared_return_type_raises_instead_of_calling(capfd):
    with pytest.raises(RuntimeError, match="could not compile"):
        _misdeclared(np.zeros(2), 1.0)
    assert "its call sites expect none" in capfd.readouterr().err


MODULE = """
import numpy as np
from numba import njit
from tapejit._runtime.unlinked import unlinked

@njit(cache=True)
def callee(a, k):
    return a[k] * 10.0

call = unlinked(callee)

@njit(cache=True)
def caller(a, k):
    return call(a, k) + 1.0
"""


def test_a_caller_loaded_from_the_disk_cache_calls_this_processs_callee(tmp_path):
    (tmp_path / "unlinked_demo.py").write_text(textwrap.dedent(MODULE))
    script = ("import numpy as np, unlinked_demo as m\n"
              "print(m.caller(np.arange(5.0), 3), sum(m.caller.stats.cache_hits.values()))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]))
    env.pop("NUMBA_OPT", None)          # code built at level 0 cannot be cached
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    (first, first_hits), (second, second_hits) = (run.stdout.split() for run in runs)
    assert float(first) == float(second) == 31.0
    assert int(first_hits) == 0 and int(second_hits) == 1
