"""Opcode kernels compiled on first use (tapejit.cpu._kernels): a sweep compiles what its tape
uses, finds each kernel through its table, and passes a kernel's exception on."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from tapejit.cpu import _kernels
from tapejit.cpu._kernels import context, float64_at, kernel_caller
from tapejit.ops.table import OP, OPS


# --- a sweep of this module, built from the same pieces as the generated ones ----------
# Its kernels: "add" writes v[i] = i + 1, "mul" raises on instruction 3, "sin" exists
# but no test tape uses it; every other opcode has none (the shared empty kernel).
def demo__add(i, ctx):
    v = float64_at(ctx[15], ctx[16])
    v[i] = i + 1.0


def demo__mul(i, ctx):
    if i == 3:
        raise ValueError("demo kernel refused instruction 3")
    v = float64_at(ctx[15], ctx[16])
    v[i] = -1.0


def demo__sin(i, ctx):
    v = float64_at(ctx[15], ctx[16])
    v[i] = 99.0


_run_demo = kernel_caller(__name__, "demo")


@njit(nogil=True, error_model="numpy", _nrt=False)
def demo(ops, v):
    ctx = context(v, v, v, v, v, v, v, v, v, v, 0)
    for i in range(ops.shape[0]):
        _run_demo(ops[i], i, ctx)


def _demo_compiled():
    return {name.split(".")[-1] for name in _kernels.compiled_kernels() if name.startswith(__name__ + ".demo__")}


def test_a_sweep_compiles_the_kernels_of_the_opcodes_it_meets_and_no_others():
    v = np.zeros(3)
    demo(np.array([OP.add, OP.add, OP.input], dtype=np.int32), v)
    assert v.tolist() == [1.0, 2.0, 0.0]            # input: no demo kernel, nothing done
    assert _demo_compiled() <= {"demo__add"}         # mul may come from another test; never sin
    assert "demo__sin" not in _demo_compiled()


def test_an_opcode_past_the_table_does_nothing():
    v = np.zeros(2)
    demo(np.array([len(OPS), OP.add], dtype=np.int32), v)
    assert v.tolist() == [0.0, 2.0]


def test_a_kernels_exception_reaches_the_caller():
    v = np.zeros(5)
    with pytest.raises(ValueError, match="refused instruction 3"):
        demo(np.array([OP.mul, OP.mul, OP.add, OP.mul, OP.add], dtype=np.int32), v)
    assert v[:3].tolist() == [-1.0, -1.0, 3.0] and v[4] == 0.0     # stopped at 3
    demo(np.array([OP.mul, OP.add], dtype=np.int32), v)              # and runs on afterwards
    assert v[:2].tolist() == [-1.0, 2.0]


def test_a_kernel_that_cannot_be_built_raises_instead_of_running(monkeypatch, capfd):
    broken = np.zeros(2)
    demo(np.array([OP.add], dtype=np.int32), broken)     # add resolved in this process already

    def refuse(*args):
        raise RuntimeError("no compiler today")
    monkeypatch.setattr(_kernels, "kernel", refuse)
    with pytest.raises(RuntimeError, match="could not compile a kernel of .*demo"):
        demo(np.array([OP.add, OP.sin], dtype=np.int32), broken)   # sin not yet resolved
    assert "no compiler today" in capfd.readouterr().err


# --- a fresh process with an empty cache: what the first gradient compiles -------------
_FIRST_USE = textwrap.dedent("""
    import json, sys
    from numba.core import event
    compiled = []

    class Listener(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    event.register("numba:compile", Listener())
    import tapejit as tj
    from tapejit.cpu import _kernels
    x = tj.tensor(2.0, requires_grad=True)
    y = x**2 + 3*x + 1
    y.backward()
    json.dump({"grad": x.grad.item(), "compiled": compiled,
               "kernels": sorted(_kernels.compiled_kernels())}, sys.stdout)
""")


def test_the_readme_example_compiles_only_its_opcodes(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), TAPEJIT_CACHE_DIR=str(tmp_path / "tj"))
    run = subprocess.run([sys.executable, "-c", _FIRST_USE], env=env, capture_output=True, text=True,
                         timeout=600, check=True)
    out = json.loads(run.stdout)
    assert out["grad"] == 7.0
    kernels = {name.split(".")[-1] for name in out["kernels"]}
    assert kernels, out
    used = {name.split("__")[1] for name in kernels}
    # x**2 + 3*x + 1: a square, a scale, adds of a constant or of two values, the seed
    assert len(used) <= 6 and not used & {"sin", "exp", "log", "matmul", "softplus"}, used
    # today: the reverse sweep's loop, its four kernels and the empty one (of 67 opcodes x 8 sweeps)
    assert len(out["compiled"]) <= 10, out["compiled"]
