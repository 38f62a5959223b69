"""CrossFlow and its latent-flow baseline A on tiny models: the path and the t = 1 draw, the loss terms and the
two trainer phases, one-step generation, decoder mode, the frozen and joint encoders, the analyses, the CLI
(NFE in ``eval --json``) and bad input (``--steps 20``, a foreign autoencoder, a discriminator-only checkpoint)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from interp.analyses.crossflow import block_readout, decoder_psnr, loss_term_gradients, trajectory_readout
from interp.checkpoints import load_checkpoint
from interp.errors import DataError
from interp.hooks import attach
from interp.methods.crossflow import CrossFlow, CrossFlowConfig, check_same_latents
from interp.methods.crossflow import derive_config as crossflow_fields
from interp.methods.latent_flow import LatentFlow, LatentFlowConfig
from interp.methods.latent_flow import derive_config as latent_flow_fields
from interp.samplers.image import ImageSamplerConfig
from interp.train import TrainConfig, train
from tests.conftest import run_cli

TINY = {"width": 16, "depth": 2, "n_heads": 2}


def fit(method, out, steps: int, lr: float = 2e-3):
    cfg = TrainConfig(steps=steps, batch_size=32, lr=lr, warmup=10, log_every=10, ckpt_every=0)
    return train(method, out, cfg, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An autoencoder (400 steps), A (150 steps) and CrossFlow with a frozen encoder (150 steps) on digits."""
    root = tmp_path_factory.mktemp("crossflow")
    ae = root / "ae"
    run_cli("train", "autoencoder", "--out", str(ae), "--width", "8", "--batch-size", "32", "--steps", "400",
            "--no-progress", check=True)  # fmt: skip
    torch.manual_seed(0)
    baseline = LatentFlow(LatentFlowConfig(**latent_flow_fields({"autoencoder": str(ae), **TINY})))
    fit(baseline, root / "a", 150)
    torch.manual_seed(0)
    cfg = CrossFlowConfig(**crossflow_fields({"autoencoder": str(ae), **TINY, "disc_width": 8}))
    method = CrossFlow(cfg)
    result = fit(method, root / "cf", 150, lr=1e-3)
    return {"root": root, "ae": ae, "a": root / "a", "cf": root / "cf", "method": method, "result": result}


def untrained(cfg: CrossFlowConfig) -> CrossFlow:
    torch.manual_seed(0)
    return CrossFlow(cfg)


def test_path_draws_t_one_and_ignores_the_latent_there(trained):
    method = trained["method"]
    images, labels = method.data("train")
    batch = method.collate({"image": images[:1000], "label": labels[:1000]})
    p = method.prepare(batch, torch.Generator().manual_seed(0))
    share = float((p["t"] == 1).float().mean())
    assert 0.21 < share < 0.29, f"p_one = 0.25: a quarter of the draws are exactly t = 1, got {share}"
    modules = method.components()
    with torch.no_grad():
        one = {**p, "t": torch.ones(1000)}
        a, _ = method.predict(modules, one)
        b, _ = method.predict(modules, {**one, "z": one["z"].roll(1, 0)})  # other images' latents
        assert torch.equal(a, b), "at t = 1 G sees pure noise: z_t = ε"
        zero = {**p, "t": torch.zeros(1000)}
        c, _ = method.predict(modules, zero)
        d, _ = method.predict(modules, {**zero, "eps": torch.randn_like(zero["eps"])})
        assert torch.equal(c, d), "at t = 0 G sees the clean latent: z_t = z"
        assert not torch.equal(a, c)


def test_training_logs_each_term_and_trains_both_players(trained):
    log = [r for r in trained["result"].metrics if "loss" in r]
    names = {"generator/l1", "generator/perceptual", "generator/adv", "discriminator/real", "discriminator/fake",
             "discriminator/r1", "time/discriminator", "time/generator"}  # fmt: skip
    assert names <= set(log[-1])
    assert log[-1]["generator/l1"] < 0.8 * log[0]["generator/l1"]
    method = trained["method"]
    images, labels = method.data("heldout")
    _, record = method.sample(200, None, 0)
    with torch.no_grad():
        d_real = method.discriminator(images[:200], labels[:200] % 10).mean()
        d_fake = method.discriminator(record[-1].x, torch.arange(200) % 10).mean()
    assert d_real > d_fake, "the discriminator was trained (its phase ran) to tell real from generated"


def test_frozen_encoder_is_the_autoencoders_and_the_checkpoint_works_alone(trained, tmp_path):
    source = load_checkpoint(trained["ae"]).model.state_dict()
    copy = tmp_path / "cf"
    shutil.copytree(trained["cf"], copy)
    loaded = load_checkpoint(copy)
    for name, value in loaded.autoencoder.state_dict().items():
        assert torch.equal(value, source[name]), name
    assert set(json.loads((copy / "config.json").read_text())["components"]) == {
        "model", "discriminator", "autoencoder", "feature_net"}  # fmt: skip
    net = load_checkpoint("checkpoints/feature-net-digits").model.state_dict()
    assert all(torch.equal(v, net[k]) for k, v in loaded.feature_net.state_dict().items())


def test_joint_encoder_trains_with_g_and_logs_kl(trained, tmp_path):
    cfg = CrossFlowConfig(**crossflow_fields({"encoder": "joint", **TINY, "disc_width": 8, "ae_width": 8}))
    method = untrained(cfg)
    before = {k: v.clone() for k, v in method.autoencoder.state_dict().items()}
    result = fit(method, tmp_path / "joint", 20, lr=1e-3)
    after = method.autoencoder.state_dict()
    assert not torch.equal(before["inp.weight"], after["inp.weight"]), "the encoder is optimised with G"
    assert torch.equal(before["out.weight"], after["out.weight"]), "its decoder half is unused"
    assert "generator/kl" in [r for r in result.metrics if "loss" in r][-1]
    with pytest.raises(DataError, match="trained its encoder jointly"):
        check_same_latents(method, load_checkpoint(trained["a"]))


def test_ablations_drop_their_term_and_the_discriminator_phase(tmp_path, trained):
    fields = crossflow_fields({"autoencoder": str(trained["ae"]), **TINY, "disc_width": 8})
    method = untrained(CrossFlowConfig(**{**fields, "adv_weight": 0.0, "perceptual_weight": 0.0}))
    d_before = {k: v.clone() for k, v in method.discriminator.state_dict().items()}
    result = fit(method, tmp_path / "plain", 3)
    row = [r for r in result.metrics if "loss" in r][-1]
    assert "generator/l1" in row and not {"generator/adv", "generator/perceptual", "discriminator/real"} & set(row)
    assert all(torch.equal(v, method.discriminator.state_dict()[k]) for k, v in d_before.items())


def test_one_step_generation_is_g_of_noise_at_t_one(trained):
    method = trained["method"]
    labels, record = method.sample(6, None, seed=3)
    assert len(record) == 1 and record[0].evaluations == 1 and (record[0].t, record[0].s) == (1.0, 0.0)
    eps = torch.randn((6, *method.latent_shape()), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = method.model(eps, torch.ones(6), labels).clamp(-1, 1)
    assert torch.equal(record[0].x, expected) and record[0].x.shape == (6, 1, 8, 8)
    assert torch.equal(method.sample(6, None, seed=3)[1][0].x, record[0].x)  # deterministic
    names = attach(method).names
    assert {"hook_embed", "blocks.1.hook_resid_post", "hook_patches", "hook_image"} <= set(names)
    assert {"blocks.0.hook_out", "hook_features", "hook_logit"} <= set(attach(method.discriminator).names)


def test_decoder_mode_reconstructs_held_out_latents(trained):
    method, baseline = trained["method"], load_checkpoint(trained["a"])
    trained_psnr = decoder_psnr(method, baseline, 300)
    fresh = untrained(method.cfg)
    fresh.autoencoder.load_state_dict(method.autoencoder.state_dict())
    assert trained_psnr["psnr_crossflow"] > decoder_psnr(fresh, baseline, 300)["psnr_crossflow"] + 3
    images, labels = method.data("heldout")
    z = baseline.encode(images[:50])
    with torch.no_grad():
        at = {t: method.model(z, torch.full((50,), t), labels[:50]).clamp(-1, 1) for t in (0.0, 1.0)}
    assert torch.equal(method.decode(z, labels[:50]), at[0.0]), "decoder mode is G(z, 0, y): the clean end"
    assert not torch.allclose(at[0.0], at[1.0], atol=1e-3), "G reads t: decoding at t = 1 would differ"
    other = load_checkpoint(trained["a"])
    with torch.no_grad():
        other.autoencoder.inp.weight.add_(0.01)
    with pytest.raises(DataError, match="another autoencoder"):
        check_same_latents(method, other)
    with pytest.raises(DataError, match="latents are"):
        method.decode(torch.zeros(2, 3, 2, 2))


def test_latent_flow_steps_are_decoded_latents_at_any_step_count(trained):
    baseline = load_checkpoint(trained["a"])
    source = load_checkpoint(trained["ae"]).model.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in baseline.autoencoder.state_dict().items())
    for steps in (1, 4, 20):
        _, record = baseline.sample(3, ImageSamplerConfig(name="euler", steps=steps), 0)
        assert len(record) == steps and sum(s.evaluations for s in record) == steps
    last = record[-1]
    with torch.no_grad():
        assert torch.allclose(last.x, baseline.decode(last.z).clamp(-1, 1))
    assert last.x.shape == (3, 1, 8, 8) and last.z.shape == (3, *baseline.latent_shape())


def test_readouts_and_loss_term_gradients(trained):
    method, baseline = trained["method"], load_checkpoint(trained["a"])
    one = block_readout(method, 64, 0).frame()
    assert list(one.site) == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert one.r2.iloc[-1] > 0.9 and one.r2.iloc[-1] > one.r2.iloc[0]
    steps = trajectory_readout(baseline, 16, 0, steps=5).frame()
    assert len(steps) == 5 and steps.r2.iloc[-1] == pytest.approx(1.0)
    grads = loss_term_gradients(method, 32, 0).frame().set_index("term")
    assert set(grads.index) == {"l1", "perceptual", "adv"}
    assert grads.loc["l1", "cos_error"] > 0.5, "the L1 gradient pulls toward the data"


def test_cli_reports_function_evaluations_and_refuses_steps(trained, tmp_path):
    cf, a = str(trained["cf"]), str(trained["a"])
    scored = json.loads(run_cli("eval", "-c", cf, "--n", "50", "--json", check=True).stdout)
    assert scored["evaluations_per_sample"] == 1 and scored["fd"] > 0
    heun = json.loads(run_cli("eval", "-c", a, "--n", "50", "--sampler", "heun", "--steps", "4", "--json",
                              check=True).stdout)  # fmt: skip
    assert heun["evaluations_per_sample"] == 7  # Heun: 2 per step, 1 on the last
    sampled = json.loads(run_cli("sample", "-c", cf, "--out", str(tmp_path / "x.png"), "--json", check=True).stdout)
    assert sampled["evaluations"] == 1
    refused = run_cli("sample", "-c", cf, "--out", str(tmp_path / "y.png"), "--steps", "20")
    assert refused.returncode == 2 and refused.stderr.startswith("error: --steps 20: CrossFlow is a one-step generator")
    assert not (tmp_path / "y.png").exists()
    report = run_cli("report", "-c", cf, "--compare", a, "--n", "40", "--out", str(tmp_path / "r.html"), check=True)
    assert "report written" in report.stdout
    html = (tmp_path / "r.html").read_text()
    assert "What one step does" in html and "Decoder mode" in html and "Which loss term shapes what" in html


def test_bad_autoencoders_and_checkpoints_are_refused(trained, tmp_path):
    ae, cf = str(trained["ae"]), trained["cf"]
    cases = {
        ("train", "latent-flow", "--autoencoder", ae, "--data", "mnist5k"): "was trained on 'digits', not 'mnist5k'",
        ("train", "crossflow", "--autoencoder", ae, "--latent-channels", "8"): "has latent_channels = 4",
        ("train", "crossflow", "--autoencoder", str(cf)): "is of kind 'crossflow'; this command needs autoencoder",
        ("train", "crossflow"): "--encoder frozen needs --autoencoder DIR",
    }
    for args, message in cases.items():
        out = run_cli(*args, "--out", str(tmp_path / "x"))
        assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr, (args, out.stderr)
        assert out.stderr.count("\n") == 1
    only = tmp_path / "discriminator-only"
    only.mkdir()
    shutil.copy(cf / "discriminator.safetensors", only)
    header = json.loads((cf / "config.json").read_text())
    header["components"] = {"discriminator": "discriminator.safetensors"}
    (only / "config.json").write_text(json.dumps(header))
    out = run_cli("sample", "-c", str(only), "--out", str(tmp_path / "z.png"))
    assert out.returncode == 2 and "do not match the method's" in out.stderr and out.stderr.count("\n") == 1
