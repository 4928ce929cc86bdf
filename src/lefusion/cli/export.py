"""`lefusion export ...`: real + synthetic data in the layouts other tools train on (nnU-Net raw)."""

from __future__ import annotations

import argparse

from ..export.nnunet import export_nnunet


def _nnunet(args: argparse.Namespace) -> int:
    summary = export_nnunet(
        args.real,
        args.out,
        synthetic=args.synthetic,
        dataset_id=args.dataset_id,
        name=args.name,
        lesion_labels=tuple(args.lesion_labels) if args.lesion_labels else None,
        modality=args.modality,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        overwrite=args.overwrite,
    )
    print(summary.describe())
    return 0


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write real + synthetic data as a dataset for other trainers (nnU-Net)")
    xsub = export.add_subparsers(dest="export_command", required=True)

    p = xsub.add_parser(
        "nnunet",
        help="nnU-Net v2 raw dataset: imagesTr/, labelsTr/, imagesTs/ (real test cases), dataset.json",
        description=(
            "Write the real pathological training cases and any synthetic sets as an nnU-Net v2 raw dataset; the real "
            "test cases go to imagesTs/ (labels in labelsTs/). Labels are remapped to 0..K when their ids are not "
            "consecutive (the mapping is in dataset.json). Written to a temporary folder and renamed when complete. "
            "If nnunetv2 is installed its dataset integrity check is run."
        ),
    )
    p.add_argument("--real", required=True, help="real dataset root (any layout lefusion reads)")
    p.add_argument("--synthetic", nargs="+", default=[], metavar="DIR", help="`lefusion generate` output folders to add to imagesTr")
    p.add_argument(
        "--out",
        required=True,
        help="the dataset folder, e.g. nnUNet_raw/Dataset501_LungSyn; or nnUNet_raw itself when --dataset-id and --name are given",
    )
    p.add_argument("--dataset-id", type=int, help="nnU-Net dataset id (1-999; default: from the --out folder name)")
    p.add_argument("--name", help="dataset name (default: from the --out folder name)")
    p.add_argument("--lesion-labels", type=int, nargs="+", help="lesion label ids (default by layout: LIDC 1; EMIDEC 3 4)")
    p.add_argument(
        "--modality", choices=["ct", "mri"], help="channel name: CT (nnU-Net's CT normalisation) or MRI (z-score); default by layout"
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="only for a dataset without a test split: fraction of patients held out"
    )
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(handler=_nnunet)
