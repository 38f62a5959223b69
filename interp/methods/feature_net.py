"""The feature network as a checkpoint kind (``feature_net``): ``interp train feature-net`` trains one
with the network's own fixed loop (:func:`interp.models.feature_net.train_feature_net`), measures its
held-out accuracy and writes it as a normal checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from interp.checkpoints import check_output, save_checkpoint
from interp.config import Config, check
from interp.data.images import image_shape, image_tensors
from interp.models.feature_net import FeatureNet, classifier_accuracy, train_feature_net
from interp.registry import MethodSpec, register


@dataclass
class FeatureNetConfig(Config):
    data: str = field(default="digits", metadata={"help": "Image dataset (as for `interp train image`)."})
    channels: int = field(default=1, metadata={"cli": False})  # from the data
    n_classes: int = field(default=10, metadata={"cli": False})  # from the data
    dim: int = field(default=64, metadata={"cli": False})

    def validate(self) -> None:
        for name in ("channels", "n_classes", "dim"):
            value = getattr(self, name)
            check(isinstance(value, int) and 1 <= value <= 4096, f"{name} must be in 1..4096, got {value!r}")


class FeatureNetwork:
    """The feature net as a checkpoint kind: ``model`` is the :class:`FeatureNet`."""

    def __init__(self, cfg: FeatureNetConfig):
        self.cfg = cfg
        self.model = FeatureNet(cfg.channels, cfg.n_classes, cfg.dim)

    def config_dict(self) -> dict:
        return self.cfg.to_dict()


def derive_config(options: dict) -> dict:
    """Channels and classes from the data."""
    channels, _, _, classes = image_shape(options.get("data", FeatureNetConfig.data), square=False)
    return {**options, "channels": channels, "n_classes": classes}


def train_cli(method: FeatureNetwork, out: Path, steps: int, seed: int, meta: dict) -> str:
    """``interp train feature-net``: train, measure held-out accuracy, write the checkpoint."""
    check_output(out, method.kind)
    data = method.cfg.data
    method.model = train_feature_net(*image_tensors(data, "train"), steps=steps, seed=seed)
    accuracy = classifier_accuracy(method.model, *image_tensors(data, "heldout"))
    save_checkpoint(
        out, method, meta={**meta, "data": data, "steps": steps, "seed": seed, "heldout_accuracy": round(accuracy, 4)}
    )
    return f"feature network for {data}: held-out accuracy {accuracy:.3f}; written to {out}"


register(
    MethodSpec(
        kind="feature_net",
        method=FeatureNetwork,
        config=FeatureNetConfig,
        summary="Train the small classifier whose feature space `interp eval` measures sample quality in "
        "(checkpoints/feature-net-DATA is found automatically; otherwise pass --feature-net).",
        derive=derive_config,
        train=train_cli,
        train_defaults={"steps": 600},
    )
)
