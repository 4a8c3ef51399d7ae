"""The data-module contract: what the engine and the CLI need from a task's data.

A data module is built from the config's ``data`` section (its constructor signature holds the
defaults) and turns a user's folder into datasets. The engine builds the DataLoaders itself
(so it can add distributed samplers); the module only says what the items are.

* ``setup()`` discovers the folder layout and makes a deterministic split by subject; errors
  name the folder/subject and what is wrong (``medgen.errors.InputError``). It does its work
  once: ``medgen.engine.train`` sets the data up before building the model, then the engine
  calls it again.
* ``train_dataset()`` yields dicts of tensors ``(C, *patch)`` (patches, random per epoch).
* ``val_dataset()`` / ``test_dataset()`` / ``all_dataset()`` yield whole volumes in model space, one per item
  (batched with batch size 1), with the same keys, plus ``"subject"`` (a string).
* ``preprocess(volume)`` maps one raw input volume (``medgen.io.read`` output) of the model's
  input kind into model space, returning ``(tensor (C, *spatial), state)``;
  ``postprocess(output, state)`` maps a model-space output back to the input's units and
  geometry (a MetaTensor that ``medgen.io.write`` can write over the input).

What ``setup()`` decides from the data travels with the run, so that ``infer``/``evaluate``/
``score`` work without the training folder:

* ``resolved_settings()`` -- constructor settings (e.g. ``spacing: auto`` as the chosen voxel
  size), written into the run's config;
* ``model_settings()`` -- model constructor arguments the data fixes (e.g. the number of genes
  kept): :func:`medgen.engine.train` sets the data up before it builds the model and saves them
  in the config's ``model`` section;
* ``state_dict()`` / ``load_state_dict()`` -- statistics fitted on the training split (e.g. the
  genes kept and their scaling), saved in every checkpoint (plain types and tensors, loadable
  with ``weights_only=True``). A module that holds a loaded state applies it to new data rather
  than fitting again.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class DataModule:
    batch_size: int = 1

    def setup(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the user before training starts (after ``setup()``): what was found
        and how it is split, e.g. ``12 subjects in DIR: 10 train / 2 validation``."""
        return ""

    def resolved_settings(self) -> dict[str, Any]:
        """Constructor settings that ``setup()`` decided from the data (e.g. ``spacing: auto``),
        as config values: the engine saves them with the run so inference reuses them."""
        return {}

    def model_settings(self) -> dict[str, Any]:
        """Model constructor arguments decided by the data (after ``setup()``)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What ``setup()`` fitted on the training split and inference needs."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (on a module that has not been set up)."""

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        raise NotImplementedError

    def test_dataset(self) -> Dataset:
        raise NotImplementedError

    def all_dataset(self) -> Dataset:
        """Whole volumes of every subject in the folder (``medgen evaluate``)."""
        raise NotImplementedError

    def preprocess(self, volume: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def postprocess(self, output: torch.Tensor, state: Any) -> torch.Tensor:
        raise NotImplementedError
