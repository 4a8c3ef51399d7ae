"""One training step of every registered model, in 2D and 3D: the contract DESIGN.md promises.

A new model adds its smallest settings and batch to TINY; the first test fails until it does.
"""

import pytest
import torch

from medgen.models.registry import available_tasks, get_model_class

# task -> (model settings, batch keys, channels per key, patch side)
TINY = {
    "pet-cgan": ({"channels": [4, 8], "d_channels": 4, "d_layers": 1}, ("source", "target"), 16),
    "eagan": ({"channels": [4, 8], "d_channels": 4, "d_layers": 1, "dropout": 0.0}, ("source", "target"), 16),
    "anogan": ({"latent_dim": 8, "generator_channels": [8, 4], "discriminator_channels": [4, 8], "n_critic": 1},
               ("image",), 16),
    "cyclegan": ({"ngf": 4, "n_blocks": 1, "ndf": 4, "d_layers": 1}, ("A", "B"), 16),
    "dann-seg": ({"channels": [4, 8, 8], "num_res_units": 1, "classifier_channels": [4]},
                 ("image", "label", "target_image"), 16),
}


# table models: task -> (model settings, features per sample)
TINY_TABLES = {"tybalt": ({"latent_dim": 4}, 12)}


def test_every_registered_model_has_tiny_settings():
    assert set(available_tasks()) <= set(TINY) | set(TINY_TABLES)


@pytest.mark.parametrize("task", sorted(TINY_TABLES))
def test_one_training_step_of_a_table_model_changes_the_weights(task):
    settings, features = TINY_TABLES[task]
    cls = get_model_class(task)
    assert cls.output_kind == "table" and not cls.metric_pairs
    torch.manual_seed(0)
    model = cls(in_features=features, **settings)
    model.epoch = 1
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    logs = model.training_step({"x": torch.rand(6, features)}, 0)
    assert logs and all(torch.isfinite(torch.tensor(float(v))) for v in logs.values()), logs
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if k in before)
    model.eval()
    out = model.infer(torch.rand(3, features))
    assert set(out) == set(cls.table_outputs) and all(v.shape[0] == 3 and torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("task", sorted(TINY))
def test_one_training_step_changes_the_weights(task, dims):
    settings, keys, side = TINY[task]
    cls = get_model_class(task)
    import inspect

    if "spatial_dims" in inspect.signature(cls).parameters:
        settings = {**settings, "spatial_dims": dims}
    torch.manual_seed(0)
    model = cls(**settings)
    model.roi_size = (side,) * dims  # what build_task sets from data.patch_size
    # images in model space [-1, 1]; label maps ("label", "target_label") as class indices 0/1
    batch = {k: (torch.rand((2, 1) + (side,) * dims) > 0.7).float() if k.endswith("label")
             else torch.rand((2, 1) + (side,) * dims) * 2 - 1 for k in keys}
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    logs = model.training_step(batch, 0)
    assert logs and all(torch.isfinite(torch.tensor(float(v))) for v in logs.values()), logs
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed, "no weight changed"
    model.eval()
    out = model.infer(torch.rand((1, 1) + (2 * side,) * dims) * 2 - 1)
    assert out.shape[2:] == (2 * side,) * dims and torch.isfinite(out).all()
