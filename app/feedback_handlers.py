"""What the feedback controls do: thumbs on a reply, a suggested better answer, the opt-out, and `/feedback`
for scripts. Every one of them does nothing when feedback is off or the conversation opted out."""

from __future__ import annotations

import gradio as gr

from app.state import AppState, Conversation

FEEDBACK_OFF = "feedback is off on this server"
NOTHING_TO_RATE = "there is no answer to rate yet"


class FeedbackHandlers:
    def __init__(self, state: AppState):
        self.state = state

    def rate(self, conversation: Conversation | None, like: gr.LikeData) -> None:
        """A thumb on a reply in the chat (Gradio's like event: the message's index and up / down / undone)."""
        index = like.index[0] if isinstance(like.index, (list, tuple)) else like.index
        if conversation is None:
            return
        exchange = next((i for i, e in enumerate(conversation.exchanges) if e.message_index == index), None)
        if exchange is not None:
            rating = {True: "up", False: "down"}.get(like.liked)
            self._save(conversation, exchange, rating=rating or "")

    def suggest(self, conversation: Conversation | None, better: str) -> tuple[str, str]:
        """A better answer for the last reply; returns (the box emptied, a one-line status)."""
        better = (better or "").strip()
        if not better:
            return "", "Type the answer you would have wanted, then press Suggest."
        status = self._save(conversation, -1, correction=better)
        return "", status or "Thank you: your answer was saved."

    def opt_out(self, conversation: Conversation | None, keep: bool) -> Conversation:
        conversation = conversation or self.state.browser.open()
        conversation.feedback_opt_out = not keep
        if not keep and self.state.feedback is not None:
            self.state.feedback.forget(conversation.session.id)
        return conversation

    def api(self, session_id: str | None, rating: str | None, correction: str | None) -> str:
        """`/feedback` for scripts: rate ("up", "down" or "") and/or correct the last reply of a conversation.
        Returns "saved" or why not."""
        rating = (rating or "").strip().lower()
        if rating not in ("", "up", "down"):
            return 'rating must be "up", "down" or empty'
        conversation = self.state.api.get(session_id) if session_id else None
        status = self._save(conversation, -1, rating=rating or None, correction=(correction or "").strip() or None)
        return status or "saved"

    def _save(self, conversation: Conversation | None, index: int, rating: str | None = None,
              correction: str | None = None) -> str | None:
        """Keep a verdict; None when kept, else why not."""
        store = self.state.feedback
        if store is None:
            return FEEDBACK_OFF
        if conversation is None or not conversation.exchanges:
            return NOTHING_TO_RATE
        if conversation.feedback_opt_out:
            return "you opted out: nothing is kept"
        index %= len(conversation.exchanges)
        # "" (a thumb taken back) clears the rating; None leaves it as it was.
        store.save(conversation.session.id, conversation.exchanges, index, rating=rating, correction=correction)
        return None
