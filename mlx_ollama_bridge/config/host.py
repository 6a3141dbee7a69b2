"""``OLLAMA_HOST``: where the server listens and where clients connect, parsed as Ollama does."""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

from .values import OFF_WORDS, trim

log = logging.getLogger(__name__)

DEFAULT_PORT = 11434
_PORT = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class HostAddress:
    """Where the server listens (and where clients connect): Ollama's ``OLLAMA_HOST``."""

    scheme: str = "http"
    host: str = "127.0.0.1"  # "" = every interface
    port: int = DEFAULT_PORT
    path: str = ""  # base path with a leading "/", for clients behind a proxy

    def __str__(self) -> str:
        """The URL as Ollama prints it, e.g. ``http://:1234`` for an empty host."""
        return f"{self.scheme}://{_join_host_port(self.host, self.port)}{self.path}"

    @property
    def url(self) -> str:
        """Base URL a client should use: unspecified addresses become loopback."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"{self.scheme}://{_join_host_port(host, self.port)}{self.path}"

    @property
    def bind(self) -> str:
        """Address for gunicorn's ``bind``: ``127.0.0.1:11434``, ``[::1]:11434``."""
        return _join_host_port(self.host or "0.0.0.0", self.port)

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_ollama_host(value: str | None) -> HostAddress:
    """Parse ``OLLAMA_HOST`` exactly as Ollama's ``envconfig.Host()`` does.

    ``[scheme://]host[:port][/path]``: scheme ``http`` (default port 11434 without a scheme,
    80 with ``http://``, 443 with ``https://``); bare IPv6 with or without brackets; empty
    host = all interfaces; an invalid port falls back to the default with a warning; the
    bare value ``ollama.com`` means ``https://ollama.com:443``.
    """
    text = trim(value or "").strip()
    default_port = str(DEFAULT_PORT)
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme in ("http", "https"):
        default_port = "80" if scheme == "http" else "443"
    hostport, slash, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port_text = "127.0.0.1", default_port
        if (ip := _parse_ip(hostport.strip("[]"))) is not None:
            host = ip
        elif hostport:
            host = hostport
    else:
        host, port_text = split
    port = int(port_text) if _PORT.fullmatch(port_text) else -1
    if not 0 <= port <= 65535:
        log.warning("invalid port, using default port=%s default=%s", port_text, default_port)
        port = int(default_port)
    return HostAddress(scheme, host, port, "/" + path if slash and path else "")


def parse_upstream(text: str) -> str | None:
    """``MLX_BRIDGE_UPSTREAM``: an ``OLLAMA_HOST``-style address -> base URL; ``off`` -> None."""
    if text.strip().lower() in OFF_WORDS:
        return None
    return parse_ollama_host(text).url


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: (host, port) or None where Go returns an error."""
    colon = hostport.rfind(":")
    if colon < 0:
        return None  # missing port
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 != colon:
            return None  # missing ']', missing port or too many colons
        host, start_bracket, start_close = hostport[1:end], 1, end + 1
    else:
        host, start_bracket, start_close = hostport[:colon], 0, 0
        if ":" in host:
            return None  # too many colons
    if "[" in hostport[start_bracket:] or "]" in hostport[start_close:]:
        return None
    return host, hostport[colon + 1 :]


def _parse_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(text).String()``, or None if ``text`` is not an IP literal."""
    if "%" in text:
        return None  # Go's ParseIP takes no IPv6 zone
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["DEFAULT_PORT", "HostAddress", "parse_ollama_host", "parse_upstream"]
