"""What the benchmark scripts share: training through the product path, their sections of
RESULTS.md, the machine line, and small helpers.

Every benchmark trains as a user does, ``medgen train TASK --config configs/TASK-cpu.yaml
data.root=DIR trainer.max_minutes=M`` (:func:`train_run`); the only overrides it adds say where
the run is stored and what it is called, and change nothing in training.

Each script owns the text between ``<!-- TASK:start -->`` and ``<!-- TASK:end -->`` and rewrites
it on every full run; notes written by hand go after the end marker and survive reruns.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable, Sequence

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def logger(tag: str) -> Callable[[str], None]:
    """A ``log(msg)`` printing ``[HH:MM:SS] [tag] msg`` at once (benchmarks run for an hour)."""
    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] [{tag}] {msg}", flush=True)

    return log


def save_nifti(path: Path, array, affine, dtype="float32") -> None:
    """A NIfTI at `path` (folders created; float32, or e.g. ``uint8`` for label maps): the
    benchmarks' own synthetic subjects."""
    import nibabel as nib
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype), affine), str(path))


def train_run(task: str, root: Path, work: Path, name: str, minutes: float, extra: Sequence[str] = (),
              config: Path | None = None, report: Callable[[str], None] | None = None) -> dict:
    """``medgen train TASK --config configs/TASK-cpu.yaml data.root=ROOT trainer.max_minutes=M
    [extra]`` through the code `medgen train` runs, stored in ``work`` (its MLflow store
    ``work/mlflow.db``, checkpoints under ``work/ckpt/<name>/<run id>/``).

    Returns ``run_id``, ``tracking_uri``, ``checkpoint_dir`` (the run's folder), ``wall_min``,
    ``time`` (the engine's line of where the time went), ``steps``, ``epochs``, ``train_share``
    (of the wall time in training steps) and ``reports`` (every line the run reported).
    """
    from medgen.config import load_config
    from medgen.engine import train

    uri = f"sqlite:///{work / 'mlflow.db'}"
    overrides = [f"data.root={root}", f"trainer.max_minutes={minutes}", *extra,
                 # where it is stored and what it is called: no effect on training
                 f"trainer.checkpoint_dir={work / 'ckpt' / name}", f"tracking.uri={uri}",
                 f"tracking.experiment={task}-benchmark", f"tracking.run_name={name}", "trainer.progress=false"]
    reports: list[str] = []

    def heard(line: str) -> None:
        reports.append(line)
        if report is not None:
            report(line)

    t0 = time.time()
    run_id = train(load_config(config or CONFIGS / f"{task}-cpu.yaml", overrides, task=task), report=heard)
    line = next((r for r in reports if r.startswith("time:")), "")
    steps = epochs = 0
    if " training steps in " in line:  # "...; N training steps in E epochs"
        tail = line.rsplit("; ", 1)[-1].split()
        steps, epochs = int(tail[0]), int(tail[4])
    share = float(line.split("train ", 1)[1].split(" %")[0]) / 100 if "train " in line else float("nan")
    return {"run_id": run_id, "tracking_uri": uri, "checkpoint_dir": work / "ckpt" / name / run_id,
            "wall_min": (time.time() - t0) / 60, "time": line, "steps": steps, "epochs": epochs,
            "train_share": share, "reports": reports}


def write_section(task: str, text: str, path: Path = RESULTS) -> None:
    """Replace `task`'s generated section of `path` (append it when missing), atomically."""
    start, end = f"<!-- {task}:start -->", f"<!-- {task}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    # UTF-8 whatever the locale: a benchmark started under nohup or cron may have LANG=C, and the
    # file holds ±, →, … (an ASCII read lost a 72-minute run's section at its very end)
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if start in old and end in old:
        new = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
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
