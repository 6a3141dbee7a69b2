"""Why a pull failed, in words a user can act on: the cause and the fix.

``huggingface_hub`` raises a different class per cause (gated, missing, offline …), and the
HTTP library underneath raises its own for network trouble; each becomes one sentence.
"""

from __future__ import annotations

import errno
from pathlib import Path

from ..errors import BridgeError
from .hub_http import HubRefused, hub_endpoint

_NETWORK_ERRORS = {
    "ConnectError",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "ReadError",
    "TimeoutException",
    "Timeout",
    "RemoteProtocolError",
    "NetworkError",
    "ProxyError",
}
OFFLINE = "HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it and restart the bridge"
_LOGIN = "log in with `hf auth login` or set HF_TOKEN for the bridge, then pull again"


class PullError(BridgeError):
    """A pull that could not finish; the message says why and what to do."""

    status_code = 500


def explain(exc: BaseException, repo: str, revision: str, cache: Path) -> str:
    """One line for ``{"error": …}``: cause and fix."""
    from huggingface_hub import utils as hf

    endpoint = hub_endpoint()
    page = f"{endpoint}/{repo}"
    refused = next((e for e in _chain(exc) if isinstance(e, HubRefused)), None)
    if refused is not None:
        return f"pull of {repo} stopped, an answer of {endpoint} was refused: {refused}"
    if isinstance(exc, getattr(hf, "GatedRepoError", ())):
        return f"{repo} is gated: accept its terms at {page} with your account, then {_LOGIN}"
    if isinstance(exc, getattr(hf, "RevisionNotFoundError", ())):
        return f"pull model manifest: revision {revision!r} not found in {repo} ({page})"
    if isinstance(exc, getattr(hf, "RepositoryNotFoundError", ())):
        return (
            f"pull model manifest: {repo} not found on {endpoint}: check the name; "
            f"if the repo is private, {_LOGIN}"
        )
    if isinstance(exc, getattr(hf, "LocalEntryNotFoundError", ())) and not _offline_refusal(exc):
        return (
            f"cannot reach {endpoint} ({_root(exc)}): check the network connection (or "
            "HF_ENDPOINT and proxy settings), then pull again: it resumes where it stopped"
        )
    if isinstance(exc, _entry_errors(hf)):
        return f"a file of {repo}@{revision} disappeared from {endpoint} during the pull: {exc}"
    if isinstance(exc, getattr(hf, "OfflineModeIsEnabled", ())) or _offline_refusal(exc):
        return OFFLINE
    if _disk_full(exc):
        return (
            f"disk full while downloading {repo} into {cache}: free some space or point "
            "HF_HUB_CACHE at a bigger disk, then pull again (finished files are kept)"
        )
    if _network(exc):
        return (
            f"cannot reach {endpoint} ({_root(exc)}): check the network connection (or "
            "HF_ENDPOINT and proxy settings), then pull again: it resumes where it stopped"
        )
    if isinstance(exc, getattr(hf, "HfHubHTTPError", ())):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        if status in (401, 403):
            return f"{endpoint} refused access to {repo} (HTTP {status}): {_LOGIN}"
        return f"{endpoint} answered HTTP {status} for {repo}: {_first_line(exc)}; try again later"
    return f"pull failed: {type(exc).__name__}: {_first_line(exc)}"


def _entry_errors(hf) -> tuple[type, ...]:
    names = ("RemoteEntryNotFoundError", "EntryNotFoundError")
    return tuple(getattr(hf, n) for n in names if isinstance(getattr(hf, n, None), type))


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _disk_full(exc: BaseException) -> bool:
    return any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in _chain(exc))


def _network(exc: BaseException) -> bool:
    for error in _chain(exc):
        names = {cls.__name__ for cls in type(error).__mro__}
        if names & _NETWORK_ERRORS or isinstance(error, (ConnectionError, TimeoutError)):
            return True
    return False


def _offline_refusal(exc: BaseException) -> bool:
    return any("offline" in str(e).lower() and "HF_HUB_OFFLINE" in str(e) for e in _chain(exc))


def _root(exc: BaseException) -> str:
    errors = list(_chain(exc))
    return _first_line(errors[-1])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["OFFLINE", "PullError", "explain"]
