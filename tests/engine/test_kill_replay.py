"""A run killed after it logged an epoch's metrics but before that epoch's last.pt was written
(issue 19): the resumed run trains that epoch again, and MLflow's history must still hold each
(metric, step) once, with the values an uninterrupted run logs."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from medgen.engine import train
from medgen.engine.checkpoint import Checkpointer, load_checkpoint
from medgen.tracking import resolve_tracking_uri

from toy import toy_config


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way up handles it."""


def _history(run_id) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the run: its (step, value) points in the order they were logged."""
    client = MlflowClient(resolve_tracking_uri())
    keys = client.get_run(run_id).data.metrics
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}


def _epoch_keys(history):
    return {k: v for k, v in history.items() if not k.startswith("time/")}  # time/*: wall clock


def _run(trainer_cfg, **overrides):
    return train(toy_config(trainer={"val_images": False, "max_epochs": 4, **trainer_cfg},
                            optim={"constant_epochs": 2}, **overrides))


def _kill_at_write_of_epoch(monkeypatch, epoch):
    """The kill window made deterministic: epoch `epoch`'s metrics are logged, its last.pt is not."""
    write = Checkpointer.write

    def killing_write(self, state):
        if state["epoch"] == epoch:
            raise Killed
        write(self, state)

    monkeypatch.setattr(Checkpointer, "write", killing_write)


def _last(run_id):
    return load_checkpoint(f"checkpoints/{run_id}/last.pt")


def _latest_run() -> str:
    client = MlflowClient(resolve_tracking_uri())
    experiment = client.get_experiment_by_name("toy").experiment_id
    return client.search_runs([experiment], order_by=["start_time DESC"], max_results=1)[0].info.run_id


def test_an_epoch_logged_before_the_kill_is_in_the_history_once(monkeypatch):
    straight = _history(_run({}))
    with monkeypatch.context() as m:
        _kill_at_write_of_epoch(m, 3)
        with pytest.raises(Killed):
            _run({})
    killed = _latest_run()
    assert _last(killed)["epoch"] == 2
    assert max(s for s, _ in _history(killed)["train/l1"]) == 3  # epoch 3 was logged before the kill
    assert _run({"resume": f"checkpoints/{killed}/last.pt"}) == killed
    resumed = _history(killed)
    for key, points in resumed.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), (key, steps)
    assert _epoch_keys(resumed) == _epoch_keys(straight)  # every epoch metric, each step once, same values
    assert sorted(s for s, _ in resumed["train/l1"]) == [1, 2, 3, 4]
    assert {k: [s for s, _ in v] for k, v in resumed.items() if k.startswith("time/")} == \
        {k: [4] for k in straight if k.startswith("time/")}


def test_train_losses_not_yet_logged_at_the_checkpoint_survive_the_kill():
    # Log writes only at validations (epochs 2 and 4), last.pt every epoch: last.pt of epoch 3
    # holds epoch 3's loss, not yet logged; Ctrl-C at the start of epoch 4 stands for the kill.
    batched = {"log_seconds": 10**9, "val_every": 2}
    straight = _history(_run(batched))
    with pytest.raises(KeyboardInterrupt):
        _run(batched, model={"interrupt_at_epoch": 3})
    killed = _latest_run()
    assert _last(killed)["epoch"] == 3 and set(_last(killed)["pending_log"]) >= {"train/l1"}
    _run({**batched, "resume": f"checkpoints/{killed}/last.pt"})
    resumed = _history(killed)
    assert [s for s, _ in resumed["train/l1"]] == [2, 4]
    assert _epoch_keys(resumed) == _epoch_keys(straight)  # step 4 averages epochs 3 and 4, as straight
