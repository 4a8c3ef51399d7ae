"""Learning-rate schedules, one per optimiser, stepped once per epoch.

``linear`` is the pix2pix/CycleGAN policy: the initial rate for ``constant_epochs`` epochs, then a
linear decay that reaches zero at ``max_epochs`` (so the last trained epoch still has a small
positive rate). ``constant`` keeps the initial rate.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

from medgen.errors import ConfigError

POLICIES = ("constant", "linear")


def lr_factor(epoch: int, policy: str, max_epochs: int, constant_epochs: int | None = None) -> float:
    """Multiplier of the initial learning rate during (0-based) `epoch`."""
    if policy == "constant":
        return 1.0
    if policy != "linear":
        raise ConfigError(f"optim.lr_policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    c = max_epochs // 2 if constant_epochs is None else int(constant_epochs)
    if epoch < c or c >= max_epochs:
        return 1.0
    return max(0.0, (max_epochs - epoch) / float(max_epochs - c))


def make_scheduler(
    optimizer: torch.optim.Optimizer, policy: str, max_epochs: int, constant_epochs: int | None = None
) -> LambdaLR:
    """A LambdaLR for `optimizer`. The lambda is a plain closure, so the scheduler's state dict
    holds only numbers (loadable with ``torch.load(weights_only=True)``)."""
    lr_factor(0, policy, max_epochs, constant_epochs)  # validates the policy now, not mid-run

    def factor(epoch: int) -> float:
        return lr_factor(epoch, policy, max_epochs, constant_epochs)

    return LambdaLR(optimizer, factor)
