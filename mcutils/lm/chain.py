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

The last model's data train no model.  With ``last_data=False`` (the
chapters', which never read them) a chain does not make them: its last
generation records its model's scores (``"samples": null``) and keeps its
model, so that a later, longer run makes those data first (the same blocks
an uninterrupted run makes) and then continues.

A complete generation is verified before it is trusted: its ``metrics.json``
carries a ``manifest`` (which generation it is; every file it needs, with
row counts and SHA-256 hashes; the hashes of the earlier samples it was
trained on; a fingerprint of the base model), and a run checks it, and that
the base model is still the one the chain started with, before any new
work.  A chain's folder is locked (``.lock``) by the process writing it.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import runs, validate
from ..runs import CorruptRunError
from . import dist
from .hub import check_hub
from .settings import (ENGINE_VERSION, TINY, ChainSettings, check_n_generations, check_precision, for_profile,
                       generation0_view, training0_view)

SETTINGS_FILE = "settings.json"
SAMPLES = "samples.arrow"          # the blocks generation NN produced (the next training data)
PER_SEQUENCE = "per_sequence.arrow"  # per-block scores of those samples
REFERENCE = "real_per_sequence.arrow"  # gen_00 only: the same scores of the real training blocks
MODEL = "model"
TRAINED = "training.json"          # inside gen_NN: written once the model is saved
TIMING = "timing.json"
BASE_MODEL = "base_model.json"     # the fingerprint of the base model the chain started with
MANIFEST = "manifest"              # key of metrics.json: what the generation holds (see verify_generations)
REAL_SOURCE = -1                   # provenance label of a real block

# Seed streams (the book's one convention: ``numpy.random.default_rng([seed, STREAM, k])``, or
# ``SeedSequence([seed, STREAM, k])`` where an int is needed).  Generation g of a chain draws from
# stream ``(seed, STREAM, g)`` only, so a resumed chain makes the same draws as an uninterrupted one.
STREAM_TRAINING_DATA = 0x9E11      # the data policy's draws: which blocks generation g trains on
STREAM_TRAINING = 0x7EA1           # the Trainer's seed for generation g (data order, dropout)


# -- reading a chain back ------------------------------------------------------------

def metric_series(metrics: list[dict], *keys) -> np.ndarray:
    """One number per generation from nested metrics dicts (NaN where a key is absent)."""
    out = []
    for m in metrics:
        value = m
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out.append(np.nan if value is None else value)
    return np.asarray(out, dtype=float)


@dataclass
class ChainResult:
    """A chain on disk: settings, one metrics dict per complete generation, and the arrays."""

    run_dir: Path
    settings: ChainSettings
    metrics: list[dict]

    @property
    def n_generations(self) -> int:
        """Refits after generation 0 (the book's one meaning of the word): ``len(metrics) - 1``."""
        return len(self.metrics) - 1

    @property
    def n_models(self) -> int:
        return len(self.metrics)

    def series(self, *keys) -> np.ndarray:
        """One number per generation, e.g. ``series("test_perplexity")`` or
        ``series("samples", "gen0_perplexity", "q50")``."""
        return metric_series(self.metrics, *keys)

    def samples(self, generation: int) -> np.ndarray:
        """The token blocks generation ``generation`` produced."""
        from .data import read_blocks
        return read_blocks(self._data_file(generation, SAMPLES))

    def per_sequence(self, generation: int) -> dict[str, np.ndarray]:
        """Per-block scores of that generation's samples: ``gen0_perplexity`` (and ``true_perplexity``)."""
        from .data import read_columns
        return read_columns(self._data_file(generation, PER_SEQUENCE))

    def _data_file(self, generation: int, name: str) -> Path:
        validate.integer("generation", generation, minimum=0, maximum=self.n_generations)
        if self.metrics[generation].get("samples") is None:
            raise validate.ParameterError(
                f"generation={generation}: the chain's last model made no data (run with last_data=False: they "
                f"would train no model); run the chain with last_data=True, or one generation further, to make them")
        return runs.generation_dir(self.run_dir, generation) / name

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
    rng = np.random.default_rng([seed, STREAM_TRAINING_DATA, generation])
    mixed = policy.next_training_set(tagged(real, REAL_SOURCE), history, rng, n=len(real))
    return mixed[:, :-1], mixed[:, -1]


def training_seed(seed: int, generation: int) -> int:
    """The Trainer's seed for generation ``generation``: an int below 2**32 (what ``set_seed`` takes) from
    ``SeedSequence([seed, STREAM_TRAINING, generation])``, so any seed in ``[0, 2**32)`` works."""
    return int(np.random.SeedSequence([seed, STREAM_TRAINING, generation]).generate_state(1)[0])


def chain_dir(settings: ChainSettings, runs_dir: str | Path | None = "", profile: str = "quick") -> Path:
    return runs.resolve_runs_dir(runs_dir, profile) / settings.run_name


def load_chain(run_dir: str | Path, n_generations: int | None = None) -> ChainResult:
    """Read a chain's complete generations, up to generation ``n_generations`` (no computation)."""
    run_dir = Path(run_dir)
    settings = ChainSettings.from_dict(runs.read_json(run_dir / SETTINGS_FILE))
    limit = n_generations
    metrics = [{k: v for k, v in m.items() if k != MANIFEST} for m in runs.load_metrics(run_dir, limit)]
    return ChainResult(run_dir, settings, metrics)


# -- verifying what is on disk ---------------------------------------------------------

def _rel(run_dir: Path, path: Path) -> str:
    return path.relative_to(run_dir).as_posix()


def _generation_files(run_dir: Path, g: int, with_data: bool = True) -> list[Path]:
    folder = runs.generation_dir(run_dir, g)
    files = [folder / SAMPLES, folder / PER_SEQUENCE] if with_data else []
    if g == 0:
        from .data import SPLITS
        files += [folder / REFERENCE] + [run_dir / "data" / f"{split}.arrow" for split in SPLITS]
        files += sorted(p for p in (folder / MODEL).rglob("*") if p.is_file())
    return files


def build_manifest(run_dir: Path, g: int, base_fingerprint: str | None, with_data: bool = True) -> dict:
    """What generation ``g`` holds: its files (rows, SHA-256), its inputs' hashes, the base model.

    ``with_data=False``: a chain's last generation that made no data (see the module's docstring).
    """
    from .data import count_rows

    files = {}
    for path in _generation_files(run_dir, g, with_data):
        entry = {"sha256": runs.file_sha256(path), "bytes": path.stat().st_size}
        if path.suffix == ".arrow":
            entry["rows"] = count_rows(path)
        files[_rel(run_dir, path)] = entry
    inputs = {_rel(run_dir, runs.generation_dir(run_dir, h) / SAMPLES):
              runs.file_sha256(runs.generation_dir(run_dir, h) / SAMPLES) for h in range(g)}
    return {"generation": g, "engine": ENGINE_VERSION, "files": files, "inputs": inputs,
            "base_model": base_fingerprint}


def _has_data(run_dir: Path, g: int) -> bool:
    """Whether complete generation ``g`` made its data (a chain's last, run with ``last_data=False``, did not)."""
    metrics = runs.read_json(runs.generation_dir(run_dir, g) / runs.METRICS)
    return metrics.get("samples") is not None


def _finished(run_dir: Path, n_models: int, last_data: bool) -> bool:
    """Whether the chain holds ``n_models`` complete generations, every one with the data it is asked for."""
    if not all(runs.is_complete(run_dir, g) for g in range(n_models)):
        return False
    try:
        return all(_has_data(run_dir, g) for g in range(n_models if last_data else n_models - 1))
    except (CorruptRunError, OSError):
        return False  # not finished: the run that follows verifies the generations and says what is wrong


def _advice(run_dir: Path, g: int) -> str:
    return runs.delete_advice(run_dir, g)


def _check_generation(run_dir: Path, g: int, n_rows: int | None, need_model: bool, hashes: dict) -> str | None:
    """What is wrong with complete generation ``g`` (None: nothing); ``hashes`` caches file hashes."""
    from .data import count_rows

    def sha(rel: str) -> str:
        if rel not in hashes:
            hashes[rel] = runs.file_sha256(run_dir / rel)
        return hashes[rel]

    folder = runs.generation_dir(run_dir, g)
    try:
        metrics = runs.read_json(folder / runs.METRICS)
    except (CorruptRunError, OSError) as exc:
        return str(exc).split(";")[0]
    if not isinstance(metrics, dict) or metrics.get("generation") != g:
        said = metrics.get("generation") if isinstance(metrics, dict) else metrics
        return f"{folder / runs.METRICS} says it is generation {said!r}, not {g} (copied from another folder?)"
    manifest = metrics.get(MANIFEST)
    if manifest is None:  # written before manifests existed: check what can be checked
        wanted = [folder / SAMPLES, folder / PER_SEQUENCE] + ([folder / REFERENCE] if g == 0 else [])
        for path in wanted:
            if not path.is_file():
                return f"{path} is missing"
            try:
                rows = count_rows(path)
            except CorruptRunError as exc:
                return str(exc).split(";")[0]
            expected = (metrics.get("samples") or {}).get("n_blocks") if path.name != REFERENCE else n_rows
            expected = expected if expected is not None else n_rows
            if expected is not None and rows != expected:
                return f"{path} holds {rows} rows, the generation recorded {expected}"
        if need_model and g == 0 and not (folder / MODEL).is_dir():
            return f"{folder / MODEL} (generation 0's model, which scores every later generation) is missing"
        return None
    if manifest.get("generation") != g:
        return f"{folder / runs.METRICS}'s manifest is generation {manifest.get('generation')!r}, not {g}"
    for rel, entry in manifest.get("files", {}).items():
        if f"/{MODEL}/" in f"/{rel}" and not need_model:
            continue
        path = run_dir / rel
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry.get("bytes", path.stat().st_size) or sha(rel) != entry.get("sha256"):
            detail = ""
            if "rows" in entry:
                try:
                    detail = f": it holds {count_rows(path)} rows, the generation recorded {entry['rows']}"
                except CorruptRunError:
                    detail = ": it is not a readable Arrow file"
            return f"{path} is not the file generation {g} wrote (its content hash differs{detail})"
    for rel, digest in manifest.get("inputs", {}).items():
        if not (run_dir / rel).is_file() or sha(rel) != digest:
            return (f"generation {g} was trained on samples that are no longer in {run_dir / rel} "
                    "(that file was replaced or is missing)")
    return None


def _recorded_rows(run_dir: Path) -> int | None:
    """The number of training blocks generation 0 recorded (None: not readable)."""
    try:
        metrics0 = runs.read_json(runs.generation_dir(run_dir, 0) / runs.METRICS)
        return int(metrics0["training_data"]["n_blocks"])
    except (CorruptRunError, OSError, KeyError, TypeError, ValueError):
        return None


def verify_generations(run_dir: str | Path, n_models: int, need_model: bool = True) -> int:
    """Check every complete generation below ``n_models`` (generations 0 .. n_models - 1); return how many there are (a prefix).

    Raises :class:`~mcutils.runs.CorruptRunError`, naming the path and what to
    delete to recompute it, when a complete generation is not what it
    recorded, or comes after a generation that is not complete.  Also checks
    the files a killed run left in the first incomplete generation.
    """
    from .data import count_rows

    run_dir = Path(run_dir)
    hashes: dict = {}

    def check(g: int) -> None:
        problem = _check_generation(run_dir, g, _recorded_rows(run_dir), need_model, hashes)
        if problem:
            raise CorruptRunError(f"{run_dir}: generation {g} is not usable: {problem}; {_advice(run_dir, g)}")

    n_done = runs.complete_generations(run_dir, n_models, check)  # the shared resume point (mcutils.runs)
    n_rows = _recorded_rows(run_dir) if n_done else None
    train = run_dir / "data" / "train.arrow"
    if n_done < n_models:  # what a killed run left of the next generation
        folder = runs.generation_dir(run_dir, n_done)
        if n_rows is None and train.is_file():
            n_rows = count_rows(train)
        samples = folder / SAMPLES
        if samples.is_file() and n_rows is not None:
            try:
                rows = count_rows(samples)
            except CorruptRunError as exc:
                raise CorruptRunError(f"{exc}".split(";")[0] + "; delete it to generate it again") from None
            if rows != n_rows:
                raise CorruptRunError(f"{samples} holds {rows} rows, not the {n_rows} this chain makes; "
                                      "delete it to generate it again")
        trained = folder / MODEL / TRAINED
        if trained.is_file():
            try:
                runs.read_json(trained)
            except CorruptRunError:
                raise CorruptRunError(f"{trained} is damaged; delete {folder / MODEL} to train it again") from None
            if not any((folder / MODEL).glob("*.safetensors")):
                raise CorruptRunError(f"{folder / MODEL} has no weights; delete it to train it again")
    return n_done


def model_fingerprint(model) -> str:
    """A SHA-256 of a model's parameters and buffers (names, dtypes, shapes, bytes), 16 hex digits."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# -- running one -----------------------------------------------------------------------

def run_chain(settings: ChainSettings | None = None, n_generations: int = 9, *, runs_dir: str | Path | None = "",
              profile: str = "quick", device: str = "auto", progress: bool = True, keep_models: bool = False,
              last_data: bool = True, log=None) -> ChainResult:
    """Run (or resume, or just read) a chain: generation 0, then ``n_generations`` more.

    ``n_generations`` counts the refits after generation 0, as everywhere in
    the book, so the chain holds ``n_generations + 1`` models; a paper's "10
    models a chain" is ``n_generations=9``.

    ``last_data=False``: the last model does not continue the training blocks
    (its data would train no model; a full beam-search pass saved); its test
    scores and Example 1 are still recorded, and a longer run later makes its
    data first, the same blocks.

    ``settings`` defaults to the ``profile``'s; ``runs_dir`` empty means
    ``runs/<profile>`` in the checkout.  Returns the chain read back from disk.
    """
    settings = settings if settings is not None else for_profile(profile)
    if not isinstance(settings, ChainSettings):
        raise validate.ParameterError(f"settings must be a ChainSettings, got {type(settings).__name__}")
    n_models = check_n_generations(n_generations) + 1
    validate.boolean("last_data", last_data)
    check_hub(settings)  # seconds, before any long import or work
    device = validate.resolve_device(device)
    check_precision(settings.precision, device)
    log = log or _default_log
    run_dir = chain_dir(settings, runs_dir, profile)
    if run_dir.parent.exists() and not run_dir.parent.is_dir():
        raise runs.RunsDirError(f"runs_dir {run_dir.parent} is a file, not a folder; pass a folder as runs_dir")
    dist.init(device)
    world = dist.rank_and_world()[1]
    if settings.batch_size % world:
        raise validate.ParameterError(
            f"batch_size={settings.batch_size} must be a multiple of the number of processes ({world})")
    _check_stored_settings(run_dir, settings)
    if dist.agree(_finished(run_dir, n_models, last_data)):
        verify_generations(run_dir, n_models, need_model=False)  # reading only: no lock, no write
        return load_chain(run_dir, n_generations)
    with ExitStack() as stack:
        def prepare():
            runs.check_writable_dir(run_dir.parent, "runs_dir")
            runs.check_writable_dir(run_dir, "the chain's folder")
            stack.enter_context(runs.writing(run_dir, "chain"))  # the lock; scratch cleared now and at the end

        _on_main(prepare)  # every process stops if the first cannot have the folder
        try:
            _write_settings(run_dir, settings)
            verify_generations(run_dir, n_models, need_model=True)
            return _Chain(settings, run_dir, device, progress, keep_models, log).run(n_models, last_data)
        except OSError as exc:
            error = runs.write_error(exc, run_dir.parent)
            if error is None:
                raise
            raise error from None


def run_chains(settings_list, n_generations: int = 9, *, jobs: int | None = None, runs_dir: str | Path | None = "",
               profile: str = "quick", device: str = "auto", last_data: bool = True, log=None) -> list[ChainResult]:
    """:func:`run_chain` for several independent chains, ``jobs`` of them at once on the CPU.

    Each chain is deterministic given its settings and the thread count, so running
    chains side by side in separate processes changes no number, only the wall time:
    on a machine with C cores and a chapter using T torch threads, ``jobs`` defaults to
    ``C // T`` (at least 1).  Chains already complete are read back without a process.
    Every job runs one chain at a time with the parent's torch thread count; the
    shared pre-trained model is built first, once, in this process.  On a GPU, or
    with one job, the chains run here one after the other.
    """
    import torch

    settings_list = list(settings_list)
    check_n_generations(n_generations)
    validate.boolean("last_data", last_data)
    resolved = validate.resolve_device(device)
    threads = torch.get_num_threads()
    if jobs is None:
        jobs = max(1, (os.cpu_count() or 1) // max(threads, 1))
    validate.positive_int("jobs", jobs)
    kwargs = dict(runs_dir=runs_dir, profile=profile, device=device, progress=False, last_data=last_data, log=log)
    pending = [k for k, st in enumerate(settings_list)
               if not _finished(chain_dir(st, runs_dir, profile), n_generations + 1, last_data)]
    if jobs == 1 or len(pending) < 2 or resolved != "cpu" or dist.rank_and_world()[1] > 1:
        return [run_chain(st, n_generations, **kwargs) for st in settings_list]
    from . import model as lm_model
    tiny = {str(lm_model.tiny_source(st, resolved)): st for st in (settings_list[k] for k in pending) if st.model == TINY}
    for st in tiny.values():
        lm_model.ensure_tiny(st, resolved, progress=False, log=log or _default_log)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or torch state
    with ProcessPoolExecutor(min(jobs, len(pending)), mp_context=context,
                             initializer=_chain_worker_init, initargs=(threads,)) as pool:
        # The longest chains first (most epochs a generation), so that no worker is left alone at the end.
        order = sorted(pending, key=lambda k: -settings_list[k].epochs)
        futures = [pool.submit(_chain_worker, settings_list[k].to_dict(), n_generations, runs_dir, profile, device,
                               last_data) for k in order]
        for future in futures:
            future.result()  # a worker's error is raised here, with its message
    return [run_chain(st, n_generations, **kwargs) for st in settings_list]  # all complete: read back


def _chain_worker_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _chain_worker(settings: dict, n_generations: int, runs_dir, profile: str, device: str, last_data: bool) -> str:
    result = run_chain(ChainSettings.from_dict(settings), n_generations, runs_dir=runs_dir, profile=profile,
                       device=device, progress=False, last_data=last_data, log=lambda message: None)
    return str(result.run_dir)


def _on_main(action) -> None:
    """Run ``action`` on the first process; a user error there is raised on every process (no hang)."""
    problem = None
    if dist.is_main():
        try:
            action()
        except validate.UserError as exc:
            problem = exc
    if not dist.agree(problem is None):
        raise problem if problem is not None else runs.RunsDirError(
            "the first process could not prepare the chain's folder (see its message)")


def _default_log(message: str) -> None:
    if dist.is_main():
        from tqdm.auto import tqdm
        tqdm.write(message)


def _check_stored_settings(run_dir: Path, settings: ChainSettings) -> bool:
    """Whether the chain's settings file exists; it must hold ``settings``."""
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        return False
    try:
        stored = runs.read_json(path)
    except CorruptRunError:
        raise CorruptRunError(f"{path} is damaged; rerun with the same settings after deleting it "
                              "(it is rewritten from them)") from None
    if stored != json.loads(json.dumps(settings.to_dict())):
        raise CorruptRunError(f"{run_dir} holds a chain with other settings ({path} differs; a hash collision "
                              "or an edited file); move the folder away or use another runs_dir")
    return True


def _write_settings(run_dir: Path, settings: ChainSettings) -> None:
    if not _check_stored_settings(run_dir, settings) and dist.is_main():
        runs.atomic_write_json(run_dir / SETTINGS_FILE, settings.to_dict())
    dist.barrier()


def _sound_siblings(run_dir: Path, view, settings: ChainSettings, base_fingerprint: str, what: str, log):
    """Sibling chains whose generation 0 is complete and verified, with ``view`` of their settings equal to ours.

    The stored settings are compared as written (fields added since then must not
    match by default); a sibling that fails verification, or started from another
    base model, is skipped with a note.
    """
    wanted = runs.settings_hash(view(settings.to_dict()))
    for other in sorted(run_dir.parent.glob(f"*/{SETTINGS_FILE}")):
        other_dir = other.parent
        if other_dir == run_dir or not runs.is_complete(other_dir, 0):
            continue
        try:
            if runs.settings_hash(view(runs.read_json(other))) != wanted:
                continue
            verify_generations(other_dir, 1, need_model=True)
            metrics = runs.read_json(runs.generation_dir(other_dir, 0) / runs.METRICS)
        except CorruptRunError as exc:
            log(f"note: not reusing {what} of {other_dir.name}: {exc}")
            continue
        theirs = (metrics.get(MANIFEST) or {}).get("base_model")
        if theirs is not None and theirs != base_fingerprint:
            log(f"note: not reusing {what} of {other_dir.name}: it started from another base model")
            continue
        yield other_dir


def _adopt_generation0(run_dir: Path, settings: ChainSettings, base_fingerprint: str, log) -> None:
    """Generation 0 does not depend on the data policy: reuse a sibling run's if one is complete and sound.

    The sibling's generation 0 is verified (files, hashes, base model) before
    it is copied, and the copy once more in its new place; a damaged one is
    skipped with a note, and generation 0 is computed here instead.
    """
    if dist.agree(runs.is_complete(run_dir, 0)) or not dist.is_main():
        dist.barrier()
        return
    for other_dir in _sound_siblings(run_dir, generation0_view, settings, base_fingerprint, "generation 0", log):
        copied_data = False
        if (other_dir / "data").is_dir() and not (run_dir / "data").exists():
            _copy_dir_atomically(other_dir / "data", run_dir / "data")
            copied_data = True
        target = runs.generation_dir(run_dir, 0)
        _copy_dir_atomically(runs.generation_dir(other_dir, 0), target)
        try:
            verify_generations(run_dir, 1, need_model=True)
        except CorruptRunError as exc:  # e.g. our own data folder differs from the sibling's
            log(f"note: not reusing generation 0 of {other_dir.name}: {exc}")
            shutil.rmtree(target)
            if copied_data:
                shutil.rmtree(run_dir / "data")
            continue
        break
    dist.barrier()


def _adopt_trained_generation0(run_dir: Path, settings: ChainSettings, base_fingerprint: str, log) -> bool:
    """Copy generation 0's fine-tuned model from a sibling chain that trained the same one; whether it did.

    Generation 0 fine-tunes the base model on the real blocks; what it then generates
    (beam width, repetition penalty, prompts) plays no part.  A sibling whose
    :func:`~mcutils.lm.settings.training0_view` matches ours, whose generation 0 is
    complete and verified, and which started from the same base model, holds the
    model this chain would train, bit for bit on the same machine and thread count
    (``tests/test_lm_chain.py`` checks it), so it is copied instead of trained again.
    Only the model and its training record are copied: this chain still generates,
    scores and records its own generation 0.
    """
    if not dist.is_main():
        return False
    what = "the generation-0 model"
    for other_dir in _sound_siblings(run_dir, training0_view, settings, base_fingerprint, what, log):
        target = runs.generation_dir(run_dir, 0) / MODEL
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_dir_atomically(runs.generation_dir(other_dir, 0) / MODEL, target)
        log(f"generation 0: the fine-tuned model of {other_dir.name} (the same training; only generation differs)")
        return True
    return False


def _copy_dir_atomically(source: Path, target: Path) -> None:
    scratch = target.parent / f".{target.name}.copy"
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(source, scratch)
    if target.exists():
        shutil.rmtree(target)
    scratch.rename(target)


class _Chain:
    """The state of one chain run; one method per step of a generation (see :meth:`generation`)."""

    def __init__(self, settings: ChainSettings, run_dir: Path, device: str, progress: bool,
                 keep_models: bool, log):
        from . import model as lm_model

        self.settings, self.run_dir, self.device = settings, run_dir, device
        self.progress, self.keep_models, self.log = progress, keep_models, log
        self.base, self.tokenizer = lm_model.load_base_model(settings, device, progress, log)
        self.base_fingerprint = self._check_base_model()
        _adopt_generation0(run_dir, settings, self.base_fingerprint, log)
        self._check_room()
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

    def _check_base_model(self) -> str:
        """The base model's fingerprint; it must be the one the chain started with."""
        fingerprint = model_fingerprint(self.base)
        path = self.run_dir / BASE_MODEL
        stored = None
        if path.is_file():
            stored = runs.read_json(path).get("fingerprint")
        elif runs.is_complete(self.run_dir, 0):
            stored = (runs.read_json(runs.generation_dir(self.run_dir, 0) / runs.METRICS).get(MANIFEST)
                      or {}).get("base_model")
        if stored is not None and stored != fingerprint:
            from . import model as lm_model

            model, restore = self.settings.model, "Restore that model"
            where = repr(model)
            if model == TINY:
                where = f"the tiny model ({lm_model.tiny_source(self.settings, self.device)})"
                if lm_model.shipped_dir(self.settings) is not None:  # a chain begun from one pre-trained here
                    restore = (f"Set {lm_model.BUILD_ENV}=1 to use the tiny model pre-trained on this machine, "
                               "as before mcutils shipped one")
            raise CorruptRunError(
                f"{self.run_dir} was started from another base model than {where} is now (fingerprint {stored}, "
                f"now {fingerprint}); its generations would not continue the same chain. {restore}, "
                f"or delete {self.run_dir} to start the chain again")
        if not path.is_file() and dist.is_main():
            runs.atomic_write_json(path, {"model": self.settings.model, "fingerprint": fingerprint})
        dist.barrier()
        return fingerprint

    def _check_room(self) -> None:
        """Before training: room for two models (this generation's and generation 0's) and their data."""
        if not dist.is_main():
            return
        n_bytes = sum(p.numel() * p.element_size() for p in self.base.parameters())
        runs.check_writable_dir(self.run_dir, "the chain's folder", min_free_bytes=room_needed(n_bytes))

    # -- data --------------------------------------------------------------------------
    def _real_blocks(self) -> dict[str, np.ndarray]:
        from .data import SPLITS, load_blocks, read_blocks, save_blocks

        folder = self.run_dir / "data"
        if not dist.agree(all((folder / f"{split}.arrow").is_file() for split in SPLITS)) and dist.is_main():
            blocks = load_blocks(self.settings, self.tokenizer)
            for split in SPLITS:
                save_blocks(folder / f"{split}.arrow", blocks[split])
        dist.barrier()
        return {split: read_blocks(folder / f"{split}.arrow") for split in SPLITS}

    def _check_sizes(self) -> None:
        from .generate import check_lengths

        n_train = len(self.blocks["train"])
        if n_train < self.settings.batch_size:
            raise validate.ParameterError(
                f"the training split has {n_train} blocks of {self.settings.block_size} tokens, fewer than one "
                f"batch of batch_size={self.settings.batch_size}")
        if self.settings.real_fraction > 0 and self.settings.n_real_kept(n_train) == 0:
            raise validate.ParameterError(
                f"real_fraction={self.settings.real_fraction} keeps no block of {n_train}; raise it")
        check_lengths(self.base, self.settings.block_size, self.settings.block_size)

    def _generated(self, generation: int) -> np.ndarray:
        from .data import read_blocks
        if generation not in self.samples:
            path = runs.generation_dir(self.run_dir, generation) / SAMPLES
            blocks = read_blocks(path)
            expected = (len(self.blocks["train"]), self.settings.block_size)
            if blocks.shape != expected:
                raise CorruptRunError(f"{path} holds {blocks.shape[0]} blocks of {blocks.shape[1]} tokens, not the "
                                      f"{expected[0]} of {expected[1]} this chain makes; "
                                      f"{_advice(self.run_dir, generation)}")
            self.samples[generation] = blocks
        return self.samples[generation]

    def training_data(self, generation: int) -> tuple[np.ndarray, np.ndarray]:
        """``(blocks, source)`` of generation ``generation``'s training set (see :func:`mix_training_data`)."""
        history = [self._generated(g) for g in range(generation)]
        return mix_training_data(self.settings.policy_object, self.settings.seed, generation, self.blocks["train"],
                                 history)

    def prompts(self, generation: int) -> np.ndarray:
        """The blocks to continue: the real ones (the paper's text), or the newest generated ones."""
        if self.settings.prompts == "original" or generation == 0:
            return self.blocks["train"]
        return self._generated(generation - 1)

    # -- one generation -------------------------------------------------------------------
    def run(self, n_models: int, last_data: bool = True) -> ChainResult:
        from tqdm.auto import tqdm

        bar = tqdm(range(n_models), desc=f"chain {self.run_dir.name}", unit="gen",
                   disable=not (self.progress and dist.is_main()))
        for generation in bar:
            wanted = last_data or generation < n_models - 1  # the last model's data train no model
            if dist.agree(runs.is_complete(self.run_dir, generation)):
                if wanted and not dist.agree(_has_data(self.run_dir, generation)):
                    self.log(_one_line(self.make_data(generation)))  # the end of a shorter run, continued
                continue
            metrics = self.generation(generation, wanted)
            self.log(_one_line(metrics))
        bar.close()
        return load_chain(self.run_dir, n_models - 1)

    def generation(self, g: int, make_data: bool = True) -> dict:
        """Generation ``g``, step by step; each step reuses what a killed run already saved.

        ``make_data=False`` (a chain's last model): no continuations of the training
        blocks unless a killed run already saved them; the model is kept to make them later.
        """
        timing: dict[str, float] = {}
        start = time.perf_counter()
        with _timed(timing, "train_s"):
            data, source = self.training_data(g)
            model, training = self.train(g, data)
        with _timed(timing, "evaluate_s"):
            evaluation = self.evaluate(model)
        samples = None
        if make_data or dist.agree((runs.generation_dir(self.run_dir, g) / SAMPLES).is_file()):
            with _timed(timing, "generate_s"):
                samples = self.regenerate(g, model)
        with _timed(timing, "score_s"):
            columns, metrics = self.score(g, model, samples, evaluation)
            metrics = {"generation": g, "training_data": _describe_training_data(data, source),
                       "training": training, **metrics}
        timing["total_s"] = time.perf_counter() - start
        self.save(g, metrics, columns, timing)
        return metrics

    def make_data(self, g: int) -> dict:
        """Complete generation ``g``'s data, which it did not make as a chain's last: its kept model continues
        every prompt block, generation 0 scores them, and ``metrics.json`` is written again with them."""
        folder = runs.generation_dir(self.run_dir, g)
        if not dist.agree((folder / MODEL / TRAINED).is_file()):
            raise CorruptRunError(f"{folder} made no data (it was a chain's last generation) and its model, which "
                                  f"would make them, is missing; {_advice(self.run_dir, g)}")
        model = _load_model(folder / MODEL)
        timing = runs.read_json(folder / TIMING)
        metrics = {k: v for k, v in runs.read_json(folder / runs.METRICS).items() if k != MANIFEST}
        start = time.perf_counter()
        with _timed(timing, "generate_s"):
            samples = self.regenerate(g, model)
        with _timed(timing, "score_s"):
            columns, metrics["samples"] = self.score_samples(g, model, samples)
        timing["total_s"] = timing.get("total_s", 0.0) + time.perf_counter() - start
        self.save(g, metrics, columns, timing)
        return metrics

    # -- the steps of a generation ---------------------------------------------------------
    def _scoring(self) -> dict:
        return dict(batch_size=self.settings.eval_batch_size, device=self.device)

    def train(self, g: int, data: np.ndarray):
        """Generation ``g``'s fine-tuned model and its training record: loaded if a killed run saved it."""
        from . import model as lm_model
        from .train import fine_tune

        folder = runs.generation_dir(self.run_dir, g)
        if g == 0 and not dist.agree((folder / MODEL / TRAINED).is_file()):
            _adopt_trained_generation0(self.run_dir, self.settings, self.base_fingerprint, self.log)
            dist.barrier()
        if dist.agree((folder / MODEL / TRAINED).is_file()):
            return _load_model(folder / MODEL), runs.read_json(folder / MODEL / TRAINED)
        settings = self.settings
        model = lm_model.fresh_copy(self.base)
        result = fine_tune(model, data, self.blocks["validation"], epochs=settings.epochs,
                           learning_rate=settings.learning_rate, min_learning_rate=settings.min_learning_rate,
                           batch_size=settings.batch_size, weight_decay=settings.weight_decay,
                           seed=training_seed(settings.seed, g), device=self.device,
                           precision=settings.precision, eval_batch_size=settings.eval_batch_size,
                           progress=self.progress, description=f"train gen {g}")
        training = result.to_dict()
        if dist.is_main():
            folder.mkdir(parents=True, exist_ok=True)
            lm_model.save_model(model, folder / MODEL)
            runs.atomic_write_json(folder / MODEL / TRAINED, training)
        dist.barrier()
        # Continue from the saved weights, so a resumed run and this one use identical numbers.
        return _load_model(folder / MODEL), training

    def evaluate(self, model) -> dict:
        """The model's losses on the real test blocks (per token) and validation blocks (per block)."""
        from .metrics import sequence_losses, token_losses

        return {"test_token_losses": token_losses(model, self.blocks["test"], **self._scoring()),
                "validation_losses": sequence_losses(model, self.blocks["validation"], **self._scoring())}

    def regenerate(self, g: int, model) -> np.ndarray:
        """The next training data: the model's beam-search continuation of every prompt block (saved at once)."""
        from .data import save_blocks
        from .generate import beam_continuations

        path = runs.generation_dir(self.run_dir, g) / SAMPLES
        if dist.agree(path.is_file()):
            return self._generated(g)
        settings = self.settings
        samples = beam_continuations(
            model, self.prompts(g), new_tokens=settings.block_size, num_beams=settings.num_beams,
            repetition_penalty=settings.repetition_penalty, batch_size=settings.generation_batch_size,
            device=self.device, progress=self.progress, description=f"generate gen {g}",
            backend=settings.beam_backend)
        if dist.is_main():
            save_blocks(path, samples)
        dist.barrier()
        self.samples[g] = samples
        return samples

    def score(self, g: int, model, samples: np.ndarray | None, evaluation: dict) -> tuple[dict | None, dict]:
        """``(per-block columns, metrics)``: the samples scored by generation 0, the model's test scores
        (no samples: no columns, and ``"samples": None``)."""
        from .generate import continue_text
        from .metrics import perplexity, perplexity_by_true_probability

        settings = self.settings
        columns, sample_metrics = self.score_samples(g, model, samples) if samples is not None else (None, None)
        test_token_losses = evaluation["test_token_losses"]
        example_prompt = self.tokenizer.decode(self.blocks["test"][0])
        metrics = {
            "test_perplexity": perplexity(test_token_losses.mean(axis=1)),
            "test_perplexity_by_true_probability": (
                perplexity_by_true_probability(test_token_losses, self.language.token_log_probs(self.blocks["test"]))
                if self.language is not None else None),
            "validation_perplexity": perplexity(evaluation["validation_losses"]),
            "samples": sample_metrics,
            "example": {"prompt": example_prompt,
                        "continuation": continue_text(model, self.tokenizer, example_prompt,
                                                      new_tokens=settings.block_size, num_beams=settings.num_beams,
                                                      repetition_penalty=settings.repetition_penalty,
                                                      device=self.device)},
        }
        if g == 0:
            metrics.update(self._generation0_extras(self._scoring()))
        return columns, metrics

    def score_samples(self, g: int, model, samples: np.ndarray) -> tuple[dict, dict]:
        """``(per-block columns, summaries)`` of generation ``g``'s samples, scored by generation 0 and the truth."""
        from .metrics import distinct_share, repeated_ngram_share, sequence_losses, summary

        scorer = model if g == 0 else self._gen0_model()
        columns = {"gen0_perplexity": np.exp(sequence_losses(scorer, samples, **self._scoring()))}
        if self.language is not None:
            columns["true_perplexity"] = self.language.sequence_perplexity(samples)
        sample_metrics = {name: summary(values) for name, values in columns.items()}
        sample_metrics["tail"] = self.tail.survival(samples)
        sample_metrics["repeated_4gram_share"] = repeated_ngram_share(samples)
        sample_metrics["distinct_share"] = distinct_share(samples)
        sample_metrics["n_blocks"] = int(len(samples))
        if self.language is not None:
            # Against the truth: does a continuation stay on its prompt's topic (the exact posterior), and
            # how many of its transitions does only the source's back-off make?
            prompt_topics = self.language.topic_of(self.prompts(g))
            sample_metrics["topic_kept"] = float(np.mean(self.language.topic_of(samples) == prompt_topics))
            sample_metrics["off_grammar_share"] = float(np.mean(self.language.off_grammar(samples, prompt_topics)))
        return columns, sample_metrics

    def save(self, g: int, metrics: dict, columns: dict | None, timing: dict) -> None:
        """Write the generation; ``metrics.json`` last, with its manifest: then the generation is complete.

        Without data (``columns`` None) the model is kept: a longer run makes them with it.
        """
        import torch

        from .data import save_table

        folder = runs.generation_dir(self.run_dir, g)
        # CPU results depend (slightly, then chaotically over generations) on the thread count
        timing = {**timing, "world_size": dist.rank_and_world()[1], "device": self.device,
                  "torch_threads": torch.get_num_threads()}
        with_data = columns is not None
        if dist.is_main():
            if with_data:
                save_table(folder / PER_SEQUENCE, _table(columns))
            runs.atomic_write_json(folder / TIMING, timing)
            manifest = build_manifest(self.run_dir, g, self.base_fingerprint, with_data)
            runs.atomic_write_json(folder / runs.METRICS, {**_jsonable(metrics), MANIFEST: manifest})  # last
            if g > 0 and with_data and not self.keep_models:
                shutil.rmtree(folder / MODEL, ignore_errors=True)
        dist.barrier()

    def _gen0_model(self):
        """Generation 0's model, which scores every generation's samples (loaded once)."""
        if self.gen0_model is None:
            self.gen0_model = _load_model(runs.generation_dir(self.run_dir, 0) / MODEL)
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
        real_data = {**{name: summary(v) for name, v in columns.items()},
                     "repeated_4gram_share": repeated_ngram_share(real), "n_blocks": int(len(real))}
        if self.language is not None:
            real_data["off_grammar_share"] = float(np.mean(self.language.off_grammar(real, self.language.topic_of(real))))
        extras = {
            "base_test_perplexity": perplexity(sequence_losses(self.base, self.blocks["test"], **score)),
            "real_data": real_data,
            "n_parameters": int(sum(p.numel() for p in self.base.parameters())),
        }
        if self.language is not None:
            extras["source_true_perplexity"] = self.language.true_perplexity
            # The source's own perplexity on the same test blocks (it too must infer each block's topic).
            extras["source_test_perplexity"] = float(np.exp(-self.language.token_log_probs(self.blocks["test"]).mean()))
            extras["pretraining"] = lm_model.info(self.settings).get("pretraining")
        return extras


@contextmanager
def _timed(timing: dict, key: str):
    """Record the seconds the block took in ``timing[key]``."""
    tick = time.perf_counter()
    try:
        yield
    finally:
        timing[key] = time.perf_counter() - tick


def _describe_training_data(data: np.ndarray, source: np.ndarray) -> dict:
    return {"n_blocks": int(len(data)), "n_real_blocks": int(np.sum(source == REAL_SOURCE)),
            "blocks_by_source": {str(k): int(v) for k, v in zip(*np.unique(source, return_counts=True))}}


def room_needed(model_bytes: int) -> int:
    """Free bytes a generation needs: two models (its own and generation 0's) and some data."""
    return 2 * int(model_bytes) + runs.MIN_FREE_BYTES


def _load_model(folder: Path):
    """A saved model; a missing or damaged folder is reported with its path (never as a hub repo id)."""
    from . import model as lm_model

    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise CorruptRunError(f"{folder} is missing or incomplete (another process deleting it, or a damaged "
                              f"copy); delete it to train it again")
    try:
        return lm_model.load_model(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CorruptRunError(f"{folder} cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}); delete it to "
                              "train it again") from None


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
             f"test ppl {m['test_perplexity']:.2f}"]
    if s is None:
        return " | ".join(parts + ["no data made (the chain's last model)"])
    parts.append(f"samples: gen-0 ppl median {s['gen0_perplexity']['q50']:.2f} (q95 {s['gen0_perplexity']['q95']:.2f})")
    if "true_perplexity" in s:
        parts.append(f"true ppl median {s['true_perplexity']['q50']:.2f}")
    from .metrics import tail_kept_text
    return " | ".join(parts + tail_kept_text(s["tail"]))
