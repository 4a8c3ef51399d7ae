"""`medgen phantoms OUT`: write the procedural demo data in every folder layout."""

from __future__ import annotations

import argparse
import time

HELP = "Write procedural phantom data (MR, CT, PET, lesions, domain shift, expression) in every task's layout."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    parser.add_argument("--subjects", type=int, default=8, help="subjects per layout (default 8)")
    parser.add_argument("--size", type=int, default=64,
                        help="voxels per side; spacing is 220/size mm so the head is head-sized (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def uses(layout: str) -> str:
    """What reads a phantom layout: the tasks whose ``data.root`` it is (``medgen demo``'s
    choice), or the command that takes its scans."""
    from medgen.demo import DEMO_SETTINGS

    tasks = [t for t, s in DEMO_SETTINGS.items() if s["layout"] == layout]
    if tasks:
        return "data.root of " + ", ".join(tasks)
    return {"lesions": "scans for medgen score (an anogan run trained on paired/)",
            "dicom": "a DICOM series for info, convert, infer --dicom"}.get(layout, "")


def run(args: argparse.Namespace) -> int:
    from medgen.data.anatomy import FOV_MM
    from medgen.data.phantoms import write_phantoms

    start = time.perf_counter()
    folders = write_phantoms(args.out, subjects=args.subjects, size=args.size, seed=args.seed,
                             overwrite=args.overwrite, progress=True)
    elapsed = time.perf_counter() - start
    spacing = FOV_MM / args.size
    print(f"wrote {args.subjects} phantom subjects of {args.size}^3 voxels ({spacing:.3g} mm) "
          f"in {elapsed:.1f} s to {args.out}")
    descriptions = {
        "paired": "<subject>/{t1,t2,flair,ct,full_dose,low_dose,noise_free,brain_mask}.nii.gz",
        "lesions": "<subject>/{...same..., lesion}.nii.gz",
        "unpaired": "A/<subject>.nii.gz (MR T1), B/<subject>.nii.gz (CT, HU)",
        "domain": "source|target/<subject>/{image,label}.nii.gz (T1, two scanner profiles)",
        "expression": "expression.tsv (samples x genes), labels.tsv",
        "dicom": "<subject>/t1/ (DICOM MR series)",
    }
    for name, folder in folders.items():
        reader = uses(name)
        print(f"  {folder}  {descriptions[name]}" + (f"  -> {reader}" if reader else ""))
    if "paired" in folders:
        print(f"e.g. medgen train pet-cgan --config configs/pet-cgan-cpu.yaml data.root={folders['paired']} "
              "trainer.max_minutes=5")
    return 0
