"""Network-exposure guards, in Ollama's order: CORS, then the Host check, then the API key.

- CORS (Ollama's gin-contrib/cors setup): built-in local origins plus ``OLLAMA_ORIGINS``
  (``*`` wildcards, ``*`` alone = any origin). A disallowed ``Origin`` gets 403 with an empty
  body; an allowed preflight gets 204 with the allow-lists and ``Access-Control-Max-Age``.
- Host check against DNS rebinding, only while bound to loopback: a ``Host`` header that is
  not a loopback/private/local address or a local name gets 403 with an empty body.
- Optional bearer token (``MLX_BRIDGE_API_KEY``): every route except ``GET|HEAD /`` then
  needs ``Authorization: Bearer <key>`` (or ``x-api-key: <key>``, as Anthropic's clients
  send it), else 401 ``unauthorized`` in the called API's error envelope.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import socket
from dataclasses import dataclass

from flask import Flask, Response, g, request

from ..config import Settings
from .errors import error_response

API_KEY_ENV = "MLX_BRIDGE_API_KEY"
_REGISTERED = "mlx_ollama_bridge.security"

# envconfig.AllowedOrigins(): always allowed, after the user's OLLAMA_ORIGINS.
BUILTIN_ORIGINS: tuple[str, ...] = (
    *(
        f"{scheme}://{host}{port}"
        for host in ("localhost", "127.0.0.1", "0.0.0.0")
        for port in ("", ":*")
        for scheme in ("http", "https")
    ),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)
# An entry without '*' must start with one of these, or the CORS library rejects it.
_VALID_SCHEMES = (
    "http://",
    "https://",
    "chrome-extension://",
    "safari-extension://",
    "moz-extension://",
    "ms-browser-extension://",
)
ALLOW_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
_ALLOW_HEADER_NAMES = (
    "Authorization",
    "Content-Type",
    "User-Agent",
    "Accept",
    "X-Requested-With",
    # OpenAI SDK headers
    "OpenAI-Beta",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
MAX_AGE_S = 43200  # 12 h, gin-contrib/cors' default
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
# Go's net.IP.IsPrivate: only these, not Python's wider is_private (docs ranges, link-local…).
_PRIVATE_NETS = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def canonical_header(name: str) -> str:
    """Go's ``http.CanonicalHeaderKey``: ``x-stainless-arch`` -> ``X-Stainless-Arch``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


ALLOW_HEADERS = ",".join(canonical_header(name) for name in _ALLOW_HEADER_NAMES)


# -- CORS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OriginPolicy:
    """Which ``Origin`` values may call the API from a browser."""

    allow_all: bool
    exact: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]
    rejected: tuple[str, ...] = ()  # OLLAMA_ORIGINS entries ignored as invalid

    @classmethod
    def from_origins(cls, extra: tuple[str, ...] | list[str]) -> OriginPolicy:
        """``OLLAMA_ORIGINS`` entries plus the built-ins; invalid entries are set aside."""
        entries = [e.strip().lower() for e in extra if e.strip()]
        rejected = tuple(e for e in entries if "*" not in e and not e.startswith(_VALID_SCHEMES))
        valid = [e for e in entries if e not in rejected] + list(BUILTIN_ORIGINS)
        patterns = tuple(
            re.compile(".*".join(re.escape(part) for part in e.split("*")), re.DOTALL)
            for e in valid
            if "*" in e
        )
        exact = frozenset(e for e in valid if "*" not in e)
        return cls("*" in valid, exact, patterns, rejected)

    def allows(self, origin: str) -> bool:
        """True if a page served from ``origin`` may call the API."""
        if self.allow_all:
            return True
        origin = origin.lower()
        return origin in self.exact or any(p.fullmatch(origin) for p in self.patterns)


def _cors(policy: OriginPolicy) -> Response | None:
    """Ollama's CORS step: None to go on, or the response that ends the request."""
    origin = request.headers.get("Origin", "")
    host = request.headers.get("Host", "")
    if not origin or origin in (f"http://{host}", f"https://{host}"):
        return None  # not a cross-origin request
    if not policy.allows(origin):
        return _empty(403)
    allow_origin = "*" if policy.allow_all else origin
    if request.method == "OPTIONS":
        response = _empty(204)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(MAX_AGE_S)
        response.headers["Access-Control-Allow-Origin"] = allow_origin
        if not policy.allow_all:
            response.headers["Vary"] = _PREFLIGHT_VARY
        return response
    g.mlx_bridge_cors_origin = allow_origin  # added to the response in _add_cors_headers
    return None


def _add_cors_headers(response: Response) -> Response:
    origin = g.get("mlx_bridge_cors_origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        if origin != "*":
            response.vary.add("Origin")
    return response


# -- Host check ------------------------------------------------------------------------------


def host_allowed(host_header: str, hostname: str | None = None) -> bool:
    """Ollama's ``allowedHostsMiddleware`` for a loopback-bound server.

    Accepts IP literals that are loopback, private, unspecified or an address of this
    machine, and the names ``localhost``, this machine's hostname, ``*.localhost``,
    ``*.local`` and ``*.internal`` (and an empty Host). Rejects everything else.
    """
    return _classify_host(host_header, hostname) is not None


def _classify_host(host_header: str, hostname: str | None) -> str | None:
    """``"address"`` or ``"name"`` for an acceptable Host header, None for a foreign one."""
    host = _strip_port(host_header.strip()).lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        ip = getattr(ip, "ipv4_mapped", None) or ip
        local = (
            ip.is_loopback
            or ip.is_unspecified
            or any(ip in net for net in _PRIVATE_NETS)
            or str(ip) in _local_addresses()
        )
        return "address" if local else None
    if hostname is None:
        hostname = socket.gethostname()
    if host in ("", "localhost", hostname.lower()) or host.endswith(_LOCAL_SUFFIXES):
        return "name"
    return None


def _strip_port(host: str) -> str:
    """The host part of ``host[:port]``, ``[v6]:port`` or a bare IPv6 literal."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host  # no port, or a bare IPv6 address


def _local_addresses() -> set[str]:
    """Addresses of this machine's interfaces (read per call: they change with the network)."""
    import psutil  # only needed for the rare public-IP Host header

    try:
        return {
            addr.address.split("%")[0]
            for addrs in psutil.net_if_addrs().values()
            for addr in addrs
            if addr.family in (socket.AF_INET, socket.AF_INET6)
        }
    except OSError:
        return set()


def _host_check(hostname: str) -> Response | None:
    kind = _classify_host(request.headers.get("Host", ""), hostname)
    if kind is None:
        return _empty(403)
    if kind == "name" and request.method == "OPTIONS":
        return _empty(204)  # as Ollama: OPTIONS to a local name ends here
    return None


# -- API key ---------------------------------------------------------------------------------


def api_key(settings: Settings) -> str | None:
    """The configured bearer token (``settings.api_key``), or None when the API is open."""
    value = str(settings.api_key or "").strip().strip("\"'")  # Ollama-style trimming
    return value or None


def bearer_matches(authorization: str, key: str) -> bool:
    """True if an ``Authorization`` header carries ``Bearer <key>`` (constant-time compare)."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), key.encode("utf-8"))


def key_matches(value: str, key: str) -> bool:
    """True if an ``x-api-key`` header (Anthropic's form) carries ``key`` (constant time)."""
    value = value.strip()
    return bool(value) and hmac.compare_digest(value.encode("utf-8"), key.encode("utf-8"))


def _auth_check(key: str) -> Response | None:
    if request.method in ("GET", "HEAD") and request.path == "/":
        return None  # the CLI's heartbeat and load balancers' probes stay open
    if bearer_matches(request.headers.get("Authorization", ""), key):
        return None
    if key_matches(request.headers.get("x-api-key", ""), key):
        return None  # Anthropic's clients send the key this way
    response = error_response("unauthorized", 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="mlx-ollama-bridge"'
    return response


# -- wiring ----------------------------------------------------------------------------------


def register_security(app: Flask, settings: Settings) -> None:
    """Install the CORS, Host and API-key guards (idempotent: a second call does nothing)."""
    if app.extensions.get(_REGISTERED):
        return
    app.extensions[_REGISTERED] = True
    policy = OriginPolicy.from_origins(settings.origins)  # bad entries: exposure_warnings
    check_host = settings.host.is_loopback  # on other binds every Host is accepted
    hostname = socket.gethostname()
    key = api_key(settings)

    @app.before_request
    def _guard() -> Response | None:
        response = _cors(policy)
        if response is None and check_host:
            response = _host_check(hostname)
        if response is None and key is not None:
            response = _auth_check(key)
        return response

    app.after_request(_add_cors_headers)


def exposure_warnings(settings: Settings) -> list[str]:
    """Warnings for ``serve`` to log at startup about who can reach the server."""
    warnings = []
    if not settings.host.is_loopback:
        where = settings.host.bind
        if api_key(settings) is None:
            warnings.append(
                f"SERVER IS OPEN TO THE NETWORK: listening on {where} without an API key; "
                "anyone who can reach this address can use your models and your upstream "
                f"Ollama. Set {API_KEY_ENV} or bind to 127.0.0.1."
            )
        else:
            warnings.append(
                f"listening on {where}: reachable from other machines (API key required; "
                "traffic is plain HTTP, so use it only on a network you trust)"
            )
    policy = OriginPolicy.from_origins(settings.origins)
    if policy.allow_all:
        warnings.append("OLLAMA_ORIGINS=*: any web page you visit can call this server")
    warnings.extend(
        f"ignoring bad origin in OLLAMA_ORIGINS: {entry!r} (needs a scheme like http:// or a *)"
        for entry in policy.rejected
    )
    return warnings


def _empty(status: int) -> Response:
    """A response with no body and no Content-Type, as gin's AbortWithStatus sends."""
    response = Response(status=status)
    del response.headers["Content-Type"]
    return response


__all__ = [
    "ALLOW_HEADERS",
    "ALLOW_METHODS",
    "API_KEY_ENV",
    "BUILTIN_ORIGINS",
    "MAX_AGE_S",
    "OriginPolicy",
    "api_key",
    "bearer_matches",
    "canonical_header",
    "exposure_warnings",
    "host_allowed",
    "key_matches",
    "register_security",
]
