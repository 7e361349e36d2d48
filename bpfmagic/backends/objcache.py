"""Compiled --core objects and the precompiled vmlinux.h, kept between runs.

Most of a --core compile is clang parsing the 3 MB vmlinux.h: a precompiled
header (built once per kernel build, beside vmlinux.h) takes that away. An
unchanged re-run compiles nothing at all: the object is cached under a key
made of everything that changes clang's output (the text, the command line,
clang's version, vmlinux.h) and is used only while every file the compile
read holds what it held (clang's dependency list; compared by content hash,
since `cp -p` and `rsync -t` keep size and time across a change).

The cache is trusted only when it is the user's own (cache.py: every level
owned by the user and writable by no one else, else rebuilt; files 0600,
written atomically); an object whose hash does not match its record is
compiled again."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile

from ..errors import EnvironmentProblem
from ..kernel import cache

OBJECTS = "objects"
MAX_ENTRIES = 256  # objects kept; the oldest go first


def objects_dir() -> str | None:
    """The object cache directory (trusted, rebuilt when not: cache.py), None when it cannot be had."""
    try:
        return cache.trusted_dir(OBJECTS)
    except (EnvironmentProblem, OSError):
        return None


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dependencies(depfile: str, cwd: str) -> list[str]:
    """Files a compile read, from clang's -MD output (make syntax)."""
    try:
        with open(depfile) as f:
            text = f.read().replace("\\\n", " ")
    except OSError:
        return []
    _, _, deps = text.partition(":")
    out = []
    for word in deps.replace("\\ ", "\0").split():
        path = word.replace("\0", " ")
        if path != "-" and not path.startswith("<"):
            out.append(os.path.normpath(os.path.join(cwd, path)))
    return out


def _fingerprint(path: str) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _file_digest(path)}


def _unchanged(path: str, recorded: dict) -> bool:
    """The file holds what it held: by its content, never by size and time alone (`cp -p`
    and `rsync -t` keep both across a change). A few MB hash in milliseconds."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != recorded["size"]:
        return False
    try:
        return _file_digest(path) == recorded["sha256"]
    except OSError:
        return False


def key(text: str, cmd: list[str], clang_version: str) -> str:
    h = hashlib.sha256()
    for part in (text, "\0".join(cmd), clang_version):
        h.update(part.encode())
        h.update(b"\0\0")
    return h.hexdigest()


def lookup(cache_key: str) -> tuple[bytes, str] | None:
    """(object, clang's warnings) of an earlier identical compile, or None."""
    directory = objects_dir()
    if directory is None:
        return None
    base = os.path.join(directory, cache_key)
    raw_meta, obj = cache.read_trusted(base + ".json"), cache.read_trusted(base + ".o")
    if raw_meta is None or obj is None:
        return None
    try:
        meta = json.loads(raw_meta)
    except ValueError:
        return None
    if hashlib.sha256(obj).hexdigest() != meta.get("object_sha256"):
        return None  # damaged: compile again (and overwrite)
    if not all(_unchanged(path, rec) for path, rec in meta.get("inputs", {}).items()):
        return None
    with _suppress():  # another session may have trimmed it meanwhile: the object read stands
        os.utime(base + ".json")  # recently used: kept longest
    return obj, meta.get("warnings", "")


def store(cache_key: str, obj: bytes, warnings: str, depfile: str, cwd: str, skip: set[str]) -> None:
    """Remember OBJ; ``skip``: inputs that are part of the key already (the cell's own file)."""
    directory = objects_dir()
    if directory is None:
        return
    inputs = {}
    for path in _dependencies(depfile, cwd):
        if path in skip:
            continue
        fp = _fingerprint(path)
        if fp is None:
            return  # an input that is gone already: nothing safe to record
        inputs[path] = fp
    meta = {"object_sha256": hashlib.sha256(obj).hexdigest(), "warnings": warnings, "inputs": inputs}
    cache.write_file(directory, cache_key + ".o", obj)
    cache.write_file(directory, cache_key + ".json", json.dumps(meta).encode())
    _trim(directory)


def _trim(directory: str) -> None:
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".json")]
    except OSError:
        return
    if len(entries) <= MAX_ENTRIES:
        return

    def used(entry) -> float:
        try:
            return entry.stat().st_mtime
        except OSError:  # trimmed by another session between the listing and now
            return 0.0

    entries.sort(key=used)
    for e in entries[: len(entries) - MAX_ENTRIES]:
        for suffix in (".json", ".o"):
            with _suppress():
                os.unlink(os.path.join(directory, e.name[:-5] + suffix))


_CLANG_VERSIONS: dict[str, str] = {}


def clang_version(clang: str) -> str:
    if clang not in _CLANG_VERSIONS:
        res = subprocess.run([clang, "--version"], capture_output=True, text=True)
        _CLANG_VERSIONS[clang] = res.stdout
    return _CLANG_VERSIONS[clang]


def precompiled_vmlinux(clang: str, header_dir: str, flags: list[str]) -> str | None:
    """vmlinux.h precompiled with FLAGS (target, -g, -O2: what a PCH must match),
    beside vmlinux.h; built on first use. None when it cannot be (then clang
    parses vmlinux.h as usual)."""
    header = os.path.join(header_dir, "vmlinux.h")
    tag = hashlib.sha256(("\0".join(flags) + clang_version(clang)).encode()).hexdigest()[:16]
    pch = os.path.join(header_dir, f"vmlinux.h.{tag}.pch")
    if not cache.is_trusted(header_dir):
        return None
    if os.path.exists(pch) and os.stat(pch).st_mtime_ns >= os.stat(header).st_mtime_ns:
        return pch
    fd, tmp = tempfile.mkstemp(dir=header_dir, prefix=".tmp-", suffix=".pch")
    os.close(fd)
    res = subprocess.run([clang, *flags, "-x", "c-header", header, "-o", tmp], capture_output=True, text=True)
    if res.returncode != 0:
        with _suppress():
            os.unlink(tmp)
        return None
    os.chmod(tmp, 0o600)
    os.replace(tmp, pch)
    return pch
