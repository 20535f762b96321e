"""Saving and loading Functions: a versioned, checksummed ``.npz`` that never runs code.

The file is an uncompressed numpy archive read with ``allow_pickle=False``: the tape's
arrays, a JSON header (magic string, format version, sizes, the layout of inputs,
parameters, output and guards, and the name of every opcode code the tape uses) and a
SHA-256 checksum over everything else. ``load`` checks, in order: the archive and its
members' sizes (before reading them), magic and version, checksum, dtypes and shapes
against the header, the opcodes' names against this tapejit's table (a file whose codes
mean other opcodes here is refused, never misread), the declared sizes against
``max_slots``, the layout against the tape, and finally ``validate()`` over every
index. Anything wrong raises ``TapeFormatError`` naming it; a Function that loads has
been proven safe to replay.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

from ..errors import InvalidTapeError, TapeFormatError
from ..ops.table import BY_CODE, OPCODE
from .tape import INDEX_LIMIT, TapeArrays, validate

MAGIC = "tapejit-function"
#: version 2 added the header's "opcodes" (code of each opcode name the tape uses)
VERSION = 2
#: version 1 files name no opcodes: their codes are the pinned ones (tests/ops/test_opcodes.py)
READABLE_VERSIONS = (1, 2)
#: default largest slot count a loaded tape may declare (2**27 slots: 1 GiB of values)
MAX_SLOTS = 2**27

_ARRAYS = {"ops": np.uint8, "ins": np.int32, "cv": np.float64, "consts": np.float64, "idx": np.int32}


def _digest(header: str, arrays: dict) -> str:
    h = hashlib.sha256(header.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(f, path) -> None:
    """Write Function f to ``path`` (a ``.npz`` archive)."""
    a = f.arrays
    arrays = {"ops": a.ops, "ins": a.ins, "cv": a.cv, "consts": a.consts, "idx": a.idx,
              "guards": np.asarray(f.guards, np.int64)}
    for k, p in enumerate(f.param_values):
        arrays[f"param{k}"] = np.asarray(p, np.float64)
    from ..ops.primitives import names_of, numbers_used
    used = numbers_used(a.ops, a.cv)
    header = json.dumps({
        "magic": MAGIC, "version": VERSION, "n_slots": int(a.n_slots), "n_instructions": len(a),
        "n_consts": len(a.consts), "n_idx": len(a.idx), "n_guards": int(len(f.guards)),
        "inputs": [[b, list(s)] for b, s in f.inputs], "params": [[b, list(s)] for b, s in f.params],
        "output": [f.output[0], list(f.output[1])],
        "opcodes": {BY_CODE[int(code)].name: int(code) for code in np.unique(a.ops)},
        # user primitives by name: the numbers in the file are this process's
        **({"primitives": names_of(used)} if used else {}),
    }, sort_keys=True)
    arrays["header"] = np.array(header)
    arrays["checksum"] = np.array(_digest(header, {k: v for k, v in arrays.items() if k != "header"}))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _fail(message: str):
    raise TapeFormatError(message)


def _int(value, what, low=0, high=INDEX_LIMIT) -> int:
    if type(value) is not int or not low <= value <= high:
        _fail(f"header field {what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _shape(value, what) -> tuple:
    if not isinstance(value, list) or not all(type(s) is int and 0 <= s <= INDEX_LIMIT for s in value):
        _fail(f"header field {what} must be a list of sizes, got {value!r}")
    return tuple(value)


def read(path, max_slots: int = MAX_SLOTS) -> dict:
    """The pieces of a Function saved by ``save`` (its constructor's arguments: ``tj.load``
    builds it); raises TapeFormatError on any malformed file."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except Exception as err:      # zipfile raises several kinds on malformed archives
        _fail(f"not a tapejit file (not a readable archive: {type(err).__name__}: {err})")
    for info in infos:
        # members are stored, not compressed: one larger than the file would be a bomb
        if info.file_size > size or info.compress_type != zipfile.ZIP_STORED:
            _fail(f"archive member {info.filename} declares {info.file_size} bytes in a {size}-byte file")
    try:
        with np.load(path, allow_pickle=False) as data:
            members = {k: data[k] for k in data.files}
    except Exception as err:   # truncated, corrupt, or a pickled member
        _fail(f"cannot read the archive's arrays ({type(err).__name__}: {err})")
    for required in ("header", "checksum", *_ARRAYS, "guards"):
        if required not in members:
            _fail(f"missing member {required!r}")
    try:
        header_text = str(members["header"][()])
        header = json.loads(header_text)
    except Exception as err:
        _fail(f"unreadable header ({err})")
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        _fail("wrong magic string: not a tapejit Function file")
    if header.get("version") not in READABLE_VERSIONS:
        _fail(f"unsupported format version {header.get('version')!r} (this tapejit reads versions "
              f"{', '.join(map(str, READABLE_VERSIONS))})")
    body = {k: v for k, v in members.items() if k not in ("header", "checksum")}
    if str(members["checksum"][()]) != _digest(header_text, body):
        _fail("checksum mismatch: the file was modified or corrupted")

    n_slots = _int(header.get("n_slots"), "n_slots")
    if n_slots > max_slots:
        _fail(f"the tape declares {n_slots} slots, more than max_slots={max_slots} "
              "(pass a larger max_slots to load a tape this large)")
    n_ins = _int(header.get("n_instructions"), "n_instructions")
    expected = {"ops": (n_ins,), "ins": (8, n_ins), "cv": (n_ins,),
                "consts": (_int(header.get("n_consts"), "n_consts"),),
                "idx": (_int(header.get("n_idx"), "n_idx"),),
                "guards": (_int(header.get("n_guards"), "n_guards"),)}
    dtypes = dict(_ARRAYS, guards=np.int64)
    for name, shape in expected.items():
        a = members[name]
        if a.dtype != np.dtype(dtypes[name]) or a.shape != shape:
            _fail(f"member {name} has dtype {a.dtype} and shape {a.shape}; the header declares "
                  f"{np.dtype(dtypes[name])} {shape}")
    if header["version"] >= 2:
        _check_opcodes(header.get("opcodes"), members["ops"])
    try:
        inputs = [(_int(b, "input base"), _shape(s, "input shape")) for b, s in header["inputs"]]
        params = [(_int(b, "parameter base"), _shape(s, "parameter shape")) for b, s in header["params"]]
        out_base, out_shape = header["output"]
        output = (_int(out_base, "output base"), _shape(out_shape, "output shape"))
    except (KeyError, TypeError, ValueError):
        _fail("header layout (inputs, params, output) is malformed")
    param_values = []
    for k, (_, shape) in enumerate(params):
        p = members.get(f"param{k}")
        if p is None or p.dtype != np.float64 or p.shape != shape:
            _fail(f"parameter {k} is missing or has the wrong shape")
        param_values.append(p)
    cv = _primitive_numbers(header.get("primitives"), members["ops"], members["cv"])
    arrays = TapeArrays(members["ops"], members["ins"], cv, members["consts"], members["idx"], n_slots)
    try:
        validate(arrays, canonical=True)
    except InvalidTapeError as err:
        _fail(f"invalid tape: {err}")
    return dict(arrays=arrays, inputs=inputs, params=params, param_values=param_values, output=output,
                guards=members["guards"])


def _primitive_numbers(declared, ops: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """cv with the file's primitive numbers mapped to this process's by name. A name not
    registered here is refused: a file names primitives, it never carries their code."""
    from ..ops.primitives import PRIMITIVE_OPS, renumbered
    if not np.isin(ops, PRIMITIVE_OPS).any():
        return cv
    if not isinstance(declared, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in declared.items()):
        _fail("the tape calls user primitives but its header does not name them (field primitives)")
    try:
        return renumbered(ops, cv, declared)
    except KeyError as err:
        _fail(f"the tape calls the user primitive {err.args[0]!r}, which is not registered in this process: "
              "define it (tj.primitive) with its rules before loading")
    except ValueError as err:
        _fail(str(err))


def _check_opcodes(declared, ops: np.ndarray) -> None:
    """Each code the tape uses is declared, under the name it has in this tapejit's table."""
    if not isinstance(declared, dict):
        _fail("header field opcodes is missing or malformed")
    codes = {}
    for name, code in declared.items():
        code = _int(code, f"code of opcode {name!r}", high=255)
        if OPCODE.get(name) != code:
            here = f"code {OPCODE[name]}" if name in OPCODE else "no such opcode"
            _fail(f"the file's opcode {name!r} has code {code}, this tapejit's table has {here}: the file was "
                  "written by a tapejit with another opcode table")
        codes[code] = name
    for code in np.unique(ops):
        if int(code) not in codes:
            _fail(f"the tape uses opcode code {int(code)}, which the header does not name")
