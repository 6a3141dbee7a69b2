"""A hostile Hugging Face Hub (tests/fake_hub.py on loopback): every name that would become
a path is checked first (the class of Ollama's CVE-2024-37032, digest traversal), no
compressed or oversized answer is read (Ollama's CVE-2024-12886, gzip bombs), and no
request goes to another host than the configured Hub, through a name or a redirect (SSRF).

Each case asserts a clean error line, nothing listed, nothing written outside the cache's
repo folder, and that a healthy repo still pulls afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_hub import FakeHub

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store import hub_http
from mlx_ollama_bridge.store.hub import check_repo_path, repo_folder
from mlx_ollama_bridge.store.pull import pull_events

REPO = "evil-org/evil"
GOOD = "good-org/good"


@pytest.fixture
def hubs(tiny_model_dir, monkeypatch):
    """The configured Hub with a healthy repo, and a second server that must never be
    contacted (a redirect or a name pointing there is an SSRF)."""
    from huggingface_hub import constants

    hub, trap = FakeHub().start(), FakeHub().start()
    hub.add_repo(GOOD, tiny_model_dir)
    trap.add_repo(REPO, tiny_model_dir)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    yield hub, trap
    hub.stop()
    trap.stop()


@pytest.fixture
def registry(isolated_home) -> Registry:
    return Registry(Settings.from_env())


def pull(registry: Registry, name: str) -> dict:
    """The last line of a pull."""
    return list(pull_events(registry, name))[-1]


def assert_refused(registry: Registry, last: dict, *words: str) -> None:
    assert "error" in last, last
    for word in words:
        assert word in last["error"], last
    assert not registry.list_models()


def files_outside_repo(home: Path, registry: Registry, repo: str) -> list[Path]:
    folder = repo_folder(registry.hf_cache, repo)
    return [
        p
        for p in home.rglob("*")
        if p.is_file() and folder not in p.parents and "models" not in p.relative_to(home).parts
    ]


def still_healthy(registry: Registry) -> None:
    assert pull(registry, f"hf.co/{GOOD}") == {"status": "success"}


# -- names that become paths (CVE-2024-37032's class) ---------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["../../../../escaped", "0" * 63 + "/", "A" * 64, "0" * 64 + "\n"],
    ids=["traversal", "slash", "uppercase", "newline"],
)
def test_lfs_sha256_must_be_64_hex(hubs, registry, isolated_home, tiny_model_dir, bad):
    hub, _ = hubs

    def patch(info: dict) -> None:
        for sibling in info["siblings"]:
            if "lfs" in sibling:
                sibling["lfs"]["sha256"] = bad

    hub.add_repo(REPO, tiny_model_dir, patch_info=patch)
    assert_refused(registry, pull(registry, f"hf.co/{REPO}"), "LFS sha256", "refused")
    assert not files_outside_repo(isolated_home, registry, REPO)
    assert not [e for e in hub.log if "/resolve/" in e["path"] and REPO in e["path"]]
    still_healthy(registry)


@pytest.mark.parametrize(
    "name",
    ["../../escaped.json", "/etc/escaped.json", "a/../../escaped.json", "a\\..\\x.json", ""],
    ids=["dotdot", "absolute", "inner-dotdot", "backslash", "empty"],
)
def test_repo_file_names_must_be_safe_relative_paths(hubs, registry, tiny_model_dir, name):
    hub, _ = hubs

    def patch(info: dict) -> None:
        info["siblings"].append({"rfilename": name, "size": 2, "blobId": "0" * 40})

    hub.add_repo(REPO, tiny_model_dir, patch_info=patch)
    assert_refused(registry, pull(registry, f"hf.co/{REPO}"), "not a safe relative path")
    still_healthy(registry)


def test_check_repo_path_accepts_nested_names():
    assert check_repo_path("1_Pooling/config.json") == "1_Pooling/config.json"


def test_listing_commit_must_be_40_hex(hubs, registry, tiny_model_dir):
    hub, _ = hubs
    hub.add_repo(REPO, tiny_model_dir, patch_info=lambda info: info.update(sha="../../x"))
    assert_refused(registry, pull(registry, f"hf.co/{REPO}"), "commit")
    still_healthy(registry)


@pytest.mark.parametrize(
    ("header", "value"),
    [("ETag", '"../../../../escaped"'), ("X-Linked-Etag", "../x"), ("X-Repo-Commit", "../x")],
)
def test_file_answer_names_are_checked(
    hubs, registry, isolated_home, tiny_model_dir, header, value
):
    """huggingface_hub names blobs after the ETag and snapshots after X-Repo-Commit."""
    hub, _ = hubs
    hub.add_repo(REPO, tiny_model_dir, patch_headers={header: value})
    assert_refused(registry, pull(registry, f"hf.co/{REPO}"), "refused", header)
    assert not files_outside_repo(isolated_home, registry, REPO)
    assert not list(isolated_home.rglob("escaped*"))
    still_healthy(registry)


# -- bodies: compressed or oversized (CVE-2024-12886's class) -------------------------------


def test_gzip_bomb_answers_are_refused_unread(hubs, registry, tiny_model_dir):
    hub, _ = hubs
    hub.add_repo(REPO, tiny_model_dir, gzip_bomb=True)
    assert_refused(registry, pull(registry, f"hf.co/{REPO}"), "Content-Encoding", "gzip")
    still_healthy(registry)


def test_weights_longer_than_announced_are_cut_off(hubs, registry, isolated_home, tiny_model_dir):
    hub, _ = hubs
    hub.add_repo(REPO, tiny_model_dir, oversize=1 << 20)
    assert_refused(registry, pull(registry, f"hf.co/{REPO}"), "more than")
    weights = tiny_model_dir / "model.safetensors"
    blobs = repo_folder(registry.hf_cache, REPO) / "blobs"
    assert all(p.stat().st_size <= weights.stat().st_size for p in blobs.glob("*"))
    still_healthy(registry)


def test_api_answers_are_capped(hubs, registry, tiny_model_dir, monkeypatch):
    hub, _ = hubs
    monkeypatch.setattr(hub_http, "MAX_API_BYTES", 1024)

    def patch(info: dict) -> None:
        info["cardData"] = {"padding": "x" * 4096}

    hub.add_repo(REPO, tiny_model_dir, patch_info=patch)
    assert_refused(registry, pull(registry, f"hf.co/{REPO}"), "larger than 1024 bytes")


# -- other hosts (SSRF) ----------------------------------------------------------------------


def test_a_redirect_to_another_host_is_not_followed(hubs, registry, tiny_model_dir):
    hub, trap = hubs
    other = trap.url.replace("127.0.0.1", "localhost")  # another origin, still loopback
    hub.add_repo(REPO, tiny_model_dir, redirect_to=other)
    assert_refused(registry, pull(registry, f"hf.co/{REPO}"), "redirected to localhost")
    assert trap.log == []
    still_healthy(registry)


@pytest.mark.parametrize(
    "name", ["127.0.0.1:9/evil-org/evil", "localhost/evil-org/evil", "evil.example/evil-org/evil"]
)
def test_a_name_cannot_point_a_pull_at_another_host(hubs, registry, name):
    hub, trap = hubs
    assert_refused(registry, pull(registry, name), "no MLX model is known")
    assert trap.log == [] and hub.log == []


def test_hf_names_go_to_the_configured_hub_only(hubs, registry):
    hub, trap = hubs
    for name in (f"hf.co/{GOOD}", f"huggingface.co/{GOOD}:main"):
        assert pull(registry, name) == {"status": "success"}
    assert trap.log == [] and hub.log


def test_only_the_hubs_own_hosts_are_allowed():
    official = "https://huggingface.co"
    assert hub_http.allowed_origin("https://cdn-lfs.hf.co/x", official)
    assert hub_http.allowed_origin("https://cas-bridge.xethub.hf.co/x", official)
    assert not hub_http.allowed_origin("http://cdn-lfs.hf.co/x", official)
    assert not hub_http.allowed_origin("https://evilhf.co/x", official)
    assert not hub_http.allowed_origin("https://169.254.169.254/latest", official)
    mirror = "http://127.0.0.1:8080"
    assert hub_http.allowed_origin("http://127.0.0.1:8080/api/models/x", mirror)
    assert not hub_http.allowed_origin("http://127.0.0.1:8081/x", mirror)
    assert not hub_http.allowed_origin("https://huggingface.co/x", mirror)


def test_a_real_server_refuses_a_traversal_pull_and_stays_healthy(tiny_model_dir, tmp_path):
    """The same over real HTTP: gunicorn, the ollama client, a hostile fake Hub."""
    import ollama
    from helpers import isolated_env, start_server, stop_server

    hub = FakeHub().start()
    hub.add_repo(GOOD, tiny_model_dir)

    def patch(info: dict) -> None:
        for sibling in info["siblings"]:
            if "lfs" in sibling:
                sibling["lfs"]["sha256"] = "../../../../escaped"

    hub.add_repo(REPO, tiny_model_dir, patch_info=patch)
    env = isolated_env(tmp_path)
    env.pop("HF_HUB_OFFLINE")
    env["HF_ENDPOINT"] = hub.url
    server = start_server(env, tmp_path / "server.log")
    try:
        client = ollama.Client(host=server.url)
        with pytest.raises(ollama.ResponseError) as refused:
            client.pull(f"hf.co/{REPO}")
        assert "LFS sha256" in refused.value.error and str(tmp_path) not in refused.value.error
        assert client.pull(f"hf.co/{GOOD}").status == "success"
        assert [m.model for m in client.list().models] == [f"hf.co/{GOOD}:latest"]
    finally:
        stop_server(server)
        hub.stop()
    assert not list(tmp_path.rglob("escaped*"))
