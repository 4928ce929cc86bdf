"""Train on a dataset folder: pick the layout's conventions, fit histogram presets, run, export."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig, context_channels
from ..control.presets import fit_presets
from ..data.conventions import DataConventions, conventions_for
from ..data.dataset import LesionRoiDataset
from ..data.layouts import NNUNET, PLAIN, detect_layout, find_cases
from ..errors import LeFusionError
from ..io import atomic_write_text
from .distributed import distributed
from .trainer import TrainConfig, train

RUN_CONFIG = "run_config.json"


def training_dataset(root: Path, conventions: DataConventions) -> LesionRoiDataset:
    """The pathological training cases of `root` (held-out test cases excluded), preprocessed: a
    LIDC / EMIDEC case as one centred ROI, a plain / nnU-Net whole scan as one ROI per lesion."""
    cases = [c for c in find_cases(root) if c.role == "pathological" and c.split == "train"]
    if not cases:
        raise LeFusionError(f"{root}: no pathological training cases found")
    # Plain and nnU-Net folders hold whole scans: one ROI per lesion, cut as generation cuts them.
    whole = detect_layout(root) in (PLAIN, NNUNET)
    return LesionRoiDataset(cases, conventions.preprocess, conventions.lesion_labels, conventions.allowed_labels, whole_scans=whole)


def train_on_folder(
    data_root: str | Path,
    run_dir: str | Path,
    train_config: TrainConfig,
    denoiser: DenoiserConfig | None = None,
    schedule: ScheduleConfig | None = None,
    lesion_labels: tuple[int, ...] | None = None,
    preprocess: PreprocessConfig | None = None,
    n_presets: int = 3,
    progress: bool = True,
    mask_input: bool = False,
    roi_shape: tuple[int, int, int] | None = None,
) -> Path:
    """Train a LeFusion model (or, with `train_config.method`, the Cond-Diffusion baseline) on
    `data_root`; returns the exported checkpoint folder.

    A run folder remembers its configuration (run_config.json): resuming with different settings
    is refused rather than silently mixing two runs. mask_input: the network also sees the lesion
    masks (`ModelConfig.mask_input`); roi_shape: (D, H, W) instead of the preprocessing's own.
    """
    data_root, run_dir = Path(data_root), Path(run_dir)
    conventions = conventions_for(data_root, lesion_labels, preprocess)
    if roi_shape is not None:
        conventions = dataclasses.replace(conventions, preprocess=dataclasses.replace(conventions.preprocess, roi_shape=tuple(roi_shape)))
    dataset = training_dataset(data_root, conventions)
    if conventions.preprocess.spacing is None:  # record the grid the model learns on, for whole scans
        conventions = dataclasses.replace(
            conventions, preprocess=dataclasses.replace(conventions.preprocess, spacing=dataset.common_spacing)
        )
    n_classes = len(conventions.lesion_labels)
    denoiser = denoiser or DenoiserConfig()
    # Cond-Diffusion keeps LeFusion's histogram condition, so `--preset` means the same for both.
    kind = train_config.method
    if kind == "cond-diffusion" and mask_input:
        raise LeFusionError("--method cond-diffusion already sees the masks (and the masked image); drop --mask-input")
    extra_channels = context_channels(kind, n_classes, mask_input)
    denoiser = dataclasses.replace(
        denoiser, channels=n_classes, cond_dim=n_classes * conventions.preprocess.hist_bins, extra_in_channels=extra_channels
    )
    presets = fit_presets(dataset.hists, n_presets, seed=train_config.seed, bins=conventions.preprocess.hist_bins)
    model_config = ModelConfig(
        denoiser=denoiser,
        schedule=schedule or ScheduleConfig(),
        preprocess=conventions.preprocess,
        lesion_labels=conventions.lesion_labels,
        context_labels=conventions.context_labels,
        hist_presets=tuple(presets),
        loss=train_config.loss,
        source=f"{'Cond-Diffusion baseline ' if kind == 'cond-diffusion' else ''}trained on {data_root}",
        mask_input=mask_input,
        kind=kind,
    )
    record = {"model": model_config.to_dict(), "train": dataclasses.asdict(train_config), "n_cases": len(dataset)}
    record_path = run_dir / RUN_CONFIG
    if record_path.is_file():
        previous = json.loads(record_path.read_text())
        ignore = ("steps", "save_every", "device", "workers")  # settings that do not change the result
        # a setting newer than the run folder counts as its default (e.g. `method` for older LeFusion runs)
        defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
        # a run folder from before configs named their kind infers it from its train method
        legacy_extra = {"cond_diffusion": {}} if previous["train"].get("method") == "cond-diffusion" else {}
        # ... and one from before the preprocessing recorded its spacing learnt on the same grid
        previous["model"].setdefault("preprocess", {}).setdefault("spacing", model_config.preprocess.spacing)
        same = ModelConfig.from_dict(previous["model"], legacy_extra) == ModelConfig.from_dict(
            json.loads(json.dumps(record["model"]))
        ) and all(
            previous["train"].get(k, defaults.get(k)) == v for k, v in json.loads(json.dumps(record["train"])).items() if k not in ignore
        )
        if not same:
            raise LeFusionError(f"{record_path}: this run folder was started with other settings; use a new --out folder")
    with distributed(train_config.device) as ddp:  # train() below runs in this same process group
        ddp.barrier()  # every rank has compared the record before rank 0 (re)writes it
        if ddp.is_main:
            atomic_write_text(record_path, json.dumps(record, indent=2))
        if progress and ddp.is_main:
            processes = f" in {ddp.world_size} processes" if ddp.enabled else ""
            print(f"training on {len(dataset)} ROIs from {data_root}{processes}; {len(presets)} histogram presets; run folder {run_dir}")
        return train(dataset, model_config, train_config, run_dir, progress=progress)
