"""Logistic regression on scikit-learn's bundled breast-cancer data: tapejit's L-BFGS on a
traced loss against scikit-learn's LogisticRegression (same L2 penalty), accuracy and time."""
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import tapejit as tj


def main():
    data = load_breast_cancer()
    X = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    y = np.where(data.target == 1, 1.0, -1.0)
    n, d = X.shape
    C = 1.0                                   # scikit-learn's inverse regularization strength

    def loss(w):
        # sum of log(1 + exp(-y (X w + b))) + |w|^2 / (2C), as scikit-learn's lbfgs solver
        margin = y * (X @ w[:d] + w[d])
        return tj.sum(tj.softplus(-margin)) + tj.sum(w[:d] * w[:d]) / (2 * C)

    f = tj.trace(loss, np.zeros(d + 1))
    tj.minimize(f, np.zeros(d + 1), maxiter=2)             # compile once
    start = time.perf_counter()
    res = tj.minimize(f, np.zeros(d + 1), gtol=1e-6)
    t_tj = time.perf_counter() - start
    acc_tj = np.mean(np.sign(X @ res.x[:d] + res.x[d]) == y)

    start = time.perf_counter()
    model = LogisticRegression(C=C, tol=1e-8, max_iter=10_000).fit(X, data.target)
    t_sk = time.perf_counter() - start
    acc_sk = model.score(X, data.target)
    w_sk = np.concatenate([model.coef_.ravel(), model.intercept_])
    print(f"breast cancer data: {n} samples, {d} features")
    print(f"  tapejit L-BFGS : loss {res.fun:.6f}, accuracy {acc_tj:.4f}, {res.nit} iterations, {t_tj * 1e3:.1f} ms")
    print(f"  scikit-learn   : loss {f(w_sk):.6f}, accuracy {acc_sk:.4f}, {t_sk * 1e3:.1f} ms")
    print(f"  max |w_tapejit - w_sklearn| = {np.abs(res.x - w_sk).max():.2e}")
    return res, acc_tj, acc_sk, w_sk


if __name__ == "__main__":
    main()
