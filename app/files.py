"""The folder the app owns: what browsers upload and the replies it speaks, deleted per conversation.

Gradio stores an upload under `<root>/<sha256 of its bytes>/<name>`, so two people sending the same
picture share one file: an upload is deleted only when no open conversation still holds it, and not while
it is fresh: the same bytes may just have been uploaded again for a turn that has not claimed them yet
(a kiosk's sample picture, a replayed question). Such files are deleted by a later release.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from mmdialog.errors import InputError


class AppFiles:
    # An unheld upload written less than this long ago may be on its way to a turn: it is kept until later.
    fresh_upload_seconds = 120.0

    def __init__(self, root: str | Path | None = None):
        # A folder we made is ours to delete at shutdown; a configured one is only emptied of our files.
        self.owned = root is None
        self.root = (Path(tempfile.mkdtemp(prefix="mmdialog-app-")) if root is None else Path(root)).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._holders: dict[Path, set[str]] = {}
        self._unheld: set[Path] = set()  # released uploads still to delete
        self._lock = threading.Lock()

    def conversation_dir(self, conversation_id: str) -> Path:
        """Replies written for one conversation; inside the upload root, so Gradio serves them without a copy."""
        return self.root / "conversations" / conversation_id

    def claim(self, conversation_id: str, path: str | Path | None) -> str | None:
        """Record that a conversation holds an uploaded file; returns the path (None stays None).

        Only files in this app's folder are ever opened: a request naming anything else (another folder, a
        path that climbs out with `..`, a link) is refused here, whatever the layers in front checked."""
        if path is None:
            return None
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            raise InputError("that file was not uploaded to this app; upload it again")
        with self._lock:
            self._holders.setdefault(resolved, set()).add(conversation_id)
            self._unheld.discard(resolved)
        return str(path)

    def discard(self, path: str | Path | None) -> None:
        """Delete an upload that was never sent (a kiosk reset with a picture still waiting), unless held."""
        if path is None:
            return
        resolved = Path(path).resolve()
        with self._lock:
            if not self._holders.get(resolved) and resolved.is_relative_to(self.root):
                self._delete_upload(resolved)

    def write_wav(self, conversation_id: str, name: str, audio: np.ndarray, sample_rate: int) -> Path:
        folder = self.conversation_dir(conversation_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.wav"
        sf.write(path, audio, sample_rate, subtype="PCM_16")
        return path

    def release(self, conversation_id: str) -> None:
        """Delete a conversation's replies and every upload that no other conversation holds (once not fresh)."""
        shutil.rmtree(self.conversation_dir(conversation_id), ignore_errors=True)
        with self._lock:
            for path, holders in list(self._holders.items()):
                holders.discard(conversation_id)
                if not holders:
                    del self._holders[path]
                    self._unheld.add(path)
            deadline = time.time() - self.fresh_upload_seconds
            for path in list(self._unheld):
                with contextlib.suppress(OSError):
                    if path.exists() and path.stat().st_mtime > deadline:
                        continue
                self._unheld.discard(path)
                self._delete_upload(path)

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            shutil.rmtree(self.root / "conversations", ignore_errors=True)

    def _delete_upload(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        if path.parent.parent == self.root:  # the per-content folder Gradio made for it, once empty
            with contextlib.suppress(OSError):
                path.parent.rmdir()
