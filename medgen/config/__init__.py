"""Run configuration: YAML -> typed sections, `key=value` overrides, strict key checking.

A config has the sections ``task``, ``data``, ``model``, ``optim``, ``trainer`` and ``tracking``.
Defaults live in exactly one place: ``optim``/``trainer``/``tracking`` are the dataclasses below;
``data`` and ``model`` map onto the constructor of the task's data module and model class, whose
signatures hold their defaults. Any key that matches nothing is an error naming it.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medgen.errors import ConfigError, InputError

SECTIONS = ("task", "data", "model", "optim", "trainer", "tracking")


@dataclass
class OptimConfig:
    """Learning-rate schedule and clipping, applied by the engine to every optimiser.

    Learning rates and betas belong to the model (it owns its optimisers, as in its paper).
    """

    lr_policy: str = "linear"  # "constant" | "linear": constant, then linear decay to zero (pix2pix/CycleGAN)
    constant_epochs: int | None = None  # epochs at the initial rate before decay; None = half of max_epochs
    grad_clip: float | None = None  # max global grad norm per optimiser step; None = off


@dataclass
class TrainerConfig:
    """The engine's loop: devices, epochs, validation, checkpoints."""

    max_epochs: int = 100
    steps_per_epoch: int | None = None  # cap on batches per epoch; None = one pass over the data
    max_minutes: float | None = None  # wall-clock budget of the run, final validation included (it is estimated at the first)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = True  # mixed precision, used on CUDA only (it is far slower on CPU)
    seed: int = 0
    # Overhead is scheduled by time (medgen.engine.budget): validation after the first epoch,
    # then whenever everything but training steps stays within overhead_share of the wall time,
    # and always at the end; checkpoints at most every checkpoint_minutes and at the end. An
    # epoch interval set here (val_every / checkpoint_every) replaces the time rule.
    val_every: int | None = None  # epochs between validations; None = by overhead_share; 0 = never
    overhead_share: float = 0.06  # share of the wall time all but training steps may take (val_every None)
    checkpoint_every: int | None = None  # epochs between last.pt/best.pt writes; None = by minutes
    checkpoint_minutes: float = 5.0  # minutes between checkpoint writes (checkpoint_every None)
    best_metric: str | None = None  # e.g. "val/psnr"; None = the model's default
    best_mode: str | None = None  # "max" | "min"; None = inferred from the metric name
    log_seconds: float = 10.0  # epoch metrics are written at most this often (and at every validation)
    fid_slices: int = 8  # 2.5D slices per volume for validation FID; 0 disables FID
    fid_during_training: bool = False  # FID at every validation; False = at the final one only
    val_images: bool = True  # log a PNG slice grid at each validation
    num_workers: int = 0
    resume: str | None = None  # checkpoint path to resume from (continues its MLflow run)
    checkpoint_dir: str = "checkpoints"
    # Each checkpoint goes to the MLflow run's artifacts and to checkpoint_dir/<run>/ (the copy
    # trainer.resume reads); False keeps only MLflow's, for big models on a small disk.
    local_checkpoints: bool = True
    progress: bool = True


@dataclass
class TrackingConfig:
    """Where runs are logged. uri=None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."""

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None  # None = the task name
    run_name: str | None = None
    register_model: bool = True  # register the final generator under the task's name
    log_model: bool = True
    # Paths in MLflow params (data.root, checkpoint_dir, the store's file) and the run's name:
    # False logs them relative to the working folder, or as a hash outside it, since folder
    # names at hospitals often carry patient names or IDs (medgen.tracking.paths).
    log_paths: bool = False


@dataclass
class Config:
    task: str
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "data": dict(self.data),
            "model": dict(self.model),
            "optim": dataclasses.asdict(self.optim),
            "trainer": dataclasses.asdict(self.trainer),
            "tracking": dataclasses.asdict(self.tracking),
        }

    def flat(self) -> dict[str, Any]:
        """`section.key` -> value, for MLflow params."""
        return flatten(self.to_dict())


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`trainer.max_epochs=3` -> (["trainer", "max_epochs"], 3). Values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-2" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(path, "a config must be a mapping of sections")
    return data


def _check_type(where: str, value: Any, annotation: Any) -> Any:
    """Light type check/coercion for values from YAML or the command line."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    if isinstance(annotation, str):  # postponed annotations on plain classes
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(where, value, a)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{where}: bad value {value!r}")
    if origin in (list, tuple, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value) if origin is list else tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if annotation is int and isinstance(value, bool):
            raise ConfigError(f"{where}: expected int, got {value!r}")
        if not isinstance(value, annotation):
            if annotation is str and isinstance(value, (int, float)):
                return str(value)
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def unknown_key_error(section: str, key: str, known) -> ConfigError:
    """``unknown config key trainer.max_minute: did you mean trainer.max_minutes? (known: ...)``."""
    import difflib

    known = sorted(known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
    hint = f": did you mean {section}.{close[0]}?" if close else ""
    return ConfigError(f"unknown config key {section}.{key}{hint} (known: {', '.join(known)})")


def _dataclass_section(name: str, cls: type, values: dict[str, Any]):
    if not isinstance(values, dict):
        raise ConfigError(f"section {name!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise unknown_key_error(name, key, known)
    return cls(**{k: _check_type(f"{name}.{k}", v, hints[k]) for k, v in values.items()})


def signature_defaults(target: Any) -> dict[str, Any]:
    """Keyword parameters of a class constructor (or function) and their defaults."""
    sig = inspect.signature(target)
    return {
        n: p.default
        for n, p in sig.parameters.items()
        if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_against_signature(section: str, values: dict[str, Any], target: Any) -> dict[str, Any]:
    """Validate `values` as keyword arguments of `target`; return them type-checked."""
    if not isinstance(values, dict):
        raise ConfigError(f"section {section!r} must be a mapping")
    sig = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - unresolved forward refs: skip type checks
        hints = {}
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    out = {}
    for key, value in values.items():
        if key not in params or params[key].kind not in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            raise unknown_key_error(section, key, signature_defaults(target))
        out[key] = _check_type(f"{section}.{key}", value, hints.get(key, inspect.Parameter.empty))
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in out
    ]
    if missing:
        raise ConfigError(f"missing required config key {section}.{missing[0]}")
    return out


def build_config(raw: dict[str, Any], task: str | None = None) -> Config:
    """Validate a raw mapping into a Config. `task` (from the command line) wins over raw['task']."""
    raw = dict(raw)
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"unknown config section {key!r} (known: {', '.join(SECTIONS)})")
    task = task or raw.get("task")
    if not task:
        raise ConfigError("no task given (set `task:` in the config or name it on the command line)")
    if raw.get("task") and raw["task"] != task:
        raise ConfigError(f"config is for task {raw['task']!r}, not {task!r}")

    from medgen.models.registry import get_model_class  # late: the registry imports the models

    model_cls = get_model_class(task)
    data = check_against_signature("data", raw.get("data") or {}, model_cls.data_module)
    model = check_against_signature("model", raw.get("model") or {}, model_cls)
    return Config(
        task=task,
        data=data,
        model=model,
        optim=_dataclass_section("optim", OptimConfig, raw.get("optim") or {}),
        trainer=_dataclass_section("trainer", TrainerConfig, raw.get("trainer") or {}),
        tracking=_dataclass_section("tracking", TrackingConfig, raw.get("tracking") or {}),
    )


def load_config(path: str | Path | None, overrides: list[str] | None = None, task: str | None = None) -> Config:
    raw = read_yaml(path) if path else {}
    raw = apply_overrides(raw, list(overrides or []))
    return build_config(raw, task=task)


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `Config.to_dict()` (e.g. inside a checkpoint)."""
    return build_config(d, task=d.get("task"))
