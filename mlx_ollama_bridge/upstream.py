"""A real Ollama running next to the bridge (``MLX_BRIDGE_UPSTREAM``, default ``127.0.0.1:11435``).

The bridge may own 11434 and hand whatever it cannot serve to that Ollama. This module knows
only HTTP (``requests``), no Flask: whether upstream is up (a probe cached for a few seconds,
so a dead upstream costs one refused connection now and then, not one per request), opening
a streamed request to it, and reading a small JSON answer with short timeouts.

Every request the bridge sends upstream carries :data:`LOCAL_ONLY_HEADER`: a bridge receiving
it answers from its own models only. That stops forwarding loops (two bridges pointing at each
other) and lets ``mlx-ollama-bridge switch mlx`` ask the bridge for MLX models alone.

What comes back is bounded (the class of Ollama's CVE-2024-12886, gzip bombs): requests ask
for ``identity`` encoding, redirects are never followed (the bridge talks to the configured
address only), and bodies are counted after decompression: a JSON answer (probe, merged
lists) is read up to :data:`MAX_JSON_BYTES`, a relayed answer up to :data:`MAX_RELAY_BYTES`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests

from .client import is_loopback_url
from .config import Settings

log = logging.getLogger(__name__)

LOCAL_ONLY_HEADER = "X-MLX-Bridge-Local-Only"
CONNECT_TIMEOUT_S = 1.5  # loopback connects in microseconds; longer means nobody is there
PROBE_READ_TIMEOUT_S = 2.0  # GET /api/version and the merged listings: a hung Ollama is "down"
LIST_READ_TIMEOUT_S = 3.0
UP_TTL_S = 5.0  # how long a probe result is trusted (MLX_BRIDGE_UPSTREAM_CHECK_S)
DOWN_TTL_S = 3.0  # at most
CHUNK_BYTES = 64 * 1024
MAX_JSON_BYTES = 8 << 20  # /api/tags of a thousand models is well under 1 MB
MAX_RELAY_BYTES = 1 << 30  # a forwarded answer, decompressed: far above any real one
_IDENTITY = {"Accept-Encoding": "identity"}


class AnswerTooLarge(ValueError):
    """An upstream body (decompressed) over its cap."""


class UpstreamUnavailable(Exception):
    """Upstream could not be reached or stopped answering; ``connected`` says how far it got."""

    def __init__(self, message: str, *, connected: bool) -> None:
        super().__init__(message)
        self.connected = connected


@dataclass
class _Probe:
    up: bool
    version: str
    checked_at: float  # time.monotonic()


class Upstream:
    """One upstream Ollama at ``base_url`` (no trailing slash)."""

    def __init__(
        self, base_url: str, *, read_timeout_s: float | None = 300.0, check_s: float = UP_TTL_S
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.check_s = check_s  # how long an "up" probe is trusted; a "down" one at most 3 s
        # for messages to clients: never the credentials a URL may carry
        self.public_url = re.sub(r"(?<=://)[^/@]*@", "", self.base_url)
        self.read_timeout_s = read_timeout_s  # longest silence between two chunks; None = none
        self._session = requests.Session()
        # As Go's ProxyFromEnvironment: HTTP(S)_PROXY never applies to a loopback Ollama.
        self._session.trust_env = not is_loopback_url(self.base_url)
        self._lock = threading.Lock()
        self._probe: _Probe | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Upstream | None:
        """The configured upstream, or None when it is off or would be the bridge itself."""
        if not settings.upstream:
            return None
        if _same_address(settings.upstream, settings.host.url):
            log.warning("upstream is the bridge's own address, disabled url=%s", settings.upstream)
            return None
        # A model load upstream can be silent for as long as Ollama's own load timeout.
        read = settings.load_timeout_s if settings.load_timeout_s != float("inf") else None
        return cls(settings.upstream, read_timeout_s=read, check_s=settings.upstream_check_s)

    # -- liveness ---------------------------------------------------------------------------

    def is_up(self) -> bool:
        """True if upstream answered ``GET /api/version`` recently (probed at most every few s)."""
        with self._lock:  # concurrent callers share one probe instead of each sending one
            probe = self._probe
            now = time.monotonic()
            trusted = self.check_s if probe and probe.up else min(DOWN_TTL_S, self.check_s)
            if probe is None or now - probe.checked_at > trusted:
                probe = self._probe = self._run_probe()
            return probe.up

    def mark_down(self) -> None:
        """Remember a failed connection so the next requests do not try again at once."""
        with self._lock:
            self._probe = _Probe(False, "", time.monotonic())

    def _run_probe(self) -> _Probe:
        try:
            reply = self._session.get(
                self.base_url + "/api/version",
                headers={LOCAL_ONLY_HEADER: "1", **_IDENTITY},
                timeout=(CONNECT_TIMEOUT_S, PROBE_READ_TIMEOUT_S),
                allow_redirects=False,
                stream=True,
            )
            up = reply.status_code == 200
            version = str(json.loads(read_capped(reply, 64 << 10)).get("version", "")) if up else ""
        except (requests.RequestException, ValueError, AttributeError) as exc:
            log.debug("upstream probe failed url=%s error=%s", self.base_url, exc)
            up, version = False, ""
        if self._probe is None or self._probe.up != up:
            log.info(
                "upstream %s url=%s version=%s", "up" if up else "down", self.base_url, version
            )
        return _Probe(up, version, time.monotonic())

    # -- requests ---------------------------------------------------------------------------

    def get_json(self, path: str) -> Any:
        """``GET path`` as JSON with short timeouts; None if upstream is down or answers badly."""
        if not self.is_up():
            return None
        try:
            reply = self._session.get(
                self.base_url + path,
                headers={LOCAL_ONLY_HEADER: "1", **_IDENTITY},
                timeout=(CONNECT_TIMEOUT_S, LIST_READ_TIMEOUT_S),
                allow_redirects=False,
                stream=True,
            )
            if reply.status_code != 200:
                reply.close()
                raise ValueError(f"HTTP {reply.status_code}")
            return json.loads(read_capped(reply, MAX_JSON_BYTES))
        except (requests.RequestException, ValueError) as exc:
            log.warning("upstream request failed path=%s error=%s", path, exc)
            if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                self.mark_down()
            return None

    def open(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> requests.Response:
        """Send a request upstream and return as soon as its status and headers arrive.

        ``path`` includes any query string. The body is read later with :func:`iter_body`.
        Raises :class:`UpstreamUnavailable` (and marks upstream down if nothing connected).
        """
        try:
            return self._session.request(
                method,
                self.base_url + path,
                data=body or None,
                headers={**headers, LOCAL_ONLY_HEADER: "1", **_IDENTITY},
                stream=True,
                timeout=(CONNECT_TIMEOUT_S, self.read_timeout_s),
                allow_redirects=False,
            )
        except requests.ReadTimeout as exc:  # connected, but no status line in time
            raise UpstreamUnavailable(_reason(exc), connected=True) from exc
        except requests.RequestException as exc:  # refused, connect timeout, dropped
            self.mark_down()
            raise UpstreamUnavailable(_reason(exc), connected=False) from exc


def iter_body(response: requests.Response, limit: int | None = None) -> Iterator[bytes]:
    """The response body chunk by chunk as it arrives (never waits to fill a buffer).

    Raises :class:`UpstreamUnavailable` if upstream goes silent (read timeout), drops the
    connection or sends more than ``limit`` bytes once decompressed (default
    :data:`MAX_RELAY_BYTES`); always closes the response, also when the consumer stops early.
    """
    limit = MAX_RELAY_BYTES if limit is None else limit
    seen = 0
    try:
        # read1-style reads: each chunk is handed on as soon as it is on the socket.
        for chunk in response.raw.stream(CHUNK_BYTES, decode_content=True):
            seen += len(chunk)
            if seen > limit:
                raise AnswerTooLarge(f"answer larger than {limit} bytes")
            if chunk:
                yield chunk
    except AnswerTooLarge as exc:
        raise UpstreamUnavailable(str(exc), connected=True) from exc
    except Exception as exc:  # urllib3's and requests' errors share no useful base class
        raise UpstreamUnavailable(_reason(exc), connected=True) from exc
    finally:
        response.close()


def read_capped(response: requests.Response, limit: int) -> bytes:
    """The whole body, decompressed, or :class:`AnswerTooLarge` past ``limit`` bytes."""
    parts, seen = [], 0
    try:
        for chunk in response.raw.stream(CHUNK_BYTES, decode_content=True):
            seen += len(chunk)
            if seen > limit:
                raise AnswerTooLarge(f"upstream answer larger than {limit} bytes")
            parts.append(chunk)
    except AnswerTooLarge:
        raise
    except Exception as exc:  # urllib3's read errors are not requests' exceptions
        raise requests.ConnectionError(_reason(exc)) from exc
    finally:
        response.close()
    return b"".join(parts)


def rfc3339_seconds(value: Any) -> float:
    """Seconds since the epoch of an RFC 3339 time (Go's 9-digit fractions too); 0 if bad."""
    if not isinstance(value, str):
        return 0.0
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python < 3.11 reads at most 6 fraction digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _reason(exc: BaseException) -> str:
    """A short reason for logs and error messages (requests' texts nest several layers)."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


def _same_address(url_a: str, url_b: str) -> bool:
    return url_a.rstrip("/").lower() == url_b.rstrip("/").lower()


__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_JSON_BYTES",
    "MAX_RELAY_BYTES",
    "AnswerTooLarge",
    "LOCAL_ONLY_HEADER",
    "Upstream",
    "UpstreamUnavailable",
    "iter_body",
    "read_capped",
    "rfc3339_seconds",
]
