"""The registry of generation methods: a name (what `lefusion generate --method` takes and what
manifests record) -> how to build it from a checkpoint and the flags.

| method | needs | makes |
|---|---|---|
| lefusion | a `lefusion` checkpoint | lesions inside the mask, background kept (RePaint too, with a globally trained checkpoint) |
| cond-diffusion | a `cond-diffusion` checkpoint | the whole ROI regenerated, conditioned on masks + masked image |
| copy-paste | --donors DIR | real donor lesions pasted into the mask |
| handcrafted | presets or --texture | smoothed noise at a target mean / std |
| lesion-ddpm | a `lesion-ddpm` checkpoint | the whole volume, from anatomy + lesion masks (`whole_volume`, not an ROI method) |

Without a method name, a checkpoint's own kind picks it. Adding a method is one builder and one
entry in METHODS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..diffusion.model import DiffusionModel
from ..errors import LeFusionError
from .baseline_methods import BaselineGenerator, make_baseline
from .diffusion_methods import CondDiffusionGenerator, LeFusionGenerator
from .types import GenerateConfig, RoiGenerator


@dataclass(frozen=True)
class MethodRequest:
    """What a method may be built from. model: the loaded checkpoint or None; donors: a dataset root
    with real lesions (copy-paste; handcrafted presets); texture: hand-crafted (mean, std) pairs in
    source units; smoothing: hand-crafted grain in voxels."""

    data_root: Path
    config: GenerateConfig
    model: DiffusionModel | None = None
    donors: str | Path | None = None
    texture: Sequence[tuple[float, float]] | None = None
    smoothing: float = 1.0


def _diffusion(cls: type[LeFusionGenerator] | type[CondDiffusionGenerator]) -> Callable[[MethodRequest], RoiGenerator]:
    def build(request: MethodRequest) -> RoiGenerator:
        if request.model is None:
            raise LeFusionError(f"--checkpoint is required for --method {cls.method} (only copy-paste and handcrafted run without one)")
        if request.donors or request.texture:
            raise LeFusionError(f"--donors and --texture belong to --method copy-paste / handcrafted, not {cls.method}")
        return cls(request.model, request.config)

    return build


def _baseline(name: str) -> Callable[[MethodRequest], RoiGenerator]:
    def build(request: MethodRequest) -> BaselineGenerator:
        presets = request.config.presets != ("mix",)  # anything but the default was asked for
        if name == "copy-paste" and (presets or request.texture):
            raise LeFusionError("copy-paste takes each lesion's texture from a real donor lesion; --preset and --texture do not apply")
        if request.texture and presets:
            raise LeFusionError("give the hand-crafted texture either as --preset (histogram presets) or as --texture MEAN STD, not both")
        if request.config.sampler is not None:
            raise LeFusionError(f"{name} does not sample; --sampler and the jump settings belong to the diffusion methods")
        return make_baseline(
            name, request.data_root, model=request.model, donors=request.donors, texture=request.texture, smoothing=request.smoothing
        )

    return build


METHODS: dict[str, Callable[[MethodRequest], RoiGenerator]] = {
    "lefusion": _diffusion(LeFusionGenerator),
    "cond-diffusion": _diffusion(CondDiffusionGenerator),
    "copy-paste": _baseline("copy-paste"),
    "handcrafted": _baseline("handcrafted"),
}


def build_method(name: str | None, request: MethodRequest) -> RoiGenerator:
    """The method `name` (None: the one the checkpoint's kind is generated with)."""
    if name is None:
        if request.model is None:
            raise LeFusionError("--checkpoint is required (its kind picks the method), unless --method is copy-paste or handcrafted")
        name = request.model.kind
        if name == "lesion-ddpm":
            raise LeFusionError(
                f"{request.model.source}: is a lesion-ddpm model; it generates whole volumes: "
                "`lefusion generate --method lesion-ddpm` / lefusion.generation.generate_volumes"
            )
        if name not in METHODS:
            raise LeFusionError(f"{request.model.source}: is a {name} model; it makes lesion masks: use `lefusion masks sample`")
    if name not in METHODS:
        raise LeFusionError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](request)


def method_presets(method: RoiGenerator) -> tuple[tuple[float, ...], ...]:
    """The texture presets `--preset K` / `all` of a method refer to (none for copy-paste)."""
    return tuple(getattr(method, "presets", ()))


def expand_presets(specs: Sequence[str] | None, method: RoiGenerator) -> tuple[str, ...]:
    """--preset values as output variants: None -> ('mix',); ['all'] -> every preset of the method."""
    specs = list(specs or ["mix"])
    if specs == ["all"]:
        available = method_presets(method)
        if not available:
            raise LeFusionError("--preset all: there are no histogram presets (give --presets-file, or for handcrafted --donors)")
        return tuple(str(p) for p in range(1, len(available) + 1))
    return tuple(str(s) for s in specs)
