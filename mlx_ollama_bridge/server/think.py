"""Ollama's ``think`` field: ``true``/``false`` or a level, ``"low"`` … ``"max"``.

As Ollama's ``api.ThinkValue``: any other string is a 400 naming the valid values; a level
turns thinking on (on a model without the ``thinking`` capability that is the usual
"does not support thinking" 400); an unset ``think`` on a thinking model means ``true``.
What a level does is up to the model's template: the bridge hands it to the Jinja chat
template as ``reasoning_effort`` (gpt-oss's variable; ``max`` is given as ``high``, the top
of that scale, as Ollama does for gpt-oss), and templates that have no levels just think.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import BadRequest

LEVELS = ("high", "medium", "low", "max")


def check_think(value: Any) -> bool | str | None:
    """``think`` as sent, checked: None, a bool or one of :data:`LEVELS`."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in LEVELS:
            raise BadRequest(
                f'invalid think value: "{value}" (must be "high", "medium", "low", "max", '
                "true, or false)"
            )
        return value
    raise BadRequest(
        'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'
    )


def resolved_think(capabilities: Sequence[str], value: Any) -> bool | None:
    """Ollama's rule: on a thinking model an unset ``think`` means true, a level means true;
    on other models it is not used (None)."""
    if "thinking" not in capabilities:
        return None
    return True if value is None else bool(value)


def think_level(capabilities: Sequence[str], value: Any) -> str | None:
    """The level a thinking model's template is given, or None (no level asked)."""
    if "thinking" not in capabilities or not isinstance(value, str):
        return None
    return value


__all__ = ["LEVELS", "check_think", "resolved_think", "think_level"]
