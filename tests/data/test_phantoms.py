import numpy as np
import pytest

from medgen.cli import main
from medgen.data import phantoms
from medgen.data.anatomy import TISSUES, make_anatomy
from medgen.data.expression_synth import make_expression
from medgen.data.render import pet_activity, render_mr, render_pet_doses


def test_anatomy_deterministic_and_different_across_subjects():
    a, b, c = make_anatomy(5, 24), make_anatomy(5, 24), make_anatomy(6, 24)
    for k in TISSUES + ("labels", "texture"):
        np.testing.assert_array_equal(a[k], b[k])
    assert np.abs(a["wm"] - c["wm"]).mean() > 0.01
    total = sum(a[t] for t in TISSUES) + a["lesion"]
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    # partial volume: fractions strictly between 0 and 1 exist at every boundary
    assert ((a["gm"] > 0.1) & (a["gm"] < 0.9)).sum() > 100


def test_subjects_deterministic_and_distinct():
    s1 = phantoms.make_subject(3, 0, size=24)
    s2 = phantoms.make_subject(3, 0, size=24)
    s3 = phantoms.make_subject(3, 1, size=24)
    for k in ("t1", "ct", "low_dose"):
        np.testing.assert_array_equal(s1[k], s2[k])
        assert not np.allclose(s1[k], s3[k])


@pytest.fixture(scope="module")
def head():
    # 64^3 = 3.4 mm voxels: thin scalp/skull have some nearly pure voxels at this size
    anatomy = make_anatomy(11, 64)
    return anatomy, phantoms.make_subject(11, 0, size=64, anatomy=anatomy)


def test_ct_values_in_hounsfield_ranges(head):
    anatomy, s = head
    ct = s["ct"]
    assert np.median(ct[anatomy["air"] > 0.99]) == pytest.approx(-1000, abs=1)
    bone = ct[anatomy["skull"] > 0.95]
    assert bone.size > 50 and np.percentile(bone, 2) >= 700 and np.percentile(bone, 98) <= 1500
    soft = ct[(anatomy["scalp"] > 0.9) | (anatomy["gm"] > 0.95) | (anatomy["wm"] > 0.95)]
    assert 20 <= soft.mean() <= 60


def test_pet_grey_white_ratio_and_dose_levels(head):
    anatomy, _ = head
    act = pet_activity(anatomy)
    ratio = act[anatomy["gm"] > 0.95].mean() / act[anatomy["wm"] > 0.95].mean()
    assert 3.0 <= ratio <= 4.0
    pet = render_pet_doses(anatomy, np.random.default_rng(0))
    m = anatomy["head"] > 0.5
    nf, full, low = pet["noise_free"][m], pet["full_dose"][m], pet["low_dose"][m]
    # same units: the 1/4-dose image is not 1/4 of the full dose, only noisier (~2x the noise)
    assert low.mean() == pytest.approx(full.mean(), rel=0.03)
    assert low.mean() == pytest.approx(nf.mean(), rel=0.03)
    assert 1.6 < (low - nf).std() / (full - nf).std() < 2.4
    psnr = 10 * np.log10(pet["full_dose"].max() ** 2 / np.mean((full - low) ** 2))
    assert 19 <= psnr <= 27


def test_lesions_change_every_contrast():
    base = phantoms.subject_anatomy(2, 0, 40)
    normal = phantoms.make_subject(2, 0, 40, anatomy=base)
    sick = phantoms.make_subject(2, 0, 40, lesions=True, anatomy=phantoms.subject_anatomy(2, 0, 40, True, base=base))
    les = sick["lesion"] > 0
    assert les.sum() > 5
    assert sick["t2"][les].mean() > 1.2 * normal["t2"][les].mean()
    assert sick["flair"][les].mean() > 1.3 * normal["flair"][les].mean()
    assert sick["t1"][les].mean() < 0.85 * normal["t1"][les].mean()
    ct_diff = abs(sick["ct"][les].mean() - normal["ct"][les].mean())
    assert 2 < ct_diff < 40  # slightly changed
    pet_change = np.abs(sick["noise_free"][les] / normal["noise_free"][les] - 1).mean()
    assert pet_change > 0.15
    outside = sick["lesion"] == 0
    assert np.abs(sick["noise_free"][outside] - normal["noise_free"][outside]).mean() < 0.2


def test_domain_profiles_differ():
    anatomy = make_anatomy(4, 32)
    src = render_mr(anatomy, np.random.default_rng(0), "t1", "source")
    tgt = render_mr(anatomy, np.random.default_rng(0), "t1", "target")
    gm, wm = anatomy["gm"] > 0.9, anatomy["wm"] > 0.9
    assert src[wm].mean() / src[gm].mean() > tgt[wm].mean() / tgt[gm].mean() + 0.1
    d = phantoms.make_domain_subject(0, 0, 24, "target", label="tissue")
    assert set(np.unique(d["label"])) <= {0, 1, 2, 3} and (d["label"] == 3).any()
    # the default: 1-3 lesions, and the label is their mask
    for profile in ("source", "target"):
        d = phantoms.make_domain_subject(0, 0, 32, profile)
        assert d["label"].dtype == np.uint8 and set(np.unique(d["label"])) == {0, 1}
        assert 0.0005 < d["label"].mean() < 0.1


def test_expression_has_recoverable_subtypes():
    data = make_expression(0, n_samples=120, n_genes=300)
    x = data["expression"]
    assert x.shape == (120, 300) and (x >= 0).all()
    labels = np.array(data["labels"])
    assert len(set(labels)) == 4
    # the programs are recoverable: least-squares activities from log-expression and the loadings
    z = np.log(x)
    z = z - z.mean(0)
    w = data["loadings"]
    est = z @ w.T @ np.linalg.inv(w @ w.T)
    true = data["activities"] - data["activities"].mean(0)
    for p in range(w.shape[0]):
        assert np.corrcoef(est[:, p], true[:, p])[0, 1] > 0.8
    centroids = {lab: est[labels == lab].mean(0) for lab in set(labels)}
    pred = [min(centroids, key=lambda k: np.linalg.norm(e - centroids[k])) for e in est]
    assert np.mean(np.array(pred) == labels) > 0.8


def test_cli_writes_all_layouts_and_readable_dicom(tmp_path, capsys):
    from medgen.io import read

    out = tmp_path / "demo"
    assert main(["phantoms", str(out), "--subjects", "2", "--size", "20", "--seed", "1"]) == 0
    said = capsys.readouterr().out
    assert "wrote 2 phantom subjects" in said
    # which task reads which folder, and a first command (a new user had to guess both)
    assert f"{out / 'paired'}  " in said and "-> data.root of pet-cgan, eagan, anogan" in said
    assert "-> data.root of cyclegan" in said and "-> data.root of dann-seg" in said and "-> data.root of tybalt" in said
    assert f"e.g. medgen train pet-cgan --config configs/pet-cgan-cpu.yaml data.root={out / 'paired'} " in said
    for key in ("t1", "t2", "flair", "ct", "full_dose", "low_dose", "brain_mask"):
        assert (out / "paired" / "sub-002" / f"{key}.nii.gz").is_file()
    assert (out / "lesions" / "sub-001" / "lesion.nii.gz").is_file()
    assert (out / "unpaired" / "A" / "sub-001.nii.gz").is_file() and (out / "unpaired" / "B" / "sub-002.nii.gz").is_file()
    for side in ("source", "target"):
        assert (out / "domain" / side / "sub-001" / "image.nii.gz").is_file()
        assert (out / "domain" / side / "sub-001" / "label.nii.gz").is_file()
    header = (out / "expression" / "expression.tsv").read_text().splitlines()[0].split("\t")
    assert header[0] == "sample_id" and len(header) == 2001
    assert (out / "expression" / "labels.tsv").read_text().startswith("sample_id\tlabel\n")

    dcm = read(out / "dicom" / "sub-001" / "t1")
    nii = read(out / "paired" / "sub-001" / "t1.nii.gz")
    assert dcm.meta["modality"] == "MR"
    assert tuple(dcm.shape) == tuple(nii.shape) == (20, 20, 20)
    np.testing.assert_allclose(dcm.affine.numpy(), nii.affine.numpy(), atol=1e-4)
    assert float((dcm - nii).abs().max()) <= 0.5 + 1e-3
    assert nii.meta["spacing"] == pytest.approx((11.0, 11.0, 11.0))
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temporary folder left behind

    # an existing non-empty folder is refused (exit 2, one line), nothing changed
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["phantoms", str(out), "--subjects", "1", "--size", "20"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err  # the option that replaces it, by its name
    assert sorted(p.name for p in out.rglob("*")) == before


def test_failure_leaves_no_half_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = phantoms.make_domain_subject

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(phantoms, "make_domain_subject", failing)
    with pytest.raises(RuntimeError):
        phantoms.write_phantoms(tmp_path / "out", subjects=2, size=16)
    assert list(tmp_path.iterdir()) == []
