"""`medgen infer TASK --run RUN_OR_CKPT --input PATH --output DIR [--dicom]`: NIfTI outputs over the
inputs (and DICOM series beside DICOM inputs); a table model's TSV tables (tybalt)."""

from __future__ import annotations

from pathlib import Path

HELP = ("Apply a trained run to a volume, a DICOM folder or a folder of volumes (NIfTI out, input geometry), "
        "or a table model to an expression table (TSV out).")


def add_arguments(parser) -> None:
    from medgen.commands.run_options import add_run_options

    parser.add_argument("task", help="the task the run trained")
    parser.add_argument("--input", required=True, metavar="PATH",
                        help="volume file, DICOM folder or folder of volumes (tybalt: an expression table or its folder)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="folder for <name>_<task>.nii.gz outputs (cyclegan: <name>_cyclegan_AtoB|BtoA.nii.gz), "
                             "never onto an input nor over an earlier output (tybalt: latent.tsv, reconstruction.tsv)")
    parser.add_argument("--dicom", action="store_true",
                        help="also write each output as a DICOM series (<name>_<task>_dicom/) mirroring its DICOM series input: "
                             "same patient, study and geometry, a new derived series (dann-seg: a label series whose "
                             "pixels are the class indices)")
    parser.add_argument("--direction", default=None, metavar="DIRECTION",
                        help="for a two-way model, which way to translate (cyclegan: AtoB, the default, or BtoA); "
                             "the output is in the target side's units (HU for CT)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that exist already (default: refuse, naming the file)")
    add_run_options(parser)


def run(args) -> int:
    from medgen.engine import load_task
    from medgen.errors import ConfigError
    from medgen.inference import (check_dicom_inputs, infer_table, infer_to_folder, list_inputs, model_input_names,
                                  planned_outputs, refuse_existing)

    from medgen.models.registry import get_model_class

    cls = get_model_class(args.task)
    table = cls.output_kind == "table"
    if args.direction is not None and args.direction not in cls.directions:
        raise ConfigError(f"--direction {args.direction}: " + (f"{args.task} has directions {', '.join(cls.directions)}"
                                                               if cls.directions else f"{args.task} translates one way only"))
    if table and args.dicom:
        raise ConfigError(f"--dicom: {args.task} writes tables, not images")
    # bad input, and outputs that exist already, fail before the model is loaded
    if table:
        refuse_existing([Path(args.output) / f"{name}.tsv" for name in cls.table_outputs], args.overwrite)
    else:
        inputs = list_inputs(args.input, prefer=model_input_names(cls))
        if args.dicom:
            check_dicom_inputs(inputs)
        direction = (args.direction or cls.directions[0]) if cls.directions else None
        plans = planned_outputs(inputs, args.output, args.task, direction, dicom=args.dicom)
        refuse_existing([t for _, target, series in plans for t in (target, series)], args.overwrite)
    model, data, config, ckpt = load_task(args.run, device=args.device, overrides=args.overrides)
    if config.task != args.task:
        raise ConfigError(f"--run {args.run} is a {config.task!r} run, not {args.task!r}")
    if args.direction is not None:
        model.direction = args.direction
    if table:
        for path in infer_table(model, data, args.input, args.output, overwrite=args.overwrite):
            print(path)
        return 0
    # Viewers list series by description: a label map says so (dann-seg's, with a run id, fits DICOM's 64).
    what = f"{config.task} label map" if cls.output_kind == "label" else config.task
    description = f"medgen {what} (run {ckpt.get('run_id') or Path(args.run).name})" if args.dicom else None
    for path in infer_to_folder(model, data, args.input, args.output, dicom_description=description,
                                overwrite=args.overwrite):
        print(path)
    return 0
