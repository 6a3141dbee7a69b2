"""One generation in flight: prompt construction, token stepping and Ollama's metrics.

A job is advanced one token at a time by the scheduler thread, so several jobs can share the
thread and new ones can join between steps. Most jobs decode in their model's batch lane
(``batching``), which produces a token for every member per step; the rest (a draft model, a
quantized KV cache, a greedy prompt-copying request) run their own ``generate_step``.
A request without ``num_predict`` takes the same paths as a bounded one. When a sequence
reaches ``num_ctx`` the context shifts as in Ollama's runner: the first ``num_keep`` tokens
(one more for the BOS the tokenizer adds) stay, half of the rest (the oldest) is dropped and
the job carries on alone from a fresh prefill of what is left, so a generation pays one
re-read per shift and nothing when it fits; ``shift: false`` stops at the limit ("length").
There is no rotating KV window: the cache never holds more than ``num_ctx`` tokens.
Decoded text goes through the stop strings, then the output parser, which splits it into
content, thinking and tool calls (``parsers``).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest
from .batching import BatchLane, Slot
from .constrained import format_processors
from .context_fit import added_bos, fit_to_context
from .generation import Generation
from .gotemplate_exec import render_legacy_template
from .logprobs import LogprobRecorder
from .mlx_models import LoadedModel
from .parsers import OutputParser, make_output_parser
from .prompts import chat_template_for, fim_prompt, go_template_for
from .requests import Event, Finished, GenerationRequest, Logprobs
from .sampling import make_processors, make_sampler
from .stops import StopMatcher
from .vision_prompt import check_image_room, images_of, raw_tokens, render_tokens

if TYPE_CHECKING:
    from .backend import MLXBackend


class GenerationJob:
    """Holds a request's state between scheduler steps."""

    def __init__(self, request: GenerationRequest, replies: queue.Queue[Any]) -> None:
        self.request = request
        self.replies = replies
        self.submitted_at = time.perf_counter()
        self.prompt_tokens: list[int] = []
        self.prompt_text = ""  # the rendered prompt (without a generate request's context)
        self.generated: list[int] = []
        self._tokens: Iterator[int] | None = None
        self._generation: Generation | None = None  # the solo path
        self._lane: BatchLane | None = None  # the batched path
        self._slot: Slot | None = None
        self._backend: MLXBackend | None = None
        self._detokenizer: Any = None
        self._stops = StopMatcher(request.options.stop)
        self._parser = OutputParser()
        self._loaded: LoadedModel | None = None
        self._started_at = 0.0
        self._first_token_at = 0.0
        self._max_tokens = request.options.max_tokens()
        self._logprobs: LogprobRecorder | None = None
        self._context_length = 0
        self._bos: int | None = None
        self._constraint: list[Any] = []  # structured output's processors (they keep state)
        self._first: list[Any] = []  # processors that see the model's raw logits
        self._lookup = False
        # the tokens the current KV cache was started from, and len(generated) then
        self._base: list[int] = []
        self._base_generated = 0
        self._shifted_reused: int | None = None  # reused_tokens at the first shift

    # -- admission ---------------------------------------------------------------------------

    def start(
        self,
        backend: MLXBackend,
        loaded: LoadedModel,
        context_length: int,
        lane: BatchLane | None = None,
    ) -> None:
        """Build the prompt tokens and join ``lane`` (or start a solo token stream when the
        request cannot batch, or no lane is given); raises BadRequest on bad input."""
        self._loaded = loaded
        self._backend = backend
        request = self.request
        self.prompt_text, tokens = build_prompt(backend, loaded, request, context_length)
        check_image_room(tokens, context_length)  # images are not cut to fit
        if loaded.vision is not None and not request.render_only:
            loaded.vision.images.prepare(tokens)  # encode failures stay this request's
        if not request.render_only:  # a render (or a token count) shows the whole prompt
            self._bos = added_bos(loaded.tokenizer)
            tokens = fit_to_context(tokens, request, context_length, bos_token_id=self._bos)
        self.prompt_tokens = self._base = tokens
        self._parser = make_output_parser(
            template=chat_template_for(request.model, request.tools) or request.model.chat_template,
            markup=backend.output_markup(loaded),
            thinking_capable="thinking" in request.model.capabilities,
            think=request.think,
            prompt_text=self.prompt_text,
            tools=request.tools,
        )
        self._detokenizer = backend.detokenizer(loaded)
        self._started_at = time.perf_counter()
        if request.render_only:  # `_debug_render_only`: finish at the first step
            self._max_tokens = 0
            self._tokens = iter(())
            return
        self._context_length = ctx = context_length
        if not self.request.shift:
            # No shifting: stop at the context limit instead, as Ollama does with shift=false.
            self._max_tokens = min(self._max_tokens, max(ctx - len(tokens), 0))
        if self._max_tokens <= 0:  # nothing to generate: finish at the first step
            self._tokens = iter(())
            return
        constraint = format_processors(
            loaded.tokenizer,
            request,
            backend.output_markup(loaded),
            self.prompt_text,
            self._max_tokens,
        )
        first = []  # processors that must see the model's own logits
        if request.logprobs:
            tokenizer = loaded.tokenizer
            self._logprobs = LogprobRecorder(request.top_logprobs, lambda t: tokenizer.decode([t]))
            first = [self._logprobs.capture]
        self._constraint, self._first = constraint, first
        # a greedy request copying its prompt decodes faster alone with prompt lookup
        self._lookup = lookup = backend.uses_prompt_lookup(
            loaded,
            request.options,
            len(tokens),
            constrained=bool(constraint or first),
            alone=lane is None or not len(lane),
        )
        if lane is not None and not lookup and backend.batchable(loaded):
            options = request.options
            self._slot = lane.add(
                tokens,
                make_sampler(options),
                # the lane shows processors the whole prompt; penalties skip it
                first + make_processors(options, len(tokens)) + constraint,
            )
            self._lane = lane
            return
        self._start_solo(tokens)

    def _start_solo(self, tokens: list[int]) -> None:
        assert self._backend is not None and self._loaded is not None
        self._generation = self._backend.generate(
            self._loaded,
            tokens,
            self.request.options,
            cancel=self.request.cancel,
            extra_processors=self._constraint,
            first_processors=self._first,
            prompt_lookup=self._lookup,
        )
        self._tokens = self._generation.tokens

    @property
    def reused_tokens(self) -> int:
        """Prompt tokens taken from the prompt cache instead of being evaluated."""
        if self._shifted_reused is not None:  # the count of the request's own prompt
            return self._shifted_reused
        if self._slot is not None:
            return self._slot.reused
        return self._generation.reused if self._generation is not None else 0

    @property
    def slot(self) -> Slot | None:
        """The job's place in its model's batch lane; None on the solo path."""
        return self._slot

    # -- stepping ----------------------------------------------------------------------------

    def step(self) -> list[Event]:
        """Advance a solo job one token. Returns the events to send; the last one is
        ``Finished``."""
        assert self._tokens is not None
        if len(self.generated) >= self._max_tokens:
            return self._finish("length")
        return self.accept(next(self._tokens))

    def accept(self, token: int) -> list[Event]:
        """Take the next generated token (from the solo stream or the batch lane)."""
        assert self._loaded is not None
        if not self.generated and not self._first_token_at:
            self._first_token_at = time.perf_counter()
        if self._loaded.is_eos(token):
            return self._finish("stop")
        self.generated.append(token)
        self._detokenizer.add_token(token)
        events = self._parser.feed(self._stops.feed(self._detokenizer.last_segment))
        if self._logprobs is not None and (entry := self._logprobs.take(token)) is not None:
            events.insert(0, Logprobs((entry,)))
        if self._stops.stopped:
            return events + self._finish("stop", flush=False)
        if len(self.generated) >= self._max_tokens:
            return events + self._finish("length")
        held = len(self._base) + len(self.generated) - self._base_generated
        if self.request.shift and held >= self._context_length:
            self._shift()
        return events

    def _shift(self) -> None:
        """Ollama's context shift: keep ``num_keep`` tokens (+ the BOS the tokenizer adds),
        drop the older half of the rest, and carry on alone from a fresh cache of what is left
        (a job leaves its batch lane for it; the next token comes from ``step``)."""
        sequence = self._base + self.generated[self._base_generated :]
        ctx = self._context_length
        keep = self.request.options.num_keep
        if keep < 0:  # -1: keep everything, bounded below
            keep = len(sequence)
        if self._bos is not None and sequence[:1] == [self._bos]:
            keep += 1
        keep = max(0, min(keep, ctx - 1))
        discard = max((ctx - keep) // 2, 1)
        if self._shifted_reused is None:
            self._shifted_reused = self.reused_tokens
        self.close()  # the old cache goes: the shifted sequence is not a prefix of it
        self._slot = None
        self._base = sequence[:keep] + sequence[keep + discard :]
        self._base_generated = len(self.generated)
        for processor in self._constraint:
            processor.resume(self.generated)
        if self._logprobs is not None:
            self._logprobs.drop_pending()
        self._start_solo(self._base)

    def close(self) -> None:
        """Release the token generator or the batch slot (and with it the KV cache)."""
        if self._lane is not None and self._slot is not None:
            self._lane.finish(self._slot, keep_cache=False)
            self._lane = None
        self._generation = None
        if self._tokens is not None:
            close = getattr(self._tokens, "close", None)
            if close is not None:
                close()
            self._tokens = None

    def _finish(self, reason: str, *, flush: bool = True) -> list[Event]:
        now = time.perf_counter()
        text = ""
        if flush:
            self._detokenizer.finalize()
            text = self._stops.feed(self._detokenizer.last_segment) + self._stops.flush()
        # Held-back markup is released (or parsed) even when a stop string ended the output.
        events: list[Event] = self._parser.feed(text) + self._parser.finish()
        first = self._first_token_at or now
        context = None
        if not self.request.is_chat and not self.request.raw:
            context = self.prompt_tokens + self.generated
        events.append(
            Finished(
                done_reason=reason,
                prompt_eval_count=len(self.prompt_tokens),
                prompt_eval_duration_ns=int((first - self._started_at) * 1e9),
                eval_count=len(self.generated),
                eval_duration_ns=int((now - first) * 1e9),
                context=context,
                cached_count=self.reused_tokens,
                stop_sequence=self._stops.matched,
            )
        )
        if self._lane is not None and self._slot is not None:
            self._lane.finish(self._slot, keep_cache=True)
            self._lane = None
        elif self._shifted_reused is not None:
            pass  # a shifted sequence is no later prompt's prefix: its cache is dropped
        elif self._generation is not None and self._backend and self._loaded is not None:
            self._backend.keep_cache(self._loaded, self._generation)
        self.close()
        return events


def build_prompt(
    backend: MLXBackend, loaded: LoadedModel, request: GenerationRequest, context_length: int
) -> tuple[str, list[int]]:
    """The rendered prompt and its token ids, as Ollama builds prompts.

    The text leaves out a generate request's ``context`` (token ids from an earlier call).
    A chat that does not fit ``context_length`` loses its oldest turns first, as in Ollama's
    ``chatPrompt``: system messages and the last message are always kept; what still does not
    fit is cut by ``context_fit.fit_to_context``.
    """
    model = request.model
    if request.is_chat:
        messages = _with_system(list(model.messages) + list(request.messages or []), model.system)
        while True:
            text, tokens = render_tokens(
                backend,
                loaded,
                messages,
                tools=request.tools,
                chat_template=chat_template_for(model, request.tools),
                enable_thinking=request.think,
                reasoning_effort=request.think_level,
                **_go_template(model),
            )
            droppable = _oldest_droppable(messages)
            if len(tokens) <= context_length or not request.truncate or droppable is None:
                return text, tokens
            messages = messages[:droppable] + messages[droppable + 1 :]
    prompt = request.prompt or ""
    context = list(request.context or [])
    vocab = backend.vocab_size(loaded)
    unknown = next((t for t in context if t >= vocab), None)
    if unknown is not None:  # an id past the embedding table would read out of bounds
        raise BadRequest(f'field "context" has token id {unknown}, not in the model\'s vocabulary')
    images = images_of([{"images": request.images}]) if request.images else []
    if request.raw:
        return prompt, context + raw_tokens(backend, loaded, prompt, images)
    system = request.system if request.system is not None else model.system
    if request.template:
        values = {"System": system or "", "Prompt": prompt, "Suffix": request.suffix or ""}
        text = render_legacy_template(request.template, values)
        return text, context + raw_tokens(backend, loaded, text, images)
    if request.suffix:  # as Ollama: the FIM branch sees only the prompt and the suffix
        text = fim_prompt(model, prompt, request.suffix)
        return text, context + raw_tokens(backend, loaded, text, images)
    history = [] if context else list(model.messages)
    user: dict[str, Any] = {"role": "user", "content": prompt}
    if request.images:
        user["images"] = request.images
    messages = _with_system(history + [user], system)
    text, tokens = render_tokens(
        backend,
        loaded,
        messages,
        chat_template=model.manifest.template,
        enable_thinking=request.think,
        reasoning_effort=request.think_level,
        **_go_template(model),
    )
    return text, context + tokens


def _go_template(model: Any) -> dict[str, Any]:
    """``go_template=`` for a model pulled from Ollama's registry (its template layer, run
    as Ollama runs it), else nothing: backends without it keep their signature."""
    template = go_template_for(model)
    return {"go_template": template} if template is not None else {}


def _oldest_droppable(messages: list[dict[str, Any]]) -> int | None:
    """Index of the oldest message that truncation may drop (never a system message, never
    the last message); None when nothing is left to drop."""
    for index, message in enumerate(messages[:-1]):
        if message.get("role") != "system":
            return index
    return None


def _with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    if system and (not messages or messages[0].get("role") != "system"):
        return [{"role": "system", "content": system}, *messages]
    return messages
