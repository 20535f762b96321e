"""Optimizers in PyTorch's names and with PyTorch's update rules:

    opt = tj.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad(); loss.backward(); opt.step()

Each step updates the parameters in place (their version counters count it), in numpy
over each parameter's whole value. ``lr`` may be a number or a callable of the step count
(a schedule); ``tj.optim.lr_scheduler`` has PyTorch's schedulers too."""
from . import lr_scheduler
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .traced import TracedStep, trace_step

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler", "TracedStep", "trace_step"]
