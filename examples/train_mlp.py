"""Train a 64-64-10 tanh network on scikit-learn's digits, the PyTorch way: tj.nn, tj.optim,
loss.backward(), opt.step(); then the same steps recorded once with tj.trace_step. Test
accuracy beside scikit-learn's MLPClassifier on the same split, and time per epoch beside
PyTorch's when it is installed."""
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import tapejit as tj

F = tj.nn.functional
EPOCHS = 300            # full batch: one step an epoch


def make_model(seed: int = 0):
    tj.manual_seed(seed)
    model = tj.nn.Sequential(tj.nn.Linear(64, 64), tj.nn.Tanh(), tj.nn.Linear(64, 10))
    return model, tj.optim.Adam(model.parameters(), lr=1e-2)


def accuracy(model, X, y) -> float:
    with tj.no_grad():
        return float(np.mean(model(X).numpy().argmax(axis=1) == y))


def train_eager(X, y):
    model, opt = make_model()
    start = time.perf_counter()
    for _ in range(EPOCHS):
        loss = F.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, loss.item(), (time.perf_counter() - start) / EPOCHS


def train_traced(X, y):
    model, opt = make_model()
    step = tj.trace_step(lambda Xb, yb: F.cross_entropy(model(Xb), yb), model, opt)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        loss = step(X, y)
    return model, loss, (time.perf_counter() - start) / EPOCHS


def train_torch(X, y):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        loss = torch.nn.functional.cross_entropy(model(Xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / EPOCHS


def main():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    eager, eager_loss, eager_epoch = train_eager(X_train, y_train)
    traced, traced_loss, traced_epoch = train_traced(X_train, y_train)
    sk = MLPClassifier(hidden_layer_sizes=(64,), activation="tanh", max_iter=EPOCHS, random_state=0)
    start = time.perf_counter()
    sk.fit(X_train, y_train)
    sk_time = time.perf_counter() - start
    torch_epoch = train_torch(X_train, y_train)
    results = {"eager": accuracy(eager, X_test, y_test), "traced": accuracy(traced, X_test, y_test),
               "sklearn": float(sk.score(X_test, y_test))}
    print(f"digits: {len(X_train)} training and {len(X_test)} test samples, {EPOCHS} full-batch Adam steps")
    print(f"  tapejit eager       : test accuracy {results['eager']:.4f}, loss {eager_loss:.4f}, "
          f"{eager_epoch * 1e3:.2f} ms an epoch")
    print(f"  tapejit trace_step  : test accuracy {results['traced']:.4f}, loss {traced_loss:.4f}, "
          f"{traced_epoch * 1e3:.2f} ms an epoch")
    print(f"  scikit-learn MLP    : test accuracy {results['sklearn']:.4f} ({sk_time:.2f} s in all)")
    if torch_epoch is not None:
        print(f"  PyTorch (float64)   : {torch_epoch * 1e3:.2f} ms an epoch")
    return results, eager, traced


if __name__ == "__main__":
    main()
