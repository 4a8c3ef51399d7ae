"""The engine's whole-volume validation: metrics over the volume and inside the data's mask."""

import math

import torch

from medgen.engine.validation import evaluate_volumes


class _Shift(torch.nn.Module):
    """Predicts the target plus 0.1 inside a cube and 0.5 elsewhere (in a [-1, 1] range)."""

    metric_pairs = {"": ("prediction", "target")}
    value_range = (-1.0, 1.0)

    def validation_step(self, batch):
        target = batch["target"]
        error = torch.full_like(target, 0.5)
        error[..., 2:6, 2:6, 2:6] = 0.1
        return {"prediction": target + error, "target": target}


def test_metrics_inside_the_mask_beside_the_whole_volume():
    target = torch.zeros(1, 1, 8, 8, 8)
    mask = torch.zeros(1, 1, 8, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 2:6, 2:6] = True
    metrics = evaluate_volumes(_Shift(), [{"target": target, "mask": mask}], device=torch.device("cpu"))
    whole_mse = (64 * 0.1**2 + (512 - 64) * 0.5**2) / 512
    assert math.isclose(metrics["psnr"], 10 * math.log10(2.0**2 / whole_mse), rel_tol=1e-5)
    assert math.isclose(metrics["psnr_mask"], 10 * math.log10(2.0**2 / 0.1**2), rel_tol=1e-5)
    assert math.isclose(metrics["mae_mask"], 0.1, rel_tol=1e-5)
    assert math.isclose(metrics["mae"], (64 * 0.1 + 448 * 0.5) / 512, rel_tol=1e-5)
    no_mask = evaluate_volumes(_Shift(), [{"target": target}], device=torch.device("cpu"))
    assert "psnr_mask" not in no_mask and math.isclose(no_mask["psnr"], metrics["psnr"], rel_tol=1e-9)
