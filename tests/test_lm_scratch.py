"""The from-scratch chain of Gerstgrasser et al. (mcutils.lm.scratch): contract, resume, policies, sampler.

Uses the ``smoke`` settings (toy sizes: a generation takes about a second);
the numbers mean nothing, the mechanics are what is tested.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mcutils import generational, runs, validate
from mcutils.lm import scratch
from mcutils.lm.scratch_settings import (GPT2, LLAMA, PAPER_MODELS, PAPER_NOMINAL_PARAMETERS, ScratchSettings,
                                         paper, quick, smoke)

N_SMOKE = 3  # n_generations of the reference chains: generations 0..3 (Table 2's t = 1..4)


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        yield


def _run(runs_dir, n_generations=N_SMOKE, **overrides):
    return scratch.run_scratch_chain(smoke(**overrides), n_generations, runs_dir=runs_dir, device="cpu",
                                     progress=False, log=lambda message: None)


def _metrics_files(run_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(run_dir).glob("gen_*/metrics.json"))}


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """One uninterrupted chain per policy at T=1.0, in one runs folder (generation 0 shared)."""
    runs_dir = tmp_path_factory.mktemp("runs-reference")
    return {policy: _run(runs_dir, policy=policy) for policy in scratch.POLICIES}


# -- the runs folder ------------------------------------------------------------------

def test_runs_folder_holds_one_complete_generation_a_folder(chains):
    result = chains["replace"]
    assert result.run_dir.name == smoke().run_name
    assert [m["generation"] for m in result.metrics] == list(range(N_SMOKE + 1))
    for g in range(N_SMOKE + 1):
        folder = runs.generation_dir(result.run_dir, g)
        assert (folder / runs.METRICS).is_file()
        assert (folder / scratch.SAMPLES).is_file() == (g > 0)  # generation 0 trains on the real data
        # kept: generation 0's model (siblings adopt it) and the newest (the next generation samples from it)
        assert (folder / scratch.MODEL).is_dir() == (g in (0, N_SMOKE))
    assert not list(result.run_dir.rglob("*.tmp"))
    assert ScratchSettings.from_dict(runs.read_json(result.run_dir / scratch.SETTINGS_FILE)) == smoke()


def test_rerun_reads_back_without_training(chains, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a complete chain must not train again")

    monkeypatch.setattr(scratch, "fresh_model", refuse)
    again = _run(chains["replace"].run_dir.parent)
    assert again.metrics == chains["replace"].metrics


def test_same_settings_give_the_same_numbers(chains, tmp_path):
    again = _run(tmp_path, policy="accumulate")
    assert _metrics_files(again.run_dir) == _metrics_files(chains["accumulate"].run_dir)


def test_resume_after_a_kill_gives_identical_metrics(chains, tmp_path):
    """SIGKILL a CLI chain once generation 0 is complete; the rerun ends with the uninterrupted numbers."""
    import torch

    command = [sys.executable, "-m", "mcutils.lm.scratch", "--profile", "smoke", "--n-generations", str(N_SMOKE),
               "--runs-dir", str(tmp_path), "--device", "cpu", "--no-progress",
               "--threads", str(torch.get_num_threads())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run_dir = tmp_path / smoke().run_name
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not (runs.generation_dir(run_dir, 1) / scratch.SAMPLES).is_file() and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not runs.is_complete(run_dir, N_SMOKE), "killed too late to test"
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert _metrics_files(run_dir) == _metrics_files(chains["replace"].run_dir)


@pytest.mark.parametrize("left", ["samples only", "samples and model"])
def test_resume_inside_a_generation_reuses_what_was_saved(chains, tmp_path, monkeypatch, left):
    """A run killed inside generation 2 (after its samples, or after its model too) continues from them."""
    import shutil

    kept = scratch.run_scratch_chain(smoke(policy="accumulate"), 2, runs_dir=tmp_path, device="cpu", progress=False,
                                     keep_models=True, log=lambda message: None)
    run_dir = kept.run_dir
    (runs.generation_dir(run_dir, 2) / runs.METRICS).unlink()  # killed after generation 2's model was saved
    if left == "samples only":
        shutil.rmtree(runs.generation_dir(run_dir, 2) / scratch.MODEL)
    sampled, trained = [], []
    original_sample, original_model = scratch.ancestral_sample, scratch.fresh_model
    monkeypatch.setattr(scratch, "ancestral_sample", lambda *a, **k: sampled.append(1) or original_sample(*a, **k))
    monkeypatch.setattr(scratch, "fresh_model", lambda *a, **k: trained.append(a[2]) or original_model(*a, **k))
    resumed = _run(tmp_path, policy="accumulate")
    assert sampled == [1]  # only generation 3's set was drawn again
    assert trained == ([2, 3] if left == "samples only" else [3])
    assert resumed.metrics == chains["accumulate"].metrics


def test_a_changed_samples_file_is_refused_with_what_to_delete(chains, tmp_path):
    import shutil

    run_dir = tmp_path / chains["replace"].run_dir.name
    shutil.copytree(chains["replace"].run_dir, run_dir)
    samples = runs.generation_dir(run_dir, 1) / scratch.SAMPLES
    other = runs.generation_dir(run_dir, 2) / scratch.SAMPLES
    samples.write_bytes(other.read_bytes())
    with pytest.raises(runs.CorruptRunError, match="delete .*gen_01"):
        _run(tmp_path, n_generations=N_SMOKE + 1)


# -- the policies ---------------------------------------------------------------------

def test_each_policy_trains_on_its_mix_of_real_and_synthetic_sequences(chains):
    n = smoke().n_real_blocks
    for policy, result in chains.items():
        for g, m in enumerate(result.metrics):
            data = m["training_data"]
            by_source = {int(k): v for k, v in data["sequences_by_source"].items()}
            if g == 0:
                assert by_source == {-1: n}, policy
            elif policy == "replace":
                assert by_source == {g - 1: n}
            elif policy == "accumulate":  # every real sequence and every synthetic set so far
                assert by_source == {-1: n, **{h: n for h in range(g)}}
            elif policy == "accumulate-subsample":
                assert sum(by_source.values()) == n and set(by_source) <= set(range(-1, g))
                assert len(by_source) > 1
            else:  # replace-grown: (g + 1)·n sequences, all drawn by model g - 1
                assert by_source == {g - 1: (g + 1) * n}
                assert m["synthetic"]["n_sequences"] == (g + 1) * n
                assert result.samples(g).shape == ((g + 1) * n, smoke().block_size)
            assert data["n_tokens"] == sum(by_source.values()) * smoke().text_length
            assert data["n_real_tokens"] == by_source.get(-1, 0) * smoke().text_length


def test_accumulate_keeps_every_real_sequence_and_every_earlier_set(chains):
    result = chains["accumulate"]
    chain = scratch._ScratchChain(result.settings, result.run_dir, "cpu", False, False, lambda m: None)
    data, source = chain.training_data(3)
    real = chain.blocks["train"]
    assert np.array_equal(data[source == -1], real)
    for h in range(3):
        assert np.array_equal(data[source == h], result.samples(h + 1))


def test_generation_zero_is_shared_by_policies_and_temperatures(chains, tmp_path):
    reference = chains["replace"].run_dir
    cold = _run(reference.parent, n_generations=1, policy="accumulate", temperature=0.3)
    assert cold.run_dir != reference
    for name in (runs.METRICS, scratch.TIMING):  # copied, not recomputed: even the timing file is the same
        assert (cold.run_dir / "gen_00" / name).read_text() == (reference / "gen_00" / name).read_text()
    assert cold.metrics[1]["synthetic"]["temperature"] == 0.3
    assert chains["replace-grown"].metrics[0] == chains["replace"].metrics[0]


def test_an_unknown_policy_is_refused_naming_the_allowed_ones():
    with pytest.raises(validate.ParameterError, match="policy must be one of .*replace-grown"):
        smoke(policy="grow")
    assert generational.REPLACE_GROWN not in generational.POLICIES  # other chains iterate over POLICIES


@pytest.mark.parametrize("field, value, message", [
    ("temperature", 0.0, "temperature must be > 0"),
    ("temperature", -1.0, "temperature must be > 0"),
    ("epochs", 0, "epochs must be an integer >= 1"),
    ("family", "opt", "family must be one of"),
    ("hidden_size", 17, "hidden_size=17 must be a multiple of n_heads=2"),
])
def test_bad_settings_fail_naming_the_parameter(field, value, message):
    with pytest.raises(validate.ParameterError, match=message):
        smoke(**{field: value})


# -- the sampler ----------------------------------------------------------------------

def _toy_model(vocab_size=120, seed=0):
    settings = smoke(hidden_size=16, n_heads=2, block_size=8)
    return scratch.fresh_model(settings, scratch.Vocabulary(vocab_size, 0, 0), seed).eval()


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_the_sampler_draws_from_softmax_of_logits_over_temperature(temperature):
    """First tokens after BOS: empirical shares against softmax(logits / T), every token within 4.5 s.e.

    With 120 tokens, top-k = 50 (Hugging Face's default) would give the 70 least
    likely tokens nothing; their total share is checked as well.
    """
    import torch

    model = _toy_model()
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(5.0)  # spread the toy model's near-uniform law (T=0.3: top token 0.37)
        logits = model(input_ids=torch.zeros((1, 1), dtype=torch.long)).logits[0, -1]
    p = scratch.next_token_probabilities(logits, temperature).double().numpy()
    assert np.allclose(p, torch.softmax(logits.double() / temperature, -1).numpy())
    n = 40_000
    draws = scratch.ancestral_sample(model, n, 2, bos_token_id=0, temperature=temperature, seed_key=(0, 1),
                                     batch_size=8192)[:, 1]
    counts = np.bincount(draws, minlength=len(p))
    tolerance = 4.5 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert np.all(np.abs(counts / n - p) <= tolerance)
    tail = np.argsort(p)[:-50]
    tail_p = p[tail].sum()
    assert abs(counts[tail].sum() / n - tail_p) <= 4.5 * np.sqrt(tail_p * (1 - tail_p) / n)
    assert tail_p > 0.05 and counts[tail].sum() > 0  # the tail top-k would cut is there, and sampled


def test_two_temperatures_give_different_laws():
    import torch

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    hot, cold = (scratch.next_token_probabilities(logits, t).numpy() for t in (1.0, 0.3))
    assert cold[0] > hot[0] + 0.2 and np.isclose(hot.sum(), 1) and np.isclose(cold.sum(), 1)


def test_cached_sampling_draws_what_recomputing_the_full_context_draws():
    """The key/value cache changes no draw: a loop over the whole context with the same seeds agrees."""
    import torch

    model = _toy_model(vocab_size=30)
    key, length, n = (3, 4), 6, 16
    fast = scratch.ancestral_sample(model, n, length, bos_token_id=0, temperature=0.7, seed_key=key, batch_size=n)
    generator = torch.Generator().manual_seed(scratch._seed_of(*key, 0))
    ids = torch.zeros((n, 1), dtype=torch.long)
    with torch.no_grad():
        for _ in range(length - 1):
            probs = scratch.next_token_probabilities(model(input_ids=ids).logits[:, -1], 0.7)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
    assert np.array_equal(fast, ids.numpy())


def test_samples_depend_on_the_seed_key_only():
    model = _toy_model(vocab_size=30)
    a = scratch.ancestral_sample(model, 20, 5, bos_token_id=0, temperature=1.0, seed_key=(0, 9, 1), batch_size=8)
    import torch
    torch.manual_seed(123)  # the global generator plays no part
    b = scratch.ancestral_sample(model, 20, 5, bos_token_id=0, temperature=1.0, seed_key=(0, 9, 1), batch_size=8)
    c = scratch.ancestral_sample(model, 20, 5, bos_token_id=0, temperature=1.0, seed_key=(0, 9, 2), batch_size=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# -- models, metrics, profiles --------------------------------------------------------------

@pytest.mark.parametrize("family, cls", [(GPT2, "GPT2LMHeadModel"), (LLAMA, "LlamaForCausalLM")])
def test_both_families_build_from_their_config_with_seeded_weights(family, cls):
    import torch

    settings = smoke(family=family)
    vocabulary = scratch.Vocabulary(30, 2, 2)
    a, b, c = (scratch.fresh_model(settings, vocabulary, g) for g in (0, 0, 1))
    assert type(a).__name__ == cls
    assert a.config.hidden_size == settings.hidden_size and a.config.num_hidden_layers == settings.n_layers
    same = all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    assert same and not other
    assert a(input_ids=torch.zeros((2, 3), dtype=torch.long)).logits.shape == (2, 3, 30)


def test_a_llama_chain_runs(tmp_path):
    result = _run(tmp_path, n_generations=1, family=LLAMA)
    assert result.run_dir.name.startswith("scratch-llama-")
    assert np.all(np.isfinite(result.series("test_cross_entropy")))


@pytest.mark.parametrize("name", list(PAPER_MODELS))
def test_the_paper_models_have_their_nominal_sizes(name):
    settings = paper(name)
    vocab_size = 50257 if settings.family == GPT2 else 32000  # GPT-2's and Llama-2's tokenizers
    count = scratch.n_parameters(settings, vocab_size)
    assert abs(count / PAPER_NOMINAL_PARAMETERS[name] - 1) <= 0.1, count


def test_the_source_scores_its_own_data_at_its_cross_entropy(chains):
    """The real data's true cross-entropy (per token) is near the source's on the test split, and both
    are above the entropy rate (a sequence's first words leave the topic uncertain)."""
    m0 = chains["replace"].metrics[0]
    assert abs(m0["real_data"]["true_cross_entropy"] - m0["source_test_cross_entropy"]) < 0.3
    assert m0["source_test_cross_entropy"] >= m0["source_entropy_rate"] - 0.05
    synthetic = chains["replace"].metrics[1]["synthetic"]
    assert synthetic["true_cross_entropy"]["mean"] > 0 and 0 <= synthetic["tail"]["rare_word_survival"] <= 1


def test_source_log_probs_sum_to_the_exact_sequence_likelihood():
    """Over every sequence of 3 words of a tiny language, exp(sum of log p) sums to 1."""
    import itertools

    from mcutils.lm.language import N_SPECIAL, LanguageSpec, SyntheticLanguage

    language = SyntheticLanguage(LanguageSpec(n_words=18, n_topics=2, topic_words=2))
    words = range(N_SPECIAL, N_SPECIAL + 18)
    blocks = np.array([[2, *w] for w in itertools.product(words, repeat=3)])
    total = np.exp(scratch.source_token_log_probs(language, blocks).sum(axis=1)).sum()
    assert abs(total - 1) < 1e-9


# -- parallel chains, the chapter, the command line --------------------------------------------

def test_parallel_chains_give_the_serial_numbers(chains, tmp_path):
    import torch

    pairs = [(smoke(policy="replace"), 2), (smoke(policy="replace-grown"), 2)]
    results = scratch.run_scratch_chains(pairs, jobs=2, runs_dir=tmp_path, device="cpu")
    assert torch.get_num_threads() >= 1
    for result, policy in zip(results, ("replace", "replace-grown")):
        assert result.metrics == chains[policy].metrics[:3]


def test_chapter_chains_are_table_2s_layout():
    pairs = scratch.chapter_chains("quick")
    described = [(s.policy, s.temperature, n) for s, n in pairs]
    assert described == [("replace", 1.0, 9), ("accumulate", 1.0, 3), ("accumulate-subsample", 1.0, 3),
                         ("replace-grown", 1.0, 3), ("replace", 0.3, 3), ("accumulate", 0.3, 3)]
    assert len({runs.settings_hash(s.generation0_settings()) for s, _ in pairs}) == 1  # one generation 0
    assert len({s.run_name for s, _ in pairs}) == len(pairs)


def test_the_command_line_with_no_flags_runs_the_first_chapter_chain():
    parser = scratch.build_parser()
    args = parser.parse_args([])
    settings, n_generations = scratch.chapter_chains("quick")[0]
    assert scratch.settings_from_args(args).run_name == settings.run_name == quick().run_name
    assert args.n_generations is None and n_generations == 9


def test_flags_come_from_the_settings_fields():
    args = scratch.build_parser().parse_args(["--policy", "replace-grown", "--temperature", "0.3",
                                             "--hidden-size", "64"])
    settings = scratch.settings_from_args(args)
    assert (settings.policy, settings.temperature, settings.hidden_size) == ("replace-grown", 0.3, 64)


def test_the_paper_profile_offline_fails_in_seconds_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    tick = time.monotonic()
    with pytest.raises(validate.ParameterError, match="not in the local Hugging Face cache.*quick profile"):
        scratch.run_scratch_chain(paper(), 3, runs_dir=tmp_path)
    assert time.monotonic() - tick < 5
    env = {**os.environ, "HF_HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "mcutils.lm.scratch", "--profile", "paper"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "roneneldan/TinyStories" in done.stderr and "quick profile" in done.stderr


def test_all_of_a_hub_dataset_on_the_cpu_is_refused_unless_allowed_or_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(scratch, "check_hub_for", lambda settings, timeout=1.5: "online")
    with pytest.raises(validate.ParameterError, match="train_tokens=None .* needs a GPU.*scratch_train_tokens"):
        scratch.run_scratch_chain(paper(), 3, runs_dir=tmp_path, device="cpu")
    # capped (the paper-smoke profile): the guard lets it through, to the loader (which finds no such folder)
    with pytest.raises(Exception) as caught:
        scratch.run_scratch_chain(paper().replace(train_tokens=4088, dataset=str(tmp_path / "no-such-folder")), 3,
                                  runs_dir=tmp_path, device="cpu", progress=False)
    assert "needs a GPU" not in str(caught.value)


def test_a_local_text_dataset_takes_the_hub_datasets_path(tmp_path):
    """A folder with train / validation text files and a tokenizer folder: load_dataset as for TinyStories."""
    from mcutils.lm.language import LanguageSpec, SyntheticLanguage

    language = SyntheticLanguage(LanguageSpec(n_words=24, n_topics=2, topic_words=4))
    data = tmp_path / "stories"
    data.mkdir()
    for split, seed in (("train", 1), ("validation", 2)):
        (data / f"{split}.txt").write_text("\n".join(language.sample_text(1200, seed=seed, words_per_line=20)))
    language.tokenizer().save_pretrained(tmp_path / "tokenizer")
    settings = smoke(dataset=str(data), tokenizer=str(tmp_path / "tokenizer"), train_tokens=None, eval_tokens=160,
                     language=language.spec)
    assert "language" not in settings.result_settings()  # a real dataset: the synthetic language plays no part
    result = scratch.run_scratch_chain(settings, 1, runs_dir=tmp_path / "runs", device="cpu", progress=False,
                                       allow_cpu=True, log=lambda message: None)
    m0, m1 = result.metrics
    # every story is followed by EOS (= BOS here): 60 lines of 20 words + 60 EOS, cut into 8-token pieces
    assert m0["real_data"]["n_sequences"] == (60 * 21) // settings.text_length
    assert "source_test_cross_entropy" not in m0 and m1["synthetic"]["n_sequences"] == m0["real_data"]["n_sequences"]
    train = scratch._ScratchChain(settings, result.run_dir, "cpu", False, False, lambda m: None).blocks["train"]
    assert np.all(train[:, 0] == 2) and np.isfinite(m1["test_cross_entropy"])


def test_the_chapters_key_numbers_are_table_2s_cells_of_its_chains(tmp_path):
    """chapter_numbers reads the right generation of the right chain (chains made up, nothing trained)."""
    pairs = scratch.chapter_chains("smoke")

    def made_up(k, st, n):
        metrics = [{"test_cross_entropy": 2.0 + 0.1 * g + 0.01 * k} for g in range(n + 1)]
        metrics[0].update(test_cross_entropy=2.0, source_test_cross_entropy=1.6, n_parameters=1000,
                          real_data={"true_cross_entropy": 1.5})
        metrics[1]["synthetic"] = {"true_cross_entropy": {"mean": 1.8, "non_word_token_share": 0.001,
                                                          "non_word_share": 0.01}}
        return scratch.ScratchResult(tmp_path / str(k), st, metrics)

    results = [made_up(k, st, n) for k, (st, n) in enumerate(pairs)]
    numbers = scratch.chapter_numbers(results)
    by_key = scratch.chapter_runs(results)
    assert set(by_key) == {(p, 1.0) for p in scratch.POLICIES} | {("replace", 0.3), ("accumulate", 0.3)}
    assert numbers["scratch_loss_t1"][0] == 2.0
    assert numbers["scratch_loss_t10_replace_T1"][0] == by_key[("replace", 1.0)].metrics[9]["test_cross_entropy"]
    for key, r in by_key.items():
        assert numbers[f"scratch_loss_t4_{key[0]}_T{key[1]:g}"][0] == r.metrics[3]["test_cross_entropy"]
    assert "scratch_loss_t10_accumulate_T1" not in numbers  # accumulate runs to t = 4 only
    assert numbers["scratch_gen0_excess_over_source"][0] == 2.0 / 1.6
    assert numbers["scratch_gen0_samples_true_ratio"][0] == 1.8 / 1.5


def test_a_cap_on_a_real_dataset_smaller_than_one_batch_fails_when_the_settings_are_made():
    """Before any download or training: the capped training set must fill one batch."""
    with pytest.raises(validate.ParameterError, match=r"train_tokens=4088 makes at most 8 sequences.*batch_size=128"):
        paper().replace(train_tokens=4088)
    assert paper().replace(train_tokens=4088, batch_size=8).batch_size == 8
