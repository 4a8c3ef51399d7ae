"""The base of every volume data module (:class:`VolumeDataModule`): paired translation
(:mod:`.paired`), single volumes (:mod:`.volumes`), unpaired domains (:mod:`.unpaired`) and
domain adaptation (:mod:`.domain`) build on it.

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

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from monai.data import CacheDataset, Dataset as MonaiDataset, MetaTensor
from monai.transforms import Transform
from torch.utils.data import Dataset

from medgen.data.module import DataModule
from medgen.data.splits import split_subjects, split_summary
from medgen.errors import ConfigError, InputError, MedgenError
from medgen.notes import note
from medgen.system import available_memory
from medgen.transforms.intensity import MODALITIES, apply_intensity, intensity_params, invert_intensity
from medgen.transforms.masks import foreground_mask
from medgen.transforms.spatial import SPACING_RTOL, from_model_grid, pad_amounts, pad_to, to_model_grid, unpad

GEOMETRY_TOLERANCE_MM = 1e-3


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


HU_AIR = -500.0  # below any MR or PET value: air and lung in Hounsfield units
CT_AIR_SHARE = 0.01  # a CT's field of view holds air (or its padding): at least 1 % of its voxels


def looks_like_ct(volume) -> bool:
    """Whether ``volume``'s values are Hounsfield units: a CT holds air at about -1000 HU (and
    padding below it) in at least :data:`CT_AIR_SHARE` of its voxels; MR and PET have none."""
    v = np.asarray(volume.as_tensor() if isinstance(volume, MetaTensor) else volume)
    return bool(np.mean(v <= HU_AIR) >= CT_AIR_SHARE)


def guess_modality(paths: Sequence) -> str:
    """``modality: auto``: ``"ct"`` when the volumes at ``paths`` hold Hounsfield units, else
    ``"mr"`` (its per-volume window also suits any other arbitrary-unit scan). Volumes that
    disagree are a configuration error: one intensity scheme serves the whole run."""
    kinds = {str(p): "ct" if looks_like_ct(_read(p)) else "mr" for p in paths}
    found = sorted(set(kinds.values()))
    if len(found) > 1:
        ct, mr = (next(p for p, k in kinds.items() if k == kind) for kind in ("ct", "mr"))
        raise ConfigError(f"data.modality=auto: {ct} holds Hounsfield units (CT) but {mr} does not; set "
                          "data.modality=ct or mr")
    return found[0] if found else "mr"


class VolumeDataModule(DataModule):
    """The volume pipeline every volume task shares (grid, foreground, intensity window, padding,
    split by subject, cached whole volumes); a task's module adds its layout (``_discover``), what
    one subject holds (``_load``), its training patches and evaluation keys.

    Constructor settings are keyword-only, so a subclass passes on what it does not change by
    name, and each subclass's signature keeps the defaults a config maps onto.
    """

    image_keys: tuple[str, ...] = ()
    auto_modality = False  # whether ``modality: auto`` is offered (one intensity scheme for every input)
    auto_modality_samples = 2  # training volumes read (per domain, where a module has two) to decide it

    def __init__(self, root, *, modality: str, spacing, patch_size, patches_per_volume: int, batch_size: int,
                 val_fraction: float, test_fraction: float, split_seed: int, cache: bool, cache_workers: int = 1):
        offered = MODALITIES + (("auto",) if self.auto_modality else ())
        if modality not in offered:
            raise ConfigError(f"modality must be one of {offered}, got {modality!r}")
        self.root = Path(root)
        self._auto_modality = modality == "auto"
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
        if self.modality == "auto":
            self.modality = guess_modality(self._modality_paths(self.splits["train"] or self.splits["all"]))

    def _modality_paths(self, items: list[dict]) -> list:
        """The volumes ``modality: auto`` reads: the first training inputs."""
        return self._grid_paths(items)[: self.auto_modality_samples]

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
        split = split_summary(counts)
        grid = ("native grid" if self.spacing is None
                else "grid " + "x".join(f"{v:.3g}" for v in self.spacing) + " mm" + (" (auto: median)" if self._auto_spacing else ""))
        patch = "x".join(str(p) for p in self.patch_size)
        kind = f"; intensities {self.modality} (auto: {'Hounsfield units' if self.modality == 'ct' else 'no HU'})" \
            if self._auto_modality else ""
        return f"{len(self.splits['all'])} subjects in {self.root}: {split}; {grid}; patches {patch}{kind}"

    def resolved_settings(self) -> dict[str, Any]:
        """``spacing: auto`` as the voxel size and ``modality: auto`` as the scheme ``setup()``
        chose, for the run's saved config."""
        out: dict[str, Any] = {}
        if self._auto_spacing and self.spacing is not None:
            out["spacing"] = [round(v, 6) for v in self.spacing]
        if self._auto_modality and self.modality != "auto":
            out["modality"] = self.modality
        return out

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
                 "model_affine": v["grid"].affine.clone(), "reference": v["raw"], "fg": v["fg"] > 0.5}
        return v["image"], state

    def mask_to_model_space(self, mask: torch.Tensor, state: dict) -> torch.Tensor:
        """A raw mask on the grid of the volume ``preprocess`` gave `state` for (same shape,
        whatever the mask's own header says) onto the model grid, padded like it: ``(*spatial)`` bool."""
        if tuple(mask.shape) != tuple(state["reference"].shape):
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from the scan's {tuple(state['reference'].shape)}")
        plain = mask.as_tensor() if isinstance(mask, MetaTensor) else torch.as_tensor(mask)
        grid = to_model_grid(MetaTensor(plain.float(), affine=state["reference"].affine), self.spacing, "nearest")
        return self._finish(grid, state["pads"], 0.0)[0] > 0.5

    def _output_params(self, params: dict) -> dict:
        return params

    def _intensity_params(self, volume: torch.Tensor, mask, modality: str | None = None) -> dict:
        """Normalisation of an input volume (training and inference alike)."""
        if modality is None and self.modality == "auto":
            self.setup()  # decided on the training scans, never per input (a run saved it resolved)
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


class _LoadSubject(Transform):
    """Read, check, resample, normalise and pad one subject's volumes (the cached part)."""

    def __init__(self, module: VolumeDataModule):
        self.module = module
        self.on_first = None  # called once with the first loaded subject

    def __call__(self, item: dict) -> dict:
        out = self.module._load(item)
        if self.on_first is not None:
            hook, self.on_first = self.on_first, None
            hook(out)
        return out
