"""Does synthetic data help? The phantom segmentation benchmark, end to end, as one command.

    python scripts/segmentation_benchmark.py --profile cpu --workdir outputs/benchmark-cpu   # make benchmark-cpu
    python scripts/segmentation_benchmark.py --profile gpu --workdir outputs/benchmark-gpu   # make benchmark-gpu
    python scripts/segmentation_benchmark.py --profile gpu --workdir W --dry-run             # only print the commands

Each profile is a fixed list of `lefusion` commands, run in WORKDIR with relative paths (printed
before each runs, so the log can be replayed by hand): write a lung phantom (LeFusion LIDC
layout), generate synthetic lesions with LeFusion and the baselines on the real pathological
training masks (P') and on the normal cases (N'), measure their image quality, train segmenters on
P, P+P' and P+N' and score them on the phantom's held-out real test cases. WORKDIR/REPORT.md
collects the commands, the time of every step, the segmentation table (Dice / NSD / HD95, mean ±
std over seeds) and an image-quality table; the table is also printed at the end.

Resumable: a step counts as done when it finished (WORKDIR/steps/NAME.json records its command and
time) and its outputs are still there; done steps are skipped, an interrupted one is simply run
again (every `lefusion` command resumes from what it already wrote). A step whose recorded command
differs from the profile's is refused: use a new WORKDIR.

One step is not a `lefusion` command: `p_train/` receives copies of the real pathological
TRAINING cases (never the test cases), because `lefusion generate` puts lesions into every masked
case of a folder without normal cases; generating P' on the whole Pathological/ folder would spend
time on test cases that the benchmark then drops as leaking.

Profiles
--------
cpu (2 CPU cores, < 30 minutes): phantom at the bundled model's ROI (16x32x32 voxels, 1.4 mm),
    seed 1 (not the seed-0 draw the bundled model was trained on), 28 pathological cases of which
    16 are held out for testing, so P has 12 training cases, and 12 normal cases. LeFusion is the
    bundled model `src/lefusion/assets/demo_lung` with plain ancestral sampling (jump length 1, 1
    sample: 100 network evaluations per lesion); RePaint and Cond-Diffusion are the bundled
    demo_lung_repaint and demo_lung_cond_diffusion, trained beside it by the same recipe
    (scripts/train_bundled_models.py; on the phantom before its part-solid nodules went down to
    5 mm, the demo model after), sampled the same way; Copy-Paste (donors: the 12 training
    lesions) and Hand-Crafted (the model's texture presets) on the same masks. Segmenter: MONAI 3D
    U-Net, 600 iterations, seeds 0 1 2 (33 runs). The steps of a stage (the generate steps, the
    quality steps, the segmenter runs) go two at a time, one thread each: these small models barely
    use a second thread (4 U-Net runs of 600 iterations: 83.6 s as one 2-thread process, 62.5 s as
    two 1-thread workers, benchmarks/segmentation_workers.py).
    Caveat the report repeats: the bundled models learned from 88 other phantom nodules, more
    lesions than the 12 that P has, so the diffusion rows here include that extra knowledge of the
    phantom's lesion distribution; the gpu profile trains every generator on P's own training cases.

    MEASURED (`make benchmark-cpu` from an empty work folder, 2 idle CPU cores, 2026-12-01, with the
    retrained demo model): 1,448 s end to end. Phantom + p_train 6 s; the six diffusion generate
    steps (12 lesions each, two at a time) 248-320 s each; Copy-Paste and Hand-Crafted 2-3 s each;
    quality 3-5 s per set; segmentation (33 U-Net runs, two at a time) 510 s.
    Why 600 iterations: on this phantom a P-only U-Net scored the same Dice after 600 and 1,200
    iterations (48 % vs 47 %, seed 0), so more iterations would buy nothing but time.

gpu (one CUDA GPU; NOT RUN: no GPU was available where this script was written, so it is
    untimed): phantom at the published LIDC ROI (32x64x64 voxels, 1.0 x 0.7 x 0.7 mm), 64
    pathological cases (32 held out, 32 for training) and 64 normal cases. Three diffusion models
    trained on the 32 training cases with the published architecture (dim 64, mults 1 2 4 8, 8
    heads x 32, T = 300) for 20,000 steps each (batch 4 x 2 accumulation, EMA from step 2,000,
    bfloat16): LeFusion (lesion-focused loss), RePaint (same network and sampler, global loss) and
    Cond-Diffusion (mask + masked image as input channels). Published sampler (jump length 10 x 10:
    2,910 network evaluations per lesion; Cond-Diffusion: plain DDPM, 300). Segmenters: DynUNet
    (nnU-Net-style) and SwinUNETR, 1,000 iterations, seeds 0-4 (11 mixes x 2 networks x 5 seeds =
    110 runs). Workload: 3 x 20,000 training steps; 2 x 96 lesions x 2,910 + 96 x 300 network
    evaluations at 32x64x64.

smoke (tests): phantom 8x16x16, diffusion models trained for 2 steps at dim 8 with T = 10, every
    method of the gpu profile, 2 segmenter iterations, 2 seeds: about 15 s at one thread with
    --in-process (measured), longer without it (each of the 26 commands starts its own interpreter,
    2-4 s each). The numbers mean nothing; it checks that the chain runs and resumes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

STEPS_DIR = "steps"
RECIPE_RECORD = "recipe.json"
REPORT = "REPORT.md"
REAL = "lung"  # the phantom dataset folder inside WORKDIR
P_TRAIN = "p_train"  # copies of its pathological training cases: the masks P' is generated on
SETS = {"P'": ("Pp", P_TRAIN), "N'": ("Np", REAL)}  # set -> (ASCII tag for folder names, --data of generate)


# ------------------------------------------------------------------------------------------ profiles


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the recipes; the command list is built from it by `plan`.

    phantom: `lefusion phantom lung` flags; models: method -> `lefusion train` flags for the
    diffusion models the profile trains (None = use the bundled model for LeFusion); methods: the
    generators compared, in table order; threads: OMP_NUM_THREADS for the commands (None = leave
    the environment's); workers: steps of one stage (the generate steps, the quality steps) run
    this many at a time, and the segmenter runs likewise (`evaluate segmentation --workers`); each
    command gets `threads` threads."""

    name: str
    phantom: tuple[str, ...]
    models: dict[str, tuple[str, ...]] | None
    methods: tuple[str, ...]
    sampler: tuple[str, ...]
    generate_batch: int
    networks: tuple[str, ...]
    seeds: tuple[int, ...]
    iterations: int
    patch_size: tuple[int, int, int]
    threads: int | None
    caveats: tuple[str, ...] = ()
    workers: int = 1


# Filled from the bundled model's config.json by `caveats`, so it stays true if the model is retrained.
BUNDLED_MODEL_CAVEAT = "{bundled}"
CPU_CAVEATS = (
    BUNDLED_MODEL_CAVEAT,
    "RePaint and Cond-Diffusion are the bundled demo_lung_repaint and demo_lung_cond_diffusion, trained beside the "
    "demo model by the same recipe (phantom seed, architecture, optimiser and L2 loss) for 3,000 steps against its "
    "4,000 (scripts/train_bundled_models.py): RePaint with the global loss and the plain network input (a standard "
    "diffusion model, inpainting with the same sampler), Cond-Diffusion with masks and masked image as input channels, "
    "generating the whole ROI; the demo model also sees the lesion masks (train --mask-input). The two baselines were "
    "trained on the phantom before its part-solid nodules went down from 8 to 5 mm, the demo model after.",
    "Sampler: plain ancestral sampling (100 steps, no time travel), not the published jump schedule.",
    "16 real test cases, 3 seeds, a small U-Net trained for 600 iterations: differences of a few Dice points are "
    "within the noise of this setup.",
)
GPU_ARCH = ("--dim", "64", "--dim-mults", "1", "2", "4", "8", "--heads", "8", "--dim-head", "32", "--timesteps", "300")
GPU_TRAIN = (
    "--steps",
    "20000",
    "--batch-size",
    "4",
    "--grad-accum",
    "2",
    "--lr",
    "1e-4",
    "--ema-start",
    "2000",
    "--ema-every",
    "10",
    "--save-every",
    "1000",
    "--seed",
    "0",
    "--amp",
    *GPU_ARCH,
    "--roi-shape",
    "32",
    "64",
    "64",
)
SMOKE_TRAIN = (
    "--steps",
    "2",
    "--batch-size",
    "2",
    "--grad-accum",
    "1",
    "--save-every",
    "2",
    "--seed",
    "0",
    "--dim",
    "8",
    "--dim-mults",
    "1",
    "2",
    "--heads",
    "1",
    "--dim-head",
    "8",
    "--timesteps",
    "10",
    "--roi-shape",
    "8",
    "16",
    "16",
)


def _trained(base: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The diffusion models a profile trains: LeFusion, RePaint (global loss), Cond-Diffusion."""
    return {
        "lefusion": base,
        "repaint": ("--loss", "global", *base),
        "cond-diffusion": ("--method", "cond-diffusion", *base),
    }


PROFILES: dict[str, Profile] = {
    "cpu": Profile(
        name="cpu",
        phantom=(
            "--n-pathological",
            "28",
            "--n-test",
            "16",
            "--n-normal",
            "12",
            "--roi-shape",
            "16",
            "32",
            "32",
            "--spacing",
            "1.4",
            "1.4",
            "1.4",
            "--seed",
            "1",
        ),
        models=None,
        methods=("lefusion", "repaint", "cond-diffusion", "copy-paste", "handcrafted"),
        sampler=("--jump-length", "1", "--jump-n-sample", "1"),
        generate_batch=12,
        networks=("unet",),
        seeds=(0, 1, 2),
        iterations=600,
        patch_size=(16, 16, 16),
        threads=1,
        caveats=CPU_CAVEATS,
        workers=2,
    ),
    "gpu": Profile(
        name="gpu",
        phantom=(
            "--n-pathological",
            "64",
            "--n-test",
            "32",
            "--n-normal",
            "64",
            "--roi-shape",
            "32",
            "64",
            "64",
            "--spacing",
            "1.0",
            "0.7",
            "0.7",
            "--seed",
            "1",
        ),
        models=_trained(GPU_TRAIN),
        methods=("lefusion", "repaint", "cond-diffusion", "copy-paste", "handcrafted"),
        sampler=("--jump-length", "10", "--jump-n-sample", "10"),
        generate_batch=16,
        networks=("dynunet", "swinunetr"),
        seeds=(0, 1, 2, 3, 4),
        iterations=1000,
        patch_size=(16, 16, 16),
        threads=None,
        caveats=("Every generator was trained on the 32 real training cases of P only (the paper's setup).",),
    ),
    "smoke": Profile(
        name="smoke",
        phantom=(
            "--n-pathological",
            "6",
            "--n-test",
            "2",
            "--n-normal",
            "3",
            "--roi-shape",
            "8",
            "16",
            "16",
            "--spacing",
            "2.0",
            "1.0",
            "1.0",
            "--seed",
            "1",
        ),
        models=_trained(SMOKE_TRAIN),
        methods=("lefusion", "repaint", "cond-diffusion", "copy-paste", "handcrafted"),
        sampler=("--jump-length", "1", "--jump-n-sample", "1"),
        generate_batch=8,
        networks=("unet",),
        seeds=(0, 1),
        iterations=2,
        patch_size=(8, 8, 8),
        threads=1,
        caveats=("Smoke test: models trained for 2 steps, segmenters for 2 iterations; the numbers mean nothing.",),
    ),
}


# --------------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    """One unit of the recipe. `argv`: a `lefusion` command (arguments after `lefusion`), or None
    for the in-script `action` described by `note`; `outputs`: paths (relative to WORKDIR) that
    must exist for the step to count as done."""

    name: str
    outputs: tuple[str, ...]
    argv: tuple[str, ...] | None = None
    action: Callable[[Path], None] | None = None
    note: str = ""

    @property
    def command(self) -> str:
        """The line the log and REPORT.md show (and that a resumed run must match)."""
        return "lefusion " + " ".join(map(shell_quote, self.argv)) if self.argv is not None else f"# (python) {self.note}"


def shell_quote(arg: str) -> str:
    """`arg` for a bash command line; double quotes for the set names with a prime (P', N'), which
    shlex.quote would render as the unreadable 'P'"'"''."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def copy_training_cases(workdir: Path) -> None:
    """WORKDIR/p_train/{Image,Mask}: copies of the real pathological training cases (file names
    kept, so the benchmark's leakage check and the quality pairing still recognise them). Written
    to a temporary folder and renamed, so a half-made copy is never taken for a finished one."""
    from lefusion.data.layouts import find_cases, lidc_mask_name

    final, tmp = workdir / P_TRAIN, workdir / f".{P_TRAIN}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cases = [c for c in find_cases(workdir / REAL, role="pathological") if c.split == "train"]
    for case in cases:
        assert case.mask is not None  # pathological cases always have a mask (find_cases checks)
        for source, folder, name in ((case.image, "Image", case.image.name), (case.mask, "Mask", lidc_mask_name(case.image.name))):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tmp / folder / name)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


# A profile that trains no models generates with these, by name (lefusion.checkpoints.loading.BUNDLED_MODELS):
# the demo model and the two baselines trained beside it by the same recipe (scripts/train_bundled_models.py).
BUNDLED_BY_METHOD = {"lefusion": "demo_lung", "repaint": "demo_lung_repaint", "cond-diffusion": "demo_lung_cond_diffusion"}


def checkpoint_of(profile: Profile, method: str) -> str:
    """The checkpoint a diffusion method generates with: its bundled model when the profile trains
    none, else the method's run folder."""
    if profile.models is None:
        return BUNDLED_BY_METHOD[method]
    return f"runs/{method}/checkpoint"


def generate_argv(profile: Profile, method: str, set_name: str) -> tuple[str, ...]:
    tag, data = SETS[set_name]
    # Baselines take their ROI conventions (and Hand-Crafted its texture presets) from the LeFusion
    # checkpoint, so every method meets exactly the ROIs and presets LeFusion meets.
    reference = checkpoint_of(profile, "lefusion")
    common = ("--data", data, "--out", f"gen/{method}_{tag}", "--seed", "0")
    if method in ("lefusion", "repaint"):  # RePaint: a global-loss model with LeFusion's sampler
        return (
            "generate",
            "--method",
            "lefusion",
            "--checkpoint",
            checkpoint_of(profile, method),
            *common,
            *profile.sampler,
            "--batch-size",
            str(profile.generate_batch),
        )
    if method == "cond-diffusion":
        return (
            "generate",
            "--method",
            "cond-diffusion",
            "--checkpoint",
            checkpoint_of(profile, method),
            *common,
            "--batch-size",
            str(profile.generate_batch),
        )
    if method == "copy-paste":
        return ("generate", "--method", "copy-paste", "--checkpoint", reference, "--donors", P_TRAIN, *common)
    if method == "handcrafted":
        return ("generate", "--method", "handcrafted", "--checkpoint", reference, *common)
    raise ValueError(f"unknown method {method!r}")


def plan(profile: Profile) -> list[Step]:
    """The profile's steps, in order."""
    steps = [
        Step("phantom", (f"{REAL}/phantom.json",), ("phantom", "lung", "--out", REAL, *profile.phantom)),
        Step(
            "p_train",
            (f"{P_TRAIN}/Image", f"{P_TRAIN}/Mask"),
            action=copy_training_cases,
            note=f"copy the pathological training cases of {REAL}/ (not its test cases) to {P_TRAIN}/Image and {P_TRAIN}/Mask",
        ),
    ]
    for method, flags in (profile.models or {}).items():
        steps.append(
            Step(
                f"train-{method}", (f"runs/{method}/checkpoint/config.json",), ("train", "--data", REAL, "--out", f"runs/{method}", *flags)
            )
        )
    generated = [(method, set_name) for method in profile.methods for set_name in SETS]
    for method, set_name in generated:
        tag = SETS[set_name][0]
        steps.append(Step(f"generate-{method}-{tag}", (f"gen/{method}_{tag}/manifest.json",), generate_argv(profile, method, set_name)))
    for method, set_name in generated:
        tag = SETS[set_name][0]
        argv = (
            "evaluate",
            "quality",
            "--generated",
            f"gen/{method}_{tag}",
            "--real",
            REAL,
            "--out",
            f"quality/{method}_{tag}",
            "--patch-size",
            *map(str, profile.patch_size),
        )
        steps.append(Step(f"quality-{method}-{tag}", (f"quality/{method}_{tag}/quality.json",), argv))
    synthetic = [f"{method}:{set_name}=gen/{method}_{SETS[set_name][0]}" for method, set_name in generated]
    steps.append(
        Step(
            "segmentation",
            ("seg/summary.md", "seg/summary.csv"),
            (
                "evaluate",
                "segmentation",
                "--real",
                REAL,
                "--synthetic",
                *synthetic,
                "--settings",
                "P",
                "P+P'",
                "P+N'",
                "--network",
                *profile.networks,
                "--seeds",
                *map(str, profile.seeds),
                "--iterations",
                str(profile.iterations),
                "--out",
                "seg",
                *(("--workers", str(profile.workers)) if profile.workers > 1 else ()),
            ),
        )
    )
    return steps


# ------------------------------------------------------------------------------------------- running


@dataclass
class Outcome:
    step: Step
    seconds: float
    ran: bool  # False: skipped, done by an earlier run


def _record_path(workdir: Path, step: Step) -> Path:
    return workdir / STEPS_DIR / f"{step.name}.json"


def is_done(workdir: Path, step: Step) -> dict | None:
    """The step's record if it finished and its outputs are all there, else None. Refuses
    (SystemExit) a record made with another command."""
    path = _record_path(workdir, step)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("command") != step.command:
        sys.exit(
            f"{path}: step {step.name} was run as\n  {record.get('command')}\nbut this profile runs\n  {step.command}\n"
            "use a new --workdir (or delete that record and the step's outputs)"
        )
    return record if all((workdir / out).exists() for out in step.outputs) else None


def run_step(workdir: Path, step: Step, threads: int | None, in_process: bool, log: Path | None = None) -> float:
    """Run one step in `workdir`; returns its wall time in seconds. Raises SystemExit if it fails.
    log: send the command's output there instead of this terminal (steps that run side by side)."""
    start = time.perf_counter()
    if step.action is not None:
        step.action(workdir)
    elif in_process:
        from lefusion.cli import main as lefusion_main

        cwd = Path.cwd()
        os.chdir(workdir)  # the commands use paths relative to WORKDIR, as in the subprocess mode
        try:
            code = lefusion_main(list(step.argv or ()))
        finally:
            os.chdir(cwd)
        if code:
            sys.exit(f"step {step.name} failed (exit code {code}): {step.command}")
    else:
        env = dict(os.environ)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads follow it
        command = [sys.executable, "-m", "lefusion", *(step.argv or ())]
        if log is None:
            result = subprocess.run(command, cwd=workdir, env=env)
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as handle:
                result = subprocess.run(command, cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT)
        if result.returncode:
            where = f"; its output: {log}" if log is not None else ""
            sys.exit(f"step {step.name} failed (exit code {result.returncode}): {step.command}{where}")
    seconds = time.perf_counter() - start
    record = {"command": step.command, "seconds": round(seconds, 1), "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    path = _record_path(workdir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)  # the record is the "done" mark, so it appears only when complete
    return seconds


def check_profile(workdir: Path, profile: Profile) -> None:
    """Remember WORKDIR's profile; refuse to mix two profiles in one WORKDIR."""
    path = workdir / RECIPE_RECORD
    if path.is_file():
        previous = json.loads(path.read_text()).get("profile")
        if previous != profile.name:
            sys.exit(f"{workdir} holds a '{previous}' benchmark; use another --workdir for '{profile.name}'")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"profile": profile.name}))


def stages(steps: Sequence[Step]) -> list[list[Step]]:
    """Consecutive steps of one kind (name up to the first '-': generate, quality, ...); the steps of
    a stage depend only on earlier stages, so they may run side by side."""
    out: list[list[Step]] = []
    for step in steps:
        if out and out[-1][0].name.split("-")[0] == step.name.split("-")[0]:
            out[-1].append(step)
        else:
            out.append([step])
    return out


def run(profile: Profile, workdir: Path, threads: int | None, in_process: bool) -> list[Outcome]:
    """Run (or resume) every step of `profile` in `workdir` (`run_steps`)."""
    check_profile(workdir, profile)
    steps = plan(profile)
    workers = 1 if in_process else profile.workers
    print(
        f"benchmark profile {profile.name} in {workdir} ({len(steps)} steps; threads: {threads or 'default'}; {workers} at a time)",
        flush=True,
    )
    return run_steps(steps, workdir, threads, in_process, workers)


def run_steps(steps: Sequence[Step], workdir: Path, threads: int | None, in_process: bool, workers: int) -> list[Outcome]:
    """Run (or resume) `steps` in `workdir`, logging each command before it runs; steps done in an
    earlier run are skipped. With workers > 1 (and not in-process), the steps of a stage run that
    many at a time, each writing its output to WORKDIR/logs/NAME.log."""
    if threads is not None and in_process:
        import torch

        torch.set_num_threads(threads)  # a subprocess gets OMP_NUM_THREADS instead (run_step)
    workers = 1 if in_process else workers
    outcomes: dict[str, Outcome] = {}
    number = {step.name: k for k, step in enumerate(steps, 1)}
    todo: list[list[Step]] = []
    for stage in stages(steps):
        todo.append([])
        for step in stage:
            record = is_done(workdir, step)
            if record is not None:
                print(
                    f"[{number[step.name]}/{len(steps)}] {step.name}: done in an earlier run ({record['seconds']} s), skipped\n"
                    f"  {step.command}",
                    flush=True,
                )
                outcomes[step.name] = Outcome(step, float(record["seconds"]), ran=False)
            else:
                todo[-1].append(step)

    def execute(step: Step, side_by_side: bool) -> Outcome:
        # steps that run side by side write their output to a log each instead of interleaving here
        log = workdir / "logs" / f"{step.name}.log" if side_by_side else None
        print(f"[{number[step.name]}/{len(steps)}] {step.name}" + (f" (output: {log})" if log else "") + f"\n$ {step.command}", flush=True)
        seconds = run_step(workdir, step, threads, in_process, log=log)
        print(f"  {step.name} done in {seconds:.1f} s", flush=True)
        return Outcome(step, seconds, ran=True)

    for stage in todo:
        if workers > 1 and len(stage) > 1:
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(lambda step: execute(step, True), stage))
        else:
            done = [execute(step, False) for step in stage]
        outcomes.update((o.step.name, o) for o in done)
    return [outcomes[step.name] for step in steps]


# -------------------------------------------------------------------------------------------- report

QUALITY_COLUMNS = (
    ("psnr_lesion", "PSNR lesion (dB)", "{:.1f}"),
    ("ssim_lesion", "SSIM lesion", "{:.3f}"),
    ("hist_w1_target", "hist W1 to target", "{:.3f}"),
    ("hist_w1_real", "hist W1 to real lesion", "{:.3f}"),
    ("background_max_abs", "background max err", "{:.4g}"),
)


def caveats(profile: Profile) -> list[str]:
    """The profile's caveats, with the bundled model's training described from its config.json."""
    out = []
    for text in profile.caveats:
        if text == BUNDLED_MODEL_CAVEAT:
            from lefusion.demo import demo_model_dir

            extra = json.loads((demo_model_dir() / "config.json").read_text()).get("extra", {})
            phantom = extra.get("phantom", {})
            n_lesions = int(phantom.get("n_pathological", 0)) - int(phantom.get("n_test", 0))
            flag = lambda name: profile.phantom[profile.phantom.index(name) + 1]  # noqa: E731 (this profile's phantom)
            seed, n_real = flag("--seed"), int(flag("--n-pathological")) - int(flag("--n-test"))
            text = (
                f"LeFusion is the bundled demo model ({extra.get('steps_done', '?')} training steps on a CPU), trained on "
                f"{n_lesions} nodules of another draw of the same phantom (seed {phantom.get('seed', '?')}; this benchmark's "
                f"phantom is seed {seed}): it knows the phantom's lesion distribution from more lesions than P's "
                f"{n_real} real training cases. Copy-Paste copies only those; Hand-Crafted uses the model's texture presets."
            )
        out.append(text)
    return out


def quality_table(workdir: Path, profile: Profile) -> str:
    """One row per generated set from its quality.json: per-output metrics (mean ± std; paired ones
    only for P', where the generated lesion replaces a real one) and the set-level distances."""
    header = ["method", "set", "outputs", *(label for _, label, _ in QUALITY_COLUMNS), "sliced W1 (patches)", "MMD (patches)"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for method in profile.methods:
        for set_name, (tag, _) in SETS.items():
            summary = json.loads((workdir / "quality" / f"{method}_{tag}" / "quality.json").read_text())
            cells = [method, set_name, str(summary["outputs"])]
            for key, _, fmt in QUALITY_COLUMNS:
                stat = summary["metrics"].get(key)
                cells.append("–" if stat is None else f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}")
            sets = summary["sets"]
            cells += ["–" if sets[k] is None else f"{sets[k]:.3f}" for k in ("swd", "mmd")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def segmentation_section(workdir: Path) -> str:
    """seg/summary.md without its title (notes, then the table)."""
    text = (workdir / "seg" / "summary.md").read_text()
    return "\n".join(line for line in text.splitlines() if not line.startswith("# ")).strip() + "\n"


def segmentation_table(workdir: Path) -> str:
    """Only the markdown table of seg/summary.md."""
    return "\n".join(line for line in (workdir / "seg" / "summary.md").read_text().splitlines() if line.startswith("|")) + "\n"


def environment(threads: int | None) -> str:
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} logical cores)"
    return f"torch {torch.__version__}, Python {platform.python_version()}, {device}, OMP_NUM_THREADS={threads or os.environ.get('OMP_NUM_THREADS', 'unset')}"


def write_report(
    workdir: Path, profile: Profile, outcomes: Sequence[Outcome], threads: int | None, in_process: bool, wall_seconds: float
) -> Path:
    """WORKDIR/REPORT.md: what was run, how long each step took, the two tables. `wall_seconds`: the
    wall clock of this invocation (less than the sum of the steps when a stage runs them in parallel)."""
    invocation = f"python scripts/segmentation_benchmark.py --profile {profile.name} --workdir {workdir}"
    env = f"export OMP_NUM_THREADS={threads}\n" if threads is not None else ""
    commands = "\n".join(o.step.command for o in outcomes)
    total = sum(o.seconds for o in outcomes)
    timing = ["| step | seconds | |", "|---|---:|---|"]
    timing += [f"| {o.step.name} | {o.seconds:.1f} | {'this run' if o.ran else 'an earlier run'} |" for o in outcomes]
    timing.append(f"| sum of the steps | {total:.1f} ({total / 60:.1f} min) | {profile.workers} at a time within a stage |")
    timing.append(f"| **wall clock, this run** | **{wall_seconds:.1f}** ({wall_seconds / 60:.1f} min) | steps done earlier not included |")
    mode = " (commands run in-process)" if in_process else ""
    parts = [
        f"# Phantom segmentation benchmark — profile `{profile.name}`\n",
        f"Reproduce: `{invocation}`{mode}. Environment: {environment(threads)}. "
        f"Report written {datetime.datetime.now().isoformat(timespec='minutes')}.\n",
        "## Caveats\n",
        "".join(f"- {c}\n" for c in caveats(profile)),
        "## Downstream segmentation (real test cases)\n",
        segmentation_section(workdir),
        "![per-setting bars](seg/summary.png)\n",
        "## Image quality of the synthetic sets\n",
        "Per output, mean ± std; PSNR / SSIM / W1 to the real lesion only for P' (the generated lesion replaces a "
        "real one on its own mask), W1 to target only where a target histogram exists. Patch distances: lesion "
        "patches of the set against those of every real pathological case (details: `quality/*/quality.md`).\n",
        quality_table(workdir, profile),
        "## Time per step\n",
        "Wall-clock seconds of the run that completed each step (a step resumed after an interruption shows only its last part).\n",
        "\n".join(timing) + "\n",
        "## Commands (run in the work folder)\n",
        f"```bash\ncd {workdir}\n{env}{commands}\n```\n",
    ]
    path = workdir / REPORT
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--workdir", type=Path, help="work folder (default outputs/benchmark-PROFILE); re-running resumes it")
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS for every command (default: cpu 1, with two commands or segmenter runs at a time; smoke 1; gpu unchanged)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the lefusion commands in this interpreter instead of one process each "
        "(saves the start-up of each command; used by the smoke test)",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    workdir: Path = args.workdir or Path("outputs") / f"benchmark-{profile.name}"
    threads = args.threads if args.threads is not None else profile.threads
    if args.dry_run:
        print(f"cd {workdir}")
        print("\n".join(step.command for step in plan(profile)))
        return 0
    start = time.perf_counter()
    outcomes = run(profile, workdir, threads, args.in_process)
    wall_seconds = time.perf_counter() - start
    report = write_report(workdir, profile, outcomes, threads, args.in_process, wall_seconds)
    ran = sum(o.ran for o in outcomes)
    print(
        f"\n{segmentation_table(workdir)}\n{len(outcomes)} steps: {ran} run, {len(outcomes) - ran} skipped "
        f"(done earlier); {wall_seconds:.0f} s this run\nreport: {report}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
