"""Compiled code never passes a literal int or bool to another compiled function.

Numba types a literal argument (``0``, ``False``, ``2**62``, a module-level int) as
Literal[int](0) and compiles the callee once more for that type. For a sweep that is a
whole extra compile (about 40 s on 2 cores): before this rule, every sweep called as
``forward_chunk(..., 0, n)`` from one place and with a variable start from another was
compiled twice. The rule is checked on the source, because a warm cache hides the extra
compile: a caller loaded from the cache never asks its callees for code.
"""
import ast
import importlib
from pathlib import Path

import pytest
from numba.core.dispatcher import Dispatcher

import tapejit

PACKAGE = Path(tapejit.__file__).parent
SKIPPED = {"cuda"}   # CUDA kernels: their own types
MODULES = sorted(".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                 for path in PACKAGE.rglob("*.py")
                 if "__pycache__" not in path.parts and path.stem != "__main__"
                 and path.relative_to(PACKAGE).parts[0] not in SKIPPED)


def _literal_arguments(module, source: str):
    """(caller, callee, line, argument) for every call between jitted functions of
    ``module`` (whose code is ``source``) with a constant-valued int or bool argument."""
    tree = ast.parse(source)
    found = []
    for fn in ast.walk(tree):
        if not (isinstance(fn, ast.FunctionDef) and isinstance(getattr(module, fn.name, None), Dispatcher)):
            continue
        parameters = {a.arg for a in fn.args.args}
        for call in ast.walk(fn):
            if not isinstance(call, ast.Call):
                continue
            callee = None
            if isinstance(call.func, ast.Name):
                callee = getattr(module, call.func.id, None)
            elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
                callee = getattr(getattr(module, call.func.value.id, None), call.func.attr, None)
            if not isinstance(callee, Dispatcher):
                continue
            for arg in list(call.args) + [k.value for k in call.keywords]:
                leaves = [n for n in ast.walk(arg) if isinstance(n, (ast.Name, ast.Constant, ast.Attribute,
                                                                        ast.Call, ast.Subscript))]
                constant = all(isinstance(n, ast.Constant) and isinstance(n.value, (int, bool)) for n in leaves)
                global_int = (isinstance(arg, ast.Name) and arg.id not in parameters
                              and type(getattr(module, arg.id, None)) in (int, bool))
                if (leaves and constant) or global_int:
                    found.append((fn.name, callee.py_func.__name__, call.lineno, ast.unparse(arg)))
    return found


@pytest.mark.parametrize("name", MODULES)
def test_no_literal_arguments_between_compiled_functions(name):
    module = importlib.import_module(f"tapejit.{name}" if name != "__init__" else "tapejit")
    with open(module.__file__) as f:
        assert _literal_arguments(module, f.read()) == []


def test_the_check_sees_literals():
    """The check itself, on a module written to break the rule three ways."""
    import types as pytypes
    source = '''
import numpy as np
from numba import njit
LIMIT = 7
@njit
def callee(a, b):
    return a + b
@njit
def caller(x):
    return callee(x, 0) + callee(x, 2 ** 3) + callee(x, LIMIT) + callee(x, np.int64(0))
'''
    module = pytypes.ModuleType("literal_example")
    exec(compile(source, "<literal_example>", "exec"), module.__dict__)
    found = _literal_arguments(module, source)
    assert sorted(arg for *_, arg in found) == ["0", "2 ** 3", "LIMIT"]
