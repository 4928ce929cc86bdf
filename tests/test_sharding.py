"""Sharded generation (`--shard K/N`): the union of the shards' files is bit-identical to an
unsharded run, `manifest merge` gives the unsharded manifest (apart from timing), a killed shard
resumes only its own unfinished outputs, and bad shards are refused with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lefusion.checkpoints import save_model
from lefusion.cli import main
from lefusion.config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig
from lefusion.diffusion.model import DiffusionModel
from lefusion.errors import LeFusionError
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.masks.diffmask import diffmask_model_config
from lefusion.models import Denoiser
from lefusion.phantoms import write_lung_phantom
from lefusion.sharding import Shard, merge_records, merge_shards, parse_shard, resolve_shard

pytestmark = pytest.mark.usefixtures("one_thread")
ROI = (8, 16, 16)
TINY = DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
UNIFORM, DENSE = tuple([1 / 16] * 16), tuple([0.0] * 12 + [0.25] * 4)
TIMING = {"seconds"}  # per-run fields: how long this run took, not what it made


@pytest.fixture(scope="module")
def lung(tmp_path_factory) -> tuple[Path, Path]:
    """Five normal ROI cases and a tiny LeFusion model with two presets."""
    root = tmp_path_factory.mktemp("shard")
    write_lung_phantom(root / "lung", n_pathological=1, n_normal=5, n_test=0, seed=0, roi_shape=ROI, spacing=(2.0, 2.0, 2.0))
    config = ModelConfig(
        denoiser=TINY, schedule=ScheduleConfig(timesteps=4), preprocess=PreprocessConfig(roi_shape=ROI), hist_presets=(UNIFORM, DENSE)
    )
    torch.manual_seed(0)
    return root / "lung", save_model(DiffusionModel(config, Denoiser(config.denoiser)), root / "model")


def _generate(lung, out: Path, *extra: str) -> list[str]:
    data, model = lung
    # batch 4 over 2 presets: groups of 2 cases, so shard 0 of 2 has groups 0 and 2, shard 1 group 1
    args = ["--data", str(data), "--out", str(out), "--checkpoint", str(model), "--preset", "1", "2"]
    return ["generate", *args, "--sampler", "ancestral", "--batch-size", "4", "--device", "cpu", *extra]


def _volumes(out: Path) -> dict[str, Path]:
    return {str(p.relative_to(out)): p for sub in ("images", "labels", "masks") for p in sorted((out / sub).glob("*.nii.gz"))}


def _assert_same_files(a: Path, b: Path) -> int:
    """Every volume of `a` equals `b`'s (voxels, dtype, geometry) and no file is missing; the count compared."""
    left, right = _volumes(a), _volumes(b)
    assert left.keys() == right.keys() and left
    for name in left:
        x, y = read_volume(left[name]), read_volume(right[name])
        assert x.array.dtype == y.array.dtype and np.array_equal(x.array, y.array), f"{name}: voxels differ"
        assert x.geometry.matches(y.geometry), name
    return len(left)


def _deterministic(record):
    """A record without its timing fields (see TIMING), at every depth."""
    if isinstance(record, dict):
        return {k: _deterministic(v) for k, v in record.items() if k not in TIMING}
    if isinstance(record, list):
        return [_deterministic(v) for v in record]
    return record


def _manifest(path: Path, out: Path | None = None) -> dict:
    """The deterministic part of a manifest; the paths under `out` (an output folder) written as OUT/..."""
    text = path.read_text()
    return _deterministic(json.loads(text if out is None else text.replace(str(out), "OUT")))


def test_generate_shards_union_is_the_unsharded_run(lung, tmp_path, capsys):
    assert main(_generate(lung, tmp_path / "whole")) == 0
    assert main(_generate(lung, tmp_path / "sharded", "--shard", "0/2")) == 0
    assert not (tmp_path / "sharded" / "manifest.json").exists()  # shard 1 has not run yet
    shard0 = json.loads((tmp_path / "sharded" / "manifest.shard-0-of-2.json").read_text())
    assert len(shard0["outputs"]) == 6 and shard0["shard"] == {"index": 0, "count": 2, "complete": True}
    assert main(_generate(lung, tmp_path / "sharded", "--shard", "1/2")) == 0
    assert "merged" in capsys.readouterr().out
    assert _assert_same_files(tmp_path / "whole", tmp_path / "sharded") == 20  # 10 images + 10 label maps
    whole = _manifest(tmp_path / "whole" / "manifest.json")
    assert _manifest(tmp_path / "sharded" / "manifest.json") == whole and len(whole["outputs"]) == 10
    (tmp_path / "sharded" / "manifest.json").unlink()
    assert main(["manifest", "merge", str(tmp_path / "sharded")]) == 0
    assert _manifest(tmp_path / "sharded" / "manifest.json") == whole


def test_concurrent_shards_into_one_folder(lung, tmp_path):
    assert main(_generate(lung, tmp_path / "whole", "--batch-size", "2")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [
                "nice",
                "-n",
                "19",
                sys.executable,
                "-m",
                "lefusion",
                *_generate(lung, tmp_path / "both", "--batch-size", "2", "--shard", f"{k}/2"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(2)
    ]
    for run in runs:
        output = run.communicate(timeout=300)[0]
        assert run.returncode == 0, output
    assert _assert_same_files(tmp_path / "whole", tmp_path / "both") == 20
    assert _manifest(tmp_path / "both" / "manifest.json") == _manifest(tmp_path / "whole" / "manifest.json")
    assert not list((tmp_path / "both").rglob(".*.tmp*")), "a temporary file was left behind"


def test_killed_shard_resumes_only_its_own_unfinished_outputs(lung, tmp_path):
    out = tmp_path / "out"
    for k in range(2):
        assert main(_generate(lung, out, "--shard", f"{k}/2")) == 0
    before = {name: read_volume(p).array for name, p in _volumes(out).items()}
    stamps = {name: p.stat().st_mtime_ns for name, p in _volumes(out).items()}
    # shard 0 killed mid-way: one output gone, its manifest not finished, no merged manifest yet
    own = out / "manifest.shard-0-of-2.json"
    record = json.loads(own.read_text())
    lost = next(iter(record["outputs"]))
    (out / record["outputs"][lost]["image"]).unlink()
    del record["outputs"][lost]
    own.write_text(json.dumps({**record, "shard": {**record["shard"], "complete": False}}))
    (out / "manifest.json").unlink()
    with pytest.raises(LeFusionError, match="shard.s. 0 of 2 missing or unfinished"):
        merge_shards(out / "manifest.json")
    assert main(_generate(lung, out, "--shard", "0/2")) == 0
    after = _volumes(out)
    rewritten = {name for name, p in after.items() if p.stat().st_mtime_ns != stamps[name]}
    assert rewritten == {f"images/{lost}.nii.gz", f"labels/{lost}.nii.gz"}, rewritten  # the lost output only
    assert all(np.array_equal(read_volume(p).array, before[name]) for name, p in after.items())
    assert (out / "manifest.json").is_file()  # shard 0 was the last to finish: merged


def test_masks_sample_shards_union_is_the_unsharded_run(tmp_path):
    torch.manual_seed(1)
    config = diffmask_model_config(TINY, timesteps=4, box=ROI)
    model = save_model(DiffusionModel(config, Denoiser(config.denoiser), extra={"diffmask": {"box": list(ROI)}}), tmp_path / "dm")
    like = tmp_path / "scan.nii.gz"
    write_volume(Volume(np.full((12, 20, 20), -800, np.int16), Geometry(spacing=(1.5, 1.0, 1.0))), like)

    def sample(out: str, *extra: str) -> list[str]:
        args = ["--n", "5", "--diameter", "4", "--like", str(like), "--batch-size", "2", "--threshold", "0", "--device", "cpu"]
        return ["masks", "sample", "--checkpoint", str(model), *args, "--sampler", "ancestral", "--out", str(tmp_path / out), *extra]

    assert main(sample("whole")) == 0
    for k in range(2):
        assert main(sample("sharded", "--shard", f"{k}/2")) == 0
    shard0 = json.loads((tmp_path / "sharded" / "masks.shard-0-of-2.json").read_text())
    assert [s["seed"] for s in shard0["samples"]] == [0, 1, 4]  # batches 0 and 2 of [0, 1] [2, 3] [4]
    assert _assert_same_files(tmp_path / "whole", tmp_path / "sharded") == 10  # 5 masks + 5 scan copies
    assert (tmp_path / "sharded" / "masks.json").read_text() == (tmp_path / "whole" / "masks.json").read_text()
    # a killed shard: one mask lost; the re-run samples that batch only
    lost = tmp_path / "sharded" / "masks" / "scan_0004.nii.gz"
    stamp = (tmp_path / "sharded" / "masks" / "scan_0000.nii.gz").stat().st_mtime_ns
    lost.unlink()
    assert main(sample("sharded", "--shard", "0/2")) == 0
    assert (tmp_path / "sharded" / "masks" / "scan_0000.nii.gz").stat().st_mtime_ns == stamp
    assert _assert_same_files(tmp_path / "whole", tmp_path / "sharded") == 10


def _augment_setup(root: Path) -> tuple[Path, Path, Path]:
    shape = (24, 60, 60)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    organ = ((((grid - (12, 30, 30)) / (10, 26, 26)) ** 2).sum(-1) <= 1).astype(np.uint8)
    rng = np.random.default_rng(0)
    geometry = Geometry(spacing=(2.5, 0.8, 0.8))
    for name in ("a", "b", "c"):
        image = (np.where(organ > 0, -850, 40) + rng.integers(-30, 30, shape)).astype(np.int16)
        write_volume(Volume(image, geometry), root / "scans" / f"{name}.nii.gz")
        write_volume(Volume(organ, geometry), root / "organs" / f"{name}.nii.gz")
    config = ModelConfig(
        denoiser=TINY,
        schedule=ScheduleConfig(timesteps=3),
        preprocess=PreprocessConfig(roi_shape=ROI, spacing=(1.5, 1.5, 1.5)),
        hist_presets=(UNIFORM,),
    )
    torch.manual_seed(0)
    return root / "scans", root / "organs", save_model(DiffusionModel(config, Denoiser(config.denoiser)), root / "model")


def test_augment_shards_place_and_generate_what_the_unsharded_run_does(tmp_path, capsys):
    scans, organs, model = _augment_setup(tmp_path)

    def augment(out: str, *extra: str) -> list[str]:
        args = ["--scans", str(scans), "--organ-masks", str(organs), "--checkpoint", str(model), "--lesions", "1:2", "--diameter", "4:6"]
        rest = ["--shapes", "handcrafted", "--preset", "1", "--sampler", "ancestral", "--batch-size", "1", "--no-previews"]
        return ["augment", *args, *rest, "--device", "cpu", "--out", str(tmp_path / out), *extra]

    assert main(augment("whole")) == 0
    assert main(augment("sharded", "--shard", "0/2", "--nnunet-id", "7", "--name", "X")) == 2
    assert "lefusion manifest merge OUT --nnunet-id" in capsys.readouterr().err
    for k in (1, 0):  # any order
        assert main(augment("sharded", "--shard", f"{k}/2")) == 0
    assert _assert_same_files(tmp_path / "whole", tmp_path / "sharded") == 6
    for sub in ("work/placed", "work/generated"):
        assert _assert_same_files(tmp_path / "whole" / sub, tmp_path / "sharded" / sub) > 0
    for record in ("manifest.json", "work/generated/manifest.json", "work/placed/lesions.json"):
        whole, sharded = (_manifest(tmp_path / run / record, tmp_path / run) for run in ("whole", "sharded"))
        assert whole == sharded, record
        assert len(whole.get("outputs", whole.get("scans"))) == 3
    assert main(["manifest", "merge", str(tmp_path / "sharded"), "--nnunet-id", "7", "--name", "X"]) == 0
    assert len(list((tmp_path / "sharded" / "nnUNet_raw" / "Dataset007_X" / "imagesTr").iterdir())) == 3


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1/0", "a/b", "1", "1/2/3", ""])
def test_bad_shard_is_refused_with_a_clear_error(lung, tmp_path, capsys, text):
    assert main(_generate(lung, tmp_path / "out", f"--shard={text}")) == 2
    err = capsys.readouterr().err
    assert "--shard" in err and "0 <= K < N" in err, err
    assert not (tmp_path / "out").exists()


def test_shard_from_torchrun_environment_and_explicit_wins():
    assert resolve_shard(None, {}) is None
    assert resolve_shard(None, {"RANK": "3", "WORLD_SIZE": "4"}) == Shard(3, 4)
    assert resolve_shard("1/2", {"RANK": "3", "WORLD_SIZE": "4"}) == Shard(1, 2)
    assert resolve_shard(None, {"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: the whole job
    assert parse_shard(" 0 / 1 ") is None
    with pytest.raises(LeFusionError, match="RANK"):
        resolve_shard(None, {"RANK": "4", "WORLD_SIZE": "4"})
    assert Shard(1, 3).path("out/manifest.json") == Path("out/manifest.shard-1-of-3.json")
    assert [g for g in range(7) if Shard(1, 3).takes(g)] == [1, 4]


def test_merge_joins_tables_and_refuses_shards_that_disagree():
    a = {"settings": {"seed": 0}, "outputs": {"y": 1}, "samples": [{"seed": 2}], "shard": {"index": 0}}
    b = {"settings": {"seed": 0}, "outputs": {"x": 2}, "samples": [{"seed": 1}], "shard": {"index": 1}}
    assert merge_records([a, b]) == {"settings": {"seed": 0}, "outputs": {"x": 2, "y": 1}, "samples": [{"seed": 1}, {"seed": 2}]}
    with pytest.raises(LeFusionError, match="disagree on 'settings'"):
        merge_records([a, {**b, "settings": {"seed": 1}}])


def test_merge_names_what_is_missing(tmp_path, capsys):
    assert main(["manifest", "merge", str(tmp_path)]) == 2
    assert "no shard manifests" in capsys.readouterr().err
    (tmp_path / "manifest.shard-1-of-3.json").write_text(json.dumps({"outputs": {}, "shard": {"index": 1, "count": 3, "complete": True}}))
    assert main(["manifest", "merge", str(tmp_path)]) == 2
    assert "shard(s) 0, 2 of 3 missing or unfinished" in capsys.readouterr().err
