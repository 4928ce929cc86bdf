"""Attention layers of the denoiser.

- `DepthAttention`: softmax attention along z for every (y, x) column, with rotary position
  embedding (Su et al. 2021) on queries and keys and a learned T5-style relative position bias.
- `SpatialLinearAttention`: linear attention over (y, x) within each slice (Shen et al. 2021:
  softmax of queries over features, of keys over positions).
- `SpatialAttention`: full softmax attention over (y, x) within each slice (bottleneck only).

Inputs and outputs are (B, C, D, H, W). Softmax attention uses PyTorch's fused
`scaled_dot_product_attention`; scaling q before or after the (linear) rotary map is the same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def rotary_frequencies(rot_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """(rot_dim // 2,) angular frequencies theta^(-2i/rot_dim), i = 0 .. rot_dim/2 - 1."""
    return 1.0 / theta ** (torch.arange(0, rot_dim, 2)[: rot_dim // 2].float() / rot_dim)


def rotary_angles(seq_len: int, rot_dim: int, device: torch.device) -> torch.Tensor:
    """(seq_len, rot_dim) rotation angles; features are rotated in adjacent pairs (0,1), (2,3), ..."""
    positions = torch.arange(seq_len, device=device, dtype=torch.float32)
    angles = positions[:, None] * rotary_frequencies(rot_dim).to(device)[None, :]
    return angles.repeat_interleave(2, dim=-1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first `angles.shape[-1]` features of x (..., N, F) by position-dependent angles."""
    rot_dim = angles.shape[-1]
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    pairs = x_rot.unflatten(-1, (-1, 2))
    rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    angles = angles.to(x.dtype)
    x_rot = x_rot * angles.cos() + rotated_half * angles.sin()
    return torch.cat((x_rot, x_pass), dim=-1) if x_pass.shape[-1] else x_rot


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5 buckets (Raffel et al. 2020): exact for small offsets, log-spaced beyond.

    relative_position = key index - query index (any shape, int64) -> bucket ids of the same shape.
    """
    offset = -relative_position
    half = num_buckets // 2
    bucket = (offset < 0).long() * half
    offset = offset.abs()
    max_exact = half // 2
    log_ratio = torch.log(offset.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return bucket + torch.where(offset < max_exact, offset, far)


class RelativePositionBias(nn.Module):
    """Learned additive attention bias per (head, query, key) from the bucketed z offset."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 32) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.table = nn.Embedding(num_buckets, heads)

    def forward(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """-> (heads, seq_len, seq_len)."""
        pos = torch.arange(seq_len, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.table(buckets).permute(2, 0, 1)


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, L, 3 * heads * dh) -> q, k, v each (N, heads, L, dh)."""
    n, length, _ = qkv.shape
    return qkv.view(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, L, dh) -> (N, L, heads * dh)."""
    return x.transpose(1, 2).flatten(2)


class DepthAttention(nn.Module):
    """Self-attention along depth (z): every (b, y, x) column is a sequence of D tokens."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.rot_dim = min(32, dim_head)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """x: (B, C, D, H, W); position_bias: (heads, D, D); angles: (D, rot_dim) -> (B, C, D, H, W)."""
        b, c, d, h, w = x.shape
        tokens = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, d, c)
        q, k, v = _split_heads(self.to_qkv(tokens), self.heads)
        q, k = apply_rotary(q, angles), apply_rotary(k, angles)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=position_bias.to(q.dtype), scale=self.dim_head**-0.5)
        out = self.to_out(_merge_heads(out))
        return out.view(b, h, w, d, c).permute(0, 4, 3, 1, 2)


class SpatialAttention(nn.Module):
    """Full self-attention over the H*W positions of each slice (used at the bottleneck)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        tokens = x.permute(0, 2, 3, 4, 1).reshape(b * d, h * w, c)
        q, k, v = _split_heads(self.to_qkv(tokens), self.heads)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.dim_head**-0.5)
        out = self.to_out(_merge_heads(out))
        return out.view(b, d, h, w, c).permute(0, 4, 1, 2, 3)


class SpatialLinearAttention(nn.Module):
    """Linear attention over (y, x) within each slice; cost linear in H*W.

    Queries are normalised over features and keys over positions, so the (dh x dh) context
    k v^T replaces the (HW x HW) attention matrix.
    """

    def __init__(self, dim: int, heads: int, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Conv2d(dim, 3 * heads * dim_head, 1, bias=False)
        self.to_out = nn.Conv2d(heads * dim_head, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        # The 1x1 convolutions are applied as matmuls over (N, C, H*W): the same function, about
        # twice as fast on CPU as mkldnn's 1x1 conv. Weights keep their Conv2d shapes (published layout).
        slices = x.transpose(1, 2).reshape(b * d, c, h * w)
        qkv = torch.matmul(self.to_qkv.weight.flatten(1), slices)
        q, k, v = qkv.view(b * d, 3, self.heads, -1, h * w).unbind(1)  # (N, heads, dh, HW)
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = k @ v.transpose(-1, -2)  # (N, heads, dh_k, dh_v)
        out = context.transpose(-1, -2) @ q  # (N, heads, dh_v, HW)
        out = torch.matmul(self.to_out.weight.flatten(1), out.reshape(b * d, -1, h * w)) + self.to_out.bias[:, None]
        return out.view(b, d, c, h, w).transpose(1, 2)
