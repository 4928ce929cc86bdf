"""Segmentation networks from MONAI by name, and the input size each one needs.

- `unet`: MONAI's plain residual 3D U-Net, 4 levels (widths w, 2w, 4w, 8w; default w = 16),
  isotropic stride 2, so inputs are padded to a multiple of 8.
- `dynunet`: MONAI's DynUNet configured like nnU-Net's planner does it (see `plan_dynunet`):
  kernels and strides from the voxel spacing and the input size, widths 32, 64, ... capped at 320;
  optional deep supervision.
- `swinunetr`: MONAI's SwinUNETR (feature size 24 by default, a multiple of 12); five stride-2
  stages, so inputs are padded to a multiple of 32 per axis (a 32x64x64 ROI stays as it is; a
  10x72x72 MRI ROI becomes 32x96x96; a 32x32x32 input gets 64 along x so the bottleneck has more
  than one voxel for instance norm).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import LeFusionError

NETWORKS = ("unet", "dynunet", "swinunetr")
DEFAULT_WIDTH = {"unet": 16, "dynunet": 32, "swinunetr": 24}
MIN_FEATURE_SIZE = 4  # nnU-Net stops halving an axis below 4 voxels at the bottleneck
MAX_DOWNSAMPLINGS = 5
DYNUNET_MAX_WIDTH = 320


@dataclass(frozen=True)
class NetworkPlan:
    """A network by name with everything needed to build it: the padded input shape (D, H, W) and
    the constructor arguments (JSON-friendly, saved with every result)."""

    name: str
    input_shape: tuple[int, int, int]
    n_classes: int
    args: dict = field(default_factory=dict)


def plan_dynunet(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net-style kernels and strides, one entry per resolution level, for a (D, H, W) input
    with voxel spacing (z, y, x) mm. Returns (kernels, strides); strides[0] is all ones.

    The rule (our own wording of nnU-Net's planner): at each level an axis is halved if it is still
    at least 2 * MIN_FEATURE_SIZE voxels long and its spacing is less than twice the finest spacing
    at that level (so a thick-slice axis waits until the in-plane axes have coarsened to its
    spacing); a kernel is 3 on an axis whose spacing is within 2x of the finest, else 1 (in-plane
    only convolutions on thick slices). Stops when no axis can be halved, or after
    MAX_DOWNSAMPLINGS levels.
    """
    size = [float(s) for s in shape]
    spacing_now = [float(s) for s in spacing]

    def kernel() -> list[int]:
        finest = min(spacing_now)
        return [3 if s < 2 * finest else 1 for s in spacing_now]

    kernels, strides = [kernel()], [[1, 1, 1]]
    for _ in range(MAX_DOWNSAMPLINGS):
        finest = min(spacing_now)
        stride = [2 if size[a] >= 2 * MIN_FEATURE_SIZE and spacing_now[a] < 2 * finest else 1 for a in range(3)]
        if stride == [1, 1, 1]:
            break
        size = [np.ceil(s / st) for s, st in zip(size, stride)]
        spacing_now = [sp * st for sp, st in zip(spacing_now, stride)]
        strides.append(stride)
        kernels.append(kernel())
    return kernels, strides


def size_multiple(name: str, shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[int, int, int]:
    """Per-axis divisor the input must be padded to for network `name`."""
    if name == "unet":
        return (8, 8, 8)
    if name == "swinunetr":
        return (32, 32, 32)
    if name == "dynunet":
        _, strides = plan_dynunet(shape, spacing)
        return tuple(int(np.prod([s[a] for s in strides])) for a in range(3))  # type: ignore[return-value]
    raise LeFusionError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")


def plan_network(
    name: str,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    n_classes: int,
    width: int | None = None,
    deep_supervision: bool = False,
) -> NetworkPlan:
    """The plan of network `name` for cases up to `shape` (D, H, W) with median spacing (z, y, x).

    The input shape is `shape` padded up to the network's multiple (for dynunet, planned on the
    padded shape so that strides and padding agree).
    """
    width = width or DEFAULT_WIDTH.get(name, 16)
    if name == "unet":
        input_shape = _round_up(shape, (8, 8, 8))
        return NetworkPlan(
            name, input_shape, n_classes, {"channels": [width * m for m in (1, 2, 4, 8)], "strides": [2, 2, 2], "num_res_units": 2}
        )
    if name == "swinunetr":
        if width % 12:
            raise LeFusionError(f"swinunetr needs a width (feature size) divisible by 12, got {width}")
        input_shape = _round_up(shape, (32, 32, 32))
        if input_shape == (32, 32, 32):
            # The bottleneck (1/32 scale) would be one voxel, which instance norm cannot normalise.
            input_shape = (32, 32, 64)
        return NetworkPlan(name, input_shape, n_classes, {"feature_size": width})
    if name == "dynunet":
        input_shape = tuple(shape)
        while True:  # padding can allow one more halving, which asks for more padding: iterate to a fixpoint
            padded = _round_up(input_shape, size_multiple("dynunet", input_shape, spacing))
            if padded == input_shape:
                break
            input_shape = padded
        kernels, strides = plan_dynunet(input_shape, spacing)
        filters = [min(width * 2**i, DYNUNET_MAX_WIDTH) for i in range(len(strides))]
        if deep_supervision and len(strides) < 3:
            raise LeFusionError(
                f"dynunet: deep supervision needs at least 3 resolution levels, the input {input_shape} allows {len(strides)}"
            )
        # Supervise every level above the two coarsest, as nnU-Net does, at most 3 extra heads.
        supervised = max(1, min(3, len(strides) - 2)) if deep_supervision else 1
        args = {
            "kernel_size": kernels,
            "strides": strides,
            "filters": filters,
            "deep_supervision": deep_supervision,
            "deep_supr_num": supervised,
        }
        return NetworkPlan(name, input_shape, n_classes, args)
    raise LeFusionError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")


def check_available(name: str) -> None:
    """Raise LeFusionError if network `name` is unknown or needs a package that is not installed."""
    if name not in NETWORKS:
        raise LeFusionError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    # MONAI imports einops lazily, at SwinUNETR's first forward pass: fail before any training.
    if name == "swinunetr" and importlib.util.find_spec("einops") is None:
        raise LeFusionError("swinunetr needs the einops package, which is not installed (pip install einops)")


def build_network(plan: NetworkPlan) -> torch.nn.Module:
    """A freshly initialised MONAI network (uses the global torch RNG; seed around the call)."""
    from monai.networks.nets import DynUNet, SwinUNETR, UNet

    check_available(plan.name)

    a = plan.args
    if plan.name == "unet":
        return UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=plan.n_classes,
            channels=a["channels"],
            strides=a["strides"],
            num_res_units=a["num_res_units"],
        )
    if plan.name == "dynunet":
        return DynUNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=plan.n_classes,
            kernel_size=a["kernel_size"],
            strides=a["strides"],
            upsample_kernel_size=a["strides"][1:],
            filters=a["filters"],
            deep_supervision=a["deep_supervision"],
            deep_supr_num=a["deep_supr_num"],
            res_block=True,
        )
    if plan.name == "swinunetr":
        return SwinUNETR(in_channels=1, out_channels=plan.n_classes, feature_size=a["feature_size"], spatial_dims=3)
    raise LeFusionError(f"unknown network {plan.name!r}; choose one of {', '.join(NETWORKS)}")


def _round_up(shape: tuple[int, ...], multiple: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(int(-(-s // m) * m) for s, m in zip(shape, multiple))  # type: ignore[return-value]
