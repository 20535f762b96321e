"""The disk cache's coherence follows imports across subpackages (tapejit/_runtime/numba_cache.py)."""
from tapejit._runtime import numba_cache


def test_relative_imports_at_any_depth_are_followed():
    modules = set(numba_cache._modules())
    source = ("from ..ops.table import OPS\n"
              "from . import _sweeps as sweeps, point\n"
              "from .._runtime.unlinked import unlinked\n"
              "    from ..analysis import sparsity\n")        # indented: inside a function, not followed
    # "from . import x" imports the package too
    assert numba_cache._imports(source, ["cpu"], modules) == {"ops.table", "cpu", "cpu._sweeps", "cpu.point",
                                                              "_runtime.unlinked"}
    # the top package's own imports, and a package's __init__ importing its modules
    assert numba_cache._imports("from .cpu import tier\n", [], modules) == {"cpu", "cpu.tier"}
    assert numba_cache._imports("from ._kernels import x\n", ["cuda"], modules) == {"cuda._kernels"}


def test_a_module_digest_covers_what_it_imports_transitively(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "cpu").mkdir(parents=True)
    (package / "ops").mkdir()
    (package / "__init__.py").write_text("")
    (package / "cpu" / "__init__.py").write_text("")
    (package / "ops" / "__init__.py").write_text("")
    (package / "ops" / "table.py").write_text("OPS = 1\n")
    (package / "ops" / "other.py").write_text("X = 1\n")
    (package / "cpu" / "batch.py").write_text("from ..ops.table import OPS\n")
    (package / "cpu" / "front.py").write_text("from .batch import run\n")
    monkeypatch.setattr(numba_cache, "PACKAGE", package)
    before = numba_cache.module_digests()
    assert set(before) == {"", "cpu", "ops", "ops.table", "ops.other", "cpu.batch", "cpu.front"}
    (package / "ops" / "table.py").write_text("OPS = 2\n")
    after = numba_cache.module_digests()
    changed = {m for m in before if before[m] != after[m]}
    assert changed == {"ops.table", "cpu.batch", "cpu.front"}


def test_refresh_drops_only_the_cache_entries_of_changed_modules(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "cpu" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cpu" / "__init__.py").write_text("")
    (package / "cpu" / "a.py").write_text("A = 1\n")
    (package / "cpu" / "b.py").write_text("B = 1\n")
    monkeypatch.setattr(numba_cache, "PACKAGE", package)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    numba_cache.refresh()
    cache = package / "cpu" / "__pycache__"
    for name in ("a.f-1.py311.nbi", "b.g-1.py311.nbi"):
        (cache / name).write_text("")
    (package / "cpu" / "a.py").write_text("A = 2\n")
    numba_cache.refresh()
    assert sorted(p.name for p in cache.glob("*.nbi")) == ["b.g-1.py311.nbi"]
