"""The CUDA target: the same tape replayed by a GPU kernel, one thread per point.

Every thread walks the same instruction stream (no divergence between opcodes) over its
own point. Small tapes keep each thread's values and adjoints in local arrays (cached
on chip); larger ones use ``[slot][point]`` arrays in global memory, which a warp reads
contiguously. The device sweeps are generated from the opcode table
(``tapejit/cuda/_sweeps.py``), like the CPU ones.

numba-cuda is optional: ``import tapejit`` never imports it, and asking for
``device="cuda"`` without it (or without a GPU) raises ``CudaUnavailableError``.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from .._runtime import recycle as _recycle
from .._runtime.modes import MODE_GRAD, MODE_HVP, MODE_JVP, MODE_VALUES, MODE_VJP
from ..errors import CudaUnavailableError, ShapeError

#: tapes whose per-thread arrays fit in this many bytes keep them in local memory (the
#: driver reserves it for every thread the GPU can hold: 64 KiB is ~17 GB on an H100)
LOCAL_BYTES = 64 << 10
#: device memory the global-memory workspace of one slice may take, in bytes
WORKSPACE_BYTES = 2 << 30
#: Launch settings, measured on an H200 (benchmarks/gpu_check.py): 1,024 threads per
#: multiprocessor, each walking several points, replay B1 2.2x faster than one thread per
#: point (1.55e9 against 7.1e8 points/s): the threads' local arrays stay in cache between
#: points. 512 to 2,048 threads per multiprocessor measure within 1%. None: one thread per point.
THREADS_PER_BLOCK = 256
BLOCKS_PER_SM: "int | None" = 4
#: numpy batches whose inputs and results take more bytes than this cross to the GPU in
#: slices, so that device memory stays bounded whatever B is
HOST_SLICE_BYTES = 1 << 30
#: slot indices cast to uint32 in the device sweeps (see codegen.Target)
UNSIGNED_INDEX = True

_INSTALL = "install it with `pip install tapejit[cuda]` (the numba-cuda package)"


def _simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _cuda():
    try:
        from numba import cuda
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise CudaUnavailableError(f"numba's CUDA target is not importable ({err}); {_INSTALL}") from None
    return cuda


def is_available() -> bool:
    """Whether ``device="cuda"`` can run here (a GPU, or numba-cuda's simulator)."""
    try:
        cuda = _cuda()
        return bool(cuda.is_available())
    except Exception:
        return False


def require() -> Any:
    cuda = _cuda()
    try:
        ok = cuda.is_available()
    except Exception as err:  # pragma: no cover
        raise CudaUnavailableError(f"CUDA is not usable here: {err}") from None
    if not ok:
        raise CudaUnavailableError("no CUDA GPU is available (and NUMBA_ENABLE_CUDASIM is not set); "
                                   f"device='cuda' needs an NVIDIA GPU with its driver, and numba-cuda: {_INSTALL}")
    return cuda


def is_device_array(x) -> bool:
    """GPU arrays of any library (the CUDA array interface), and the simulator's."""
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


def as_device_array(x) -> Any:
    """Numba's view of a GPU array of any library (CuPy, PyTorch CUDA tensors...), no copy."""
    if hasattr(x, "copy_to_host"):     # numba's own (or the simulator's)
        return x
    return require().as_cuda_array(x)


# ------------------------------------------------------------------------------------------
# kernels (built on first use, once per process)
# ------------------------------------------------------------------------------------------
_KERNELS: dict = {}
_DEVICE_MODULES: dict = {}


def cache_dir() -> str:
    """Where generated device-sweep modules are written (TAPEJIT_CACHE_DIR to choose)."""
    base = os.environ.get("TAPEJIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tapejit")
    try:
        os.makedirs(base, exist_ok=True)
        return base
    except OSError:
        import tempfile
        return tempfile.gettempdir()


def device_module(opcodes, unsigned: bool = True, primitives: tuple = ()) -> Any:
    """Device sweeps dispatching on just these opcodes, generated from the table;
    ``primitives``: (arity, number) of the user primitives the tape calls."""
    key = (frozenset(int(c) for c in opcodes), unsigned, tuple(sorted(primitives)))
    module = _DEVICE_MODULES.get(key)
    if module is None:
        import hashlib
        import importlib.util

        from ..codegen import render as codegen
        source = codegen.render_cuda(only=key[0], unsigned=unsigned)
        if primitives:
            by_arity: dict = {}
            for arity, number in primitives:
                by_arity.setdefault(arity, []).append(number)
            source += codegen.render_cuda_primitives(by_arity)
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        path = os.path.join(cache_dir(), f"sweeps_cuda_{digest}.py")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(source)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(f"tapejit_cuda_sweeps_{digest}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _DEVICE_MODULES[key] = module
    return module


def local_size(n_slots: int, n_arrays: int = 2, itemsize: int = 8) -> int:
    """Slots of each per-thread local array for a tape of n_slots (0: global workspace).

    Rounded up to a power of two (at least 32) so that tapes of similar size share a kernel."""
    size = max(32, 1 << max(0, n_slots - 1).bit_length())
    return size if n_arrays * size * itemsize <= LOCAL_BYTES else 0


def _kernel(tape: "DeviceTape", mode: int, local_slots: int):
    key = (tape.opcodes, tape.primitives, mode, tape.dtype.name, local_slots, UNSIGNED_INDEX)
    kernel = _KERNELS.get(key)
    if kernel is None:
        require()
        from . import _kernels as _cuda_kernels
        module = device_module(tape.opcodes, UNSIGNED_INDEX, tape.primitives)
        kernel = _KERNELS[key] = _cuda_kernels.make_kernel(module, mode, tape.dtype.name, local_slots)
    return kernel


def _blocks(points: int) -> int:
    blocks = math.ceil(points / THREADS_PER_BLOCK)
    if BLOCKS_PER_SM is not None:
        cuda = require()
        sms = getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1)
        blocks = min(blocks, max(1, BLOCKS_PER_SM * sms))
    return max(1, blocks)


# ------------------------------------------------------------------------------------------
# running a Function's tape
# ------------------------------------------------------------------------------------------
class DeviceTape:
    """A Function's tape, copied to the device once and kept (per dtype)."""

    def __init__(self, f, dtype):
        cuda = require()
        a = f.arrays
        self.dtype = np.dtype(dtype)
        self.n_slots = a.n_slots
        to = cuda.to_device
        self.arrays = (to(a.ops), to(a.ins), to(a.cv.astype(self.dtype)), to(a.consts.astype(self.dtype)),
                       to(a.idx))
        # slot positions unsigned, like the sweeps' slot indices (no wraparound arithmetic)
        self.in_pos, self.param_pos, self.out_pos, self.guards = (
            to(np.asarray(p, np.uint32)) for p in (f.in_pos, f.param_pos, f.out_pos, f.guards))
        self.opcodes = frozenset(int(c) for c in np.unique(a.ops))
        from ..ops.primitives import BY_NUMBER, numbers_used
        self.primitives = tuple((BY_NUMBER[k].arity, k) for k in numbers_used(a.ops, a.cv))
        self.guarded = f.guards.size > 0
        self.local_ok = True
        # stand-ins for absent seeds, parameters and (unguarded tapes) validity flags, so
        # that a call allocates and uploads only what it needs
        self.no_seeds = to(np.zeros((1, 1), self.dtype))
        self.no_params = to(np.zeros(0, self.dtype))
        self.no_valid = cuda.device_array(1, np.bool_)
        self.no_plan = to(np.zeros(1, np.uint8))
        self._host = (a, np.asarray(f.out_pos))
        self._plans: dict = {}

    def plan(self, mode: int):
        """The reverse sweep's adjoint plan on the device, for the seeds of this mode: the
        CPU engine's (batch._plan_for). Modes without a reverse sweep get a stand-in; HVP
        sweeps accumulate and zero without one."""
        if mode not in (MODE_GRAD, MODE_VJP):
            return self.no_plan
        arrays, out_pos = self._host
        seeded = out_pos[:1] if mode == MODE_GRAD else out_pos
        if len(seeded) not in self._plans:
            from ..cpu.batch import _plan_for
            self._plans[len(seeded)] = require().to_device(_plan_for(arrays, seeded))
        return self._plans[len(seeded)]


def device_tape(f, dtype) -> DeviceTape:
    cache = f.__dict__.setdefault("_device_tapes", {})
    key = np.dtype(dtype).str
    if key not in cache:
        cache[key] = DeviceTape(f, dtype)
    return cache[key]


def run(f, X, mode: int, seeds=None, params=None, dtype=np.float64):
    """Replay Function f at the rows of X (B, n_in) on the GPU.

    X may be numpy (results come back as numpy) or a device array (results stay on the
    device). Returns (values (B, n_out), derivatives, valid (B,)); valid is None for device
    inputs of a tape without guards."""
    from ..ops.primitives import require_gpu_rules
    require_gpu_rules(f.arrays.ops, f.arrays.cv, mode)
    cuda = require()
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ShapeError(f"device='cuda' computes in float64 or float32, not {dtype}")
    on_device = is_device_array(X)
    B = X.shape[0]
    n_in = f.n_inputs
    if X.ndim != 2 or X.shape[1] != n_in:
        raise ShapeError(f"batch input has shape {tuple(X.shape)}; expected (B, {n_in})")
    n_out = f.n_outputs
    width = n_out if mode == MODE_JVP else n_in
    if seeds is not None and (seeds.shape[0] != B):
        raise ShapeError("seeds and inputs disagree on the batch size")
    if not on_device:
        per_point = (n_in + n_out + width + (0 if seeds is None else seeds.shape[1])) * dtype.itemsize + 1
        step = max(1, HOST_SLICE_BYTES // per_point)
        if B > step:
            return _run_in_slices(f, X, mode, seeds, params, dtype, step, width)
    tape = device_tape(f, dtype)
    flat_params = np.asarray(f._flat_params(params), dtype=dtype)
    param_vals = cuda.to_device(flat_params) if flat_params.size else tape.no_params
    if on_device:
        Xd = X if np.dtype(X.dtype) == dtype else cuda.to_device(np.asarray(X.copy_to_host(), dtype=dtype))
        Sd = seeds if seeds is None or is_device_array(seeds) else cuda.to_device(np.asarray(seeds, dtype))
    else:
        Xd = cuda.to_device(np.ascontiguousarray(X, dtype=dtype))
        Sd = None if seeds is None else cuda.to_device(np.ascontiguousarray(seeds, dtype=dtype))
    if Sd is None:
        Sd = tape.no_seeds
    vals = cuda.device_array((B, n_out), dtype)
    derivs = cuda.device_array((B, width) if mode else (1, 1), dtype)
    valid = cuda.device_array(B, np.bool_) if tape.guarded else tape.no_valid
    if B:
        _launch(tape, Xd, Sd, vals, derivs, valid, param_vals, mode)
    if on_device:
        # without guards every point is valid: None spares an array and a copy
        return vals, derivs, valid if tape.guarded else None
    host_valid = valid.copy_to_host() if tape.guarded else np.ones(B, np.bool_)
    # large results land in recycled memory, as the CPU engine's do (no page faults)
    host_vals = vals.copy_to_host(_recycle.empty((B, n_out), dtype))
    host_derivs = derivs.copy_to_host(_recycle.empty((B, width), dtype)) if mode else np.empty((B, 0))
    return host_vals, host_derivs, host_valid


def _run_in_slices(f, X, mode, seeds, params, dtype, step, width):
    B = X.shape[0]
    vals = _recycle.empty((B, f.n_outputs), dtype)
    derivs = _recycle.empty((B, width if mode else 0), dtype)
    valid = np.empty(B, np.bool_)
    for p0 in range(0, B, step):
        p1 = min(B, p0 + step)
        part = run(f, X[p0:p1], mode, None if seeds is None else seeds[p0:p1], params, dtype)
        vals[p0:p1], derivs[p0:p1], valid[p0:p1] = part
    return vals, derivs, valid


def _configured(kernel, blocks: int):
    """``kernel[blocks, THREADS_PER_BLOCK]`` without numba-cuda's low-occupancy warning.

    numba-cuda warns when a grid has fewer than 128 blocks; here a small grid means a
    small batch, which is the caller's to choose and nothing they could mend.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Grid size \d+ will likely result in GPU under-utilization")
        return kernel[blocks, THREADS_PER_BLOCK]


def _launch(tape: DeviceTape, Xd, Sd, vals, derivs, valid, param_vals, mode: int) -> None:
    cuda = require()
    B = Xd.shape[0]
    n_arrays = 4 if mode == MODE_HVP else 2
    plan = () if mode == MODE_HVP else (tape.plan(mode),)
    local_slots = local_size(tape.n_slots, n_arrays, tape.dtype.itemsize) if tape.local_ok else 0
    if local_slots:
        kernel = _kernel(tape, mode, local_slots)
        try:
            _configured(kernel, _blocks(B))(*tape.arrays, *plan, tape.n_slots, tape.in_pos, tape.param_pos,
                                             param_vals, tape.out_pos, tape.guards, Xd, Sd, vals, derivs, valid)
            cuda.synchronize()
            return
        except Exception as err:
            # the driver could not reserve local memory for every thread: use the workspace
            if "OUT_OF_MEMORY" not in str(err) and "out of memory" not in str(err):
                raise
            tape.local_ok = False
    # global-memory workspace, one column per thread launched: slices of the batch keep
    # it within its budget
    kernel = _kernel(tape, mode, 0)
    per_point = n_arrays * tape.n_slots * tape.dtype.itemsize
    slice_points = max(THREADS_PER_BLOCK, min(B, WORKSPACE_BYTES // per_point))
    columns = min(slice_points, _blocks(slice_points) * THREADS_PER_BLOCK)
    work = [cuda.device_array((tape.n_slots, columns), tape.dtype) for _ in range(n_arrays)]
    for array in work[1:]:
        _zero(array)    # adjoints start at zero and the sweeps leave them so
    for p0 in range(0, B, slice_points):
        p1 = min(B, p0 + slice_points)
        blocks = min(_blocks(p1 - p0), math.ceil(columns / THREADS_PER_BLOCK))
        Ss = Sd[p0:p1] if Sd.shape[0] == B else Sd
        _configured(kernel, blocks)(
            *tape.arrays, *plan, tape.in_pos, tape.param_pos, param_vals, tape.out_pos, tape.guards,
            Xd[p0:p1], Ss, vals[p0:p1], derivs[p0:p1] if derivs.shape[0] == B else derivs,
            valid[p0:p1] if valid.shape[0] == B else valid, *work)
    cuda.synchronize()


def _zero(array) -> None:
    from ._kernels import zero_kernel
    blocks = math.ceil(array.shape[1] / THREADS_PER_BLOCK)
    _configured(zero_kernel, blocks)(array)
