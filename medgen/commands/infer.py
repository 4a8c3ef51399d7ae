"""`medgen infer TASK --run RUN_OR_CKPT --input PATH --output DIR`: NIfTI outputs over the inputs."""

from __future__ import annotations

HELP = "Apply a trained run to a volume, a DICOM folder or a folder of volumes (NIfTI out, input geometry)."


def add_arguments(parser) -> None:
    parser.add_argument("task", help="the task the run trained")
    parser.add_argument("--run", required=True, metavar="RUN_OR_CKPT", help="MLflow run id or checkpoint file")
    parser.add_argument("--input", required=True, metavar="PATH", help="volume file, DICOM folder or folder of volumes")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for <name>.nii.gz outputs")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE", dest="overrides",
                        help="change an inference setting of the run, e.g. model.flip_ensemble=false (repeatable)")


def run(args) -> int:
    from medgen.engine import load_task
    from medgen.errors import ConfigError
    from medgen.inference import infer_to_folder, list_inputs

    list_inputs(args.input)  # bad input fails before the model is loaded
    model, data, config, _ = load_task(args.run, device=args.device, overrides=args.overrides)
    if config.task != args.task:
        raise ConfigError(f"--run {args.run} is a {config.task!r} run, not {args.task!r}")
    for path in infer_to_folder(model, data, args.input, args.output):
        print(path)
    return 0
