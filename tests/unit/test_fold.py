"""BatchNorm folding: the same function as the eval-mode model, no BatchNorm left after convs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothrecon.models import UNet
from smoothrecon.models.fold import fold_batchnorm


def _randomize_batchnorms(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
                m.weight.copy_(torch.randn(c, generator=gen))
                m.bias.copy_(torch.randn(c, generator=gen) * 0.3)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_folded_unet_computes_the_same_function(activation: str) -> None:
    torch.manual_seed(0)
    model = UNet(3, 3, (4, 8, 16), activation=activation)
    _randomize_batchnorms(model)
    model.eval()
    folded = fold_batchnorm(model)
    y = torch.randn(3, 3, 12, 20)  # non-square
    with torch.no_grad():
        ref, out = model(y), folded(y)
    scale = ref.abs().max()
    assert torch.allclose(out, ref, atol=1e-5 * max(1.0, float(scale)), rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training
    # the original is untouched
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5 * 2  # 5 doubles


def test_fold_matches_a_float64_reference() -> None:
    torch.manual_seed(1)
    model = UNet(3, 3, (4, 8, 16)).double()
    _randomize_batchnorms(model, 3)
    folded = fold_batchnorm(model.eval())
    y = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(folded(y), model(y), atol=1e-10, rtol=1e-10)


def test_train_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(UNet(3, 3, (4, 8)).train())


def test_non_foldable_batchnorms_are_left_untouched() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.BatchNorm2d(3),  # nothing before it
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(4),  # after an activation, not a conv
        nn.Conv2d(4, 5, 1, bias=True),
        nn.BatchNorm2d(5),  # foldable, into a conv with a bias
        nn.Sequential(nn.ConvTranspose2d(5, 5, 2, stride=2), nn.BatchNorm2d(5)),  # not a Conv2d
    )
    _randomize_batchnorms(model, 1)
    model.eval()
    folded = fold_batchnorm(model)
    kinds = [type(m).__name__ for m in folded]
    assert kinds[:6] == ["BatchNorm2d", "Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "Identity"]
    assert isinstance(folded[6][1], nn.BatchNorm2d)
    y = torch.randn(2, 3, 5, 7)
    with torch.no_grad():
        assert torch.allclose(folded(y), model(y), atol=1e-5, rtol=1e-5)
