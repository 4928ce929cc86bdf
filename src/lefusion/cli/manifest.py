"""`lefusion manifest merge`: the shard manifests of a sharded run joined into the one an unsharded run writes."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LeFusionError
from ..jobs import NnunetTarget, export_augmented
from ..sharding import merge_folder


def _merge(args: argparse.Namespace) -> int:
    if (args.nnunet_id is None) != (args.name is None):
        raise LeFusionError("--nnunet-id and --name go together (nnU-Net's DatasetNNN_NAME)")
    out = Path(args.out)
    if not out.is_dir():
        raise LeFusionError(f"{out}: no such output folder")
    merged = merge_folder(out)
    if not merged and not (out / "manifest.json").is_file():
        raise LeFusionError(f"{out}: no shard manifests (*.shard-K-of-N.json) to merge")
    for path in merged:
        print(f"merged {path}")
    if not merged:
        print(f"{out}: no shard manifests; manifest.json is already the whole run's")
    if args.nnunet_id is not None:
        print(export_augmented(out, NnunetTarget(args.nnunet_id, args.name)).describe())
    return 0


def add_manifest_parser(sub: argparse._SubParsersAction) -> None:
    manifest = sub.add_parser("manifest", help="manifests of generated datasets: merge the shards of a sharded run")
    msub = manifest.add_subparsers(dest="manifest_command", required=True)
    p = msub.add_parser(
        "merge",
        help="join every NAME.shard-K-of-N.json under OUT (also work/) into NAME.json, as an unsharded run writes it "
        "(every shard must have finished)",
    )
    p.add_argument("out", help="the output folder the shards wrote into")
    p.add_argument("--nnunet-id", type=int, help="augment runs: then write OUT/nnUNet_raw/DatasetNNN_NAME from the merged set")
    p.add_argument("--name", help="nnU-Net dataset name (with --nnunet-id)")
    p.set_defaults(handler=_merge)
