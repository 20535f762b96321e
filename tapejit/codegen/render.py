"""Generate the interpreter sweeps from the opcode table.

Numba compiles each sweep as one function holding one branch per opcode. Writing those
branches by hand would define every opcode again in each sweep and each target; instead
this module renders them from ``tapejit.ops.table`` into plain Python source:

- ``tapejit/cpu/_sweeps.py``: sweeps over one point (``v[slot]``) and over a chunk of
  points laid out ``v[slot, point]`` (the loop over points is innermost, so it runs as
  SIMD), plus an elementwise kernel for the eager API's constant-only arithmetic;
- ``tapejit/cuda/_sweeps.py``: the same sweeps for one CUDA thread (``v[slot, t]``).

The generated files are committed so that they can be read, diffed and cached by Numba
(its cache needs a real source file); ``tests/codegen/test_codegen.py`` fails when they are stale.
Regenerate with ``python -m tapejit.codegen``.
"""
from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

from ..ops import table as opcodes
from ..ops.table import BLOCK_NAMES, FIELDS, MATH_NAMES, OP, OPCODE as OP_CODE, OPS, PRIMITIVE_NAMES

PACKAGE = Path(__file__).parent.parent
CPU_FILE = PACKAGE / "cpu" / "_sweeps.py"
CUDA_FILE = PACKAGE / "cuda" / "_sweeps.py"
READS_FILE = PACKAGE / "tape" / "_reads.py"

#: math functions the CPU sweeps take from tapejit.cpu._vmath instead of the C library
VECTOR_MATH = ("exp", "expm1", "log", "log1p", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh",
               "cosh", "tanh", "erf")
#: math functions Numba cannot lower from the math module: the CPU targets take tapejit.cpu._vmath's
CPU_HELPERS = ("fmod",)
#: compositions whose range lets the CPU's vector loops call a cheaper _vmath function:
#: exp(-|a|) lies in [0, 1], where log1p_unit needs no exponent bits (softplus)
VECTOR_FORMS = {"log1p(exp(-abs(": "log1p_unit(exp(-abs("}

#: _vmath functions with a cheaper form for arguments up to _vmath.TRIG_MEDIUM: a CPU loop
#: that calls one counts its arguments past that first (one more pass over a run, ~0.3 ns
#: a value) and runs the cheap form when there are none (sin: 1.6 ns a value against 9.0)
MEDIUM_FORMS = {"sin": "sin_medium", "cos": "cos_medium", "tan": "tan_medium"}

_OPERAND_FIELDS = {"a": ("a", "sa"), "b": ("b", "sb"), "d": ("d", "sd")}
_ACCESSORS = {"V": "v", "G": "g", "T": "dv", "H": "dg"}
_SCRATCH = ("S0", "S1")


def table_hash() -> str:
    text = repr([(op.name, op.arity, op.value, sorted(op.partials.items()), op.forward,
                  op.reverse, op.reverse_first, op.tangent, op.hvp, sorted(op.blas.items()), op.reads,
                  op.gathers) for op in OPS])
    for part in ("ops/symbolic.py", "cpu/_vmath.py", "cpu/_blas.py"):
        text += (PACKAGE / part).read_text()
    text += Path(opcodes.__file__).name + Path(__file__).read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# expressions
# --------------------------------------------------------------------------------------
class _Rename(ast.NodeTransformer):
    def __init__(self, mapping):
        self.mapping = mapping

    def visit_Name(self, node):
        if node.id in self.mapping:
            return ast.copy_location(ast.Name(id=self.mapping[node.id], ctx=node.ctx), node)
        return node


_EXPR_NAMES = {"a": "x_a", "b": "x_b", "d": "x_d", "o": "x_o", "c": "c"}


def render_expr(expr: str, mapping=None) -> str:
    """Rename the operand names of a table expression to the sweep's local names."""
    tree = ast.parse(expr, mode="eval")
    tree = _Rename(mapping or _EXPR_NAMES).visit(tree)
    return ast.unparse(tree)


def expr_names(expr: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)}


# --------------------------------------------------------------------------------------
# targets: how a slot is addressed
# --------------------------------------------------------------------------------------
class Target:
    """Vector: one point, one value per slot (a run of length 1 takes a scalar path, a
    unit-stride run a loop that vectorizes). Chunk: P values per slot, loop over points innermost.
    Thread: one CUDA thread's column ``t`` of ``[slot][point]`` arrays. Local: one CUDA
    thread's local arrays.

    ``unsigned``: slot and pool indices are cast to an unsigned type (``index_type``:
    uint32 on the GPU, uint64 on the CPU sweeps), and the CPU sweeps'
    instruction index too. A signed index makes Numba wrap negative values around (four
    64-bit instructions per access); slot indices are never negative (validate() checks
    every one). On an H200, B1's kernel ran 5-9% faster; for the CPU sweeps see _cpu_sweeps."""

    def __init__(self, kind: str, unsigned: bool = False, planned: bool = False):
        assert kind in ("vector", "chunk", "thread", "local")
        self.kind = kind
        self.unsigned = unsigned
        #: reverse sweeps of the CUDA targets follow tapejit.analysis.adjoint_plan (see _planned_reverse)
        self.planned = planned

    @property
    def host(self) -> bool:
        return self.kind in ("vector", "chunk")

    @property
    def index_type(self) -> str:
        # on the CPU a 64-bit cast is free and keeps a run's addresses affine (SIMD loops);
        # on the GPU 32-bit index arithmetic saves registers
        return "uint64" if self.host else "uint32"

    @property
    def instruction(self) -> str:
        """The name the CPU sweeps read an instruction's fields with (see _sweep)."""
        return "iu" if self.unsigned and self.host else "i"

    def slot(self, array: str, index: str) -> str:
        if self.unsigned:
            index = f"{self.index_type}({index})"
        if self.kind in ("vector", "local"):
            return f"{array}[{index}]"
        if self.kind == "chunk":
            return f"{array}[{index}, p]"
        return f"{array}[{index}, t]"

    def scratch(self, name: str) -> str:
        k = _SCRATCH.index(name)
        return f"tmp[{k}, p]" if self.kind == "chunk" else f"s{k}"

    def per_point(self, lines: list[str], indent: str) -> list[str]:
        """Wrap statements that touch per-point data in the loop over the chunk."""
        if self.kind != "chunk":
            return [indent + ln for ln in lines]
        return [indent + "for p in range(P):"] + [indent + "    " + ln for ln in lines]


def _replace_accessor(line: str, target: Target) -> str:
    """Rewrite V[...], G[...], T[...] (brackets may nest) and S0/S1 for a target."""
    out = []
    i = 0
    pattern = re.compile(r"\b([VGTH])\[")
    while True:
        m = pattern.search(line, i)
        if not m:
            out.append(line[i:])
            break
        out.append(line[i:m.start()])
        depth, j = 1, m.end()
        while depth:
            if line[j] == "[":
                depth += 1
            elif line[j] == "]":
                depth -= 1
            j += 1
        inner = _replace_accessor(line[m.end():j - 1], target)
        out.append(target.slot(_ACCESSORS[m.group(1)], inner))
        i = j
    text = "".join(out)
    if target.unsigned and target.host:
        # the pools are indexed by offsets that are never negative either
        text = re.sub(rf"\b(idx|consts)\[(?!{target.index_type}\()([^\[\]]*)\]", rf"\1[{target.index_type}(\2)]", text)
    for name in _SCRATCH:
        text = re.sub(rf"\b{name}\b", target.scratch(name), text)
    return text


def render_template(template: str, target: Target, indent: str) -> list[str]:
    lines = []
    for raw in template.strip("\n").splitlines():
        stripped = raw.lstrip(" ")
        pad = indent + raw[: len(raw) - len(stripped)]
        per_point = bool(re.search(r"\b([VGTH]\[|S0\b|S1\b)", stripped))
        text = _replace_accessor(stripped, target)
        if per_point:
            lines += target.per_point([text], pad)
        else:
            lines.append(pad + text)
    return lines


# --------------------------------------------------------------------------------------
# per-opcode bodies
# --------------------------------------------------------------------------------------
def _fields_used(op) -> list[str]:
    return opcodes.fields_used(op)


def _load_fields(op, indent, target) -> list[str]:
    i = target.instruction
    lines = []
    for f in _fields_used(op):
        name = "o" if f == "out" else f
        lines.append(f"{indent}{name} = ins[{FIELDS.index(f)}, {i}]")
    if op.elementwise:
        names = expr_names(op.value) | set().union(*[expr_names(e) for e in op.partials.values()] or [set()])
        if "c" in names:
            lines.append(f"{indent}c = cv[{i}]")
    else:
        text = op.forward + op.reverse + op.tangent + op.hvp
        if re.search(r"\bc\b", text):
            lines.append(f"{indent}c = cv[{i}]")
    return lines


def _operand_index(operand: str) -> str:
    base, stride = _OPERAND_FIELDS[operand]
    return f"{base} + k * {stride}"


def _operand_loads(names, target, slot_fn=None) -> list[str]:
    lines = []
    for operand in ("a", "b", "d"):
        if operand in names:
            lines.append(f"x_{operand} = {target.slot('v', _operand_index(operand))}")
    if "o" in names:
        lines.append(f"x_o = {target.slot('v', 'o + k')}")
    return lines


def elementwise_forward(op, target: Target, indent: str, with_tangent=False) -> list[str]:
    if target.kind == "chunk" and op.arity:
        flat = elementwise_forward(op, Target("vector"), "", with_tangent)
        return _flat_case(op, flat, indent, reverse=False)
    names = expr_names(op.value)
    body = _operand_loads(names, target)
    body.append(f"{target.slot('v', 'o + k')} = {render_expr(op.value)}")
    if with_tangent:
        body += _tangent_lines(op, target)
    lines = [f"{indent}for k in range(n):"]
    lines += target.per_point(body, indent + "    ")
    if target.kind == "vector":
        return (_scalar_case(body, target, indent) + _contiguous_case(op, body, indent, reverse=False)
                + lines)
    return lines


def _contiguous_case(op, body: list[str], indent: str, reverse: bool) -> list[str]:
    """All operands unit-stride: index row views from 0 so that Numba drops its
    negative-index fix-ups and LLVM vectorizes the loop (with runtime alias checks).
    Tangent sweeps get views of dv and dg the same way."""
    operands = "abd"[: op.arity]
    if not operands or op.calls_user_kernels:     # a user kernel does not vectorize
        return []
    text = "\n".join(body)
    tangent, second = "dv[" in text, "dg[" in text
    cond = " and ".join(f"s{x} == 1" for x in operands)
    # row views rv_ (v), rg_ (g), rt_ (dv), rh_ (dg): names no body uses
    views = [f"rv_{x} = v[{x}:{x} + n]" for x in operands] + ["rv_o = v[o:o + n]"]
    if reverse:
        views += [f"rg_{x} = g[{x}:{x} + n]" for x in operands] + ["rg_o = g[o:o + n]"]
    if tangent:
        views += [f"rt_{x} = dv[{x}:{x} + n]" for x in operands] + ["rt_o = dv[o:o + n]"]
    if second:
        views += [f"rh_{x} = dg[{x}:{x} + n]" for x in operands] + ["rh_o = dg[o:o + n]"]
    prefix = {"dv": "rt_", "dg": "rh_", "v": "rv_", "g": "rg_"}
    loop = _rewrite_slots(body, lambda array, x: f"{prefix[array]}{x}[k]")
    loop = _as_selects(_branch_free(loop) if reverse and not op.calls_user_kernels else loop)
    # unsigned slot indices (the kernels' uint64(...)) are not rewritten: their loops need
    # no views, and a dead view still costs its typing at every cold compile
    text = "\n".join(loop)
    views = [ln for ln in views if re.search(rf"\b{ln.split(' = ')[0]}\[", text)]
    out = [f"{indent}if {cond}:"] + [f"{indent}    {ln}" for ln in views]
    out += [f"{indent}    for k in range(n):"] + [f"{indent}        {ln}" for ln in loop]
    return out + [f"{indent}    continue"]


def _rewrite_slots(body: list[str], access) -> list[str]:
    """Replace each per-slot access ``v[a + k * sa]`` / ``v[o + k]`` (and of g, dv, dg) in a
    vector-target body by ``access(array, operand)``."""
    out = []
    for ln in body:
        for array in ("dv", "dg", "v", "g"):
            ln = re.sub(rf"\b{array}\[([abd]) \+ k \* s[abd]\]", lambda m, a=array: access(a, m.group(1)), ln)
            ln = re.sub(rf"\b{array}\[o \+ k\]", lambda m, a=array: access(a, "o"), ln)
        out.append(ln)
    return out


def _flat_case(op, vector_lines: list[str], indent: str, reverse: bool, planned: bool = False) -> list[str]:
    """The chunk target's elementwise loops. Rows of P points are contiguous and the sweeps
    always run full-width chunks, so n unit-stride rows are one flat run of n * P values
    (and a single row, n == 1, is flat whatever its strides): one loop. Other runs go row
    by row through the same loop, P values at a time, so each opcode has one loop (and its
    assigning variants) in the generated code, not a flat one and a 2-D one: cold compile
    of the chunk sweeps is dominated by LLVM vectorizing those loops.

    Views indexed from 0 let Numba drop its negative-index fix-ups (which stop LLVM
    vectorizing). Unsigned offsets into the whole flat arrays ran as fast, but under
    NUMBA_BOUNDSCHECK=1 reverse_chunk took 160 s to compile against 69 s with views."""
    operands = "abd"[: op.arity]
    start = vector_lines.index("for k in range(n):") + 1
    body = [ln[4:] for ln in vector_lines[start:]]
    cond = " and ".join(f"s{x} == 1" for x in operands)
    if reverse and len(operands) > 1:
        # operands' adjoint runs that overlap (x[1:] * x[:-1]) make one flat loop write
        # the same memory through two views: LLVM's runtime alias check then takes its
        # scalar loop. Row by row, two rows overlap only if they are the same row.
        pairs = [(x, y) for i, x in enumerate(operands) for y in operands[i + 1:]]
        cond += "".join(f" and ({x} + n <= {y} or {y} + n <= {x})" for x, y in pairs)
    loop = _rewrite_slots(body, lambda array, x: f"w{array}_{x}[k]")
    text = "\n".join(loop)
    first_row = {x: f"(({x} + row * s{x}) * P)" for x in operands}
    first_row["o"] = "((o + row) * P)"
    views = [f"w{array}_{x} = {array}f[{first_row[x]}:{first_row[x]} + width]"
             for array in ("v", "g", "dv") for x in operands + "o" if f"w{array}_{x}[" in text]
    out = [f"{indent}if n == 1 or ({cond}):",
           f"{indent}    n_rows, width = 1, n * P",
           f"{indent}else:",
           f"{indent}    n_rows, width = n, P",
           f"{indent}for row in range(n_rows):"] + [f"{indent}    {ln}" for ln in views]
    loop = _as_selects(_branch_free(loop) if reverse and not op.calls_user_kernels else loop)
    if planned:
        return out + _first_write_loops(op, loop, indent + "    ")
    out += [f"{indent}    for k in range(width):"]
    return out + [f"{indent}        {ln}" for ln in loop]


#: opcodes whose chunk reverse can assign an operand's adjoint instead of adding to it:
#: each such operand doubles the opcode's loops, and compile time with them (all unary
#: opcodes took reverse_chunk from 11 s to 55 s of cold compilation), so only the
#: arithmetic and functions that batch tapes are mostly made of
FIRST_WRITE_OPS = ("add", "sub", "mul", "neg", "square", "add_c", "mul_c", "rsub_c", "exp", "softplus",
                   "square_sub", "square_rsub_c", "add_scaled_square", "minus_square")
FIRST_WRITE_BITS = {"a": 1, "b": 2, "d": 4}
#: plan bit: the output's adjoint rows were accumulated into and must be zeroed once read
ZERO_AFTER_READ = 8


def first_write_operands(op) -> str:
    """The operands whose adjoint the chunk reverse may assign (see tapejit.analysis.adjoint_plan)."""
    if op.name in FIRST_WRITE_OPS:
        return "".join(x for x in "abd" if x in op.partials)
    if op.reverse_first:
        return "a"
    return ""


def _first_write_loops(op, loop: list[str], indent: str) -> list[str]:
    """The flat reverse loop once per subset of operands that the instruction's plan bits
    say to assign (``=``: no earlier contribution, so no load of a stale row and no
    zeroing needed), then the output's rows zeroed only when the plan asks."""
    consume = [ln for ln in loop if ln != "wg_o[k] = 0.0"]
    names = first_write_operands(op)
    subsets = [""]
    for x in names:
        subsets = [s + x for s in subsets] + subsets
    out = []
    for n_branch, subset in enumerate(subsets):
        body = consume
        for x in subset:
            body = [ln.replace(f"wg_{x}[k] += ", f"wg_{x}[k] = ") for ln in body]
        mask = sum(FIRST_WRITE_BITS[x] for x in names)
        want = sum(FIRST_WRITE_BITS[x] for x in subset)
        if len(subsets) == 1:
            head = []
        elif n_branch == len(subsets) - 1:
            head = [f"{indent}else:"]
        else:
            head = [f"{indent}{'if' if n_branch == 0 else 'elif'} (plan[i] & {mask}) == {want}:"]
        pad = indent + ("    " if head else "")
        out += head + [f"{pad}for k in range(width):"] + [f"{pad}    {ln}" for ln in body]
    out += [f"{indent}if plan[i] & {ZERO_AFTER_READ}:",
            f"{indent}    wg_o[:] = 0.0"]
    return out


def _branch_free(lines: list[str]) -> list[str]:
    """Rewrite the azmul branch 'if g_o != 0.0: acc += g_o * p' as a select."""
    out = []
    for ln in lines:
        if ln.strip() == "if g_o != 0.0:":
            continue
        if ln.startswith("    "):
            ln = ln[4:]
            m = re.match(r"(.+?) \+= g_o \* (.*)$", ln)
            if m:
                ln = f"{m.group(1)} += (g_o * {m.group(2)}) if g_o != 0.0 else 0.0"
        out.append(ln)
    return out


class _IfExpToSelect(ast.NodeTransformer):
    def visit_IfExp(self, node: ast.IfExp) -> ast.Call:
        self.generic_visit(node)
        return ast.Call(ast.Name("select", ast.Load()), [node.test, node.body, node.orelse], [])


def _as_selects(lines: list[str]) -> list[str]:
    """Every ``x if cond else y`` of a SIMD loop's statements as ``select(cond, x, y)``
    (tapejit.cpu._select: a masked load otherwise). Both sides only read the loop's own
    elements, so evaluating both is safe."""
    out = []
    for ln in lines:
        if " if " in ln and not ln.rstrip().endswith(":"):
            ln = ast.unparse(_IfExpToSelect().visit(ast.parse(ln)))
        out.append(ln)
    return out


def _scalar_case(body: list[str], target: Target, indent: str, c_math: tuple = VECTOR_MATH) -> list[str]:
    """For one point, a run of length 1 (a scalar tape) skips the loop: interpreter
    overhead per instruction is what scalar tapes pay. One value at a time, the C
    library's exp and log are faster than the vectorizable ones (shorter dependency chains)."""
    single = [re.sub(r"\bk \* s[abd]\b", "0", ln).replace(" + k]", "]").replace("o + k", "o") for ln in body]
    single = [_scalar_math(re.sub(r"\b([abd]) \+ 0\b", r"\1", ln), c_math) for ln in single]
    return [f"{indent}if n == 1:"] + [indent + "    " + ln for ln in single] + [f"{indent}    continue"]


#: the C library functions that one value at a time beat _vmath's (latency of a dependent
#: chain on the dev box, ns, _vmath / C: sin 57 / 16, tan 78 / 22, acos 35 / 23, atan2
#: 28 / 24, exp 18 / 11; sinh 24 / 39 and expm1 12.8 / 7.9 stay _vmath's: expm1 is
#: softplus's partial, 2,500 of them in the W graph's reverse). Values keep the C
#: library's everywhere: the eager recorder computes them with it, and replayed values
#: equal recorded ones bit for bit. Partials have no such twin.
C_MATH_FOR_PARTIALS = ("exp", "log", "log1p", "sin", "cos", "tan", "asin", "acos", "atan2")


def _scalar_math(line: str, c_math: tuple = VECTOR_MATH) -> str:
    """Call the C library's version of the c_math functions (imported as c_exp, ...)."""
    return re.sub(rf"\b({'|'.join(c_math)})\(", r"c_\1(", line)


def _tangent_lines(op, target: Target) -> list[str]:
    terms = []
    names = set()
    for operand, expr in op.partials.items():
        names |= expr_names(expr)
        terms.append(f"({render_expr(expr)}) * {target.slot('dv', _operand_index(operand))}")
    body = _operand_loads(names - {"o"}, target)
    if "o" in names:
        body.append(f"x_o = {target.slot('v', 'o + k')}")
    body.append(f"{target.slot('dv', 'o + k')} = {' + '.join(terms) if terms else '0.0'}")
    return body


def elementwise_reverse(op, target: Target, indent: str) -> list[str]:
    if target.kind == "chunk" and op.arity:
        flat = elementwise_reverse(op, Target("vector"), "")
        return _flat_case(op, flat, indent, reverse=True, planned=True)
    if target.planned and first_write_operands(op):
        return _planned_reverse(op, target, indent)
    g_out = target.slot("g", "o + k")
    body = [f"g_o = {g_out}"]
    if op.partials:
        # azmul: a zero adjoint contributes nothing, even through an infinite partial
        # (the chunk target's loops get the same rule as a select: _branch_free)
        names = set().union(*[expr_names(e) for e in op.partials.values()])
        body.append("if g_o != 0.0:")
        body += ["    " + ln for ln in _operand_loads(names, target)]
        for operand, expr in op.partials.items():
            dst = target.slot("g", _operand_index(operand))
            body.append(f"    {dst} += g_o * ({render_expr(expr)})")
    body.append(f"{g_out} = 0.0")
    lines = [f"{indent}for k in range(n):"]
    lines += target.per_point(body, indent + "    ")
    if target.kind == "vector":
        return (_scalar_case(body, target, indent, C_MATH_FOR_PARTIALS)
                + _contiguous_case(op, body, indent, reverse=True) + lines)
    return lines


def _planned_reverse(op, target: Target, indent: str) -> list[str]:
    """One CUDA thread's reverse of an elementwise op, following the plan byte: an operand
    whose bit is set is assigned (no load of a stale adjoint, and its producer need not
    zero it), and the output's adjoint is zeroed only when bit 8 says it was accumulated
    into. Per point that is two fewer local-memory accesses per assigned element; the
    GPU's sweeps are bound by those accesses (B1 on an H200: 1.06e9 -> 1.56e9 points/s).
    A zero adjoint still contributes
    exactly zero, also through an infinite partial (a select, as in _branch_free)."""
    g_out = target.slot("g", "o + k")
    names = set().union(*[expr_names(e) for e in op.partials.values()])
    body = [f"g_o = {g_out}"] + _operand_loads(names, target)
    for operand, expr in op.partials.items():
        dst = target.slot("g", _operand_index(operand))
        body.append(f"c_{operand} = (g_o * ({render_expr(expr)})) if g_o != 0.0 else 0.0")
        if operand in first_write_operands(op):
            body += [f"if pl & {FIRST_WRITE_BITS[operand]}:", f"    {dst} = c_{operand}",
                     "else:", f"    {dst} += c_{operand}"]
        else:
            body.append(f"{dst} += c_{operand}")
    body += [f"if pl & {ZERO_AFTER_READ}:", f"    {g_out} = 0.0"]
    return [f"{indent}pl = plan[i]", f"{indent}for k in range(n):"] + [f"{indent}    {ln}" for ln in body]


def elementwise_hvp(op, target: Target, indent: str) -> list[str]:
    """Reverse sweep of the tangent sweep (forward over reverse): G as in the reverse
    sweep, and H, its tangent: h_x += h_o * P_x + g_o * dP_x, where dP_x, the tangent of
    the partial, comes from symbolic.diff of the table's own partial expressions."""
    from ..ops.symbolic import diff
    g_out, h_out = target.slot("g", "o + k"), target.slot("dg", "o + k")
    body = [f"g_o = {g_out}", f"h_o = {h_out}"]
    names = set()
    terms = {}
    for operand, expr in op.partials.items():
        names |= expr_names(expr)
        parts = []
        for y in ("a", "b", "d", "o"):
            dy = diff(expr, y)
            if dy != "0.0":
                names |= expr_names(dy)
                names.add(f"t_{y}")
                parts.append(f"({render_expr(dy)}) * t_{y}")
        terms[operand] = " + ".join(parts) if parts else ""
    loads = _operand_loads(names, target)
    for y in ("a", "b", "d"):
        if f"t_{y}" in names:
            loads.append(f"t_{y} = {target.slot('dv', _operand_index(y))}")
    if "t_o" in names:
        loads.append(f"t_o = {target.slot('dv', 'o + k')}")
    body += loads
    for operand, expr in op.partials.items():
        g_dst = target.slot("g", _operand_index(operand))
        h_dst = target.slot("dg", _operand_index(operand))
        p = render_expr(expr)
        body.append(f"{g_dst} += (g_o * ({p})) if g_o != 0.0 else 0.0")
        second = f" + ((g_o * ({terms[operand]})) if g_o != 0.0 else 0.0)" if terms[operand] else ""
        body.append(f"{h_dst} += ((h_o * ({p})) if h_o != 0.0 else 0.0){second}")
    body += [f"{g_out} = 0.0", f"{h_out} = 0.0"]
    lines = [f"{indent}for k in range(n):"]
    lines += target.per_point(body, indent + "    ")
    if target.kind == "vector" and op.arity == 1:
        # unary ops only: a binary op's loop has twelve row views, and LLVM's alias checks
        # between them tripled this sweep's compile time (83 s) for a few percent of speed
        return _contiguous_case(op, body, indent, reverse=True) + lines
    return lines


def structural(op, which: str, target: Target, indent: str) -> list[str]:
    template = getattr(op, which)
    if which == "reverse" and op.reverse_first and (target.kind == "chunk" or target.planned):
        # the plan's bit 1: the first contributions to operand a's adjoints assign them
        lines = ([f"{indent}if plan[{target.instruction}] & {FIRST_WRITE_BITS['a']}:"]
                 + render_template(op.reverse_first, target, indent + "    ")
                 + [f"{indent}else:"] + render_template(template, target, indent + "    "))
    elif target.kind == "vector" and which in op.blas:
        # BLAS first; the loops when the product is small or the call reports no BLAS
        call = re.sub(r"\b([VGTH])\b(?!\[)", lambda m: _ACCESSORS[m.group(1)], op.blas[which])
        lines = ([f"{indent}if not ({op.blas['when']} and {call}):"]
                 + render_template(template, target, indent + "    "))
    else:
        lines = render_template(template, target, indent) if template else []
    if which in ("reverse", "hvp"):
        zero = [f"{target.slot('g', 'o + k')} = 0.0"]
        if which == "hvp":
            zero.append(f"{target.slot('dg', 'o + k')} = 0.0")
        lines.append(f"{indent}for k in range(n):")
        lines += target.per_point(zero, indent + "    ")
    return lines


# --------------------------------------------------------------------------------------
# whole sweeps
# --------------------------------------------------------------------------------------
def _dispatch(sweep_body, indent: str, only=None) -> list[str]:
    """An if/elif chain over the opcodes (those in ``only``)."""
    lines = []
    first = True
    for code, op in enumerate(OPS):
        if (only is not None and code not in only) or op.cpu_only:
            continue
        body = sweep_body(op, indent + "    ")
        if not body:
            continue
        kw = "if" if first else "elif"
        first = False
        lines.append(f"{indent}{kw} op == {code}:  # {op.name}")
        lines += body
    return lines


def _forward_body(target, with_tangent=False):
    def body(op, indent):
        if op.elementwise:
            code = elementwise_forward(op, target, indent, with_tangent)
        else:
            code = structural(op, "forward", target, indent)
            if with_tangent:
                code += structural(op, "tangent", target, indent)
        if not code:
            return []
        return _load_fields(op, indent, target) + code
    return body


def _hvp_body(target):
    def body(op, indent):
        if op.elementwise:
            code = elementwise_hvp(op, target, indent)
        elif op.name == "input":
            return []
        else:
            code = structural(op, "hvp", target, indent)
        return _load_fields(op, indent, target) + code
    return body


def _reverse_body(target):
    def body(op, indent):
        if op.elementwise:
            code = elementwise_reverse(op, target, indent)
        elif op.name == "input":
            return []
        else:
            code = structural(op, "reverse", target, indent)
        return _load_fields(op, indent, target) + code
    return body


_POINT_ARGS = "ops, ins, cv, consts, idx"

#: how a kernel rebuilds each array of its sweep from the context (tapejit.cpu._kernels):
#: the name the generated bodies use, its role in the context, its element type, and
#: whether it is a chunk's flat view of a [slot][point] workspace
_CONTEXT_ARRAYS = [
    ("ins", "ins", "int32", False), ("cv", "cv", "float64", False), ("consts", "consts", "float64", False),
    ("idx", "idx", "int32", False), ("plan", "plan", "uint8", False), ("tmp", "tmp", "float64", False),
    ("v", "v", "float64", False), ("dv", "dv", "float64", False), ("g", "g", "float64", False),
    ("dg", "dg", "float64", False),
    ("vf", "v", "float64", True), ("dvf", "dv", "float64", True), ("gf", "g", "float64", True),
    ("dgf", "dg", "float64", True),
]


def _kernel_prologue(text: str, target: Target) -> list[str]:
    """Statements that rebuild the arrays a kernel body names from its context."""
    from ..cpu._kernels import P_WORD, ROLES
    lines = []
    for name, role, dtype, flat in _CONTEXT_ARRAYS:
        if not re.search(rf"\b{name}\b", text):
            continue
        w = 3 * ROLES.index(role)
        two_d = name in ("ins", "tmp") or (target.kind == "chunk" and role in ("v", "dv", "g", "dg") and not flat)
        if two_d:
            lines.append(f"    {name} = {dtype}_2d_at(ctx[{w}], ctx[{w + 1}], ctx[{w + 2}])")
        elif flat:
            lines.append(f"    {name} = {dtype}_at(ctx[{w}], ctx[{w + 1}] * ctx[{w + 2}])")
        else:
            lines.append(f"    {name} = {dtype}_at(ctx[{w}], ctx[{w + 1}])")
    if re.search(r"\bP\b", text):
        lines.append(f"    P = ctx[{P_WORD}]")
    if target.instruction != "i" and re.search(rf"\b{target.instruction}\b", text):
        # an unsigned instruction index: no negative-index wraparound on every field load
        lines.append(f"    {target.instruction} = uint64(i)")
    if target.kind == "vector":
        lines += [f"    {s} = 0.0" for s in ("s0", "s1") if re.search(rf"\b{s}\b", text)]
    return lines


_MEDIUM_CALL = re.compile(rf"(?<![\w.])({'|'.join(MEDIUM_FORMS)})\((x_[abd])\)")


def _split_medium_loops(body: list[str]) -> list[str]:
    """Each innermost loop whose body calls a MEDIUM_FORMS function of an operand becomes
    a count of the operand's values past TRIG_MEDIUM (NaN is not past it: the medium forms
    keep it NaN), then the loop with the medium forms when there are none, else as it was.
    The arguments of one instruction are seldom of mixed sizes, so the cheap loop runs
    almost always, and each loop stays free of branches."""
    out, i = [], 0
    while i < len(body):
        line = body[i]
        indent = line[: len(line) - len(line.lstrip())]
        if not re.match(r"for \w+ in range\(", line.strip()):
            out.append(line)
            i += 1
            continue
        j = i + 1
        while j < len(body) and body[j].startswith(indent + " ") and body[j].strip():
            j += 1
        loop = body[i + 1:j]
        args = sorted({m.group(2) for ln in loop for m in _MEDIUM_CALL.finditer(ln)})
        if any(ln.strip().startswith("for ") for ln in loop):
            # only innermost loops: the loads index by every loop variable
            out += [line] + _split_medium_loops(loop)
            i = j
            continue
        if not args:
            out += body[i:j]
            i = j
            continue
        # (a load may sit under the loop's own zero-adjoint test: here it reads always)
        loads = [f"{indent}    " + next(ln for ln in loop if ln.strip().startswith(f"{x} = ")).strip() for x in args]
        medium = [_MEDIUM_CALL.sub(lambda m: f"{MEDIUM_FORMS[m.group(1)]}({m.group(2)})", ln) for ln in loop]
        out += [f"{indent}n_large = 0", line] + loads
        out += [f"{indent}    n_large += abs({x}) > TRIG_MEDIUM" for x in args]
        out += [f"{indent}if n_large == 0:", f"    {line}"] + [f"    {ln}" for ln in medium]
        out += [f"{indent}else:", f"    {line}"] + [f"    {ln}" for ln in loop]
        i = j
    return out


def _kernels(sweep, target, body_fn, reverse) -> list[str]:
    """One function per opcode with something to do in ``sweep``: the opcode's branch of
    the interpreter loop as a kernel of tapejit.cpu._kernels (``continue`` ends the
    instruction, so it returns)."""
    lines = []
    for code, op in enumerate(OPS):
        body = body_fn(op, "    ")
        if not body:
            continue
        body = [ln[: len(ln) - len(ln.lstrip())] + "return" if ln.strip() == "continue" else ln for ln in body]
        body = _split_medium_loops(body)
        text = "\n".join(body)
        lines += [f"def {sweep}__{op.name}(i, ctx):", f'    """{sweep} of one {op.name} instruction (opcode {code})."""']
        lines += _kernel_prologue(text, target) + body + ["", ""]
    return lines


def _sweep(name, args, target, body_fn, reverse, doc) -> list[str]:
    """A sweep: its opcode kernels, then the loop that calls them one instruction at a time
    (through tapejit.cpu._kernels, which compiles each kernel when the loop first meets it)."""
    params = [a.strip() for a in args.split(",")]

    def role(r):
        return r if r in params else params[params.index("v")]     # any array: never read
    arrays = ", ".join(role(r) for r in ("ins", "cv", "consts", "idx", "plan", "v", "dv", "g", "dg", "tmp"))
    width = "P" if "P" in params else "0"
    rng = "range(stop - 1, start - 1, -1)" if reverse else "range(start, stop)"
    lines = _kernels(name, target, body_fn, reverse)
    lines += [f"_run_{name} = kernel_caller(__name__, {name!r})", "", ""]
    lines += ["@njit(**_JIT)", f"def {name}({args}):", f'    """{doc}"""',
              f"    ctx = context({arrays}, {width})",
              f"    for i in {rng}:",
              f"        _run_{name}(ops[i], i, ctx)", ""]
    return lines


def _chain_sweep(name, args, target, body_fn, reverse, decorator, doc, only=None):
    """A sweep as one function: an if/elif chain over the opcodes (the CUDA targets, whose
    device functions are compiled into each kernel that calls them)."""
    assert not target.host
    lines = [decorator, f"def {name}({args}):", f'    """{doc}"""']
    if target.kind == "local":
        lines += ["    s0 = 0.0", "    s1 = 0.0"]
    rng = "range(stop - 1, start - 1, -1)" if reverse else "range(start, stop)"
    lines += [f"    for i in {rng}:", "        op = ops[i]"]
    lines += _dispatch(body_fn, "        ", only)
    lines.append("")
    return lines


#: the CPU sweeps: name, arguments, target, kernel bodies, reverse order, docstring
def _cpu_sweeps():
    # unsigned indices: Numba wraps a signed index that could be negative (a compare and a
    # select per access, and registers the interpreter loop then lacks). Measured on the
    # 2-core dev box: W graph value and gradient 215 -> 160 us, B2 5.0 -> 4.5 ms.
    vector, chunk = Target("vector", unsigned=True), Target("chunk", unsigned=True)
    return [
        ("forward_vector", f"{_POINT_ARGS}, v, start, stop", vector, _forward_body(vector), False,
         "Values of instructions start..stop-1 at one point; unit-stride runs vectorize."),
        ("reverse_vector", f"{_POINT_ARGS}, v, g, start, stop", vector, _reverse_body(vector), True,
         "Adjoints, instructions stop-1 down to start; consumed adjoints are zeroed. "
         "Unit-stride runs vectorize."),
        ("forward_tangent_vector", f"{_POINT_ARGS}, v, dv, start, stop", vector, _forward_body(vector, True),
         False, "Values and tangents (forward mode) at one point; unit-stride runs vectorize."),
        ("reverse_tangent_vector", f"{_POINT_ARGS}, v, dv, g, dg, start, stop", vector, _hvp_body(vector), True,
         "Adjoints g and their tangents dg (Hessian-vector products) at one point; "
         "unit-stride runs of unary ops vectorize."),
        ("forward_chunk", f"{_POINT_ARGS}, v, tmp, P, start, stop", chunk, _forward_body(chunk), False,
         "Values at P points laid out v[slot, point]; P == v.shape[1] (full-width chunks)."),
        ("reverse_chunk", f"{_POINT_ARGS}, plan, v, g, tmp, P, start, stop", chunk, _reverse_body(chunk), True,
         "Adjoints at P == v.shape[1] points, following tapejit.analysis.adjoint_plan's plan: "
         "first contributions assign, rows accumulated into are zeroed once read."),
        ("forward_tangent_chunk", f"{_POINT_ARGS}, v, dv, tmp, P, start, stop", chunk, _forward_body(chunk, True),
         False, "Values and tangents at P points."),
        ("reverse_tangent_chunk", f"{_POINT_ARGS}, v, dv, g, dg, tmp, P, start, stop", chunk, _hvp_body(chunk),
         True, "Adjoints and their tangents (Hessian-vector products) at P points."),
    ]


#: the sweep names, in the order of the generated file
CPU_SWEEPS = ("forward_vector", "reverse_vector", "forward_tangent_vector",
              "reverse_tangent_vector", "forward_chunk", "reverse_chunk", "forward_tangent_chunk",
              "reverse_tangent_chunk")


def render_cpu() -> str:
    out = [
        f'"""Generated by tapejit.codegen from tapejit/ops/table.py (table {table_hash()}); do not edit.',
        "",
        "Each sweep is a loop over instructions calling one kernel per opcode (tapejit.cpu._kernels);",
        "a kernel (``<sweep>__<opcode>``) is compiled the first time a sweep meets its opcode.",
        '"""',
        "# ruff: noqa",
        "import numpy as np",
        f"from math import {', '.join(n for n in MATH_NAMES if n not in VECTOR_MATH + CPU_HELPERS)}",
        "from numba import njit, uint64",
        "from ._kernels import context, float64_at, float64_2d_at, int32_at, int32_2d_at, kernel_caller, uint8_at",
        "from ._select import select",
        f"from ._primitive_calls import {', '.join(PRIMITIVE_NAMES + BLOCK_NAMES)}",
        "from ._blas import BLAS_MIN_WORK, at, gemm_nn, gemm_nt, gemm_tn",
        "",
        "# vectorizable versions: loops over a chunk or a run of slots become SIMD code;",
        "# one value at a time (runs of length 1) calls the C library's",
        f"from ._vmath import {', '.join(VECTOR_MATH + CPU_HELPERS)}, {', '.join(_vector_form_names())}",
        f"from ._vmath import TRIG_MEDIUM, {', '.join(MEDIUM_FORMS.values())}",
        f"from math import {', '.join(f'{n} as c_{n}' for n in VECTOR_MATH)}",
        "",
        "# error_model='numpy': x/0 gives inf or nan as IEEE says, never an exception.",
        "# _nrt=False: the sweeps allocate nothing, and without Numba's runtime their array",
        "# arguments and views are not reference counted (each count is an atomic instruction)",
        "_JIT = dict(cache=True, nogil=True, error_model='numpy', _nrt=False)",
        "",
        "",
    ]
    sweeps = _cpu_sweeps()
    assert tuple(s[0] for s in sweeps) == CPU_SWEEPS
    for name, args, target, body, reverse, doc in sweeps:
        out += _sweep(name, args, target, body, reverse, doc) + ["", ""]
    out += _elementwise_kernels()
    return _vector_forms("\n".join(out).rstrip() + "\n")


def _vector_form_names() -> list[str]:
    return sorted({form.split("(")[0] for form in VECTOR_FORMS.values()})


def _vector_forms(source: str) -> str:
    """VECTOR_FORMS applied to the _vmath calls (the C library's c_ calls keep theirs)."""
    for plain, form in VECTOR_FORMS.items():
        source = re.sub(r"(?<![\w.])" + re.escape(plain), lambda _, form=form: form, source)
    return source


def _elementwise_kernels() -> list[str]:
    """Values of one elementwise opcode over flat operands (stride 0 or 1), one function
    per opcode: the eager API's arithmetic on constants, which is not recorded."""
    lines = []
    for code, op in enumerate(OPS):
        if not op.elementwise:
            continue
        names = expr_names(op.value)
        lines += [f"def values__{op.name}(xa, sa, xb, sb, xd, sd, c, out):",
                  f'    """out[k] = {op.name}(xa[k*sa], xb[k*sb], xd[k*sd], c) (opcode {code})."""',
                  "    for k in range(out.shape[0]):"]
        for operand in ("a", "b", "d"):
            if operand in names:
                lines.append(f"        x_{operand} = x{operand}[k * s{operand}]")
        lines += [f"        out[k] = {render_expr(op.value)}", "", ""]
    lines += [
        "_VALUES = {}",
        "",
        "",
        "def elementwise_values(op, xa, sa, xb, sb, xd, sd, c, out):",
        '    """out[k] = op(xa[k*sa], xb[k*sb], xd[k*sd], c); each opcode\'s loop compiled on first use."""',
        "    run = _VALUES.get(op)",
        "    if run is None:",
        "        from ..ops.table import OPS",
        "        run = _VALUES[op] = njit(**_JIT)(globals()[f'values__{OPS[op].name}'])",
        "    run(xa, sa, xb, sb, xd, sd, c, out)",
        "",
    ]
    return lines


def render_cuda_primitives(numbers: dict) -> str:
    """Device functions for the primitive names of one tape's CUDA module: each dispatches
    on the primitive number c to the user's rule compiled for the GPU. ``numbers``: arity ->
    the numbers the tape calls. Appended to render_cuda's module, they replace the stubs."""
    from ..cpu import _primitive_calls as calls
    lines = ["", "", "# the user primitives of this tape (tapejit.ops.primitives), by their number c",
             "from tapejit.ops.primitives import device_kernel as _device_kernel", "from math import nan as _nan"]
    for name, (role, arguments) in calls.RULES.items():
        arity = len([x for x in arguments if x != "o"])
        args = ", ".join(arguments)
        cases = sorted(numbers.get(arity, ()))
        for k in cases:
            lines.append(f"_{name}_{k} = _device_kernel({k}, {role})")
        lines += ["", "", "@cuda.jit(device=True)", f"def {name}(c, {args}):"]
        for k in cases:
            lines += [f"    if c == {float(k)!r}:", f"        return _{name}_{k}({args})"]
        lines.append("    return a * _nan    # no other number: the tape calls only these")
    return "\n".join(lines) + "\n"


def render_cuda(only=None, unsigned: bool = True) -> str:
    """The CUDA device sweeps; with ``only`` (a set of opcodes), sweeps that dispatch on
    those opcodes alone (smaller kernels: fewer registers, faster to compile).
    ``unsigned``: slot indices cast to uint32 (see Target)."""
    thread, local = Target("thread", unsigned), Target("local", unsigned)
    thread_planned, local_planned = Target("thread", unsigned, True), Target("local", unsigned, True)
    dec = "@cuda.jit(device=True)"
    out = [
        f'"""Generated by tapejit.codegen from tapejit/ops/table.py (table {table_hash()}); do not edit.',
        "",
        "Device functions run by one CUDA thread: *_thread over its column t of [slot][point]",
        "arrays in global memory, *_local over per-thread local arrays (small tapes).",
        '"""',
        "# ruff: noqa",
        f"from tapejit.cuda._math import {', '.join(MATH_NAMES + PRIMITIVE_NAMES)}",
        "from numba import cuda, uint32",
        "",
        "",
    ]
    for name, args, target, body, rev, doc in [
        ("forward_thread", f"{_POINT_ARGS}, v, t, start, stop", thread, _forward_body(thread), False,
         "Values of one point."),
        ("reverse_thread", f"{_POINT_ARGS}, plan, v, g, t, start, stop", thread_planned,
         _reverse_body(thread_planned), True,
         "Adjoints of one point, following tapejit.analysis.adjoint_plan's plan: first contributions assign, "
         "adjoints accumulated into are zeroed once read."),
        ("forward_tangent_thread", f"{_POINT_ARGS}, v, dv, t, start, stop", thread,
         _forward_body(thread, True), False, "Values and tangents of one point."),
        ("reverse_tangent_thread", f"{_POINT_ARGS}, v, dv, g, dg, t, start, stop", thread, _hvp_body(thread),
         True, "Adjoints and their tangents (Hessian-vector products) of one point."),
        ("forward_local", f"{_POINT_ARGS}, v, start, stop", local, _forward_body(local), False,
         "Values of one point in local arrays."),
        ("reverse_local", f"{_POINT_ARGS}, plan, v, g, start, stop", local_planned, _reverse_body(local_planned),
         True, "Adjoints of one point in local arrays, following tapejit.analysis.adjoint_plan's plan."),
        ("forward_tangent_local", f"{_POINT_ARGS}, v, dv, start, stop", local,
         _forward_body(local, True), False, "Values and tangents of one point in local arrays."),
        ("reverse_tangent_local", f"{_POINT_ARGS}, v, dv, g, dg, start, stop", local, _hvp_body(local),
         True, "Adjoints and their tangents of one point in local arrays."),
    ]:
        lines = _chain_sweep(name, args, target, body, rev, dec, doc, only)
        # scratch scalars take the arrays' dtype, so that float32 kernels stay float32
        zero = "v[0, t] * 0" if target.kind == "thread" else "v[0] * 0"
        lines = [ln.replace("    s0 = 0.0", f"    s0 = {zero}").replace("    s1 = 0.0", f"    s1 = {zero}")
                 for ln in lines]
        out += lines + ["", ""]
    return "\n".join(out).rstrip() + "\n"


def write_generated(files, check: bool = False) -> bool:
    """Write each (path, text) whose file differs; with check=True only report whether
    all are current."""
    current = True
    for path, text in files:
        old = path.read_text() if path.exists() else None
        if old != text:
            current = False
            if not check:
                path.write_text(text)
    return current


def render_reads() -> str:
    """What output element k of a structural instruction reads, from the table's ``reads``
    and ``gathers``, as jitted functions with the opcodes' codes written in."""
    def chain(ops, body):
        lines, first = [], True
        for op in ops:
            lines.append(f"    {'if' if first else 'elif'} op == {OP_CODE[op.name]}:  # {op.name}")
            lines += [f"        {line}" for line in body(op)]
            first = False
        return lines

    readers = [op for op in OPS if op.reads]
    gatherers = [op for op in OPS if op.gathers]
    width = max(len(op.reads) for op in readers)
    out = [
        f'"""Generated by tapejit.codegen from tapejit/ops/table.py (table {table_hash()}); do not edit.',
        "",
        "What output element k of a structural instruction reads, from the table's ``reads`` and",
        "``gathers``: the passes' dependences, read counts and slot remapping and the adjoint plan",
        "call these, so that none of them names a structural opcode.",
        '"""',
        "# ruff: noqa",
        "from numba import njit",
        "",
        '_JIT = dict(cache=True, nogil=True, error_model="numpy", _nrt=False)',
        "",
        "#: slot operands a structural instruction reads at most (``which`` in operand_reads)",
        f"MAX_OPERANDS = {width}",
        "",
        "",
        "@njit(**_JIT)",
        "def operand_reads(op, n, a, sa, b, sb, k, which):",
        '    """(first slot, stride, count) of slot operand ``which`` that output element k reads;',
        '    count 0 where there is none (elementwise opcodes, gathers, constants)."""',
    ]
    def reads_body(op):
        lines = []
        for which, (_, first, stride, count) in enumerate(op.reads):
            lines += [f"if which == {which}:", f"    return ({first}, {stride}, {count})"]
        return lines
    out += chain(readers, reads_body)
    out += ["    return (0, 0, 0)", "", "", "@njit(**_JIT)", "def operand_base(op, which):",
            '    """The field (row of the instruction array) holding the base slot of operand ``which``,',
            '    or -1."""']
    def base_body(op):
        lines = []
        for which, (field_name, *_rest) in enumerate(op.reads):
            lines += [f"if which == {which}:", f"    return {FIELDS.index(field_name)}"]
        return lines
    out += chain(readers, base_body)
    out += ["    return -1", "", "", "@njit(**_JIT)", "def index_reads(op, a, b, sb, k):",
            '    """(base slot, first entry, entry count) of the index pool that output element k of a',
            '    gathering instruction reads (slots base + idx[entry]); count 0 for other opcodes."""']
    out += chain(gatherers, lambda op: [f"return ({op.gathers[0]}, {op.gathers[1]}, {op.gathers[2]})"])
    out += ["    return (0, 0, 0)", ""]
    # every output element of these reads the same slots: the consumers visit element 0 only
    # (a block primitive of n outputs over m inputs: n*m reads otherwise, 1e10 for a
    # tridiagonal solve of 1e5 unknowns)
    same = [op for op in readers if not op.gathers and not any(re.search(r"\bk\b", r[1]) for r in op.reads)]
    out += ["", "@njit(**_JIT)", "def distinct_reads(op, n):",
            '    """How many output elements of an instruction read different slots: 1 where all read',
            '    the same (operand_reads does not depend on k; 0 without outputs), n otherwise."""']
    out += chain(same, lambda op: ["return 1 if n > 0 else 0"])     # (no outputs: nothing read)
    out += ["    return n", ""]
    return "\n".join(out)


def write(check: bool = False) -> bool:
    """Write the generated files; with check=True only report whether they are current."""
    return write_generated(((CPU_FILE, render_cpu()), (CUDA_FILE, render_cuda()), (READS_FILE, render_reads())),
                           check)

