"""Augmentation: seeded, label-preserving, train-only, balanced on request, marked and fingerprinted;
masked-LM replacements are whole words with WordPiece, byte-level BPE and SentencePiece models."""

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finetune_core.augmentation.eda import (
    augment_frame,
    augment_prepared,
    augment_text,
    random_deletion,
    random_swap,
)
from finetune_core.augmentation.masked_lm import MaskedLmReplacer
from finetune_core.config.augmentation import AugmentationConfig
from finetune_core.config.loading import validate_config
from finetune_core.data.columns import AUGMENTED
from finetune_core.data.fingerprint import data_fingerprint
from finetune_core.data.prepare import LABEL, SPLITS, TEXT, PreparedData, prepare_splits
from finetune_core.errors import ConfigError

SENTENCES = [f"the film number {i} was {'good' if i % 4 else 'bad'} and the acting felt honest" for i in range(40)]
TRAIN = pd.DataFrame({TEXT: SENTENCES, LABEL: [1 if i % 4 else 0 for i in range(40)]})


def test_swap_and_deletion_keep_words_and_never_empty():
    rng = np.random.default_rng(0)
    words = "one two three four five".split()
    assert sorted(random_swap(words, 0.4, rng)) == sorted(words)
    assert len(random_deletion(words, 1.0, rng)) == 1  # everything deleted: one word survives
    assert set(random_deletion(words, 0.5, rng)) <= set(words)


def test_uniform_copies_are_marked_labelled_like_their_source_and_seeded():
    config = AugmentationConfig(enabled=True, copies_per_example=2)
    first = augment_frame(TRAIN, config, seed=3)
    assert len(first) == 3 * len(TRAIN) and first[AUGMENTED].sum() == 2 * len(TRAIN)
    copies = first[first[AUGMENTED]]
    assert (copies[LABEL].to_numpy() == np.repeat(TRAIN[LABEL].to_numpy(), 2)).all()
    assert (copies[TEXT].to_numpy() != np.repeat(TRAIN[TEXT].to_numpy(), 2)).mean() > 0.95
    assert first.equals(augment_frame(TRAIN, config, seed=3))
    assert not first.equals(augment_frame(TRAIN, config, seed=4))


def test_balance_augments_minority_classes_up_to_the_majority():
    config = AugmentationConfig(enabled=True, balance=True)
    balanced = augment_frame(TRAIN, config, seed=0)
    assert Counter(balanced[LABEL]) == {0: 30, 1: 30}
    assert set(balanced[balanced[AUGMENTED]][LABEL]) == {0}


def test_no_enabled_operation_is_a_config_error():
    config = AugmentationConfig(enabled=True, operations={"swap": 0, "delete": 0})
    with pytest.raises(ConfigError, match="no operation is enabled"):
        augment_text("a few words here", config, np.random.default_rng(0))


def test_masked_lm_replacement_is_contextual_and_seeded(tmp_path):
    from tests.tiny_models import build_tiny_masked_lm

    model = build_tiny_masked_lm(tmp_path / "mlm", SENTENCES)
    replacer = MaskedLmReplacer(str(model), top_k=5)
    config = AugmentationConfig(
        enabled=True,
        synonyms="masked-lm",
        masked_lm=str(model),
        operations={"swap": 0, "delete": 0, "synonym": 0.3, "insert": 0.2},
    )
    texts = [augment_text(SENTENCES[1], config, np.random.default_rng(seed), replacer) for seed in range(6)]
    assert texts == [augment_text(SENTENCES[1], config, np.random.default_rng(s), replacer) for s in range(6)]
    changed = [t for t in texts if t != SENTENCES[1]]
    assert changed and all(t.replace(" ", "").isalnum() for t in changed)


def test_augmentation_touches_only_train_and_changes_the_fingerprint(tmp_path):
    path = tmp_path / "train.csv"
    TRAIN.rename(columns={TEXT: "sentence"}).to_csv(path, index=False)
    config = validate_config(
        {"data": {"train": str(path), "test": str(path)}, "augmentation": {"enabled": True, "copies_per_example": 1}}
    )
    prepared = prepare_splits(config, tmp_path / "data")
    augmented, counts = augment_prepared(config, prepared)
    for split in ("validation", "test"):
        assert augmented.paths[split] == prepared.paths[split]
        assert augmented.frame(split).equals(prepared.frame(split))
    assert augmented.rows["train"] == 2 * prepared.rows["train"] and counts["added"] == prepared.rows["train"]
    assert counts["after"] == {k: 2 * v for k, v in counts["before"].items()}
    assert augmented.fingerprint != prepared.fingerprint
    assert augmented.fingerprint == augment_prepared(config, prepared)[0].fingerprint
    assert prepared.frame("train").equals(pd.read_parquet(prepared.paths["train"]))  # the original is kept


def test_balance_needs_classification():
    with pytest.raises(ConfigError, match="augmentation.balance needs task classification"):
        validate_config(
            {"task": "regression", "data": {"train": "a.csv", "test": "b.csv"}, "augmentation": {"balance": True}}
        )


def test_the_augmented_fingerprint_streams_the_files_and_equals_the_in_memory_one(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    TRAIN.rename(columns={TEXT: "sentence"}).to_csv(path, index=False)
    config = validate_config(
        {"data": {"train": str(path), "test": str(path)}, "augmentation": {"enabled": True, "copies_per_example": 1}}
    )
    prepared = prepare_splits(config, tmp_path / "data")
    loaded = []
    real_frame = PreparedData.frame
    monkeypatch.setattr(PreparedData, "frame", lambda self, split: loaded.append(split) or real_frame(self, split))
    augmented, _ = augment_prepared(config, prepared)
    assert loaded == ["train"]  # augmenting needs train's rows; validation and test are only streamed
    monkeypatch.undo()
    frames = {split: pd.read_parquet(augmented.paths[split]) for split in SPLITS}
    assert augmented.fingerprint == data_fingerprint(frames)


# Tiny masked LMs with the two tokenizer families whose vocabulary entries are not words as written:
# byte-level BPE (RoBERTa, GPT-2: 'Ġdull') and SentencePiece/metaspace (XLM-R, ALBERT, T5: '▁dull').
CORPUS = (
    SENTENCES
    + [
        "a dull movie with a weak story and a boring plot",
        "the plot was boring but the cast was great",
        "an honest and moving drama with a great cast",
    ]
    * 5
)


def build_byte_level_bpe_mlm(directory: Path) -> Path:
    import torch
    from tokenizers import AddedToken, ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, special_tokens=specials)
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizerFast(  # as roberta-base: the mask takes the space before it
        vocab=str(directory / "vocab.json"),
        merges=str(directory / "merges.txt"),
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, special=True),
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    RobertaForMaskedLM(config).save_pretrained(directory)
    return directory


def build_sentencepiece_mlm(directory: Path) -> Path:
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    # A unigram model as SentencePiece writes one: '▁word' entries for the corpus's words, and
    # characters (with and without '▁') so any text still tokenises, at lower scores.
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    words = sorted({w for text in CORPUS for w in text.split()})
    characters = sorted({c for w in words for c in w})
    pieces = [(s, 0.0) for s in specials] + [("▁" + w, -2.0) for w in words] + [("▁", -8.0)]
    pieces += [(c, -10.0) for c in characters] + [("▁" + c, -9.0) for c in characters if "▁" + c not in dict(pieces)]
    core = Tokenizer(models.Unigram(pieces, unk_id=1))
    core.pre_tokenizer = pre_tokenizers.Metaspace()  # '▁' marks a word start, as SentencePiece does
    core.decoder = decoders.Metaspace()
    core.add_special_tokens([AddedToken(s, special=True, lstrip=s == "<mask>") for s in specials])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, special=True),
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForMaskedLM(config).save_pretrained(directory)
    return directory


MARKERS = ("Ġ", "▁")
BUILDERS = {"byte-level-bpe": build_byte_level_bpe_mlm, "sentencepiece": build_sentencepiece_mlm}


@pytest.mark.parametrize("family", BUILDERS)
def test_vocabulary_entries_are_decoded_into_whole_words(tmp_path, family):
    replacer = MaskedLmReplacer(str(BUILDERS[family](tmp_path / family)), top_k=5)
    tokenizer = replacer.tokenizer
    words = {}
    for token_id in range(len(tokenizer)):
        word = replacer.word_of(token_id)
        if word is not None:
            words[tokenizer.convert_ids_to_tokens(token_id)] = word
    assert words, "no whole-word entry at all"
    assert all(word.isalpha() and not word.startswith(MARKERS) for word in words.values())
    assert all(token[0] in MARKERS for token in words)  # only entries that start a word
    marker = "Ġ" if family == "byte-level-bpe" else "▁"
    assert replacer.word_of(tokenizer.convert_tokens_to_ids(marker + "the")) == "the"
    assert replacer.word_of(tokenizer.mask_token_id) is None


@pytest.mark.parametrize("family", BUILDERS)
def test_replacements_and_insertions_are_words_never_raw_tokens(tmp_path, family):
    replacer = MaskedLmReplacer(str(BUILDERS[family](tmp_path / family)), top_k=5)
    config = AugmentationConfig(
        enabled=True,
        synonyms="masked-lm",
        masked_lm="unused",
        operations={"swap": 0, "delete": 0, "synonym": 0.3, "insert": 0.2},
    )
    source = "a dull movie with a weak story and a boring plot"
    texts = [augment_text(source, config, np.random.default_rng(seed), replacer) for seed in range(8)]
    changed = [t for t in texts if t != source]
    assert changed  # SentencePiece entries ('▁word') used to fail isalpha: nothing was ever replaced
    assert not [t for t in changed if any(m in t for m in MARKERS)]  # byte-level BPE used to write 'Ġdull'
    assert all(w.isalpha() for t in changed for w in t.split())
    assert texts == [augment_text(source, config, np.random.default_rng(seed), replacer) for seed in range(8)]


def test_the_slots_of_one_text_go_through_the_model_in_one_batch(tmp_path):
    from finetune_core.augmentation.eda import random_insertion, synonym_replacement

    replacer = MaskedLmReplacer(str(build_byte_level_bpe_mlm(tmp_path / "bpe")), top_k=5)
    forward, calls = replacer.model.forward, []

    def counting_forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    replacer.model.forward = counting_forward
    words = "a dull movie with a weak story and a boring plot".split()
    synonym_replacement(words, 0.5, np.random.default_rng(0), replacer)
    random_insertion(words, 0.4, np.random.default_rng(0), replacer)
    assert calls == [6, 4]  # one call per text, one row per masked slot


def test_swapped_pairs_add_each_pair_reversed_with_its_label():
    from finetune_core.augmentation.pairs import with_swapped_pairs
    from finetune_core.data.columns import TEXT_PAIR

    pairs = pd.DataFrame({TEXT: ["a1", "a2"], TEXT_PAIR: ["b1", "b2"], LABEL: [0, 1]})
    both = with_swapped_pairs(pairs)
    assert both[[TEXT, TEXT_PAIR, LABEL]].values.tolist() == [
        ["a1", "b1", 0],
        ["a2", "b2", 1],
        ["b1", "a1", 0],
        ["b2", "a2", 1],
    ]
    assert both[AUGMENTED].tolist() == [False, False, True, True]


def test_swap_pairs_needs_sentence_pairs():
    with pytest.raises(ConfigError, match="data.text_pair_column"):
        validate_config({"data": {"train": "t.csv", "test": "t.csv"}, "augmentation": {"swap_pairs": True}})


def test_swap_pairs_alone_doubles_train_with_each_pair_reversed(tmp_path):
    from finetune_core.data.columns import TEXT_PAIR

    path = tmp_path / "pairs.csv"
    pairs = pd.DataFrame({"first": SENTENCES, "second": SENTENCES[::-1], LABEL: TRAIN[LABEL]})
    pairs.to_csv(path, index=False)
    data = {"train": str(path), "test": str(path), "text_column": "first", "text_pair_column": "second"}
    # EDA off: its masked-LM source is not loaded, even when named without a model
    config = validate_config({"data": data, "augmentation": {"swap_pairs": True, "synonyms": "masked-lm"}})
    prepared = prepare_splits(config, tmp_path / "data")
    augmented, counts = augment_prepared(config, prepared)
    train, both = prepared.frame("train"), augmented.frame("train")
    assert counts["added"] == len(train) and len(both) == 2 * len(train)
    swapped = both[both[AUGMENTED]].reset_index(drop=True)
    assert swapped[TEXT].equals(train[TEXT_PAIR]) and swapped[TEXT_PAIR].equals(train[TEXT])
    assert swapped[LABEL].equals(train[LABEL])
    assert augmented.frame("validation").equals(prepared.frame("validation"))  # train only
