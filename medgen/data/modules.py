"""Data modules for volume tasks: paired translation (:class:`PairedVolumes`) and single-volume
training (:class:`Volumes`, anomaly detection on normal scans).

Pipeline of one volume (deterministic, cached once per subject with MONAI's CacheDataset):
``medgen.io.read`` (canonical RAS) -> resample to ``spacing`` (``None``: native grid; ``"auto"``:
the median voxel size of the training subjects, as nnU-Net does, fixed at ``setup()``) ->
foreground mask -> intensity normalisation to [-1, 1] (:mod:`medgen.transforms.intensity`,
per-volume params) -> padding (value -1) up to ``patch_size`` where the volume is smaller.
Training items are random patches (:class:`medgen.transforms.patches.RandomPatches`,
foreground-weighted); validation/test items are whole volumes in model space.

``preprocess(volume)`` runs the same pipeline on one raw input (a ``medgen.io.read`` result)
and returns ``(tensor (1, *spatial), state)``; ``postprocess(output, state)`` undoes it: crops
the padding, maps intensities back to the input's units and resamples onto the input's grid, so
the result has the input's shape and affine and ``medgen.io.write(path, out, reference=input)``
overlays the input.

2D data: a ``patch_size`` of length 2 makes ``spatial_dims`` 2; inputs must then be single
slices (``read`` gives ``(X, Y, 1)``), handled as ``(1, X, Y)`` tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from monai.data import CacheDataset, Dataset as MonaiDataset, MetaTensor
from monai.transforms import Transform
from torch.utils.data import Dataset

from medgen.data.layouts import discover_paired, discover_volumes
from medgen.data.module import DataModule
from medgen.data.splits import split_subjects
from medgen.errors import ConfigError, InputError, MedgenError
from medgen.notes import note
from medgen.transforms.intensity import MODALITIES, apply_intensity, intensity_params, invert_intensity, output_params
from medgen.transforms.masks import foreground_mask
from medgen.transforms.patches import RandomPatches, augmentation, flips
from medgen.transforms.spatial import SPACING_RTOL, from_model_grid, pad_amounts, pad_to, to_model_grid, unpad

GEOMETRY_TOLERANCE_MM = 1e-3
# Shared scaling (PET): the mean target / source ratio inside the body beyond which a pair is
# taken to be in different units (a real dose reduction keeps the mean; 1/4-dose counts would be 4x).
SHARED_UNITS_RATIO = 2.0
# Shared scaling: where the input passes this share of its window's top, the output blends into the
# input itself (all of it at the top and above), which the model's range cannot represent.
PASS_THROUGH_FROM = 0.9


def same_grid(a: MetaTensor, b: MetaTensor) -> bool:
    """Whether two volumes share shape and voxel -> world affine (within GEOMETRY_TOLERANCE_MM)."""
    return tuple(a.shape) == tuple(b.shape) and float((a.affine - b.affine).abs().max()) <= GEOMETRY_TOLERANCE_MM


def _read(path: Path) -> MetaTensor:
    from medgen.io import read

    return read(path)


def _user_error(exc: BaseException) -> BaseException | None:
    """The MedgenError that MONAI wrapped in a RuntimeError (``apply_transform``), if any."""
    while exc is not None:
        if isinstance(exc, MedgenError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def median_spacing(paths: Sequence, spatial_dims: int = 3) -> tuple[float, ...]:
    """Median voxel size (mm, RAS axes) of the volumes at ``paths``: the training grid of
    ``spacing: auto``. The first ``spatial_dims`` axes only (2D slices keep their own third)."""
    from medgen.io import voxel_spacing

    sizes = np.array([voxel_spacing(p)[:spatial_dims] for p in paths], dtype=np.float64)
    median = np.median(sizes, axis=0)
    off = sum(not np.allclose(row, median, rtol=SPACING_RTOL, atol=0) for row in sizes)
    if off:  # say so: a mixed folder is resampled, which a user may not expect
        shown = " x ".join(f"{v:.4g}" for v in median)
        note(f"{off} of the {len(sizes)} training volumes are resampled to their median voxel size "
             f"{shown} mm (data.spacing=auto)")
    return tuple(float(v) for v in median)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class _Unwrapped(Dataset):
    """A MONAI dataset whose user errors (InputError) surface as themselves, not RuntimeError."""

    def __init__(self, build):
        try:
            self.base = build()
        except RuntimeError as e:
            raise (_user_error(e) or e) from None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        try:
            return self.base[index]
        except RuntimeError as e:
            err = _user_error(e)
            if err is None:
                raise
            raise err from None


class _Select(Dataset):
    """Items of ``base`` restricted to ``keys`` (and plain tensors instead of MetaTensors)."""

    def __init__(self, base: Dataset, keys: Sequence[str]):
        self.base, self.keys = base, list(keys)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        out = {}
        for k in self.keys:
            if k not in item:
                continue
            v = item[k]
            out[k] = v.as_tensor() if isinstance(v, MetaTensor) else v
        return out


class _VolumeModule(DataModule):
    """Shared grid/intensity handling of :class:`PairedVolumes` and :class:`Volumes`."""

    image_keys: tuple[str, ...] = ()

    def __init__(self, root, modality: str, spacing, patch_size, patches_per_volume: int, batch_size: int,
                 val_fraction: float, test_fraction: float, split_seed: int, cache: bool, cache_workers: int = 1):
        if modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {MODALITIES}, got {modality!r}")
        self.root = Path(root)
        self.modality = modality
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) not in (2, 3):
            raise ConfigError(f"patch_size must have 2 or 3 entries, got {patch_size}")
        self.spatial_dims = len(self.patch_size)
        self._auto_spacing = spacing == "auto"
        if self._auto_spacing:
            spacing = None  # resolved from the training subjects in setup()
        elif spacing is not None:
            spacing = tuple(float(s) for s in (spacing if isinstance(spacing, (list, tuple)) else [spacing] * self.spatial_dims))
            if len(spacing) != self.spatial_dims:
                raise ConfigError(f"spacing {spacing} must have {self.spatial_dims} entries like patch_size")
        self.spacing = spacing
        self.patches_per_volume = int(patches_per_volume)
        self.batch_size = int(batch_size)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.cache = bool(cache)
        self.cache_workers = int(cache_workers)
        self.splits: dict[str, list[dict]] | None = None
        self._datasets: dict[str, Dataset] = {}
        self._train_windows: dict[str, tuple[float, float]] = {}  # training subject -> window (raw units)

    # --- intensity windows of the training subjects ----------------------------------------
    def _record_window(self, subject: str, params: dict) -> None:
        """Keep a training subject's intensity window (called as it is loaded)."""
        if self.splits is not None and any(i["subject"] == subject for i in self.splits["train"]):
            self._train_windows[subject] = (float(params["low"]), float(params["high"]))

    def _training_windows(self) -> np.ndarray:
        """``(n, 2)`` windows of the training subjects, loading those not loaded yet."""
        train = self._split("train")
        if any(i["subject"] not in self._train_windows for i in train):
            dataset = self._volumes("train")
            for index in range(len(dataset)):
                if train[index]["subject"] not in self._train_windows:
                    dataset[index]
        return np.asarray([self._train_windows[i["subject"]] for i in train if i["subject"] in self._train_windows],
                          dtype=np.float64).reshape(-1, 2)

    # --- discovery and split ---------------------------------------------------------------
    def _discover(self) -> list[dict]:
        raise NotImplementedError

    def setup(self) -> None:
        if self.splits is not None:  # done: `train` sets the data up before the engine does
            return
        items = self._discover()
        self.splits = self._split_items(items)
        self.splits["all"] = sorted(items, key=lambda i: i["subject"])  # `medgen evaluate` on a whole folder
        if self._auto_spacing and self.spacing is None:
            self.spacing = median_spacing(self._grid_paths(self.splits["train"] or self.splits["all"]), self.spatial_dims)

    def _split_items(self, items: list[dict]) -> dict[str, list[dict]]:
        """``{"train", "val", "test"}``: the items split by subject."""
        train, val, test = split_subjects([i["subject"] for i in items], self.val_fraction, self.test_fraction,
                                          self.split_seed)
        by_name = {i["subject"]: i for i in items}
        return {name: [by_name[s] for s in ids] for name, ids in (("train", train), ("val", val), ("test", test))}

    def _grid_paths(self, items: list[dict]) -> list:
        """The volumes whose voxel sizes set the grid of ``spacing: auto`` (the model's inputs)."""
        return [i[self._grid_key()] for i in items]

    def _grid_key(self) -> str:
        """The key whose volumes set the grid (the model's input)."""
        raise NotImplementedError

    def describe(self) -> str:
        counts = {name: len(self.splits.get(name) or []) for name in ("train", "val", "test")}
        split = f"{counts['train']} train / {counts['val']} validation" + (f" / {counts['test']} test" if counts["test"] else "")
        grid = ("native grid" if self.spacing is None
                else "grid " + "x".join(f"{v:.3g}" for v in self.spacing) + " mm" + (" (auto: median)" if self._auto_spacing else ""))
        patch = "x".join(str(p) for p in self.patch_size)
        return f"{len(self.splits['all'])} subjects in {self.root}: {split}; {grid}; patches {patch}"

    def resolved_settings(self) -> dict[str, Any]:
        """``spacing: auto`` as the voxel size ``setup()`` chose, for the run's saved config."""
        if self._auto_spacing and self.spacing is not None:
            return {"spacing": [round(v, 6) for v in self.spacing]}
        return {}

    def _split(self, name: str) -> list[dict]:
        if self.splits is None:
            self.setup()
        return self.splits[name]

    def _volumes(self, name: str) -> Dataset:
        if name not in self._datasets:
            items = self._split(name)
            loader = _LoadSubject(self)
            if self.cache and items:
                # Checked on the cache's first volume, before the others fill memory.
                loader.on_first = lambda first, n=len(items), split=name: self._check_cache_memory(first, n, split)
                ds = _Unwrapped(lambda: CacheDataset(items, transform=loader, cache_rate=1.0,
                                                     num_workers=self.cache_workers, progress=False))
            else:
                ds = _Unwrapped(lambda: MonaiDataset(items, transform=loader))
            self._datasets[name] = ds
        return self._datasets[name]

    def _check_cache_memory(self, first: dict, n: int, split: str) -> None:
        """Say so before caching the split would exhaust memory (the system would kill the run
        without a word): ``n`` volumes like ``first``, plus the patch sampler's voxel indices."""
        per_volume = sum(v.numel() * v.element_size() for v in first.values() if torch.is_tensor(v))
        if split == "train":  # int64 foreground/background indices of each sampled volume
            per_volume += 8 * sum(v.numel() for k, v in first.items() if k.startswith("fg") and torch.is_tensor(v))
        need, free = per_volume * n, available_memory()
        if free is not None and need > 0.8 * free:
            note(f"caching {n} volumes ({split} split) needs about {need / 2**30:.1f} GiB, more than the "
                 f"{free / 2**30:.1f} GiB of memory available, so the run may be killed: use a coarser grid "
                 f"(data.spacing=[2,2,2]), fewer subjects, or data.cache=false (slower: every patch reads its volume)")

    def _eval_keys(self) -> list[str]:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        return _Select(self._volumes("val"), self._eval_keys())

    def test_dataset(self) -> Dataset:
        return _Select(self._volumes("test"), self._eval_keys())

    def all_dataset(self) -> Dataset:
        """Whole volumes of every subject, whatever the split (for `medgen evaluate DIR`)."""
        return _Select(self._volumes("all"), self._eval_keys())

    # --- one volume -----------------------------------------------------------------------
    def _spatial(self, volume: MetaTensor, where) -> MetaTensor:
        if volume.ndim != 3:
            raise InputError(where, f"expected a 3D volume, got shape {tuple(volume.shape)}")
        if self.spatial_dims == 2 and volume.shape[2] != 1:
            raise InputError(where, f"patch_size is 2D but the volume is 3D {tuple(volume.shape)}: use a 3D patch_size")
        return volume

    def _grid(self, volume: MetaTensor, mode: str = "bilinear") -> MetaTensor:
        if self._auto_spacing and self.spacing is None:
            self.setup()
        return to_model_grid(volume, self.spacing, mode)

    def _finish(self, tensor: torch.Tensor, pads, value: float) -> torch.Tensor:
        """(X, Y, Z) on the model grid -> (1, *spatial) padded tensor."""
        t = tensor.as_tensor() if isinstance(tensor, MetaTensor) else torch.as_tensor(tensor)
        if self.spatial_dims == 2:
            t = t[..., 0]
        return pad_to(t[None].float(), pads, value)

    def _pads(self, grid_shape) -> list[tuple[int, int]]:
        shape = grid_shape[:2] if self.spatial_dims == 2 else grid_shape
        return pad_amounts(shape, self.patch_size)

    def _mask(self, grid: MetaTensor) -> torch.Tensor:
        return torch.from_numpy(foreground_mask(grid.as_tensor()))

    def preprocess(self, volume: torch.Tensor, modality: str | None = None) -> tuple[torch.Tensor, dict]:
        """One raw input volume (``medgen.io.read`` result) -> ``((1, *spatial) tensor, state)``;
        ``modality`` overrides the module's (a two-modality module names its input's)."""
        where = (getattr(volume, "meta", {}) or {}).get("filename_or_obj", "input")
        if not isinstance(volume, MetaTensor):
            volume = MetaTensor(torch.as_tensor(volume, dtype=torch.float32), affine=torch.eye(4, dtype=torch.float64))
        v = self._model_space(self._spatial(volume, where), modality)
        state = {"params": v["params"], "output_params": self._output_params(v["params"]), "pads": v["pads"],
                 "model_affine": v["grid"].affine.clone(), "reference": v["raw"]}
        return v["image"], state

    def _output_params(self, params: dict) -> dict:
        return params

    def _intensity_params(self, volume: torch.Tensor, mask, modality: str | None = None) -> dict:
        """Normalisation of an input volume (training and inference alike)."""
        return intensity_params(volume, modality or self.modality, mask)

    def _model_space(self, raw: MetaTensor, modality: str | None = None) -> dict:
        """One raw volume through the pipeline (training and inference alike): ``{"raw", "grid"``
        (MetaTensors), ``"params"`` (its intensity window), ``"pads"``, ``"image"`` ``(1, *spatial)``
        in model space, ``"fg"`` (its foreground, float)``}``."""
        grid = self._grid(raw)
        fg = self._mask(grid)
        params = self._intensity_params(grid.as_tensor(), fg.numpy(), modality)
        pads = self._pads(tuple(grid.shape))
        return {"raw": raw, "grid": grid, "params": params, "pads": pads, "fg": self._finish(fg.float(), pads, 0.0),
                "image": self._finish(apply_intensity(grid.as_tensor(), params), pads, -1.0)}

    def _load_volume(self, path, modality: str | None = None) -> dict:
        """:meth:`_model_space` of the volume at ``path``."""
        return self._model_space(self._spatial(_read(path), path), modality)

    def _load_labels(self, path, image: MetaTensor, subject: str, key: str) -> torch.Tensor:
        """A mask or label map that must share ``image``'s raw grid, on the model grid (nearest)."""
        vol = self._spatial(_read(path), path)
        if not same_grid(vol, image):
            raise InputError(path, f"subject '{subject}': '{key}' does not share the grid of its image "
                                   f"(shape {tuple(vol.shape)} vs {tuple(image.shape)})")
        return self._grid(vol, mode="nearest").as_tensor()

    def postprocess(self, output: torch.Tensor, state: dict, intensity: bool = True, mode: str = "bilinear") -> MetaTensor:
        """A model output ``(1, *spatial)`` (or ``(1, 1, *spatial)``) back to the input's units
        (unless ``intensity=False``, e.g. for anomaly maps) and onto the input's grid
        (``mode="nearest"`` for label maps)."""
        out = torch.as_tensor(output).detach().float().cpu()
        while out.ndim > self.spatial_dims + 1:
            out = out[0]
        out = unpad(out, state["pads"])[0]
        if intensity:
            out = invert_intensity(out, state["output_params"])
        if self.spatial_dims == 2:
            out = out[..., None]
        return from_model_grid(out, state["model_affine"], state["reference"], mode)


def pass_through_above(output: MetaTensor, reference, high: float, start: float = PASS_THROUGH_FROM) -> MetaTensor:
    """``output`` where ``reference`` (the input, same grid and units) is below ``start * high``,
    the input itself from ``high`` up, a linear blend between.

    Why: model space ends at the window's top (2 x p99.5 of the input's body for PET), so a model
    can neither see nor produce more: whole-body PET's bladder, kidneys and hottest lesions would
    come back capped there, and with them the SUVmax a reader measures. Where the input is that
    hot it also holds the most counts, so the measurement itself is the estimate with the least
    relative noise. Brain PET stays below: the benchmark's volumes peak at 0.61-0.84 of the top.
    """
    ref = (reference.as_tensor() if isinstance(reference, MetaTensor) else torch.as_tensor(reference)).float()
    weight = torch.nan_to_num(((ref - start * high) / ((1.0 - start) * high)).clamp(0.0, 1.0), nan=0.0)
    if not bool((weight > 0).any()):
        return output
    blended = output.as_tensor() * (1.0 - weight) + ref * weight
    return MetaTensor(blended, affine=output.affine, meta=dict(output.meta))


class _LoadSubject(Transform):
    """Read, check, resample, normalise and pad one subject's volumes (the cached part)."""

    def __init__(self, module: _VolumeModule):
        self.module = module
        self.on_first = None  # called once with the first loaded subject

    def __call__(self, item: dict) -> dict:
        out = self.module._load(item)
        if self.on_first is not None:
            hook, self.on_first = self.on_first, None
            hook(out)
        return out


class PairedVolumes(_VolumeModule):
    """Paired volumes ``root/<subject>/{source_key,target_key}`` (e.g. low-dose -> full-dose PET).

    Train items ``{"source", "target"}`` (``(1, *patch)``); val/test items are whole volumes
    ``{"source", "target", "subject", "mask"}`` (``mask``: body foreground of the source, bool).
    ``augment`` flips training patches along random axes, source and target together.

    Intensities: ``modality`` sets the scheme (:mod:`medgen.transforms.intensity`). With
    ``share_scaling`` (default: True for PET) the target is scaled with the *source's* params,
    which are known at inference, so outputs map back exactly to the source's units. Otherwise
    the target gets its own params under ``target_modality`` (default ``modality``) -- e.g.
    MR T1 -> T2 (each volume its own percentile window) or MR -> CT (``target_modality="ct"``);
    outputs then map back with the CT window (exact HU) or, for MR and PET targets, with the
    *learned target window*: the median over the training subjects of their targets' windows
    (for MR the 0.5th and 99.5th percentiles inside the head), fitted once and saved with the run
    (``state_dict``). A synthetic T2 thus comes out in the units of a typical training T2; MR has
    no absolute units, so that is the only scale a missing contrast can have.

    A subject whose source and target differ in shape or geometry (affine beyond 1e-3 mm) is an
    ``InputError`` naming the subject.
    """

    def __init__(self, root, source_key: str = "low_dose", target_key: str = "full_dose", modality: str = "pet",
                 spacing="auto", patch_size=(32, 32, 32), patches_per_volume: int = 8, batch_size: int = 4,
                 val_fraction: float = 0.2, test_fraction: float = 0.0, split_seed: int = 0, cache: bool = True,
                 target_modality: str | None = None, share_scaling: bool | None = None, cache_workers: int = 1,
                 augment: bool = False):
        super().__init__(root, modality, spacing, patch_size, patches_per_volume, batch_size, val_fraction,
                         test_fraction, split_seed, cache, cache_workers)
        self.source_key, self.target_key = source_key, target_key
        self.augment = bool(augment)
        self.target_modality = target_modality or modality
        if self.target_modality not in MODALITIES:
            raise ConfigError(f"target_modality must be one of {MODALITIES}, got {self.target_modality!r}")
        if share_scaling is None:
            share_scaling = modality == "pet" and self.target_modality == "pet"
        self.share_scaling = bool(share_scaling)
        self.target_window: tuple[float, float] | None = None  # fitted (or loaded with a run)

    def _discover(self) -> list[dict]:
        return discover_paired(self.root, [self.source_key, self.target_key])

    @property
    def learns_target_window(self) -> bool:
        """Whether outputs map back with the training targets' window (an own-scaled MR or PET
        target: units that are not fixed like HU and not shared with the input)."""
        return not self.share_scaling and self.target_modality in ("mr", "pet")

    def fitted_target_window(self) -> tuple[float, float] | None:
        """The learned target window ``(low, high)``: loaded with a run, or the median over the
        training subjects' targets (loading those not loaded yet); None where not learned."""
        if not self.learns_target_window:
            return None
        if self.target_window is None:
            windows = self._training_windows()
            if not len(windows):
                return None
            low, high = np.median(windows, axis=0)
            self.target_window = (float(low), float(high))
        return self.target_window

    def state_dict(self) -> dict[str, Any]:
        window = self.fitted_target_window()
        return {"target_window": list(window)} if window is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        window = state.get("target_window")
        if window is not None:
            self.target_window = (float(window[0]), float(window[1]))

    def _grid_key(self) -> str:
        return self.source_key

    def _output_params(self, params: dict) -> dict:
        if self.share_scaling:
            return params
        window = self.fitted_target_window() if self.target_window is not None or self.splits else None
        if window is not None:
            return {"modality": self.target_modality, "low": window[0], "high": window[1], "clip": True}
        return output_params(self.target_modality, params)  # CT: exact HU; a run saved without a window: the input's

    def _load(self, item: dict) -> dict:
        subject_dir = self.root / item["subject"]
        src = self._spatial(_read(item[self.source_key]), item[self.source_key])
        tgt = self._spatial(_read(item[self.target_key]), item[self.target_key])
        if tuple(src.shape) != tuple(tgt.shape):
            raise InputError(subject_dir, f"subject '{item['subject']}': '{self.source_key}' shape {tuple(src.shape)} "
                                          f"differs from '{self.target_key}' shape {tuple(tgt.shape)}")
        diff = float((src.affine - tgt.affine).abs().max())
        if diff > GEOMETRY_TOLERANCE_MM:
            raise InputError(subject_dir, f"subject '{item['subject']}': '{self.source_key}' and '{self.target_key}' "
                                          f"have different geometry (affines differ by {diff:.3g} mm); resample them onto one grid")
        src, tgt = self._grid(src), self._grid(tgt)
        fg = self._mask(src)
        src_params = intensity_params(src.as_tensor(), self.modality, fg.numpy())
        if self.share_scaling:
            self._check_shared_units(src, tgt, fg, item["subject"])
            tgt_params = src_params
        else:
            tgt_params = intensity_params(tgt.as_tensor(), self.target_modality)  # its own foreground
            self._record_window(item["subject"], tgt_params)
        pads = self._pads(tuple(src.shape))
        return {
            "source": self._finish(apply_intensity(src.as_tensor(), src_params), pads, -1.0),
            "target": self._finish(apply_intensity(tgt.as_tensor(), tgt_params), pads, -1.0),
            "fg": self._finish(fg.float(), pads, 0.0),
            "mask": self._finish(fg.float(), pads, 0.0) > 0.5,
            "subject": item["subject"],
        }

    def _check_shared_units(self, src: MetaTensor, tgt: MetaTensor, fg: torch.Tensor, subject: str) -> None:
        """A shared scale needs both volumes in one unit: a low dose left at its fraction of the
        counts (1/4 the activity) would put the target beyond the model's range."""
        inside = fg.bool()
        if not inside.any():
            return
        s, t = float(src.as_tensor()[inside].double().mean()), float(tgt.as_tensor()[inside].double().mean())
        if s > 0 and t > 0 and 1 / SHARED_UNITS_RATIO <= t / s <= SHARED_UNITS_RATIO:
            return
        raise InputError(self.root / subject, f"subject '{subject}': mean '{self.target_key}' inside the body is "
                                              f"{t:.4g}, {t / s if s else float('inf'):.3g}x the '{self.source_key}' mean {s:.4g}; "
                                              f"both must be in the same units (e.g. kBq/ml: scale a low dose reconstructed "
                                              f"from a fraction of the counts back by 1/fraction)")

    def postprocess(self, output: torch.Tensor, state: dict, intensity: bool = True, mode: str = "bilinear") -> MetaTensor:
        """As :meth:`_VolumeModule.postprocess`; with shared scaling, voxels whose input lies near
        or above the window's top take the input's value (see :func:`pass_through_above`)."""
        out = super().postprocess(output, state, intensity, mode)
        if intensity and self.share_scaling:
            out = pass_through_above(out, state["reference"], state["params"]["high"])
        return out

    def train_dataset(self) -> Dataset:
        keys = ["source", "target"]
        # Flips only, applied to the pair together: no interpolation, which would smooth the very
        # noise (or texture) the model must learn to map.
        transform = flips(keys, self.spatial_dims) if self.augment else None
        return RandomPatches(self._volumes("train"), keys, self.patch_size, self.patches_per_volume, transform=transform)

    def _eval_keys(self) -> list[str]:
        return ["source", "target", "subject", "mask"]


class Volumes(_VolumeModule):
    """Single volumes ``root/<subject>/<key>`` (anomaly detection: train on normal scans).

    Intensities as :class:`PairedVolumes`' ``modality`` scheme, but values above the window are
    kept (only the dark end is clipped), so hyperintense anomalies keep their contrast.

    Train items ``{"image"}`` patches (optionally augmented: flips, small affine, intensity);
    val/test items ``{"image", "subject", "mask"}`` whole volumes, where ``mask`` is
    ``root/<subject>/<mask_key>`` when ``mask_key`` is given (e.g. ``"brain_mask"``) else the body
    foreground; with ``label_key`` (e.g. ``"lesion"``) also ``"label"`` (bool) for evaluation.
    """

    def __init__(self, root, key: str = "t1", modality: str = "mr", spacing="auto", patch_size=(32, 32, 32),
                 patches_per_volume: int = 8, batch_size: int = 8, val_fraction: float = 0.2, split_seed: int = 0,
                 cache: bool = True, augment: bool = False, test_fraction: float = 0.0, mask_key: str | None = None,
                 label_key: str | None = None, cache_workers: int = 1):
        super().__init__(root, modality, spacing, patch_size, patches_per_volume, batch_size, val_fraction,
                         test_fraction, split_seed, cache, cache_workers)
        self.key = key
        self.augment = bool(augment)
        self.mask_key, self.label_key = mask_key, label_key
        # the training scans' lowest value and windows (lowest low, median and highest high): fitted,
        # saved with the run, and what `medgen score` compares a new scan with (intensity_warning)
        self.intensity_range: dict[str, float] | None = None
        self._train_floors: dict[str, float] = {}  # subject -> lowest raw value (training subjects count)

    def _intensity_params(self, volume: torch.Tensor, mask, modality: str | None = None) -> dict:
        # Clip only the dark end: an anomaly brighter than every normal tissue (a FLAIR lesion)
        # must keep its contrast, not be flattened to the window's top like the brightest 0.5 %.
        params = super()._intensity_params(volume, mask, modality)
        return {**params, "clip": "low"} if params["clip"] else params

    def _discover(self) -> list[dict]:
        extra = [k for k in (self.mask_key, self.label_key) if k]
        return discover_volumes(self.root, self.key, extra)

    def _grid_key(self) -> str:
        return self.key

    def _load_mask(self, item: dict, key: str, image: MetaTensor, pads) -> torch.Tensor:
        mask = self._load_labels(item[key], image, item["subject"], key) > 0.5
        return self._finish(mask.float(), pads, 0.0) > 0.5

    def state_dict(self) -> dict[str, Any]:
        if self.intensity_range is None:
            windows = self._training_windows()
            if len(windows):
                train = {i["subject"] for i in self._split("train")}
                floor = min(v for k, v in self._train_floors.items() if k in train)
                self.intensity_range = {"floor": floor, "low": float(windows[:, 0].min()),
                                        "median_high": float(np.median(windows[:, 1])), "max_high": float(windows[:, 1].max())}
        return {"intensity_range": dict(self.intensity_range)} if self.intensity_range is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("intensity_range") is not None:
            self.intensity_range = {k: float(v) for k, v in state["intensity_range"].items()}

    def intensity_warning(self, volume, params: dict | None = None) -> str | None:
        """A sentence when a raw scan's intensities are unlike every training scan's: a CT in HU
        (air at -1000) scored by a model of MR scans (never below 0), or a contrast on another
        scale. Scores only compare like with like. None when it fits or the run saved no range.
        ``params``: the scan's window as ``preprocess`` found it (computed here when not given)."""
        r = self.intensity_range
        if r is None or self.modality in ("ct", "none"):
            return None
        values = torch.as_tensor(volume).reshape(-1)[::7].float()  # a sample is enough for percentiles
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            return None
        floor = float(torch.quantile(values, 0.01))
        if params is None:
            params = self._intensity_params(torch.as_tensor(volume), None)
        span = max(r["median_high"] - r["low"], 1e-6)
        negative = floor < r["floor"] - 0.5 * span and floor < -100  # HU-like air below anything in training
        scale = params["high"] > 10 * r["max_high"] or params["high"] < 0.1 * r["median_high"]
        if not (negative or scale):
            return None
        return (f"intensities from {floor:.4g} (1st percentile) up to {params['high']:.4g} are unlike the training "
                f"scans' ({r['floor']:.4g} at the lowest, typically {r['low']:.4g}..{r['median_high']:.4g}): a "
                f"different modality or contrast? Its score is not comparable with theirs")

    def _load(self, item: dict) -> dict:
        v = self._load_volume(item[self.key])
        self._record_window(item["subject"], v["params"])
        self._train_floors[item["subject"]] = float(torch.nan_to_num(v["raw"].as_tensor(), nan=0.0).min())
        out = {
            "image": v["image"],
            "fg": v["fg"],
            "mask": self._load_mask(item, self.mask_key, v["raw"], v["pads"]) if self.mask_key else v["fg"] > 0.5,
            "subject": item["subject"],
        }
        if self.label_key:
            out["label"] = self._load_mask(item, self.label_key, v["raw"], v["pads"])
        return out

    def train_dataset(self) -> Dataset:
        transform = augmentation(["image"], self.spatial_dims) if self.augment else None
        return RandomPatches(self._volumes("train"), ["image"], self.patch_size, self.patches_per_volume,
                             transform=transform)

    def _eval_keys(self) -> list[str]:
        return ["image", "subject", "mask"] + (["label"] if self.label_key else [])

