"""From a config to a trained run, and from a run back to a usable model.

* :func:`build_task` — the task's data module and model from ``config.data``/``config.model``;
* :func:`train` — seed, build, :class:`~medgen.engine.trainer.Trainer` ``.fit()``; returns the run id
  (the function behind ``medgen train`` and the pipelines);
* :func:`load_task` — a checkpoint file or an MLflow run id back to (model, data, config, checkpoint).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from medgen.config import Config, config_from_dict
from medgen.engine.checkpoint import load_checkpoint, seed_everything
from medgen.errors import ConfigError, InputError

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _construct(section: str, cls: type, settings: dict[str, Any]):
    """``cls(**settings)``; a value the constructor refuses (e.g. ``data.modality=xx``: its
    checks raise ConfigError, the networks it builds ValueError) is a one-line ConfigError naming
    the section, not a traceback. Settings that do not fit the signature are one too, checked
    before the call, so that a TypeError from a bug inside it stays a traceback."""
    import inspect

    # Settings a class no longer has (``retired_settings``: name -> the value that meant "off"):
    # a run saved before their removal still loads when it left them off; one that used them
    # cannot be rebuilt as it was trained, which is a clear error rather than a different model.
    retired = getattr(cls, "retired_settings", {})
    for name in [n for n in settings if n in retired]:
        if settings[name] != retired[name]:
            raise ConfigError(f"{section}.{name} was removed (it did not help in the benchmarks); this run used "
                              f"{name}={settings[name]!r} and cannot be rebuilt by this version")
        settings = {k: v for k, v in settings.items() if k != name}
    try:
        inspect.signature(cls).bind(**settings)
    except TypeError as e:
        raise ConfigError(f"{section}: {e}") from None
    try:
        return cls(**settings)
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"{section}: {e}") from None


def set_up_data(config: Config, data) -> None:
    """``data.setup()`` (once: it does its work the first time), and the settings it decides
    (``spacing: auto``, the genes kept) into ``config.data``, so inference and `medgen evaluate`
    on other folders use the training's."""
    data.setup()
    config.data.update(data.resolved_settings())


def build_task(config: Config, setup: bool = False):
    """(model, data) for ``config.task``; ``model.roi_size`` = the data's patch size.

    setup: set the data up first (training): what it decides -- ``resolved_settings()`` and the
    model's ``model_settings()`` (e.g. the number of input genes) -- goes into ``config`` before
    the model is built, so the saved config rebuilds the same model without the data.
    """
    from medgen.models.registry import get_model_class

    model_cls = get_model_class(config.task)
    data = _construct("data", model_cls.data_module, config.data)
    _check_spatial_dims(model_cls, config, data)
    if setup:
        set_up_data(config, data)
        config.model.update(_accepted(model_cls, data.model_settings()))
    model = _construct("model", model_cls, config.model)
    patch = getattr(data, "patch_size", None)
    if patch is not None:
        model.roi_size = tuple(int(p) for p in patch)
        from medgen.models.slices import network_patch

        model.check_patch(network_patch(getattr(model, "spatial_dims", None), model.roi_size))
    return model, data


def _accepted(model_cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """The data-decided model settings the model's constructor takes (a data module serves several
    models: the CT window CycleGAN reports errors in means nothing to another model of that data)."""
    import inspect

    params = inspect.signature(model_cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(settings)
    return {k: v for k, v in settings.items() if k in params}


def _check_spatial_dims(model_cls: type, config: Config, data) -> None:
    """The number of spatial dimensions has one source, the patch size: a model that also names
    it must agree (a 3D network on 2D patches would fail deep inside a convolution)."""
    import inspect

    patch = getattr(data, "patch_size", None)
    param = inspect.signature(model_cls).parameters.get("spatial_dims")
    if patch is None or param is None:
        return
    from medgen.models.slices import is_slice_mode

    dims = config.model.get("spatial_dims", param.default)
    if dims is not inspect.Parameter.empty and is_slice_mode(int(dims), patch):
        return  # a 2D network on the slices of volumes: data.patch_size [X, Y, 1]
    if dims is not inspect.Parameter.empty and int(dims) != len(patch):
        raise ConfigError(f"model.spatial_dims={dims} but data.patch_size={list(patch)} has {len(patch)} "
                          f"entries; give both the same number of dimensions (or data.patch_size=[X,Y,1] for a 2D model "
                          f"on the slices of volumes)")


def train(config: Config, report: Callable[[str], None] | None = None) -> str:
    """Train ``config.task`` as configured; returns the MLflow run id.

    report: called with the trainer's lines for the user (start, validations, end; see
    :class:`~medgen.engine.trainer.Trainer`); ``medgen train`` prints them on stderr.
    """
    from medgen.engine.trainer import Trainer

    seed_everything(config.trainer.seed)  # the model's initial weights depend on the seed
    model, data = build_task(config, setup=True)
    return Trainer(config, model, data, report=report).fit()


def resolve_checkpoint(run_or_ckpt: str | Path, tracking_uri: str | None, dst_dir: str | Path) -> Path:
    """A checkpoint file as given, or the run's checkpoints/best.pt (else last.pt) downloaded."""
    text = str(run_or_ckpt)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            for name in ("best.pt", "last.pt"):
                if (path / name).is_file():
                    return path / name
            raise InputError(path, "folder has no best.pt or last.pt")
        return path
    if not _RUN_ID.match(text):
        raise InputError(text, "no such checkpoint file (and not an MLflow run id)")
    from medgen.tracking import MLflowTracker

    return MLflowTracker(tracking_uri).download_checkpoint(text, dst_dir)


def _native_grid_if_unsaved(saved: dict[str, Any]) -> dict[str, Any]:
    """Training saves the grid ``data.spacing: auto`` chose. A run saved before that setting
    existed trained on native grids: keep it so rather than fall back to "auto", which would
    need the training folder."""
    from medgen.config import signature_defaults
    from medgen.models.registry import get_model_class

    if "spacing" in signature_defaults(get_model_class(saved["task"]).data_module):
        saved["data"].setdefault("spacing", None)
    return saved


def _model_overrides(saved: dict[str, Any], overrides) -> dict[str, Any]:
    """The saved config with ``model.KEY=VALUE`` settings changed (inference-time settings such
    as ``model.flip_ensemble=false``); any other section would no longer describe the run."""
    from medgen.config import apply_overrides, parse_override

    for text in overrides:
        parts, _ = parse_override(text)
        if parts[0] != "model" or len(parts) != 2:
            raise ConfigError(f"--set {text}: only model.KEY=VALUE settings can change after training "
                              f"(e.g. model.flip_ensemble=false)")
    return apply_overrides(saved, list(overrides))


def load_task(run_or_ckpt: str | Path, tracking_uri: str | None = None, device: str = "auto", overrides=()):
    """(model, data, config, checkpoint) from a checkpoint file or an MLflow run id.

    The model holds the checkpoint's weights and extra state, in eval mode on `device`
    ("auto" = CUDA when present). The data module is constructed but not set up (its training
    folder need not exist where the model is used); it holds the state its training fitted.
    ``overrides``: ``model.KEY=VALUE`` settings that leave the trained network as it is.
    """
    from medgen.engine.trainer import resolve_device

    with tempfile.TemporaryDirectory(prefix="medgen-ckpt-") as tmp:
        ckpt: dict[str, Any] = load_checkpoint(resolve_checkpoint(run_or_ckpt, tracking_uri, tmp))
    config = config_from_dict(_model_overrides(_native_grid_if_unsaved(ckpt["config"]), overrides))
    model, data = build_task(config)
    if ckpt.get("data"):
        data.load_state_dict(ckpt["data"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        if not overrides:
            raise
        raise ConfigError(f"--set {' '.join(overrides)}: the trained weights no longer fit the network; "
                          f"only settings that keep the network as trained can change") from None
    model.load_extra_state(ckpt.get("extra") or {})
    model.to(resolve_device(device))
    model.eval()
    return model, data, config, ckpt
