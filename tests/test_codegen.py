"""The generated sweeps are derived from the opcode table and must be current."""
import re

from tapejit import codegen
from tapejit.opcodes import OPS


def test_generated_files_match_the_table():
    assert codegen.write(check=True), "run `python -m tapejit.codegen` after editing tapejit/opcodes.py"


def _dispatched(text: str, sweep: str) -> set:
    """Opcode names a sweep's if/elif chain names, with its outlined half if it has one."""
    names = set()
    for name in (sweep, f"{sweep}_outlined"):
        if f"def {name}(" in text:
            body = text.split(f"def {name}(")[1].split("\ndef ")[0]
            names |= set(re.findall(r"# (\w+)$", body, re.M))
    return names


def test_every_opcode_is_dispatched_by_every_sweep():
    cpu = codegen.CPU_FILE.read_text()
    cuda = codegen.CUDA_FILE.read_text()
    for sweep, text in [("forward_point", cpu), ("forward_chunk", cpu), ("forward_vector", cpu),
                        ("forward_thread", cuda)]:
        expected = {op.name for op in OPS if op.elementwise or op.forward}
        dispatched = _dispatched(text, sweep)
        assert expected <= dispatched, (sweep, expected - dispatched)
    for sweep, text in [("reverse_point", cpu), ("reverse_chunk", cpu), ("reverse_tangent_vector", cpu),
                        ("reverse_thread", cuda)]:
        expected = {op.name for op in OPS if op.name != "input"}
        dispatched = _dispatched(text, sweep)
        assert expected <= dispatched, (sweep, expected - dispatched)


def test_a_split_sweep_runs_each_opcode_in_one_half_and_calls_the_other():
    cpu = codegen.CPU_FILE.read_text()
    for sweep in ("forward_chunk", "reverse_vector", "reverse_tangent_chunk"):
        main = cpu.split(f"def {sweep}(")[1].split("\ndef ")[0]
        outlined = cpu.split(f"def {sweep}_outlined(")[1].split("\ndef ")[0]
        in_main = set(re.findall(r"# (\w+)$", main, re.M))
        in_outlined = set(re.findall(r"# (\w+)$", outlined, re.M))
        assert in_outlined and not in_main & in_outlined
        assert {OPS[code].name for code in codegen.OUTLINED_OPS} >= in_outlined
        assert f"_{sweep}_outlined(" in main.split("else:")[-1]


def test_table_expressions_use_only_known_names():
    allowed = {"a", "b", "d", "c", "o", "abs"} | set(codegen.MATH_NAMES)
    for op in OPS:
        for expr in [op.value, *op.partials.values()]:
            if expr:
                assert codegen.expr_names(expr) <= allowed, (op.name, expr)
