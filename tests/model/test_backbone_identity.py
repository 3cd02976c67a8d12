"""A backbone is recorded as what the configuration asked for, its hub revision and a hash of its
weights (the same on every machine), with the resolved path as a detail."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from finetune_core.config.sections import BUNDLED_BACKBONE
from finetune_core.model.backbone import backbone_identity, resolve_backbone, weights_sha256
from tests.hub_cache import REVISION, fake_hub_cache


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_bundled_backbone_is_named_as_asked_with_the_hash_of_its_weights():
    path = resolve_backbone(BUNDLED_BACKBONE)
    identity = backbone_identity(BUNDLED_BACKBONE, path)
    assert identity.label == BUNDLED_BACKBONE and "site-packages" not in identity.describe()
    assert identity.weights_sha256 == sha256(Path(path) / "model.safetensors")  # as `sha256sum` prints it
    assert identity.tags() == {
        "backbone": BUNDLED_BACKBONE,
        "backbone_path": path,
        "backbone_sha256": identity.weights_sha256,
    }


def test_a_hub_id_carries_its_cached_revision(hub_cache, tiny_backbone):
    fake_hub_cache(hub_cache, "org/tiny", {"pooling_mode_mean_tokens": True}, tiny_backbone)
    identity = backbone_identity("org/tiny", resolve_backbone("org/tiny"))
    assert identity.revision == REVISION and identity.label == f"org/tiny@{REVISION[:12]}"
    assert identity.weights_sha256 == sha256(tiny_backbone / "model.safetensors")
    assert identity.tags()["backbone_revision"] == REVISION
    assert Path(identity.tags()["backbone_path"]).name == REVISION
    uncached = backbone_identity("org/never-downloaded", "org/never-downloaded")
    assert uncached.tags() == {"backbone": "org/never-downloaded", "backbone_path": "org/never-downloaded"}


def test_several_weight_files_hash_as_their_sha256sum_listing_and_a_rewrite_is_seen(tmp_path, tiny_backbone):
    model = tmp_path / "model"
    shutil.copytree(tiny_backbone, model)
    single = weights_sha256(model)
    shard = model / "model-00002-of-00002.safetensors"
    shard.write_bytes(b"second shard")
    listing = "".join(f"{sha256(p)}  {p.name}\n" for p in sorted(model.glob("*.safetensors")))
    assert weights_sha256(model) == hashlib.sha256(listing.encode()).hexdigest() != single
    shard.write_bytes(b"second shard, retrained")
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 1_000_000))
    assert weights_sha256(model) != hashlib.sha256(listing.encode()).hexdigest()  # not a stale cached value
    assert weights_sha256(tmp_path) is None  # no weights file at all


@pytest.mark.parametrize("spec", ["./relative/model", "org/name"])
def test_the_label_is_the_spec_as_written(tmp_path, tiny_backbone, monkeypatch, spec):
    if spec.startswith("."):
        monkeypatch.chdir(tmp_path)
        shutil.copytree(tiny_backbone, tmp_path / "relative" / "model")
        identity = backbone_identity(spec, resolve_backbone(spec))
        assert identity.label == spec and identity.path == str((tmp_path / "relative" / "model").resolve())
    else:
        assert backbone_identity(spec, spec).label == spec
