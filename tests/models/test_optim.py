import torch
from torch import nn

from medgen.models.base import GenerativeModel


def test_adam_is_fused_on_cpu_and_steps_like_plain_adam():
    torch.manual_seed(0)
    a, b = nn.Conv3d(2, 3, 3), nn.Conv3d(2, 3, 3)
    b.load_state_dict(a.state_dict())
    start = a.weight.detach().clone()
    fused = GenerativeModel.adam(a.parameters(), 1e-2, (0.5, 0.999))
    plain = torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.5, 0.999))
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    x = torch.randn(2, 2, 6, 6, 6)
    for _ in range(3):
        for net, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            (net(x) ** 2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert (a.weight - start).abs().max() > 1e-3  # the steps moved the weights
