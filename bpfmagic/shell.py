"""The session of the running shell: the one the magics use, made on first
use and dropped when the extension unloads. Its own module so that the
magics reach it without importing the package (no import circle)."""

from __future__ import annotations

from .session import Session

_session: Session | None = None
hooks: list = []  # run with each new shell session: the magics apply their %config once


def session() -> Session:
    """The session of the running shell (created on first use)."""
    global _session
    if _session is None or _session.closed:
        _session = Session()
        for hook in list(hooks):
            hook(_session)
    return _session


def current() -> Session | None:
    """The shell's session if there is a live one (nothing is created)."""
    return _session if _session is not None and not _session.closed else None


def drop() -> None:
    """Close the shell's session and forget it (the next session() makes a new one)."""
    global _session
    if _session is not None:
        _session.close()
        _session = None
