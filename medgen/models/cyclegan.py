"""CycleGAN for unpaired translation between two modalities, e.g. MR <-> CT, in 3D or 2D.

Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks",
ICCV 2017 (reference: junyanz/pytorch-CycleGAN-and-pix2pix, ``cycle_gan_model.py``), as
Wolterink et al., "Deep MR to CT Synthesis using Unpaired Data" (SASHIMI 2017) applied it to
brain MR -> CT. Two generators, ``G_AB`` (A -> B, e.g. MR -> CT) and ``G_BA``, and two PatchGAN
discriminators, ``D_A`` (judges A images: real A against ``G_BA(b)``) and ``D_B`` (real B against
``G_AB(a)``). LSGAN on D's raw outputs::

    L_G = (D_B(G_AB(a)) − 1)² + (D_A(G_BA(b)) − 1)²
          + λ_A |G_BA(G_AB(a)) − a|₁ + λ_B |G_AB(G_BA(b)) − b|₁                 (cycle)
          + λ_id (λ_B |G_AB(b) − b|₁ + λ_A |G_BA(a) − a|₁)                     (identity)
    L_D = ½ [(D_B(b) − 1)² + D_B(pool_B(G_AB(a)))²] + ½ [(D_A(a) − 1)² + D_A(pool_A(G_BA(b)))²]

λ_A = λ_B = 10, λ_id = 0.5; each D sees a fake drawn from a pool of the last 50 fakes
(:class:`ImagePool`, Shrivastava et al. 2017), which the reference uses to keep D from
oscillating. One Adam for both generators (stepped first) and one for both discriminators,
2e-4, β1 0.5; the rate is constant for the first half of the run and then decays linearly to
zero (``optim.lr_policy: linear``, epochs or the same shares of ``trainer.max_minutes``).

Training sees random patches of an A volume and of an unrelated B volume; validation and
inference run whole volumes through a Gaussian sliding window (ganslate's 3D practice).
Validation scores A -> B against the real B (PSNR/SSIM/MAE, MAE in HU where B is CT) and
B -> A against the real A (``btoa_*``) for subjects whose A and B share one grid (registered
pairs, e.g. the phantoms), each inside its target side's mask (``mask_B``, ``mask_A``); training
never uses the pairing. FID needs no pairs: ``val/fid`` is between the set of every validation A
translated to B and the set of every real validation B, whoever they belong to (``btoa_fid``
likewise), so a validation split of unpaired scans has FIDs too. ``medgen infer --direction
AtoB|BtoA`` picks the generator; the output is in the target side's units (exact HU for CT).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgen.data.unpaired import UnpairedVolumes
from medgen.errors import ConfigError
from medgen.losses.adversarial import AdversarialLoss
from medgen.models.base import GenerativeModel
from medgen.models.paired import SlidingWindowInference
from medgen.models.registry import register_model
from medgen.networks.patch_discriminator import ConditionalPatchDiscriminator
from medgen.networks.resnet_generator import PADDINGS, ResNetGenerator


class ImagePool:
    """The reference's buffer of past fakes (Shrivastava et al. 2017), seeded.

    Until ``size`` images are held, each new image is stored and returned. Then each new image is,
    with probability ½, swapped for a random stored one (the stored one is returned, the new
    one kept in its place), else returned as it is. ``size`` 0: no pool. Its contents and its
    generator's state are in :meth:`state_dict`, so a resumed run draws the same fakes.
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch ``(N, C, *spatial)`` -> a batch of the same shape from the pool (detached)."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.generator)) < 0.5:
                k = int(torch.randint(len(self.images), (), generator=self.generator))
                out.append(self.images[k].to(image.device))
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        held = torch.cat([i.cpu() for i in self.images]) if self.images else torch.zeros(0)
        return {"images": held, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        held = state["images"]
        self.images = [held[k:k + 1].clone() for k in range(held.shape[0])] if held.numel() else []
        self.generator.set_state(state["rng"])


@register_model("cyclegan")
class CycleGAN(SlidingWindowInference, GenerativeModel):
    """Unpaired A <-> B translation (Zhu et al. 2017); A = MR, B = CT in the shipped configs.

    Args:
        spatial_dims: 3 (patches of volumes) or 2 (2D images).
        in_channels / out_channels: channels of A and of B (1 each).
        ngf / n_blocks / padding: ResNet generators (:class:`~medgen.networks.resnet_generator.
            ResNetGenerator`): first-layer filters (64), residual blocks (9: the reference's
            ``resnet_9blocks`` at 256²; 6 at 128²) and padding (``reflect`` | ``replicate``).
        ndf / d_layers: PatchGAN discriminators with instance norm (64 and 3: the 70×70 PatchGAN).
        lambda_a / lambda_b: cycle weights (10 each).
        lambda_identity: identity weight as a share of λ (0.5: 5 each way; 0 switches it off;
            needs ``in_channels == out_channels``).
        pool_size: past fakes each D draws from (50; 0: the current fakes).
        lr, beta1, beta2: both Adams (2e-4, 0.5, 0.999; the decay is ``optim.lr_policy``).
        sw_overlap, sw_batch_size, flip_ensemble: whole-volume Gaussian sliding-window inference
            (0.25 overlap as ganslate).
        hu_window_b: the B side's CT window in HU (set by the data when B is CT): validation then
            also reports the A -> B error in HU (``mae_hu``, inside the body).
    """

    data_module = UnpairedVolumes
    metric_pairs = {"": ("fake_B", "B"), "btoa_": ("fake_A", "A")}
    fid_sets = metric_pairs  # the same names, but over sets: any translated A against any real B
    metric_masks = {"": "mask_B", "btoa_": "mask_A"}  # each direction inside its target's head
    directions = ("AtoB", "BtoA")
    value_range = (-1.0, 1.0)
    best_metric = "val/psnr"

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        padding: str = "reflect",
        ndf: int = 64,
        d_layers: int = 3,
        lambda_a: float = 10.0,
        lambda_b: float = 10.0,
        lambda_identity: float = 0.5,
        pool_size: int = 50,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        sw_overlap: float = 0.25,
        sw_batch_size: int = 4,
        flip_ensemble: bool = False,
        hu_window_b: list[float] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"model.spatial_dims must be 2 or 3, got {spatial_dims}")
        if padding not in PADDINGS:
            raise ConfigError(f"model.padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if min(lambda_a, lambda_b, lambda_identity) < 0:
            raise ConfigError(f"model.lambda_a, lambda_b and lambda_identity must be >= 0, got "
                              f"{lambda_a}, {lambda_b}, {lambda_identity}")
        if lambda_identity > 0 and in_channels != out_channels:
            raise ConfigError(f"model.lambda_identity needs in_channels == out_channels (got {in_channels} and "
                              f"{out_channels}); set model.lambda_identity=0")
        if pool_size < 0:
            raise ConfigError(f"model.pool_size must be >= 0, got {pool_size}")
        if lr <= 0:
            raise ConfigError(f"model.lr must be > 0, got {lr}")
        if not 0 <= sw_overlap < 1:
            raise ConfigError(f"model.sw_overlap must be in [0, 1), got {sw_overlap}")
        if hu_window_b is not None and (len(hu_window_b) != 2 or hu_window_b[1] <= hu_window_b[0]):
            raise ConfigError(f"model.hu_window_b must be [low, high] with low < high, got {hu_window_b}")
        self.spatial_dims = spatial_dims
        self.lambda_a, self.lambda_b, self.lambda_identity = float(lambda_a), float(lambda_b), float(lambda_identity)
        self.lr, self.betas = float(lr), (float(beta1), float(beta2))
        self.sw_overlap, self.sw_batch_size, self.flip_ensemble = float(sw_overlap), int(sw_batch_size), bool(flip_ensemble)
        self.hu_window_b = tuple(float(v) for v in hu_window_b) if hu_window_b is not None else None
        self.adv_loss = AdversarialLoss("lsgan")
        self.G_AB = ResNetGenerator(spatial_dims, in_channels, out_channels, ngf, n_blocks, padding)
        self.G_BA = ResNetGenerator(spatial_dims, out_channels, in_channels, ngf, n_blocks, padding)
        self.D_A = ConditionalPatchDiscriminator(spatial_dims, in_channels, 1, ndf, d_layers, norm="instance")
        self.D_B = ConditionalPatchDiscriminator(spatial_dims, out_channels, 1, ndf, d_layers, norm="instance")
        # Seeded from the global generator, which the engine seeds with trainer.seed before the
        # model is built: the pools' draws follow the run's seed like the initial weights.
        seeds = torch.randint(0, 2**62, (2,))
        self.pool_A, self.pool_B = ImagePool(pool_size, int(seeds[0])), ImagePool(pool_size, int(seeds[1]))
        self.direction = self.directions[0]
        self._validated_pairs = False

    # --- checks ------------------------------------------------------------------------------
    def window_divisor(self) -> int:
        return ResNetGenerator.divisor

    def check_patch(self, patch_size) -> None:
        if any(int(p) % ResNetGenerator.divisor for p in patch_size):
            raise ConfigError(f"data.patch_size {list(patch_size)} must be multiples of {ResNetGenerator.divisor} "
                              f"(the generators halve twice)")
        need = self.D_A.min_side()
        if min(int(p) for p in patch_size) < need:
            raise ConfigError(f"data.patch_size {list(patch_size)} is too small for model.d_layers: the "
                              f"discriminators need sides of at least {need}")

    # --- optimisers and the step --------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.adam(list(self.G_AB.parameters()) + list(self.G_BA.parameters()), self.lr, self.betas),
                "D": self.adam(list(self.D_A.parameters()) + list(self.D_B.parameters()), self.lr, self.betas)}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        real_a, real_b = batch["A"], batch["B"]
        with self.autocast():
            fake_b = self.G_AB(real_a)
            rec_a = self.G_BA(fake_b)
            fake_a = self.G_BA(real_b)
            rec_b = self.G_AB(fake_a)
        with self.frozen(self.D_A, self.D_B):  # G's update: D gives gradients, takes none
            with self.autocast():
                adv_ab = self.adv_loss.g_loss(self.D_B(fake_b))
                adv_ba = self.adv_loss.g_loss(self.D_A(fake_a))
            cycle_a = F.l1_loss(rec_a.float(), real_a.float())
            cycle_b = F.l1_loss(rec_b.float(), real_b.float())
            g_loss = adv_ab + adv_ba + self.lambda_a * cycle_a + self.lambda_b * cycle_b
            logs = {}
            if self.lambda_identity > 0:
                with self.autocast():
                    same_b, same_a = self.G_AB(real_b), self.G_BA(real_a)
                idt_b = F.l1_loss(same_b.float(), real_b.float())
                idt_a = F.l1_loss(same_a.float(), real_a.float())
                g_loss = g_loss + self.lambda_identity * (self.lambda_b * idt_b + self.lambda_a * idt_a)
                logs.update(g_idt_a=float(idt_a.detach()), g_idt_b=float(idt_b.detach()))
            self.optimizer_step("G", g_loss)
        # D's update on pooled fakes (detached: no gradient reaches the generators).
        pooled_b, pooled_a = self.pool_B.query(fake_b), self.pool_A.query(fake_a)
        with self.autocast():
            # Halved as in the reference: D learns more slowly than G.
            d_b = 0.5 * self.adv_loss.d_loss(self.D_B(real_b), self.D_B(pooled_b))
            d_a = 0.5 * self.adv_loss.d_loss(self.D_A(real_a), self.D_A(pooled_a))
        self.optimizer_step("D", d_a + d_b)
        logs.update(g_loss=float(g_loss.detach()), g_adv_ab=float(adv_ab.detach()), g_adv_ba=float(adv_ba.detach()),
                    g_cycle_a=float(cycle_a.detach()), g_cycle_b=float(cycle_b.detach()),
                    d_a_loss=float(d_a.detach()), d_b_loss=float(d_b.detach()))
        return logs

    # --- pools in checkpoints -------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "pool_A" in state:
            self.pool_A.load_state_dict(state["pool_A"])
        if "pool_B" in state:
            self.pool_B.load_state_dict(state["pool_B"])

    # --- inference ------------------------------------------------------------------------------
    def input_options(self) -> dict[str, Any]:
        """``data.preprocess`` of an inference input: it is from the direction's source side."""
        return {"side": self.direction[0]}

    def exported_network(self) -> nn.Module:
        """The generator of ``direction`` (the logged model: G_AB, the default direction)."""
        return self.G_AB if self.direction == "AtoB" else self.G_BA

    def exported_networks(self) -> dict[str, nn.Module]:
        """Both generators, logged as ``G_AB`` and ``G_BA`` (registered ``cyclegan-G_AB`` ...)."""
        return {"G_AB": self.G_AB, "G_BA": self.G_BA}

    @contextlib.contextmanager
    def directed(self, direction: str):
        if direction not in self.directions:
            raise ConfigError(f"direction must be one of {', '.join(self.directions)}, got {direction!r}")
        before, self.direction = self.direction, direction
        try:
            yield
        finally:
            self.direction = before

    def infer(self, x: torch.Tensor, direction: str | None = None) -> torch.Tensor:
        """A whole volume of the direction's source side (model space) -> its translation."""
        with self.directed(direction or self.direction):
            return super().infer(x)

    # --- validation -----------------------------------------------------------------------------
    @staticmethod
    def _flag(value) -> bool:
        if torch.is_tensor(value):
            return bool(value.flatten()[0]) if value.numel() else False
        if isinstance(value, (list, tuple)):
            return bool(value[0]) if value else False
        return bool(value)

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Whole-volume translations of the sides a subject has and its real scans, all for the
        FID sets. Where A and B share a grid (``paired``) the engine also scores each direction
        against the real scan; where they lie on two grids the item is ``registered: False`` (no
        pair metrics). ``rec_B`` (B -> A -> B) is for the validation figure, which shows it
        where B is the subject's only side or registered with its A."""
        has_a, has_b = "A" in batch, "B" in batch
        paired = self._flag(batch.get("paired", False)) and has_a and has_b
        out: dict[str, Any] = {}
        if has_a:
            out["A"] = batch["A"]
        if has_b:
            fake_a = self.infer(batch["B"], "BtoA")
            out["fake_A"] = fake_a
            if paired or not has_a:
                out["rec_B"] = self.infer(fake_a, "AtoB")
        if has_a:
            out["fake_B"] = self.infer(batch["A"], "AtoB")
        if has_b:
            out["B"] = batch["B"]
        if has_a and has_b and not paired:
            out["registered"] = False  # same name, two grids: no pair metrics, the FID sets only
        if paired:
            self._validated_pairs = True
            mask = batch.get("mask_B")  # the head on the CT (B) side
            if self.hu_window_b is not None and torch.is_tensor(mask) and bool(mask.any()):
                half_width = 0.5 * (self.hu_window_b[1] - self.hu_window_b[0])
                error = (out["fake_B"].float() - batch["B"].float()).abs()[mask.bool()]
                out["mae_hu"] = float(error.mean()) * half_width
        return out

    def may_be_best(self) -> bool:
        # best.pt ranks A -> B against real B: only validations with a registered pair can.
        return self._validated_pairs
