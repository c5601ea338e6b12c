"""`mmdialog chat`: one turn from the command line (with --json for scripts), or a terminal conversation."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import soundfile as sf

from mmdialog.pipeline import DialoguePipeline
from mmdialog.session import Reply, Session

HELP = """Type a message and press Enter. Commands:
  /image PATH   show a picture with your next message
  /audio PATH   send a recording (with the picture, if one is waiting)
  /reset        start a new conversation
  /save PATH    save the conversation as JSON
  /quit         leave"""


def save_reply_audio(reply: Reply, folder: Path, name: str) -> Path | None:
    if reply.audio is None or not len(reply.audio):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.wav"
    sf.write(path, reply.audio, reply.sample_rate, subtype="PCM_16")
    return path


def reply_json(reply: Reply, audio_path: Path | None) -> str:
    return json.dumps({"reply": reply.text, "transcript": reply.transcript,
                       "audio_path": str(audio_path) if audio_path else None,
                       "timings_ms": reply.timings_ms, "error": reply.error})


def default_audio_folder() -> Path:
    return Path(tempfile.gettempdir()) / "mmdialog-replies"


def one_turn(pipeline: DialoguePipeline, text: str | None, image: str | None, audio: str | None,
             audio_folder: Path) -> tuple[Reply, Path | None]:
    session = pipeline.new_session()
    reply = pipeline.respond(session, text=text, image=image, audio=audio)
    return reply, save_reply_audio(reply, audio_folder, f"reply-{session.id}")


def _save_conversation(session: Session, path: str) -> None:
    turns = [{"role": t.role, "text": t.text} for t in session.history]
    Path(path).write_text(json.dumps({"session": session.id, "turns": turns}, indent=2), encoding="utf-8")


def repl(pipeline: DialoguePipeline, audio_folder: Path, read=input, write=print) -> None:
    """The interactive loop; `read` / `write` are swappable so tests can drive it."""
    session, image, count = pipeline.new_session(), None, 0
    write(HELP)
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            return
        if not line:
            continue
        command, _, argument = line.partition(" ")
        audio = None
        if command == "/quit":
            return
        if command == "/reset":
            session.reset()
            image = None
            write("(new conversation)")
            continue
        if command == "/save":
            _save_conversation(session, argument or f"conversation-{session.id}.json")
            write(f"(saved to {argument or f'conversation-{session.id}.json'})")
            continue
        if command == "/image":
            image = argument
            write(f"(picture {Path(argument).name} goes with your next message)")
            continue
        if command == "/audio":
            audio, line = argument, None
        reply = pipeline.respond(session, text=line, image=image, audio=audio)
        image = None
        count += 1
        if reply.transcript:
            write(f"(heard: {reply.transcript})")
        saved = save_reply_audio(reply, audio_folder, f"reply-{session.id}-{count}")
        timing = reply.timings_ms.get("ttfa") or reply.timings_ms.get("total")
        write(f"assistant> {reply.text}" + (f"   [{saved.name}, first audio {timing:.0f} ms]" if saved else ""))
