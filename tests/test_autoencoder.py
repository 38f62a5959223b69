"""The KL-regularised autoencoder (CrossFlow's latent space) as a registered method: trained through the
shared trainer with named loss terms, evaluated by held-out PSNR, shaped and hooked as documented."""

from __future__ import annotations

import json

import pytest
import torch

from interp.checkpoints import load_checkpoint
from interp.errors import ConfigError
from interp.hooks import attach
from interp.models.autoencoder import Autoencoder, AutoencoderConfig
from tests.conftest import run_cli


def test_shapes_and_hooks():
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(image_size=8, channels=1, width=8, latent_channels=3, levels=2))
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (5, 3, 2, 2) == (5, *ae.latent_shape())
    assert ae(x).shape == x.shape and ae(x).abs().max() <= 1
    names = attach(ae).names
    assert {"enc.0.hook_out", "enc.1.hook_out", "hook_mean", "hook_latent", "dec.1.hook_out", "hook_recon"} <= set(
        names
    )
    with pytest.raises(ConfigError, match="image_size 8 must be divisible by 2\\^levels = 16"):
        AutoencoderConfig(image_size=8, levels=4)


def test_train_and_eval_through_the_cli(tmp_path):
    out = tmp_path / "ae"
    args = ["train", "autoencoder", "--out", str(out), "--width", "8", "--batch-size", "32", "--log-every", "10"]
    run_cli(*args, "--steps", "300", "--warmup", "20", "--eval-every", "150", "--no-progress", check=True)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in log if "recon" in r]
    assert {"loss", "recon", "kl"} <= set(losses[-1]) and losses[-1]["recon"] < losses[0]["recon"]
    assert [r["step"] for r in log if "heldout_psnr" in r] == [150, 300]
    scored = json.loads(run_cli("eval", "-c", str(out), "--n", "100", "--json", check=True).stdout)
    method = load_checkpoint(out)
    assert scored["psnr_db"] == pytest.approx(method.psnr(method.data("heldout")[:100]), abs=1e-9)
    torch.manual_seed(0)
    untrained = type(method)(method.cfg)
    assert scored["psnr_db"] > untrained.psnr(method.data("heldout")[:100]) + 3, "training improves reconstruction"
    line = run_cli("sample", "-c", str(out), "--out", str(tmp_path / "x.png")).stderr
    assert "method 'autoencoder' has no sample" in line
