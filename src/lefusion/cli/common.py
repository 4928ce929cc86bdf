"""Flags and argument types shared by several subcommands (one definition, so they agree)."""

from __future__ import annotations

import argparse

from ..config import DenoiserConfig
from ..control.attributes import TEXTURE_CLASSES, texture_class_of_rating, texture_preset
from ..diffusion.sampling import DEFAULT_FEW_STEP, SAMPLERS, SamplerConfig, TimeTravel, sampler_from_dict
from ..errors import LeFusionError
from ..sharding import Shard, resolve_shard


def add_architecture_args(p: argparse.ArgumentParser, dim: int, dim_mults: list[int], heads: int, dim_head: int, timesteps: int) -> None:
    """--dim, --dim-mults, --heads, --dim-head, --timesteps with the given defaults."""
    p.add_argument("--dim", type=int, default=dim, help=f"base width (default {dim})")
    p.add_argument("--dim-mults", type=int, nargs="+", default=dim_mults, help="width multiplier per U-Net level")
    p.add_argument("--heads", type=int, default=heads, help="attention heads")
    p.add_argument("--dim-head", type=int, default=dim_head, help="width of one attention head")
    p.add_argument("--timesteps", type=int, default=timesteps, help="diffusion steps T (cosine schedule)")


def denoiser_from_args(args: argparse.Namespace) -> DenoiserConfig:
    """DenoiserConfig from the architecture flags (channel layout is set by the caller)."""
    return DenoiserConfig(dim=args.dim, dim_mults=tuple(args.dim_mults), attn_heads=args.heads, attn_dim_head=args.dim_head)


SAMPLER_FLAGS = ("steps", "eta", "zeta", "jump_length", "jump_n_sample")  # settings the sampler flags can set


def add_sampler_args(p: argparse.ArgumentParser, default: str) -> None:
    """--sampler NAME and its settings (--steps, --eta, --zeta, --jump-length, --jump-n-sample);
    `default` names the method's own sampler in the help."""
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help=f"reverse process (default: {default})")
    p.add_argument("--steps", type=int, help="few-step samplers (ddim, ddnm, diffpir): levels K of the T; network evaluations = K")
    p.add_argument("--eta", type=float, help="ddim / ddnm: noise of each move, 0 (deterministic) to 1 (DDPM's)")
    p.add_argument("--zeta", type=float, help="diffpir: share of fresh noise in each move, 0 to 1")
    p.add_argument(
        "--jump-length",
        type=int,
        help="time-travel jump length (published: 10); with a few-step sampler, its resampling in grid levels; "
        "alone implies --sampler time-travel",
    )
    p.add_argument("--jump-n-sample", type=int, help="repeats per jump (published: 10; 1 = no time travel / resampling)")


def sampler_from_args(args: argparse.Namespace) -> SamplerConfig | None:
    """The sampler the flags ask for, or None for the method's default. Settings without --sampler:
    the jump settings alone mean the published time travel, --steps / --eta / --zeta the default
    few-step sampler (`DEFAULT_FEW_STEP`'s kind)."""
    given = {k: getattr(args, k) for k in SAMPLER_FLAGS if getattr(args, k, None) is not None}
    kind = args.sampler
    if kind is None and given:
        few_step = {"steps", "eta", "zeta"} & set(given)
        kind = DEFAULT_FEW_STEP.kind if few_step else TimeTravel.kind
    if kind is None:
        return None
    try:
        return sampler_from_dict({"kind": kind, **given})
    except ValueError as exc:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise LeFusionError(f"{exc} (flags given: {flags or 'none'})") from exc


def add_resampling_args(p: argparse.ArgumentParser) -> None:
    """--interpolation, --mask-resampling: how a whole scan's lesion boxes are resampled to the model's spacing."""
    p.add_argument(
        "--interpolation",
        choices=["linear", "bspline"],
        default="linear",
        help="whole scans: image resampling to the model's spacing (default linear; bspline is smoother, may overshoot)",
    )
    p.add_argument(
        "--mask-resampling",
        choices=["volume", "nearest"],
        default="volume",
        help="whole scans: lesion mask resampling; volume (default) keeps the lesion's volume, nearest is nearest neighbour",
    )


def zyx(text: str) -> tuple[float, float, float]:
    """'Z,Y,X' -> (z, y, x) floats (argparse type)."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X (three comma-separated numbers), got {text!r}")
    try:
        return tuple(float(v) for v in parts)  # type: ignore[return-value]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X numbers, got {text!r}") from exc


def threshold(text: str) -> float | str:
    """'size' or a number in [-1, 1] (argparse type for masks sample --threshold)."""
    if text == "size":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'size' or a number in [-1, 1], got {text!r}") from exc


def add_shard_arg(p: argparse.ArgumentParser) -> None:
    """--shard K/N: this process's share of the cases (docs/cluster.md)."""
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="run shard K of N (0 <= K < N) into the shared --out; default: RANK/WORLD_SIZE under torchrun, else the whole job. "
        "The shards' outputs together are an unsharded run's; `lefusion manifest merge OUT` joins their manifests "
        "(automatic when the last shard finishes)",
    )


def shard_from_args(args: argparse.Namespace) -> Shard | None:
    """The shard to run: --shard, else torchrun's RANK / WORLD_SIZE, else None (the whole job)."""
    return resolve_shard(args.shard)


def add_texture_class_args(p: argparse.ArgumentParser) -> None:
    """--texture-class / --texture-rating: a texture class, mapped to a preset by the checkpoint."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--texture-class",
        choices=TEXTURE_CLASSES,
        help="texture by class: the checkpoint's preset for it (extra.texture_classes; demo_lung has one, "
        "`lefusion texture-classes` makes one); instead of --preset",
    )
    group.add_argument(
        "--texture-rating",
        type=float,
        metavar="1-5",
        help="texture by LIDC rating (1-2 ground glass, 3 part-solid, 4-5 solid), as --texture-class",
    )


def texture_class_from_args(args: argparse.Namespace) -> str | None:
    """The texture class the flags ask for (a rating mapped to its class), or None."""
    if getattr(args, "texture_rating", None) is not None:
        return texture_class_of_rating(args.texture_rating)
    return getattr(args, "texture_class", None)


def presets_for_texture_class(args: argparse.Namespace, model) -> tuple[str, ...] | None:
    """--preset's value for --texture-class / --texture-rating, or None when neither is given.
    LeFusionError when --preset is given too, or the checkpoint has no mapping for the class."""
    name = texture_class_from_args(args)
    if name is None:
        return None
    if args.preset:
        raise LeFusionError("--texture-class / --texture-rating pick the preset; drop --preset")
    if model is None:
        raise LeFusionError("--texture-class / --texture-rating need a --checkpoint whose presets they map to")
    return (str(texture_preset(model.extra.get("texture_classes"), name, str(model.source))),)
