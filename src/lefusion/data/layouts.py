"""Discover image / mask pairs on disk in the dataset layouts users already have.

Understood layouts (names are the values of `detect_layout`):

- ``"lefusion-lidc"`` — the LeFusion LIDC release: ``Pathological/Image/*Vol_*.nii.gz`` with masks in
  ``Pathological/Mask/`` named like the image with the LAST ``Vol_`` replaced by ``Mask_``
  (``LIDC-IDRI-0001_CVol_1.nii.gz`` -> ``LIDC-IDRI-0001_CMask_1.nii.gz``); ``Pathological/test.txt``
  lists held-out image names without suffix; ``Normal/Image`` + ``Normal/Mask`` the same way. The
  root may also be a single group folder holding ``Image/`` and ``Mask/`` (role "normal" when the
  folder is called ``Normal``, else "pathological").
- ``"emidec"`` — the LeFusion EMIDEC release: ``Pathological/images`` + ``Pathological/labels`` (same
  file name), ``Normal/images`` (+ optional ``Normal/labels``); or one flat ``images/`` + ``labels/``
  folder whose names carry P/N (``Case_P012`` pathological, ``Case_N003`` normal).
  Label ids: 1 = LV cavity, 2 = myocardium, 3 = MI, 4 = PMO.
- ``"plain"`` — ``images/`` + ``masks/`` (or ``labels/``) with identical file names.
- ``"nnunet"`` — an nnU-Net raw dataset: ``dataset.json``, ``imagesTr/{case}_0000{ending}``
  (+ ``imagesTs``), ``labelsTr/{case}{ending}``; single input channel only.

Mask rule everywhere: a pathological case must have its mask; a normal case must have one when its
layout has a mask folder (a half-filled folder is a mistake worth reporting), else its mask is None.
Any ``test.txt`` (names without suffix, one per line) next to ``Image``/``images`` marks held-out cases
(split "test"); an EMIDEC folder without one uses the 10 cases the public EMIDEC script holds out.
nnU-Net ``imagesTs`` cases are split "test" (labels optional); all nnU-Net cases are "pathological".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import LeFusionError
from ..io import VOLUME_SUFFIXES, has_volume_suffix, strip_volume_suffix

Role = Literal["pathological", "normal"]
Split = Literal["train", "test"]

LIDC = "lefusion-lidc"
EMIDEC = "emidec"
PLAIN = "plain"
NNUNET = "nnunet"
LAYOUTS = (LIDC, EMIDEC, PLAIN, NNUNET)
ROLES = ("pathological", "normal")

# Cases the public EMIDEC training script holds out (hard-coded there); used as the test split when
# the EMIDEC folder has no test.txt of its own, so our train split matches the released model's.
EMIDEC_RELEASE_TEST_CASES = frozenset(f"Case_P{n:03d}" for n in (5, 8, 39, 57, 61, 71, 72, 77, 78, 82))

_EMIDEC_NAME = re.compile(r"(?:^|_)([PN])\d+$")

_LAYOUT_HELP = (
    "looked for: LeFusion LIDC (Pathological/Image + Mask and/or Normal/Image + Mask, or Image/ + Mask/), "
    "EMIDEC (Pathological/images + labels and/or Normal/images, or images/ + labels/ with Case_P/Case_N names), "
    "plain (images/ + masks/ or labels/), nnU-Net raw (dataset.json + imagesTr/ + labelsTr/)"
)


@dataclass(frozen=True)
class Case:
    """One scan on disk: its image, its mask (None for a normal scan without one), role and split."""

    name: str
    image: Path
    mask: Path | None
    role: Role = "pathological"
    split: Split = "train"


def detect_layout(root: str | Path) -> str:
    """Name the layout of the dataset folder `root` (one of LAYOUTS). Raises LeFusionError naming
    the folder when it is missing or matches none of them."""
    root = _check_root(root)
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        return NNUNET
    for group in ("Pathological", "Normal"):
        if (root / group / "Image").is_dir():
            return LIDC
        if (root / group / "images").is_dir():
            return EMIDEC
    if (root / "Image").is_dir():
        return LIDC
    if (root / "images").is_dir():
        if (root / "masks").is_dir():
            return PLAIN
        names = [strip_volume_suffix(p.name) for p in _volume_files(root / "images", must_exist=False)]
        # A flat images/ (+ labels/) folder is EMIDEC only when every name carries the P/N case tag.
        if names and all(_EMIDEC_NAME.search(n) for n in names):
            return EMIDEC
        return PLAIN
    raise LeFusionError(f"{root}: dataset layout not recognised; {_LAYOUT_HELP}")


def find_cases(root: str | Path, layout: str | None = None, role: str | None = None) -> list[Case]:
    """All cases under `root`, sorted by name (then role). `layout` None = `detect_layout(root)`;
    `role` None = both roles, else "pathological" or "normal" only.

    Raises LeFusionError naming the path for: missing root, unknown layout, a folder without cases,
    an image without its required mask, an unreadable or multi-channel nnU-Net dataset.json.
    """
    root = _check_root(root)
    if role is not None and role not in ROLES:
        raise LeFusionError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    layout = detect_layout(root) if layout is None else layout
    finders = {LIDC: _find_lidc, EMIDEC: _find_emidec, PLAIN: _find_plain, NNUNET: _find_nnunet}
    if layout not in finders:
        raise LeFusionError(f"unknown dataset layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    roles = set(ROLES) if role is None else {role}
    cases = [case for case in finders[layout](root, roles) if case.role in roles]
    if not cases:
        which = f"{role} " if role else ""
        raise LeFusionError(f"{root}: no {which}cases found in the {layout} layout")
    return sorted(cases, key=lambda c: (c.name, c.role))


def lidc_mask_name(image_name: str) -> str:
    """LeFusion LIDC mask file name: the LAST 'Vol_' replaced by 'Mask_' (unchanged if absent)."""
    head, sep, tail = image_name.rpartition("Vol_")
    return f"{head}Mask_{tail}" if sep else image_name


# --------------------------------------------------------------------------------------------- helpers


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise LeFusionError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise LeFusionError(f"{root}: is a file, expected a dataset folder")
    return root


def _volume_files(folder: Path, must_exist: bool = True) -> list[Path]:
    """Volume files directly in `folder`, sorted; hidden files (e.g. half-written temporaries) skipped."""
    if not folder.is_dir():
        if must_exist:
            raise LeFusionError(f"{folder}: folder not found")
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and has_volume_suffix(p))
    if must_exist and not files:
        raise LeFusionError(f"{folder}: no cases (no {', '.join(VOLUME_SUFFIXES)} files)")
    return files


def _read_split_file(path: Path) -> frozenset[str]:
    """Names listed in a test.txt (one per line, suffix optional); empty if the file is absent."""
    if not path.is_file():
        return frozenset()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LeFusionError(f"{path}: unreadable split file ({exc})") from exc
    return frozenset(strip_volume_suffix(line.strip()) for line in lines if line.strip())


def _pair_cases(
    image_dir: Path,
    mask_dir: Path | None,
    mask_name: Callable[[str], str],
    role_of: Callable[[str], str],
    roles: set[str],
    test_names: frozenset[str],
) -> list[Case]:
    """Pair each image in `image_dir` with `mask_dir / mask_name(image file name)`.

    role_of(name) gives each case's role; roles not wanted are skipped before their masks are
    checked, so asking for normal cases never fails on a pathological case's missing mask.
    """
    cases = []
    for image in _volume_files(image_dir):
        name = strip_volume_suffix(image.name)
        role = role_of(name)
        if role not in roles:
            continue
        mask: Path | None = None
        if mask_dir is not None and mask_dir.is_dir():
            mask = mask_dir / mask_name(image.name)
            if not mask.is_file():
                raise LeFusionError(f"{image}: no mask found (expected {mask})")
        elif role == "pathological":
            where = mask_dir if mask_dir is not None else image_dir.parent
            raise LeFusionError(f"{image}: pathological case needs a mask but {where} does not exist")
        cases.append(Case(name, image, mask, role, "test" if name in test_names else "train"))
    return cases


def _find_lidc(root: Path, roles: set[str]) -> list[Case]:
    if (root / "Image").is_dir():
        groups = [(root, "normal" if root.name.lower() == "normal" else "pathological")]
    else:
        groups = [(root / g, r) for g, r in (("Pathological", "pathological"), ("Normal", "normal")) if (root / g / "Image").is_dir()]
    cases: list[Case] = []
    for folder, role in groups:
        if role in roles:
            test = _read_split_file(folder / "test.txt")
            cases += _pair_cases(folder / "Image", folder / "Mask", lidc_mask_name, lambda _n, r=role: r, roles, test)
    return cases


def _emidec_role(name: str) -> Role:
    match = _EMIDEC_NAME.search(name)
    return "normal" if match and match.group(1) == "N" else "pathological"


def _find_emidec(root: Path, roles: set[str]) -> list[Case]:
    groups = [(root / g, r) for g, r in (("Pathological", "pathological"), ("Normal", "normal")) if (root / g / "images").is_dir()]
    if not groups and (root / "images").is_dir():
        groups = [(root, None)]  # flat folder: role from the P/N tag in each name
    cases: list[Case] = []
    for folder, role in groups:
        if role is not None and role not in roles:
            continue
        test = _read_split_file(folder / "test.txt") or EMIDEC_RELEASE_TEST_CASES
        role_of = (lambda _n, r=role: r) if role else _emidec_role
        cases += _pair_cases(folder / "images", folder / "labels", lambda n: n, role_of, roles, test)
    return cases


def _find_plain(root: Path, roles: set[str]) -> list[Case]:
    mask_dir = next((root / d for d in ("masks", "labels") if (root / d).is_dir()), None)
    # Without a mask folder the scans can only be lesion-free ("normal") inputs for inpainting.
    role: Role = "pathological" if mask_dir is not None else "normal"
    test = _read_split_file(root / "test.txt")
    return _pair_cases(root / "images", mask_dir, lambda n: n, lambda _n: role, roles, test)


def _find_nnunet(root: Path, roles: set[str]) -> list[Case]:
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise LeFusionError(f"{meta_path}: not found; an nnU-Net raw dataset needs dataset.json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LeFusionError(f"{meta_path}: unreadable dataset.json ({exc})") from exc
    if not isinstance(meta, dict):
        raise LeFusionError(f"{meta_path}: unreadable dataset.json (expected a JSON object)")
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending:
        raise LeFusionError(f"{meta_path}: 'file_ending' must be a non-empty string, got {ending!r}")
    channels = meta.get("channel_names", meta.get("modality", {"0": "image"}))  # v2 name, then v1
    if not isinstance(channels, dict) or len(channels) != 1:
        raise LeFusionError(f"{meta_path}: lefusion supports single-channel datasets only, but channel_names is {channels!r}")
    if "pathological" not in roles:
        return []  # nnU-Net cases carry labels, so all are treated as pathological
    suffix = f"_0000{ending}"
    cases: list[Case] = []
    for image_sub, label_sub, split in (("imagesTr", "labelsTr", "train"), ("imagesTs", "labelsTs", "test")):
        image_dir = root / image_sub
        if not image_dir.is_dir():
            if split == "train":
                raise LeFusionError(f"{image_dir}: folder not found")
            continue
        images = sorted(p for p in image_dir.iterdir() if p.name.endswith(suffix) and not p.name.startswith("."))
        if split == "train" and not images:
            raise LeFusionError(f"{image_dir}: no cases (no *{suffix} files)")
        for image in images:
            name = image.name[: -len(suffix)]
            label = root / label_sub / f"{name}{ending}"
            if not label.is_file():
                if split == "train":
                    raise LeFusionError(f"{image}: no label found (expected {label})")
                label = None  # test labels are optional in nnU-Net
            cases.append(Case(name, image, label, "pathological", split))
    return cases
