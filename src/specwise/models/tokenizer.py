"""Tokenizer and chat template, loaded from what ships with the model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jinja2
import jinja2.sandbox
from tokenizers import Tokenizer as HFTokenizer

from specwise.errors import SpecwiseError


class Tokenizer:
    """A `tokenizers` tokenizer plus the model's chat template and stop tokens."""

    def __init__(
        self,
        tokenizer_file: Path,
        chat_template: str | None,
        bos_token: str | None,
        eos_token_ids: Sequence[int],
    ) -> None:
        self._tok = HFTokenizer.from_file(str(tokenizer_file))
        self.file = tokenizer_file
        self.chat_template = chat_template
        self.bos_token = bos_token
        self.eos_token_ids = frozenset(eos_token_ids)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self._template = None
        if chat_template:
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._template = env.from_string(chat_template)

    def vocab(self) -> dict[str, int]:
        """Token string -> id, special tokens included."""
        return self._tok.get_vocab(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        # Special-token text such as <|im_start|> in a rendered chat prompt maps to its id.
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        if self._template is None:
            raise SpecwiseError("this model has no chat template: use --no-chat and a plain prompt")
        try:
            return self._template.render(messages=list(messages), add_generation_prompt=True, bos_token=self.bos_token or "")
        except jinja2.TemplateError as exc:
            raise SpecwiseError(f"chat template failed on these messages: {exc}") from exc
