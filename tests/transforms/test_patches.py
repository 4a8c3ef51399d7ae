import torch
from monai.data import get_track_meta

from medgen.transforms.patches import RandomPatches, flips


def _volumes():
    """Two 32^3 volumes whose foreground is one 6^3 corner cube (about 0.7 % of the voxels)."""
    out = []
    for k in range(2):
        image = torch.full((1, 32, 32, 32), float(k))
        fg = torch.zeros((1, 32, 32, 32), dtype=torch.bool)
        fg[:, :6, :6, :6] = True
        image[fg] = 10.0 + k
        out.append({"image": image, "fg": fg})
    return out


def test_patches_favour_the_foreground_and_follow_the_seed():
    ds = RandomPatches(_volumes(), ["image"], (8, 8, 8), patches_per_volume=40, pos=1.0, neg=1.0, transform=flips(["image"]))
    torch.manual_seed(0)
    patches = [ds[i]["image"] for i in range(len(ds))]
    assert all(p.shape == (1, 8, 8, 8) and type(p) is torch.Tensor for p in patches)
    with_fg = sum(bool((p >= 10).any()) for p in patches) / len(patches)
    # pos:neg = 1:1 -> about half the centres lie in the cube; uniform centres would hit it ~3 % of the time
    assert 0.3 < with_fg < 0.8
    assert {int(p.min()) for p in patches[::2]} == {0} and {int(p.min()) for p in patches[1::2]} == {1}  # item i -> volume i % 2
    torch.manual_seed(0)
    again = [ds[i]["image"] for i in range(len(ds))]
    assert all(torch.equal(a, b) for a, b in zip(patches, again))
    assert get_track_meta()  # MONAI's global flag, switched off while sampling, is back on
