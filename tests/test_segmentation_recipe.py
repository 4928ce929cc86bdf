"""scripts/segmentation_benchmark.py: the smoke profile end to end, its report, and resuming.

The smoke profile runs every method of the gpu recipe (LeFusion, RePaint, Cond-Diffusion,
Copy-Paste, Hand-Crafted) on an 8x16x16 phantom with 2-step models and 2-iteration segmenters;
about 15 s at one thread with --in-process (one interpreter for all commands).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "segmentation_benchmark.py"


@functools.cache
def _load_script():
    """The script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("segmentation_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _run(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    # A child process: the script changes directory and thread settings for the commands it runs.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--profile", "smoke", "--workdir", str(workdir), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    workdir = tmp_path_factory.mktemp("recipe") / "bench"
    result = _run(workdir, "--in-process")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, result


def test_smoke_report_has_every_setting_per_method(smoke):
    workdir, result = smoke
    module = _load_script()
    report = (workdir / "REPORT.md").read_text()
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]) for line in report.splitlines() if line.startswith("| P")}
    assert ("P", "real") in rows
    for method in module.PROFILES["smoke"].methods:
        for setting in ("P+P'", "P+N'"):
            assert (setting, method) in rows, f"no {setting} row for {method} in REPORT.md"
        for set_name in ("P'", "N'"):
            assert f"| {method} | {set_name} |" in report, f"no quality row for {method} {set_name}"
    for step in module.plan(module.PROFILES["smoke"]):
        assert f"| {step.name} |" in report  # timing row
        assert step.command in report  # the command, as run
    assert "| P+P' | lefusion |" in result.stdout  # the table is printed at the end too


def test_second_run_skips_every_step(smoke):
    workdir, _ = smoke
    module = _load_script()
    n_steps = len(module.plan(module.PROFILES["smoke"]))
    watched = [
        workdir / "seg" / "summary.md",
        workdir / "gen" / "lefusion_Np" / "manifest.json",
        workdir / "runs" / "lefusion" / "checkpoint" / "config.json",
    ]
    before = [p.stat().st_mtime_ns for p in watched]
    result = _run(workdir)  # default mode: one process per command, none of which should start
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{n_steps} steps: 0 run, {n_steps} skipped" in result.stdout
    assert "\n$ lefusion" not in result.stdout
    assert [p.stat().st_mtime_ns for p in watched] == before
    assert "| P+N' | handcrafted |" in (workdir / "REPORT.md").read_text()


def test_lost_output_is_redone_in_a_subprocess(smoke):
    workdir, _ = smoke
    module = _load_script()
    n_steps = len(module.plan(module.PROFILES["smoke"]))
    quality = workdir / "quality" / "copy-paste_Np" / "quality.json"
    quality.unlink()
    result = _run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{n_steps} steps: 1 run, {n_steps - 1} skipped" in result.stdout
    assert "$ lefusion evaluate quality --generated gen/copy-paste_Np" in result.stdout
    assert quality.is_file()


def test_changed_command_is_refused(smoke, tmp_path):
    workdir, _ = smoke
    module = _load_script()
    step = module.plan(module.PROFILES["smoke"])[0]
    assert module.is_done(workdir, step) is not None
    changed = module.Step(step.name, step.outputs, (*step.argv[:-1], "7"))  # another phantom seed
    with pytest.raises(SystemExit, match="use a new --workdir"):
        module.is_done(workdir, changed)


def test_profiles_plan_the_published_recipe():
    module = _load_script()
    cpu = [s.command for s in module.plan(module.PROFILES["cpu"])]
    assert not any(c.startswith("lefusion train") for c in cpu)  # the bundled model, no training on a CPU
    assert all("--jump-length 1 --jump-n-sample 1" in c for c in cpu if "--method lefusion" in c)
    assert '--settings P "P+P\'" "P+N\'" --network unet --seeds 0 1 2' in cpu[-1]
    gpu = [s.command for s in module.plan(module.PROFILES["gpu"])]
    trains = [c for c in gpu if c.startswith("lefusion train")]
    assert len(trains) == 3 and any("--loss global" in c for c in trains) and any("--method cond-diffusion" in c for c in trains)
    assert all("--dim 64 --dim-mults 1 2 4 8" in c and "--roi-shape 32 64 64" in c for c in trains)
    assert all("--jump-length 10 --jump-n-sample 10" in c for c in gpu if "--method lefusion" in c)
    assert "--network dynunet swinunetr --seeds 0 1 2 3 4" in gpu[-1]
    for profile in ("cpu", "gpu", "smoke"):  # P' is only ever generated on training cases
        assert all("--data p_train" in c for c in (s.command for s in module.plan(module.PROFILES[profile])) if "_Pp --seed" in c)


def test_steps_of_a_stage_run_side_by_side_and_stages_in_order(tmp_path, monkeypatch):
    """With workers = 2, the steps of one stage overlap two at a time, never more, and no step
    starts before every step of the earlier stages has finished."""
    import dataclasses
    import threading
    import time

    module = _load_script()
    profile = dataclasses.replace(module.PROFILES["smoke"], workers=2)
    kinds = [stage[0].name.split("-")[0] for stage in module.stages(module.plan(profile))]
    assert kinds == ["phantom", "p_train", "train", "generate", "quality", "segmentation"]
    lock, active, events = threading.Lock(), [0], []

    def fake_step(workdir, step, threads, in_process, log=None):
        with lock:
            active[0] += 1
            events.append(("start", step.name, active[0]))
        time.sleep(0.05)
        with lock:
            active[0] -= 1
            events.append(("end", step.name, active[0]))
        return 0.05

    monkeypatch.setattr(module, "run_step", fake_step)
    outcomes = module.run(profile, tmp_path / "bench", threads=1, in_process=False)
    assert [o.step.name for o in outcomes] == [s.name for s in module.plan(profile)]
    assert max(n for kind, _, n in events if kind == "start") == 2
    kind_of = lambda name: name.split("-")[0]  # noqa: E731
    order = [stage[0].name.split("-")[0] for stage in module.stages(module.plan(profile))]
    for i, (kind, name, _) in enumerate(events):
        if kind == "start":  # every step of an earlier stage has ended before this one starts
            earlier = {n for k, n, _ in events[:i] if k == "end"}
            needed = {s.name for s in module.plan(profile) if order.index(kind_of(s.name)) < order.index(kind_of(name))}
            assert needed <= earlier, f"{name} started before {needed - earlier} ended"


def test_segmentation_step_gets_the_profile_workers():
    import dataclasses

    module = _load_script()
    for workers in (1, 3):
        profile = dataclasses.replace(module.PROFILES["cpu"], workers=workers)
        argv = next(s for s in module.plan(profile) if s.name == "segmentation").argv
        assert (argv[-2:] == ("--workers", "3")) if workers == 3 else ("--workers" not in argv)


def test_profiles_without_training_generate_with_shipped_models():
    """A profile that trains no models (cpu) may only list diffusion methods whose bundled model is
    shipped in the package; the others generate from their own run folders."""
    from lefusion.checkpoints.loading import BUNDLED_MODELS, bundled_model_dir

    module = _load_script()
    for profile in module.PROFILES.values():
        for method in set(profile.methods) & set(module.BUNDLED_BY_METHOD):
            checkpoint = module.checkpoint_of(profile, method)
            if profile.models is None:
                assert checkpoint in BUNDLED_MODELS
                assert (bundled_model_dir(checkpoint) / "model.safetensors").is_file(), f"{profile.name}: {checkpoint} is not shipped"
            else:
                assert checkpoint == f"runs/{method}/checkpoint"
