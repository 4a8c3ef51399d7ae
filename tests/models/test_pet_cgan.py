"""pet-cgan: the model's steps on tiny tensors, then the CLI end to end on tiny phantoms."""

from __future__ import annotations

import pytest
import torch

from medgen.errors import ConfigError
from medgen.models.pet_cgan import PetCGAN

TINY = dict(channels=(4, 8), d_channels=4, d_layers=2)


def _batch(dims: int = 3, size: int = 16, n: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    target = torch.rand((n, 1) + (size,) * dims) * 2 - 1
    return {"source": target + 0.3 * torch.randn_like(target), "target": target}


def _snapshot(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _changed(net: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(net.parameters(), before))


@pytest.mark.parametrize("dims", [2, 3])
def test_one_training_step_changes_g_and_d(dims):
    torch.manual_seed(0)
    model = PetCGAN(spatial_dims=dims, **TINY)
    g0, d0 = _snapshot(model.G), _snapshot(model.D)
    logs = model.training_step(_batch(dims), step=0)
    assert set(logs) == {"d_loss", "g_loss", "g_l1", "g_adv"}
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert logs["g_loss"] == pytest.approx(logs["g_adv"] + 300.0 * logs["g_l1"], rel=1e-5)
    assert _changed(model.G, g0) and _changed(model.D, d0)
    assert set(model.optimizers) == {"G", "D"}
    opt = model.optimizers["G"]
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.5, 0.999)


def test_l1_only_ablation_has_no_discriminator_and_learns():
    torch.manual_seed(0)
    model = PetCGAN(adversarial=False, lambda_l1=1.0, lr=1e-3, **TINY)
    assert model.D is None
    batch = _batch()
    first = model.training_step(batch, 0)
    assert set(first) == {"g_l1", "g_loss"} and set(model.optimizers) == {"G"}
    for step in range(1, 40):
        last = model.training_step(batch, step)
    assert last["g_l1"] < 0.8 * first["g_l1"]  # fits a fixed tiny batch


def test_refine_stage_trains_on_the_first_estimate():
    torch.manual_seed(0)
    model = PetCGAN(refine=True, **TINY)
    g2 = _snapshot(model.G2)
    logs = model.training_step(_batch(), 0)
    assert {"g2_l1", "g2_adv", "g2_loss", "d2_loss"} <= set(logs)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert _changed(model.G2, g2)
    assert set(model.optimizers) == {"G", "D", "G2", "D2"}
    net = model.exported_network()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), model.G2(model.G(x)))


@pytest.mark.parametrize("dims,shape", [(3, (20, 24, 18)), (2, (40, 28))])
def test_sliding_window_inference_keeps_any_shape(dims, shape):
    model = PetCGAN(spatial_dims=dims, **TINY).eval()
    model.roi_size = (16,) * dims
    x = torch.rand((1, 1) + shape) * 2 - 1
    out = model.validation_step({"source": x, "target": x})
    assert out["prediction"].shape == x.shape
    assert torch.isfinite(out["prediction"]).all()
    assert out["input"] is x


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="gan_loss"):
        PetCGAN(gan_loss="nope", **TINY)
    with pytest.raises(ConfigError, match="lambda_l1"):
        PetCGAN(adversarial=False, lambda_l1=0.0, **TINY)
    model = PetCGAN(**TINY)
    model.roi_size = (18, 18, 18)  # divisor is 4 for two levels
    with pytest.raises(ConfigError, match="patch_size"):
        model.infer(torch.zeros(1, 1, 16, 16, 16))
