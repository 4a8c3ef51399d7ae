#!/usr/bin/env python
"""Make low-dose PET from full-dose scans (Poisson thinning), in pet-cgan's paired layout.

    python pipelines/simulate_low_dose.py FULL_DOSE_DIR OUT_DIR [--dose-fraction 0.25] [--counts N]

FULL_DOSE_DIR holds either one full-dose scan per subject (``DIR/<subject>.nii.gz``, ``.nrrd``,
``.mha`` or a DICOM folder) or the paired layout (``DIR/<subject>/full_dose.*``). For every subject
it writes ``OUT_DIR/<subject>/full_dose.nii.gz`` and ``low_dose.nii.gz`` in the scan's own
geometry and units, ready for ``medgen train pet-cgan --config configs/pet-cgan.yaml
data.root=OUT_DIR``. The thinning itself is :func:`medgen.transforms.lowdose.simulate_low_dose`
(binomial thinning of the counts; the count level is estimated from the image noise unless
``--counts`` gives it). Each subject gets its own seed (``--seed`` + its index).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def full_dose_scans(root: Path, key: str) -> list[tuple[str, Path]]:
    """(subject, path) for every full-dose scan under `root`, sorted by subject."""
    from medgen.data.layouts import find_volume
    from medgen.errors import InputError
    from medgen.io import is_volume_path

    if not root.is_dir():
        raise InputError(root, "not a folder")
    scans = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not is_volume_path(entry):  # paired layout: <subject>/<key>
            scans.append((entry.name, find_volume(entry, key)))
        elif is_volume_path(entry):
            name = entry.name
            for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
                if name.lower().endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            scans.append((name, entry))
    if not scans:
        raise InputError(root, "no full-dose scans found (expected DIR/<subject>.nii.gz or DIR/<subject>/full_dose.*)")
    return scans


def simulate_folder(root, out, dose_fraction: float = 0.25, counts: float | None = None, seed: int = 0,
                    psf_fwhm_mm: float | None = None, key: str = "full_dose", progress: bool = True) -> list[Path]:
    """Write OUT/<subject>/{full_dose,low_dose}.nii.gz for every scan under `root`; returns the folders."""
    from tqdm import tqdm

    from medgen import io
    from medgen.errors import InputError
    from medgen.transforms.lowdose import simulate_low_dose

    if not 0 < dose_fraction <= 1:
        raise InputError(root, f"--dose-fraction must be in (0, 1], got {dose_fraction}")
    root, out = Path(root), Path(out)
    written = []
    for index, (subject, path) in enumerate(tqdm(full_dose_scans(root, key), desc="low dose", disable=not progress)):
        full = io.read(path)
        try:
            low = simulate_low_dose(full, dose_fraction=dose_fraction, counts=counts, seed=seed + index,
                                    psf_fwhm_mm=psf_fwhm_mm)
        except ValueError as e:  # e.g. a noise-free image without --counts
            raise InputError(path, str(e)) from None
        folder = out / subject
        folder.mkdir(parents=True, exist_ok=True)
        io.write(folder / "full_dose.nii.gz", full, reference=full)
        io.write(folder / "low_dose.nii.gz", low, reference=full)
        written.append(folder)
    return written


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from medgen.errors import MedgenError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", help="folder of full-dose scans")
    p.add_argument("output", help="output folder (paired layout)")
    p.add_argument("--dose-fraction", type=float, default=0.25, help="fraction of the dose kept (default 0.25)")
    p.add_argument("--counts", type=float, default=None, help="expected total counts of a full-dose scan "
                   "(default: estimated from the image noise)")
    p.add_argument("--psf-fwhm-mm", type=float, default=None, help="smooth the added noise with this PSF")
    p.add_argument("--key", default="full_dose", help="full-dose key in a paired layout (default full_dose)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        folders = simulate_folder(args.input, args.output, args.dose_fraction, args.counts, args.seed,
                                  args.psf_fwhm_mm, args.key)
    except MedgenError as e:
        print(f"simulate_low_dose: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(folders)} subject(s) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
