"""What the benchmark scripts share: their sections of RESULTS.md and the machine line.

Each script owns the text between ``<!-- TASK:start -->`` and ``<!-- TASK:end -->`` and rewrites
it on every full run; notes written by hand go after the end marker and survive reruns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")


def write_section(task: str, text: str, path: Path = RESULTS) -> None:
    """Replace `task`'s generated section of `path` (append it when missing), atomically."""
    start, end = f"<!-- {task}:start -->", f"<!-- {task}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in old and end in old:
        new = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (ddof 1; 0 for a single value) of ``values``."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def machine(threads: int) -> str:
    """CPU model, cores, torch version and threads, e.g. for a results header."""
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} on {threads} thread(s), {gpu}"
