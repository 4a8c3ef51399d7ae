#!/usr/bin/env python
"""Train the low-dose PET c-GAN (the same as `medgen train pet-cgan`).

    python pipelines/pet_cgan.py [--config configs/pet-cgan.yaml] data.root=DIR trainer.max_epochs=2

Prints the MLflow run id as its last line.
"""

import sys
from pathlib import Path

from medgen.commands.train import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("pet-cgan", str(Path(__file__).resolve().parents[1] / "configs" / "pet-cgan.yaml")))
