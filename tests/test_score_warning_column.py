"""A scan unlike the training scans (a CT scored by a model of MR) says so in its CSV row's
``warning`` column, not on the terminal alone (issue 24), and the terminal's warning line is a
line of its own, not glued to the progress bar's."""

import csv

import numpy as np
import torch

from medgen.commands.score_batch import CSV_COLUMNS, score_paths
from medgen.data.volumes import Volumes
from medgen.io import write
from medgen.models.anogan import scoring


class Model:
    thresholds = {"encoder": 1.0}


def scans(tmp_path):
    ct = np.full((16, 16, 16), -1000.0, np.float32)  # a head CT in HU
    ct[3:13, 3:13, 3:13] = 40.0
    ct[6:9, 6:9, 6:9] = 1200.0
    mr = np.zeros((16, 16, 16), np.float32)  # an MR on the training scans' scale
    mr[3:13, 3:13, 3:13] = 400.0
    mr[6:9, 6:9, 6:9] = 800.0
    write(tmp_path / "ct.nii.gz", ct)
    write(tmp_path / "mr.nii.gz", mr)
    data = Volumes(tmp_path, key="t1", patch_size=(16, 16, 16), spacing=None)
    data.load_state_dict({"intensity_range": {"floor": 0.0, "low": 20.0, "median_high": 900.0, "max_high": 1600.0}})
    return [tmp_path / "mr.nii.gz", tmp_path / "ct.nii.gz"], data


def fake_scoring(monkeypatch):
    monkeypatch.setattr(scoring, "score_tensor", lambda model, x, mask, mode, progress=False, polarity=None,
                        coords=None: (0.5, torch.zeros_like(x), None))


def test_the_csv_has_a_warning_column_filled_for_the_unlike_scan_only(tmp_path, monkeypatch):
    fake_scoring(monkeypatch)
    paths, data = scans(tmp_path)
    out = tmp_path / "scores.csv"
    heard = []
    score_paths(Model(), data, paths, out_csv=out, mode="encoder", progress=False, warn=heard.append)
    with open(out, newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert list(rows[str(paths[0])]) == list(CSV_COLUMNS) and CSV_COLUMNS[-1] == "warning"
    assert rows[str(paths[0])]["warning"] == ""
    ct = rows[str(paths[1])]
    assert ct["score"] == "0.5" and ct["error"] == ""
    assert "different modality" in ct["warning"] and "\n" not in ct["warning"]
    assert heard == [f"{paths[1]}: {ct['warning']}"]  # the terminal hears the same, with the path


def test_the_warning_line_is_not_glued_to_the_bar(tmp_path, monkeypatch, capsys):
    fake_scoring(monkeypatch)
    paths, data = scans(tmp_path)
    warn = lambda line: print(f"medgen score: warning: {line}", file=__import__("sys").stderr)  # noqa: E731
    score_paths(Model(), data, paths, out_csv=None, mode="encoder", progress=True, warn=warn)
    err = capsys.readouterr().err
    at = err.index("medgen score: warning: ")
    assert at == 0 or err[at - 1] in "\r\n", repr(err[max(0, at - 80):at + 30])
