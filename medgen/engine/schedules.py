"""Learning-rate schedules, one per optimiser, stepped once per epoch.

``linear`` is the pix2pix/CycleGAN policy: the initial rate for ``constant_epochs`` epochs, then a
linear decay that reaches zero at ``max_epochs`` (so the last trained epoch still has a small
positive rate). E.g. 4 epochs, 2 constant: factors 1, 1, 2/3, 1/3. ``constant`` keeps the initial rate.

Under a wall-clock budget (``trainer.max_minutes``) the same policy also runs on the fraction of
the minutes spent, and the lower of the two factors applies: the decay then ends when the budget
does, however many epochs fit into it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from medgen.errors import ConfigError

POLICIES = ("constant", "linear")


def _constant(max_epochs: int, constant_epochs: int | None) -> int:
    """Epochs at the initial rate: ``constant_epochs``, by default half of ``max_epochs``."""
    return max_epochs // 2 if constant_epochs is None else int(constant_epochs)


def lr_factor(epoch: int, policy: str, max_epochs: int, constant_epochs: int | None = None) -> float:
    """Multiplier of the initial learning rate during (0-based) `epoch`."""
    if policy == "constant":
        return 1.0
    if policy != "linear":
        raise ConfigError(f"optim.lr_policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    c = _constant(max_epochs, constant_epochs)
    if c >= max_epochs:
        return 1.0
    # pix2pix's rule: 1 - max(0, e + 1 - c) / (decay_epochs + 1); zero at e = max_epochs.
    return max(0.0, 1.0 - max(0, epoch + 1 - c) / float(max_epochs - c + 1))


def time_factor(spent: float, policy: str, max_epochs: int, constant_epochs: int | None = None) -> float:
    """Multiplier after a fraction `spent` of the wall-clock budget: constant for the same share
    of the budget as of the epochs, then linear to zero when the budget is spent."""
    if policy == "constant":
        return 1.0
    c = _constant(max_epochs, constant_epochs) / max_epochs
    if c >= 1:
        return 1.0
    return min(1.0, max(0.0, 1.0 - (spent - c) / (1.0 - c)))


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    policy: str,
    max_epochs: int,
    constant_epochs: int | None = None,
    budget_spent: Callable[[], float] | None = None,
) -> LambdaLR:
    """A LambdaLR for `optimizer`; `budget_spent()` (if given) is the fraction of the wall-clock
    budget used so far. The lambda is a plain closure, so the scheduler's state dict holds only
    numbers (loadable with ``torch.load(weights_only=True)``)."""
    lr_factor(0, policy, max_epochs, constant_epochs)  # validates the policy now, not mid-run

    def factor(epoch: int) -> float:
        f = lr_factor(epoch, policy, max_epochs, constant_epochs)
        if budget_spent is not None:
            f = min(f, time_factor(budget_spent(), policy, max_epochs, constant_epochs))
        return f

    return LambdaLR(optimizer, factor)
