"""Qwen2-VL's, Qwen2.5-VL's and Qwen3-VL's 3-D rotary positions (M-RoPE), and Qwen3-VL's DeepStack
features, through the bridge's ``VisionLM``: the logits equal mlx-vlm's own forward pass of
the same prompt and images (its ``get_rope_index`` over the whole prompt, its rope deltas
when decoding), prompt chunk by chunk, decode step by step, and on the next turn from a
prompt cache holding the first turn."""

from __future__ import annotations

import copy

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import KVCache, trim_prompt_cache
from tiny_vision_model import (
    QWEN_TOKENS,
    build_tiny_qwen2vl,
    build_tiny_qwen3vl,
    build_tiny_qwen25vl,
    picture,
)

from mlx_ollama_bridge.engine.vision import load_vision_model

WIDE = picture((220, 20, 20), size=(112, 56))  # a 2x4 merged grid: 8 tokens, extent 4
SMALL = picture((20, 20, 220))  # 2x2: 4 tokens
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(
    scope="module", params=[build_tiny_qwen2vl, build_tiny_qwen25vl, build_tiny_qwen3vl]
)
def qwen(request, tmp_path_factory):
    path = request.param(tmp_path_factory.mktemp("qwen") / "tiny")
    model, tokenizer, parts = load_vision_model(path)
    return model, tokenizer, parts


def prompt(qwen, pieces: list) -> list[int]:
    """Bridge tokens for ``pieces`` (text, or encoded images between vision start/end)."""
    model, tokenizer, parts = qwen
    start, end = (tokenizer.encode(t, add_special_tokens=False) for t in QWEN_TOKENS[:2])
    tokens: list[int] = []
    for piece in pieces:
        if isinstance(piece, bytes):
            tokens += [*start, *parts.images.span(piece), *end]
        else:
            tokens += tokenizer.encode(piece, add_special_tokens=False)
    parts.images.prepare(tokens)
    return tokens


def reference(qwen, tokens: list[int], images: list[bytes], decode: list[int]) -> list:
    """mlx-vlm's own logits: the whole prompt in one call (pixels and grids given), then one
    call per decoded token on its cache, as mlx-vlm generates."""
    import io

    from PIL import Image

    model, _tokenizer, parts = qwen
    vlm, image_id = model.vlm, parts.images.image_token_id
    ids = mx.array([[image_id if t >= 1 << 30 else t for t in tokens]])
    pixels, grids = [], []
    for data in images:
        with Image.open(io.BytesIO(data)) as opened:
            out = parts.processor(text=["<|image_pad|>"], images=[opened.convert("RGB")])
        pixels.append(mx.array(np.asarray(out["pixel_values"])))
        grids.append(mx.array(np.asarray(out["image_grid_thw"])))
    cache = [KVCache() for _ in vlm.language_model.layers]
    # a fresh generation: mlx-vlm keeps the last prompt's positions on the language model
    vlm.language_model._rope_deltas = vlm.language_model._position_ids = None
    kwargs = {"image_grid_thw": mx.concatenate(grids)} if images else {}
    pixel_values = mx.concatenate(pixels) if images else None
    logits = [vlm(ids, pixel_values, cache=cache, **kwargs).logits[0]]
    for token in decode:
        logits.append(vlm.language_model(mx.array([[token]]), cache=cache).logits[0])
    return logits


def bridge(model, tokens: list[int], cache: list, decode: list[int], chunk: int) -> list:
    """The bridge's logits: the prompt in chunks of ``chunk`` tokens, then one token a call."""
    rows = []
    for at in range(0, len(tokens), chunk):
        rows.append(model(mx.array([tokens[at : at + chunk]]), cache=cache)[0])
    logits = [mx.concatenate(rows)]
    for token in decode:
        logits.append(model(mx.array([[token]]), cache=cache)[0])
    return logits


def assert_same(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        assert np.allclose(np.array(a), np.array(b), **TOLERANCE), float(mx.abs(a - b).max())


def greedy(model, tokens: list[int], steps: int, logprobs: list | None = None) -> list[int]:
    """The greedy tokens of the bridge's model alone; each step's log-probabilities into
    ``logprobs`` if given."""
    cache = model.make_cache()
    logits = model(mx.array([tokens]), cache=cache)[0, -1]
    out = []
    for _ in range(steps):
        if logprobs is not None:
            logprobs.append(logits - mx.logsumexp(logits))
        out.append(int(mx.argmax(logits).item()))
        logits = model(mx.array([[out[-1]]]), cache=cache)[0, -1]
    return out


def test_prefill_and_decode_equal_mlx_vlm(qwen):
    model = qwen[0]
    pieces = ["look: ", WIDE, " and ", SMALL, " which is red?"]
    tokens = prompt(qwen, pieces)
    decode = greedy(model, tokens, 4)
    theirs = reference(qwen, tokens, [WIDE, SMALL], decode)
    for chunk in (len(tokens), 5, 3):  # chunks that start and end inside images
        assert_same(bridge(model, tokens, model.make_cache(), decode, chunk), theirs)
    # 1-D positions (the old behaviour) differ: the test sees positions at all
    plain = model.vlm.language_model(
        mx.array([[t if t < 1 << 30 else model.images.image_token_id for t in tokens]]),
        inputs_embeds=model.images.embed(mx.array([tokens]), model._text_embed),
        position_ids=mx.arange(len(tokens))[None],
    ).logits[0]
    assert not np.allclose(np.array(plain), np.array(theirs[0]), **TOLERANCE)
    if model.vlm.config.model_type == "qwen3_vl":  # and without DeepStack features too
        images = model.images
        images.deepstack, kept = (lambda _host: None), images.deepstack
        try:
            shallow = bridge(model, tokens, model.make_cache(), [], len(tokens))[0]
        finally:
            images.deepstack = kept
        assert not np.allclose(np.array(shallow), np.array(theirs[0]), **TOLERANCE)


def test_next_turn_from_a_cached_prefix_equals_mlx_vlm(qwen):
    model = qwen[0]
    first = prompt(qwen, ["what is ", WIDE, "?"])
    answer = greedy(model, first, 3)
    cache = model.make_cache()
    bridge(model, first, cache, answer, len(first))  # turn 1 as the engine runs it
    held = first + answer
    # turn 2 resends turn 1 and adds an image: the pool deep-copies the cache, trims it
    # to the common prefix (here one token short, as an exact hit does) and goes on
    second = held + prompt(qwen, [" now ", SMALL, " and?"])
    reused = copy.deepcopy(cache)
    trim_prompt_cache(reused, 1)
    rest = second[len(held) - 1 :]
    decode = greedy(model, second, 3)
    ours = bridge(model, rest, reused, decode, 4)
    theirs = reference(qwen, second, [WIDE, SMALL], decode)
    assert_same([ours[0]], [theirs[0][len(held) - 1 :]])
    assert_same(ours[1:], theirs[1:])


def test_text_only(qwen):
    model = qwen[0]
    tokens = prompt(qwen, ["just words here"])
    decode = greedy(model, tokens, 3)
    theirs = reference(qwen, tokens, [], decode)
    assert_same(bridge(model, tokens, model.make_cache(), decode, 4), theirs)


def test_batch_lane_rows_keep_their_positions(qwen):
    """In mlx-lm's BatchGenerator (the bridge's batch lanes): prompts of different images
    and lengths prefilled together in chunks, one joining later from a cached prefix, rows
    leaving: each row's tokens equal the row alone (which equal mlx-vlm's, above), and a
    row's extracted cache goes on with its own positions."""
    model = qwen[0]
    first = prompt(qwen, ["what is ", WIDE, "?"])
    turn1 = model.make_cache()
    bridge(model, first, turn1, [], len(first))
    asks = [
        prompt(qwen, ["look: ", WIDE, " and ", SMALL, " which is red?"]),
        prompt(qwen, ["what is ", SMALL, "?"]),
        prompt(qwen, ["just words"]),
    ]
    later = first + prompt(qwen, [" now ", SMALL, " and?"])
    steps = 5
    alone_logprobs: list[list] = [[], [], [], []]
    alone = [
        greedy(model, t, steps, lp) for t, lp in zip([*asks, later], alone_logprobs, strict=True)
    ]
    big = 1 << 20
    lane = BatchGenerator(model, max_tokens=big, prefill_step_size=7)
    uids = lane.insert(asks, max_tokens=[big] * 3)
    out: dict[int, list[int]] = {u: [] for u in uids}
    logprobs: dict[int, list] = {u: [] for u in uids}
    cached = copy.deepcopy(turn1)  # as the prompt-cache pool hands out an exact prefix
    trim_prompt_cache(cached, 1)
    joined = extracted = None
    while joined is None or any(len(v) < steps for v in out.values()):
        _prompts, generated = lane.next()
        for response in generated:
            out[response.uid].append(int(response.token))
            logprobs[response.uid].append(response.logprobs)
        if joined is None and any(out.values()):  # joins while the others decode
            (joined,) = lane.insert([later[len(first) - 1 :]], max_tokens=[big], caches=[cached])
            out[joined], logprobs[joined] = [], []
        if extracted is None and len(out[uids[0]]) >= steps:  # the first row leaves
            extracted = lane.remove([uids[0]], return_prompt_caches=True)[uids[0]]
    lane.close()
    assert [out[u][:steps] for u in (*uids, joined)] == alone
    for uid, expected in zip((*uids, joined), alone_logprobs, strict=True):
        assert_same(logprobs[uid][:steps], expected)  # not just the same argmax
    # the row's extracted cache goes on with its own positions
    cache, held = extracted  # the cache and exactly the tokens it holds
    assert list(held[: len(asks[0])]) == asks[0]
    nxt = out[uids[0]][-1]
    ours = model(mx.array([[nxt]]), cache=cache)[0, -1]
    want = model(mx.array([[*held, nxt]]), cache=model.make_cache())[0, -1]
    assert np.allclose(np.array(ours), np.array(want), **TOLERANCE)


def test_other_cache_layers_carry_the_shifts(qwen):
    """With OLLAMA_KV_CACHE_TYPE the layers are mlx-lm's QuantizedKVCache, not the bridge's
    ShiftedKVCache (single-sequence path): the shifts ride on whatever the first layer is.
    Shown with plain KVCache layers (the tiny model's 16-wide heads are below mlx's smallest
    quantization group, 32), and the model is eligible for KV quantization as before."""
    from mlx_ollama_bridge.engine.kv_quant import _kv_head_dims

    model = qwen[0]
    assert _kv_head_dims(model) is not None
    tokens = prompt(qwen, ["what is ", WIDE, " and ", SMALL, "?"])
    decode = greedy(model, tokens, 3)
    plain = [KVCache() for _ in model.layers]
    ours = bridge(model, tokens, plain, decode, 6)
    assert type(plain[0]) is KVCache and plain[0].bridge_mrope_shifts
    assert_same(ours, reference(qwen, tokens, [WIDE, SMALL], decode))
