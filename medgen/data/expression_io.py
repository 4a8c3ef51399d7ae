"""Expression tables on disk: tab-separated files of samples x genes (``.tsv`` or ``.tsv.gz``),
read with every cell checked (:func:`read_expression`), their labels (:func:`read_labels`), an
atomic writer (:func:`write_table`) and what ``medgen info`` shows of one (:func:`describe_table`).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medgen.data.layouts import discover_expression
from medgen.errors import InputError
from medgen.io.atomic import atomic_output


def some_names(names: Sequence, k: int = 5) -> str:
    """A few names for an error message: ``'a', 'b', 'c' and 7 more``."""
    names = list(names)
    shown = ", ".join(repr(str(n)) for n in names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


def _csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` of a tab-separated file with its parse errors as one-line InputErrors.

    A value that is not a number (with a float ``dtype``) stays a ``ValueError``: the caller
    locates the cell. Rows with more fields than the header would silently lose data, so pandas'
    warning about it is an error.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, sep="\t", **kwargs)
    except pd.errors.EmptyDataError:
        raise InputError(path, "empty file") from None
    except pd.errors.ParserWarning:
        raise InputError(path, "rows have more fields than the header (the header needs a name for the "
                               "id column too, e.g. 'sample_id')") from None
    except pd.errors.ParserError as e:
        raise InputError(path, f"not a tab-separated table: {str(e).strip().splitlines()[-1]}") from None
    except (UnicodeDecodeError, EOFError, OSError) as e:
        raise InputError(path, f"cannot read the table: {e}") from None


def _check_names(where, names: Sequence, what: str) -> None:
    """Every name (sample id or gene name) present and unique."""
    blank = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if blank:
        raise InputError(where, f"{len(blank)} empty (or NA) {what}s, the first is {what} number {blank[0] + 1}")
    index = pd.Index(names)
    duplicated = index[index.duplicated()].unique()
    if len(duplicated):
        raise InputError(where, f"duplicate {what}s: {some_names(duplicated)}")


def first_cell(mask: np.ndarray, sample_ids: Sequence[str], genes: Sequence[str]) -> str:
    i, j = divmod(int(np.argmax(mask)), mask.shape[1])
    return f"sample '{sample_ids[i]}', gene '{genes[j]}'"


def check_table(where, sample_ids: Sequence[str], genes: Sequence[str], values: np.ndarray,
                 min_samples: int) -> None:
    """Names, shape and values of a table (samples x genes) before anything is fitted on it."""
    if not len(genes):
        raise InputError(where, "no gene columns (expected a tab-separated table: first column sample ids, "
                                "then one column per gene)")
    if len(sample_ids) < min_samples:
        raise InputError(where, f"{len(sample_ids)} sample(s); at least {min_samples} needed")
    _check_names(where, sample_ids, "sample id")
    _check_names(where, genes, "gene name")
    if values.shape != (len(sample_ids), len(genes)):
        raise InputError(where, f"values of shape {values.shape} for {len(sample_ids)} samples x {len(genes)} genes")
    finite = np.isfinite(values)
    if not finite.all():
        nan = np.isnan(values)
        if nan.any():
            raise InputError(where, f"{int(nan.sum())} missing values (empty or NA cells), the first at "
                                    f"{first_cell(nan, sample_ids, genes)}")
        raise InputError(where, f"{int((~finite).sum())} infinite values, the first at "
                                f"{first_cell(~finite, sample_ids, genes)}")


def _non_numeric(path: Path, header: list[str], genes_by_samples: bool) -> InputError | None:
    """The error naming the first cell that is not a number (slow: only after a failed read)."""
    raw = _csv(path, header=0, names=range(len(header)), index_col=False, dtype=str)
    for c in range(1, len(header)):
        cells = raw[c]
        bad = (pd.to_numeric(cells, errors="coerce").isna() & cells.notna()).to_numpy()
        if bad.any():
            r = int(np.argmax(bad))
            sample, gene = (header[c], raw[0][r]) if genes_by_samples else (raw[0][r], header[c])
            return InputError(path, f"non-numeric value {cells[r]!r} at sample '{sample}', gene '{gene}'")
    return None


def read_expression(path, genes_by_samples: bool = False, min_samples: int = 2
                    ) -> tuple[list[str], list[str], np.ndarray]:
    """``(sample_ids, genes, values)`` of a tab-separated table (``.tsv`` or ``.tsv.gz``), values
    float32 samples x genes.

    The first column holds the row names, the header row the column names: rows are samples
    and columns genes, or the reverse with ``genes_by_samples=True``. Read with pandas' C parser
    straight into float32 (a 10,000 x 20,000 table is 0.8 GB). Every problem is an InputError
    naming the file: no columns, a non-numeric cell, missing or infinite values, duplicate or
    empty names, fewer than ``min_samples`` samples (2 to train; 1 to apply a model).
    """
    path = Path(path)
    header = _csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    if len(header) < 2:
        columns = "sample" if genes_by_samples else "gene"
        raise InputError(path, f"no {columns} columns (expected a tab-separated table with a header row: "
                               f"first column the {'gene' if genes_by_samples else 'sample'} ids, then one column "
                               f"per {columns})")
    # Columns named by position: pandas would rename duplicate names (g1, g1.1), hiding them.
    dtype = defaultdict(lambda: np.float32, {0: str})
    try:
        table = _csv(path, header=0, names=range(len(header)), index_col=False, dtype=dtype)
    except ValueError as e:
        raise (_non_numeric(path, header, genes_by_samples) or InputError(path, f"cannot parse: {e}")) from None
    row_names = table.pop(0).tolist()
    values = table.to_numpy(dtype=np.float32)
    if genes_by_samples:
        sample_ids, genes, values = header[1:], row_names, np.ascontiguousarray(values.T)
    else:
        sample_ids, genes = row_names, header[1:]
    check_table(path, sample_ids, genes, values, min_samples)
    return sample_ids, genes, values


def read_labels(path, sample_ids: Sequence[str], label_column: str | None = None) -> list[str | None]:
    """The label (a string, ``None`` when unknown) of every sample of ``sample_ids`` from a
    tab-separated file: header row, first column sample id, label in ``label_column`` (default:
    the second column). Rows of samples that are not in ``sample_ids`` are ignored."""
    path = Path(path)
    table = _csv(path, dtype=str)
    if label_column is None:
        if table.shape[1] < 2:
            raise InputError(path, "no label column (expected a header row, then sample id and label per row)")
        label_column = table.columns[1]
    elif label_column not in table.columns[1:]:
        raise InputError(path, f"no column '{label_column}' (columns: {some_names(table.columns[1:])})")
    ids = table.iloc[:, 0].tolist()
    _check_names(path, ids, "sample id")
    by_id = dict(zip(ids, table[label_column]))
    return [label if isinstance(label, str) else None for label in (by_id.get(s) for s in sample_ids)]


def write_table(path, sample_ids: Sequence[str], columns: Sequence[str], values) -> Path:
    """Write ``values`` (samples x columns) as a tab-separated table with a ``sample_id`` column
    (gzip-compressed when ``path`` ends in ``.gz``), atomically: a temporary file in the same
    folder, then ``os.replace``, so a crash never leaves a half-written table. Floats are written
    in their shortest exact form."""
    path = Path(path)
    values = np.asarray(values)
    if values.shape != (len(sample_ids), len(columns)):
        raise ValueError(f"values of shape {values.shape} for {len(sample_ids)} rows x {len(columns)} columns")
    frame = pd.DataFrame(values, index=pd.Index(list(sample_ids), name="sample_id"), columns=list(columns))
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, sep="\t", compression="gzip" if path.name.lower().endswith(".gz") else None)
    return path


def looks_unlogged(values: np.ndarray) -> bool:
    """Whether a table looks like raw counts or TPM rather than log values: non-negative and
    reaching past 100 (log2 expression of any assay stays under ~25; counts and TPM reach
    thousands). ``data.log_transform=auto`` takes log2(x + 1) of such tables."""
    return bool(values.size) and float(values.min()) >= 0 and float(values.max()) > 100


def describe_table(path, genes_by_samples: bool = False) -> dict:
    """What ``medgen info`` shows of an expression table (a file or its folder): its size, value
    range, labels, and hints where the table looks unlike what Tybalt expects."""
    found = discover_expression(path, genes_by_samples)
    ids, genes, values = read_expression(found["expression"], genes_by_samples, min_samples=1)
    facts: dict[str, Any] = {
        "format": "expression table", "path": str(found["expression"]), "samples": len(ids), "genes": len(genes),
        "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
        "zeros": float((values == 0).mean()), "labels": None, "hints": [],
    }
    if found["labels"] is not None:
        names = read_labels(found["labels"], ids)
        counts = pd.Series([n for n in names if n is not None], dtype=object).value_counts()
        facts["labels"] = {str(k): int(v) for k, v in sorted(counts.items())}
        facts["unlabelled"] = sum(n is None for n in names)
    if looks_unlogged(values):
        facts["hints"].append(f"values reach {facts['max']:.4g}: raw counts or TPM? data.log_transform=auto (the "
                              f"default) takes log2(x + 1) first; false keeps the values as they are")
    if len(ids) > len(genes):  # tables usually hold far more genes than samples
        facts["hints"].append(
            f"more samples ({len(ids)}) than genes ({len(genes)}): " + (
                "if the rows are samples, drop data.genes_by_samples (--genes-by-samples here)" if genes_by_samples
                else "if the rows are genes, use data.genes_by_samples=true (--genes-by-samples here)"))
    return facts
