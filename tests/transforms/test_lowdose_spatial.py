import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medgen.data.anatomy import make_anatomy
from medgen.data.render import pet_noise_free, render_pet
from medgen.transforms.lowdose import estimate_sensitivity, simulate_low_dose
from medgen.transforms.spatial import model_grid, pad_amounts, pad_to, unpad


@pytest.fixture(scope="module")
def pet():
    anatomy = make_anatomy(2, 32)
    return pet_noise_free(anatomy), anatomy["head"] > 0.5


def test_low_dose_is_mean_preserving_and_noisier_as_dose_drops(pet):
    clean, mask = pet
    counts = 2e5
    noise = []
    for dose in (0.5, 0.25, 0.1):
        low = simulate_low_dose(clean, dose, counts=counts, seed=1)
        assert low.dtype == np.float32 and low.shape == clean.shape
        assert low.sum() == pytest.approx(clean.sum(), rel=0.02)
        noise.append((low - clean)[mask].std())
    assert noise[0] < noise[1] < noise[2]
    # binomial thinning adds variance x (1 - d) / (s d) to the full-dose image (noise-free here)
    assert noise[2] / noise[0] == pytest.approx(np.sqrt((1 / 0.1 - 1) / (1 / 0.5 - 1)), rel=0.15)
    np.testing.assert_array_equal(simulate_low_dose(clean, 0.25, counts=counts, seed=3),
                                  simulate_low_dose(clean, 0.25, counts=counts, seed=3))


def test_count_level_estimated_from_image_noise():
    rng = np.random.default_rng(0)
    sens = 4.0
    truth = np.full((24, 24, 24), 5.0)
    truth[6:18, 6:18, 6:18] = 20.0
    noisy = rng.poisson(truth * sens) / sens
    assert estimate_sensitivity(noisy, mask=np.ones_like(noisy, bool)) == pytest.approx(sens, rel=0.25)
    # without counts the added noise matches a real scan at that dose: variance x 1/dose
    low = simulate_low_dose(noisy, 0.25, seed=0)
    flat = (slice(8, 16),) * 3
    assert low[flat].var() == pytest.approx(20.0 / (sens * 0.25), rel=0.3)
    with pytest.raises(ValueError, match="counts"):
        simulate_low_dose(truth, 0.25)


def test_low_dose_keeps_tensor_type_and_meta(pet):
    anatomy = make_anatomy(3, 24)
    full = render_pet(anatomy, np.random.default_rng(0))
    vol = MetaTensor(torch.from_numpy(full), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])),
                     meta={"modality": "PT"})
    low = simulate_low_dose(vol, 0.25, seed=0)
    assert isinstance(low, MetaTensor) and low.meta["modality"] == "PT" and torch.equal(low.affine, vol.affine)
    assert not torch.equal(low, vol)


def test_model_grid_keeps_centre_and_orientation():
    affine = torch.tensor([[0.0, -2.0, 0.0, 10.0], [1.0, 0.0, 0.0, -4.0], [0.0, 0.0, 3.0, 7.0], [0, 0, 0, 1]],
                          dtype=torch.float64)
    shape = (10, 20, 5)
    new_affine, new_shape = model_grid(affine, shape, (1.5, 1.5, 1.5))
    assert new_shape == (7, 27, 10)
    centre = lambda a, s: a[:3, :3] @ (torch.tensor(s, dtype=torch.float64) - 1) / 2 + a[:3, 3]  # noqa: E731
    torch.testing.assert_close(centre(new_affine, new_shape), centre(affine, shape))
    torch.testing.assert_close(new_affine[:3, :3].norm(dim=0), torch.full((3,), 1.5, dtype=torch.float64))
    direction = affine[:3, :3] / affine[:3, :3].norm(dim=0)
    torch.testing.assert_close(new_affine[:3, :3] / 1.5, direction)


def test_pad_unpad_inverse():
    x = torch.randn(1, 5, 16, 9)
    pads = pad_amounts(x.shape[1:], (8, 8, 8))
    assert pads == [(1, 2), (0, 0), (0, 0)]
    y = pad_to(x, pads, value=-1)
    assert y.shape == (1, 8, 16, 9) and float(y[0, 0].max()) == -1
    torch.testing.assert_close(unpad(y, pads), x)


def test_low_dose_with_counts_and_psf_matches_a_real_low_dose_scan():
    from medgen.data.render import PET_COUNTS, PET_FWHM_MM, render_pet_doses

    anatomy = make_anatomy(0, 48)
    scans = render_pet_doses(anatomy, np.random.default_rng(0))
    full, mask = scans["full_dose"], anatomy["head"] > 0.5
    sim = simulate_low_dose(full, 0.25, counts=PET_COUNTS, psf_fwhm_mm=PET_FWHM_MM, spacing=220 / 48, seed=0)
    real_noise = (scans["low_dose"] - full)[mask].std()
    assert (sim - full)[mask].std() == pytest.approx(real_noise, rel=0.1)


@pytest.mark.parametrize("independent, mean_db, sample_db", [(False, 6.02, 3.01), (True, 6.99, 3.98)])
def test_dose_bounds_gain_what_theory_says_over_the_low_dose(independent, mean_db, sample_db):
    # f = 1/4, lambda = expected full-dose counts of a voxel. Thinned: var(low - full) = 3 lambda,
    # and the counts the low dose lacks vary by 0.75 lambda: the conditional mean gains
    # 10 log10(3 / 0.75) = 6.02 dB, a perfect conditional sample (twice that variance) 3.01 dB.
    # Independent acquisitions: var(low - full) = 5 lambda against lambda (6.99 dB) and 2 lambda (3.98).
    from medgen.data.render import render_pet_doses
    from medgen.metrics import psnr

    anatomy = make_anatomy(1, 48)
    plain = render_pet_doses(anatomy, np.random.default_rng(3), independent=independent)
    scans = render_pet_doses(anatomy, np.random.default_rng(3), bounds=True, independent=independent)
    for key in ("full_dose", "low_dose", "noise_free"):
        np.testing.assert_array_equal(plain[key], scans[key])  # the scans do not change
    mask, full = anatomy["head"] > 0.5, scans["full_dose"]
    rng_ = float(scans["noise_free"][mask].max())
    low_db = psnr(scans["low_dose"], full, data_range=rng_, mask=mask)
    assert psnr(scans["bound_mean"], full, data_range=rng_, mask=mask) - low_db == pytest.approx(mean_db, abs=0.3)
    assert psnr(scans["bound_sample"], full, data_range=rng_, mask=mask) - low_db == pytest.approx(sample_db, abs=0.3)


@pytest.mark.parametrize("shape, roi, overlap", [((64, 64, 64), (32, 32, 32), 0.5), ((70, 33, 20), (32, 32, 32), 0.5),
                                                 ((50, 40), (16, 16), 0.25), ((32, 32, 32), (32, 32, 32), 0.5)])
def test_window_count_matches_the_windows_monai_visits(shape, roi, overlap):
    from monai.inferers import sliding_window_inference

    from medgen.transforms.spatial import window_count

    seen = []

    def net(window):
        seen.append(window.shape[0])
        return window

    sliding_window_inference(torch.zeros((1, 1, *shape)), roi, 1, net, overlap=overlap)
    assert window_count(shape, roi, overlap) == len(seen)
