"""The scheduler's policies on a fake backend and a fake clock, as Ollama's ``server/sched.go``
has them: keep-alive expiry, sticky keep_alive, ``OLLAMA_MAX_LOADED_MODELS`` and memory
eviction (idle models only, shortest keep-alive first), the bounded queue, cancellation and
failures. No model runs; each test takes milliseconds. Waiting is on events, or on
``Engine.ping`` (a round trip through the scheduler thread's loop), never on a fixed sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_backend import (
    FakeBackend,
    FakeClock,
    fake_model,
    in_thread,
    last_event,
    request,
    settle,
    until,
)

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine import Engine, Failed, Finished
from mlx_ollama_bridge.engine.backend import MLXBackend
from mlx_ollama_bridge.engine.interface import Backend
from mlx_ollama_bridge.engine.preflight import MemoryBudget
from mlx_ollama_bridge.errors import (
    BadRequest,
    BridgeError,
    ModelLoadError,
    RequestCanceled,
    ServerBusy,
)
from mlx_ollama_bridge.registry import LocalModel

KEEP_ALIVE_S = 300.0


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_engine(backend: FakeBackend, clock: FakeClock) -> Iterator[Callable[..., Engine]]:
    """Started engines on the fake backend and clock, with these settings overridden."""
    engines: list[Engine] = []

    def make(budget_bytes: int = 10**12, **overrides: Any) -> Engine:
        settings = Settings().with_overrides(keep_alive_s=KEEP_ALIVE_S, **overrides)
        budget = MemoryBudget(total_bytes=budget_bytes, fraction=1.0)
        engine = Engine(settings, backend, clock=clock, budget=budget)
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for gate in [*backend.gates.values(), *backend.holds.values()]:
        gate.set()  # never leave a load or a job waiting
    for engine in engines:
        engine.stop()


def expires_after(engine: Engine, clock: FakeClock, seconds: float) -> None:
    """The (one) loaded model stays until ``seconds`` from now on the clock, then goes."""
    clock.advance(seconds - 1)
    settle(engine)
    assert len(engine.running()) == 1
    clock.advance(2)
    until(engine, lambda: not engine.running())


def loaded(engine: Engine) -> set[str]:
    return {m.name for m in engine.running()}


def run(engine: Engine, model: LocalModel, prompt: str = "hi", keep_alive_s: float | None = None):
    """Submit and read the job to its end: its last event."""
    job, _ready = engine.submit(request(model, prompt, keep_alive_s))
    return last_event(job)


# -- keep-alive ------------------------------------------------------------------------------


def test_an_idle_model_is_unloaded_when_its_keep_alive_passes(
    tmp_path, make_engine, backend, clock
):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    assert isinstance(run(engine, model), Finished)
    expires_after(engine, clock, KEEP_ALIVE_S)
    assert backend.unloads == ["a"]


def test_the_keep_alive_timer_starts_when_the_last_request_ends(
    tmp_path, make_engine, backend, clock
):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    release = backend.hold("long")
    job, _ = engine.submit(request(model, "long"))
    clock.advance(KEEP_ALIVE_S * 2)  # a busy model never expires
    settle(engine)
    assert loaded(engine) == {"a:latest"}
    release.set()
    assert isinstance(last_event(job), Finished)
    until(engine, lambda: engine.running()[0].active_requests == 0)
    expires_after(engine, clock, KEEP_ALIVE_S)


def test_keep_alive_sticks_to_the_model_for_later_requests(tmp_path, make_engine, clock):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    run(engine, model, keep_alive_s=60)
    run(engine, model)  # no keep_alive: the model keeps its 60 s
    expires_after(engine, clock, 60)


def test_keep_alive_zero_unloads_after_the_request(tmp_path, make_engine, backend):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    run(engine, model, keep_alive_s=0)
    until(engine, lambda: not loaded(engine))
    assert backend.unloads == ["a"]


def test_an_explicit_unload_waits_for_the_running_request(tmp_path, make_engine, backend):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    release = backend.hold("long")
    job, _ = engine.submit(request(model, "long"))
    engine.unload(model)
    assert loaded(engine) == {"a:latest"} and backend.unloads == []
    release.set()
    assert isinstance(last_event(job), Finished)  # it ended normally, then the model went
    until(engine, lambda: not loaded(engine))
    assert backend.unloads == ["a"]


# -- eviction --------------------------------------------------------------------------------


def test_max_loaded_models_evicts_the_idle_model_with_the_shortest_keep_alive(
    tmp_path, make_engine, backend, clock
):
    engine = make_engine(max_loaded_models=2)
    a, b, c = (fake_model(tmp_path, n) for n in "abc")
    engine.load(b, 100, 0)  # expires at +100
    clock.advance(80)
    engine.load(a, 50, 0)  # expires at +130: later than b, but a shorter keep-alive
    engine.load(c, None, 0)
    assert backend.unloads == ["a"]  # sched.go's ByDurationAndName, not soonest to expire
    assert loaded(engine) == {"b:latest", "c:latest"}


def test_among_equal_keep_alives_the_model_idle_longest_goes_first(
    tmp_path, make_engine, backend, clock
):
    engine = make_engine(max_loaded_models=2)
    a, b, c = (fake_model(tmp_path, n) for n in "abc")
    engine.load(a, None, 0)
    clock.advance(10)
    engine.load(b, None, 0)
    clock.advance(10)
    run(engine, a)  # a was used last
    engine.load(c, None, 0)
    assert backend.unloads == ["b"]
    assert loaded(engine) == {"a:latest", "c:latest"}


def test_a_busy_model_is_never_evicted_the_new_one_waits(tmp_path, make_engine, backend):
    engine = make_engine(max_loaded_models=1)
    a, b = fake_model(tmp_path, "a"), fake_model(tmp_path, "b")
    release = backend.hold("long")
    job, _ = engine.submit(request(a, "long"))
    thread, out = in_thread(lambda: run(engine, b))
    until(engine, lambda: engine.queue_depth() == 1)
    settle(engine)
    assert backend.loads == ["a"] and backend.unloads == []  # b waits for room
    release.set()
    thread.join(10)
    assert isinstance(out.get_nowait(), Finished)
    assert backend.loads == ["a", "b"] and backend.unloads == ["a"]
    assert isinstance(last_event(job), Finished)


def test_the_memory_budget_evicts_idle_models_to_fit_the_next(tmp_path, make_engine, backend):
    engine = make_engine(budget_bytes=1500)
    a, b = fake_model(tmp_path, "a", size=1000), fake_model(tmp_path, "b", size=1000)
    engine.load(a, None, 0)
    engine.load(b, None, 0)
    assert backend.unloads == ["a"] and loaded(engine) == {"b:latest"}
    with pytest.raises(ModelLoadError, match="more system memory"):
        engine.load(fake_model(tmp_path, "huge", size=2000), None, 0)
    assert loaded(engine) == {"b:latest"}  # a model that can never fit evicts nothing


# -- the queue, cancellation, failures ---------------------------------------------------------


def test_a_full_queue_is_503_at_once(tmp_path, make_engine, backend):
    engine = make_engine(max_queue=1)
    model = fake_model(tmp_path, "a")
    gate = backend.gates.setdefault("a", threading.Event())
    thread, out = in_thread(lambda: run(engine, model))
    assert backend.load_started.wait(10)  # the first request waits for its model
    with pytest.raises(ServerBusy) as busy:
        engine.submit(request(model))
    assert busy.value.status_code == 503
    gate.set()
    thread.join(10)
    assert isinstance(out.get_nowait(), Finished)


def test_a_queued_request_whose_client_left_is_dropped(tmp_path, make_engine, backend):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    gate = backend.gates.setdefault("a", threading.Event())
    queued = request(model)
    thread, out = in_thread(lambda: engine.submit(queued))
    assert backend.load_started.wait(10)
    queued.cancel.set()  # what the server's disconnect watch does
    engine.wake()
    thread.join(10)
    assert isinstance(out.get_nowait(), RequestCanceled)
    until(engine, lambda: engine.stats()["canceled"] == 1 and engine.queue_depth() == 0)
    gate.set()
    # the load goes on without a request and ends resident; the next model can load
    until(engine, lambda: loaded(engine) == {"a:latest"})
    assert isinstance(run(engine, fake_model(tmp_path, "b")), Finished)
    assert backend.loads == ["a", "b"]


def test_a_running_request_canceled_ends_and_frees_the_model(tmp_path, make_engine, backend, clock):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    backend.hold("long")
    job, _ = engine.submit(request(model, "long"))
    job.request.cancel.set()
    until(engine, lambda: engine.stats()["canceled"] == 1)
    assert engine.running()[0].active_requests == 0
    clock.advance(KEEP_ALIVE_S + 1)  # and it expires as an idle model does
    until(engine, lambda: not loaded(engine))


def test_a_load_that_fails_is_an_error_and_not_retried(tmp_path, make_engine, backend):
    engine = make_engine()
    bad, good = fake_model(tmp_path, "bad"), fake_model(tmp_path, "good")
    backend.failures["bad"] = ModelLoadError("the weights are broken")
    with pytest.raises(ModelLoadError, match="the weights are broken"):
        engine.submit(request(bad))
    with pytest.raises(ModelLoadError, match="not retried"):
        engine.submit(request(bad))
    assert backend.loads == ["bad"]
    assert isinstance(run(engine, good), Finished)  # the engine goes on serving


def test_bad_input_is_refused_at_admission_and_the_model_stays(tmp_path, make_engine):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    with pytest.raises(BadRequest, match="a bad prompt"):
        engine.submit(request(model, "bad"))
    assert engine.running()[0].active_requests == 0
    assert engine.queue_depth() == 0


def test_a_step_that_fails_ends_only_its_own_request(tmp_path, make_engine, backend):
    engine = make_engine(num_parallel=2)
    model = fake_model(tmp_path, "a")
    release = backend.hold("long")
    survivor, _ = engine.submit(request(model, "long"))
    failed = run(engine, model, "explode")
    assert isinstance(failed, Failed) and isinstance(failed.error, BridgeError)
    assert "generation failed: the step broke" in failed.error.message
    release.set()
    assert isinstance(last_event(survivor), Finished)


def test_a_backend_that_raises_ends_that_models_jobs_and_the_scheduler_goes_on(
    tmp_path, make_engine
):
    engine = make_engine()
    model = fake_model(tmp_path, "a")
    failed = run(engine, model, "crash")
    assert isinstance(failed, Failed) and "generation failed: a backend bug" in failed.error.message
    assert engine.is_alive() and isinstance(run(engine, model), Finished)


def test_the_mlx_backend_and_the_fake_both_are_backends():
    assert isinstance(MLXBackend(), Backend)
    assert isinstance(FakeBackend(), Backend)
    assert not isinstance(object(), Backend)


def test_memory_figures_count_a_finished_jobs_cache_once(tmp_path, make_engine, backend):
    # The step moves a finished job's KV cache into its model's pool before the scheduler
    # releases the job's reservation: read then, the figures would count that cache twice.
    backend.kv_per_token = 1
    backend.pool_insert_hold = threading.Event()
    engine = make_engine()
    model = fake_model(tmp_path, "a", size=1000)
    thread, out = in_thread(lambda: run(engine, model))
    assert backend.pool_inserted.wait(10)  # the step is between the insert and the release
    during = engine.stats()
    assert during["weights_bytes"] == 1000
    assert during["kv_reserved_bytes"] > 0 and during["prompt_cache_bytes"] == 0
    backend.pool_insert_hold.set()
    thread.join(10)
    assert isinstance(out.get_nowait(), Finished)
    after = engine.stats()  # the answer came after the reservation went back
    assert after["kv_reserved_bytes"] == 0 and after["prompt_cache_bytes"] == 3
