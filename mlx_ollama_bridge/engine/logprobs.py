"""Log-probabilities of the generated tokens (``logprobs``, ``top_logprobs``).

As Ollama's MLX runner computes them: a log-softmax over the model's own logits at each
position, before repeat penalties, the structured-output mask and temperature, top-k or
top-p — the model's distribution, whatever the sampler then did with it (llama.cpp's
``n_probs`` in Ollama's other runner reads the raw logits too). A capturing logits
processor, first in the request's processors, sees each position's logits in the batch lane
and in single decoding alike. mlx-lm computes position t+1 before it hands out token t, so
the captures wait in order until their token arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import mlx.core as mx

from .requests import Logprob, TokenLogprob

MAX_TOP = 20  # Ollama's limit for top_logprobs


class LogprobRecorder:
    """Records the logits of each position and turns them into :class:`Logprob` entries."""

    def __init__(self, top: int, decode: Callable[[int], str]) -> None:
        self.top = max(0, min(top, MAX_TOP))
        self._decode = decode
        self._pending: deque[mx.array] = deque()

    def capture(self, _tokens: mx.array, logits: mx.array) -> mx.array:
        """The logits processor: keeps this position's logits, changes nothing."""
        self._pending.append(logits)
        return logits

    def drop_pending(self) -> None:
        """Forget logits captured ahead of the tokens taken (a context shift restarts the
        generation, which computes them again)."""
        self._pending.clear()

    def take(self, token: int) -> Logprob | None:
        """The entry of ``token``, the next generated token; None if nothing was captured
        (a path that bypassed the processors)."""
        if not self._pending:
            return None
        row = self._pending.popleft().reshape(-1).astype(mx.float32)
        logprobs = row - mx.logsumexp(row)
        top: tuple[TokenLogprob, ...] = ()
        if self.top:
            k = min(self.top, logprobs.shape[0])
            ids = mx.argpartition(-logprobs, kth=k - 1)[:k]
            values = logprobs[ids]
            mx.eval(logprobs, ids, values)
            pairs = sorted(zip(ids.tolist(), values.tolist(), strict=True), key=lambda p: -p[1])
            top = tuple(self._entry(i, v) for i, v in pairs)
        return Logprob(self._entry(token, logprobs[token].item()), top)

    def _entry(self, token: int, logprob: float) -> TokenLogprob:
        text = self._decode(token)
        return TokenLogprob(text, float(logprob), tuple(text.encode("utf-8")))


__all__ = ["MAX_TOP", "LogprobRecorder"]
