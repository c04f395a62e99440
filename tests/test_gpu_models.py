"""The plain-torch ResNet18 and MobileNetV3-Small that `benchmarks/gpu.py` builds on a GPU machine
without torchvision are torchvision's: the same weights load into them and give the same outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from benchmarks import gpu_models  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(gpu_models.BUILDERS))
def test_the_copy_is_torchvisions_architecture(name: str) -> None:
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    ours = gpu_models.BUILDERS[name]().eval()
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    # the same operators in the same order: what the GPU runs
    def ops(model: object) -> list[str]:
        program = torch.export.export(model, (x[:1],))
        return [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert ops(ours) == ops(theirs)
