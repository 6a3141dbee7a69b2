"""Vision models on mlx-vlm, behind the same ``MLXBackend`` as text models.

A vision-language model is a language model that, at some prompt positions, reads image
features (a vision tower's output, projected into the language model's embedding space)
instead of token embeddings. So a loaded VLM is given mlx-lm's face (``VisionLM``:
``model(tokens, cache=...) -> logits``, ``layers``, ``make_cache``) and everything the text
path has (the scheduler, batch lanes, the prompt-cache pool, samplers, stops, parsers,
Ollama's timings) runs it unchanged.

Images enter the token stream as *image tokens*: each position where the model reads an
image feature carries an id of its own, ``IMAGE_TOKEN_BASE + handle * IMAGE_STRIDE + k`` (the
``k``-th feature of the image registered as ``handle``, one handle per distinct image,
found by its SHA-256). ``VisionLM`` turns those ids into the image's features when a chunk
of prompt passes through it; the vision tower runs when a request bringing a new image is
admitted (``ImageStore.prepare``), then the features are kept (``ImageStore``). Because the
ids name the image, the prompt cache's prefix match tells images apart: the next turn of a
chat about the same image (the client resends it) reuses the KV cache past the image and
neither the vision tower nor the image's prefill runs again.

mlx-vlm is imported only here and only when a vision model loads (``load_vision_model``),
so text-only users never pay for it. Runs on the loading thread (load) and the scheduler
thread (everything else).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.cache import KVCache

from ..errors import BadRequest, ModelLoadError
from .vision_prompt import IMAGE_TOKEN_BASE, image_token_id_of, placeholder_of
from .vision_rope import ImageRope, ShiftedKVCache, has_mrope, image_rope, positions

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_STRIDE",
    "IMAGE_TOKEN_BASE",
    "ImageStore",
    "VisionLM",
    "VisionParts",
    "is_vision_dir",
    "load_vision_model",
]

IMAGE_STRIDE = 1 << 14  # feature positions one image may take
_MAX_HANDLES = (((1 << 31) - 1) - IMAGE_TOKEN_BASE) // IMAGE_STRIDE
KEPT_IMAGES = 32  # images whose features stay in memory per model (least recently used out)
KEPT_BYTES = 256 * 1024 * 1024  # and at most this much of features and pixels per model
# Families whose images enter through cross-attention, not as features in the token stream.
CROSS_ATTENTION = {"mllama"}


def is_vision_dir(path: Path) -> bool:
    """True if ``path`` holds a vision-language model (its config has a ``vision_config``)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("vision_config"), dict)


def is_image_token(token: int) -> bool:
    """True for the ids this module gives image positions (never a vocabulary id)."""
    return token >= IMAGE_TOKEN_BASE


@dataclass
class _Image:
    """One registered image: its token span and, once computed, its features."""

    handle: int
    span: list[int]  # the image's tokens as the processor expands it, image tokens renamed
    inputs: dict[str, Any] | None  # the processor's pixel values etc., until encoded
    features: Any = None  # (positions, hidden) once the vision tower has run
    rope: ImageRope | None = None  # its M-RoPE positions, for models that have them
    deep: Any = None  # (layers, positions, hidden): Qwen3-VL's DeepStack features, if any


@dataclass
class ImageStore:
    """The images a loaded VLM has seen, by content digest; their features, on demand."""

    model: Any  # the mlx-vlm model
    processor: Any
    image_token_id: int
    placeholder: str  # what the chat template writes where an image goes
    kept: int = KEPT_IMAGES
    kept_bytes: int = KEPT_BYTES
    encodes: int = 0  # vision-tower runs since load (the cache's measure)
    on_encode: Callable[[], None] = lambda: None  # told of each run (the backend counts)
    mrope: bool = False  # the model takes 3-D positions (``vision_rope``)
    _by_digest: OrderedDict[str, _Image] = field(default_factory=OrderedDict)
    _by_handle: dict[int, _Image] = field(default_factory=dict)
    _next: int = 0

    def span(self, data: bytes) -> list[int]:
        """The tokens ``data`` (an encoded image) takes in a prompt, image positions renamed
        to its image tokens; registers the image (the processor runs once per image)."""
        digest = hashlib.sha256(data).hexdigest()
        image = self._by_digest.get(digest)
        if image is not None:
            self._by_digest.move_to_end(digest)
            return image.span
        ids, inputs = self._process(data)
        positions = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if not positions:
            raise BadRequest("the model's processor produced no image tokens for an image")
        if len(positions) > IMAGE_STRIDE:
            raise BadRequest(f"image too large for this model: {len(positions)} image tokens")
        handle = self._next
        self._next = (self._next + 1) % _MAX_HANDLES
        base = IMAGE_TOKEN_BASE + handle * IMAGE_STRIDE
        span = list(ids)
        for k, position in enumerate(positions):
            span[position] = base + k
        image = _Image(handle, span, inputs)
        if self.mrope:
            image.rope = image_rope(self.model, self.image_token_id, len(positions), inputs)
        self._by_digest[digest] = image
        self._by_handle[handle] = image
        self._trim()
        return span

    def _trim(self) -> None:
        """Forget the least recently used encoded images past ``kept`` or ``kept_bytes``.
        Images not encoded yet stay (a request admitted with them will read them), and so
        does the newest (the one in use)."""
        over = len(self._by_digest) > self.kept or self.nbytes > self.kept_bytes
        for digest, image in list(self._by_digest.items())[:-1]:  # never the newest
            if not over:
                break
            if image.features is None:
                continue
            del self._by_digest[digest]
            self._by_handle.pop(image.handle, None)
            over = len(self._by_digest) > self.kept or self.nbytes > self.kept_bytes

    @property
    def held(self) -> bool:
        """True once any image is registered (until the model unloads)."""
        return bool(self._by_digest)

    @property
    def nbytes(self) -> int:
        """Bytes held: features, and pixels of images not yet encoded."""
        total = 0
        for image in self._by_digest.values():
            arrays = [image.features, image.deep, *(image.inputs or {}).values()]
            total += sum(int(getattr(a, "nbytes", 0)) for a in arrays if a is not None)
        return total

    def _process(self, data: bytes) -> tuple[list[int], dict[str, Any]]:
        """The processor's expansion of one image placeholder, and its pixel inputs."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as opened:
                picture = opened.convert("RGB")
        except (OSError, ValueError) as exc:  # the server checked it; never a 500 anyway
            raise BadRequest(f"invalid image input: {exc}") from exc
        try:
            out = self.processor(text=[self.placeholder], images=[picture])
        except Exception as exc:  # processors raise many types on odd images
            raise BadRequest(f"the model's processor rejected the image: {exc}") from exc
        out = {k: _to_mx(v) for k, v in dict(out).items()}
        ids = [int(t) for t in np.array(out["input_ids"]).reshape(-1)]
        bos = getattr(_tokenizer(self.processor), "bos_token_id", None)
        if ids and bos is not None and ids[0] == bos and len(ids) > 1:
            ids = ids[1:]  # the tokenizer's BOS: the prompt has its own
        inputs = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask")}
        return ids, inputs

    def prepare(self, tokens: list[int]) -> None:
        """Encode every image of a prompt now, at admission: an image the model cannot
        encode is that request's 400, never an error in a batch shared with others."""
        handles = dict.fromkeys(
            (t - IMAGE_TOKEN_BASE) // IMAGE_STRIDE for t in tokens if is_image_token(t)
        )
        for handle in handles:
            try:
                self.features(handle)
            except BadRequest:
                raise
            except Exception as exc:  # mlx-vlm's encoders raise many types on odd inputs
                log.warning("image not encoded handle=%d error=%s", handle, exc)
                raise BadRequest(f"the model could not encode the image: {exc}") from exc

    def features(self, handle: int) -> Any:
        """The image's features, running the vision tower the first time."""
        image = self._by_handle.get(handle)
        if image is None:
            raise BadRequest("an image of this prompt is no longer held; send the request again")
        if image.features is None:
            started = time.perf_counter()
            real = [t if not is_image_token(t) else self.image_token_id for t in image.span]
            inputs = dict(image.inputs or {})
            pixel_values = inputs.pop("pixel_values", None)
            ids = mx.array([real])
            inputs.setdefault("mask", mx.ones(ids.shape, dtype=mx.int32))  # Gemma 3 wants one
            out = self.model.get_input_embeddings(ids, pixel_values, **inputs)
            positions = mx.array([i for i, t in enumerate(image.span) if is_image_token(t)])
            image.features = out.inputs_embeds[0][positions]
            deep = getattr(out, "deepstack_visual_embeds", None)
            if deep is not None:  # one row per image token of the span, in order
                image.deep = mx.stack(list(deep)) if isinstance(deep, (list, tuple)) else deep
            mx.eval(image.features, image.deep)
            image.inputs = None  # the pixels are no longer needed
            for digest, held in self._by_digest.items():  # the image in use is the newest
                if held is image:
                    self._by_digest.move_to_end(digest)
                    break
            self._trim()
            self.encodes += 1
            self.on_encode()
            log.info(
                "image encoded handle=%d tokens=%d ms=%.1f",
                handle,
                int(positions.size),
                (time.perf_counter() - started) * 1000,
            )
        return image.features

    def rope(self, handle: int) -> ImageRope:
        """The M-RoPE positions of a registered image (``vision_rope``)."""
        image = self._by_handle.get(handle)
        if image is None or image.rope is None:
            raise BadRequest("an image of this prompt is no longer held; send the request again")
        return image.rope

    def embed(self, ids: Any, text_embed: Any) -> Any:
        """Input embeddings for ``ids`` (batch, length) holding image tokens, or None."""
        host = np.array(ids)
        mask = host >= IMAGE_TOKEN_BASE
        if not mask.any():
            return None
        tables, picked = self._rows(host[mask], lambda h: self.features(h))
        text = text_embed(mx.array(np.where(mask, 0, host)))
        rows = np.full(host.shape, sum(t.shape[0] for t in tables), dtype=np.int32)
        rows[mask] = picked  # text positions read the zero row after the images' features
        tables.append(mx.zeros((1, text.shape[-1]), dtype=tables[0].dtype))
        gathered = mx.concatenate(tables)[mx.array(rows)].astype(text.dtype)
        return mx.where(mx.array(mask)[..., None], gathered, text)

    def deepstack(self, host: np.ndarray) -> tuple[mx.array, mx.array] | None:
        """Qwen3-VL's DeepStack inputs for ``host`` ids (batch, length): where the image
        tokens are, and per early layer their features (row-major order), or None."""
        mask = host >= IMAGE_TOKEN_BASE
        if not mask.any():
            return None
        tables, picked = self._rows(host[mask], lambda h: self._deep(h))
        if any(t is None for t in tables):
            return None
        return mx.array(mask), mx.concatenate(tables)[mx.array(picked)].swapaxes(0, 1)

    def _deep(self, handle: int) -> Any:
        self.features(handle)
        deep = self._by_handle[handle].deep
        return None if deep is None else deep.swapaxes(0, 1)  # (positions, layers, hidden)

    def _rows(self, pseudo_ids: np.ndarray, table: Callable[[int], Any]) -> tuple[list, Any]:
        """Each distinct image's table (``table(handle)``, one row per image token) and,
        for each image token of ``pseudo_ids``, its row in the tables concatenated."""
        pseudo = pseudo_ids.astype(np.int64) - IMAGE_TOKEN_BASE
        handles, index = pseudo // IMAGE_STRIDE, pseudo % IMAGE_STRIDE
        tables, offsets, start = [], {}, 0
        for handle in dict.fromkeys(handles.tolist()):
            tables.append(table(int(handle)))
            offsets[handle] = start
            start += tables[-1].shape[0] if tables[-1] is not None else 0
        return tables, np.array([offsets[h] for h in handles.tolist()]) + index

    def clear(self) -> None:
        """Forget every image (the model is unloading)."""
        self._by_digest.clear()
        self._by_handle.clear()


class VisionLM(nn.Module):
    """An mlx-vlm model with mlx-lm's face: ``model(tokens, cache=...)`` gives logits, image
    tokens read their image's features (``ImageStore``)."""

    def __init__(self, vlm: nn.Module, images: ImageStore) -> None:
        super().__init__()
        self.vlm = vlm
        self.images = images  # a plain object: not part of the parameters

    @property
    def layers(self) -> list[Any]:
        """The language model's layers (mlx-lm sizes caches by them)."""
        return self.vlm.language_model.layers

    def make_cache(self) -> list[Any]:
        """The language model's own cache, else one mlx-lm ``KVCache`` per layer."""
        language = self.vlm.language_model
        if hasattr(language, "make_cache"):
            return language.make_cache()
        if self.images.mrope:  # the first layer carries the sequence's M-RoPE shifts
            return [ShiftedKVCache()] + [KVCache() for _ in self.layers[1:]]
        return [KVCache() for _ in self.layers]

    def __call__(
        self, inputs: mx.array, cache: Any = None, input_embeddings: Any = None, **_: Any
    ) -> mx.array:
        embeds = input_embeddings
        if embeds is None and self._may_hold_images(inputs):
            embeds = self.images.embed(inputs, self._text_embed)
        # the language model sees the real image token where features stand in for it
        real = mx.where(inputs >= IMAGE_TOKEN_BASE, self.images.image_token_id, inputs)
        extra: dict[str, Any] = {}
        if self.images.mrope:  # always passed: the language model's own guess is stateful
            host = np.array(inputs) if self._may_hold_images(inputs) else np.zeros(inputs.shape)
            extra["position_ids"] = positions(host, cache, self.images.rope, IMAGE_STRIDE)
            deep = self.images.deepstack(host)
            if deep is not None:  # Qwen3-VL: image features added after its first layers
                extra["visual_pos_masks"], extra["deepstack_visual_embeds"] = deep
        out = self.vlm.language_model(real, inputs_embeds=embeds, cache=cache, **extra)
        return out.logits if hasattr(out, "logits") else out

    def _may_hold_images(self, inputs: mx.array) -> bool:
        """Whether ``inputs`` (batch, length) may hold image tokens. A one-token call is a
        decode step or a prompt chunk of one token (a batch lane's prefill can end so): it
        is looked at on the host, waiting for a token the loop is about to read anyway."""
        if inputs.ndim != 2 or not self.images.held:
            return False
        return inputs.shape[1] > 1 or int(mx.max(inputs).item()) >= IMAGE_TOKEN_BASE

    def _text_embed(self, ids: mx.array) -> mx.array:
        return self.vlm.get_input_embeddings(ids, None).inputs_embeds


@dataclass
class VisionParts:
    """What a loaded VLM keeps beside its language model."""

    images: ImageStore
    processor: Any


def load_vision_model(path: Path) -> tuple[VisionLM, Any, VisionParts]:
    """Load a VLM directory with mlx-vlm: the wrapped model, a mlx-lm ``TokenizerWrapper``
    (the chat template the processor uses) and its parts. Raises ModelLoadError."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") in CROSS_ATTENTION:
        raise ModelLoadError(
            f"{config['model_type']} models read images through cross-attention, which the "
            "bridge's vision path (image features in the token stream) does not run"
        )
    try:  # imported here: text-only users never load mlx-vlm
        from mlx_lm.tokenizer_utils import load as load_tokenizer
        from mlx_vlm.utils import load as vlm_load
    except ImportError as exc:
        raise ModelLoadError(f"vision models need mlx-vlm (pip install mlx-vlm): {exc}") from exc
    try:
        vlm, processor = vlm_load(str(path), trust_remote_code=False)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model files are missing in {path}: {exc}") from exc
    except Exception as exc:  # mlx-vlm and transformers raise many types
        raise ModelLoadError(f"failed to load vision model from {path}: {exc}") from exc
    text_tokenizer = _tokenizer(processor)
    image_token_id = image_token_id_of(config, processor)
    if image_token_id is None:
        raise ModelLoadError(f"no image token found for the vision model in {path}")
    placeholder = placeholder_of(processor, text_tokenizer, image_token_id)
    eos = config.get("eos_token_id") or config.get("text_config", {}).get("eos_token_id")
    tokenizer = load_tokenizer(
        path, {"trust_remote_code": False}, eos_token_ids=[eos] if isinstance(eos, int) else eos
    )
    if tokenizer.chat_template is None and getattr(text_tokenizer, "chat_template", None):
        tokenizer._tokenizer.chat_template = text_tokenizer.chat_template  # the processor's
        tokenizer.has_chat_template = True
    images = ImageStore(vlm, processor, image_token_id, placeholder, mrope=has_mrope(vlm))
    return VisionLM(vlm, images), tokenizer, VisionParts(images, processor)


def _to_mx(value: Any) -> Any:
    """A processor's output value as an MLX array where it is an array."""
    if isinstance(value, (mx.array, str)) or value is None:
        return value
    try:
        return mx.array(np.asarray(value))
    except (TypeError, ValueError):
        return value


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)
