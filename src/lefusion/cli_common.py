"""Flags shared by several subcommands (one definition, so `train` and `masks train` agree)."""

from __future__ import annotations

import argparse


def add_architecture_args(p: argparse.ArgumentParser, dim: int, dim_mults: list[int], heads: int, dim_head: int, timesteps: int) -> None:
    """--dim, --dim-mults, --heads, --dim-head, --timesteps with the given defaults."""
    p.add_argument("--dim", type=int, default=dim, help=f"base width (default {dim})")
    p.add_argument("--dim-mults", type=int, nargs="+", default=dim_mults, help="width multiplier per U-Net level")
    p.add_argument("--heads", type=int, default=heads, help="attention heads")
    p.add_argument("--dim-head", type=int, default=dim_head, help="width of one attention head")
    p.add_argument("--timesteps", type=int, default=timesteps, help="diffusion steps T (cosine schedule)")


def denoiser_from_args(args: argparse.Namespace):
    """DenoiserConfig from the architecture flags (channel layout is set by the caller)."""
    from .config import DenoiserConfig

    return DenoiserConfig(dim=args.dim, dim_mults=tuple(args.dim_mults), attn_heads=args.heads, attn_dim_head=args.dim_head)
