"""Variational autoencoders retrained on their own decoder's samples (Shumailov et al., supplementary, Fig. 9).

The paper trains a VAE on MNIST, draws latents from the prior N(0, I),
decodes them, and trains the next VAE (from scratch) on those decoded
images only; over the generations the samples lose variety and the digit
classes blend (Fig. 9).  The official notebook measures the spread of each
generation's samples in the latent space of the first VAE.

The architecture is the official one (after :cite:`kingma2014vae`): an
encoder of two 4×4, stride-2 convolutions (1 → 64 → 128 channels) followed
by linear maps to the mean and log-variance of a 20-dimensional latent, and a
mirrored decoder (linear, two transposed convolutions) ending in a sigmoid.
The loss is binary cross-entropy plus the KL divergence to the prior; Adam
with learning rate 1e-3 and weight decay 1e-5.  Each convolution halves the
side of the image, so the same layers fit 28×28 MNIST (7×7 feature maps)
and scikit-learn's bundled 8×8 digits (2×2 feature maps) of the quick profile.

Images are numpy ``float32`` arrays ``(n, 1, side, side)`` in [0, 1], so
that the policies of :mod:`mcutils.generational` apply unchanged: the
replace of Shumailov et al. and the accumulate of Gerstgrasser et al., whose
VAE test error (:func:`heldout_loss`) is measured on real images held out
from every generation's training set (:func:`train_test_images`).
"""
from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import generational, runs, validate

DATASETS = ("digits", "mnist")
MNIST_HUB_ID = "ylecun/mnist"
# Bump when a change of this module changes what a stored generation holds (part of the run name).
# 2: seeds derived as SeedSequence([seed, STREAM, generation]) (the book's one convention).
FORMAT_VERSION = 2

# Seed streams: every seed of a chain is ``derived_seed(seed, STREAM, generation)``, i.e.
# ``SeedSequence([seed, STREAM, generation])``; inside one training run, ``derived_seed(run seed, STREAM)``.
STREAM_TRAINING = 0x7A1      # generation g's training run (its weights, noise and batch order below)
STREAM_GRID = 0x6D1          # generation g's grid of random-latent samples (Fig. 9)
STREAM_SAMPLES = 0x5A1       # generation g's samples: the next generation's training data
STREAM_CLASSIFIER = 0xC1A    # the real images' split for the digit classifier
STREAM_TEST_SPLIT = 0x7E5    # the digits' held-out test split (train_test_images)
STREAM_TEST = 0x7E1          # generation g's reparameterisation draws on the held-out images (heldout_loss)
STREAM_WEIGHTS = 0           # within a training run: weights, reparameterisation noise and batch order
STREAM_LATENTS = 1           # within sample_images: the prior draws


class DataUnavailableError(validate.UserError, RuntimeError):
    """A data set that cannot be loaded here (for example MNIST without internet)."""


# --------------------------------------------------------------------------- data

def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, offline), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return images, digits.target.astype(np.int64)


def images_from_hf(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 1, 28, 28)`` in [0, 1] and labels from a Hugging Face MNIST split."""
    images = np.stack([np.asarray(im, dtype=np.uint8) for im in dataset["image"]])
    if images.ndim != 3:
        raise ValueError(f"expected grey-scale images (n, height, width), got shape {images.shape}")
    return (images.astype(np.float32) / 255.0)[:, None], np.asarray(dataset["label"], dtype=np.int64)


def load_mnist(split: str = "train", source: str = MNIST_HUB_ID) -> tuple[np.ndarray, np.ndarray]:
    """MNIST through its public loader, ``datasets.load_dataset("ylecun/mnist")``, or a local folder.

    The hub's copy needs internet the first time (then the Hugging Face
    cache); offline and uncached it fails at once with
    :class:`DataUnavailableError`.  ``source`` may instead be a local folder
    holding MNIST's layout (``train`` / ``test`` files with ``image`` and
    ``label``, as ``python -m mcutils.smoke`` writes), read by the same call,
    ``load_dataset(folder, split=split)``, without the hub.
    """
    validate.choice("split", split, ["train", "test"])
    from .lm.hub import go_offline, hub_endpoint, hub_offline, hub_reachable

    local = Path(source).is_dir()
    advice = ("It is downloaded from the Hugging Face hub the first time (internet needed, then cached). "
              "Offline, use dataset='digits' (the quick profile's bundled 8x8 digits).")
    unreachable = False
    if not local and not hub_offline() and not hub_reachable():
        # One request, not a minute of retries: load from the cache in offline mode, or fail now.
        unreachable = True
        go_offline()
    try:
        from datasets import load_dataset
        dataset = load_dataset(str(source), split=split)
    except Exception as exc:  # offline, no cache, hub unreachable; a folder without that split
        why = (f"the hub ({hub_endpoint()}) did not answer and it is not cached" if unreachable
               else f"{type(exc).__name__}: {exc}")
        raise DataUnavailableError(
            f"MNIST ({str(source)!r}, split {split!r}) could not be loaded: {why}. "
            + ("A local folder needs train and test files with columns image and label." if local else advice)
        ) from None
    missing = sorted({"image", "label"} - set(dataset.column_names))
    if missing:
        raise DataUnavailableError(f"{source!r}, split {split!r}, has columns {dataset.column_names}; "
                                   f"MNIST's layout needs image and label (missing {missing})")
    return images_from_hf(dataset)


def check_dataset(dataset) -> str:
    """``"digits"``, ``"mnist"`` or a local folder in MNIST's layout; anything else is a ParameterError."""
    if isinstance(dataset, str) and dataset in DATASETS:
        return dataset
    if isinstance(dataset, (str, Path)) and str(dataset) and Path(dataset).is_dir():
        return str(dataset)
    raise validate.ParameterError(f"dataset must be one of {list(DATASETS)} or a local folder in MNIST's layout "
                                  f"(train/test files with image and label), got {dataset!r}")


def load_images(dataset: str = "digits") -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels of ``"digits"`` (quick, offline), ``"mnist"`` (paper) or a folder
    in MNIST's layout (read as the hub's copy is)."""
    dataset = check_dataset(dataset)
    if dataset == "digits":
        return load_digits_images()
    return load_mnist("train", MNIST_HUB_ID if dataset == "mnist" else dataset)


def train_test_images(dataset: str = "digits", *, seed: int = 0, test_fraction: float = 0.2):
    """Real training images and labels, and real test images and labels that no VAE trains on.

    ``"mnist"`` (or a folder in its layout): its official splits (60 000
    training and 10 000 test images).  ``"digits"`` has no split of its own: a fraction
    ``test_fraction`` of its 1797 images, drawn uniformly with
    ``SeedSequence([seed, STREAM_TEST_SPLIT])``, is held out (360 images at
    the default 0.2) and the rest is the training set.  Returns
    ``(train_images, train_labels, test_images, test_labels)``.
    """
    dataset = check_dataset(dataset)
    validate.seed("seed", seed)
    fraction = validate.fraction("test_fraction", test_fraction)
    if not 0 < fraction < 1:
        raise validate.ParameterError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    if dataset != "digits":  # MNIST, or a folder in its layout: its own test split
        source = MNIST_HUB_ID if dataset == "mnist" else dataset
        return (*load_mnist("train", source), *load_mnist("test", source))
    images, labels = load_digits_images()
    order = np.random.default_rng([seed, STREAM_TEST_SPLIT]).permutation(len(images))
    n_test = int(round(fraction * len(images)))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return images[train], labels[train], images[test], labels[test]


# --------------------------------------------------------------------------- the model

class VAE(nn.Module):
    """The official convolutional VAE, for square images whose side is a multiple of 4."""

    def __init__(self, image_size: int = 28, latent_dim: int = 20, channels: tuple[int, int] = (64, 128)):
        super().__init__()
        validate.positive_int("image_size", image_size)
        if image_size % 4:
            raise validate.ParameterError(
                f"image_size must be a multiple of 4 (two stride-2 convolutions), got {image_size}")
        validate.positive_int("latent_dim", latent_dim)
        c1, c2 = channels
        self.image_size, self.latent_dim = image_size, latent_dim
        self.feature_shape = (c2, image_size // 4, image_size // 4)
        n_features = int(np.prod(self.feature_shape))
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.to_mean = nn.Linear(n_features, latent_dim)
        self.to_logvar = nn.Linear(n_features, latent_dim)
        self.from_latent = nn.Linear(latent_dim, n_features)
        self.decoder = nn.Sequential(
            nn.ReLU(), nn.Unflatten(1, self.feature_shape),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mean(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z))

    def forward(self, x: torch.Tensor):
        mean, logvar = self.encode(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)  # reparameterisation
        return self.decode(z), mean, logvar


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the reconstruction plus KL(q(z|x) ‖ N(0, I)), summed over the batch."""
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp())
    return bce + kl


def derived_seed(seed: int, *salt: int) -> int:
    """A seed for one purpose derived from ``seed``: ``SeedSequence([seed, STREAM, k...])``, 63 bits (torch's range).

    Distinct salts give independent streams; ``salt`` is a named stream, then its index (a generation)."""
    return int(np.random.SeedSequence([seed, *salt]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _generator(seed: int, *salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, *salt))


def train_vae(images: np.ndarray, *, epochs: int, batch_size: int = 128, lr: float = 1e-3,
              weight_decay: float = 1e-5, latent_dim: int = 20, seed: int = 0, device: str = "cpu",
              channels: tuple[int, int] = (64, 128)) -> tuple[VAE, list[float]]:
    """Train a fresh VAE on ``images``; returns it (in eval mode) and the mean loss per image of each epoch."""
    validate.positive_int("epochs", epochs)
    validate.positive_int("batch_size", batch_size)
    validate.number("lr", lr, minimum=0, strict_minimum=True)
    validate.number("weight_decay", weight_decay, minimum=0)
    gen = _generator(seed, STREAM_WEIGHTS)  # also draws each epoch's batch order
    torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))  # weights and reparameterisation noise
    model = VAE(images.shape[-1], latent_dim, channels).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    data = torch.as_tensor(images, dtype=torch.float32).to(device)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen).to(device)
        total = 0.0
        for start in range(0, len(data), batch_size):
            batch = data[order[start:start + batch_size]]
            recon, mean, logvar = model(batch)
            loss = vae_loss(recon, batch, mean, logvar)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
        losses.append(total / len(data))
    return model.eval(), losses


@torch.no_grad()
def sample_images(model: VAE, n: int, *, seed: int = 0, batch_size: int = 4096) -> np.ndarray:
    """``n`` images decoded from latents drawn from the prior N(0, I) (the decoder's mean image)."""
    device = next(model.parameters()).device
    z = torch.randn(n, model.latent_dim, generator=_generator(seed, STREAM_LATENTS))
    parts = [model.decode(z[i:i + batch_size].to(device)).cpu() for i in range(0, n, batch_size)]
    return torch.cat(parts).numpy()


@torch.no_grad()
def encode_means(model: VAE, images: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The encoder's latent means ``(n, latent_dim)`` of ``images``."""
    device = next(model.parameters()).device
    parts = [model.encode(torch.as_tensor(images[i:i + batch_size]).to(device))[0].cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy()


@torch.no_grad()
def posterior_kl(model: VAE, images: np.ndarray, batch_size: int = 4096) -> float:
    """Mean KL(q(z|x) ‖ N(0, I)) per image, in nats: how much the latent code tells about each image.

    Zero means the encoder ignores its input (posterior collapse): every image
    gets the prior as its code, and the decoder can only output one image.
    """
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(images), batch_size):
        mean, logvar = model.encode(torch.as_tensor(images[i:i + batch_size]).to(device))
        total += float((-0.5 * (1 + logvar - mean.pow(2) - logvar.exp())).sum())
    return total / len(images)


@torch.no_grad()
def heldout_loss(model: VAE, images: np.ndarray, *, seed: int = 0, batch_size: int = 4096) -> dict:
    """The VAE's loss on ``images`` it never trained on, in nats per image: the test error of a generation.

    The same loss as training (:func:`vae_loss`), averaged over images: the
    binary cross-entropy of the reconstruction of ``x`` from one latent
    ``z ~ q(z|x)`` plus ``KL(q(z|x) ‖ N(0, I))``.  That is the negative
    evidence lower bound (ELBO) estimated with one reparameterised draw per
    image, an unbiased estimate of ``E_x[-ELBO(x)]`` (for binary images an
    upper bound on ``-log p(x)``; for grey levels the cross-entropy is only
    a loss, not a log-likelihood).  The draws come from
    ``SeedSequence([seed, STREAM_TEST])``, so the value is a deterministic
    function of the model, the images and ``seed``.

    Returns ``{"loss": ..., "reconstruction": ..., "kl": ...}`` (loss = the other two).
    A VAE trained on data like ``images`` scores low; a generation that has
    drifted from the real images, or collapsed to one output, scores high.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (1, model.image_size, model.image_size) or len(images) == 0:
        raise validate.ParameterError(
            f"images must have shape (n >= 1, 1, {model.image_size}, {model.image_size}) for this model, got {images.shape}")
    device = next(model.parameters()).device
    noise = torch.randn(len(images), model.latent_dim, generator=_generator(seed, STREAM_TEST))  # all at once: batching changes nothing
    reconstruction = kl = 0.0
    for i in range(0, len(images), batch_size):
        x = torch.as_tensor(images[i:i + batch_size]).to(device)
        mean, logvar = model.encode(x)
        z = mean + noise[i:i + batch_size].to(device) * torch.exp(0.5 * logvar)
        reconstruction += float(F.binary_cross_entropy(model.decode(z), x, reduction="sum"))
        kl += float((-0.5 * (1 + logvar - mean.pow(2) - logvar.exp())).sum())
    n = len(images)
    return {"loss": (reconstruction + kl) / n, "reconstruction": reconstruction / n, "kl": kl / n}


def pixel_spread(images: np.ndarray) -> float:
    """The standard deviation of each pixel across images, averaged over pixels: how much the images differ."""
    return float(np.asarray(images).std(axis=0).mean())


# --------------------------------------------------------------------------- measuring a generation

def digit_classifier(images: np.ndarray, labels: np.ndarray, *, seed: int = 0, max_train: int = 10000,
                     holdout: float = 0.2):
    """A logistic-regression digit classifier on real images; returns it and its held-out accuracy.

    It names the class of each generated image, so that the class mix of a
    generation's samples can be followed (modes merging, Fig. 9).
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng([seed, STREAM_CLASSIFIER])
    order = rng.permutation(len(images))
    n_test = int(round(holdout * len(images)))
    test, train = order[:n_test], order[n_test:][:max_train]
    flat = images.reshape(len(images), -1)
    classifier = LogisticRegression(max_iter=500).fit(flat[train], labels[train])
    accuracy = float(classifier.score(flat[test], labels[test])) if n_test else float("nan")
    return classifier, accuracy


def class_mix(classifier, images: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """The share of ``images`` the classifier puts in each class."""
    predicted = classifier.predict(images.reshape(len(images), -1))
    return np.bincount(predicted, minlength=n_classes)[:n_classes] / len(images)


def entropy_bits(shares: np.ndarray) -> float:
    """Entropy of a class mix in bits (log2 10 ≈ 3.32 for ten equal classes)."""
    p = np.asarray(shares, dtype=float)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


# --------------------------------------------------------------------------- the chain

@dataclass
class VAEChain:
    """What each generation of a VAE chain produced, generation 0 first."""

    metrics: list = field(default_factory=list)   # dicts: losses, KL, latent stats, class mix, pixel spread, seconds
    grids: list = field(default_factory=list)     # (n_grid, side, side) random-latent samples
    real: dict = field(default_factory=dict)      # the same statistics of the real images
    classifier_accuracy: float = float("nan")
    run_dir: str | None = None

    def column(self, key: str) -> np.ndarray:
        return np.array([m[key] for m in self.metrics])


def _latent_stats(encoder_model: VAE, images: np.ndarray) -> dict:
    means = encode_means(encoder_model, images)
    return {"latent_mean": float(means.mean()), "latent_std": float(means.std())}


def _save_generation(gen_dir: Path, model: VAE, grid: np.ndarray, metrics: dict) -> None:
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["grid"] = torch.as_tensor(grid)
    runs.atomic_write_bytes(gen_dir / "model.safetensors", save(tensors))
    runs.atomic_write_json(gen_dir / runs.METRICS, metrics)  # written last: marks the generation complete


def _load_generation(gen_dir: Path, index: int, image_size: int, latent_dim: int, channels, device: str):
    """A stored generation, checked: its metrics name it, its weights load; else a one-line error to act on."""
    from safetensors.torch import load_file

    advice = runs.delete_advice(gen_dir.parent, index)
    metrics = runs.check_generation_label(gen_dir.parent, index)
    path = gen_dir / "model.safetensors"
    try:
        tensors = load_file(str(path))
        model = VAE(image_size, latent_dim, channels)
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        grid = tensors["grid"].numpy()
    except FileNotFoundError:
        raise runs.CorruptRunError(f"{path} is missing; {advice}") from None
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise runs.CorruptRunError(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:200]}); {advice}") from None
    return model.to(device).eval(), grid, metrics


def vae_chain(images: np.ndarray, labels: np.ndarray, n_generations: int, *, epochs: int,
              batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-5, latent_dim: int = 20,
              seed: int = 0, device: str = "cpu", policy: str = "replace", n_grid: int = 16,
              channels: tuple[int, int] = (64, 128), runs_root: str | Path | None = None,
              test_images: np.ndarray | None = None, log=print) -> VAEChain:
    """Train a VAE, sample as many images from its prior, train the next VAE on them, and so on.

    Generation 0 learns the real ``images``; generation ``i + 1`` learns the
    training set that ``policy`` forms from the samples so far
    (:mod:`mcutils.generational`; ``replace`` is the paper's set-up).  Every
    generation is measured the same way: its samples' latent means under the
    generation-0 encoder (mean and standard deviation, as the official
    notebook), their class mix according to a classifier trained on the real
    ``labels``, and a grid of ``n_grid`` random-latent samples (Fig. 9).

    With ``runs_root`` the chain lives in ``<runs_root>/vae-<hash of its
    settings and data>``: each finished generation is stored as
    ``gen_<NN>/model.safetensors`` and ``gen_<NN>/metrics.json`` (written
    last), and a rerun loads finished generations instead of training them.
    The seeds of generation ``NN`` depend only on ``seed`` and ``NN``, so a
    resumed chain ends as an uninterrupted one would, and a longer chain
    reuses the generations of a shorter one.

    ``test_images``: real images of the same size that no generation
    trains on.  Given, every generation also records its loss on them
    (:func:`heldout_loss`, seeded by ``seed`` and the generation) as
    ``test_loss``, ``test_reconstruction`` and ``test_kl``: Gerstgrasser et
    al.'s test error.  They are part of what names a stored chain.
    """
    validate.non_negative_int("n_generations", n_generations)
    validate.positive_int("epochs", epochs)
    validate.positive_int("batch_size", batch_size)
    validate.seed("seed", seed)  # any seed numpy takes: every derived seed comes from SeedSequence
    validate.positive_int("n_grid", n_grid)
    policy = generational.make_policy(policy)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise validate.ParameterError(f"images must have shape (n, 1, side, side), got {images.shape}")
    if images.min() < 0 or images.max() > 1:
        raise validate.ParameterError("images must lie in [0, 1] (binary cross-entropy targets)")
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise validate.ParameterError(f"labels must have one entry per image ({len(images)}), got shape {labels.shape}")
    VAE(images.shape[-1], latent_dim, channels)  # fail now on a bad shape, not after training
    if test_images is not None:
        test_images = np.asarray(test_images, dtype=np.float32)
        if test_images.ndim != 4 or test_images.shape[1:] != images.shape[1:] or len(test_images) == 0:
            raise validate.ParameterError(f"test_images must have shape (n >= 1, {', '.join(map(str, images.shape[1:]))}) "
                                          f"like images, got {test_images.shape}")
        if test_images.min() < 0 or test_images.max() > 1:
            raise validate.ParameterError("test_images must lie in [0, 1] (binary cross-entropy targets)")
    device = validate.resolve_device(device)
    run_dir = None
    if runs_root is not None:
        extra = {} if test_images is None else {"test_data": _fingerprint(test_images)}  # old chains keep their names
        settings = chain_settings(images, labels, epochs=epochs, batch_size=batch_size, lr=lr,
                                  weight_decay=weight_decay, latent_dim=latent_dim, seed=seed,
                                  device=torch.device(device).type, policy=policy.label, n_grid=n_grid,
                                  channels=list(channels), **extra)
        run_dir = Path(runs_root).expanduser() / runs.run_name("vae", settings)
        if not all(runs.is_complete(run_dir, g) for g in range(n_generations + 1)):
            # before any work: a folder to write, with room for the generations
            where = "runs_root (the chapter's runs_dir)"
            runs.check_writable_dir(runs_root, where)
            runs.check_writable_dir(run_dir, where)
    writing = run_dir is not None and not all(runs.is_complete(run_dir, g) for g in range(n_generations + 1))
    with ExitStack() as stack:
        if writing:  # the lock, and a killed writer's scratch files cleared (shared with mcutils.lm.chain)
            stack.enter_context(runs.writing(run_dir, "generations"))
        try:
            # the shared resume point: the complete prefix of generations, each checked to be itself
            n_stored = 0 if run_dir is None else runs.complete_generations(
                run_dir, n_generations + 1, lambda g: runs.check_generation_label(run_dir, g))
            return _vae_chain(images, labels, n_generations, epochs=epochs, batch_size=batch_size, lr=lr,
                              weight_decay=weight_decay, latent_dim=latent_dim, seed=seed, device=device,
                              policy=policy, n_grid=n_grid, channels=channels, run_dir=run_dir, n_stored=n_stored,
                              test_images=test_images, log=log)
        except OSError as exc:
            error = runs.write_error(exc, runs_root, "runs_root (the chapter's runs_dir)") if run_dir else None
            if error is None:
                raise
            raise error from None


def _vae_chain(images, labels, n_generations, *, epochs, batch_size, lr, weight_decay, latent_dim, seed, device,
               policy, n_grid, channels, run_dir, n_stored=0, test_images=None, log) -> VAEChain:
    classifier, accuracy = digit_classifier(images, labels, seed=seed)
    chain = VAEChain(classifier_accuracy=accuracy, run_dir=str(run_dir) if run_dir else None)
    chain.real = {"class_mix": class_mix(classifier, images).tolist()}
    chain.real["class_entropy_bits"] = entropy_bits(chain.real["class_mix"])
    chain.real["sample_pixel_std"] = pixel_spread(images)
    n = len(images)
    state = {"index": 0, "encoder": None}

    def fit(data, _rng):
        index = state["index"]
        gen_dir = runs.generation_dir(run_dir, index) if run_dir else None
        if index < n_stored:  # complete on disk: load it instead of training it again
            model, grid, metrics = _load_generation(gen_dir, index, images.shape[-1], latent_dim, channels, device)
            log(f"generation {index:2d}: loaded from the runs folder ({run_dir.name}/{gen_dir.name})")
        else:
            start = time.perf_counter()
            model, losses = train_vae(data, epochs=epochs, batch_size=batch_size, lr=lr,
                                      weight_decay=weight_decay, latent_dim=latent_dim,
                                      seed=derived_seed(seed, STREAM_TRAINING, index), device=device, channels=channels)
            grid = sample_images(model, n_grid, seed=derived_seed(seed, STREAM_GRID, index))[:, 0]
            metrics = {"generation": index, "final_loss": losses[-1], "losses": losses,
                       "kl_per_image": posterior_kl(model, data), "n_train": len(data),
                       "train_seconds": time.perf_counter() - start}
            if test_images is not None:
                held = heldout_loss(model, test_images, seed=derived_seed(seed, STREAM_TEST, index))
                metrics.update({f"test_{k}": v for k, v in held.items()})
        if state["encoder"] is None:
            state["encoder"] = model
        samples = sample_images(model, n, seed=derived_seed(seed, STREAM_SAMPLES, index))
        if "latent_mean" not in metrics:
            metrics.update(_latent_stats(state["encoder"], samples))
            mix = class_mix(classifier, samples)
            metrics.update(class_mix=mix.tolist(), class_entropy_bits=entropy_bits(mix),
                           sample_pixel_std=pixel_spread(samples))
            if gen_dir is not None:
                _save_generation(gen_dir, model, grid, metrics)
            log(f"generation {index:2d}: loss {metrics['final_loss']:.1f} (KL {metrics['kl_per_image']:.1f}), "
                f"latent mean {metrics['latent_mean']:+.3f} std {metrics['latent_std']:.3f}, "
                f"class entropy {metrics['class_entropy_bits']:.2f} bits"
                + (f", test loss {metrics['test_loss']:.1f}" if "test_loss" in metrics else "")
                + f" ({metrics['train_seconds']:.1f} s)")
        if index == 0:
            chain.real.update(_latent_stats(model, images))
        chain.metrics.append(metrics)
        chain.grids.append(grid)
        state["index"] += 1
        state["samples"] = samples
        return model

    def sample(model, n_new, _rng):
        return state["samples"][:n_new]

    for _ in generational.generational_loop(images, fit, sample, n_generations, policy, seed=seed):
        pass
    return chain


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return f"{arrays[0].shape}:{digest.hexdigest()[:16]}"


def chain_settings(images: np.ndarray, labels: np.ndarray, **settings) -> dict:
    """What names a stored chain: the settings, a fingerprint of the data, the code's format and torch."""
    return {"format": FORMAT_VERSION, "torch": torch.__version__.split("+")[0],
            "data": _fingerprint(images, labels), **settings}
