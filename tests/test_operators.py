"""FlowBender's forward operators: SR×4 is 4×4 average pooling, inpainting zeroes a centred hole, JPEG at
quality 10 goes through Pillow (lossy, deterministic, not differentiable); wrong sizes and names are refused."""

from __future__ import annotations

import pytest
import torch

from interp.data.images import image_tensors
from interp.errors import DataError
from interp.processes.operators import operator


def test_super_resolution_averages_4x4_blocks():
    x = torch.arange(64.0).view(1, 1, 8, 8) / 32 - 1
    y = operator("sr4")(x)
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0, 0, 0] == x[0, 0, :4, :4].mean() and y[0, 0, 1, 1] == x[0, 0, 4:, 4:].mean()
    x.requires_grad_(True)
    operator("sr4").residual(x, y.detach()).pow(2).sum().backward()
    assert x.grad is not None and operator("sr4").differentiable
    with pytest.raises(DataError, match=r"the observation has shape \[1, 1, 4, 4\].*give \[1, 1, 2, 2\]"):
        operator("sr4").residual(x, torch.zeros(1, 1, 4, 4))
    with pytest.raises(DataError, match="divisible by 4, got 6x6"):
        operator("sr4")(torch.zeros(1, 1, 6, 6))


def test_inpainting_zeroes_a_centred_hole():
    x = torch.ones(2, 1, 8, 8)
    y = operator("inpaint")(x)
    assert y[0, 0, 2:6, 2:6].abs().sum() == 0 and y.sum() == 2 * (64 - 16)


def test_jpeg10_is_lossy_deterministic_and_not_differentiable():
    images, _ = image_tensors("digits", "heldout")
    x = images[:4]
    jpeg = operator("jpeg10")
    y = jpeg(x)
    assert y.shape == x.shape and torch.equal(y, jpeg(x)) and not jpeg.differentiable
    error = (y - x).abs().mean()
    assert 0.01 < float(error) < 0.5, float(error)  # lossy, but still the same digits
    assert float((jpeg(y) - y).abs().mean()) < float(error)  # re-encoding a decoded JPEG changes less
    rgb = torch.rand(1, 3, 16, 16) * 2 - 1
    assert jpeg(rgb).shape == (1, 3, 16, 16)


def test_unknown_operator():
    with pytest.raises(DataError, match="unknown operator 'blur'; known operators: sr4, inpaint, jpeg10"):
        operator("blur")
