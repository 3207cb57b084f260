"""What `harness serve` accepts, field by field: OpenAI's completions and chat request bodies, with their documented
ranges. A field out of range, a field we do not implement set to anything but its neutral value, or a field we do
not know is a 400 with a message naming it, never silently ignored (pydantic checks; the server turns its errors
into OpenAI's error object)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 128  # OpenAI's bound on n
MAX_LOGPROBS = 20  # alternatives per position (OpenAI allows 5 for completions and 20 for chat; vLLM 20)
MAX_STOPS = 32  # OpenAI allows 4; an evaluation's task may send more (HumanEval sends 5)
MAX_STOP_CHARACTERS = 256


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's extension (guidellm asks for it): usage so far in every chunk


class SamplingBody(BaseModel):
    """The fields both endpoints share."""
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user identifier: recorded nowhere, changes nothing
    # Accepted at their neutral values only: we do not implement them.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    # vLLM's extension, for load tests that need a fixed output length: generate past EOS up to max_tokens.
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if any(not s or len(s) > MAX_STOP_CHARACTERS for s in stops):
            raise ValueError(f"a stop string has 1 to {MAX_STOP_CHARACTERS} characters")
        return stop

    @model_validator(mode="after")
    def _unimplemented(self):
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty and frequency_penalty are not implemented: leave them 0")
        if self.logit_bias:
            raise ValueError("logit_bias is not implemented: leave it empty")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.continuous_usage_stats)


class CompletionBody(SamplingBody):
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)  # OpenAI's default is 16
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    best_of: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _completion_rules(self):
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not implemented: leave it unset or equal to n")
        if self.suffix:
            raise ValueError("suffix is not implemented: leave it unset")
        if self.echo and (self.max_tokens != 0 or self.logprobs is None or self.n != 1 or self.stream):
            raise ValueError("echo scores a prompt: it needs max_tokens 0, logprobs, n 1 and no stream")
        if not self.echo and self.max_tokens == 0:
            raise ValueError("max_tokens 0 generates nothing: it is for echo with logprobs (scoring a prompt)")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern="^text$")
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(pattern="^(system|developer|user|assistant)$")
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatBody(SamplingBody):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # the window's room by default, as OpenAI's
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @model_validator(mode="after")
    def _chat_rules(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return self

    @property
    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens
