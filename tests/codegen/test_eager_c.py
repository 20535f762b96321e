"""The C recorder (tapejit.frontend._eager) against the Python recording path it stands in for."""
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tapejit as tj
from tapejit.codegen import render as codegen
from tapejit.codegen import c_header as codegen_c
from tapejit.ops.table import FIELDS, OPS, fields_used, uses_immediate

T = sys.modules["tapejit.frontend.tensor"]
ROOT = Path(__file__).resolve().parents[2]
PURE = {**os.environ, "TAPEJIT_PURE_PYTHON": "1", "PYTHONPATH": str(ROOT)}


def test_the_value_header_matches_the_table():
    assert codegen_c.write(check=True), "run `python -m tapejit.codegen.c_header` after editing tapejit/ops/table.py"


def test_every_two_operand_elementwise_opcode_has_a_c_value():
    text = codegen_c.HEADER_FILE.read_text()
    for code, op in enumerate(OPS):
        # a user primitive's kernels take Numba's calling convention, not C's: Python path
        if op.elementwise and op.arity <= 2 and not op.calls_user_kernels:
            assert f"case {code}: " in text, op.name


def test_the_c_recorder_is_compiled_and_owns_the_operators():
    # `pip install -e .` compiles it; a failed build would silently cost 3x per operation
    assert T._eager is not None, "tapejit.frontend._eager is not built: pip install -e . needs a C compiler"
    for name in T._C_OPERATORS:
        assert name not in T.Tensor.__dict__, name      # the C base class's number slots serve them
    assert isinstance(tj.sin, T._eager.Unary)


def _program(seed: int, n_ops: int = 400):
    """Record a random scalar program through operators, numbers of every kind, unary
    functions (domain edges included) and comparisons; return the tape's arrays and the
    gradients."""
    rng = np.random.default_rng(seed)
    (tj.tensor(0.0, requires_grad=True) * 1.0).backward()   # the recording below starts a tape
    leaves = [tj.tensor(float(v), requires_grad=True) for v in rng.uniform(-2, 2, 3)]
    live = list(leaves)
    numbers = [2, 2.0, 3, -1.5, 0, 0.0, 0.5, -2, 1e300, 7]
    unary = [tj.sin, tj.cos, tj.exp, tj.log, tj.sqrt, tj.tanh, tj.square, tj.abs, tj.sigmoid,
             tj.softplus, tj.log1p, tj.arctan, tj.negative, tj.sign, tj.erf]
    binary = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / y,
              lambda x, y: x ** y]
    with np.errstate(all="ignore"):
        for _ in range(n_ops):
            x = live[rng.integers(len(live))]
            kind = rng.integers(4)
            if kind == 0:
                y = binary[rng.integers(len(binary))](x, live[rng.integers(len(live))])
            elif kind == 1:
                c = numbers[rng.integers(len(numbers))]
                y = binary[rng.integers(len(binary))](x, c)
            elif kind == 2:
                c = numbers[rng.integers(len(numbers))]
                y = binary[rng.integers(len(binary))](c, x)
            elif rng.integers(6):
                y = unary[rng.integers(len(unary))](x) if rng.integers(5) else -x
            else:   # a comparison (recorded in Python) feeding arithmetic (in C)
                y = (x > live[rng.integers(len(live))]) * 2.0 - x
            # keep values finite enough that the program stays interesting
            live.append(y if abs(y.item()) < 1e6 else tj.tanh(y))
        total = live[-1]
        for t in live[-20:-1]:
            total = total + t * 1e-3
        total.backward()
    tape = T._state.tape
    n, slots = tape.n_ins, tape.n_slots
    ops, ins, cv = tape.ops[:n].copy(), tape.ins[:, :n].copy(), tape.cv[:n].copy()
    # a reused tape keeps the fields an opcode does not read from earlier recordings
    # (Tape.reset): only the fields each instruction uses are the recording
    for i, code in enumerate(ops):
        for k, name in enumerate(FIELDS):
            if name not in fields_used(OPS[code]):
                ins[k, i] = 0
        if not uses_immediate(OPS[code]):
            cv[i] = 0.0
    return dict(ops=ops, ins=ins, cv=cv,
                values=tape.values[:slots].copy(), grads=np.array([leaf.grad.item() for leaf in leaves]))


def test_c_and_python_record_identical_tapes(tmp_path):
    seeds = [0, 1, 2]
    script = (f"import sys, numpy as np; sys.path.insert(0, {str(ROOT / 'tests' / 'codegen')!r}); "
              "import test_eager_c as m; assert m.T._eager is None\n"
              f"for s in {seeds}: np.savez({str(tmp_path)!r} + f'/pure{{s}}.npz', **m._program(s))")
    subprocess.run([sys.executable, "-c", script], check=True, env=PURE, cwd=tmp_path, timeout=300)
    for seed in seeds:
        fast = _program(seed)
        pure = np.load(tmp_path / f"pure{seed}.npz")
        for name in ("ops", "ins", "cv", "values", "grads"):
            np.testing.assert_array_equal(fast[name], pure[name], err_msg=f"seed {seed}: {name}")


def test_the_eager_tests_pass_on_the_python_path_alone():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/frontend/test_tensor.py", "tests/frontend/test_composite.py"],
                            env=PURE, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_a_long_chain_grows_the_tape_from_c():
    x = tj.tensor(0.3, requires_grad=True)
    y = x
    for _ in range(5000):           # past the first tape's 64 instructions and 256 slots, many times
        y = y * 1.0001 + 0.001
    y.backward()
    assert T._state.tape.n_ins == 10_001
    assert x.grad.item() == pytest.approx(1.0001 ** 5000, rel=1e-12)


def test_unary_functions_keep_their_python_identity():
    assert tj.sin.__name__ == "sin" and tj.exp.__doc__ == "Elementwise exp."
    assert pickle.loads(pickle.dumps(tj.sin)) is tj.sin
    assert tj.sin(0.5).item() == math.sin(0.5)                       # numbers: the Python path
    np.testing.assert_allclose(tj.exp(np.array([0.0, 1.0])).numpy(), np.exp([0.0, 1.0]), rtol=1e-15)
    x = tj.tensor(0.5, requires_grad=True)
    y = tj.tanh(x=x)                                                 # keywords: the Python path
    y.backward()
    assert x.grad.item() == pytest.approx(1 - math.tanh(0.5) ** 2, rel=1e-15)


def test_operands_the_c_path_does_not_take_behave_as_before():
    x = tj.tensor(1.5, requires_grad=True)
    for other in (np.float64(2.0), True, np.array(2.0), tj.tensor(2.0), 10 ** 400):
        try:
            expected = x._value * float(other)
        except OverflowError:
            with pytest.raises(OverflowError):
                x * other
            continue
        assert (x * other).item() == expected
        assert (other * x).item() == expected
    with pytest.raises(TypeError):
        pow(x, 2, 5)
    with pytest.raises(TypeError):
        x + "a"


def test_an_inconsistent_tape_is_never_written_past_its_buffers():
    x = tj.tensor(1.0, requires_grad=True)
    y = x * 2.0
    tape = T._state.tape
    n_ins, capacity = tape.n_ins, tape.ins_capacity
    tape.ins_capacity = 10 ** 9          # claims room its arrays do not have
    tape.n_ins = len(tape.ops)           # the next record would land past the end
    try:
        with pytest.raises(IndexError):  # the Python path's memoryview refuses it
            y * 3.0
    finally:
        tape.n_ins, tape.ins_capacity = n_ins, capacity
    y.backward()                         # the thread's next recording starts clean
    assert x.grad.item() == 2.0


def test_iterating_a_recorded_vector_makes_the_same_scalars_in_c():
    x = tj.tensor(np.array([0.5, -1.0, 2.0, 0.25, 3.0]), requires_grad=True)
    y = tj.exp(x)[::2]                        # strided: slots base, base + 2, base + 4
    flags = x > 0.4                           # a bool vector
    for vector in (y, flags):
        items = list(vector)
        tape, base, step = vector._tape, vector._base, vector._strides[0]
        expected = [T._on_tape(tape, base + k * step, (), (), v, vector._bool)
                    for k, v in enumerate(vector._value.tolist())]
        assert len(items) == len(expected) == vector.shape[0]
        for got, want in zip(items, expected):
            assert type(got) is T.Tensor
            assert (got._tape, got._base, got._shape, got._strides, got._bool) == \
                   (want._tape, want._base, (), (), want._bool)
            assert type(got._value) is float and got._value == want._value
    assert [bool(t) for t in flags] == [True, False, True, False, True]
    a, b, c = list(y)
    (a * 2.0 + b * c).backward()              # d/dx: 2 e^x0, e^x2 e^x4 at x2, at x4
    v = np.exp(x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), [2 * v[0], 0.0, v[2] * v[4], 0.0, v[2] * v[4]], rtol=1e-15)
