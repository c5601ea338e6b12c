"""A damaged or tampered model folder is one clear error naming the file, and nothing in it is ever executed."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from conftest import build_tiny

from mmdialog.errors import CheckpointError
from mmdialog.model import MultimodalDialogueModel


class _Payload:
    """Pickled, it would create `marker` when unpickled: the attack a .bin / .pt checkpoint allows."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    build_tiny().save_pretrained(folder)
    return folder


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    target.mkdir()
    for item in saved.rglob("*"):
        if item.is_file():
            (target / item.relative_to(saved)).parent.mkdir(parents=True, exist_ok=True)
            (target / item.relative_to(saved)).write_bytes(item.read_bytes())
    return target


@pytest.mark.parametrize("damage", ["truncated", "zeros", "empty"])
def test_a_damaged_weights_file_is_named(saved: Path, tmp_path: Path, damage: str) -> None:
    folder = _copy(saved, tmp_path)
    weights = folder / "fusion.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "zeros": bytes(200), "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="fusion.safetensors"):
        MultimodalDialogueModel.from_pretrained(folder)


def test_a_broken_config_is_named(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    (folder / "config.json").write_text('{"format": ')
    with pytest.raises(CheckpointError, match="config.json"):
        MultimodalDialogueModel.from_pretrained(folder)


def test_a_pickle_put_in_place_of_weights_is_never_unpickled(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    marker = tmp_path / "ran"
    (folder / "fusion.bin").write_bytes(pickle.dumps(_Payload(marker)))
    manifest = json.loads((folder / "config.json").read_text())
    manifest["files"]["fusion"] = "fusion.bin"
    (folder / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="fusion.bin"):
        MultimodalDialogueModel.from_pretrained(folder)
    assert not marker.exists()
