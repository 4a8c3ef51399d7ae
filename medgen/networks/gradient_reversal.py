"""Gradient reversal layer (Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", ICML 2015; Ganin et al., JMLR 2016).

Identity in the forward pass; in the backward pass the gradient is multiplied by ``-λ``. Put
between a feature extractor and a domain classifier, one backward pass then trains the
classifier to tell the domains apart while pushing the features to make them indistinguishable
(the extractor descends the task loss and *ascends* the domain loss, scaled by λ). Kamnitsas
et al. (IPMI 2017) use it to adapt a lesion segmenter across MR scanners. MONAI has none.
"""

from __future__ import annotations

import torch
from torch import nn


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)  # a view: autograd sees a new node, so backward below runs

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambda_ * grad, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; its gradient multiplied by ``-lambda_`` on the way back."""
    return _GradientReversal.apply(x, lambda_)


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; ``lambda_`` may be changed between steps (a schedule)."""

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_:g}"
