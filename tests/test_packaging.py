"""What `pip install .` puts in the wheel: every subpackage of tapejit (a subpackage left
out of pyproject.toml's list installs fine and then fails at `import tapejit`)."""
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_in_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tapejit").rglob("__init__.py")}
    assert found == listed
