"""The baseline the benchmark measures us against: the same work, with the same weights, done the obvious way.

A first attempt at this assistant would: transcribe with `whisper.transcribe` and its defaults (the clip
padded to Whisper's 30 s window, temperature fallback), run the Whisper encoder a second time for the fusion
features, encode every picture of the conversation again on every turn, generate the whole reply, and only
then synthesize all of it. Each of those is timed as a stage, named as in the pipeline's timings.
"""

from __future__ import annotations

import time

import torch
import whisper

from encoders.audio_io import AudioInput, load_audio
from encoders.image_io import ImageInput, load_image
from mmdialog.dialogue import Media, Turn, build_model_input, with_markers
from mmdialog.pipeline import DialoguePipeline, StageClock
from mmdialog.settings import SpeechMode


class NaiveCascade:
    """One conversation, answered turn by turn the naive way; `respond` returns (reply, timings in ms)."""

    def __init__(self, pipeline: DialoguePipeline):
        self.model = pipeline.model
        self.speech_out = pipeline.speech_out
        self.config = pipeline.config
        self.history: list[Turn] = []
        self.pictures: list[torch.Tensor] = []  # pixels of every picture shown so far, encoded again each turn

    @torch.inference_mode()
    def respond(self, text: str = "", image: ImageInput | None = None, audio: AudioInput | None = None,
                **generation) -> tuple[str, dict[str, float]]:
        clock = StageClock()
        timings = clock.timings
        model, mode = self.model, self.model.config.speech.mode
        media: list[Media] = []
        if audio is not None:
            start = time.perf_counter()
            samples = load_audio(audio)
            clock.stage("audio_decode", start)
            start = time.perf_counter()
            transcript = None
            if mode != SpeechMode.features:
                with model.speech.decode_lock:  # transcribe() installs hooks on the shared model
                    result = whisper.transcribe(model.speech.whisper, samples, fp16=False,
                                                language=model.config.speech.language,
                                                initial_prompt=model.config.speech.prompt or None)
                transcript = str(result["text"]).strip()
            states = model.speech.fusion_states(model.speech.log_mel(samples).unsqueeze(0).to(model.device))[0]
            clock.stage("asr", start)
            media.append(Media("audio", features=states.float(), transcript=transcript))
        start = time.perf_counter()
        if image is not None:
            self.pictures.append(model.vision.preprocess([load_image(image)])[0])
        pictures = [model.vision(p.unsqueeze(0).to(model.device))[0] for p in self.pictures]
        clock.stage("vision_encode", start)
        # Every picture goes back in at its first turn, from features computed again just now.
        remaining = iter(pictures[:-1] if image is not None else pictures)
        for turn in self.history:
            for index, item in enumerate(turn.media):
                if item.kind == "image":
                    turn.media[index] = Media("image", features=next(remaining))
        if image is not None:
            media.insert(0, Media("image", features=pictures[-1]))
        turn = Turn("user", with_markers(text, media), media)

        start = time.perf_counter()
        cfg = model.config
        item = build_model_input([*self.history, turn], model.tokenizer, cfg.dialogue, mode, model.soft_token_count,
                                 text_mode=model.text_mode)
        reply = model.generate([item], **generation)[0].strip()
        clock.stage("generation", start)
        start = time.perf_counter()
        timings["first_token"] = timings["generation"]  # nothing is seen before the whole reply is written
        if self.speech_out is not None:
            self.speech_out.speak_all(reply)  # all of it before any sound is played
            clock.stage("tts_total", start)
            timings["first_audio_chunk"] = timings["tts_total"]  # one chunk: the whole reply
        self.history.extend([turn, Turn("assistant", reply)])
        clock.mark("total")
        timings["ttfa"] = timings["total"]  # the first sound comes with the last
        return reply, timings
