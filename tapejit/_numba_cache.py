"""Keep Numba's on-disk cache coherent with tapejit's sources.

Numba keys a cached function on its own source file only: a jitted function that calls
the generated sweeps keeps its old machine code after the sweeps change. At import we
hash every tapejit source file and, when the hash differs from the one stamped beside
the cache, drop tapejit's cached entries so that everything recompiles together.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).parent
STAMP_NAME = "tapejit-numba.stamp"


def _cache_dirs() -> list[Path]:
    dirs = [PACKAGE / "__pycache__"]
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:
        # numba mirrors the source directory below NUMBA_CACHE_DIR
        dirs.append(Path(user) / str(PACKAGE.resolve()).lstrip(os.sep))
    return dirs


def source_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(PACKAGE.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def refresh() -> None:
    try:
        digest = source_digest()
        for cache in _cache_dirs():
            stamp = cache / STAMP_NAME
            if stamp.exists() and stamp.read_text() == digest:
                continue
            if cache.exists():
                for entry in cache.glob("*.nb[ic]"):
                    entry.unlink(missing_ok=True)
            cache.mkdir(parents=True, exist_ok=True)
            stamp.write_text(digest)
    except OSError:
        pass   # a read-only install: numba then caches elsewhere or not at all
