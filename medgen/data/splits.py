"""Deterministic train/val/test split by subject."""

from __future__ import annotations

import hashlib


def _rank(seed: int, subject: str) -> str:
    return hashlib.sha256(f"{seed}:{subject}".encode()).hexdigest()


def split_subjects(ids, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
                   ) -> tuple[list[str], list[str], list[str]]:
    """Split subject ids into ``(train, val, test)``, each sorted; a subject is in exactly one.

    Subjects are ordered by a hash of ``(seed, id)`` (deterministic, independent of input order
    and of the platform), then the first ``round(test_fraction * n)`` go to test and the next
    ``round(val_fraction * n)`` to val. Small datasets: a positive fraction gets at least one
    subject as long as one subject is left for training (so 2 subjects with val_fraction > 0
    give 1 train + 1 val); a single subject only trains.
    """
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("subject ids must be unique")
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(f"invalid split fractions val={val_fraction} test={test_fraction}")
    n = len(ids)
    order = sorted(ids, key=lambda s: _rank(seed, s))

    def count(fraction: float, available: int) -> int:
        if fraction <= 0 or available <= 1:
            return 0
        return min(max(1, round(fraction * n)), available - 1)

    n_test = count(test_fraction, n)
    n_val = count(val_fraction, n - n_test)
    test = order[:n_test]
    val = order[n_test:n_test + n_val]
    train = order[n_test + n_val:]
    return sorted(train), sorted(val), sorted(test)


def split_summary(counts: dict) -> str:
    """``10 train / 2 validation`` (`` / 3 test`` when there is a test split), from split sizes."""
    return f"{counts['train']} train / {counts['val']} validation" + (f" / {counts['test']} test" if counts.get("test") else "")
