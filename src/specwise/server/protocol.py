"""Request bodies of the OpenAI-compatible API, and the OpenAI error body.

Types are strict (a string where a number belongs is a 400, not a silent
coercion); fields a client may send that specwise ignores are allowed, and
fields whose effect specwise does not implement are refused when set, so a
request is never answered as if they had been honoured.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from specwise.errors import SpecwiseError
from specwise.structured.constraint import Constraint, compile_grammar, constraint_from_fields

Segment = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class APIError(Exception):
    """An error answered with OpenAI's body: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Speculation(_Body):
    """Per-request speculation (specwise's extension)."""

    drafter: str | None = None
    """"none", or one of the drafters the server loaded (default: the first)."""
    num_speculative_tokens: Annotated[int, Field(ge=0)] | None = None
    policy: Literal["adaptive", "fixed"] | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Sampling(_Body):
    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=-1)] = 0
    """0 or -1: off (vLLM's convention is -1)."""
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None
    speculation: Speculation | None = None
    segment: Segment | None = None
    return_token_ids: bool = False
    """Add the generated token ids to each choice (non-streaming)."""
    response_format: dict[str, object] | None = None
    structured_outputs: dict[str, object] | None = None
    """vLLM's extra: one of json (a schema), regex, grammar (Lark), choice."""
    guided_json: dict[str, object] | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None
    reasoning_end: Annotated[str, Field(min_length=1)] | None = None
    """The constraint starts after the output has written this text (the end of its reasoning)."""

    def unsupported(self) -> None:
        """Refuse what would otherwise be silently ignored."""
        if self.n != 1:
            raise APIError(400, "only n=1 is supported", param="n")
        if self.presence_penalty or self.frequency_penalty:
            raise APIError(400, "presence and frequency penalties are not supported", param="presence_penalty" if self.presence_penalty else "frequency_penalty")
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported", param="logit_bias")
        if self.logprobs not in (None, False, 0):
            raise APIError(400, "logprobs are not supported", param="logprobs")

    def constraint(self) -> Constraint | None:
        fields = ("response_format", "structured_outputs", "guided_json", "guided_regex", "guided_grammar", "guided_choice")
        try:
            constraint = constraint_from_fields({f: getattr(self, f) for f in fields})
            if constraint is not None:
                compile_grammar(constraint)
        except SpecwiseError as exc:
            raise APIError(400, str(exc), param=next((f for f in fields if getattr(self, f) is not None), None)) from None
        return constraint

    def stops(self) -> tuple[str, ...]:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not s for s in stops):
            raise APIError(400, "stop strings must be non-empty", param="stop")
        return stops


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[dict[str, object]] | None = None

    def unsupported(self) -> None:
        super().unsupported()
        if self.tools:
            raise APIError(400, "tools are not supported", param="tools")

    def token_budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] | Annotated[list[int], Field(min_length=1)] | Annotated[list[list[int]], Field(min_length=1, max_length=1)]
    """Text or token ids; one prompt per request."""
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None

    def unsupported(self) -> None:
        super().unsupported()
        if self.echo:
            raise APIError(400, "echo is not supported", param="echo")
        if self.suffix:
            raise APIError(400, "suffix is not supported", param="suffix")
        if self.best_of not in (None, 1):
            raise APIError(400, "only best_of=1 is supported", param="best_of")

    def token_budget(self) -> int | None:
        return self.max_tokens
