"""The generated sweeps are derived from the opcode table and must be current."""
import re

from tapejit.codegen import render as codegen
from tapejit.ops.table import OPS


def test_generated_files_match_the_table():
    assert codegen.write(check=True), "run `python -m tapejit.codegen` after editing tapejit/ops/table.py"


def _chain_names(text: str, sweep: str) -> set:
    """Opcode names a CUDA sweep's if/elif chain names."""
    body = text.split(f"def {sweep}(")[1].split("\ndef ")[0]
    return set(re.findall(r"# (\w+)$", body, re.M))


def _kernel_names(text: str, sweep: str) -> set:
    """Opcodes a CPU sweep has a kernel for (``def <sweep>__<opcode>(i, ctx)``)."""
    return set(re.findall(rf"^def {sweep}__(\w+)\(i, ctx\):", text, re.M))


FORWARD = {op.name for op in OPS if op.elementwise or op.forward}
REVERSE = {op.name for op in OPS if op.name != "input"}


def test_every_opcode_has_a_kernel_in_every_cpu_sweep():
    cpu = codegen.CPU_FILE.read_text()
    for sweep in codegen.CPU_SWEEPS:
        expected = REVERSE if sweep.startswith("reverse") else FORWARD
        kernels = _kernel_names(cpu, sweep)
        assert expected <= kernels, (sweep, expected - kernels)
        assert kernels <= {op.name for op in OPS}, sweep
        # the sweep's loop calls its kernels through the table, not by name
        loop = cpu.split(f"def {sweep}(")[1].split("\ndef ")[0]
        assert f"_run_{sweep}(ops[i], i, ctx)" in loop and "__" not in loop, sweep


def test_every_opcode_is_dispatched_by_every_cuda_sweep():
    # except the CPU-only ones (block primitives), which the GPU target refuses before a launch
    cuda = codegen.CUDA_FILE.read_text()
    host_only = {op.name for op in OPS if op.cpu_only}
    assert host_only == {"block"}
    for sweep, expected in [("forward_thread", FORWARD), ("reverse_thread", REVERSE)]:
        dispatched = _chain_names(cuda, sweep)
        assert expected - host_only <= dispatched, (sweep, expected - dispatched)
        assert not dispatched & host_only, sweep


def test_table_expressions_use_only_known_names():
    allowed = {"a", "b", "d", "c", "o", "abs"} | set(codegen.MATH_NAMES) | set(codegen.PRIMITIVE_NAMES)
    for op in OPS:
        for expr in [op.value, *op.partials.values()]:
            if expr:
                assert codegen.expr_names(expr) <= allowed, (op.name, expr)
