"""Keep Numba's on-disk cache coherent with tapejit's sources.

Numba keys a cached function on its own source file only: a jitted function in
``apps/minimize.py`` that calls ``cpu.tiling.packed_forward`` keeps its old machine code
after ``cpu/tiling.py`` changes. At import we hash, for every module, its source and the
sources of the tapejit modules it imports (transitively, relative imports at any depth);
a module whose hash changed loses its cached entries (``<module>.<function>-<line>.py311.nbi/nbc``
in its folder's cache) and recompiles, the others keep theirs. Editing a front-end module
(bench, cli, tensor) then recompiles nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

PACKAGE = Path(__file__).parent.parent
STAMP_NAME = "tapejit-numba.json"
# module-level imports only: a jitted function can only see what its module imports at the top
_IMPORT = re.compile(r"^from (\.+)([\w.]*) import ([\w, ()]+)", re.MULTILINE)


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name below tapejit ("cpu.batch"; a
    package's ``__init__`` by the package's name, the top one by "")."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _package_of(name: str, path: Path) -> list[str]:
    parts = name.split(".") if name else []
    return parts if path.name == "__init__.py" else parts[:-1]


def _imports(source: str, package: list[str], modules: set[str]) -> set[str]:
    found = set()
    for dots, module, names in _IMPORT.findall(source):
        up = len(dots) - 1
        base = package[:len(package) - up] if up else package
        target = base + (module.split(".") if module else [])
        found.add(".".join(target))
        # from .x import a, b: a and b may be modules too
        found.update(".".join(target + [n.split()[0]]) for n in names.strip("()").split(",") if n.strip())
    return found & modules


def module_digests() -> dict[str, str]:
    paths = _modules()
    sources = {m: p.read_bytes() for m, p in paths.items()}
    deps = {m: _imports(s.decode("utf-8", "replace"), _package_of(m, paths[m]), set(sources))
            for m, s in sources.items()}
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


def _cache_dirs(folder: Path) -> list[Path]:
    dirs = [folder / "__pycache__"]
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:
        # numba mirrors the source directory below NUMBA_CACHE_DIR
        dirs.append(Path(user) / str(folder.resolve()).lstrip(os.sep))
    return dirs


def refresh() -> None:
    try:
        digests = module_digests()
        folders = sorted({p.parent for p in _modules().values()})
        for folder in folders:
            prefix = ".".join(folder.relative_to(PACKAGE).parts)
            # this folder's modules by file stem, as Numba names their cache entries
            mine = {stem: digests.get(f"{prefix}.{stem}" if prefix else stem)
                    for stem in (p.stem for p in folder.glob("*.py"))}
            mine["__init__"] = digests.get(prefix)
            for cache in _cache_dirs(folder):
                stamp = cache / STAMP_NAME
                try:
                    old = json.loads(stamp.read_text())
                except (OSError, ValueError):
                    old = {}
                if old == mine:
                    continue
                if cache.exists():
                    for entry in cache.glob("*.nb[ic]"):
                        module = entry.name.split(".", 1)[0]
                        if old.get(module) != mine.get(module):
                            entry.unlink(missing_ok=True)
                cache.mkdir(parents=True, exist_ok=True)
                # atomic: CI's two test passes start side by side and read each other's stamp
                scratch = cache / f"{STAMP_NAME}.{os.getpid()}"
                scratch.write_text(json.dumps(mine, sort_keys=True))
                os.replace(scratch, stamp)
    except OSError:
        pass   # a read-only install: numba then caches elsewhere or not at all
