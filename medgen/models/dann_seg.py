"""Domain-adversarial lesion segmentation across scanners (Kamnitsas et al., IPMI 2017).

Kamnitsas, Baumgartner, Ledig, Newcombe, Simpson, Kane, Menon, Nori, Criminisi, Rueckert,
Glocker, "Unsupervised domain adaptation in brain lesion segmentation with adversarial
networks", IPMI 2017; the gradient reversal of Ganin & Lempitsky, "Unsupervised Domain
Adaptation by Backpropagation", ICML 2015.

A segmenter S (a residual U-Net here, DeepMedic in the paper:
:class:`~medgen.networks.feature_unet.FeatureUNet`) is trained on labelled source scans; a
domain classifier C (:class:`~medgen.networks.domain_classifier.MultiConnectedDomainClassifier`)
reads the features of several of S's layers through a gradient reversal layer and tells source
from target patches; target scans need no labels. One loss, one backward pass, both optimisers::

    L = DiceCE(S(x_s), y_s) + BCE(C(GRL_λ(f(x_s))), 0) + BCE(C(GRL_λ(f(x_t))), 1)

C descends its BCE; the reversal makes S *ascend* it, scaled by λ, so S's features stop telling
the scanners apart while they still segment the source. λ follows ``lambda_schedule`` over the
share of the training budget done (``progress``, advanced per step), times ``lambda_max``:

* ``ganin`` — λ_p = 2 / (1 + exp(−10 p)) − 1 (Ganin & Lempitsky 2015; 0 at the start, 0.99 at
  p = 0.5);
* ``linear`` — λ_p = p (a ramp; the paper's own ramp is not confirmed by a stored copy).

``lambda_ramp`` < 1 reaches the end of either schedule at that share of the run (p / ramp).

``adaptation`` (the same budget and training loop for each):

* ``dann`` (default) — the above;
* ``source_only`` — no domain classifier: S on the source labels alone (the lower bound);
* ``target_supervised`` — S trained on target labels (the upper bound, which the paper reports
  beside the adapted model); needs ``data.target_labels=true`` and a label for every training
  target subject.

Validation reports, per domain, the Dice of each foreground class (``val/dice_source``,
``val/dice_target``: the mean over foreground classes; ``..._c<k>`` per class with more than one)
on whole volumes, the domain classifier's accuracy (``val/domain_acc``, which should fall
towards chance, 0.5, as adaptation works) and λ. ``val/dice_target`` ranks checkpoints when every
target validation subject has a label (what the user wants: a segmenter for the target);
otherwise ``val/dice_source`` does, the only Dice there is (``trainer.best_metric`` overrides).
``infer`` returns the label map: the argmax of the class probabilities averaged over Gaussian-
weighted sliding windows (and flips, with ``flip_ensemble``), never an interpolated label.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

from medgen.data.domain import DomainVolumes
from medgen.errors import ConfigError
from medgen.models.base import GenerativeModel
from medgen.models.paired import SlidingWindowInference
from medgen.models.registry import register_model
from medgen.networks.domain_classifier import MultiConnectedDomainClassifier
from medgen.networks.feature_unet import FeatureUNet
from medgen.networks.gradient_reversal import grad_reverse
from medgen.transforms.masks import foreground_box

ADAPTATIONS = ("dann", "source_only", "target_supervised")
SCHEDULES = ("ganin", "linear")
DOMAINS = ("source", "target")


def lambda_at(progress: float, schedule: str = "ganin", lambda_max: float = 1.0, ramp: float = 1.0) -> float:
    """λ at ``progress`` (the share of the budget done, 0..1) for ``schedule`` (see the module)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"model.lambda_schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    p = min(1.0, max(0.0, float(progress) / ramp)) if ramp > 0 else 1.0
    value = 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0 if schedule == "ganin" else p
    return float(lambda_max) * value


def dice_per_class(prediction: torch.Tensor, label: torch.Tensor, n_classes: int) -> list[float]:
    """Dice of classes 1..n_classes-1 between two label maps; 1 where a class is in neither."""
    out = []
    for k in range(1, n_classes):
        p, t = prediction == k, label == k
        denom = int(p.sum()) + int(t.sum())
        out.append(1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom)
    return out


class _Probabilities(nn.Module):
    """The segmenter with a softmax: what the sliding window averages, and the logged model."""

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.segmenter(x).float(), dim=1)


@register_model("dann-seg")
class DANNSeg(SlidingWindowInference, GenerativeModel):
    """Lesion segmentation adapted from a labelled source scanner to an unlabelled target one.

    Args:
        spatial_dims: 3 (the paper) or 2.
        in_channels: input channels (1 scan).
        out_channels: classes, background included (set by the data: ``data.n_classes``).
        adaptation: ``"dann"``, ``"source_only"`` or ``"target_supervised"`` (module docstring).
        channels / strides / num_res_units / norm / dropout: the segmenter
            (:class:`~medgen.networks.feature_unet.FeatureUNet`).
        domain_layers: which of the segmenter's features feed the domain classifier, as indices
            into ``FeatureUNet.forward_features``' list (encoder levels, bottleneck, decoder levels),
            or ``"all"`` (default: every one, the "multi-connected" classifier).
        classifier_channels / classifier_norm: the domain classifier's convolutions.
        lambda_schedule / lambda_max / lambda_ramp: the reversal's coefficient (module docstring).
        domain_weight: weight of the domain BCE in the loss (1: the classifier's own loss; λ alone
            scales what reaches the segmenter).
        lr, beta1, beta2: Adam for the segmenter; ``classifier_lr`` for the classifier (None: lr).
        sw_overlap, sw_batch_size, flip_ensemble: whole-volume sliding-window inference.
        target_train_labels / target_val_labels: set by the data (``DomainVolumes.model_settings``):
            whether training batches carry target labels (``data.target_labels``) and whether every
            target validation subject has a label (then ``val/dice_target`` ranks checkpoints).
    """

    data_module = DomainVolumes
    metric_pairs: dict[str, tuple[str, str]] = {}  # segmentation: Dice, no image metrics
    output_kind = "label"
    value_range = (-1.0, 1.0)
    best_metric = "val/dice_target"

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        adaptation: str = "dann",
        channels: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] | None = None,
        num_res_units: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
        domain_layers: str | Sequence[int] = "all",
        classifier_channels: Sequence[int] = (64, 64),
        classifier_norm: str | None = "batch",
        lambda_schedule: str = "ganin",
        lambda_max: float = 1.0,
        lambda_ramp: float = 1.0,
        domain_weight: float = 1.0,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        classifier_lr: float | None = None,
        sw_overlap: float = 0.5,
        sw_batch_size: int = 4,
        flip_ensemble: bool = False,
        target_train_labels: bool = False,
        target_val_labels: bool = True,
    ) -> None:
        super().__init__()
        if adaptation not in ADAPTATIONS:
            raise ConfigError(f"model.adaptation must be one of {', '.join(ADAPTATIONS)}, got {adaptation!r}")
        lambda_at(0.0, lambda_schedule)  # checks the name
        if lambda_max < 0 or domain_weight < 0:
            raise ConfigError(f"model.lambda_max and model.domain_weight must be >= 0, got {lambda_max} and {domain_weight}")
        if not 0 < lambda_ramp <= 1:
            raise ConfigError(f"model.lambda_ramp must be in (0, 1] (the share of the run the schedule spans), got {lambda_ramp}")
        if lr <= 0 or (classifier_lr is not None and classifier_lr <= 0):
            raise ConfigError(f"model.lr and model.classifier_lr must be > 0, got {lr} and {classifier_lr}")
        if not 0 <= sw_overlap < 1:
            raise ConfigError(f"model.sw_overlap must be in [0, 1), got {sw_overlap}")
        if int(out_channels) < 2:
            raise ConfigError(f"model.out_channels counts the background too: at least 2, got {out_channels}")
        if adaptation == "target_supervised" and not target_train_labels:
            raise ConfigError("model.adaptation=target_supervised trains on target labels: set data.target_labels=true "
                              "(every training target subject then needs a label file)")
        self.spatial_dims, self.n_classes = int(spatial_dims), int(out_channels)
        self.adaptation = adaptation
        self.lambda_schedule, self.lambda_max, self.lambda_ramp = lambda_schedule, float(lambda_max), float(lambda_ramp)
        self.domain_weight = float(domain_weight)
        self.lr, self.classifier_lr, self.betas = float(lr), float(classifier_lr or lr), (beta1, beta2)
        self.sw_overlap, self.sw_batch_size, self.flip_ensemble = sw_overlap, int(sw_batch_size), bool(flip_ensemble)
        self.best_metric = "val/dice_target" if target_val_labels else "val/dice_source"
        self.S = FeatureUNet(spatial_dims, in_channels, out_channels, channels, strides, num_res_units, norm, dropout)
        n_features = len(self.S.feature_channels())
        if domain_layers == "all":
            self.domain_layers = list(range(n_features))
        else:
            self.domain_layers = [int(i) for i in domain_layers]
            if not self.domain_layers or any(not 0 <= i < n_features for i in self.domain_layers):
                raise ConfigError(f"model.domain_layers must be 'all' or indices in 0..{n_features - 1} (the "
                                  f"segmenter's encoder levels, bottleneck and decoder levels), got {domain_layers}")
        self.C = None
        if adaptation == "dann":
            taps = [self.S.feature_channels()[i] for i in self.domain_layers]
            self.C = MultiConnectedDomainClassifier(spatial_dims, taps, classifier_channels, classifier_norm)
        # Dice over the whole batch (nnU-Net's batch Dice): patches without a lesion then do not
        # each add a Dice of an empty class; cross-entropy as MONAI's DiceCE.
        self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    # --- λ -----------------------------------------------------------------------------------
    @property
    def lambda_(self) -> float:
        """The gradient reversal's coefficient now (0 without a domain classifier)."""
        if self.C is None:
            return 0.0
        return lambda_at(self.progress, self.lambda_schedule, self.lambda_max, self.lambda_ramp)

    def extra_state(self) -> dict[str, Any]:
        # the share of the run trained: a model loaded from a checkpoint has the λ the run ended at
        return {"progress": float(self.progress)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.progress = float(state.get("progress", self.progress))

    # --- optimisers and steps -----------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"S": self.adam(self.S.parameters(), self.lr, self.betas)}
        if self.C is not None:
            opts["C"] = self.adam(self.C.parameters(), self.classifier_lr, self.betas)
        return opts

    def check_patch(self, patch_size) -> None:
        div = self.S.divisor
        if any(int(p) % div for p in patch_size):
            raise ConfigError(f"data.patch_size {list(patch_size)} must be multiples of {div} for model.channels/"
                              f"model.strides (one stride per level)")

    def window_divisor(self) -> int:
        return self.S.divisor

    def _labels(self, batch: dict[str, Any], key: str) -> torch.Tensor:
        label = batch.get(key)
        if label is None:
            raise ConfigError(f"model.adaptation={self.adaptation} needs '{key}' in the training batches "
                              f"(data.target_labels=true for target labels)")
        return label

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        lam = self.lambda_
        logs: dict[str, float] = {}
        if self.adaptation == "source_only":
            x, y = batch["image"], self._labels(batch, "label")
            with self.autocast():
                loss = seg = self.seg_loss(self.S(x).float(), y)
            self.optimizer_step("S", loss)
        elif self.adaptation == "target_supervised":
            x, y = batch["target_image"], self._labels(batch, "target_label")
            with self.autocast():
                loss = seg = self.seg_loss(self.S(x).float(), y)
            self.optimizer_step("S", loss)
        else:
            xs, y, xt = batch["image"], self._labels(batch, "label"), batch["target_image"]
            n = xs.shape[0]
            with self.autocast():
                # one forward over both domains: the same normalisation and the same features
                logits, features = self.S.forward_features(torch.cat([xs, xt]))
                seg = self.seg_loss(logits[:n].float(), y)
                d_logits = self.C([grad_reverse(features[i], lam) for i in self.domain_layers]).float()
                domain = torch.cat([torch.zeros(n), torch.ones(xt.shape[0])]).to(d_logits.device)
                d_loss = F.binary_cross_entropy_with_logits(d_logits, domain)
                loss = seg + self.domain_weight * d_loss
            self.optimizer_step(("S", "C"), loss)
            logs["domain_bce"] = float(d_loss.detach())
            logs["domain_acc"] = float(((d_logits.detach() > 0).float() == domain).float().mean())
        logs.update({"seg_loss": float(seg.detach()), "loss": float(loss.detach()), "lambda": lam})
        return logs

    # --- inference ------------------------------------------------------------------------------
    def exported_network(self) -> nn.Module:
        return _Probabilities(self.S)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, n_classes, *spatial)`` of a whole volume: sliding windows over
        the body's box grown by one window; outside it, background."""
        box = foreground_box(x, self._roi())
        if box is None:
            return self._infer_windows(x)
        probs = torch.zeros((x.shape[0], self.n_classes) + tuple(x.shape[2:]), device=x.device)
        probs[:, 0] = 1.0
        probs[(slice(None), slice(None)) + box] = self._infer_windows(x[(slice(None), slice(None)) + box])
        return probs

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Whole volume ``(B, C, *spatial)`` -> class indices ``(B, 1, *spatial)`` (int64): the
        argmax of the window-averaged probabilities."""
        return self.probabilities(x).argmax(dim=1, keepdim=True)

    @torch.no_grad()
    def domain_logit(self, x: torch.Tensor) -> torch.Tensor | None:
        """The domain classifier's logit for the training-patch-sized crop at the centre of the
        body's box (None without a classifier): its accuracy on validation scans."""
        if self.C is None:
            return None
        roi = self._roi()
        box = foreground_box(x, tuple(0 for _ in roi)) or tuple(slice(0, s) for s in x.shape[2:])
        index = []
        for b, r, n in zip(box, roi, x.shape[2:]):
            start = min(max(0, (b.start + b.stop) // 2 - r // 2), max(0, n - r))
            index.append(slice(start, start + r))
        crop = x[(slice(None), slice(None)) + tuple(index)]
        if any(c < r for c, r in zip(crop.shape[2:], roi)):  # a volume smaller than a patch
            pad = []
            for c, r in zip(reversed(crop.shape[2:]), reversed(roi)):
                pad += [0, max(0, r - c)]
            crop = F.pad(crop, pad, value=-1.0)
        with self.autocast():
            _, features = self.S.forward_features(crop[..., 0] if self.slice_mode else crop)  # slice mode: 2D S
            return self.C([features[i] for i in self.domain_layers]).float()

    # validation grids cross at the largest labelled region (the lesion), else the predicted one
    grid_focus = ("label", "prediction")

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = batch["image"]
        domain = int(torch.as_tensor(batch["domain"]).flatten()[0])
        name = DOMAINS[domain]
        prediction = self.infer(x)
        scale = 2.0 / (self.n_classes - 1)  # class indices onto the grid's [-1, 1]
        # λ is a schedule value, not a metric of these scans: it goes to MLflow with the training
        # losses (train/lambda), and `medgen evaluate` does not list it
        out: dict[str, Any] = {"input": x, "prediction": prediction.float() * scale - 1.0}
        label = batch.get("label")
        if label is not None:
            dice = dice_per_class(prediction, label.to(prediction.device).long(), self.n_classes)
            out[f"dice_{name}"] = sum(dice) / len(dice)
            if len(dice) > 1:
                out.update({f"dice_{name}_c{k + 1}": d for k, d in enumerate(dice)})
            out["label"] = label.float() * scale - 1.0
        logit = self.domain_logit(x)
        if logit is not None:
            out["domain_acc"] = float(((logit > 0).long() == domain).float().mean())
        return out
