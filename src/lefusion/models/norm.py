"""GroupNorm, FiLM and SiLU as one operation on channels-last activations.

`group_norm_silu(x, norm, scale_shift) = silu(GroupNorm(x) * (1 + scale) + shift)`, the tail of
every convolution block. GroupNorm's own affine map and FiLM's are both per (sample, channel), so
the whole expression is silu(x * a + b) with a, b computed from the group statistics:

    a = rstd_g * gamma * (1 + scale),   b = (beta - mean_g * rstd_g * gamma) * (1 + scale) + shift.

Why not `F.group_norm` on CPU: its channels-last kernel accumulates sum and sum of squares in
float32 one value after another and takes var = E[x^2] - E[x]^2, which loses about 1e-6 relative
on centred data and 3e-5 on data whose mean is a few standard deviations (measured, torch 2.13).
Here the statistics are two-pass (centred sums, combined in float64), as accurate as
the contiguous-layout kernel the public network runs on. On other devices (and under
`torch.compile`, whose kernels compute Welford statistics) `F.group_norm` is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Values per block in CPU inference: 8 M floats (32 MB), one LIDC level-0 activation. Cache-sized blocks
# (1 MB) were slower on a shared 2-core machine (docs/benchmarks.md).
BLOCK_VALUES = 1 << 23


def _affine(mean: torch.Tensor, var: torch.Tensor, norm: nn.GroupNorm, scale_shift, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Group mean, var (B, G) -> per-(sample, channel) a, b (B, C) of silu(x * a + b)."""
    b, g = mean.shape
    rstd = torch.rsqrt(var + norm.eps)
    gamma = norm.weight.to(mean.dtype).view(g, -1)
    a = (rstd[..., None] * gamma).reshape(b, -1)
    shift = (norm.bias.to(mean.dtype).view(g, -1) - (mean * rstd)[..., None] * gamma).reshape(b, -1)
    if scale_shift is not None:
        gain = scale_shift[0].to(mean.dtype) + 1
        a, shift = a * gain, shift * gain + scale_shift[1].to(mean.dtype)
    return a.to(dtype), shift.to(dtype)


def _blockwise_stats(tokens: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, N, C) -> group mean and biased variance (B, G), float64.

    Per block of rows: channel sums and centred sums of squares (two passes); blocks are merged
    with Chan et al.'s pairwise formula.
    """
    b, n, c = tokens.shape
    step = max(1, BLOCK_VALUES // c)
    mean = torch.zeros(b, c, dtype=torch.float64)
    m2 = torch.zeros(b, c, dtype=torch.float64)
    for i in range(b):
        count = 0
        for s in range(0, n, step):
            block = tokens[i, s : s + step]
            k = block.shape[0]
            block_mean = block.sum(0) / k
            block_m2 = (block - block_mean).square_().sum(0).double()
            delta = block_mean.double() - mean[i]
            total = count + k
            mean[i] += delta * (k / total)
            m2[i] += block_m2 + delta.square() * (count * k / total)
            count = total
    # Channels -> groups: the same pairwise merge over the channels of a group (equal counts).
    mean_c, m2_c = mean.view(b, groups, -1), m2.view(b, groups, -1)
    group_mean = mean_c.mean(-1)
    group_var = (m2_c.sum(-1) + n * (mean_c - group_mean[..., None]).square().sum(-1)) / (n * mean_c.shape[-1])
    return group_mean, group_var


def group_norm_silu(x: torch.Tensor, norm: nn.GroupNorm, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """silu(GroupNorm(x) * (1 + scale) + shift): x (B, C, D, H, W); scale, shift (B, C) -> (B, C, D, H, W).

    In CPU inference x (a fresh convolution output) is overwritten and returned.
    """
    b, c = x.shape[:2]
    g = norm.num_groups
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        if scale_shift is None:
            return F.silu(F.group_norm(x, g, norm.weight, norm.bias, norm.eps))
        if b == 1:  # fold FiLM into GroupNorm's own affine map: one pass
            gain = scale_shift[0][0] + 1
            return F.silu(F.group_norm(x, g, norm.weight * gain, norm.bias * gain + scale_shift[1][0], norm.eps))
        scale, shift = (u[:, :, None, None, None] for u in scale_shift)
        return F.silu(torch.addcmul(shift, F.group_norm(x, g, norm.weight, norm.bias, norm.eps), scale + 1))
    tokens = x.permute(0, 2, 3, 4, 1).reshape(b, -1, c)  # a view for channels-last x
    if torch.is_grad_enabled() or x.numel() <= BLOCK_VALUES:  # whole batch at once, two-pass
        group_mean = tokens.mean(1).view(b, g, -1).mean(-1)  # (B, G)
        centred = tokens - group_mean.repeat_interleave(c // g, dim=1)[:, None, :]
        var = centred.square().mean(1).view(b, g, -1).mean(-1)
        a, shift = _affine(torch.zeros_like(group_mean), var, norm, scale_shift, x.dtype)
        # differentiable out of place; in no-grad the centred copy is overwritten
        out = torch.addcmul(shift[:, None, :], centred, a[:, None, :], out=None if torch.is_grad_enabled() else centred)
        out = F.silu(out, inplace=not torch.is_grad_enabled())
        return out.view(b, *x.shape[2:], c).permute(0, 4, 1, 2, 3)
    if not x.is_contiguous(memory_format=torch.channels_last_3d):
        x = x.contiguous(memory_format=torch.channels_last_3d)
        tokens = x.permute(0, 2, 3, 4, 1).reshape(b, -1, c)
    a, shift = _affine(*_blockwise_stats(tokens, g), norm, scale_shift, x.dtype)
    step = max(1, BLOCK_VALUES // c)
    for i in range(b):
        for s in range(0, tokens.shape[1], step):
            block = tokens[i, s : s + step]
            F.silu(torch.addcmul(shift[i], block, a[i], out=block), inplace=True)
    return x
