"""The page: chat, inputs (microphone, audio file, picture or webcam, text), the spoken reply, a latency
line, settings (not in kiosk mode), and the hidden components behind the HTTP API."""

from __future__ import annotations

import gradio as gr

from app.api import DialogueAPI
from app.feedback_handlers import FeedbackHandlers
from app.handlers import ChatHandlers
from app.live import LiveHandlers
from app.state import AppState
from app.uploads import uploads_only
from mmdialog.pipeline import DialoguePipeline
from mmdialog.settings import AppSettings, SpeechMode

# Kiosk: a touch screen at arm's length. Big type, big targets, a queue position one can read, no footer.
KIOSK_CSS = """
.gradio-container { max-width: 100% !important; padding: 12px 24px !important; }
#send, #new { min-height: 88px; font-size: 1.6rem !important; }
#image-in button, #audio-in button { min-height: 56px; min-width: 56px; font-size: 1.3rem !important; }
#text-in textarea { font-size: 1.5rem !important; min-height: 64px; }
#chat .message { font-size: 1.5rem; }
#chat [data-testid="status-tracker"] { font-size: 1.5rem; }
footer { display: none !important; }
"""
# Every page: components that must be rendered (to fire events) but not seen.
PAGE_CSS = ".mmdialog-hidden { display: none !important; }"

# Hands-free listens while the reply plays: ask the browser explicitly for echo cancellation (and noise
# suppression), so the assistant's own voice reaches the turn detector as little as possible. Gradio asks
# for plain `{audio: true}`, which leaves it to each browser's defaults.
ECHO_CANCELLATION_HEAD = """<script>
(() => {
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) return;
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = (constraints) => {
    if (constraints && constraints.audio === true) {
      constraints = {...constraints, audio: {echoCancellation: true, noiseSuppression: true, autoGainControl: true}};
    }
    return original(constraints);
  };
})();
</script>"""

# The idle tick's `js` runs in the browser before the handler: it reports how long ago the visitor last
# touched the screen or pressed a key (listeners installed on the first tick), as the handler's input.
IDLE_JS = """
(conversation, idle, ...inputs) => {
  if (window.mmdialogLastInput === undefined) {
    window.mmdialogLastInput = Date.now();
    for (const kind of ["pointerdown", "keydown", "touchstart"]) {
      window.addEventListener(kind, () => { window.mmdialogLastInput = Date.now(); }, true);
    }
  }
  return [conversation, (Date.now() - window.mmdialogLastInput) / 1000, ...inputs];
}
"""


def build_app(pipeline: DialoguePipeline, settings: AppSettings, kiosk: bool = False) -> gr.Blocks:
    """The Gradio app for one pipeline. The returned Blocks carries its `AppState` as `.mmdialog_state`
    (files, conversations, health), which `app.server.start` uses; launch it with `start`, not `launch`."""
    state = AppState.create(pipeline, settings, kiosk)
    chat = ChatHandlers(state)
    # A backstop for uploads nobody sent and no reset reached: a day-old file in our folder goes.
    with gr.Blocks(title=settings.title, analytics_enabled=False, fill_height=kiosk, fill_width=kiosk,
                   delete_cache=(3600, 86_400)) as blocks:
        # One pipeline Session per browser tab, made at its first turn; closed with the tab. The callback is
        # a plain function on purpose: Gradio deep-copies component settings on every page load, and a bound
        # method would drag the whole model into that copy (measured: +600 MB and ~0.5 s per page load).
        conversation = gr.State(None, delete_callback=lambda closed: state.browser.close(closed))
        if not kiosk:
            gr.Markdown(f"## {settings.title}")
        with gr.Row():
            with gr.Column(scale=3):
                # Kiosk: the chat takes the screen's height and scrolls inside; the page itself never scrolls.
                chatbot = gr.Chatbot(state.browser.greeting(), elem_id="chat", show_label=False,
                                     height="calc(100vh - 200px)" if kiosk else 520, buttons=[] if kiosk else None,
                                     placeholder=None if kiosk else settings.welcome,
                                     feedback_options=("Like", "Dislike") if state.feedback else None,
                                     allow_file_downloads=not kiosk)
                with gr.Row(equal_height=True):
                    text = gr.Textbox(placeholder="Type a question, or record one, then Send", show_label=False,
                                      elem_id="text-in", scale=4, lines=1)
                    send = gr.Button("Send", variant="primary", elem_id="send", scale=1)
                latency = gr.Markdown(elem_id="latency")
            with gr.Column(scale=2):
                image = uploads_only(gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam"],
                                              label="Picture", elem_id="image-in", height=220))
                hands_free_on = settings.hands_free if settings.hands_free is not None else kiosk
                hands_free = gr.Checkbox(hands_free_on, label="Hands-free: just talk (tap Record once)",
                                         elem_id="hands-free", visible=pipeline.speech_out is not None)
                # Streams the microphone while on: the turn detector decides when a question is finished.
                listen = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Listening",
                                  elem_id="listen", visible=hands_free_on and pipeline.speech_out is not None)
                audio = uploads_only(gr.Audio(type="filepath", sources=["microphone", "upload"], label="Ask by voice",
                                              elem_id="audio-in", visible=not hands_free_on))
                # Rendered but not shown: a hidden component would never fire its change event.
                reply_trigger = gr.Textbox(elem_id="reply-trigger", elem_classes=["mmdialog-hidden"],
                                           show_label=False, container=False)
                # streaming=True: each sentence goes to the browser as soon as it is spoken (HLS), autoplayed.
                spoken = gr.Audio(label="Spoken reply", streaming=True, autoplay=True, interactive=False,
                                  elem_id="reply-audio")
                new = gr.Button("New conversation", elem_id="new")
        settings_panel = [] if kiosk else _settings_panel(pipeline)

        outputs = [chatbot, conversation, spoken, latency, text, image, audio]
        gr.on([send.click, text.submit], chat.turn, [conversation, text, image, audio, *settings_panel], outputs,
              api_name="page_turn", api_visibility="private", show_progress_on=[chatbot], concurrency_id="model")
        # The chat's own trash button starts over too, so the chat never shows less than the model remembers.
        gr.on([new.click, chatbot.clear], chat.new_conversation, [conversation], outputs, api_name="page_new",
              api_visibility="private", queue=False)
        if kiosk:
            idle = gr.Number(visible=False)
            tick = max(0.5, min(5.0, settings.kiosk_idle_seconds / 4))
            gr.Timer(tick).tick(chat.idle_tick, [conversation, idle, text, image, audio], outputs, js=IDLE_JS,
                                api_name="page_idle", api_visibility="private", queue=False)
        hands_free.change(lambda on: (gr.update(visible=on), gr.update(visible=not on)), hands_free,
                          [listen, audio], queue=False, api_visibility="private")
        # Not the model's queue: a chunk only runs the voice activity detector (the reply runs in a worker).
        live = LiveHandlers(state)
        listen.stream(live.listen, [conversation, listen, image], [chatbot, conversation, reply_trigger],
                      stream_every=0.25, time_limit=None, concurrency_limit=None, api_name="page_listen",
                      api_visibility="private", show_progress="hidden")
        reply_trigger.change(live.play, conversation, [chatbot, spoken], concurrency_limit=None,
                             api_name="page_play", api_visibility="private", show_progress="hidden")
        feedback = FeedbackHandlers(state)
        if state.feedback is not None:
            chatbot.like(feedback.rate, conversation, None, api_visibility="private", queue=False)
            _feedback_panel(feedback, conversation)
        _api_endpoints(DialogueAPI(state), feedback)
    blocks.mmdialog_state = state
    return blocks


def _settings_panel(pipeline: DialoguePipeline) -> list[gr.components.Component]:
    generation = pipeline.config.generation
    with gr.Accordion("Settings", open=False, elem_id="settings"):
        with gr.Row():
            voice = gr.Checkbox(pipeline.speech_out is not None, label="Speak the replies",
                                interactive=pipeline.speech_out is not None)
            mode = gr.Radio([m.value for m in SpeechMode], value=pipeline.model.config.speech.mode.value,
                            label="Speech: transcript, encoder features, or both")
        with gr.Row():
            temperature = gr.Slider(0.0, 1.5, value=generation.temperature if generation.do_sample else 0.0,
                                    step=0.05, label="Temperature (0: greedy)")
            max_new_tokens = gr.Slider(1, 512, value=generation.max_new_tokens, step=1, label="Max new tokens")
    return [voice, mode, temperature, max_new_tokens]


def _feedback_panel(feedback: FeedbackHandlers, conversation: gr.State) -> None:
    """The notice, the opt-out, and a box for a better answer to the last reply."""
    with gr.Accordion("Feedback", open=False, elem_id="feedback"):
        gr.Markdown("Your thumbs and suggested answers, with this conversation's pictures and recordings, are kept "
                    "to improve the assistant. Untick the box to opt out: what you gave so far is deleted.")
        keep = gr.Checkbox(True, label="Keep my feedback", elem_id="feedback-keep")
        with gr.Row():
            better = gr.Textbox(placeholder="A better answer to the last reply", show_label=False, scale=4,
                                elem_id="feedback-text")
            suggest = gr.Button("Suggest", scale=1, elem_id="feedback-send")
        status = gr.Markdown(elem_id="feedback-status")
    keep.change(feedback.opt_out, [conversation, keep], conversation, api_visibility="private", queue=False)
    gr.on([suggest.click, better.submit], feedback.suggest, [conversation, better], [better, status],
          api_visibility="private", queue=False)


def _api_endpoints(api: DialogueAPI, feedback: FeedbackHandlers) -> None:
    """`/turn` and `/reset` for gradio_client. Files go in as gr.File (no decoding here: the pipeline checks
    them and answers a bad one with a friendly message); the reply's audio comes back as a WAV file."""
    with gr.Column(visible=False):
        inputs = [gr.Textbox(label="text"), uploads_only(gr.File(label="image")), uploads_only(gr.File(label="audio")),
                  gr.Textbox(label="session_id")]
        session_id = gr.Textbox(label="session_id")
        outputs = [gr.Textbox(label="reply"), gr.Textbox(label="transcript"), gr.Audio(type="filepath", label="audio"),
                   gr.JSON(label="timings_ms"), session_id, gr.Textbox(label="error")]
        rating, correction = gr.Textbox(label="rating"), gr.Textbox(label="correction")
        status = gr.Textbox(label="status")
        trigger = gr.Button()
    trigger.click(api.turn, inputs, outputs, api_name="turn", concurrency_id="model", preprocess=False)
    trigger.click(api.reset, inputs[-1], session_id, api_name="reset")
    trigger.click(feedback.api, [inputs[-1], rating, correction], status, api_name="feedback")
