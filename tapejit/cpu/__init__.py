"""The CPU engine: the generated sweeps (``_sweeps``) with their opcode kernels, one-point
replays (``point``), the batch engine (``batch``), tiles of long vectors (``tiling``), per-tape
kernels (``compiled``) and the background tiering that chooses them (``tier``)."""
