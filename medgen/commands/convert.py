"""`medgen convert IN OUT.nii.gz`: any readable volume to NIfTI with its geometry kept."""

from __future__ import annotations

HELP = "Convert a volume (NIfTI, NRRD, MHA/MHD, DICOM file or folder) to NIfTI, keeping its geometry."


def add_arguments(parser) -> None:
    parser.add_argument("input", help="volume file or DICOM folder")
    parser.add_argument("output", help="output NIfTI file (.nii or .nii.gz)")
    parser.add_argument("--series", default=None,
                        help="DICOM folder with several series: the one to convert, by SeriesInstanceUID, "
                             "series number, or its description or an unambiguous part of it")


def run(args) -> int:
    from medgen.io import convert

    print(convert(args.input, args.output, series=args.series))
    return 0
