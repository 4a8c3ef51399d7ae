"""Render a phantom anatomy (:func:`medgen.data.anatomy.make_anatomy`) as MR, CT and FDG PET.

Every image is a partial-volume mix of per-tissue values (``sum_k fraction_k * value_k``) with
a little smooth tissue heterogeneity, then the physics of its scanner:

* **MR** (T1, T2, FLAIR): tissue signal tables (arbitrary units, white matter ~ 600-1000), a
  smooth multiplicative bias field, optional resolution loss (Gaussian blur), Rician noise
  (magnitude of complex Gaussian noise). A *scanner profile* (:data:`MR_PROFILES`) holds the
  tables, bias strength, noise and blur: ``"source"`` is the default scanner, ``"target"`` a
  second scanner (other contrasts, stronger bias, more noise, lower resolution) for domain
  adaptation.
* **CT** in HU: air -1000, soft tissue 20-60 (CSF ~8), bone 700-1500 (smoothly varying
  mineralisation), Gaussian noise (5 HU); lesions are slightly hypodense (-12 HU, oedema).
* **FDG PET** in kBq/ml: activity from tissue classes (grey 10, deep grey 9, white 2.8:
  grey:white ~ 3.5:1; CSF 0.4, scalp 1.2, skull 0.6), lesions scale local activity (hypo- or
  hyper-metabolic). A scan is simulated as Poisson counts of the activity (expected total counts
  ``counts * dose_fraction`` over the volume), reconstructed back to kBq/ml
  (counts / sensitivity), then blurred by the scanner PSF (Gaussian, :data:`PET_FWHM_MM`), which
  also makes the noise spatially correlated as in a reconstructed image. A lower dose is the same
  scan with each count kept with probability ``dose_fraction`` (binomial thinning of Poisson
  counts is Poisson: exactly what a shorter acquisition or smaller injection gives), rescaled by
  ``1/dose_fraction`` so it is in the same kBq/ml, only noisier. The noise-free image is the
  PSF-blurred activity (the expectation of every dose level).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medgen.data.anatomy import smooth_noise, upsample_smooth

# Tissue signal (arbitrary units) per scanner profile; "lesion" is oedema/tumour-like tissue.
MR_PROFILES: dict[str, dict] = {
    "source": {
        "t1": {"air": 0.0, "scalp": 700.0, "skull": 80.0, "csf": 180.0, "gm": 520.0, "wm": 780.0, "lesion": 330.0},
        "t2": {"air": 0.0, "scalp": 420.0, "skull": 40.0, "csf": 1000.0, "gm": 560.0, "wm": 400.0, "lesion": 850.0},
        "flair": {"air": 0.0, "scalp": 520.0, "skull": 40.0, "csf": 90.0, "gm": 560.0, "wm": 420.0, "lesion": 980.0},
        "bias": 0.12,  # std of log bias field
        "noise": 0.02,  # Rician sigma as a fraction of the white-matter T1 signal
        "blur_mm": 0.0,  # extra Gaussian FWHM (resolution loss)
        "texture": 0.03,
    },
    "target": {
        "t1": {"air": 0.0, "scalp": 900.0, "skull": 150.0, "csf": 300.0, "gm": 620.0, "wm": 760.0, "lesion": 420.0},
        "t2": {"air": 0.0, "scalp": 600.0, "skull": 60.0, "csf": 900.0, "gm": 620.0, "wm": 500.0, "lesion": 800.0},
        "flair": {"air": 0.0, "scalp": 700.0, "skull": 60.0, "csf": 150.0, "gm": 600.0, "wm": 480.0, "lesion": 900.0},
        "bias": 0.25,
        "noise": 0.05,
        "blur_mm": 4.0,
        "texture": 0.05,
    },
}

CT_HU = {"air": -1000.0, "scalp": 40.0, "skull": 1100.0, "csf": 8.0, "gm": 40.0, "wm": 28.0, "lesion": 16.0}
CT_NOISE_HU = 5.0

PET_ACTIVITY = {"air": 0.0, "scalp": 1.2, "skull": 0.6, "csf": 0.4, "gm": 10.0, "wm": 2.8}
PET_DEEP_GM = 9.0
PET_FWHM_MM = 6.0
# Expected total counts of a full-dose scan over the whole volume. Chosen so that the 1/4-dose
# image scores ~22 dB PSNR against the full-dose image in the head (data range = max full dose);
# the noise level hardly depends on the grid size because the PSF is fixed in mm.
PET_COUNTS = 1.0e5

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _spacing(anatomy) -> float:
    return float(abs(anatomy["affine"][0, 0]))


def _mix(anatomy, table: dict[str, float]) -> np.ndarray:
    out = np.zeros_like(anatomy["gm"], dtype=np.float64)
    for tissue, value in table.items():
        if tissue in anatomy and value:
            out += anatomy[tissue] * value
    return out


def _blur(volume: np.ndarray, fwhm_mm: float, spacing: float) -> np.ndarray:
    if fwhm_mm <= 0:
        return volume
    return ndimage.gaussian_filter(volume, sigma=fwhm_mm * _FWHM_TO_SIGMA / spacing, mode="nearest")


def bias_field(rng: np.random.Generator, shape, strength: float) -> np.ndarray:
    """Smooth multiplicative field exp(strength * smooth noise), mean ~1 (MR coil inhomogeneity)."""
    nodes = 4
    coarse = rng.standard_normal((nodes,) * 3)
    field = upsample_smooth(coarse, shape)
    field = field / (field.std() + 1e-12)
    return np.exp(strength * field)


def render_mr(anatomy, rng: np.random.Generator, contrast: str = "t1", profile: str = "source") -> np.ndarray:
    """MR image (float32, arbitrary units >= 0) of ``contrast`` in ``{"t1","t2","flair"}``."""
    prof = MR_PROFILES[profile]
    table = prof[contrast]
    signal = _mix(anatomy, table)
    signal *= 1.0 + prof["texture"] * anatomy["texture"] * (1.0 - anatomy["air"])
    signal = _blur(signal, prof["blur_mm"], _spacing(anatomy))
    signal *= bias_field(rng, signal.shape, prof["bias"])
    sigma = prof["noise"] * prof["t1"]["wm"]
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imag = rng.normal(0.0, sigma, signal.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def render_ct(anatomy, rng: np.random.Generator) -> np.ndarray:
    """CT in HU (float32): air -1000, soft tissue 20-60, bone 700-1500."""
    hu = _mix(anatomy, {k: v for k, v in CT_HU.items() if k != "skull"})
    # Bone mineralisation varies smoothly (diploe vs cortical), always inside 700-1500 HU.
    bone = np.clip(CT_HU["skull"] + 250.0 * smooth_noise(rng, hu.shape, 3.0), 750.0, 1450.0)
    hu += anatomy["skull"] * bone
    hu += rng.normal(0.0, CT_NOISE_HU, hu.shape) * (1.0 - anatomy["air"])
    # Air is exactly -1000 where the voxel is all air (a scanner's air reads -1000 +- noise;
    # keeping it flat makes the window boundary crisp); tissue noise stays above.
    return np.clip(hu, -1000.0, 3000.0).astype(np.float32)


def pet_activity(anatomy) -> np.ndarray:
    """Noise-free, unblurred FDG activity (kBq/ml, float32) including lesion gains."""
    act = _mix(anatomy, PET_ACTIVITY)
    act += anatomy["deep_gm"] * (PET_DEEP_GM - PET_ACTIVITY["gm"])
    act *= 1.0 + 0.05 * anatomy["texture"] * (1.0 - anatomy["air"])
    # A lesion takes the activity its host tissue would have had (grey-ish), times its gain.
    host = 0.5 * (PET_ACTIVITY["gm"] + PET_ACTIVITY["wm"])
    act += anatomy["lesion"] * host * anatomy["lesion_pet"]
    return np.clip(act, 0.0, None).astype(np.float32)


def pet_noise_free(anatomy, fwhm_mm: float = PET_FWHM_MM) -> np.ndarray:
    """The expected reconstructed image (PSF-blurred activity): the ideal full-dose image."""
    return _blur(pet_activity(anatomy).astype(np.float64), fwhm_mm, _spacing(anatomy)).astype(np.float32)


def _pet_counts(activity: np.ndarray, rng, counts: float) -> tuple[np.ndarray, float]:
    sensitivity = counts / max(float(activity.sum()), 1e-12)  # counts per (kBq/ml . voxel)
    return rng.poisson(activity * sensitivity), sensitivity


def render_pet(anatomy, rng: np.random.Generator, counts: float = PET_COUNTS, dose_fraction: float = 1.0,
               fwhm_mm: float = PET_FWHM_MM) -> np.ndarray:
    """One PET scan (kBq/ml, float32) at ``dose_fraction`` of a full dose of ``counts`` counts."""
    act = pet_activity(anatomy).astype(np.float64)
    n, sens = _pet_counts(act, rng, counts * dose_fraction)
    return _blur(n / sens, fwhm_mm, _spacing(anatomy)).astype(np.float32)


def render_pet_doses(anatomy, rng: np.random.Generator, counts: float = PET_COUNTS, dose_fraction: float = 0.25,
                     fwhm_mm: float = PET_FWHM_MM, bounds: bool = False,
                     independent: bool = False) -> dict[str, np.ndarray]:
    """Full-dose and low-dose scans of the same acquisition (low dose = thinned full-dose counts),
    plus the noise-free image: ``{"full_dose", "low_dose", "noise_free"}``, all in kBq/ml.
    ``independent=True`` draws the low dose as a separate acquisition instead (its own Poisson
    counts, noise independent of the full dose's).

    ``bounds=True`` adds two reference estimates of the full dose that know the noise-free
    activity (for benchmarks; the three scans above are unchanged):

    * ``"bound_mean"`` — E[full dose | low-dose counts, activity]: the low-dose counts plus the
      *expected* counts of the dose the low dose lacks. Its error is that remainder's Poisson
      noise alone, so no estimate made from the low dose has a lower expected MSE against the
      full dose: 10·log10(1/f) dB PSNR over the input (6.02 dB at f = 1/4).
    * ``"bound_sample"`` — one exact draw from p(full dose | low-dose counts, activity): what a
      perfect conditional GAN outputs. Its error is two independent copies of that noise, twice
      the bound's: 3.01 dB less PSNR (3.01 dB over the input at f = 1/4).

    With ``independent=True`` the low dose tells nothing about the full dose's noise: the bound
    is the noise-free image (10·log10(1 + 1/f) = 6.99 dB at f = 1/4) and the sample a fresh
    full-dose scan (10·log10((1 + 1/f) / 2) = 3.98 dB).
    """
    act = pet_activity(anatomy).astype(np.float64)
    spacing = _spacing(anatomy)
    n_full, sens = _pet_counts(act, rng, counts)
    n_low = rng.poisson(act * sens * dose_fraction) if independent else rng.binomial(n_full, dose_fraction)
    out = {
        "full_dose": _blur(n_full / sens, fwhm_mm, spacing).astype(np.float32),
        "low_dose": _blur(n_low / (sens * dose_fraction), fwhm_mm, spacing).astype(np.float32),
        "noise_free": _blur(act, fwhm_mm, spacing).astype(np.float32),
    }
    if bounds:
        # Full-dose counts the low dose fixes (its own, when thinned), and the expected rest.
        shared, rest = (0, act * sens) if independent else (n_low, (1.0 - dose_fraction) * act * sens)
        out["bound_mean"] = _blur((shared + rest) / sens, fwhm_mm, spacing).astype(np.float32)
        out["bound_sample"] = _blur((shared + rng.poisson(rest)) / sens, fwhm_mm, spacing).astype(np.float32)
    return out
