"""Saved tapes, malformed files, fuzzing, threads, NaN debugging, edge values, sizes."""
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import tapejit as tj
from tapejit.tape import io as tjio
from tapejit.bench import workloads
from tapejit.ops.table import OPCODE
from tapejit.tape.tape import INDEX_LIMIT

rng = np.random.default_rng(17)


def sample_function():
    M = rng.standard_normal((3, 6))
    return tj.trace(lambda x, p: tj.sum(tj.softmax(tj.reshape(x, (2, 3)), axis=1) * p[0])
                    + tj.sum(tj.tanh(M @ x)) + tj.amax(x[::2]) + workloads.rosen(x),
                    np.ones(6), params=(np.array([2.0]),))


def test_save_load_round_trip_is_bit_identical(tmp_path):
    f = sample_function()
    path = tmp_path / "f.npz"
    f.save(path)
    g = tj.load(path)
    for _ in range(3):
        x = rng.standard_normal(6)
        assert g(x) == f(x)
        assert np.array_equal(g.grad(x), f.grad(x))
        assert np.array_equal(g.grad(x, params=(np.array([3.0]),)), f.grad(x, params=(np.array([3.0]),)))
    X = rng.standard_normal((100, 6))
    assert np.array_equal(g.batch_grad(X), f.batch_grad(X))


def test_functions_pickle_as_arrays():
    f = sample_function()
    f.hessian_sparsity()                       # caches are not shipped
    data = pickle.dumps(f)
    g = pickle.loads(data)
    x = rng.standard_normal(6)
    assert g(x) == f(x) and np.array_equal(g.grad(x), f.grad(x))
    assert len(data) < 20_000


def rewrite(src, dst, header_changes=None, **array_changes):
    """Copy a saved file, changing arrays or header fields, with a valid checksum."""
    with np.load(src, allow_pickle=False) as data:
        members = {k: data[k] for k in data.files}
    header = json.loads(str(members["header"][()]))
    header.update(header_changes or {})
    text = json.dumps(header, sort_keys=True)
    members.update(array_changes)
    members["header"] = np.array(text)
    members["checksum"] = np.array(tjio._digest(text, {k: v for k, v in members.items()
                                                        if k not in ("header", "checksum")}))
    with open(dst, "wb") as fh:
        np.savez(fh, **members)
    return dst


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    sample_function().save(path)
    return path


def test_truncated_and_foreign_files(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 5):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(tj.TapeFormatError):
            tj.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(tj.TapeFormatError, match="missing member"):
        tj.load(other)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(tj.TapeFormatError):
        tj.load(text)


def test_a_file_of_another_opcode_table_is_refused(saved, tmp_path):
    """The header names the opcode of each code the tape uses: a file whose codes mean
    other opcodes in this tapejit (a reordered or different table) is refused, naming the
    opcode, instead of replayed as other operations."""
    with np.load(saved, allow_pickle=False) as data:
        header = json.loads(str(data["header"][()]))
    declared = header["opcodes"]
    assert declared and all(OPCODE[name] == code for name, code in declared.items())
    name = sorted(declared)[0]
    moved = dict(declared, **{name: (declared[name] + 1) % 200})
    with pytest.raises(tj.TapeFormatError, match=f"opcode '{name}' has code"):
        tj.load(rewrite(saved, tmp_path / "moved.npz", {"opcodes": moved}))
    unknown = dict(declared, frobnicate=declared[name])
    with pytest.raises(tj.TapeFormatError, match="'frobnicate'.*no such opcode"):
        tj.load(rewrite(saved, tmp_path / "unknown.npz", {"opcodes": unknown}))
    missing = {k: v for k, v in declared.items() if k != name}
    with pytest.raises(tj.TapeFormatError, match="does not name"):
        tj.load(rewrite(saved, tmp_path / "missing.npz", {"opcodes": missing}))
    with pytest.raises(tj.TapeFormatError, match="opcodes is missing"):
        tj.load(rewrite(saved, tmp_path / "none.npz", {"opcodes": None}))
    # a version 1 file (no names; its codes are the pinned ones) still loads
    legacy = {k: v for k, v in header.items() if k != "opcodes"}
    legacy["version"] = 1
    path = tmp_path / "v1.npz"
    rewrite(saved, path)
    with np.load(path, allow_pickle=False) as data:
        members = {k: data[k] for k in data.files}
    text = json.dumps(legacy, sort_keys=True)
    members["header"] = np.array(text)
    members["checksum"] = np.array(tjio._digest(text, {k: v for k, v in members.items()
                                                        if k not in ("header", "checksum")}))
    with open(path, "wb") as fh:
        np.savez(fh, **members)
    f, g = tj.load(saved), tj.load(path)
    x = np.linspace(0.1, 0.9, 6)
    assert f(x) == g(x) and np.array_equal(f.grad(x), g.grad(x))


def test_wrong_magic_version_and_checksum(saved, tmp_path):
    with pytest.raises(tj.TapeFormatError, match="magic"):
        tj.load(rewrite(saved, tmp_path / "m.npz", {"magic": "something-else"}))
    with pytest.raises(tj.TapeFormatError, match="version"):
        tj.load(rewrite(saved, tmp_path / "v.npz", {"version": 99}))
    with np.load(saved, allow_pickle=False) as data:
        members = {k: data[k] for k in data.files}
    members["cv"] = members["cv"] + 1.0                     # changed without a new checksum
    with open(tmp_path / "c.npz", "wb") as fh:
        np.savez(fh, **members)
    with pytest.raises(tj.TapeFormatError, match="checksum"):
        tj.load(tmp_path / "c.npz")


def test_every_index_field_at_every_bad_value_is_rejected(saved, tmp_path):
    """-1, the slot count and 2**31-1 in every field of every instruction. A stride of -1
    over a run is meaningful (a reversed view, x[::-1]) and still reads inside the tape,
    so that case must load and replay safely instead; every other case is rejected."""
    with np.load(saved, allow_pickle=False) as data:
        ins = data["ins"]
        n_slots = json.loads(str(data["header"][()]))["n_slots"]
    rejected = reversed_views = 0
    for row in range(ins.shape[1]):
        for field in range(8):
            for value in (-1, n_slots, INDEX_LIMIT):
                changed = ins.copy()
                if changed[field, row] == value:
                    continue
                if value == -1 and field in (3, 5, 7):
                    changed[field, row] = value
                    try:
                        g = tj.load(rewrite(saved, tmp_path / "f.npz", ins=changed))
                    except tj.TapeFormatError:
                        continue
                    g.grad(np.linspace(0, 1, 6))        # a reversed read, inside the tape
                    reversed_views += 1
                    continue
                changed[field, row] = value
                with pytest.raises(tj.TapeFormatError):
                    tj.load(rewrite(saved, tmp_path / "f.npz", ins=changed))
                rejected += 1
    assert rejected > 100 and reversed_views > 0


def test_opcode_forward_reference_and_sizes(saved, tmp_path):
    with np.load(saved, allow_pickle=False) as data:
        ops, ins = data["ops"], data["ins"]
    bad_ops = ops.copy()
    bad_ops[-1] = 255
    with pytest.raises(tj.TapeFormatError, match="opcode"):
        tj.load(rewrite(saved, tmp_path / "o.npz", ops=bad_ops))
    forward = ins.copy()
    elementwise = [i for i in range(ins.shape[1]) if tj.ops.table.OPS[ops[i]].elementwise and tj.ops.table.OPS[ops[i]].arity]
    i = elementwise[0]
    forward[2, i] = forward[0, i]                           # reads its own output
    with pytest.raises(tj.TapeFormatError, match="topological"):
        tj.load(rewrite(saved, tmp_path / "r.npz", ins=forward))
    with pytest.raises(tj.TapeFormatError, match="max_slots"):
        tj.load(rewrite(saved, tmp_path / "s.npz", {"n_slots": 2**30}))
    with pytest.raises(tj.TapeFormatError, match="header declares"):
        tj.load(rewrite(saved, tmp_path / "n.npz", {"n_consts": 10**6}))
    with pytest.raises(tj.TapeFormatError):
        tj.load(rewrite(saved, tmp_path / "i.npz", {"inputs": [[10**6, [6]]]}))


FUZZ_RUNNER = textwrap.dedent("""
    import sys, numpy as np, tapejit as tj
    outcomes = {"loaded": 0, "rejected": 0, "raised": 0}
    for path in sys.argv[1:]:
        try:
            f = tj.load(path)
        except tj.TapeFormatError:
            outcomes["rejected"] += 1
            continue
        outcomes["loaded"] += 1
        try:
            x = np.linspace(-1, 1, f.n_inputs).reshape(f.input_shapes[0])
            f(x); f.grad(x); f.batch_grad(np.stack([x, x]))
        except Exception:
            outcomes["raised"] += 1
    print(outcomes)
""")


def test_fuzzed_files_never_crash_the_process(saved, tmp_path):
    """Byte flips, raw and with the checksum repaired (so that validation is reached),
    loaded and replayed in subprocesses: none may die by a signal."""
    data = bytearray(saved.read_bytes())
    r = np.random.default_rng(0)
    paths = []
    for k in range(300):
        if k % 2:
            flipped = bytearray(data)
            for pos in r.integers(0, len(data), r.integers(1, 8)):
                flipped[pos] ^= int(r.integers(1, 256))
            path = tmp_path / f"raw{k}.npz"
            path.write_bytes(bytes(flipped))
        else:
            with np.load(saved, allow_pickle=False) as archive:
                ins = archive["ins"].copy()
            flat = ins.reshape(-1).view(np.uint8)
            for pos in r.integers(0, flat.size, r.integers(1, 4)):
                flat[pos] ^= int(r.integers(1, 256))
            path = rewrite(saved, tmp_path / f"fixed{k}.npz", ins=ins)
        paths.append(str(path))
    for batch in range(4):
        chunk = paths[batch::4]
        proc = subprocess.run([sys.executable, "-c", FUZZ_RUNNER, *chunk], capture_output=True, text=True,
                              timeout=600, env=dict(os.environ))
        assert proc.returncode == 0, f"a fuzzed file ended the process: rc={proc.returncode}\n{proc.stderr[-2000:]}"


def test_threads_replay_one_function_while_others_record():
    f = tj.trace(workloads.rosen, np.zeros(12))
    points = rng.standard_normal((8, 12))
    expected = [f.grad(p) for p in points]
    batch_X = rng.standard_normal((5000, 12))
    expected_batch = f.batch_grad(batch_X)
    barrier = threading.Barrier(16)
    errors = []

    def replayer(k):
        try:
            barrier.wait()
            for _ in range(50):
                if not np.array_equal(f.grad(points[k]), expected[k]):
                    errors.append(f"replay {k} differs")
                if k == 0 and not np.array_equal(f.batch_grad(batch_X), expected_batch):
                    errors.append("batch differs")
        except Exception as err:       # pragma: no cover - reported below
            errors.append(repr(err))

    def recorder(k):
        try:
            barrier.wait()
            for r in range(50):
                x = tj.tensor(np.full(4, k + r / 100), requires_grad=True)
                y = tj.sum(tj.sin(x) * x) + (x[0] * x[1])
                y.backward()
                want = np.sin(x.numpy()) + x.numpy() * np.cos(x.numpy()) + np.array([x.numpy()[1], x.numpy()[0], 0, 0])
                if not np.allclose(x.grad.numpy(), want, rtol=1e-14):
                    errors.append(f"recording {k} differs")
        except Exception as err:       # pragma: no cover
            errors.append(repr(err))

    threads = [threading.Thread(target=replayer, args=(k,)) for k in range(8)]
    threads += [threading.Thread(target=recorder, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def test_debug_nans_names_the_instruction_and_the_source_line():
    def fn(x):
        y = x * 2.0
        z = tj.log(y - 3.0)
        return tj.sum(z)
    with tj.debug_nans():
        f = tj.trace(fn, np.array([5.0, 6.0]))
        with pytest.raises(tj.NonFiniteError, match=r"\(log\) produced NaN \(recorded at .*test_reliability.py:\d+"):
            f(np.array([1.0, 6.0]))
        with pytest.raises(tj.NonFiniteError, match="NaN"):
            f.batch(np.array([[5.0, 6.0], [1.0, 6.0]]))
        x = tj.tensor([1.0, 2.0], requires_grad=True)
        with pytest.raises(tj.NonFiniteError, match=r"sqrt.*test_reliability.py"):
            tj.sqrt(x - 1.5)
        s = tj.tensor(-1.0, requires_grad=True)
        with pytest.raises(tj.NonFiniteError):
            tj.log(s)
    assert math.isnan(f(np.array([1.0, 6.0])))               # off again: IEEE propagation
    tj.debug_nans(True)
    try:
        with pytest.raises(tj.NonFiniteError):
            f(np.array([1.0, 6.0]))
    finally:
        tj.debug_nans(False)
    with pytest.raises(tj.NonFiniteError, match="input"):
        with tj.debug_nans():
            f(np.array([np.nan, 6.0]))


@pytest.mark.parametrize("fn,x,expected", [
    (tj.sin, 0.0, 0.0), (tj.sin, math.pi / 2, 1.0), (tj.sin, math.pi, math.sin(math.pi)),
    (tj.cos, 0.0, 1.0), (tj.cos, math.pi / 2, math.cos(math.pi / 2)), (tj.cos, math.pi, -1.0),
    (tj.tanh, 1000.0, 1.0), (tj.arctan, 1000.0, math.atan(1000.0)),
    (tj.exp, 709.0, math.exp(709.0)), (tj.exp, 710.0, math.inf),
])
def test_edge_values(fn, x, expected):
    assert fn(tj.tensor(x)).item() == expected
    f = tj.trace(lambda z: tj.sum(fn(z)), np.zeros(1))
    assert f(np.array([x])) == expected
    assert f.batch(np.array([[x]]))[0] == expected


def test_nan_results_and_nan_inputs_without_hangs():
    assert math.isnan(tj.log(tj.tensor(-1.0)).item())
    assert math.isnan(tj.sqrt(tj.tensor(-1.0)).item())
    f = tj.trace(lambda x: tj.sum(tj.log(x) + tj.sqrt(x)), np.ones(2))
    assert math.isnan(f(np.array([-1.0, 1.0])))
    assert all(np.isnan(f.grad(np.array([np.nan, np.nan]))))
    assert np.isnan(f.batch(np.full((3, 2), np.nan))).all()
    g = tj.trace(lambda x: tj.softmax(x) * tj.amax(x), np.ones(3))
    assert np.isnan(g(np.array([np.nan, 1.0, 2.0]))).all()


def test_ten_million_instructions_record_and_replay():
    x = tj.tensor(1.0, requires_grad=True)
    y = x
    n = 10_000_000
    for _ in range(n // 2):
        y = y * 1.0000001
        y = y + 0.0
    y.backward()
    assert x.grad.item() == pytest.approx(1.0000001 ** (n // 2), rel=1e-6)
    tape = y._tape
    per_instruction = (tape.ops.itemsize + tape.ins.shape[0] * tape.ins.itemsize + tape.cv.itemsize)
    assert per_instruction == 41          # bytes: opcode 1 + eight int32 fields + one float64
    assert tape.n_ins >= n


def test_int32_limits_raise_overflow_error():
    from tapejit.tape.tape import Tape
    t = Tape()
    t.n_slots = INDEX_LIMIT - 10
    with pytest.raises(OverflowError):
        t.emit(tj.ops.table.OP.input, 100)
