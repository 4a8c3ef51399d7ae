"""cyclegan: the networks' shapes, the image pool, the losses on tiny tensors, the HU round trip,
then the CLI end to end on tiny phantoms (both directions, resume, bad input)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medgen.errors import ConfigError
from medgen.models.cyclegan import CycleGAN, ImagePool
from medgen.networks.resnet_generator import ResNetGenerator

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cyclegan-cpu.yaml"
TINY = dict(ngf=4, n_blocks=1, ndf=4, d_layers=1)


def _batch(dims: int = 3, size: int = 16, n: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    coarse = torch.randn((n, 1) + (4,) * dims)
    a = torch.tanh(F.interpolate(coarse, size=(size,) * dims, mode="bilinear" if dims == 2 else "trilinear"))
    return {"A": a, "B": -a}  # smooth blobs; B is A's contrast inversion: a one-to-one mapping to learn


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("padding", ["reflect", "replicate"])
def test_resnet_generator_keeps_the_shape_in_2d_and_3d_and_refuses_sides_not_divisible_by_4(dims, padding):
    g = ResNetGenerator(dims, 1, 1, ngf=4, n_blocks=2, padding=padding)
    y = g(torch.rand((2, 1) + (12,) * dims) * 2 - 1)
    assert y.shape == (2, 1) + (12,) * dims and float(y.detach().abs().max()) <= 1.0  # tanh
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.rand((1, 1) + (10,) * dims))
    # the reference's layout: conv7 -> two stride-2 downs -> blocks -> two ups -> conv7
    convs = [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs[0].kernel_size[0] == 7 and convs[-1].kernel_size[0] == 7
    assert [m.stride[0] for m in convs[1:3]] == [2, 2] and convs[2].out_channels == 16
    assert abs(float(convs[3].weight.std()) - 0.02) < 0.005  # N(0, 0.02)


def test_model_shapes_in_2d_and_3d_and_bad_settings():
    for dims in (2, 3):
        model = CycleGAN(spatial_dims=dims, **TINY)
        model.roi_size = (16,) * dims
        model.eval()
        x = torch.rand((1, 1) + (24,) * dims) * 2 - 1
        for direction in ("AtoB", "BtoA"):
            assert model.infer(x, direction).shape == x.shape
    for bad in ({"padding": "zeros"}, {"lambda_a": -1}, {"pool_size": -1}, {"lr": 0},
                {"in_channels": 2, "lambda_identity": 0.5}):
        with pytest.raises(ConfigError):
            CycleGAN(**{**TINY, **bad})
    with pytest.raises(ConfigError, match="multiples of 4"):
        CycleGAN(**TINY).check_patch((18, 18, 18))


def test_image_pool_stores_until_full_then_swaps_with_probability_one_half_seeded():
    pool = ImagePool(size=3, seed=0)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool) == 3  # filling: returned as they came
    new = torch.arange(100.0, 500.0).view(400, 1, 1, 1)
    out = pool.query(new)
    swapped = out != new  # a stored image came back in place of the new one
    assert 160 < int(swapped.sum()) < 240  # ~ half of 400
    assert set(out[swapped].tolist()) <= set(range(0, 500))  # what came back was stored before
    assert len(pool) == 3 and all(float(i) >= 100 for i in pool.images)  # new ones took the stored ones' places
    again = ImagePool(size=3, seed=0)
    again.query(first)
    assert torch.equal(again.query(new), out)  # seeded: the same draws
    assert torch.equal(ImagePool(size=0).query(first), first)  # no pool
    restored = ImagePool(size=3, seed=1)
    restored.load_state_dict(pool.state_dict())
    probe = torch.rand(20, 1, 1, 1)
    assert torch.equal(restored.query(probe), pool.query(probe))


def test_one_step_logs_the_losses_with_the_papers_weights():
    torch.manual_seed(0)
    model = CycleGAN(**TINY)
    seen = []
    model.D_B.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    logs = model.training_step(_batch(), 0)
    assert all(math.isfinite(v) for v in logs.values())
    g = logs["g_adv_ab"] + logs["g_adv_ba"] + 10 * (logs["g_cycle_a"] + logs["g_cycle_b"]) \
        + 0.5 * 10 * (logs["g_idt_a"] + logs["g_idt_b"])
    assert logs["g_loss"] == pytest.approx(g, rel=1e-5)
    assert len(model.pool_A) == len(model.pool_B) == 2  # the step's fakes went into the pools
    assert seen  # D_B judged G_AB's fakes


def test_the_cycle_loss_falls_on_a_tiny_problem():
    torch.manual_seed(0)
    model = CycleGAN(spatial_dims=2, lr=2e-3, lambda_identity=0.0, **TINY)  # 2D: the same code, 20x cheaper
    batch = _batch(dims=2, size=32)
    logs = [model.training_step(batch, step) for step in range(40)]
    for key in ("g_cycle_a", "g_cycle_b"):  # the last steps' mean: a GAN's losses jitter step to step
        assert sum(log[key] for log in logs[-5:]) / 5 < 0.5 * logs[0][key], key


def test_ct_window_round_trips_to_exact_hu_and_mr_comes_back_in_the_learned_window(tmp_path):
    import numpy as np
    from monai.data import MetaTensor

    from medgen.data.unpaired import UnpairedVolumes

    data = UnpairedVolumes(tmp_path, patch_size=(16, 16, 16), spacing=None)
    hu = torch.tensor(np.random.default_rng(0).integers(-1000, 2001, (16, 16, 16)), dtype=torch.float32)
    volume = MetaTensor(hu, affine=torch.eye(4, dtype=torch.float64))
    x, state = data.preprocess(volume, side="B")
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    back = data.postprocess(x, {**state, "output_params": state["params"]})  # model space -> HU
    assert torch.allclose(back.as_tensor(), hu, atol=1e-3)
    # an MR input translated to CT goes back through the CT window: exact HU
    _, mr_state = data.preprocess(MetaTensor(torch.rand(16, 16, 16) * 800, affine=torch.eye(4, dtype=torch.float64)))
    assert mr_state["output_params"]["low"] == -1000 and mr_state["output_params"]["high"] == 2000
    # a CT translated to MR comes back in the training MRs' learned window
    data.load_state_dict({"windows": {"A": [3.0, 812.0]}})
    _, ct_state = data.preprocess(volume, side="B")
    assert (ct_state["output_params"]["low"], ct_state["output_params"]["high"]) == (3.0, 812.0)


# --- the CLI on tiny phantoms ------------------------------------------------------------------
TINY_OVERRIDES = [
    "model.ngf=4", "model.n_blocks=1", "model.ndf=4", "model.d_layers=1", "data.patch_size=[16,16,16]",
    "model.spatial_dims=3",  # 3D patches (the CPU config's default is slice mode)
    "data.patches_per_volume=2", "data.batch_size=2", "data.val_fraction=0.34", "trainer.device=cpu",
    "trainer.progress=false", "trainer.val_images=false", "tracking.log_model=false",
    "tracking.register_model=false", "trainer.max_minutes=null", "model.sw_overlap=0.0",
]


@pytest.fixture(scope="module")
def tiny_unpaired(tmp_path_factory):
    """Three 32^3 phantom heads: A/<name> T1 and B/<name> CT (HU) on one grid, off-centre origin."""
    import nibabel as nib

    from medgen.data.phantoms import make_subject

    root = tmp_path_factory.mktemp("unpaired")
    for side in ("A", "B"):
        (root / side).mkdir()
    for i in range(3):
        s = make_subject(seed=0, index=i, size=32)
        affine = s["affine"].copy()
        affine[:3, 3] += [1.5, -2.0, 3.0]
        nib.save(nib.Nifti1Image(s["t1"].astype("float32"), affine), root / "A" / f"sub-{i}.nii.gz")
        nib.save(nib.Nifti1Image(s["ct"].astype("float32"), affine), root / "B" / f"sub-{i}.nii.gz")
    return root


@pytest.fixture(scope="module")
def trained(tiny_unpaired, tmp_path_factory):
    """One tiny run through `medgen train` (checkpoint path, run id, its store)."""
    import os

    from medgen.cli import main

    work = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    old = os.getcwd()
    os.chdir(work)
    try:
        argv = ["train", "cyclegan", "--config", str(CONFIG), f"data.root={tiny_unpaired}", "trainer.max_epochs=2",
                "trainer.fid_slices=0", f"tracking.uri={uri}", *TINY_OVERRIDES]
        assert main(argv) == 0
    finally:
        os.chdir(old)
    (ckpt,) = (work / "checkpoints").glob("*/last.pt")
    return ckpt, ckpt.parent.name, uri


def _mr_to_ct(ckpt, mr, out_dir):
    """`medgen infer cyclegan` (AtoB) on `mr`: the output in HU, checked to lie on the MR's grid
    and inside the CT window."""
    import nibabel as nib
    import numpy as np

    from medgen.cli import main

    assert main(["infer", "cyclegan", "--run", str(ckpt), "--input", str(mr), "--output", str(out_dir)]) == 0
    (ct_out,) = sorted(out_dir.glob("*.nii.gz"))
    ref, est = nib.load(mr), nib.load(ct_out)
    assert est.shape == ref.shape and np.allclose(est.affine, ref.affine, atol=1e-4)
    hu = est.get_fdata()
    assert hu.min() >= -1000 - 1e-3 and hu.max() <= 2000 + 1e-3  # inside the CT window, in HU
    return hu


def test_cli_train_logs_both_directions_and_infer_gives_hu_and_mr_units(trained, tiny_unpaired, tmp_path, capsys):
    import nibabel as nib
    import numpy as np
    from mlflow.tracking import MlflowClient

    from medgen.cli import main

    ckpt, run_id, uri = trained
    client = MlflowClient(uri)
    for key in ("val/psnr", "val/psnr_mask", "val/mae_hu", "val/btoa_psnr", "train/g_cycle_a",
                "train/g_adv_ab", "train/d_b_loss"):
        values = [m.value for m in client.get_metric_history(run_id, key)]
        assert values and all(math.isfinite(v) for v in values), key
    saved = torch.load(ckpt, weights_only=True)
    assert saved["config"]["model"]["hu_window_b"] == [-1000.0, 2000.0] and "A" in saved["data"]["windows"]

    mr = tiny_unpaired / "A" / "sub-0.nii.gz"
    hu = _mr_to_ct(ckpt, mr, tmp_path / "ct")
    assert hu.max() - hu.min() > 100  # HU, not model space

    ct = tiny_unpaired / "B" / "sub-0.nii.gz"
    assert main(["infer", "cyclegan", "--run", str(ckpt), "--input", str(ct), "--output", str(tmp_path / "mr"),
                 "--direction", "BtoA"]) == 0
    (mr_out,) = sorted((tmp_path / "mr").glob("*.nii.gz"))
    assert mr_out.name == "sub-0_cyclegan_BtoA.nii.gz"  # each direction its own name (issue 24)
    assert [p.name for p in (tmp_path / "ct").glob("*.nii.gz")] == ["sub-0_cyclegan_AtoB.nii.gz"]
    # both ways into one folder: two files; a second run refuses to replace one without --overwrite
    both = tmp_path / "both"
    for direction in ("AtoB", "BtoA"):
        assert main(["infer", "cyclegan", "--run", str(ckpt), "--input", str(mr), "--output", str(both),
                     "--direction", direction]) == 0
    assert sorted(p.name for p in both.iterdir()) == ["sub-0_cyclegan_AtoB.nii.gz", "sub-0_cyclegan_BtoA.nii.gz"]
    before = (both / "sub-0_cyclegan_BtoA.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["infer", "cyclegan", "--run", str(ckpt), "--input", str(mr), "--output", str(both),
                 "--direction", "BtoA"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sub-0_cyclegan_BtoA.nii.gz" in err[0] and "--overwrite" in err[0]
    assert (both / "sub-0_cyclegan_BtoA.nii.gz").stat().st_mtime_ns == before
    assert main(["infer", "cyclegan", "--run", str(ckpt), "--input", str(mr), "--output", str(both),
                 "--direction", "BtoA", "--overwrite"]) == 0
    low, high = saved["data"]["windows"]["A"]
    values = nib.load(mr_out).get_fdata()
    assert values.min() >= low - 1e-3 and values.max() <= high + 1e-3  # the training MRs' window
    assert nib.load(mr_out).shape == nib.load(ct).shape

    # --dicom on an MR series: a CT series of the same patient and geometry, in HU
    import pydicom

    from medgen.data.phantoms import write_dicom_series
    from medgen.io import read

    mr_nifti = nib.load(mr)
    series = tmp_path / "t1_dicom"
    write_dicom_series(series, np.asarray(mr_nifti.dataobj), mr_nifti.affine, 0)
    assert main(["infer", "cyclegan", "--run", str(ckpt), "--input", str(series), "--output", str(tmp_path / "d"),
                 "--dicom"]) == 0
    header = pydicom.dcmread(next((tmp_path / "d" / "t1_dicom_cyclegan_AtoB_dicom").iterdir()))
    assert header.Modality == "CT" and header.RescaleType == "HU" and header.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert header.PatientName == pydicom.dcmread(next(series.iterdir())).PatientName
    from_dicom = read(tmp_path / "d" / "t1_dicom_cyclegan_AtoB_dicom").as_tensor().numpy()
    from_nifti = read(tmp_path / "d" / "t1_dicom_cyclegan_AtoB.nii.gz").as_tensor().numpy()
    assert np.abs(from_dicom - from_nifti).max() < 0.1  # int16 with a rescale slope: ~0.06 HU steps

    capsys.readouterr()
    assert main(["evaluate", "cyclegan", "--run", str(ckpt), "--data", str(tiny_unpaired), "--json",
                 "--fid-slices", "1"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["n_volumes"] == 3 and {"psnr", "btoa_psnr", "mae_hu", "fid", "btoa_fid"} <= set(result["metrics"])


def test_resume_is_exact_with_the_pools(tiny_unpaired, tmp_path):
    from medgen.cli import main

    common = ["train", "cyclegan", "--config", str(CONFIG), f"data.root={tiny_unpaired}", "trainer.fid_slices=0",
              "optim.lr_policy=constant", "model.pool_size=3", "trainer.val_every=0", "tracking.enabled=false",
              *TINY_OVERRIDES]
    assert main([*common, "trainer.max_epochs=2", "trainer.checkpoint_dir=straight"]) == 0
    assert main([*common, "trainer.max_epochs=1", "trainer.checkpoint_dir=first"]) == 0
    (half,) = Path("first").glob("*/last.pt")
    assert main([*common, "trainer.max_epochs=2", "trainer.checkpoint_dir=first", f"trainer.resume={half}"]) == 0
    (a_path,) = Path("straight").glob("*/last.pt")
    (b_path,) = Path("first").glob("*/last.pt")
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for pool in ("pool_A", "pool_B"):
        assert a["extra"][pool]["images"].shape[0] == 3  # full: swapping happened in epoch 2
        assert torch.equal(a["extra"][pool]["images"], b["extra"][pool]["images"])


def test_an_empty_side_and_direction_on_a_one_way_task_are_one_line_errors(tiny_unpaired, tmp_path, capsys):
    import shutil

    from medgen.cli import main

    root = tmp_path / "data"
    shutil.copytree(tiny_unpaired, root)
    for f in (root / "B").iterdir():
        f.unlink()
    code = main(["train", "cyclegan", "--config", str(CONFIG), f"data.root={root}", "trainer.max_epochs=1",
                 "tracking.enabled=false", *TINY_OVERRIDES])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if " INFO mlflow." not in ln]
    assert code == 2 and len(err) == 1 and str(root / "B") in err[0] and "no volumes" in err[0]

    code = main(["infer", "tybalt", "--run", "nowhere.pt", "--input", str(tiny_unpaired / "A"), "--output",
                 str(tmp_path / "o"), "--direction", "BtoA"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--direction" in err[0] and "one way" in err[0]
    code = main(["infer", "cyclegan", "--run", "nowhere.pt", "--input", str(tiny_unpaired / "A"), "--output",
                 str(tmp_path / "o"), "--direction", "sideways"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "AtoB, BtoA" in err[0]


def test_slice_mode_trains_a_2d_model_on_volumes_and_translates_whole_volumes(tiny_unpaired, tmp_path):
    """data.patch_size=[X,Y,1] with model.spatial_dims=2: 2D networks, single-slice patches from the
    3D volumes, and `medgen infer` gives a whole 3D volume in the input's geometry."""
    import os

    import numpy as np

    from medgen.cli import main
    from medgen.engine import load_task

    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        argv = ["train", "cyclegan", "--config", str(CONFIG), f"data.root={tiny_unpaired}", "trainer.max_epochs=1",
                "trainer.fid_slices=0", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *TINY_OVERRIDES,
                "data.patch_size=[16,16,1]", "model.spatial_dims=2"]
        assert main(argv) == 0
    finally:
        os.chdir(old)
    (ckpt,) = (tmp_path / "checkpoints").glob("*/last.pt")
    model, _, _, _ = load_task(str(ckpt), device="cpu")
    assert model.slice_mode and model.G_AB.spatial_dims == 2
    hu = _mr_to_ct(ckpt, tiny_unpaired / "A" / "sub-1.nii.gz", tmp_path / "ct")
    assert np.isfinite(hu).all()
    # slice by slice: a slice's translation does not depend on the other slices
    x = torch.rand(1, 1, 16, 16, 5) * 2 - 1
    with torch.no_grad():
        whole = model.infer(x)
        alone = model.infer(x[..., 2:3])
    assert torch.allclose(whole[..., 2:3], alone, atol=1e-5)


def _set_features(volumes) -> "np.ndarray":
    """The 2.5D FID images of each (1, X, Y, Z) model-space volume, by hand: one slice per axis at
    the centre of the volume's own foreground extent, through the shipped InceptionV3."""
    import numpy as np

    from medgen.metrics import load_inception
    from medgen.metrics.fid import slice_positions, take_slices, to_inception_input

    net = load_inception("cpu")
    feats = []
    with torch.inference_mode():
        for v in volumes:
            images = take_slices(v.float(), slice_positions(v.float(), 1, (-1.0, 1.0)))
            feats.append(net(torch.cat([to_inception_input(im, (-1.0, 1.0)) for im in images])).double().numpy())
    return np.concatenate(feats)


def test_unpaired_validation_without_any_pair_has_both_fids_equal_to_fids_between_the_sets(tmp_path, capsys):
    """Issue 25: A and B of different patients (no name on both sides). The final validation
    logs val/fid and val/btoa_fid, and `medgen evaluate` on the same scans gives the FID between
    the set of translated volumes and the set of real target volumes."""
    import json
    import os
    import shutil

    import nibabel as nib
    from mlflow.tracking import MlflowClient

    from medgen.cli import main
    from medgen.data.phantoms import make_subject
    from medgen.engine import load_task
    from medgen.inference import evaluation_data
    from medgen.metrics import frechet_distance_from_features

    root = tmp_path / "data"
    for side, name, key in (("A", "mr", "t1"), ("B", "ct", "ct")):
        (root / side).mkdir(parents=True)
        for i in range(3):
            s = make_subject(seed=1, index=i + (3 if side == "B" else 0), size=32)
            nib.save(nib.Nifti1Image(s[key].astype("float32"), s["affine"]), root / side / f"{name}-{i}.nii.gz")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["train", "cyclegan", "--config", str(CONFIG), f"data.root={root}", "trainer.max_epochs=1",
                     "trainer.fid_slices=1", f"tracking.uri={uri}", *TINY_OVERRIDES]) == 0
    finally:
        os.chdir(old)
    (ckpt,) = (tmp_path / "checkpoints").glob("*/last.pt")
    model, data, config, saved = load_task(str(ckpt), device="cpu")
    data.setup()
    assert sorted(i["subject"] for i in data.splits["val"]) == ["ct-2", "mr-1"]  # one scan a side, no pair
    history = {k: [m.value for m in MlflowClient(uri).get_metric_history(ckpt.parent.name, f"val/{k}")]
               for k in ("fid", "btoa_fid", "psnr")}
    assert len(history["fid"]) == len(history["btoa_fid"]) == 1 and not history["psnr"]  # the final one; no pair

    val = tmp_path / "val"  # the validation split's two scans, one of each side
    for side, entry in (("A", "mr-1"), ("B", "ct-2")):
        (val / side).mkdir(parents=True)
        shutil.copy(root / side / f"{entry}.nii.gz", val / side)
    capsys.readouterr()
    assert main(["evaluate", "cyclegan", "--run", str(ckpt), "--data", str(val), "--json", "--fid-slices", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    _, dataset = evaluation_data(config, val, saved["data"])
    (a,) = [i["A"] for i in dataset if "A" in i]
    (b,) = [i["B"] for i in dataset if "B" in i]
    with torch.no_grad():
        fake_b, fake_a = model.infer(a[None], "AtoB")[0], model.infer(b[None], "BtoA")[0]
    by_hand = {"fid": frechet_distance_from_features(_set_features([fake_b]), _set_features([b])),
               "btoa_fid": frechet_distance_from_features(_set_features([fake_a]), _set_features([a]))}
    for key, value in by_hand.items():
        assert result["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-3), key
        assert history[key][0] == pytest.approx(value, rel=1e-4, abs=1e-3), key  # the same two scans in training
    assert "psnr" not in result["metrics"]

