"""Task name -> model class, filled by the explicit ``@register_model("task")`` decorator."""

from __future__ import annotations

import importlib
import importlib.util

from medgen.errors import ConfigError

_MODELS: dict[str, type] = {}

# Task name -> module that registers it. Imported on demand, so a task whose module is not
# built yet is simply unknown (and tests that import one model do not import all of them).
TASK_MODULES = {
    "pet-cgan": "medgen.models.pet_cgan",
    "eagan": "medgen.models.eagan",
    "cyclegan": "medgen.models.cyclegan",
    "anogan": "medgen.models.anogan",
    "tybalt": "medgen.models.tybalt",
    "dann-seg": "medgen.models.dann_seg",
}


def register_model(name: str):
    def deco(cls):
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"task {name!r} registered twice")
        cls.task = name
        _MODELS[name] = cls
        return cls

    return deco


def available_tasks() -> list[str]:
    """Tasks whose model module exists in this installation."""
    out = []
    for name, module in TASK_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def get_model_class(task: str) -> type:
    if task not in _MODELS:
        module = TASK_MODULES.get(task)
        if module is None or importlib.util.find_spec(module) is None:
            raise ConfigError(f"unknown task {task!r} (available: {', '.join(available_tasks()) or 'none'})")
        importlib.import_module(module)
    return _MODELS[task]
