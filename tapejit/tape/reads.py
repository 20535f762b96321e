"""What an instruction reads, from the opcode table's facts (``OpDef.reads``, ``gathers``,
``spans``, ``pool``, ``checks``), for the consumers that run in Python: ``validate()``,
the tiling plan and the passes' read sets. The jitted per-element versions are generated
into ``_reads.py``. Nothing here names an opcode: a new structural opcode states its reads
in its table row and every consumer follows.
"""
from __future__ import annotations

import numpy as np

from ..ops.table import FIELDS, OPS

_ELEMENTWISE = np.array([op.elementwise for op in OPS])
_ARITY = np.array([op.arity if op.elementwise else 0 for op in OPS])
#: per opcode: whether it reads slots through the index pool (``OpDef.gathers``)
GATHERS = np.array([bool(op.gathers) for op in OPS])
_OPERANDS = (("a", "sa"), ("b", "sb"), ("d", "sd"))
_CODE: dict = {}


def pos(x):
    """max(x, 1): the table's expressions divide by counts that validate() proves >= 1, and
    are evaluated over every instruction of an opcode before that is proven."""
    return np.maximum(x, 1)


def evaluate(expr: str, names: dict):
    """A table expression over the fields (integers or integer arrays)."""
    code = _CODE.get(expr)
    if code is None:
        code = _CODE[expr] = compile(expr, f"<tapejit table: {expr}>", "eval")
    return eval(code, {"pos": pos, "__builtins__": {}}, names)


def span_bounds(base, terms):
    """Smallest and largest of base + sum(stride * t) for integer t in [0, count)."""
    lo = np.array(base, np.int64, copy=True)
    hi = lo.copy()
    for stride, count in terms:
        span = np.asarray(stride, np.int64) * np.maximum(np.asarray(count, np.int64) - 1, 0)
        lo = lo + np.minimum(span, 0)
        hi = hi + np.maximum(span, 0)
    return lo, hi


def structural_spans(op: int, names: dict):
    """For each slot operand of structural opcode ``op``: (live, lo, hi, what), the first and
    last slot it reads where ``live`` (its ``when`` holds and no count is zero); the names
    may be arrays (one entry per instruction) or integers."""
    out = []
    for base, terms, when, what in OPS[op].spans:
        counts = [evaluate(count, names) for _, count in terms]
        live = np.asarray(evaluate(when, names)) & (np.asarray(names["n"]) > 0)
        for count in counts:
            live = live & (np.asarray(count) > 0)
        lo, hi = span_bounds(evaluate(base, names), [(evaluate(stride, names), count)
                                                     for (stride, _), count in zip(terms, counts)])
        out.append((live, lo, hi, what))
    return out


def _fields(ins: np.ndarray, i: int) -> dict:
    return {name: int(ins[k, i]) for k, name in enumerate(FIELDS)}


def gathered_slots(ops, ins, idx, i: int) -> np.ndarray:
    """The slots a gathering instruction reads (base + idx[entries]), in order."""
    base, first, _, entries = OPS[ops[i]].gathers
    names = dict(_fields(ins, i), k=0)
    start = int(evaluate(first, names))       # element 0's first entry: the entries follow in order
    return int(evaluate(base, names)) + idx[start: start + int(evaluate(entries, names))].astype(np.int64)


def gathered_blocks(ops, ins, idx, rows: np.ndarray):
    """The slots that the gathering instructions ``rows`` read, one block after another,
    and where each one's block starts."""
    fields = {name: ins[k, rows].astype(np.int64) for k, name in enumerate(FIELDS)}
    codes = ops[rows]
    base, first, entries = (np.zeros(rows.size, np.int64) for _ in range(3))
    for code in np.unique(codes):
        mask = codes == code
        names = {name: value[mask] for name, value in fields.items()}
        base_expr, first_expr, _, entries_expr = OPS[code].gathers
        base[mask] = evaluate(base_expr, names)
        first[mask] = evaluate(first_expr, dict(names, k=0))
        entries[mask] = evaluate(entries_expr, names)
    before = np.cumsum(entries) - entries
    at = np.repeat(first - before, entries) + np.arange(int(entries.sum()))
    return np.repeat(base, entries) + idx[at], before


def runs(ops, ins, idx, i: int) -> list:
    """(base, stride, count) of every run instruction i reads; gathered slots one by one,
    a structural operand of several strides as its contiguous hull."""
    op = ops[i]
    names = _fields(ins, i)
    n = names["n"]
    if _ELEMENTWISE[op]:
        return [(names[base], names[stride], n) for base, stride in _OPERANDS[: _ARITY[op]]]
    if OPS[op].gathers:
        return [(int(s), 0, 1) for s in gathered_slots(ops, ins, idx, i)]
    out = []
    for (base, terms, _, _), (live, lo, hi, _) in zip(OPS[op].spans, structural_spans(op, names)):
        if not live:
            continue
        if len(terms) == 1:        # exactly the run
            stride, count = terms[0]
            out.append((int(evaluate(base, names)), int(evaluate(stride, names)), int(evaluate(count, names))))
        else:
            out.append((int(lo), 1, int(hi - lo + 1)))
    return out


def ranges(ops, ins, idx, i: int) -> list:
    """Inclusive (first, last) slot ranges instruction i reads."""
    op = ops[i]
    names = _fields(ins, i)
    n = names["n"]
    if n == 0:
        return []
    if _ELEMENTWISE[op]:
        out = []
        for base, stride in _OPERANDS[: _ARITY[op]]:
            end = names[base] + (n - 1) * names[stride]
            out.append((min(names[base], end), max(names[base], end)))
        return out
    if OPS[op].gathers:
        slots = gathered_slots(ops, ins, idx, i)
        return [(int(slots.min()), int(slots.max()))] if slots.size else []
    return [(int(lo), int(hi)) for live, lo, hi, _ in structural_spans(op, names) if live]
