"""Text deltas of a sequence as its tokens arrive, for streaming."""

from __future__ import annotations

from specwise.models.tokenizer import Tokenizer
from specwise.sequence import Sequence


class TextStream:
    """Emits newly decoded text, holding back an incomplete UTF-8 character and
    anything that could be the start of a stop string (which is never sent)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer, self.sent = tokenizer, 0

    def update(self, seq: Sequence) -> str:
        """The text not sent yet; call it from the thread that owns the sequence."""
        text = seq.text if seq.finished else self.tokenizer.decode(seq.output_ids)
        if not seq.finished:
            text = text.rstrip("\ufffd")
            longest = max((len(s) for s in seq.params.stop), default=1) - 1
            text = text[: max(self.sent, len(text) - longest)] if longest else text
        if len(text) <= self.sent:
            return ""
        delta, self.sent = text[self.sent :], len(text)
        return delta
