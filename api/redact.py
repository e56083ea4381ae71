"""Free text the API shows to every reader, without server paths or token names.

Status messages, run messages and DFT failure messages come from exceptions and from the
workflow; they may name files on the server (``/srv/pesflow/data/campaigns/x/models/...``,
the SQLite file) and, in rows written by older versions, the token that paused or queued a
campaign (``paused via API by alice``). :func:`public_text` keeps the message and drops both:
an absolute path becomes ``…/<last part>``, and ``<verb> via API by <name>`` becomes
``<verb> via API``. The output schemas apply it (:data:`PublicText`), so every route and the
dashboard show the same text; the full text stays in the server's logs and database.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["PublicText", "public_text"]

_PART = r"[^\s/'\"`<>|;,()\[\]{}]"
# an absolute path at the start or after a space, quote, bracket, '=' or ','; not inside a URL
_ABS_PATH = re.compile(rf"(?<![^\s'\"(\[=<,])/+(?:{_PART}+/+)+({_PART}*)")
_SQLITE_URL = re.compile(rf"(sqlite[+\w]*:///)/*(?:{_PART}+/+)*({_PART}*)")
_BY_TOKEN = re.compile(r"((?:queued|paused|cancelled|resumed) via API) by \S.*", re.DOTALL)


def public_text(text: str | None) -> str | None:
    """``text`` without absolute server paths and API token names (module docstring)."""
    if not text:
        return text
    by = _BY_TOKEN.fullmatch(text)
    if by is not None:
        text = by.group(1)
    text = _SQLITE_URL.sub(lambda m: f"{m.group(1)}…/{m.group(2)}", text)
    return _ABS_PATH.sub(lambda m: f"…/{m.group(1)}", text)


PublicText = Annotated[str | None, AfterValidator(public_text)]
"""An output field whose text goes through :func:`public_text`."""
