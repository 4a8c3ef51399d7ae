"""dann-seg: gradient reversal, the λ schedule, each variant's step, the multi-connected
classifier's gradients, label-map inference in the input's geometry, the CLI end to end, and
bad input."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.errors import ConfigError
from medgen.models.dann_seg import DANNSeg, dice_per_class, lambda_at
from medgen.networks.domain_classifier import MultiConnectedDomainClassifier
from medgen.networks.feature_unet import FeatureUNet
from medgen.networks.gradient_reversal import GradientReversal, grad_reverse

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "dann-seg-cpu.yaml"
TINY = dict(channels=(4, 8, 8), num_res_units=1, classifier_channels=(4,))


def _batch(dims: int = 3, size: int = 16, n: int = 2, target_labels: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    shape = (n, 1) + (size,) * dims
    label = (torch.rand(shape) > 0.8).float()
    batch = {"image": torch.rand(shape) * 2 - 1 + label, "label": label,
             "target_image": 0.5 * torch.rand(shape) - 0.2 + 0.5 * label}
    if target_labels:
        batch["target_label"] = label
    return batch


# --- gradient reversal and the schedule ----------------------------------------------------------
@pytest.mark.parametrize("lam", [1.0, 0.3, 0.0])
def test_gradient_reversal_is_the_identity_forward_and_minus_lambda_backward(lam):
    torch.manual_seed(0)
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4)
    y = grad_reverse(x, lam)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -lam * w)
    x.grad = None
    layer = GradientReversal(lam)
    (layer(x) * w).sum().backward()
    assert torch.allclose(x.grad, -lam * w) and torch.equal(layer(x), x)


def test_lambda_schedules():
    assert lambda_at(0.0, "ganin") == 0.0
    assert lambda_at(0.5, "ganin") == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.9866
    assert lambda_at(1.0, "ganin") == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert lambda_at(0.1, "ganin", lambda_max=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-1)) - 1))
    assert [lambda_at(p, "linear") for p in (0.0, 0.25, 1.0, 1.5)] == [0.0, 0.25, 1.0, 1.0]
    assert lambda_at(0.25, "linear", lambda_max=2.0, ramp=0.5) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        lambda_at(0.2, "cosine")
    model = DANNSeg(lambda_schedule="linear", lambda_max=0.1, **TINY)
    model.progress = 0.4  # advanced per step by the engine
    assert model.lambda_ == pytest.approx(0.04)
    assert DANNSeg(adaptation="source_only", **TINY).lambda_ == 0.0


# --- steps ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("adaptation", ["dann", "source_only", "target_supervised"])
def test_each_variant_trains_one_step(adaptation, dims):
    torch.manual_seed(0)
    model = DANNSeg(spatial_dims=dims, adaptation=adaptation, target_train_labels=True, **TINY)
    model.progress = 0.5
    s0 = [p.detach().clone() for p in model.S.parameters()]
    logs = model.training_step(_batch(dims, target_labels=True), step=0)
    assert all(math.isfinite(v) for v in logs.values())
    assert any(not torch.equal(p, q) for p, q in zip(model.S.parameters(), s0))
    if adaptation == "dann":
        assert set(model.optimizers) == {"S", "C"}
        assert logs["lambda"] == pytest.approx(lambda_at(0.5)) and 0 <= logs["domain_acc"] <= 1
        assert logs["loss"] == pytest.approx(logs["seg_loss"] + logs["domain_bce"], rel=1e-5)
    else:
        assert model.C is None and set(model.optimizers) == {"S"} and logs["lambda"] == 0.0


def test_target_supervised_trains_on_the_target_labels_and_needs_them():
    with pytest.raises(ConfigError, match="data.target_labels=true"):
        DANNSeg(adaptation="target_supervised", **TINY)
    model = DANNSeg(adaptation="target_supervised", target_train_labels=True, **TINY)
    seen = []
    model.S.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    batch = _batch(target_labels=True)
    model.training_step(batch, 0)
    assert len(seen) == 1 and torch.equal(seen[0], batch["target_image"])
    del batch["target_label"]
    with pytest.raises(ConfigError, match="target_label"):
        model.training_step(batch, 1)


def test_the_classifier_reads_several_layers_and_the_segmenter_gets_the_reversed_gradient():
    torch.manual_seed(0)
    model = DANNSeg(**TINY)
    assert len(model.domain_layers) >= 4  # encoder levels, bottleneck, decoder levels
    x = _batch()["image"]
    logits, features = model.S.forward_features(x)
    assert logits.shape == (2, 2, 16, 16, 16) and len({f.shape[2:] for f in features}) >= 2  # several scales
    for f in features:
        f.retain_grad()
    lam = 0.7
    model.C([grad_reverse(features[i], lam) for i in model.domain_layers]).sum().backward()
    assert all(float(features[i].grad.abs().sum()) > 0 for i in model.domain_layers)
    # (the output layer feeds no tapped feature, so only the layers below it get a gradient)
    reversed_ = {n: p.grad.clone() for n, p in model.S.named_parameters() if p.grad is not None}
    assert len(reversed_) > len(list(model.S.parameters())) // 2
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.C.parameters())
    model.zero_grad(set_to_none=True)
    _, features = model.S.forward_features(x)
    model.C([features[i] for i in model.domain_layers]).sum().backward()  # no reversal
    plain = {n: p.grad for n, p in model.S.named_parameters() if p.grad is not None}
    assert set(plain) == set(reversed_)
    for n, g in plain.items():
        assert torch.allclose(reversed_[n], -lam * g, atol=1e-6), n


def test_domain_layers_select_the_classifiers_inputs_and_bad_settings_are_config_errors():
    model = DANNSeg(domain_layers=[0, 2], **TINY)
    assert model.C.in_channels == [model.S.feature_channels()[0], model.S.feature_channels()[2]]
    for bad in ({"adaptation": "mmd"}, {"lambda_schedule": "step"}, {"lambda_max": -1}, {"lambda_ramp": 0},
                {"domain_layers": [9]}, {"out_channels": 1}, {"lr": 0}):
        with pytest.raises(ConfigError):
            DANNSeg(**{**TINY, **bad})
    with pytest.raises(ConfigError, match="multiples of 4"):
        DANNSeg(**TINY).check_patch((16, 16, 18))


def test_feature_unet_and_classifier_shapes_2d():
    net = FeatureUNet(2, 1, 3, (4, 8, 16), num_res_units=1)
    logits, features = net.forward_features(torch.rand(2, 1, 32, 32))
    assert logits.shape == (2, 3, 32, 32) and [f.shape[1] for f in features] == net.feature_channels()
    clf = MultiConnectedDomainClassifier(2, net.feature_channels(), (4,))
    assert clf(features).shape == (2,)


# --- validation and inference -----------------------------------------------------------------------
def test_validation_reports_dice_per_domain_and_the_classifier_accuracy():
    torch.manual_seed(0)
    model = DANNSeg(**TINY)
    model.roi_size = (16, 16, 16)
    model.eval()
    x = torch.full((1, 1, 24, 24, 24), -1.0)
    x[..., 4:20, 4:20, 4:20] = 0.3
    label = torch.zeros(1, 1, 24, 24, 24, dtype=torch.long)
    label[..., 8:12, 8:12, 8:12] = 1
    out = model.validation_step({"image": x, "label": label, "domain": torch.tensor([1])})
    assert set(out) >= {"dice_target", "domain_acc", "prediction", "label"} and "dice_source" not in out
    assert "lambda" not in out  # a schedule value (train/lambda), not a metric of these scans
    prediction = model.infer(x)
    assert out["dice_target"] == pytest.approx(dice_per_class(prediction, label, 2)[0])
    assert out["domain_acc"] in (0.0, 1.0)
    out = model.validation_step({"image": x, "domain": torch.tensor([0])})  # no label: no Dice
    assert "dice_source" not in out and "dice_target" not in out
    assert dice_per_class(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 0, 0]), 3) == [pytest.approx(2 / 3), 0.0]
    assert DANNSeg(target_val_labels=False, **TINY).best_metric == "val/dice_source"
    from medgen.engine.trainer import infer_mode

    assert infer_mode("val/dice_target") == "max" and infer_mode("train/dice_loss") == "min"


def test_infer_returns_class_indices_from_averaged_probabilities():
    torch.manual_seed(0)
    model = DANNSeg(out_channels=3, **TINY)
    model.roi_size = (16, 16, 16)
    model.eval()
    x = torch.rand(1, 1, 20, 24, 28) * 2 - 1
    probs = model.probabilities(x)
    assert probs.shape == (1, 3, 20, 24, 28) and torch.allclose(probs.sum(1), torch.ones(1, 20, 24, 28), atol=1e-4)
    labels = model.infer(x)
    assert labels.shape == (1, 1, 20, 24, 28) and not labels.is_floating_point()
    assert torch.equal(labels, probs.argmax(1, keepdim=True))


def test_infer_path_writes_the_label_map_by_nearest_neighbour_in_the_inputs_geometry(tmp_path):
    """A label map with classes 0 and 2 side by side: any interpolation would put 1s on their border."""
    from medgen.data.domain import DomainVolumes
    from medgen.inference import infer_path
    from medgen.io import read

    class Blocks(DANNSeg):
        def infer(self, x):  # 2 in alternating 4-voxel slabs along x, 0 elsewhere
            out = torch.zeros_like(x, dtype=torch.long)
            out[:, :, (torch.arange(x.shape[2]) // 4) % 2 == 1] = 2
            return out

    model = Blocks(out_channels=3, **TINY)
    data = DomainVolumes(tmp_path, modality="mr", n_classes=3, spacing=[2.0, 2.0, 2.0], patch_size=(16, 16, 16))
    affine = np.array([[0.0, -1.3, 0.0, 10.0], [0.9, 0.0, 0.0, -20.0], [0.0, 0.0, 1.7, 5.0], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image((100 + 50 * rng.random((30, 26, 18))).astype(np.float32), affine), tmp_path / "scan.nii.gz")
    volume = read(tmp_path / "scan.nii.gz")
    out = infer_path(model, data, volume)
    # the input's grid as read (medgen.io.write puts it back in the file's own axis order)
    assert out.dtype == torch.int16 and tuple(out.shape) == tuple(volume.shape)
    assert np.allclose(out.affine.numpy(), volume.affine.numpy(), atol=1e-4)
    assert set(torch.unique(out).tolist()) == {0, 2}
    from medgen.io import write

    written = nib.load(write(tmp_path / "out.nii.gz", out, reference=volume))
    assert written.get_data_dtype().kind in "iu" and written.shape == (30, 26, 18)
    assert np.allclose(written.affine, affine, atol=1e-4)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) == {0, 2}


# --- the command line --------------------------------------------------------------------------
TINY_OVERRIDES = [
    "model.channels=[4,8,8]", "model.classifier_channels=[4]", "data.patch_size=[16,16,16]",
    "data.patches_per_volume=2", "data.batch_size=2", "data.val_fraction=0.34", "trainer.device=cpu",
    "trainer.progress=false", "trainer.val_images=false", "tracking.log_model=false",
    "tracking.register_model=false", "trainer.max_minutes=null",
]


@pytest.fixture
def tiny_domain(tmp_path):
    """Three source and three target phantom subjects (24^3, lesions), off-centre origin."""
    from medgen.data.phantoms import make_domain_subject

    root = tmp_path / "domain"
    for profile in ("source", "target"):
        for i in range(3):
            d = make_domain_subject(0, i, 24, profile)
            affine = d["affine"].copy()
            affine[:3, 3] += [1.5, -2.0, 3.0]
            (root / profile / f"s{i}").mkdir(parents=True)
            nib.save(nib.Nifti1Image(d["image"], affine), root / profile / f"s{i}" / "image.nii.gz")
            nib.save(nib.Nifti1Image(d["label"], affine), root / profile / f"s{i}" / "label.nii.gz")
    return root


def test_cli_train_logs_dice_per_domain_and_infer_writes_an_integer_label_map(tiny_domain, tmp_path, monkeypatch,
                                                                                capsys):
    from mlflow.tracking import MlflowClient

    from medgen.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["train", "dann-seg", "--config", str(CONFIG), f"data.root={tiny_domain}", "trainer.max_epochs=2",
                 *TINY_OVERRIDES]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    client = MlflowClient(uri)
    for key in ("val/dice_source", "val/dice_target", "val/domain_acc", "train/seg_loss", "train/domain_bce",
                "train/lambda"):
        values = [m.value for m in client.get_metric_history(run_id, key)]
        assert values and all(math.isfinite(v) for v in values), key
    assert client.get_run(run_id).data.params["model.target_val_labels"] == "True"

    _infer_on_another_grid(run_id, tiny_domain, tmp_path)
    _infer_dicom_label_series(run_id, tiny_domain, tmp_path)

    assert main(["evaluate", "dann-seg", "--run", run_id, "--data", str(tiny_domain)]) == 0
    printed = capsys.readouterr().out
    assert "dice_target" in printed and "lambda" not in printed  # lambda is no metric (issue 24)


def _infer_on_another_grid(run_id, tiny_domain, tmp_path) -> None:
    """`medgen infer` on a target scan moved to another grid (spacing, orientation, shape): the
    label map keeps that grid, as integers."""
    from medgen.cli import main

    src = nib.load(tiny_domain / "target" / "s0" / "image.nii.gz")
    affine = np.array([[0.0, 7.0, 0.0, 3.0], [-8.0, 0.0, 0.0, 40.0], [0.0, 0.0, 11.0, -9.0], [0, 0, 0, 1]])
    moved = np.transpose(np.asarray(src.dataobj), (1, 0, 2))[::2, ::2, ::1]
    scan = tmp_path / "in" / "scan.nii.gz"
    scan.parent.mkdir()
    nib.save(nib.Nifti1Image(np.ascontiguousarray(moved), affine), scan)
    out_dir = tmp_path / "out"
    assert main(["infer", "dann-seg", "--run", run_id, "--input", str(scan), "--output", str(out_dir)]) == 0
    written = nib.load(out_dir / "scan_dann-seg.nii.gz")
    assert written.get_data_dtype().kind in "iu" and written.shape == moved.shape
    assert np.allclose(written.affine, affine, atol=1e-4)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1}


def _infer_dicom_label_series(run_id, tiny_domain, tmp_path) -> None:
    """`medgen infer dann-seg --dicom` on an MR series: beside the NIfTI label map, a label series
    of the same geometry whose pixels are the class indices, exactly the NIfTI's."""
    import pydicom

    from medgen.cli import main
    from medgen.data.phantoms import write_dicom_series
    from medgen.io import read

    src = nib.load(tiny_domain / "target" / "s1" / "image.nii.gz")
    series = tmp_path / "mr_dicom"
    write_dicom_series(series, np.asarray(src.dataobj), src.affine, 0)
    out_dir = tmp_path / "dicom_out"
    assert main(["infer", "dann-seg", "--run", run_id, "--input", str(series), "--output", str(out_dir), "--dicom"]) == 0
    nifti, dicom = read(out_dir / "mr_dicom_dann-seg.nii.gz"), read(out_dir / "mr_dicom_dann-seg_dicom")
    scan = read(series)
    assert dicom.shape == nifti.shape == scan.shape
    assert torch.allclose(dicom.affine, scan.affine, atol=1e-4) and torch.allclose(nifti.affine, scan.affine, atol=1e-4)
    values = dicom.as_tensor()
    assert torch.equal(values, nifti.as_tensor().float()) and set(torch.unique(values).tolist()) <= {0.0, 1.0}
    source = pydicom.dcmread(next(series.iterdir()))
    heads = [pydicom.dcmread(f) for f in (out_dir / "mr_dicom_dann-seg_dicom").iterdir()]
    assert len({h.SOPInstanceUID for h in heads}) == len(heads) == len(list(series.iterdir()))
    for h in heads:
        assert h.SeriesInstanceUID != source.SeriesInstanceUID and h.StudyInstanceUID == source.StudyInstanceUID
        assert h.SeriesDescription.startswith("medgen dann-seg label map (run ") and len(h.SeriesDescription) <= 64
        assert float(h.RescaleSlope) == 1.0 and float(h.RescaleIntercept) == 0.0 and h.pixel_array.dtype.kind == "i"
        assert {e.keyword: e.value for e in h if e.tag.group == 0x0010} == \
            {e.keyword: e.value for e in source if e.tag.group == 0x0010}  # no identifier added


def _one_error_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if " INFO mlflow." not in ln]
    assert len(lines) == 1 and lines[0].startswith("medgen train: error:") and "Traceback" not in lines[0], lines
    return lines[0]


def test_cli_names_a_source_subject_without_a_label(tiny_domain, tmp_path, monkeypatch, capsys):
    from medgen.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tiny_domain / "source" / "s1" / "label.nii.gz").unlink()
    code = main(["train", "dann-seg", "--config", str(CONFIG), f"data.root={tiny_domain}", "trainer.max_epochs=1",
                 *TINY_OVERRIDES])
    line = _one_error_line(capsys)
    assert code == 2 and "s1" in line and "label" in line


def test_cli_names_a_label_with_values_beyond_n_classes(tiny_domain, tmp_path, monkeypatch, capsys):
    from medgen.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = tiny_domain / "source" / "s2" / "label.nii.gz"
    img = nib.load(path)
    label = np.asarray(img.dataobj).copy()
    label[label == 1] = 3
    nib.save(nib.Nifti1Image(label, img.affine), path)
    code = main(["train", "dann-seg", "--config", str(CONFIG), f"data.root={tiny_domain}", "trainer.max_epochs=1",
                 *TINY_OVERRIDES])
    line = _one_error_line(capsys)
    assert code == 2 and str(path) in line and "3" in line and "n_classes" in line


def test_cli_target_supervised_needs_target_labels(tiny_domain, tmp_path, monkeypatch, capsys):
    from medgen.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = ["train", "dann-seg", "--config", str(CONFIG), f"data.root={tiny_domain}", "trainer.max_epochs=1",
            "model.adaptation=target_supervised", *TINY_OVERRIDES]
    assert main(argv) == 2
    assert "data.target_labels=true" in _one_error_line(capsys)
    for i in range(3):
        (tiny_domain / "target" / f"s{i}" / "label.nii.gz").unlink()
    assert main(argv + ["data.target_labels=true"]) == 2
    assert "has no label" in _one_error_line(capsys)


def test_data_target_labels_adds_target_label_patches(tiny_domain):
    from medgen.data.domain import DomainVolumes

    data = DomainVolumes(tiny_domain, patch_size=(16, 16, 16), patches_per_volume=2, val_fraction=0.34,
                         target_labels=True)
    data.setup()
    assert data.model_settings() == {"out_channels": 2, "target_train_labels": True, "target_val_labels": True}
    item = data.train_dataset()[0]
    assert set(item) == {"image", "label", "target_image", "target_label"}
    assert set(torch.unique(item["target_label"]).tolist()) <= {0.0, 1.0}
    plain = DomainVolumes(tiny_domain, patch_size=(16, 16, 16), patches_per_volume=2, val_fraction=0.34)
    assert set(plain.train_dataset()[0]) == {"image", "label", "target_image"}  # target labels never read


def test_slice_mode_trains_2d_networks_validates_and_infers_a_whole_integer_label_map(tiny_domain, tmp_path,
                                                                                      monkeypatch, capsys):
    """data.patch_size=[X,Y,1] with model.spatial_dims=2: 2D segmenter and domain classifier on
    single-slice patches (the classifier reads a 2D crop at validation), Dice and the
    classifier's accuracy per domain, and `medgen infer` gives a whole 3D label map in the
    input's geometry."""
    from mlflow.tracking import MlflowClient

    from medgen.cli import main
    from medgen.engine import load_task

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["train", "dann-seg", "--config", str(CONFIG), f"data.root={tiny_domain}", "trainer.max_epochs=1",
                 *TINY_OVERRIDES, "data.patch_size=[16,16,1]", "model.spatial_dims=2"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    client = MlflowClient(uri)
    for key in ("val/dice_source", "val/dice_target", "val/domain_acc", "train/domain_bce"):
        values = [m.value for m in client.get_metric_history(run_id, key)]
        assert values and all(math.isfinite(v) for v in values), key
    model, _, _, _ = load_task(run_id, device="cpu")
    assert model.slice_mode and model.S.spatial_dims == 2 and model.C is not None
    logit = model.domain_logit(torch.rand(1, 1, 24, 24, 24) * 2 - 1)  # one 16x16 crop of the centre slice
    assert logit.shape == (1,) and torch.isfinite(logit).all()

    _infer_on_another_grid(run_id, tiny_domain, tmp_path)
