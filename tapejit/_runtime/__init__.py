"""Numba plumbing shared by the engines: calls through pointers (``unlinked``), worker threads,
recycled buffers, Python twins of small jitted loops, and the disk cache's coherence."""
