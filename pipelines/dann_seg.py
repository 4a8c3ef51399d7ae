#!/usr/bin/env python
"""Train the domain-adversarial lesion segmenter (the same as `medgen train dann-seg`).

    python pipelines/dann_seg.py [--config configs/dann-seg.yaml] data.root=DIR trainer.max_epochs=2

DIR/source/<subject>/{image,label}, DIR/target/<subject>/image. model.adaptation=source_only or
target_supervised (with data.target_labels=true) trains the bounds. Prints the MLflow run id as
its last line.
"""

import sys
from pathlib import Path

from medgen.commands.train import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("dann-seg", str(Path(__file__).resolve().parents[1] / "configs" / "dann-seg.yaml")))
