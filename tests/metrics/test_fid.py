import numpy as np
import pytest
import torch

from medgen.metrics import FID, frechet_distance, frechet_distance_from_features, load_inception
from medgen.metrics.fid import slice_positions, to_inception_input


def _phantom(seed=0, size=20):
    """A bright ellipsoid with texture on a -1 background, like a scaled scan."""
    g = torch.Generator().manual_seed(seed)
    ax = torch.linspace(-1, 1, size)
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    inside = (x / 0.8) ** 2 + (y / 0.6) ** 2 + (z / 0.7) ** 2 < 1
    tex = torch.nn.functional.avg_pool3d(torch.rand(1, 1, size, size, size, generator=g), 3, 1, 1)[0, 0]
    return torch.where(inside, 0.2 + 0.6 * tex, torch.full_like(x, -1.0))


def test_frechet_from_features_matches_sqrtm_formula():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(12, 30))
    f2 = rng.normal(loc=0.3, size=(9, 30)) @ rng.normal(size=(30, 30)) * 0.5
    ref = frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert frechet_distance_from_features(f1, f2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance_from_features(f1, f1) == pytest.approx(0.0, abs=1e-9)


def test_slice_positions_follow_the_foreground():
    vol = torch.full((1, 20, 20, 20), -1.0)
    vol[:, 5:15, 2:6, :] = 0.5
    pos = slice_positions(vol, n_slices=4, value_range=(-1, 1))
    assert all(5 <= i <= 14 for i in pos[0]) and len(pos[0]) == 4
    assert all(2 <= i <= 5 for i in pos[1]) and len(pos[1]) == 4
    assert pos[2] == [2, 7, 12, 17]


def test_inception_input_range_and_shape():
    img = torch.tensor([[[-1.0, 1.0], [0.0, 0.0]]])            # (C=1, 2, 2)
    x = to_inception_input(img, (-1, 1))
    assert x.shape == (1, 3, 299, 299)
    assert x.min() >= -1.0 and x.max() <= 0.9921875 + 1e-6
    rect = to_inception_input(torch.zeros(1, 10, 20), (-1, 1))  # padded to a square, not stretched
    assert rect[0, 0, 0, 150] == pytest.approx(-1.0)           # top padding is background


def test_fid_zero_for_identical_and_grows_with_noise():
    # one slice per axis keeps the test to ~12 network passes; 3 images suffice for a covariance
    real = _phantom(0)[None, None]                                  # (1, 1, 20, 20, 20)
    metric = FID(n_slices=1, device="cpu")
    metric.update(real, real)
    assert metric.n_images == 3
    assert metric.compute() == pytest.approx(0.0, abs=1e-3)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(real.shape, generator=g)
    values = []
    for sigma in (0.1, 0.5):
        metric.reset()
        metric.update((real + sigma * noise).clamp(-1, 1), real)
        values.append(metric.compute())
    assert 0 < values[0] < values[1]
    # the network is loaded once per device; the real features came from the cache
    assert load_inception("cpu") is load_inception("cpu")
    assert len(metric._real_cache) == 1


def test_fid_2d_images_and_errors():
    metric = FID(device="cpu")
    with pytest.raises(ValueError):
        metric.compute()
    with pytest.raises(ValueError):
        metric.update(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError):
        metric.update(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), value_range=(1, 1))


def test_unpaired_sets_fakes_and_reals_on_their_own_with_the_real_cache(monkeypatch):
    # 3D: a real volume added alone is sliced where update() slices it, so the cache serves it
    real = _phantom(0)[None, None]
    metric = FID(n_slices=1, device="cpu")
    metric.update(real, real)
    paired_value = metric.compute()
    metric.reset()
    calls = []
    features = metric._features
    monkeypatch.setattr(metric, "_features", lambda images, vr: calls.append(len(images)) or features(images, vr))
    metric.update_real(real)
    assert calls == [] and metric.n_real == 3 and metric.n_images == 0  # from the cache
    with pytest.raises(ValueError, match="fake and real"):
        metric.compute()
    metric.update_fake(real)  # sliced over its own foreground: the same slices as the real's
    assert calls == [3] and metric.compute() == pytest.approx(paired_value, abs=1e-3)
    # 2D: sets of different sizes
    images = torch.stack([_phantom(s, 16)[..., 8] for s in (1, 2, 3)])[:, None]  # (3, 1, 16, 16)
    sets = FID(device="cpu")
    sets.update_fake(images[:2] * 0.5)
    sets.update_real(images)
    assert (sets.n_images, sets.n_real) == (2, 3) and sets.compute() > 0
    with pytest.raises(ValueError):
        sets.update_real(images, value_range=(1, 1))
