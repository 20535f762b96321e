"""Tape-to-tape rewrites (``program``): constant folding, common subexpressions, fusion, dead code."""
