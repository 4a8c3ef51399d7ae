import numpy as np
import pytest
import torch
from matplotlib.image import imread
from monai.data import MetaTensor

from medgen.viz import save_curves, save_overlay, save_scatter, save_slice_grid
from medgen.viz._figure import plane


def _head(size=24):
    """An (X, Y, Z) RAS volume: grey body, bright anterior (high Y) and superior (high Z) slabs."""
    v = np.zeros((size, size, size), np.float32)
    v[4:-4, 4:-4, 4:-4] = 0.3
    v[4:-4, -8:-4, 4:-4] = 1.0
    v[4:-4, 4:-4, -8:-4] = 1.0
    return v


def _brightness_top_vs_bottom(png, row, col, cell=250):
    panel = png[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell, :3].mean(-1)
    return panel[: cell // 2].mean(), panel[cell // 2:].mean()


def test_slice_grid_size_rows_and_orientation(tmp_path):
    v = _head()
    out = save_slice_grid(tmp_path / "grid.png", {"input": v, "output": torch.from_numpy(v)[None, None],
                                                 "target": v * 0.5}, title="epoch 1")
    png = imread(out)
    assert png.shape[:2] == (3 * 250, 3 * 250)          # 3 rows (axial/coronal/sagittal) x 3 columns
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]   # no temp file left behind
    # axial: anterior (marker) at the top; coronal and sagittal: superior (marker) at the top
    for row in range(3):
        top, bottom = _brightness_top_vs_bottom(png, row, 0)
        assert top > bottom


def test_plane_orientation_of_ras_axes():
    v = np.zeros((4, 5, 6))
    v[3, 4, 5] = 1.0     # right, anterior, superior corner
    axial, _ = plane(v, (1, 1, 1), "axial", index=5)
    assert axial.shape == (5, 4) and axial[4, 3] == 1.0     # rows = Y (origin lower), cols = X
    sag, _ = plane(v, (1, 1, 1), "sagittal", index=3)
    assert sag.shape == (6, 5) and sag[5, 4] == 1.0         # rows = Z, cols = Y


def test_slice_grid_2d_is_one_row_and_uses_spacing(tmp_path):
    out = save_slice_grid(tmp_path / "g2.png", {"a": np.random.rand(16, 12), "b": np.random.rand(16, 12, 1)})
    assert imread(out).shape[:2] == (250, 2 * 250)
    mt = MetaTensor(torch.rand(8, 8, 8), affine=torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0])))
    out = save_slice_grid(tmp_path / "g3.png", {"ct": mt}, value_range=(0, 1))
    assert imread(out).shape[:2] == (3 * 250, 250)


def test_overlay_png(tmp_path):
    img = _head()
    heat = np.zeros_like(img)
    heat[10:14, 10:14, 10:14] = 1.0
    out = save_overlay(tmp_path / "ov.png", img, heat, threshold=0.5, title="anomaly")
    png = imread(out)
    assert png.shape[:2] == (250, 3 * 250)
    assert png[..., :3].std() > 0.05
    out2 = save_overlay(tmp_path / "ov2.png", img[:, :, 12], heat[:, :, 12])
    assert imread(out2).shape[:2] == (250, 250)
    with pytest.raises(ValueError):
        save_overlay(tmp_path / "bad.png", img, heat[:-1])


def test_overlay_planes_cross_the_largest_flagged_region_not_a_lone_peak():
    from medgen.viz.overlay import focus

    heat = np.zeros((30, 30, 30), np.float32)
    heat[3, 4, 5] = 10.0  # one hot voxel (noise at the skull, say)
    heat[18:24, 12:16, 20:26] = 2.0  # the lesion: larger, less extreme
    assert focus(heat, threshold=1.0) == (20, 13, 22)
    assert focus(heat) != (3, 4, 5)  # without a threshold: the smoothed peak, which the lone voxel loses


def test_overlay_has_side_letters_on_black(tmp_path):
    img = _head()
    heat = np.zeros_like(img)
    heat[10:14, 10:14, 10:14] = 1.0
    png = imread(save_overlay(tmp_path / "ov.png", img, heat, threshold=0.5))
    assert (png[2, 2, :3] < 0.05).all()  # the corner is black, not white


def test_curves_and_scatter(tmp_path):
    c = save_curves(tmp_path / "c.png", {"train/loss": [3, 2, 1], "val": ([0, 2], [2.5, 1.5])}, log_y=True)
    s = save_scatter(tmp_path / "s.png", np.random.rand(20, 2), labels=[0, 1] * 10)
    assert imread(c).shape[:2] == (400, 400)
    assert imread(s).shape[:2] == (400, 400)
    # A kept checkpoint (star) and a phase start (dotted line) change the picture.
    curves = {"val": ([0, 1, 2], [1.0, 3.0, 2.0])}
    plain = imread(save_curves(tmp_path / "p.png", curves))
    marked = imread(save_curves(tmp_path / "m.png", curves, points={"best.pt": (1, 3.0)}, vlines={"D joins": 0.5}))
    changed = np.abs(plain[..., :3].astype(float) - marked[..., :3].astype(float)).max(-1) > 0.1
    assert plain.shape == marked.shape and changed.mean() > 0.005  # star + line + legend entries
