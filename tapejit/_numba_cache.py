"""Keep Numba's on-disk cache coherent with tapejit's sources.

Numba keys a cached function on its own source file only: a jitted function in
``optimize.py`` that calls ``tiling.packed_forward`` keeps its old machine code after
``tiling.py`` changes. At import we hash, for every module, its source and the sources of
the tapejit modules it imports (transitively); a module whose hash changed loses its
cached entries (``<module>.<function>-<line>.py311.nbi/nbc``) and recompiles, the others
keep theirs. Editing a front-end module (bench, cli, tensor) then recompiles nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

PACKAGE = Path(__file__).parent
STAMP_NAME = "tapejit-numba.json"
# module-level imports only: a jitted function can only see what its module imports at the top
_IMPORT = re.compile(r"^from \.(\w*) import ([\w, ()]+)", re.MULTILINE)


def _cache_dirs() -> list[Path]:
    dirs = [PACKAGE / "__pycache__"]
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:
        # numba mirrors the source directory below NUMBA_CACHE_DIR
        dirs.append(Path(user) / str(PACKAGE.resolve()).lstrip(os.sep))
    return dirs


def _imports(source: str, modules: set[str]) -> set[str]:
    found = set()
    for module, names in _IMPORT.findall(source):
        if module:
            found.add(module)
        else:   # from . import a, b
            found.update(n.split()[0] for n in names.strip("()").split(",") if n.strip())
    return found & modules


def module_digests() -> dict[str, str]:
    sources = {p.stem: p.read_bytes() for p in sorted(PACKAGE.glob("*.py"))}
    deps = {m: _imports(s.decode("utf-8", "replace"), set(sources)) for m, s in sources.items()}
    digests = {}
    for module in sources:
        seen, todo = set(), [module]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(deps[m])
        h = hashlib.sha256()
        for m in sorted(seen):
            h.update(m.encode())
            h.update(sources[m])
        digests[module] = h.hexdigest()
    return digests


def refresh() -> None:
    try:
        digests = module_digests()
        for cache in _cache_dirs():
            stamp = cache / STAMP_NAME
            try:
                old = json.loads(stamp.read_text())
            except (OSError, ValueError):
                old = {}
            if old == digests:
                continue
            if cache.exists():
                for entry in cache.glob("*.nb[ic]"):
                    module = entry.name.split(".", 1)[0]
                    if old.get(module) != digests.get(module):
                        entry.unlink(missing_ok=True)
            cache.mkdir(parents=True, exist_ok=True)
            # atomic: CI's two test passes start side by side and read each other's stamp
            scratch = cache / f"{STAMP_NAME}.{os.getpid()}"
            scratch.write_text(json.dumps(digests, sort_keys=True))
            os.replace(scratch, stamp)
    except OSError:
        pass   # a read-only install: numba then caches elsewhere or not at all
