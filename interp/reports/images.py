"""Image figures: sample grids as PNG bytes."""

from __future__ import annotations

import io
import math

import numpy as np
import torch


def png_grid(images: torch.Tensor, columns: int | None = None, scale: int = 4) -> bytes:
    """``images [N, C, H, W]`` in [-1, 1] → PNG bytes of a grid (nearest-neighbour upscaled ``scale``×)."""
    from PIL import Image

    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    canvas = np.zeros((rows * (h + 1) + 1, columns * (w + 1) + 1, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = x[i].transpose(1, 2, 0)
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
