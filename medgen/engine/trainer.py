"""The only training loop in medgen.

:class:`Trainer` runs any :class:`~medgen.models.base.GenerativeModel` (any number of networks
and optimisers): it places the model on a device, wires the model's ``optimizer_step`` to the
engine's step (AMP scaling on CUDA, gradient clipping, gradient averaging across ranks), runs
epochs with a progress bar, steps one LR schedule per optimiser per epoch, validates and keeps
``last.pt``/``best.pt`` on the time-based schedule of :mod:`medgen.engine.budget` (so that a
user's minutes go to training steps), logs everything through a
:class:`~medgen.tracking.base.Tracker` (MLflow by default) and, at the end, where the wall time
went (``time/<phase>_share``).

Determinism: the model is initialised after seeding; the training DataLoader of epoch ``e``
draws its order and random patches from a generator seeded with ``(seed, epoch, rank)``, so
the data of an epoch does not depend on what ran before, and checkpoints carry every RNG
state. Hence a run resumed from ``last.pt`` ends exactly where the uninterrupted run ends (CPU).

Distributed: see :mod:`medgen.engine.distributed` (torchrun, no DDP wrapper, rank 0 logs).

Its parts live beside it: the budget's clock (:mod:`.clock`), when to validate and checkpoint
(:mod:`.budget`), where checkpoints go (:class:`.checkpoint.Checkpointer`), validation
(:mod:`.validation`). What stays here (~600 lines) is the loop and the state it must see whole:
one step's AMP/clipping/averaging, the epoch loop, resume, and the run's reports.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medgen.config import Config
from medgen.engine.budget import OverheadSchedule, PhaseTimer
from medgen.engine.checkpoint import FORMAT, Checkpointer, load_checkpoint, rng_state, seed_everything, set_rng_state
from medgen.engine.clock import TrainingClock
from medgen.engine.distributed import DistEnv
from medgen.engine.schedules import make_scheduler
from medgen.engine.validation import evaluate_volumes, to_device
from medgen.models.slices import is_slice_mode, squeeze_slices
from medgen.errors import ConfigError, InputError, TrainingError
from medgen.tracking.base import Tracker

MAX_MODES = ("psnr", "ssim", "auroc", "auprc", "dice", "accuracy", "acc", "iou")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when present (this rank's GPU under torchrun), else CPU."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name} but CUDA is not available (use auto or cpu)")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"trainer.device must be auto, cpu, cuda or cuda:N, not {name!r}")


def infer_mode(metric: str) -> str:
    """"max" for metrics where higher is better (psnr, ssim, auroc, dice, ...), else "min";
    also for such a metric with a qualifier after it (``dice_target``, ``psnr_mask``), unless
    that names a loss (``dice_loss``)."""
    leaf = metric.split("/")[-1].lower()
    qualified = any(leaf.startswith(f"{m}_") for m in MAX_MODES) and not leaf.endswith("loss")
    return "max" if qualified or any(leaf.endswith(m) for m in MAX_MODES) else "min"


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for one epoch's data, independent of what ran before (exact resume)."""
    return int(np.random.SeedSequence([int(v) % 2**32 for v in (seed, epoch, rank)]).generate_state(1, dtype=np.uint64)[0] % 2**63)


class Trainer:
    """Trainer(config, model, data, tracker=None).fit() -> run id.

    tracker: None = an :class:`~medgen.tracking.MLflowTracker` on ``config.tracking.uri`` (or a
    no-op tracker when ``tracking.enabled`` is false); ranks other than 0 never log.
    report: called with a line for the user at the start (data, device, run), after each
    validation (headline metric, best so far) and at the end (best.pt, where the time went);
    ``medgen train`` prints them on stderr. Library code itself never prints.
    """

    def __init__(self, config: Config, model, data, tracker: Tracker | None = None,
                 report: Callable[[str], None] | None = None):
        self.config = config
        self.report = report if report is not None else (lambda line: None)
        self.cfg = config.trainer
        self.model = model
        self.data = data
        wants_cuda = self.cfg.device.startswith("cuda") or (self.cfg.device == "auto" and torch.cuda.is_available())
        self.dist = DistEnv.from_env(use_cuda=wants_cuda)
        self.device = resolve_device(self.cfg.device, self.dist.local_rank)
        if not self.dist.is_main:
            tracker = Tracker()
        elif tracker is None:
            tracker = self._default_tracker()
        self.tracker = tracker
        self.use_amp = bool(self.cfg.amp) and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.max_epochs = int(self.cfg.max_epochs)
        if self.max_epochs < 1:
            raise ConfigError("trainer.max_epochs must be at least 1")
        if not self.cfg.local_checkpoints and not config.tracking.enabled:
            raise ConfigError("trainer.local_checkpoints=false needs tracking.enabled=true: checkpoints would be "
                              "written nowhere")
        self.best_metric = self.cfg.best_metric or getattr(model, "best_metric", "val/psnr")
        self.best_mode = self.cfg.best_mode or infer_mode(self.best_metric)
        if self.best_mode not in ("max", "min"):
            raise ConfigError(f"trainer.best_mode must be max or min, not {self.best_mode!r}")
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.epoch = 0  # epochs completed
        self.clock = TrainingClock(self.max_epochs, self.cfg.max_minutes, self.dist.broadcast_object)
        self.global_step = 0
        self.run_id: str | None = None
        self.last_metrics: dict[str, float] = {}
        self.timer = PhaseTimer()  # restarted by fit(): where the run's wall time goes
        if not 0.0 < float(self.cfg.overhead_share) <= 1.0:
            raise ConfigError(f"trainer.overhead_share must be in (0, 1], not {self.cfg.overhead_share}")
        if float(self.cfg.checkpoint_minutes) < 0:
            raise ConfigError(f"trainer.checkpoint_minutes must be >= 0, not {self.cfg.checkpoint_minutes}")
        self.checkpoints = Checkpointer(self.cfg.checkpoint_dir if self.cfg.local_checkpoints else None,
                                        self.tracker, self.timer)
        self._constant_cache: dict = {}  # validation metrics of model.constant_pairs, per volume
        self._pending_log: dict[str, tuple[float, int]] = {}  # metrics not yet written (_log_epoch)
        self._logged_at = 0.0
        self._bad_step: str | None = None
        self._warned_best = False
        self._final_estimate: float | None = None  # seconds, estimated at this session's first validation

    # --- set-up ---------------------------------------------------------------------------
    def _default_tracker(self) -> Tracker:
        if not self.config.tracking.enabled:
            return Tracker()
        from medgen.tracking import MLflowTracker

        return MLflowTracker(self.config.tracking.uri)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _prepare_model(self) -> None:
        model = self.model
        model.to(self.device)
        model.train()
        self.optimizers = model.setup_optimizers()
        if not self.optimizers:
            raise TrainingError(f"model {type(model).__name__} configured no optimisers")
        o = self.config.optim
        spent = self.clock.spent if self.cfg.max_minutes else None
        self.schedulers = {
            n: make_scheduler(opt, o.lr_policy, self.max_epochs, o.constant_epochs, spent)
            for n, opt in self.optimizers.items()
        }
        use_scaler = self.use_amp and self.amp_dtype == torch.float16
        self.scalers = {n: torch.amp.GradScaler("cuda", enabled=use_scaler) for n in self.optimizers}
        model._step_fn = self._optimizer_step
        model._autocast = self._autocast
        model.max_epochs = self.max_epochs
        model.max_minutes = self.cfg.max_minutes
        # a 2D model on the slices of volumes gets its single-slice patches as 2D images
        self._slices = is_slice_mode(getattr(model, "spatial_dims", None), getattr(model, "roi_size", None))

    def _optimizer_step(self, names: str | tuple[str, ...], loss: torch.Tensor) -> None:
        """Zero grads, one backward (scaled), average across ranks, unscale, clip and step each
        named optimiser. Several names: one loss feeds several optimisers (e.g. a segmenter and
        a domain classifier behind gradient reversal); they share the first one's AMP scaler,
        and each is clipped on its own parameters."""
        names = (names,) if isinstance(names, str) else tuple(names)
        unknown = [n for n in names if n not in self.optimizers]
        if unknown or not names:
            raise TrainingError(f"model stepped unknown optimiser {unknown[0] if unknown else '(none)'!r} "
                                f"(has {', '.join(self.optimizers)})")
        opts, scaler = [self.optimizers[n] for n in names], self.scalers[names[0]]
        label = "+".join(names)
        finite = bool(torch.isfinite(loss.detach()).all().item())
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        if not self.dist.enabled and not finite:
            self._bad_step = self._bad_step or label
            return
        if finite:
            scaler.scale(loss).backward()
        groups = [[p for g in opt.param_groups for p in g["params"]] for opt in opts]
        if self.dist.average_gradients([p for group in groups for p in group], bad=not finite):
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            self._bad_step = self._bad_step or label
            return
        clip = self.config.optim.grad_clip
        for opt, params in zip(opts, groups):
            if clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, clip)
            scaler.step(opt)
        scaler.update()

    # --- data -----------------------------------------------------------------------------
    def _train_loader(self, epoch: int):
        from monai.data import DataLoader
        from torch.utils.data import DistributedSampler

        dataset = self._train_ds
        generator = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch, self.dist.rank))
        sampler = None
        if self.dist.enabled:
            sampler = DistributedSampler(
                dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=self.cfg.seed
            )
            sampler.set_epoch(epoch)
        return DataLoader(
            dataset,
            batch_size=int(getattr(self.data, "batch_size", 1)),
            shuffle=sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )

    def _val_loader(self):
        from monai.data import DataLoader
        from torch.utils.data import Subset

        dataset = self._val_ds
        if dataset is None or len(dataset) == 0:
            return None
        if self.dist.enabled:
            dataset = Subset(dataset, list(range(self.dist.rank, len(dataset), self.dist.world_size)))
        generator = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, 2**31, self.dist.rank))
        return DataLoader(dataset, batch_size=1, shuffle=False, generator=generator, num_workers=self.cfg.num_workers)

    # --- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "task": self.config.task,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "minutes": self.clock.minutes(),
            "model": self.model.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "rng": rng_state(),
            "run_id": self.run_id,
            "extra": self.model.extra_state(),
            "data": self.data.state_dict(),
            "best": {"metric": self.best_metric, "mode": self.best_mode, "value": self.best_value, "epoch": self.best_epoch},
            "metrics": dict(self.last_metrics),
            # train losses of epochs since the last log write: a resumed run logs their average
            # at the step the uninterrupted run would have, instead of losing them
            "pending_log": {k: [float(total), int(n)] for k, (total, n) in self._pending_log.items()},
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("task") not in (None, self.config.task):
            raise InputError(self.cfg.resume, f"checkpoint is for task {ckpt.get('task')!r}, not {self.config.task!r}")
        self.model.load_state_dict(ckpt["model"])
        for n, o in self.optimizers.items():
            o.load_state_dict(ckpt["optimizers"][n])
        for n, s in self.schedulers.items():
            s.load_state_dict(ckpt["schedulers"][n])
        for n, s in self.scalers.items():
            if ckpt.get("scalers", {}).get(n):
                s.load_state_dict(ckpt["scalers"][n])
        self.model.load_extra_state(ckpt.get("extra") or {})
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.clock.minutes_before = float(ckpt.get("minutes", 0.0))
        best = ckpt.get("best") or {}
        if best.get("metric") == self.best_metric:
            self.best_value, self.best_epoch = best.get("value"), best.get("epoch")
        self.last_metrics = dict(ckpt.get("metrics") or {})
        self._pending_log = {k: (float(total), int(n)) for k, (total, n) in (ckpt.get("pending_log") or {}).items()}
        self.run_id = ckpt.get("run_id")

    # --- the loop ---------------------------------------------------------------------------
    def fit(self) -> str:
        """Train to ``trainer.max_epochs`` (or ``trainer.max_minutes``); returns the run id."""
        status = "FAILED"
        self.timer = self.checkpoints.timer = PhaseTimer()
        try:
            with self.timer.phase("setup"):
                self._start()
            self._loop()
            status = "FINISHED"
            return self.run_id
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.model._step_fn = None
            try:
                self.tracker.end(status)
            finally:
                self.dist.close()

    def _start(self) -> None:
        cfg = self.cfg
        resume = load_checkpoint(cfg.resume) if cfg.resume else None
        if resume is None:
            seed_everything(cfg.seed)
        from medgen.engine.build import set_up_data

        set_up_data(self.config, self.data)  # once: a no-op after build_task(setup=True)
        self._train_ds = self.data.train_dataset()  # built once: datasets may cache volumes
        self._val_ds = self.data.val_dataset() if self.cfg.val_every != 0 else None  # 0: never validate
        self._prepare_model()
        if resume is not None:
            self._restore(resume)
        else:
            self.dist.broadcast_module(self.model)
        # Run id: rank 0 starts (or continues) the MLflow run; every rank learns it.
        run_id = None
        if self.dist.is_main:
            experiment = self.config.tracking.experiment or self.config.task
            continue_id = self.run_id if resume is not None else None
            if continue_id is not None and not self.tracker.has_run(continue_id):
                continue_id = None  # the checkpoint's run lives in another store: start a new one
            with self.timer.phase("logging"):
                run_id = self.tracker.start(experiment, run_name=self._run_name(), run_id=continue_id)
                if continue_id is None:
                    self._log_params()
                self.tracker.set_tags({"medgen.task": self.config.task, "medgen.world_size": str(self.dist.world_size)})
                if resume is not None:
                    self.tracker.set_tags({f"medgen.resumed_at_epoch_{self.epoch}": "true"})
                if continue_id is not None:  # a kill after logging, before last.pt: no step twice
                    self.tracker.replaying_from(self.epoch)
            run_id = run_id or self.run_id or uuid.uuid4().hex
        self.run_id = self.dist.broadcast_object(run_id)
        self.checkpoints.run_id = self.run_id
        if self.dist.is_main:
            self._report_start(resume is not None)
        if resume is not None:
            set_rng_state(resume["rng"])
            if self.dist.enabled:
                seed_everything(cfg.seed + 7919 * self.dist.rank + self.epoch)
        elif self.dist.enabled:  # identical replicas, different noise per rank
            seed_everything(cfg.seed + 7919 * self.dist.rank)

    def _run_name(self) -> str:
        """``tracking.run_name``, else what the run is: task, data folder, date and time (MLflow's
        random names repeat, since the trainer seeds Python's RNG before it picks one)."""
        from medgen.tracking.paths import loggable_folder_name

        if self.config.tracking.run_name:
            return self.config.tracking.run_name
        folder = loggable_folder_name(self.config.data.get("root"), self.config.tracking.log_paths)
        return " ".join(p for p in (self.config.task, folder, time.strftime("%Y-%m-%d %H:%M:%S")) if p)

    def _report_start(self, resumed: bool) -> None:
        described = self.data.describe()
        if described:
            self.report(f"data: {described}")
        amp = f", mixed precision {str(self.amp_dtype).replace('torch.', '')}" if self.use_amp else ""
        world = f", {self.dist.world_size} processes" if self.dist.enabled else ""
        threads = torch.get_num_threads()
        self.report(f"device: {self.device}, {threads} thread{'s' if threads != 1 else ''}{amp}{world}")
        uri = getattr(self.tracker, "uri", None)
        if uri is None:
            where = " (not tracked)"
        else:
            from medgen.tracking import default_tracking_uri

            ui = "medgen ui" if uri == default_tracking_uri() else f"medgen ui --uri {uri}"
            where = f" in {uri}; watch it with `{ui}`{self._runs_link()}"
        self.report(f"run {self.run_id}{' (resumed at epoch ' + str(self.epoch) + ')' if resumed else ''}{where}")

    def _runs_link(self) -> str:
        """`` at <link>``: the page of `medgen ui` (default port) that opens this run's experiment
        on its runs (MLflow 3.17 opens a clicked experiment on its GenAI overview)."""
        from medgen.tracking.ui_links import experiment_url, ui_base

        experiment_id = self.tracker.experiment_of_run
        return "" if experiment_id is None else f" at {experiment_url(ui_base(), experiment_id)}"

    def _report_validation(self, val: dict[str, float]) -> None:
        value = val.get(self.best_metric)
        if value is None:
            return
        best = (f"; best {self.best_value:.4g} at epoch {self.best_epoch}" if self.best_value is not None else "")
        self.report(f"epoch {self.epoch}: {self.best_metric} {value:.4g}{best}")

    def _report_end(self) -> None:
        if self.best_epoch is not None:
            where = (f"{self.checkpoints.run_dir() / 'best.pt'} (and the MLflow run's checkpoints/)" if self.cfg.local_checkpoints
                     else "in the MLflow run's checkpoints/ (trainer.local_checkpoints=false)")
            self.report(f"best.pt: epoch {self.best_epoch}, {self.best_metric} {self.best_value:.4g}, {where}")
        self.report(self.time_report())

    def _log_params(self) -> None:
        from medgen.tracking import git_commit
        from medgen.tracking.paths import scrub_params

        params = self.config.flat()
        params["trainer.resume"] = None  # a resume path is not a property of the run
        params.update({"seed": self.cfg.seed, "git_commit": git_commit(), "world_size": self.dist.world_size})
        params["device"] = str(self.device)
        if self.config.data.get("root") and self.config.tracking.log_paths:  # as typed, and where that was
            params["data.root_resolved"] = str(Path(str(self.config.data["root"])).resolve())
        self.tracker.log_params(scrub_params(params, self.config.tracking.log_paths))

    def _loop(self) -> None:
        from medgen.engine.progress import RunBar

        cfg = self.cfg
        self.clock.restart()
        steps_per_epoch = self._steps_per_epoch()
        schedule = OverheadSchedule(self.timer, cfg.val_every, cfg.overhead_share, cfg.checkpoint_every,
                                    cfg.checkpoint_minutes)
        bar = RunBar(self.clock, (self.max_epochs - self.epoch) * steps_per_epoch, self.config.task,
                     disable=not (cfg.progress and self.dist.is_main))
        try:
            while self.epoch < self.max_epochs:
                epoch = self.epoch
                self.model.epoch = epoch
                self.clock.read()
                self.model.progress = self.clock.start_epoch(epoch)
                self.model.on_epoch_start(epoch)
                # under a time budget max_epochs is a distant cap, not what the run will reach
                of = "" if cfg.max_minutes else f"/{self.max_epochs}"
                bar.describe(f"{self.config.task} epoch {epoch + 1}{of}")
                lrs = {f"lr/{n}": o.param_groups[0]["lr"] for n, o in self.optimizers.items()}  # used this epoch
                losses = self._train_epoch(epoch, steps_per_epoch, bar)
                with warnings.catch_warnings():
                    # A model may leave an optimiser idle for a whole epoch (e.g. f-AnoGAN's encoder
                    # during the GAN phase); the epoch-indexed schedule is still right then.
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                    self.clock.read()
                    for s in self.schedulers.values():
                        s.step()
                self.dist.broadcast_module(self.model, buffers_only=True)
                self.epoch = epoch + 1
                metrics = {f"train/{k}": v for k, v in losses.items()}
                metrics.update(lrs)
                last = self.epoch == self.max_epochs
                out_of_time = self.clock.out_of_time()
                final = last or out_of_time
                # Rank 0's clock decides for every rank (replicas must validate together).
                validate, write = self.dist.broadcast_object(
                    (schedule.validate_now(self.epoch, final), schedule.checkpoint_now(self.epoch, final)))
                improved = False
                if validate:
                    # a time budget's first validation also measures what the final one will cost
                    estimate = bool(cfg.max_minutes) and not final and self._final_estimate is None
                    if final:
                        bar.describe(f"{self.config.task} {self._final_label()}")
                    started, fid_before, timings = self.timer.total(), self.timer.spent("fid"), {}
                    with self.timer.phase("validation"):
                        val = self._validate(final, prime_fid=estimate, timings=timings)
                    cost, fid_cost = self.timer.total() - started, self.timer.spent("fid") - fid_before
                    schedule.validated(cost, final_work=fid_cost if estimate and not cfg.fid_during_training else 0.0)
                    if estimate:
                        network = timings.get("network", 0.0)
                        self._reserve_final_validation(network, cost - fid_cost - network, fid_cost)
                    if final and self._final_estimate is not None:  # how good the estimate was, in MLflow
                        metrics.update({"time/final_validation_seconds": cost,
                                        "time/final_validation_estimate_seconds": self._final_estimate})
                    bar.advance()
                    metrics.update(val)
                    self.last_metrics = dict(val)
                    improved = self._update_best(val)
                    if self.dist.is_main:
                        self._report_validation(val)
                self._log_epoch(metrics, flush=validate or final)
                # best.pt after the log write, so that its state has nothing pending (as last.pt's)
                if improved and self.dist.is_main:
                    self.checkpoints.keep_best(self.state(), self.best_epoch, self.best_metric, self.best_value)
                if self.dist.is_main and write:
                    self.checkpoints.write(self.state())
                    schedule.checkpointed()
                self.dist.barrier()
                if out_of_time and not last:
                    break
        finally:
            bar.close()
        if self.dist.is_main:
            with self.timer.phase("logging"):
                self._log_model()
                self.tracker.log_metrics(self.timer.metrics(), step=self.epoch)
            self._report_end()

    def _log_epoch(self, metrics: dict[str, float], flush: bool) -> None:
        """Log an epoch's metrics, batched: epochs of a few seconds each would otherwise pay an
        MLflow write apiece. Train losses are averaged over the epochs since the last write, which
        happens at most every ``trainer.log_seconds`` and at every validation."""
        pending = self._pending_log
        for key, value in metrics.items():
            total, n = pending.get(key, (0.0, 0))
            pending[key] = (total + value, n + 1) if key.startswith("train/") else (value, 1)
        now = self.timer.total()
        if not flush and now - self._logged_at < float(self.cfg.log_seconds):
            return
        with self.timer.phase("logging"):
            self.tracker.log_metrics({k: total / n for k, (total, n) in pending.items()}, step=self.epoch)
        pending.clear()
        self._logged_at = now

    def time_report(self) -> str:
        """Where this run's wall time went, one line (also logged as ``time/<phase>_share``)."""
        return f"{self.timer.summary()}; {self.global_step} training steps in {self.epoch} epochs"

    def _steps_per_epoch(self) -> int:
        n = len(self._train_loader(0))
        if n == 0:
            raise TrainingError("the training set is empty (no batches)")
        return min(n, self.cfg.steps_per_epoch) if self.cfg.steps_per_epoch else n

    def _train_epoch(self, epoch: int, steps: int, bar) -> dict[str, float]:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        sync = self.device.type == "cuda"
        phase = self.timer.phase
        with phase("data"):
            batches = iter(self._train_loader(epoch))
        for i in range(steps):
            # a time budget ends mid-epoch (an epoch can be long; the final validation's share of
            # the budget is waiting); rank 0's clock decides, and an epoch makes at least one step
            if self.cfg.max_minutes is not None and i > 0:
                self.clock.read()
                if self.clock.out_of_time():
                    break
            with phase("data"):  # waiting for the next batch (patch sampling, transfer)
                batch = next(batches, None)
                if batch is None:
                    break
                batch = to_device(batch, self.device)
                if self._slices:
                    batch = squeeze_slices(batch)
            self.model.progress = self.clock.step_progress(epoch, i, steps)
            with phase("train"):
                self._bad_step = None
                out = self.model.training_step(batch, self.global_step) or {}
                losses = {k: float(v) for k, v in out.items()}
                bad = [k for k, v in losses.items() if not math.isfinite(v)]
                if self.dist.any(bool(bad) or self._bad_step is not None):
                    self._raise_non_finite(bad, losses, epoch)
                if sync:
                    torch.cuda.synchronize(self.device)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            self.global_step += 1
            bar.step(self.global_step, losses)
        return self.dist.reduce_means(sums, counts)

    def _raise_non_finite(self, bad: list[str], losses: dict[str, float], epoch: int) -> None:
        if bad:
            what = ", ".join(f"{k}={losses[k]}" for k in bad)
            msg = f"non-finite loss {what} at step {self.global_step} (epoch {epoch + 1})"
        elif self._bad_step is not None:
            msg = f"non-finite loss for optimiser {self._bad_step!r} at step {self.global_step} (epoch {epoch + 1})"
        else:
            msg = f"non-finite loss on another process at step {self.global_step} (epoch {epoch + 1})"
        raise TrainingError(msg + "; the run is marked FAILED (try a lower learning rate or optim.grad_clip)")

    def _validate(self, final: bool, prime_fid: bool = False, timings: dict | None = None) -> dict[str, float]:
        """Whole-volume metrics of the validation split; FID only at the final validation unless
        ``trainer.fid_during_training`` (the fake side's features cost most of a validation).
        prime_fid: also feed FID's real side (cached for the final FID; what it costs is what the
        final's fake side will), for :meth:`_reserve_final_validation`; timings: see
        :func:`~medgen.engine.validation.evaluate_volumes`."""
        loader = self._val_loader()
        if loader is None:
            return {}
        grid = None
        tmpdir = None
        fids = self._fids() if (final or self.cfg.fid_during_training or prime_fid) else {}
        if self.cfg.val_images and self.dist.is_main:
            tmpdir = tempfile.mkdtemp(prefix="medgen-val-")
            grid = Path(tmpdir) / f"epoch_{self.epoch:03d}.png"
        self.model.periodic_validation = True  # models may skip test-time extras (flip ensembles)
        try:
            metrics = evaluate_volumes(
                self.model,
                loader,
                device=self.device,
                autocast=self._autocast,
                fids=fids,
                fid_real_only=prime_fid and not (final or self.cfg.fid_during_training),
                dist=self.dist,
                grid_path=grid,
                grid_title=f"{self.config.task} epoch {self.epoch}",
                progress=bool(self.cfg.progress and self.dist.is_main),
                desc=self._final_label() if final else f"validate epoch {self.epoch}",
                phase=self.timer.phase,
                constant_cache=self._constant_cache,
                timings=timings,
            )
            if grid is not None and grid.is_file():
                with self.timer.phase("logging"):
                    self.tracker.log_artifact(grid, "samples")
        finally:
            self.model.periodic_validation = False
            if tmpdir is not None:
                import shutil

                shutil.rmtree(tmpdir, ignore_errors=True)
        return {f"val/{k}": v for k, v in metrics.items()}

    def _final_label(self) -> str:
        return "final validation (FID)" if self._fids() else "final validation"

    def _reserve_final_validation(self, network_seconds: float, other_seconds: float, fid_seconds: float) -> None:
        """Stop training early enough for the final validation to end within max_minutes.

        It costs this validation's network seconds times the passes a periodic one skips (flip
        ensembles), its other seconds (loading, metrics, the grid), and the fake side of FID: as
        much as the real side cost here (primed, or half of a full FID when
        ``fid_during_training``; the real side is cached by then)."""
        fake_fid = fid_seconds / 2 if self.cfg.fid_during_training else fid_seconds
        passes = max(1, int(self.model.final_validation_passes()))
        seconds = network_seconds * passes + max(0.0, other_seconds) + fake_fid
        kept = self.clock.reserve(seconds / 60)
        self._final_estimate = seconds
        if not self.dist.is_main:
            return
        budget = float(self.cfg.max_minutes)
        line = (f"final validation{' with FID' if self._fids() else ''} estimated at {seconds:.0f} s: training stops "
                f"at {budget - kept:.1f} of the {budget:g} min budget")
        if seconds - 60 * kept > 6:  # more than a tenth of a minute
            line += (f"; the run will overrun it by about {(seconds - 60 * kept) / 60:.1f} min (a longer "
                     "trainer.max_minutes, a lower trainer.fid_slices or model.flip_ensemble=false shorten it)")
        self.report(line)

    def _fids(self) -> dict:
        """The FID accumulators for the whole run (each caches the real volumes' features across
        validations): the model's main pair (prefix ``""``), or every set of its ``fid_sets``
        (outputs of their own: CycleGAN's two directions). Baselines' FIDs (e.g. the low-dose
        input's) would double its cost: ``medgen evaluate`` reports those."""
        from medgen.engine.validation import fid_prefixes

        prefixes = fid_prefixes(self.model, baselines=False)
        if self.cfg.fid_slices <= 0 or not prefixes:
            return {}
        if getattr(self, "_fid_metrics", None) is None:
            from medgen.metrics import FID

            self._fid_metrics = {p: FID(n_slices=self.cfg.fid_slices, device=self.device) for p in prefixes}
        return self._fid_metrics

    def _update_best(self, metrics: dict[str, float]) -> bool:
        if not self.model.may_be_best():
            return False
        value = metrics.get(self.best_metric)
        if value is None or not math.isfinite(value):
            if not self._warned_best and self.dist.is_main and metrics:
                warnings.warn(f"best metric {self.best_metric!r} not among {sorted(metrics)}; best.pt not written")
                self._warned_best = True
            return False
        better = (
            self.best_value is None
            or (self.best_mode == "max" and value > self.best_value)
            or (self.best_mode == "min" and value < self.best_value)
        )
        if better:
            self.best_value, self.best_epoch = float(value), self.epoch
        return better

    def _log_model(self) -> None:
        tr = self.config.tracking
        if not tr.log_model or type(self.tracker) is Tracker:
            return
        try:
            networks = self.model.exported_networks()
        except NotImplementedError:
            return
        for name, network in networks.items():
            # one network: "model", registered as the task; several: each by its name (cyclegan-G_AB)
            registered = self.config.task if name == "model" else f"{self.config.task}-{name}"
            version = self.tracker.log_model(copy.deepcopy(network).cpu().eval(), name,
                                             registered_name=registered if tr.register_model else None)
            if version is not None:  # one line of ours instead of MLflow's two
                self.report(f"model registered as '{registered}' version {version}")

