"""tj.nn: modules, losses and initializations against numpy, scipy and central differences;
a small network trained with tj.optim."""
import math

import numpy as np
import pytest
from scipy.special import log_softmax as np_log_softmax

import tapejit as tj
from helpers import numeric_grad

F = tj.nn.functional


def test_linear_initialization_and_forward():
    tj.manual_seed(3)
    layer = tj.nn.Linear(50, 7)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    bound = 1.0 / math.sqrt(50)          # PyTorch's kaiming_uniform_(a=sqrt(5)) and bias bound
    assert w.shape == (7, 50) and b.shape == (7,)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.9 * bound          # uniform over the whole interval, not a constant
    x = np.random.default_rng(0).normal(size=(4, 50))
    np.testing.assert_allclose(layer(x).numpy(), x @ w.T + b, rtol=1e-13)
    tj.manual_seed(3)
    np.testing.assert_array_equal(tj.nn.Linear(50, 7).weight.numpy(), w)     # seeded: reproducible


def test_module_registration_state_dict_and_modes():
    model = tj.nn.Sequential(tj.nn.Linear(3, 4), tj.nn.ReLU(), tj.nn.Linear(4, 2, bias=False))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight"]
    assert model.num_parameters() == 3 * 4 + 4 + 4 * 2
    state = model.state_dict()
    other = tj.nn.Sequential(tj.nn.Linear(3, 4), tj.nn.ReLU(), tj.nn.Linear(4, 2, bias=False))
    other.load_state_dict(state)
    x = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_array_equal(other(x).numpy(), model(x).numpy())
    with pytest.raises(tj.TapejitError, match="missing"):
        other.load_state_dict({"0.weight": state["0.weight"]})
    with pytest.raises(tj.ShapeError):
        other.load_state_dict({**state, "0.bias": np.zeros(5)})
    assert model.training and not model.eval().training and not model[0].training
    model.train()
    assert all(m.training for m in model.modules())
    assert "Linear(in_features=3, out_features=4, bias=True)" in repr(model)


def test_a_custom_module_with_submodules_and_buffers():
    class Net(tj.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tj.nn.ModuleList([tj.nn.Linear(2, 2) for _ in range(2)])
            self.scale = tj.nn.Parameter(np.array(2.0))
            self.register_buffer("offset", np.array([1.0, -1.0]))

        def forward(self, x):
            for layer in self.body:
                x = tj.tanh(layer(x))
            return self.scale * x + self.offset
    net = Net()
    assert len(list(net.parameters())) == 5
    assert "offset" in net.state_dict() and net.offset.shape == (2,)
    y = net(np.ones((3, 2))).sum()
    y.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


ACTIVATIONS = {
    "relu": (F.relu, lambda x: np.maximum(x, 0.0)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: np.where(x >= 0, x, 0.1 * x)),
    "elu": (F.elu, lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))),
    "gelu": (F.gelu, lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    "gelu_tanh": (lambda x: F.gelu(x, "tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    "tanh": (F.tanh, np.tanh),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "softplus": (lambda x: F.softplus(x, 2.0), lambda x: np.logaddexp(0, 2 * x) / 2),
    "softmax": (lambda x: F.softmax(x, 1), lambda x: np.exp(np_log_softmax(x, axis=1))),
    "log_softmax": (lambda x: F.log_softmax(x, 1), lambda x: np_log_softmax(x, axis=1)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_values_and_gradients(name):
    ours, reference = ACTIVATIONS[name]
    x0 = np.random.default_rng(2).normal(size=(3, 4)) * 2
    x0[0, 0] = 0.3                       # away from kinks for the differences
    weights = np.random.default_rng(3).normal(size=(3, 4))
    x = tj.tensor(x0, requires_grad=True)
    y = ours(x)
    np.testing.assert_allclose(y.numpy(), reference(x0), rtol=1e-12, atol=1e-14)
    (y * weights).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), numeric_grad(lambda z: np.sum(reference(z) * weights), x0.copy()),
                               rtol=1e-6, atol=1e-8)


def test_losses_against_their_formulas():
    rng = np.random.default_rng(4)
    logits0, labels = rng.normal(size=(6, 5)), rng.integers(0, 5, 6)
    probs = np.exp(np_log_softmax(rng.normal(size=(6, 5)), axis=1))

    def ce(z, reduction="mean"):
        per = -np_log_softmax(z, axis=1)[np.arange(6), labels]
        return per.mean() if reduction == "mean" else per.sum()
    cases = {
        "cross_entropy": (lambda z: F.cross_entropy(z, labels), ce),
        "cross_entropy_sum": (lambda z: F.cross_entropy(z, labels, reduction="sum"), lambda z: ce(z, "sum")),
        "cross_entropy_probs": (lambda z: F.cross_entropy(z, probs),
                                lambda z: -(np_log_softmax(z, axis=1) * probs).sum(1).mean()),
        "cross_entropy_smoothed": (lambda z: F.cross_entropy(z, labels, label_smoothing=0.1),
                                   lambda z: 0.9 * ce(z) - 0.1 * np_log_softmax(z, axis=1).mean(1).mean()),
        "mse": (lambda z: F.mse_loss(z, probs), lambda z: ((z - probs) ** 2).mean()),
        "l1": (lambda z: F.l1_loss(z, probs, reduction="sum"), lambda z: np.abs(z - probs).sum()),
        "bce_logits": (lambda z: F.binary_cross_entropy_with_logits(z, probs),
                       lambda z: -(probs * np.log(1 / (1 + np.exp(-z))) + (1 - probs) * np.log(1 - 1 / (1 + np.exp(-z)))).mean()),
        "module_ce": (lambda z: tj.nn.CrossEntropyLoss()(z, labels), ce),
    }
    for name, (ours, reference) in cases.items():
        z = tj.tensor(logits0, requires_grad=True)
        loss = ours(z)
        assert loss.item() == pytest.approx(reference(logits0), rel=1e-12), name
        loss.backward()
        np.testing.assert_allclose(z.grad.numpy(), numeric_grad(reference, logits0.copy()), rtol=1e-6, atol=1e-9,
                                   err_msg=name)
    single = F.cross_entropy(tj.tensor(logits0[0]), labels[0])
    assert single.item() == pytest.approx(-np_log_softmax(logits0[0])[labels[0]], rel=1e-12)


def test_losses_refuse_bad_targets():
    z = tj.tensor(np.zeros((3, 4)), requires_grad=True)
    with pytest.raises(tj.ShapeError, match=r"\[0, 4\)"):
        F.cross_entropy(z, np.array([0, 1, 4]))
    with pytest.raises(tj.TapejitError, match="integers"):
        F.cross_entropy(z, np.array([0.5, 1.0, 2.0]))
    with pytest.raises(tj.ShapeError):
        F.mse_loss(z, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        F.mse_loss(z, np.zeros((3, 4)), reduction="avg")


def test_dropout_scales_in_training_and_is_the_identity_in_eval():
    tj.manual_seed(0)
    drop = tj.nn.Dropout(0.25)
    x = tj.tensor(np.ones(20_000), requires_grad=True)
    y = drop(x)
    kept = y.numpy() != 0
    assert 0.73 < kept.mean() < 0.77
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.75)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.75)
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    with pytest.raises(tj.TapejitError, match="trace"):
        tj.trace(lambda v: F.dropout(v, 0.5).sum(), np.ones(3))


def test_initializers_have_their_distributions():
    t = tj.tensor(np.zeros((400, 300)), requires_grad=True)
    tj.nn.init.xavier_uniform_(t)
    bound = math.sqrt(6 / 700)
    assert np.abs(t.numpy()).max() <= bound and t.numpy().std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    tj.nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert t.numpy().std() == pytest.approx(math.sqrt(2 / 300), rel=0.02)
    tj.nn.init.zeros_(t)
    assert not t.numpy().any() and t.requires_grad


def test_an_mlp_learns_xor_with_adam():
    tj.manual_seed(1)
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    model = tj.nn.Sequential(tj.nn.Linear(2, 8), tj.nn.Tanh(), tj.nn.Linear(8, 2))
    opt = tj.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(300):
        loss = F.cross_entropy(model(X), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 < first
    with tj.no_grad():
        np.testing.assert_array_equal(model(X).numpy().argmax(1), y)


def test_trace_step_replays_the_eager_step_on_new_batches():
    rng = np.random.default_rng(5)
    batches = [(rng.normal(size=(30, 6)), rng.integers(0, 4, 30)) for _ in range(4)]

    def make():
        tj.manual_seed(2)
        model = tj.nn.Sequential(tj.nn.Linear(6, 8), tj.nn.Tanh(), tj.nn.Linear(8, 4))
        return model, tj.optim.Adam(model.parameters(), lr=0.05)
    eager_model, eager_opt = make()
    eager_losses = []
    for X, y in batches:
        loss = F.cross_entropy(eager_model(X), y)
        eager_opt.zero_grad()
        loss.backward()
        eager_opt.step()
        eager_losses.append(loss.item())
    model, opt = make()
    step = tj.trace_step(lambda X, y: F.cross_entropy(model(X), y), model, opt)
    losses = [step(X, y) for X, y in batches]
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-12)
    for a, b in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-11, atol=1e-14)
        assert a.is_leaf and a.requires_grad
    assert len(step.functions) == 1                 # traced once, replayed three times
    step(batches[0][0][:10], batches[0][1][:10])    # a new batch shape: traced again
    assert len(step.functions) == 2
    with pytest.raises(tj.BranchChangedError):       # labels out of range: the trace's guard
        step(batches[0][0], np.full(30, 7))
