"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper the samplers need not know.

For a network trained with its condition sometimes dropped to a null condition, the guided output
is out_u + w (out_c - out_u) (Ho & Salimans 2022, eq. 6, written with w = 1 + their w): w = 1 is
the plain conditional model, w = 0 the unconditional one, w > 1 pushes samples further toward the
condition. The combination is linear in the network's output, so it holds for eps, x0 and v
prediction alike (each is linear in the output at a fixed x_t).
"""

from __future__ import annotations

import torch
from torch import nn


class Guided(nn.Module):
    """denoiser(x, t, cond) -> out_u + scale (out_c - out_u), with out_u = denoiser(x, t, null).

    null: (cond_dim,) the null condition. One batched call evaluates both branches (2B inputs), so
    each sample sees exactly the computation it would alone. scale == 1 calls the network once.
    """

    def __init__(self, denoiser: nn.Module, null: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.denoiser, self.scale = denoiser, float(scale)
        self.register_buffer("null", null.reshape(1, -1), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None or self.scale == 1.0:
            return self.denoiser(x, t, cond)
        batch = x.shape[0]
        cond = cond.to(x.device, x.dtype).reshape(-1, self.null.shape[1]).expand(batch, -1)
        t = t.expand(batch) if t.ndim == 0 else t
        both = self.denoiser(torch.cat((x, x)), torch.cat((t, t)), torch.cat((cond, self.null.to(x.dtype).expand(batch, -1))))
        out_c, out_u = both[:batch], both[batch:]
        return out_u + self.scale * (out_c - out_u)
