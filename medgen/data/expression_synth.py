"""Synthetic gene-expression data with known latent programs (demo data for the Tybalt VAE).

Model: ``n_programs`` gene programs, each a sparse non-negative loading over ~8 % of the genes.
Each sample belongs to one of ``n_subtypes`` subtypes; a subtype fixes the mean activity of
every program, and a sample's activities are that mean plus Gaussian noise. Expression is
log-normal: ``log(expr) = gene baseline + activities @ loadings + gene noise``, so values are
non-negative, right-skewed, and the subtype is recoverable from a low-dimensional latent space.
"""

from __future__ import annotations

import numpy as np


def make_expression(seed: int = 0, n_samples: int = 300, n_genes: int = 2000, n_programs: int = 6,
                    n_subtypes: int = 4, separation: float = 1.5) -> dict:
    """``separation``: subtype mean activities are drawn from U(-separation, separation), against
    a per-sample activity noise of 0.4 (smaller: subtypes overlap more).

    Returns ``{"expression" (samples x genes, float32 >= 0), "sample_ids", "genes", "labels"
    (subtype names per sample), "activities" (samples x programs), "loadings" (programs x genes)}``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7001]))
    genes = [f"GENE{g + 1:05d}" for g in range(n_genes)]
    sample_ids = [f"S{i + 1:04d}" for i in range(n_samples)]
    subtype_names = [f"subtype_{chr(ord('A') + k)}" for k in range(n_subtypes)]

    loadings = np.zeros((n_programs, n_genes))
    for p in range(n_programs):
        members = rng.choice(n_genes, size=max(1, int(0.08 * n_genes)), replace=False)
        loadings[p, members] = rng.gamma(2.0, 0.5, size=len(members))
    subtype_means = rng.uniform(-separation, separation, size=(n_subtypes, n_programs))
    label_idx = rng.integers(0, n_subtypes, n_samples)
    activities = subtype_means[label_idx] + 0.4 * rng.standard_normal((n_samples, n_programs))

    baseline = rng.normal(2.0, 1.0, n_genes)  # log-scale gene means (some genes barely expressed)
    log_expr = baseline + activities @ loadings + 0.35 * rng.standard_normal((n_samples, n_genes))
    expression = np.exp(log_expr).astype(np.float32)
    return {
        "expression": expression,
        "sample_ids": sample_ids,
        "genes": genes,
        "labels": [subtype_names[k] for k in label_idx],
        "activities": activities.astype(np.float32),
        "loadings": loadings.astype(np.float32),
    }


def write_expression(folder, data: dict) -> None:
    """``expression.tsv`` (rows = samples, first column ``sample_id``) and ``labels.tsv``."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    import numpy as np

    table = np.column_stack([np.asarray(data["sample_ids"], dtype=object), data["expression"].astype(object)])
    np.savetxt(folder / "expression.tsv", table, fmt=["%s"] + ["%.4g"] * len(data["genes"]), delimiter="\t",
               header="sample_id\t" + "\t".join(data["genes"]), comments="")
    with open(folder / "labels.tsv", "w") as f:
        f.write("sample_id\tlabel\n")
        for sid, label in zip(data["sample_ids"], data["labels"]):
            f.write(f"{sid}\t{label}\n")
