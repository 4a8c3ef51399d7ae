"""What paired image-to-image models share: the c-GAN update and whole-volume inference.

pet-cgan (Wang et al. 2018) and Ea-GAN (Yu et al. 2019) have one shape: a generator G maps a
source volume x to an estimate of the target y, a conditional patch discriminator D judges
(x, y) against (x, G(x)), and G also minimises a weighted content term. They differ in what D
sees (Ea-GAN's dEa variant adds the Sobel map of the image) and in further terms of G's loss
(Ea-GAN's edge L1). :class:`PairedTranslationModel` holds the update with those two hooks;
:class:`SlidingWindowInference` the inference any volume model can use: a Gaussian-weighted
sliding window of the training patch size, only over the body's bounding box grown by one
window, optionally averaged over every flip of the input.
"""

from __future__ import annotations

import math

import torch
from monai.inferers import SlidingWindowInferer
from torch import nn
from tqdm.auto import tqdm

from medgen.errors import ConfigError
from medgen.models.base import GenerativeModel
from medgen.models.slices import SliceNetwork, is_slice_mode
from medgen.models.tta import flip_ensemble
from medgen.transforms.masks import foreground_box
from medgen.transforms.spatial import window_count


class SlidingWindowInference:
    """Whole-volume ``infer`` for a model whose ``exported_network()`` maps patches to patches.

    The model sets ``spatial_dims``, ``sw_overlap``, ``sw_batch_size`` and ``flip_ensemble``;
    ``roi_size`` comes from ``data.patch_size``; :meth:`window_divisor` says what the window's
    sides must divide by.
    """

    def window_divisor(self) -> int:
        return 1

    def final_validation_passes(self) -> int:
        """The flip ensemble, which periodic validation skips, runs every flip."""
        return 2 ** self.spatial_dims if self.flip_ensemble else 1

    @property
    def slice_mode(self) -> bool:
        """A 2D network on the slices of 3D volumes (:mod:`medgen.models.slices`)."""
        return is_slice_mode(self.spatial_dims, self.roi_size)

    def _roi(self) -> tuple[int, ...]:
        roi = tuple(self.roi_size) if self.roi_size is not None else (32,) * self.spatial_dims
        if len(roi) != self.spatial_dims and not self.slice_mode:
            raise ConfigError(f"sliding-window ROI {roi} does not have {self.spatial_dims} dimensions")
        div = self.window_divisor()
        if any(r % div for r in roi[: self.spatial_dims]):
            raise ConfigError(f"data.patch_size {roi} must be multiples of {div} for model.channels")
        return roi

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Whole volume (B, C, *spatial) in model space -> the output, same shape.

        Only the body's bounding box, grown by one window on every side, goes through the
        network; outside it (air, a window or more from the body) the output is the input.
        A whole-body scanner's field of view around a head is mostly air: a brain in a
        344 x 344 x 127 field of view at 2 mm ran through a fifth of it, 4.3x faster.
        """
        box = foreground_box(x, self._roi())
        if box is None:
            return self._infer_windows(x)
        index = (slice(None), slice(None)) + box
        out = x.float().clone()
        out[index] = self._infer_windows(x[index])
        return out

    def _infer_windows(self, x: torch.Tensor) -> torch.Tensor:
        """Sliding-window inference over all of ``x`` (and its flips, with ``flip_ensemble``;
        not in the engine's between-epoch validation, which only ranks checkpoints)."""
        inferer = SlidingWindowInferer(
            roi_size=self._roi(),
            sw_batch_size=self.sw_batch_size,
            overlap=self.sw_overlap,
            mode="gaussian",
            padding_mode="replicate",
        )
        net = SliceNetwork(self.exported_network()) if self.slice_mode else self.exported_network()
        flips = self.flip_ensemble and not self.periodic_validation
        passes = 2 ** self.spatial_dims if flips else 1
        batches = math.ceil(window_count(x.shape[2:], inferer.roi_size, self.sw_overlap) / self.sw_batch_size)
        bar = tqdm(total=passes * batches, desc=f"{self.task or 'model'} infer", unit="batch", leave=False,
                   disable=not self.show_progress)

        def counted(window: torch.Tensor) -> torch.Tensor:
            out = net(window)
            bar.update(1)
            return out

        def estimate(v: torch.Tensor) -> torch.Tensor:
            return inferer(v, counted).float()

        with self.autocast(), bar:
            if not flips:
                return estimate(x)
            return flip_ensemble(estimate, x, self.spatial_dims, axes=(2, 3) if self.slice_mode else None)


class PairedTranslationModel(SlidingWindowInference, GenerativeModel):
    """A conditional GAN from source to target volumes, trained on patch pairs.

    The model sets ``adv_loss`` (:class:`~medgen.losses.adversarial.AdversarialLoss`),
    ``lambda_l1`` (the content term's weight), ``content_loss`` (its name, for the logs) and
    ``_content_loss`` (the function), ``l1_warmup`` (share of the budget on the content term
    alone before D joins; 0: adversarial from the first step). Hooks:

    * :meth:`d_inputs` -- what D sees beside the condition (default: the image itself);
    * :meth:`extra_g_terms` -- weighted terms added to G's loss and logged (default: none).
    """

    l1_warmup = 0.0

    def d_inputs(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """D's inputs for condition ``x`` and a real or generated ``image`` (concatenated by D)."""
        return (x, image)

    def extra_g_terms(self, x: torch.Tensor, fake: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms added to G's loss, by name (logged as ``<g>_<name>``)."""
        return {}

    def _stage_step(
        self, G: nn.Module, D: nn.Module | None, g_name: str, d_name: str, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One c-GAN update (D then G); returns G's estimate (with graph freed) and the losses."""
        logs: dict[str, float] = {}
        if self._warming_up:
            D = None  # G alone on the content term
        with self.autocast():
            fake = G(x)
        if D is not None:
            with self.autocast():
                # Halved as in pix2pix (Isola et al. 2017), which the paper's c-GAN follows: it
                # slows D relative to G, whose adversarial term is small next to λ·L1.
                d_loss = 0.5 * self.adv_loss.d_loss(D(*self.d_inputs(x, y)), D(*self.d_inputs(x, fake.detach())))
            self.optimizer_step(d_name, d_loss)
            logs[f"{d_name.lower()}_loss"] = float(d_loss.detach())
        prefix = "g" if g_name == "G" else g_name.lower()
        with self.frozen(*([D] if D is not None else [])):
            with self.autocast():
                content = self._content_loss(fake.float(), y.float())
                g_loss = self.lambda_l1 * content
                extra = self.extra_g_terms(x, fake, y)
                for term in extra.values():
                    g_loss = g_loss + term
                if D is not None:
                    g_adv = self.adv_loss.g_loss(D(*self.d_inputs(x, fake)))
                    g_loss = g_loss + g_adv
            self.optimizer_step(g_name, g_loss)
        logs[f"{prefix}_{self.content_loss}"] = float(content.detach())
        logs.update({f"{prefix}_{name}": float(term.detach()) for name, term in extra.items()})
        logs[f"{prefix}_loss"] = float(g_loss.detach())
        if D is not None:
            logs[f"{prefix}_adv"] = float(g_adv.detach())
        return fake.detach(), logs

    @staticmethod
    def check_shares(**shares: float) -> None:
        """ConfigError unless every named setting (``l1_warmup``, ``sw_overlap``) lies in [0, 1)."""
        for name, value in shares.items():
            if not 0 <= value < 1:
                raise ConfigError(f"model.{name} must be in [0, 1), got {value}")

    def check_patch(self, patch_size) -> None:
        div = self.window_divisor()
        if any(int(p) % div for p in patch_size):
            raise ConfigError(f"data.patch_size {list(patch_size)} must be multiples of {div} for the generator's "
                              f"model.channels (one halving per level)")
        for name in ("D", "D2"):
            d = getattr(self, name, None)
            if d is not None and hasattr(d, "min_side") and min(int(p) for p in patch_size) < d.min_side():
                raise ConfigError(f"data.patch_size {list(patch_size)} is too small for model.d_layers: the "
                                  f"discriminator needs sides of at least {d.min_side()} (lower model.d_layers "
                                  f"or enlarge the patches)")

    @property
    def _warming_up(self) -> bool:
        """In the content-only warm-up (``progress``: the share of the budget spent)."""
        return self.progress < self.l1_warmup

    def may_be_best(self) -> bool:
        # Only weights trained with D are a c-GAN's; the warm-up's content-only weights would
        # otherwise win best.pt on PSNR.
        return not self._warming_up
