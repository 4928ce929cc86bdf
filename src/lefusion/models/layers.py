"""Building blocks of the denoiser: channel LayerNorm, time embedding, factorised ResNet block.

All tensors are (B, C, D, H, W) = (batch, channel, z, y, x) unless a docstring says otherwise; the
network keeps them in channels-last memory (B, D, H, W, C), where a norm over channels and a 1x1
convolution work on contiguous rows and mkldnn / cuDNN convolutions need no layout conversion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .norm import group_norm_silu


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis only, with a per-channel gain and no bias.

    x: (B, C, D, H, W) -> same shape. The variance is the biased one and eps sits inside the
    square root, as in the public release; computed by the fused `layer_norm` over the last
    axis of the channels-last layout.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1, 1))

    def last(self, tokens: torch.Tensor) -> torch.Tensor:
        """The same norm on (..., C) tokens (channels last): -> (..., C), contiguous."""
        return F.layer_norm(tokens, tokens.shape[-1:], self.gamma.view(-1), None, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class PreNormResidual(nn.Module):
    """x + fn(norm(x)): the wrapper every attention layer of the denoiser sits in.

    `fn.residual(x, norm, ...)` computes the whole expression, so that an attention layer can
    normalise, attend and add block by block.
    """

    def __init__(self, channels: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return self.fn.residual(x, self.norm, **kwargs)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer position encoding of the diffusion step (Vaswani et al. 2017, sec. 3.5).

    t: (B,) step indices (any real dtype) -> (B, dim) float32, sines then cosines; frequencies
    run geometrically from 1 to 1/10000 over dim/2 entries.
    """
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=t.device) * -step)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TimeEmbedding(nn.Module):
    """Step index -> embedding: sinusoid of width `dim`, then Linear-GELU-Linear to `4 * dim`.

    t: (B,) -> (B, 4 * dim).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, 4 * dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = self.linear1(sinusoidal_embedding(t, self.dim).to(self.linear1.weight.dtype))
        return self.linear2(F.gelu(h))


def inplane(x: torch.Tensor, conv: nn.Conv3d | nn.ConvTranspose3d) -> torch.Tensor:
    """A (1, kh, kw) convolution (or transposed one) as a 2-D one over the B * D slices.

    (B, Cin, D, H, W) -> (B, Cout, D, H', W'). In channels-last memory the slices are a free view,
    (B * D, Cin, H, W) channels-last; the result is a view too. Why: torch runs small 3-D
    convolutions without mkldnn (`slow_conv3d`, 20-50x slower at the demo size), 2-D ones with it.
    """
    b, _, d, h, w = x.shape
    slices = x.transpose(1, 2).reshape(b * d, -1, h, w)
    weight = conv.weight.squeeze(2)
    if isinstance(conv, nn.ConvTranspose3d):
        out = F.conv_transpose2d(slices, weight, conv.bias, conv.stride[1:], conv.padding[1:])
    else:
        out = F.conv2d(slices, weight, conv.bias, conv.stride[1:], conv.padding[1:])
    return out.reshape(b, d, *out.shape[1:]).transpose(1, 2)


def pointwise(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """A 1x1x1 convolution as one matrix product over channels-last rows: (B, Cin, D, H, W) -> (B, Cout, D, H, W)."""
    out = F.linear(x.permute(0, 2, 3, 4, 1), conv.weight.flatten(1), conv.bias)
    return out.permute(0, 4, 1, 2, 3)


class ConvNormAct(nn.Module):
    """In-plane (1x3x3) convolution, GroupNorm, optional FiLM scale/shift, SiLU.

    The convolution never mixes slices: depth is handled by the depth attention layers only.
    GroupNorm, FiLM and SiLU are one pass (`norm.group_norm_silu`).
    """

    def __init__(self, dim_in: int, dim_out: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, (1, 3, 3), padding=(0, 1, 1))
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, Cin, D, H, W); scale_shift: two (B, Cout) tensors -> (B, Cout, D, H, W)."""
        return group_norm_silu(inplane(x, self.conv), self.norm, scale_shift)


class ResnetBlock(nn.Module):
    """Two ConvNormAct layers with a residual connection; the embedding modulates the first one.

    x: (B, dim_in, D, H, W), emb: (B, emb_dim) -> (B, dim_out, D, H, W).
    `emb` is the time embedding concatenated with the histogram condition.
    """

    def __init__(self, dim_in: int, dim_out: int, emb_dim: int | None, groups: int) -> None:
        super().__init__()
        self.emb_proj = nn.Linear(emb_dim, 2 * dim_out) if emb_dim is not None else None
        self.block1 = ConvNormAct(dim_in, dim_out, groups)
        self.block2 = ConvNormAct(dim_out, dim_out, groups)
        self.skip = nn.Conv3d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        scale_shift = None
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this ResnetBlock is conditioned: pass the embedding")
            scale_shift = self.emb_proj(F.silu(emb)).chunk(2, dim=1)
        h = self.block2(self.block1(x, scale_shift))
        # h is a fresh tensor that backward does not need (SiLU keeps its input), so the residual
        # can be added in place.
        return h.add_(pointwise(x, self.skip) if isinstance(self.skip, nn.Conv3d) else x)


def downsample(channels: int) -> nn.Module:
    """Halve H and W (never D): strided 1x4x4 convolution."""
    return nn.Conv3d(channels, channels, (1, 4, 4), (1, 2, 2), (0, 1, 1))


def upsample(channels: int) -> nn.Module:
    """Double H and W (never D): transposed 1x4x4 convolution."""
    return nn.ConvTranspose3d(channels, channels, (1, 4, 4), (1, 2, 2), (0, 1, 1))
