"""The training clock: minutes spent and the share of the budget they are.

A run's budget is ``trainer.max_epochs`` or ``trainer.max_minutes``, whichever runs out first.
:class:`TrainingClock` keeps the minutes (earlier sessions of a resumed run included) and turns
them, with the epochs done, into ``progress`` in [0, 1], which models read for schedules that
must finish within the run (phases, ramps, Ganin's λ_p) and LR policies read by the clock.

The final validation (whole volumes, FID, flip ensembles) runs after the last epoch, and can cost
more than many epochs. So a time-budgeted run estimates it at its first validation
(:meth:`reserve`) and stops training that much earlier: ``trainer.max_minutes`` is the run's
length, final validation included, and schedules end with the training that fits before it.

Under torchrun every replica must agree on learning rates and phases, so the minutes that count
are rank 0's as last broadcast (:meth:`read`); between reads nothing looks at a clock, so a
step's progress is the same on every rank.
"""

from __future__ import annotations

import time


class TrainingClock:
    def __init__(self, max_epochs: int, max_minutes: float | None, broadcast=lambda value: value) -> None:
        self.max_epochs = int(max_epochs)
        self.max_minutes = max_minutes
        self._broadcast = broadcast
        self.minutes_before = 0.0  # training minutes of earlier sessions of a resumed run
        self._t0 = time.monotonic()  # start of this session's loop
        self.read_minutes = 0.0  # minutes as rank 0 last read them
        self._epoch_start: float | None = None  # progress when the current epoch started
        self._epoch_share = 0.0  # the share of the budget one epoch takes
        self.reserved_minutes = 0.0  # kept for the final validation (see reserve())

    # at most this share of the budget is kept for the final validation: past it, the run
    # overruns max_minutes rather than train for less than half of it
    MAX_RESERVED_SHARE = 0.5

    def reserve(self, minutes: float) -> float:
        """Keep `minutes` (rank 0's estimate, for every rank) of ``max_minutes`` for the final
        validation, at most :attr:`MAX_RESERVED_SHARE` of it; returns the minutes kept."""
        if not self.max_minutes:
            return 0.0
        wanted = max(0.0, float(self._broadcast(minutes)))
        self.reserved_minutes = min(wanted, self.MAX_RESERVED_SHARE * self.max_minutes)
        return self.reserved_minutes

    def training_minutes(self) -> float | None:
        """The minutes training may run: ``max_minutes`` less what the final validation needs."""
        return None if self.max_minutes is None else self.max_minutes - self.reserved_minutes

    def restart(self) -> None:
        """This session's loop starts now."""
        self._t0 = time.monotonic()

    def minutes(self) -> float:
        """Training minutes so far, earlier sessions included."""
        return self.minutes_before + (time.monotonic() - self._t0) / 60.0

    def read(self) -> float:
        """Rank 0's minutes for every rank; returns them."""
        self.read_minutes = self._broadcast(self.minutes())
        return self.read_minutes

    def spent(self) -> float:
        """Share of the training minutes spent at the last read (LR policies by the clock)."""
        return self.read_minutes / self.training_minutes()

    def out_of_time(self) -> bool:
        return self.max_minutes is not None and self.read_minutes > self.training_minutes()

    def progress(self, epochs_done: int) -> float:
        """Epochs, or minutes under ``max_minutes``, whichever is further along (at most 1)."""
        p = epochs_done / self.max_epochs
        if self.max_minutes:
            p = max(p, self.read_minutes / self.training_minutes())
        return min(1.0, p)

    def start_epoch(self, epoch: int) -> float:
        """Progress at the start of `epoch` (read the clock first); remembers the share the last
        epoch took (under a time budget; else 1 / max_epochs) for :meth:`step_progress`."""
        start = self.progress(epoch)
        self._epoch_share = (start - self._epoch_start) if self._epoch_start is not None else 1 / self.max_epochs
        self._epoch_start = start
        return start

    def step_progress(self, epoch: int, step: int, steps: int) -> float:
        """Progress at step `step` of `steps` in `epoch`: the epoch's start plus its share so far,
        so ramps (Ganin's λ_p, edge and KL weights) advance every step."""
        by_epochs = (epoch + step / steps) / self.max_epochs
        return min(1.0, max(by_epochs, self._epoch_start + self._epoch_share * step / steps))
