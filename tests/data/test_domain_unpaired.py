"""Data modules of the two-set layouts: domain adaptation (source/target) and unpaired (A/B)."""

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medgen.data.domain import DomainVolumes
from medgen.data.phantoms import write_phantoms
from medgen.data.unpaired import UnpairedVolumes
from medgen.errors import InputError
from medgen.io import read
from medgen.transforms.intensity import apply_intensity, ct_params


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms") / "demo"
    write_phantoms(out, subjects=3, size=24, seed=0, n_samples=10, n_genes=20, domain_label="tissue")
    return out


def _save(path, array, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.eye(4) if affine is None else affine), path)


# --- domain adaptation ---------------------------------------------------------------------------

def test_domain_splits_each_domain_and_joins_source_with_target_patches(demo):
    data = DomainVolumes(demo / "domain", n_classes=4, patch_size=(16, 16, 16), patches_per_volume=2,
                         val_fraction=0.34)
    data.setup()
    assert data.model_settings() == {"out_channels": 4, "target_train_labels": False, "target_val_labels": True}
    for split, per_domain in (("train", 2), ("val", 1)):
        names = [i["subject"] for i in data.splits[split]]
        assert sum(n.startswith("source/") for n in names) == per_domain
        assert sum(n.startswith("target/") for n in names) == per_domain
    train = data.train_dataset()
    assert len(train) == 4  # the longer stream: 2 source volumes x 2 patches
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert set(batch) == {"image", "label", "target_image"}
    assert batch["image"].shape == batch["label"].shape == batch["target_image"].shape == (2, 1, 16, 16, 16)
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    # the target patch comes from a random target volume, reproducibly under a seed
    torch.manual_seed(3)
    first = train[0]
    torch.manual_seed(3)
    again = train[0]
    assert torch.equal(first["target_image"], again["target_image"]) and torch.equal(first["label"], again["label"])
    # whole volumes of both domains, with their labels as class indices
    items = [data.val_dataset()[k] for k in range(2)]
    assert sorted(int(i["domain"]) for i in items) == [0, 1]
    for item in items:
        assert item["label"].dtype == torch.int64 and item["label"].shape == item["image"].shape == (1, 24, 24, 24)
        raw = read(demo / "domain" / item["subject"] / "label.nii.gz")
        assert torch.equal(item["label"][0], raw.as_tensor().round().long())


def test_domain_oversamples_labelled_voxels(tmp_path):
    rng = np.random.default_rng(0)
    for domain in ("source", "target"):
        for s in range(2):
            image = 100 + 10 * rng.random((24, 24, 24))
            label = np.zeros((24, 24, 24))
            label[2:4, 2:4, 2:4] = 1  # a small lesion in a corner
            _save(tmp_path / domain / f"s{s}" / "image.nii.gz", image)
            if domain == "source":
                _save(tmp_path / domain / f"s{s}" / "label.nii.gz", label)

    def share_with_lesion(fraction):
        data = DomainVolumes(tmp_path, patch_size=(8, 8, 8), patches_per_volume=100, val_fraction=0.0,
                             label_fraction=fraction)
        torch.manual_seed(0)
        train = data.train_dataset()
        return np.mean([bool(train[k]["label"].any()) for k in range(len(train))])

    often, rarely = share_with_lesion(0.5), share_with_lesion(0.05)
    assert often > 0.45 and rarely < 0.2  # patches elsewhere rarely touch the corner


def _domain_folder(root, source_ct: bool, target_ct: bool):
    """Two subjects a domain: a body in air (CT: -1000 HU around 40 HU tissue; MR: 0 around 300)."""
    rng = np.random.default_rng(1)
    body = np.zeros((16, 16, 16), bool)
    body[3:13, 3:13, 3:13] = True
    for domain, ct in (("source", source_ct), ("target", target_ct)):
        for s in range(2):
            image = np.where(body, 40.0, -1000.0) if ct else np.where(body, 300.0, 0.0)
            _save(root / domain / f"s{s}" / "image.nii.gz", image + rng.normal(0, 5, image.shape))
            if domain == "source":
                _save(root / domain / f"s{s}" / "label.nii.gz", body & (rng.random(body.shape) > 0.9))
    return root


@pytest.mark.parametrize("source_ct, target_ct, expected", [(True, True, "ct"), (False, False, "mr"), (True, False, None)])
def test_domain_modality_auto_reads_hounsfield_units_from_both_scanners(tmp_path, source_ct, target_ct, expected):
    from medgen.errors import ConfigError

    data = DomainVolumes(_domain_folder(tmp_path, source_ct, target_ct), patch_size=(8, 8, 8), val_fraction=0.0)
    assert data.modality == "auto"
    if expected is None:  # one intensity scheme serves the run: a CT source with an MR target is named
        with pytest.raises(ConfigError, match=r"target.s\d.image\.nii\.gz does not"):
            data.setup()
        return
    data.setup()
    assert data.modality == expected and data.resolved_settings()["modality"] == expected
    item = data.all_dataset()[0]
    body = item["image"][0, 5:11, 5:11, 5:11]
    if expected == "ct":  # the fixed HU window: 40 HU sits at the same place in every scan
        assert torch.allclose(body.mean(), apply_intensity(torch.tensor(40.0), ct_params()), atol=0.01)
    else:  # MR's window is the scan's own percentiles in the body: its noise spans [-1, 1]
        assert body.min() < -0.5 and body.max() > 0.5
    assert "intensities " + expected + " (auto" in data.describe()


def test_looks_like_ct_needs_air_in_hounsfield_units():
    from medgen.data.volume_module import looks_like_ct

    head = np.full((10, 10, 10), 40.0)
    assert not looks_like_ct(head)  # a CT cropped to soft tissue holds no HU evidence: MR's window
    head[0] = -1000.0  # a tenth of the voxels air
    assert looks_like_ct(head)
    assert not looks_like_ct(np.random.default_rng(0).normal(0, 3, (10, 10, 10)))  # a z-scored MR


def test_domain_target_labels_are_optional_and_bad_labels_are_named(demo, tmp_path):
    root = tmp_path / "domain"
    shutil.copytree(demo / "domain", root)
    for subject in ("sub-001", "sub-002", "sub-003"):
        (root / "target" / subject / "label.nii.gz").unlink()
    data = DomainVolumes(root, n_classes=4, patch_size=(16, 16, 16), val_fraction=0.0)
    items = [data.all_dataset()[k] for k in range(6)]
    assert ["label" in i for i in items] == [True] * 3 + [False] * 3  # sorted: source/..., target/...

    with pytest.raises(InputError, match=r"label.nii.gz.*label values 3 are not class indices 0..2.*n_classes"):
        DomainVolumes(root, n_classes=3, patch_size=(16, 16, 16), val_fraction=0.0).all_dataset()[0]
    label = root / "source" / "sub-001" / "label.nii.gz"
    _save(label, np.full((24, 24, 24), 0.5), nib.load(label).affine)
    with pytest.raises(InputError, match=r"sub-001.*label values 0.5"):
        DomainVolumes(root, n_classes=4, patch_size=(16, 16, 16), val_fraction=0.0).all_dataset()[0]
    _save(label, np.zeros((20, 24, 24)))
    with pytest.raises(InputError, match=r"'label' does not share the grid of its image"):
        DomainVolumes(root, n_classes=4, patch_size=(16, 16, 16), val_fraction=0.0).all_dataset()[0]


def test_label_maps_go_back_to_the_input_grid_as_labels(demo):
    data = DomainVolumes(demo / "domain", n_classes=4, spacing=[13.75, 13.75, 13.75], patch_size=(8, 8, 8))
    image = read(demo / "domain" / "source" / "sub-001" / "image.nii.gz")
    x, state = data.preprocess(image)
    assert x.shape == (1, 16, 16, 16)  # 24 voxels of 9.17 mm -> 16 of 13.75 mm
    labels = torch.randint(0, 4, x.shape).float()
    out = data.postprocess(labels, state, intensity=False, mode="nearest")
    assert out.shape == image.shape and torch.equal(out.affine, image.affine)
    assert set(torch.unique(out).tolist()) <= {0.0, 1.0, 2.0, 3.0}


# --- unpaired ------------------------------------------------------------------------------------

def test_unpaired_sides_keep_their_own_units(demo):
    data = UnpairedVolumes(demo / "unpaired", patch_size=(16, 16, 16), patches_per_volume=2, val_fraction=0.34)
    data.setup()
    assert len(data.splits["train"]) == 2 and len(data.splits["val"]) == 1
    batch = next(iter(DataLoader(data.train_dataset(), batch_size=2)))
    assert set(batch) == {"A", "B"} and batch["A"].shape == batch["B"].shape == (2, 1, 16, 16, 16)
    item = data.val_dataset()[0]
    assert item["paired"] and item["A"].shape == item["B"].shape == (1, 24, 24, 24)
    ct = read(demo / "unpaired" / "B" / f"{item['subject']}.nii.gz")
    torch.testing.assert_close(item["B"][0], apply_intensity(ct, ct_params()).as_tensor(), atol=1e-6, rtol=0)
    assert item["A"].min() >= -1 and item["A"].max() <= 1 and float(item["A"].std()) > 0.1
    # an MR input comes back from model space in HU (B's units), an exact inverse of the CT window
    mr = read(demo / "unpaired" / "A" / f"{item['subject']}.nii.gz")
    _, state = data.preprocess(mr, side="A")
    hu = data.postprocess(item["B"], state)
    assert torch.equal(hu.affine, mr.affine)
    torch.testing.assert_close(hu.as_tensor(), ct.as_tensor().clamp(-1000, 2000), atol=0.05, rtol=0)
    # and a CT input goes to MR units: the training MRs' learned window (median of their windows)
    _, state = data.preprocess(ct, side="B")
    assert state["params"] == ct_params()
    low, high = data.fitted_window("A")
    assert (state["output_params"]["low"], state["output_params"]["high"]) == (low, high) and 0 <= low < high
    assert data.state_dict() == {"windows": {"A": [low, high]}} and data.fitted_window("B") is None


def test_unpaired_sets_need_not_match(demo, tmp_path):
    root = tmp_path / "unpaired"
    shutil.copytree(demo / "unpaired", root)
    (root / "A" / "sub-003.nii.gz").unlink()  # B-only subject
    moved = root / "B" / "sub-002.nii.gz"  # same name, another grid: not a pair
    img = nib.load(moved)
    shifted = img.affine.copy()
    shifted[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), moved)
    data = UnpairedVolumes(root, patch_size=(16, 16, 16), val_fraction=0.0)
    items = {i["subject"]: i for i in (data.all_dataset()[k] for k in range(3))}
    assert items["sub-001"]["paired"] and not items["sub-002"]["paired"] and not items["sub-003"]["paired"]
    assert "A" not in items["sub-003"] and "B" in items["sub-003"]
    assert len(data.train_dataset()) == 3 * 8  # the longer side (B: 3 volumes) leads


def test_unpaired_auto_spacing_uses_both_sides_and_needs_both(tmp_path):
    for k, size in enumerate((2.0, 2.0, 3.0)):
        _save(tmp_path / "u" / "A" / f"a{k}.nii.gz", np.random.default_rng(k).random((12, 12, 12)) * 500,
              np.diag([size, size, size, 1.0]))
    for k in range(2):
        _save(tmp_path / "u" / "B" / f"b{k}.nii.gz", np.full((12, 12, 12), 40.0), np.diag([3.0, 3.0, 3.0, 1.0]))
    data = UnpairedVolumes(tmp_path / "u", patch_size=(8, 8, 8), val_fraction=0.0)
    data.setup()
    assert data.spacing == (3.0, 3.0, 3.0)  # median of 2, 2, 3 (A) and 3, 3 (B)
    shutil.rmtree(tmp_path / "u" / "B")
    with pytest.raises(InputError, match="B"):
        UnpairedVolumes(tmp_path / "u", patch_size=(8, 8, 8)).setup()
