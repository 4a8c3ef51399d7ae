"""Gene-expression tables for the Tybalt VAE (Way & Greene, PSB 2018): :class:`ExpressionTable`.

Layout (DESIGN.md section 2): ``DIR/expression.tsv`` (or ``.tsv.gz``), tab-separated, a header
row, rows = samples, first column = sample id, one column per gene (``genes_by_samples=True``:
the transposed table); optional ``DIR/labels.tsv`` (sample id, label) for the latent kNN accuracy.

Preprocessing is the paper's (after ``log2(x + 1)`` for raw counts or TPM, which TCGA tables
from UCSC Xena have already had; ``log_transform="auto"`` takes it when the training table looks
like raw values: non-negative and reaching past 100): keep the ``n_genes`` genes with the largest median absolute
deviation (robust to a single outlying sample, unlike the variance; ``gene_selection="mean"``:
the mean absolute deviation the reference code used), then min-max scale every
gene to [0, 1] -- the VAE's sigmoid/BCE decoder needs inputs in [0, 1] and collapses otherwise.
Both are fitted on the *training* samples only, so held-out samples never shape the model's
inputs; they (and new samples at inference) get the same genes, selected by name, and the same
scaling, clipped to [0, 1]. The fitted genes and min/max are the module's ``state_dict()``.

Reading and writing the files: :mod:`medgen.data.expression_io`.

Items: training yields one sample per item, ``{"x": (G,)}``; validation/test/all yield ONE item,
the whole split ``{"x": (N, G), "subject": split name}`` (with labels also ``"classes"``, the
names of the label indices), because the VAE's metrics (latent kNN
accuracy) are computed over a whole split at once. With labels, items also hold ``"label"``
(int64; -1 = unknown).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medgen.data.expression_io import (check_table, first_cell, looks_unlogged, read_expression, read_labels,
                                       some_names)
from medgen.data.layouts import discover_expression
from medgen.data.module import DataModule
from medgen.data.splits import split_subjects, split_summary
from medgen.errors import ConfigError, InputError
from medgen.notes import note

SPLITS = ("train", "val", "test", "all")
_MAD_CHUNK = 1024  # genes per block when computing the MAD: bounds the temporary copies


GENE_SELECTIONS = ("median", "mean")


def top_mad(values: np.ndarray, n: int, center: str = "median") -> np.ndarray:
    """Column indices of the ``n`` columns of ``values`` (samples x genes) with the largest
    absolute deviation, in column order; ties go to the earlier column.

    ``center="median"``: the median absolute deviation from the median (the paper's, robust to a
    single outlying sample); ``"mean"``: the mean absolute deviation from the mean (pandas'
    old ``.mad()``, what the reference code ran).
    """
    if center not in GENE_SELECTIONS:
        raise ValueError(f"center must be one of {GENE_SELECTIONS}, got {center!r}")
    stat = np.median if center == "median" else np.mean
    mad = np.empty(values.shape[1], dtype=np.float64)
    for start in range(0, values.shape[1], _MAD_CHUNK):
        block = values[:, start:start + _MAD_CHUNK].astype(np.float64)
        mad[start:start + _MAD_CHUNK] = stat(np.abs(block - stat(block, axis=0)), axis=0)
    return np.sort(np.argsort(-mad, kind="stable")[:n])


class _Samples(Dataset):
    """One sample per item (training): ``{"x": (G,)}`` (+ ``"label"``); with ``length`` above the
    number of samples, the samples again and again (index modulo N) up to ``length`` items."""

    def __init__(self, split: dict, length: int | None = None):
        self.x, self.label = split["x"], split["label"]
        self.length = max(self.x.shape[0], int(length or 0)) if self.x.shape[0] else 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        index %= self.x.shape[0]
        item = {"x": self.x[index]}
        if self.label is not None:
            item["label"] = self.label[index]
        return item


class _WholeSplit(Dataset):
    """The whole split as ONE item ``{"x": (N, G), "subject": name}`` (+ ``"label"`` (N,)); an
    empty split is an empty dataset."""

    def __init__(self, name: str, split: dict, classes: Sequence[str] = ()):
        self.name, self.x, self.label, self.classes = name, split["x"], split["label"], list(classes)

    def __len__(self) -> int:
        return 1 if self.x.shape[0] else 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index not in (0, -1) or not len(self):
            raise IndexError(index)
        item = {"x": self.x, "subject": self.name}
        if self.label is not None:
            item["label"] = self.label
            item["classes"] = self.classes  # label index -> name (for plots)
        return item


class ExpressionTable(DataModule):
    """A gene-expression table (Tybalt): see the module docstring for layout and preprocessing.

    ``root``: the folder holding ``expression.tsv[.gz]`` (+ optional ``labels.tsv``) or the table
    file itself. ``n_genes``: genes kept by absolute deviation (all, with a note, when the table
    has fewer); ``epoch_samples``: an epoch draws at least this many samples, passing over a
    small training set several times (None: one pass, the paper's; its 50 epochs of ~10,000 TCGA
    samples were ~10,000 steps, which 50 passes over 100 samples are not); ``gene_selection``:
    ``"median"`` (median absolute deviation, the paper's) or
    ``"mean"`` (mean absolute deviation, the reference code's; the two lists overlap by ~85 %).
    ``label_column``: the column of ``labels.tsv`` (default: its second column). Labels are
    strings; class indices follow the sorted class names (``classes``), -1 = unknown.

    A module given a saved state (``load_state_dict``) before ``setup()`` keeps those genes and
    that scaling instead of fitting them, so a model can be evaluated on another table; class
    names the saved list lacks are appended after it.
    """

    def __init__(self, root, genes_by_samples: bool = False, n_genes: int = 5000, val_fraction: float = 0.1,
                 test_fraction: float = 0.0, split_seed: int = 0, batch_size: int = 50,
                 label_column: str | None = None, log_transform: bool | str = "auto", gene_selection: str = "median",
                 epoch_samples: int | None = None):
        if int(n_genes) < 1:
            raise ConfigError(f"n_genes must be at least 1, got {n_genes}")
        if gene_selection not in GENE_SELECTIONS:
            raise ConfigError(f"gene_selection must be one of {', '.join(GENE_SELECTIONS)}, got {gene_selection!r}")
        self.gene_selection = gene_selection
        if epoch_samples is not None and int(epoch_samples) < 1:
            raise ConfigError(f"epoch_samples must be at least 1 (or null), got {epoch_samples}")
        self.epoch_samples = None if epoch_samples is None else int(epoch_samples)
        self.root = Path(root)
        self.genes_by_samples = bool(genes_by_samples)
        self.n_genes = int(n_genes)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.batch_size = int(batch_size)
        self.label_column = label_column
        if log_transform not in (True, False, "auto"):
            raise ConfigError(f"log_transform must be true, false or auto, got {log_transform!r}")
        self.log_transform = log_transform  # "auto": decided on the training table at setup()
        self.genes: list[str] | None = None  # kept genes, in the table's column order (fitted or loaded)
        self._min: np.ndarray | None = None  # per kept gene, float32: training min and max
        self._max: np.ndarray | None = None
        self.classes: list[str] = []
        self._splits: dict[str, dict] | None = None  # name -> {"ids", "x" (N, G), "label" (N,) | None}
        self._table_genes = 0  # genes in the table read by setup()

    # --- fitting ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Read the table (and labels), split the samples, fit genes and scaling on the training
        samples (unless a state was loaded) and scale every split. Runs once."""
        if self._splits is not None:
            return
        found = discover_expression(self.root, self.genes_by_samples)
        where = found["expression"]
        ids, genes, values = read_expression(where, self.genes_by_samples)
        self._table_genes = len(genes)
        if self.log_transform == "auto":
            self.log_transform = looks_unlogged(values)
            if self.log_transform:
                note(f"{where}: values reach {values.max():.4g}, raw counts or TPM: taking log2(x + 1) "
                     f"(data.log_transform=false keeps them)")
        values = self._log(where, ids, genes, values)
        labels = self._labels(found["labels"], ids)
        train, val, test = split_subjects(ids, self.val_fraction, self.test_fraction, self.split_seed)
        members = {name: np.array([i in chosen for i in ids], dtype=bool)
                   for name, chosen in (("train", set(train)), ("val", set(val)), ("test", set(test)))}
        fit = self.genes is None
        if fit:
            self._fit(where, genes, values[members["train"]])
        x = self._scale(self._select(where, genes, values))
        del values  # the full table: only the kept genes are needed from here on
        # Training values lie in [0, 1] by construction (checked below); others are clipped.
        held_out = ~members["train"] if fit else np.ones(len(ids), dtype=bool)
        x[held_out] = np.clip(x[held_out], 0.0, 1.0)
        _check_unit_range(where, x, ids, self.genes)
        x = torch.from_numpy(x)
        self._splits = {"all": {"ids": list(ids), "x": x, "label": labels}}
        for name, mask in members.items():  # rows in the table's order
            rows = torch.from_numpy(np.flatnonzero(mask))
            self._splits[name] = {"ids": [ids[i] for i in rows.tolist()], "x": x[rows],
                                  "label": None if labels is None else labels[rows]}

    def describe(self) -> str:
        """``300 samples x 2000 genes in DIR: 270 train / 30 validation; 2000 genes kept (median
        absolute deviation), log2(x + 1); labels: 4 classes``."""
        counts = {name: len(self._splits[name]["ids"]) for name in ("all", "train", "val", "test")}
        split = split_summary(counts)
        kept = f"{len(self.genes)} genes kept ({self.gene_selection} absolute deviation)"
        logged = "log2(x + 1)" if self.log_transform else "values as they are"
        labels = "no labels" if self._splits["all"]["label"] is None else f"labels: {len(self.classes)} classes"
        return (f"{counts['all']} samples x {self._table_genes} genes in {self.root}: {split}; "
                f"{kept}, {logged}; {labels}")

    def _labels(self, path: Path | None, ids: list[str]) -> torch.Tensor | None:
        if path is None:
            if self.label_column is not None:
                raise InputError(self.root, f"label_column '{self.label_column}' is set but there is no labels.tsv")
            return None
        names = read_labels(path, ids, self.label_column)
        self.classes = self.classes + sorted({n for n in names if n is not None} - set(self.classes))
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([-1 if n is None else index[n] for n in names], dtype=torch.int64)

    def _fit(self, where: Path, genes: list[str], train: np.ndarray) -> None:
        """Genes by MAD and their min/max, on the training samples (samples x genes) only."""
        if len(genes) < self.n_genes:
            note(f"{where} has {len(genes)} genes, fewer than data.n_genes={self.n_genes}: keeping all")
        keep = top_mad(train, self.n_genes, self.gene_selection)
        kept = train[:, keep]
        self.genes = [genes[j] for j in keep]
        self._min, self._max = kept.min(axis=0), kept.max(axis=0)

    def _require_state(self) -> None:
        if self.genes is None:
            self.setup()

    # --- the fitted transform -----------------------------------------------------------------
    def _log(self, where, ids: Sequence[str], genes: Sequence[str], values: np.ndarray) -> np.ndarray:
        """``log2(x + 1)`` with ``log_transform`` (skewed counts would otherwise crowd near 0 after
        min-max scaling, a few extreme samples setting every gene's range)."""
        if not self.log_transform:
            return values
        negative = values < 0
        if negative.any():
            raise InputError(where, f"{int(negative.sum())} negative values (data.log_transform expects counts or TPM), "
                                    f"the first at {first_cell(negative, ids, genes)}")
        return np.log2(values + np.float32(1))

    def _select(self, where, genes: Sequence[str], values: np.ndarray) -> np.ndarray:
        """The kept genes' columns, found by name (any column order; other genes ignored)."""
        column = {g: j for j, g in enumerate(genes)}
        missing = [g for g in self.genes if g not in column]
        if missing:
            raise InputError(where, f"{len(missing)} of the {len(self.genes)} genes the model uses are missing: "
                                    f"{some_names(missing)}")
        return values[:, [column[g] for g in self.genes]]

    def _scale(self, values: np.ndarray) -> np.ndarray:
        """Min-max to the training range (unclipped); a gene constant in training maps to 0."""
        span = self._max - self._min
        constant = span == 0
        out = (values - self._min) / np.where(constant, np.float32(1), span)
        out[:, constant] = 0.0
        return out.astype(np.float32, copy=False)

    # --- DataModule ---------------------------------------------------------------------------
    def _split(self, name: str) -> dict:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        self.setup()
        return self._splits[name]

    def sample_ids(self, split: str) -> list[str]:
        """The ids of ``split``'s samples, in the order of its rows (the table's order)."""
        return list(self._split(split)["ids"])

    def train_dataset(self) -> Dataset:
        return _Samples(self._split("train"), self.epoch_samples)

    def val_dataset(self) -> Dataset:
        return _WholeSplit("val", self._split("val"), self.classes)

    def test_dataset(self) -> Dataset:
        return _WholeSplit("test", self._split("test"), self.classes)

    def all_dataset(self) -> Dataset:
        return _WholeSplit("all", self._split("all"), self.classes)

    def state_dict(self) -> dict:
        """What inference needs without the training table: kept genes, their training min/max,
        whether values were logged first, and the class names (plain types and tensors: loadable with ``weights_only=True``)."""
        self._require_state()
        return {"genes": list(self.genes), "min": torch.from_numpy(self._min.copy()),
                "max": torch.from_numpy(self._max.copy()), "classes": list(self.classes),
                "log_transform": bool(self.log_transform)}

    def load_state_dict(self, state: dict) -> None:
        genes = [str(g) for g in state["genes"]]
        lo = torch.as_tensor(state["min"]).cpu().numpy().astype(np.float32)
        hi = torch.as_tensor(state["max"]).cpu().numpy().astype(np.float32)
        if not (lo.shape == hi.shape == (len(genes),)):
            raise ValueError(f"expression state: {len(genes)} genes but min {lo.shape} and max {hi.shape}")
        self.genes, self._min, self._max = genes, lo, hi
        self.classes = [str(c) for c in state["classes"]]
        if "log_transform" in state:  # the scaling was fitted on these values (older runs: the config's)
            self.log_transform = bool(state["log_transform"])
        self._splits = None  # scaled with the previous state

    def resolved_settings(self) -> dict:
        """``log_transform: auto`` as what ``setup()`` decided, for the run's saved config."""
        return {"log_transform": bool(self.log_transform)} if self.log_transform != "auto" else {}

    def model_settings(self) -> dict:
        self._require_state()
        return {"in_features": len(self.genes)}

    def preprocess(self, table) -> tuple[torch.Tensor, dict]:
        """New samples -> ``(tensor (N, G) in [0, 1], state)`` with the fitted genes and scaling.

        ``table``: a table file (or its folder), read with this module's ``genes_by_samples``,
        or a ``(sample_ids, genes, values)`` tuple as :func:`read_expression` returns.
        """
        if isinstance(table, tuple):
            where = "input"
            ids, genes, values = list(table[0]), list(table[1]), np.asarray(table[2], dtype=np.float32)
            check_table(where, ids, genes, values, min_samples=1)
        else:
            where = discover_expression(table, self.genes_by_samples)["expression"]
            ids, genes, values = read_expression(where, self.genes_by_samples, min_samples=1)
        self._require_state()
        values = self._log(where, ids, genes, self._select(where, genes, values))
        x = np.clip(self._scale(values), 0.0, 1.0)
        _check_unit_range(where, x, ids, self.genes)
        return torch.from_numpy(x), {"sample_ids": ids}

    def postprocess(self, output: torch.Tensor, state: dict) -> tuple[list[str], list[str], np.ndarray]:
        """A model output ``(N, G)`` in [0, 1] -> ``(sample_ids, genes, values)`` in the input's
        units (inverse min-max, and inverse log), ready for :func:`medgen.data.expression_io.write_table`."""
        self._require_state()
        out = torch.as_tensor(output).detach().float().cpu().numpy()
        ids = list(state["sample_ids"])
        if out.shape != (len(ids), len(self.genes)):
            raise ValueError(f"output of shape {out.shape}, expected ({len(ids)}, {len(self.genes)})")
        values = out * (self._max - self._min) + self._min
        return ids, list(self.genes), np.exp2(values) - 1 if self.log_transform else values


def _check_unit_range(where, x: np.ndarray, sample_ids: Sequence[str], genes: Sequence[str]) -> None:
    """Guard: the VAE collapses on inputs outside [0, 1] (DESIGN.md), so never hand it any."""
    bad = ~(np.isfinite(x) & (x >= 0) & (x <= 1))
    if bad.any():
        raise RuntimeError(f"{where}: {int(bad.sum())} scaled expression values are not finite or outside [0, 1], "
                           f"the first at {first_cell(bad, sample_ids, genes)} (a bug in the scaling)")
