"""eagan: the variants' steps and the edge-weight ramp on tiny tensors, then the CLI end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from medgen.errors import ConfigError
from medgen.losses.adversarial import AdversarialLoss
from medgen.models.eagan import EaGAN

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "eagan-cpu.yaml"
TINY = dict(channels=(4, 8), d_channels=4, d_layers=1, dropout=0.0)


def _batch(dims: int = 3, size: int = 16, n: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    target = torch.rand((n, 1) + (size,) * dims) * 2 - 1
    return {"source": -target + 0.1 * torch.randn_like(target), "target": target}  # a contrast inversion


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("variant, d_channels_in", [("pix2pix", 2), ("gea", 2), ("dea", 3)])
def test_each_variant_trains_one_step_and_d_sees_its_channels(variant, d_channels_in, dims):
    torch.manual_seed(0)
    model = EaGAN(spatial_dims=dims, variant=variant, edge_ramp_epochs=0, **TINY)
    seen = []
    model.D.register_forward_pre_hook(lambda module, args: seen.append(sum(a.shape[1] for a in args)))
    g0 = [p.detach().clone() for p in model.G.parameters()]
    logs = model.training_step(_batch(dims), step=0)
    assert seen and set(seen) == {d_channels_in}
    assert all(math.isfinite(v) for v in logs.values())
    expected = {"d_loss", "g_loss", "g_l1", "g_adv", "edge_weight"} | ({"g_edge_l1"} if variant != "pix2pix" else set())
    assert set(logs) == expected
    edge = logs.get("g_edge_l1", 0.0)
    assert logs["g_loss"] == pytest.approx(logs["g_adv"] + 300.0 * logs["g_l1"] + edge, rel=1e-5)
    assert logs["edge_weight"] == (0.0 if variant == "pix2pix" else 100.0)
    assert any(not torch.equal(p, q) for p, q in zip(model.G.parameters(), g0))


@pytest.mark.parametrize("variant", ["pix2pix", "dea"])
def test_the_generator_gets_the_discriminators_gradient(variant):
    # The reference routes G's D input through the image pool (rebuilt from .data), so its G
    # gets no adversarial gradient; here the adversarial term alone must reach G.
    torch.manual_seed(0)
    model = EaGAN(variant=variant, **TINY)
    x = _batch()["source"]
    fake = model.G(x)
    model.adv_loss.g_loss(model.D(*model.d_inputs(x, fake))).backward()
    grads = [p.grad for p in model.G.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_edge_weight_ramps_over_epochs_and_over_a_time_budget():
    model = EaGAN(variant="dea", **TINY)
    model.max_epochs = 150
    for epoch_1_based, expected in ((1, 0.0), (2, 5.0), (10, 45.0), (21, 100.0), (40, 100.0)):
        model.epoch = epoch_1_based - 1
        model.progress = model.epoch / 150
        assert model.edge_weight == pytest.approx(expected), epoch_1_based
    model.max_minutes = 20.0  # under minutes: the same 20 of 150 epochs' share of the run
    for progress, expected in ((0.0, 0.0), (1 / 150, 5.0), (10 / 150, 50.0), (20 / 150, 100.0), (0.6, 100.0)):
        model.epoch, model.progress = 3000, progress  # many short epochs: the clock governs
        assert model.edge_weight == pytest.approx(expected), progress
    assert EaGAN(variant="pix2pix", **TINY).edge_weight == 0.0
    assert EaGAN(variant="gea", edge_ramp_epochs=0, **TINY).edge_weight == 100.0


def test_label_smoothing_draws_d_targets_in_the_reference_ranges_and_leaves_g_at_one():
    torch.manual_seed(0)
    loss = AdversarialLoss("lsgan", smooth_labels=True)
    out = torch.zeros(4)
    real = [float(loss._target(out, True, False)[0]) for _ in range(200)]
    fake = [float(loss._target(out, False, False)[0]) for _ in range(200)]
    assert 0.7 <= min(real) and max(real) <= 1.2 and max(real) - min(real) > 0.3
    assert 0.0 <= min(fake) and max(fake) <= 0.3 and max(fake) - min(fake) > 0.2
    assert loss.g_loss(torch.ones(4)) == 0.0  # G's target is exactly 1
    with pytest.raises(ValueError):
        AdversarialLoss("wgan-gp", smooth_labels=True)


def test_dea_learns_a_contrast_inversion_on_a_tiny_problem():
    torch.manual_seed(0)
    model = EaGAN(variant="dea", lr=2e-3, edge_ramp_epochs=0, **TINY)
    batch = _batch()
    first = model.training_step(batch, 0)
    for step in range(1, 60):
        last = model.training_step(batch, step)
    assert last["g_l1"] < 0.8 * first["g_l1"] and last["g_edge_l1"] < first["g_edge_l1"]


def test_bad_settings_are_config_errors():
    for bad in ({"variant": "sobel"}, {"lambda_edge": -1}, {"edge_ramp_epochs": -2}, {"dropout": 1.0}):
        with pytest.raises(ConfigError):
            EaGAN(**{**TINY, **bad})


def test_validation_reports_edge_maps_of_prediction_and_target():
    model = EaGAN(**TINY)
    model.roi_size = (16, 16, 16)
    model.eval()
    b = _batch(n=1, size=24)
    out = model.validation_step({"source": b["source"], "target": b["target"]})
    assert set(EaGAN.metric_pairs) == {"", "edge_"}
    assert out["prediction_edges"].shape == out["target_edges"].shape == b["target"].shape
    assert torch.allclose(out["target_edges"], model.edges(b["target"]))


TINY_OVERRIDES = [
    "model.channels=[4,8]", "model.d_channels=4", "model.d_layers=1", "data.patch_size=[16,16,16]",
    "data.patches_per_volume=2", "data.batch_size=2", "data.val_fraction=0.34", "trainer.device=cpu",
    "trainer.progress=false", "trainer.val_images=false", "tracking.log_model=false",
    "tracking.register_model=false", "trainer.max_minutes=null",
]


@pytest.fixture
def tiny_mr(tmp_path):
    """Three 32^3 phantom subjects with registered T1, T2 and a brain mask, off-centre origin."""
    import nibabel as nib

    from medgen.data.phantoms import make_subject

    root = tmp_path / "mr"
    for i in range(3):
        s = make_subject(seed=0, index=i, size=32)
        affine = s["affine"].copy()
        affine[:3, 3] += [1.5, -2.0, 3.0]
        (root / f"sub-{i}").mkdir(parents=True)
        for key in ("t1", "t2"):
            nib.save(nib.Nifti1Image(s[key].astype("float32"), affine), root / f"sub-{i}" / f"{key}.nii.gz")
    return root


def test_cli_train_logs_the_metrics_and_infer_keeps_the_geometry_and_the_t2_scale(tiny_mr, tmp_path, monkeypatch,
                                                                                 capsys):
    import nibabel as nib
    import numpy as np
    from mlflow.tracking import MlflowClient

    from medgen.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    argv = ["train", "eagan", "--config", str(CONFIG), f"data.root={tiny_mr}", "trainer.max_epochs=2",
            "trainer.fid_slices=2", *TINY_OVERRIDES]
    assert main(argv) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    client = MlflowClient(uri)
    for key in ("val/psnr", "val/ssim", "val/nmse", "val/fid", "val/psnr_mask", "val/edge_psnr", "val/edge_psnr_mask",
                "train/g_l1", "train/g_edge_l1", "train/g_adv", "train/d_loss", "train/edge_weight"):
        values = [m.value for m in client.get_metric_history(run_id, key)]
        assert values and all(math.isfinite(v) for v in values), key

    src = tiny_mr / "sub-0" / "t1.nii.gz"
    out_dir = tmp_path / "out"
    assert main(["infer", "eagan", "--run", run_id, "--input", str(src), "--output", str(out_dir)]) == 0
    (written,) = sorted(out_dir.glob("*.nii*"))
    assert written.name == "t1_eagan.nii.gz"
    ref, est = nib.load(src), nib.load(written)
    assert est.shape == ref.shape and np.allclose(est.affine, ref.affine, atol=1e-4)
    # the synthesis is in the training T2s' window, not the T1's scale nor model space
    t2 = [np.asarray(nib.load(tiny_mr / f"sub-{i}" / "t2.nii.gz").dataobj) for i in range(3)]
    t2_top = np.median([np.percentile(v[v > 0.05 * v.max()], 99.5) for v in t2])
    assert 0.2 * t2_top < float(est.get_fdata().max()) < 2.0 * t2_top

    assert main(["evaluate", "eagan", "--run", run_id, "--data", str(tiny_mr)]) == 0
    assert "edge_psnr" in capsys.readouterr().out


def test_cli_names_the_subject_whose_t1_and_t2_are_not_registered(tiny_mr, tmp_path, monkeypatch, capsys):
    import nibabel as nib
    import numpy as np

    from medgen.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    t2 = nib.load(tiny_mr / "sub-1" / "t2.nii.gz")
    moved = t2.affine.copy()
    moved[:3, 3] += [4.0, 0.0, 0.0]
    nib.save(nib.Nifti1Image(np.asarray(t2.dataobj), moved), tiny_mr / "sub-1" / "t2.nii.gz")
    code = main(["train", "eagan", "--config", str(CONFIG), f"data.root={tiny_mr}", "trainer.max_epochs=1",
                 "trainer.fid_slices=0", *TINY_OVERRIDES])
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if " INFO mlflow." not in ln]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("medgen train: error:")
    assert "sub-1" in lines[0] and "4 mm" in lines[0] and "Traceback" not in lines[0]
