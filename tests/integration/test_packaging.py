"""What `pip install .` puts in the wheel: every subpackage of tapejit (a subpackage left
out of pyproject.toml's list installs fine and then fails at `import tapejit`)."""
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_in_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tapejit").rglob("__init__.py")}
    assert found == listed


def test_the_public_api_is_listed_and_typed():
    """``tapejit.__all__`` names exactly the public names the package exports (every one
    exists; nothing public is left out), and the wheel ships ``py.typed`` so that type
    checkers read the public API's annotations."""
    import tapejit
    assert len(tapejit.__all__) == len(set(tapejit.__all__))
    assert all(hasattr(tapejit, name) for name in tapejit.__all__)
    public = {name for name in vars(tapejit) if not name.startswith("_")}
    # submodules Python binds as it imports them are not part of the API unless listed
    modules = {name for name in public if type(getattr(tapejit, name)).__name__ == "module"}
    assert public - modules <= set(tapejit.__all__)
    assert (ROOT / "tapejit" / "py.typed").exists()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["tapejit"]
