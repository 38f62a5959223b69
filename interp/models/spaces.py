"""Representation spaces of one image, each a group of tokens that a multi-space denoiser (LWD,
:mod:`interp.models.lwd`) noises on its own clock.

- ``pixels``: the image as ``patch``² patches, ``[B, (H/p)(W/p), C p²]``;
- ``coarse``: the image average-pooled to ``coarse`` × ``coarse``, one token per coarse pixel ``[B, c², C]``;
- ``semantic``: the 64-d features of a frozen classifier (:class:`~interp.models.feature_net.FeatureNet`),
  projected on their first ``semantic_dims`` principal components and whitened, one token ``[B, 1, d]``.

:class:`RepresentationSpaces` holds the spaces and the frozen classifier (so a checkpoint alone can say
which class an estimate of any space shows): a semantic estimate is classified by a ridge-regression
read-out fitted on the training data; a pixel or coarse estimate by the classifier itself. A new space
is one class here plus its name in :data:`SPACE_KINDS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interp.errors import ConfigError
from interp.models.feature_net import FeatureNet

SPACE_KINDS = ("pixels", "coarse", "semantic")
FEATURE_DIM = 64


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, (H/p)(W/p), C p²]`` (row-major patches)."""
    B, C, H, W = x.shape
    return x.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, size: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for square images of side ``size``."""
    B, n = tokens.shape[0], size // p
    return tokens.view(B, n, n, channels, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, channels, size, size)


class Space(nn.Module):
    """One representation: ``encode(images [B, C, H, W]) → tokens [B, tokens, dim]``; ``picture(tokens)`` an
    image of the state ``[B, C, H, W]`` (None for a space that has none)."""

    kind: str
    tokens: int
    dim: int

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def picture(self, tokens: torch.Tensor) -> torch.Tensor | None:
        return None


class PixelSpace(Space):
    kind = "pixels"

    def __init__(self, channels: int, size: int, patch: int):
        super().__init__()
        self.channels, self.size, self.patch = channels, size, patch
        self.tokens, self.dim = (size // patch) ** 2, channels * patch * patch

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return patchify(images, self.patch)

    def picture(self, tokens: torch.Tensor) -> torch.Tensor:
        return unpatchify(tokens, self.patch, self.channels, self.size)


class CoarseSpace(Space):
    kind = "coarse"

    def __init__(self, channels: int, size: int, coarse: int):
        super().__init__()
        self.channels, self.size, self.coarse = channels, size, coarse
        self.tokens, self.dim = coarse * coarse, channels

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return patchify(F.avg_pool2d(images, self.size // self.coarse), 1)

    def picture(self, tokens: torch.Tensor) -> torch.Tensor:
        small = unpatchify(tokens, 1, self.channels, self.coarse)
        return F.interpolate(small, size=(self.size, self.size), mode="nearest")


class SemanticSpace(Space):
    """Whitened principal components of the classifier's features. Buffers (saved in the checkpoint):
    ``mean [64]``, ``components [d, 64]``, ``scale [d]``, and the read-out ``readout [d + 1, classes]``."""

    kind = "semantic"

    def __init__(self, dims: int, n_classes: int):
        super().__init__()
        self.tokens, self.dim = 1, dims
        self.register_buffer("mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("components", torch.eye(dims, FEATURE_DIM))
        self.register_buffer("scale", torch.ones(dims))
        self.register_buffer("readout", torch.zeros(dims + 1, n_classes))
        self.net: FeatureNet | None = None  # set by RepresentationSpaces (shared, not a submodule here)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) @ self.components.T / self.scale).unsqueeze(1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.net.features(images))

    def fit(self, features: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-3) -> None:
        """Principal components of ``features [N, 64]`` and a ridge read-out of ``labels [N]`` from them."""
        mean = features.mean(0)
        centred = (features - mean).double()
        values, vectors = torch.linalg.eigh(centred.T @ centred / (len(features) - 1))
        top = values.argsort(descending=True)[: self.dim]
        components = vectors[:, top].T  # [d, 64]
        components = components * torch.where(components.sum(1, keepdim=True) < 0, -1.0, 1.0)  # fixed signs
        self.mean.copy_(mean)
        self.components.copy_(components.float())
        self.scale.copy_(values[top].clamp_min(1e-8).sqrt().float())
        z = torch.cat([self.project(features).squeeze(1).double(), torch.ones(len(features), 1, dtype=torch.double)], 1)
        onehot = F.one_hot(labels, self.readout.shape[1]).double()
        gram = z.T @ z + ridge * len(z) * torch.eye(z.shape[1], dtype=torch.double)
        self.readout.copy_(torch.linalg.solve(gram, z.T @ onehot).float())

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Read-out scores ``[B, classes]`` of semantic tokens ``[B, 1, d]``."""
        z = tokens.squeeze(1)
        return z @ self.readout[:-1] + self.readout[-1]


class RepresentationSpaces(nn.Module):
    """The spaces of one image in a fixed order, and the frozen classifier ``net`` they share.
    ``fitted`` (a saved flag) is set once the semantic projection has been fitted (:meth:`fit`)."""

    def __init__(
        self,
        kinds: tuple[str, ...],
        channels: int,
        size: int,
        n_classes: int,
        patch: int = 2,
        coarse: int = 4,
        semantic_dims: int = 8,
    ):
        super().__init__()
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"spaces must not repeat, got {list(kinds)}")
        self.kinds = tuple(kinds)
        self.channels, self.size = channels, size
        self.net = FeatureNet(channels, max(n_classes, 1), FEATURE_DIM)
        built = {}
        for kind in kinds:
            if kind == "pixels":
                built[kind] = PixelSpace(channels, size, patch)
            elif kind == "coarse":
                built[kind] = CoarseSpace(channels, size, coarse)
            elif kind == "semantic":
                built[kind] = SemanticSpace(semantic_dims, max(n_classes, 1))
            else:
                raise ConfigError(f"unknown space {kind!r}; known: {', '.join(SPACE_KINDS)}")
        self.spaces = nn.ModuleDict(built)
        for space in self.spaces.values():
            if isinstance(space, SemanticSpace):
                object.__setattr__(space, "net", self.net)  # shared, saved once (as ``net.*``)
        self.register_buffer("fitted", torch.tensor(False))

    def __iter__(self):
        return iter(self.spaces.values())

    def __len__(self) -> int:
        return len(self.spaces)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(tokens, dim)`` per space."""
        return [(s.tokens, s.dim) for s in self]

    def fit(self, net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Take the classifier's weights and fit the semantic projection on ``images [N, C, H, W]``."""
        self.net.load_state_dict(net.state_dict())
        self.net.requires_grad_(False).eval()
        with torch.no_grad():
            features = torch.cat([self.net.features(images[i : i + 1000]) for i in range(0, len(images), 1000)])
            for space in self:
                if isinstance(space, SemanticSpace):
                    space.fit(features, labels)
        self.fitted.fill_(True)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Tokens of every space ``[[B, tokens_k, dim_k]]`` for ``images [B, C, H, W]`` in [-1, 1]."""
        return [space.encode(images) for space in self]

    def picture(self, states: list[torch.Tensor]) -> torch.Tensor:
        """The image ``[B, C, H, W]`` of a state: the pixel space's, else the first space that has a picture."""
        for space, tokens in zip(self, states, strict=True):
            if space.kind == "pixels":
                return space.picture(tokens)
        for space, tokens in zip(self, states, strict=True):
            image = space.picture(tokens)
            if image is not None:
                return image
        raise ConfigError(f"no space of {list(self.kinds)} has a picture; add 'pixels' or 'coarse'")

    @torch.no_grad()
    def classify(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """The class ``[B]`` an estimate of space ``index`` shows (semantic read-out, or the classifier on
        the space's picture clamped to [-1, 1])."""
        space = list(self)[index]
        if isinstance(space, SemanticSpace):
            return space.classify(tokens).argmax(-1)
        return self.net(space.picture(tokens).clamp(-1, 1)).argmax(-1)
