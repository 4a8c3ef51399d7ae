import numpy as np
import pytest
import torch

from medgen.data.anatomy import make_anatomy
from medgen.data.render import render_ct, render_mr, render_pet_doses
from medgen.transforms.intensity import NormalizeIntensityd, apply_intensity, invert_intensity, normalize
from medgen.transforms.masks import foreground_mask


@pytest.fixture(scope="module")
def head():
    anatomy = make_anatomy(1, 32)
    rng = np.random.default_rng(0)
    return anatomy, {"mr": render_mr(anatomy, rng), "ct": render_ct(anatomy, rng),
                     "pet": render_pet_doses(anatomy, rng)["low_dose"]}


@pytest.mark.parametrize("modality", ["ct", "pet", "mr"])
def test_round_trip_inside_window(head, modality):
    anatomy, images = head
    vol = torch.from_numpy(images[modality])
    x, params = normalize(vol, modality)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    back = invert_intensity(x, params)
    inside = (vol >= params["low"]) & (vol <= params["high"])
    assert inside[torch.from_numpy(anatomy["head"] > 0.5)].float().mean() > 0.95
    scale = params["high"] - params["low"]
    assert float((back - vol)[inside].abs().max()) < 1e-5 * scale
    # outside the window values are clipped to its edges (documented)
    assert float(back.min()) >= params["low"] - 1e-3 * scale and float(back.max()) <= params["high"] + 1e-3 * scale


def test_window_definitions(head):
    _, images = head
    _, ct = normalize(images["ct"], "ct")
    assert (ct["low"], ct["high"]) == (-1000.0, 2000.0)
    assert apply_intensity(np.array([-1024.0, -1000.0, 500.0, 2000.0, 3000.0]), ct).tolist() == [-1, -1, 0, 1, 1]
    _, pet = normalize(images["pet"], "pet")
    assert pet["low"] == 0.0 and pet["high"] > images["pet"].max() * 0.8
    _, mr = normalize(images["mr"], "mr")
    assert 0 < mr["low"] < mr["high"] < images["mr"].max()


def test_dictionary_transform_shares_source_params(head):
    _, images = head
    low = torch.from_numpy(images["pet"])
    full = low * 1.1
    d = NormalizeIntensityd(["source", "target"], modality="pet")({"source": low, "target": full})
    params = d["source_intensity"]
    torch.testing.assert_close(d["target"], apply_intensity(full, params))
    d2 = NormalizeIntensityd(["a", "b"], modality="mr", shared=False)({"a": low, "b": full})
    assert d2["a_intensity"]["high"] != d2["b_intensity"]["high"]


@pytest.mark.parametrize("modality", ["mr", "ct"])
def test_foreground_mask_covers_the_head(head, modality):
    anatomy, images = head
    mask = foreground_mask(images[modality])
    truth = anatomy["head"] > 0.5
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert mask.shape == truth.shape and iou > 0.85


def test_foreground_mask_2d_and_degenerate():
    img = np.zeros((30, 30, 1), np.float32)
    img[5:25, 5:25] = 10
    img[12:18, 12:18] = 0  # a hole inside the body is filled
    m = foreground_mask(img)
    assert m.shape == img.shape and m[5:25, 5:25].all() and not m[:5].any()
    assert foreground_mask(np.zeros((4, 4, 4))).all()


def test_a_hot_spot_does_not_become_the_body():
    """Whole-body PET: a bladder at 30x the tissue holds a sliver of the voxels. Plain Otsu would
    take it for the foreground, and the PET window (2 x p99.5 in the mask) would follow it."""
    from skimage.filters import threshold_otsu

    from medgen.transforms.intensity import intensity_params

    rng = np.random.default_rng(0)
    vol = rng.normal(0.02, 0.01, (40, 40, 60)).clip(0)  # air, a little noise
    body = np.zeros(vol.shape, bool)
    body[8:32, 10:30, 5:55] = True  # 20 % of the voxels
    vol[body] = rng.normal(1.0, 0.2, body.sum())
    vol[18:21, 18:21, 40:43] = 30.0  # the bladder: 27 voxels, 0.03 %
    assert (vol > threshold_otsu(vol)).sum() < 40  # plain Otsu keeps the bladder (and a voxel or so)
    mask = foreground_mask(vol)
    assert mask[body].mean() > 0.99 and mask[~body].mean() < 0.01
    params = intensity_params(vol, "pet", mask)
    assert 2.5 < params["high"] < 3.5  # 2 x p99.5 of the tissue (1 + 2.6 sigma), not of the bladder


def test_foreground_box_grows_the_body_by_the_margin_or_is_none():
    from medgen.transforms.masks import foreground_box

    vol = torch.full((1, 1, 60, 50, 20), -1.0)
    vol[0, 0, 20:30, 10:25, 5:15] = 0.5  # a body in a large field of view
    assert foreground_box(vol, (8, 8, 8)) == (slice(12, 38), slice(2, 33), slice(0, 20))
    assert foreground_box(vol[0, 0], (8, 8, 8)) == foreground_box(vol, (8, 8, 8))
    assert foreground_box(vol, (32, 32, 32)) is None  # the grown box is the whole volume
    big = torch.full((200, 120, 120), -1.0)
    big[61:90, 40:70, 40:70] = 0.5  # with a 32-voxel margin the mask is taken on every 4th voxel
    box = foreground_box(big, (32, 32, 32))
    assert box[0].start <= 61 - 32 and box[0].stop >= 90 + 32  # never tighter than the exact box
    assert box[0].stop - box[0].start <= 29 + 64 + 2 * 4 and box[1] == box[2]
