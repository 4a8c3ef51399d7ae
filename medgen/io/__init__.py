"""Read and write volumes with their geometry.

``read(path)`` returns a ``monai.data.MetaTensor`` of shape ``(X, Y, Z)`` (float32), reoriented
to the canonical RAS+ voxel order, whose ``.affine`` maps voxel indices to RAS world mm and whose
``.meta`` holds non-identifying facts (``filename_or_obj``, ``modality``, ``spacing``, ...).
``write(path, volume, reference)`` writes NIfTI in the reference's original geometry.
``describe(path)`` gives the facts ``medgen info`` prints (``describe_folder(dir)`` for a
dataset folder, from headers), ``convert(src, dst)`` is
``medgen convert``, and ``is_volume_path(path)`` tells whether ``read`` accepts a path.

Formats: NIfTI/Analyze (nibabel), NRRD/MetaImage (SimpleITK), DICOM folders and single files
(pydicom; series grouped by SeriesInstanceUID, multi-frame and enhanced objects).
"""

from medgen.io.api import convert, describe, describe_folder, find_volumes, header_geometry, is_volume_path, read, voxel_spacing, write

__all__ = ["read", "write", "describe", "describe_folder", "find_volumes", "header_geometry", "voxel_spacing",
           "is_volume_path", "convert"]
