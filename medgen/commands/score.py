"""`medgen score --run RUN_OR_CKPT PATH... [--out scores.csv] [--maps DIR] [--mode encoder|search]
[--polarity both|bright|dark]`.

Scores new scans with a trained ``anogan`` model. One CSV row per scan:
``path,score,flagged,map,overlay,seconds,error,warning`` (``warning``: the scan is unlike the
training scans, e.g. a CT scored by a model of MR, and its score does not compare). ``flagged`` is ``true`` when the score is above the
threshold calibrated on held-out normal scans (stored in the checkpoint; ``--threshold``
overrides it). With ``--maps DIR``: ``DIR/<name>_anomaly.nii.gz`` (voxel anomaly map in the
scan's own geometry) and ``DIR/<name>_overlay.png``. Inputs: NIfTI, NRRD, MHA/MHD, DICOM files
or DICOM folders. The scan score is taken inside the scan's foreground, or inside a mask found
beside each scan (``--mask brain_mask``; the default when the run was trained with
``data.mask_key``, whose masks also calibrated the threshold) -- for head MR a brain mask keeps
skull and scalp reconstruction errors out of the score. ``--polarity`` says which lesions count:
``bright`` (above the pseudo-healthy reconstruction: FLAIR lesions, enhancement), ``dark`` (below
it: T1 black holes, infarcts, cavities) or ``both`` (the absolute residual); default the run's
``model.polarity``. Each polarity has its own calibrated threshold.

Exit codes: 0 = every scan scored; 1 = at least one scan could not be scored (its row states
the error; the others are scored); 2 = unusable run/checkpoint or arguments.
"""

from __future__ import annotations

import sys

HELP = "Anomaly scores, maps and overlays for new scans with a trained anogan run."


def add_arguments(parser) -> None:
    from medgen.commands.run_options import add_run_options

    parser.add_argument("paths", nargs="+", metavar="PATH", help="scans: NIfTI/NRRD/MHA files or DICOM folders")
    parser.add_argument("--out", default="scores.csv", help="CSV file, one row per scan (default: scores.csv)")
    parser.add_argument("--maps", default=None, metavar="DIR", help="write <name>_anomaly.nii.gz and <name>_overlay.png here")
    parser.add_argument("--mode", choices=("encoder", "search"), default="encoder",
                        help="latent mapping: f-AnoGAN encoder (fast, default) or AnoGAN latent search (Γ steps)")
    parser.add_argument("--polarity", choices=("both", "bright", "dark"), default=None,
                        help="lesions brighter than the reconstruction, darker (T1 black holes), or both "
                             "(default: the run's model.polarity)")
    parser.add_argument("--threshold", type=float, default=None, help="flag scans above this score (default: the calibrated one)")
    parser.add_argument("--search-steps", type=int, default=None, help="Γ for --mode search (default: the model's, 500)")
    parser.add_argument("--mask", default=None, metavar="NAME",
                        help="score inside the mask NAME found beside each scan (e.g. brain_mask -> "
                             "<scan folder>/brain_mask.nii.gz); default: the run's data.mask_key if it was "
                             "trained with one, else the scan's foreground; 'none' forces the foreground")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_run_options(parser, "MLflow run id or checkpoint file of an anomaly-scoring run")


def run(args) -> int:
    from medgen.engine import load_task
    from medgen.errors import ConfigError
    from medgen.commands.score_batch import score_paths

    model, data, config, _ = load_task(args.run, device=args.device, overrides=args.overrides)
    if config.task != "anogan":
        raise ConfigError(f"--run {args.run} is a {config.task!r} run; `medgen score` needs an anogan run")
    if args.search_steps is not None:
        model.search_steps = args.search_steps
    if args.mode == "encoder" and getattr(model, "encoder_steps", 1) == 0:
        print("medgen score: warning: this run never trained its encoder (too few epochs?); "
              "encoder-mode scores are not meaningful", file=sys.stderr)
    polarity = args.polarity or model.polarity
    threshold = args.threshold if args.threshold is not None else model.threshold_for(args.mode, polarity)
    if threshold is None:
        print(f"medgen score: note: no calibrated threshold for --mode {args.mode} --polarity {polarity}; "
              "'flagged' left empty", file=sys.stderr)
    mask_name = args.mask if args.mask is not None else config.data.get("mask_key")
    if mask_name and mask_name.lower() == "none":
        mask_name = None
    rows = score_paths(model, data, args.paths, args.out, args.maps, args.mode, threshold,
                       progress=not args.no_progress, mask_name=mask_name, polarity=polarity,
                       warn=lambda line: print(f"medgen score: warning: {line}", file=sys.stderr))
    failed = [r for r in rows if r["error"]]
    n_flagged = sum(r["flagged"] == "true" for r in rows)
    print(f"scored {len(rows) - len(failed)}/{len(rows)} scans, {n_flagged} flagged -> {args.out}")
    for r in failed:
        print(f"medgen score: failed: {r['error']}", file=sys.stderr)
    return 1 if failed else 0
