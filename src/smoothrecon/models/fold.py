"""Fold each frozen BatchNorm2d into the Conv2d before it (evaluation only).

In eval mode BN(z) = gamma (z - mu) / sqrt(var + eps_bn) + beta per channel, an affine map, so
BN(conv(y)) with conv weight W and bias b is one convolution with
    W' = W * s,  b' = (b - mu) * s + beta,  s = gamma / sqrt(var + eps_bn)   (per out channel).
The folded model computes the same function with one pass less over every feature map. Only
pairs that sit next to each other in an nn.Sequential (the U-Net's conv + BN + activation
blocks) are folded; any other BatchNorm is left as it is.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(bn) is nn.BatchNorm2d
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
        and conv.out_channels == bn.num_features
    )


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite conv in place as conv followed by bn (float64 arithmetic, conv's dtype kept)."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        shift = shift + bn.bias.double()
    w = conv.weight
    conv.weight.copy_(w.double() * scale.view(-1, *([1] * (w.dim() - 1))))
    bias = torch.zeros_like(shift) if conv.bias is None else conv.bias.double()
    new_bias = (bias * scale + shift).to(w.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=w.requires_grad)
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every (Conv2d, BatchNorm2d) neighbour pair of an
    nn.Sequential folded into one Conv2d (the BatchNorm becomes nn.Identity).

    Same function as model.eval() up to rounding (inputs and outputs in the model's spaces).
    Raises ValueError for a model in training mode: its BatchNorms use batch statistics.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call model.eval() first)")
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = seq._modules[first], seq._modules[second]
            if conv is not None and bn is not None and _foldable(conv, bn):
                _fold_pair(conv, bn)  # type: ignore[arg-type]
                seq._modules[second] = nn.Identity()
    return folded
