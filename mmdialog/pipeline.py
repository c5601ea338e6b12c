"""DialoguePipeline: listen, look, answer, speak; streaming, with a time for every stage.

One turn: decode the audio and check it is not silence; one Whisper pass gives the transcript and the
speech features; the image's features come from the session's cache or the vision tower; the dialogue
format builds the decoder's input; tokens stream out, and each finished sentence is spoken while the
next is still being written, so the first sound comes long before the reply is complete.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from decoders.tts.base import Speech
from decoders.tts.text import split_sentences
from encoders.audio_io import AudioInput, load_audio
from encoders.image_io import ImageInput, load_image
from mmdialog.config import load_config
from mmdialog.device import configure_threads, inference_context, resolve_device
from mmdialog.dialogue import Media, Turn, build_model_input, with_markers
from mmdialog.errors import InputError
from mmdialog.inputs import check_audio_length, check_upload, clean_text, is_silence
from mmdialog.session import Event, Reply, Session, content_key
from mmdialog.settings import MmdialogConfig, SpeechMode
from mmdialog.turn_log import log_turn

log = logging.getLogger("mmdialog.pipeline")

NOT_HEARD = "Sorry, I didn't catch that. Could you say it again?"
SOMETHING_WRONG = "Sorry, something went wrong with that turn. Please try again."


class StageClock:
    """Stage timings in milliseconds, measured from the start of the turn."""

    def __init__(self):
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}

    def since(self, start: float) -> float:
        return (time.perf_counter() - start) * 1000.0

    def stage(self, name: str, start: float) -> None:
        self.timings[name] = round(self.since(start), 2)

    def mark(self, name: str) -> None:
        self.timings.setdefault(name, round(self.since(self.start), 2))


class DialoguePipeline:
    def __init__(self, model, speech_out: Speech | None, config: MmdialogConfig):
        self.model = model.eval()
        self.speech_out = speech_out
        self.config = config
        self.device = model.device

    @classmethod
    def from_config(cls, config: str | Path | None = None, overrides: Sequence[str] = ()) -> DialoguePipeline:
        from decoders.tts.factory import build_synthesizer
        from mmdialog.loading import load_model

        cfg = load_config(config, list(overrides))
        configure_threads(cfg.runtime)
        device = resolve_device(cfg.runtime)
        model = load_model(cfg, overrides).to(device)
        speech_out = build_synthesizer(cfg.tts, str(device))
        return cls(model, speech_out if speech_out.backend is not None else None, model.config)

    def new_session(self) -> Session:
        return Session()

    # ---- one turn -------------------------------------------------------------------------------------

    def respond(self, session: Session, text: str | None = None, image: ImageInput | None = None,
                audio: AudioInput | None = None, **generation) -> Reply:
        """The whole turn at once: the reply's text, transcript, audio and timings."""
        chunks, reply = [], None
        for event in self.stream(session, text=text, image=image, audio=audio, **generation):
            if event.kind == "audio":
                chunks.append(event.audio)
            elif event.kind in ("done", "error"):
                reply = event.reply
        assert reply is not None
        if chunks and self.speech_out is not None:
            reply.audio, reply.sample_rate = np.concatenate(chunks), self.speech_out.sample_rate
        return reply

    def stream(self, session: Session, text: str | None = None, image: ImageInput | None = None,
               audio: AudioInput | None = None, interrupt: threading.Event | None = None,
               **generation) -> Iterator[Event]:
        """Events of one turn; bad input ends in an `error` event and leaves the session as it was.
        Every turn, however it ends (even abandoned by the caller), writes one line to the turn log.
        Once `interrupt` is set (the person spoke over the reply), nothing more is written or spoken: the turn
        ends with what it had, and the reply is marked interrupted."""
        with session.lock:
            clock = StageClock()
            session.turns += 1
            outcome, error_class, reply_text = "abandoned", None, None
            try:
                for event in self._turn(session, clock, text, image, audio, generation, interrupt or threading.Event()):
                    if event.kind == "done":
                        reply_text = event.reply.text
                        outcome = "not_heard" if reply_text == NOT_HEARD else "answered"
                    yield event
            except InputError as exc:
                outcome, error_class = "refused", type(exc).__name__
                message = exc.apology()
                clock.mark("total")
                yield Event("error", text=message, reply=Reply(message, error=str(exc), timings_ms=clock.timings))
            except Exception as exc:
                outcome, error_class = "failed", type(exc).__name__
                log.exception("turn failed in session %s", session.id)
                clock.mark("total")
                yield Event("error", text=SOMETHING_WRONG,
                            reply=Reply(SOMETHING_WRONG, error="internal error", timings_ms=clock.timings))
            finally:
                inputs = {"text_chars": len(text or ""), "image": image is not None, "audio": audio is not None}
                said = {"text": text, "reply": reply_text} if self.config.runtime.log_user_text else None
                log_turn(session.id, session.turns, outcome, error_class, clock.timings, inputs, said)

    def _listen(self, audio: AudioInput, clock: StageClock) -> tuple[np.ndarray | None, float]:
        start = time.perf_counter()
        check_upload(audio, self.config.limits)
        samples = load_audio(audio)
        check_audio_length(samples, self.config.limits)
        clock.stage("audio_decode", start)
        return (None if is_silence(samples, self.config.limits) else samples), start

    def _look(self, session: Session, image: ImageInput, clock: StageClock) -> Media:
        start = time.perf_counter()
        check_upload(image, self.config.limits)
        picture = load_image(image, max_pixels=self.config.limits.max_image_pixels)
        key = content_key(np.asarray(picture))
        features = session.image_features.get(key)
        if features is None:
            pixels = self.model.vision.preprocess([picture]).to(self.device)
            with torch.inference_mode(), inference_context(self.config.runtime, self.device):
                features = self.model.vision(pixels)[0].float().clone()
            session.image_features[key] = features
        clock.stage("vision_encode", start)
        return Media("image", features=features)

    def _turn(self, session: Session, clock: StageClock, text, image, audio, generation,
              interrupt: threading.Event) -> Iterator[Event]:
        limits, model = self.config.limits, self.model
        text = clean_text(text, limits)
        media: list[Media] = []
        transcript = None
        if audio is not None:
            samples, _ = self._listen(audio, clock)
            if samples is None and not text and image is None:
                yield from self._say(NOT_HEARD, clock, transcript=None)
                return
            if samples is not None:
                start = time.perf_counter()
                mode = model.config.speech.mode
                with inference_context(self.config.runtime, self.device):
                    states, transcript = model.speech.encode(samples, transcribe=mode != SpeechMode.features)
                clock.stage("asr", start)
                if transcript is not None:
                    yield Event("transcript", text=transcript)
                media.append(Media("audio", features=states.float().clone(), transcript=transcript))
        if image is not None:
            media.insert(0, self._look(session, image, clock))
        if not text and not media:
            raise InputError("there is nothing to answer: say something, type a message or show a picture")
        if session.media_count + len(media) > limits.max_media_per_session:
            raise InputError(f"this conversation already holds {session.media_count} pictures and recordings; "
                             "start a new one to send more")
        turn = Turn("user", with_markers(text, media), media)

        start = time.perf_counter()
        cfg = model.config
        item = build_model_input([*session.history, turn], model.tokenizer, cfg.dialogue, cfg.speech.mode,
                                 model.soft_token_count, text_mode=model.text_mode)
        with torch.inference_mode(), inference_context(self.config.runtime, self.device):
            embeds, mask = model.embed([item])
        clock.stage("fusion", start)

        options = model.generation_options(**generation)
        start = time.perf_counter()
        reply_text, pending = "", ""
        context = functools.partial(inference_context, self.config.runtime, self.device)
        for piece in model.decoder.stream(embeds, mask, context=context, **options):
            if interrupt.is_set():
                break
            clock.mark("first_token")
            reply_text += piece
            pending += piece
            yield Event("text", text=piece)
            sentences = split_sentences(pending)
            if len(sentences) > 1:  # all but the last are finished: speak them now
                for sentence in sentences[:-1]:
                    yield from self._speak(sentence, clock, interrupt)
                pending = sentences[-1]
        clock.stage("generation", start)
        if pending.strip():
            yield from self._speak(pending, clock, interrupt)
        reply_text = reply_text.strip()
        session.history.extend([turn, Turn("assistant", reply_text, interrupted=interrupt.is_set())])
        session.media_count += len(media)
        clock.mark("total")
        yield Event("done", reply=Reply(reply_text, transcript=transcript, timings_ms=clock.timings,
                                        sample_rate=self.speech_out.sample_rate if self.speech_out else 0,
                                        interrupted=interrupt.is_set()))

    def _speak(self, sentence: str, clock: StageClock, interrupt: threading.Event | None = None) -> Iterator[Event]:
        """The sentence's audio chunks, each as an `audio` event that carries the sentence it speaks."""
        if self.speech_out is None or (interrupt is not None and interrupt.is_set()):
            return
        start = time.perf_counter()
        for chunk in self.speech_out.speak(sentence):
            clock.timings.setdefault("first_audio_chunk", round(clock.since(start), 2))
            clock.mark("ttfa")
            clock.timings["tts_total"] = round(clock.timings.get("tts_total", 0.0) + clock.since(start), 2)
            yield Event("audio", audio=chunk, text=sentence)
            start = time.perf_counter()

    def _say(self, text: str, clock: StageClock, transcript: str | None) -> Iterator[Event]:
        """A fixed reply (no model call), spoken like any other."""
        yield Event("text", text=text)
        yield from self._speak(text, clock)
        clock.mark("total")
        yield Event("done", reply=Reply(text, transcript=transcript, timings_ms=clock.timings,
                                        sample_rate=self.speech_out.sample_rate if self.speech_out else 0))
