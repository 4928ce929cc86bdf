"""Which labelled cases exist: the real train/test split, synthetic sets, and the label scheme.

Shared by the segmentation benchmark and the nnU-Net export, so both see the same test set and
drop the same synthetic cases.

Test set: the real pathological cases the layout holds out (LIDC `Pathological/test.txt`, EMIDEC's
release list, nnU-Net `imagesTs` with labels). A layout without a usable test split gets a seeded
split by patient (all nodules of one LIDC patient land on the same side), and the split note says so.

Leakage: a synthetic case generated on a test case's scan or mask (e.g. P' made from the whole
`Pathological/` folder) would show the test image to the segmenter, so such cases are dropped and
counted (by patient when the split was made here, by case when the dataset defines its split).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import LeFusionError
from ..io import has_volume_suffix, strip_volume_suffix
from .conventions import conventions_for
from .layouts import EMIDEC, LIDC, NNUNET, Case, detect_layout, find_cases

Modality = Literal["ct", "mri"]

# Label names by layout; other layouts name their labels "label<id>" unless dataset.json names them.
_NAMES = {LIDC: {1: "nodule"}, EMIDEC: {1: "cavity", 2: "myocardium", 3: "MI", 4: "PMO"}}

# LIDC-style case names carry the nodule index after the patient id: "LIDC-IDRI-0001_CVol_2".
_NODULE_SUFFIX = re.compile(r"_[A-Za-z]*(?:Vol|Mask)_\d+$")


@dataclass(frozen=True)
class LabelScheme:
    """Label ids of a dataset. `lesion_labels` are scored; `context_labels` (EMIDEC cavity and
    myocardium) are other structures the labels mark; `names` maps every non-zero id to a name."""

    modality: Modality
    lesion_labels: tuple[int, ...]
    context_labels: tuple[int, ...]
    names: dict[int, str] = field(default_factory=dict)

    @property
    def all_labels(self) -> tuple[int, ...]:
        """Background 0, then every other label id in increasing order (the segmenter's classes)."""
        return (0, *sorted({*self.context_labels, *self.lesion_labels}))

    def name(self, label: int) -> str:
        return "background" if label == 0 else self.names.get(label, f"label{label}")


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case. `sources`: names of the real cases its background, mask and (copy-paste)
    donor lesions came from; `role`: the role of the case it was generated on ("pathological" or
    "normal"). Both are unknown (empty / None) when the folder has no manifest."""

    name: str
    image: Path
    label: Path
    sources: tuple[str, ...] = ()
    role: str | None = None


@dataclass(frozen=True)
class RealSplit:
    """Real pathological cases: train and test, and a sentence on how the split was made.

    by_patient: the split was made here, by patient, so leakage is judged by patient; a dataset's
    own split is respected as given and leakage is judged by case.
    """

    train: tuple[Case, ...]
    test: tuple[Case, ...]
    note: str
    by_patient: bool = False

    def leaks(self, source: str) -> bool:
        """Whether a synthetic case made from the real case `source` (an image or mask name) would
        show a test case to the segmenter."""
        if self.by_patient:
            return patient_of(source) in {patient_of(c.name) for c in self.test}
        return case_key(source) in {case_key(c.name) for c in self.test}


def patient_of(name: str) -> str:
    """The patient a case belongs to: the name without an LIDC nodule suffix (`_CVol_2`, `_CMask_2`)."""
    return _NODULE_SUFFIX.sub("", strip_volume_suffix(name))


def case_key(name: str) -> str:
    """A case's image and mask names mapped to one key (LIDC masks swap the last 'Vol_' for 'Mask_')."""
    name = strip_volume_suffix(name)
    head, sep, tail = name.rpartition("Mask_")
    return f"{head}Vol_{tail}" if sep and _NODULE_SUFFIX.search(name) else name


def label_scheme(root: Path, lesion_labels: tuple[int, ...] | None = None, modality: Modality | None = None) -> LabelScheme:
    """Lesion / context labels, names and modality of the dataset at `root`.

    Defaults by layout: LIDC -> CT, lesion 1; EMIDEC -> MRI, lesions 3 (MI), 4 (PMO), context 1, 2;
    nnU-Net raw -> dataset.json's labels (all non-zero ones are lesions unless `lesion_labels` is
    given) and its channel name ("CT" means CT, anything else MRI); plain -> CT, lesion 1.
    """
    root = Path(root)
    layout = detect_layout(root)
    names = dict(_NAMES.get(layout, {}))
    if layout == NNUNET:
        path = root / "dataset.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LeFusionError(f"{path}: unreadable nnU-Net dataset.json ({exc})") from exc
        ids = {int(v): str(k) for k, v in meta.get("labels", {}).items() if isinstance(v, int) and v != 0}
        names.update(ids)
        channel = str(next(iter(meta.get("channel_names", meta.get("modality", {"0": "CT"})).values())))
        default_modality: Modality = "ct" if channel.lower() == "ct" else "mri"
        lesions = tuple(lesion_labels) if lesion_labels else tuple(sorted(ids)) or (1,)
        context = tuple(sorted(set(ids) - set(lesions)))
        return LabelScheme(modality or default_modality, lesions, context, names)
    conventions = conventions_for(root, lesion_labels)
    context = tuple(sorted(set(conventions.allowed_labels or ()) - {0, *conventions.lesion_labels}))
    return LabelScheme(modality or conventions.preprocess.modality, conventions.lesion_labels, context, names)


def split_real(root: Path, test_fraction: float = 0.2, seed: int = 0) -> RealSplit:
    """The real pathological cases of `root`, split into train and test (see module docstring)."""
    root = Path(root)
    cases = find_cases(root, role="pathological")
    held_out = [c for c in cases if c.split == "test" and c.mask is not None]
    if held_out:
        unlabelled = sum(1 for c in cases if c.split == "test" and c.mask is None)
        note = "the dataset's own test split" + (f" ({unlabelled} test case(s) without labels left out)" if unlabelled else "")
        train = [c for c in cases if c.split == "train"]
        if not train:
            raise LeFusionError(f"{root}: every pathological case is held out for testing; nothing left to train on")
        return RealSplit(tuple(train), tuple(held_out), note)

    if test_fraction == 0:  # every case trains (e.g. an augmented training set exported for nnU-Net)
        labelled = tuple(c for c in cases if c.mask is not None)
        return RealSplit(labelled, (), "no test cases: every case is a training case")
    if not 0 < test_fraction < 1:
        raise LeFusionError(f"test fraction must be between 0 and 1 (or 0 for no test cases), got {test_fraction}")
    labelled = [c for c in cases if c.mask is not None]
    patients = sorted({patient_of(c.name) for c in labelled})
    if len(patients) < 2:
        raise LeFusionError(f"{root}: has no test split and only {len(patients)} patient(s); need at least 2 to hold one out")
    n_test = min(len(patients) - 1, max(1, round(test_fraction * len(patients))))
    order = np.random.default_rng(seed).permutation(len(patients))
    test_patients = {patients[i] for i in order[:n_test]}
    test = tuple(c for c in labelled if patient_of(c.name) in test_patients)
    train = tuple(c for c in labelled if patient_of(c.name) not in test_patients)
    note = (
        f"no test split in the dataset: a seeded split by patient (seed {seed}, {n_test} of {len(patients)} "
        f"patients = {len(test)} cases held out)"
    )
    return RealSplit(train, test, note, by_patient=True)


def read_synthetic_set(folder: Path) -> list[SyntheticCase]:
    """The cases of a `lefusion generate` output folder (images/, labels/, manifest.json).

    With a manifest, its outputs are the cases and their source image/mask names are kept for the
    leakage check; without one, images/ and labels/ are paired by file name (sources unknown).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LeFusionError(f"{folder}: synthetic set folder not found")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            outputs = json.loads(manifest.read_text(encoding="utf-8"))["outputs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LeFusionError(f"{manifest}: unreadable generation manifest ({exc})") from exc
        cases = []
        for name, entry in sorted(outputs.items()):
            image, label = folder / entry["image"], folder / entry["label"]
            for path in (image, label):
                if not path.is_file():
                    raise LeFusionError(f"{path}: listed in {manifest} but missing (an unfinished generation run?)")
            paths = [entry.get("source_image"), entry.get("source_mask"), *dict(entry.get("donors") or {}).values()]
            sources = tuple(strip_volume_suffix(Path(str(p)).name) for p in paths if p)
            cases.append(SyntheticCase(name, image, label, sources, entry.get("source_role")))
        if not cases:
            raise LeFusionError(f"{manifest}: lists no outputs")
        return cases
    images, labels = folder / "images", folder / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise LeFusionError(f"{folder}: not a generated set (expected manifest.json, or images/ and labels/)")
    cases = []
    for image in sorted(p for p in images.iterdir() if has_volume_suffix(p) and not p.name.startswith(".")):
        label = labels / image.name
        if not label.is_file():
            raise LeFusionError(f"{image}: no label found (expected {label})")
        cases.append(SyntheticCase(strip_volume_suffix(image.name), image, label))
    if not cases:
        raise LeFusionError(f"{images}: no cases")
    return cases


def manifest_method(folder: Path) -> str | None:
    """The generation method a `lefusion generate` folder records ("lefusion", "copy-paste", ...), or None."""
    manifest = Path(folder) / "manifest.json"
    try:
        method = json.loads(manifest.read_text(encoding="utf-8")).get("method")
    except (OSError, ValueError, AttributeError):
        return None
    return str(method) if method else None


def drop_leaking(cases: list[SyntheticCase], split: RealSplit) -> tuple[list[SyntheticCase], int]:
    """Synthetic cases whose source scan or mask belongs to a test patient removed; returns
    (kept, number dropped)."""
    kept = [c for c in cases if not any(split.leaks(s) for s in c.sources)]
    return kept, len(cases) - len(kept)
