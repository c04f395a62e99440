"""Suite files: the shipped suites load; malformed ones name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.compress.suite import load_suite
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["demo", "zoo", "pets"])
def test_shipped_suites_load(name: str) -> None:
    suite = load_suite(ROOT / "models" / f"{name}.yaml")
    assert suite.models
    for model in suite.models.values():
        for recipe in model.recipes:
            assert recipe in suite.recipes


def test_demo_covers_every_subarea_and_a_chain() -> None:
    suite = load_suite(ROOT / "models" / "demo.yaml")
    digits = suite.models["digits_cnn"]
    steps = {s.technique for r in digits.recipes for s in suite.recipes[r].steps}
    assert {"quantize_static", "qat", "prune_structured", "prune_magnitude", "distill",
            "lowrank_svd", "lowrank_tucker"} <= steps
    assert any(len(suite.recipes[r].steps) >= 3 for r in digits.recipes)
    assert set(digits.formats) == {"onnx", "tflite"}
    for latency_only in ("mobilenet_v3_small", "resnet18"):
        assert suite.models[latency_only].dataset is None
        assert suite.models[latency_only].input_size == 224


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


BASE = """
datasets:
  digits: {type: digits}
models:
  m:
    arch: digits_cnn
    dataset: digits
    recipes: [r]
recipes:
  r:
    steps: [{prune_structured: {ratio: 0.5}}]
"""


def test_minimal_suite_defaults(tmp_path: Path) -> None:
    suite = load_suite(_write(tmp_path, BASE))
    assert suite.name == "suite" and suite.seed == 0
    assert suite.models["m"].formats == ("onnx", "tflite")
    assert suite.recipes["r"].steps[0].params == {"ratio": 0.5}


@pytest.mark.parametrize(
    ("text", "field", "needle"),
    [
        (BASE.replace("prune_structured", "prune_sideways"), "recipes.r.steps[0]",
         "known: distill"),
        (BASE.replace("arch: digits_cnn", "arch: resnet19"), "models.m.arch", "resnet18"),
        (BASE.replace("type: digits", "type: mnist"), "datasets.digits.type", "oxford_pets"),
        (BASE.replace("dataset: digits", "dataset: pets"), "models.m.dataset", "known: digits"),
        (BASE.replace("ratio: 0.5", "ration: 0.5"), "recipes.r.steps[0].prune_structured.ration",
         "known: "),
        (BASE.replace("recipes: [r]", "recipes: [r, s]"), "models.m.recipes[1]", "unknown recipe"),
        (BASE.replace("steps: [{prune_structured: {ratio: 0.5}}]",
                      "steps: [quantize_static, prune_structured]"), "recipes.r.steps[0]",
         "last step"),
        (BASE + "formats: [onnx, coreml]\n", "formats[1]", "unknown format"),
        (BASE.replace("arch: digits_cnn", "arch: digits_cnn\n    colour: red"), "models.m.colour",
         "unknown field"),
        (BASE + "seed: -1\n", "seed", "integer"),
        (BASE.replace("steps: [{prune_structured: {ratio: 0.5}}]", "steps: []"),
         "recipes.r.steps", "non-empty"),
    ],
)
def test_malformed_suites_name_file_and_field(tmp_path: Path, text: str, field: str,
                                              needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert err.value.field == field
    assert str(path) in str(err.value) and needle in str(err.value)


def test_unreadable_suite_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_suite(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="YAML"):
        load_suite(_write(tmp_path, "models: [unclosed"))
    with pytest.raises(ConfigError, match="empty"):
        load_suite(_write(tmp_path, ""))
    with pytest.raises(ConfigError, match="at least one model"):
        load_suite(_write(tmp_path, "name: x\n"))
