"""Prompts: chat templates, tokenizing, and the markup a tokenizer declares.

Tokenizer work only; nothing here imports ``mlx``. ``MLXBackend`` exposes these as methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import BadRequest
from .context_fit import added_bos
from .gotemplate_exec import template_vars
from .ollama_prompt import render_chat_template, render_fim_template
from .tool_formats import TokenizerMarkup

if TYPE_CHECKING:
    from ..registry import LocalModel
    from .mlx_models import LoadedModel


def render_chat(
    loaded: LoadedModel,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    chat_template: str | None = None,
    enable_thinking: bool | None = None,
    reasoning_effort: str | None = None,
    go_template: str | None = None,
) -> str:
    """Render messages with the model's (or an override) chat template, ready to answer.

    ``enable_thinking`` is the Qwen3-style template switch (mlx-lm maps it to the name a
    custom renderer uses); None leaves mlx-lm's default. ``go_template`` (a model pulled from
    Ollama's registry: its template layer) is executed as Ollama executes it instead, with
    the BOS token in front when the tokenizer adds one (as Ollama's runner tokenizes).
    """
    tokenizer = loaded.tokenizer
    if go_template is not None:
        text = render_chat_template(
            go_template,
            messages,
            tools,
            think=bool(enable_thinking),
            think_level=reasoning_effort or "",
            think_set=enable_thinking is not None,
        )
        bos = tokenizer.bos_token if added_bos(tokenizer) is not None else None
        return bos + text if bos and not text.startswith(bos) else text
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if tools:
        kwargs["tools"] = tools
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    if reasoning_effort:  # a `think` level; Jinja templates know low/medium/high
        kwargs["reasoning_effort"] = "high" if reasoning_effort == "max" else reasoning_effort
    if chat_template:
        kwargs["chat_template"] = chat_template
    elif not tokenizer.has_chat_template:
        return plain_prompt(messages)
    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except Exception as exc:  # jinja2 raises many types; all mean "bad template/input"
        raise BadRequest(f"template error: {exc}") from exc


def chat_template_for(model: LocalModel, tools: list[dict[str, Any]] | None) -> str | None:
    """The chat template a request renders with: the manifest's override, else the tools
    prompt the bridge supplies for the model's family when the request passes ``tools``
    (``tool_prompts``), else None: the model's own."""
    if model.manifest.template:
        return model.manifest.template
    form = model.form
    if tools and form is not None and form.tool_prompt:
        return form.tool_prompt
    return None


def go_template_for(model: LocalModel) -> str | None:
    """The Ollama template a model pulled from Ollama's registry renders with (its
    ``template`` layer), unless a Jinja override was set on it; None for other models."""
    if model.manifest.template:
        return None
    return model.manifest.go_template


def fim_prompt(model: LocalModel, prompt: str, suffix: str) -> str:
    """A fill-in-the-middle prompt in the model's format (``fim``); BadRequest if it has
    none (the server checks the ``insert`` capability first). A pulled model whose Ollama
    template reads ``.Suffix`` runs that template with the prompt and suffix, as Ollama."""
    template = go_template_for(model)
    if template is not None and "suffix" in template_vars(template):
        return render_fim_template(template, prompt, suffix)
    fim = model.form.fim if model.form is not None else None
    if fim is None:
        raise BadRequest(f"{model.name.fully_qualified} does not support insert")
    return fim.render(prompt, suffix)


def plain_prompt(messages: list[dict[str, Any]]) -> str:
    """Fallback for models without a chat template: the contents, one per paragraph."""
    return "\n\n".join(str(m.get("content") or "") for m in messages)


def output_markup(loaded: LoadedModel) -> TokenizerMarkup:
    """Think tags and tool-call syntax as mlx-lm inferred them from the tokenizer."""
    tokenizer = loaded.tokenizer
    parser = getattr(tokenizer, "tool_parser", None)
    return TokenizerMarkup(
        think_start=getattr(tokenizer, "think_start", None),
        think_end=getattr(tokenizer, "think_end", None),
        tool_family=parser.__module__.rsplit(".", 1)[-1] if parser is not None else None,
        tool_call_start=getattr(tokenizer, "tool_call_start", None),
        tool_call_end=getattr(tokenizer, "tool_call_end", None),
        tool_parser=parser,
    )


def vocab_size(loaded: LoadedModel) -> int:
    """How many token ids the model takes: its embedding table's rows when the model
    says, else the tokenizer's vocabulary."""
    args = getattr(loaded.model, "args", None)
    size = getattr(args, "vocab_size", None)
    if not isinstance(size, int):
        size = getattr(getattr(args, "text_config", None), "vocab_size", None)
    if not isinstance(size, int):
        size = len(loaded.tokenizer.get_vocab())
    return size


def encode(loaded: LoadedModel, text: str, *, add_special_tokens: bool) -> list[int]:
    """Tokenize ``text``."""
    return list(loaded.tokenizer.encode(text, add_special_tokens=add_special_tokens))


def encode_raw(loaded: LoadedModel, text: str) -> list[int]:
    """Tokenize a raw prompt, adding BOS only if the model wants one and it is missing."""
    bos = loaded.tokenizer.bos_token
    return encode(loaded, text, add_special_tokens=bos is None or not text.startswith(bos))


def detokenizer(loaded: LoadedModel) -> Any:
    """A fresh streaming detokenizer (``add_token``, ``last_segment``, ``finalize``)."""
    return loaded.tokenizer.detokenizer
