"""The manifest of a generated dataset: the settings that made it (so a re-run resumes only under
the same settings) and one entry per output.

Settings written before samplers had their own record (`"jump_length"`, `"jump_n_sample"` beside
the seed) are read as the sampler they meant: LeFusion's time travel with those values (plain
ancestral sampling when jump_n_sample is 1), ancestral DDPM for Cond-Diffusion (which ignored them),
nothing for the baselines (which do not sample). Such a folder resumes, and its settings are
rewritten in the current form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..diffusion.sampling import Ancestral, TimeTravel
from ..errors import LeFusionError
from ..sharding import shard_files

MANIFEST = "manifest.json"
_LEGACY_SAMPLER_KEYS = ("jump_length", "jump_n_sample")


def upgrade_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings in the current form (see module docstring); current settings come back unchanged.
    Folders from before whole scans were supported hold ROIs only, which are never resampled: they
    read as the resampling defaults."""
    settings = {
        **settings,
        "interpolation": settings.get("interpolation", "linear"),
        "mask_resampling": settings.get("mask_resampling", "volume"),
    }
    if not any(k in settings for k in _LEGACY_SAMPLER_KEYS):
        return settings
    upgraded = {k: v for k, v in settings.items() if k not in _LEGACY_SAMPLER_KEYS}
    method = settings.get("method", "lefusion")
    if method == "lefusion":
        sampler = TimeTravel(int(settings.get("jump_length", 10)), int(settings.get("jump_n_sample", 10))).canonical()
        upgraded["sampler"] = sampler.to_dict()
    elif method == "cond-diffusion":
        upgraded["sampler"] = Ancestral().to_dict()
    return upgraded


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new), key=lambda k: (k not in new, k))
    return "; ".join(f"{k}: {json.dumps(old.get(k))} there, {json.dumps(new.get(k))} now" for k in keys if old.get(k) != new.get(k))


def open_manifest(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest at `path` if it was made with `settings` (older forms upgraded), a new empty one
    if there is none; LeFusionError naming the settings that differ otherwise."""
    settings = json.loads(json.dumps(settings))  # JSON types, as read back
    if not path.is_file():
        return {"settings": settings, "outputs": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LeFusionError(f"{path}: unreadable manifest ({exc}); move it away or use a new --out") from exc
    previous = upgrade_settings(manifest.get("settings") or {})
    if previous != settings:
        raise LeFusionError(
            f"{path}: this output folder was made with other settings ({_differences(previous, settings)}); use a new --out"
        )
    return {**manifest, "settings": settings}


def recorded_outputs(path: Path, settings: dict[str, Any], skip: Path) -> dict[str, Any]:
    """Output entries recorded by the other runs into the same folder: the manifest at `path` and
    every shard's (`lefusion.sharding`), except the file `skip`; each must have `settings`."""
    files = [path, *(f for per_count in shard_files(path).values() for f in per_count.values())]
    found: dict[str, Any] = {}
    for file in files:
        if file != skip and file.is_file():
            found.update(open_manifest(file, settings)["outputs"])
    return found
