"""A toy task for engine tests (kept in tests, not in the product).

ToyData: procedural 3D volumes (smooth random fields) whose target is an affine intensity map of
the source; or, with ``root``, one real volume read with :func:`medgen.io.read` (e.g. a DICOM
series), cut into subjects along its first axis. Training items are random patches
(``RandSpatialCropd``, so exact resume needs MONAI's per-loader reseeding), validation items are
whole volumes. ToyModel: two tiny networks and two optimisers (an L1 + LSGAN pair), noise from
the global RNG in every step (so exact resume needs the RNG states), dropout, and a way to make
a loss NaN at a chosen step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.data import Dataset, MetaTensor
from monai.transforms import Compose, RandSpatialCropd
from torch import nn

from medgen.data.module import DataModule
from medgen.models.base import GenerativeModel
from medgen.models.registry import register_model


def _smooth_field(generator: torch.Generator, size: int) -> torch.Tensor:
    x = torch.rand((1, 1, size, size, size), generator=generator)
    for _ in range(2):
        x = F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return (x[0] * 2 - 1).float()  # (1, X, Y, Z) in [-1, 1]


def target_of(source: torch.Tensor) -> torch.Tensor:
    """The mapping the toy model learns (within [-1, 1])."""
    return (0.5 * source + 0.25).clamp(-1, 1)


class ToyData(DataModule):
    def __init__(
        self,
        root: str | None = None,
        size: int = 16,
        n_train: int = 6,
        n_val: int = 2,
        patch_size: tuple[int, int, int] = (8, 8, 8),
        batch_size: int = 2,
        seed: int = 0,
    ):
        self.root = root
        self.size = size
        self.n_train = n_train
        self.n_val = n_val
        self.patch_size = tuple(patch_size)
        self.batch_size = batch_size
        self.seed = seed
        self.spatial_dims = 3

    def setup(self) -> None:
        if self.root:
            from medgen.io import read

            vol = read(self.root)
            x, _ = self.preprocess(vol)
            n = self.n_train + self.n_val
            x = F.interpolate(x[None], size=(self.size,) * 3, mode="trilinear", align_corners=False)[0]
            volumes = [torch.roll(x, shifts=i, dims=1) for i in range(n)]
        else:
            g = torch.Generator().manual_seed(self.seed)
            volumes = [_smooth_field(g, self.size) for _ in range(self.n_train + self.n_val)]
        self.items = [
            {"source": v, "target": target_of(v), "subject": f"s{i:02d}"} for i, v in enumerate(volumes)
        ]

    def train_dataset(self):
        crop = RandSpatialCropd(keys=["source", "target"], roi_size=self.patch_size, random_size=False)
        items = [{"source": d["source"], "target": d["target"]} for d in self.items[: self.n_train]]
        return Dataset(items, transform=Compose([crop]))

    def val_dataset(self):
        return Dataset(self.items[self.n_train :])

    def test_dataset(self):
        return Dataset(self.items[self.n_train :])

    def all_dataset(self):
        return Dataset(self.items)

    def preprocess(self, volume):
        v = torch.as_tensor(volume).float()
        lo, hi = float(v.min()), float(v.max())
        x = (v - lo) / max(hi - lo, 1e-8) * 2 - 1
        return x[None], {"lo": lo, "hi": hi, "reference": volume}

    def postprocess(self, output, state):
        out = (output[0].detach().cpu().float() + 1) / 2 * (state["hi"] - state["lo"]) + state["lo"]
        ref = state["reference"]
        return MetaTensor(out, affine=getattr(ref, "affine", None), meta=dict(getattr(ref, "meta", {})))


@register_model("toy")
class ToyModel(GenerativeModel):
    data_module = ToyData
    metric_pairs = {"": ("prediction", "target"), "input_": ("source", "target")}
    best_metric = "val/psnr"

    def __init__(
        self,
        channels: int = 4,
        lr: float = 1e-2,
        adv_weight: float = 0.05,
        nan_at_step: int = -1,
        interrupt_at_epoch: int = -1,
    ):
        super().__init__()
        self.G = nn.Sequential(
            nn.Conv3d(1, channels, 3, padding=1), nn.LeakyReLU(0.2), nn.Dropout3d(0.1), nn.Conv3d(channels, 1, 1)
        )
        self.D = nn.Sequential(nn.Conv3d(2, channels, 3, stride=2, padding=1), nn.BatchNorm3d(channels),
                               nn.LeakyReLU(0.2), nn.Conv3d(channels, 1, 1))
        self.lr = lr
        self.adv_weight = adv_weight
        self.nan_at_step = nan_at_step
        self.interrupt_at_epoch = interrupt_at_epoch  # simulates Ctrl-C at the start of that epoch

    def on_epoch_start(self, epoch):
        if epoch == self.interrupt_at_epoch:
            raise KeyboardInterrupt

    def configure_optimizers(self):
        return {
            "G": torch.optim.Adam(self.G.parameters(), lr=self.lr, betas=(0.5, 0.999)),
            "D": torch.optim.Adam(self.D.parameters(), lr=self.lr, betas=(0.5, 0.999)),
        }

    def training_step(self, batch, step):
        x, y = batch["source"], batch["target"]
        noisy = x + 0.01 * torch.randn_like(x)  # consumes the global RNG, like GAN noise
        with self.autocast():
            fake = self.G(noisy)
            with self.frozen(self.D):
                adv = ((self.D(torch.cat([x, fake], 1)) - 1) ** 2).mean()
                l1 = (fake - y).abs().mean()
                loss_g = l1 + self.adv_weight * adv
        if step == self.nan_at_step:
            loss_g = loss_g * float("nan")
        self.optimizer_step("G", loss_g)
        with self.autocast():
            real_score = self.D(torch.cat([x, y], 1))
            fake_score = self.D(torch.cat([x, fake.detach()], 1))
            loss_d = 0.5 * (((real_score - 1) ** 2).mean() + (fake_score**2).mean())
        self.optimizer_step("D", loss_d)
        return {"l1": l1.item(), "g": loss_g.item(), "d": loss_d.item()}

    def validation_step(self, batch):
        x, y = batch["source"], batch["target"]
        pred = self.infer(x)
        return {"source": x, "prediction": pred, "target": y, "l1": (pred - y).abs().mean()}

    def infer(self, x):
        return self.G(x).clamp(-1, 1)

    def exported_network(self):
        return self.G


class FittedToyData(ToyData):
    """ToyData that fits a statistic on its training subjects and sizes the model (the hooks a
    data module uses for what inference needs without the data: ``state_dict``, ``model_settings``)."""

    fitted_mean: float | None = None

    def setup(self) -> None:
        super().setup()
        if self.fitted_mean is None:  # a loaded state is applied, not refitted
            self.fitted_mean = float(torch.stack([d["source"] for d in self.items[: self.n_train]]).mean())

    def model_settings(self):
        return {"channels": 3}

    def state_dict(self):
        return {"mean": torch.tensor(self.fitted_mean)}

    def load_state_dict(self, state):
        if state:
            self.fitted_mean = float(state["mean"])


@register_model("toy-fitted")
class FittedToyModel(ToyModel):
    data_module = FittedToyData


def toy_config(tmp_path=None, task="toy", **sections):
    """A Config for the toy task; ``sections`` update data/model/optim/trainer/tracking."""
    from medgen.config import build_config

    raw = {
        "task": task,
        "data": {},
        "model": {},
        # every epoch validated and checkpointed: the tests follow best.pt and resumes epoch by epoch
        "trainer": {"max_epochs": 2, "fid_slices": 0, "progress": False, "device": "cpu",
                    "val_every": 1, "checkpoint_every": 1, "log_seconds": 0},
        "tracking": {"register_model": False, "log_model": False},
    }
    for key, values in sections.items():
        raw.setdefault(key, {}).update(values)
    return build_config(raw)
