"""The tape itself: growth, int32 limits, and validation before any replay."""
import dataclasses

import numpy as np
import pytest

import tapejit as tj
from tapejit.ops.table import OP, OPCODE
from tapejit.tape.tape import INDEX_LIMIT, Tape, TapeArrays, validate


def small_tape():
    t = Tape(capacity=2, slot_capacity=2)
    x = t.emit(OP.input, 4)
    t.values[x:x + 4] = [1.0, 2.0, 3.0, 4.0]
    y = t.emit(OP.mul, 3, a=x, sa=1, b=x + 1, sb=1)
    k = t.add_index(np.array([2, 0, 1]))
    z = t.emit(OP.gather, 3, a=y, b=k)
    t.emit(OP.sum, 1, a=z, sa=1, b=3, sb=1)
    return t


def test_growth_by_doubling_keeps_everything():
    t = small_tape()
    assert len(t) == 4 and t.n_slots == 11 and t.ins_capacity >= 4
    arrays = t.arrays()
    validate(arrays)
    v = np.zeros(arrays.n_slots)
    v[:4] = [1.0, 2.0, 3.0, 4.0]
    from tapejit.cpu import _sweeps as sweeps
    sweeps.forward_vector(*arrays.sweep_args, v, 0, len(arrays))
    assert v[-1] == 1 * 2 + 2 * 3 + 3 * 4


def test_slot_overflow_raises_overflow_error():
    t = Tape()
    t.n_slots = INDEX_LIMIT - 2
    with pytest.raises(OverflowError):
        t.emit(OP.input, 5)
    # both the few-offsets check (Python ints) and the numpy one, at either end
    for offsets in ([2**31], [0, -2**31, 5], np.r_[np.zeros(99, np.int64), 2**31],
                    np.r_[-2**31, np.zeros(99, np.int64)]):
        with pytest.raises(OverflowError):
            t.add_index(np.array(offsets))
    for offsets in ([INDEX_LIMIT, -INDEX_LIMIT], np.r_[np.zeros(99, np.int64), INDEX_LIMIT, -INDEX_LIMIT], []):
        start = t.add_index(np.array(offsets, np.int64))
        np.testing.assert_array_equal(t.idx[start:start + len(offsets)], offsets)


def corrupt(arrays, field=None, value=None, **changes):
    ins = arrays.ins.copy()
    if field is not None:
        ins[field] = value
    return dataclasses.replace(arrays, ins=ins, **changes)


def test_validate_accepts_recorded_tapes():
    x = tj.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = tj.softmax(x) @ np.ones(3) + tj.amax(x, axis=0).sum() + (x.T @ x).sum()
    validate(y._tape.arrays())


@pytest.mark.parametrize("field,row,value,message", [
    ("a", 3, 99, "not topological"),
    ("a", 1, -1, "negative slot"),
    ("sa", 1, 5, "not topological"),
    ("out", 1, -1, "negative output"),
    ("out", 2, 0, "overlap"),
    ("n", 3, 50, "past the slot count"),
    ("b", 2, 40, "index pool"),
    ("sb", 3, 0, "inner size"),
    ("b", 3, 9, "not topological"),
])
def test_validate_rejects_bad_fields(field, row, value, message):
    arrays = small_tape().arrays()
    ins = arrays.ins.copy()
    ins[["out", "n", "a", "sa", "b", "sb", "d", "sd"].index(field), row] = value
    with pytest.raises(tj.InvalidTapeError, match=message):
        validate(dataclasses.replace(arrays, ins=ins))


def test_validate_rejects_unknown_opcode_and_bad_pools():
    arrays = small_tape().arrays()
    ops = arrays.ops.copy()
    ops[1] = 250
    with pytest.raises(tj.InvalidTapeError, match="unknown opcode"):
        validate(dataclasses.replace(arrays, ops=ops))
    idx = arrays.idx.copy()
    idx[0] = 1000
    with pytest.raises(tj.InvalidTapeError, match="gather"):
        validate(dataclasses.replace(arrays, idx=idx))
    with pytest.raises(tj.InvalidTapeError):
        validate(dataclasses.replace(arrays, ins=arrays.ins.astype(np.int64)))
    with pytest.raises(tj.InvalidTapeError, match="slot count"):
        validate(dataclasses.replace(arrays, n_slots=5))


def test_every_field_set_to_extremes_is_rejected_or_harmless():
    """No value of any field of any instruction lets a sweep leave its arrays."""
    arrays = small_tape().arrays()
    for row in range(1, len(arrays)):
        for field in range(8):
            for value in (-1, arrays.n_slots, INDEX_LIMIT):
                ins = arrays.ins.copy()
                ins[field, row] = value
                bad = dataclasses.replace(arrays, ins=ins)
                try:
                    validate(bad)
                except tj.InvalidTapeError:
                    continue
                # accepted: then the field is one this opcode does not read; replay stays in bounds
                v = np.zeros(bad.n_slots)
                from tapejit.cpu import _sweeps as sweeps
                sweeps.forward_vector(*bad.sweep_args, v, 0, len(bad))


def test_constant_pool_bounds():
    t = Tape()
    off = t.add_consts(np.arange(3.0))
    t.emit(OPCODE["const"], 3, b=off)
    arrays = t.arrays()
    validate(arrays)
    with pytest.raises(tj.InvalidTapeError, match="constant range"):
        validate(dataclasses.replace(arrays, consts=arrays.consts[:2]))
