"""Run every benchmark in this folder and print its table."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
for script in sorted(here.glob("bench_*.py")):
    print(f"\n## {script.stem}\n", flush=True)
    sys.argv = [str(script)]
    runpy.run_path(str(script), run_name="__main__")
