#!/usr/bin/env python
"""Train AnoGAN / f-AnoGAN on normal scans (the same as `medgen train anogan`).

    python pipelines/anogan.py [--config configs/anogan.yaml] data.root=DIR trainer.max_epochs=2

Prints the MLflow run id as its last line. Score new scans with it:

    medgen score --run RUN_ID scan.nii.gz dicom_folder/ --out scores.csv --maps maps/
"""

import sys
from pathlib import Path

from medgen.commands.train import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("anogan", str(Path(__file__).resolve().parents[1] / "configs" / "anogan.yaml")))
