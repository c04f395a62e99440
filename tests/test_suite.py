"""Suite files: the shipped suites load; malformed ones name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.compress.suite import load_suite
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


# The local files models/pets.yaml names (nothing is downloaded), relative to the folder it is
# built from: the repository root, as `make bench SUITE=models/pets.yaml` runs it.
PETS_WEIGHTS = ("weights/resnet50-0676ba61.pth", "weights/resnet18-f37072fd.pth")


@pytest.mark.parametrize("name", ["demo", "zoo", "pets"])
def test_shipped_suites_load(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if name == "pets":  # its weights are the user's to provide: here empty files stand in
        monkeypatch.chdir(tmp_path)
        for weights in PETS_WEIGHTS:
            (tmp_path / weights).parent.mkdir(exist_ok=True)
            (tmp_path / weights).touch()
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
    from harness.compress.export import DEFAULT_ONNX_OPSET

    suite = load_suite(_write(tmp_path, BASE))
    assert suite.name == "suite" and suite.seed == 0
    assert suite.onnx_opset == DEFAULT_ONNX_OPSET == 18
    assert load_suite(_write(tmp_path, BASE + "onnx: {opset: 17}\n")).onnx_opset == 17
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
        # found in an audit: the file was built twice and the bench failed on a UNIQUE constraint
        (BASE.replace("recipes: [r]", "recipes: [r, r]"), "models.m.recipes[1]",
         "recipe r is listed twice (also models.m.recipes[0])"),
        (BASE.replace("steps: [{prune_structured: {ratio: 0.5}}]",
                      "steps: [quantize_static, prune_structured]"), "recipes.r.steps[0]",
         "last step"),
        (BASE + "formats: [onnx, coreml]\n", "formats[1]", "unknown format"),
        # found on a farm: the entry failed at every build ("no format left"), after training
        (BASE.replace("ratio: 0.5}}]", "ratio: 0.5}}]\n    formats: [tflite]")
         .replace("recipes: [r]", "recipes: [r]\n    formats: [onnx]"), "models.m.recipes[0]",
         "recipe r is built only as tflite, and this model only as onnx: nothing would be built"),
        # found in an audit: the baseline trained, then "quantize_static supports only onnx,
        # tflite, not torch" failed the entry; a technique's formats are checked at load
        (BASE.replace("{prune_structured: {ratio: 0.5}}", "quantize_static")
         .replace("recipes: [r]", "recipes: [r]\n    formats: [torch]"), "models.m.recipes[0]",
         "recipe r: quantize_static (steps[0]) produces only onnx, tflite, and this model is "
         "built only as torch: nothing would be built"),
        (BASE.replace("{prune_structured: {ratio: 0.5}}", "{prune_structured: {}}, qat")
         .replace("recipes: [r]", "recipes: [r]\n    formats: [torch]"), "models.m.recipes[0]",
         "recipe r: qat (steps[1]) produces only onnx, tflite"),
        (BASE.replace("ratio: 0.5}}]", "ratio: 0.5}}, quantize_fp16]\n    formats: [onnx]"),
         "recipes.r.formats[0]", "quantize_fp16 (steps[1]) produces only tflite, not onnx"),
        # found in an audit: input_size 64 was ignored, the model built at the dataset's 32x32
        (BASE.replace("arch: digits_cnn", "arch: resnet18\n    input_size: 64")
         .replace("type: digits", "type: digits, image_size: 32"), "models.m.input_size",
         "64, but its dataset gives 32x32 images (datasets.digits.image_size); a model with a "
         "dataset takes the dataset's size"),
        (BASE.replace("arch: digits_cnn", "arch: resnet18\n    input_size: 64"),
         "models.m.input_size", "(datasets.digits.image_size, the default)"),
        # found in an audit: every entry failed at build with "mat1 and mat2 shapes cannot be
        # multiplied (64x576 and 1024x128)"
        (BASE.replace("type: digits", "type: digits, image_size: 28"),
         "datasets.digits.image_size", "28, but model m (digits_cnn) takes only 32x32 inputs"),
        (BASE.replace("dataset: digits", "input_size: 64").replace("recipes: [r]", "recipes: []"),
         "models.m.input_size", "64, but digits_cnn takes only 32x32 inputs"),
        (BASE.replace("arch: digits_cnn", "arch: digits_cnn\n    colour: red"), "models.m.colour",
         "unknown field"),
        (BASE + "seed: -1\n", "seed", "integer"),
        # the opset the build's ONNX files are written in: what the exporter can reach
        (BASE + "onnx: {opset: 13}\n", "onnx.opset", "must be an integer from 14 to 18, got 13 "
         "(17 for the onnxruntime 1.12 and 1.13 of JetPack 5)"),
        (BASE + "onnx: {opset: 19}\n", "onnx.opset", "from 14 to 18, got 19"),
        (BASE + "onnx: {opset: '17'}\n", "onnx.opset", "got '17'"),
        (BASE + "onnx: {opset: true}\n", "onnx.opset", "got True"),
        (BASE + "onnx: {opsets: 17}\n", "onnx.opsets", "unknown field; known: opset"),
        (BASE + "onnx: 17\n", "onnx", "must be a mapping, got int"),
        # found: an opset given for a board's old onnxruntime in a suite of TFLite files alone
        (BASE + "formats: [tflite]\nonnx: {opset: 17}\n", "onnx", "sets the opset of the "
         "suite's ONNX files, and it builds none (only tflite); add onnx to formats, or drop "
         "onnx"),
        (BASE.replace("steps: [{prune_structured: {ratio: 0.5}}]", "steps: []"),
         "recipes.r.steps", "non-empty"),
        # values are checked when the suite is loaded, before anything is built or trained
        (BASE.replace("recipes: [r]", "train: {epochs: three}\n    recipes: [r]"),
         "models.m.train.epochs", "epochs must be a non-negative integer, got 'three'"),
        (BASE.replace("recipes: [r]", "train: {epochs: 2, lr: -0.1}\n    recipes: [r]"),
         "models.m.train.lr", "lr=-0.1 is out of range (0.0, 1.0]"),
        (BASE.replace("recipes: [r]", "train: {batch_size: 0}\n    recipes: [r]"),
         "models.m.train.batch_size", "positive integer"),
        (BASE.replace("recipes: [r]", "train: {weight_decay: .nan}\n    recipes: [r]"),
         "models.m.train.weight_decay", "must be a number"),
        (BASE.replace("type: digits", "type: digits, test_fraction: 2"),
         "datasets.digits.test_fraction", "test_fraction=2 is out of range (0.0, 1.0)"),
        (BASE.replace("type: digits", "type: digits, image_size: 0"),
         "datasets.digits.image_size", "positive integer"),
        (BASE.replace("type: digits", "type: digits, max_test: 10"), "datasets.digits.max_test",
         "unknown field; known: type, image_size, test_fraction"),
        (BASE.replace("{prune_structured: {ratio: 0.5}}",
                      "{quantize_static: {calibration_size: -5}}"),
         "recipes.r.steps[0].quantize_static.calibration_size",
         "calibration_size must be a positive integer, got -5"),
        (BASE.replace("ratio: 0.5", "ratio: 1.5"), "recipes.r.steps[0].prune_structured.ratio",
         "ratio=1.5 is out of range (0.0, 1.0)"),
        # found in an audit: ratio 0 failed at build, blaming the model ("removed nothing (no
        # prunable channel groups in this model?)"); sparsity 0 built the baseline again
        (BASE.replace("ratio: 0.5", "ratio: 0.0"), "recipes.r.steps[0].prune_structured.ratio",
         "ratio=0.0 is out of range (0.0, 1.0)"),
        (BASE.replace("{prune_structured: {ratio: 0.5}}", "{prune_magnitude: {sparsity: 0}}"),
         "recipes.r.steps[0].prune_magnitude.sparsity", "sparsity=0 is out of range (0.0, 1.0)"),
        (BASE.replace("ratio: 0.5", "ratio: 0.5, global_pruning: yes please"),
         "recipes.r.steps[0].prune_structured.global_pruning", "true or false"),
        (BASE.replace("{prune_structured: {ratio: 0.5}}", "{lowrank_svd: {rank: 0}}"),
         "recipes.r.steps[0].lowrank_svd.rank", "rank must be a positive integer"),
        (BASE.replace("{prune_structured: {ratio: 0.5}}", "lowrank_tucker"),
         "recipes.r.steps[0].lowrank_tucker", "give exactly one of rank"),
        (BASE.replace("{prune_structured: {ratio: 0.5}}", "{distill: {student: resnet19}}"),
         "recipes.r.steps[0].distill.student", "unknown model 'resnet19'; known: "),
        (BASE.replace("{prune_structured: {ratio: 0.5}}", "{quantize_dynamic: {per_channel: 1}}"),
         "recipes.r.steps[0].quantize_dynamic.per_channel", "true or false, got 1"),
    ],
)
def test_malformed_suites_name_file_and_field(tmp_path: Path, text: str, field: str,
                                              needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert err.value.field == field
    assert str(path) in str(err.value) and needle in str(err.value)
    assert "\n" not in str(err.value)


def test_two_entries_whose_artifacts_share_a_name_are_refused(tmp_path: Path) -> None:
    # found in an audit: model `m-r` and model `m` with recipe `r` were both built to m-r.onnx,
    # and a bench measured the last one written under both labels
    text = ("datasets: {digits: {type: digits}}\n"
            "models:\n"
            "  m: {arch: digits_cnn, dataset: digits, recipes: [r]}\n"
            "  m-r: {arch: digits_cnn_small, dataset: digits}\n"
            "recipes: {r: {steps: [quantize_dynamic]}}\n")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert err.value.field == "models.m-r"
    assert str(err.value) == (
        f"{path}: models.m-r: model m-r's fp32 baseline makes artifacts named m-r, as does model "
        "m with recipe r (models.m.recipes[0]): both would be written to m-r.onnx, m-r.tflite; "
        "rename the model or the recipe")
    # two recipe entries, in formats that do not overlap: one name in results all the same
    text = ("models:\n"
            "  a: {arch: resnet18, recipes: [b-c], formats: [onnx]}\n"
            "  a-b: {arch: resnet18, recipes: [c], formats: [tflite]}\n"
            "recipes: {b-c: {steps: [quantize_dynamic]}, c: {steps: [quantize_dynamic]}}\n")
    with pytest.raises(ConfigError) as err:
        load_suite(_write(tmp_path, text))
    assert err.value.field == "models.a-b.recipes[0]"
    assert "model a-b with recipe c makes artifacts named a-b-c, as does model a with recipe b-c "\
           "(models.a.recipes[0]); rename" in str(err.value)
    # one file where names differ in case only (macOS, Windows)
    text = "models: {Net: {arch: resnet18}, net: {arch: resnet18}}\n"
    with pytest.raises(ConfigError, match="named Net, one file on a case-insensitive file "
                                          "system: both would be written to net.onnx"):
        load_suite(_write(tmp_path, text))
    text = BASE.replace("  digits: {type: digits}", "  digits: {type: digits}\n"
                                                     "  Digits: {type: digits}")
    with pytest.raises(ConfigError, match="datasets.Digits: differs from datasets.digits in case "
                                          "only"):
        load_suite(_write(tmp_path, text))


# A latency-only model: no dataset, so nothing to train or fine-tune on.
LATENCY = """
models:
  net: {arch: resnet18, recipes: [ok, p]}
recipes:
  ok: {steps: [{prune_structured: {finetune_epochs: 0}}, quantize_static]}
  p: {steps: [%s]}
"""


@pytest.mark.parametrize(("step", "field", "says"), [
    ("prune_structured", "recipes.p.steps[0].prune_structured.finetune_epochs",
     "3 (the default): prune_structured trains, and model net (models.net.recipes[1]) has no "
     "dataset to train on; set it to 0 or give models.net a dataset"),
    ("{prune_magnitude: {finetune_epochs: 1}}", "recipes.p.steps[0].prune_magnitude."
     "finetune_epochs", "1: prune_magnitude trains"),
    ("{lowrank_svd: {rank: 4}}", "recipes.p.steps[0].lowrank_svd.finetune_epochs",
     "3 (the default): lowrank_svd trains"),
    ("{lowrank_tucker: {energy: 0.5, finetune_epochs: 0}}, qat",
     "recipes.p.steps[1].qat.epochs", "3 (the default): qat trains, and model net "
     "(models.net.recipes[1]) has no dataset to train on; give models.net a dataset or drop "
     "the recipe from it"),
    ("{distill: {student: resnet18, epochs: 2}}", "recipes.p.steps[0].distill.epochs",
     "2: distill trains"),
])
def test_a_step_that_trains_is_refused_on_a_model_without_a_dataset(
        tmp_path: Path, step: str, field: str, says: str) -> None:
    # found in an audit: the step failed at build ("needs a dataset"), after the suite's other
    # models had trained
    path = _write(tmp_path, LATENCY % step)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert err.value.field == field
    assert str(err.value).startswith(f"{path}: {field}: {says}")


def test_steps_that_do_not_train_are_taken_on_a_model_without_a_dataset(tmp_path: Path) -> None:
    suite = load_suite(_write(tmp_path, LATENCY % "{lowrank_svd: {rank: 4, finetune_epochs: 0}}"))
    assert suite.models["net"].recipes == ("ok", "p")
    # the same training recipe on a model with a dataset is fine
    text = BASE.replace("{prune_structured: {ratio: 0.5}}", "{distill: {epochs: 1}}")
    assert load_suite(_write(tmp_path, text)).models["m"].recipes == ("r",)


def test_a_student_of_one_input_size_only_is_refused_another(tmp_path: Path) -> None:
    # found in an audit: a resnet18 teacher on 64x64 images trained, then distilling into
    # digits_cnn_small (32x32 only) failed at build: "mat1 and mat2 shapes cannot be multiplied"
    text = (BASE.replace("type: digits", "type: digits, image_size: 64")
            .replace("arch: digits_cnn", "arch: resnet18")
            .replace("{prune_structured: {ratio: 0.5}}", "{distill: {epochs: 1}}"))
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert err.value.field == "recipes.r.steps[0].distill.student"
    assert str(err.value) == (
        f"{path}: recipes.r.steps[0].distill.student: digits_cnn_small (the default) takes only "
        "32x32 inputs, and model m (models.m.recipes[0]) gives it 64x64 "
        "(datasets.digits.image_size)")
    # the dataset's default size, and a student that takes any size
    text = (BASE.replace("arch: digits_cnn", "arch: resnet18")
            .replace("{prune_structured: {ratio: 0.5}}",
                     "{distill: {student: mobilenet_v2, epochs: 1}}"))
    assert load_suite(_write(tmp_path, text)).recipes["r"].steps[0].technique == "distill"
    text = text.replace("type: digits", "type: imagefolder, path: .")
    with pytest.raises(ConfigError, match=r"steps\[0\].distill.student: digits_cnn takes only "
                                          r"32x32 inputs, .* gives it 224x224 \(datasets.digits"
                                          r".image_size, the default\)"):
        load_suite(_write(tmp_path, text.replace("student: mobilenet_v2", "student: digits_cnn")))


def test_a_missing_weights_file_is_refused_with_the_path_looked_at(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # found in an audit: the model failed at build, after the suite's other models had trained
    monkeypatch.chdir(tmp_path)
    pets = ROOT / "models" / "pets.yaml"
    with pytest.raises(ConfigError) as err:
        load_suite(pets)
    assert str(err.value) == (  # recipes are read before models
        f"{pets}: recipes.student.steps[0].distill.student_weights: not found: "
        f"{tmp_path / PETS_WEIGHTS[1]} (a relative path is taken from the folder edgebench "
        "runs in, not the suite file's); edgebench never downloads")
    (tmp_path / PETS_WEIGHTS[1]).parent.mkdir()
    (tmp_path / PETS_WEIGHTS[1]).touch()
    with pytest.raises(ConfigError) as err:
        load_suite(pets)
    assert err.value.field == "models.resnet50_teacher.weights"
    assert f"not found: {tmp_path / PETS_WEIGHTS[0]} (a relative path" in str(err.value)
    # ~ and $VARS are expanded as the build expands them; a folder is no weights file
    monkeypatch.setenv("EDGEBENCH_TEST_WEIGHTS", str(tmp_path / "weights"))
    text = BASE.replace("recipes: [r]", "weights: $EDGEBENCH_TEST_WEIGHTS\n    recipes: [r]")
    with pytest.raises(ConfigError, match=f"models.m.weights: is a folder, not a file: "
                                          f"{tmp_path / 'weights'}; edgebench never downloads"):
        load_suite(_write(tmp_path, text))
    text = text.replace("$EDGEBENCH_TEST_WEIGHTS",
                        f"$EDGEBENCH_TEST_WEIGHTS/{Path(PETS_WEIGHTS[1]).name}")
    assert load_suite(_write(tmp_path, text)).models["m"].weights == tmp_path / PETS_WEIGHTS[1]


def test_a_model_with_a_dataset_and_random_weights_is_warned_of(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # found in an audit: its top-1 of 9% on digits read as a broken runtime
    path = _write(tmp_path, BASE + "  q: {steps: [quantize_dynamic]}\n")
    assert load_suite(path).models["m"].weights is None  # warned, not refused
    assert capsys.readouterr().err == (
        f"edgebench: warning: {path}: models.m: dataset digits but neither weights nor "
        "train.epochs, so its weights are random and its accuracy chance; give it weights or "
        "train: {epochs: N}, or drop dataset for a latency-only model\n")
    load_suite(_write(tmp_path, BASE.replace("recipes: [r]", "train: {lr: 0.01}\n"
                                             "    recipes: [r]")))  # no epochs: untrained
    assert "models.m: dataset digits but neither" in capsys.readouterr().err
    (tmp_path / "m.pt").touch()
    for given in ("train: {epochs: 1}", f"weights: {tmp_path / 'm.pt'}"):
        load_suite(_write(tmp_path, BASE.replace("recipes: [r]", f"{given}\n    recipes: [r]")))
        assert capsys.readouterr().err == "", given
    load_suite(ROOT / "models" / "demo.yaml")  # latency-only models: no dataset, no warning
    assert capsys.readouterr().err == ""


def test_unreadable_suite_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_suite(Path(tmp_path.name) / "absent.yaml")  # relative: said in full
    assert str(err.value).endswith(
        f"suite file not found (looked for {Path.cwd() / tmp_path.name / 'absent.yaml'})")
    with pytest.raises(ConfigError, match="YAML"):
        load_suite(_write(tmp_path, "models: [unclosed"))
    with pytest.raises(ConfigError, match="empty"):
        load_suite(_write(tmp_path, ""))
    with pytest.raises(ConfigError, match="at least one model"):
        load_suite(_write(tmp_path, "name: x\n"))


def test_every_parameter_a_registry_declares_is_checked() -> None:
    """Each technique, training and dataset setting of harness is checked by the code that
    defines it, so a suite's values are refused at load with no second list to drift."""
    from harness.compress.techniques import ParamError, load_all
    from harness.compress.train import TRAIN_SETTINGS
    from harness.zoo.datasets import DATASETS, SETTING_CHECKS, check_settings, settings_of

    wrong = ["not", "a", "value"]
    techniques = load_all()
    for name in techniques.names():
        tech = techniques.get(name)
        if not tech.apply.__module__.startswith("harness."):
            continue  # registered elsewhere (by a test): checked by its own code at build
        # low-rank steps need one of rank and energy; the other defaults pass as they are
        given = {"rank": 4} if name.startswith("lowrank") else {}
        tech.resolve(given)
        for key in tech.defaults:
            with pytest.raises(ParamError) as err:
                tech.resolve({**(given if key != "energy" else {}), key: wrong})
            assert err.value.param == key, (name, key)
    for key, check in TRAIN_SETTINGS.items():
        with pytest.raises(ParamError) as err:
            check({key: wrong}, key)
        assert err.value.param == key
    for kind in DATASETS.names():
        assert set(settings_of(kind)) <= set(SETTING_CHECKS), kind
        for key in settings_of(kind):
            with pytest.raises(ParamError) as err:
                check_settings(kind, {key: wrong})
            assert err.value.param == key


def test_a_technique_without_a_check_is_left_to_its_build(tmp_path: Path) -> None:
    from harness.compress.techniques import TECHNIQUES, TORCH, technique

    if "test_unchecked" not in TECHNIQUES:
        technique("test_unchecked", TORCH, defaults={"strength": 1},
                  label=lambda p: "unchecked")(lambda model, params, ctx: (model, {}))
    text = BASE.replace("{prune_structured: {ratio: 0.5}}", "{test_unchecked: {strength: -3}}")
    suite = load_suite(_write(tmp_path, text))
    assert suite.recipes["r"].steps[0].params == {"strength": -3}


def test_a_recipe_without_formats_builds_those_its_steps_produce(tmp_path: Path) -> None:
    # found in an audit: fp16 with no `formats:` on an ONNX + TFLite model failed the entry
    # whole ("quantize_fp16 supports only tflite, not onnx"), its TFLite file not built either
    text = BASE.replace("recipes: [r]", "recipes: [r, fp16, int8]").replace(
        "recipes:\n  r:", "recipes:\n  fp16: {steps: [quantize_fp16]}\n"
        "  int8: {steps: [prune_structured, qat]}\n  r:")
    suite = load_suite(_write(tmp_path, text + "formats: [onnx, tflite, torch]\n"))
    model = suite.models["m"]
    assert suite.formats_for(model, suite.recipes["fp16"]) == ("tflite",)
    assert suite.formats_for(model, suite.recipes["int8"]) == ("onnx", "tflite")
    assert suite.formats_for(model, suite.recipes["r"]) == ("onnx", "tflite", "torch")
    assert suite.formats_for(model, None) == ("onnx", "tflite", "torch")


def test_an_input_size_that_agrees_is_taken(tmp_path: Path) -> None:
    text = (BASE.replace("type: digits", "type: digits, image_size: 64")
            .replace("arch: digits_cnn", "arch: resnet18\n    input_size: 64"))
    assert load_suite(_write(tmp_path, text)).models["m"].input_size == 64
    latency = BASE.replace("dataset: digits", "input_size: 32").replace("recipes: [r]",
                                                                        "recipes: []")
    assert load_suite(_write(tmp_path, latency)).models["m"].input_size == 32


def test_the_readme_lists_every_technique_arch_and_dataset_with_its_defaults() -> None:
    """README.md's Suites section is the user's reference: a parameter, default, arch or
    dataset type added or changed in code without it fails here."""
    import inspect

    from harness.compress.techniques import load_all
    from harness.compress.train import TRAIN_DEFAULTS
    from harness.zoo.datasets import DATASETS, settings_of
    from harness.zoo.models import MODELS

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Suites\n"):]
    section = section[:section.index("\n## ", 1)]

    def shown(value: object) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    techniques = load_all()
    for name in techniques.names():
        tech = techniques.get(name)
        if not tech.apply.__module__.startswith("harness."):
            continue  # registered by a test
        (row,) = [line for line in section.splitlines()
                  if line.startswith("| ") and f"`{name}`" in line.split("|")[1]]
        for key, value in tech.defaults.items():
            assert f"`{key}`" in row or (tech.then_quantize and f"`{tech.then_quantize}`'s"
                                         in row), (name, key)
            if value is not None and f"`{key}`" in row:
                assert f"`{key}` {shown(value)}" in row, (name, key, value)
    for arch in MODELS.names():
        if MODELS.get(arch).build.__module__.startswith("harness."):
            assert f"`{arch}`" in section, arch
    for kind in DATASETS.names():
        if not DATASETS.get(kind).__module__.startswith("harness."):
            continue
        assert f"`{kind}`" in section, kind
        defaults = inspect.signature(DATASETS.get(kind)).parameters
        for key in settings_of(kind):
            assert f"`{key}`" in section, (kind, key)
            if isinstance(defaults[key].default, int | float):
                assert f"`{key}` {defaults[key].default}" in section, (kind, key)
    for key, value in TRAIN_DEFAULTS.items():
        assert f"`{key}` {value}" in section, key


PLUGIN = '''
from torch import nn

from harness.zoo.models import register_model


@register_model("{name}", input_size=32)
def build(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
'''


@pytest.mark.slow
def test_a_plugin_file_brings_the_users_own_architecture(tmp_path: Path) -> None:
    """Found: a researcher's own nn.Module could not be named in a suite (registered by a
    script of theirs, `bench --suite` then said "unknown model"). `plugins:` imports their file
    wherever the suite is loaded; its content keys the artifacts, so an edit rebuilds them."""
    import json

    from tests.conftest import run_cli  # a real build and bench, each in its own process
    (tmp_path / "mynets.py").write_text(PLUGIN.format(name="tinynet"))
    suite = _write(tmp_path, "name: mine\nplugins: [mynets.py]\nformats: [onnx]\nmodels:\n"
                             "  tiny: {arch: tinynet, input_size: 16}\n")
    build = ["--build-dir", str(tmp_path / "b")]
    first = run_cli("build", str(suite), *build, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((tmp_path / "b" / "tiny.onnx.manifest.json").read_text())
    assert list(manifest["built_with"]["plugins"]) == ["mynets.py"]
    assert "1 built" in first.stdout + first.stderr
    again = run_cli("build", str(suite), *build, cwd=tmp_path)
    assert "0 built, 1 reused" in again.stdout + again.stderr, again.stderr
    with (tmp_path / "mynets.py").open("a") as plugin:
        plugin.write("# edited\n")
    edited = run_cli("build", str(suite), *build, cwd=tmp_path)
    assert "1 built, 0 reused" in edited.stdout + edited.stderr, edited.stderr
    bench = run_cli("bench", "--suite", str(suite), *build, "--quick", "--sessions", "1",
                    "--db", str(tmp_path / "r.db"), cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    assert "tiny" in bench.stdout


@pytest.mark.parametrize("body, says", [
    (None, "not found: "),
    ("from harness.zoo.models import register_model\n"
     "register_model('resnet18', input_size=224)(lambda n, c: None)",
     "ValueError: arch 'resnet18' is already known (built in, or another plugin's); register "
     "yours under a name of its own"),
    ("raise RuntimeError('no GPU here')", "importing mynets.py failed: RuntimeError: no GPU "
                                          "here"),
    ("import not_a_module_anywhere", "importing mynets.py failed: ModuleNotFoundError: No "
                                     "module named 'not_a_module_anywhere'"),
])
def test_a_plugin_that_cannot_be_imported_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str | None, says: str) -> None:
    monkeypatch.chdir(tmp_path)
    if body is not None:
        (tmp_path / "mynets.py").write_text(body + "\n")
    suite = _write(tmp_path, "plugins: [mynets.py]\nmodels: {m: {arch: digits_cnn}}\n")
    with pytest.raises(ConfigError) as info:
        load_suite(suite)
    assert info.value.field == "plugins[0]" and says in str(info.value), str(info.value)


def test_plugins_listed_twice_or_empty_are_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mynets.py").write_text("\n")
    for listed, says in (("[mynets.py, ./mynets.py]", "is listed twice"),
                         ("['']", "an empty path; give a file")):
        suite = _write(tmp_path, f"plugins: {listed}\nmodels: {{m: {{arch: digits_cnn}}}}\n")
        with pytest.raises(ConfigError, match=says):
            load_suite(suite)


def test_a_refused_suite_prints_no_warnings_first(tmp_path: Path, capsys) -> None:
    """Found: a suite refused for clashing names first warned of two models' chance accuracy,
    noise before the one line that mattered. Warnings come once the suite is taken."""
    suite = _write(tmp_path, "datasets: {digits: {type: digits}}\nmodels:\n"
                             "  m: {arch: digits_cnn, dataset: digits, recipes: [r]}\n"
                             "  m-r: {arch: digits_cnn_small, dataset: digits}\n"
                             "recipes: {r: {steps: [quantize_dynamic]}}\n")
    with pytest.raises(ConfigError, match="rename the model or the recipe"):
        load_suite(suite)
    assert capsys.readouterr().err == ""


def test_a_plugin_builder_that_returns_no_module_is_said(tmp_path: Path) -> None:
    """A builder returning something else failed its artifact with "AttributeError: 'int'
    object has no attribute 'eval'"; the failure names the arch and what it returned. In a
    subprocess: the registration lasts for the process."""
    import subprocess
    import sys

    (tmp_path / "bad.py").write_text("from harness.zoo.models import register_model\n"
                                     "@register_model('notmod', input_size=8)\n"
                                     "def notmod(num_classes, in_channels):\n    return 42\n")
    code = ("import sys; from harness.compress.suite import load_suite; "
            "from harness.zoo.models import build_model; "
            "load_suite(sys.argv[1]); build_model('notmod', 10, 1)")
    suite = _write(tmp_path, "plugins: [bad.py]\nmodels: {m: {arch: notmod}}\n")
    done = subprocess.run([sys.executable, "-c", code, str(suite)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert ("EdgebenchError: arch notmod: its builder notmod returned int, not a "
            "torch.nn.Module") in done.stderr, done.stderr


def test_a_plugin_builder_that_fails_names_the_arch_and_its_line(tmp_path: Path) -> None:
    """Found by a user: a mistyped class name in their plugin failed each artifact with
    "NameError: name 'ShapeNett' is not defined", naming neither the arch nor the file. The
    failure names both, and the line of the plugin it came from (the deepest in that file: a
    class's own __init__ there is named too). In a subprocess: the registration lasts."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    plugin = tmp_path / "mynet.py"
    plugin.write_text("from torch import nn\nfrom harness.zoo.models import register_model\n"
                      "class Net(nn.Module):\n"
                      "    def __init__(self, n):\n"
                      "        super().__init__()\n"
                      "        self.head = nn.Linear(4, n, bias=Flase)\n"
                      "@register_model('mynet', input_size=8)\n"
                      "def mynet(num_classes, in_channels):\n    return Net(num_classes)\n")
    code = ("import sys; from harness.compress.suite import load_suite; "
            "from harness.zoo.models import build_model; "
            "load_suite(sys.argv[1]); build_model('mynet', 10, 1)")
    suite = _write(tmp_path, "plugins: [mynet.py]\nmodels: {m: {arch: mynet}}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's harness, not an install's
    done = subprocess.run([sys.executable, "-c", code, str(suite)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    assert (f"EdgebenchError: arch mynet: its builder mynet failed ({plugin}, line 6): "
            "NameError: name 'Flase' is not defined") in done.stderr, done.stderr
