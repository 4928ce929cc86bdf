"""Whole jobs that span the layers, one call each for the CLI: `augment` (place + generate +
assemble, then optionally an nnU-Net raw dataset of the augmented whole scans)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .export.nnunet import ExportSummary, export_nnunet
from .generation.augment import AugmentConfig, AugmentResult, augment_scans
from .generation.types import RoiGenerator
from .masks.shapes import ShapeSource


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
) -> tuple[AugmentResult, ExportSummary | None]:
    """`lefusion augment`: the augmented set in `out`; with `nnunet`, every augmented scan also as a
    training case of an nnU-Net raw dataset (no test cases: hold out real scans of your own)."""
    result = augment_scans(scans, out, method, shapes, shapes_record, config, progress)
    if nnunet is None:
        return result, None
    labels = tuple(sorted({*method.conventions.lesion_labels, config.place.label}))
    summary = export_nnunet(
        out,
        Path(out) / "nnUNet_raw",
        dataset_id=nnunet.dataset_id,
        name=nnunet.name,
        lesion_labels=labels,
        modality=method.conventions.preprocess.modality,
        test_fraction=0,
        overwrite=True,
    )
    return result, summary
