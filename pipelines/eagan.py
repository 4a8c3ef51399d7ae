#!/usr/bin/env python
"""Train Ea-GAN, T1 -> T2 (or data.target_key=flair) (the same as `medgen train eagan`).

    python pipelines/eagan.py [--config configs/eagan.yaml] data.root=DIR trainer.max_epochs=2

Prints the MLflow run id as its last line.
"""

import sys
from pathlib import Path

from medgen.commands.train import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("eagan", str(Path(__file__).resolve().parents[1] / "configs" / "eagan.yaml")))
