import math

import pytest
import torch
from mlflow import MlflowClient

from medgen.engine import Trainer, load_task, train
from medgen.engine.schedules import lr_factor, time_factor
from medgen.engine.trainer import infer_mode
from medgen.errors import ConfigError, InputError, TrainingError
from medgen.tracking import resolve_tracking_uri

from toy import toy_config


def client() -> MlflowClient:
    return MlflowClient(resolve_tracking_uri())


def checkpoint(run_id, name="last.pt"):
    from pathlib import Path

    return Path("checkpoints") / run_id / name


def test_linear_schedule_is_pix2pix_rule():
    # 4 epochs, 2 constant: full rate twice, then 2/3, 1/3, reaching 0 at max_epochs
    assert [lr_factor(e, "linear", 4, 2) for e in range(5)] == pytest.approx([1, 1, 2 / 3, 1 / 3, 0])
    assert lr_factor(3, "linear", 4, None) == pytest.approx(1 / 3)  # None = half of max_epochs
    assert lr_factor(7, "constant", 8) == 1.0
    with pytest.raises(ConfigError, match="lr_policy"):
        lr_factor(0, "cosine", 4)


def test_best_mode_inferred_from_metric_name():
    assert infer_mode("val/psnr") == "max" and infer_mode("val/input_ssim") == "max"
    assert infer_mode("val/dice") == "max" and infer_mode("val/auroc") == "max"
    assert infer_mode("val/mae") == "min" and infer_mode("val/fid") == "min"


def test_train_logs_metrics_params_and_checkpoints():
    run_id = train(toy_config(trainer={"max_epochs": 3, "val_images": False}, optim={"constant_epochs": 1}))
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["seed"] == "0" and params["trainer.max_epochs"] == "3" and params["task"] == "toy"
    assert params["git_commit"] == "unknown" or len(params["git_commit"]) == 40
    l1 = [m.value for m in client().get_metric_history(run_id, "train/l1")]
    assert len(l1) == 3 and l1[-1] < l1[0]  # the toy problem is learnt
    lrs = [m.value for m in sorted(client().get_metric_history(run_id, "lr/G"), key=lambda m: m.step)]
    assert lrs == pytest.approx([1e-2, 1e-2 * 2 / 3, 1e-2 / 3])  # the LR used in each epoch
    psnr = client().get_metric_history(run_id, "val/psnr")
    assert sorted(m.step for m in psnr) == [1, 2, 3]
    assert {"val/ssim", "val/mae", "val/nmse", "val/input_psnr", "val/l1"} <= set(run.data.metrics)
    by_epoch = {m.step: m.value for m in psnr}
    assert by_epoch[3] > by_epoch[1]  # validation improves as the toy mapping is learnt
    artifacts = {f.path for f in client().list_artifacts(run_id, "checkpoints")}
    assert artifacts == {"checkpoints/last.pt", "checkpoints/best.pt"}
    ckpt = torch.load(checkpoint(run_id), weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["run_id"] == run_id and ckpt["global_step"] == 9
    assert set(ckpt["optimizers"]) == {"G", "D"} and set(ckpt["schedulers"]) == {"G", "D"}
    assert set(ckpt["scalers"]) == {"G", "D"} and {"torch", "numpy", "python"} <= set(ckpt["rng"])
    best = torch.load(checkpoint(run_id, "best.pt"), weights_only=True)
    best_psnr = max(m.value for m in psnr)
    assert best["best"]["value"] == pytest.approx(best_psnr)
    assert best["epoch"] == best["best"]["epoch"]


def test_best_checkpoint_min_mode_and_epoch():
    run_id = train(
        toy_config(trainer={"max_epochs": 3, "val_images": False, "best_metric": "val/mae", "checkpoint_every": 5})
    )
    mae = {m.step: m.value for m in client().get_metric_history(run_id, "val/mae")}
    best = torch.load(checkpoint(run_id, "best.pt"), weights_only=True)
    assert best["best"]["mode"] == "min"
    assert best["best"]["value"] == pytest.approx(min(mae.values()))
    assert best["epoch"] == min(mae, key=mae.get)


def test_resume_ends_where_a_straight_run_ends():
    common = {"val_images": False, "max_epochs": 4}
    straight = train(toy_config(trainer=common, optim={"constant_epochs": 2}))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C at the start of the third epoch
        train(toy_config(trainer=common, optim={"constant_epochs": 2}, model={"interrupt_at_epoch": 2}))
    runs = client().search_runs([client().get_experiment_by_name("toy").experiment_id], order_by=["start_time ASC"])
    interrupted = runs[1].info.run_id
    assert runs[1].info.status == "KILLED"
    assert torch.load(checkpoint(interrupted), weights_only=True)["epoch"] == 2
    resumed = train(
        toy_config(trainer={**common, "resume": str(checkpoint(interrupted))}, optim={"constant_epochs": 2})
    )
    assert resumed == interrupted  # the same MLflow run continues
    assert client().get_run(resumed).info.status == "FINISHED"
    a = torch.load(checkpoint(straight), weights_only=True)
    b = torch.load(checkpoint(resumed), weights_only=True)
    assert a["epoch"] == b["epoch"] == 4 and a["global_step"] == b["global_step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["metrics"] == b["metrics"]  # same seed, same numbers
    steps = sorted(m.step for m in client().get_metric_history(resumed, "train/l1"))
    assert steps == [1, 2, 3, 4]


def test_nan_loss_stops_with_step_and_marks_run_failed():
    with pytest.raises(TrainingError, match=r"non-finite loss g=nan at step 4 \(epoch 2\)"):
        train(toy_config(model={"nan_at_step": 4}, trainer={"val_images": False}))
    (run,) = client().search_runs([client().get_experiment_by_name("toy").experiment_id])
    assert run.info.status == "FAILED"
    assert not checkpoint(run.info.run_id).parent.exists() or not any(
        torch.load(p, weights_only=True)["epoch"] > 1 for p in checkpoint(run.info.run_id).parent.glob("*.pt")
    )


def test_gradient_clipping_bounds_the_step_norm():
    import toy

    cfg = toy_config(optim={"grad_clip": 1e-3}, tracking={"enabled": False})
    model, data = toy.ToyModel(), toy.ToyData()
    trainer = Trainer(cfg, model, data)
    trainer._prepare_model()
    x = torch.randn(2, 1, 8, 8, 8)
    loss = (model.G(x) - 5).abs().mean() * 100
    model.optimizer_step("G", loss)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.G.parameters()]))
    assert norm <= 1e-3 * (1 + 1e-4)


def test_load_task_from_checkpoint_and_run_id():
    run_id = train(toy_config(trainer={"max_epochs": 1, "val_images": False}))
    model, data, config, ckpt = load_task(checkpoint(run_id), device="cpu")
    assert not model.training and config.task == "toy" and ckpt["run_id"] == run_id
    model2, *_ = load_task(run_id, device="cpu")  # downloads checkpoints/best.pt from the store
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.equal(model.infer(x), model2.infer(x))
    with pytest.raises(InputError, match="no such checkpoint"):
        load_task("missing.pt")
    with pytest.raises(InputError, match="MLflow store"):
        load_task("0" * 32)


def test_what_the_data_fits_travels_with_the_run(tmp_path):
    """Model settings the data decides are saved in the config; its fitted state in the checkpoint."""
    import nibabel as nib
    import numpy as np

    from medgen.inference import evaluation_data

    run_id = train(toy_config(task="toy-fitted", trainer={"max_epochs": 1, "val_images": False}))
    model, data, config, ckpt = load_task(checkpoint(run_id), device="cpu")
    assert config.model["channels"] == 3 and model.G[0].out_channels == 3
    assert data.fitted_mean is not None and data.fitted_mean == pytest.approx(float(ckpt["data"]["mean"]))
    volume = tmp_path / "other.nii.gz"  # other data: the training statistic is applied, not refitted
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 16), dtype=np.float32) * 50, np.eye(4)), volume)
    other, _ = evaluation_data(config, volume, state=ckpt["data"])
    assert len(other.items) == other.n_train + other.n_val and other.fitted_mean == data.fitted_mean


def test_tracking_disabled_still_checkpoints(tmp_path):
    run_id = train(toy_config(trainer={"max_epochs": 1, "val_images": False}, tracking={"enabled": False}))
    assert checkpoint(run_id).is_file()
    assert not (tmp_path / "mlflow.db").exists()
    assert math.isfinite(torch.load(checkpoint(run_id), weights_only=True)["best"]["value"])


def test_time_budget_and_step_cap_stop_cleanly():
    run_id = train(toy_config(trainer={"max_epochs": 5, "max_minutes": 0.0, "steps_per_epoch": 1, "val_images": False}))
    ckpt = torch.load(checkpoint(run_id), weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 1  # stopped after the epoch over budget
    assert "val/psnr" in ckpt["metrics"]  # the last epoch is always validated
    assert client().get_run(run_id).info.status == "FINISHED"


def clock_by_steps(monkeypatch, minutes_per_step: float) -> None:
    """The training clock advances with the training steps, not with the wall time."""
    from toy import ToyModel

    from medgen.engine.clock import TrainingClock

    steps = [0]
    original = ToyModel.training_step

    def counted(self, batch, step):
        steps[0] += 1
        return original(self, batch, step)

    monkeypatch.setattr(ToyModel, "training_step", counted)
    monkeypatch.setattr(TrainingClock, "minutes", lambda self: self.minutes_before + steps[0] * minutes_per_step)
    # validations take no minutes of this clock: none to keep for the final one
    monkeypatch.setattr(TrainingClock, "reserve", lambda self, minutes: 0.0)


def test_linear_decay_follows_the_wall_clock_budget(monkeypatch):
    # half the budget at the full rate, then linear to zero when the minutes are spent
    assert [time_factor(f, "linear", 100) for f in (0.0, 0.5, 0.75, 1.0, 1.2)] == pytest.approx([1, 1, 0.5, 0, 0])
    assert time_factor(0.9, "linear", 100, constant_epochs=80) == pytest.approx(0.5)
    assert time_factor(0.9, "constant", 100) == 1.0
    # a clock that advances with the steps, half a minute per (3-step) epoch: 2 minutes hold 4 epochs
    clock_by_steps(monkeypatch, 1 / 6)
    run_id = train(toy_config(trainer={"max_epochs": 100, "max_minutes": 2.0, "val_images": False}))
    lrs = [m.value for m in sorted(client().get_metric_history(run_id, "lr/G"), key=lambda m: m.step)]
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3, 0.0])  # stopped in the epoch that passed 2 minutes
    assert torch.load(checkpoint(run_id), weights_only=True)["minutes"] == pytest.approx(13 / 6)  # at its 2nd step


def test_model_sees_the_share_of_the_budget_spent(monkeypatch):
    from toy import ToyModel

    seen = []
    monkeypatch.setattr(ToyModel, "on_epoch_start", lambda self, epoch: seen.append(self.progress))
    train(toy_config(trainer={"max_epochs": 4, "val_images": False}))
    assert seen == pytest.approx([0, 0.25, 0.5, 0.75])  # epochs without a time budget
    seen.clear()
    clock_by_steps(monkeypatch, 1 / 6)  # half a minute per epoch
    train(toy_config(trainer={"max_epochs": 100, "max_minutes": 2.0, "val_images": False}))
    assert seen == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])  # minutes, further along than epochs


def test_best_checkpoint_only_from_epochs_the_model_accepts(monkeypatch):
    from toy import ToyModel

    # A phased model (e.g. a c-GAN's L1 warm-up) refuses some epochs as best.pt: here all but
    # the second (model.epoch counts from 0), so best.pt must be epoch 2 whatever its PSNR.
    monkeypatch.setattr(ToyModel, "may_be_best", lambda self: self.epoch == 1)
    run_id = train(toy_config(trainer={"max_epochs": 4, "val_images": False}))
    psnr = {m.step: m.value for m in client().get_metric_history(run_id, "val/psnr")}
    best = torch.load(checkpoint(run_id, "best.pt"), weights_only=True)
    assert max(psnr, key=psnr.get) != 2  # the gate, not the metric, chose it
    assert best["epoch"] == 2 and best["best"]["value"] == pytest.approx(psnr[2])
    tags = client().get_run(run_id).data.tags
    assert tags["medgen.best_epoch"] == "2" and float(tags["medgen.best_val/psnr"]) == pytest.approx(psnr[2], rel=1e-5)


def test_runs_saved_before_auto_spacing_keep_their_native_grid():
    from medgen.engine.build import _native_grid_if_unsaved

    old = _native_grid_if_unsaved({"task": "pet-cgan", "data": {"root": "gone"}})
    assert old["data"]["spacing"] is None  # not "auto": its training folder may be gone
    new = _native_grid_if_unsaved({"task": "pet-cgan", "data": {"root": "gone", "spacing": [2.0, 2.0, 2.0]}})
    assert new["data"]["spacing"] == [2.0, 2.0, 2.0]
    assert "spacing" not in _native_grid_if_unsaved({"task": "toy", "data": {}})["data"]  # no grid to keep


def test_progress_advances_every_step(monkeypatch):
    from toy import ToyModel

    seen = []
    original = ToyModel.training_step
    monkeypatch.setattr(ToyModel, "training_step", lambda self, batch, step: seen.append(self.progress) or original(self, batch, step))
    train(toy_config(trainer={"max_epochs": 2, "val_images": False}))  # 6 subjects, batch 2: 3 steps an epoch
    assert seen == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    seen.clear()
    clock_by_steps(monkeypatch, 1 / 6)  # half a minute per epoch
    train(toy_config(trainer={"max_epochs": 100, "max_minutes": 2.0, "val_images": False}))
    assert seen[:3] == pytest.approx([0, 1 / 300, 2 / 300])  # first epoch: its share by epochs
    assert seen[3:6] == pytest.approx([0.25, 0.25 + 0.25 / 3, 0.25 + 0.5 / 3])  # then the last epoch's share of the minutes


def test_one_backward_steps_several_optimisers():
    import toy

    cfg = toy_config(optim={"grad_clip": 1e-3}, tracking={"enabled": False})
    model = toy.ToyModel()
    trainer = Trainer(cfg, model, toy.ToyData())
    trainer._prepare_model()
    before = {n: [p.detach().clone() for p in getattr(model, n).parameters()] for n in ("G", "D")}
    x = torch.randn(2, 1, 8, 8, 8)
    loss = model.D(torch.cat([x, model.G(x)], 1)).abs().mean() * 100
    model.optimizer_step(("G", "D"), loss)  # e.g. a segmenter and a domain classifier
    for name in ("G", "D"):
        net = getattr(model, name)
        assert all(p.grad is not None for p in net.parameters()), name
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))
        assert norm <= 1e-3 * (1 + 1e-4)  # each clipped on its own parameters
        assert any(not torch.equal(a, b) for a, b in zip(before[name], net.parameters())), name
    with pytest.raises(TrainingError, match="unknown optimiser 'E'"):
        model.optimizer_step(("G", "E"), loss)
    plain = toy.ToyModel()  # without an engine: one backward, both stepped
    plain.optimizer_step(("G", "D"), plain.D(torch.cat([x, plain.G(x)], 1)).abs().mean())
    assert all(p.grad is not None for p in plain.G.parameters())


def test_local_checkpoints_false_keeps_mlflows_copy_only(tmp_path):
    from pathlib import Path

    run_id = train(toy_config(trainer={"max_epochs": 2, "val_images": False, "local_checkpoints": False}))
    artifacts = {f.path for f in client().list_artifacts(run_id, "checkpoints")}
    assert artifacts == {"checkpoints/last.pt", "checkpoints/best.pt"}
    assert not (Path("checkpoints") / run_id).exists()
    model, _, _, ckpt = load_task(run_id, tracking_uri=resolve_tracking_uri(), device="cpu")  # from MLflow's copy
    assert ckpt["epoch"] in (1, 2)
    with pytest.raises(ConfigError, match="local_checkpoints"):
        train(toy_config(trainer={"max_epochs": 1, "local_checkpoints": False}, tracking={"enabled": False}))


def test_a_model_with_several_exported_networks_logs_each_by_name(monkeypatch):
    import toy

    from medgen.tracking.base import Tracker

    logged = []

    class Recording(Tracker):
        def log_model(self, network, name, registered_name=None):
            logged.append((name, registered_name, type(network).__name__, next(network.parameters()).device.type))

    model = toy.ToyModel()
    cfg = toy_config(tracking={"log_model": True, "register_model": True})
    Trainer(cfg, model, toy.ToyData(), tracker=Recording()).fit()
    assert logged == [("model", "toy", "Sequential", "cpu")]  # one network: "model", registered as the task
    logged.clear()
    monkeypatch.setattr(toy.ToyModel, "exported_networks", lambda self: {"G_AB": self.G, "G_BA": self.G})
    Trainer(cfg, toy.ToyModel(), toy.ToyData(), tracker=Recording()).fit()
    assert [(n, r) for n, r, *_ in logged] == [("G_AB", "toy-G_AB"), ("G_BA", "toy-G_BA")]
