"""Where a run's time goes, and the time-based schedule of validation and checkpoints."""

import time

import pytest
import torch
from mlflow import MlflowClient

from medgen.engine import Trainer, train
from medgen.engine.budget import OverheadSchedule, PhaseTimer
from medgen.errors import ConfigError
from medgen.tracking import resolve_tracking_uri

from toy import ToyData, ToyModel, toy_config


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_nested_phases_charge_the_innermost_and_add_up_to_the_total():
    clock = FakeClock()
    timer = PhaseTimer(clock)
    clock.now = 1.0  # outside any phase: "other"
    with timer.phase("validation"):
        clock.now = 3.0
        with timer.phase("fid"):
            clock.now = 7.0
        clock.now = 8.0
    with timer.phase("train"):
        clock.now = 18.0
    seconds = timer.snapshot()
    assert seconds["other"] == 1.0 and seconds["validation"] == 3.0 and seconds["fid"] == 4.0
    assert seconds["train"] == 10.0 and sum(seconds.values()) == timer.total() == 18.0
    metrics = timer.metrics()
    assert metrics["time/train_share"] == pytest.approx(10 / 18)
    assert metrics["time/overhead_share"] == pytest.approx(8 / 18)
    assert "train 55.6 %" in timer.summary() and "fid 22.2 %" in timer.summary()


def test_validation_stays_within_its_share_of_the_time():
    clock = FakeClock()
    timer = PhaseTimer(clock)
    schedule = OverheadSchedule(timer, val_every=None, overhead_share=0.1, checkpoint_every=None, checkpoint_minutes=1.0)
    validated, written = [], []
    for epoch in range(1, 201):
        with timer.phase("train"):
            clock.now += 1.0  # one second per epoch of training
        if schedule.validate_now(epoch, final=epoch == 200):
            with timer.phase("validation"):
                clock.now += 4.0  # a validation costs four epochs
            schedule.validated(4.0)
            validated.append(epoch)
        if schedule.checkpoint_now(epoch, final=epoch == 200):
            written.append(round(timer.total()))
            schedule.checkpointed()
    assert validated[0] == 1 and validated[-1] == 200  # the first (fail early) and the last
    share = timer.seconds["validation"] / timer.total()
    assert 0.07 < share <= 0.1 + 4.0 / timer.total()  # at most one validation over the share
    gaps = [b - a for a, b in zip(written, written[1:-1])]
    assert gaps and all(60 <= g < 66 for g in gaps)  # a minute apart (+ at most one epoch)
    # fixed epoch intervals replace the time rule
    fixed = OverheadSchedule(timer, val_every=3, overhead_share=0.1, checkpoint_every=2, checkpoint_minutes=1.0)
    assert [e for e in range(1, 10) if fixed.validate_now(e, final=False)] == [3, 6, 9]
    assert [e for e in range(1, 7) if fixed.checkpoint_now(e, final=False)] == [2, 4, 6]


def test_shares_add_up_to_the_runs_wall_time(tmp_path):
    config = toy_config(trainer={"max_epochs": 4, "val_images": True, "val_every": None, "checkpoint_every": None},
                        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    trainer = Trainer(config, ToyModel(), ToyData())
    t0 = time.perf_counter()
    run_id = trainer.fit()
    wall = time.perf_counter() - t0
    seconds = trainer.timer.snapshot()
    assert sum(seconds.values()) == pytest.approx(trainer.timer.total(), abs=1e-3)
    assert trainer.timer.total() == pytest.approx(wall, rel=0.02, abs=0.05)  # the whole of fit()
    for phase in ("setup", "train", "data", "validation", "images", "checkpoint", "logging"):
        assert seconds[phase] > 0, phase
    assert seconds["other"] < 0.1 * wall  # the loop's bookkeeping is not where the time goes
    logged = MlflowClient(resolve_tracking_uri(config.tracking.uri)).get_run(run_id).data.metrics
    shares = {k: v for k, v in logged.items() if k.startswith("time/") and k.endswith("_share") and "overhead" not in k}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert logged["time/overhead_share"] == pytest.approx(1 - logged["time/train_share"], abs=1e-6)
    assert "training steps in 4 epochs" in trainer.time_report()


def test_best_waits_in_memory_until_the_next_checkpoint_write(monkeypatch):
    """With checkpoints written only at the end, best.pt still holds the best epoch's weights."""
    from medgen.engine.checkpoint import Checkpointer

    saved = []
    original = Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save", lambda self, name, state: saved.append(name) or original(self, name, state))
    weights = {}
    original_keep = Checkpointer.keep_best
    monkeypatch.setattr(Checkpointer, "keep_best", lambda self, state, epoch, *a: weights.update(
        {epoch: state["model"]["G.0.weight"].detach().clone()}) or original_keep(self, state, epoch, *a))
    run_id = train(toy_config(trainer={"max_epochs": 5, "val_images": False, "checkpoint_every": None,
                                       "checkpoint_minutes": 60.0}))
    assert saved == ["best.pt", "last.pt"]  # one write each, at the end
    best = torch.load(f"checkpoints/{run_id}/best.pt", weights_only=True)
    psnr = {m.step: m.value for m in MlflowClient(resolve_tracking_uri()).get_metric_history(run_id, "val/psnr")}
    assert best["epoch"] == max(psnr, key=psnr.get)
    assert torch.equal(best["model"]["G.0.weight"], weights[best["epoch"]])


def test_constant_pairs_are_computed_once(monkeypatch):
    import medgen.metrics as metrics

    calls = []
    real = metrics.image_metrics
    monkeypatch.setattr(metrics, "image_metrics", lambda pred, ref, **kw: calls.append(pred.data_ptr()) or real(pred, ref, **kw))
    monkeypatch.setattr(ToyModel, "constant_pairs", ("input_",))
    run_id = train(toy_config(trainer={"max_epochs": 3, "val_images": False}))
    # 2 validation volumes x 3 validations for the prediction, 2 x 1 for the constant input pair
    assert len(calls) == 2 * 3 + 2
    logged = MlflowClient(resolve_tracking_uri()).get_metric_history(run_id, "val/input_psnr")
    assert len({m.value for m in logged}) == 1 and len(logged) == 3


def test_bad_overhead_settings_are_config_errors():
    with pytest.raises(ConfigError, match="overhead_share"):
        Trainer(toy_config(trainer={"overhead_share": 0.0}), ToyModel(), ToyData())
    with pytest.raises(ConfigError, match="checkpoint_minutes"):
        Trainer(toy_config(trainer={"checkpoint_minutes": -1}), ToyModel(), ToyData())


def test_epoch_metrics_are_batched_between_validations():
    every = train(toy_config(trainer={"max_epochs": 4, "val_images": False, "val_every": 2}))
    batched = train(toy_config(trainer={"max_epochs": 4, "val_images": False, "val_every": 2, "log_seconds": 1e9}))
    client = MlflowClient(resolve_tracking_uri())
    per_epoch = {m.step: m.value for m in client.get_metric_history(every, "train/l1")}
    logged = {m.step: m.value for m in client.get_metric_history(batched, "train/l1")}
    assert sorted(per_epoch) == [1, 2, 3, 4] and sorted(logged) == [2, 4]  # written with each validation
    assert logged[2] == pytest.approx((per_epoch[1] + per_epoch[2]) / 2)  # the epochs' mean (same seed)
    assert logged[4] == pytest.approx((per_epoch[3] + per_epoch[4]) / 2)


# --- a time budget is the run's length, final validation included ------------------------------
def test_the_clock_keeps_the_final_validations_minutes_out_of_training():
    from medgen.engine.clock import TrainingClock

    clock = TrainingClock(max_epochs=1000, max_minutes=10.0)
    assert clock.reserve(3.0) == 3.0 and clock.training_minutes() == 7.0
    clock.read_minutes = 6.9
    assert not clock.out_of_time() and clock.progress(1) == pytest.approx(6.9 / 7.0)
    clock.read_minutes = 7.1
    assert clock.out_of_time() and clock.progress(1) == 1.0
    assert clock.reserve(8.0) == 5.0  # at most half the budget: past it the run overruns instead
    assert TrainingClock(max_epochs=3, max_minutes=None).reserve(2.0) == 0.0  # epochs: nothing to keep


def test_the_bar_of_a_time_budget_counts_its_seconds():
    from medgen.engine.clock import TrainingClock
    from medgen.engine.progress import RunBar

    clock = TrainingClock(max_epochs=100000, max_minutes=1.5)
    bar = RunBar(clock, steps=10**9, desc="toy", disable=True)
    assert bar.by_time and bar.total == 90  # seconds, not max_epochs x steps
    clock.minutes_before = 0.5  # a resumed run's earlier minutes
    bar.step(7, {"loss": 0.25})
    assert 30 <= bar.position < 31
    clock.minutes_before = 5.0
    bar.advance()
    assert bar.position == 90  # never past the budget
    steps = RunBar(TrainingClock(max_epochs=4, max_minutes=None), steps=12, desc="toy", disable=True)
    steps.step(1, {})
    assert not steps.by_time and steps.total == 12 and steps.position == 1


def _slow_steps(monkeypatch, seconds):
    original = ToyModel.training_step
    monkeypatch.setattr(ToyModel, "training_step", lambda self, batch, step: time.sleep(seconds) or original(self, batch, step))


def test_a_time_budget_stops_training_mid_epoch(monkeypatch):
    """An epoch of 200 slow steps (4 s) under a 1.2 s budget: training stops inside it, and the
    final validation still runs."""
    _slow_steps(monkeypatch, 0.02)
    config = toy_config(data={"n_train": 400}, trainer={"max_epochs": 50, "max_minutes": 0.02, "val_every": None,
                                                         "checkpoint_every": None, "val_images": False})
    trainer = Trainer(config, ToyModel(), ToyData(n_train=400))
    run_id = trainer.fit()
    assert trainer.epoch == 1 and 1 <= trainer.global_step < 200
    logged = MlflowClient(resolve_tracking_uri()).get_metric_history(run_id, "val/psnr")
    assert [m.step for m in logged] == [1]


def test_the_first_validation_of_a_time_budget_primes_fid_and_reserves_the_final(monkeypatch):
    """Under max_minutes the first validation feeds FID's real side (cached for the final FID,
    its cost standing for the final's fake side) and keeps the estimate out of training."""
    from medgen.metrics.fid import FID

    _slow_steps(monkeypatch, 0.02)
    calls = []
    features = FID._features
    monkeypatch.setattr(FID, "_features", lambda self, images, vr: calls.append(trainer.epoch) or features(self, images, vr))
    lines = []
    config = toy_config(trainer={"max_epochs": 1000, "max_minutes": 0.2, "fid_slices": 1, "val_every": None,
                                 "checkpoint_every": None, "val_images": False})
    trainer = Trainer(config, ToyModel(), ToyData(n_train=40), report=lines.append)
    run_id = trainer.fit()
    n_val = 2
    assert calls[:n_val] == [1] * n_val  # the real side, after epoch 1
    assert len(calls) == 2 * n_val and calls[n_val:] == [trainer.epoch] * n_val and trainer.epoch > 1  # the fake side
    fid = MlflowClient(resolve_tracking_uri()).get_metric_history(run_id, "val/fid")
    assert [m.step for m in fid] == [trainer.epoch]  # one FID, of the final weights
    logged = MlflowClient(resolve_tracking_uri()).get_run(run_id).data.metrics
    # what was kept: the estimate, or half the budget when it asked for more
    assert logged["time/final_validation_estimate_seconds"] >= 60 * trainer.clock.reserved_minutes - 1e-6
    assert 0 < logged["time/final_validation_seconds"] < 60
    assert 0 < trainer.clock.reserved_minutes <= 0.1
    assert any("final validation with FID estimated at" in line and "of the 0.2 min budget" in line for line in lines)
