"""``python -m tapejit.codegen [--check]``: rewrite (or check) the generated sweeps."""
import sys

from .render import CPU_FILE, CUDA_FILE, PACKAGE, table_hash, write

if "--check" in sys.argv:
    sys.exit(0 if write(check=True) else 1)
write()
print(f"wrote {CPU_FILE.relative_to(PACKAGE)} and {CUDA_FILE.relative_to(PACKAGE)} (table {table_hash()})")
