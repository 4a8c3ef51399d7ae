"""`medgen evaluate TASK --run RUN_OR_CKPT --data DIR [--json]`: metrics on every subject of DIR."""

from __future__ import annotations

import json
import sys

HELP = "Metrics of a trained run on a folder laid out like its training data."


def add_arguments(parser) -> None:
    from medgen.commands.run_options import add_run_options

    parser.add_argument("task", help="the task the run trained")
    parser.add_argument("--data", required=True, metavar="DIR", help="folder in the task's layout")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--fid-slices", type=int, default=None, help="2.5D FID slices per axis (default: the run's; 0 = off)")
    add_run_options(parser)


def run(args) -> int:
    from medgen.engine import load_task
    from medgen.errors import ConfigError
    from medgen.inference import evaluate_folder

    model, _, config, ckpt = load_task(args.run, device=args.device, overrides=args.overrides)
    if config.task != args.task:
        raise ConfigError(f"--run {args.run} is a {config.task!r} run, not {args.task!r}")
    # --json keeps stdout to the one object; a bar on a terminal's stderr does not touch it, and
    # without one the terminal says nothing for the minutes a folder takes
    progress = not args.json or sys.stderr.isatty()
    result = evaluate_folder(model, config, args.data, fid_slices=args.fid_slices, progress=progress,
                             state=ckpt.get("data"))
    result = {"task": config.task, "run": str(args.run), "run_id": ckpt.get("run_id"), "epoch": ckpt.get("epoch"),
              "data": str(args.data), **result}
    if args.json:
        print(json.dumps(result))
    else:
        what = f"{result['n_samples']} samples" if "n_samples" in result else f"{result['n_volumes']} volumes"
        print(f"{config.task}: {what} in {args.data}")
        for name, value in sorted(result["metrics"].items()):
            print(f"  {name:<20} {value:.6g}")
    return 0
