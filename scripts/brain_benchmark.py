"""Brain MRI (FLAIR, multiple-sclerosis lesions): does synthetic data help a whole-brain segmenter?

    python scripts/brain_benchmark.py --profile cpu --workdir outputs/brain-cpu   # make benchmark-brain-cpu
    python scripts/brain_benchmark.py --profile gpu --workdir outputs/brain-gpu
    python scripts/brain_benchmark.py --profile cpu --dry-run                     # only print the commands

Every step is a `lefusion` command run in WORKDIR (printed before it runs; resumable the same way
as scripts/segmentation_benchmark.py, whose step runner this uses), except `p_train`, a copy:

1. `phantom brain --out real`: phantom brains (MNI152-based FLAIR), pathological ones with MS-like
   lesions (some held out in test.txt) and lesion-free ones; `phantom brain --out normal`: the
   same lesion-free brains again (seeded per case, byte-identical) as the folder lesions go into;
   `p_train/`: the pathological TRAINING brains (never a test one), donors for Copy-Paste and the
   known scans of the reconstruction scores.
2. `place`: new lesion masks (hand-crafted warped ellipsoids, 3-12 mm) inside the white matter of
   every lesion-free brain (`--organ-labels 3`), the same masks for every method.
3. `generate` on those masks with each method: LeFusion (bundled demo_brain), RePaint and
   Cond-Diffusion (bundled demo_brain_repaint / demo_brain_cond_diffusion, when bundled), Lesion-DDPM
   (bundled demo_brain_lesion_ddpm: the whole FLAIR volume from the anatomy + lesion masks),
   Copy-Paste (donor lesions from p_train), Hand-Crafted (LeFusion's texture presets).
4. `generate` on p_train's own masks with each method and `evaluate reconstruction`: lesion-region
   MAE / MSE and MS-SSIM against the real scan (the Lesion-DDPM paper's image figures).
5. `evaluate whole-scan --modality mri`: a MONAI 3D U-Net on patches, sliding-window inference on
   the held-out brains: `real` (the real training brains, lesion-free ones included) once, and per
   method `synthetic` (its synthetic brains only) and `real+augmented` (real + its synthetic brains);
   Dice, NSD, HD95, lesion sensitivity, false positives per scan (inside / outside the brain).

WORKDIR/REPORT.md holds the tables (with the Lesion-DDPM paper's numbers beside them), the time
of every step and the commands. All figures are phantom figures: the brains are one template
deformed, the lesions procedural; they show the pipeline works and how methods compare here, not
what they do on patients.

Profiles
--------
cpu (2 CPU cores, target < 45 minutes): brains at 2 mm, 12 pathological (6 held out) + 6
    lesion-free, 4-8 new lesions per lesion-free brain; 25 sampling steps for every diffusion
    method (DDNM for LeFusion / RePaint, which keep the known background; DDIM for Cond-Diffusion
    and Lesion-DDPM, which regenerate their whole input); reconstruction on 4 training brains;
    U-Net width 16, 32^3 patches, 1,000 iterations, seeds 0 1; two commands at a time, one thread each.
gpu (one CUDA GPU; NOT RUN here, no GPU was lent): brains at 1 mm, 40 pathological (20 held out)
    + 20 lesion-free, 6-16 new lesions each, 64^3 patches, 2,000 iterations, seeds 0-4.
smoke (tests): 6 mm brains, 2 iterations; the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import segmentation_benchmark as runner  # noqa: E402  (the step runner: Step, run_steps)

REAL, NORMAL, P_TRAIN, PLACED = "real", "normal", "p_train", "placed"
SEED = "1"
# The Lesion-DDPM paper's figures as the issue quotes them (real MRI, Dice of a 3D U-Net).
PAPER = {"synthetic": {"Lesion-DDPM": 0.616, "best competitor": 0.569}, "real+augmented": {"Lesion-DDPM": 0.685}}


@dataclass(frozen=True)
class Profile:
    name: str
    spacing: str
    n_pathological: int
    n_test: int
    n_normal: int
    lesions: str
    diameter: str
    methods: tuple[str, ...]
    evaluate: tuple[str, ...]
    steps: str = "25"  # few-step sampling for every diffusion method (DDNM for the inpainters, DDIM for the others)
    recon_cases: str = "4"  # known scans regenerated for the reconstruction scores
    workers: int = 2
    threads: int | None = 1
    device: tuple[str, ...] = ()


ALL_METHODS = ("lefusion", "repaint", "cond-diffusion", "lesion-ddpm", "copy-paste", "handcrafted")
BUNDLED = {
    "lefusion": "demo_brain",
    "repaint": "demo_brain_repaint",
    "cond-diffusion": "demo_brain_cond_diffusion",
    "lesion-ddpm": "demo_brain_lesion_ddpm",
}

PROFILES = {
    "cpu": Profile(
        "cpu",
        "2",
        12,
        6,
        6,
        "4:8",
        "3:12",
        ALL_METHODS,
        ("--seeds", "0", "1", "--iterations", "1000", "--patch-size", "32", "32", "32", "--width", "16"),
    ),
    "gpu": Profile(
        "gpu",
        "1",
        40,
        20,
        20,
        "6:16",
        "3:15",
        ALL_METHODS,
        ("--seeds", "0", "1", "2", "3", "4", "--iterations", "2000", "--patch-size", "64", "64", "64"),
        workers=1,
        threads=None,
    ),
    "smoke": Profile(
        "smoke",
        "6",
        3,
        1,
        2,
        "1",
        "12:18",
        ALL_METHODS,
        ("--seeds", "0", "--iterations", "2", "--patch-size", "16", "16", "16", "--width", "4", "--device", "cpu"),
        steps="2",
        recon_cases="2",
        workers=1,
        device=("--device", "cpu"),
    ),
}


def available_methods(profile: Profile) -> tuple[str, ...]:
    """The profile's methods whose bundled model exists in this install (the others are reported as missing)."""
    from lefusion.checkpoints.loading import BUNDLED_MODELS

    return tuple(m for m in profile.methods if m not in BUNDLED or BUNDLED[m] in BUNDLED_MODELS)


def copy_training_brains(workdir: Path) -> None:
    """WORKDIR/p_train/{images,masks,organs}: the real pathological training brains (names kept).
    Written to a temporary folder and renamed, so a half-made copy is never taken for a finished one."""
    real = workdir / REAL
    test = set((real / "test.txt").read_text().split())
    cases = [c for c in json.loads((real / "phantom.json").read_text())["cases"] if c["split"] == "pathological" and c["name"] not in test]
    final, tmp = workdir / P_TRAIN, workdir / f".{P_TRAIN}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for case in cases:
        for folder in ("images", "masks", "organs"):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy2(real / folder / f"{case['name']}.nii.gz", tmp / folder)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def copy_organs(workdir: Path) -> None:
    """WORKDIR/placed/organs: the lesion-free brains' anatomy beside the placed lesion masks, which
    Lesion-DDPM generates from (`place` writes images/ and masks/ only)."""
    final, tmp = workdir / PLACED / "organs", workdir / PLACED / ".organs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(workdir / NORMAL / "organs", tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def generate_argv(profile: Profile, method: str, data: str, out: str, max_cases: str | None = None) -> tuple[str, ...]:
    """`lefusion generate` of `method` on the (first `max_cases`) cases of `data` into `out`."""
    common = ("--data", data, "--out", out, "--seed", "0", *profile.device, *(("--max-cases", max_cases) if max_cases else ()))
    inpaint = ("--sampler", "ddnm", "--steps", profile.steps)  # known background kept at every step (#19's default)
    regenerate = ("--sampler", "ddim", "--steps", profile.steps)  # whole-ROI / whole-volume models: no known region
    if method in ("lefusion", "repaint"):  # RePaint: a global-loss model with LeFusion's sampler
        return ("generate", "--method", "lefusion", "--checkpoint", BUNDLED[method], *common, *inpaint, "--batch-size", "8")
    if method == "cond-diffusion":
        return ("generate", "--method", "cond-diffusion", "--checkpoint", BUNDLED[method], *common, *regenerate, "--batch-size", "8")
    if method == "lesion-ddpm":
        return ("generate", "--method", "lesion-ddpm", "--checkpoint", BUNDLED[method], *common, *regenerate, "--batch-size", "2")
    # Baselines take their ROI conventions (Hand-Crafted its texture presets) from the LeFusion model.
    if method == "copy-paste":
        return ("generate", "--method", "copy-paste", "--checkpoint", BUNDLED["lefusion"], "--donors", P_TRAIN, *common)
    if method == "handcrafted":
        return ("generate", "--method", "handcrafted", "--checkpoint", BUNDLED["lefusion"], *common)
    raise ValueError(f"unknown method {method!r}")


def plan(profile: Profile, methods: Sequence[str]) -> list[runner.Step]:
    """The profile's steps (module docstring). Step names group into stages by their first word."""
    brain = ("phantom", "brain", "--spacing", profile.spacing, profile.spacing, profile.spacing, "--seed", SEED)
    steps = [
        runner.Step(
            "phantom-real",
            (f"{REAL}/phantom.json",),
            (*brain, "--out", REAL, "--n-pathological", str(profile.n_pathological), "--n-test", str(profile.n_test))
            + ("--n-normal", str(profile.n_normal)),
        ),
        runner.Step(
            "phantom-normal",
            (f"{NORMAL}/phantom.json",),
            (*brain, "--out", NORMAL, "--n-pathological", "0", "--n-normal", str(profile.n_normal)),
        ),
        runner.Step("p_train", (P_TRAIN,), action=copy_training_brains, note="copy the real pathological training brains to p_train/"),
        runner.Step(
            "place",
            (f"{PLACED}/lesions.json",),
            (
                "place",
                "--scans",
                NORMAL,
                "--organ-masks",
                f"{NORMAL}/organs",
                "--organ-labels",
                "3",
                "--lesions",
                profile.lesions,
                "--diameter",
                profile.diameter,
                "--shapes",
                "handcrafted",
                "--gap",
                "2",
                "--seed",
                SEED,
                "--out",
                PLACED,
            ),
        ),
        runner.Step("organs", (f"{PLACED}/organs",), action=copy_organs, note="copy normal/organs to placed/organs"),
    ]
    steps += [runner.Step(f"generate-{m}", (f"gen/{m}/manifest.json",), generate_argv(profile, m, PLACED, f"gen/{m}")) for m in methods]
    steps += [
        runner.Step(f"regenerate-{m}", (f"recon/{m}/manifest.json",), generate_argv(profile, m, P_TRAIN, f"recon/{m}", profile.recon_cases))
        for m in methods
    ]
    steps += [
        runner.Step(
            f"reconstruction-{m}",
            (f"recon_scores/{m}/reconstruction.json",),
            ("evaluate", "reconstruction", "--generated", f"recon/{m}", "--organs", f"{P_TRAIN}/organs", "--out", f"recon_scores/{m}"),
        )
        for m in methods
    ]
    seg = ("evaluate", "whole-scan", "--real", REAL, "--modality", "mri", "--organ-name", "brain", *profile.evaluate)
    steps.append(runner.Step("segment-real", ("seg/real/summary.json",), (*seg, "--settings", "real", "--out", "seg/real")))
    steps += [
        runner.Step(
            f"segment-{m}",
            (f"seg/{m}/summary.json",),
            (*seg, "--augmented", f"gen/{m}", "--settings", "synthetic", "real+augmented", "--out", f"seg/{m}"),
        )
        for m in methods
    ]
    return steps


# -------------------------------------------------------------------------------------------- report

LABELS = {
    "lefusion": "LeFusion",
    "repaint": "RePaint",
    "cond-diffusion": "Cond-Diffusion",
    "lesion-ddpm": "Lesion-DDPM",
    "copy-paste": "Copy-Paste",
    "handcrafted": "Hand-Crafted",
}
SEG_COLUMNS = (("dice", 100.0), ("nsd", 100.0), ("hd95", 1.0), ("sensitivity", 100.0), ("fp_per_scan", 1.0), ("fp_outside_per_scan", 1.0))


def _cell(entry: dict, key: str, scale: float) -> str:
    mean, std = entry[key]["mean"], entry[key]["std"]
    if mean is None or not math.isfinite(mean):
        return "–"
    digits = 1 if scale == 100.0 else 2
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def segmentation_table(workdir: Path, methods: Sequence[str]) -> str:
    """One row per (method, setting): real once, then each method's synthetic and real+synthetic."""
    header = "| training set | method | scans (lesions) | Dice (%) | NSD (%) | HD95 (mm) | lesion sensitivity (%) | FP / scan | FP / scan outside brain | paper Dice |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [("real", "–", workdir / "seg" / "real" / "summary.json")]
    rows += [(s, m, workdir / "seg" / m / "summary.json") for s in ("synthetic", "real+augmented") for m in methods]
    for setting, method, path in rows:
        if not path.is_file():
            continue
        entry = next((e for e in json.loads(path.read_text()) if e["setting"] == setting), None)
        if entry is None:
            continue
        paper = PAPER.get(setting, {}).get(LABELS.get(method, ""), None)
        name = {"real": "real only", "synthetic": "synthetic only", "real+augmented": "real + synthetic"}[setting]
        cells = [name, LABELS.get(method, method), f"{entry['training_scans']} ({entry['training_lesions']})"]
        cells += [_cell(entry, key, scale) for key, scale in SEG_COLUMNS]
        cells.append(f"{paper * 100:.1f}" if paper is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def reconstruction_table(workdir: Path, methods: Sequence[str]) -> str:
    lines = ["| method | scans | lesion MAE | lesion MSE | MS-SSIM |", "|---|---:|---:|---:|---:|"]
    for m in methods:
        path = workdir / "recon_scores" / m / "reconstruction.json"
        if path.is_file():
            r = json.loads(path.read_text())
            lines.append(f"| {LABELS[m]} | {r['cases']} | {r['mae_lesion']:.4f} | {r['mse_lesion']:.4f} | {r['ms_ssim']:.4f} |")
    return "\n".join(lines) + "\n"


def write_report(workdir: Path, profile: Profile, methods: Sequence[str], outcomes: Sequence[runner.Outcome], wall: float) -> Path:
    missing = [LABELS[m] for m in profile.methods if m not in methods]
    timing = ["| step | seconds |", "|---|---:|"] + [f"| {o.step.name} | {o.seconds:.1f} |" for o in outcomes]
    timing.append(f"| **wall clock, this run** | **{wall:.0f}** ({wall / 60:.1f} min) |")
    text = "\n".join(
        [
            f"# Brain MRI benchmark — profile `{profile.name}`\n",
            f"Reproduce: `python scripts/brain_benchmark.py --profile {profile.name} --workdir {workdir}`. "
            f"Environment: {runner.environment(profile.threads)}.\n",
            "Phantom figures: MNI152-based FLAIR phantoms with procedural MS-like lesions, not patients. The paper column "
            "is the Lesion-DDPM paper's Dice on real MRI (as issue #23 quotes it), for orientation only.\n",
            (f"Not run (model not bundled in this install): {', '.join(missing)}.\n" if missing else ""),
            "## Downstream segmentation (held-out phantom brains)\n",
            segmentation_table(workdir, methods),
            "## Reconstruction of known scans (p_train's own lesion masks)\n",
            "Intensities on each real scan's brain 0.5-99.5 percentile range (0..1); MAE / MSE over the real lesion "
            "voxels; MS-SSIM over the brain's box (`lefusion evaluate reconstruction`).\n",
            reconstruction_table(workdir, methods),
            "## Time per step\n",
            "\n".join(timing) + "\n",
            "## Commands (run in the work folder)\n",
            "```bash\n" + "\n".join(o.step.command for o in outcomes) + "\n```\n",
        ]
    )
    path = workdir / "REPORT.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--workdir", type=Path, help="work folder (default outputs/brain-PROFILE); re-running resumes it")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--in-process", action="store_true", help="run the commands in this interpreter (the smoke test)")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    workdir: Path = args.workdir or Path("outputs") / f"brain-{profile.name}"
    methods = available_methods(profile)
    steps = plan(profile, methods)
    if args.dry_run:
        print(f"cd {workdir}\n" + "\n".join(step.command for step in steps))
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcomes = runner.run_steps(steps, workdir, profile.threads, args.in_process, profile.workers)
    report = write_report(workdir, profile, methods, outcomes, time.perf_counter() - start)
    print("\n" + segmentation_table(workdir, methods) + f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
