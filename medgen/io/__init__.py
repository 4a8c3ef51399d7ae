"""Read and write volumes with their geometry.

``read(path)`` returns a ``monai.data.MetaTensor`` of shape ``(X, Y, Z)`` (float32), reoriented
to the canonical RAS+ voxel order, whose ``.affine`` maps voxel indices to RAS world mm and whose
``.meta`` holds non-identifying facts (``filename_or_obj``, ``modality``, ``spacing``, ...).
``write(path, volume, reference)`` writes NIfTI in the reference's geometry.
"""
