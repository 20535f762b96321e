import os
import sys

HERE = os.path.dirname(__file__)
# helpers.py, and the test modules others reuse: test_opcodes' REFERENCE, the random
# program builders of test_passes and test_adjoint_plan
for folder in ("", "ops", "passes", "analysis"):
    sys.path.insert(0, os.path.join(HERE, folder))

# The CUDA simulator tests need a process of their own (tests/cuda/test_cuda_simulator.py
# starts it with NUMBA_ENABLE_CUDASIM=1); they are not collected here.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cuda/sim"]

# No Function changes tier in the middle of a test that did not ask for it: a kernel can
# round a transcendental function's last bit differently from the interpreter (libm's
# against tapejit.cpu._vmath's), and tests compare replays exactly. tests/cpu/test_tier.py sets
# the policy it tests.
from tapejit.cpu import tier  # noqa: E402

tier.HOT_POINTS = float("inf")
