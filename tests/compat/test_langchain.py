"""LangChain's Ollama classes (langchain-ollama) against the real server."""

from __future__ import annotations

import langchain_ollama
import pytest

GREEDY = {"temperature": 0, "num_predict": 6}


def test_chat_ollama_invoke_stream_batch(server):
    chat = langchain_ollama.ChatOllama(
        model="tiny", base_url=server.url, validate_model_on_init=True, **GREEDY
    )
    reply = chat.invoke("hello")
    assert isinstance(reply.content, str)
    assert reply.usage_metadata["output_tokens"] == 6
    assert reply.usage_metadata["input_tokens"] > 0
    streamed = "".join(chunk.content for chunk in chat.stream("hello"))
    assert streamed == reply.content
    batch = chat.batch(["hello", "hello"])
    assert [m.content for m in batch] == [reply.content, reply.content]


def test_chat_ollama_real_model_answers(server):
    chat = langchain_ollama.ChatOllama(
        model="smollm2:135m", base_url=server.url, temperature=0, num_predict=8
    )
    assert "Paris" in chat.invoke("What is the capital of France? One word.").content


def test_ollama_llm(server):
    llm = langchain_ollama.OllamaLLM(model="tiny", base_url=server.url, **GREEDY)
    text = llm.invoke("hello")
    assert isinstance(text, str) and text
    assert "".join(llm.stream("hello")) == text


def test_unknown_model_is_rejected_at_init(server):
    with pytest.raises(ValueError):
        langchain_ollama.ChatOllama(model="ghost", base_url=server.url, validate_model_on_init=True)


def test_ollama_embeddings(server):
    embeddings = langchain_ollama.OllamaEmbeddings(model="all-minilm", base_url=server.url)
    cat, kitten, carburettor = embeddings.embed_documents(["cat", "kitten", "carburettor"])
    assert len(cat) == 384
    assert abs(sum(x * x for x in cat) - 1.0) < 1e-3  # Ollama's /api/embed normalises
    closeness = sum(a * b for a, b in zip(cat, kitten, strict=True))
    assert closeness > sum(a * b for a, b in zip(cat, carburettor, strict=True))
    # the same vector alone as in a padded batch (OpenBLAS sums a batch in another order)
    assert embeddings.embed_query("cat") == pytest.approx(cat, abs=1e-6)
