import pytest
import torch

from medgen.models.tta import flip_ensemble


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_flip_ensemble_passes_and_inverse(spatial_dims):
    x = torch.randn((2, 1) + (6,) * spatial_dims)
    calls = []

    def identity(v):
        calls.append(v)
        return v

    out = flip_ensemble(identity, x, spatial_dims)
    assert len(calls) == 2 ** spatial_dims
    assert torch.allclose(out, x, atol=1e-6)  # every flip undone exactly


def test_flip_ensemble_averages_an_orientation_dependent_network():
    # f adds a ramp along the last axis; flipped and flipped back, half the passes see it reversed,
    # so the ensemble adds the ramp's mean everywhere.
    ramp = torch.arange(4.0)
    x = torch.zeros(1, 1, 4, 4, 4)
    out = flip_ensemble(lambda v: v + ramp, x, 3)
    assert torch.allclose(out, torch.full_like(x, ramp.mean()), atol=1e-6)
