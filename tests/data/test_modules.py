import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch.utils.data import DataLoader

from medgen.data.paired import PairedVolumes
from medgen.data.volumes import Volumes
from medgen.data.phantoms import write_phantoms
from medgen.errors import InputError
from medgen.io import read, write
from medgen.transforms.intensity import apply_intensity, intensity_params, invert_intensity


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms") / "demo"
    write_phantoms(out, subjects=3, size=24, seed=0, n_samples=10, n_genes=20)
    return out


def test_paired_items_and_pet_shared_scaling(demo):
    data = PairedVolumes(demo / "paired", patch_size=(16, 16, 16), patches_per_volume=2, batch_size=2, val_fraction=0.34)
    data.setup()
    assert data.spatial_dims == 3 and data.patch_size == (16, 16, 16)
    assert len(data.splits["train"]) == 2 and len(data.splits["val"]) == 1
    train = data.train_dataset()
    assert len(train) == 4
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert batch["source"].shape == batch["target"].shape == (2, 1, 16, 16, 16)
    assert batch["source"].min() >= -1 and batch["source"].max() <= 1
    item = data.val_dataset()[0]
    assert item["source"].shape == item["target"].shape == item["mask"].shape == (1, 24, 24, 24)
    assert item["subject"] == data.splits["val"][0]["subject"] and item["mask"].dtype == torch.bool
    # the target is scaled with the source's (low-dose) params: known at inference
    subj = demo / "paired" / item["subject"]
    low, full = read(subj / "low_dose.nii.gz"), read(subj / "full_dose.nii.gz")
    _, state = data.preprocess(low)
    expected = apply_intensity(full, state["params"])
    torch.testing.assert_close(item["target"][0], expected.as_tensor(), atol=1e-5, rtol=0)


def test_setup_does_its_work_once(demo, tmp_path):
    import shutil

    root = tmp_path / "paired"
    shutil.copytree(demo / "paired", root)
    data = PairedVolumes(root, patch_size=(16, 16, 16), val_fraction=0.34)
    data.setup()
    splits = data.splits
    shutil.rmtree(root / "sub-001")
    data.setup()  # the engine's second call: no new discovery, the same split
    assert data.splits is splits and len(data.splits["all"]) == 3


def test_paired_mr_targets_get_their_own_window(demo):
    data = PairedVolumes(demo / "paired", source_key="t1", target_key="t2", modality="mr", patch_size=(16, 16, 16))
    item = data.val_dataset()[0]
    t2 = read(demo / "paired" / item["subject"] / "t2.nii.gz")
    own = apply_intensity(t2, intensity_params(t2, "mr"))
    assert float((item["target"][0] - own.as_tensor()).abs().max()) < 0.05


def test_mr_target_window_is_learned_from_the_training_targets_and_travels_with_the_run(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    scales = {"a": 100.0, "b": 300.0, "c": 500.0, "v": 10000.0}  # "v" is the validation subject
    for subject, scale in scales.items():
        head = np.zeros((16, 16, 16), np.float32)
        head[3:13, 3:13, 3:13] = 1.0
        _save(tmp_path / subject / "t1.nii.gz", head * (1 + rng.random(head.shape)), affine)
        _save(tmp_path / subject / "t2.nii.gz", head * scale * (1 + rng.random(head.shape)), affine)
    data = PairedVolumes(tmp_path, source_key="t1", target_key="t2", modality="mr", patch_size=(16, 16, 16),
                         val_fraction=0.25, split_seed=0)
    data.setup()
    train = sorted(i["subject"] for i in data.splits["train"])
    windows = []
    for subject in train:
        t2 = read(tmp_path / subject / "t2.nii.gz")
        p = intensity_params(t2, "mr")
        windows.append((p["low"], p["high"]))
    expected = np.median(np.array(windows), axis=0)
    state = data.state_dict()  # fits, loading the training targets it has not seen yet
    assert "v" not in train and np.allclose(state["target_window"], expected, rtol=1e-5)
    # a module restored from the run maps outputs back with that window, whatever the input's scale
    restored = PairedVolumes(tmp_path / "elsewhere", source_key="t1", target_key="t2", modality="mr",
                             patch_size=(16, 16, 16), spacing=data.spacing)  # as load_task builds it
    restored.load_state_dict(state)
    x, st = restored.preprocess(read(tmp_path / "v" / "t1.nii.gz"))
    assert (st["output_params"]["low"], st["output_params"]["high"]) == tuple(state["target_window"])
    out = restored.postprocess(torch.zeros_like(x), st)  # model space 0: the window's middle
    assert float(out.as_tensor().mean()) == pytest.approx(float(np.mean(expected)), rel=1e-4)
    # shared (PET) scaling learns nothing: outputs keep the input's own units
    pet = PairedVolumes(tmp_path, source_key="t1", target_key="t2", modality="pet", patch_size=(16, 16, 16))
    assert pet.state_dict() == {}


def test_preprocess_postprocess_roundtrip_native(demo):
    data = PairedVolumes(demo / "paired", patch_size=(32, 32, 32))  # 24^3 input is padded to 32^3
    low = read(demo / "paired" / "sub-001" / "low_dose.nii.gz")
    x, state = data.preprocess(low)
    assert x.shape == (1, 32, 32, 32) and float(x[0, 0, 0, 0]) == -1.0
    out = data.postprocess(x, state)
    assert out.shape == low.shape and torch.equal(out.affine, low.affine)
    high = state["params"]["high"]
    inside = low < high  # clipped above the window, then passed through from the input
    assert float((out - low)[inside].abs().max()) < 1e-4 * high


def test_pet_output_takes_the_input_where_it_passes_the_window(demo):
    """Hot spots beyond model space (whole-body PET's bladder, hot lesions) keep their measured
    activity instead of coming back capped at the window's top."""
    data = PairedVolumes(demo / "paired", patch_size=(24, 24, 24))
    low = read(demo / "paired" / "sub-001" / "low_dose.nii.gz")
    _, state = data.preprocess(low)
    high = state["params"]["high"]
    hot = low.clone()
    hot[11, 11, 11] = 5 * high  # a hot lesion (one voxel: these heads are only 24 voxels wide)
    hot[4, 4, 4] = 0.95 * high  # in the blend
    x, state = data.preprocess(hot)
    assert state["params"]["high"] < 1.1 * high  # the window still follows the tissue, not the lesion
    estimate = -0.5 * torch.ones_like(x)  # some model output, well inside the window
    out = data.postprocess(estimate, state)
    top = state["params"]["high"]
    plain = invert_intensity(torch.tensor(-0.5), state["params"]).item()
    assert float(out[11, 11, 11]) == pytest.approx(float(hot[11, 11, 11]))  # not capped at `top`
    v = float(hot[4, 4, 4])
    w = (v - 0.9 * top) / (0.1 * top)  # inside the blend
    assert 0 < w < 1 and float(out[4, 4, 4]) == pytest.approx((1 - w) * plain + w * v, rel=1e-4)
    cool = hot < 0.9 * top
    assert torch.allclose(out[cool], torch.full_like(out[cool], plain))  # the model's output elsewhere
    mr = PairedVolumes(demo / "paired", source_key="t1", target_key="t2", modality="mr", patch_size=(24, 24, 24))
    t1 = read(demo / "paired" / "sub-001" / "t1.nii.gz")
    x, state = mr.preprocess(t1)  # an own-scaled MR target comes back in the training targets' window, capped at its top
    assert float(mr.postprocess(torch.ones_like(x), state).max()) == pytest.approx(mr.fitted_target_window()[1], rel=1e-5)


def _oblique_volume(tmp_path, shape=(20, 18, 9), spacing=(0.8, 1.1, 2.5)) -> MetaTensor:
    """An anisotropic, oblique (20 deg), axis-flipped NIfTI, read back through medgen.io."""
    import nibabel as nib

    angle = math.radians(20)
    rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing) @ np.diag([-1.0, 1.0, 1.0])
    affine[:3, 3] = [7.0, 12.0, 30.0]
    i, j, k = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    vol = 0.4 * np.sin(i / 6) + 0.3 * np.cos(j / 5) + 0.1 * k / shape[2]  # in [-1, 1]
    nib.save(nib.Nifti1Image(vol.astype(np.float32), affine), str(tmp_path / "oblique.nii.gz"))
    return read(tmp_path / "oblique.nii.gz")


def _save(path, array, affine):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), str(path))


def test_paired_geometry_mismatch_names_subject(tmp_path):
    rng = np.random.default_rng(0)
    for s in ("a", "b"):
        _save(tmp_path / s / "low_dose.nii.gz", rng.random((8, 8, 8)), np.eye(4))
        shifted = np.eye(4)
        if s == "b":
            shifted[0, 3] = 1.0
        _save(tmp_path / s / "full_dose.nii.gz", rng.random((8, 8, 8)), shifted)
    data = PairedVolumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.0, cache=False)
    with pytest.raises(InputError) as e:
        for item in data._volumes("train"):
            pass
    assert "'b'" in str(e.value) and "geometry" in str(e.value)
    _save(tmp_path / "b" / "full_dose.nii.gz", rng.random((8, 8, 9)), np.eye(4))
    with pytest.raises(InputError, match="shape"):
        PairedVolumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.0).train_dataset()


def _pet_pair(folder, size: int, voxel_mm: float):
    """A 32 mm cube of PET-like activity at ``voxel_mm``: a hot sphere in warm background."""
    c = (np.arange(size) + 0.5) * voxel_mm - 16.0
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    low = np.where(x**2 + y**2 + z**2 < 100, 10.0, 2.0) + 0.1 * x
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    _save(folder / "low_dose.nii.gz", low, affine)
    _save(folder / "full_dose.nii.gz", low * 1.05, affine)


def test_auto_spacing_is_the_training_median_and_mixed_folders_say_so(tmp_path, caplog):
    for name, size, mm in (("a", 16, 2.0), ("b", 16, 2.0), ("c", 8, 4.0)):
        _pet_pair(tmp_path / name, size, mm)
    data = PairedVolumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.0, cache=False)
    assert data.resolved_settings() == {}  # nothing decided before setup
    data.setup()
    assert data.spacing == (2.0, 2.0, 2.0)
    assert data.resolved_settings() == {"spacing": [2.0, 2.0, 2.0]}
    assert "1 of the 3 training volumes are resampled to their median voxel size 2 x 2 x 2 mm" in caplog.text
    by_subject = {item["subject"]: item for item in data._volumes("train")}
    assert by_subject["c"]["source"].shape == (1, 16, 16, 16)  # 4 mm resampled onto the 2 mm grid
    # a scan already at the training spacing is not interpolated: model space is its own voxels
    a = read(tmp_path / "a" / "low_dose.nii.gz")
    x, state = data.preprocess(a)
    torch.testing.assert_close(x[0], apply_intensity(a, state["params"]).as_tensor())
    # a new scan at another spacing runs on the training grid and comes back on its own
    _pet_pair(tmp_path / "new", 12, 32 / 12)
    new = read(tmp_path / "new" / "low_dose.nii.gz")
    x, state = data.preprocess(new)
    assert x.shape == (1, 16, 16, 16)
    out = data.postprocess(x, state)
    assert out.shape == new.shape and torch.allclose(out.affine, new.affine)
    assert float((out - new).abs().mean()) < 0.1 * float(new.mean())


def test_nan_outside_a_reconstruction_is_background(tmp_path):
    """Some PET reconstructions write NaN outside their field of view: model space gets
    background there, so patches, losses and estimates stay finite."""
    for name in ("a", "b"):
        _pet_pair(tmp_path / name, 16, 2.0)
        for key in ("low_dose", "full_dose"):
            img = read(tmp_path / name / f"{key}.nii.gz")
            vol = img.as_tensor().numpy().copy()
            vol[:, :, :3] = np.nan
            _save(tmp_path / name / f"{key}.nii.gz", vol, img.affine.numpy())
    data = PairedVolumes(tmp_path, patch_size=(8, 8, 8), patches_per_volume=20, val_fraction=0.5)
    patches = [data.train_dataset()[k] for k in range(20)]
    assert all(torch.isfinite(p["source"]).all() and torch.isfinite(p["target"]).all() for p in patches)
    item = data.val_dataset()[0]
    assert torch.isfinite(item["source"]).all() and (item["source"][0, :, :, :3] == -1).all()
    low = read(tmp_path / "a" / "low_dose.nii.gz")
    x, state = data.preprocess(low)
    out = data.postprocess(x, state)
    assert torch.isfinite(out).all() and torch.allclose(out[:, :, :3], torch.zeros(16, 16, 3))


def test_auto_spacing_of_a_uniform_folder_keeps_native_grids_quietly(tmp_path, capsys, caplog):
    for name in ("a", "b"):
        _pet_pair(tmp_path / name, 16, 2.0)
    data = PairedVolumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.5, cache=False)
    item = data.val_dataset()[0]
    assert data.spacing == (2.0, 2.0, 2.0) and item["source"].shape == (1, 16, 16, 16)
    assert capsys.readouterr().err == "" and caplog.text == ""
    native = PairedVolumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.5, cache=False, spacing=None)
    native.setup()
    assert native.spacing is None and native.resolved_settings() == {}


def test_pet_pair_in_different_units_is_refused_naming_the_subject(tmp_path):
    _pet_pair(tmp_path / "good", 16, 2.0)
    _pet_pair(tmp_path / "counts", 16, 2.0)
    low = read(tmp_path / "counts" / "low_dose.nii.gz")
    _save(tmp_path / "counts" / "low_dose.nii.gz", low.numpy() / 4, low.affine.numpy())  # left at 1/4 the activity
    data = PairedVolumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.0, cache=False)
    with pytest.raises(InputError) as e:
        for _ in data._volumes("train"):
            pass
    msg = str(e.value)
    assert "'counts'" in msg and "4.2x" in msg and "same units" in msg  # 1.05 x 4: the pair's own ratio
    # MR -> MR with each volume its own window: no unit check
    mr = PairedVolumes(tmp_path, modality="mr", patch_size=(8, 8, 8), val_fraction=0.0, cache=False)
    assert len([item["subject"] for item in mr._volumes("train")]) == 2


def test_caching_more_than_the_free_memory_is_announced(tmp_path, caplog, monkeypatch):
    import medgen.data.volume_module as modules

    free = modules.available_memory()
    assert free is None or free > 2**20  # this machine's own answer: a plausible number of bytes
    for name in ("a", "b", "c"):
        _pet_pair(tmp_path / name, 16, 2.0)
    # per training volume: source, target, fg float32 + mask bool + 8-byte patch indices = 21 B/voxel
    need = 3 * 21 * 16**3
    monkeypatch.setattr(modules, "available_memory", lambda: int(need / 0.8) + 1)
    PairedVolumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.0).train_dataset()
    assert "caching" not in caplog.text
    monkeypatch.setattr(modules, "available_memory", lambda: int(need / 0.8) - 1)
    PairedVolumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.0).train_dataset()
    err = caplog.text
    assert "caching 3 volumes (train split) needs about 0.0 GiB" in err and "data.spacing=[2,2,2]" in err


def test_two_dimensional_data(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    for s in ("a", "b", "c"):
        img = np.zeros((20, 24, 1))
        img[4:16, 5:20] = 50 + 10 * rng.random((12, 15, 1))
        _save(tmp_path / s / "low_dose.nii.gz", img, affine)
        _save(tmp_path / s / "full_dose.nii.gz", img * 1.1, affine)
    data = PairedVolumes(tmp_path, patch_size=(16, 16), spacing=(1.0, 1.0), batch_size=2)
    assert data.spatial_dims == 2
    assert data.train_dataset()[0]["source"].shape == (1, 16, 16)
    vol = read(tmp_path / "a" / "low_dose.nii.gz")
    x, state = data.preprocess(vol)
    assert x.shape == (1, 16, 17)  # 14 x 16.8 mm at 1 mm, padded to 16 on the first axis
    out = data.postprocess(x, state)
    assert out.shape == (20, 24, 1) and torch.allclose(out.affine, vol.affine)


def test_volumes_masks_labels_and_augmentation(demo):
    data = Volumes(demo / "lesions", key="flair", mask_key="brain_mask", label_key="lesion", augment=True,
                   patch_size=(16, 16, 16), patches_per_volume=3, val_fraction=0.34)
    torch.manual_seed(0)
    patches = data.train_dataset()
    assert len(patches) == 6
    p = patches[0]["image"]
    # the dark end is clipped at -1 (±5 % intensity jitter); FLAIR lesions may lie above +1
    assert p.shape == (1, 16, 16, 16) and p.min() >= -1.05 and torch.isfinite(p).all()
    item = data.val_dataset()[0]
    assert set(item) == {"image", "subject", "mask", "label"}
    brain = read(demo / "lesions" / item["subject"] / "brain_mask.nii.gz") > 0.5
    assert torch.equal(item["mask"][0], brain.as_tensor())
    assert item["label"].sum() > 0 and (item["label"] & ~item["mask"]).sum() < item["label"].sum()
    # anomaly maps come back in input geometry without intensity mapping
    t1 = read(demo / "lesions" / item["subject"] / "flair.nii.gz")
    x, state = data.preprocess(t1)
    heat = data.postprocess(torch.ones_like(x) * 0.25, state, intensity=False)
    assert heat.shape == t1.shape and torch.allclose(heat, torch.full_like(heat, 0.25))


def test_all_dataset_covers_every_subject_whatever_the_split(demo):
    data = PairedVolumes(demo / "paired", patch_size=(16, 16, 16), val_fraction=0.34)
    data.setup()
    subjects = [item["subject"] for item in data.all_dataset()]
    assert sorted(subjects) == sorted(p.name for p in (demo / "paired").iterdir())
    assert len(subjects) == 3 > len(data.splits["val"])


def test_paired_augment_flips_source_and_target_together(tmp_path):
    # low = a ramp along x, full = low / 2: a flip that hit only one of them would break full = low / 2.
    ramp = np.broadcast_to(np.arange(1, 17, dtype=np.float32)[:, None, None], (16, 16, 16)).copy()
    for s in ("a", "b"):
        _save(tmp_path / s / "low_dose.nii.gz", ramp, np.eye(4))
        _save(tmp_path / s / "full_dose.nii.gz", 0.5 * ramp, np.eye(4))
    kwargs = dict(patch_size=(8, 8, 8), patches_per_volume=16, val_fraction=0.0, cache=False)
    signs = set()
    for augment in (False, True):
        data = PairedVolumes(tmp_path, augment=augment, **kwargs)
        for item in data.train_dataset():
            src, tgt = item["source"][0], item["target"][0]
            assert torch.allclose(tgt + 1, 0.5 * (src + 1), atol=1e-4)  # PET: shared [0, max] -> [-1, 1] scale
            step = float(src[1:].mean() - src[:-1].mean())
            signs.add((augment, step > 0))
    assert signs == {(False, True), (True, True), (True, False)}


def test_volumes_keep_hyperintense_anomalies_above_the_window(tmp_path):
    # A bright spot (3x the brightest tissue) in 0.1 % of the voxels: the MR window (p0.5-p99.5)
    # ignores it, and the anomaly module must not clip it down to the window's top (+1).
    rng = np.random.default_rng(0)
    vol = rng.uniform(100, 200, (20, 20, 20)).astype(np.float32)
    vol[10, 10, 10:18] = 600.0
    _save(tmp_path / "s1" / "t1.nii.gz", vol, np.eye(4))
    data = Volumes(tmp_path, patch_size=(8, 8, 8), val_fraction=0.0, cache=False)
    image = data.all_dataset()[0]["image"][0]
    assert image[10, 10, 10:18].min() > 3.0  # (600 - ~100) / (~200 - ~100) * 2 - 1 ≈ 9
    assert image.min() >= -1.0
    x, _ = data.preprocess(read(tmp_path / "s1" / "t1.nii.gz"))  # inference: the same mapping
    assert torch.allclose(x[0], image)


def test_volumes_save_the_training_intensity_range_and_flag_a_ct_among_mr(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for subject, scale in {"a": 400.0, "b": 600.0, "c": 800.0}.items():
        head = np.zeros((16, 16, 16), np.float32)
        head[3:13, 3:13, 3:13] = scale * (1 + rng.random((10, 10, 10)))
        _save(tmp_path / subject / "t1.nii.gz", head, affine)
    data = Volumes(tmp_path, key="t1", patch_size=(16, 16, 16), val_fraction=0.34)
    data.setup()
    state = data.state_dict()
    r = state["intensity_range"]
    assert r["floor"] == 0 and 0 <= r["low"] < r["median_high"] <= r["max_high"] < 1700
    restored = Volumes(tmp_path / "elsewhere", key="t1", patch_size=(16, 16, 16))
    restored.load_state_dict(state)
    assert restored.intensity_warning(read(tmp_path / "a" / "t1.nii.gz").as_tensor()) is None
    ct = np.full((16, 16, 16), -1000.0, np.float32)  # a head CT in HU: air, soft tissue, bone
    ct[3:13, 3:13, 3:13] = rng.normal(40, 20, (10, 10, 10))
    ct[6:9, 6:9, 6:9] = 1200
    note = restored.intensity_warning(torch.from_numpy(ct))
    assert note is not None and "different modality" in note
    assert restored.intensity_warning(torch.from_numpy(head * 100)) is not None  # another scale
    assert Volumes(tmp_path, key="t1", patch_size=(16, 16, 16)).intensity_warning(torch.from_numpy(ct)) is None  # no saved range
