import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medgen.data.expression import ExpressionTable
from medgen.data.expression_io import read_expression, write_table
from medgen.data.expression_synth import make_expression, write_expression
from medgen.data.splits import split_subjects
from medgen.errors import InputError

# Six samples, all training (val_fraction=0). Median absolute deviations:
# outlier 0 (but by far the largest variance), tieA 0.5, spread 3, flat 0, big_mean 0.5 (by far
# the largest mean), mid 1.5. Top 3 by MAD: spread, mid, then tieA (ties with big_mean: earlier).
GENES = ["outlier", "tieA", "spread", "flat", "big_mean", "mid"]
VALUES = np.array([
    [0, 0, 0, 5, 1000, 0],
    [0, 1, 2, 5, 1001, 1],
    [0, 0, 4, 5, 1000, 2],
    [0, 1, 6, 5, 1001, 3],
    [0, 0, 8, 5, 1000, 4],
    [100, 1, 10, 5, 1001, 5],
], dtype=np.float32)
IDS = [f"s{i}" for i in range(1, 7)]


def _table(folder, ids=IDS, genes=GENES, values=VALUES, name="expression.tsv"):
    write_table(folder / name, ids, genes, values)
    return folder


def _text(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mad_selection_and_min_max_scaling(tmp_path):
    data = ExpressionTable(_table(tmp_path), n_genes=3, val_fraction=0.0, log_transform=False)
    data.setup()
    assert data.state_dict()["genes"] == ["tieA", "spread", "mid"]  # column order
    assert data.model_settings() == {"in_features": 3}
    x = data.all_dataset()[0]["x"]
    expected = np.stack([VALUES[:, 1], VALUES[:, 2] / 10, VALUES[:, 5] / 5], axis=1)
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6)
    assert x.dtype == torch.float32 and x.min() == 0 and x.max() == 1
    assert data.sample_ids("all") == data.sample_ids("train") == IDS


def test_fewer_genes_than_n_genes_keeps_all_and_constant_gene_is_zero(tmp_path, caplog):
    data = ExpressionTable(_table(tmp_path), n_genes=50, val_fraction=0.0)
    x = data.all_dataset()[0]["x"]
    assert "6 genes, fewer than data.n_genes=50" in caplog.text
    assert data.state_dict()["genes"] == GENES
    assert (x[:, GENES.index("flat")] == 0).all()
    assert x[:, GENES.index("outlier")].tolist() == [0, 0, 0, 0, 0, 1]


def test_genes_and_scaling_fitted_on_training_samples_only(tmp_path):
    ids = ["s1", "s2", "s3", "s4"]
    train, val, _ = split_subjects(ids, 0.5, 0.0, 0)
    # gene b: train 0, 0 (MAD 0) / val 100, -100: its MAD over all samples would be 50, the largest.
    # gene c: train 0, 2 (MAD 1); gene d: train 1, 3 (MAD 1) / val 10, -5 (beyond the training range).
    rows = {train[0]: [0, 0, 1], train[1]: [0, 2, 3], val[0]: [100, 1, 10], val[1]: [-100, 1, -5]}
    values = np.array([rows[s] for s in ids], dtype=np.float32)
    data = ExpressionTable(_table(tmp_path, ids, ["b", "c", "d"], values), n_genes=2, val_fraction=0.5)
    state = data.state_dict()
    assert state["genes"] == ["c", "d"]
    assert state["min"].tolist() == [0, 1] and state["max"].tolist() == [2, 3]
    assert data.sample_ids("train") == train and data.sample_ids("val") == val
    assert data.train_dataset()[0]["x"].tolist() == [0, 0] and data.train_dataset()[1]["x"].tolist() == [1, 1]
    assert data.val_dataset()[0]["x"].tolist() == [[0.5, 1.0], [0.5, 0.0]]  # d: 4.5 and -3 clipped


def test_transposed_and_gzipped_tables_give_the_same_tensors(tmp_path):
    demo = make_expression(seed=1, n_samples=30, n_genes=40)
    ids, genes, values = demo["sample_ids"], demo["genes"], demo["expression"]
    _table(tmp_path / "plain", ids, genes, values)
    _table(tmp_path / "gz", ids, genes, values, name="expression.tsv.gz")
    write_table(tmp_path / "t" / "expression.tsv", genes, ids, values.T)
    results = [ExpressionTable(tmp_path / name, genes_by_samples=name == "t", n_genes=10) for name in ("plain", "gz", "t")]
    ref = results[0].all_dataset()[0]["x"]
    for data in results:
        assert data.state_dict()["genes"] == results[0].state_dict()["genes"]
        assert torch.equal(data.all_dataset()[0]["x"], ref)
        assert torch.equal(data.val_dataset()[0]["x"], results[0].val_dataset()[0]["x"])
    assert read_expression(tmp_path / "gz" / "expression.tsv.gz")[0] == ids
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="missing 'expression.tsv' or 'expression.tsv.gz'"):
        ExpressionTable(tmp_path / "empty").setup()


@pytest.mark.parametrize("text, genes_by_samples, expected", [
    ("", False, ["empty file"]),
    ("sample_id\ns1\ns2\n", False, ["no gene columns"]),
    ("sample_id\tg1\tg2\ns1\t1\t2\ns2\t3\tabc\n", False, ["non-numeric value 'abc'", "sample 's2'", "gene 'g2'"]),
    ("gene\ts1\ts2\ng1\t1\t2\ng2\t3\tx7\n", True, ["non-numeric value 'x7'", "sample 's2'", "gene 'g2'"]),
    ("sample_id\tg1\tg2\ns1\t1\t\ns2\tNA\t4\n", False, ["2 missing values", "sample 's1', gene 'g2'"]),
    ("sample_id\tg1\tg2\ns1\t1\t2\ns2\t3\t-inf\n", False, ["1 infinite values", "sample 's2', gene 'g2'"]),
    ("sample_id\tg1\ns1\t1\ns2\t2\ns1\t3\ns2\t4\n", False, ["duplicate sample ids: 's1', 's2'"]),
    ("sample_id\tg1\tg2\tg1\ns1\t1\t2\t3\ns2\t4\t5\t6\n", False, ["duplicate gene names: 'g1'"]),
    ("gene\ts1\ts2\ng1\t1\t2\ng1\t3\t4\n", True, ["duplicate gene names: 'g1'"]),
    ("sample_id\tg1\ns1\t1\n", False, ["1 sample(s); at least 2 needed"]),
    ("g1\tg2\ns1\t1\t2\ns2\t3\t4\n", False, ["more fields than the header"]),
])
def test_bad_tables_are_input_errors_naming_file_and_problem(tmp_path, text, genes_by_samples, expected):
    path = _text(tmp_path / "expression.tsv", text)
    with pytest.raises(InputError) as e:
        ExpressionTable(tmp_path, genes_by_samples=genes_by_samples).setup()
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for part in expected:
        assert part in message


def test_labels_to_class_indices(tmp_path):
    _table(tmp_path)
    # s3: no row; s4: empty label; s9: not in the table (ignored)
    _text(tmp_path / "labels.tsv", "id\tsubtype\tstage\ns1\tb\tI\ns2\ta\tII\ns4\t\tI\ns5\tb\tII\ns6\tc\tI\ns9\tz\tI\n")
    data = ExpressionTable(tmp_path, n_genes=3, val_fraction=0.0)
    assert data.all_dataset()[0]["label"].tolist() == [1, 0, -1, -1, 1, 2]
    assert data.state_dict()["classes"] == ["a", "b", "c"]
    item = data.train_dataset()[0]
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0 and item["label"] == 1
    staged = ExpressionTable(tmp_path, n_genes=3, val_fraction=0.0, label_column="stage")
    assert staged.all_dataset()[0]["label"].tolist() == [0, 1, -1, 0, 1, 0] and staged.classes == ["I", "II"]
    with pytest.raises(InputError, match=r"labels\.tsv: no column 'grade'"):
        ExpressionTable(tmp_path, label_column="grade").setup()
    _text(tmp_path / "labels.tsv", "id\tsubtype\ns1\ta\ns1\tb\n")
    with pytest.raises(InputError, match=r"labels\.tsv: duplicate sample ids: 's1'"):
        ExpressionTable(tmp_path).setup()
    (tmp_path / "labels.tsv").unlink()
    with pytest.raises(InputError, match="label_column 'stage' is set but there is no labels.tsv"):
        ExpressionTable(tmp_path, label_column="stage").setup()


def _trained(tmp_path):
    """A module fitted on a demo table, and that table as read (values rounded to 4 digits)."""
    write_expression(tmp_path / "train", make_expression(seed=2, n_samples=40, n_genes=60))
    data = ExpressionTable(tmp_path / "train", n_genes=20, val_fraction=0.25)
    data.setup()
    return read_expression(tmp_path / "train" / "expression.tsv"), data


def test_state_round_trip_and_preprocess_new_samples(tmp_path):
    (ids, genes, values), data = _trained(tmp_path)
    torch.save({"data": data.state_dict()}, tmp_path / "ckpt.pt")
    fresh = ExpressionTable(tmp_path / "nowhere")  # never set up: no training folder
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["data"])
    assert fresh.model_settings() == {"in_features": 20} and fresh.classes == data.classes
    # the same samples with shuffled gene columns and an extra gene, as a file and as a tuple
    order = np.random.default_rng(0).permutation(len(genes))
    shuffled = [genes[j] for j in order] + ["EXTRA"]
    table = np.column_stack([values[:, order], np.ones(len(ids), np.float32)])
    write_table(tmp_path / "new.tsv", ids, shuffled, table)
    expected = data.all_dataset()[0]["x"]
    for new in (tmp_path / "new.tsv", (ids, shuffled, table)):
        x, state = fresh.preprocess(new)
        assert torch.equal(x, expected) and state["sample_ids"] == ids
    back_ids, kept, back = fresh.postprocess(x, state)
    assert back_ids == ids and kept == data.state_dict()["genes"]
    train = [ids.index(s) for s in data.sample_ids("train")]  # inside the training range
    np.testing.assert_allclose(back[train], values[train][:, [genes.index(g) for g in kept]], rtol=1e-5)


def test_preprocess_missing_genes_and_one_sample(tmp_path):
    (ids, genes, values), data = _trained(tmp_path)
    kept = data.state_dict()["genes"]
    columns = [j for j, g in enumerate(genes) if g not in kept[:2]]
    write_table(tmp_path / "one.tsv", ["new"], [genes[j] for j in columns], values[:1, columns])
    with pytest.raises(InputError) as e:
        data.preprocess(tmp_path / "one.tsv")
    assert str(e.value).startswith(str(tmp_path / "one.tsv"))
    assert f"2 of the 20 genes the model uses are missing: '{kept[0]}', '{kept[1]}'" in str(e.value)
    x, state = data.preprocess((["new"], genes, values[:1]))
    assert x.shape == (1, 20) and state["sample_ids"] == ["new"]


def test_setup_is_idempotent(tmp_path):
    _, data = _trained(tmp_path)
    x = data.train_dataset()[0]["x"]
    (tmp_path / "train" / "expression.tsv").unlink()
    data.setup()  # a second call reads nothing
    assert torch.equal(data.train_dataset()[0]["x"], x)


def test_values_outside_unit_range_are_caught(tmp_path, monkeypatch):
    """The guard against a scaling bug: the VAE must never see values outside [0, 1]."""
    monkeypatch.setattr(ExpressionTable, "_scale", lambda self, values: np.full(values.shape, np.nan, np.float32))
    with pytest.raises(RuntimeError, match="6 scaled expression values are not finite or outside"):
        ExpressionTable(_table(tmp_path), n_genes=1, val_fraction=0.0).setup()


def test_demo_table_items_and_batches(tmp_path):
    write_expression(tmp_path, make_expression(seed=0, n_samples=60, n_genes=300))
    data = ExpressionTable(tmp_path, n_genes=100)
    data.setup()
    assert data.batch_size == 50 and len(data.classes) == 4
    assert len(data.train_dataset()) == 54 and len(data.sample_ids("val")) == 6
    assert sorted(data.sample_ids("train") + data.sample_ids("val")) == data.sample_ids("all")
    assert len(data.test_dataset()) == 0 and data.sample_ids("test") == []
    batch = next(iter(DataLoader(data.train_dataset(), batch_size=data.batch_size)))
    assert batch["x"].shape == (50, 100) and batch["label"].shape == (50,)
    val = next(iter(DataLoader(data.val_dataset(), batch_size=1)))
    assert val["x"].shape == (1, 6, 100) and val["label"].shape == (1, 6) and val["subject"] == ["val"]
    everything = data.all_dataset()[0]["x"]
    assert everything.shape == (60, 100) and everything.min() >= 0 and everything.max() <= 1


def test_write_table_round_trip(tmp_path):
    values = np.array([[0.1, 1 / 3], [1e-8, 12345.678]], dtype=np.float32)
    write_table(tmp_path / "out" / "t.tsv.gz", ["a", "b"], ["z1", "z2"], values)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["t.tsv.gz"]  # no temporary file left
    ids, columns, back = read_expression(tmp_path / "out" / "t.tsv.gz")
    assert ids == ["a", "b"] and columns == ["z1", "z2"] and np.array_equal(back, values)


def test_log_transform_before_selection_and_back(tmp_path):
    # counts: gene "skewed" has the larger MAD raw (one decade of spread around 1000), gene "fold"
    # the larger MAD after log2(x + 1) (4-fold changes at low counts)
    ids = [f"s{i}" for i in range(6)]
    counts = np.array([[1000, 1], [1100, 7], [1000, 1], [1100, 7], [1000, 1], [1100, 7]], dtype=np.float32)
    folder = _table(tmp_path, ids, ["skewed", "fold"], counts)
    raw = ExpressionTable(folder, n_genes=1, val_fraction=0.0, log_transform=False)
    logged = ExpressionTable(folder, n_genes=1, val_fraction=0.0, log_transform=True)
    assert raw.state_dict()["genes"] == ["skewed"] and logged.state_dict()["genes"] == ["fold"]
    # auto: counts reaching past 100 are logged, and the decision goes into the run's config
    auto = ExpressionTable(folder, n_genes=1, val_fraction=0.0)
    assert auto.state_dict()["genes"] == ["fold"] and auto.resolved_settings() == {"log_transform": True}
    logged_already = _table(tmp_path / "logged", ids, ["skewed", "fold"], np.log2(counts + 1))
    auto = ExpressionTable(logged_already, n_genes=1, val_fraction=0.0)
    assert auto.state_dict()["genes"] == ["fold"] and auto.resolved_settings() == {"log_transform": False}
    # a model applied elsewhere logs (or not) as its training did: the state says which
    applied = ExpressionTable(folder, n_genes=1, log_transform=False)
    applied.load_state_dict(logged.state_dict())
    assert applied.preprocess(folder)[0][:, 0].tolist() == [0, 1, 0, 1, 0, 1]
    x, state = logged.preprocess(folder)
    assert x[:, 0].tolist() == [0, 1, 0, 1, 0, 1]  # log2 2 = 1 and log2 8 = 3, scaled
    _, _, back = logged.postprocess(x, state)
    np.testing.assert_allclose(back[:, 0], counts[:, 1], rtol=1e-5)  # counts again
    negative = _table(tmp_path / "neg", ids, ["skewed", "fold"], counts - 5)
    with pytest.raises(InputError, match=r"3 negative values .*log_transform.*sample 's0', gene 'fold'"):
        ExpressionTable(negative, log_transform=True).setup()


def test_epoch_samples_pass_over_a_small_table_several_times(tmp_path):
    write_expression(tmp_path, make_expression(seed=0, n_samples=20, n_genes=30))
    one_pass = ExpressionTable(tmp_path, n_genes=10, val_fraction=0.0).train_dataset()
    cycled = ExpressionTable(tmp_path, n_genes=10, val_fraction=0.0, epoch_samples=45).train_dataset()
    assert len(one_pass) == 20 and len(cycled) == 45
    assert all(torch.equal(cycled[i]["x"], one_pass[i % 20]["x"]) for i in range(45))
    with pytest.raises(IndexError):
        cycled[45]
    # never fewer than one pass
    assert len(ExpressionTable(tmp_path, n_genes=10, val_fraction=0.0, epoch_samples=5).train_dataset()) == 20


def test_describe_says_what_was_found_and_how_it_is_split(tmp_path):
    """`medgen train tybalt` said nothing about the table before its first step (the volume
    tasks say subjects, split and grid): the engine prints ``data: <describe()>``."""
    write_expression(tmp_path / "t", make_expression(seed=0, n_samples=40, n_genes=30))
    data = ExpressionTable(tmp_path / "t", n_genes=20, val_fraction=0.1)
    data.setup()
    line = data.describe()
    assert line.startswith(f"40 samples x 30 genes in {tmp_path / 't'}: 36 train / 4 validation; ")
    assert "20 genes kept (median absolute deviation)" in line and "labels: " in line
    assert "log2(x + 1)" in line  # the synthetic table holds raw counts
