"""Small helpers shared by the file-based backends (output scanning, messages)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_text", "tail"]


def read_text(path: Path) -> str:
    """File content as text ('' if missing); undecodable bytes are replaced."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def tail(text: str, lines: int = 15) -> str:
    """The last non-empty ``lines`` lines of ``text``."""
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])
