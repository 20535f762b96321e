"""The opcode table (``table``), its symbolic derivatives (``symbolic``) and user primitives
(``primitives``): every fact about an operation lives here; the sweeps, kernels and checks derive from it."""
