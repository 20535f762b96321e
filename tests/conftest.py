import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# The CUDA simulator tests need a process of their own (tests/cuda/test_cuda_simulator.py
# starts it with NUMBA_ENABLE_CUDASIM=1); they are not collected here.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cuda/sim"]

# No Function changes tier in the middle of a test that did not ask for it: a kernel can
# round a transcendental function's last bit differently from the interpreter (libm's
# against tapejit.cpu._vmath's), and tests compare replays exactly. tests/cpu/test_tier.py sets
# the policy it tests.
from tapejit.cpu import tier  # noqa: E402

tier.HOT_POINTS = float("inf")
