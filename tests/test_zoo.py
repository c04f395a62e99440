"""Model zoo and datasets: names, local weights, the digits split, MAC counting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.compress.train import count_macs, count_params
from harness.errors import EdgebenchError, UnknownNameError
from harness.zoo import DATASETS, MODELS, build_model, load_dataset

ISSUE_ARCHS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
               "mobilenet_v3_large", "efficientnet_b0", "squeezenet1_0", "shufflenet_v2_x1_0"]


def test_torchvision_architectures_are_registered() -> None:
    assert set(ISSUE_ARCHS) <= set(MODELS.names())


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        MODELS.get("resnet19")
    assert "resnet18" in str(err.value) and "digits_cnn" in str(err.value)


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1"])
def test_torchvision_builder_sets_classes_and_channels(arch: str) -> None:
    model = build_model(arch, num_classes=7, in_channels=1)
    out = model(torch.zeros(1, 1, 96, 96))
    assert out.shape == (1, 7)
    assert not model.training


def test_weights_come_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_model("digits_cnn", 10, 1)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = build_model("digits_cnn", 10, 1, weights=path)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(source(x), loaded(x))


def test_missing_or_mismatched_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EdgebenchError, match="not found"):
        build_model("digits_cnn", 10, 1, weights=tmp_path / "absent.pt")
    path = tmp_path / "other.pt"
    torch.save(build_model("digits_cnn_small", 10, 1).state_dict(), path)
    with pytest.raises(EdgebenchError, match="does not fit"):
        build_model("digits_cnn", 10, 1, weights=path)


def test_digits_split_is_fixed_by_seed_and_standardised() -> None:
    a = load_dataset("digits", "d", {}, seed=0)
    b = load_dataset("digits", "d", {}, seed=0)
    c = load_dataset("digits", "d", {}, seed=1)
    assert a.x_test.shape == (359, 1, 32, 32) and a.x_test.dtype == np.float32
    assert len(a.y_train) + len(a.y_test) == 1797
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_test, c.y_test)
    assert abs(float(a.x_train.mean())) < 1e-3 and abs(float(a.x_train.std()) - 1) < 1e-3
    assert a.preprocessing["resize"] == 32 and a.input_shape == (1, 1, 32, 32)


def test_datasets_registered_and_missing_copies_fail_clearly(tmp_path: Path) -> None:
    assert {"digits", "imagefolder", "oxford_pets", "cifar10"} <= set(DATASETS.names())
    absent = tmp_path / "pets"
    with pytest.raises(EdgebenchError, match=str(absent)):
        load_dataset("oxford_pets", "pets", {"path": str(absent)}, seed=0)
    absent.mkdir()
    with pytest.raises(EdgebenchError, match="oxford-iiit-pet"):
        load_dataset("oxford_pets", "pets", {"path": str(absent)}, seed=0)
    with pytest.raises(EdgebenchError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "c", {"path": str(absent)}, seed=0)
    with pytest.raises(UnknownNameError):
        load_dataset("imagenet21k", "x", {}, seed=0)


def _cats_and_dogs(root: Path) -> None:
    """Two class folders of five 20x20 PNGs each, random pixels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir()
        for i in range(5):
            pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def test_imagefolder_reads_class_subfolders(tmp_path: Path) -> None:
    _cats_and_dogs(tmp_path)
    split = load_dataset("imagefolder", "f",
                         {"path": str(tmp_path), "image_size": 16, "test_fraction": 0.4}, seed=0)
    assert split.num_classes == 2
    assert split.x_test.shape == (4, 3, 16, 16) and split.x_train.shape == (6, 3, 16, 16)
    assert split.preprocessing["center_crop"] == 16


def test_hidden_folders_and_files_are_no_classes_and_no_images(tmp_path: Path) -> None:
    """Found in an audit: a Jupyter `.ipynb_checkpoints` beside the class folders was a class of
    its own (three classes for two, and a model trained for them), and a viewer's hidden
    thumbnails inside a class were more images of it. Hidden ones are left out, as `ls` leaves
    them, and do not change the dataset's fingerprint either."""
    from PIL import Image

    from harness.zoo.datasets import source_fingerprint

    _cats_and_dogs(tmp_path)
    params = {"path": str(tmp_path), "image_size": 16, "test_fraction": 0.4}
    before = source_fingerprint("imagefolder", params)
    for hidden in (tmp_path / ".ipynb_checkpoints", tmp_path / "cat" / ".thumbnails"):
        hidden.mkdir()
        for i in range(3):
            Image.new("RGB", (20, 20)).save(hidden / f"{i}.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "dog" / ".5.png")
    split = load_dataset("imagefolder", "f", params, seed=0)
    assert split.num_classes == 2
    assert len(split.x_train) + len(split.x_test) == 10
    assert source_fingerprint("imagefolder", params) == before


def test_an_image_folder_without_images_names_the_folder(tmp_path: Path) -> None:
    """Found by a user: a class folder left empty failed with torchvision's "FileNotFoundError:
    Found no valid file for the classes star", naming neither the folder nor its dataset's path,
    and images put straight into `path` with "Couldn't find any class folder"."""
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "0.png")
    (tmp_path / "star").mkdir()
    (tmp_path / "star" / "notes.txt").write_text("to do\n")
    params = {"path": str(tmp_path), "image_size": 8}
    with pytest.raises(EdgebenchError) as info:
        load_dataset("imagefolder", "shapes", params, seed=0)
    assert str(info.value).startswith(
        f"dataset 'shapes': class folder {tmp_path / 'star'} holds no image (.jpg, .jpeg, .png, ")
    assert str(info.value).endswith("every class folder needs one or more, or remove it")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "0.png")
    with pytest.raises(EdgebenchError) as info:
        load_dataset("imagefolder", "shapes", {**params, "path": str(flat)}, seed=0)
    assert str(info.value) == (f"dataset 'shapes': {flat} has no class sub-folders: put each "
                               "class's images in a folder of its own, named after the class")


def test_macs_match_torchvision_documentation() -> None:
    # torchvision documents resnet18 at 1.81 GFLOPS and mobilenet_v3_small at 0.06, counting a
    # multiply-add once.
    assert count_macs(build_model("resnet18", 1000), (1, 3, 224, 224)) == pytest.approx(
        1.814e9, rel=0.005)
    assert count_macs(build_model("mobilenet_v3_small", 1000), (1, 3, 224, 224)) == pytest.approx(
        0.0565e9, rel=0.02)
    assert count_params(build_model("resnet18", 1000)) == 11_689_512


def test_weights_for_another_class_count_keep_all_but_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_model("digits_cnn", 10, 1)
    path = tmp_path / "ten.pt"
    torch.save(source.state_dict(), path)
    five = build_model("digits_cnn", 5, 1, weights=path)
    own, src = five.state_dict(), source.state_dict()
    last = [name for name, _ in five.named_parameters()][-2:]
    for key, value in own.items():
        if key in last:
            assert value.shape[0] == 5
        else:
            assert torch.equal(value, src[key]), key


@pytest.mark.parametrize("arch", ["digits_cnn", "digits_cnn_small", "mobilenet_v3_small"])
def test_an_arch_declares_truly_whether_it_takes_one_input_size_only(arch: str) -> None:
    """The suite loader refuses other sizes for a `fixed_input_size` arch on this word alone."""
    spec = MODELS.get(arch)
    model = build_model(arch, 10, 1).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, spec.input_size, spec.input_size)).shape == (1, 10)
        if spec.fixed_input_size:
            with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
                model(torch.zeros(1, 1, 2 * spec.input_size, 2 * spec.input_size))
        else:
            assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 10)
    assert spec.fixed_input_size == (spec.family == "demo")


def test_a_dataset_says_the_image_size_it_gives() -> None:
    from harness.zoo.datasets import image_size_of

    assert image_size_of("digits", {}) == 32 and image_size_of("digits", {"image_size": 64}) == 64
    assert image_size_of("imagefolder", {}) == 224 and image_size_of("cifar10", {}) == 32


def _image_folder(root: Path, seed: int, classes: tuple[str, ...] = ("cat", "dog")) -> Path:
    """Uncompressed BMPs: a new seed changes every pixel and no file's size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.bmp")
    return root


def test_a_dataset_fingerprint_follows_content_and_names_not_times(tmp_path: Path) -> None:
    # Found in an audit: images changed in place were not rebuilt from; the build key held the
    # dataset's settings only. The fingerprint is what the key now holds.
    import os
    import time

    from harness.zoo.datasets import source_fingerprint

    images = _image_folder(tmp_path / "imgs", seed=0)
    params, cache = {"path": str(images)}, tmp_path / "cache.json"
    time.sleep(2.1)  # old enough for the cache to keep (a fresher file is hashed each time)
    first = source_fingerprint("imagefolder", params, cache)
    assert first is not None and (first["files"], first["folders"]) == (6, [str(images)])
    assert first["bytes"] == sum(p.stat().st_size for p in images.rglob("*.bmp"))
    assert len(json.loads(cache.read_text())["files"]) == 6

    # same name, size and modification time, other pixels: a make-style stamp sees nothing
    target = images / "cat" / "0.bmp"
    stamp = target.stat()
    sizes = {p: p.stat().st_size for p in images.rglob("*.bmp")}
    _image_folder(images, seed=1)
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert {p: p.stat().st_size for p in images.rglob("*.bmp")} == sizes
    changed = source_fingerprint("imagefolder", params, cache)
    assert changed is not None and changed["sha256"] != first["sha256"]

    # new times, same bytes (a copy, a touch): the same data, nothing to rebuild
    for path in images.rglob("*.bmp"):
        os.utime(path, ns=(1, 1))
    touched = source_fingerprint("imagefolder", params, cache)
    assert touched == changed

    (images / "dog").rename(images / "wolf")  # a class's name is its folder's: its label
    assert source_fingerprint("imagefolder", params, cache)["sha256"] != changed["sha256"]


def test_a_dataset_fingerprint_covers_only_the_folders_its_loader_reads(tmp_path: Path) -> None:
    from harness.zoo.datasets import source_fingerprint

    pets = tmp_path / "data" / "oxford-iiit-pet"
    _image_folder(pets / "images", seed=0, classes=("all",))
    (pets / "annotations").mkdir()
    (pets / "annotations" / "test.txt").write_text("0 1 1 1\n")
    params = {"path": str(tmp_path / "data")}
    first = source_fingerprint("oxford_pets", params)
    assert first is not None and first["files"] == 4
    # torchvision's layout puts many datasets under one root: another one's files do not count
    _image_folder(tmp_path / "data" / "cifar-10-batches-py", seed=0)
    assert source_fingerprint("oxford_pets", params) == first
    (pets / "annotations" / "test.txt").write_text("0 2 1 1\n")
    assert source_fingerprint("oxford_pets", params)["sha256"] != first["sha256"]
    # digits is scikit-learn's copy, in the build key by the library's version
    assert source_fingerprint("digits", {}) is None


def _digits_weights(tmp_path: Path, name: str, wrap: object = None) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(1)
    source = build_model("digits_cnn", 10, 1)
    path = tmp_path / name
    torch.save(source.state_dict() if wrap is None else wrap(source), path)  # type: ignore[operator]
    return path, source


def test_a_weights_mismatch_names_the_keys_with_counts(tmp_path: Path) -> None:
    # Found in an audit: only torch's first line was kept, "Error(s) in loading state_dict for
    # DigitsCNN:", with nothing after the colon.
    path = tmp_path / "small.pt"
    torch.save(build_model("digits_cnn_small", 10, 1).state_dict(), path)
    with pytest.raises(EdgebenchError) as err:
        build_model("digits_cnn", 10, 1, weights=path)
    assert str(err.value).startswith(f"digits_cnn: weights file {path} does not fit the model: "
                                     "18 of another shape, file vs model (features.0.weight "
                                     "[8, 1, 3, 3] vs [16, 1, 3, 3], ")
    assert "... (15 more)" in str(err.value)

    path, _ = _digits_weights(tmp_path, "renamed.pt", lambda m: {
        ("head." + k if k.startswith("classifier.") else k): v
        for k, v in m.state_dict().items()})
    with pytest.raises(EdgebenchError) as err:
        build_model("digits_cnn", 10, 1, weights=path)
    message = str(err.value)
    assert "4 of the model's names missing from the file (classifier.1.weight, " in message
    assert "4 names in the file that the model lacks (head.classifier.1.weight, " in message
    assert "another architecture" not in message

    torch.save(build_model("mobilenet_v3_small", 10, 1).state_dict(), path)
    with pytest.raises(EdgebenchError, match="most names differ: weights of another architecture"):
        build_model("digits_cnn", 10, 1, weights=path)


def test_a_pickled_model_is_told_apart_from_a_state_dict(tmp_path: Path) -> None:
    # Found in an audit: torch.save(model) gave torch's long weights_only message, cut
    # mid-sentence, with terminal escape codes in it.
    import argparse

    path, _ = _digits_weights(tmp_path, "whole.pt", lambda m: m)
    with pytest.raises(EdgebenchError) as err:
        build_model("digits_cnn", 10, 1, weights=path)
    assert str(err.value) == (f"digits_cnn: weights file {path} holds a pickled model "
                              "(torch.save(model)), not a state_dict; save model.state_dict() "
                              "instead")
    path, _ = _digits_weights(tmp_path, "args.pt", lambda m: {
        "model": m.state_dict(), "args": argparse.Namespace(lr=0.1)})
    with pytest.raises(EdgebenchError, match=r"objects besides tensors \(argparse.Namespace\)"):
        build_model("digits_cnn", 10, 1, weights=path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EdgebenchError) as err:
        build_model("digits_cnn", 10, 1, weights=junk)
    assert "not a checkpoint written by torch.save" in str(err.value)
    assert "\x1b" not in str(err.value)


@pytest.mark.parametrize("wrap", [
    lambda m: {"model": m.state_dict(), "epoch": 3},  # torchvision's reference scripts
    lambda m: {"state_dict": m.state_dict(), "optimizer": {}},
    lambda m: {"module." + k: v for k, v in m.state_dict().items()},  # DistributedDataParallel
    lambda m: {"model": {"module._orig_mod." + k: v for k, v in m.state_dict().items()}},
], ids=["model", "state_dict", "ddp", "ddp-compiled"])
def test_a_checkpoint_around_a_state_dict_is_unwrapped(tmp_path: Path, wrap: object) -> None:
    path, source = _digits_weights(tmp_path, "ckpt.pt", wrap)
    loaded = build_model("digits_cnn", 10, 1, weights=path)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(source.eval()(x), loaded(x))


def test_a_checkpoint_with_no_or_two_state_dicts_is_refused_naming_its_keys(
        tmp_path: Path) -> None:
    path, _ = _digits_weights(tmp_path, "two.pt", lambda m: {
        "model": m.state_dict(), "state_dict": m.state_dict()})
    with pytest.raises(EdgebenchError, match="a state_dict under each of 'state_dict', 'model'"):
        build_model("digits_cnn", 10, 1, weights=path)
    path, _ = _digits_weights(tmp_path, "none.pt", lambda m: {"epoch": 1, "net": m.state_dict()})
    with pytest.raises(EdgebenchError, match=r"is a dict of epoch, net with no state_dict under"):
        build_model("digits_cnn", 10, 1, weights=path)


def test_grey_weights_for_an_rgb_dataset_say_the_channel_counts(tmp_path: Path) -> None:
    # Found by a new user: weights trained on grey images met class folders read as RGB, and the
    # error gave only shapes ("features.0.weight [16, 1, 3, 3] vs [16, 3, 3, 3]").
    path = tmp_path / "grey.pt"
    torch.save(build_model("digits_cnn", 3, 1).state_dict(), path)
    with pytest.raises(EdgebenchError) as err:
        build_model("digits_cnn", 3, 3, weights=path)
    assert "features.0.weight [16, 1, 3, 3] vs [16, 3, 3, 3]" in str(err.value)
    assert str(err.value).endswith(
        "the file's first layer takes 1 channel and the model, made for its dataset, 3: the "
        "weights were trained on images of another channel count (an imagefolder dataset is "
        "always read as RGB, 3 channels)")
    # weights of the same channel count but another width: shapes alone, no word of channels
    small = tmp_path / "small.pt"
    torch.save(build_model("digits_cnn_small", 3, 3).state_dict(), small)
    with pytest.raises(EdgebenchError) as err:
        build_model("digits_cnn", 3, 3, weights=small)
    assert "channel" not in str(err.value)


def test_rgb_weights_fit_a_grey_scale_model_by_its_first_conv(tmp_path: Path) -> None:
    # Found in an audit: ImageNet-shaped resnet18 weights failed for a 1-channel dataset, its
    # first conv being rebuilt for one channel. The RGB kernels summed over the colours compute
    # on a grey image what the RGB model computes on that image in three equal channels.
    torch.manual_seed(0)
    rgb = build_model("resnet18", 1000, 3)
    path = tmp_path / "imagenet.pt"
    torch.save(rgb.state_dict(), path)
    grey = build_model("resnet18", 1000, 1, weights=path)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)
    # with the classifier of another class count dropped too, as for Pets in grey
    pets = build_model("resnet18", 37, 1, weights=path)
    src = rgb.state_dict()
    for key, value in pets.state_dict().items():
        if key not in ("conv1.weight", "fc.weight", "fc.bias"):
            assert torch.equal(value, src[key]), key
    assert pets.state_dict()["conv1.weight"].shape == (64, 1, 7, 7)
