"""Pins under the bpf file system: one directory per process,
/sys/fs/bpf/bpfmagic/<pid>/, with a subdirectory per Session.

/sys/fs/bpf is writable by every user (mode 1777), so anyone can create
/sys/fs/bpf/bpfmagic before us, as a symlink or as a directory of theirs.
The root is therefore opened without following links and trusted only when
it is a directory owned by this process's euid (its mode is then set to
0700); below it, everything is reached through directory fds and nothing
follows a link or leaves the file system.

Liveness is a lock, not a pid (pids of another PID namespace are invisible
or mean someone else): each process holds flock(LOCK_EX) on its own
directory for as long as it lives, so an entry whose lock can be taken is
dead. A reaper child process, woken by EOF on a pipe when this process dies
(SIGKILL included), removes the directory, which frees the pinned maps and
the programs in them without waiting for another session.

The reaper runs this file on its own (no import of the package, nothing of
the kernel process's state): keep it to the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

try:
    from ..errors import EnvironmentProblem
except ImportError:  # run by the reaper as a plain file

    class EnvironmentProblem(Exception):  # type: ignore[no-redef]
        pass


BPFFS = "/sys/fs/bpf"
PIN_ROOT = os.path.join(BPFFS, "bpfmagic")
# A subdirectory that says the entry's owner holds flock on it (bpffs refuses
# dots in names, hence no lock *file*). Entries without it come from an older
# bpfmagic whose liveness was a pid: never judged, never removed.
LOCK_MARK = "flocked"
ENTRY_RE = re.compile(r"^\d+(-\d+)?$")  # <pid>, or <pid>-<n> when another PID namespace has that number
COMPILE_DIR_PREFIX = "bpfmagic-core-"  # core.compile_object's temp directories
COMPILE_DIR_IDLE = 3.0  # seconds without change or user before a dead process's compile dir is removed
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DEPTH = 8  # a session dir holds <session>/calls/<pin>: anything deeper is not ours


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _open_nofollow(path: str) -> int:
    """fd of the directory PATH, reached from / one component at a time, never through a link."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in [p for p in path.split("/") if p]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _untrusted_root(bpffs: int) -> EnvironmentProblem:
    """Why the existing PIN_ROOT is refused, and the command that fixes it."""
    try:
        st = os.stat("bpfmagic", dir_fd=bpffs, follow_symlinks=False)
    except OSError as e:
        return EnvironmentProblem(f"{PIN_ROOT}: {e.strerror}")
    fix = (
        f"It sits directly under the bpffs mount, which only holds pins: as root, `rm -rf {PIN_ROOT}` "
        f"(rm removes a link itself, never what it points to), then start the session again."
    )
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink("bpfmagic", dir_fd=bpffs)
        except OSError:
            target = "?"
        return EnvironmentProblem(
            f"{PIN_ROOT} is a symbolic link (to {target}, made by {_user(st.st_uid)}), not a directory: "
            f"bpfmagic pins nothing through it and removes nothing behind it. {BPFFS} is writable by every "
            f"user, so anyone can plant it. {fix}"
        )
    if not stat.S_ISDIR(st.st_mode):
        return EnvironmentProblem(f"{PIN_ROOT} is not a directory (made by {_user(st.st_uid)}). {fix}")
    if st.st_uid == 0 and os.geteuid() != 0:  # root's sessions use it: removing it would break them
        fix = "Sessions of different users cannot share it: run this one as root, as the sessions pinning there do."
    return EnvironmentProblem(
        f"{PIN_ROOT} belongs to {_user(st.st_uid)}, not to this session's {_user(os.geteuid())}: that user "
        f"could move or remove pins put there, so bpfmagic refuses it. {fix}"
    )


def open_root(create: bool = True) -> int:
    """fd of PIN_ROOT, made (mode 0700) if missing; EnvironmentProblem if it
    is a link, not a directory or someone else's."""
    bpffs = _open_nofollow(BPFFS)
    try:
        if create:
            try:
                os.mkdir("bpfmagic", 0o700, dir_fd=bpffs)
            except FileExistsError:
                pass
        try:
            fd = os.open("bpfmagic", _DIR_FLAGS, dir_fd=bpffs)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _untrusted_root(bpffs) from None
            raise
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            os.close(fd)
            raise _untrusted_root(bpffs)
        if stat.S_IMODE(st.st_mode) != 0o700:  # ours, made under another umask or by an older version
            os.fchmod(fd, 0o700)
        return fd
    finally:
        os.close(bpffs)


NAME_PINS = "by-name"  # a session's maps pinned by name (LIBBPF_PIN_BY_NAME); not an identifier: no array pin is called so


def shared_root(path: str) -> str:
    """PATH, a directory a cell names to share pinned maps on purpose (``--pin-root``), once
    checked: under the bpffs mount, reached without a symbolic link, every directory below
    the mount owned by this user or root and writable by no one else. Otherwise another user
    could pin a map there (or swap the directory) for this session to take. Returns it
    normalized; EnvironmentProblem says what is wrong and what to do."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise EnvironmentProblem(f"--pin-root {path!r}: give an absolute path under {BPFFS}")
    norm = os.path.normpath(path)
    if norm != BPFFS and not norm.startswith(BPFFS + "/"):
        raise EnvironmentProblem(f"--pin-root {path}: pinned maps live in the bpf file system; give a directory under {BPFFS}")
    make = f"as the user that pins the maps: mkdir -m 0700 {BPFFS}/NAME, and pin them there"
    try:
        fd = _open_nofollow(BPFFS)
    except OSError as e:
        raise EnvironmentProblem(f"--pin-root {path}: {BPFFS}: {e.strerror}") from None
    try:
        dev = os.fstat(fd).st_dev
        where = BPFFS
        for part in [p for p in norm[len(BPFFS) :].split("/") if p]:
            where = os.path.join(where, part)
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                why = "a symbolic link or not a directory" if e.errno in (errno.ELOOP, errno.ENOTDIR) else e.strerror
                raise EnvironmentProblem(f"--pin-root {path}: {where} is {why}; {make}") from None
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
            if st.st_dev != dev:
                raise EnvironmentProblem(f"--pin-root {path}: {where} is another file system mounted on {BPFFS}, not its bpffs")
            if st.st_uid not in (0, os.geteuid()):
                raise EnvironmentProblem(f"--pin-root {path}: {where} belongs to {_user(st.st_uid)}, who could swap the maps in it; {make}")
            if st.st_mode & 0o022:
                raise EnvironmentProblem(f"--pin-root {path}: {where} is writable by other users, who could pin maps there for this session; {make}")
        if norm == BPFFS:
            raise EnvironmentProblem(f"--pin-root {BPFFS}: every user can pin there (mode 1777), so a map found there may be anyone's; {make}")
    finally:
        os.close(fd)
    return norm


def remove_pin(path: str) -> None:
    """Unlink the pin PATH (never what a link points to); gone already is fine."""
    with _ignored():
        if not stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode):
            os.unlink(path)


def empty_dir(path: str) -> None:
    """Remove what the directory PATH holds (remove_contents), reached without following links."""
    try:
        fd = _open_nofollow(path)
    except OSError:
        return
    try:
        remove_contents(fd)
    finally:
        os.close(fd)


def make_dir(path: str) -> None:
    """mkdir PATH with mode 0700 whatever the umask (inside the verified pin root)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.stat(path, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise
        return
    os.chmod(path, 0o700, follow_symlinks=False)


def _is_dir(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


# ------------------------------------------------------------ emptying prog arrays
# The kernel empties a prog array when its last user reference goes, but that can race
# with another process taking an fd of it by id (what `bpftool map list` does): the
# array is then never emptied, and it and the programs in it (which hold the array)
# stay loaded for good. So bpfmagic empties its prog arrays itself before letting go
# of them; one leaked that way holds no programs.

BPF_MAP_TYPE_PROG_ARRAY = 3  # MapType.PROG_ARRAY (kernel/maptypes.py), spelled here for the reaper (test_architecture checks they agree)
_bpf: ctypes.CDLL | None = None


def _libbpf() -> ctypes.CDLL:
    """libbpf through ctypes, declared here: the reaper runs this file alone."""
    global _bpf
    if _bpf is None:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError:
            found = ctypes.util.find_library("bpf")
            if not found:
                raise
            lib = ctypes.CDLL(found, use_errno=True)
        lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
        lib.bpf_map_delete_elem.argtypes = [ctypes.c_int, ctypes.c_void_p]
        _bpf = lib
    return _bpf


def empty_prog_array(fd: int) -> int:
    """Delete every slot of the prog array FD, also slots nobody recorded (a
    cell can fill one through BCC's own table); nothing when FD is something
    else. Returns how many slots held a program."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return 0
    if int(info.get("map_type", "-1")) != BPF_MAP_TYPE_PROG_ARRAY:
        return 0
    lib, key, emptied = _libbpf(), ctypes.c_uint32(), 0
    for index in range(int(info["max_entries"])):
        key.value = index
        emptied += lib.bpf_map_delete_elem(fd, ctypes.byref(key)) == 0
    return emptied


def _empty_pinned_prog_array(name: str, dir_fd: int) -> None:
    """Empty the pin NAME in the directory DIR_FD if it is a prog array."""
    try:
        lib = _libbpf()
    except OSError:
        return
    # bpf_obj_get takes a path: the directory's fd as /proc names it, never a path that could have moved
    fd = lib.bpf_obj_get(f"/proc/self/fd/{dir_fd}/{name}".encode())
    if fd < 0:
        return
    try:
        empty_prog_array(fd)
    finally:
        os.close(fd)


def remove_contents(fd: int, depth: int = 0) -> None:
    """Remove what the directory FD holds: links and pins are unlinked (never
    followed; prog arrays emptied first), subdirectories emptied through their
    own fds; mount points, entries of other users and anything deeper than a
    session's layout stay."""
    me, dev = os.geteuid(), os.fstat(fd).st_dev
    for name in os.listdir(fd):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if st.st_uid != me:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_dev == dev:
                _empty_pinned_prog_array(name, fd)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=fd)
                continue
            if st.st_dev != dev or depth >= _MAX_DEPTH:
                continue
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                if os.fstat(sub).st_ino != st.st_ino:
                    continue  # replaced between the two looks
                remove_contents(sub, depth + 1)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=fd)
        except OSError:
            continue


def _remove_entry(root: int, name: str, ino: int | None = None, wait: bool = False) -> bool:
    """Remove the entry NAME of the pin root if its lock can be taken (its
    process is dead). ``ino``: only if it is still that directory. ``wait``:
    block for the lock (the reaper: a forked child may still hold it)."""
    try:
        st = os.stat(name, dir_fd=root, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or (ino is not None and st.st_ino != ino):
            return False
        fd = os.open(name, _DIR_FLAGS, dir_fd=root)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_ino != st.st_ino or not _is_dir(LOCK_MARK, fd):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            return False  # held: the process lives (in whatever PID namespace)
        remove_contents(fd)
        try:
            os.rmdir(name, dir_fd=root)
        except OSError:
            pass
        return True
    finally:
        os.close(fd)


def clean_dead(keep: str | None = None) -> list[str]:
    """Remove the entries of dead processes; returns their names."""
    root = open_root()
    try:
        return [name for name in os.listdir(root) if ENTRY_RE.match(name) and name != keep and _remove_entry(root, name)]
    finally:
        os.close(root)


class ProcessDir:
    """This process's entry under the pin root: locked while the process
    lives, removed by the reaper when it dies."""

    def __init__(self):
        self.pid = os.getpid()
        clean_dead()  # first: a dead entry with our pid number is freed for us
        root = open_root()
        try:
            self.name, self.fd = _claim(root, self.pid)
        finally:
            os.close(root)
        self.path = os.path.join(PIN_ROOT, self.name)
        try:
            self.reaper_pid, self._reaper_pipe = _start_reaper(self.name, os.fstat(self.fd).st_ino)
        except OSError as e:
            import warnings

            warnings.warn(f"bpfmagic: {e}: if this process is killed, its pins stay until the next session starts", RuntimeWarning, stacklevel=2)
            self.reaper_pid, self._reaper_pipe = None, None

    def session_dir(self, serial: int) -> str:
        """A fresh directory (mode 0700) for one Session's pins."""
        name = f"s{serial}"
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
        except FileExistsError:
            pass
        _fchmod_at(self.fd, name, 0o700)  # mkdir's mode is masked by the umask
        return os.path.join(self.path, name)


def _fchmod_at(dir_fd: int, name: str, mode: int) -> None:
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _claim(root: int, pid: int) -> tuple[str, int]:
    """(name, locked fd) of a new entry for this process: <pid>, or <pid>-<n>
    while a live process of another PID namespace holds that name."""
    for n in range(1000):
        name = str(pid) if n == 0 else f"{pid}-{n}"
        try:
            os.mkdir(name, 0o700, dir_fd=root)
            fresh = True
        except FileExistsError:
            fresh = False
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=root)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            st = os.fstat(fd)
            # Still linked under that name (a cleaner may have removed it before we locked),
            # ours, and either new or a dead process's (marked) that we may take over.
            if (
                st.st_ino == os.stat(name, dir_fd=root, follow_symlinks=False).st_ino
                and st.st_uid == os.geteuid()
                and (fresh or _is_dir(LOCK_MARK, fd))
            ):
                remove_contents(fd)
                os.fchmod(fd, 0o700)
                os.mkdir(LOCK_MARK, 0o700, dir_fd=fd)
                return name, fd
        except OSError:
            pass
        os.close(fd)
    raise EnvironmentProblem(f"no free entry for pid {pid} under {PIN_ROOT}")


_process_dir: ProcessDir | None = None
_process_lock = threading.Lock()


def process_dir() -> ProcessDir:
    """This process's ProcessDir (a new one in a forked child)."""
    global _process_dir
    with _process_lock:
        if _process_dir is None or _process_dir.pid != os.getpid():
            _process_dir = ProcessDir()
        return _process_dir


# ------------------------------------------------------------ the reaper

_REAPER_CODE = (
    "import importlib.util as u, sys; s = u.spec_from_file_location('bpfmagic_reaper', sys.argv[1]); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); m.reap(sys.argv[2:])"
)


def _start_reaper(name: str, ino: int) -> tuple[int, int]:
    """(pid, pipe fd) of a process that sleeps on a pipe; the kernel closes
    our end when this process dies, however it dies, and the reaper then
    removes NAME. It inherits no fd but the pipe's (no BPF object, no socket
    of a Jupyter kernel), runs in its own session (a terminal's ^C is not for
    it) and in / (it keeps no directory busy). It forks away from the process
    we start, so it is no child of ours: nothing to wait for, no zombie."""
    read_end, write_end = os.pipe()  # both close-on-exec; only read_end is passed on
    try:
        launcher = subprocess.run(
            [sys.executable, "-I", "-c", _REAPER_CODE, os.path.abspath(__file__), str(read_end), name, str(ino), repr(time.time())],
            pass_fds=(read_end,),
            close_fds=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
            timeout=60,
            check=True,
        )
        pid = int(launcher.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        os.close(write_end)
        raise OSError(f"could not start the reaper of {PIN_ROOT}/{name}") from None
    finally:
        os.close(read_end)
    return pid, write_end


def reap(argv: list[str]) -> None:
    """The reaper's main: wait for the parent's death, then remove its entry
    and the compile directories it left."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    pipe, name, ino, started = int(argv[0]), argv[1], int(argv[2]), float(argv[3])
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)  # the launcher's caller reads stdout to its end
    os.close(devnull)
    while os.read(pipe, 4096):
        pass
    try:
        root = open_root(create=False)
    except (OSError, EnvironmentProblem):
        root = None
    if root is not None:
        try:
            _remove_entry(root, name, ino=ino, wait=True)
        finally:
            os.close(root)
    remove_orphan_compile_dirs(since=started)


def _dirs_in_use() -> set[str]:
    """Directories the processes we can see work in or hold files of (clang
    runs in its compile dir; a loader may hold the object file open)."""
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            out.add(os.readlink(f"/proc/{pid}/cwd"))
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with _ignored():
                    out.add(os.path.dirname(os.readlink(f"/proc/{pid}/fd/{fd}")))
        except OSError:
            pass
    return out


def _ignored():
    import contextlib

    return contextlib.suppress(OSError)


def remove_orphan_compile_dirs(since: float, idle: float = COMPILE_DIR_IDLE, wait: float = 120.0) -> None:
    """Remove this user's compile dirs made since SINCE once no process works
    in them and they have not changed for IDLE seconds (a live compile is
    always in clang or a few milliseconds from it); gives up after WAIT."""
    tmp, me = tempfile.gettempdir(), os.geteuid()
    deadline = time.time() + wait
    while True:
        pending = False
        try:
            base = _open_nofollow(tmp)
        except OSError:
            return
        try:
            busy = _dirs_in_use()
            for name in os.listdir(base):
                if not name.startswith(COMPILE_DIR_PREFIX):
                    continue
                try:
                    st = os.stat(name, dir_fd=base, follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != me or st.st_ctime < since:
                    continue
                if os.path.join(tmp, name) in busy or time.time() - max(st.st_mtime, st.st_ctime) < idle:
                    pending = True
                    continue
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=base)
                    try:
                        remove_contents(fd)
                    finally:
                        os.close(fd)
                    os.rmdir(name, dir_fd=base)
                except OSError:
                    continue
        finally:
            os.close(base)
        if not pending or time.time() > deadline:
            return
        time.sleep(0.5)
