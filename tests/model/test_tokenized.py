"""Data larger than memory: token ids memory-mapped from Arrow, frozen features from .npy.
Tiny random BERT, CPU."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from finetune_core.config.loading import validate_config
from finetune_core.data.labels import read_labels
from finetune_core.data.prepare import LABEL, TEXT, prepare_splits
from finetune_core.model import tokenized
from finetune_core.model.backbone import load_for_task, load_tokenizer
from finetune_core.model.batching import ArrowTokens, collate, encode
from finetune_core.model.features import FeatureSettings, cached_features, extract_features, texts_digest
from finetune_core.model.heads import head_spec
from finetune_core.training.encoded_splits import split_tokens
from tests.conftest import read_sst2
from tests.datasets import easy_sentiment


def no_autocast():
    return torch.autocast("cpu", enabled=False)


@pytest.fixture
def texts_file(tmp_path):
    texts = read_sst2("train")["sentence"].head(300).tolist()
    path = tmp_path / "train.parquet"
    pd.DataFrame({TEXT: texts, LABEL: np.arange(len(texts)) % 2}).to_parquet(path, index=False)
    return texts, path


def mapped_from(path, address: int) -> bool:
    """Whether ``address`` lies in a memory mapping of the file ``path`` (Linux)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == str(path.resolve()):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if start <= address < end:
                    return True
    return False


def test_arrow_tokens_equal_encode(tiny_backbone, texts_file, tmp_path, monkeypatch):
    texts, path = texts_file
    monkeypatch.setattr(tokenized, "READ_ROWS", 64)  # several record batches: rows cross chunk boundaries
    tokenizer = load_tokenizer(str(tiny_backbone))
    expected = encode(tokenizer, texts, 16)
    encoded = tokenized.encode_file(tokenizer, path, 16, tmp_path / "tokens")
    assert isinstance(encoded.input_ids, ArrowTokens) and len(encoded.input_ids.parts) > 1
    assert len(encoded) == len(texts) and encoded.pad_id == expected.pad_id
    assert np.array_equal(encoded.lengths, expected.lengths)
    assert [row.tolist() for row in encoded.input_ids] == expected.input_ids
    assert [encoded.input_ids[i].tolist() for i in (np.int64(63), 64, -1)] == [
        expected.input_ids[i] for i in (63, 64, -1)
    ]
    batch = [5, 64, 0, 299, 128]
    ours, theirs = collate(encoded, batch), collate(expected, batch)
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == torch.long for k in theirs)
    assert texts_digest(encoded) == texts_digest(expected)  # the feature cache key does not depend on the store
    assert np.array_equal(read_labels(path), np.arange(len(texts)) % 2)


def test_tokens_are_memory_mapped_and_cached_per_tokenizer_setting(tiny_backbone, texts_file, tmp_path):
    texts, path = texts_file
    tokenizer = load_tokenizer(str(tiny_backbone))
    identity = tokenized.tokenizer_identity(tokenizer)
    encode(tokenizer, texts[:3], 8)  # leaves truncation state on the backend: not part of the identity
    assert tokenized.tokenizer_identity(tokenizer) == identity
    heap = pa.total_allocated_bytes()
    encoded = tokenized.encode_file(tokenizer, path, 16, tmp_path / "tokens")
    assert pa.total_allocated_bytes() - heap < 1024  # the ids are not in Arrow's heap ...
    row = encoded.input_ids[10]
    assert mapped_from(next((tmp_path / "tokens").glob("*.arrow")), row.ctypes.data)  # ... but in the mapped file
    assert not row.flags.writeable
    files = sorted((tmp_path / "tokens").iterdir())
    stamp = files[0].stat().st_mtime_ns
    again = tokenized.encode_file(load_tokenizer(str(tiny_backbone)), path, 16, tmp_path / "tokens")
    assert np.array_equal(again.lengths, encoded.lengths) and files[0].stat().st_mtime_ns == stamp  # reused
    shorter = tokenized.encode_file(tokenizer, path, 8, tmp_path / "tokens")
    assert len(list((tmp_path / "tokens").iterdir())) == 2 and shorter.lengths.max() == 8


def test_split_reads_what_the_pandas_path_read(tiny_backbone, tmp_path):
    easy_sentiment(50, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(20, 1).to_csv(tmp_path / "test.csv", index=False)
    config = validate_config(
        {
            "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")},
            "backbone": {"candidates": [str(tiny_backbone)]},
        }
    )
    prepared = prepare_splits(config, tmp_path / "data")
    tokenizer = load_tokenizer(str(tiny_backbone))
    for split in ("train", "validation", "test"):
        encoded, targets = split_tokens(prepared, split, tokenizer, 16)
        frame = prepared.frame(split)
        assert [row.tolist() for row in encoded.input_ids] == encode(tokenizer, frame[TEXT].tolist(), 16).input_ids
        assert np.array_equal(targets, frame[LABEL].to_numpy()) and targets.dtype == frame[LABEL].to_numpy().dtype


def test_cached_features_are_a_memory_mapped_npy(tiny_backbone, texts_file, tmp_path):
    texts, path = texts_file
    model = load_for_task(str(tiny_backbone), "classification", ["0", "1"]).eval()
    encoded = tokenized.encode_file(load_tokenizer(str(tiny_backbone)), path, 16, tmp_path / "tokens")
    spec = head_spec(model, "mean")
    full = extract_features(model, spec, encoded, 32, "cpu", no_autocast)
    known = (np.array([0, 3, 7]), full[[0, 3, 7]] + 100.0)  # marked: these rows must come from `known`
    args = FeatureSettings(
        max_length=16,
        batch_size=32,
        device="cpu",
        autocast=no_autocast,
        precision="fp32",
        pooling="mean",
        cache_dir=tmp_path / "features",
    )
    features, hit = cached_features(model, spec, encoded, str(tiny_backbone), args, known=known)
    (cache,) = (tmp_path / "features").glob("*.npy")  # one file and its index, no scratch left behind
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == sorted(
        [cache.name, f"{cache.name}.index.json", f"{cache.name}.lock"]
    )
    assert not hit and cache.suffix == ".npy" and features.shape == full.shape
    assert mapped_from(cache, features.data_ptr())
    assert torch.equal(features[[0, 3, 7]], known[1])
    rest = np.setdiff1d(np.arange(len(texts)), [0, 3, 7])
    assert torch.allclose(features[rest], full[rest], atol=1e-6)
    assert torch.equal(features[np.array([7, 0])], known[1][[2, 0]])  # the head's batch indexing
    again, hit = cached_features(model, spec, encoded, str(tiny_backbone), args)
    assert hit and torch.equal(again, features) and mapped_from(cache, again.data_ptr())
    again[0] = 0.0  # copy-on-write: the shared cache file never changes
    assert np.array_equal(np.load(cache)[0], features[0].numpy())
