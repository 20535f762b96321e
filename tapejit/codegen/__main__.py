"""``python -m tapejit.codegen [--check]``: rewrite (or check) the generated sweeps."""
import sys

from .render import CPU_FILE, CUDA_FILE, PACKAGE, READS_FILE, table_hash, write

if "--check" in sys.argv:
    sys.exit(0 if write(check=True) else 1)
write()
print(f"wrote {', '.join(str(p.relative_to(PACKAGE)) for p in (CPU_FILE, CUDA_FILE, READS_FILE))} (table {table_hash()})")
