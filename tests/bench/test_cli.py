"""The ``tapejit bench`` command: runs, JSON fields, missing baselines, bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tapejit import cli
from tapejit.bench import harness as bench

pytestmark = pytest.mark.integration

ROW_FIELDS = {"implementation", "status", "agrees", "runs", "min_s", "median_s", "max_s", "items_per_call",
              "throughput", "tapejit_speedup"}


def run_cli(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_quick_json_has_the_documented_fields(tmp_path, capsys):
    path = tmp_path / "out.json"
    code, out, _ = run_cli(["bench", "--quick", "--workload", "eager", "--workload", "B1", "--batch", "2000",
                            "--repeat", "2", "--json", str(path), "--no-latency"], capsys)
    assert code == 0
    report = json.loads(path.read_text())
    assert {"cpu", "cores", "threads", "python", "numpy", "numba"} <= set(report["machine"])
    assert [r["workload"] for r in report["results"]] == ["eager", "B1"]
    b1 = report["results"][1]
    assert {"workload", "description", "size", "size_name", "device", "items_per_call", "unit", "rows"} <= set(b1)
    assert b1["size"] == 2000 and b1["device"] == "cpu"
    by_name = {r["implementation"]: r for r in b1["rows"]}
    for name in ("tapejit", "numba (hand-written)", "numpy (vectorized, by hand)"):
        row = by_name[name]
        assert ROW_FIELDS <= set(row), name
        assert row["status"] == "ok" and row["agrees"] is True
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["throughput"] == pytest.approx(2000 / row["median_s"])
        assert row["tapejit_speedup"] == pytest.approx(row["median_s"] / by_name["tapejit"]["median_s"])
    assert by_name["tapejit"]["runs"] >= 2
    # the printed table names every implementation and the machine
    assert "B1: Rosenbrock n=10" in out and "numba (hand-written)" in out and report["machine"]["cpu"] in out


def test_a_missing_or_broken_baseline_is_reported_not_fatal(monkeypatch, tmp_path, capsys):
    real = bench._optional
    monkeypatch.setattr(bench, "_optional", lambda name: None if name in ("torch", "autograd") else real(name))
    broken = bench.Impl("broken baseline", lambda: 1 / 0)
    original = bench.WORKLOADS["eager"].build

    def build(size, device):
        case = original(size, device)
        case.impls.append(broken)
        return case
    monkeypatch.setitem(bench.WORKLOADS, "eager", bench.Workload("eager", "the README example", 1, 1, build))
    path = tmp_path / "out.json"
    code, out, _ = run_cli(["bench", "--quick", "--workload", "eager", "--json", str(path), "--no-latency"], capsys)
    assert code == 0
    rows = {r["implementation"]: r for r in json.loads(path.read_text())["results"][0]["rows"]}
    assert rows["torch (eager)"]["status"] == "not installed"
    assert rows["HIPS autograd"]["status"] == "not installed"
    assert rows["broken baseline"]["status"].startswith("error: ZeroDivisionError")
    assert rows["tapejit"]["status"] == "ok"
    assert "not installed" in out and "error: ZeroDivisionError" in out


def test_unknown_workload_is_a_clear_error(capsys):
    code, _, err = run_cli(["bench", "--workload", "B7"], capsys)
    assert code == 2
    assert "unknown workload B7" in err and "B1" in err


def test_bad_flag_exits_nonzero_with_a_message(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--batchsize", "3"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --batchsize" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--batch", "many"])
    assert exc.value.code == 2


def test_user_function_and_plot(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodule.py").write_text(
        "import tapejit as tj\n\ndef fn(x):\n    return tj.sum(tj.sin(x) * x)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run_cli(["bench", "--quick", "--workload", "eager", "--function", "mymodule:fn", "--dim", "5",
                            "--batch", "3000", "--json", "r.json", "--plot", "r.png", "--no-latency"], capsys)
    assert code == 0
    user = json.loads((tmp_path / "r.json").read_text())["results"][-1]
    assert user["workload"] == "user:mymodule:fn"
    assert all(r["status"] == "ok" and r["agrees"] for r in user["rows"])
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_python_dash_m_runs_the_same_command():
    out = subprocess.run([sys.executable, "-m", "tapejit", "bench", "--quick", "--workload", "eager",
                          "--no-latency"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "eager: the README example" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "tapejit", "bench", "--workload", "nope"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "unknown workload nope" in bad.stderr


def test_every_registered_workload_builds_and_agrees_at_a_tiny_size():
    """Each workload's implementations compute the same answer (what the ratios rest on)."""
    sizes = {"eager": 1, "chain": 50, "eager-rosen": 100, "B1": 500, "B2": 200, "B3": 300, "L1": 1000, "W": 100, "H1": 1000,
             "H2": 300, "J1": 300, "D1": 3000, "O1": 1000, "O2": 4, "T1": 200, "G1": 200}
    sizes.update({name: 200 for name in bench.GROUPS["M"]})
    assert set(sizes) == set(bench.WORKLOADS)
    for name, size in sizes.items():
        result = bench.run_workload(bench.WORKLOADS[name], size=size, repeat=1, min_time=0.0)
        rows = [r for r in result["rows"] if r["status"] == "ok"]
        assert len(rows) >= 2, (name, result["rows"])
        # None: a row that computes something else (workload M's numpy forward, a value)
        assert all(r["agrees"] is not False for r in rows), (name, rows)
        assert sum(r["agrees"] is True for r in rows) >= (1 if name.startswith("M:") else 2), (name, rows)
        assert np.isfinite([r["median_s"] for r in rows]).all()


def test_workload_m_differentiates_what_numpy_computes():
    """Workload M's rows have no second gradient without JAX: its tapejit gradient
    against central differences of the numpy function it is timed beside."""
    import tapejit as tj
    for name, (lo, hi) in bench.MATH_OPS.items():
        x = np.random.default_rng(5).uniform(lo, hi, 50)
        x = np.clip(x, lo + 1e-3, hi - 1e-3)
        f = tj.trace(lambda z: tj.sum(bench._math_op(name, tj)(z) * z), x)
        g = bench._math_op(name, np)
        h = 1e-6
        want = (g(x + h) * (x + h) - g(x - h) * (x - h)) / (2 * h)
        assert np.allclose(f.grad(x), want, rtol=1e-6, atol=1e-6), name
        assert np.isclose(f(x), np.sum(g(x) * x), rtol=1e-12), name


def test_a_group_name_runs_its_workloads_and_prints_one_table(capsys, monkeypatch):
    # "M" stands for one workload per opcode; two of them here, to keep the test short
    monkeypatch.setitem(bench.GROUPS, "M", ["M:sin", "M:arctan2"])
    code, out, _ = run_cli(["bench", "--workload", "M", "--batch", "300", "--repeat", "1", "--no-latency"], capsys)
    assert code == 0
    table = out.split("workload M, one opcode per line")[1]
    assert [line.split()[0] for line in table.strip().splitlines()[2:]] == ["sin", "arctan2"]
    assert "M:cos" not in out
    # a plain run leaves the group out
    assert not any(name.startswith("M:") for name in bench.DEFAULT)
