"""A small neural-network library in PyTorch's names: modules, losses, initializations.

    model = tj.nn.Sequential(tj.nn.Linear(64, 64), tj.nn.Tanh(), tj.nn.Linear(64, 10))
    loss = tj.nn.functional.cross_entropy(model(X), y)

A module's parameters are the tensors that require grad assigned to its attributes
(tapejit has no Parameter subclass: ``tj.nn.Parameter(data)`` is
``tj.tensor(data, requires_grad=True)``).
"""
from . import functional
from . import init
from .modules import (ELU, GELU, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Flatten, Identity, L1Loss,
                      LeakyReLU, Linear, LogSoftmax, Module, ModuleList, MSELoss, Parameter, ReLU,
                      Sequential, Sigmoid, Softmax, Softplus, Tanh)

__all__ = ["functional", "init", "Module", "Sequential", "ModuleList", "Parameter", "Linear", "Identity",
           "Flatten", "Dropout", "ReLU", "LeakyReLU", "ELU", "GELU", "Tanh", "Sigmoid", "Softplus",
           "Softmax", "LogSoftmax", "MSELoss", "L1Loss", "CrossEntropyLoss", "BCEWithLogitsLoss"]
