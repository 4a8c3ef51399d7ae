"""pet-cgan: the model's steps on tiny tensors, then the CLI end to end on tiny phantoms."""

from __future__ import annotations

import pytest
import torch

from medgen.errors import ConfigError
from medgen.models.pet_cgan import PetCGAN

TINY = dict(channels=(4, 8), d_channels=4, d_layers=2)


def _batch(dims: int = 3, size: int = 16, n: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    target = torch.rand((n, 1) + (size,) * dims) * 2 - 1
    return {"source": target + 0.3 * torch.randn_like(target), "target": target}


def _snapshot(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _changed(net: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(net.parameters(), before))


@pytest.mark.parametrize("dims", [2, 3])
def test_one_training_step_changes_g_and_d(dims):
    torch.manual_seed(0)
    model = PetCGAN(spatial_dims=dims, **TINY)
    g0, d0 = _snapshot(model.G), _snapshot(model.D)
    logs = model.training_step(_batch(dims), step=0)
    assert set(logs) == {"d_loss", "g_loss", "g_l1", "g_adv"}
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert logs["g_loss"] == pytest.approx(logs["g_adv"] + 300.0 * logs["g_l1"], rel=1e-5)
    assert _changed(model.G, g0) and _changed(model.D, d0)
    assert set(model.optimizers) == {"G", "D"}
    opt = model.optimizers["G"]
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.5, 0.999)


def test_l1_only_ablation_has_no_discriminator_and_learns():
    torch.manual_seed(0)
    model = PetCGAN(adversarial=False, lambda_l1=1.0, lr=1e-3, **TINY)
    assert model.D is None
    batch = _batch()
    first = model.training_step(batch, 0)
    assert set(first) == {"g_l1", "g_loss"} and set(model.optimizers) == {"G"}
    for step in range(1, 40):
        last = model.training_step(batch, step)
    assert last["g_l1"] < 0.8 * first["g_l1"]  # fits a fixed tiny batch


def test_mse_content_loss_is_logged_weighted_and_learns():
    torch.manual_seed(0)
    model = PetCGAN(content_loss="mse", lambda_l1=50.0, lr=1e-3, **TINY)
    batch = _batch()
    first = model.training_step(batch, 0)
    assert set(first) == {"d_loss", "g_loss", "g_mse", "g_adv"}
    assert first["g_loss"] == pytest.approx(first["g_adv"] + 50.0 * first["g_mse"], rel=1e-5)
    for step in range(1, 40):
        last = model.training_step(batch, step)
    assert last["g_mse"] < 0.8 * first["g_mse"]


def test_l1_warmup_leaves_d_out_until_its_share_of_the_budget_is_spent():
    torch.manual_seed(0)
    model = PetCGAN(l1_warmup=0.5, **TINY)
    batch = _batch()
    g0, d0 = _snapshot(model.G), _snapshot(model.D)
    model.progress = 0.49  # the engine sets this at each epoch start
    logs = model.training_step(batch, 0)
    assert set(logs) == {"g_l1", "g_loss"} and logs["g_loss"] == pytest.approx(300.0 * logs["g_l1"], rel=1e-5)
    assert _changed(model.G, g0) and not _changed(model.D, d0)
    assert not model.may_be_best()  # pure-L1 weights are not the c-GAN's best
    model.progress = 0.5
    assert model.may_be_best()
    logs = model.training_step(batch, 1)
    assert set(logs) == {"d_loss", "g_loss", "g_l1", "g_adv"} and _changed(model.D, d0)
    l1_only = PetCGAN(adversarial=False, l1_warmup=0.5, **TINY)  # nothing to delay: every epoch counts
    assert l1_only.may_be_best() and set(l1_only.training_step(batch, 0)) == {"g_l1", "g_loss"}


def test_refine_stage_trains_on_the_first_estimate():
    torch.manual_seed(0)
    model = PetCGAN(refine=True, **TINY)
    g2 = _snapshot(model.G2)
    logs = model.training_step(_batch(), 0)
    assert {"g2_l1", "g2_adv", "g2_loss", "d2_loss"} <= set(logs)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert _changed(model.G2, g2)
    assert set(model.optimizers) == {"G", "D", "G2", "D2"}
    net = model.exported_network()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), model.G2(model.G(x)))


@pytest.mark.parametrize("dims,shape", [(3, (20, 24, 18)), (2, (40, 28))])
def test_sliding_window_inference_keeps_any_shape(dims, shape):
    model = PetCGAN(spatial_dims=dims, **TINY).eval()
    model.roi_size = (16,) * dims
    x = torch.rand((1, 1) + shape) * 2 - 1
    out = model.validation_step({"source": x, "target": x})
    assert out["prediction"].shape == x.shape
    assert torch.isfinite(out["prediction"]).all()
    assert out["input"] is x


def test_inference_runs_only_around_the_body():
    """A head in a whole-body field of view: the windows cover the body's box grown by one
    window; further out the estimate is the input (air)."""
    torch.manual_seed(0)
    model = PetCGAN(flip_ensemble=False, **TINY).eval()
    model.roi_size = (16, 16, 16)
    x = torch.full((1, 1, 96, 32, 32), -1.0)
    x[0, 0, 4:20, 8:24, 8:24] = 0.2 + 0.1 * torch.rand(16, 16, 16)
    out = model.infer(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, :, 36:], x[:, :, 36:])  # a window or more from the body
    with torch.no_grad():
        torch.testing.assert_close(out[:, :, :36], model._infer_windows(x[:, :, :36]))
    assert not torch.equal(out[:, :, :36], x[:, :, :36])


def test_flip_ensemble_at_inference_not_in_periodic_validation():
    torch.manual_seed(0)
    model = PetCGAN(flip_ensemble=True, **TINY).eval()
    model.roi_size = (16, 16, 16)
    x = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    net = model.exported_network()
    with torch.no_grad():
        flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
        expected = torch.stack([torch.flip(net(torch.flip(x, f)), f) if f else net(x) for f in flips]).mean(0)
    assert torch.allclose(model.infer(x), expected, atol=1e-5)
    model.periodic_validation = True  # the engine's between-epoch validation: one pass
    with torch.no_grad():
        assert torch.allclose(model.infer(x), net(x), atol=1e-5)
    assert not torch.allclose(expected, net(x), atol=1e-3)


def test_inference_progress_bar_counts_every_window_batch_of_every_flip(monkeypatch):
    import medgen.models.paired as module  # the shared sliding-window inference

    bars = []

    class Recorded(module.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(module, "tqdm", Recorded)
    model = PetCGAN(flip_ensemble=True, sw_batch_size=3, **TINY).eval()
    model.roi_size = (16, 16, 16)
    x = torch.rand(1, 1, 24, 20, 16) * 2 - 1
    model.show_progress = True
    with torch.no_grad():
        model.infer(x)
    # windows at 0 and 8 along 24, 0 and 4 along 20, one along 16: 4 windows = 2 batches of <= 3, x 8 flips
    assert bars[-1].total == 16 and bars[-1].n == 16
    model.show_progress = False  # training's validation and library calls stay quiet
    with torch.no_grad():
        model.infer(x)
    assert bars[-1].disable


def test_g_and_d_share_one_learning_rate():
    opts = PetCGAN(refine=True, lr=1e-3, **TINY).setup_optimizers()
    assert {n: o.defaults["lr"] for n, o in opts.items()} == {"G": 1e-3, "D": 1e-3, "G2": 1e-3, "D2": 1e-3}
    with pytest.raises(ConfigError, match="model.lr"):
        PetCGAN(lr=0.0, **TINY)


def test_a_run_saved_before_the_knobs_were_removed_still_builds():
    from medgen.engine.build import _construct

    old = {**TINY, "noise_channels": 0, "samples": 1, "input_skip": False, "d_lr": None}
    assert isinstance(_construct("model", PetCGAN, old), PetCGAN)
    with pytest.raises(ConfigError, match="noise_channels was removed"):
        _construct("model", PetCGAN, {**TINY, "noise_channels": 1})
    with pytest.raises(ConfigError, match="unexpected keyword"):
        _construct("model", PetCGAN, {**TINY, "no_such_knob": 1})


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="gan_loss"):
        PetCGAN(gan_loss="nope", **TINY)
    with pytest.raises(ConfigError, match="lambda_l1"):
        PetCGAN(adversarial=False, lambda_l1=0.0, **TINY)
    with pytest.raises(ConfigError, match="content_loss"):
        PetCGAN(content_loss="l3", **TINY)
    with pytest.raises(ConfigError, match="l1_warmup"):
        PetCGAN(l1_warmup=1.0, **TINY)  # D would never join
    model = PetCGAN(**TINY)
    model.roi_size = (18, 18, 18)  # divisor is 4 for two levels
    with pytest.raises(ConfigError, match="patch_size"):
        model.infer(torch.zeros(1, 1, 16, 16, 16))


# --- CLI end to end on tiny phantoms ------------------------------------------------------------
from pathlib import Path  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pet-cgan.yaml"
TINY_OVERRIDES = [
    "model.channels=[4,8]",
    "model.d_channels=4",
    "model.d_layers=2",
    "data.patch_size=[16,16,16]",
    "data.patches_per_volume=2",
    "data.batch_size=2",
    "data.val_fraction=0.34",
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.val_images=false",
    "tracking.log_model=false",
    "tracking.register_model=false",
]


def _write_pair(folder: Path, low, full, affine_low=None, affine_full=None):
    import nibabel as nib
    import numpy as np

    folder.mkdir(parents=True)
    eye = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(low.astype("float32"), eye if affine_low is None else affine_low), folder / "low_dose.nii.gz")
    nib.save(nib.Nifti1Image(full.astype("float32"), eye if affine_full is None else affine_full), folder / "full_dose.nii.gz")


@pytest.fixture
def tiny_pet(tmp_path):
    """Three 32^3 phantom subjects (low/full dose in kBq/ml, the phantoms' own geometry)."""
    import nibabel as nib
    import numpy as np

    from medgen.data.phantoms import make_subject

    root = tmp_path / "pet"
    for i in range(3):
        s = make_subject(seed=0, index=i, size=32)
        affine = s["affine"].copy()
        affine[:3, 3] += [1.5, -2.0, 3.0]  # an off-centre origin must survive inference
        _write_pair(root / f"sub-{i}", s["low_dose"], s["full_dose"], affine, affine)
    assert nib.load(root / "sub-0" / "low_dose.nii.gz").shape == (32, 32, 32)
    return root


def _metric_history(uri: str, run_id: str, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    return [m.value for m in MlflowClient(uri).get_metric_history(run_id, key)]


@pytest.mark.slow
def test_cli_train_two_epochs_then_infer_in_source_geometry(tiny_pet, tmp_path, monkeypatch, capsys):
    import math

    import nibabel as nib
    import numpy as np

    from medgen.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    argv = ["train", "pet-cgan", "--config", str(CONFIG), f"data.root={tiny_pet}", "trainer.max_epochs=2",
            "trainer.fid_slices=2", *TINY_OVERRIDES]
    assert main(argv) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    for key in ("val/psnr", "val/ssim", "val/nmse", "val/fid", "val/psnr_mask", "val/lowdose_psnr_mask",
                "val/lowdose_psnr", "val/lowdose_ssim", "val/lowdose_nmse",
                "train/g_l1", "train/g_adv", "train/d_loss"):
        values = _metric_history(uri, run_id, key)
        # one value per epoch (the first and the last are always validated); D's losses from
        # epoch 2 only (the config's l1_warmup is half the run); FID at the final validation only
        assert len(values) == (1 if key in ("train/g_adv", "train/d_loss", "val/fid") else 2), key
        assert all(math.isfinite(v) for v in values), key
    assert _metric_history(uri, run_id, "val/lowdose_psnr")[0] > 10  # low dose vs full dose, [-1, 1] range

    src = tiny_pet / "sub-0" / "low_dose.nii.gz"
    out_dir = tmp_path / "out"
    assert main(["infer", "pet-cgan", "--run", run_id, "--input", str(src), "--output", str(out_dir)]) == 0
    outputs = sorted(out_dir.glob("*.nii*"))
    assert len(outputs) == 1
    ref, est = nib.load(src), nib.load(outputs[0])
    assert est.shape == ref.shape
    assert np.allclose(est.affine, ref.affine, atol=1e-4)
    ref_data, est_data = ref.get_fdata(), est.get_fdata()
    head = ref_data > 0.2 * ref_data.max()
    ratio = est_data[head].mean() / ref_data[head].mean()
    assert 0.3 < ratio < 3.0  # kBq/ml, not model space [-1, 1]
    assert est_data.min() > -1e-3  # activity is never negative in the input's units

    # data.spacing=auto: the run keeps the training grid, and a coarser scan is resampled to it
    # for the model and comes back on its own grid
    from medgen.engine import load_task

    _, _, config, _ = load_task(run_id, tracking_uri=uri, device="cpu")
    assert config.data["spacing"] == pytest.approx([220 / 32] * 3)
    coarse_affine = ref.affine.copy()
    coarse_affine[:3, :3] *= 2
    coarse = tmp_path / "coarse" / "low_dose.nii.gz"
    coarse.parent.mkdir()
    nib.save(nib.Nifti1Image(ref_data[::2, ::2, ::2].astype(np.float32), coarse_affine), str(coarse))
    assert main(["infer", "pet-cgan", "--run", run_id, "--input", str(coarse), "--output", str(tmp_path / "out2")]) == 0
    est2 = nib.load(next((tmp_path / "out2").glob("*.nii*")))
    assert est2.shape == (16, 16, 16) and np.allclose(est2.affine, coarse_affine, atol=1e-4)

    # a lesion hotter than anything the model was trained on keeps its measured activity
    hot_data = ref_data.astype(np.float32).copy()
    hot_data[15:17, 15:17, 15:17] = 20 * ref_data.max()
    hot = tmp_path / "hot" / "low_dose.nii.gz"
    hot.parent.mkdir()
    nib.save(nib.Nifti1Image(hot_data, ref.affine), str(hot))
    assert main(["infer", "pet-cgan", "--run", run_id, "--input", str(hot), "--output", str(tmp_path / "out3")]) == 0
    est3 = nib.load(next((tmp_path / "out3").glob("*.nii*"))).get_fdata()
    np.testing.assert_allclose(est3[15:17, 15:17, 15:17], hot_data[15:17, 15:17, 15:17], rtol=1e-4)


def test_cli_rejects_a_pair_with_different_shapes(tmp_path, monkeypatch, capsys):
    import numpy as np

    from medgen.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    root = tmp_path / "bad"
    rng = np.random.default_rng(0)
    _write_pair(root / "sub-good", rng.random((16, 16, 16)), rng.random((16, 16, 16)))
    _write_pair(root / "sub-odd", rng.random((16, 16, 16)), rng.random((16, 16, 12)))
    _write_pair(root / "sub-fine", rng.random((16, 16, 16)), rng.random((16, 16, 16)))
    code = main(["train", "pet-cgan", "--config", str(CONFIG), f"data.root={root}", "trainer.max_epochs=1",
                 "trainer.fid_slices=0", *TINY_OVERRIDES])
    # MLflow's own INFO logging (a fresh sqlite store announces its tables) is not medgen output
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if " INFO mlflow." not in ln]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("medgen train: error:")
    assert "sub-odd" in lines[0] and "shape" in lines[0] and "Traceback" not in lines[0]


def test_simulate_low_dose_pipeline_writes_the_paired_layout(tmp_path):
    import importlib.util

    import nibabel as nib
    import numpy as np

    from medgen.data.phantoms import make_subject

    spec = importlib.util.spec_from_file_location(
        "simulate_low_dose", Path(__file__).resolve().parents[2] / "pipelines" / "simulate_low_dose.py"
    )
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    src = tmp_path / "full"
    src.mkdir()
    s = make_subject(seed=0, index=0, size=16)
    affine = s["affine"].copy()
    affine[:3, 3] += 7.0
    nib.save(nib.Nifti1Image(s["noise_free"], affine), src / "sub-a.nii.gz")
    assert pipeline.main([str(src), str(tmp_path / "out"), "--counts", "2e4", "--dose-fraction", "0.1"]) == 0
    full = nib.load(tmp_path / "out" / "sub-a" / "full_dose.nii.gz")
    low = nib.load(tmp_path / "out" / "sub-a" / "low_dose.nii.gz")
    assert low.shape == full.shape == (16, 16, 16) and np.allclose(low.affine, affine)
    f, lo = full.get_fdata(), low.get_fdata()
    assert abs(lo.mean() - f.mean()) < 0.1 * f.mean()  # same units and mean activity
    assert np.abs(lo - f).mean() > 0.05 * f.mean()  # but noisier
    assert pipeline.main([str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2


def test_a_discriminator_deeper_than_the_patch_is_refused_before_training(tiny_pet, tmp_path, monkeypatch, capsys):
    from medgen.cli import main

    with pytest.raises(ConfigError, match="at least 24"):
        PetCGAN(channels=(4, 8), d_layers=3).check_patch((16, 16, 16))
    PetCGAN(channels=(4, 8), d_layers=3).check_patch((24, 24, 24))  # fits
    with pytest.raises(ConfigError, match="multiples of 8"):
        PetCGAN(channels=(4, 8, 16), d_layers=1).check_patch((20, 20, 20))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = main(["train", "pet-cgan", "--config", str(CONFIG), f"data.root={tiny_pet}", "trainer.max_epochs=1",
                 "model.channels=[4,8]", "model.d_layers=3", "data.patch_size=[16,16,16]"])
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if " INFO mlflow." not in ln]
    assert code == 2 and len(lines) == 1 and "model.d_layers" in lines[0] and "[16, 16, 16]" in lines[0], lines
