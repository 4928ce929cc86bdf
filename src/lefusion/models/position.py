"""Position encodings of the depth attention, and the channels-last token layout the network runs in.

- Rotary position embedding (Su et al. 2021) on queries and keys: features rotated in adjacent
  pairs (0,1), (2,3), ... by position-dependent angles.
- A learned T5-style relative position bias (Raffel et al. 2020) added to the attention logits.

Position tables depend only on the depth D, so they are computed once per (D, device) and reused
by every layer and every step of a sampling loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rotary_frequencies(rot_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """(rot_dim // 2,) angular frequencies theta^(-2i/rot_dim), i = 0 .. rot_dim/2 - 1."""
    return 1.0 / theta ** (torch.arange(0, rot_dim, 2)[: rot_dim // 2].float() / rot_dim)


def rotary_angles(seq_len: int, rot_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(seq_len, rot_dim) rotation angles; features are rotated in adjacent pairs (0,1), (2,3), ..."""
    positions = torch.arange(seq_len, device=device, dtype=torch.float32)
    angles = positions[:, None] * rotary_frequencies(rot_dim).to(device)[None, :]
    return angles.repeat_interleave(2, dim=-1)


def rotate_half(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pairs (a, b) along `dim` -> (-b, a): the 90-degree turn of the rotary map."""
    pairs = x.unflatten(dim, (-1, 2))
    dim = dim % x.ndim
    first, second = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    return torch.stack((-second, first), dim=dim + 1).flatten(dim, dim + 1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first `angles.shape[-1]` features of x (..., N, F) by position-dependent angles (N, rot_dim)."""
    rot_dim = angles.shape[-1]
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    angles = angles.to(x.dtype)
    x_rot = x_rot * angles.cos() + rotate_half(x_rot) * angles.sin()
    return torch.cat((x_rot, x_pass), dim=-1) if x_pass.shape[-1] else x_rot


class RotaryTable:
    """cos and sin of the rotary angles for one depth, padded to the full head width.

    cos, sin: (D, dim_head). Features past `rot_dim` get angle 0 (cos 1, sin 0), which leaves them
    exactly unchanged, so one formula `x * cos + rotate_half(x) * sin` covers rot_dim < dim_head.
    """

    def __init__(self, depth: int, rot_dim: int, dim_head: int, device: torch.device) -> None:
        angles = torch.zeros(depth, dim_head, device=device)
        angles[:, :rot_dim] = rotary_angles(depth, rot_dim, device)
        self.depth = depth
        self.cos = angles.cos()
        self.sin = angles.sin()


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
        self._buckets: dict[tuple[int, torch.device], torch.Tensor] = {}

    def forward(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """-> (1, heads, seq_len, seq_len): four dimensions, as the fused attention kernels want a mask."""
        key = (seq_len, torch.device(device))
        if key not in self._buckets:  # integer ids only: the learned values are looked up every call
            pos = torch.arange(seq_len, device=device)
            self._buckets[key] = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.table(self._buckets[key]).permute(2, 0, 1)[None]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) with channels-last strides (memory order B, D, H, W, C), copying only if needed.

    A one-channel tensor is the same memory in both orders; it gets channels-last strides by a view,
    so that a convolution on it also returns channels-last.
    """
    if x.shape[1] == 1 and x.is_contiguous():
        b, c, d, h, w = x.shape
        return x.as_strided(x.shape, (d * h * w, 1, h * w, w, 1))
    return x.contiguous(memory_format=torch.channels_last_3d)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, D, H*W, C); a view when x is channels-last, else a copy."""
    b, c, d, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).reshape(b, d, h * w, c)


def from_tokens(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, D, H*W, C) contiguous -> (B, C, D, H, W) channels-last view of the same memory."""
    b, d, _, c = t.shape
    return t.view(b, d, height, width, c).permute(0, 4, 1, 2, 3)
