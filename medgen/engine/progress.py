"""The training run's progress bar.

A run's budget is epochs or minutes (:mod:`medgen.engine.clock`). Under ``trainer.max_epochs``
the bar counts training steps over all epochs. Under ``trainer.max_minutes`` a step count says
nothing (the epochs that fit are unknown, and ``max_epochs`` is then a distant cap), so the bar
counts the budget's seconds, advanced by the training clock, validations included; the step count
goes beside the losses. Either way it is labelled with what runs, the final validation included.
"""

from __future__ import annotations

from typing import Mapping

from medgen.engine.clock import TrainingClock

_TIME_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"


class RunBar:
    """RunBar(clock, steps, desc, disable): :meth:`step` after each training step, :meth:`advance`
    after anything else that takes time (a validation), :meth:`close` at the end."""

    def __init__(self, clock: TrainingClock, steps: int, desc: str, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.clock = clock
        self.by_time = bool(clock.max_minutes)
        # kept here as well as in tqdm, which stops counting when disabled
        self.total = round(60 * float(clock.max_minutes)) if self.by_time else int(steps)
        self.position = min(self.total, round(60 * clock.minutes_before)) if self.by_time else 0
        extra = {"unit": "s", "bar_format": _TIME_FORMAT} if self.by_time else {}
        self.bar = tqdm(total=self.total, initial=self.position, desc=desc, disable=disable, dynamic_ncols=True, **extra)

    def describe(self, desc: str) -> None:
        self.bar.set_description(desc)

    def step(self, global_step: int, losses: Mapping[str, float]) -> None:
        postfix = {"step": global_step} if self.by_time else {}
        postfix.update({k: f"{v:.4g}" for k, v in list(losses.items())[:6]})
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        if self.by_time:
            self.advance()
        else:
            self._move(self.position + 1)

    def advance(self) -> None:
        """Under a time budget: up to the clock's seconds so far (at most the budget's)."""
        if self.by_time:
            self._move(min(float(self.total), 60 * self.clock.minutes()))

    def _move(self, position: float) -> None:
        if position > self.position:
            self.bar.update(position - self.position)
            self.position = position

    def close(self) -> None:
        self.bar.close()
