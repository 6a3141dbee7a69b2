"""Requests sent together start together: an idle scheduler waits for generation requests
already on their way (``Engine.arrival``) and admits them in one step, so their prompts are
read in one batched prefill; a request that comes alone, or whose companions never arrive,
is not held. On the fake backend (each step records how many jobs it ran); the gather bound
is set far above any wait here, so the checks never depend on how fast the box is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from fake_backend import FakeBackend, fake_model, in_thread, last_event, request, settle, until
from helpers import StubEngine, make_app, own_server, stop_server

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine import Engine, Finished, inbox
from mlx_ollama_bridge.engine.preflight import MemoryBudget
from mlx_ollama_bridge.errors import ServerBusy

PATIENT_MS = 600_000  # the gather bound: never reached in these tests


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def engine_with(backend: FakeBackend) -> Iterator[Callable[..., Engine]]:
    """Started engines on the fake backend (gather bound PATIENT_MS, 8 in parallel unless
    overridden), stopped after the test."""
    engines: list[Engine] = []

    def start(**overrides: Any) -> Engine:
        settings = Settings().with_overrides(
            **{"num_parallel": 8, "batch_gather_ms": PATIENT_MS, **overrides}
        )
        engine = Engine(settings, backend, budget=MemoryBudget(total_bytes=10**12, fraction=1.0))
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()


@pytest.fixture
def engine(engine_with: Callable[..., Engine]) -> Engine:
    return engine_with()


def submit_in_thread(engine: Engine, model, arrival) -> tuple[threading.Thread, object]:
    return in_thread(lambda: last_event(engine.submit(request(model), arrival)[0]))


def test_requests_on_their_way_start_in_one_step(tmp_path, engine, backend):
    model = fake_model(tmp_path, "a")
    engine.load(model, None, 0)  # loaded: the first step below is the requests' own
    arrivals = [engine.arrival() for _ in range(3)]
    first, first_out = submit_in_thread(engine, model, arrivals[0])
    settle(engine)  # the scheduler turns (pings answered) but waits for the other two
    assert backend.step_sizes == []
    rest = [submit_in_thread(engine, model, arrival) for arrival in arrivals[1:]]
    for thread, out in [(first, first_out), *rest]:
        thread.join(10)
        assert isinstance(out.get_nowait(), Finished)
    assert backend.step_sizes[0] == 3  # all three read their prompts in the same step


def test_a_request_that_comes_alone_is_not_held(tmp_path, engine, backend):
    model = fake_model(tmp_path, "a")
    thread, out = submit_in_thread(engine, model, engine.arrival())
    thread.join(10)  # a bound far below the gather's: it was not waited for
    assert isinstance(out.get_nowait(), Finished)
    assert backend.step_sizes == [1]


def test_a_companion_that_never_comes_releases_the_wait(tmp_path, engine, backend):
    model = fake_model(tmp_path, "a")
    engine.load(model, None, 0)
    first_arrival, lost = engine.arrival(), engine.arrival()  # e.g. a request refused with 400
    thread, out = submit_in_thread(engine, model, first_arrival)
    settle(engine)
    assert backend.step_sizes == []
    lost.close()
    lost.close()  # closing twice counts once
    until(engine, lambda: backend.step_sizes == [1])
    thread.join(10)
    assert isinstance(out.get_nowait(), Finished)


def test_a_running_batch_is_never_held(tmp_path, engine, backend):
    model = fake_model(tmp_path, "a")
    release = backend.hold("long")
    runner, runner_out = in_thread(lambda: last_event(engine.submit(request(model, "long"))[0]))
    until(engine, lambda: len(backend.step_sizes) > 0)
    pending = engine.arrival()  # on its way, but the model is busy: new ones join between steps
    thread, out = submit_in_thread(engine, model, engine.arrival())
    thread.join(10)
    assert isinstance(out.get_nowait(), Finished)
    release.set()
    runner.join(10)
    assert isinstance(runner_out.get_nowait(), Finished)
    pending.close()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": "nothing-here", "messages": [{"role": "user", "content": "x"}]}),
        ("/api/generate", {"model": 3}),
        ("/v1/chat/completions", {"model": "m", "messages": "not a list"}),
        ("/v1/completions", {}),
        ("/v1/responses", {"model": "nothing-here", "input": "x"}),
        ("/v1/messages", {"model": "m", "max_tokens": "many"}),
    ],
)
def test_every_generation_route_announces_and_ends_its_announcement(monkeypatch, path, body):
    engine = StubEngine()
    client = make_app(monkeypatch, engine, MLX_BRIDGE_UPSTREAM="off").test_client()
    answer = client.post(path, json=body)
    assert 400 <= answer.status_code < 500  # refused before reaching the engine
    assert engine.announced == 1 and engine.arrivals.on_the_way() == 0


def test_other_routes_announce_nothing(monkeypatch):
    engine = StubEngine()
    client = make_app(monkeypatch, engine).test_client()
    client.post("/api/embed", json={"model": 3})
    client.post("/api/show", json={"model": "nothing-here"})
    assert engine.announced == 0


def test_a_request_refused_as_busy_ends_its_announcement(tmp_path, backend, engine_with):
    engine = engine_with(max_queue=1, num_parallel=0)
    model = fake_model(tmp_path, "a")
    gate = backend.gates.setdefault("a", threading.Event())
    try:
        first, first_out = submit_in_thread(engine, model, engine.arrival())
        assert backend.load_started.wait(10)  # it waits for its model: the queue is full
        with pytest.raises(ServerBusy):
            engine.submit(request(model), engine.arrival())
        gate.set()
        # a refused request is on its way no more: nothing is held for it
        first.join(10)
        assert isinstance(first_out.get_nowait(), Finished)
        thread, out = submit_in_thread(engine, model, engine.arrival())
        thread.join(10)
        assert isinstance(out.get_nowait(), Finished)
    finally:
        gate.set()  # before the fixture stops the engine: the load it holds ends


def test_a_real_server_holds_no_request_for_its_own_announcement(tmp_path, tiny_model_dir):
    # With a gather bound of ten minutes, any request that waited for an announcement that
    # never ends (its own, left open) would not be answered within the generous timeouts.
    running = own_server(tmp_path, {"tiny": tiny_model_dir}, MLX_BRIDGE_BATCH_GATHER_MS="600000")
    try:
        ask = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        render = requests.post(
            running.url + "/api/chat", json={**ask, "_debug_render_only": True}, timeout=120
        )
        assert render.status_code == 200, render.text
        answer = requests.post(
            running.url + "/api/chat", json={**ask, "options": {"num_predict": 2}}, timeout=120
        )
        assert answer.status_code == 200 and answer.json()["done"] is True, answer.text
    finally:
        stop_server(running)


def test_the_last_of_a_burst_joins_it_though_it_begins_after_the_others_are_queued(
    tmp_path, backend, engine_with, monkeypatch
):
    # The quiet spell that ends a burst is set far above any wait here; the batch is full
    # (OLLAMA_NUM_PARALLEL 3) once the straggler is in, which ends the gather.
    monkeypatch.setattr(inbox, "BURST_QUIET_S", PATIENT_MS / 1000)
    engine = engine_with(num_parallel=3)
    model = fake_model(tmp_path, "a")
    engine.load(model, None, 0)
    arrivals = [engine.arrival() for _ in range(2)]
    started = [submit_in_thread(engine, model, arrival) for arrival in arrivals]
    until(engine, lambda: not any(arrival.is_open for arrival in arrivals))
    settle(engine)  # both are taken in (the pings come after them): a burst, held open
    assert backend.step_sizes == []
    started.append(submit_in_thread(engine, model, engine.arrival()))
    for thread, out in started:
        thread.join(10)
        assert isinstance(out.get_nowait(), Finished)
    assert backend.step_sizes[0] == 3
