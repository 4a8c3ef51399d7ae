"""Tybalt VAE: the network, the KL warm-up, the loss, the latent metrics, and the CLI end to end."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from medgen.cli import main
from medgen.data.expression import ExpressionTable, top_mad
from medgen.data.expression_io import write_table
from medgen.data.expression_synth import make_expression, write_expression
from medgen.metrics.latent import knn_accuracy, pca_features
from medgen.models.tybalt import Tybalt
from medgen.networks.tybalt_vae import TybaltVAE
from medgen.tracking import resolve_tracking_uri


@pytest.mark.parametrize("hidden", [0, 12])
def test_network_shapes_and_the_reference_heads_are_non_negative(hidden):
    torch.manual_seed(0)
    x = torch.rand(8, 40)
    ref = TybaltVAE(40, latent_dim=6, hidden_dim=hidden, encoder="reference")
    logits, mu, logvar = ref(x)
    assert logits.shape == (8, 40) and mu.shape == logvar.shape == (8, 6)
    assert (mu >= 0).all() and (logvar >= 0).all()  # BatchNorm + ReLU, as the reference
    _, mu, logvar = TybaltVAE(40, latent_dim=6, hidden_dim=hidden, encoder="gaussian")(x)
    assert (mu < 0).any() and (logvar < 0).any()  # plain linear heads are signed
    assert len(ref.decoder) == 3 if hidden else isinstance(ref.decoder, torch.nn.Linear)


def test_kl_warm_up_per_epoch_and_per_step_under_minutes():
    model = Tybalt(in_features=10, latent_dim=4)
    assert [(setattr(model, "epoch", e), model.beta)[1] for e in range(3)] == [0.0, 1.0, 1.0]
    model.kappa = 0.25
    assert [(setattr(model, "epoch", e), model.beta)[1] for e in range(6)] == [0, 0.25, 0.5, 0.75, 1, 1]
    model.max_minutes = 20.0  # by the run's share: 50 paper epochs over the budget
    for progress, expected in ((0.0, 0.0), (0.01, 0.125), (0.04, 0.5), (0.08, 1.0), (0.5, 1.0)):
        model.progress = progress
        assert model.beta == pytest.approx(expected)


def test_loss_is_the_gene_sum_of_bce_plus_kl_and_falls_on_a_tiny_table():
    torch.manual_seed(0)
    data = make_expression(seed=1, n_samples=64, n_genes=60)
    values = np.log(data["expression"])
    x = torch.from_numpy(((values - values.min(0)) / (values.max(0) - values.min(0))).astype(np.float32))
    model = Tybalt(in_features=60, latent_dim=8, lr=5e-3)
    model.epoch = 1  # beta = 1
    model.eval()
    logits, mu, logvar = model.vae(x)
    torch.manual_seed(1)
    terms = model.loss_terms(x)
    torch.manual_seed(1)
    logits, mu, logvar = model.vae(x)
    p = torch.sigmoid(logits)
    bce = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1).mean()  # n_genes * mean BCE
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
    assert terms["recon"].item() == pytest.approx(bce.item(), rel=1e-4)
    assert terms["kl"].item() == pytest.approx(kl.item(), rel=1e-4)
    # Learning, in the warm-up (beta = 0: 64 samples give the KL the upper hand after it): the
    # reconstruction falls below that of predicting every gene's mean, which no latent can beat
    # without carrying information about the sample.
    model.train()
    model.epoch = 0
    mean_only = torch.nn.functional.binary_cross_entropy(x.mean(0).expand_as(x), x, reduction="none").sum(1).mean()
    recon = [model.training_step({"x": x[i:i + 16]}, 0)["recon"] for _ in range(100) for i in range(0, 64, 16)]
    assert np.mean(recon[:4]) > mean_only > np.mean(recon[-8:]) + 1.0
    assert model.training_step({"x": x[:1]}, 0) == {}  # BatchNorm cannot take one sample: skipped


def test_knn_accuracy_and_pca_against_hand_computed_values():
    # 1-D features, two classes; 1-NN with 2 stratified folds of the 4 samples of each class
    features = np.array([[0.0], [0.1], [0.2], [0.3], [10.0], [10.1], [10.2], [10.3]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert knn_accuracy(features, labels, k=1, folds=2) == 1.0
    # the label sits in the second column only: the first column is useless
    mixed = np.array([[i, c * 100] for i, c in enumerate([0, 1] * 6)], dtype=float)
    y = np.array([0, 1] * 6)
    assert knn_accuracy(mixed, y, k=1, folds=3) == 1.0
    # on the first column alone the nearest neighbour is of the other class unless both neighbours
    # fell in the test fold: far below chance
    assert knn_accuracy(mixed[:, :1], y, k=1, folds=3) < 0.25
    # unknown labels (-1) and single-sample classes are left out; one class left: no answer
    assert knn_accuracy(features, np.array([0, 0, 0, 0, -1, -1, -1, 2]), k=1) is None
    # PCA: points on a line in 3-D have one component carrying everything
    line = np.outer(np.arange(6.0), [1.0, 2.0, 2.0])
    scores = pca_features(line, 2)
    assert scores.shape == (6, 2) and np.allclose(np.abs(scores[:, 0]), np.abs(np.arange(6.0) - 2.5) * 3)
    assert np.allclose(scores[:, 1], 0, atol=1e-9) and pca_features(line, 50).shape == (6, 3)


def test_gene_selection_median_or_mean_absolute_deviation():
    # gene 0: one outlier (median AD 0, mean AD large); gene 1: a steady spread (both moderate)
    values = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [0, 6], [100, 7]], dtype=np.float32)
    assert top_mad(values, 1, "median").tolist() == [1]
    assert top_mad(values, 1, "mean").tolist() == [0]
    with pytest.raises(Exception, match="gene_selection must be one of"):
        ExpressionTable("DIR", gene_selection="variance")


def test_scaled_values_outside_the_unit_interval_stop_before_training(tmp_path, monkeypatch):
    write_expression(tmp_path, make_expression(seed=0, n_samples=20, n_genes=30))
    data = ExpressionTable(tmp_path, n_genes=10)
    monkeypatch.setattr(data, "_scale", lambda v: np.full(v.shape, 1.5, dtype=np.float32))  # a scaling bug
    with pytest.raises(RuntimeError, match=r"outside \[0, 1\], the first at"):
        data.setup()


def _config(path, **trainer):
    import yaml

    raw = {"task": "tybalt", "data": {"n_genes": 200},
           "model": {"latent_dim": 8},
           "trainer": {"max_epochs": 6, "progress": False, "device": "cpu", "fid_slices": 0, "val_every": 3,
                       "log_seconds": 0, **trainer},
           "tracking": {"register_model": False}}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_train_infer_evaluate_on_the_phantom_table(tmp_path, capsys):
    table = tmp_path / "expression"
    write_expression(table, make_expression(seed=2, n_samples=120, n_genes=400))
    cfg = _config(tmp_path / "tybalt.yaml")
    assert main(["train", "tybalt", "--config", str(cfg), f"data.root={table}"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    client = MlflowClient(resolve_tracking_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    beta = [m.value for m in client.get_metric_history(run_id, "train/beta")]
    assert beta == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # one value per epoch
    for name in ("train/recon", "train/kl", "val/recon_bce", "val/kl", "val/loss", "val/knn_accuracy",
                 "val/pca_knn_accuracy"):
        assert name in run.data.metrics, name
    assert not any(k.startswith("val/psnr") or k.startswith("val/fid") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert "samples/epoch_003.png" in artifacts and "samples/epoch_006.png" in artifacts

    # infer on a new table: its columns in another order, extra genes, and fewer samples
    ids, genes = [f"new{i}" for i in range(5)], make_expression(seed=2, n_genes=400)["genes"]
    values = make_expression(seed=9, n_samples=5, n_genes=400)["expression"]
    frame = pd.DataFrame(values, index=ids, columns=genes)[genes[::-1]].assign(EXTRA=1.0)
    write_table(tmp_path / "new.tsv", ids, list(frame.columns), frame.to_numpy())
    out = tmp_path / "out"
    assert main(["infer", "tybalt", "--run", run_id, "--input", str(tmp_path / "new.tsv"), "--output", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "latent.tsv"), str(out / "reconstruction.tsv")]
    latent = pd.read_csv(out / "latent.tsv", sep="\t", index_col=0)
    assert list(latent.index) == ids and list(latent.columns) == [f"z{j}" for j in range(1, 9)]
    assert (latent.to_numpy() >= 0).all()  # the reference encoder's ReLU
    recon = pd.read_csv(out / "reconstruction.tsv", sep="\t", index_col=0)
    assert list(recon.index) == ids and recon.shape == (5, 200) and set(recon.columns) <= set(genes)
    assert recon.to_numpy().min() >= 0  # back in the input's units (expression >= 0), not [0, 1] alone
    assert recon.to_numpy().max() > 1.5
    # a second run into the same folder: refused, naming the table, nothing replaced (issue 24)
    stamp = (out / "latent.tsv").stat().st_mtime_ns
    args = ["infer", "tybalt", "--run", run_id, "--input", str(tmp_path / "new.tsv"), "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "latent.tsv" in err[0] and "--overwrite" in err[0]
    assert (out / "latent.tsv").stat().st_mtime_ns == stamp
    assert main([*args, "--overwrite"]) == 0
    capsys.readouterr()

    # the same latent as the model gives directly, in the same row order
    from medgen.engine import load_task

    model, data, _, _ = load_task(run_id, device="cpu")
    x, _ = data.preprocess(tmp_path / "new.tsv")
    with torch.no_grad():
        np.testing.assert_allclose(latent.to_numpy(), model.eval().infer(x)["latent"].numpy(), rtol=1e-5, atol=1e-6)

    assert main(["evaluate", "tybalt", "--run", run_id, "--data", str(table), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_samples"] == 120
    assert 0 <= result["metrics"]["knn_accuracy"] <= 1 and result["metrics"]["loss"] > 0

    # bad input: none of the fitted genes, and a table of one sample to train on
    write_table(tmp_path / "other.tsv", ids, [f"X{j}" for j in range(7)], np.ones((5, 7)))
    assert main(["infer", "tybalt", "--run", run_id, "--input", str(tmp_path / "other.tsv"),
                 "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.tsv" in err[0] and "200 of the 200 genes the model uses are missing" in err[0]
    assert not (tmp_path / "o2").exists()
    (tmp_path / "one").mkdir()
    write_table(tmp_path / "one" / "expression.tsv", ["s1"], genes[:10], np.ones((1, 10)))
    assert main(["train", "tybalt", "--config", str(cfg), f"data.root={tmp_path / 'one'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expression.tsv" in err[0] and "1 sample(s); at least 2 needed" in err[0]


def test_dicom_output_is_refused_for_a_table_model(tmp_path, capsys):
    assert main(["infer", "tybalt", "--run", "x.pt", "--input", "t.tsv", "--output", "o", "--dicom"]) == 2
    assert "--dicom" in capsys.readouterr().err

