"""Learning-rate schedules, one per optimiser, stepped once per epoch.

``linear`` is the pix2pix/CycleGAN policy: the initial rate for ``constant_epochs`` epochs, then a
linear decay that reaches zero at ``max_epochs`` (so the last trained epoch still has a small
positive rate). E.g. 4 epochs, 2 constant: factors 1, 1, 2/3, 1/3. ``constant`` keeps the initial rate.
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
    if c >= max_epochs:
        return 1.0
    # pix2pix's rule: 1 - max(0, e + 1 - c) / (decay_epochs + 1); zero at e = max_epochs.
    return max(0.0, 1.0 - max(0, epoch + 1 - c) / float(max_epochs - c + 1))


def make_scheduler(
    optimizer: torch.optim.Optimizer, policy: str, max_epochs: int, constant_epochs: int | None = None
) -> LambdaLR:
    """A LambdaLR for `optimizer`. The lambda is a plain closure, so the scheduler's state dict
    holds only numbers (loadable with ``torch.load(weights_only=True)``)."""
    lr_factor(0, policy, max_epochs, constant_epochs)  # validates the policy now, not mid-run

    def factor(epoch: int) -> float:
        return lr_factor(epoch, policy, max_epochs, constant_epochs)

    return LambdaLR(optimizer, factor)
