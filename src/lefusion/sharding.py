"""Sharded runs: one generation job split over N processes (a SLURM array, torchrun), all writing
into the same output folder.

Shard K of N takes the batch groups g with g % N == K. A group is a run of consecutive cases of
the sorted case list (scans for `augment`, mask batches for `masks sample`), formed the same way
whatever the shard, so every batch (and with it the float rounding of batched kernels) is the
one an unsharded run would make: the union of the N shards' files is bit-identical to an
unsharded run with the same seed.

Files: each output has its own name, so shards never write the same one; what would be one
shared record (`manifest.json`, `masks.json`, `lesions.json`) is written per shard as
`NAME.shard-K-of-N.json` (atomically, temporary name + rename), with a `"shard"` entry saying
whether that shard has finished. `merge_shards` combines a complete set into the record an
unsharded run writes: the per-output tables ("outputs", "scans", "failed") are joined, "samples"
are joined in sample order, everything else must agree across the shards. Merging is a pure
function of the finished shard files, so shards that finish at the same time and both merge write
the same bytes, and the atomic rename makes either result the final one: merging when the last
shard finishes is race-free.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LeFusionError
from .io import atomic_write_text

_SHARD_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SHARD_FILE = re.compile(r"^(?P<stem>.+)\.shard-(?P<index>\d+)-of-(?P<count>\d+)(?P<suffix>\.json)$")
_TABLES = ("outputs", "scans", "failed")  # per-output tables: joined across shards
_LISTS = {"samples": "seed"}  # per-output lists: joined, ordered by this field


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise LeFusionError(f"--shard: need 0 <= K < N, got {self.index}/{self.count}")

    def takes(self, group: int) -> bool:
        """Whether batch group `group` (0-based, over the whole sorted case list) is this shard's."""
        return group % self.count == self.index

    @property
    def tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def path(self, path: str | Path) -> Path:
        """This shard's file for the shared record `path`: manifest.json -> manifest.shard-K-of-N.json."""
        path = Path(path)
        return path.with_name(f"{path.stem}.{self.tag}{path.suffix}")


def parse_shard(text: str) -> Shard | None:
    """'K/N' -> Shard(K, N); None for N = 1 (one shard is an unsharded run). LeFusionError otherwise."""
    match = _SHARD_TEXT.match(text)
    if not match:
        raise LeFusionError(f"--shard: expected K/N with 0 <= K < N (e.g. 3/16), got {text!r}")
    shard = Shard(int(match[1]), int(match[2]))
    return None if shard.count == 1 else shard


def shard_from_env(environ: Mapping[str, str] = os.environ) -> Shard | None:
    """The shard torchrun gives a process (RANK of WORLD_SIZE), None when not under torchrun or alone."""
    rank, world = environ.get("RANK"), environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return None
    try:
        return parse_shard(f"{int(rank)}/{int(world)}")
    except (ValueError, LeFusionError) as exc:
        raise LeFusionError(f"RANK={rank!r} WORLD_SIZE={world!r}: not a shard (need 0 <= RANK < WORLD_SIZE)") from exc


def resolve_shard(text: str | None, environ: Mapping[str, str] = os.environ) -> Shard | None:
    """An explicit --shard K/N wins; else RANK / WORLD_SIZE from torchrun; else unsharded (None)."""
    return parse_shard(text) if text is not None else shard_from_env(environ)


def record_path(path: str | Path, shard: Shard | None) -> Path:
    """Where a run writes the record `path`: itself unsharded, the shard's own file otherwise."""
    return Path(path) if shard is None else shard.path(path)


def shard_files(path: str | Path) -> dict[int, dict[int, Path]]:
    """The shard files of the record `path` in its folder: {N: {K: file}}."""
    path = Path(path)
    found: dict[int, dict[int, Path]] = {}
    if not path.parent.is_dir():
        return found
    for file in path.parent.iterdir():
        match = _SHARD_FILE.match(file.name)
        if match and match["stem"] == path.stem and match["suffix"] == path.suffix:
            found.setdefault(int(match["count"]), {})[int(match["index"])] = file
    return found


def write_shard_record(path: Path, record: dict[str, Any], shard: Shard | None, complete: bool) -> Path:
    """Write `record` to `record_path(path, shard)` atomically; a shard's file says whether it has finished."""
    if shard is not None:
        record = {**record, "shard": {"index": shard.index, "count": shard.count, "complete": complete}}
    return atomic_write_text(record_path(path, shard), json.dumps(record, indent=2))


def merge_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The record an unsharded run writes, from the records of shards 0..N-1 (module docstring)."""
    merged: dict[str, Any] = {}
    for key in records[0]:
        if key == "shard":
            continue
        values = [r.get(key) for r in records]
        if key in _TABLES and all(isinstance(v, dict) for v in values):
            table: dict[str, Any] = {}
            for value in values:
                for name, entry in value.items():
                    table.setdefault(name, entry)
            merged[key] = dict(sorted(table.items()))
        elif key in _LISTS and all(isinstance(v, list) for v in values):
            by = _LISTS[key]
            merged[key] = sorted((item for value in values for item in value), key=lambda item: item[by])
        elif any(v != values[0] for v in values):
            raise LeFusionError(f"the shards disagree on {key!r}: were they run with the same command?")
        else:
            merged[key] = values[0]
    return merged


def merge_shards(path: str | Path, strict: bool = True) -> Path | None:
    """Merge the complete shard set of the record `path` into `path`; returns it, or None if
    there is nothing to merge. strict: LeFusionError naming the missing or unfinished shards (for
    `lefusion manifest merge`); otherwise an incomplete set is left alone (for the last shard's
    automatic merge)."""
    path = Path(path)
    sets = shard_files(path)
    if not sets:
        return None
    if len(sets) > 1:
        if not strict:
            return None
        counts = ", ".join(f"of-{n}" for n in sorted(sets))
        raise LeFusionError(f"{path.parent}: shard files of several shard counts ({counts}) for {path.name}; remove the stale ones")
    ((count, files),) = sets.items()
    records, missing = [], []
    for index in range(count):
        try:
            record = json.loads(files[index].read_text()) if index in files else None
        except (OSError, ValueError):
            record = None
        if record is None or not record.get("shard", {}).get("complete"):
            missing.append(index)
        else:
            records.append(record)
    if missing:
        if not strict:
            return None
        raise LeFusionError(f"{path.parent}: {path.name}: shard(s) {', '.join(map(str, missing))} of {count} missing or unfinished")
    return atomic_write_text(path, json.dumps(merge_records(records), indent=2))


def merge_folder(out: str | Path, strict: bool = True) -> list[Path]:
    """Merge every shard set under `out` (also in subfolders, e.g. augment's work/); the merged paths."""
    records = {
        f.with_name(f"{m['stem']}{m['suffix']}")
        for f in Path(out).rglob("*.shard-*-of-*.json")
        if (m := _SHARD_FILE.match(f.name)) and not f.name.startswith(".")
    }
    merged = [merge_shards(p, strict) for p in sorted(records)]
    return [p for p in merged if p is not None]
