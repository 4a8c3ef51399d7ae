"""The model contract. A model owns its networks, optimisers and steps; the engine owns the loop.

A model subclasses :class:`GenerativeModel` and implements

* ``configure_optimizers() -> dict[str, Optimizer]`` — one entry per optimiser (e.g. ``{"G": ..., "D": ...}``);
* ``training_step(batch, step) -> dict[str, float]`` — computes its losses and, for each optimiser,
  calls ``self.optimizer_step(name, loss)``; wraps a generator update in ``self.frozen(D)`` so the
  discriminator gets no gradient; returns the scalar losses to log (``train/<name>``);
* ``validation_step(batch) -> dict[str, Tensor | float]`` — whole-volume outputs in model space:
  image tensors ``(B, C, *spatial)`` named as in ``metric_pairs``, and optional scalar metrics;
* ``infer(x) -> Tensor`` — a whole volume ``(B, C, *spatial)`` in model space to its output;
* ``exported_network() -> nn.Module`` — what is logged/registered as the MLflow model
  (``exported_networks()`` names several, e.g. CycleGAN's two generators).

Class attributes a model sets:

* ``data_module`` — the class (from :mod:`medgen.data`) that builds its datasets from ``data.root``;
* ``metric_pairs`` — ``{prefix: (prediction_key, reference_key)}``; the engine computes PSNR, SSIM,
  MAE and NMSE for each pair, named ``val/<prefix>psnr`` etc. (prefix ``""`` for the main output);
  FID (``val/fid``) for the main pair at the final validation (``trainer.fid_during_training``:
  at every one; ``medgen evaluate`` reports FID for every pair);
* ``constant_pairs`` — prefixes of ``metric_pairs`` whose images no weight changes (a baseline such
  as the low-dose input): the engine computes their metrics at the first validation and reuses them;
* ``output_kind`` — what ``infer`` returns: ``"image"`` (intensities, mapped back to the input's
  units and resampled linearly onto its grid), ``"label"`` (class indices ``(B, 1, *spatial)``,
  resampled nearest, no intensity mapping, written as integers) or ``"table"`` (a dict of named
  tables ``(N, columns)`` for N samples, written as ``<name>.tsv``; ``table_outputs`` says which
  have the input's columns and go back to its units through the data module: ``"input"``, and
  which are new features: ``"features"``);
* ``value_range`` — the model-space intensity range, which fixes the metrics' ``data_range``;
* ``best_metric`` — default metric for ``best.pt`` (``trainer.best_metric`` overrides it);
* ``directions`` — the translation directions ``medgen infer --direction`` offers, the first the
  default (CycleGAN: ``("AtoB", "BtoA")``); the instance's ``direction`` says which ``infer``
  runs, and ``input_options()`` gives ``data.preprocess`` the matching keywords (which side an
  input is from). Empty: the model translates one way and ``--direction`` is an error.

The engine wires ``optimizer_step`` to its own implementation (AMP scaler, gradient clipping,
gradient averaging across processes); without an engine (unit tests) a plain step is used.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from torch import nn


class GenerativeModel(nn.Module):
    data_module: ClassVar[type]
    metric_pairs: ClassVar[dict[str, tuple[str, str]]] = {"": ("prediction", "target")}
    constant_pairs: ClassVar[tuple[str, ...]] = ()
    output_kind: ClassVar[str] = "image"
    table_outputs: ClassVar[dict[str, str]] = {}  # output_kind "table": name -> "input" | "features"
    value_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    best_metric: ClassVar[str] = "val/psnr"
    directions: ClassVar[tuple[str, ...]] = ()
    task: ClassVar[str] = ""  # set by @register_model

    def __init__(self) -> None:
        super().__init__()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._step_fn: Callable[[str, torch.Tensor], None] | None = None
        self._autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self.epoch = 0  # current epoch (0-based), kept up to date by the engine
        self.max_epochs = 1
        # Share of the training budget spent, kept by the engine and advanced before every
        # training step: epochs, or minutes under trainer.max_minutes, whichever is further along
        # (within an epoch by its share of steps). Schedules that must finish within the run
        # (phases, ramps, Ganin's GRL coefficient) read it; on_epoch_start sees the epoch's start.
        self.progress = 0.0
        # trainer.max_minutes (None: the budget is epochs): whether ``progress`` runs by the clock,
        # for schedules the paper states in epochs (Ea-GAN's edge-weight ramp over 20 of 150).
        self.max_minutes: float | None = None
        self.roi_size: tuple[int, ...] | None = None  # sliding-window ROI, set from data.patch_size
        # True while the engine validates between epochs: a model may skip costly test-time
        # extras then (e.g. a flip ensemble); `medgen evaluate`/`infer` always run the full path.
        self.periodic_validation = False
        # Set by `medgen infer`: a model whose inference of one volume takes long (sliding
        # windows, ensembles) shows a progress bar over it.
        self.show_progress = False

    def check_patch(self, patch_size: Sequence[int]) -> None:
        """ConfigError if the networks cannot take training patches of ``patch_size`` (called
        when the model is built, before any step: a depth that does not fit a patch would
        otherwise fail at the first step that uses it, minutes into a run)."""

    def input_options(self) -> dict[str, Any]:
        """Keyword arguments of ``data.preprocess`` for an inference input (e.g. the side of a
        two-domain model's ``direction``); none by default."""
        return {}

    def final_validation_passes(self) -> int:
        """How many times the network work of a periodic validation the final one costs, for
        the engine's estimate of it (a flip ensemble skipped between epochs: its flips)."""
        return 1

    def may_be_best(self) -> bool:
        """Whether the weights as they are now may become ``best.pt`` (checked at validation).

        A phased model answers False in phases that do not train the model it names, e.g. a
        c-GAN's L1 warm-up: its checkpoints would win on PSNR without being a c-GAN's.
        """
        return True

    # --- to implement -------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        raise NotImplementedError

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def exported_network(self) -> nn.Module:
        raise NotImplementedError

    def exported_networks(self) -> dict[str, nn.Module]:
        """The MLflow models to log, by name: ``{"model": exported_network()}`` unless a model
        has several (each is logged under its name and registered as ``<task>-<name>``)."""
        return {"model": self.exported_network()}

    def save_validation_figure(self, out: dict[str, Any], batch: dict[str, Any], path, title: str | None) -> None:
        """Draw the first validation item's figure at ``path`` (PNG) when ``validation_step``
        returned no images to grid (e.g. a VAE's latent map); nothing by default."""

    def on_epoch_start(self, epoch: int) -> None:
        """Hook for epoch-dependent weights (edge-loss ramp, KL warm-up, GRL schedule)."""

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state to keep in checkpoints (plain types/tensors), e.g. a threshold."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    # --- provided -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @staticmethod
    def adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
        """Adam, fused into one kernel where PyTorch has one for the parameters' device.

        Why: the default implementation launches several small operations per tensor; for the
        benchmark's 1.5 M-parameter 3D U-Net on one CPU thread a step took 15 ms, fused 1.5 ms.
        Same algorithm and numbers, so checkpoints and resumes are unaffected.
        """
        params = list(params)
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
            return torch.optim.Adam(params, lr=lr, betas=betas)

    def setup_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = dict(self.configure_optimizers())
        return self.optimizers

    def optimizer_step(self, name: str | Sequence[str], loss: torch.Tensor) -> None:
        """Backpropagate `loss` once and step optimiser `name` (zeroing its gradients first), or
        each of several names: one loss for several optimisers, e.g. a segmenter and a domain
        classifier trained through gradient reversal."""
        names = (name,) if isinstance(name, str) else tuple(name)
        if self._step_fn is not None:
            self._step_fn(names[0] if len(names) == 1 else names, loss)
            return
        if not self.optimizers:
            self.setup_optimizers()
        opts = [self.optimizers[n] for n in names]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context chosen by the engine (a no-op on CPU)."""
        return self._autocast()

    @staticmethod
    @contextlib.contextmanager
    def frozen(*nets: nn.Module) -> Iterator[None]:
        """Run a block with `nets` not requiring gradients (e.g. D during a G update)."""
        flags = [[p.requires_grad for p in n.parameters()] for n in nets]
        for n in nets:
            n.requires_grad_(False)
        try:
            yield
        finally:
            for n, fl in zip(nets, flags):
                for p, f in zip(n.parameters(), fl):
                    p.requires_grad_(f)
