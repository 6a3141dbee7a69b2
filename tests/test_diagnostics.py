"""``GET /diagnostics`` and the generation metrics of ``GET /metrics``.

Stub-engine tests for the view's shape, the redaction and the per-model book; one real
server (tiny model, API key set) for the numbers: tokens, time to first token, request
counts, loaded-model memory.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from helpers import RunningServer, StubEngine, make_app, own_server, stop_server, wait_until

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.errors import RequestCanceled
from mlx_ollama_bridge.server.access_log import AccessRecord
from mlx_ollama_bridge.server.diagnostics import REDACTED, settings_view
from mlx_ollama_bridge.server.metrics import OTHER, Metrics

KEY = "diag-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINY = "tiny:latest"
DIAG = "diag:latest"  # the same weights under another name, used by one test only


class QueueEngine(StubEngine):
    """A stub engine with loaded models and a queue."""

    def __init__(self, running: list, waiting: int = 0) -> None:
        super().__init__(alive=True, running=running)
        self.waiting = waiting

    def queue_depth(self) -> int:
        return self.waiting

    def stats(self) -> dict[str, int]:
        return {"prompt_tokens": 11, "prompt_tokens_reused": 4, "canceled": 1}


def _loaded(name: str, size: int, active: int = 0, expires_at: float = 2e9) -> SimpleNamespace:
    """The fields of a RunningModel the views read."""
    return SimpleNamespace(
        name=name,
        size_bytes=size,
        size_vram_bytes=size,
        context_length=4096,
        active_requests=active,
        expires_at=expires_at,
    )


# -- the settings view ---------------------------------------------------------------------


def test_settings_view_lists_every_setting_and_redacts_secrets(monkeypatch):
    monkeypatch.setenv("MLX_BRIDGE_API_KEY", KEY)
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "-1")
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "7")
    monkeypatch.setenv("MLX_BRIDGE_RATE_LIMIT", "60/minute")
    settings = Settings.from_env()
    view = settings_view(settings)
    assert set(view) == {name for name in Settings.__dataclass_fields__}
    assert view["api_key"] == REDACTED
    assert view["max_queue"] == 7
    assert view["keep_alive_s"] == "inf"  # forever, and still valid JSON
    assert view["rate_limit"] == [60, 60.0]
    assert view["host"] == "http://127.0.0.1:11434"
    text = json.dumps(view, allow_nan=False)
    assert KEY not in text


def test_settings_view_shows_an_unset_key_as_empty_and_hides_url_credentials():
    settings = Settings(api_key="", upstream="http://user:hunter2@10.0.0.5:11435")
    view = settings_view(settings)
    assert view["api_key"] == ""
    assert "hunter2" not in view["upstream"] and "10.0.0.5:11435" in view["upstream"]


# -- per-model usage, read back from the metrics -------------------------------------------


def test_model_usage_merges_name_forms_and_is_bounded():
    metrics = Metrics(max_models=2)
    for model, status in [
        ("tiny", 200),
        ("TINY:latest", 404),  # a different spelling is another entry...
        ("tiny:latest", 500),
        ("other-model", 200),
        ("made-up-1", 404),
        ("made-up-2", 404),
    ]:
        record = AccessRecord("id", "POST", "/api/generate", "127.0.0.1", status=status)
        record.note(model=model)
        metrics.observe(record, 1.0)
    snapshot = metrics.model_usage()
    assert snapshot["tiny:latest"]["requests"] == {
        "total": 2,
        "2xx": 1,
        "3xx": 0,
        "4xx": 0,
        "5xx": 1,
    }
    # ...and past the cap of two names, every new name shares one entry.
    assert set(snapshot) == {"tiny:latest", "TINY:latest", OTHER}
    assert snapshot[OTHER]["requests"]["total"] == 3
    assert snapshot["tiny:latest"]["last_used"].endswith("Z")


# -- the endpoint over a stub engine -------------------------------------------------------


def test_diagnostics_needs_the_api_key(monkeypatch):
    client = make_app(monkeypatch, MLX_BRIDGE_API_KEY=KEY).test_client()
    assert client.get("/diagnostics").status_code == 401
    wrong = client.get("/diagnostics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.get_json() == {"error": "unauthorized"}
    response = client.get("/diagnostics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert KEY not in response.text
    assert response.get_json()["settings"]["api_key"] == REDACTED


def test_diagnostics_reports_loaded_models_queue_and_engine_counters(monkeypatch):
    engine = QueueEngine([_loaded("tiny:latest", 1000, active=1, expires_at=float("inf"))], 3)
    body = make_app(monkeypatch, engine).test_client().get("/diagnostics").get_json()
    assert body["status"] == "ok" and body["engine"] == "running"
    assert body["queue_depth"] == 3
    assert body["engine_stats"] == {"prompt_tokens": 11, "prompt_tokens_reused": 4, "canceled": 1}
    assert body["loaded_models"] == [
        {
            "name": "tiny:latest",
            "size_bytes": 1000,
            "size_vram_bytes": 1000,
            "context_length": 4096,
            "active_requests": 1,
            "expires_at": None,
        }
    ]
    assert body["memory"]["models_bytes"] == 1000
    assert body["memory"]["rss_bytes"] > 0
    assert body["uptime_s"] >= 0 and body["pid"] > 0


def test_metrics_gauges_follow_the_loaded_models_and_the_queue(monkeypatch):
    engine = QueueEngine([_loaded("a:latest", 1000, active=2), _loaded("b:latest", 50)], 4)
    client = make_app(monkeypatch, engine).test_client()
    text = client.get("/metrics").text
    for sample in (
        "mlx_bridge_queue_depth 4.0",
        'mlx_bridge_model_memory_bytes{model="a:latest"} 1000.0',
        'mlx_bridge_model_memory_bytes{model="b:latest"} 50.0',
        'mlx_bridge_model_active_requests{model="a:latest"} 2.0',
    ):
        assert sample in text, sample
    engine.models = engine.models[:1]  # b was unloaded: its series must go
    engine.waiting = 0
    text = client.get("/metrics").text
    assert 'model="b:latest"' not in text
    assert "mlx_bridge_queue_depth 0.0" in text


# -- the scheduler's queue depth -----------------------------------------------------------


def test_scheduler_queue_depth_counts_requests_not_yet_admitted():
    """The thread is never started: a submitted request stays waiting."""
    from fake_backend import FakeBackend

    from mlx_ollama_bridge.engine import GenerationRequest, Options
    from mlx_ollama_bridge.engine.scheduler import Scheduler

    scheduler = Scheduler(Settings(), backend=FakeBackend())
    assert scheduler.queue_depth() == 0
    errors: queue.Queue[BaseException] = queue.Queue()
    model = SimpleNamespace(name=SimpleNamespace(display="m:latest"))
    request = GenerationRequest(model=model, options=Options(), prompt="hi")

    def submit() -> None:
        try:
            scheduler.submit(request)
        except BaseException as exc:
            errors.put(exc)

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    assert wait_until(lambda: scheduler.queue_depth() == 1)
    request.cancel.set()  # the client leaves; only the scheduler thread takes it off the queue
    scheduler.wake()
    scheduler.start()
    try:
        thread.join(10)
        assert isinstance(errors.get_nowait(), RequestCanceled)
        assert scheduler.queue_depth() == 0
    finally:
        scheduler.stop()


# -- a real server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[RunningServer]:
    """A server with an API key and a non-default queue size, over a store with ``tiny``
    and ``diag`` (the same model: each test counts on a name of its own)."""
    root = tmp_path_factory.mktemp("diagnostics")
    diag = root / "diag-src"  # a copy: the engine keys loaded models by directory
    shutil.copytree(tiny_model_dir, diag)
    models = {"tiny": tiny_model_dir, "diag": diag}
    running = own_server(root, models, MLX_BRIDGE_API_KEY=KEY, OLLAMA_MAX_QUEUE="7")
    yield running
    stop_server(running)


def _metrics(url: str) -> str:
    response = requests.get(url + "/metrics", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one series (0 if it is not there yet)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        found_name, _, rest = series.partition("{")
        if found_name != name:
            continue
        found = ",".join(sorted(re.findall(r'\w+="[^"]*"', rest)))
        if found == wanted:
            return float(value)
    return 0.0


def _diagnostics(url: str) -> dict:
    response = requests.get(url + "/diagnostics", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_real_server_protects_diagnostics_and_metrics(keyed):
    for path in ("/diagnostics", "/metrics", "/health"):
        response = requests.get(keyed.url + path, timeout=30)
        assert response.status_code == 401, path
        assert response.json() == {"error": "unauthorized"}
    assert requests.get(keyed.url + "/diagnostics", headers=AUTH, timeout=30).status_code == 200
    settings = _diagnostics(keyed.url)["settings"]
    assert settings["api_key"] == REDACTED
    assert settings["max_queue"] == 7  # the server's own settings, not defaults


def test_real_server_counts_tokens_and_time_to_first_token(keyed):
    url = keyed.url
    generate = {"model": "tiny", "prompt": "hello", "stream": False}
    generate["options"] = {"num_predict": 3, "temperature": 0}
    ttft = "mlx_bridge_time_to_first_token_seconds_count"
    duration = "mlx_bridge_generation_duration_seconds_count"
    by_model = {"model": TINY}
    on_generate = {"model": TINY, "endpoint": "/api/generate"}
    on_chat = {"model": TINY, "endpoint": "/api/chat"}

    before = _metrics(url)
    response = requests.post(url + "/api/generate", json=generate, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert 1 <= answer["eval_count"] <= 3
    after = _metrics(url)  # counted before the answer was sent: no waiting needed
    generated = "mlx_bridge_generated_tokens_total"
    prompt = "mlx_bridge_prompt_tokens_total"
    assert (
        _sample(after, generated, **by_model) - _sample(before, generated, **by_model)
        == (answer["eval_count"])
    )
    assert (
        _sample(after, prompt, **by_model) - _sample(before, prompt, **by_model)
        == (answer["prompt_eval_count"])
    )
    assert _sample(after, ttft, **on_generate) - _sample(before, ttft, **on_generate) == 1
    assert _sample(after, duration, **on_generate) - _sample(before, duration, **on_generate) == 1
    assert _sample(after, ttft, **on_chat) == _sample(before, ttft, **on_chat)
    assert _sample(after, "mlx_bridge_models_loaded") == 1
    assert _sample(after, "mlx_bridge_model_memory_bytes", **by_model) > 0
    assert _sample(after, "mlx_bridge_queue_depth") == 0

    # A streamed chat is measured the same way, under its own endpoint.
    chat = {"model": "tiny:latest", "messages": [{"role": "user", "content": "hi"}]}
    chat["options"] = {"num_predict": 2, "temperature": 0}
    with requests.post(url + "/api/chat", json=chat, headers=AUTH, stream=True, timeout=120) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    final = lines[-1]
    assert final["done"] is True
    streamed = _metrics(url)
    assert _sample(streamed, ttft, **on_chat) - _sample(after, ttft, **on_chat) == 1
    assert (
        _sample(streamed, generated, **by_model) - _sample(after, generated, **by_model)
        == final["eval_count"]
    )

    # The OpenAI routes go through the same generation code.
    openai = {"model": "tiny", "messages": chat["messages"], "max_tokens": 2, "temperature": 0}
    response = requests.post(url + "/v1/chat/completions", json=openai, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    on_openai = {"model": TINY, "endpoint": "/v1/chat/completions"}
    last = _metrics(url)
    assert _sample(last, ttft, **on_openai) - _sample(streamed, ttft, **on_openai) == 1
    assert (
        _sample(last, generated, **by_model) - _sample(streamed, generated, **by_model)
        == usage["completion_tokens"]
    )


def test_real_server_diagnostics_after_a_few_requests(keyed):
    url = keyed.url
    assert DIAG not in _diagnostics(url)["models"]
    answers = []
    for prompt in ("one", "two"):
        body = {"model": "diag", "prompt": prompt, "stream": False, "options": {"num_predict": 2}}
        response = requests.post(url + "/api/generate", json=body, headers=AUTH, timeout=120)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    missing = requests.post(
        url + "/api/generate", json={"model": "no-such-model", "prompt": "x"}, headers=AUTH
    )
    assert missing.status_code == 404

    # A request is counted when its response closes, a moment after the client has it.
    def counted() -> bool:
        models = _diagnostics(url)["models"]
        return models.get(DIAG, {}).get("requests", {}).get("2xx") == 2 and (
            "no-such-model:latest" in models
        )

    wait_until(counted)
    body = _diagnostics(url)
    models = body["models"]
    diag = models[DIAG]
    assert diag["requests"] == {"total": 2, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 0}, models
    assert diag["generations"] == 2
    assert diag["eval_tokens"] == sum(a["eval_count"] for a in answers)
    assert diag["prompt_tokens"] == sum(a["prompt_eval_count"] for a in answers)
    assert diag["ttft_avg_s"] > 0
    assert diag["last_used"].endswith("Z")
    assert models["no-such-model:latest"]["requests"]["4xx"] == 1
    assert models["no-such-model:latest"]["generations"] == 0

    loaded = {model["name"]: model for model in body["loaded_models"]}
    assert loaded[DIAG]["size_bytes"] > 0 and loaded[DIAG]["active_requests"] == 0
    assert loaded[DIAG]["expires_at"].endswith("Z")  # the default keep-alive: 5 minutes
    assert body["memory"]["models_bytes"] == sum(m["size_bytes"] for m in loaded.values())
    assert body["memory"]["rss_bytes"] > loaded[DIAG]["size_bytes"]
    assert body["queue_depth"] == 0
    assert body["engine"] == "running" and body["status"] == "ok"
    assert body["engine_stats"]["prompt_tokens"] >= diag["prompt_tokens"]
    assert body["engine_latency_ms"] > 0  # the engine thread answered a no-op
    # Linux CPU mode: serve preloads OpenBLAS when it is installed, and says so
    from mlx_ollama_bridge import cpu_blas

    if cpu_blas.mlx_runs_on_cpu() and cpu_blas.find_openblas() is not None:
        assert body["cpu_blas"].startswith("OpenBLAS"), body["cpu_blas"]
    else:
        assert "OpenBLAS" not in body["cpu_blas"].split("(")[0], body["cpu_blas"]
