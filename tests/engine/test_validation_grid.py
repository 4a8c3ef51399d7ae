from medgen.engine.validation import grid_order


def test_grids_read_input_output_target():
    pet = {"prediction": 1, "target": 2, "input": 3}  # pet-cgan's validation_step order
    assert grid_order(pet, {"": ("prediction", "target"), "lowdose_": ("input", "target")}) == ["input", "prediction", "target"]
    toy = {"source": 1, "prediction": 2, "target": 3}
    assert grid_order(toy, {"": ("prediction", "target")}) == ["source", "prediction", "target"]


def test_dann_seg_grids_cross_at_the_lesion(tmp_path, monkeypatch):
    """dann-seg's grid showed the mid-planes, which missed the lesion (issue 24): it crosses at
    the centre of the largest labelled region, as score's overlays do."""
    import torch

    import medgen.viz
    from medgen.engine.validation import evaluate_volumes
    from medgen.models.dann_seg import DANNSeg
    from medgen.viz.slices import grid_centre

    image = torch.full((1, 1, 24, 24, 24), -1.0)
    label = torch.zeros(1, 1, 24, 24, 24, dtype=torch.long)
    label[..., 3:6, 17:21, 2:4] = 1  # the big lesion, far from the mid-planes
    label[..., 20, 20, 20] = 1  # a lone voxel elsewhere
    model = DANNSeg(channels=(4, 8, 8), num_res_units=1, classifier_channels=(4,))
    model.roi_size = (16, 16, 16)
    seen = {}
    monkeypatch.setattr(medgen.viz, "save_slice_grid", lambda path, volumes, **kw: seen.update(kw, keys=list(volumes)))
    evaluate_volumes(model, [{"image": image, "label": label, "domain": torch.tensor([0])}], device=torch.device("cpu"),
                     grid_path=tmp_path / "g.png")
    x, y, z = seen["centre"]
    assert 3 <= x < 6 and 17 <= y < 21 and 2 <= z < 4
    # no label, no prediction above background: the mid-planes
    assert grid_centre({"label": torch.full((8, 8, 8), -1.0)}, ("label", "prediction"), -1.0) is None


def test_slice_grids_take_the_planes_through_a_given_voxel(tmp_path):
    import numpy as np

    from matplotlib.image import imread

    from medgen.viz import save_slice_grid

    volume = np.zeros((20, 20, 20), np.float32)
    volume[2, 3, 4] = 1.0  # only the planes through (2, 3, 4) show it
    mid = imread(save_slice_grid(tmp_path / "mid.png", {"v": volume}, value_range=(0, 1)))
    through = imread(save_slice_grid(tmp_path / "at.png", {"v": volume}, value_range=(0, 1), centre=(2, 3, 4)))
    assert (np.abs(through - mid) > 0.1).any()
