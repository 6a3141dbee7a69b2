"""A prompt longer than ``num_ctx``, cut the way Ollama cuts it.

Ollama fits a request in two steps. The chat renderer (``server/prompt.go`` ``chatPrompt``)
drops whole messages from the front until the rendered prompt is at most ``num_ctx`` tokens,
always keeping the system messages and the last message (``jobs.build_prompt`` does this).
What still does not fit — a system prompt or a single message larger than the context, which
is what coding agents send to small models — is cut by the runner
(``llm/llama_server.go`` ``completionPromptForRequest``): when the prompt has more than
``num_ctx - 1`` tokens, the first ``num_keep`` tokens (one more for the BOS when the
tokenizer adds one) are kept, and enough of the tokens after them are dropped that the prompt
ends up at ``num_ctx - max((num_ctx - num_keep) // 2, 1)`` tokens: the beginning and the
end survive, and about half the context is left free for the answer, as the old runners'
first context shift did. ``truncate: false`` turns the cut into an error, and so does
``shift: false`` (Ollama then has no context shift to make room with).
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest
from .requests import GenerationRequest

TOO_LONG = "the input length exceeds the context length"
NO_SHIFT = (
    "the prompt is longer than the context length currently available to the model; shorten "
    "the prompt, adjust the context length in settings, or use a model with a longer context "
    "length"
)


def fit_to_context(
    tokens: list[int],
    request: GenerationRequest,
    context_length: int,
    *,
    bos_token_id: int | None = None,
) -> list[int]:
    """``tokens`` cut to fit ``context_length`` as Ollama's runner cuts a prompt (see the
    module docstring); unchanged when they fit. ``bos_token_id`` is the BOS the tokenizer
    adds (:func:`added_bos`), None when it adds none. Raises BadRequest when the request
    forbids the cut (``truncate: false`` or ``shift: false``)."""
    full_limit = context_length - 1  # a prompt may fill the context but for one token
    if context_length <= 1 or len(tokens) <= full_limit:
        return tokens
    if not request.truncate:
        raise BadRequest(TOO_LONG)
    if not request.shift:
        raise BadRequest(NO_SHIFT)
    keep = request.options.num_keep
    if keep < 0:  # -1 means "keep everything", which the limit below then bounds
        keep = len(tokens)
    if bos_token_id is not None and tokens[0] == bos_token_id:
        keep += 1
    keep = min(keep, full_limit)
    limit = shifted_limit(context_length, keep)
    discard = len(tokens) - limit
    return tokens[:keep] + tokens[keep + discard :]


def shifted_limit(context_length: int, keep: int) -> int:
    """The length a cut prompt is brought to: ``keep`` tokens, then roughly half of the rest of
    the context freed for generation (Ollama's ``contextShiftPromptLimit``)."""
    if context_length <= 1:
        return 0
    keep = max(0, min(keep, context_length - 1))
    return context_length - max((context_length - keep) // 2, 1)


def added_bos(tokenizer: Any) -> int | None:
    """The BOS token id when ``tokenizer`` puts one before what it encodes, else None.

    Ollama keeps one more token when the tokenizer adds a BOS (``tokenizerAddsBOS``: the
    GGUF's ``tokenizer.ggml.add_bos_token``), not whenever the prompt happens to start with
    the BOS token: ChatML templates open with ``<|im_start|>``, smollm2's BOS, and add none.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    return bos if tokenizer.encode("a")[:1] == [bos] else None
