"""Run every benchmark in quick mode (make bench). Each prints its own ratios."""

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
for script in sorted(here.glob("bench_*.py")):
    print(f"\n## {script.name}", flush=True)
    subprocess.run([sys.executable, str(script), "--quick"], check=True)
