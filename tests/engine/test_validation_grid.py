from medgen.engine.validation import grid_order


def test_grids_read_input_output_target():
    pet = {"prediction": 1, "target": 2, "input": 3}  # pet-cgan's validation_step order
    assert grid_order(pet, {"": ("prediction", "target"), "lowdose_": ("input", "target")}) == ["input", "prediction", "target"]
    toy = {"source": 1, "prediction": 2, "target": 3}
    assert grid_order(toy, {"": ("prediction", "target")}) == ["source", "prediction", "target"]
