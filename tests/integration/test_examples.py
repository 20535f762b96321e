"""Every example runs, at its full size, and its answer is checked independently."""
import importlib.util
import runpy
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.integration


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_prints_the_readme_gradient(capsys):
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Gradient at x=2: 7.0" in out
    assert "1,000,000 gradients" in out


def test_rosenbrock_1m_converges_and_plots(tmp_path):
    plot = tmp_path / "convergence.png"
    res = load("rosenbrock_1m").main(str(plot))
    assert res.success and res.status == 1            # stopped on the gradient norm
    assert np.abs(rosen_der(res.x)).max() <= 1e-5     # scipy's own gradient agrees
    assert np.abs(res.x - 1.0).max() < 1e-5
    assert rosen(res.x) == pytest.approx(res.fun, abs=1e-12)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(res.history["fun"]) == res.nit + 1


def test_logistic_regression_matches_scikit_learn():
    res, acc_tj, acc_sk, w_sk = load("logistic_regression").main()
    assert res.success
    assert acc_tj >= acc_sk - 1e-9
    assert np.abs(res.x - w_sk).max() < 1e-3          # the same penalized optimum


def test_multistart_finds_rastrigins_global_minimum():
    best = load("multistart").main()
    assert best.fun < 1e-10
    assert np.abs(best.x).max() < 1e-6
    assert best.all.fun.shape == (10_000,)
    # Rastrigin's local minima sit near integer points: every start ended at one
    assert np.all(np.abs(best.all.x - np.round(best.all.x)) < 0.05)


def test_tridiagonal_solve_gradients_match_central_differences():
    error, values, grads, X, loss_np = load("tridiagonal_solve").main(n=20_000, verbose=False)
    assert error < 1e-6
    eps = 1e-6
    for k in (0, 255, 511):                  # the batch's rows, first and last chunk among them
        x = X[k]
        assert values[k] == pytest.approx(loss_np(x), rel=1e-12)
        fd = np.array([(loss_np(x + eps * e) - loss_np(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])
        np.testing.assert_allclose(grads[k], fd, rtol=1e-5, atol=1e-9)


def test_batch_gradients_match_the_closed_form():
    assert load("batch_gradients").main() < 1e-10


def test_train_mlp_reaches_scikit_learns_accuracy():
    results, eager, traced = load("train_mlp").main()
    assert results["eager"] >= results["sklearn"] - 0.01
    assert results["traced"] >= results["sklearn"] - 0.01
    # the traced steps are the eager ones replayed: the same weights at the end
    for a, b in zip(eager.parameters(), traced.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


def test_custom_primitive_fits_the_gamma_distribution_as_scipy_does():
    from scipy.special import psi
    (k, s), (k_ref, s_ref), grads, f = load("custom_primitive").main(n=5000)
    assert k == pytest.approx(k_ref, rel=1e-6) and s == pytest.approx(s_ref, rel=1e-6)
    # the batch gradients against the closed form: d/dlog k and d/dlog s of -log L
    x = np.random.default_rng(0).gamma(shape=2.5, scale=1.7, size=5000)
    thetas = np.array([[0.3, 0.2], [1.0, 0.5]])
    kk, ss = np.exp(thetas[:, 0]), np.exp(thetas[:, 1])
    n = x.size
    expect = np.stack([-kk * (np.log(x).sum() - n * np.log(ss) - n * psi(kk)),
                       -(x.sum() / ss - n * kk)], axis=1)
    np.testing.assert_allclose(f.batch_grad(thetas), expect, rtol=1e-10)


def test_custom_primitive_trigamma_against_scipy():
    from scipy.special import polygamma
    trigamma = load("custom_primitive").trigamma
    x = np.array([1e-3, 0.5, 1.0, 2.5, 9.999, 10.0, 40.0, 1e4])
    np.testing.assert_allclose([trigamma(v) for v in x], polygamma(1, x), rtol=1e-11)
