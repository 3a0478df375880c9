"""YOLO datasets as Ultralytics users bring them: a ``data.yaml`` with ``path``, ``train``, ``val``
(and ``test``) — folders, lists of folders or ``.txt`` image lists — with ``data.root`` the dataset
folder or the yaml file itself; a warning when training and validation are the same images without
the recipe asking for it (without a data.yaml, the recipe's image folders apply)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from odcli.data.datasets import build_dataset
from odcli.errors import OdetError
from odcli.recipe import DataConfig
from tests.conftest import COCO8, DEMO, coco8_class_names, small_demo_args, write_yolo_dataset

NAMES = coco8_class_names()


def _data_yaml(folder: Path, **splits: object) -> Path:
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump({**splits, "names": dict(enumerate(NAMES))}, sort_keys=False))
    return path


def _train(root: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "train", str(DEMO), *small_demo_args(), "--set", "data.format=yolo", "--set", f"data.root={root}",
        "--set", "train.epochs=1", "--set", "train.warmup_iters=0", "--set", "data.num_workers=0",
        *extra, "--run-dir", str(run_dir),
    ]  # fmt: skip
    command = [sys.executable, "-m", "odcli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=run_dir.parent)


def test_data_yaml_names_the_splits_with_root_the_folder_or_the_file(tmp_path: Path) -> None:
    dataset = tmp_path / "datasets" / "coco8"
    write_yolo_dataset(dataset, {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7]})
    # The yaml lives elsewhere and points at the dataset with a relative `path`, as Ultralytics' do.
    config = tmp_path / "configs"
    config.mkdir()
    described = _data_yaml(config, path="../datasets/coco8", train="images/train", val="images/val")

    for root in (config, described):  # data.root: the folder holding data.yaml, or the file
        run = _train(root, tmp_path / f"run_{root.name}")
        out = " ".join(run.stdout.split())
        assert run.returncode == 0, run.stdout + run.stderr
        assert "6 train / 2 val images" in out
        assert "warning" not in out  # separate splits
    meta = json.loads((tmp_path / "run_data.yaml" / "epochs.jsonl").read_text().splitlines()[-1])
    assert "mAP" in meta  # evaluated on the yaml's val split

    # Without a data.yaml the recipe's folders below data.root apply (the demo names images/…).
    (dataset / "classes.txt").write_text("\n".join(NAMES))
    folders = DataConfig(format="yolo", train_images="images/val", val_images="images/val")
    assert len(build_dataset(folders, dataset, "train")) == 2


def test_validation_equal_to_training_from_data_yaml_is_warned(tmp_path: Path) -> None:
    write_yolo_dataset(tmp_path / "ds", {"train": list(range(8))})
    described = _data_yaml(tmp_path / "ds", train="images/train", val="images/train")
    run = _train(described, tmp_path / "run")
    out = " ".join(run.stdout.split())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning: 8 of the 8 validation images (data.yaml 'val') are training images" in out

    # Asked for in the recipe itself: no warning (the demo trains and evaluates on the same 8 images).
    (tmp_path / "ds" / "data.yaml").unlink()
    (tmp_path / "ds" / "classes.txt").write_text("\n".join(NAMES))
    same = ["--set", "data.train_images=images/train", "--set", "data.val_images=images/train"]
    run = _train(tmp_path / "ds", tmp_path / "run2", *same)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning" not in run.stdout


def test_split_lists_text_files_and_test_split(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    written = write_yolo_dataset(root, {"a": [0, 1, 2], "b": [3, 4], "v": [5, 6], "t": [7]})
    listing = root / "val.txt"
    listing.write_text("".join(f"./images/v/{name}\n" for name in written["v"]))
    _data_yaml(root, path=str(root), train=["images/a", "images/b"], val="val.txt", test="images/t")
    data = DataConfig(format="yolo")

    train = build_dataset(data, root, "train")
    assert [train.image_path(i).name for i in range(len(train))] == written["a"] + written["b"]
    assert train.classes == NAMES and train.num_boxes > 0
    val = build_dataset(data, root / "data.yaml", "val")
    assert [val.image_path(i).name for i in range(len(val))] == written["v"]
    assert val.origin == "data.yaml 'val'" and val.split_from_yaml
    # labels follow Ultralytics' images/ → labels/ rule for listed images too
    _, labels = val.annotations(0)
    text = (root / "labels" / "v" / Path(written["v"][0]).with_suffix(".txt")).read_text()
    assert len(labels) == len(text.splitlines())
    assert len(build_dataset(data, root, "test")) == 1

    listing.write_text("./images/v/missing.jpg\n")
    with pytest.raises(OdetError, match=r"1 of 1 images listed in .*val.txt .*do not exist"):
        build_dataset(data, root, "val")
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(yaml.safe_dump({"path": str(root), "train": "images/a", "names": NAMES}))
    with pytest.raises(OdetError, match="names no 'val' split"):
        build_dataset(data, no_val, "val")


def test_explicit_image_folder_of_a_yolo_recipe(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    written = write_yolo_dataset(root, {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7]})
    config = tmp_path / "configs"
    config.mkdir()
    described = _data_yaml(config, path=str(root), train="images/train", val="images/val")
    renamed = tmp_path / "coco8.yaml"  # another name: only data.root itself leads to it
    renamed.write_text(described.read_text())
    data = DataConfig(format="yolo")
    # `odet eval --images DIR` on a YOLO recipe: that folder's images and labels, and the class names
    # of the recipe's data.yaml, whether data.root is that file or the folder holding it.
    for where in (renamed, config):
        chosen = build_dataset(data, where, "val", images=root / "images" / "train")
        assert [chosen.image_path(i).name for i in range(len(chosen))] == written["train"]
        assert chosen.classes == NAMES and chosen.num_boxes > 0
    with pytest.raises(OdetError, match=r"image directory not found: .*nope \(check --images\)$"):
        build_dataset(data, root, "val", images=root / "nope")
    # A COCO file given as well: a COCO dataset over those images, whatever data.format says.
    coco = build_dataset(
        data, root, "val", ann=COCO8 / "annotations" / "instances.json", images=COCO8 / "images"
    )
    assert type(coco).__name__ == "CocoDetection" and len(coco) == 8
