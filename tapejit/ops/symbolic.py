"""Symbolic derivatives of the opcode table's expressions.

The table gives each opcode's partial derivatives as expressions in the operand values
``a, b, d``, the immediate ``c`` and the output ``o``. Second-order sweeps (Hessian-vector
products) need the derivatives of those partials; this module differentiates the
expression language (arithmetic, the math functions of ``MATH_NAMES``, conditional
expressions, whose conditions are piecewise constant) so that they are derived from the
table, never written a second time.
"""
from __future__ import annotations

import ast

# d f(u) / du, as an expression in u
_CHAIN = {
    "exp": "exp(u)",
    "expm1": "exp(u)",
    "log": "1.0 / u",
    "log1p": "1.0 / (1.0 + u)",
    "sqrt": "0.5 / sqrt(u)",
    "sin": "cos(u)",
    "cos": "-sin(u)",
    "tan": "1.0 + tan(u) * tan(u)",
    "asin": "1.0 / sqrt(1.0 - u * u)",
    "acos": "-1.0 / sqrt(1.0 - u * u)",
    "atan": "1.0 / (1.0 + u * u)",
    "sinh": "cosh(u)",
    "cosh": "sinh(u)",
    "tanh": "1.0 - tanh(u) * tanh(u)",
    "erf": "1.1283791670955126 * exp(-u * u)",
    "abs": "(1.0 if u > 0.0 else (-1.0 if u < 0.0 else 0.0))",
}

# user primitives (tapejit.ops.primitives): the derivative of each kernel name with respect
# to its operand arguments (after the immediate c), as the kernel name that gives it.
# The output argument o gets none: the user's second derivatives are totals, so
# d/da prim1_d(c, a, o) is prim1_d2 with o's dependence on a included.
_PRIMITIVE_CHAIN = {
    "prim1": ("prim1_d",),
    "prim1_d": ("prim1_d2", None),
    "prim2": ("prim2_da", "prim2_db"),
    "prim2_da": ("prim2_daa", "prim2_dab", None),
    "prim2_db": ("prim2_dab", "prim2_dbb", None),
}

ZERO = ast.Constant(0.0)
ONE = ast.Constant(1.0)


def _is_const(node, value=None) -> bool:
    return isinstance(node, ast.Constant) and (value is None or node.value == value)


def _add(x, y):
    if _is_const(x, 0.0):
        return y
    if _is_const(y, 0.0):
        return x
    return ast.BinOp(x, ast.Add(), y)


def _sub(x, y):
    if _is_const(y, 0.0):
        return x
    if _is_const(x, 0.0):
        return _neg(y)
    return ast.BinOp(x, ast.Sub(), y)


def _mul(x, y):
    if _is_const(x, 0.0) or _is_const(y, 0.0):
        return ZERO
    if _is_const(x, 1.0):
        return y
    if _is_const(y, 1.0):
        return x
    return ast.BinOp(x, ast.Mult(), y)


def _div(x, y):
    if _is_const(x, 0.0):
        return ZERO
    if _is_const(y, 1.0):
        return x
    return ast.BinOp(x, ast.Div(), y)


def _neg(x):
    if _is_const(x):
        return ast.Constant(-x.value)
    return ast.UnaryOp(ast.USub(), x)


def _substitute(template: str, u: ast.AST) -> ast.AST:
    tree = ast.parse(template, mode="eval").body

    class Sub(ast.NodeTransformer):
        def visit_Name(self, node):
            return u if node.id == "u" else node
    return Sub().visit(tree)


def _d(node: ast.AST, var: str) -> ast.AST:
    if isinstance(node, ast.Constant):
        return ZERO
    if isinstance(node, ast.Name):
        return ONE if node.id == var else ZERO
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return _neg(_d(node.operand, var))
        if isinstance(node.op, ast.UAdd):
            return _d(node.operand, var)
    if isinstance(node, ast.BinOp):
        x, y = node.left, node.right
        dx, dy = _d(x, var), _d(y, var)
        if isinstance(node.op, ast.Add):
            return _add(dx, dy)
        if isinstance(node.op, ast.Sub):
            return _sub(dx, dy)
        if isinstance(node.op, ast.Mult):
            return _add(_mul(dx, y), _mul(x, dy))
        if isinstance(node.op, ast.Div):
            # (dx * y - x * dy) / y^2, written as dx / y - (x / y) * (dy / y)
            return _sub(_div(dx, y), _mul(_div(x, y), _div(dy, y)))
    if isinstance(node, ast.IfExp):
        body, orelse = _d(node.body, var), _d(node.orelse, var)
        if _is_const(body, 0.0) and _is_const(orelse, 0.0):
            return ZERO
        return ast.IfExp(node.test, body, orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        args = node.args
        if name in _CHAIN and len(args) == 1:
            du = _d(args[0], var)
            return ZERO if _is_const(du, 0.0) else _mul(_substitute(_CHAIN[name], args[0]), du)
        if name == "pow":
            base, expo = args
            dbase, dexpo = _d(base, var), _d(expo, var)
            # d(b^e) = e b^(e-1) db + b^e log(b) de, each term only where it is needed
            term1 = ZERO if _is_const(dbase, 0.0) else _mul(
                _mul(expo, ast.Call(ast.Name("pow", ast.Load()), [base, _sub(expo, ONE)], [])), dbase)
            term2 = ZERO if _is_const(dexpo, 0.0) else _mul(
                _mul(node, ast.Call(ast.Name("log", ast.Load()), [base], [])), dexpo)
            return _add(term1, term2)
        if name in _PRIMITIVE_CHAIN:
            c, *operands = args
            total = ZERO
            for arg, derivative in zip(operands, _PRIMITIVE_CHAIN[name]):
                du = _d(arg, var)
                if _is_const(du, 0.0) or derivative is None:
                    continue
                if derivative == "prim1_d":     # prim1's partial reads the output too
                    call_args = [c, arg, node]
                elif name == "prim2":
                    call_args = [c, *operands, node]
                else:
                    call_args = args
                total = _add(total, _mul(ast.Call(ast.Name(derivative, ast.Load()), list(call_args), []), du))
            return total
        if name == "atan2":
            y, x = args
            dy, dx = _d(y, var), _d(x, var)
            r2 = ast.BinOp(ast.BinOp(x, ast.Mult(), x), ast.Add(), ast.BinOp(y, ast.Mult(), y))
            return _sub(_div(_mul(x, dy), r2), _div(_mul(y, dx), r2))
    raise ValueError(f"cannot differentiate {ast.unparse(node)!r}")


def diff(expr: str, var: str) -> str:
    """d expr / d var as an expression string ("0.0" when it does not depend on var)."""
    tree = ast.parse(expr, mode="eval").body
    result = _d(tree, var)
    return "0.0" if _is_const(result, 0.0) else ast.unparse(result)


def depends_on(expr: str, names) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(ast.parse(expr, mode="eval")))
