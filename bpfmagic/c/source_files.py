"""Reading C source from files without surprises: regular files only (a FIFO
or a device would block or never end), a size bound, and no error that
quotes a file which is not C source.

Both `--file PATH` and the files a cell `#include`s pass through here before
anything is compiled: clang opens includes with a blocking read, and a FIFO
there hangs the kernel process beyond the reach of SIGINT."""

from __future__ import annotations

import os
import stat

from ..errors import UsageProblem
from . import analyse

MAX_SOURCE_BYTES = 4 << 20  # a cell or --file beyond this is not hand-written C (100 MB took minutes)
C_SOURCE_SUFFIXES = (".c", ".h")
HEADER_SUFFIXES = (".h", ".c", ".inc", ".def")
_MAX_INCLUDES_CHECKED = 500  # nested includes followed, at most


# Files there look regular (stat says so, size 0) but are the kernel's: reading can block (/proc/kmsg) or never end.
KERNEL_FILE_TREES = ("/proc/", "/sys/", "/dev/")


def _kernel_file(path: str) -> bool:
    return (os.path.realpath(path) + "/").startswith(KERNEL_FILE_TREES)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_source_size(source: str, what: str) -> None:
    size = len(source.encode(errors="replace"))
    if size > MAX_SOURCE_BYTES:
        raise UsageProblem(
            f"{what} is {size / (1 << 20):.1f} MiB; bpfmagic compiles at most {MAX_SOURCE_BYTES >> 20} MiB of C (a cell or --file is hand-written C)"
        )


def read_regular_file(path: str, label: str, limit: int, limit_text: str, takes: str = "", refuse=None) -> bytes:
    """The bytes of PATH, a regular file of at most LIMIT bytes; anything else is a
    UsageProblem naming LABEL (never quoting the file). Nothing here can block: a FIFO
    is opened without waiting for a writer and refused. ``refuse(path)``, called once the
    file is known to be regular and before it is read, may return why it is refused."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise UsageProblem(f"{label}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageProblem(f"{label}: {_kind(st.st_mode)}, not a regular file" + (f"; {takes}" if takes else ""))
        why = refuse(path) if refuse else None
        if why:
            raise UsageProblem(f"{label}: {why}")
        if st.st_size > limit:
            raise UsageProblem(f"{label}: {st.st_size / (1 << 20):.1f} MiB; {limit_text}")
        chunks, size = [], 0
        while size <= limit:  # the file may grow after fstat: read one byte past the bound at most
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise UsageProblem(f"{label}: {e.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise UsageProblem(f"{label}: more than {limit >> 20} MiB; {limit_text}")
    return data


def read_source_file(path: str, what: str = "--file") -> str:
    """The text of the C file PATH. Refuses (UsageProblem, never quoting the
    file) what is not a regular file, larger than MAX_SOURCE_BYTES, not named
    .c/.h, not UTF-8 or holding NUL bytes. Nothing here can block."""
    label = f"{what} {path}"
    if not path.endswith(C_SOURCE_SUFFIXES):
        # Compile errors quote the source: only files named as C source are compiled.
        raise UsageProblem(f"{label}: not a C source file name (expected .c or .h, e.g. prog.bpf.c)")
    data = read_regular_file(
        path,
        label,
        MAX_SOURCE_BYTES,
        f"bpfmagic compiles at most {MAX_SOURCE_BYTES >> 20} MiB of C",
        takes="--file takes a C source file",
        refuse=lambda p: f"a file of the kernel ({os.path.realpath(p)}), not C source" if _kernel_file(p) else None,
    )
    if b"\0" in data:
        raise UsageProblem(f"{label}: not a C source file (it holds NUL bytes)")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UsageProblem(f"{label}: not a C source file (not UTF-8 text)") from None


def split_cflags(text: str) -> list[str]:
    """The flags in one string of several: split at blanks outside quotes, the
    quotes kept, for they are C's (``-DMAPTYPE="percpu_array"`` defines a
    string, as in BCC's ``cflags=[...]``); a quoted blank stays in its flag.
    The line they came from was already shell-split once: splitting like a
    shell again would strip the quotes the user protected."""
    flags: list[str] = []
    word: list[str] = []
    quote = ""
    chars = iter(text)
    for ch in chars:
        if ch == "\\":  # the next character as it is: \" is a quote that groups nothing
            word.append(next(chars, ""))
        elif quote:
            word.append(ch)
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            word.append(ch)
            quote = ch
        elif ch.isspace():
            if word:
                flags.append("".join(word))
            word = []
        else:
            word.append(ch)
    if quote:
        raise UsageProblem(f"--cflags {text!r}: a {quote} is not closed")
    if word:
        flags.append("".join(word))
    return flags


def _flag_values(cflags: list[str], separate: tuple[str, ...], joined: str | None = None) -> list[str]:
    """The values of the flags in SEPARATE (``-I DIR``), and of JOINED written with its value (``-IDIR``)."""
    values, take_next = [], False
    for flag in cflags:
        if take_next:
            values.append(flag)
            take_next = False
        elif flag in separate:
            take_next = True
        elif joined and flag.startswith(joined) and len(flag) > len(joined):
            values.append(flag[len(joined) :])
    return values


def include_dirs(cflags: list[str]) -> list[str]:
    """The -I / -isystem / -iquote directories of CFLAGS."""
    return _flag_values(cflags, ("-I", "-isystem", "-iquote", "-idirafter"), joined="-I")


def forced_includes(cflags: list[str]) -> list[str]:
    """The files of -include FILE / -imacros FILE in CFLAGS."""
    return _flag_values(cflags, ("-include", "-imacros"))


def check_includes(source: str, origin: str, base_dir: str | None, cflags: list[str]) -> None:
    """Refuse, before compiling, an #include (also nested in included files)
    that names a FIFO, device, socket or directory, or a file that is not C.
    Targets are looked for beside the --file, in the working directory and in
    the -I directories; system headers (<...> not found there) are not checked."""
    search = [d for d in (base_dir, os.getcwd(), *include_dirs(cflags)) if d]
    system = ["/usr/local/include", "/usr/include"]
    # -include FILE / -imacros FILE in the flags are includes too.
    forced = "".join(f'#include "{f}"\n' for f in forced_includes(cflags))
    pending = [(source, origin, base_dir)] + ([(forced, "--cflags", None)] if forced else [])
    seen: set[str] = set()
    while pending and len(seen) < _MAX_INCLUDES_CHECKED:
        text, where, here = pending.pop()
        for include in analyse(text).includes:  # read on the syntax tree: not in comments, also in #if blocks
            quoted, target, line = not include.system, include.path, include.line
            dirs = ([here] if quoted and here else []) + search + ([] if quoted else system)
            candidates = [target] if os.path.isabs(target) else [os.path.join(d, target) for d in dirs]
            for path in candidates:
                try:
                    st = os.stat(path)  # stat, not open: it cannot block
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise UsageProblem(
                        f"{where}:{line}: #include {target!r} is {_kind(st.st_mode)} ({path}), not a header file: the compiler would block reading it"
                    )
                if _kernel_file(path):
                    raise UsageProblem(
                        f"{where}:{line}: #include {target!r} is a file of the kernel ({os.path.realpath(path)}), not a header: reading it can block"
                    )
                real = os.path.realpath(path)
                if real in seen:
                    break
                seen.add(real)
                if not target.endswith(HEADER_SUFFIXES):
                    raise UsageProblem(f"{where}:{line}: #include {target!r} ({path}) is not a C header (expected {', '.join(HEADER_SUFFIXES)})")
                if quoted and st.st_size <= MAX_SOURCE_BYTES:  # follow the user's headers, not system ones
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
                    except OSError:
                        break
                    try:  # it may have been swapped since the stat: read only what still is a regular file
                        nested = os.read(fd, MAX_SOURCE_BYTES).decode(errors="replace") if stat.S_ISREG(os.fstat(fd).st_mode) else ""
                    finally:
                        os.close(fd)
                    pending.append((nested, os.path.basename(path), os.path.dirname(path)))
                break
