#!/usr/bin/env python
"""Train CycleGAN, unpaired MR (DIR/A) <-> CT (DIR/B) (the same as `medgen train cyclegan`).

    python pipelines/cyclegan.py [--config configs/cyclegan.yaml] data.root=DIR trainer.max_epochs=2

Prints the MLflow run id as its last line.
"""

import sys
from pathlib import Path

from medgen.commands.train import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("cyclegan", str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")))
