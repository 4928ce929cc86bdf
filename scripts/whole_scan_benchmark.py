"""Does `lefusion augment` help on whole scans? The whole-scan segmentation benchmark as one command.

    python scripts/whole_scan_benchmark.py --profile cpu --workdir outputs/wholescan-cpu   # make benchmark-wholescan-cpu
    python scripts/whole_scan_benchmark.py --profile gpu --workdir outputs/wholescan-gpu
    python scripts/whole_scan_benchmark.py --profile cpu --dry-run                         # only print the commands

Four `lefusion` commands, run in WORKDIR (printed before each runs; resumable the same way as
scripts/segmentation_benchmark.py, whose step runner this uses):

1. `phantom chest --out real`: whole phantom chests, pathological ones (real nodules; half held
   out in test.txt) and lesion-free ones;
2. `phantom chest --out normal`: the same lesion-free scans again (cases are seeded by seed,
   kind and index, so they are byte-identical), as the folder `augment` reads;
3. `augment --scans normal`: DiffMask shapes placed in the built-in lung mask, lesions generated
   by the bundled LeFusion model;
4. `evaluate whole-scan`: a MONAI U-Net trained on patches, real only (pathological training scans
   plus the lesion-free scans) against real + augmented (the lesion-free scans replaced by their
   augmented versions: same anatomy, only the synthetic lesions differ), sliding-window inference
   on the held-out whole scans; Dice, NSD, HD95, lesion sensitivity, false positives per scan.

Profiles
--------
cpu (2 CPU cores, < 45 minutes): chests at 2.0 x 1.4 x 1.4 mm over 240 x 320 x 320 mm (120 x 228 x
    228 voxels, the bundled model's 1.4 mm in-plane), 12 pathological (6 held out) + 8 lesion-free;
    2-3 new lesions of 6-14 mm per lesion-free scan, ancestral sampling (100 network evaluations
    per lesion); U-Net width 16, 32 x 64 x 64 patches, 500 iterations, seeds 0 1 2.
gpu (one CUDA GPU; NOT RUN: no GPU was available where this was written): chests at the default
    2.5 x 0.8 x 0.8 mm grid, 32 pathological (16 held out) + 32 lesion-free, 2-4 lesions each with
    the bundled model (a published LIDC checkpoint converted with `lefusion convert` can replace
    it: pass its folder as --checkpoint), 48 x 128 x 128 patches, 2,000 iterations, seeds 0-4.
smoke (tests): 6 x 4 x 4 mm chests, 2 iterations; the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import segmentation_benchmark as runner  # noqa: E402  (the step runner: Step, is_done, run_step)


@dataclass(frozen=True)
class Profile:
    name: str
    grid: tuple[str, ...]  # --spacing and --fov of `phantom chest`
    n_pathological: int
    n_test: int
    n_normal: int
    lesions: str
    diameter: str
    evaluate: tuple[str, ...]
    threads: int | None = None


PROFILES = {
    "cpu": Profile(
        "cpu",
        ("--spacing", "2.0", "1.4", "1.4", "--fov", "240", "320", "320"),
        12,
        6,
        8,
        "2:3",
        "6:14",
        ("--seeds", "0", "1", "2", "--iterations", "500", "--patch-size", "32", "64", "64"),
    ),
    "gpu": Profile(
        "gpu",
        ("--spacing", "2.5", "0.8", "0.8"),
        32,
        16,
        32,
        "2:4",
        "6:14",
        ("--seeds", "0", "1", "2", "3", "4", "--iterations", "2000", "--patch-size", "48", "128", "128"),
    ),
    "smoke": Profile(
        "smoke",
        ("--spacing", "6.0", "4.0", "4.0"),
        3,
        1,
        2,
        "1",
        "8:12",
        ("--seeds", "0", "--iterations", "2", "--patch-size", "8", "16", "16", "--width", "4", "--device", "cpu"),
        threads=1,
    ),
}
SEED = "1"


def plan(profile: Profile) -> list[runner.Step]:
    """The profile's four commands (module docstring)."""
    chest = ("phantom", "chest", *profile.grid, "--seed", SEED)
    sampler = ("--sampler", "ancestral") if profile.name != "smoke" else ("--sampler", "ancestral", "--device", "cpu")
    return [
        runner.Step(
            "phantom-real",
            ("real/phantom.json",),
            (
                *chest,
                "--out",
                "real",
                "--n-pathological",
                str(profile.n_pathological),
                "--n-test",
                str(profile.n_test),
                "--n-normal",
                str(profile.n_normal),
            ),
        ),
        runner.Step(
            "phantom-normal",
            ("normal/phantom.json",),
            (*chest, "--out", "normal", "--n-pathological", "0", "--n-normal", str(profile.n_normal)),
        ),
        runner.Step(
            "augment",
            ("augmented/manifest.json",),
            (
                "augment",
                "--scans",
                "normal",
                "--out",
                "augmented",
                "--checkpoint",
                "demo_lung",
                "--lesions",
                profile.lesions,
                "--diameter",
                profile.diameter,
                "--seed",
                SEED,
                "--batch-size",
                "8",
                *sampler,
            ),
        ),
        runner.Step(
            "evaluate",
            ("seg/summary.md",),
            ("evaluate", "whole-scan", "--real", "real", "--augmented", "augmented", "--out", "seg", *profile.evaluate),
        ),
    ]


def write_report(workdir: Path, profile: Profile, outcomes: Sequence[runner.Outcome], wall: float) -> Path:
    """WORKDIR/REPORT.md: the table, the time of every step, the commands."""
    timing = ["| step | seconds |", "|---|---:|"] + [f"| {o.step.name} | {o.seconds:.1f} |" for o in outcomes]
    timing.append(f"| **wall clock, this run** | **{wall:.0f}** ({wall / 60:.1f} min) |")
    table = "\n".join(line for line in (workdir / "seg" / "summary.md").read_text().splitlines() if not line.startswith("# "))
    text = "\n".join(
        [
            f"# Whole-scan segmentation benchmark — profile `{profile.name}`\n",
            f"Reproduce: `python scripts/whole_scan_benchmark.py --profile {profile.name} --workdir {workdir}`. "
            f"Environment: {runner.environment(profile.threads)}.\n",
            table.strip() + "\n",
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
    parser.add_argument("--workdir", type=Path, help="work folder (default outputs/wholescan-PROFILE); re-running resumes it")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--in-process", action="store_true", help="run the commands in this interpreter (the smoke test)")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    workdir: Path = args.workdir or Path("outputs") / f"wholescan-{profile.name}"
    steps = plan(profile)
    if args.dry_run:
        print(f"cd {workdir}\n" + "\n".join(step.command for step in steps))
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    start, outcomes = time.perf_counter(), []
    for k, step in enumerate(steps, 1):
        record = runner.is_done(workdir, step)
        if record is not None:
            print(f"[{k}/{len(steps)}] {step.name}: done in an earlier run ({record['seconds']} s), skipped", flush=True)
            outcomes.append(runner.Outcome(step, float(record["seconds"]), ran=False))
            continue
        print(f"[{k}/{len(steps)}] {step.name}\n$ {step.command}", flush=True)
        outcomes.append(runner.Outcome(step, runner.run_step(workdir, step, profile.threads, args.in_process), ran=True))
    report = write_report(workdir, profile, outcomes, time.perf_counter() - start)
    print("\n" + (workdir / "seg" / "summary.md").read_text() + f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
