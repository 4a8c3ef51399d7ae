#!/usr/bin/env python
"""Train AnoGAN / f-AnoGAN on normal scans (the same as `medgen train anogan`).

    python pipelines/anogan.py --config configs/anogan.yaml data.root=DIR trainer.max_epochs=2

Prints the MLflow run id as its last line. Score new scans with it:

    medgen score --run RUN_ID scan.nii.gz dicom_folder/ --out scores.csv --maps maps/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "anogan.yaml"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from medgen.config import load_config
    from medgen.engine import train
    from medgen.errors import MedgenError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=DIR")
    args = parser.parse_args(argv)
    try:
        run_id = train(load_config(args.config, args.overrides, task="anogan"))
    except MedgenError as e:
        print(f"anogan: error: {e}", file=sys.stderr)
        return 2
    print(run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
