"""`medgen train TASK --config FILE [key=value ...] [--resume CKPT]`: the last stdout line is the run id."""

from __future__ import annotations

import argparse
import sys

HELP = "Train a task's model; prints the MLflow run id as the last line."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from medgen.models.registry import available_tasks  # finds modules without importing them

    parser.add_argument("task", help=" | ".join(available_tasks()))
    parser.add_argument("--config", metavar="FILE", help="YAML config (default: the model's defaults)")
    parser.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint (and its MLflow run)")
    # REMAINDER: argparse cannot take positionals (key=value) both before and after options
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value", help="config overrides, e.g. trainer.max_epochs=5")


def split_remainder(args) -> tuple[str | None, str | None, list[str]]:
    """Options that landed in the remainder (after the first key=value) are still options."""
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--config")
    extra.add_argument("--resume")
    opts, rest = extra.parse_known_args(args.overrides)
    for item in rest:
        if item.startswith("-"):
            from medgen.errors import ConfigError

            raise ConfigError(f"unknown option {item!r}")
    return opts.config or args.config, opts.resume or args.resume, rest


def run(args) -> int:
    from medgen.config import apply_overrides, build_config, read_yaml
    from medgen.engine import train

    config_path, resume, overrides = split_remainder(args)
    if config_path:
        raw = read_yaml(config_path)
    elif resume:  # no config: continue with the checkpoint's own
        from medgen.engine.checkpoint import load_checkpoint

        raw = load_checkpoint(resume)["config"]
    else:
        raw = {}
    raw = apply_overrides(raw, overrides)
    if resume:
        raw = apply_overrides(raw, [f"trainer.resume={resume}"])
    config = build_config(raw, task=args.task)
    from tqdm.auto import tqdm

    # tqdm.write: a line between progress-bar updates, not through the bar
    run_id = train(config, report=lambda line: tqdm.write(line, file=sys.stderr))
    print(run_id, flush=True)
    return 0


def pipeline_main(task: str, default_config: str, argv: list[str] | None = None) -> int:
    """Entry point of the thin scripts in ``pipelines/``: `medgen train TASK` with the script's
    config unless ``--config`` is given."""
    from medgen.cli import main

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", default_config, *argv]
    return main(["train", task, *argv])
