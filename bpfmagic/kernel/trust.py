"""Which directories another local user could use to steer what root does: a
directory that user owns, or one they can write without the sticky bit, lets
them rename or replace what is in it."""

from __future__ import annotations

import os
import stat


def swappable_level(path: str) -> str | None:
    """The first of PATH and its ancestors (resolved) in which a user other than root and
    this one could rename or replace an entry; None when every level is safe."""
    trusted = {0, os.geteuid()}
    level = os.path.realpath(path)
    while True:
        st = os.stat(level)
        if st.st_uid not in trusted or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            return level
        if level == "/":
            return None
        level = os.path.dirname(level)
