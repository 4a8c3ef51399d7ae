"""The lean patch sampler draws exactly the patches MONAI's crop and flip transforms would."""

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, RandSpatialCropd
from monai.transforms.utils import map_binary_to_indices

from medgen.transforms.patches import RandomPatches, flips


def monai_patch(item, keys, label_key, patch, seed, flip, pos=3.0, neg=1.0, dims=3):
    rng = np.random.RandomState()
    if label_key:
        fg, bg = map_binary_to_indices(item[label_key] > 0, None, 0.0)
        crop = RandCropByPosNegLabeld(list(dict.fromkeys(keys + [label_key])), label_key=label_key, spatial_size=patch,
                                      pos=pos, neg=neg, num_samples=1, allow_smaller=True,
                                      fg_indices_key="_fg", bg_indices_key="_bg")
        data = {**{k: item[k] for k in keys}, label_key: item[label_key], "_fg": fg, "_bg": bg}
    else:
        crop = RandSpatialCropd(keys, roi_size=patch, random_size=False)
        data = {k: item[k] for k in keys}
    crop.set_random_state(state=rng)
    flip_t = Compose([RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(dims)])
    for t in flip_t.transforms:
        t.set_random_state(state=rng)
    rng.seed(seed)
    out = crop(data)
    out = out[0] if isinstance(out, list) else out
    if flip:
        out = flip_t({k: out[k] for k in keys})
    return {k: torch.as_tensor(out[k]).float() for k in keys}


@pytest.mark.parametrize("label", [True, False])
@pytest.mark.parametrize("dims", [2, 3])
def test_patches_equal_monais(label, dims):
    g = torch.Generator().manual_seed(0)
    shape = (20, 17, 12)[:dims]
    image = torch.rand((1,) + shape, generator=g)
    target = image * 2
    fg = (image > 0.8).float()
    item = {"source": image, "target": target, "fg": fg}
    patch = (8, 8, 16)[:dims]  # the last side larger than the volume: all of it
    keys = ["source", "target"]
    ds = RandomPatches([item], keys, patch, patches_per_volume=30, label_key="fg" if label else None,
                       transform=flips(keys, dims))
    for i in range(30):
        torch.manual_seed(100 + i)
        ours = ds[i]
        torch.manual_seed(100 + i)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        theirs = monai_patch(item, keys, "fg" if label else None, patch, seed, flip=True, dims=dims)
        for k in keys:
            assert torch.equal(ours[k], theirs[k]), (i, k)
