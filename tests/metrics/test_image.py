import math

import numpy as np
import pytest
import torch
from monai.metrics import SSIMMetric

from medgen.metrics import ImageMetrics, image_metrics, mae, ms_ssim, ms_ssim_fits, nmse, psnr, ssim


def _volume(seed=0, shape=(24, 24, 24)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    # smooth structure so SSIM has something to compare
    return torch.nn.functional.avg_pool3d(x[None, None], 3, 1, 1)[0, 0] * 2 - 1


def test_psnr_for_known_mse():
    target = torch.zeros(4, 4, 4)
    pred = target + 0.1  # MSE = 0.01
    assert psnr(pred, target, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.01))
    assert psnr(target, target, data_range=1.0) == math.inf


def test_psnr_mask_and_batch_mean():
    target = np.zeros((2, 1, 4, 4, 4))
    pred = target.copy()
    pred[0, 0, :2] = 0.5   # half the voxels wrong in sample 0
    pred[1] = 0.1          # all voxels off by 0.1 in sample 1
    mask = np.zeros((4, 4, 4), bool)
    mask[:2] = True
    expected0 = 10 * math.log10(1 / 0.25)         # inside the mask every voxel errs by 0.5
    expected1 = 10 * math.log10(1 / 0.01)
    assert psnr(pred, target, 1.0, mask=mask) == pytest.approx((expected0 + expected1) / 2)
    unmasked0 = 10 * math.log10(1 / 0.125)
    assert psnr(pred, target, 1.0) == pytest.approx((unmasked0 + expected1) / 2)


def test_mae_and_nmse_exact():
    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    pred = torch.tensor([[1.0, 3.0], [3.0, 2.0]])
    assert mae(pred, target) == pytest.approx((0 + 1 + 0 + 2) / 4)
    assert nmse(pred, target) == pytest.approx((1 + 4) / (1 + 4 + 9 + 16))
    mask = torch.tensor([[True, True], [False, False]])
    assert mae(pred, target, mask=mask) == pytest.approx(0.5)
    assert nmse(pred, target, mask=mask) == pytest.approx(1 / 5)


def test_ssim_identity_and_noise_monotone():
    x = _volume()
    assert ssim(x, x, data_range=2.0) == pytest.approx(1.0, abs=1e-6)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    values = [ssim(x + s * noise, x, data_range=2.0) for s in (0.02, 0.1, 0.3)]
    assert values[0] < 1.0
    assert values[0] > values[1] > values[2]


def test_ssim_matches_monai_ssim_metric_3d_and_2d():
    x, y = _volume(0), _volume(1)
    ref3 = SSIMMetric(spatial_dims=3, data_range=2.0)(x[None, None], y[None, None]).item()
    assert ssim(x, y, data_range=2.0) == pytest.approx(ref3, abs=1e-6)
    a, b = x[:, :, 5], y[:, :, 5]
    ref2 = SSIMMetric(spatial_dims=2, data_range=2.0)(a[None, None], b[None, None]).item()
    assert ssim(a.numpy(), b.numpy(), data_range=2.0) == pytest.approx(ref2, abs=1e-6)
    # a 2D slice stored as (X, Y, 1) is scored in 2D
    assert ssim(a[..., None], b[..., None], data_range=2.0) == pytest.approx(ref2, abs=1e-6)


def test_ssim_mask_restricts_to_region():
    x = _volume(shape=(32, 24, 24))
    y = x.clone()
    y[:10] += 0.5 * torch.randn(10, 24, 24, generator=torch.Generator().manual_seed(0))  # damage
    clean = torch.zeros_like(x, dtype=torch.bool)
    clean[16:] = True   # windows (radius 5) centred here never reach the damaged rows
    damaged = torch.zeros_like(clean)
    damaged[:8] = True
    assert ssim(y, x, 2.0, mask=clean) == pytest.approx(1.0, abs=1e-5)
    assert ssim(y, x, 2.0, mask=damaged) < ssim(y, x, 2.0) < 1.0


def test_ms_ssim_only_where_it_fits():
    small = _volume(shape=(24, 24, 24))
    assert ms_ssim(small, small, data_range=2.0) is None
    assert not ms_ssim_fits((96, 96, 96))
    assert ms_ssim_fits((96, 96, 96), kernel_size=5)
    img = torch.rand(96, 96)
    assert ms_ssim(img, img, data_range=1.0, kernel_size=5) == pytest.approx(1.0, abs=1e-5)


def test_image_metrics_dict_and_accumulator():
    x = _volume(0)[None, None].repeat(2, 1, 1, 1, 1)
    y = x + 0.05
    d = image_metrics(y, x, data_range=2.0)
    assert set(d) == {"psnr", "ssim", "mae", "nmse"}
    assert d["mae"] == pytest.approx(0.05)
    acc = ImageMetrics(data_range=2.0)
    acc.update(y[:1], x[:1])
    acc.update(y, x)
    agg = acc.aggregate()
    assert agg["n"] == 3
    assert agg["psnr"] == pytest.approx(d["psnr"])
    acc.reset()
    assert math.isnan(acc.aggregate()["psnr"])


def test_shape_mismatch_and_bad_range():
    with pytest.raises(ValueError):
        psnr(torch.zeros(4, 4), torch.zeros(4, 5), 1.0)
    with pytest.raises(ValueError):
        psnr(torch.zeros(4, 4), torch.zeros(4, 4), 0.0)
