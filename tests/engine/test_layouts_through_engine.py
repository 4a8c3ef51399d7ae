"""Every data layout trains through the one engine: a minimal model per data module (kept in
tests) runs an epoch with validation, checkpoints, and comes back with ``load_task``.

What this guards: the items each module yields collate and move to the device, the engine's
validation takes them (whole volumes, a whole-split table, two-domain and two-set batches),
and what a module fits travels in the checkpoint."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medgen.data.domain import DomainVolumes
from medgen.data.expression import ExpressionTable
from medgen.data.phantoms import write_phantoms
from medgen.data.unpaired import UnpairedVolumes
from medgen.engine import load_task, train
from medgen.inference import evaluate_folder
from medgen.models.base import GenerativeModel
from medgen.models.registry import register_model

from toy import toy_config


class _Minimal(GenerativeModel):
    def configure_optimizers(self):
        return {"net": torch.optim.Adam(self.parameters(), lr=1e-2)}

    def exported_network(self):
        return self.net


@register_model("toy-unpaired")
class UnpairedToy(_Minimal):
    """A → B with one conv; validation scores against B where the subject is a registered pair."""

    data_module = UnpairedVolumes

    def __init__(self):
        super().__init__()
        self.net = nn.Conv3d(1, 1, 3, padding=1)

    def training_step(self, batch, step):
        loss = (self.net(batch["A"]).mean() - batch["B"].mean()) ** 2
        self.optimizer_step("net", loss)
        return {"moments": loss.item()}

    def validation_step(self, batch):
        out = {"prediction": self.infer(batch["A"])} if "A" in batch else {}
        if "B" in batch and bool(batch["paired"]):
            out["target"] = batch["B"]
        return out

    def infer(self, x):
        return self.net(x).clamp(-1, 1)


@register_model("toy-domain")
class DomainToy(_Minimal):
    """A 1x1 conv segmenter; Dice-like overlap per domain."""

    data_module = DomainVolumes
    metric_pairs = {}
    best_metric = "val/overlap_source"

    def __init__(self, out_channels: int = 2):
        super().__init__()
        self.net = nn.Conv3d(1, out_channels, 1)

    def training_step(self, batch, step):
        loss = F.cross_entropy(self.net(batch["image"]), batch["label"][:, 0].long())
        loss = loss + 0.0 * self.net(batch["target_image"]).mean()  # the target batch is there
        self.optimizer_step("net", loss)
        return {"ce": loss.item()}

    def validation_step(self, batch):
        if "label" not in batch:
            return {}
        pred, label = self.infer(batch["image"]) > 0, batch["label"] > 0
        overlap = 2 * (pred & label).sum() / (pred.sum() + label.sum()).clamp(min=1)
        return {f"overlap_{'source' if int(batch['domain']) == 0 else 'target'}": overlap}

    def infer(self, x):
        return self.net(x).argmax(1, keepdim=True)


@register_model("toy-expression")
class ExpressionToy(_Minimal):
    """A linear autoencoder sized by the data (``in_features`` from ``model_settings``)."""

    data_module = ExpressionTable
    metric_pairs = {}
    best_metric = "val/bce"

    def __init__(self, in_features: int = 5000, latent: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, latent), nn.Linear(latent, in_features), nn.Sigmoid())

    def training_step(self, batch, step):
        loss = F.binary_cross_entropy(self.net(batch["x"]), batch["x"])
        self.optimizer_step("net", loss)
        return {"bce": loss.item()}

    def validation_step(self, batch):
        x = batch["x"][0]  # the whole split, (N, G)
        return {"bce": F.binary_cross_entropy(self.infer(x), x)}

    def infer(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms") / "demo"
    write_phantoms(out, subjects=3, size=16, seed=0, n_samples=40, n_genes=30)
    return out


@pytest.mark.parametrize("task, layout, data, metric", [
    ("toy-unpaired", "unpaired", {"patch_size": [8, 8, 8], "patches_per_volume": 2, "val_fraction": 0.34}, "val/psnr"),
    ("toy-domain", "domain", {"n_classes": 4, "patch_size": [8, 8, 8], "patches_per_volume": 2, "val_fraction": 0.34},
     "val/overlap_target"),
    ("toy-expression", "expression", {"n_genes": 20, "batch_size": 8, "val_fraction": 0.25}, "val/bce"),
])
def test_each_layout_trains_validates_and_reloads(demo, task, layout, data, metric):
    config = toy_config(task=task, data={"root": str(demo / layout), **data},
                        trainer={"max_epochs": 1, "val_images": False}, tracking={"enabled": False})
    run_id = train(config)
    model, module, saved, ckpt = load_task(f"checkpoints/{run_id}/last.pt", device="cpu")
    assert metric in ckpt["metrics"] and torch.isfinite(torch.tensor(ckpt["metrics"][metric]))
    # `medgen evaluate` on the whole folder, with what training fitted
    result = evaluate_folder(model, saved, demo / layout, fid_slices=0, progress=False, state=ckpt.get("data"))
    items = {"unpaired": 3, "domain": 6, "expression": 1}  # subjects; a table is one whole-split item
    assert metric.removeprefix("val/") in result["metrics"] and result["n_volumes"] == items[layout]
    if task == "toy-expression":  # the model was sized by the data, which left its state behind
        assert saved.model["in_features"] == 20 and model.net[0].in_features == 20
        assert len(ckpt["data"]["genes"]) == 20 and module.genes == ckpt["data"]["genes"]
        x, _ = module.preprocess(demo / layout)
        assert model.infer(x).shape == (40, 20)
    if task == "toy-domain":
        assert saved.model["out_channels"] == 4 and model.net.out_channels == 4
