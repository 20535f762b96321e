"""The one table of opcodes.

Every operation tapejit can record is defined here, once: its name, how many slot
operands it reads, its value and its partial derivatives. The CPU sweeps (single
point and batch chunks) and the CUDA kernel are *generated* from this table by
``tapejit.codegen.render``; the Python scalar fast path of the eager API evaluates the same
expressions. A new opcode is one entry here plus ``python -m tapejit.codegen``.

An instruction applies its opcode to a run of ``n`` consecutive output slots::

    out[k] = f(A[a + k*sa], B[b + k*sb], D[d + k*sd], c)      for k < n

where a stride of 0 broadcasts one slot. ``c`` is a float64 immediate.

Elementwise entries give ``value`` and ``partials`` as Python expressions over the
operand values ``a``, ``b``, ``d``, the immediate ``c`` and the output ``o``. They may
use the names in ``MATH_NAMES`` and conditional expressions; they must evaluate the
same way in plain Python (on floats), in Numba on the CPU and in numba-cuda.

Structural entries (reductions, products, data movement) give code templates instead,
written against ``V[slot]`` (values), ``G[slot]`` (adjoints), ``T[slot]`` (tangents),
``H[slot]`` (tangents of the adjoints, for Hessian-vector products) and per-point
scratch ``S0``/``S1``; each target rewrites those accessors (``v[slot]`` for
one point, ``v[slot, p]`` inside a loop over the points of a chunk, ``v[slot, t]`` in a
CUDA thread). The field meanings of each structural opcode are in its ``fields`` text.

Conventions (each pinned by a test):
- abs'(0) = 0, sign' = 0, comparisons have no derivative;
- maximum/minimum (and clip, built from them) split the gradient 0.5/0.5 at ties;
- sqrt'(0) = +inf, but a zero adjoint contributes nothing even through an infinite
  partial (CppAD's azmul), so ``where(x > 0, sqrt(x), 0)`` has gradient 0 at x <= 0;
- d/da a**b = 0 where b == 0; d/db a**b = 0 where a == 0 and b >= 0 (PyTorch's choice);
- amax sends the gradient to the first maximal element.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: integer fields of an instruction, in row order of ``Tape.ins``
FIELDS = ("out", "n", "a", "sa", "b", "sb", "d", "sd")
OUT, N, A, SA, B, SB, D, SD = range(len(FIELDS))

#: functions the expressions may call (all exist in ``math`` and in numba's CPU and CUDA targets)
MATH_NAMES = (
    "exp", "expm1", "log", "log1p", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan",
    "atan2", "sinh", "cosh", "tanh", "erf", "pow", "fmod",
)

#: functions that call a user primitive's kernels (tapejit.cpu._primitive_calls), whose
#: number is the immediate c; the second-derivative names appear only in the expressions
#: tapejit.ops.symbolic derives
PRIMITIVE_NAMES = ("prim1", "prim1_d", "prim1_d2", "prim2", "prim2_da", "prim2_db",
                   "prim2_daa", "prim2_dab", "prim2_dbb")
#: what the block-primitive row's templates call (tapejit.cpu._primitive_calls): the call and
#: the role of the user kernel it runs
BLOCK_NAMES = ("block_call", "BLOCK_VALUE", "BLOCK_VJP", "BLOCK_JVP", "BLOCK_HVP")

TWO_OVER_SQRT_PI = "1.1283791670955126"


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int                      # slot operands read: 0..3 (a, b, d)
    value: str = ""                 # elementwise value expression
    partials: dict = field(default_factory=dict)   # operand name -> expression
    forward: str = ""               # structural: template computing V[o...]
    reverse: str = ""               # structural: template accumulating G[inputs]
    #: structural: ``reverse`` gives each slot of operand a one contribution, so the
    #: sweeps that follow tapejit.analysis.adjoint_plan may assign them (plan bit 1: no slot read
    #: twice, none with an adjoint yet); see ``reverse_first``
    reverse_assigns: bool = False
    tangent: str = ""               # structural: template computing T[o...]
    hvp: str = ""                   # structural: reverse of the tangent sweep, G and H together
    fields: str = ""                # structural: what each field means
    doc: str = ""
    differentiable: bool = True
    #: structural, one-point CPU sweeps only: BLAS calls (tapejit.cpu._blas) that replace the
    #: loops of ``forward``/``reverse``/``tangent``/``hvp`` when ``blas["when"]`` holds;
    #: ``at(V, o)`` is the address of slot o. Any call's nonzero status (no BLAS) falls
    #: back to the loops, which every other target runs always.
    blas: dict = field(default_factory=dict)
    # What a structural instruction reads, as expressions over its fields (and k, the output
    # element), for every consumer that must know without running it: validate()'s bounds,
    # the passes' dependences, read counts and slot remapping, the adjoint plan, the tiling
    # plan. tapejit.codegen renders the per-element facts into tapejit/tape/_reads.py.
    #: per slot operand: (field holding its base, first slot, stride, count) that output
    #: element k reads
    reads: tuple = ()
    #: an index-pool operand: (base slot, first entry, entry count) that output element k
    #: reads as base + idx[entry], and the entries the instruction uses in all
    gathers: tuple = ()           # (base, first, count, entries)
    #: per slot operand, everything the instruction reads: (base, ((stride, count), ...),
    #: when, what): slots base + sum(stride * t) for t in [0, count), where ``when`` holds
    spans: tuple = ()
    #: the constant pool it reads: (first entry, count)
    pool: tuple = ()
    #: (bad, message): what validate() refuses, as numpy expressions over the fields'
    #: integer arrays, with pos(x) = max(x, 1)
    checks: tuple = ()
    #: the templates call user kernels that exist on the CPU only (block primitives): the
    #: CUDA sweeps leave the opcode out, and the GPU target and compile() refuse its tapes
    cpu_only: bool = False

    @property
    def elementwise(self) -> bool:
        return bool(self.value)

    @property
    def calls_user_kernels(self) -> bool:
        """Whether replaying the opcode runs a user's kernel (a user primitive): constant
        folding must not run it on made-up inputs, and its loops keep the azmul branch (no
        select: a kernel is not SIMD code anyway, and a zero adjoint then never calls it, so
        an instruction no gradient flows through, an abandoned eager recording, never needs
        a derivative rule the user did not give)."""
        import re
        names = PRIMITIVE_NAMES + BLOCK_NAMES[:1]
        texts = (self.value, *self.partials.values(), self.forward)
        return any(re.search(rf"\b({'|'.join(names)})\(", t) for t in texts if t)

    @property
    def reverse_first(self) -> str:
        """``reverse`` with its adjoint accumulations made assignments (when
        ``reverse_assigns``; empty otherwise)."""
        return self.reverse.replace("] += G[", "] = G[") if self.reverse_assigns else ""


def _ew(name, arity, value, doc="", **partials):
    return OpDef(name=name, arity=arity, value=value, partials=partials, doc=doc,
                 differentiable=bool(partials))


_SIGN = "(1.0 if a > 0.0 else (-1.0 if a < 0.0 else (0.0 if a == 0.0 else a)))"


def _max_tie(x, y):
    return f"(1.0 if {x} > {y} else (0.5 if {x} == {y} else 0.0))"


def _min_tie(x, y):
    return f"(1.0 if {x} < {y} else (0.5 if {x} == {y} else 0.0))"


ELEMENTWISE = [
    # -- data in, data out --------------------------------------------------------
    _ew("fill", 0, "c", "out = c (a constant broadcast over the run)"),
    _ew("copy", 1, "a", "out = a (materializes a strided or broadcast operand)", a="1.0"),
    _ew("stop_gradient", 1, "a", "out = a, with no derivative"),
    # -- arithmetic on two slots -----------------------------------------------------
    _ew("add", 2, "a + b", a="1.0", b="1.0"),
    _ew("sub", 2, "a - b", a="1.0", b="-1.0"),
    _ew("mul", 2, "a * b", a="b", b="a"),
    _ew("div", 2, "a / b", a="1.0 / b", b="-o / b"),
    _ew("pow", 2, "pow(a, b)",
        a="0.0 if b == 0.0 else b * pow(a, b - 1.0)",
        b="0.0 if (a == 0.0 and b >= 0.0) else o * log(a)"),
    _ew("arctan2", 2, "atan2(a, b)", a="b / (a * a + b * b)", b="-a / (a * a + b * b)"),
    _ew("maximum", 2, "a if (a > b or a != a) else b", a=_max_tie("a", "b"), b=_max_tie("b", "a")),
    _ew("minimum", 2, "a if (a < b or a != a) else b", a=_min_tie("a", "b"), b=_min_tie("b", "a")),
    # -- arithmetic with the immediate c ----------------------------------------------
    _ew("add_c", 1, "a + c", a="1.0"),
    _ew("mul_c", 1, "a * c", a="c"),
    _ew("rsub_c", 1, "c - a", "out = c - a", a="-1.0"),
    _ew("div_c", 1, "a / c", a="1.0 / c"),
    _ew("rdiv_c", 1, "c / a", "out = c / a", a="-o / a"),
    _ew("pow_c", 1, "pow(a, c)", a="0.0 if c == 0.0 else c * pow(a, c - 1.0)"),
    _ew("rpow_c", 1, "pow(c, a)", "out = c ** a", a="0.0 if c == 0.0 else o * log(c)"),
    _ew("maximum_c", 1, "a if (a > c or a != a) else c", a=_max_tie("a", "c")),
    _ew("minimum_c", 1, "a if (a < c or a != a) else c", a=_min_tie("a", "c")),
    # -- one slot ----------------------------------------------------------------------
    _ew("neg", 1, "-a", a="-1.0"),
    _ew("square", 1, "a * a", a="2.0 * a"),
    _ew("sqrt", 1, "sqrt(a)", a="0.5 / o"),
    _ew("exp", 1, "exp(a)", a="o"),
    _ew("expm1", 1, "expm1(a)", a="o + 1.0"),
    _ew("log", 1, "log(a)", a="1.0 / a"),
    _ew("log1p", 1, "log1p(a)", a="1.0 / (1.0 + a)"),
    _ew("sin", 1, "sin(a)", a="cos(a)"),
    _ew("cos", 1, "cos(a)", a="-sin(a)"),
    _ew("tan", 1, "tan(a)", a="1.0 + o * o"),
    _ew("arcsin", 1, "asin(a)", a="1.0 / sqrt(1.0 - a * a)"),
    _ew("arccos", 1, "acos(a)", a="-1.0 / sqrt(1.0 - a * a)"),
    _ew("arctan", 1, "atan(a)", a="1.0 / (1.0 + a * a)"),
    _ew("sinh", 1, "sinh(a)", a="cosh(a)"),
    _ew("cosh", 1, "cosh(a)", a="sinh(a)"),
    _ew("tanh", 1, "tanh(a)", a="1.0 - o * o"),
    _ew("abs", 1, "abs(a)", a="(1.0 if a > 0.0 else (-1.0 if a < 0.0 else 0.0))"),
    _ew("sign", 1, _SIGN),
    _ew("sigmoid", 1, "1.0 / (1.0 + exp(-a))", a="o * (1.0 - o)"),
    # log(1 + e^a) without overflow; its derivative sigmoid(a) equals 1 - e^-o
    _ew("softplus", 1, "(a if a > 0.0 else 0.0) + log1p(exp(-abs(a)))", a="-expm1(-o)"),
    _ew("erf", 1, "erf(a)", a=f"{TWO_OVER_SQRT_PI} * exp(-a * a)"),
    # -- comparisons: 1.0 or 0.0, no derivative; a guard is an eq_c whose slot is checked
    _ew("lt", 2, "1.0 if a < b else 0.0"),
    _ew("le", 2, "1.0 if a <= b else 0.0"),
    _ew("gt", 2, "1.0 if a > b else 0.0"),
    _ew("ge", 2, "1.0 if a >= b else 0.0"),
    _ew("eq", 2, "1.0 if a == b else 0.0"),
    _ew("ne", 2, "1.0 if a != b else 0.0"),
    _ew("lt_c", 1, "1.0 if a < c else 0.0"),
    _ew("le_c", 1, "1.0 if a <= c else 0.0"),
    _ew("gt_c", 1, "1.0 if a > c else 0.0"),
    _ew("ge_c", 1, "1.0 if a >= c else 0.0"),
    _ew("eq_c", 1, "1.0 if a == c else 0.0"),
    _ew("ne_c", 1, "1.0 if a != c else 0.0"),
    # -- select: a is the condition (nonzero = true) ------------------------------------
    _ew("where", 3, "b if a != 0.0 else d", b="1.0 if a != 0.0 else 0.0", d="0.0 if a != 0.0 else 1.0"),
]


def _affine_rows(X):
    """out = M @ X[a::sa] for an accessor X (V values, T tangents), four terms per update."""
    four = " + ".join(f"(w{k} * {X}[a + (j + {k}) * sa] + w{k + 1} * {X}[a + (j + {k + 1}) * sa])" for k in (0, 2))
    return f"""
for i in range(n):
    {X}[o + i] = 0.0
    for q in range(sb // 4):
        j = 4 * q
        w0 = consts[b + i * sb + j]
        w1 = consts[b + i * sb + j + 1]
        w2 = consts[b + i * sb + j + 2]
        w3 = consts[b + i * sb + j + 3]
        {X}[o + i] += {four}
    for j in range(sb - sb % 4, sb):
        w = consts[b + i * sb + j]
        {X}[o + i] += w * {X}[a + j * sa]
""".replace("(j + 0)", "j")


def _affine_adjoints(*arrays):
    """X[a::sa] += M^T X[o...] for each accessor (G adjoints; G and H for the hvp sweep),
    four output rows per update."""
    def four(X):
        return " + ".join(f"(w{k} * {X}[o + i + {k}] + w{k + 1} * {X}[o + i + {k + 1}])" for k in (0, 2))
    grouped = "".join(f"        {X}[a + j * sa] += {four(X)}\n" for X in arrays)
    single = "".join(f"        {X}[a + j * sa] += w * {X}[o + i]\n" for X in arrays)
    return f"""
for q in range(n // 4):
    i = 4 * q
    for j in range(sb):
        w0 = consts[b + i * sb + j]
        w1 = consts[b + (i + 1) * sb + j]
        w2 = consts[b + (i + 2) * sb + j]
        w3 = consts[b + (i + 3) * sb + j]
{grouped}for i in range(n - n % 4, n):
    for j in range(sb):
        w = consts[b + i * sb + j]
{single}""".replace("o + i + 0]", "o + i]")


#: what a reduction over the middle axis (sum, amax) reads: output k = (r, j) reads
#: a + r*b*sa + j + t*sa for t < b (fields as in their ``fields`` text)
_REDUCED_AXIS = dict(
    reads=(("a", "a + (k // sb) * b * sa + k % sb", "sa", "b"),),
    spans=(("a", (("b * sa", "n // pos(sb)"), ("sa", "b"), ("1", "sb")), "b > 0", "reduction input"),),
)
_REDUCED_AXIS_CHECKS = (("sb < 1", "inner size must be at least 1"), ("b < 0", "negative reduced length"),
                        ("(sb >= 1) & (n % pos(sb) != 0)", "output count is not a multiple of the inner size"))

STRUCTURAL = [
    OpDef(
        name="input",
        arity=0,
        fields="out..out+n are written by the caller before the sweep",
        doc="an input or parameter of the tape",
    ),
    OpDef(
        name="const",
        arity=0,
        fields="b: offset of n values in the constant pool",
        forward="""
for k in range(n):
    V[o + k] = consts[b + k]
""",
        tangent="""
for k in range(n):
    T[o + k] = 0.0
""",
        doc="constants from the pool",
        differentiable=False,
        pool=("b", "n"),
    ),
    OpDef(
        name="gather",
        arity=1,
        fields="a: base slot, b: offset of n slot offsets in the index pool",
        forward="""
for k in range(n):
    s = a + idx[b + k]
    V[o + k] = V[s]
""",
        reverse="""
for k in range(n):
    s = a + idx[b + k]
    G[s] += G[o + k]
""",
        tangent="""
for k in range(n):
    s = a + idx[b + k]
    T[o + k] = T[s]
""",
        hvp="""
for k in range(n):
    s = a + idx[b + k]
    G[s] += G[o + k]
    H[s] += H[o + k]
""",
        doc="out[k] = V[a + idx[b + k]]: indexing, transpose, broadcast, concatenate",
        gathers=("a", "b + k", "1", "n"),
    ),
    OpDef(
        name="sum",
        arity=1,
        fields="n = outer*inner outputs, b = m (length of the summed axis), sb = inner, "
               "sa = stride of the summed axis (= inner when contiguous)",
        # two running sums, of the even and the odd terms: two dependency chains instead of
        # one (a sequential sum waits an FP add latency per term: a long sum's whole cost).
        # Each line with two statements is one loop over the points in the chunk sweeps.
        forward="""
inner = sb
for r in range(n // inner):
    for j in range(inner):
        if b >= 2:
            S0 = V[a + r * b * sa + j]; S1 = V[a + (r * b + 1) * sa + j]
        else:
            S0 = V[a + r * b * sa + j] if b else 0.0; S1 = 0.0
        for q in range(1, b // 2):
            S0 += V[a + (r * b + 2 * q) * sa + j]; S1 += V[a + (r * b + 2 * q + 1) * sa + j]
        if b % 2 and b > 1:
            S0 += V[a + (r * b + b - 1) * sa + j]
        V[o + r * inner + j] = S0 + S1
""",
        reverse="""
inner = sb
for r in range(n // inner):
    for j in range(inner):
        for i in range(b):
            G[a + (r * b + i) * sa + j] += G[o + r * inner + j]
""",
        reverse_assigns=True,
        tangent="""
inner = sb
for r in range(n // inner):
    for j in range(inner):
        T[o + r * inner + j] = 0.0
        for i in range(b):
            T[o + r * inner + j] += T[a + (r * b + i) * sa + j]
""",
        hvp="""
inner = sb
for r in range(n // inner):
    for j in range(inner):
        for i in range(b):
            G[a + (r * b + i) * sa + j] += G[o + r * inner + j]
            H[a + (r * b + i) * sa + j] += H[o + r * inner + j]
""",
        doc="sum over the middle axis of an (outer, m, inner) block",
        **_REDUCED_AXIS,
        checks=_REDUCED_AXIS_CHECKS,
    ),
    OpDef(
        name="amax",
        arity=1,
        fields="as sum",
        forward="""
inner = sb
for r in range(n // inner):
    for j in range(inner):
        V[o + r * inner + j] = V[a + r * b * sa + j]
        for i in range(1, b):
            S0 = V[a + (r * b + i) * sa + j]
            V[o + r * inner + j] = S0 if (S0 > V[o + r * inner + j] or S0 != S0) else V[o + r * inner + j]
""",
        reverse="""
inner = sb
for r in range(n // inner):
    for j in range(inner):
        S0 = 0.0
        for i in range(b):
            S1 = 1.0 if (S0 == 0.0 and V[a + (r * b + i) * sa + j] == V[o + r * inner + j]) else 0.0
            G[a + (r * b + i) * sa + j] += G[o + r * inner + j] if S1 != 0.0 else 0.0
            S0 = S0 + S1
""",
        tangent="""
inner = sb
for r in range(n // inner):
    for j in range(inner):
        S0 = 0.0
        T[o + r * inner + j] = 0.0
        for i in range(b):
            S1 = 1.0 if (S0 == 0.0 and V[a + (r * b + i) * sa + j] == V[o + r * inner + j]) else 0.0
            T[o + r * inner + j] += T[a + (r * b + i) * sa + j] if S1 != 0.0 else 0.0
            S0 = S0 + S1
""",
        hvp="""
inner = sb
for r in range(n // inner):
    for j in range(inner):
        S0 = 0.0
        for i in range(b):
            S1 = 1.0 if (S0 == 0.0 and V[a + (r * b + i) * sa + j] == V[o + r * inner + j]) else 0.0
            G[a + (r * b + i) * sa + j] += G[o + r * inner + j] if S1 != 0.0 else 0.0
            H[a + (r * b + i) * sa + j] += H[o + r * inner + j] if S1 != 0.0 else 0.0
            S0 = S0 + S1
""",
        doc="maximum over the middle axis; the derivative goes to the first maximal element",
        **_REDUCED_AXIS,
        checks=_REDUCED_AXIS_CHECKS + (("(b < 1) & (n > 0)", "maximum of an empty axis"),),
    ),
    OpDef(
        name="affine",
        arity=1,
        fields="n rows, sb = m columns of a constant matrix at consts[b], input a with stride sa",
        # Four terms per update: a chunk's update loads and stores a row of every point, so
        # adding the terms in fours stores a quarter as often (B2's affine: 39 -> 27 us a
        # chunk forward, 46 -> 25 reverse). Every target runs this same order.
        forward=_affine_rows("V"),
        reverse=_affine_adjoints("G"),
        tangent=_affine_rows("T"),
        hvp=_affine_adjoints("G", "H"),
        doc="out = M @ V[a::sa] with a constant (n, m) matrix M (data-heavy objectives)",
        reads=(("a", "a", "sa", "sb"),),
        spans=(("a", (("sa", "sb"),), "sb > 0", "affine input"),),
        pool=("b", "n * sb"),
        checks=(("sb < 0", "negative column count"),),
    ),
    OpDef(
        name="matmul",
        arity=2,
        fields="(p, q) @ (q, r), both contiguous: n = p*r, sa = q, sb = r; c = 1 when a is a constant "
               "(its adjoint is never read, so the reverse skips it), 2 when b is, 0 otherwise",
        forward="""
for i in range(n // sb):
    for j in range(sb):
        V[o + i * sb + j] = 0.0
        for k in range(sa):
            V[o + i * sb + j] += V[a + i * sa + k] * V[b + k * sb + j]
""",
        reverse="""
if c != 1.0:
    for i in range(n // sb):
        for j in range(sb):
            for k in range(sa):
                G[a + i * sa + k] += G[o + i * sb + j] * V[b + k * sb + j]
if c != 2.0:
    for i in range(n // sb):
        for j in range(sb):
            for k in range(sa):
                G[b + k * sb + j] += G[o + i * sb + j] * V[a + i * sa + k]
""",
        tangent="""
for i in range(n // sb):
    for j in range(sb):
        T[o + i * sb + j] = 0.0
        for k in range(sa):
            T[o + i * sb + j] += T[a + i * sa + k] * V[b + k * sb + j] + V[a + i * sa + k] * T[b + k * sb + j]
""",
        hvp="""
if c != 1.0:
    for i in range(n // sb):
        for j in range(sb):
            for k in range(sa):
                G[a + i * sa + k] += G[o + i * sb + j] * V[b + k * sb + j]
                H[a + i * sa + k] += H[o + i * sb + j] * V[b + k * sb + j] + G[o + i * sb + j] * T[b + k * sb + j]
if c != 2.0:
    for i in range(n // sb):
        for j in range(sb):
            for k in range(sa):
                G[b + k * sb + j] += G[o + i * sb + j] * V[a + i * sa + k]
                H[b + k * sb + j] += H[o + i * sb + j] * V[a + i * sa + k] + G[o + i * sb + j] * T[a + i * sa + k]
""",
        doc="product of two recorded matrices",
        # p = n // sb rows, q = sa, r = sb; the reverse is G_A += G_O B^T, G_B += A^T G_O.
        # Digits MLP (1797x64 @ 64x64), one eager step: 18.5 ms with the loops, see docs/training.md
        blas=dict(
            when="(n // sb) * sa * sb >= BLAS_MIN_WORK",
            forward="gemm_nn(at(V, o), at(V, a), at(V, b), n // sb, sa, sb, 0.0) == 0",
            reverse="(c == 1.0 or gemm_nt(at(G, a), at(G, o), at(V, b), n // sb, sa, sb) == 0) "
                    "and (c == 2.0 or gemm_tn(at(G, b), at(V, a), at(G, o), n // sb, sa, sb) == 0)",
            tangent="gemm_nn(at(T, o), at(T, a), at(V, b), n // sb, sa, sb, 0.0) == 0 "
                    "and gemm_nn(at(T, o), at(V, a), at(T, b), n // sb, sa, sb, 1.0) == 0",
            hvp="(c == 1.0 or (gemm_nt(at(G, a), at(G, o), at(V, b), n // sb, sa, sb) == 0 "
                "and gemm_nt(at(H, a), at(H, o), at(V, b), n // sb, sa, sb) == 0 "
                "and gemm_nt(at(H, a), at(G, o), at(T, b), n // sb, sa, sb) == 0)) "
                "and (c == 2.0 or (gemm_tn(at(G, b), at(V, a), at(G, o), n // sb, sa, sb) == 0 "
                "and gemm_tn(at(H, b), at(V, a), at(H, o), n // sb, sa, sb) == 0 "
                "and gemm_tn(at(H, b), at(T, a), at(G, o), n // sb, sa, sb) == 0))"),
        reads=(("a", "a + (k // sb) * sa", "1", "sa"), ("b", "b + k % sb", "sb", "sa")),
        spans=(("a", (("1", "n // pos(sb) * sa"),), "sa > 0", "left factor"),
               ("b", (("1", "sa * sb"),), "sa > 0", "right factor")),
        checks=(("(sa < 0) | (sb < 1)", "bad inner or column count"),
                ("(sb >= 1) & (n % pos(sb) != 0)", "output count is not a multiple of the column count")),
    ),
    OpDef(
        name="softmax",
        arity=1,
        fields="rows of sb contiguous slots; n = rows*sb",
        forward="""
for r in range(n // sb):
    S0 = V[a + r * sb]
    for j in range(1, sb):
        S0 = V[a + r * sb + j] if (V[a + r * sb + j] > S0 or V[a + r * sb + j] != V[a + r * sb + j]) else S0
    S1 = 0.0
    for j in range(sb):
        V[o + r * sb + j] = exp(V[a + r * sb + j] - S0)
        S1 += V[o + r * sb + j]
    for j in range(sb):
        V[o + r * sb + j] = V[o + r * sb + j] / S1
""",
        reverse="""
for r in range(n // sb):
    S0 = 0.0
    for j in range(sb):
        S0 += V[o + r * sb + j] * G[o + r * sb + j]
    for j in range(sb):
        G[a + r * sb + j] += V[o + r * sb + j] * (G[o + r * sb + j] - S0)
""",
        tangent="""
for r in range(n // sb):
    S0 = 0.0
    for j in range(sb):
        S0 += V[o + r * sb + j] * T[a + r * sb + j]
    for j in range(sb):
        T[o + r * sb + j] = V[o + r * sb + j] * (T[a + r * sb + j] - S0)
""",
        hvp="""
for r in range(n // sb):
    S0 = 0.0
    S1 = 0.0
    for j in range(sb):
        S0 += V[o + r * sb + j] * G[o + r * sb + j]
        S1 += T[o + r * sb + j] * G[o + r * sb + j] + V[o + r * sb + j] * H[o + r * sb + j]
    for j in range(sb):
        G[a + r * sb + j] += V[o + r * sb + j] * (G[o + r * sb + j] - S0)
        H[a + r * sb + j] += T[o + r * sb + j] * (G[o + r * sb + j] - S0) + V[o + r * sb + j] * (H[o + r * sb + j] - S1)
""",
        doc="softmax along rows; a primitive because its derivative is cheaper than its parts'",
        reads=(("a", "a + (k // sb) * sb", "1", "sb"),),
        spans=(("a", (("1", "n"),), "n > 0", "softmax input"),),
        checks=(("sb < 1", "row length must be at least 1"),
                ("(sb >= 1) & (n % pos(sb) != 0)", "length is not a multiple of the row length")),
    ),
    OpDef(
        name="gather_sum",
        arity=1,
        fields="n outputs, each the sum of sb >= 1 slots idx[b + r*sb + j] (absolute slot numbers); "
               "c is added to the first term (-0.0 when there is none: x + -0.0 is x)",
        forward="""
for r in range(n):
    S0 = V[idx[b + r * sb]] + c
    for j in range(1, sb):
        S0 = S0 + V[idx[b + r * sb + j]]
    V[o + r] = S0
""",
        reverse="""
for r in range(n):
    for j in range(sb):
        G[idx[b + r * sb + j]] += G[o + r]
""",
        tangent="""
for r in range(n):
    S0 = T[idx[b + r * sb]]
    for j in range(1, sb):
        S0 = S0 + T[idx[b + r * sb + j]]
    T[o + r] = S0
""",
        hvp="""
for r in range(n):
    for j in range(sb):
        G[idx[b + r * sb + j]] += G[o + r]
        H[idx[b + r * sb + j]] += H[o + r]
""",
        doc="((t0 + c) + t1) + ... + t(sb-1) over gathered slots, left to right: a chain of scalar "
            "additions fused by the optimizer (Python's sum() of tensors), bit for bit",
        gathers=("0", "b + k * sb", "sb", "n * sb"),
        checks=(("sb < 1", "term count must be at least 1"),),
    ),
]

#: elementwise opcodes that only the optimizer writes (tapejit.passes.program.fuse_squares): a
#: square and the arithmetic around it in one instruction, evaluated in the same order as
#: the instructions they replace (the same bits), with one pass over the chunk instead of
#: two or three. Least-squares objectives and Rosenbrock are sums of such terms.
FUSED = [
    _ew("square_sub", 2, "(a - b) * (a - b)", "out = (a - b)**2",
        a="2.0 * (a - b)", b="-2.0 * (a - b)"),
    _ew("square_rsub_c", 1, "(c - a) * (c - a)", "out = (c - a)**2", a="-2.0 * (c - a)"),
    _ew("add_scaled_square", 2, "a * a * c + b", "out = c * a**2 + b", a="2.0 * c * a", b="1.0"),
    # a difference with a square (Rosenbrock's x[1:] - x[:-1]**2): one pass fewer forward
    # and one row of adjoints fewer in reverse than the square and the sub
    _ew("minus_square", 2, "a - b * b", "out = a - b**2", a="1.0", b="-2.0 * b"),
]

#: rounding to integers, with derivative 0 (as in JAX and PyTorch). Pure arithmetic, so that
#: every target (CPU, CUDA, C, Python) evaluates them without a new math function: below
#: 2**52 in magnitude, (|a| + 2**52) - 2**52 is |a| rounded to the nearest integer, ties to
#: even, in the default rounding mode (numpy's rint); larger floats are integers already.
#: ±0, ±inf and nan pass through as numpy's do.
_TWO52 = "4503599627370496.0"


def _rint(x):
    return (f"({x} if (abs({x}) >= {_TWO52} or {x} == 0.0 or {x} != {x}) else "
            f"((({x} + {_TWO52}) - {_TWO52}) if {x} > 0.0 else -((-{x} + {_TWO52}) - {_TWO52})))")


def _floor(x):
    return f"(({_rint(x)} - 1.0) if {_rint(x)} > {x} else {_rint(x)})"


_RINT, _FLOOR = _rint("a"), _floor("a")
_CEIL = f"(-{_floor('(-a)')})"     # ceil(-0.7) is -0.0, as numpy's
ROUNDING = [
    _ew("rint", 1, _RINT, "out = a rounded to the nearest integer, ties to even (derivative 0)"),
    _ew("floor", 1, _FLOOR, "out = the largest integer <= a (derivative 0)"),
    _ew("ceil", 1, _CEIL, "out = the smallest integer >= a (derivative 0)"),
    _ew("trunc", 1, f"({_FLOOR} if a >= 0.0 else {_CEIL})", "out = a rounded toward 0 (derivative 0)"),
    # exact (C's fmod computes the remainder without rounding), so that % and // can follow
    # numpy's divmod: 1 // 0.1 is 9.0 there, where floor(1 / 0.1) is 10.0. d/db is minus the
    # truncated quotient, (a - o) / b rounded to the integer it is
    _ew("fmod", 2, "fmod(a, b)", "out = a - trunc(a / b) * b, exactly, with a's sign (C's fmod)",
        a="1.0", b=f"-{_rint('((a - o) / b)')}"),
]

#: user primitives (tapejit.ops.primitives): c is the primitive's number, the kernels are the
#: user's, called through a table of pointers; d/d(out) of a partial is 0 because the
#: user's second derivatives are totals (tapejit.ops.symbolic)
PRIMITIVES = [
    _ew("primitive1", 1, "prim1(c, a)", "out = f(a) for the user primitive number c", a="prim1_d(c, a, o)"),
    _ew("primitive2", 2, "prim2(c, a, b)", "out = f(a, b) for the user primitive number c",
        a="prim2_da(c, a, b, o)", b="prim2_db(c, a, b, o)"),
    # a block primitive (tapejit.ops.primitives.BlockPrimitive): vectors in, a vector out, each
    # output depending on every input. One call per point runs the user's kernel on the whole
    # block (``ctx`` is the kernel's context: the workspace arrays it reads and writes)
    OpDef(
        name="block",
        arity=2,
        fields="n outputs; operand a: sa contiguous slots at a; operand b: sb contiguous slots at b "
               "(sb = 0: a primitive of one operand); c = the primitive's number",
        forward="block_call(c, BLOCK_VALUE, ctx, o, n, a, sa, b, sb)",
        reverse="block_call(c, BLOCK_VJP, ctx, o, n, a, sa, b, sb)",
        tangent="block_call(c, BLOCK_JVP, ctx, o, n, a, sa, b, sb)",
        hvp="block_call(c, BLOCK_HVP, ctx, o, n, a, sa, b, sb)",
        doc="out = f(V[a:a+sa], V[b:b+sb]) with the user's kernels for f and its derivatives",
        reads=(("a", "a", "1", "sa"), ("b", "b", "1", "sb")),
        spans=(("a", (("1", "sa"),), "sa > 0", "block operand a"),
               ("b", (("1", "sb"),), "sb > 0", "block operand b")),
        checks=(("sa < 1", "a block primitive's first operand is empty"),
                ("sb < 0", "negative length of a block primitive's second operand"),
                ("n < 1", "a block primitive's result is empty")),
        cpu_only=True,
    ),
]

#: every opcode's code, pinned: saved tapes store these numbers (and tapejit.tape.io records
#: each code's name beside them, so that a file from another table is refused). A new opcode
#: takes the next free code; a code never changes or returns (tests/ops/test_opcodes.py keeps the
#: released ones). The rows above are grouped by kind; OPS is in code order.
CODES: dict[str, int] = {
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
    "block": 74,
}

_ROWS = ELEMENTWISE + STRUCTURAL + FUSED + ROUNDING + PRIMITIVES
if {op.name for op in _ROWS} != set(CODES) or len(_ROWS) != len(CODES):
    raise AssertionError(f"opcodes without a code, or codes without a row: "
                         f"{sorted({op.name for op in _ROWS} ^ set(CODES))}, or a name twice")
if sorted(CODES.values()) != list(range(len(CODES))):
    raise AssertionError("opcode codes must be 0..N-1, each once")
OPS: list[OpDef] = sorted(_ROWS, key=lambda op: CODES[op.name])


def fields_used(op: OpDef) -> list[str]:
    """The integer fields an opcode reads; a canonical tape holds 0 in the others."""
    import re
    if op.elementwise:
        used = {"out", "n"}
        for operand, stride in (("a", "sa"), ("b", "sb"), ("d", "sd"))[: op.arity]:
            used |= {operand, stride}
    else:
        words = set(re.findall(r"\b[a-z]+\b", op.forward + op.reverse + op.tangent + op.hvp))
        used = {"out", "n"} | (words & set(FIELDS))
    return [f for f in FIELDS if f in used]


def uses_immediate(op: OpDef) -> bool:
    import re
    texts = [op.value, *op.partials.values(), op.forward, op.reverse, op.tangent, op.hvp]
    return any(re.search(r"\bc\b", t) for t in texts if t)
OPCODE: dict[str, int] = dict(CODES)
BY_CODE: dict[int, OpDef] = dict(enumerate(OPS))
N_OPS = len(OPS)
assert N_OPS < 256, "opcodes are stored as uint8"


class _Codes:
    """Attribute access to opcodes: ``OP.add``."""

    def __init__(self, table):
        self.__dict__.update(table)


OP = _Codes(OPCODE)
