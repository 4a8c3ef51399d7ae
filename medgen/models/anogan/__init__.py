"""AnoGAN / f-AnoGAN in one place: the model (:mod:`.model`, registered as ``anogan``) and the
scoring of whole volumes with it (:mod:`.scoring`). The batch loop behind ``medgen score`` (many
scans to a CSV, maps and overlays) is :mod:`medgen.commands.score_batch`."""

from medgen.models.anogan.model import AnoGAN

__all__ = ["AnoGAN"]
