"""The native API over real HTTP against a real gunicorn process, on the tiny random model."""

from __future__ import annotations

import json
import re

import pytest
import requests
from helpers import METRICS, wait_until

TINY = "tiny"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def post(server, path: str, body, **kwargs) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.url + path, data=data, timeout=120, **kwargs)


def stream_lines(response: requests.Response) -> list[dict]:
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.iter_lines() if line]


def test_root_and_head(server):
    response = requests.get(server.url + "/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert requests.head(server.url + "/").status_code == 200


def test_version_is_semver_no_older_than_the_newest_endpoint(server):
    version = requests.get(server.url + "/api/version").json()["version"]
    parts = [int(p) for p in version.split("-")[0].split(".")]
    assert parts >= [0, 6, 4]  # clients refuse anything older
    assert parts >= [0, 14, 0]  # /v1/messages came with Ollama 0.14


def test_tags_lists_models_with_tag_and_details(server):
    models = {m["name"]: m for m in requests.get(server.url + "/api/tags").json()["models"]}
    assert {"tiny:latest", "smollm2:135m"} <= set(models)
    smol = models["smollm2:135m"]
    assert smol["model"] == "smollm2:135m"
    assert re.fullmatch(r"[0-9a-f]{64}", smol["digest"])
    assert smol["size"] > 50_000_000
    assert RFC3339.match(smol["modified_at"])
    details = smol["details"]
    assert details["format"] == "gguf"
    assert details["family"] == "llama"
    assert details["parameter_size"] == "134.52M"  # Ollama's HumanNumber, as `ollama list` shows
    assert details["quantization_level"] == "Q4_1"


def test_show_reports_model_info_and_capabilities(server):
    response = post(server, "/api/show", {"model": "smollm2:135m"})
    assert response.status_code == 200
    body = response.json()
    info = body["model_info"]
    assert info["general.architecture"] == "llama"
    assert info["llama.context_length"] == 8192
    assert 130_000_000 < info["general.parameter_count"] < 140_000_000
    assert "completion" in body["capabilities"]
    assert "<|im_start|>" in body["template"]
    assert 'stop                           "<|im_end|>"' in body["parameters"]


def test_show_unknown_model_is_404_with_ollamas_wording(server):
    response = post(server, "/api/show", {"model": "nope:1b"})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope:1b' not found"}


def test_streamed_generate_has_ollamas_final_line(server):
    response = post(
        server,
        "/api/generate",
        {"model": TINY, "prompt": "hello there", "options": {"num_predict": 5}},
        stream=True,
    )
    assert response.status_code == 200
    lines = stream_lines(response)
    assert all(not line["done"] for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True
    assert final["model"] == TINY
    assert RFC3339.match(final["created_at"])
    for key in METRICS:
        assert isinstance(final[key], int), key
    assert final["eval_count"] <= 5
    if final["done_reason"] == "length":
        assert final["eval_count"] == 5
    # context = prompt tokens + generated tokens
    assert len(final["context"]) == final["prompt_eval_count"] + final["eval_count"]
    assert "".join(line["response"] for line in lines[:-1]) or final["eval_count"] == 0


def test_num_predict_gives_length_reason(server):
    body = {
        "model": TINY,
        "prompt": "count",
        "stream": False,
        "options": {"num_predict": 3, "temperature": 0},
    }
    reply = post(server, "/api/generate", body).json()
    # The random model may emit EOS first; with greedy decoding the outcome is fixed.
    assert reply["done_reason"] in ("length", "stop")
    if reply["done_reason"] == "length":
        assert reply["eval_count"] == 3


def test_chat_stream_and_non_stream_agree_under_greedy(server):
    body = {
        "model": TINY,
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"temperature": 0, "num_predict": 8},
    }
    lines = stream_lines(post(server, "/api/chat", body, stream=True))
    streamed = "".join(line["message"]["content"] for line in lines)
    assert all(line["message"]["role"] == "assistant" for line in lines)
    final = lines[-1]
    assert "context" not in final
    whole = post(server, "/api/chat", {**body, "stream": False}).json()
    assert whole["message"]["content"] == streamed
    assert whole["eval_count"] == final["eval_count"]
    assert whole["prompt_eval_count"] == final["prompt_eval_count"]


def test_seed_makes_sampling_reproducible(server):
    body = {"model": TINY, "prompt": "seed test", "stream": False}
    options = {"temperature": 1.5, "seed": 42, "num_predict": 12, "top_k": 0, "top_p": 1.0}
    first = post(server, "/api/generate", {**body, "options": options}).json()["context"]
    second = post(server, "/api/generate", {**body, "options": options}).json()["context"]
    other = post(server, "/api/generate", {**body, "options": {**options, "seed": 7}}).json()
    assert first == second
    assert other["context"] != first


def test_stop_string_ends_generation_before_the_match(server):
    body = {"model": TINY, "prompt": "stop test", "stream": False}
    options = {"temperature": 0, "num_predict": 24}
    full = post(server, "/api/generate", {**body, "options": options}).json()["response"]
    assert len(full) > 6, full
    stop = full[3:6]
    cut = post(server, "/api/generate", {**body, "options": {**options, "stop": [stop]}}).json()
    assert cut["response"] == full[: full.index(stop)]
    assert cut["done_reason"] == "stop"


def generate_once(server, prompt: str, tokens: int, **fields) -> dict:
    """A non-streamed /api/generate on the tiny model: its JSON answer."""
    body = {"model": TINY, "prompt": prompt, "stream": False, "options": {"num_predict": tokens}}
    return post(server, "/api/generate", {**body, **fields}).json()


def test_context_is_accepted_back(server):
    first = generate_once(server, "one", 2)
    second = generate_once(server, "two", 2, context=first["context"])
    assert second["prompt_eval_count"] > len(first["context"])
    assert second["context"][: len(first["context"])] == first["context"]


def test_context_ids_outside_the_vocabulary_are_a_400(server):
    # an id past the embedding table must never reach the model (an out-of-bounds read)
    for stream in (False, True):
        body = {"model": TINY, "prompt": "hi", "context": [1, 2352402], "stream": stream}
        reply = post(server, "/api/generate", {**body, "options": {"num_predict": 2}})
        assert reply.status_code == 400
        assert "2352402" in reply.json()["error"] and "vocabulary" in reply.json()["error"]
    ok = post(
        server,
        "/api/generate",
        {"model": TINY, "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
    )
    assert ok.status_code == 200


def test_raw_prompt_is_not_templated(server):
    templated = generate_once(server, "abc", 1)
    raw = generate_once(server, "abc", 1, raw=True)
    assert raw["prompt_eval_count"] < templated["prompt_eval_count"]
    assert "context" not in raw


def test_load_ps_and_unload_with_keep_alive(server):
    load = post(server, "/api/generate", {"model": TINY, "keep_alive": "10m"}).json()
    assert load["done"] is True and load["done_reason"] == "load"
    running = {m["name"]: m for m in requests.get(server.url + "/api/ps").json()["models"]}
    assert "tiny:latest" in running
    entry = running["tiny:latest"]
    assert entry["size"] > 0 and RFC3339.match(entry["expires_at"]) and entry["context_length"] > 0
    unload = post(server, "/api/chat", {"model": TINY, "messages": [], "keep_alive": 0}).json()
    assert unload["done_reason"] == "unload"
    assert unload["message"] == {"role": "assistant", "content": ""}
    names = [m["name"] for m in requests.get(server.url + "/api/ps").json()["models"]]
    assert "tiny:latest" not in names


def test_keep_alive_zero_on_a_real_request_unloads_after_it(server):
    body = {
        "model": TINY,
        "prompt": "x",
        "stream": False,
        "keep_alive": 0,
        "options": {"num_predict": 1},
    }
    assert post(server, "/api/generate", body).status_code == 200
    names = [m["name"] for m in requests.get(server.url + "/api/ps").json()["models"]]
    assert "tiny:latest" not in names


@pytest.mark.parametrize(
    "path, body, status, error",
    [
        ("/api/chat", b"{not json", 400, None),
        ("/api/chat", b"", 400, "missing request body"),
        ("/api/chat", {"messages": []}, 400, "model is required"),
        ("/api/generate", {"prompt": "x"}, 404, "model '' not found"),
        ("/api/generate", {"model": "ghost", "prompt": "x"}, 404, "model 'ghost' not found"),
        ("/api/chat", {"model": "ghost:7b", "messages": []}, 404, "model 'ghost:7b' not found"),
        ("/api/generate", {"model": TINY, "prompt": 5}, 400, None),
        (
            "/api/generate",
            {"model": TINY, "prompt": "x", "options": {"temperature": "hot"}},
            400,
            None,
        ),
        ("/api/generate", {"model": TINY, "prompt": "x", "keep_alive": "300"}, 400, None),
        ("/api/generate", {"model": TINY, "prompt": "x", "raw": True, "system": "s"}, 400, None),
        ("/api/generate", {"model": "../../etc/passwd", "prompt": "x"}, 400, None),
        ("/api/chat", {"model": TINY, "messages": "hi"}, 400, None),
        ("/api/chat", {"model": TINY, "messages": [{"role": "user", "content": ["a"]}]}, 400, None),
        (
            "/api/chat",
            {"model": TINY, "messages": [{"role": "user", "content": "x"}], "think": True},
            400,
            '"tiny" does not support thinking',
        ),
        (
            "/api/generate",
            {"model": TINY, "prompt": "x", "suffix": "y"},
            400,
            "does not support insert",
        ),
        (
            "/api/generate",
            {"model": TINY, "prompt": "x", "top_logprobs": 50},
            400,
            "top_logprobs must be between 0 and 20",
        ),
    ],
)
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    server, path, body, status, error
):
    response = post(server, path, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert list(payload) == ["error"] and payload["error"]
    if error:
        assert payload["error"] == error or error in payload["error"]
    assert requests.get(server.url + "/").status_code == 200


def test_unknown_route_and_wrong_method_are_plain_text(server):
    missing = requests.get(server.url + "/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    wrong = requests.get(server.url + "/api/chat")
    assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")


def test_disconnect_mid_stream_leaves_the_server_healthy(server):
    canceled_before = server.log().count("request canceled")
    body = {"model": TINY, "prompt": "long", "options": {"num_predict": 2000, "temperature": 0}}
    with requests.post(
        server.url + "/api/generate", json=body, stream=True, timeout=60
    ) as response:
        next(response.iter_lines())
    follow_up = post(
        server,
        "/api/generate",
        {"model": TINY, "prompt": "x", "stream": False, "options": {"num_predict": 2}},
    )
    assert follow_up.status_code == 200
    assert follow_up.json()["done"] is True
    # The follow-up can be answered beside the abandoned generation (the shared server
    # batches) before the server notices the hang-up: the cancellation is waited for.
    assert wait_until(lambda: server.log().count("request canceled") > canceled_before, 30)
