"""DCGAN generator/discriminator and the f-AnoGAN encoder: shapes, 2D/3D, norms, bounds."""

import pytest
import torch

from medgen.losses.adversarial import gradient_penalty
from medgen.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from medgen.networks.dcgan_encoder import DCGANEncoder


@pytest.mark.parametrize("dims,patch", [(3, (16, 16, 8)), (2, (32, 16))])
def test_shapes_2d_3d(dims, patch):
    G = DCGANGenerator(dims, latent_dim=12, patch_size=patch, channels=(16, 8))
    D = DCGANDiscriminator(dims, patch_size=patch, channels=(8, 16), norm="layer")
    E = DCGANEncoder(dims, latent_dim=12, patch_size=patch, channels=(8, 16))
    z = torch.randn(3, 12)
    x = G(z)
    assert x.shape == (3, 1, *patch)
    assert x.abs().max() <= 1.0  # tanh output, the model's [-1, 1] range
    feats, logit = D(x)
    assert logit.shape == (3,)
    assert feats.shape == (3, D.feature_dim) and D.feature_dim == 16 * (patch[0] // 4) * (patch[1] // 4) * (
        patch[2] // 4 if dims == 3 else 1
    )
    assert D.feature_map(x).shape == (3, 16, *[s // 4 for s in patch])
    assert E(x).shape == (3, 12)


def test_bad_patch_size_rejected():
    with pytest.raises(ValueError, match="divisible"):
        DCGANGenerator(3, 8, (20, 16, 16), channels=(16, 8, 4))
    with pytest.raises(ValueError, match="norm"):
        DCGANDiscriminator(3, (16, 16, 16), (8, 16), norm="group")


def test_dcgan_norms():
    D_bn = DCGANDiscriminator(3, (16,) * 3, (8, 16), norm="batch")
    D_ln = DCGANDiscriminator(3, (16,) * 3, (8, 16), norm="layer")
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in D_bn.modules())
    # WGAN-GP critic: no BatchNorm anywhere (the gradient penalty is per sample)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D_ln.modules())
    # first layer never normalised (DCGAN)
    assert isinstance(D_bn.net[1], torch.nn.LeakyReLU)


def test_critic_is_per_sample_and_gp_works():
    """With layer norm, a sample's critic value does not depend on the rest of the batch."""
    torch.manual_seed(0)
    D = DCGANDiscriminator(3, (16,) * 3, (8, 16), norm="layer")
    x = torch.randn(4, 1, 16, 16, 16)
    alone = D(x[:1])[1]
    together = D(x)[1][:1]
    assert torch.allclose(alone, together, atol=1e-5)
    gp = gradient_penalty(D, x, torch.randn_like(x))
    assert gp.ndim == 0 and torch.isfinite(gp)
    gp.backward()
    # the penalty reaches the convolution weights (double backprop through the critic)
    assert D.net[0].weight.grad is not None and D.net[0].weight.grad.abs().sum() > 0


def test_encoder_latent_bound():
    E = DCGANEncoder(2, latent_dim=5, patch_size=(16, 16), channels=(4, 8), latent_bound="tanh")
    with torch.no_grad():
        for p in E.fc.parameters():
            p.fill_(1.0)  # push the pre-activation far beyond 1
        z = E(torch.ones(2, 1, 16, 16))
    assert z.abs().max() <= 1.0
    with pytest.raises(ValueError):
        DCGANEncoder(2, 5, (16, 16), (4, 8), latent_bound="sigmoid")


def test_generator_learns_a_constant_patch():
    """A few Adam steps fit G(z) to a fixed target: the generator is trainable end to end."""
    torch.manual_seed(0)
    G = DCGANGenerator(3, 8, (8, 8, 8), channels=(8, 4))
    target = torch.full((2, 1, 8, 8, 8), 0.5)
    z = torch.randn(2, 8)
    opt = torch.optim.Adam(G.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss = (G(z) - target).abs().mean()
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
