#!/usr/bin/env python
"""Train the low-dose PET c-GAN (the same as `medgen train pet-cgan`).

    python pipelines/pet_cgan.py --config configs/pet-cgan.yaml data.root=DIR trainer.max_epochs=2

Prints the MLflow run id as its last line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pet-cgan.yaml"


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
        run_id = train(load_config(args.config, args.overrides, task="pet-cgan"))
    except MedgenError as e:
        print(f"pet_cgan: error: {e}", file=sys.stderr)
        return 2
    print(run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
