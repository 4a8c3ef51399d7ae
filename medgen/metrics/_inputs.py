"""Shared input handling for the metrics: numpy or torch, batched or not, one layout out.

Layout rule (documented once, used by every metric):
  * ``spatial_dims`` given: ``ndim == spatial_dims`` is one unbatched image, ``spatial_dims + 1``
    is one image with channels ``(C, *spatial)``, ``spatial_dims + 2`` is a batch ``(B, C, *spatial)``;
  * ``spatial_dims`` not given: ndim 2 or 3 is one unbatched image ``(*spatial)``, ndim 4 or 5 is a
    batch ``(B, C, *spatial)`` (2D or 3D).
Everything returns a torch tensor of shape ``(B, C, *spatial)`` on the input's device.
"""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(x, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """A plain torch tensor (MetaTensor metadata dropped) in ``dtype`` (None keeps the dtype)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if hasattr(x, "as_tensor"):  # monai MetaTensor -> plain tensor, cheaper ops, no meta tracking
        x = x.as_tensor()
    x = x.detach()
    return x if dtype is None else x.to(dtype)


def infer_spatial_dims(ndim: int) -> int:
    if ndim in (2, 3):
        return ndim
    if ndim in (4, 5):
        return ndim - 2
    raise ValueError(f"expected a 2D/3D image (*spatial) or a batch (B, C, *spatial); got {ndim} dims")


def to_batch(x, spatial_dims: int | None = None, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """``x`` as a ``(B, C, *spatial)`` tensor following the module's layout rule."""
    t = as_tensor(x, dtype)
    if spatial_dims is None:
        spatial_dims = infer_spatial_dims(t.ndim)
    extra = t.ndim - spatial_dims
    if extra == 0:
        return t[None, None]
    if extra == 1:
        return t[None]
    if extra == 2:
        return t
    raise ValueError(f"cannot read a tensor of shape {tuple(t.shape)} as {spatial_dims}D images")


def paired(pred, target, mask=None, spatial_dims: int | None = None, dtype=torch.float64):
    """pred, target (and mask, broadcast to them as bool) as ``(B, C, *spatial)`` tensors."""
    p = to_batch(pred, spatial_dims, dtype)
    t = to_batch(target, spatial_dims, dtype).to(p.device)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    m = None
    if mask is not None:
        m = to_batch(mask, p.ndim - 2, dtype=None).to(p.device).bool()
        try:
            m = torch.broadcast_to(m, p.shape)
        except RuntimeError as err:
            raise ValueError(f"mask of shape {tuple(m.shape)} does not fit images {tuple(p.shape)}") from err
    return p, t, m


def per_sample_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over all but the batch dimension, inside ``mask`` when given (NaN for an empty mask)."""
    flat = values.reshape(values.shape[0], -1)
    if mask is None:
        return flat.mean(dim=1)
    m = mask.reshape(mask.shape[0], -1).to(flat.dtype)
    return (flat * m).sum(dim=1) / m.sum(dim=1)  # 0/0 -> nan: an empty mask has no value


def batch_mean(per_sample: torch.Tensor) -> float:
    """Mean over the batch, ignoring samples whose value is NaN (e.g. an empty mask)."""
    v = per_sample[~torch.isnan(per_sample)]
    return float(v.mean()) if v.numel() else float("nan")
