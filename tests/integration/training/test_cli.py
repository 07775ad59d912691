"""`axon train|export|models` as users run it: real subprocesses, tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def axon(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# one conv block (4 filters 3x3, stride 1, padding 1, then pooling): seconds to train
ONE_CONV_BLOCK = [
    "--conv-channels",
    "4",
    "--kernel-size",
    "3",
    "--stride",
    "1",
    "--padding",
    "1",
    "--pool-every",
    "1",
]
TINY = ["--epochs", "1", "--progress", "false", "--checkpoint-dir", "runs"]


def train_tiny(tmp_path: Path, family: str, name: str, *args: str) -> dict[str, Any]:
    """`axon train <family> --name <name> … --models-dir repo` with TINY settings; asserts
    success and returns the written version 1's metadata.json."""
    r = axon("train", family, "--name", name, *args, "--models-dir", "repo", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    meta: dict[str, Any] = json.loads((tmp_path / f"repo/{name}/1/metadata.json").read_text())
    return meta


def test_train_classifier_writes_a_version_and_export_makes_the_next(tmp_path: Path) -> None:
    r = axon(
        "train",
        "classifier",
        "--arch",
        "mlp",
        "--hidden",
        "8",
        "--name",
        "tiny-mlp",
        "--models-dir",
        "repo",
        *TINY,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "repo/tiny-mlp/1/metadata.json").read_text())
    assert meta["architecture"] == "mlp" and meta["training"]["hidden"] == [8]
    assert (tmp_path / "runs/tiny-mlp/best.pt").is_file()
    r = axon("export", "runs/tiny-mlp/final.pt", "--models-dir", "repo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "repo/tiny-mlp/2/model.onnx").is_file()
    r = axon("export", "runs/tiny-mlp/best.pt", "--models-dir", "repo", cwd=tmp_path)
    assert r.returncode == 2 and "export the final.pt" in r.stderr


def test_train_gru_and_rnn_forecasters_with_config_file(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("hidden_size: 6\nlayers: 1\nwindow: 10\nhorizon: 2\n")
    for cell in ("gru", "rnn"):
        meta = train_tiny(tmp_path, "forecaster", f"s-{cell}", "--config", "f.yaml", "--cell", cell)
        assert meta["architecture"] == cell and meta["horizon"] == 2
        assert meta["parity"]["max_abs_diff"] <= 1e-4
        log = (tmp_path / f"repo/s-{cell}/1/report/grad_norm.csv").read_text().splitlines()
        assert log[0] == "step,epoch,grad_norm" and len(log) > 2


def test_compare_cells_tabulates(tmp_path: Path) -> None:
    r = axon(
        "train",
        "forecaster",
        "--compare-cells",
        "--hidden-size",
        "4",
        "--layers",
        "1",
        "--window",
        "8",
        "--report-dir",
        "cmp",
        *TINY,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "cmp/compare-cells.json").read_text())
    assert [row["cell"] for row in rows] == ["rnn", "lstm", "gru"]
    assert all(row["grad_norm_max"] > 0 for row in rows)
    assert "grad_norm_first_10pct" in r.stdout and (tmp_path / "cmp/grad_norm_by_cell.png").exists()


def test_augmentation_reports_both_accuracies(tmp_path: Path, model_repo: Path) -> None:
    generator = str(model_repo / "digits-gan")
    metrics = train_tiny(
        tmp_path, "classifier", "aug", *ONE_CONV_BLOCK, "--hidden", "8",
        "--augment-generator", generator, "--augment-samples", "50",
    )["metrics"]  # fmt: skip
    assert {"accuracy_without_augmentation", "accuracy_with_augmentation"} <= set(metrics)
    assert metrics["augmented_samples"] == 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "classifier", "--activation", "swish"],
            "activation: unknown value 'swish'; valid values: relu, sigmoid, tanh",
        ),
        (
            ["train", "classifier", "--data", "no/such/folder"],
            "image folder no/such/folder does not exist",
        ),
        (["train", "forecaster", "--data", "missing.csv"], "neither a built-in series"),
        (["train", "forecaster", "--cell", "lstmx"], "valid values: rnn, lstm, gru"),
        (["train", "gan", "--config", "nope.toml"], "config file nope.toml does not exist"),
        (["train", "classifier", "--device", "tpu"], "valid values: auto, cpu, cuda"),
        (["export", "missing.pt"], "checkpoint: missing.pt does not exist"),
        (["train", "classifier", "--augment-generator", "nowhere"], "holds no model version"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    r = axon(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_image_folder_classifier_and_gan(tmp_path: Path) -> None:
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    for k, name in enumerate(("bright", "dark")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 80, (10, 10, 3)) + 150 * (1 - k)
            Image.fromarray(pixels.astype("uint8")).save(tmp_path / "imgs" / name / f"{i}.png")
    folder = ["--data", "imgs", "--image-size", "8,8", "--channels", "3"]
    meta = train_tiny(
        tmp_path, "classifier", "folder-cnn", *folder, *ONE_CONV_BLOCK, "--hidden", "4",
        "--val-fraction", "0.2", "--test-fraction", "0.2",
    )  # fmt: skip
    assert meta["labels"] == ["bright", "dark"]
    assert meta["inputs"][0]["shape"] == [-1, 3, 8, 8]
    assert meta["image"]["value_range"] == [0.0, 255.0]
    meta = train_tiny(
        tmp_path, "gan", "folder-gan", *folder, "--gen-features", "4", "--disc-features", "4",
        "--batch-size", "8", "--eval-samples", "10", "--scorer", "repo/folder-cnn",
    )  # fmt: skip
    assert meta["outputs"][0]["shape"] == [-1, 3, 8, 8] and meta["num_classes"] == 2


def test_torchrun_ddp_trains_once_and_exports_once(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "training",
            "train",
            "forecaster",
            "--device",
            "cpu",
            "--hidden-size",
            "4",
            "--layers",
            "1",
            "--window",
            "8",
            "--name",
            "ddp-lstm",
            "--models-dir",
            "repo",
            *TINY,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "repo/ddp-lstm").iterdir()) == ["1"]
    assert r.stdout.count("exported ") == 1  # rank 0 only
    meta = json.loads((tmp_path / "repo/ddp-lstm/1/metadata.json").read_text())
    assert meta["parity"]["max_abs_diff"] <= 1e-4
