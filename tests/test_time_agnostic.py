"""The time-agnostic study: per-t error, quality per sampler, pair checks, training a pair, probes on a
diffusers U-Net, DDPM sampler start, the report CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from interp.checkpoints import load_checkpoint
from interp.errors import ConfigError, DataError
from interp.methods import ImageDiffusion, ImageDiffusionConfig
from interp.samplers import ImageSamplerConfig, sample_images
from interp.studies.time_agnostic import (
    blind_ratio,
    check_pair,
    denoising_mse,
    quality_table,
    study_samplers,
    train_pair,
)
from tests.conftest import ROOT, run_cli, tiny_diffusers_unet

COND, BLIND = ROOT / "checkpoints/dit-digits-flow-cond", ROOT / "checkpoints/dit-digits-flow-blind"


class _Oracle:
    """Knows the one clean image of its dataset: predicts the exact target from x_t and t."""

    def __init__(self, process: str, image: torch.Tensor):
        from interp.processes.continuous import ContinuousProcess

        self.process, self.image, self.model = ContinuousProcess(process), image, torch.nn.Identity()

    def predict(self, x_t, t, y=None):
        a, s = (v.view(-1, 1, 1, 1) for v in self.process.alpha_sigma(t))
        eps = (x_t - a * self.image) / s
        return self.process.target(self.image.expand_as(x_t), eps)


@pytest.mark.parametrize("process", ["flow", "ddpm"])
def test_denoising_mse_is_zero_for_an_oracle_and_paired_across_models(process):
    image = torch.rand(1, 1, 8, 8) * 2 - 1
    frame = denoising_mse(_Oracle(process, image), image.repeat(6, 1, 1, 1), t_grid=[0.1, 0.5, 0.9])
    assert list(frame.columns) == ["t", "log_snr", "mse_x0", "mse_target"]
    assert frame["mse_x0"].max() < 1e-8 and frame["mse_target"].max() < 1e-8
    assert frame["log_snr"].is_monotonic_decreasing

    # two different models see identical noisy inputs for the same seed (and other ones for another seed)
    cond, blind = load_checkpoint(COND), load_checkpoint(BLIND)
    held, labels = cond.data("heldout")
    seen: dict[str, list[torch.Tensor]] = {"cond": [], "blind": [], "cond seed 4": []}
    for key, method, seed in (("cond", cond, 3), ("blind", blind, 3), ("cond seed 4", cond, 4)):
        predict = method.predict
        method.predict = lambda x_t, t, y=None, _p=predict, _k=key: seen[_k].append(x_t.clone()) or _p(x_t, t, y)
        frame = denoising_mse(method, held[:40], labels[:40], t_grid=[0.1, 0.9], seed=seed)
        del method.predict
        if key == "cond":
            a = frame
        elif key == "blind":
            b = frame
    assert all(torch.equal(x, y) for x, y in zip(seen["cond"], seen["blind"], strict=True))
    assert not torch.equal(seen["cond"][0], seen["cond seed 4"][0])
    assert a["mse_x0"].iloc[1] > 5 * a["mse_x0"].iloc[0], "denoising is harder at high noise"
    both = pd.concat([a.assign(variant="cond"), b.assign(variant="blind")])
    ratio = blind_ratio(both, "mse_x0", ["t"])
    assert torch.allclose(torch.tensor(ratio["ratio"].values), torch.tensor((b["mse_x0"] / a["mse_x0"]).values))
    assert not (ratio["ratio"] == 1.0).any(), "two different models, two different errors"
    with pytest.raises(DataError, match="needs both variants"):
        blind_ratio(a.assign(variant="cond"), "mse_x0", ["t"])


def test_quality_table_and_pair_checks():
    from interp.analyses.quality import load_feature_net

    cond, blind = load_checkpoint(COND), load_checkpoint(BLIND)
    check_pair(cond, blind)
    with pytest.raises(DataError, match="time_conditioning=True and True"):
        check_pair(cond, cond)
    wider = ImageDiffusion(ImageDiffusionConfig(time_conditioning=False, n_classes=10, width=32))
    with pytest.raises(DataError, match=r"more than the timestep input \(width: 64 vs 32\)"):
        check_pair(cond, wider)
    held, _ = cond.data("heldout")
    train, _ = cond.data("train")
    net = load_feature_net(ROOT / "checkpoints/feature-net-digits")
    samplers = {"euler": ImageSamplerConfig(name="euler", steps=8)}
    q = quality_table({"cond": cond, "blind": blind}, net, held, train, n=40, samplers=samplers)
    assert list(q["variant"]) == ["cond", "blind"] and set(q["evaluations"]) == {8}
    assert (q["fd"] > 0).all() and q["precision"].between(0, 1).all()
    ratio = blind_ratio(q, "fd", ["sampler"])
    assert ratio["ratio"].iloc[0] == pytest.approx(q["fd"].iloc[1] / q["fd"].iloc[0])
    assert set(study_samplers("ddpm")) == {"ddim", "ddim (no clip)", "ancestral"}
    with pytest.raises(DataError, match="fits the 'ddpm' process"):
        quality_table({"cond": cond}, net, held, train, n=4, samplers={"ddim": ImageSamplerConfig(name="ddim")})


def test_train_pair_trains_both_variants_and_resumes(tmp_path):
    from interp.train import TrainConfig

    cfg = ImageDiffusionConfig(width=16, depth=1, n_heads=2)
    tcfg = TrainConfig(steps=3, batch_size=8, warmup=1, log_every=1)
    pair = train_pair(cfg, tcfg, tmp_path, progress=False)
    assert {k: m.cfg.time_conditioning for k, m in pair.items()} == {"cond": True, "blind": False}
    again = train_pair(cfg, tcfg, tmp_path, progress=False)  # finished: loads, does not retrain
    for k in pair:
        assert all(
            torch.equal(a, b)
            for a, b in zip(pair[k].model.state_dict().values(), again[k].model.state_dict().values(), strict=True)
        )
    assert load_checkpoint(tmp_path / "blind").cfg.time_conditioning is False


def test_ddpm_samplers_start_below_one_like_diffusers_leading_spacing():
    from interp.processes.continuous import T_MAX, ContinuousProcess

    model = lambda x, t, y: torch.zeros_like(x)  # noqa: E731
    first = {}
    for name, cfg in {
        "ddim50": ImageSamplerConfig(name="ddim", steps=50),
        "ddim1": ImageSamplerConfig(name="ddim", steps=1),
        "ddim2": ImageSamplerConfig(name="ddim", steps=2),
        "ddim500": ImageSamplerConfig(name="ddim", steps=500),
        "ddim_tmax": ImageSamplerConfig(name="ddim", steps=4, t_start=1.0),
        "euler": ImageSamplerConfig(name="euler", steps=4),
    }.items():
        process = ContinuousProcess("flow" if name == "euler" else "ddpm")
        first[name] = next(sample_images(model, process, cfg, (1, 1, 2, 2), torch.Generator())).t
    expected = {"ddim50": 0.98, "ddim1": 0.98, "ddim2": 0.98, "ddim500": 0.998, "ddim_tmax": T_MAX, "euler": 1.0}
    assert first == pytest.approx(expected)
    with pytest.raises(ConfigError, match="t_start must be in"):
        ImageSamplerConfig(t_start=1.5)


def test_noise_probes_on_a_diffusers_unet_through_the_hooks():
    from interp.analyses.noise_probes import probe_layers
    from interp.data.images import image_tensors
    from interp.methods.diffusers_denoiser import DiffusersDenoiser

    unet = tiny_diffusers_unet()
    den = DiffusersDenoiser(unet, num_train_timesteps=1000)
    assert den.timesteps(torch.tensor([0.0, 0.5, 1.0])).tolist() == [0, 500, 999]
    assert DiffusersDenoiser(unet, time_conditioning=False).timesteps(torch.tensor([0.7])).tolist() == [0]
    from diffusers import DDPMScheduler

    linear = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod
    matched = DiffusersDenoiser(unet, alphas_cumprod=linear)
    alpha, _ = matched.process.alpha_sigma(torch.tensor([0.2, 0.5, 0.8]))
    steps = matched.timesteps(torch.tensor([0.2, 0.5, 0.8]))
    assert torch.allclose(linear[steps].double(), alpha.double() ** 2, atol=2e-3), "same ᾱ, other timestep"
    assert steps[1] < 300, "a linear-beta model reaches alpha_bar = 0.5 long before timestep 500"
    with pytest.raises(ConfigError, match="alphas_cumprod must have"):
        DiffusersDenoiser(unet, alphas_cumprod=linear[:10])
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(den.predict(x, torch.tensor([0.3, 0.3])), unet(x, torch.tensor([300, 300])).sample)
    tr, _ = image_tensors("digits")
    te, _ = image_tensors("digits", "heldout")
    rows = probe_layers(den, tr, te, "**.hook_out", n=200)
    assert {r["source"] for r in rows} == {"down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1"}
    linear = [r for r in rows if r["probe"] == "linear"]
    assert all(r["r2"] > 0.5 for r in linear), "even a random U-Net's activations carry the noise level"
    with pytest.raises(Exception, match="hook_nope"):
        probe_layers(den, tr, te, "down.0.hook_nope", n=10)


def test_report_cli_compares_a_conditioned_and_a_blind_checkpoint(tmp_path):
    out = tmp_path / "ta.html"
    run_cli("report", "-c", str(BLIND), "--compare", str(COND), "--n", "32", "--out", str(out), check=True)
    html = out.read_text()
    assert "Per-t denoising error" in html and "Reading the noise level without a timestep" in html
    config = json.loads(html.split("<pre>")[1].split("</pre>")[0].replace("&quot;", '"'))
    assert config["config"]["time_conditioning"] is True, "the conditioned model leads whatever the order"
    assert config["checkpoint"] == str(COND) and config["compare"]["checkpoint"] == str(BLIND)
    assert config["compare"]["config"]["time_conditioning"] is False
    assert set(config["fd_ratio"]) == {"euler", "heun"} and config["mse_ratio_mean"] > 0
    bad = run_cli("report", "-c", str(COND), "--compare", str(COND), "--out", str(tmp_path / "no.html"))
    assert bad.returncode == 2 and "time-agnostic" in bad.stderr and not (tmp_path / "no.html").exists()
    lm = run_cli(
        "report", "-c", "checkpoints/dlm-addition3-none", "--compare", str(COND), "--out", str(tmp_path / "x.html")
    )
    assert lm.returncode == 2 and "--compare does not apply to `interp report` on" in lm.stderr


def test_report_cli_on_one_image_checkpoint(tmp_path):
    out = tmp_path / "one.html"
    run_cli("report", "-c", str(BLIND), "--n", "16", "--out", str(out), check=True)
    html = out.read_text()
    assert "Sample quality per sampler" in html and "Samples" in html
    config = json.loads(html.split("<pre>")[1].split("</pre>")[0].replace("&quot;", '"'))
    assert config["config"]["time_conditioning"] is False and "fd_ratio" not in config


def test_band_ratios_take_the_ratio_per_seed_then_average():
    from interp.studies.time_agnostic import band_ratios

    rows = []
    for seed, cond, blind in ((0, 1.0, 2.0), (1, 4.0, 16.0)):  # per-seed ratios 2 and 4
        for t in (0.1, 0.2, 0.5, 0.9):
            rows += [
                {"process": "flow", "seed": seed, "t": t, "variant": "cond", "mse_x0": cond if t < 0.3 else 10.0},
                {"process": "flow", "seed": seed, "t": t, "variant": "blind", "mse_x0": blind if t < 0.3 else 10.0},
            ]
    bands = band_ratios(pd.DataFrame(rows)).set_index("band")
    assert bands.loc["t < 0.3", "ratio"] == pytest.approx(3.0)  # pooling the seeds first would give 9 / 2.5 = 3.6
    assert bands.loc["t < 0.3", "ratio_sd"] == pytest.approx(2**0.5) and bands.loc["t < 0.3", "seeds"] == 2
    assert bands.loc["0.3 to 0.7", "ratio"] == bands.loc["t > 0.7", "ratio"] == 1.0
