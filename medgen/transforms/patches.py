"""Random patch sampling (and optional augmentation) over cached whole volumes.

:class:`RandomPatches` is a map-style dataset of ``len(volumes) * patches_per_volume`` items;
item ``i`` is a fresh random patch of volume ``i % n`` (so one epoch visits every volume
``patches_per_volume`` times). Patch centres are drawn with MONAI's ``RandCropByPosNegLabeld``
from the foreground (``pos``) or anywhere (``neg``), so patches of mostly air are rare. The random
state is drawn from torch's generator on every call, so ``torch.manual_seed`` makes sampling
reproducible and every DataLoader worker samples differently. Items hold plain tensors
``(C, *patch)`` (default collation works).

Speed: sampling runs once per patch, thousands of times an epoch, so each volume's foreground
and background voxel indices are computed once and reused (MONAI's ``fg_indices_key``), and
cropping and augmentation run without MetaTensor tracking (patches carry no geometry), from one
generator re-seeded per patch. A 32³ PET patch fell from 6.7 to 0.7 ms on one CPU thread; the
sampling had been a quarter of the benchmark's training step.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.transforms.utils import map_binary_to_indices
from torch.utils.data import Dataset


def flips(keys: Sequence[str], spatial_dims: int = 3) -> Compose:
    """A random flip of every axis (p = 0.5 each), the same for all ``keys``."""
    return Compose([RandFlipd(list(keys), prob=0.5, spatial_axis=a) for a in range(spatial_dims)])


def augmentation(keys: Sequence[str], spatial_dims: int = 3) -> Compose:
    """Mild augmentation: flips on every axis, a small affine (±0.1 rad, ±5 % scale) and ±5 %
    intensity scale/shift (on the first key only). Border padding keeps the background."""
    keys = list(keys)
    return Compose(
        list(flips(keys, spatial_dims).transforms)
        + [
            RandAffined(keys, prob=0.5, rotate_range=[0.1] * (1 if spatial_dims == 2 else 3),
                        scale_range=[0.05] * spatial_dims, padding_mode="border", mode="bilinear"),
            RandScaleIntensityd(keys[:1], factors=0.05, prob=0.5),
            RandShiftIntensityd(keys[:1], offsets=0.05, prob=0.5),
        ]
    )


class RandomPatches(Dataset):
    """Random patches of ``keys`` from a dataset of whole-volume dicts ``{key: (C, *spatial)}``.

    ``label_key`` names a foreground mask in the items used to weight centres (``pos``:``neg``);
    without it centres are uniform. ``region_key`` restricts centres of both kinds to a mask
    (e.g. ``label_key`` a lesion map, ``region_key`` the body: lesion-centred patches at the
    odds ``pos``:``neg``, the rest in the body rather than in air). ``transform`` (e.g.
    :func:`augmentation`) runs on each patch.
    """

    def __init__(self, volumes: Dataset, keys: Sequence[str], patch_size: Sequence[int], patches_per_volume: int = 8,
                 label_key: str | None = "fg", pos: float = 3.0, neg: float = 1.0, transform=None,
                 region_key: str | None = None):
        self.volumes = volumes
        self.keys = list(keys)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.patches_per_volume = int(patches_per_volume)
        self.label_key = label_key
        self.region_key = region_key
        crop_keys = list(dict.fromkeys(self.keys + ([label_key] if label_key else [])))  # a label may be an output
        if label_key:
            self.cropper = RandCropByPosNegLabeld(crop_keys, label_key=label_key, spatial_size=self.patch_size,
                                                  pos=pos, neg=neg, num_samples=1, allow_smaller=True,
                                                  fg_indices_key="_fg_indices", bg_indices_key="_bg_indices")
            self._indices: dict[int, tuple] = {}  # volume index -> (foreground, background) voxel indices
        else:
            from monai.transforms import RandSpatialCropd

            self.cropper = RandSpatialCropd(crop_keys, roi_size=self.patch_size, random_size=False)
        self.transform = transform
        # One generator for the crop and the augmentation, re-seeded per patch (a fresh
        # RandomState per transform and patch cost more than the crop itself).
        self._rng = np.random.RandomState()
        _share_generator(self.cropper, self._rng)
        if transform is not None:
            _share_generator(transform, self._rng)

    def __len__(self) -> int:
        return len(self.volumes) * self.patches_per_volume

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):  # ends `for patch in dataset` (the modulo below never would)
            raise IndexError(f"patch index {index} out of range for {len(self)} patches")
        v = index % len(self.volumes)
        item = self.volumes[v]
        data = {k: _plain(item[k]) for k in self.keys}
        if self.label_key:
            data[self.label_key] = item[self.label_key]
            if v not in self._indices:
                region = _plain(item[self.region_key]) if self.region_key else None
                self._indices[v] = map_binary_to_indices(_plain(item[self.label_key]) > 0, region, 0.0)
            data["_fg_indices"], data["_bg_indices"] = self._indices[v]
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        tracking = get_track_meta()
        set_track_meta(False)  # global in MONAI; restored below (sampling is single-threaded)
        try:
            self._rng.seed(seed)
            patch = self.cropper(data)
            if isinstance(patch, list):
                patch = patch[0]
            if self.transform is not None:
                patch = self.transform({k: patch[k] for k in self.keys})
        finally:
            set_track_meta(tracking)
        return {k: _plain(patch[k]) for k in self.keys}


def _share_generator(transform, rng: np.random.RandomState) -> None:
    """Make every random transform in `transform` draw from `rng` (a Compose would otherwise
    give each member a generator of its own, seeded once)."""
    if isinstance(transform, Compose):
        for t in transform.transforms:
            _share_generator(t, rng)
    elif hasattr(transform, "set_random_state"):
        transform.set_random_state(state=rng)


def _plain(x) -> torch.Tensor:
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.float().contiguous()


class JoinedPatches(Dataset):
    """Items that join a patch from each of several patch datasets: ``{prefix + key: patch}``.

    For training on two unaligned sets at once: an MR patch with an unrelated CT patch (CycleGAN),
    or a labelled source-domain patch with an unlabelled target-domain one (domain adaptation).
    ``streams`` is ``[(dataset, prefix), ...]``; the length is the longest stream's, and item ``i``
    takes item ``i`` of that stream and a random item of every other one (drawn from torch's
    generator: reproducible under ``torch.manual_seed``, a new pairing every epoch, as CycleGAN's
    unaligned loader does).
    """

    def __init__(self, streams: Sequence[tuple[Dataset, str]]):
        self.streams = [(ds, str(prefix)) for ds, prefix in streams]
        if not self.streams or any(len(ds) == 0 for ds, _ in self.streams):
            raise ValueError("every stream needs at least one item")
        self.lead = max(range(len(self.streams)), key=lambda k: len(self.streams[k][0]))

    def __len__(self) -> int:
        return len(self.streams[self.lead][0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        out = {}
        for k, (ds, prefix) in enumerate(self.streams):
            i = index if k == self.lead else int(torch.randint(0, len(ds), (1,)).item())
            out.update({prefix + key: value for key, value in ds[i].items()})
        return out
