"""The language-model chain: fine-tune, regenerate, score, repeat; one resumable call.

Shumailov et al., §4: generation 0 is the pre-trained model fine-tuned on
the real training blocks; generation ``g`` is the *pre-trained* model
fine-tuned on data made by generation ``g - 1``: the continuation, by 5-way
beam search, of every training block.  Which blocks a generation trains on
is the data policy of :mod:`mcutils.generational` (``replace``; ``replace``
keeping a fresh random 10% of the real blocks, the paper's second setting;
``accumulate`` and ``accumulate-subsample`` of Gerstgrasser et al.).

Runs folder (**contract**): ``<runs_dir>/<run name>/gen_<NN>/metrics.json``,
written atomically once generation ``NN`` is complete; the run name derives
from the settings.  Inside a generation the trained model (safetensors) and
the generated blocks (Arrow) are saved as soon as they exist, so a killed run
resumes mid-generation and ends with the same numbers as an uninterrupted
one.  Only generation 0's model is kept (it scores every later generation's
data); the others are deleted once their generation is complete.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import runs, validate
from . import dist
from .settings import ChainSettings, check_hub, for_profile, generation0_view

SETTINGS_FILE = "settings.json"
SAMPLES = "samples.arrow"          # the blocks generation NN produced (the next training data)
PER_SEQUENCE = "per_sequence.arrow"  # per-block scores of those samples
REFERENCE = "real_per_sequence.arrow"  # gen_00 only: the same scores of the real training blocks
MODEL = "model"
TRAINED = "training.json"          # inside gen_NN: written once the model is saved
TIMING = "timing.json"
REAL_SOURCE = -1                   # provenance label of a real block


# -- reading a chain back ------------------------------------------------------------

@dataclass
class ChainResult:
    """A chain on disk: settings, one metrics dict per complete generation, and the arrays."""

    run_dir: Path
    settings: ChainSettings
    metrics: list[dict]

    @property
    def n_generations(self) -> int:
        return len(self.metrics)

    def series(self, *keys) -> np.ndarray:
        """One number per generation, e.g. ``series("test_perplexity")`` or
        ``series("samples", "gen0_perplexity", "q50")``."""
        out = []
        for m in self.metrics:
            value = m
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            out.append(np.nan if value is None else value)
        return np.asarray(out, dtype=float)

    def samples(self, generation: int) -> np.ndarray:
        """The token blocks generation ``generation`` produced."""
        from .data import read_blocks
        return read_blocks(runs.generation_dir(self.run_dir, generation) / SAMPLES)

    def per_sequence(self, generation: int) -> dict[str, np.ndarray]:
        """Per-block scores of that generation's samples: ``gen0_perplexity`` (and ``true_perplexity``)."""
        from .data import read_columns
        return read_columns(runs.generation_dir(self.run_dir, generation) / PER_SEQUENCE)

    def real_per_sequence(self) -> dict[str, np.ndarray]:
        """The same per-block scores of the real training blocks (the reference histogram)."""
        from .data import read_columns
        return read_columns(runs.generation_dir(self.run_dir, 0) / REFERENCE)

    def examples(self) -> list[dict]:
        """Every generation's continuation of the fixed prompt (the paper's Example 1)."""
        return [m["example"] for m in self.metrics]


def mix_training_data(policy, seed: int, generation: int, real: np.ndarray,
                      generated: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(blocks, source)``: generation ``generation``'s training blocks and where each came from.

    ``generated[g]`` holds the blocks generation ``g`` produced; ``source``
    is ``-1`` for a real block and ``g`` for one of ``generated[g]``.  The
    policy's random draws depend only on ``(seed, generation)``, so a resumed
    chain forms the same sets.
    """
    if generation == 0:
        return real, np.full(len(real), REAL_SOURCE)
    if len(generated) < generation:
        raise ValueError(f"generation {generation} needs the samples of generations 0..{generation - 1}")
    # Provenance rides along as an extra column, so the policy's draws move it with its block.
    def tagged(blocks, source):
        return np.column_stack([blocks, np.full(len(blocks), source)])
    history = [tagged(generated[g], g) for g in range(generation)]
    rng = np.random.default_rng([seed, generation, 0x9E11])
    mixed = policy.next_training_set(tagged(real, REAL_SOURCE), history, rng, n=len(real))
    return mixed[:, :-1], mixed[:, -1]


def chain_dir(settings: ChainSettings, runs_dir: str | Path | None = "", profile: str = "quick") -> Path:
    return runs.resolve_runs_dir(runs_dir, profile) / settings.run_name


def load_chain(run_dir: str | Path, n_generations: int | None = None) -> ChainResult:
    """Read a chain's complete generations (no computation)."""
    run_dir = Path(run_dir)
    settings = ChainSettings.from_dict(runs.read_json(run_dir / SETTINGS_FILE))
    limit = None if n_generations is None else n_generations - 1
    return ChainResult(run_dir, settings, runs.load_metrics(run_dir, limit))


# -- running one -----------------------------------------------------------------------

def run_chain(settings: ChainSettings | None = None, n_generations: int = 10, *, runs_dir: str | Path | None = "",
              profile: str = "quick", device: str = "auto", progress: bool = True, keep_models: bool = False,
              log=None) -> ChainResult:
    """Run (or resume, or just read) a chain of ``n_generations`` models, generation 0 included.

    ``settings`` defaults to the ``profile``'s; ``runs_dir`` empty means
    ``runs/<profile>`` in the checkout.  Returns the chain read back from disk.
    """
    settings = settings if settings is not None else for_profile(profile)
    validate.positive_int("n_generations", n_generations)
    check_hub(settings)  # seconds, before any long import or work
    device = validate.resolve_device(device)
    log = log or _default_log
    run_dir = chain_dir(settings, runs_dir, profile)
    dist.init(device)
    world = dist.rank_and_world()[1]
    if settings.batch_size % world:
        raise validate.ParameterError(
            f"batch_size={settings.batch_size} must be a multiple of the number of processes ({world})")
    _write_settings(run_dir, settings)
    if dist.agree(all(runs.is_complete(run_dir, g) for g in range(n_generations))):
        return load_chain(run_dir, n_generations)
    _adopt_generation0(run_dir, settings)
    return _Chain(settings, run_dir, device, progress, keep_models, log).run(n_generations)


def _default_log(message: str) -> None:
    if dist.is_main():
        from tqdm.auto import tqdm
        tqdm.write(message)


def _write_settings(run_dir: Path, settings: ChainSettings) -> None:
    path = run_dir / SETTINGS_FILE
    if path.is_file():
        stored = runs.read_json(path)
        if stored != json.loads(json.dumps(settings.to_dict())):
            raise RuntimeError(f"{run_dir} holds a chain with other settings (a hash collision?); "
                               "move it away or use another runs_dir")
    elif dist.is_main():
        runs.atomic_write_json(path, settings.to_dict())
    dist.barrier()


def _adopt_generation0(run_dir: Path, settings: ChainSettings) -> None:
    """Generation 0 does not depend on the data policy: reuse a sibling run's if one is complete."""
    if dist.agree(runs.is_complete(run_dir, 0)) or not dist.is_main():
        dist.barrier()
        return
    wanted = runs.settings_hash(settings.generation0_settings())
    for other in sorted(run_dir.parent.glob(f"*/{SETTINGS_FILE}")):
        other_dir = other.parent
        if other_dir == run_dir or not runs.is_complete(other_dir, 0):
            continue
        # Compare the stored settings as written (fields added since then must not match by default).
        if runs.settings_hash(generation0_view(runs.read_json(other))) != wanted:
            continue
        for name in ("data",):
            if (other_dir / name).is_dir() and not (run_dir / name).exists():
                _copy_dir_atomically(other_dir / name, run_dir / name)
        _copy_dir_atomically(runs.generation_dir(other_dir, 0), runs.generation_dir(run_dir, 0))
        break
    dist.barrier()


def _copy_dir_atomically(source: Path, target: Path) -> None:
    scratch = target.parent / f".{target.name}.copy"
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(source, scratch)
    if target.exists():
        shutil.rmtree(target)
    scratch.rename(target)


class _Chain:
    """The state of one chain run; one method per step of a generation."""

    def __init__(self, settings: ChainSettings, run_dir: Path, device: str, progress: bool,
                 keep_models: bool, log):
        from . import model as lm_model

        self.s, self.run_dir, self.device = settings, run_dir, device
        self.progress, self.keep_models, self.log = progress, keep_models, log
        self.base, self.tokenizer = lm_model.load_base_model(settings, device, progress, log)
        self.blocks = self._real_blocks()
        self._check_sizes()
        self.language = None
        if settings.is_synthetic:
            from .language import SyntheticLanguage
            self.language = SyntheticLanguage(settings.language)
        from .metrics import TailReference
        self.tail = TailReference(self.blocks["train"], settings.rare_max_count)
        self.gen0_model = None
        self.samples: dict[int, np.ndarray] = {}

    # -- data --------------------------------------------------------------------------
    def _real_blocks(self) -> dict[str, np.ndarray]:
        from .data import SPLITS, load_blocks, read_blocks, save_blocks

        folder = self.run_dir / "data"
        if not dist.agree(all((folder / f"{split}.arrow").is_file() for split in SPLITS)) and dist.is_main():
            blocks = load_blocks(self.s, self.tokenizer)
            for split in SPLITS:
                save_blocks(folder / f"{split}.arrow", blocks[split])
        dist.barrier()
        return {split: read_blocks(folder / f"{split}.arrow") for split in SPLITS}

    def _check_sizes(self) -> None:
        from .generate import check_lengths

        n_train = len(self.blocks["train"])
        if n_train < self.s.batch_size:
            raise validate.ParameterError(
                f"the training split has {n_train} blocks of {self.s.block_size} tokens, fewer than one "
                f"batch of batch_size={self.s.batch_size}")
        if self.s.real_fraction > 0 and self.s.n_real_kept(n_train) == 0:
            raise validate.ParameterError(
                f"real_fraction={self.s.real_fraction} keeps no block of {n_train}; raise it")
        check_lengths(self.base, self.s.block_size, self.s.block_size)

    def _generated(self, generation: int) -> np.ndarray:
        from .data import read_blocks
        if generation not in self.samples:
            self.samples[generation] = read_blocks(runs.generation_dir(self.run_dir, generation) / SAMPLES)
        return self.samples[generation]

    def training_data(self, generation: int) -> tuple[np.ndarray, np.ndarray]:
        """``(blocks, source)`` of generation ``generation``'s training set (see :func:`mix_training_data`)."""
        history = [self._generated(g) for g in range(generation)]
        return mix_training_data(self.s.policy_object, self.s.seed, generation, self.blocks["train"], history)

    def prompts(self, generation: int) -> np.ndarray:
        """The blocks to continue: the real ones (the paper's text), or the newest generated ones."""
        if self.s.prompts == "original" or generation == 0:
            return self.blocks["train"]
        return self._generated(generation - 1)

    # -- one generation -------------------------------------------------------------------
    def run(self, n_generations: int) -> ChainResult:
        from tqdm.auto import tqdm

        bar = tqdm(range(n_generations), desc=f"chain {self.run_dir.name}", unit="gen",
                   disable=not (self.progress and dist.is_main()))
        for generation in bar:
            if dist.agree(runs.is_complete(self.run_dir, generation)):
                continue
            metrics = self.generation(generation)
            self.log(_one_line(metrics))
        bar.close()
        return load_chain(self.run_dir, n_generations)

    def generation(self, g: int) -> dict:
        from .data import save_blocks, save_table
        from .generate import beam_continuations, continue_text
        from .metrics import (perplexity, perplexity_by_true_probability, repeated_ngram_share,
                              sequence_losses, summary, token_losses)

        s, folder = self.s, runs.generation_dir(self.run_dir, g)
        timing: dict[str, float] = {}
        start = time.perf_counter()
        data, source = self.training_data(g)
        model, training = self._trained_model(g, data, folder)
        timing["train_s"] = time.perf_counter() - start

        tick = time.perf_counter()
        score = dict(batch_size=s.eval_batch_size, device=self.device)
        test_token_losses = token_losses(model, self.blocks["test"], **score)
        test_losses = test_token_losses.mean(axis=1)
        validation_losses = sequence_losses(model, self.blocks["validation"], **score)
        timing["evaluate_s"] = time.perf_counter() - tick

        tick = time.perf_counter()
        if dist.agree((folder / SAMPLES).is_file()):
            samples = self._generated(g)
        else:
            samples = beam_continuations(
                model, self.prompts(g), new_tokens=s.block_size, num_beams=s.num_beams,
                repetition_penalty=s.repetition_penalty, batch_size=s.generation_batch_size,
                device=self.device, progress=self.progress, description=f"generate gen {g}")
            if dist.is_main():
                save_blocks(folder / SAMPLES, samples)
            dist.barrier()
            self.samples[g] = samples
        timing["generate_s"] = time.perf_counter() - tick

        tick = time.perf_counter()
        scorer = model if g == 0 else self._gen0_model()
        columns = {"gen0_perplexity": np.exp(sequence_losses(scorer, samples, **score))}
        if self.language is not None:
            columns["true_perplexity"] = self.language.sequence_perplexity(samples)
        sample_metrics = {name: summary(values) for name, values in columns.items()}
        sample_metrics["tail"] = self.tail.survival(samples)
        sample_metrics["repeated_4gram_share"] = repeated_ngram_share(samples)
        sample_metrics["n_blocks"] = int(len(samples))

        example_prompt = self.tokenizer.decode(self.blocks["test"][0])
        metrics = {
            "generation": g,
            "training_data": {"n_blocks": int(len(data)), "n_real_blocks": int(np.sum(source == REAL_SOURCE)),
                              "blocks_by_source": {str(k): int(v) for k, v in zip(*np.unique(source, return_counts=True))}},
            "training": training,
            "test_perplexity": perplexity(test_losses),
            "test_perplexity_by_true_probability": (
                perplexity_by_true_probability(test_token_losses, self.language.token_log_probs(self.blocks["test"]))
                if self.language is not None else None),
            "validation_perplexity": perplexity(validation_losses),
            "samples": sample_metrics,
            "example": {"prompt": example_prompt,
                        "continuation": continue_text(model, self.tokenizer, example_prompt,
                                                      new_tokens=s.block_size, num_beams=s.num_beams,
                                                      repetition_penalty=s.repetition_penalty,
                                                      device=self.device)},
        }
        if g == 0:
            metrics.update(self._generation0_extras(score))
        timing["score_s"] = time.perf_counter() - tick
        timing["total_s"] = time.perf_counter() - start
        import torch
        # CPU results depend (slightly, then chaotically over generations) on the thread count
        timing.update(world_size=dist.rank_and_world()[1], device=self.device, torch_threads=torch.get_num_threads())

        if dist.is_main():
            save_table(folder / PER_SEQUENCE, _table(columns))
            runs.atomic_write_json(folder / TIMING, timing)
            runs.atomic_write_json(folder / runs.METRICS, _jsonable(metrics))  # last: the generation is complete
            if g > 0 and not self.keep_models:
                shutil.rmtree(folder / MODEL, ignore_errors=True)
        dist.barrier()
        return metrics

    def _trained_model(self, g: int, data: np.ndarray, folder: Path):
        """Generation ``g``'s fine-tuned model: loaded if a killed run saved it, else trained now."""
        from . import model as lm_model
        from .train import fine_tune

        if dist.agree((folder / MODEL / TRAINED).is_file()):
            return (lm_model.load_model(folder / MODEL),
                    runs.read_json(folder / MODEL / TRAINED))
        model = lm_model.fresh_copy(self.base)
        result = fine_tune(model, data, self.blocks["validation"], epochs=self.s.epochs,
                           learning_rate=self.s.learning_rate, min_learning_rate=self.s.min_learning_rate,
                           batch_size=self.s.batch_size, weight_decay=self.s.weight_decay,
                           seed=self.s.seed * 1000 + g, device=self.device, precision=self.s.precision,
                           eval_batch_size=self.s.eval_batch_size, progress=self.progress,
                           description=f"train gen {g}")
        training = result.to_dict()
        if dist.is_main():
            folder.mkdir(parents=True, exist_ok=True)
            lm_model.save_model(model, folder / MODEL)
            runs.atomic_write_json(folder / MODEL / TRAINED, training)
        dist.barrier()
        # Continue from the saved weights, so a resumed run and this one use identical numbers.
        model = lm_model.load_model(folder / MODEL)
        return model, training

    def _gen0_model(self):
        from . import model as lm_model
        if self.gen0_model is None:
            self.gen0_model = lm_model.load_model(runs.generation_dir(self.run_dir, 0) / MODEL)
        return self.gen0_model

    def _generation0_extras(self, score: dict) -> dict:
        """Generation 0 also records the zero-shot model and the real data's own scores."""
        from . import model as lm_model
        from .data import save_table
        from .metrics import perplexity, repeated_ngram_share, sequence_losses, summary

        real = self.blocks["train"]
        scorer = self._gen0_model()
        columns = {"gen0_perplexity": np.exp(sequence_losses(scorer, real, **score))}
        if self.language is not None:
            columns["true_perplexity"] = self.language.sequence_perplexity(real)
        if dist.is_main():
            save_table(runs.generation_dir(self.run_dir, 0) / REFERENCE, _table(columns))
        extras = {
            "base_test_perplexity": perplexity(sequence_losses(self.base, self.blocks["test"], **score)),
            "real_data": {**{name: summary(v) for name, v in columns.items()},
                          "repeated_4gram_share": repeated_ngram_share(real), "n_blocks": int(len(real))},
            "n_parameters": int(sum(p.numel() for p in self.base.parameters())),
        }
        if self.language is not None:
            extras["source_true_perplexity"] = self.language.true_perplexity
            extras["pretraining"] = lm_model.info(self.s).get("pretraining")
        return extras


def _table(columns: dict):
    import pyarrow as pa
    return pa.table({name: pa.array(np.asarray(v, dtype=np.float64)) for name, v in columns.items()})


def _jsonable(value):
    """Floats rounded-trip safe; NaN/inf become None so the file is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _one_line(m: dict) -> str:
    s = m["samples"]
    parts = [f"gen {m['generation']:02d}",
             f"train {m['training_data']['n_blocks']} blocks ({m['training_data']['n_real_blocks']} real)",
             f"best epoch {m['training']['best_epoch']}",
             f"test ppl {m['test_perplexity']:.2f}",
             f"samples: gen-0 ppl median {s['gen0_perplexity']['q50']:.2f} (q95 {s['gen0_perplexity']['q95']:.2f})"]
    if "true_perplexity" in s:
        parts.append(f"true ppl median {s['true_perplexity']['q50']:.2f}")
    parts.append(f"rare words kept {s['tail']['rare_word_survival']:.0%}")
    return " | ".join(parts)
