"""Whole jobs that span the layers, one call each for the CLI: `augment` (place + generate +
assemble, then optionally an nnU-Net raw dataset of the augmented whole scans), and the export of
a sharded augment run once its shards are merged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import LeFusionError
from .export.nnunet import ExportSummary, export_nnunet
from .generation.augment import MANIFEST as AUGMENT_MANIFEST
from .generation.augment import AugmentConfig, AugmentResult, augment_scans
from .generation.types import RoiGenerator
from .masks.shapes import ShapeSource
from .sharding import Shard


@dataclass(frozen=True)
class NnunetTarget:
    """Where the nnU-Net raw dataset goes: OUT/nnUNet_raw/DatasetNNN_NAME."""

    dataset_id: int
    name: str


def run_augment(
    scans: str | Path,
    out: str | Path,
    method: RoiGenerator,
    shapes: ShapeSource,
    shapes_record: dict,
    config: AugmentConfig,
    nnunet: NnunetTarget | None = None,
    progress: bool = True,
    shard: Shard | None = None,
) -> tuple[AugmentResult, ExportSummary | None]:
    """`lefusion augment`: the augmented set in `out`; with `nnunet`, every augmented scan also as a
    training case of an nnU-Net raw dataset (no test cases: hold out real scans of your own).
    A shard (`lefusion.sharding`) does its share only; the export then belongs to the merge
    (`merge_augmented`), since it needs every scan."""
    if shard is not None and nnunet is not None:
        raise LeFusionError(
            "--nnunet-id with --shard: the nnU-Net export needs every shard's scans; "
            "run `lefusion manifest merge OUT --nnunet-id ID --name NAME` once all shards have finished"
        )
    result = augment_scans(scans, out, method, shapes, shapes_record, config, progress, shard)
    if nnunet is None:
        return result, None
    return result, export_augmented(out, nnunet)


def export_augmented(out: str | Path, nnunet: NnunetTarget) -> ExportSummary:
    """OUT/nnUNet_raw/DatasetNNN_NAME from the augmented set in `out` (its manifest.json names the
    lesion labels and modality): every augmented scan a training case."""
    path = Path(out) / AUGMENT_MANIFEST
    try:
        manifest = json.loads(path.read_text())
        conventions, label = manifest["header"]["conventions"], manifest["settings"]["place"]["label"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LeFusionError(f"{path}: not the manifest of a finished `lefusion augment` run ({exc})") from exc
    return export_nnunet(
        out,
        Path(out) / "nnUNet_raw",
        dataset_id=nnunet.dataset_id,
        name=nnunet.name,
        lesion_labels=tuple(sorted({*conventions["lesion_labels"], label})),
        modality=conventions["preprocess"]["modality"],
        test_fraction=0,
        overwrite=True,
    )
