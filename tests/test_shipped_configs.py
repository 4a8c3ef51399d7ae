"""Every shipped config maps onto its constructors: a key the model or data module does not
take would only fail when a user runs it."""

import inspect
from pathlib import Path

import pytest

from medgen.config import build_config, read_yaml
from medgen.models.registry import available_tasks, get_model_class

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_binds_to_its_constructors(path):
    raw = read_yaml(path)
    task = raw["task"]
    assert task in available_tasks() and path.stem in (task, f"{task}-cpu")
    raw.setdefault("data", {})["root"] = "DIR"  # the one key a user always gives
    config = build_config(raw, task=task)
    cls = get_model_class(task)
    inspect.signature(cls).bind(**config.model)
    inspect.signature(cls.data_module).bind(root="DIR", **{k: v for k, v in config.data.items() if k != "root"})


def test_every_task_ships_a_cpu_config():
    names = {p.name for p in CONFIGS}
    for task in available_tasks():
        assert f"{task}.yaml" in names and f"{task}-cpu.yaml" in names, task
