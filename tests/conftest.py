import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# The CUDA simulator tests need a process of their own (tests/test_cuda_simulator.py
# starts it with NUMBA_ENABLE_CUDASIM=1); they are not collected here.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cuda_sim"]
