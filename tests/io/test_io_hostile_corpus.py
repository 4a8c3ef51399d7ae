"""The generated corpus of hostile inputs (tests/io/hostile, issue 19's classes) through
`medgen info`, `medgen convert` and the scoring loop, in-process. A fixed stratified sample of
about 50 runs by default; the whole corpus (~600) with ``pytest --hostile-full`` (marked slow).
Each case declares "refuse" (one line naming the file, exit 2, nothing written) or "read";
``hostile.judge`` decides, and benchmarks/hostile_corpus.py tallies the same verdicts."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from hostile import CLEAN, PINNED, corpus, judge, sample
from pydicom.data import get_testdata_file

from medgen.cli import main

CASES = corpus()
SAMPLE = sample(CASES)
REST = [c for c in CASES if c not in SAMPLE]


def _verdicts(case, tmp_path, capsys) -> dict[str, str]:
    src = tmp_path / "in"
    src.mkdir()
    with warnings.catch_warnings():  # pydicom's notes on the lies the builders write
        warnings.simplefilter("ignore")
        path = case.build(src)
    capsys.readouterr()  # what building the case printed
    verdicts = {}
    for verb in ("info", "convert"):
        out_dir = tmp_path / f"out_{verb}"
        out_dir.mkdir()
        argv = [verb, str(path)] + ([str(out_dir / "o.nii.gz")] if verb == "convert" else [])
        code = main(argv)
        err = capsys.readouterr().err
        verdict = judge(case, path, verb, code, err, out_dir if verb == "convert" else None)
        verdicts[verb] = verdict if verdict == CLEAN else f"{verdict}: exit {code}, stderr {err.strip()!r}"
    return verdicts


@pytest.mark.parametrize("case", SAMPLE, ids=lambda c: c.id)
def test_hostile_sample(case, tmp_path, capsys):
    assert _verdicts(case, tmp_path, capsys) == {"info": CLEAN, "convert": CLEAN}


@pytest.mark.slow
@pytest.mark.hostile_full
@pytest.mark.parametrize("case", REST, ids=lambda c: c.id)
def test_hostile_full(case, tmp_path, capsys):
    assert _verdicts(case, tmp_path, capsys) == {"info": CLEAN, "convert": CLEAN}


def test_the_sample_covers_every_class_and_the_corpus_is_whole():
    assert {c.klass for c in SAMPLE} == {c.klass for c in CASES}
    assert 40 <= len(SAMPLE) <= 60 and len(CASES) >= 450
    assert {c.expect for c in SAMPLE} == {"refuse", "read"}
    assert set(PINNED) <= {c.id for c in SAMPLE}  # a renamed case must not drop out of CI unseen


def _nifti(path):
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(path))
    return path


def test_padding_short_of_a_frame_is_still_read():
    from medgen.io import read

    assert tuple(read(get_testdata_file("MR_small_padded.dcm", download=False)).shape) == (64, 64, 1)


@pytest.mark.parametrize("dtype, stored", [(np.int64, np.int16), (np.uint64, np.int16)])
def test_convert_stores_64_bit_integers_in_a_type_nifti_readers_take(dtype, stored, tmp_path, capsys):
    src = tmp_path / "labels.nii.gz"
    data = np.arange(4 * 4 * 4, dtype=dtype).reshape(4, 4, 4)
    img = nib.Nifti1Image(data, np.eye(4), dtype=dtype)
    nib.save(img, str(src))
    assert main(["convert", str(src), str(tmp_path / "o.nii.gz")]) == 0
    out = nib.load(str(tmp_path / "o.nii.gz"))
    assert out.get_data_dtype() == stored and np.array_equal(np.asarray(out.dataobj), data)
    big = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(data * 10**6, np.eye(4), dtype=dtype), str(big))
    assert main(["convert", str(big), str(tmp_path / "o2.nii.gz")]) == 0
    assert nib.load(str(tmp_path / "o2.nii.gz")).get_data_dtype() in (np.int32, np.uint32)


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_convert_to_an_impossible_output_is_one_line(where, tmp_path, capsys):
    src = _nifti(tmp_path / "a.nii.gz")
    if where == "folder":
        out = tmp_path / "taken.nii.gz"
        out.mkdir()
    else:
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "o.nii.gz"
    assert main(["convert", str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and out.name in err and "Traceback" not in err, err



# --- MetaImage: a sound file still reads (its lies are in the corpus) -------------------------
def _mha(tmp_path, name, header: dict, data: bytes):
    p = tmp_path / f"{name}.mha"
    fields = {"ObjectType": "Image", "NDims": "3", "DimSize": "8 8 8", "ElementType": "MET_SHORT",
              "ElementSpacing": "1 1 1", "Offset": "0 0 0", "BinaryDataByteOrderMSB": "False", **header,
              "ElementDataFile": "LOCAL"}
    p.write_bytes("".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None).encode() + data)
    return p


RAW = np.arange(512, dtype=np.int16).tobytes()


def test_a_sound_metaimage_still_reads(tmp_path):
    from medgen.io import read

    v = read(_mha(tmp_path, "fine", {}, RAW))
    assert tuple(v.shape) == (8, 8, 8) and float(v.max()) == 511
    packed = __import__("zlib").compress(RAW)
    z = read(_mha(tmp_path, "fine_z", {"CompressedData": "True", "CompressedDataSize": str(len(packed))}, packed))
    assert float(z.max()) == 511



def _score_rows(cases, tmp_path, monkeypatch):
    """The scoring loop over ``cases`` with a stub model: reading, the map, the overlay and the
    error rows are medgen's own; only the anomaly score is made up."""
    import torch

    from medgen.commands.score_batch import score_paths
    from medgen.models.anogan import scoring

    monkeypatch.setattr(scoring, "score_volume", lambda model, data, volume, mode, mask=None, warn=None, polarity=None:
                        (0.5, torch.zeros(volume.shape)))

    class Model:
        thresholds = {"encoder": 1.0}

    paths = []
    for i, case in enumerate(cases):
        folder = tmp_path / f"c{i:03d}"
        folder.mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths.append(case.build(folder))
    maps = tmp_path / "maps"
    return paths, maps, score_paths(Model(), None, paths, mode="encoder", maps_dir=maps, progress=False)


def _check_score_rows(cases, paths, maps, rows):
    from medgen.errors import printable

    assert [r["path"] for r in rows] == [str(p) for p in paths]
    for case, path, row in zip(cases, paths, rows):
        expect, _ = case.expected("convert")  # scoring reads as convert does
        assert bool(row["score"]) != bool(row["error"]), (case.id, row)  # a score or an error, never both
        if expect == "refuse":
            assert printable(path.name) in row["error"] and "\n" not in row["error"], (case.id, row)
            assert "Traceback" not in row["error"] and not row["map"] and not row["overlay"], (case.id, row)
        else:
            assert row["error"] == "" and row["map"], (case.id, row)
    written = {p.name for p in maps.iterdir()}
    expected = {n for r in rows if r["map"] for n in (r["map"].rsplit("/", 1)[-1], r["overlay"].rsplit("/", 1)[-1])}
    assert written == expected  # nothing in --maps for an error row


def test_score_rows_of_the_sample(tmp_path, monkeypatch):
    cases = [c for c in SAMPLE if c.klass != "paths" or c.expect == "read"]
    _check_score_rows(cases, *_score_rows(cases, tmp_path, monkeypatch))


@pytest.mark.slow
@pytest.mark.hostile_full
def test_score_rows_of_the_whole_corpus(tmp_path, monkeypatch):
    cases = [c for c in CASES if c.klass != "paths" or c.expect == "read"]
    _check_score_rows(cases, *_score_rows(cases, tmp_path, monkeypatch))


