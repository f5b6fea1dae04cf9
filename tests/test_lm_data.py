"""Blocks: cutting, Arrow storage, and the real loaders' local-folder path (mcutils.lm.data / model)."""
import numpy as np
import pytest

from mcutils.lm import data, settings
from mcutils.lm.language import SyntheticLanguage
from mcutils.validate import ParameterError


def test_cut_blocks_concatenates_and_drops_the_remainder():
    blocks = data.cut_blocks(np.arange(10), 4)
    np.testing.assert_array_equal(blocks, [[0, 1, 2, 3], [4, 5, 6, 7]])
    with pytest.raises(ParameterError, match="do not fill one block"):
        data.cut_blocks(np.arange(3), 4)


def test_tokenize_and_cut_joins_lines_before_cutting():
    lang = SyntheticLanguage(n_words=30, n_topics=2, topic_words=4)
    tok = lang.tokenizer()
    w = lang.words
    lines = [f"{w[0]} {w[1]} {w[2]}", f"{w[3]} {w[4]}", f"{w[5]} {w[6]} {w[7]} {w[8]}"]
    blocks = data.tokenize_and_cut(lines, tok, block_size=4, batch_size=2)
    np.testing.assert_array_equal(blocks, np.arange(8).reshape(2, 4) + 4)  # ids are 4 + rank


def test_arrow_round_trip_keeps_blocks_and_columns(tmp_path):
    blocks = np.random.default_rng(0).integers(0, 50_000, size=(7, 5))
    data.save_blocks(tmp_path / "b.arrow", blocks, score=np.linspace(0, 1, 7))
    np.testing.assert_array_equal(data.read_blocks(tmp_path / "b.arrow"), blocks)
    np.testing.assert_allclose(data.read_columns(tmp_path / "b.arrow")["score"], np.linspace(0, 1, 7))


def test_synthetic_splits_are_fixed_by_the_language_seed():
    s = settings.smoke()
    first, second = data.synthetic_texts(s), data.synthetic_texts(s)
    assert first == second
    assert first["train"] != first["test"]
    assert sum(len(line.split()) for line in first["train"]) == s.corpus.train_tokens


def test_real_loaders_read_local_folders_through_the_same_calls(tmp_path, monkeypatch):
    """A tiny OPT and a text dataset saved to folders load via from_pretrained / load_dataset."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from mcutils.lm import model as lm_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    lang = SyntheticLanguage(n_words=40, n_topics=2, topic_words=4)
    tok = lang.tokenizer()
    model_dir, data_dir = tmp_path / "my-opt", tmp_path / "my-text"
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=len(tok), hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=1,
                       num_attention_heads=2, ffn_dim=32, max_position_embeddings=32,
                       pad_token_id=1, bos_token_id=2, eos_token_id=2)
    OPTForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data_dir.mkdir()
    for split, seed in (("train", 1), ("validation", 2), ("test", 3)):
        lines = lang.sample_text(256 if split == "train" else 96, seed=seed, words_per_line=16)
        (data_dir / f"{split}.txt").write_text("\n".join(lines) + "\n")

    s = settings.ChainSettings(model=str(model_dir), dataset=str(data_dir), block_size=8, batch_size=8)
    assert settings.check_hub(s) == "local"
    model, tokenizer = lm_model.load_base_model(s)
    assert model.config.vocab_size == len(tokenizer) == len(tok)
    blocks = data.load_blocks(s, tokenizer)
    assert {k: v.shape for k, v in blocks.items()} == {"train": (32, 8), "validation": (12, 8), "test": (12, 8)}
    expected = data.tokenize_and_cut(lang.sample_text(256, seed=1, words_per_line=16), tok, 8)
    np.testing.assert_array_equal(blocks["train"], expected)
