"""Feedback from the people who use the app: thumbs up / down and suggested better answers, kept as training
data (mmdialog/feedback/export.py turns them into supervised and preference datasets).

Off unless the operator turns it on (`app.feedback`, with `app.feedback_dir`); when on, the page says so and
offers an opt-out, and nothing is kept for a conversation that opted out (what it had given is deleted).
The folder holds `feedback.jsonl`, one line per rated reply, in the training data format: the conversation up
to that reply (its pictures and recordings copied into `media/`, named by content), and
`"feedback": {"rating": "up" | "down" | null, "correction": str | null}`. Rating again or suggesting an answer
rewrites that reply's line, so the file never holds two verdicts on one reply.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

FEEDBACK_FILE = "feedback.jsonl"
MEDIA_DIR = "media"


@dataclass
class Exchange:
    """One answered turn as the person gave it (files in the upload folder) and the reply they got."""

    text: str
    image: str | None
    audio: str | None
    transcript: str | None
    reply: str
    message_index: int | None = None  # where the reply sits in the page's chat (for its thumbs)


class FeedbackStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.folder / FEEDBACK_FILE

    def save(self, conversation_key: str, exchanges: list[Exchange], index: int, rating: str | None = None,
             correction: str | None = None) -> None:
        """Keep the verdict on reply `index` (with the conversation up to it); None keeps what was said before."""
        record_id = f"{conversation_key}-{index}"
        with self._lock:
            lines = self._read()
            previous = next((r["feedback"] for r in lines if r["id"] == record_id), {})
            # rating None keeps the earlier one; "" clears it (a thumb taken back).
            feedback = {"rating": previous.get("rating") if rating is None else (rating or None),
                        "correction": correction if correction is not None else previous.get("correction")}
            record = {"id": record_id, "turns": self._turns(exchanges[: index + 1]), "feedback": feedback}
            lines = [r for r in lines if r["id"] != record_id] + [record]
            self._write(lines)

    def forget(self, conversation_key: str) -> None:
        """Delete everything kept from one conversation (it opted out), media no other line uses included."""
        with self._lock:
            lines = self._read()
            kept = [r for r in lines if not r["id"].startswith(f"{conversation_key}-")]
            if len(kept) != len(lines):
                self._write(kept)
                used = {m for r in kept for m in _media_of(r)}
                for path in (self.folder / MEDIA_DIR).glob("*"):
                    if f"{MEDIA_DIR}/{path.name}" not in used:
                        path.unlink(missing_ok=True)

    def _turns(self, exchanges: list[Exchange]) -> list[dict]:
        turns = []
        for exchange in exchanges:
            user: dict = {"role": "user", "text": exchange.text}
            if exchange.image:
                user["images"] = [self._keep(exchange.image)]
            if exchange.audio:
                user["audio"] = [{"path": self._keep(exchange.audio), "transcript": exchange.transcript}]
            turns += [user, {"role": "assistant", "text": exchange.reply}]
        return turns

    def _keep(self, upload: str) -> str:
        """A copy of an upload in the media folder (uploads are deleted with their conversation)."""
        source = Path(upload)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:24]
        name = f"{digest}{source.suffix.lower()}"
        target = self.folder / MEDIA_DIR / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return f"{MEDIA_DIR}/{name}"

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _write(self, lines: list[dict]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.folder, prefix=".feedback-", suffix=".jsonl")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        os.replace(temp, self.path)  # never half a file, even if the server dies mid-write


def _media_of(record: dict) -> list[str]:
    return [*(p for t in record["turns"] for p in t.get("images", [])),
            *(a["path"] for t in record["turns"] for a in t.get("audio", []))]
