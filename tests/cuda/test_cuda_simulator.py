"""The CUDA target's tests run on numba-cuda's simulator, in a process of their own
(the simulator must be chosen before numba.cuda is first imported)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tapejit as tj

HERE = Path(__file__).parent


def test_cuda_kernels_on_the_simulator():
    pytest.importorskip("numba.cuda", reason="numba-cuda is part of the test extra")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "sim")],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]


def test_without_a_gpu_device_cuda_raises_a_clear_error():
    from tapejit import cuda as tjcuda
    if tjcuda.is_available():
        pytest.skip("this machine has a GPU (or the simulator is on): the error path is not reachable")
    f = tj.trace(lambda x: tj.sum(x * x), np.zeros(3))
    with pytest.raises(tj.CudaUnavailableError, match="GPU|numba"):
        f.batch_grad(np.zeros((2, 3)), device="cuda")


def test_small_grids_launch_without_numba_cudas_low_occupancy_warning():
    # the simulator never warns, so a stand-in kernel raises numba-cuda's warning (its
    # wording in numba_cuda/numba/cuda/dispatcher.py) when configured
    import warnings

    from tapejit import cuda as tjcuda

    class Kernel:
        def __getitem__(self, config):
            blocks, threads = config
            # numba's warnings arrive wrapped in ANSI bold codes
            warnings.warn(f"\x1b[1mGrid size {blocks} will likely result in GPU under-utilization "
                          "due to low occupancy.\x1b[0m", RuntimeWarning)
            warnings.warn("an unrelated warning", RuntimeWarning)
            return config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tjcuda._configured(Kernel(), 3) == (3, tjcuda.THREADS_PER_BLOCK)
    assert [str(w.message) for w in caught] == ["an unrelated warning"]
