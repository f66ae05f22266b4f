"""The error every bad experiment config raises, and the "did you mean" its messages suggest."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any


class ConfigError(ValueError):
    """An invalid experiment config; the message names the key by its dotted path and says how to fix it."""


def did_you_mean(key: Any, candidates: Sequence[str] | Mapping[str, Any]) -> str:
    """`` (did you mean '<closest candidate>'?)`` for `key`, or "" when no candidate is close."""
    matches = difflib.get_close_matches(str(key), list(candidates), n=1)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


__all__ = ["ConfigError", "did_you_mean"]
