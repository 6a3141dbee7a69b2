"""Network exposure (ollama-api.md §16): CORS, the Host check, the optional API key.

Header matrices run on Flask's test client over an app with a stub engine (no generation
happens in these tests); one test drives a real ``serve`` process.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import requests
from helpers import make_app

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.server import security
from mlx_ollama_bridge.server.security import (
    ALLOW_HEADERS,
    OriginPolicy,
    api_key,
    bearer_matches,
    exposure_warnings,
    host_allowed,
    register_security,
)

EXPECTED_ALLOW_HEADERS = (
    "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,"
    "X-Stainless-Arch,X-Stainless-Async,X-Stainless-Custom-Poll-Interval,"
    "X-Stainless-Helper-Method,X-Stainless-Lang,X-Stainless-Os,X-Stainless-Package-Version,"
    "X-Stainless-Poll-Helper,X-Stainless-Retry-Count,X-Stainless-Runtime,"
    "X-Stainless-Runtime-Version,X-Stainless-Timeout"
)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch):
    return make_app(monkeypatch).test_client()


def _is_empty(response) -> bool:
    return response.data == b"" and "Content-Type" not in response.headers


# -- CORS ----------------------------------------------------------------------------------


def test_no_origin_is_untouched(client):
    response = client.get("/api/version")
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_same_origin_is_untouched(client):
    headers = {"Host": "mybox.local:11434", "Origin": "http://mybox.local:11434"}
    response = client.get("/api/version", headers=headers)
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "https://localhost",
        "http://localhost:3000",
        "https://localhost:8443",
        "http://127.0.0.1",
        "http://127.0.0.1:8080",
        "https://0.0.0.0:1",
        "app://obsidian.md",
        "file://",
        "tauri://localhost",
        "vscode-webview://abc123",
        "vscode-file://vscode-app",
    ],
)
def test_builtin_origins_are_allowed(client, origin):
    headers = {"Origin": origin, "Host": "127.0.0.1:11434"}  # not same-origin
    response = client.get("/api/version", headers=headers)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in response.vary
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example",
        "chrome-extension://abcdef",  # extensions must be listed in OLLAMA_ORIGINS
        "null",
    ],
)
def test_other_origins_get_403_with_empty_body(client, origin):
    response = client.get("/api/version", headers={"Origin": origin})
    assert response.status_code == 403
    assert _is_empty(response)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_preflight_from_localhost_gets_204_with_allow_lists(client):
    headers = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization",
    }
    response = client.options("/api/chat", headers=headers)
    assert response.status_code == 204
    assert response.data == b""
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert response.headers["Access-Control-Allow-Methods"] == (
        "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
    )
    assert response.headers["Access-Control-Allow-Headers"] == EXPECTED_ALLOW_HEADERS
    assert ALLOW_HEADERS == EXPECTED_ALLOW_HEADERS
    assert response.headers["Access-Control-Max-Age"] == "43200"
    assert "Origin" in response.vary
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_preflight_from_a_foreign_origin_is_403(client):
    response = client.options("/api/chat", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert _is_empty(response)


def test_preflight_runs_before_the_host_check(client):
    # CORS first (§16): an allowed preflight ends before the Host is looked at.
    headers = {"Origin": "http://localhost:3000", "Host": "evil.example"}
    assert client.options("/api/chat", headers=headers).status_code == 204


def test_cors_headers_on_error_responses(client):
    response = client.get("/no/such/route", headers={"Origin": "http://localhost:5173"})
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"


def test_ollama_origins_adds_wildcard_entries(monkeypatch):
    origins = "https://*.example.com, chrome-extension://*"
    client = make_app(monkeypatch, OLLAMA_ORIGINS=origins).test_client()
    for origin in ("https://app.example.com", "chrome-extension://abcdef", "http://localhost"):
        response = client.get("/api/version", headers={"Origin": origin, "Host": "127.0.0.1"})
        assert response.status_code == 200, origin
        assert response.headers["Access-Control-Allow-Origin"] == origin
    for origin in ("https://example.org", "http://app.example.com"):
        assert client.get("/api/version", headers={"Origin": origin}).status_code == 403


def test_ollama_origins_star_allows_any_origin_with_a_star_header(monkeypatch):
    client = make_app(monkeypatch, OLLAMA_ORIGINS="*").test_client()
    response = client.get("/api/version", headers={"Origin": "https://anything.example"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Origin" not in response.vary
    preflight = client.options("/api/chat", headers={"Origin": "https://anything.example"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"


def test_origin_entries_without_scheme_or_star_are_ignored():
    policy = OriginPolicy.from_origins(["myapp.local", "https://ok.example"])
    assert policy.rejected == ("myapp.local",)
    assert not policy.allows("myapp.local")
    assert not policy.allows("http://myapp.local")
    assert policy.allows("https://ok.example")
    assert policy.allows("HTTPS://OK.EXAMPLE")  # origins compare case-insensitively


# -- Host check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "",
        "localhost",
        "LOCALHOST:11434",
        "127.0.0.1:11434",
        "127.1.2.3",
        "[::1]:11434",
        "::1",
        "[::ffff:127.0.0.1]:80",
        "0.0.0.0:11434",
        "[::]",
        "10.1.2.3",
        "172.16.0.1:80",
        "172.31.255.254",
        "192.168.1.10:11434",
        "[fd12:3456::1]:11434",
        "app.localhost",
        "my-mac.local:11434",
        "svc.internal",
    ],
)
def test_local_hosts_are_accepted(client, host):
    assert client.get("/api/version", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:11434",
        "localhost.evil.example",
        "local",
        "8.8.8.8",
        "172.32.0.1",
        "[2001:4860:4860::8888]:11434",
    ],
)
def test_foreign_hosts_get_403_with_empty_body(client, host, monkeypatch):
    monkeypatch.setattr(security, "_local_addresses", lambda: set())
    response = client.get("/api/version", headers={"Host": host})
    assert response.status_code == 403
    assert _is_empty(response)


def test_this_machines_name_and_addresses_are_accepted(monkeypatch):
    assert host_allowed("My-Box:11434", hostname="my-box")
    assert not host_allowed("other-box", hostname="my-box")
    monkeypatch.setattr(security, "_local_addresses", lambda: {"203.0.113.7"})
    assert host_allowed("203.0.113.7:11434", hostname="my-box")
    assert host_allowed(socket.gethostname())


def test_options_to_a_local_name_ends_with_204(client):
    response = client.options("/api/tags", headers={"Host": "app.localhost"})
    assert response.status_code == 204
    assert response.data == b""


def test_host_check_is_off_when_not_bound_to_loopback(monkeypatch):
    client = make_app(monkeypatch, OLLAMA_HOST="0.0.0.0").test_client()
    assert client.get("/api/version", headers={"Host": "evil.example"}).status_code == 200
    # CORS still applies.
    response = client.get("/api/version", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403


# -- API key -------------------------------------------------------------------------------


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch):
    return make_app(monkeypatch, MLX_BRIDGE_API_KEY="s3cret-key").test_client()


def test_api_key_required_everywhere_but_root(keyed):
    assert keyed.get("/").status_code == 200
    assert keyed.head("/").status_code == 200
    for path in ("/api/version", "/api/tags", "/health", "/no/such/route"):
        response = keyed.get(path)
        assert response.status_code == 401, path
        assert response.get_json() == {"error": "unauthorized"}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert keyed.post("/", json={}).status_code == 401


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer s3cret-key", 200),
        ("bearer   s3cret-key", 200),
        ("Bearer s3cret-kex", 401),
        ("Bearer s3cret-key-and-more", 401),
        ("Bearer ", 401),
        ("s3cret-key", 401),
        ("Basic czNjcmV0LWtleQ==", 401),
    ],
)
def test_bearer_token(keyed, authorization, status):
    response = keyed.get("/api/version", headers={"Authorization": authorization})
    assert response.status_code == status


def test_preflight_needs_no_key_but_host_check_comes_first(keyed):
    preflight = keyed.options("/api/chat", headers={"Origin": "http://localhost:3000"})
    assert preflight.status_code == 204
    headers = {"Host": "evil.example", "Authorization": "Bearer s3cret-key"}
    assert keyed.get("/api/version", headers=headers).status_code == 403


def test_api_is_open_without_a_key(client):
    assert client.get("/api/version").status_code == 200


def test_api_key_source(monkeypatch):
    assert api_key(SimpleNamespace(api_key=" 'k1' ")) == "k1"
    assert api_key(SimpleNamespace(api_key="")) is None
    monkeypatch.setenv("MLX_BRIDGE_API_KEY", "k2")
    assert api_key(Settings.from_env()) == "k2"
    assert bearer_matches("Bearer k2", "k2")
    assert not bearer_matches("Bearer k2 ", "k3")


# -- startup warnings, registration --------------------------------------------------------


def test_exposure_warnings(monkeypatch):
    assert exposure_warnings(Settings.from_env()) == []
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")
    (warning,) = exposure_warnings(Settings.from_env())
    assert "0.0.0.0:11434" in warning and "MLX_BRIDGE_API_KEY" in warning
    monkeypatch.setenv("MLX_BRIDGE_API_KEY", "k")
    (warning,) = exposure_warnings(Settings.from_env())
    assert "API key required" in warning
    monkeypatch.setenv("OLLAMA_ORIGINS", "*,myapp")
    warnings = exposure_warnings(Settings.from_env())
    assert any("any web page" in w for w in warnings)
    assert any("'myapp'" in w for w in warnings)


def test_registering_twice_installs_once(monkeypatch):
    app = make_app(monkeypatch)
    before = len(app.before_request_funcs[None])
    register_security(app, Settings.from_env())
    assert len(app.before_request_funcs[None]) == before
    headers = {"Origin": "http://localhost:1", "Host": "127.0.0.1"}
    response = app.test_client().get("/api/version", headers=headers)
    assert response.headers.getlist("Access-Control-Allow-Origin") == ["http://localhost:1"]


# -- a real server ---------------------------------------------------------------------------


def test_real_server_refuses_dns_rebinding_and_allows_local_preflight(server):
    rebinding = requests.get(f"{server.url}/api/tags", headers={"Host": "evil.example"})
    assert rebinding.status_code == 403
    assert rebinding.content == b""
    preflight = requests.options(
        f"{server.url}/api/chat",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    foreign = requests.get(f"{server.url}/api/version", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert requests.get(f"{server.url}/api/version").status_code == 200
