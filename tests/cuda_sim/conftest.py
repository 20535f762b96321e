import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.exit("tests/cuda_sim runs in its own process with NUMBA_ENABLE_CUDASIM=1 "
                "(tests/test_cuda_simulator.py starts it)", returncode=4)
