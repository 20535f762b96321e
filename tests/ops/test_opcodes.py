"""Walk the whole opcode table: values against numpy/scipy, partials against central
differences, both through the Python scalar path and the Numba sweeps."""
import math

import numpy as np
import pytest
import scipy.special as sp

import tapejit as tj
from tapejit.ops.table import OPCODE, OPS
from tapejit.frontend.tensor import _elementwise, scalar_value

rng = np.random.default_rng(0)


def U(lo, hi):
    return lambda n: rng.uniform(lo, hi, n)


def away_from_zero(n):
    return rng.choice([-1.0, 1.0], n) * rng.uniform(0.3, 2.5, n)


def between_integers(n):
    """Away from the jumps of floor/ceil/trunc (integers) and of rint (half-integers)."""
    return rng.integers(-4, 4, n) + rng.choice([-1.0, 1.0], n) * rng.uniform(0.1, 0.4, n) + 0.5 * rng.choice([-1, 1], n)


ANY = U(-2.5, 2.5)
POS = U(0.2, 3.0)

# the user-primitive opcodes are walked with one registered primitive each (its number is
# the immediate c), so every test over the table covers them too
X_ATAN = tj.primitive(lambda x: x * math.atan(x), name="reference_x_atan")
X_ATAN.defderiv(lambda x, o: math.atan(x) + x / (1.0 + x * x))
X_ATAN.defhess(lambda x, o: 1.0 / (1.0 + x * x) + (1.0 - x * x) / ((1.0 + x * x) * (1.0 + x * x)))
A_EXP_B = tj.primitive(lambda a, b: a * math.exp(b), name="reference_a_exp_b")
A_EXP_B.defderiv(lambda a, b, o: math.exp(b), lambda a, b, o: o)
A_EXP_B.defhess(lambda a, b, o: 0.0, lambda a, b, o: math.exp(b), lambda a, b, o: o)

# name -> (numpy reference f(a, b, d, c), samplers for the operands, immediate)
REFERENCE = {
    "fill": (lambda a, b, d, c: np.full_like(a, c), [], 1.75),
    "copy": (lambda a, b, d, c: a, [ANY], 0.0),
    "stop_gradient": (lambda a, b, d, c: a, [ANY], 0.0),
    "add": (lambda a, b, d, c: a + b, [ANY, ANY], 0.0),
    "sub": (lambda a, b, d, c: a - b, [ANY, ANY], 0.0),
    "mul": (lambda a, b, d, c: a * b, [ANY, ANY], 0.0),
    "div": (lambda a, b, d, c: a / b, [ANY, away_from_zero], 0.0),
    "pow": (lambda a, b, d, c: np.power(a, b), [POS, ANY], 0.0),
    "arctan2": (lambda a, b, d, c: np.arctan2(a, b), [away_from_zero, away_from_zero], 0.0),
    "maximum": (lambda a, b, d, c: np.maximum(a, b), [ANY, ANY], 0.0),
    "minimum": (lambda a, b, d, c: np.minimum(a, b), [ANY, ANY], 0.0),
    "add_c": (lambda a, b, d, c: a + c, [ANY], 1.3),
    "mul_c": (lambda a, b, d, c: a * c, [ANY], -2.1),
    "rsub_c": (lambda a, b, d, c: c - a, [ANY], 0.7),
    "div_c": (lambda a, b, d, c: a / c, [ANY], 3.0),
    "rdiv_c": (lambda a, b, d, c: c / a, [away_from_zero], 1.5),
    "pow_c": (lambda a, b, d, c: np.power(a, c), [POS], 2.7),
    "rpow_c": (lambda a, b, d, c: np.power(c, a), [ANY], 1.9),
    "maximum_c": (lambda a, b, d, c: np.maximum(a, c), [ANY], 0.25),
    "minimum_c": (lambda a, b, d, c: np.minimum(a, c), [ANY], 0.25),
    "neg": (lambda a, b, d, c: -a, [ANY], 0.0),
    "square": (lambda a, b, d, c: np.square(a), [ANY], 0.0),
    "square_sub": (lambda a, b, d, c: np.square(a - b), [ANY, ANY], 0.0),
    "square_rsub_c": (lambda a, b, d, c: np.square(c - a), [ANY], 1.25),
    "add_scaled_square": (lambda a, b, d, c: c * np.square(a) + b, [ANY, ANY], -3.5),
    "minus_square": (lambda a, b, d, c: a - np.square(b), [ANY, ANY], 0.0),
    "sqrt": (lambda a, b, d, c: np.sqrt(a), [POS], 0.0),
    "exp": (lambda a, b, d, c: np.exp(a), [ANY], 0.0),
    "expm1": (lambda a, b, d, c: np.expm1(a), [ANY], 0.0),
    "log": (lambda a, b, d, c: np.log(a), [POS], 0.0),
    "log1p": (lambda a, b, d, c: np.log1p(a), [U(-0.8, 3.0)], 0.0),
    "sin": (lambda a, b, d, c: np.sin(a), [ANY], 0.0),
    "cos": (lambda a, b, d, c: np.cos(a), [ANY], 0.0),
    "tan": (lambda a, b, d, c: np.tan(a), [U(-1.3, 1.3)], 0.0),
    "arcsin": (lambda a, b, d, c: np.arcsin(a), [U(-0.9, 0.9)], 0.0),
    "arccos": (lambda a, b, d, c: np.arccos(a), [U(-0.9, 0.9)], 0.0),
    "arctan": (lambda a, b, d, c: np.arctan(a), [ANY], 0.0),
    "sinh": (lambda a, b, d, c: np.sinh(a), [ANY], 0.0),
    "cosh": (lambda a, b, d, c: np.cosh(a), [ANY], 0.0),
    "tanh": (lambda a, b, d, c: np.tanh(a), [ANY], 0.0),
    "abs": (lambda a, b, d, c: np.abs(a), [away_from_zero], 0.0),
    "sign": (lambda a, b, d, c: np.sign(a), [away_from_zero], 0.0),
    "sigmoid": (lambda a, b, d, c: sp.expit(a), [U(-8, 8)], 0.0),
    "softplus": (lambda a, b, d, c: np.logaddexp(0.0, a), [U(-8, 8)], 0.0),
    "erf": (lambda a, b, d, c: sp.erf(a), [ANY], 0.0),
    "lt": (lambda a, b, d, c: (a < b) * 1.0, [ANY, ANY], 0.0),
    "le": (lambda a, b, d, c: (a <= b) * 1.0, [ANY, ANY], 0.0),
    "gt": (lambda a, b, d, c: (a > b) * 1.0, [ANY, ANY], 0.0),
    "ge": (lambda a, b, d, c: (a >= b) * 1.0, [ANY, ANY], 0.0),
    "eq": (lambda a, b, d, c: (a == b) * 1.0, [ANY, ANY], 0.0),
    "ne": (lambda a, b, d, c: (a != b) * 1.0, [ANY, ANY], 0.0),
    "lt_c": (lambda a, b, d, c: (a < c) * 1.0, [ANY], 0.1),
    "le_c": (lambda a, b, d, c: (a <= c) * 1.0, [ANY], 0.1),
    "gt_c": (lambda a, b, d, c: (a > c) * 1.0, [ANY], 0.1),
    "ge_c": (lambda a, b, d, c: (a >= c) * 1.0, [ANY], 0.1),
    "eq_c": (lambda a, b, d, c: (a == c) * 1.0, [ANY], 0.1),
    "ne_c": (lambda a, b, d, c: (a != c) * 1.0, [ANY], 0.1),
    "rint": (lambda a, b, d, c: np.rint(a), [between_integers], 0.0),
    "floor": (lambda a, b, d, c: np.floor(a), [between_integers], 0.0),
    "ceil": (lambda a, b, d, c: np.ceil(a), [between_integers], 0.0),
    "trunc": (lambda a, b, d, c: np.trunc(a), [between_integers], 0.0),
    # away from the jumps, where a / b is an integer
    "fmod": (lambda a, b, d, c: np.fmod(a, b), [between_integers, lambda n: rng.choice([-1.0, 1.0], n)
                                                 * rng.uniform(0.9, 1.1, n)], 0.0),
    "where": (lambda a, b, d, c: np.where(a != 0, b, d), [lambda n: (rng.uniform(size=n) < 0.5) * 1.0, ANY, ANY], 0.0),
    "primitive1": (lambda a, b, d, c: a * np.arctan(a), [ANY], float(X_ATAN.number)),
    "primitive2": (lambda a, b, d, c: a * np.exp(b), [ANY, ANY], float(A_EXP_B.number)),
}

ELEMENTWISE = [op for op in OPS if op.elementwise]


def test_every_elementwise_opcode_has_a_reference():
    missing = [op.name for op in ELEMENTWISE if op.name not in REFERENCE]
    assert not missing, f"opcodes without a test reference: {missing}"


def _operands(name, n=7):
    _, samplers, c = REFERENCE[name]
    return [s(n) for s in samplers], c


@pytest.mark.parametrize("op", ELEMENTWISE, ids=lambda op: op.name)
def test_values_match_numpy(op):
    ref, _, _ = REFERENCE[op.name]
    args, c = _operands(op.name)
    padded = args + [np.zeros(7)] * (3 - len(args))
    expected = ref(*padded, c) if args else np.full(1, c)
    # the Numba sweep, through a recorded array operation
    xs = [tj.tensor(a, requires_grad=True) for a in args]
    with np.errstate(all="ignore"):
        got = _elementwise(OPCODE[op.name], tuple(xs), c).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    # arithmetic on constants (not recorded) runs the generated elementwise kernel
    if args:
        with np.errstate(all="ignore"):
            const = _elementwise(OPCODE[op.name], tuple(tj.tensor(a) for a in args), c)
        assert not const.requires_grad
        np.testing.assert_allclose(const.numpy(), expected, rtol=1e-13, atol=1e-15)
    # the Python scalar path, point by point
    for k in range(len(expected) if args else 1):
        vals = [float(a[k]) for a in args] + [0.0] * (3 - len(args))
        assert scalar_value(OPCODE[op.name], *vals, c) == pytest.approx(expected[k], rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("op", [op for op in ELEMENTWISE if op.arity], ids=lambda op: op.name)
def test_partials_match_central_differences(op):
    ref, _, _ = REFERENCE[op.name]
    args, c = _operands(op.name)
    code = OPCODE[op.name]
    xs = [tj.tensor(a, requires_grad=True) for a in args]
    out = _elementwise(code, tuple(xs), c)
    out.backward(np.ones(out.shape))
    for j, x in enumerate(xs):
        if op.name == "where" and j == 0:
            expected = np.zeros_like(args[0])          # the condition has no derivative
        elif op.partials.get("abd"[j]) is None:
            expected = np.zeros_like(args[j])
        else:
            h = 1e-6 * np.maximum(1.0, np.abs(args[j]))
            hi = [a.copy() for a in args]
            lo = [a.copy() for a in args]
            hi[j] += h
            lo[j] -= h
            pad = [np.zeros(7)] * (3 - len(args))
            expected = (ref(*hi, *pad, c) - ref(*lo, *pad, c)) / (2 * h)
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=2e-6, atol=1e-7,
                                   err_msg=f"d {op.name} / d {'abd'[j]}")


@pytest.mark.parametrize("op", [op for op in ELEMENTWISE if op.arity], ids=lambda op: op.name)
def test_scalar_path_gradient_equals_array_path(op):
    args, c = _operands(op.name, n=3)
    code = OPCODE[op.name]
    xs = [tj.tensor(a, requires_grad=True) for a in args]
    _elementwise(code, tuple(xs), c).backward(np.ones(3))
    for k in range(3):
        ss = [tj.tensor(float(a[k]), requires_grad=True) for a in args]
        _elementwise(code, tuple(ss), c).backward()
        for x, s in zip(xs, ss):
            assert s.grad.item() == pytest.approx(x.grad.numpy()[k], rel=1e-14, abs=1e-300)


# ---- conventions, each pinned ---------------------------------------------------------------
def grad_of(fn, x):
    t = tj.tensor(x, requires_grad=True)
    fn(t).backward()
    return t.grad.item()


def test_abs_derivative_at_zero_is_zero():
    assert grad_of(tj.abs, 0.0) == 0.0


def test_maximum_and_minimum_split_ties():
    a = tj.tensor(1.5, requires_grad=True)
    b = tj.tensor(1.5, requires_grad=True)
    tj.maximum(a, b).backward()
    assert (a.grad.item(), b.grad.item()) == (0.5, 0.5)
    assert grad_of(lambda x: tj.minimum(x, 1.5), 1.5) == 0.5
    assert grad_of(lambda x: tj.clip(x, 0.0, 1.0), 1.0) == 0.5


def test_sqrt_derivative_at_zero_is_infinite():
    assert grad_of(tj.sqrt, 0.0) == math.inf


def test_nan_safe_where_gives_zero_gradient_at_and_below_zero():
    for x0 in (0.0, -1.0, -4.0):
        assert grad_of(lambda x: tj.where(x > 0, tj.sqrt(x), 0.0), x0) == 0.0
    assert grad_of(lambda x: tj.where(x > 0, tj.sqrt(x), 0.0), 4.0) == pytest.approx(0.25)
    x = tj.tensor([-1.0, 0.0, 4.0], requires_grad=True)
    tj.sum(tj.where(x > 0, tj.sqrt(x), 0.0)).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.25])


def test_power_conventions_follow_pytorch():
    # d/da a**0 = 0 (not 0 * inf); d/db a**b at a = 0, b >= 0 is 0 (not 0 * -inf)
    a = tj.tensor(0.0, requires_grad=True)
    b = tj.tensor(0.0, requires_grad=True)
    (a ** b).backward()
    assert (a.grad.item(), b.grad.item()) == (0.0, 0.0)
    assert grad_of(lambda x: x ** 0.0, 0.0) == 0.0


def test_amax_sends_gradient_to_first_maximum():
    x = tj.tensor([1.0, 3.0, 3.0, 2.0], requires_grad=True)
    tj.amax(x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 0.0, 0.0])


def test_ieee_results_in_scalar_path():
    assert scalar_value(OPCODE["log"], 0.0) == -math.inf
    assert math.isnan(scalar_value(OPCODE["log"], -1.0))
    assert math.isnan(scalar_value(OPCODE["sqrt"], -1.0))
    assert scalar_value(OPCODE["exp"], 710.0) == math.inf
    assert scalar_value(OPCODE["div"], 1.0, 0.0) == math.inf
    assert math.isnan(scalar_value(OPCODE["pow"], -8.0, 1.0 / 3.0))


@pytest.mark.parametrize("m", range(10))
def test_sums_of_every_short_length_agree_in_every_sweep(m):
    """A sum adds its even and its odd terms in two running sums, in every sweep: one
    point's value, a batch's rows and the eager recording agree bit for bit, and each
    is within rounding of math.fsum (whole sums, and sums along an axis of a matrix)."""
    rng = np.random.default_rng(m)
    whole = tj.trace(lambda x: tj.sum(x * 1.5), np.zeros(m))
    columns = tj.trace(lambda x: tj.sum(x * 1.5, axis=0), np.zeros((m, 3)))
    X = rng.standard_normal((6, m))
    Y = rng.standard_normal((6, m, 3))
    batch_whole, batch_columns = whole.batch(X), columns.batch(Y)
    for k in range(6):
        value = whole(X[k])
        assert value == math.fsum(1.5 * X[k]) or abs(value - math.fsum(1.5 * X[k])) <= 1e-14 * m
        assert value == batch_whole[k]
        assert value == tj.sum(tj.tensor(X[k], requires_grad=True) * 1.5).item()
        per_column = columns(Y[k])
        expected = [math.fsum(1.5 * Y[k][:, j]) for j in range(3)]
        np.testing.assert_allclose(per_column, expected, rtol=1e-14, atol=1e-14 * m)
        np.testing.assert_array_equal(per_column, batch_columns[k])
        recorded = tj.sum(tj.tensor(Y[k], requires_grad=True) * 1.5, axis=0)
        np.testing.assert_array_equal(per_column, recorded.detach().numpy())


#: the code of every released opcode, as saved tapes store them: a frozen copy of
#: tapejit.ops.table.CODES. Codes never change; a new opcode takes the next free code there
PINNED_CODES = {
    "fill": 0, "copy": 1, "stop_gradient": 2, "add": 3, "sub": 4, "mul": 5, "div": 6, "pow": 7, "arctan2": 8,
    "maximum": 9, "minimum": 10, "add_c": 11, "mul_c": 12, "rsub_c": 13, "div_c": 14, "rdiv_c": 15,
    "pow_c": 16, "rpow_c": 17, "maximum_c": 18, "minimum_c": 19, "neg": 20, "square": 21, "sqrt": 22,
    "exp": 23, "expm1": 24, "log": 25, "log1p": 26, "sin": 27, "cos": 28, "tan": 29, "arcsin": 30,
    "arccos": 31, "arctan": 32, "sinh": 33, "cosh": 34, "tanh": 35, "abs": 36, "sign": 37, "sigmoid": 38,
    "softplus": 39, "erf": 40, "lt": 41, "le": 42, "gt": 43, "ge": 44, "eq": 45, "ne": 46, "lt_c": 47,
    "le_c": 48, "gt_c": 49, "ge_c": 50, "eq_c": 51, "ne_c": 52, "where": 53, "input": 54, "const": 55,
    "gather": 56, "sum": 57, "amax": 58, "affine": 59, "matmul": 60, "softmax": 61, "gather_sum": 62,
    "square_sub": 63, "square_rsub_c": 64, "add_scaled_square": 65, "minus_square": 66, "rint": 67,
    "floor": 68, "ceil": 69, "trunc": 70, "fmod": 71, "primitive1": 72, "primitive2": 73,
}


def test_opcode_codes_are_pinned():
    """Saved tapes (format version 1 names no opcodes) mean what these codes say."""
    assert {name: code for name, code in OPCODE.items() if name in PINNED_CODES} == PINNED_CODES
    new = sorted(OPCODE[name] for name in OPCODE if name not in PINNED_CODES)
    # an opcode not pinned yet may only be appended after the pinned ones
    assert new == list(range(len(PINNED_CODES), len(OPCODE)))
    # the table's rows are grouped by kind, not by code: OPS is sorted by the pinned codes
    assert [op.name for op in OPS] == sorted(OPCODE, key=OPCODE.get)


def test_what_an_instruction_reads_comes_from_its_table_row():
    """validate()'s bounds, the passes' dependences, read counts and remapping, the adjoint
    plan, the tiling plan's read ranges and the twins' work estimate follow the table's
    reads/gathers/spans/pool/checks: none names a structural opcode, so a new one touches
    its row and nothing of theirs."""
    import inspect
    import re
    from pathlib import Path

    from tapejit.analysis import adjoint_plan
    from tapejit.cpu import tiling
    from tapejit.passes import program
    from tapejit.tape import reads, tape
    from tapejit._runtime import twins
    structural = [op.name for op in OPS if not op.elementwise and op.name != "input"]
    sources = {m.__name__: Path(m.__file__).read_text() for m in (tape, reads, adjoint_plan, twins)}
    for fn in (program.depends_forward, program._count_reads, program.needed_backward, program.read_counts,
               program._remap_runs, program.reads, program._gather_reads, tiling._read_ranges):
        sources[fn.__name__] = inspect.getsource(getattr(fn, "py_func", fn))
    for where, text in sources.items():
        named = [name for name in structural if re.search(rf"\bOP\.{name}\b|\bop_{name}\b|\"{name}\"", text)]
        assert named == [], f"{where} names {named}"
    # and the table states them for every structural opcode that reads slots
    for op in OPS:
        if not op.elementwise and op.arity:
            assert op.reads or op.gathers, op.name
            assert bool(op.spans) == bool(op.reads), op.name
