"""Forward operators A of conditional image tasks (FlowBender, arXiv 2606.20404): the observation is
y = A(x) and a sample's alignment error is the residual A(x̂) − y.

- ``sr4``: super-resolution ×4, A = 4×4 average pooling (``[B, C, H, W]`` → ``[B, C, H/4, W/4]``);
  differentiable.
- ``inpaint``: A keeps the pixels outside a fixed centred square hole (the hole is zeroed); differentiable.
- ``jpeg10``: JPEG at quality 10 through Pillow (4:2:0 chroma for colour images), decoded back; **not**
  differentiable, which is the point of FlowBender's zero-order feedback. Images are in [-1, 1].

Every operator has ``forward(x)``, ``differentiable``, ``surrogate(x)`` (a form gradients flow through:
the operator itself where it is differentiable, a straight-through estimate for JPEG) and ``residual(x, y)``;
``check_observation(y, x_shape)`` refuses an observation of the wrong size with one clear line.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

from interp.errors import DataError


class Operator:
    name: str
    differentiable: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W]`` in [-1, 1] → the observation."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def observation_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x_shape)

    def check_observation(self, y: torch.Tensor, x_shape: tuple[int, ...]) -> None:
        want = self.observation_shape(tuple(x_shape))
        if tuple(y.shape) != want:
            raise DataError(
                f"operator {self.name!r}: the observation has shape {list(y.shape)}, images of shape "
                f"{list(x_shape)} give {list(want)}"
            )

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A(x) − y, the alignment error of ``x`` against the observation ``y``."""
        self.check_observation(y, tuple(x.shape))
        return self.forward(x) - y

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """A(x) with a gradient: the operator itself where it is differentiable; otherwise the
        straight-through estimate x + (A(x) − x) (value A(x), Jacobian the identity), which only fits
        operators that keep the image's shape (JPEG)."""
        if self.differentiable:
            return self.forward(x)
        return x + (self.forward(x) - x).detach()


class SuperResolution(Operator):
    def __init__(self, factor: int = 4):
        self.factor, self.name = factor, f"sr{factor}"

    def observation_shape(self, x_shape):
        b, c, h, w = x_shape
        if h % self.factor or w % self.factor:
            raise DataError(f"operator {self.name!r} needs image sides divisible by {self.factor}, got {h}x{w}")
        return (b, c, h // self.factor, w // self.factor)

    def forward(self, x):
        self.observation_shape(tuple(x.shape))
        return F.avg_pool2d(x, self.factor)


class Inpaint(Operator):
    """Zero a centred square hole covering ``fraction`` of each side."""

    name = "inpaint"

    def __init__(self, fraction: float = 0.5):
        self.fraction = fraction

    def mask(self, h: int, w: int) -> torch.Tensor:
        """``[H, W]`` bool: True where the pixel is observed."""
        keep = torch.ones(h, w, dtype=torch.bool)
        hh, ww = max(1, round(h * self.fraction)), max(1, round(w * self.fraction))
        top, left = (h - hh) // 2, (w - ww) // 2
        keep[top : top + hh, left : left + ww] = False
        return keep

    def forward(self, x):
        return x * self.mask(*x.shape[-2:]).to(x.dtype)


class JPEG(Operator):
    differentiable = False

    def __init__(self, quality: int = 10):
        self.quality, self.name = quality, f"jpeg{quality}"

    def forward(self, x):
        from PIL import Image

        pixels = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = []
        for image in pixels:
            mode = "L" if image.shape[-1] == 1 else "RGB"
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if mode == "L" else image, mode).save(
                buffer, format="JPEG", quality=self.quality
            )
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode), dtype=np.float32)
            out.append(decoded[..., None] if mode == "L" else decoded)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.dtype) / 127.5 - 1


OPERATORS = {"sr4": lambda: SuperResolution(4), "inpaint": Inpaint, "jpeg10": lambda: JPEG(10)}


def operator(name: str) -> Operator:
    """The operator called ``name`` (one of :data:`OPERATORS`)."""
    if name not in OPERATORS:
        raise DataError(f"unknown operator {name!r}; known operators: {', '.join(OPERATORS)}")
    return OPERATORS[name]()
