"""The README stays a short user guide, and the docs site builds without a warning."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_docs_site_builds_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_readme_is_short_and_starts_with_the_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250, "README.md is the user guide: move detail into docs/"
    first = re.search(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    assert first is not None, "README.md has no fenced block"
    assert "python -m pytest" in first.group(1), "CI reads the test command from README.md's first fenced block"
