"""Where a run's wall time goes, and when the engine may spend it on anything but training.

A user's minutes should go to training steps. Everything else -- waiting for batches, whole-volume
validation (metrics, FID, slice grids), checkpoints, MLflow logging -- is overhead, and per epoch
it is paid every few seconds with small folders (8 subjects x 16 patches / batch 4 = 32 steps).
So the engine schedules overhead by time, not by epochs:

* :class:`PhaseTimer` charges every second of a run to exactly one phase (the innermost one
  open), so the phases add up to the run's wall time by construction; the shares are logged as
  ``time/<phase>_share`` and printed at the end;
* :class:`OverheadSchedule` decides after each epoch whether to validate (the first epoch, to
  fail early; then whenever the run's overhead so far -- every phase but training steps and the
  one-off set-up -- plus the last validation's cost stays within ``overhead_share`` of the time
  so far; always the last epoch) and whether to write ``last.pt``/``best.pt`` (at most every
  ``checkpoint_minutes``, and at the end). So validation gets what data loading, logging and
  checkpoints leave of the overhead budget. Fixed epoch intervals (``val_every``,
  ``checkpoint_every``) still take precedence when a config sets them.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

PHASES = ("setup", "train", "data", "validation", "fid", "images", "checkpoint", "logging", "other")


class PhaseTimer:
    """Wall seconds per phase; nested phases charge their time to the innermost one.

    ``with timer.phase("validation"): ... with timer.phase("fid"): ...`` -- the FID seconds count
    as ``fid`` only. Time outside any phase is ``other``. ``total()`` is the wall time since the
    timer started (equal to the sum of all phases).
    """

    def __init__(self, clock=time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self._mark = self._start
        self._stack: list[str] = []
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    def _charge(self) -> None:
        now = self._clock()
        name = self._stack[-1] if self._stack else "other"
        self.seconds[name] = self.seconds.get(name, 0.0) + (now - self._mark)
        self._mark = now

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._charge()
        self._stack.append(name)
        try:
            yield
        finally:
            self._charge()
            self._stack.pop()

    def snapshot(self) -> dict[str, float]:
        """Seconds per phase up to now (the open phase included)."""
        self._charge()
        return dict(self.seconds)

    def total(self) -> float:
        return self._clock() - self._start

    def spent(self, *names: str) -> float:
        seconds = self.snapshot()
        return sum(seconds.get(n, 0.0) for n in names)

    def shares(self) -> dict[str, float]:
        seconds = self.snapshot()
        total = sum(seconds.values()) or 1.0
        return {name: value / total for name, value in seconds.items()}

    def metrics(self) -> dict[str, float]:
        """``time/<phase>_share`` for every phase, ``time/overhead_share`` (all but training
        steps) and ``time/total_minutes``."""
        shares = self.shares()
        out = {f"time/{name}_share": value for name, value in shares.items()}
        out["time/overhead_share"] = 1.0 - shares.get("train", 0.0)
        out["time/total_minutes"] = self.total() / 60.0
        return out

    def summary(self) -> str:
        """One line, e.g. ``time: 20.1 min; train 93.5 %, data 2.1 %, ...`` (phases over 0.05 %)."""
        shares = self.shares()
        parts = [f"{name} {100 * value:.1f} %" for name, value in shares.items() if value >= 5e-4]
        return f"time: {self.total() / 60:.1f} min; " + ", ".join(parts)


class OverheadSchedule:
    """When to validate and when to write checkpoints (see the module docstring).

    val_every / checkpoint_every: fixed epoch intervals (None: by time).
    overhead_share: with ``val_every`` None, the share of the wall time that everything but
        training steps (and set-up) may take, validation included.
    checkpoint_minutes: with ``checkpoint_every`` None, minutes between checkpoint writes.
    """

    def __init__(self, timer: PhaseTimer, val_every: int | None, overhead_share: float,
                 checkpoint_every: int | None, checkpoint_minutes: float) -> None:
        self.timer = timer
        self.val_every = val_every
        self.overhead_share = overhead_share
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = 60.0 * checkpoint_minutes
        self.validations = 0
        self.last_val_cost = 0.0
        self.final_work = 0.0  # seconds spent ahead for the final validation (not periodic overhead)
        self._last_write = timer.total()

    def validate_now(self, epoch: int, final: bool) -> bool:
        if final:
            return True
        if self.val_every is not None:
            return self.val_every > 0 and epoch % self.val_every == 0
        if self.validations == 0:
            return True  # the first epoch: a broken validation should fail in seconds, not at the end
        total = self.timer.total()
        overhead = total - self.timer.spent("train", "setup") - self.final_work
        return overhead + self.last_val_cost <= self.overhead_share * total

    def validated(self, seconds: float, final_work: float = 0.0) -> None:
        """A validation took `seconds`, of which `final_work` was the final validation's, done
        ahead (FID's real side, cached for it): that part neither recurs nor counts as overhead."""
        self.validations += 1
        self.last_val_cost = seconds - final_work
        self.final_work += final_work

    def checkpoint_now(self, epoch: int, final: bool) -> bool:
        if final:
            return True
        if self.checkpoint_every is not None:
            return self.checkpoint_every > 0 and epoch % self.checkpoint_every == 0
        return self.timer.total() - self._last_write >= self.checkpoint_seconds

    def checkpointed(self) -> None:
        self._last_write = self.timer.total()
