"""The engine's validation of an unpaired model: FID between sets (subjects with one side count),
pair metrics only for registered items, each direction inside its target side's mask. (The FID
values against a hand-assembled FID: tests/models/test_cyclegan.py, through `medgen evaluate`.)"""

import math

import torch

from medgen.engine.validation import evaluate_volumes
from medgen.metrics import psnr

CPU = torch.device("cpu")


def _head(seed: int, shape) -> torch.Tensor:
    """(1, 1, *shape): a textured ellipsoid on a -1 background, like a scaled scan."""
    g = torch.Generator().manual_seed(seed)
    axes = [torch.linspace(-1, 1, n) for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    inside = (x / 0.8) ** 2 + (y / 0.6) ** 2 + (z / 0.7) ** 2 < 1
    tex = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *shape, generator=g), 3, 1, 1)[0, 0]
    return torch.where(inside, 0.2 + 0.6 * tex, torch.full_like(x, -1.0))[None, None]


class _Unpaired(torch.nn.Module):
    """CycleGAN's validation contract with fixed 'generators': A -> B darkens, B -> A brightens."""

    metric_pairs = {"": ("fake_B", "B"), "btoa_": ("fake_A", "A")}
    fid_sets = metric_pairs
    metric_masks = {"": "mask_B", "btoa_": "mask_A"}
    value_range = (-1.0, 1.0)

    @staticmethod
    def a_to_b(a):
        return (a * 0.7).clamp(-1, 1)

    @staticmethod
    def b_to_a(b):
        return (b + 0.3).clamp(-1, 1)

    def validation_step(self, batch):
        out = {}
        if "A" in batch:
            out.update(A=batch["A"], fake_B=self.a_to_b(batch["A"]))
        if "B" in batch:
            out.update(B=batch["B"], fake_A=self.b_to_a(batch["B"]))
        if "A" in batch and "B" in batch and not batch["paired"]:
            out["registered"] = False
        return out


class _Recorder:
    """Stands in for :class:`medgen.metrics.FID` (no network): records what the engine adds."""

    def __init__(self):
        self.calls = []

    def reset(self):
        self.calls.clear()

    def update(self, fake, real, value_range):
        self.calls.append(("pair", fake.shape, real.shape))

    def update_fake(self, fake, value_range):
        self.calls.append(("fake", fake.shape))

    def update_real(self, real, value_range):
        self.calls.append(("real", real.shape))

    @property
    def n_images(self):
        return 3 * sum(c[0] in ("pair", "fake") for c in self.calls)

    @property
    def n_real(self):
        return 3 * sum(c[0] in ("pair", "real") for c in self.calls)

    def compute(self):
        return float(len(self.calls))


def test_fid_sets_take_every_side_on_its_own_and_pairs_need_a_registered_item():
    a1, a2 = _head(1, (8, 8, 8)), _head(2, (8, 8, 6))
    b1, b2 = _head(3, (6, 8, 8)), _head(4, (8, 8, 8))
    items = [
        {"A": a1, "subject": ["only-a"]},
        {"B": b1, "subject": ["only-b"]},
        # both sides, two grids (the same shape by chance): not a pair, but both sets count
        {"A": a2, "B": b2, "paired": False, "subject": ["two-grids"]},
    ]
    fids = {"": _Recorder(), "btoa_": _Recorder()}
    per_volume = {}
    metrics = evaluate_volumes(_Unpaired(), items, device=CPU, fids=fids,
                               per_volume=lambda s, m: per_volume.__setitem__(s, m))
    assert fids[""].calls == [("fake", a1.shape), ("real", b1.shape), ("fake", a2.shape), ("real", b2.shape)]
    assert fids["btoa_"].calls == [("real", a1.shape), ("fake", b1.shape), ("fake", b2.shape), ("real", a2.shape)]
    assert metrics["fid"] == metrics["btoa_fid"] == 4.0
    assert not any(k.endswith(("psnr", "ssim", "mae", "nmse")) for k in metrics), metrics  # nothing registered
    assert per_volume["two-grids"] == {} and "registered" not in metrics
    # a validation of A scans only: no real B, so no val/fid (no error); B -> A has no fake
    fids = {"": _Recorder(), "btoa_": _Recorder()}
    only_a = evaluate_volumes(_Unpaired(), items[:1], device=CPU, fids=fids)
    assert "fid" not in only_a and "btoa_fid" not in only_a
    assert fids[""].calls == [("fake", a1.shape)] and fids["btoa_"].calls == [("real", a1.shape)]


def test_each_direction_is_scored_inside_its_target_sides_mask():
    a, b = _head(5, (8, 8, 8)), _head(6, (8, 8, 8))
    mask_a = torch.zeros(a.shape, dtype=torch.bool)
    mask_a[..., :4, :, :] = True
    mask_b = torch.zeros(a.shape, dtype=torch.bool)
    mask_b[..., 4:, 2:6, :] = True
    item = {"A": a, "B": b, "mask_A": mask_a, "mask_B": mask_b, "paired": True, "subject": ["pair"]}
    metrics = evaluate_volumes(_Unpaired(), [item], device=CPU)
    fake_b, fake_a = _Unpaired.a_to_b(a), _Unpaired.b_to_a(b)
    assert math.isclose(metrics["psnr_mask"], float(psnr(fake_b, b, 2.0, mask_b)), rel_tol=1e-6)
    assert math.isclose(metrics["btoa_psnr_mask"], float(psnr(fake_a, a, 2.0, mask_a)), rel_tol=1e-6)
    assert math.isclose(metrics["psnr"], float(psnr(fake_b, b, 2.0)), rel_tol=1e-6)
    assert "fid" not in metrics  # fid_slices 0
