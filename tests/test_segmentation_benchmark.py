"""Downstream segmentation benchmark: settings, split, leakage, metrics, networks, end to end, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lefusion.cli import main
from lefusion.data.sources import drop_leaking, label_scheme, read_synthetic_set, split_real
from lefusion.errors import LeFusionError
from lefusion.evaluation.segmentation import BenchmarkConfig, TrainSettings, parse_synthetic, run_benchmark
from lefusion.evaluation.segmentation import benchmark as benchmark_module
from lefusion.evaluation.segmentation.metrics import score_case
from lefusion.evaluation.segmentation.networks import plan_dynunet, plan_network, size_multiple
from lefusion.evaluation.segmentation.settings import SyntheticSpec, canonical_setting, plan_mixes
from lefusion.io import Volume, read_volume, write_volume
from lefusion.phantoms import write_cardiac_phantom, write_lung_phantom

ROI = (8, 16, 16)
FAST = TrainSettings(iterations=2, batch_size=2)


def write_fake_generated(out: Path, group: Path, role: str, method: str = "lefusion", value: float = 40.0) -> Path:
    """A `lefusion generate`-like output folder: every case of the LIDC-style `group` folder (Image/,
    Mask/) with its mask region set to `value`, a label copy and a manifest like the pipeline's."""
    outputs = {}
    for image_path in sorted((group / "Image").glob("*.nii.gz")):
        mask_path = group / "Mask" / image_path.name.replace("Vol_", "Mask_")
        image, mask = read_volume(image_path), read_volume(mask_path)
        array = image.array.copy()
        array[mask.array > 0] = value
        name = f"{image_path.name[: -len('.nii.gz')]}_preset1"
        write_volume(Volume(array, image.geometry), out / "images" / f"{name}.nii.gz")
        write_volume(Volume(mask.array.astype(np.uint8), mask.geometry), out / "labels" / f"{name}.nii.gz")
        outputs[name] = {
            "image": f"images/{name}.nii.gz",
            "label": f"labels/{name}.nii.gz",
            "method": method,
            "source_image": str(image_path),
            "source_mask": str(mask_path),
            "source_role": role,
        }
    (out / "manifest.json").write_text(json.dumps({"settings": {}, "method": method, "outputs": outputs}))
    return out


@pytest.fixture(scope="module")
def lung(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg") / "lung"
    write_lung_phantom(root, n_pathological=6, n_normal=3, n_test=2, seed=0, roi_shape=ROI, spacing=(2.0, 1.0, 1.0))
    return root


@pytest.fixture(scope="module")
def generated(lung, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("gen")
    return {
        "normal": write_fake_generated(base / "lf_normal", lung / "Normal", "normal"),
        # P' made from the whole Pathological folder, test cases included: those must be dropped
        "pathological": write_fake_generated(base / "lf_path", lung / "Pathological", "pathological"),
        "cp": write_fake_generated(base / "cp_normal", lung / "Normal", "normal", method="copy-paste", value=-100.0),
    }


def _specs(generated: dict[str, Path]) -> list[SyntheticSpec]:
    return [
        parse_synthetic(f"N'={generated['normal']}"),
        parse_synthetic(f"lefusion:Pp={generated['pathological']}"),
        parse_synthetic(f"N'={generated['cp']}"),
    ]


# ------------------------------------------------------------------------------------------ settings


def test_setting_names_and_synthetic_specs():
    assert canonical_setting("P+Npp+Pp") == "P+P'+N''"
    assert canonical_setting("P + N′") == "P+N'"
    spec = parse_synthetic("copy-paste:N''=gen/a=b")
    assert (spec.method, spec.set_name, spec.folder) == ("copy-paste", "N''", Path("gen/a=b"))
    assert parse_synthetic("Np=gen/x").method is None  # taken from the folder's manifest later
    for bad in ("N'", "X'=gen", "lefusion:Q=gen", "real:N'=gen", "bad name:N'=gen"):
        with pytest.raises(LeFusionError):
            parse_synthetic(bad)
    for bad in ("N+P'", "P+Q", "P+N'+Np"):
        with pytest.raises(LeFusionError):
            canonical_setting(bad)


def test_plan_mixes_picks_the_right_sets():
    lf_n, lf_p, cp_n = (
        SyntheticSpec("lefusion", "N'", Path("a")),
        SyntheticSpec("lefusion", "P'", Path("b")),
        SyntheticSpec("copy-paste", "N'", Path("c")),
    )
    mixes = plan_mixes(None, [lf_n, lf_p, cp_n])
    assert [(m.setting, m.method) for m in mixes] == [("P", "real"), ("P+P'", "lefusion"), ("P+N'", "lefusion"), ("P+N'", "copy-paste")]
    assert mixes[3].sets == (cp_n,) and mixes[0].sets == ()
    explicit = plan_mixes(["P+Np"], [lf_n, cp_n])
    assert [(m.setting, m.method) for m in explicit] == [("P+N'", "lefusion"), ("P+N'", "copy-paste")]
    with pytest.raises(LeFusionError, match=r"P\+N'' needs synthetic set N''"):
        plan_mixes(["P", "P+N''"], [lf_n])
    with pytest.raises(LeFusionError, match="method lefusion has no synthetic set N''"):
        plan_mixes(["P+P'+N''"], [lf_p])
    with pytest.raises(LeFusionError, match="given twice"):
        plan_mixes(None, [lf_n, SyntheticSpec("lefusion", "N'", Path("z"))])


def test_split_uses_the_dataset_test_list_and_drops_leaking_synthetic(lung, generated):
    split = split_real(lung)
    listed = set((lung / "Pathological" / "test.txt").read_text().split())
    assert {c.name for c in split.test} == listed and len(split.train) == 4
    assert not {c.name for c in split.train} & listed and "own test split" in split.note
    kept, dropped = drop_leaking(read_synthetic_set(generated["pathological"]), split)
    assert dropped == 2 and len(kept) == 4
    assert all(not any(s.startswith(tuple(n.split("_")[0] for n in listed)) for s in c.sources) for c in kept)
    assert drop_leaking(read_synthetic_set(generated["normal"]), split)[1] == 0


def test_dataset_without_test_split_gets_a_seeded_split_by_patient(tmp_path):
    root = tmp_path / "cardiac"
    write_cardiac_phantom(root, n_pathological=4, n_normal=0, seed=0, roi_shape=(4, 16, 16), spacing=(8.0, 2.0, 2.0))
    a, b = split_real(root, 0.25, seed=3), split_real(root, 0.25, seed=3)
    assert [c.name for c in a.test] == [c.name for c in b.test] and len(a.test) == 1 and len(a.train) == 3
    assert "no test split" in a.note and a.by_patient
    scheme = label_scheme(root)
    assert scheme.modality == "mri" and scheme.lesion_labels == (3, 4) and scheme.all_labels == (0, 1, 2, 3, 4)


# ------------------------------------------------------------------------------------------- metrics


def _cube(shape, start, size=4) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def test_metrics_against_hand_computed_values():
    shape = (12, 12, 12)
    a = _cube(shape, (2, 2, 2))
    # shifted 2 voxels along x: overlap 4*4*2 = 32 of 64 + 64 voxels -> Dice 2*32/128
    assert score_case(_cube(shape, (2, 2, 4)), a, (1.0, 1.0, 1.0)).dice == pytest.approx(0.5)
    same = score_case(a, a, (3.0, 0.5, 0.5), nsd_tolerance=1.0)
    assert same.dice == pytest.approx(1.0) and same.nsd == pytest.approx(1.0) and same.hd95 == pytest.approx(0.0)
    # anisotropic spacing: one voxel along z is 3 mm, two voxels along x are 2 * 0.5 = 1 mm
    assert score_case(_cube(shape, (3, 2, 2)), a, (3.0, 0.5, 0.5)).hd95 == pytest.approx(3.0)
    assert score_case(_cube(shape, (2, 2, 4)), a, (3.0, 0.5, 0.5)).hd95 == pytest.approx(1.0)
    # a 1 mm shift is inside a 1 mm tolerance (NSD 1) but not inside 0.4 mm (NSD < 1)
    assert score_case(_cube(shape, (2, 2, 4)), a, (3.0, 0.5, 0.5), nsd_tolerance=1.0).nsd == pytest.approx(1.0)
    assert score_case(_cube(shape, (2, 2, 4)), a, (3.0, 0.5, 0.5), nsd_tolerance=0.4).nsd < 1.0


def test_empty_mask_conventions():
    a, empty = _cube((8, 8, 8), (2, 2, 2)), np.zeros((8, 8, 8), dtype=bool)
    miss = score_case(empty, a, (1.0, 1.0, 1.0))
    assert (miss.dice, miss.nsd, miss.missed, miss.false_alarm) == (0.0, 0.0, True, False) and np.isnan(miss.hd95)
    alarm = score_case(a, empty, (1.0, 1.0, 1.0))
    assert (alarm.dice, alarm.nsd, alarm.missed, alarm.false_alarm) == (0.0, 0.0, False, True) and np.isnan(alarm.hd95)
    both = score_case(empty, empty, (1.0, 1.0, 1.0))
    assert (both.dice, both.nsd, both.missed, both.false_alarm) == (1.0, 1.0, False, False) and np.isnan(both.hd95)


# ------------------------------------------------------------------------------------------ networks


def test_network_plans_fit_their_inputs():
    kernels, strides = plan_dynunet((8, 16, 16), (2.0, 1.0, 1.0))
    # thick slices: in-plane only until the in-plane spacing has caught up with z
    assert strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2]] and kernels == [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
    for shape, spacing in (((10, 72, 72), (8.0, 1.4, 1.4)), ((8, 16, 16), (2.0, 1.0, 1.0)), ((13, 50, 37), (1.0, 1.0, 1.0))):
        plan = plan_network("dynunet", shape, spacing, 3)
        multiple = size_multiple("dynunet", plan.input_shape, spacing)
        assert all(s % m == 0 and s >= t for s, m, t in zip(plan.input_shape, multiple, shape))
    assert plan_network("unet", (10, 72, 72), (8.0, 1.4, 1.4), 5).input_shape == (16, 72, 72)
    assert plan_network("swinunetr", (8, 16, 16), (2.0, 1.0, 1.0), 2).input_shape == (32, 32, 64)
    with pytest.raises(LeFusionError, match="divisible by 12"):
        plan_network("swinunetr", (8, 16, 16), (1.0, 1.0, 1.0), 2, width=16)


@pytest.mark.parametrize("name", ["unet", "dynunet"])
def test_networks_give_one_logit_per_class(name):
    from lefusion.evaluation.segmentation.networks import build_network

    plan = plan_network(name, ROI, (2.0, 1.0, 1.0), 3, width=8)
    out = build_network(plan).eval()(torch.zeros(1, 1, *plan.input_shape))
    assert tuple(out.shape) == (1, 3, *plan.input_shape)


def test_dynunet_with_deep_supervision_trains_and_predicts():
    from lefusion.evaluation.segmentation.train import predict, train_segmenter

    plan = plan_network("dynunet", ROI, (2.0, 1.0, 1.0), 2, width=8, deep_supervision=True)
    assert plan.args["deep_supervision"] and plan.args["deep_supr_num"] == 1
    images = torch.randn(3, 1, *plan.input_shape)
    labels = (images > 1).to(torch.uint8)
    net = train_segmenter(plan, images, labels, FAST, seed=0, device=torch.device("cpu"), progress=False)
    prediction = predict(net, images, torch.device("cpu"))
    assert prediction.shape == (3, *plan.input_shape) and prediction.dtype == torch.uint8


# --------------------------------------------------------------------------------------- end to end


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_benchmark_end_to_end_then_resume(lung, generated, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    config = BenchmarkConfig(networks=("unet",), seeds=(0, 1), train=FAST)
    paths = run_benchmark(lung, _specs(generated), out, config, progress=False)
    rows = _read_csv(paths["per_case.csv"])
    mixes = {(r["setting"], r["method"]) for r in rows}
    assert mixes == {("P", "real"), ("P+P'", "lefusion"), ("P+N'", "lefusion"), ("P+N'", "copy-paste")}
    assert len(rows) == 4 * 2 * 2  # mixes x seeds x test cases (one lesion class)
    assert {r["case"] for r in rows} == set((lung / "Pathological" / "test.txt").read_text().split())
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    summary = _read_csv(paths["summary.csv"])
    assert len(summary) == 4 and all(s["seeds"] == "2" and s["class"] == "nodule" for s in summary)
    table = paths["summary.md"].read_text()
    assert "| setting | method | nodule Dice (%) | nodule NSD (%) | nodule HD95 (mm) |" in table
    assert "| P+N' | copy-paste |" in table and "2 made from test cases left out" in table
    assert paths["summary.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == 8
    record = json.loads((out / "runs" / "P_Pp__lefusion__unet__seed0.json").read_text())
    assert record["training_cases"] == 4 + 4  # real train + P' without the 2 made from test cases

    # Resume: nothing is retrained; adding a seed trains only the new runs.
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    calls = []
    original = benchmark_module.train_segmenter
    monkeypatch.setattr(benchmark_module, "train_segmenter", lambda *a, **k: calls.append(a) or original(*a, **k))
    run_benchmark(lung, _specs(generated), out, config, progress=False)
    assert calls == [] and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    run_benchmark(lung, _specs(generated), out, BenchmarkConfig(networks=("unet",), seeds=(0, 1, 2), train=FAST), progress=False)
    assert len(calls) == 4
    assert len(_read_csv(out / "per_case.csv")) == 4 * 3 * 2
    with pytest.raises(LeFusionError, match="other config"):
        run_benchmark(lung, _specs(generated), out, BenchmarkConfig(seeds=(0,), train=TrainSettings(iterations=3)), progress=False)


def test_same_seed_same_result(lung, tmp_path):
    config = BenchmarkConfig(settings=("P",), seeds=(0,), train=FAST)
    a = _read_csv(run_benchmark(lung, [], tmp_path / "a", config, progress=False)["per_case.csv"])
    b = _read_csv(run_benchmark(lung, [], tmp_path / "b", config, progress=False)["per_case.csv"])
    assert a == b


def test_workers_give_the_same_results_as_one_process(lung, tmp_path):
    config = BenchmarkConfig(settings=("P",), seeds=(0, 1), train=FAST)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers run 1 thread each; same arithmetic order, same numbers
    try:
        one = _read_csv(run_benchmark(lung, [], tmp_path / "one", config, progress=False)["per_case.csv"])
    finally:
        torch.set_num_threads(threads)
    parallel = BenchmarkConfig(settings=("P",), seeds=(0, 1), train=FAST, workers=2, threads_per_worker=1)
    two = _read_csv(run_benchmark(lung, [], tmp_path / "two", parallel, progress=False)["per_case.csv"])
    assert len(one) == 2 * 2 and one == two
    # the worker count is not part of the results' identity: a resumed run may use another
    again = run_benchmark(lung, [], tmp_path / "two", config, progress=False)
    assert _read_csv(again["per_case.csv"]) == two


def test_two_lesion_classes_are_scored_separately(tmp_path):
    root = tmp_path / "cardiac"
    write_cardiac_phantom(root, n_pathological=4, n_normal=0, seed=0, roi_shape=(4, 16, 16), spacing=(8.0, 2.0, 2.0))
    paths = run_benchmark(root, [], tmp_path / "out", BenchmarkConfig(seeds=(0,), train=FAST, test_fraction=0.25), progress=False)
    rows = _read_csv(paths["per_case.csv"])
    assert {r["class"] for r in rows} == {"MI", "PMO"} and {r["class_id"] for r in rows} == {"3", "4"}
    text = paths["summary.md"].read_text()
    assert "MI Dice (%)" in text and "PMO HD95 (mm)" in text and "no test split" in text
    assert "predicts cavity (1), myocardium (2), MI (3), PMO (4)" in text


# ---------------------------------------------------------------------------------------- bad input


def test_bad_input_errors(lung, generated, tmp_path):
    config = BenchmarkConfig(seeds=(0,), train=FAST)
    with pytest.raises(LeFusionError, match=r"P\+N'' needs synthetic set N''"):
        run_benchmark(lung, _specs(generated), tmp_path / "a", BenchmarkConfig(settings=("P+N''",), train=FAST), progress=False)
    with pytest.raises(LeFusionError, match="must be generated on normal cases"):
        run_benchmark(lung, [parse_synthetic(f"N'={generated['pathological']}")], tmp_path / "b", config, progress=False)
    with pytest.raises(LeFusionError, match="synthetic set folder not found"):
        run_benchmark(lung, [parse_synthetic(f"N'={tmp_path / 'nowhere'}")], tmp_path / "c", config, progress=False)
    with pytest.raises(LeFusionError, match="unknown network"):
        run_benchmark(lung, [], tmp_path / "d", BenchmarkConfig(networks=("vnet",), train=FAST), progress=False)
    broken = tmp_path / "broken"
    write_fake_generated(broken, lung / "Normal", "normal")
    next((broken / "images").glob("*.nii.gz")).unlink()
    with pytest.raises(LeFusionError, match="missing"):
        run_benchmark(lung, [parse_synthetic(f"N'={broken}")], tmp_path / "e", config, progress=False)


def test_cli(lung, generated, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            [
                "evaluate",
                "segmentation",
                "--real",
                str(lung),
                "--synthetic",
                f"lefusion:N'={generated['normal']}",
                "--settings",
                "P",
                "P+Np",
                "--seeds",
                "0",
                "--iterations",
                "1",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "| P+N' | lefusion |" in capsys.readouterr().out
    assert main(["evaluate", "segmentation", "--real", str(lung), "--settings", "P+N'", "--out", str(tmp_path / "x")]) == 2
    assert "needs synthetic set N'" in capsys.readouterr().err
