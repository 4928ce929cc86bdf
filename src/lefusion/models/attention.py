"""Attention layers of the denoiser, each applied as a pre-norm residual `x + attn(norm(x))`.

- `DepthAttention`: softmax attention along z for every (y, x) column, with rotary position
  embedding (Su et al. 2021) on queries and keys and a learned T5-style relative position bias.
- `SpatialLinearAttention`: linear attention over (y, x) within each slice (Shen et al. 2021:
  softmax of queries over features, of keys over positions).
- `SpatialAttention`: full softmax attention over (y, x) within each slice (bottleneck only).

Inputs and outputs are (B, C, D, H, W), run in channels-last memory (B, D, H, W, C), where the
tokens of every attention are rows of one matrix and the projections are plain matrix products
with no layout copies. Softmax attention is PyTorch's fused `scaled_dot_product_attention`.

Two reorderings of the public network's arithmetic (the same function; rounding differs at the
1e-7 level, see docs/benchmarks.md): the rotary map and the 1/sqrt(d) scale are linear, so where
tokens outnumber channels they are folded into per-depth query/key weights (R_z W x instead of
R_z (W x)); and linear attention scales its (d x d) context instead of the queries.

In CPU inference the residual is computed block by block of tokens (`BLOCK_TOKENS`), so that the
largest intermediate (the 12x wider qkv projection at level 0) is a quarter of its full size; the
residual is added into one preallocated output. Under autograd or `torch.compile` one block is
the whole tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .position import RotaryTable, from_tokens, rotate_half, to_tokens

# Tokens per block in CPU inference: 32,768 tokens of a 768-wide qkv projection are 100 MB, a quarter
# of the LIDC level-0 tensor. Smaller blocks (2,048 to 8,192, cache-sized) were not faster on a shared
# 2-core machine: many small parallel ops each wait at a thread barrier (docs/benchmarks.md).
BLOCK_TOKENS = 32768


def blockwise(x: torch.Tensor) -> bool:
    """Whether to work block by block: CPU, no autograd graph being recorded, not being compiled."""
    return x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_compiling()


class DepthAttention(nn.Module):
    """Self-attention along depth (z): every (b, y, x) column is a sequence of D tokens."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.rot_dim = min(32, dim_head)
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        self._folded: tuple[tuple, torch.Tensor] | None = None

    def folded_weight(self, rotary: RotaryTable) -> torch.Tensor:
        """(D, C, 3 * heads * dim_head): x_z @ W[z] = [scale * R_z W_q x_z, R_z W_k x_z, W_v x_z].

        Cached while no autograd graph is recorded, keyed on the weight's version counter (which
        every in-place update bumps: optimiser steps, EMA, load_state_dict).
        """
        weight = self.to_qkv.weight
        key = (rotary.depth, weight.device, weight.dtype, weight.data_ptr(), weight._version)
        cache = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if cache and self._folded is not None and self._folded[0] == key:
            return self._folded[1]
        w = weight.view(3, self.heads, self.dim_head, -1)  # (3, heads, dh, C)
        cos = rotary.cos.to(w.dtype)[:, None, None, :, None]  # (D, 1, 1, dh, 1)
        sin = rotary.sin.to(w.dtype)[:, None, None, :, None]
        qk = w[:2] * cos + rotate_half(w[:2], dim=2) * sin  # (D, 2, heads, dh, C)
        qk = qk * torch.tensor([self.scale, 1.0], dtype=w.dtype, device=w.device).view(1, 2, 1, 1, 1)
        v = w[2:].expand(rotary.depth, 1, -1, -1, -1)
        folded = torch.cat((qk, v), dim=1).flatten(1, 3).transpose(1, 2)
        if cache:
            self._folded = (key, folded)
        return folded

    def attend(self, z: torch.Tensor, position_bias: torch.Tensor, rotary: RotaryTable, fold: bool) -> torch.Tensor:
        """z: (B, D, N, C) normalised tokens of N columns -> (B, D, N, C) attention output.

        position_bias: (1, heads, D, D); fold: rotary map folded into the weights (see module doc).
        """
        b, d, n, _ = z.shape
        if fold:
            qkv = torch.matmul(z, self.folded_weight(rotary))
        else:
            qkv = F.linear(z, self.to_qkv.weight)
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.dim_head)).unbind(-3)  # (B, D, N, heads, dh)
        scale = 1.0
        if not fold:
            cos, sin = (u.to(q.dtype)[:, None, None, :] for u in (rotary.cos, rotary.sin))  # (D, 1, 1, dh)
            q, k = (u * cos + rotate_half(u) * sin for u in (q, k))
            scale = self.scale
        # (B * N, heads, D, dh): a view for B = 1 (the CPU blocks); the fused kernels take any strides.
        q, k, v = (u.permute(0, 2, 3, 1, 4).reshape(b * n, self.heads, d, self.dim_head) for u in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=position_bias.to(q.dtype), scale=scale)
        out = out.view(b, n, self.heads, d, self.dim_head).permute(0, 3, 1, 2, 4).reshape(b, d, n, -1)
        return F.linear(out, self.to_out.weight)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor, rotary: RotaryTable) -> torch.Tensor:
        """The attention alone on an already normalised x: (B, C, D, H, W) -> (B, C, D, H, W)."""
        _, c, _, h, w = x.shape
        return from_tokens(self.attend(to_tokens(x), position_bias, rotary, fold=c <= h * w), h, w)

    def residual(self, x: torch.Tensor, norm: nn.Module, position_bias: torch.Tensor, rotary: RotaryTable) -> torch.Tensor:
        """x + self(norm(x)): x (B, C, D, H, W) -> same shape, channels-last."""
        b, c, d, h, w = x.shape
        tokens = to_tokens(x)
        fold = c <= h * w  # weights of D * C rows cost less than rotating D * H * W tokens
        if not blockwise(x) or b * d * h * w <= BLOCK_TOKENS:  # small batches in one go: fewer ops
            return from_tokens(self.attend(norm.last(tokens), position_bias, rotary, fold).add_(tokens), h, w)
        out = torch.empty(tokens.shape, dtype=x.dtype)
        step = max(1, BLOCK_TOKENS // d)
        for i in range(b):
            for s in range(0, h * w, step):
                block = tokens[i : i + 1, :, s : s + step]
                torch.add(block, self.attend(norm.last(block), position_bias, rotary, fold), out=out[i : i + 1, :, s : s + step])
        return from_tokens(out, h, w)


class SpatialAttention(nn.Module):
    """Full self-attention over the H*W positions of each slice (used at the bottleneck)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def attend(self, z: torch.Tensor) -> torch.Tensor:
        """z: (S, P, C) normalised tokens of S slices of P = H*W positions -> (S, P, C)."""
        s, p, _ = z.shape
        qkv = F.linear(z, self.to_qkv.weight)
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.dim_head)).permute(2, 0, 3, 1, 4)  # (S, heads, P, dh)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.dim_head**-0.5)
        return F.linear(out.transpose(1, 2).reshape(s, p, -1), self.to_out.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        return from_tokens(self.attend(to_tokens(x).reshape(b * d, h * w, c)).view(b, d, h * w, c), h, w)

    def residual(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """x + self(norm(x)): x (B, C, D, H, W) -> same shape, channels-last."""
        b, c, d, h, w = x.shape
        tokens = to_tokens(x).reshape(b * d, h * w, c)
        return from_tokens(self.attend(norm.last(tokens)).add_(tokens).view(b, d, h * w, c), h, w)


class SpatialLinearAttention(nn.Module):
    """Linear attention over (y, x) within each slice; cost linear in H*W.

    Queries are normalised over features and keys over positions, so the (dh x dh) context
    k v^T replaces the (HW x HW) attention matrix. Weights keep the published Conv2d shapes.
    """

    def __init__(self, dim: int, heads: int, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Conv2d(dim, 3 * heads * dim_head, 1, bias=False)
        self.to_out = nn.Conv2d(heads * dim_head, dim, 1)

    def attend(self, z: torch.Tensor) -> torch.Tensor:
        """z: (S, P, C) normalised tokens of S slices of P = H*W positions -> (S, P, C).

        Keys and values features-first per slice, (S, heads, dh, P), so that the keys' softmax over
        positions and the context k v^T are contiguous batched products; queries tokens-first,
        (S, P, heads * dh), so that their softmax over features runs along the contiguous axis.
        The output projection is linear, so it is folded into the context: per slice
        M = context^T W_out^T (heads * dh x C, small), and the output is one product q M + bias
        instead of context^T q followed by the projection.
        """
        s, p, c = z.shape
        weight = self.to_qkv.weight.flatten(1)  # (3 * heads * dh, C)
        hd = self.heads * self.dim_head
        q = torch.matmul(z, weight[:hd].t()).view(s, p, self.heads, self.dim_head).softmax(dim=-1).view(s, p, hd)
        zt = z.transpose(1, 2)  # (S, C, P), a view
        k, v = (torch.bmm(weight[i * hd : (i + 1) * hd].expand(s, -1, -1), zt).view(s, self.heads, self.dim_head, p) for i in (1, 2))
        context = torch.matmul(k.softmax(dim=-1), v.transpose(-1, -2)).mul_(self.scale)  # (S, heads, dh_k, dh_v)
        w_out = self.to_out.weight.view(c, self.heads, self.dim_head).permute(1, 2, 0)  # (heads, dh_v, C)
        folded = torch.matmul(context, w_out).view(s, hd, c)  # (S, heads * dh_k, C)
        return torch.baddbmm(self.to_out.bias, q, folded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        return from_tokens(self.attend(to_tokens(x).reshape(b * d, h * w, c)).view(b, d, h * w, c), h, w)

    def residual(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """x + self(norm(x)): x (B, C, D, H, W) -> same shape, channels-last."""
        b, c, d, h, w = x.shape
        tokens = to_tokens(x).reshape(b * d, h * w, c)
        if not blockwise(x):
            return from_tokens(self.attend(norm.last(tokens)).add_(tokens).view(b, d, h * w, c), h, w)
        out = torch.empty(tokens.shape, dtype=x.dtype)
        step = max(1, BLOCK_TOKENS // (h * w))  # whole slices: the context sums over a slice
        for s in range(0, b * d, step):
            block = tokens[s : s + step]
            torch.add(block, self.attend(norm.last(block)), out=out[s : s + step])
        return from_tokens(out.view(b, d, h * w, c), h, w)
