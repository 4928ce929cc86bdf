"""Texture class -> histogram preset mapping of a LeFusion checkpoint, from rated training lesions.

A LeFusion model steers texture by a histogram preset; users think in texture classes (ground glass,
part-solid, solid; LIDC's texture rating 1..5). :func:`rated_texture_mapping` computes each rated
lesion's histogram with the checkpoint's own preprocessing, assigns it to its nearest preset and
maps every class to the preset its lesions favour
(:func:`~lefusion.control.attributes.texture_classes_from_rated`). Ratings come from a CSV
(``case,texture`` with a 1..5 rating or a class name per case) or, for the lung phantom, from its
phantom.json (families ggo / part_solid / solid). :func:`write_texture_mapping` records the mapping
in the checkpoint's config.json (``extra.texture_classes``), which ``--texture-class`` reads.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..control.attributes import TEXTURE_CLASSES, check_texture_class, texture_classes_from_rated
from ..data.conventions import DataConventions
from ..diffusion.model import DiffusionModel
from ..errors import LeFusionError
from ..io import atomic_write_text
from .run import training_dataset

PHANTOM_FAMILY_RATING = {"ggo": 1.0, "part_solid": 3.0, "solid": 5.0}  # lefusion.phantoms.lung.FAMILIES
_CLASS_RATING = {"ground-glass": 1.0, "part-solid": 3.0, "solid": 5.0}


def read_texture_ratings(path: str | Path) -> dict[str, float]:
    """{case name: texture rating} from a CSV with columns case, texture (1..5 or a class name), or
    from a lung phantom's phantom.json (its families). LeFusionError naming the file otherwise."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            cases = json.loads(path.read_text())["cases"]
            return {c["name"]: PHANTOM_FAMILY_RATING[c["family"]] for c in cases if c.get("family") in PHANTOM_FAMILY_RATING}
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, ValueError, KeyError) as exc:
        raise LeFusionError(f"{path}: cannot read texture ratings ({exc}); expected a CSV case,texture or a phantom.json") from exc
    out = {}
    for row in rows:
        if "case" not in row or "texture" not in row:
            raise LeFusionError(f"{path}: needs the columns case and texture, has {', '.join(row)}")
        value = row["texture"].strip()
        out[row["case"].strip()] = (
            _CLASS_RATING[check_texture_class(value)] if value in _CLASS_RATING or not _number(value) else float(value)
        )
    return out


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def rated_texture_mapping(model: DiffusionModel, data_root: str | Path, ratings: dict[str, float]) -> dict:
    """Mapping {class: 1-based preset} from the rated pathological training cases of `data_root`,
    with counts per class; LeFusionError when the model has no presets or no case is rated."""
    presets = np.asarray(model.config.hist_presets, dtype=np.float64)
    if presets.size == 0:
        raise LeFusionError(f"{model.source}: has no histogram presets to map texture classes onto")
    dataset = training_dataset(Path(data_root), DataConventions.of_model(model.config))
    names = list(dataset.names)
    rated = [i for i, n in enumerate(names) if n in ratings]
    if not rated:
        raise LeFusionError(f"{data_root}: none of its {len(names)} training cases has a texture rating")
    hists = dataset.hists.double().numpy()[rated]
    values = [ratings[names[i]] for i in rated]
    mapping = texture_classes_from_rated(hists, values, presets)
    return {"texture_classes": mapping, "rated_lesions": len(rated), "classes": [c for c in TEXTURE_CLASSES if c in mapping]}


def write_texture_mapping(checkpoint_dir: str | Path, mapping: dict[str, int], source: str) -> Path:
    """Record `mapping` in a lefusion checkpoint folder's config.json (extra.texture_classes)."""
    path = Path(checkpoint_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LeFusionError(f"{path}: not a lefusion checkpoint config ({exc})") from exc
    extra = config.setdefault("extra", {})
    extra["texture_classes"] = {k: int(v) for k, v in mapping.items()}
    extra["texture_classes_source"] = source
    return atomic_write_text(path, json.dumps(config, indent=2))
