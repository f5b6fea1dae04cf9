"""The VAE family (mcutils.vae): the official architecture at 8x8 and 28x28, training, the chain, the data."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import test_robust_common as common
from mcutils import runs, vae
from mcutils.validate import ParameterError


@pytest.fixture(scope="module")
def digits():
    return vae.load_digits_images()


@pytest.mark.parametrize("side, feature_side", [(8, 2), (28, 7)])
def test_architecture_shapes(side, feature_side):
    model = vae.VAE(side, latent_dim=20)
    assert model.feature_shape == (128, feature_side, feature_side)
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == \
        [(1, 64, (4, 4), (2, 2)), (64, 128, (4, 4), (2, 2))]
    deconvs = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in deconvs] == [(128, 64), (64, 1)]
    assert isinstance(model.decoder[-1], torch.nn.Sigmoid)
    x = torch.rand(5, 1, side, side)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (5, 20)
    recon, mean, logvar = model(x)
    assert recon.shape == x.shape
    assert recon.min() >= 0 and recon.max() <= 1
    assert model.decode(torch.randn(3, 20)).shape == (3, 1, side, side)


def test_image_side_must_be_a_multiple_of_four():
    with pytest.raises(ParameterError, match="multiple of 4"):
        vae.VAE(30)


def test_loss_is_bce_plus_kl():
    x = torch.rand(4, 1, 8, 8)
    recon = torch.full_like(x, 0.5)
    zero = torch.zeros(4, 20)
    # a posterior equal to the prior costs nothing; a reconstruction of 0.5 costs log 2 a pixel
    assert vae.vae_loss(recon, x, zero, zero).item() == pytest.approx(4 * 64 * np.log(2), rel=1e-5)
    assert vae.vae_loss(recon, x, zero + 1.0, zero).item() == pytest.approx(4 * 64 * np.log(2) + 4 * 20 * 0.5,
                                                                          rel=1e-5)


def test_training_is_deterministic_with_a_seed(digits):
    images = digits[0][:64]
    first, losses_a = vae.train_vae(images, epochs=2, batch_size=32, seed=3)
    second, losses_b = vae.train_vae(images, epochs=2, batch_size=32, seed=3)
    other, losses_c = vae.train_vae(images, epochs=2, batch_size=32, seed=4)
    assert losses_a == losses_b and losses_a != losses_c
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(vae.sample_images(first, 6, seed=1), vae.sample_images(second, 6, seed=1))
    assert not np.array_equal(vae.sample_images(first, 6, seed=1), vae.sample_images(first, 6, seed=2))


def test_loss_decreases_on_a_tiny_run(digits):
    _, losses = vae.train_vae(digits[0][:256], epochs=6, batch_size=32, seed=0)
    assert len(losses) == 6
    assert losses[-1] < 0.85 * losses[0]


def test_samples_and_latents(digits):
    model, _ = vae.train_vae(digits[0][:64], epochs=1, seed=0)
    samples = vae.sample_images(model, 10, seed=0, batch_size=4)
    assert samples.shape == (10, 1, 8, 8) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    assert vae.encode_means(model, samples, batch_size=3).shape == (10, 20)


def test_digit_classifier_and_class_mix(digits):
    images, labels = digits
    classifier, accuracy = vae.digit_classifier(images, labels, seed=0)
    assert accuracy > 0.9
    mix = vae.class_mix(classifier, images[labels == 3])
    assert mix.shape == (10,) and mix.sum() == pytest.approx(1.0) and mix.argmax() == 3
    assert vae.entropy_bits(np.full(10, 0.1)) == pytest.approx(np.log2(10))
    single = vae.entropy_bits(np.eye(10)[2])
    assert single == 0.0 and str(single) == "0.0"


def test_chain_records_every_generation_and_resumes(digits, tmp_path, monkeypatch):
    images, labels = digits[0][:120], digits[1][:120]
    kwargs = dict(epochs=1, batch_size=64, seed=0, n_grid=4, runs_root=tmp_path, log=lambda *_: None)
    chain = vae.vae_chain(images, labels, 2, **kwargs)
    assert [m["generation"] for m in chain.metrics] == [0, 1, 2]
    assert len(chain.grids) == 3 and chain.grids[0].shape == (4, 8, 8)
    assert chain.column("latent_std").shape == (3,)
    for m in chain.metrics:
        assert len(m["class_mix"]) == 10 and sum(m["class_mix"]) == pytest.approx(1.0)
        assert m["n_train"] == 120
    assert {"latent_mean", "latent_std", "class_mix"} <= set(chain.real)
    run_dir = tmp_path / os.path.basename(chain.run_dir)
    for g in range(3):
        assert (run_dir / f"gen_{g:02d}" / "metrics.json").is_file()
        assert (run_dir / f"gen_{g:02d}" / "model.safetensors").is_file()
    assert json.loads((run_dir / "gen_01" / "metrics.json").read_text())["generation"] == 1

    # a rerun with the same settings trains nothing and ends with the same numbers
    def no_training(*args, **kw):
        raise AssertionError("a stored generation was trained again")
    monkeypatch.setattr(vae, "train_vae", no_training)
    again = vae.vae_chain(images, labels, 2, **kwargs)
    assert again.metrics == chain.metrics
    np.testing.assert_array_equal(np.stack(again.grids), np.stack(chain.grids))
    monkeypatch.undo()

    # after losing its last generation (a kill before metrics.json), the rerun trains only that one again
    (run_dir / "gen_02" / runs.METRICS).unlink()
    resumed = vae.vae_chain(images, labels, 2, **kwargs)
    assert resumed.metrics[2]["latent_std"] == chain.metrics[2]["latent_std"]
    assert resumed.metrics[2]["losses"] == chain.metrics[2]["losses"]
    # other settings, another folder
    vae.vae_chain(images, labels, 0, **(kwargs | {"seed": 1}))
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("vae-")]) == 2


def test_heldout_loss_is_the_training_loss_per_image_and_deterministic(digits):
    model, _ = vae.train_vae(digits[0][:64], epochs=1, seed=0)
    images = digits[0][64:96]
    held = vae.heldout_loss(model, images, seed=5)
    assert held == vae.heldout_loss(model, images, seed=5)
    batched = vae.heldout_loss(model, images, seed=5, batch_size=7)  # the same draws: only the rounding of the sums moves
    assert batched == {k: pytest.approx(v, rel=1e-6) for k, v in held.items()}
    assert held["loss"] == pytest.approx(held["reconstruction"] + held["kl"])
    assert held["kl"] == pytest.approx(vae.posterior_kl(model, images), rel=1e-5)
    # the reconstruction term is vae_loss's with the same draws: replay them
    x = torch.as_tensor(images)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        noise = torch.randn(len(images), 20, generator=vae._generator(5, vae.STREAM_TEST))
        summed = vae.vae_loss(model.decode(mean + noise * torch.exp(0.5 * logvar)), x, mean, logvar)
    assert held["loss"] == pytest.approx(summed.item() / len(images), rel=1e-5)
    assert held != vae.heldout_loss(model, images, seed=6)


def test_heldout_loss_is_higher_for_a_model_that_never_saw_such_images(digits):
    images = digits[0]
    trained, _ = vae.train_vae(images[:1000], epochs=5, seed=0)
    untrained, _ = vae.train_vae(images[:1000], epochs=1, lr=1e-9, seed=0)  # barely moved from its initial weights
    assert vae.heldout_loss(trained, images[1000:])["loss"] < 0.8 * vae.heldout_loss(untrained, images[1000:])["loss"]


def test_heldout_loss_refuses_images_of_another_size(digits):
    model, _ = vae.train_vae(digits[0][:16], epochs=1, seed=0)
    with pytest.raises(ParameterError, match="images must have shape"):
        vae.heldout_loss(model, np.zeros((3, 1, 28, 28), dtype=np.float32))


def test_digits_test_split_is_disjoint_seeded_and_a_fifth():
    train, train_labels, test, test_labels = vae.train_test_images("digits", seed=0)
    assert len(test) == 359 or len(test) == 360
    assert len(train) + len(test) == 1797 and len(train_labels) == len(train) and len(test_labels) == len(test)
    flat = {im.tobytes() for im in train}
    assert sum(im.tobytes() in flat for im in test) <= 20  # the digits hold a few exact duplicates, no more
    again = vae.train_test_images("digits", seed=0)
    np.testing.assert_array_equal(again[2], test)
    assert not np.array_equal(vae.train_test_images("digits", seed=1)[2], test)
    with pytest.raises(ParameterError, match="test_fraction"):
        vae.train_test_images("digits", test_fraction=0.0)


@pytest.mark.parametrize("policy, sizes", [("replace", [120, 120, 120]), ("accumulate", [120, 240, 360])])
def test_chain_records_the_test_loss_of_every_generation_under_both_policies(digits, tmp_path, policy, sizes):
    images, labels, test = digits[0][:120], digits[1][:120], digits[0][1500:1560]
    kwargs = dict(epochs=1, batch_size=64, seed=0, n_grid=2, policy=policy, log=lambda *_: None)
    chain = vae.vae_chain(images, labels, 2, test_images=test, runs_root=tmp_path, **kwargs)
    assert [m["n_train"] for m in chain.metrics] == sizes
    for m in chain.metrics:
        assert m["test_loss"] == pytest.approx(m["test_reconstruction"] + m["test_kl"]) and m["test_loss"] > 0
    # the held-out images are part of the chain's name; without them no test loss is recorded
    plain = vae.vae_chain(images, labels, 2, runs_root=tmp_path, **kwargs)
    assert plain.run_dir != chain.run_dir and "test_loss" not in plain.metrics[0]
    assert plain.metrics[0]["losses"] == chain.metrics[0]["losses"]  # the held-out images do not change training


def test_chain_refuses_test_images_of_another_size(digits):
    with pytest.raises(ParameterError, match="test_images must have shape"):
        vae.vae_chain(digits[0][:20], digits[1][:20], 1, epochs=1, test_images=np.zeros((4, 1, 28, 28), np.float32))


def test_chain_runs_at_mnist_size():
    # the paper profile's path, on stand-in 28x28 images (MNIST itself needs internet)
    rng = np.random.default_rng(0)
    images = (rng.random((40, 1, 28, 28)) < 0.2).astype(np.float32)
    chain = vae.vae_chain(images, np.arange(40) % 10, 1, epochs=1, batch_size=16, n_grid=3, log=lambda *_: None)
    assert chain.grids[1].shape == (3, 28, 28)
    assert chain.metrics[1]["n_train"] == 40 and chain.metrics[1]["kl_per_image"] >= 0


@pytest.mark.parametrize("change, message", [
    (dict(images=np.full((10, 1, 8, 8), 2.0, dtype=np.float32)), r"\[0, 1\]"),
    (dict(images=np.zeros((10, 8, 8), dtype=np.float32)), "shape"),
    (dict(images=np.zeros((10, 1, 6, 6), dtype=np.float32)), "multiple of 4"),
    (dict(epochs=0), "epochs"),
    (dict(n_generations=-1), "n_generations"),
    (dict(policy="keep"), "policy must be one of"),
    (dict(batch_size=0), "batch_size"),
    (dict(labels=np.zeros(3, dtype=int)), "one entry per image"),
    (dict(device="tpu"), "device must be one of"),
])
def test_chain_validates_before_training(change, message):
    args = dict(images=np.zeros((10, 1, 8, 8), dtype=np.float32), labels=np.arange(10) % 10,
                n_generations=1, epochs=1) | change
    with pytest.raises(ParameterError, match=message):
        vae.vae_chain(**args)


def test_unknown_dataset_is_refused():
    with pytest.raises(ParameterError, match="dataset must be one of"):
        vae.load_images("cifar10")


def test_images_from_a_hugging_face_split():
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    split = Dataset.from_dict({"image": [PILImage.fromarray(p) for p in pixels], "label": [7, 0, 3]},
                              features=Features({"image": Image(), "label": ClassLabel(num_classes=10)}))
    images, labels = vae.images_from_hf(split)
    assert images.shape == (3, 1, 28, 28) and images.dtype == np.float32
    np.testing.assert_allclose(images[:, 0], pixels / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(labels, [7, 0, 3])


def test_mnist_fails_clearly_and_quickly_offline(tmp_path):
    # In a fresh process with an empty cache and the hub offline, the real loader must fail with a message that
    # says what to do, in about a second (the bound only separates that from the 25-50 s of network retries).
    script = common.MNIST_TIMING_SCRIPT
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines and lines[0] != "loaded", result.stdout + result.stderr
    seconds, message = float(lines[0]), "\n".join(lines[1:])
    assert "ylecun/mnist" in message and "dataset='digits'" in message and "internet" in message
    assert seconds < 15


def test_the_collapse_benchmark_report_holds_what_the_vae_chapter_prints():
    """book/05_vae reads benchmarks/vae_collapse.md's json block; a rerun of the benchmark must keep its fields."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "vae_collapse.md").read_text()
    report = json.loads(re.search(r"```json\n(.*?)\n```", text, flags=re.S).group(1))
    assert {"dataset", "seed", "n_generations", "collapse_threshold_nats", "runs"} <= set(report)
    assert [run["epochs"] for run in report["runs"]] == [20, 60]  # the quick profile's, and three times as many
    for run in report["runs"]:
        assert len(run["kl_per_image"]) == report["n_generations"] + 1
        below = [g for g, kl in enumerate(run["kl_per_image"]) if kl < report["collapse_threshold_nats"]]
        assert run["first_collapsed_generation"] == (below[0] if below else None)
