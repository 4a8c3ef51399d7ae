"""AnoGAN / f-AnoGAN model and scoring on tiny patches (no engine, no files)."""

import math

import numpy as np
import pytest
import torch

from medgen.models.anogan import scoring
from medgen.errors import ConfigError
from medgen.models.anogan import AnoGAN
from medgen.models.registry import get_model_class


def tiny(patch=(8, 8, 8), **kw) -> AnoGAN:
    torch.manual_seed(0)
    kw = {"latent_dim": 8, "generator_channels": (16, 8), "discriminator_channels": (8, 16), **kw}
    return AnoGAN(patch_size=patch, **kw)


def smooth_volume(size=24, seed=0) -> torch.Tensor:
    """A smooth 'normal' volume (1, S, S, S) in [-0.6, 0.2] and its mask (all inside)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 1, size, size, size), generator=g)
    for _ in range(3):
        x = torch.nn.functional.avg_pool3d(x, 5, stride=1, padding=2, count_include_pad=False)
    x = (x - x.min()) / (x.max() - x.min())
    return (x[0] * 0.8 - 0.6).float()


def blob(size=24, center=(12, 12, 12), radius=3.0) -> torch.Tensor:
    idx = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    d = ((idx - torch.tensor(center, dtype=torch.float32).view(3, 1, 1, 1)) ** 2).sum(0).sqrt()
    return d <= radius


def test_registered_and_paper_defaults():
    assert get_model_class("anogan") is AnoGAN
    m = AnoGAN()
    assert (m.gan, m.n_critic, m.gp_weight, m.lr, m.betas) == ("wgan-gp", 5, 10.0, 1e-4, (0.0, 0.9))
    assert (m.search_steps, m.lam, m.kappa) == (500, 0.1, 1.0)
    d = AnoGAN(gan="dcgan")
    assert (d.lr, d.betas) == (2e-4, (0.5, 0.999))
    with pytest.raises(ConfigError, match="vanilla"):  # a constructor check: a config error, as everywhere
        AnoGAN(gan="vanilla")


def test_networks_built_from_roi_size_2d_and_3d():
    m = AnoGAN(latent_dim=8, generator_channels=(16, 8), discriminator_channels=(8, 16))
    assert not hasattr(m, "generator")
    m.roi_size = (16, 16)  # what build_task does with data.patch_size
    assert m.generator(torch.randn(2, 8)).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError):
        m.roi_size = (8, 8)
    # WGAN-GP critic without BatchNorm; DCGAN discriminator with it
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in tiny().discriminator.modules())
    assert any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in tiny(gan="dcgan").discriminator.modules())


def test_phase_schedule():
    m = tiny(encoder_fraction=0.3)
    m.max_epochs = 10
    phases = []
    for e in range(10):
        m.epoch = e
        phases.append(m.phase)
    assert phases == ["gan"] * 7 + ["encoder"] * 3
    m.max_epochs = 2
    m.epoch = 1
    assert m.encoder_epochs == 1 and m.phase == "encoder"
    m.max_epochs, m.epoch = 1, 0
    assert m.phase == "gan"  # one epoch: the GAN only


def test_phase_follows_a_time_budget():
    # 100 epochs would put the encoder at epoch 70, but the minutes run out first: the engine's
    # progress (minutes spent / trainer.max_minutes) switches it once 70 % of them are gone
    m = tiny(encoder_fraction=0.3)
    m.max_epochs = 100
    phases = []
    for e in range(5):
        m.epoch, m.progress = e, 0.2 * e
        phases.append(m.phase)
    assert phases == ["gan"] * 4 + ["encoder"]
    m.epoch, m.progress = 1, 0.1
    assert m.phase == "gan"
    m = tiny(encoder_fraction=0.0)
    m.max_epochs, m.epoch, m.progress = 100, 4, 0.99
    assert m.phase == "gan"  # no encoder share, no encoder phase


def test_phase_by_wall_time(monkeypatch):
    import medgen.models.anogan.model as mod

    clock = [100.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock[0])
    m = tiny(gan_minutes=1.0)
    m.max_epochs = 50
    phases = []
    for e in range(5):
        m.epoch = e
        m.on_epoch_start(e)
        phases.append(m.phase)
        clock[0] += 25.0  # 25 s per epoch: the 3rd epoch starts at 50 s, the 4th at 75 s
    assert phases == ["gan"] * 3 + ["encoder"] * 2
    assert m.extra_state()["encoder_from_epoch"] == 3


def test_wgan_gp_critic_steps_per_generator_step():
    m = tiny(n_critic=3)
    m.setup_optimizers()
    x = {"image": torch.rand(2, 1, 8, 8, 8) * 2 - 1}
    g0 = [p.detach().clone() for p in m.generator.parameters()]
    d0 = [p.detach().clone() for p in m.discriminator.parameters()]
    out = m.training_step(x, 0)
    assert {"d_loss", "gp", "wasserstein"} <= set(out) and "g_loss" not in out
    assert any(not torch.equal(a, b) for a, b in zip(d0, m.discriminator.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()))  # critic only
    m.training_step(x, 1)
    out = m.training_step(x, 2)  # third critic step -> one generator step
    assert math.isfinite(out["g_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()))


def test_dcgan_updates_both_every_step():
    m = tiny(gan="dcgan")
    m.setup_optimizers()
    g0 = [p.detach().clone() for p in m.generator.parameters()]
    out = m.training_step({"image": torch.rand(2, 1, 8, 8, 8) * 2 - 1}, 0)
    assert {"d_loss", "g_loss"} <= set(out) and "gp" not in out
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()))


def test_encoder_training_lowers_izif_loss_with_generator_frozen():
    m = tiny()
    m.setup_optimizers()
    m.optimizers["E"] = torch.optim.Adam(m.encoder.parameters(), 3e-3)  # fast for the test
    m.max_epochs, m.epoch = 2, 1
    assert m.phase == "encoder"
    torch.manual_seed(1)
    with torch.no_grad():  # targets the generator can produce: G(z*) for some z*
        m.generator.eval()
        batch = {"image": m.generator(torch.randn(4, 8))}
    g0 = [p.detach().clone() for p in m.generator.parameters()]
    d0 = [p.detach().clone() for p in m.discriminator.parameters()]
    m.train()
    losses = [m.training_step(batch, i)["izif_loss"] for i in range(40)]
    assert losses[-1] < 0.5 * losses[0]
    assert m.encoder_steps == 40
    assert all(torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(d0, m.discriminator.parameters()))
    assert not m.generator.training  # BatchNorm statistics frozen too


def test_latent_search_lowers_its_loss():
    m = tiny()
    m.eval()
    with torch.no_grad():
        target = m.generator(torch.randn(3, 8))
    g0 = [p.detach().clone() for p in m.generator.parameters()]
    z, history = scoring.latent_search(m, target, steps=30, lr=0.1)
    assert len(history) == 30 and z.shape == (3, 8)
    assert history[-1] < 0.7 * history[0]
    assert all(torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()))  # G untouched
    assert all(p.requires_grad for p in m.generator.parameters())  # and unfrozen afterwards


def test_patch_grid_covers_volume_and_follows_mask():
    windows = scoring.patch_grid((20, 16, 9), (8, 8, 8), overlap=0.5)
    cover = torch.zeros(20, 16, 9)
    for sl in windows:
        cover[sl] += 1
    assert cover.min() >= 1 and all(s.stop <= n for sl in windows for s, n in zip(sl, (20, 16, 9)))
    mask = torch.zeros(20, 16, 9, dtype=torch.bool)
    mask[:4, :4, :4] = True
    masked = scoring.patch_grid((20, 16, 9), (8, 8, 8), 0.5, mask)
    assert 0 < len(masked) < len(windows) and all(mask[sl].any() for sl in masked)


def test_map_is_high_inside_an_inserted_lesion():
    """Residual map: a bright blob the model never saw stands out; the scan score rises."""
    m = tiny()
    normal = smooth_volume()
    lesion = blob(radius=3.0)
    abnormal = normal.clone()
    abnormal[0][lesion] = 0.95
    mask = torch.ones(24, 24, 24, dtype=torch.bool)
    s_norm, map_norm, _ = scoring.score_tensor(m, normal, mask)
    s_ab, map_ab, details = scoring.score_tensor(m, abnormal, mask)
    assert map_ab.shape == (1, 24, 24, 24) and details["patches"] == 5**3  # 8³ patches, stride 4
    inside, outside = map_ab[0][lesion].mean(), map_ab[0][~lesion].mean()
    assert inside > 2.0 * outside
    assert s_ab > s_norm
    # search mode gives a map of the same shape, also high in the lesion
    m.search_steps = 5
    _, map_s, _ = scoring.score_tensor(m, abnormal, mask, mode="search")
    assert map_s.shape == map_ab.shape and map_s[0][lesion].mean() > map_s[0][~lesion].mean()


def test_volume_smaller_than_patch_is_padded():
    m = tiny(patch=(16, 16, 16))
    out = scoring.anomaly_map(m, torch.zeros(1, 10, 20, 6), None, tile_everywhere=True)
    assert out["map"].shape == (1, 10, 20, 6) and out["recon"].shape == (1, 10, 20, 6)


def test_scan_score_is_top_percent_mean():
    amap = torch.zeros(1, 10, 10, 10)
    amap[0, 0, 0, :5] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    mask = torch.ones(10, 10, 10, dtype=torch.bool)
    # 0.5 % of 1000 voxels = 5 voxels: mean of 5,4,3,2,1
    assert scoring.scan_score(amap, mask, top_percent=0.5, sigma=0) == pytest.approx(3.0)
    mask[0, 0, 0] = False  # outside the mask does not count
    assert scoring.scan_score(amap, mask, top_percent=0.2, sigma=0) == pytest.approx(3.5)


def test_threshold_calibration_and_checkpoint_state():
    scores = list(np.linspace(0.0, 1.0, 101))
    assert scoring.calibrate_threshold(scores, 95) == pytest.approx(0.95)
    assert scoring.calibrate_threshold(scores + [float("nan")], 99) == pytest.approx(0.99)
    with pytest.raises(ValueError):
        scoring.calibrate_threshold([], 99)
    assert scoring.flag(0.96, 0.95) is True and scoring.flag(0.5, 0.95) is False
    assert scoring.flag(0.5, None) is None

    m = tiny(calibration_percentile=50.0)
    # held-out normal subjects seen in validation, scored with each polarity
    m.val_scores = {"both": {"a": 1.0, "b": 2.0, "c": 3.0}, "dark": {"a": 3.0, "b": 4.0, "c": 5.0}}
    state = m.extra_state()
    assert state["thresholds"]["encoder"] == pytest.approx(2.0)
    assert state["thresholds"]["encoder:dark"] == pytest.approx(4.0)
    other = tiny()
    other.load_extra_state(state)
    assert other.threshold == pytest.approx(2.0)
    assert other.threshold_for("encoder", "dark") == pytest.approx(4.0)
    assert other.threshold_for("encoder", "bright") is None
    other.calibrate([10.0, 20.0], percentile=100)  # explicit calibration wins over validation
    assert other.extra_state()["thresholds"]["encoder"] == pytest.approx(20.0)
    # the dark one is still validation-calibrated, now at this model's 99th percentile: 3 + 0.99 * 2
    assert other.extra_state()["thresholds"]["encoder:dark"] == pytest.approx(4.98)
    assert other.thresholds.get("search") is None
    legacy = tiny()  # a run saved before polarities kept one flat dict: the absolute residual's
    legacy.load_extra_state({"val_scores": {"a": 1.0, "b": 2.0}, "thresholds": {"encoder": 1.5}})
    assert legacy.val_scores == {"both": {"a": 1.0, "b": 2.0}} and legacy.threshold == pytest.approx(1.5)


def test_map_is_zero_outside_the_mask():
    m = tiny()
    x = smooth_volume(16)
    mask = torch.zeros(16, 16, 16, dtype=torch.bool)
    mask[4:12, 4:12, 4:12] = True
    _, amap, _ = scoring.score_tensor(m, x, mask)
    assert float(amap[0][~mask].abs().max()) == 0.0 and float(amap[0][mask].max()) > 0


class _Healthy(torch.nn.Module):
    """A generator that always reconstructs the healthy tissue value (0.5), whatever z."""

    latent_dim = 8

    def forward(self, z):
        return torch.full((z.shape[0], 1, 8, 8, 8), 0.5)


def test_a_dark_blob_scores_under_dark_polarity_and_not_under_bright():
    m = tiny(polarity="both")
    m.generator = _Healthy()
    normal = torch.full((1, 24, 24, 24), 0.5)
    lesion = blob(24, radius=3.0)
    dark = normal.clone()
    dark[0][lesion] = -0.5  # a T1 black hole: darker than the white matter around it
    bright = normal.clone()
    bright[0][lesion] = 1.0
    mask = torch.ones(24, 24, 24, dtype=torch.bool)
    s = {(name, pol): scoring.score_tensor(m, vol, mask, polarity=pol)[0]
         for name, vol in (("normal", normal), ("dark", dark), ("bright", bright)) for pol in scoring.POLARITIES}
    assert s[("dark", "dark")] > 0.5 and s[("dark", "bright")] == pytest.approx(s[("normal", "bright")], abs=1e-6)
    assert s[("bright", "bright")] > 0.2 and s[("bright", "dark")] == pytest.approx(s[("normal", "dark")], abs=1e-6)
    assert s[("dark", "both")] > s[("normal", "both")]
    _, dark_map, _ = scoring.score_tensor(m, dark, mask, polarity="dark")
    assert float(dark_map[0][lesion].min()) > 0.9 and float(dark_map[0][~lesion].max()) < 0.2
    with pytest.raises(ConfigError, match="polarity"):
        tiny(polarity="darker")


def test_zscore_baseline_on_a_hand_made_volume():
    a = torch.tensor([[[[1.0, 3.0]]]])  # (C=1, 1, 1, 2)
    b = torch.tensor([[[[5.0, 7.0]]]])
    mask = torch.ones(1, 1, 2, dtype=torch.bool)
    mean, std = scoring.tissue_stats([a, b], [mask, mask])
    assert mean == pytest.approx(4.0) and std == pytest.approx(np.std([1, 3, 5, 7], ddof=1))
    x = torch.tensor([[[[4.0 + 2 * std, 4.0 - std]]]])
    torch.testing.assert_close(scoring.zscore_map(x, (mean, std), "both")[0, 0, 0], torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(scoring.zscore_map(x, (mean, std), "bright")[0, 0, 0], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(scoring.zscore_map(x, (mean, std), "dark")[0, 0, 0], torch.tensor([0.0, 1.0]))


def test_position_maps_span_the_region_box():
    from medgen.transforms.spatial import position_maps

    region = torch.zeros(10, 6, 4, dtype=torch.bool)
    region[2:7, 1:4, 0:4] = True  # box x 2..6, y 1..3, z 0..3
    c = position_maps(region)
    assert c.shape == (3, 10, 6, 4)
    assert float(c[0, 2, 0, 0]) == -1.0 and float(c[0, 6, 0, 0]) == 1.0 and float(c[0, 4, 5, 3]) == 0.0
    assert float(c[1, 0, 1, 0]) == -1.0 and float(c[1, 0, 3, 0]) == 1.0 and float(c[1, 0, 5, 0]) == pytest.approx(3.0)
    assert float(c[2, 9, 5, 0]) == -1.0 and float(c[2, 0, 0, 3]) == 1.0


def test_a_model_that_reads_positions_trains_and_scores():
    from medgen.transforms.spatial import position_maps

    m = tiny(position_channels=3, n_critic=1)
    assert m.discriminator.net[0].in_channels == 4 and m.encoder.net[0].in_channels == 4
    assert m.generator.project.in_features == 8 + 3
    opts = m.configure_optimizers()
    m.optimizer_step = lambda name, loss: (opts[name].zero_grad(), loss.backward(), opts[name].step())
    x = torch.rand(2, 1, 8, 8, 8) * 2 - 1
    coords = torch.rand(2, 3, 8, 8, 8) * 2 - 1
    out = m.gan_step(x, coords)
    assert math.isfinite(out["d_loss"]) and math.isfinite(out["g_loss"])
    out = m.encoder_step(x, coords)
    assert math.isfinite(out["izif_loss"])
    with pytest.raises(ValueError, match="coordinate maps"):
        m.gan_step(x, None)
    vol = smooth_volume(16)
    mask = torch.ones(16, 16, 16, dtype=torch.bool)
    score, amap, details = scoring.score_tensor(m, vol, mask)  # positions from the mask's box
    assert math.isfinite(score) and amap.shape == (1, 16, 16, 16)
    score2, _, _ = scoring.score_tensor(m, vol, mask, coords=position_maps(mask))
    assert score2 == pytest.approx(score)
    # the patch's position matters to the reconstruction: the same patch elsewhere differs
    p = vol[None, :, :8, :8, :8]
    a = m.generate(m.encode(p, coords[:1]), coords[:1])
    b = m.generate(m.encode(p, -coords[:1]), -coords[:1])
    assert float((a - b).detach().abs().max()) > 1e-4
