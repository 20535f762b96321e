"""Code generation from the opcode table: the Numba sweeps for the CPU and CUDA targets
(``render``; ``python -m tapejit.codegen`` rewrites them) and the C recorder's header (``c_header``)."""
