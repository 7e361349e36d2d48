"""The user's cache, ``$XDG_CACHE_HOME/bpfmagic`` (default
``~/.cache/bpfmagic``): kernel headers trees for BCC, vmlinux.h for --core.

What is cached gets compiled into root's programs, so it is trusted only
when every directory level from ``bpfmagic/`` down is a real directory
owned by the user and writable by no one else; a level that is not is
discarded and rebuilt (the caches are cheap to remake). Everything is
created with explicit modes (0700 directories, 0600 files), whatever the
umask, and files are written atomically. Damage (a truncated vmlinux.h) is
found by a stamp of the content's hash and repaired the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
import tempfile

from ..errors import EnvironmentProblem

DIR_MODE = 0o700
FILE_MODE = 0o600


def base_dir() -> str:
    """``$XDG_CACHE_HOME`` or ``~/.cache``: the directory the cache lives in."""
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def cache_dir(*parts: str) -> str:
    return os.path.join(base_dir(), "bpfmagic", *parts)


def _who(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def untrusted_reason(st: os.stat_result, kind: str = "dir") -> str | None:
    """Why an lstat result is not a cache entry to trust, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"belongs to {_who(st.st_uid)}"
    if st.st_mode & 0o022:
        return f"is writable by {'others' if st.st_mode & 0o002 else 'its group'} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def is_trusted(path: str, kind: str = "dir") -> bool:
    try:
        return untrusted_reason(os.lstat(path), kind) is None
    except OSError:
        return False


def levels_trusted(*parts: str) -> bool:
    """Every level of cache_dir(*parts) exists and is trusted (changes nothing)."""
    path = cache_dir()
    for part in ("", *parts):
        path = os.path.join(path, part) if part else path
        if not is_trusted(path):
            return False
    return True


def _check_base(base: str) -> None:
    """The directory holding bpfmagic/ must not let another user swap it:
    ours or root's, and writable by others only if sticky (like /tmp)."""
    st = os.stat(base)  # ~/.cache may be a link to a directory of the user's: followed
    if st.st_uid not in (os.geteuid(), 0):
        raise EnvironmentProblem(
            f"cache directory {base} belongs to {_who(st.st_uid)}: bpfmagic keeps no cache there; set XDG_CACHE_HOME to a directory of yours"
        )
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise EnvironmentProblem(
            f"cache directory {base} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
            f"`chmod go-w {base}` or set XDG_CACHE_HOME to a directory of yours"
        )


def make_dir(path: str) -> None:
    """mkdir PATH with mode 0700 whatever the umask."""
    os.mkdir(path, DIR_MODE)
    os.chmod(path, DIR_MODE)


def discard(path: str) -> None:
    """Remove PATH (a file, link or tree): first renamed aside, so nothing
    half-removed stays under its name; the tree removal never follows links."""
    parent, name = os.path.split(path)
    aside = tempfile.mkdtemp(prefix=f".{name}.discarded.", dir=parent)
    os.rename(path, os.path.join(aside, name))
    shutil.rmtree(aside, ignore_errors=True)


def trusted_dir(*parts: str) -> str:
    """cache_dir(*parts), made where missing and rebuilt (emptied) at every
    level that is not trusted. EnvironmentProblem when that cannot be done."""
    base = base_dir()
    try:
        os.makedirs(base, DIR_MODE, exist_ok=True)
    except OSError as e:
        raise unwritable(e) from None
    _check_base(base)
    path = base
    for part in ("bpfmagic", *parts):
        path = os.path.join(path, part)
        try:
            reason = untrusted_reason(os.lstat(path))
        except FileNotFoundError:
            reason = ""
        if reason:
            try:
                discard(path)
            except OSError as e:
                raise EnvironmentProblem(
                    f"cache directory {path} {reason}, and bpfmagic could not remove it ({e.strerror}): remove it (`rm -rf {path}`)"
                ) from None
        if reason is not None:
            try:
                make_dir(path)
            except FileExistsError:  # a concurrent session made it: check it once more
                reason = untrusted_reason(os.lstat(path))
                if reason:
                    raise EnvironmentProblem(f"cache directory {path} {reason}: remove it (`rm -rf {path}`)") from None
            except OSError as e:
                raise unwritable(e) from None
    return path


def unwritable(e: OSError) -> EnvironmentProblem:
    """The cache cannot be made where it goes (HOME=/nonexistent, as system users like
    nobody have; a read-only home): where that is, why, and how to put it elsewhere."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    where = f"XDG_CACHE_HOME is {xdg}" if xdg else f"XDG_CACHE_HOME is not set and HOME is {os.environ.get('HOME') or os.path.expanduser('~')}"
    return EnvironmentProblem(
        f"bpfmagic keeps its caches (vmlinux.h and compiled objects for --core, the merged kernel headers for BCC) in "
        f"{cache_dir()} ({where}), and cannot create {e.filename or cache_dir()}: {e.strerror}. Set XDG_CACHE_HOME to a "
        "directory this user can write: `export XDG_CACHE_HOME=/var/tmp/$(id -un)-cache` in the shell that starts Jupyter, "
        "or `os.environ['XDG_CACHE_HOME'] = '/var/tmp/...'` in the notebook before `%load_ext bpfmagic`"
    )


def write_file(directory: str, name: str, data: bytes) -> str:
    """DIRECTORY/NAME := DATA, mode 0600, atomically (readers see the old file or the whole new one)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        with _ignore():
            os.unlink(tmp)
        raise
    return os.path.join(directory, name)


def read_trusted(path: str) -> bytes | None:
    """The content of PATH if it is a trusted file (else None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if untrusted_reason(os.fstat(f.fileno()), "file"):
            return None
        return f.read()


def _ignore():
    import contextlib

    return contextlib.suppress(OSError)


# ------------------------------------------------------------ vmlinux.h

VMLINUX_H = "vmlinux.h"
# vmlinux.h's hash, and its size, mtime and inode as written: a file whose
# stat still matches is the one hashed (cheap on every compile); any other
# (truncated, rewritten) is hashed again, and redone unless the hash holds.
VMLINUX_STAMP = "vmlinux.h.stamp"


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _stamp(directory: str, digest: str) -> None:
    st = os.lstat(os.path.join(directory, VMLINUX_H))
    write_file(directory, VMLINUX_STAMP, json.dumps({"sha256": digest, "file": _identity(st)}).encode())


def vmlinux_intact(directory: str) -> bool:
    header = os.path.join(directory, VMLINUX_H)
    try:
        st = os.lstat(header)
        stamp = json.loads(read_trusted(os.path.join(directory, VMLINUX_STAMP)) or b"null")
    except (OSError, ValueError):
        return False
    if untrusted_reason(st, "file") or not isinstance(stamp, dict) or not stamp.get("sha256"):
        return False
    if stamp.get("file") == _identity(st):
        return True
    data = read_trusted(header)
    if data is None or hashlib.sha256(data).hexdigest() != stamp["sha256"]:
        return False
    _stamp(directory, stamp["sha256"])  # same content, new identity (copied, touched)
    return True


def vmlinux_dir(dump) -> str:
    """The cache directory holding an intact vmlinux.h of the running kernel;
    ``dump()`` (bytes of vmlinux.h) is called when it is missing or damaged."""
    directory = trusted_dir("vmlinux", platform.release())
    if not vmlinux_intact(directory):
        data = dump()
        write_file(directory, VMLINUX_H, data)
        _stamp(directory, hashlib.sha256(data).hexdigest())
    return directory
