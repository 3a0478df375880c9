"""Recipes: loading, base, overrides, typed validation and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from odcli.errors import OdetError
from odcli.recipe import load_recipe, parse_override

REPO = Path(__file__).resolve().parents[1]


def test_all_bundled_recipes_load() -> None:
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        assert path.stem.startswith(recipe.model.arch) or path.stem == "demo"
        assert recipe.name == path.stem


def test_upstream_hyper_parameters_in_full_recipes() -> None:
    tiny = load_recipe(REPO / "recipes" / "rtmdet_tiny.yaml")
    assert (tiny.train.lr, tiny.train.base_batch_size, tiny.train.weight_decay) == (0.004, 256, 0.05)
    assert (tiny.train.epochs, tiny.train.cosine_start_epoch, tiny.train.warmup_iters) == (300, 150, 1000)
    assert tiny.data.resize_ratio_range == [0.5, 2.0]
    assert load_recipe(REPO / "recipes" / "rtmdet_l.yaml").data.resize_ratio_range == [0.1, 2.0]


def test_overrides_are_typed(tmp_path: Path) -> None:
    recipe = load_recipe(
        REPO / "recipes" / "demo.yaml",
        ["train.epochs=50", "model.size=s", "train.lr=1e-3", "data.img_scale=[256, 256]"],
    )
    assert recipe.train.epochs == 50 and recipe.model.size == "s"
    assert recipe.train.lr == pytest.approx(1e-3)
    assert recipe.data.img_scale == [256, 256]
    assert parse_override("train.clip_grad_norm=null") == ("train", "clip_grad_norm", None)


def test_relative_data_root_resolves_against_the_recipe() -> None:
    recipe = load_recipe(REPO / "recipes" / "demo.yaml")
    assert recipe.data_root == (REPO / "recipes" / "data" / "coco8").resolve()
    assert (recipe.data_root / recipe.data.train_ann).is_file()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_base_recipe_is_updated_key_by_key(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "model: {arch: rtmdet, size: tiny}\ntrain: {epochs: 10, lr: 0.01}\n")
    child = _write(tmp_path / "child.toml", 'base = "base.yaml"\n[train]\nepochs = 20\n')
    recipe = load_recipe(child)
    assert recipe.train.epochs == 20 and recipe.train.lr == 0.01 and recipe.model.size == "tiny"


def test_only_one_level_of_base(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "base: b.yaml\nmodel: {arch: rtmdet}\n")
    _write(tmp_path / "b.yaml", "base: c.yaml\n")
    with pytest.raises(OdetError, match="one level"):
        load_recipe(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (
            "model: {arch: rtmdet}\ntrain: {epoch: 5}\n",
            [],
            r"unknown key 'train\.epoch' in .*bad\.yaml; did you mean 'epochs'\?",
        ),
        (
            "model: {arch: rtmdet}\n",
            ["train.lrr=0.1"],
            r"unknown key 'train\.lrr' in --set; did you mean 'lr'\?",
        ),
        (
            "model: {arch: rtmdet}\ntrian: {epochs: 5}\n",
            [],
            r"unknown section 'trian'.*did you mean 'train'\?",
        ),
        ("model: {arch: rtmdet}\ntrain: {epochs: many}\n", [], r"train\.epochs .*expected an integer"),
        ("model: {arch: rtmdet, size: huge}\n", [], r"model\.size 'huge' is not a rtmdet size"),
        ("model: {arch: rtmdett}\n", [], r"model\.arch 'rtmdett'.*did you mean 'rtmdet'\?"),
        ("model: [oops\n", [], r"cannot parse recipe"),
        (
            "model: {arch: ppyoloe, nms_top_k: 100}\n",
            [],
            r"^'model\.nms_top_k' in .*bad\.yaml was renamed: write 'model\.nms_pre' instead$",
        ),
        (
            "model: {arch: ppyoloe}\n",
            ["model.nms_top_k=-1"],
            r"^'model\.nms_top_k' in --set was renamed: write 'model\.nms_pre' instead$",
        ),
    ],
)
def test_recipe_errors_are_one_line(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(OdetError, match=expected) as err:
        load_recipe(path, overrides)
    assert "\n" not in str(err.value)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(OdetError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_checkpoint_recipes_read_renamed_keys_under_their_new_names() -> None:
    """A checkpoint written before a rename stores the old key; it still loads, with the value."""
    from odcli.recipe import recipe_from_dict

    stored = load_recipe(REPO / "recipes" / "ppyoloe_s.yaml").to_dict()
    stored["model"]["nms_top_k"] = stored["model"].pop("nms_pre") // 2
    assert recipe_from_dict(stored).model.nms_pre == 500
