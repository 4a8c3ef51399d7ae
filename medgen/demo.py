"""`medgen demo`: the embedded default. Phantoms -> a short CPU run of every task -> MLflow.

Each task trains with its shipped CPU config (``configs/<task>-cpu.yaml``, the settings the
benchmarks measure) on the project's procedural phantoms, for a minute or two of
``trainer.max_minutes`` each, so the whole demo takes a few CPU minutes. Runs land in the local
MLflow store (`medgen ui`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Per task: which phantom layout it reads, its minutes, and what a user would type for this
# data (the phantoms carry brain masks).
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "pet-cgan": {"layout": "paired", "minutes": 1.5},
    "eagan": {"layout": "paired", "minutes": 1.5},
    "anogan": {"layout": "paired", "minutes": 1.5, "set": ["data.mask_key=brain_mask"]},
    "tybalt": {"layout": "expression", "minutes": 1.0},
    "dann-seg": {"layout": "domain", "minutes": 1.5},
    "cyclegan": {"layout": "unpaired", "minutes": 1.5},  # the CPU config's slice mode: 2D steps
}


def run_demo(out: str | Path = "demo", subjects: int = 6, size: int = 48, seed: int = 0,
             tasks: list[str] | None = None, tracking_uri: str | None = None) -> dict[str, str]:
    """Generate phantoms under `out`/data (reused if present) and train each task briefly.

    Returns {task: MLflow run id}.
    """
    from medgen.config import apply_overrides, build_config, read_yaml
    from medgen.data.phantoms import write_phantoms
    from medgen.engine import train
    from medgen.errors import ConfigError
    from medgen.models.registry import available_tasks

    out = Path(out)
    data_root = out / "data"
    if not (data_root / "paired").is_dir():
        print(f"demo: writing {subjects} phantom subjects ({size}^3) to {data_root}")
        write_phantoms(data_root, subjects=subjects, size=size, seed=seed, overwrite=True, progress=True)
    else:
        print(f"demo: reusing phantoms in {data_root}")

    chosen = tasks or [t for t in available_tasks() if t in DEMO_SETTINGS]
    unknown = [t for t in chosen if t not in DEMO_SETTINGS]
    if unknown:
        raise ConfigError(f"no demo for task(s) {', '.join(unknown)} (have: {', '.join(DEMO_SETTINGS)})")
    runs: dict[str, str] = {}
    for task in chosen:
        s = DEMO_SETTINGS[task]
        config_file = CONFIGS / f"{task}-cpu.yaml"
        if not config_file.is_file():
            raise ConfigError(f"{config_file} not found: run the demo from a source checkout (pip install -e .)")
        raw = apply_overrides(read_yaml(config_file), [
            f"data.root={data_root / s['layout']}", f"trainer.max_minutes={s['minutes']}", f"trainer.seed={seed}",
            f"trainer.checkpoint_dir={out / 'checkpoints'}", *([f"tracking.uri={tracking_uri}"] if tracking_uri else []),
            *s.get("set", []),
        ])
        t0 = time.time()
        print(f"demo: training {task} for {s['minutes']} min ...")
        runs[task] = train(build_config(raw, task=task))
        print(f"demo: {task} done in {time.time() - t0:.0f} s, MLflow run {runs[task]}")
    print("demo: all runs logged; browse them with `medgen ui`")
    return runs
