"""The app's upload folder: a released upload is deleted at once, unless the same bytes were uploaded again
for a turn that has not claimed them yet (a shared picture, a replayed question)."""

from __future__ import annotations

import os
import time

import pytest

from app.files import AppFiles
from mmdialog.errors import InputError


def upload(files: AppFiles, name: str = "picture.png", content: bytes = b"same bytes") -> str:
    path = files.root / "3f2a" / name  # Gradio's layout: a folder per content hash
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return str(path)


def test_release_deletes_at_once_but_spares_a_fresh_upload_of_the_same_bytes(tmp_path):
    files = AppFiles(tmp_path / "uploads")
    first = files.claim("a", upload(files))
    files.release("a")
    assert not os.path.exists(first)

    shared = files.claim("b", upload(files))
    time.sleep(0.01)
    upload(files)  # someone else uploads the same picture; their turn has not claimed it yet
    files.release("b")
    assert os.path.exists(shared), "the new upload was deleted before its turn"
    files.claim("c", shared)
    files.fresh_upload_seconds = 0.0
    files.release("c")
    assert not os.path.exists(shared)


def test_only_the_app_s_own_uploads_are_claimed(tmp_path):
    files = AppFiles(tmp_path / "uploads")
    (tmp_path / "elsewhere.png").write_bytes(b"x")
    for outside in (tmp_path / "elsewhere.png", files.root / ".." / "elsewhere.png", files.root, "https://x.org/a.png"):
        with pytest.raises(InputError, match="not uploaded to this app"):
            files.claim("a", str(outside))
