"""The folder the app owns: what browsers upload and the replies it speaks, deleted per conversation.

Gradio stores an upload under `<root>/<sha256 of its bytes>/<name>`, so two people sending the same
picture share one file: an upload is deleted only when no open conversation still holds it. And not if the
same bytes were uploaded again since it was last claimed (a kiosk's sample picture, a replayed question):
that upload is on its way to a turn that has not claimed it yet; a later release deletes it once stale.
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
    # An upload uploaded again after its last claim is kept this long after that upload, for its turn.
    fresh_upload_seconds = 120.0

    def __init__(self, root: str | Path | None = None):
        # A folder we made is ours to delete at shutdown; a configured one is only emptied of our files.
        self.owned = root is None
        self.root = (Path(tempfile.mkdtemp(prefix="mmdialog-app-")) if root is None else Path(root)).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._holders: dict[Path, set[str]] = {}
        self._claimed_at: dict[Path, float] = {}  # when each held upload was last claimed
        self._unheld: set[Path] = set()  # released uploads uploaded again since: deleted once stale
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
            self._claimed_at[resolved] = time.time()
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
        """Delete a conversation's replies and every upload that no other conversation holds (see above)."""
        shutil.rmtree(self.conversation_dir(conversation_id), ignore_errors=True)
        with self._lock:
            for path, holders in list(self._holders.items()):
                holders.discard(conversation_id)
                if not holders:
                    del self._holders[path]
                    if _modified(path) > self._claimed_at.pop(path, 0.0):
                        self._unheld.add(path)
                    else:
                        self._delete_upload(path)
            stale = time.time() - self.fresh_upload_seconds
            for path in [p for p in self._unheld if _modified(p) < stale]:
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


def _modified(path: Path) -> float:
    """The file's modification time; 0 when it is gone (nothing left to keep)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
