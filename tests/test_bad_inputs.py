"""Bad inputs end in one line, never a traceback, and leave no partial output behind.

Every case sets up a broken input in a fresh folder, runs one ``odet`` command in-process, and
checks: exit code != 0, exactly one non-empty line on stderr naming the problem, no "Traceback"
anywhere, and no file created by the failed command (tests run as root, so "not writable" is
simulated with a path below a regular file).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from odcli.cli.main import app
from tests.conftest import DEMO, small_demo_args

REPO = Path(__file__).resolve().parents[1]
COCO8 = REPO / "recipes" / "data" / "coco8"
FAST = [
    *small_demo_args(),
    "--set", "train.epochs=1",
    "--set", "train.warmup_iters=0",
]  # fmt: skip


# ------------------------------------------------------------------------------------- helpers
def _dataset(tmp: Path) -> Path:
    """A private copy of coco8 (annotations + images) that a case may break."""
    root = tmp / "data"
    shutil.copytree(COCO8, root)
    return root


def _ann(root: Path) -> Path:
    return root / "annotations" / "instances.json"


def _edit_ann(root: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(_ann(root).read_text())
    edit(data)
    _ann(root).write_text(json.dumps(data))


def _train(tmp: Path, *extra: str, root: Path | None = None) -> list[str]:
    """``odet train`` on the demo recipe (fast settings) with its data at ``root``."""
    data = ["--set", f"data.root={root}"] if root is not None else []
    return ["train", str(DEMO), *FAST, *data, *extra, "--run-dir", str(tmp / "run")]


def _weights(tmp: Path, arch: str = "rtmdet_tiny") -> Path:
    """A real odet checkpoint of ``arch`` (random weights)."""
    from odcli.data.coco_classes import COCO_CLASSES
    from odcli.recipe import build_detector
    from odcli.weights.checkpoint import save_checkpoint

    model = build_detector(arch, num_classes=80)
    path = tmp / "weights" / f"{arch}.safetensors"
    save_checkpoint(path, model_state=model.state_dict(), meta={"arch": arch, "classes": list(COCO_CLASSES)})
    return path


def _file(tmp: Path) -> Path:
    """A regular file, to put outputs "under" (a directory that cannot be created)."""
    f = tmp / "a_file"
    f.write_text("not a directory")
    return f


def _eval_data() -> list[str]:
    return ["--ann", str(COCO8 / "annotations" / "instances.json"), "--images", str(COCO8 / "images")]


def _image(tmp: Path) -> Path:
    dst = tmp / "input.jpg"
    shutil.copy(COCO8 / "images" / "000000000009.jpg", dst)
    return dst


def _break_image(root: Path, how: str) -> None:
    img = root / "images" / "000000000025.jpg"
    raw = img.read_bytes()
    if how == "corrupt":
        img.write_bytes(raw[:2] + bytes(range(256)) * 2 + raw[514:])  # headers overwritten
    elif how == "truncated":
        img.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        img.write_bytes(b"")
    elif how == "missing":
        img.unlink()
    elif how == "directory":
        img.unlink()
        img.mkdir()


# --------------------------------------------------------------------------------------- cases
# Each case: (tmp) -> (command line, words the error line must contain).
Case = Callable[[Path], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


for _how, _words in (
    ("corrupt", ["cannot decode image", "000000000025.jpg"]),
    ("truncated", ["truncated JPEG", "000000000025.jpg"]),
    ("empty", ["image file is empty", "000000000025.jpg"]),
    ("missing", ["image not found", "000000000025.jpg"]),
    ("directory", ["is a directory", "000000000025.jpg"]),
):

    @case(f"train_image_{_how}")
    def _img_case(tmp: Path, how: str = _how, words: list[str] = _words) -> tuple[list[str], list[str]]:
        root = _dataset(tmp)
        _break_image(root, how)
        return _train(tmp, root=root), words


@case("train_image_corrupt_in_dataloader_worker")
def _worker(tmp: Path) -> tuple[list[str], list[str]]:
    root = _dataset(tmp)
    _break_image(root, "corrupt")
    return _train(tmp, "--set", "data.num_workers=2", root=root), ["cannot decode image"]


def _ann_case(name: str, edit: Callable[[dict], None], words: list[str]) -> None:
    @case(f"train_annotations_{name}")
    def _c(tmp: Path) -> tuple[list[str], list[str]]:
        root = _dataset(tmp)
        _edit_ann(root, edit)
        return _train(tmp, root=root), words


_ann_case("no_images", lambda d: d.update(images=[], annotations=[]), ["lists no images"])
_ann_case("no_annotations", lambda d: d.update(annotations=[]), ["has no annotations"])
_ann_case(
    "zero_size_boxes",
    lambda d: [a["bbox"].__setitem__(2, 0.0) for a in d["annotations"]],
    ["no usable training boxes", "zero or negative width/height", "[x, y, width, height]"],
)
_ann_case(
    "negative_size_boxes",
    lambda d: [a["bbox"].__setitem__(3, -5.0) for a in d["annotations"]],
    ["no usable training boxes", "zero or negative"],
)
_ann_case("categories_missing", lambda d: d.pop("categories"), ["no 'categories' list"])
_ann_case("categories_empty", lambda d: d.update(categories=[]), ["has no categories"])
_ann_case(
    "category_ids_unknown",
    lambda d: [a.update(category_id=999) for a in d["annotations"]],
    ["uses a category listed", "category_id"],
)
_ann_case(
    "bbox_malformed",
    lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
    ["invalid annotation", "4-number bbox"],
)
_ann_case("not_a_coco_object", lambda d: d.clear(), ["no 'images' list"])


@case("train_annotations_invalid_json")
def _bad_json(tmp: Path) -> tuple[list[str], list[str]]:
    root = _dataset(tmp)
    _ann(root).write_text('{"images": [')
    return _train(tmp, root=root), ["not valid JSON"]


@case("train_annotation_file_missing")
def _no_ann(tmp: Path) -> tuple[list[str], list[str]]:
    root = _dataset(tmp)
    _ann(root).unlink()
    return _train(tmp, root=root), ["annotations not found", "data.train_ann"]


@case("train_image_folder_missing")
def _no_images(tmp: Path) -> tuple[list[str], list[str]]:
    root = _dataset(tmp)
    shutil.rmtree(root / "images")
    return _train(tmp, root=root), ["images not found", "data.train_images"]


@case("train_dataset_root_missing")
def _no_root(tmp: Path) -> tuple[list[str], list[str]]:
    return _train(tmp, root=tmp / "nowhere"), ["dataset root not found", "data.root"]


@case("recipe_file_missing")
def _no_recipe(tmp: Path) -> tuple[list[str], list[str]]:
    return ["train", str(tmp / "missing.yaml")], ["recipe not found"]


@case("recipe_invalid_yaml")
def _bad_yaml(tmp: Path) -> tuple[list[str], list[str]]:
    bad = tmp / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    return ["train", str(bad)], ["cannot parse recipe"]


def _recipe_case(name: str, override: str, words: list[str]) -> None:
    @case(f"recipe_{name}")
    def _c(tmp: Path) -> tuple[list[str], list[str]]:
        return _train(tmp, "--set", override), words


_recipe_case("unknown_key", "train.epoch=3", ["unknown key 'train.epoch'", "did you mean 'epochs'"])
_recipe_case("wrong_type", "train.epochs=many", ["train.epochs", "expected an integer"])
_recipe_case("unknown_section", "optim.lr=1", ["unknown section 'optim'"])
_recipe_case("override_without_value", "train.epochs", ["bad override", "section.key=value"])
_recipe_case("unknown_arch", "model.arch=yolo", ["model.arch 'yolo'"])
_recipe_case("zero_epochs", "train.epochs=0", ["train.epochs must be >= 1"])
_recipe_case("zero_eval_interval", "train.eval_interval=0", ["train.eval_interval must be >= 1"])
_recipe_case("bad_amp_dtype", "train.amp_dtype=fp8", ["train.amp_dtype", "fp16 or bf16"])
_recipe_case("bad_dist_backend", "train.dist_backend=mpi", ["train.dist_backend", "nccl, gloo"])
_recipe_case("bad_optimizer", "train.optimizer=adam", ["train.optimizer", "'adamw' or 'sgd'"])
_recipe_case("bad_data_format", "data.format=voc", ["data.format", "coco, yolo"])
_recipe_case("zero_batch_size", "data.batch_size=0", ["data.batch_size must be >= 1"])


@case("train_run_dir_under_a_file")
def _run_dir_file(tmp: Path) -> tuple[list[str], list[str]]:
    args = _train(tmp)
    args[-1] = str(_file(tmp) / "run")
    return args, ["is a file, not a directory", "--run-dir"]


@case("train_output_dir_under_a_file")
def _output_dir_file(tmp: Path) -> tuple[list[str], list[str]]:
    args = _train(tmp, "--set", f"train.output_dir={_file(tmp) / 'runs'}")
    return args[:-2], ["is a file, not a directory", "train.output_dir"]


@case("resume_without_checkpoint")
def _resume_nothing(tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "run").mkdir()
    return [*_train(tmp), "--resume"], ["nothing to resume"]


@case("resume_checkpoint_of_other_architecture")
def _resume_arch(tmp: Path) -> tuple[list[str], list[str]]:
    from odcli.weights.checkpoint import save_checkpoint

    meta = {"arch": "retinanet_r18", "epoch": 1}
    save_checkpoint(tmp / "run" / "last.safetensors", model_state={}, meta=meta)
    return [*_train(tmp), "--resume"], ["holds retinanet_r18", "rtmdet_tiny"]


@case("resume_from_weights_only_checkpoint")
def _resume_weights_only(tmp: Path) -> tuple[list[str], list[str]]:
    last = tmp / "run" / "last.safetensors"
    last.parent.mkdir()
    shutil.copy(_weights(tmp), last)
    return [*_train(tmp), "--resume"], ["holds weights only", "train.init_weights"]


@case("resume_truncated_checkpoint")
def _resume_truncated(tmp: Path) -> tuple[list[str], list[str]]:
    weights = _weights(tmp)
    last = tmp / "run" / "last.safetensors"
    last.parent.mkdir()
    last.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return [*_train(tmp), "--resume"], ["is truncated", "re-copy or re-save"]


@case("resume_checkpoint_not_safetensors")
def _resume_garbage(tmp: Path) -> tuple[list[str], list[str]]:
    last = tmp / "run" / "last.safetensors"
    last.parent.mkdir()
    last.write_bytes(b"\x00\x01garbage" * 100)
    return [*_train(tmp), "--resume"], ["not an odet checkpoint"]


@case("extend_epochs_without_checkpoint")
def _extend_nothing(tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "run").mkdir()
    return [*_train(tmp), "--extend-epochs", "5"], ["nothing to resume"]


@case("extend_epochs_zero")
def _extend_zero(tmp: Path) -> tuple[list[str], list[str]]:
    return [*_train(tmp), "--extend-epochs", "0"], ["--extend-epochs must be >= 1"]


@case("init_weights_of_other_architecture")
def _init_arch(tmp: Path) -> tuple[list[str], list[str]]:
    from odcli.weights.checkpoint import save_checkpoint

    path = tmp / "weights" / "other.safetensors"
    save_checkpoint(path, model_state={"w": __import__("torch").zeros(2)}, meta={"arch": "other"})
    return _train(tmp, "--set", f"train.init_weights={path}"), ["none of its 1 tensors fits rtmdet_tiny"]


@case("init_weights_missing")
def _init_missing(tmp: Path) -> tuple[list[str], list[str]]:
    return _train(tmp, "--set", f"train.init_weights={tmp / 'gone.safetensors'}"), ["weights file not found"]


@case("gpus_more_than_visible")
def _gpus(tmp: Path) -> tuple[list[str], list[str]]:
    return [*_train(tmp), "--gpus", "64"], ["--gpus 64 needs 64 CUDA GPUs", "torchrun --nproc_per_node 64"]


@case("eval_truncated_weights")
def _eval_truncated(tmp: Path) -> tuple[list[str], list[str]]:
    weights = _weights(tmp)
    weights.write_bytes(weights.read_bytes()[:5000])
    return ["eval", str(weights), *_eval_data(), "--out", str(tmp / "eval" / "det.json")], ["truncated"]


@case("eval_output_under_a_file")
def _eval_out(tmp: Path) -> tuple[list[str], list[str]]:
    weights = _weights(tmp)
    out = _file(tmp) / "eval" / "det.json"
    return ["eval", str(weights), *_eval_data(), "--out", str(out)], ["Not a directory", "--out"]


@case("infer_camera_that_does_not_exist")
def _camera(tmp: Path) -> tuple[list[str], list[str]]:
    weights = _weights(tmp)
    args = ["infer", "cam9", "--weights", str(weights), "-o", str(tmp / "out")]
    return args, ["camera cam9 is not available"]


@case("infer_output_under_a_file")
def _infer_out(tmp: Path) -> tuple[list[str], list[str]]:
    weights, image = _weights(tmp), _image(tmp)
    args = ["infer", str(image), "--weights", str(weights), "-o", str(_file(tmp) / "out")]
    return args, ["--out", "directory"]


@case("infer_corrupt_image")
def _infer_corrupt(tmp: Path) -> tuple[list[str], list[str]]:
    weights, image = _weights(tmp), _image(tmp)
    image.write_bytes(image.read_bytes()[:300] + b"\x00" * 5000)
    return ["infer", str(image), "--weights", str(weights), "-o", str(tmp / "out")], ["input.jpg"]


@case("infer_checkpoint_of_wrong_kind")
def _infer_pth(tmp: Path) -> tuple[list[str], list[str]]:
    fake = tmp / "model.pth"
    fake.write_bytes(b"PK\x03\x04 not really a zip")
    image = _image(tmp)
    return ["infer", str(image), "--weights", str(fake), "-o", str(tmp / "out")], ["--arch"]


@case("convert_output_not_safetensors")
def _convert_ext(tmp: Path) -> tuple[list[str], list[str]]:
    src = tmp / "model.pth"
    src.write_bytes(b"x")
    return ["convert-weights", str(src), str(tmp / "out.pt"), "--arch", "rtmdet_tiny"], [".safetensors"]


# ---------------------------------------------------------------------------------------- test
def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # runs/latest.json and default outputs would land here
    monkeypatch.setenv("COLUMNS", "400")  # one logical line must not be wrapped into several
    args, words = CASES[name](tmp_path)
    before = _files(tmp_path)
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output + result.stderr, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    created = _files(tmp_path) - before
    assert not created, f"left behind: {sorted(map(str, created))}"
