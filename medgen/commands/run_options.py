"""The options every command that uses a trained run shares (evaluate, infer, score), declared once."""

from __future__ import annotations


def add_run_options(parser, run_help: str = "MLflow run id or checkpoint file") -> None:
    """``--run RUN_OR_CKPT``, ``--device``, ``--set model.KEY=VALUE`` (repeatable)."""
    parser.add_argument("--run", required=True, metavar="RUN_OR_CKPT", help=run_help)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: a GPU when there is one)")
    parser.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE", dest="overrides",
                        help="change an inference setting of the run's model, one that leaves the trained network "
                             "as it is (repeatable; the keys are the model section of its config)")
