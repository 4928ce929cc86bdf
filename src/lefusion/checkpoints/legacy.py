"""Import of published LeFusion checkpoints (`lidc.pt`, `emidec.pt`, `diffmask.pt`).

A published file is a pickled dict `{step, model, ema, scaler}`; `model` and `ema` are state dicts
of the whole diffusion module: 12 schedule buffers plus the network under `denoise_fn.module.`.
It is read with `torch.load(weights_only=True)` only, so a file cannot run code. Parameter names
are translated to this package's module names by the ordered rules below; the architecture is
inferred from the tensor shapes.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Literal

import torch

from ..config import DenoiserConfig, ScheduleConfig
from ..errors import LeFusionError
from ..models.position import rotary_frequencies

NETWORK_PREFIXES = ("denoise_fn.module.", "denoise_fn.", "module.")
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)

# Published module path -> ours. Applied in order, each at most once per key.
_LEVEL_SLOTS = {"0": "resnet1", "1": "resnet2", "2": "spatial_attention", "4": "resample", "3": "depth_attention"}
_RENAMES: list[tuple[str, str]] = [
    (r"^null_cond_emb$", "null_cond"),
    (r"^time_rel_pos_bias\.relative_attention_bias\.", "depth_position_bias.table."),
    (r"^time_mlp\.1\.", "time_embedding.linear1."),
    (r"^time_mlp\.3\.", "time_embedding.linear2."),
    (r"^init_temporal_attn\.", "init_depth_attention."),
    (r"^downs\.(\d+)\.(\d)\.", lambda m: f"encoder.{m[1]}.{_LEVEL_SLOTS[m[2]]}."),  # type: ignore[list-item]
    (r"^ups\.(\d+)\.(\d)\.", lambda m: f"decoder.{m[1]}.{_LEVEL_SLOTS[m[2]]}."),  # type: ignore[list-item]
    (r"^mid_block1\.", "middle.resnet1."),
    (r"^mid_block2\.", "middle.resnet2."),
    (r"^mid_spatial_attn\.", "middle.spatial_attention."),
    (r"^mid_temporal_attn\.", "middle.depth_attention."),
    (r"^final_conv\.0\.", "final_resnet."),
    (r"^final_conv\.1\.", "final_conv."),
    # Inside a residual/pre-norm wrapper the published code nests `fn` (Residual -> PreNorm ->
    # EinopsToAndFrom -> Attention); ours has one `fn`.
    (r"\.fn\.fn\.fn\.", ".fn."),
    (r"\.fn\.fn\.", ".fn."),
    (r"\.fn\.norm\.", ".norm."),
    # Inside a ResNet block.
    (r"\.mlp\.1\.", ".emb_proj."),
    (r"\.block(\d)\.proj\.", r".block\1.conv."),
    (r"\.res_conv\.", ".skip."),
]


def translate_key(key: str) -> str:
    """Published network parameter name (prefix already stripped) -> this package's name."""
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key, count=1)
    return key


def read_published(path: str | Path, weights: Literal["ema", "model"] = "ema") -> dict[str, torch.Tensor]:
    """Load one state dict (`ema` or `model`) from a published-format checkpoint, safely.

    Raises LeFusionError naming the file if it is not a readable torch checkpoint, is truncated,
    or lacks the requested weights.
    """
    path = Path(path)
    if not path.is_file():
        raise LeFusionError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        raise LeFusionError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from exc
    except Exception as exc:  # pickle.UnpicklingError for non-tensor objects, among others
        raise LeFusionError(f"{path}: refused to load (only plain tensors and dicts are accepted): {exc}") from exc
    if not isinstance(data, dict):
        raise LeFusionError(f"{path}: not a LeFusion checkpoint (top level is {type(data).__name__}, expected a dict)")
    if weights in data and isinstance(data[weights], dict):
        return data[weights]
    if weights == "ema" and "model" in data and "ema" not in data:
        raise LeFusionError(f"{path}: has no 'ema' weights; choose the 'model' weights instead")
    if all(isinstance(v, torch.Tensor) for v in data.values()) and data:
        return data  # a bare state dict
    raise LeFusionError(f"{path}: not a LeFusion checkpoint (keys {sorted(data)[:6]}; expected 'model' and 'ema')")


def split_state(state: dict[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a published diffusion state dict into (network weights in our names, schedule buffers).

    Rotary frequency buffers are checked against ours and dropped: they are not learned.
    """
    network: dict[str, torch.Tensor] = {}
    schedule: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in SCHEDULE_BUFFERS:
            schedule[key] = value
            continue
        for prefix in NETWORK_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if key.endswith("rotary_emb.freqs"):
            expected = rotary_frequencies(2 * value.numel())
            if value.shape != expected.shape or not torch.allclose(value.float(), expected):
                raise LeFusionError(f"{source}: rotary frequencies in '{key}' differ from the standard ones")
            continue
        network[translate_key(key)] = value
    if not network:
        raise LeFusionError(f"{source}: contains no network weights")
    return network, schedule


def infer_denoiser_config(network: dict[str, torch.Tensor], source: str) -> DenoiserConfig:
    """Read the architecture off the weight shapes (GroupNorm group count cannot be read: 8 as published)."""
    try:
        init = network["init_conv.weight"]  # (dim, in_ch, 1, k, k)
        dim, in_ch, kernel = init.shape[0], init.shape[1], init.shape[-1]
        heads = network["depth_position_bias.table.weight"].shape[1]
        dim_head = network["init_depth_attention.fn.to_qkv.weight"].shape[0] // (3 * heads)
        levels = sorted({int(k.split(".")[1]) for k in network if k.startswith("encoder.")})
        mults = tuple(network[f"encoder.{i}.resnet1.block1.conv.weight"].shape[0] // dim for i in levels)
        channels = network["final_conv.weight"].shape[0]
        cond_dim = network["null_cond"].shape[1] if "null_cond" in network else None
    except KeyError as exc:
        raise LeFusionError(f"{source}: not a LeFusion denoiser (missing weight {exc})") from exc
    return DenoiserConfig(
        dim=dim,
        dim_mults=mults,
        channels=channels,
        cond_dim=cond_dim,
        attn_heads=heads,
        attn_dim_head=dim_head,
        init_kernel_size=kernel,
        extra_in_channels=in_ch - channels,
    )


def infer_schedule_config(schedule: dict[str, torch.Tensor], source: str) -> ScheduleConfig:
    """T from the stored betas, checked against our cosine schedule (fails on an unknown schedule)."""
    from ..diffusion.schedule import cosine_betas

    if "betas" not in schedule:
        return ScheduleConfig()
    betas = schedule["betas"].double()
    config = ScheduleConfig(timesteps=betas.numel())
    ours = cosine_betas(config.timesteps, config.cosine_s, config.max_beta)
    if not torch.allclose(betas, ours, rtol=1e-5, atol=1e-7):
        raise LeFusionError(f"{source}: the stored noise schedule is not the cosine schedule with T={betas.numel()}")
    return config
