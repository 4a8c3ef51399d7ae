#!/usr/bin/env python
"""Train the Tybalt VAE on an expression table (the same as `medgen train tybalt`).

    python pipelines/tybalt.py [--config configs/tybalt.yaml] data.root=DIR trainer.max_epochs=2

Prints the MLflow run id as its last line.
"""

import sys
from pathlib import Path

from medgen.commands.train import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("tybalt", str(Path(__file__).resolve().parents[1] / "configs" / "tybalt.yaml")))
