"""The generated sweeps are derived from the opcode table and must be current."""
import re

from tapejit import codegen
from tapejit.opcodes import OPS


def test_generated_files_match_the_table():
    assert codegen.write(check=True), "run `python -m tapejit.codegen` after editing tapejit/opcodes.py"


def test_every_opcode_is_dispatched_by_every_sweep():
    cpu = codegen.CPU_FILE.read_text()
    cuda = codegen.CUDA_FILE.read_text()
    for sweep, text in [("forward_point", cpu), ("forward_chunk", cpu), ("forward_thread", cuda)]:
        body = text.split(f"def {sweep}(")[1].split("\ndef ")[0]
        dispatched = set(re.findall(r"# (\w+)$", body, re.M))
        expected = {op.name for op in OPS if op.elementwise or op.forward}
        assert expected <= dispatched, (sweep, expected - dispatched)
    for sweep, text in [("reverse_point", cpu), ("reverse_chunk", cpu), ("reverse_thread", cuda)]:
        body = text.split(f"def {sweep}(")[1].split("\ndef ")[0]
        dispatched = set(re.findall(r"# (\w+)$", body, re.M))
        expected = {op.name for op in OPS if op.name != "input"}
        assert expected <= dispatched, (sweep, expected - dispatched)


def test_table_expressions_use_only_known_names():
    allowed = {"a", "b", "d", "c", "o", "abs"} | set(codegen.MATH_NAMES)
    for op in OPS:
        for expr in [op.value, *op.partials.values()]:
            if expr:
                assert codegen.expr_names(expr) <= allowed, (op.name, expr)
