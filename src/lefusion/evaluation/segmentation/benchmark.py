"""`lefusion evaluate segmentation`: train segmenters on real + synthetic mixes, score on real test cases.

For every (setting, method) mix, network and seed: train on the mix, predict the held-out real
test cases, score each lesion class (Dice, NSD, HD95), and save the result to
`out/runs/<mix>__<network>__seed<k>.json` atomically. A re-run skips saved results (after checking
they were trained on the same cases), so an interrupted benchmark resumes, and adding a seed, a
setting or a network only trains what is new. The report (per_case.csv, summary.csv, summary.md,
summary.png) is rebuilt from the saved results at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...data.sources import (
    LabelScheme,
    Modality,
    RealSplit,
    SyntheticCase,
    drop_leaking,
    label_scheme,
    manifest_method,
    read_synthetic_set,
    split_real,
)
from ...device import resolve_device
from ...errors import LeFusionError
from ...io import atomic_write_text
from .data import Normaliser, Sample, largest_shape, read_cases, stack_padded, to_samples
from .metrics import score_case
from .networks import NetworkPlan, check_available, plan_network
from .report import write_report
from .settings import DEFAULT_METHOD, SET_ROLE, SyntheticSpec, TrainingMix, plan_mixes
from .train import TrainSettings, predict, train_segmenter

BENCHMARK_RECORD = "benchmark.json"
RUNS = "runs"
# Whole volumes are trained on; past this many voxels per case a patch-based trainer is the right tool.
MAX_VOXELS = 128 * 256 * 256


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to train and how to score it. `settings` None = P plus every paper setting the given
    synthetic sets allow; `width` None = each network's default width."""

    settings: tuple[str, ...] | None = None
    networks: tuple[str, ...] = ("unet",)
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainSettings = field(default_factory=TrainSettings)
    width: int | None = None
    deep_supervision: bool = False
    nsd_tolerance: float = 1.0
    test_fraction: float = 0.2
    split_seed: int = 0
    lesion_labels: tuple[int, ...] | None = None
    modality: Modality | None = None
    device: str = "auto"
    # Runs trained side by side, each in its own process with `threads_per_worker` torch threads.
    # Small phantom-sized U-Nets barely use a second core, so on a CPU two 1-thread workers get
    # through the runs faster than one 2-thread process. Results do not depend on it.
    workers: int = 1
    threads_per_worker: int = 1


@dataclass(frozen=True)
class Job:
    mix: TrainingMix
    network: str
    seed: int

    @property
    def file_name(self) -> str:
        return f"{self.mix.slug}__{self.network}__seed{self.seed}.json"


def run_benchmark(
    real_root: str | Path,
    synthetic: Sequence[SyntheticSpec],
    out_dir: str | Path,
    config: BenchmarkConfig,
    progress: bool = True,
) -> dict[str, Path]:
    """Run (or resume) the benchmark; returns the report paths (per_case.csv, summary.csv,
    summary.md, summary.png). LeFusionError for bad input: unknown network or setting, missing
    synthetic set, unreadable cases, a results folder made with other settings."""
    real_root, out = Path(real_root), Path(out_dir)
    for network in config.networks:
        check_available(network)
    if config.train.iterations < 1 or config.train.batch_size < 1:
        raise LeFusionError("iterations and batch size must be at least 1")
    if not config.seeds:
        raise LeFusionError("give at least one seed")
    scheme = label_scheme(real_root, config.lesion_labels, config.modality)
    split = split_real(real_root, config.test_fraction, config.split_seed)
    synthetic = [s if s.method else dataclasses.replace(s, method=manifest_method(s.folder) or DEFAULT_METHOD) for s in synthetic]
    mixes = plan_mixes(config.settings, synthetic)
    sets, dropped = _synthetic_sets(mixes, split)
    _check_record(out, real_root, scheme, split, config)

    jobs = [Job(mix, network, seed) for mix in mixes for network in config.networks for seed in config.seeds]
    training_ids = {mix.slug: _training_ids(mix, split, sets) for mix in mixes}
    todo = [job for job in jobs if not _done(out / RUNS / job.file_name, training_ids[job.mix.slug])]
    if progress:
        print(
            f"{len(jobs)} run(s): {len(mixes)} training mix(es) x {len(config.networks)} network(s) x {len(config.seeds)} seed(s); "
            f"{len(jobs) - len(todo)} already done; test set: {len(split.test)} real case(s), {split.note}"
        )
    if todo:
        _run_jobs(todo, real_root, scheme, split, sets, training_ids, out, config, progress)

    per_case = [row for job in jobs for row in json.loads((out / RUNS / job.file_name).read_text())["rows"]]
    notes = _notes(real_root, scheme, split, mixes, sets, dropped, config)
    return write_report(per_case, out, notes)


# ------------------------------------------------------------------------------------------ inputs


def _synthetic_sets(
    mixes: Sequence[TrainingMix], split: RealSplit
) -> tuple[dict[tuple[str, str], list[SyntheticCase]], dict[tuple[str, str], int]]:
    """(method, set) -> synthetic cases kept, and -> number dropped for leaking a test case."""
    sets, dropped = {}, {}
    for spec in dict.fromkeys(s for mix in mixes for s in mix.sets):
        cases = read_synthetic_set(spec.folder)
        wrong = sorted({c.role for c in cases if c.role and c.role != SET_ROLE[spec.set_name]})
        if wrong:
            # A swapped argument would silently put the wrong data in a table row.
            raise LeFusionError(
                f"{spec.folder}: synthetic set {spec.set_name} must be generated on {SET_ROLE[spec.set_name]} cases, "
                f"but its manifest lists outputs made on {' and '.join(wrong)} cases (P' = real pathological masks; N', N'' = normal cases)"
            )
        kept, n_dropped = drop_leaking(cases, split)
        if not kept:
            raise LeFusionError(
                f"{spec.folder}: every case of synthetic set {spec.set_name} ({spec.method}) was made from a test case; nothing left to train on"
            )
        sets[(spec.method, spec.set_name)], dropped[(spec.method, spec.set_name)] = kept, n_dropped
    return sets, dropped


def _training_ids(mix: TrainingMix, split: RealSplit, sets: dict) -> list[str]:
    """Identities of a mix's training cases: real case names and "method/set/name" of synthetic ones."""
    ids = [c.name for c in split.train]
    for spec in mix.sets:
        ids += [f"{spec.method}/{spec.set_name}/{c.name}" for c in sets[(spec.method, spec.set_name)]]
    return ids


def _fingerprint(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _check_record(out: Path, real_root: Path, scheme: LabelScheme, split: RealSplit, config: BenchmarkConfig) -> None:
    """Refuse a results folder made with another dataset, test set or training recipe (its saved
    results would not be comparable); write the record on first use."""
    fixed = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in ("settings", "networks", "seeds", "device", "workers", "threads_per_worker")
    }
    record = json.loads(
        json.dumps(
            {
                "real": str(real_root.resolve()),
                "labels": dataclasses.asdict(scheme),
                "test_cases": [c.name for c in split.test],
                "real_train_cases": [c.name for c in split.train],
                "config": fixed,
            }
        )
    )
    path = out / BENCHMARK_RECORD
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = [k for k in record if previous.get(k) != record[k]]
        if changed:
            raise LeFusionError(f"{path}: this results folder was made with other {', '.join(changed)}; use a new --out")
    else:
        atomic_write_text(path, json.dumps(record, indent=2))


def _done(path: Path, ids: Sequence[str]) -> bool:
    if not path.is_file():
        return False
    saved = json.loads(path.read_text())
    if saved.get("training_fingerprint") != _fingerprint(ids):
        raise LeFusionError(f"{path}: was trained on other cases than this run's synthetic sets give; use a new --out or delete it")
    return True


# ------------------------------------------------------------------------------------------- runs


def _run_jobs(
    todo: Sequence[Job],
    real_root: Path,
    scheme: LabelScheme,
    split: RealSplit,
    sets: dict,
    training_ids: dict,
    out: Path,
    config: BenchmarkConfig,
    progress: bool,
) -> None:
    """Read and normalise every case once, then train, predict and score each job."""
    device = resolve_device(config.device)
    raw_train = read_cases([(c.name, c.image, c.mask) for c in split.train], scheme)
    normaliser = Normaliser.fit(scheme.modality, ((c.image, c.label) for c in raw_train))
    real_train = to_samples(raw_train, scheme, normaliser)
    test = to_samples(read_cases([(c.name, c.image, c.mask) for c in split.test], scheme), scheme, normaliser)
    synthetic: dict[tuple[str, str], list[Sample]] = {
        key: to_samples(read_cases([(c.name, c.image, c.label) for c in cases], scheme), scheme, normaliser) for key, cases in sets.items()
    }
    every = [*real_train, *test, *(s for samples in synthetic.values() for s in samples)]
    shape = largest_shape(every)
    if int(np.prod(shape)) > MAX_VOXELS:
        raise LeFusionError(
            f"{real_root}: cases up to {shape} voxels are too large for whole-volume training; "
            "crop them to lesion ROIs, or export the data with `lefusion export nnunet` and train nnU-Net"
        )
    spacing = tuple(float(v) for v in np.median(np.asarray([s.spacing for s in real_train]), axis=0))
    n_classes = len(scheme.all_labels)
    plans = {n: plan_network(n, shape, spacing, n_classes, config.width, config.deep_supervision) for n in config.networks}  # type: ignore[arg-type]

    tasks = []
    for k, job in enumerate(todo, 1):
        samples = real_train + [s for spec in job.mix.sets for s in synthetic[(spec.method, spec.set_name)]]
        desc = f"[{k}/{len(todo)}] {job.mix.setting} {job.mix.method} {job.network} seed {job.seed}"
        tasks.append(
            _RunTask(
                job,
                plans[job.network],
                samples,
                test,
                scheme,
                config,
                device,
                out,
                _fingerprint(training_ids[job.mix.slug]),
                dataclasses.asdict(normaliser),
                desc,
            )
        )
    if config.workers <= 1:
        for task in tasks:
            _report_run(task, _train_and_score(task, progress), progress)
        return
    import concurrent.futures
    import multiprocessing

    # spawn, not fork: a forked child would inherit torch's thread pools in an undefined state.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        config.workers, mp_context=context, initializer=torch.set_num_threads, initargs=(config.threads_per_worker,)
    ) as pool:
        futures = {pool.submit(_train_and_score, task, False): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            _report_run(futures[future], future.result(), progress)


@dataclass(frozen=True)
class _RunTask:
    """Everything one segmenter run needs; picklable, so a worker process can run it."""

    job: Job
    plan: NetworkPlan
    samples: list[Sample]
    test: list[Sample]
    scheme: LabelScheme
    config: BenchmarkConfig
    device: torch.device
    out: Path
    fingerprint: str
    normalisation: dict
    desc: str


def _train_and_score(task: _RunTask, progress: bool) -> dict:
    """Train one segmenter on task.samples, predict and score the test cases, save the record
    atomically to out/runs/<job>.json and return it."""
    job, plan, config = task.job, task.plan, task.config
    images, labels = stack_padded(task.samples, plan.input_shape)
    start = time.perf_counter()
    net = train_segmenter(plan, images, labels, config.train, job.seed, task.device, task.desc, progress)
    test_images, _ = stack_padded(task.test, plan.input_shape)
    predictions = predict(net, test_images, task.device, config.train.amp)
    rows = _score(job, task.test, predictions, task.scheme, config.nsd_tolerance)
    record = {
        "setting": job.mix.setting,
        "method": job.mix.method,
        "network": job.network,
        "seed": job.seed,
        "plan": dataclasses.asdict(plan),
        "normalisation": task.normalisation,
        "device": str(task.device),
        "training_cases": len(task.samples),
        "training_fingerprint": task.fingerprint,
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    atomic_write_text(task.out / RUNS / job.file_name, json.dumps(record, indent=1))
    return record


def _report_run(task: _RunTask, record: dict, progress: bool) -> None:
    if progress:
        dice = ", ".join(f"{r['class']} {r['dice']:.3f}" for r in _class_means(record["rows"]))
        print(f"{task.desc}: {record['training_cases']} training cases, {record['seconds']} s; mean Dice {dice}", flush=True)


def _score(job: Job, test: Sequence[Sample], predictions: torch.Tensor, scheme: LabelScheme, tolerance: float) -> list[dict]:
    """Per-case, per-lesion-class rows (fields report.PER_CASE_FIELDS); predictions (N, D, H, W)
    padded class indices, cropped back to each case's own shape."""
    rows = []
    for sample, prediction in zip(test, predictions):
        d, h, w = sample.label.shape
        pred = prediction[:d, :h, :w].numpy()
        for label in scheme.lesion_labels:
            index = scheme.all_labels.index(label)
            s = score_case(pred == index, sample.label == index, sample.spacing, tolerance)
            rows.append(
                {
                    "setting": job.mix.setting,
                    "method": job.mix.method,
                    "network": job.network,
                    "seed": job.seed,
                    "case": sample.name,
                    "class_id": label,
                    "class": scheme.name(label),
                    "dice": s.dice,
                    "nsd": s.nsd,
                    "hd95_mm": s.hd95,
                    "reference_voxels": s.reference_voxels,
                    "predicted_voxels": s.predicted_voxels,
                }
            )
    return rows


def _class_means(rows: Sequence[dict]) -> list[dict]:
    by_class: dict[str, list[float]] = {}
    for row in rows:
        by_class.setdefault(row["class"], []).append(row["dice"])
    return [{"class": name, "dice": float(np.mean(values))} for name, values in by_class.items()]


def _notes(
    real_root: Path, scheme: LabelScheme, split: RealSplit, mixes: Sequence[TrainingMix], sets: dict, dropped: dict, config: BenchmarkConfig
) -> list[str]:
    """The sentences above the table: data, split, training sets, recipe and metric conventions."""
    classes = ", ".join(f"{scheme.name(v)} ({v})" for v in scheme.all_labels[1:])
    lesions = ", ".join(f"{scheme.name(v)} ({v})" for v in scheme.lesion_labels)
    notes = [
        f"Real data: `{real_root}` ({scheme.modality.upper()}), {len(split.train)} real training cases; "
        f"test set: {len(split.test)} real case(s), {split.note}.",
        f"The segmenter predicts {classes}; scored lesion classes: {lesions}.",
    ]
    for (method, set_name), cases in sets.items():
        folder = next(s.folder for mix in mixes for s in mix.sets if (s.method, s.set_name) == (method, set_name))
        extra = f"; {dropped[(method, set_name)]} made from test cases left out" if dropped[(method, set_name)] else ""
        notes.append(f"Synthetic {set_name} by {method}: `{folder}`, {len(cases)} cases{extra}.")
    t = config.train
    notes += [
        f"Training: {t.iterations} iterations, batch {t.batch_size}, AdamW lr {t.lr:g} with polynomial decay, Dice + CE loss, "
        f"random flips, whole volumes padded to the network's multiple; "
        + (
            "CT clipped to the 0.5/99.5 percentiles of real training foreground, then z-scored."
            if scheme.modality == "ct"
            else "MRI z-scored per case."
        ),
        f"Metrics per test case and lesion class; mean ± std over seeds {', '.join(map(str, config.seeds))} of the per-seed mean over cases. "
        f"Dice and NSD (tolerance {config.nsd_tolerance:g} mm) over all test cases (an empty prediction of a present lesion scores 0, "
        "both empty scores 1); HD95 over cases where both masks are non-empty, with misses counted beside it.",
    ]
    return notes
