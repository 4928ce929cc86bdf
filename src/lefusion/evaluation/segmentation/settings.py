"""The paper's training settings by name, synthetic sets by method, and the mixes to train on.

Settings (LeFusion paper, downstream segmentation): the real pathological training cases P, plus
synthetic sets
    P'   lesions generated on the real pathological training masks,
    N'   lesions generated on normal (lesion-free) cases,
    N''  more lesions generated on normal cases (a larger N' set),
combined as P, P+P', P+N', P+N'', P+P'+N'' (any "P+<set>+..." combination is accepted).

A synthetic set belongs to a method (LeFusion or a baseline), written `METHOD:SET=DIR` on the command
line (`SET=DIR` takes the method the folder's manifest records, else "lefusion"). Each setting is trained once per method that provides
all its sets, so the table compares methods on the same settings; P uses no synthetic data and is
trained once, as method "real".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import LeFusionError

SYNTHETIC_SETS = ("P'", "N'", "N''")
PAPER_SETTINGS = ("P", "P+P'", "P+N'", "P+N''", "P+P'+N''")
REAL = "real"  # the method name of setting P
DEFAULT_METHOD = "lefusion"
# The cases each set must be generated on (checked against the manifest's source_role).
SET_ROLE = {"P'": "pathological", "N'": "normal", "N''": "normal"}

# Typographic primes and shell-friendly ASCII spellings of the set names.
_SET_ALIASES = {
    "P'": "P'",
    "P′": "P'",
    "Pp": "P'",
    "N'": "N'",
    "N′": "N'",
    "Np": "N'",
    "N''": "N''",
    "N″": "N''",
    "N′′": "N''",
    "Npp": "N''",
}
_METHOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SyntheticSpec:
    """One synthetic set: the method that made it (None: not given, read from the folder's
    manifest), which set it is, and its folder."""

    method: str | None
    set_name: str
    folder: Path


@dataclass(frozen=True)
class TrainingMix:
    """The training data of one table row: real training cases plus these synthetic sets."""

    setting: str
    method: str
    sets: tuple[SyntheticSpec, ...] = ()

    @property
    def slug(self) -> str:
        """A file-name-safe id, e.g. "P+P'+N''" by "copy-paste" -> "P_Pp_Npp__copy-paste"."""
        return f"{self.setting.replace('+', '_').replace(chr(39), 'p')}__{self.method}"


def set_name(text: str) -> str:
    """Canonical synthetic set name ("P'", "N'", "N''") of any accepted spelling."""
    name = _SET_ALIASES.get(text.strip())
    if name is None:
        raise LeFusionError(f"unknown synthetic set {text!r}; use one of P', N', N'' (ASCII: Pp, Np, Npp)")
    return name


def setting_sets(setting: str) -> tuple[str, ...]:
    """The synthetic sets of a setting name ("P+N'" -> ("N'",)); "P" -> ()."""
    parts = [p.strip() for p in setting.split("+")]
    if parts[0] != "P":
        raise LeFusionError(f"unknown setting {setting!r}: a setting starts with P (the real cases), e.g. {', '.join(PAPER_SETTINGS)}")
    sets = [set_name(p) for p in parts[1:]]
    if len(set(sets)) != len(sets):
        raise LeFusionError(f"setting {setting!r} names a synthetic set twice")
    return tuple(sorted(sets, key=SYNTHETIC_SETS.index))


def canonical_setting(setting: str) -> str:
    """ "P+Npp+Pp" -> "P+P'+N''" (sets in the order P', N', N'')."""
    return "+".join(("P", *setting_sets(setting)))


def parse_synthetic(text: str) -> SyntheticSpec:
    """`[METHOD:]SET=DIR` -> SyntheticSpec, e.g. "copy-paste:N'=gen/cp", or "N''=gen/n2" (method None:
    the one the folder's manifest records)."""
    head, sep, folder = text.partition("=")
    if not sep or not folder:
        raise LeFusionError(f"--synthetic {text!r}: expected [METHOD:]SET=DIR, e.g. lefusion:N'=gen/normal")
    method, colon, set_text = head.rpartition(":")
    if not colon:
        return SyntheticSpec(None, set_name(set_text), Path(folder))
    if not _METHOD.match(method) or method == REAL:
        raise LeFusionError(f"--synthetic {text!r}: method name {method!r} must be letters, digits, '-', '_' or '.', and not {REAL!r}")
    return SyntheticSpec(method, set_name(set_text), Path(folder))


def plan_mixes(settings: Sequence[str] | None, specs: Sequence[SyntheticSpec]) -> list[TrainingMix]:
    """The (setting, method) rows to train, in the order of `settings`, then of the methods' first
    appearance in `specs`.

    Every spec must have its method resolved (see `sources.manifest_method`).
    settings None: P plus every paper setting some method provides all sets for. A requested setting
    runs for every method that has all its sets; it is an error when no method has them, or when a
    method has some of its sets but not all (likely a forgotten --synthetic).
    """
    by_key: dict[tuple[str, str], SyntheticSpec] = {}
    for spec in specs:
        if spec.method is None:
            raise ValueError(f"{spec.folder}: synthetic set without a method; resolve it before planning")
        key = (spec.method, spec.set_name)
        if key in by_key:
            raise LeFusionError(f"synthetic set {spec.set_name} of method {spec.method} given twice ({by_key[key].folder}, {spec.folder})")
        by_key[key] = spec
    methods: list[str] = list(dict.fromkeys(spec.method for spec in specs if spec.method))
    explicit = settings is not None
    names = [canonical_setting(s) for s in settings] if explicit else list(PAPER_SETTINGS)
    mixes: list[TrainingMix] = []
    for setting in dict.fromkeys(names):
        needed = setting_sets(setting)
        if not needed:
            mixes.append(TrainingMix(setting, REAL))
            continue
        found = 0
        for method in methods:
            have = [by_key[(method, s)] for s in needed if (method, s) in by_key]
            if len(have) == len(needed):
                mixes.append(TrainingMix(setting, method, tuple(have)))
                found += 1
            elif have and explicit:
                missing = [s for s in needed if (method, s) not in by_key]
                raise LeFusionError(
                    f"setting {setting}: method {method} has no synthetic set {' or '.join(missing)} (add --synthetic {method}:{missing[0]}=DIR)"
                )
        if explicit and not found:
            missing = " and ".join(needed)
            raise LeFusionError(f"setting {setting} needs synthetic set {missing}; none given (add --synthetic [METHOD:]SET=DIR)")
    return mixes
