"""Attach targets: parsing ``KIND:ARGS`` strings, the program type each needs,
and attachments that detach by closing what they hold. Where the kernel
offers an fd-owned attachment (raw tracepoint, perf event, XDP and TCX links)
it is used, so a crashed kernel process cannot leave a program attached."""

from __future__ import annotations

import ctypes as ct
import difflib
import os
import socket
from dataclasses import dataclass, field

from ..errors import AttachError
from . import libbpf, trust

TRACEFS = "/sys/kernel/tracing"

# target kind -> (program type, syntax)
TARGET_KINDS = {
    "raw_tracepoint": ("raw_tracepoint", "raw_tracepoint:EVENT"),
    "tracepoint": ("tracepoint", "tracepoint:CATEGORY:EVENT"),
    "kprobe": ("kprobe", "kprobe:SYMBOL"),
    "kretprobe": ("kprobe", "kretprobe:SYMBOL"),
    "uprobe": ("kprobe", "uprobe:LIBRARY:SYMBOL"),
    "uretprobe": ("kprobe", "uretprobe:LIBRARY:SYMBOL"),
    "xdp": ("xdp", "xdp:IFACE"),
    "tc": ("sched_cls", "tc:IFACE[:ingress|egress]"),
    "socket": ("socket_filter", "socket:IFACE"),
    "perf": ("perf_event", "perf:cpu-clock:HZ"),
    "fentry": ("tracing", "fentry:MODULE.FUNC|KERNEL_FUNCTION"),
    "fexit": ("tracing", "fexit:MODULE.FUNC|KERNEL_FUNCTION"),
    "freplace": ("ext", "freplace:MODULE.FUNC"),
}
# Kinds whose program is bound to its target when it is loaded (BPF trampolines): a --core
# cell's SEC("fentry") / SEC("fexit") / SEC("freplace") program, given its target before load.
TRAMPOLINE_KINDS = ("fentry", "fexit", "freplace")
KIND_ALIASES = {"raw_tp": "raw_tracepoint", "tp": "tracepoint", "tcx": "tc", "kfunc": "fentry", "kretfunc": "fexit"}

ALTERNATIVE = (
    "use a tracepoint (tracepoint:syscalls:sys_enter_openat, tracepoint:sched:sched_switch, ...) "
    "or a raw tracepoint (raw_tracepoint:sys_enter); `%bpf doctor` lists what this kernel serves"
)


@dataclass(frozen=True)
class Target:
    kind: str
    args: tuple[str, ...]
    text: str

    @property
    def prog_type(self) -> str:
        return TARGET_KINDS[self.kind][0]

    @property
    def traced_program(self) -> tuple[str, ...] | None:
        """(MODULE, FUNC) or (MODULE, PROG, FUNC) of an fentry/fexit/freplace target in the
        session; None for other kinds and for a kernel function."""
        return self.args if self.kind in TRAMPOLINE_KINDS and len(self.args) > 1 else None

    def __str__(self) -> str:
        return self.text


def parse_target(text: str) -> Target:
    kind, _, rest = text.partition(":")
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in TARGET_KINDS or not rest:
        forms = ", ".join(syntax for _, syntax in TARGET_KINDS.values())
        raise AttachError(f"bad attach target {text!r}: use one of {forms}")
    syntax = TARGET_KINDS[kind][1]
    if kind == "tracepoint":
        args = tuple(rest.split(":"))
        if len(args) != 2 or not all(args):
            raise AttachError(f"bad target {text!r}: use {syntax}, e.g. tracepoint:syscalls:sys_enter_write")
    elif kind in ("uprobe", "uretprobe"):
        lib, _, sym = rest.rpartition(":")
        if not lib or not sym:
            raise AttachError(f"bad target {text!r}: use {syntax}, e.g. uprobe:c:malloc")
        args = (lib, sym)
    elif kind == "tc":
        parts = rest.split(":")
        direction = parts[1] if len(parts) > 1 else "ingress"
        if len(parts) > 2 or direction not in ("ingress", "egress"):
            raise AttachError(f"bad target {text!r}: use {syntax}")
        args = (parts[0], direction)
    elif kind == "perf":
        parts = rest.split(":")
        if len(parts) != 2 or parts[0] != "cpu-clock" or not parts[1].isdigit() or int(parts[1]) <= 0:
            raise AttachError(f"bad target {text!r}: use {syntax}, e.g. perf:cpu-clock:99")
        args = tuple(parts)
    elif kind in TRAMPOLINE_KINDS:
        # MODULE.FUNC (a program or subprogram of the session), MODULE.PROG.FUNC (the copy of
        # subprogram FUNC inside program PROG), or for fentry/fexit a kernel function.
        args = tuple(rest.split("."))
        if not all(args) or len(args) > 3 or (kind == "freplace" and len(args) == 1):
            raise AttachError(f"bad target {text!r}: use {syntax}, e.g. {kind}:chain.stage")
    else:
        args = (rest,)
    return Target(kind, args, f"{kind}:{rest}")


def kprobes_available() -> bool:
    return os.path.exists(f"{TRACEFS}/kprobe_events") or os.path.isdir("/sys/bus/event_source/devices/kprobe")


def check_servable(target: Target, core: bool = False) -> None:
    """Refuse, before anything is compiled, a target kind this kernel cannot serve. fentry,
    fexit and freplace targets of --core cells are left to the load: the kernel's answer there
    is the one that counts (it may refuse them for kernel functions and BPF programs alike)."""
    if target.kind in ("kprobe", "kretprobe") and not kprobes_available():
        raise AttachError(f"{target}: kprobes are not available on this kernel (CONFIG_KPROBES is off); {ALTERNATIVE}")
    if target.kind == "freplace" and not core:
        raise AttachError(
            f'{target}: BCC cannot declare freplace programs in %%bpf cells; use a --core cell with SEC("freplace") '
            "(or, to swap a stage at run time, put the new version in a slot: -s ARRAY[KEY]=FUNC)"
        )
    if target.kind in ("fentry", "fexit") and not core:
        from .features import probe_fentry

        if probe_fentry()[0]:  # the kernel would load them: only BCC is in the way
            raise AttachError(
                f"{target}: BCC cannot declare fentry/fexit programs in %%bpf cells; use a --core "
                f'cell with SEC("{target.kind}") and -a FUNC={target}, or {ALTERNATIVE}'
            )
        raise AttachError(
            f"{target}: fentry/fexit programs are refused by this kernel (EPERM at load, a policy of "
            f"this kernel build) and BCC cannot declare them in %%bpf cells; {ALTERNATIVE}"
        )


def check_event_exists(target: Target) -> None:
    """Refuse, before compiling, a tracepoint or raw tracepoint this kernel lacks."""
    if target.kind == "tracepoint":
        category, event = target.args
        if os.path.isdir(f"{TRACEFS}/events") and not os.path.isdir(f"{TRACEFS}/events/{category}/{event}"):
            raise AttachError(f"no tracepoint {category}:{event} on this kernel.{_tracepoint_hint(category, event)}")
    elif target.kind == "raw_tracepoint":
        try:
            with open(f"{TRACEFS}/available_events") as f:
                events = {line.strip().split(":", 1)[1] for line in f if ":" in line}
        except OSError:
            return  # tracefs not readable: the kernel will say it at attach time
        if target.args[0] not in events:
            raise AttachError(f"no raw tracepoint {target.args[0]} on this kernel. {_raw_tracepoint_hint(target.args[0])}")


_CONVENTIONS = [
    ("kretprobe__", "kretprobe"),
    ("kprobe__", "kprobe"),
    ("raw_tracepoint__", "raw_tracepoint"),
    ("tracepoint__", "tracepoint"),
    ("kretfunc__", "fexit"),
    ("kfunc__", "fentry"),
    ("lsm__", "fentry"),
]


def convention_targets(functions) -> list[tuple[str, Target]]:
    """(function, target) of the functions BCC attaches by their names
    (kprobe__SYM, tracepoint__CAT__EVENT, raw_tracepoint__EVENT, kfunc__...)."""
    out = []
    for func in functions:
        for prefix, kind in _CONVENTIONS:
            if func.startswith(prefix):
                rest = func[len(prefix) :]
                if kind == "tracepoint":
                    category, _, event = rest.partition("__")
                    out.append((func, Target(kind, (category, event), f"tracepoint:{category}:{event}")))
                else:
                    out.append((func, Target(kind, (rest,), f"{kind}:{rest}")))
                break
    return out


def _ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        names = [n for _, n in socket.if_nameindex()]
        raise AttachError(f"no network interface {name!r} here (interfaces: {', '.join(names)})") from None


@dataclass
class Attachment:
    target: Target
    program: object  # module.Program
    fds: list[int] = field(default_factory=list)
    kind_of_fd: str = "fd"  # "fd", "perf" (perf event fds), "link", "libbpf-link" (backends' CoreLink)
    detach_hook: object = None
    log: str = ""  # what libbcc printed while attaching

    @property
    def link_fd(self) -> int | None:
        return self.fds[0] if self.kind_of_fd == "link" else None

    def detach(self) -> None:
        from bcc.libbcc import lib as bcc

        fds, self.fds = self.fds, []
        for fd in fds:
            if self.kind_of_fd == "perf":
                bcc.bpf_close_perf_event_fd(fd)
            else:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.detach_hook is not None:
            hook, self.detach_hook = self.detach_hook, None
            hook()

    def retarget(self, program) -> bool:
        """Point this attachment at another program in one step (links only)."""
        if self.kind_of_fd != "link":
            return False
        ret = libbpf.lib().bpf_link_update(self.fds[0], program.fd, None)
        if ret < 0:
            return False
        self.program = program
        return True


def attach(program, target: Target) -> Attachment:
    """Attach a loaded program (module.Program) to target, by its fd (either
    backend's programs alike). libbcc says why an attach failed on fd 2 only: it is captured and put in
    the AttachError (on success, in ``Attachment.log``)."""
    from .lock import captured_fd2

    error = None
    with captured_fd2() as log:
        try:
            att = _attach(program, target)
        except AttachError as e:
            error = e
    said = log[0].strip()
    if error is None:
        att.log = said
        return att
    if said:
        error.message += "\nlibbcc said: " + said.replace("\n", "\n  ")
        error.args = (error.message,)
        error.log = (error.log + "\n" + said).strip()
    raise error


def _attach(program, target: Target) -> Attachment:
    from bcc import BPF
    from bcc.libbcc import lib as bcc

    kind, args, fd = target.kind, target.args, program.fd
    if kind == "raw_tracepoint":
        res = bcc.bpf_attach_raw_tracepoint(fd, args[0].encode())
        if res < 0:
            known = _raw_tracepoint_hint(args[0])
            raise AttachError(f"cannot attach {program.qualname} to {target}: {os.strerror(ct.get_errno())}. {known}")
        return Attachment(target, program, [res])
    if kind == "tracepoint":
        category, event = args
        if not BPF.tracepoint_exists(category, event):
            raise AttachError(f"no tracepoint {category}:{event} on this kernel.{_tracepoint_hint(category, event)}")
        res = bcc.bpf_attach_tracepoint(fd, category.encode(), event.encode())
        if res < 0:
            raise AttachError(f"cannot attach {program.qualname} to {target}: {os.strerror(ct.get_errno())}")
        return Attachment(target, program, [res], "perf")
    if kind in ("kprobe", "kretprobe"):
        check_servable(target)
        attach_type = 0 if kind == "kprobe" else 1
        ev = f"p_bpfmagic_{os.getpid()}_{program.fd}_{args[0]}"[:60].encode()
        res = bcc.bpf_attach_kprobe(fd, attach_type, ev, args[0].encode(), 0, 0)
        if res < 0:
            raise AttachError(f"cannot attach {program.qualname} to {target}: {os.strerror(ct.get_errno())}")
        return Attachment(target, program, [res], "perf", lambda: bcc.bpf_detach_kprobe(ev))
    if kind in TRAMPOLINE_KINDS:
        # The target was bound at load (bpf_program__set_attach_target): the link names none.
        # libbpf turns an fentry/fexit link into BPF_RAW_TRACEPOINT_OPEN where the kernel's
        # BPF_LINK_CREATE does not take tracing programs (6.1).
        return _link(program, target, 0, _TRAMPOLINE_ATTACH_TYPES[kind])
    if kind in ("uprobe", "uretprobe"):
        return _attach_uprobe(program, target)
    if kind == "xdp":
        return _link(program, target, _ifindex(args[0]), libbpf.BPF_XDP)
    if kind == "tc":
        attach_type = libbpf.BPF_TCX_INGRESS if args[1] == "ingress" else libbpf.BPF_TCX_EGRESS
        return _link(program, target, _ifindex(args[0]), attach_type)
    if kind == "socket":
        _ifindex(args[0])
        sock = bcc.bpf_open_raw_sock(args[0].encode())
        if sock < 0:
            raise AttachError(f"cannot open a raw socket on {args[0]}: {os.strerror(ct.get_errno())}")
        if bcc.bpf_attach_socket(sock, fd) < 0:
            err = ct.get_errno()
            os.close(sock)
            raise AttachError(f"cannot attach {program.qualname} to {target}: {os.strerror(err)}")
        return Attachment(target, program, [sock])
    if kind == "perf":
        from bcc import PerfSWConfig, PerfType
        from bcc.utils import get_online_cpus

        hz = int(args[1])
        att = Attachment(target, program, [], "perf")
        for cpu in get_online_cpus():
            res = bcc.bpf_attach_perf_event(fd, PerfType.SOFTWARE, PerfSWConfig.CPU_CLOCK, ct.c_ulonglong(0), ct.c_ulonglong(hz), -1, cpu, -1)
            if res < 0:
                err = ct.get_errno()
                att.detach()
                raise AttachError(f"cannot attach {program.qualname} to {target} on cpu {cpu}: {os.strerror(err)}")
            att.fds.append(res)
        return att
    raise AttachError(f"target kind {kind} is not supported")


def _attach_uprobe(program, target: Target) -> Attachment:
    """A uprobe or uretprobe on LIBRARY:SYMBOL, attached by the program's fd: BCC's
    symbol resolution (library names without ``lib``, or paths) and libbcc's perf
    event, the same for BCC and --core programs."""
    from bcc import BPF
    from bcc.libbcc import lib as bcc

    library, symbol = target.args
    if "/" in library:  # a path: BCC would open it blindly (a FIFO blocks the cell)
        library = _trusted_elf(library, program, target)
    try:
        path, offset = BPF._check_path_symbol(library.encode(), symbol.encode(), None, -1)
    except Exception as e:  # BCC raises bare Exception
        raise AttachError(f"cannot attach {program.qualname} to {target}: {e}") from None
    retprobe = target.kind == "uretprobe"
    # The event name only matters where libbcc falls back to tracefs' uprobe_events; unique per attach.
    event = f"{'r' if retprobe else 'p'}_bpfmagic_{os.getpid()}_{program.fd}_{offset:x}".encode()
    res = bcc.bpf_attach_uprobe(program.fd, 1 if retprobe else 0, event, path, offset, -1)
    if res < 0:
        raise AttachError(f"cannot attach {program.qualname} to {target}: {os.strerror(ct.get_errno())}")
    return Attachment(target, program, [res], "perf", lambda: bcc.bpf_detach_uprobe(event))


def _trusted_elf(path: str, program, target: Target) -> str:
    """PATH resolved to a regular ELF file that only root or this user can change: a library
    another user can write (or swap, in a directory they can write) would choose where root's
    probe goes. Returns the resolved path, which is what gets probed."""
    import stat

    where = f"cannot attach {program.qualname} to {target}"
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as e:
        raise AttachError(f"{where}: {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AttachError(f"{where}: {path} is not a regular file")
    trusted = {0, os.geteuid()}
    if st.st_uid not in trusted or st.st_mode & 0o022:
        raise AttachError(
            f"{where}: {path} can be changed by another user (owner uid {st.st_uid}, mode "
            f"{stat.filemode(st.st_mode)}); probe a copy only you can write"
        )
    parent = trust.swappable_level(os.path.dirname(real))
    if parent:
        raise AttachError(f"{where}: {parent} lets another user replace {os.path.basename(real)}; probe a copy in a directory only you can write")
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        magic = os.read(fd, 4)
    finally:
        os.close(fd)
    if magic != b"\x7fELF":
        raise AttachError(f"{where}: {path} is not an ELF file (a binary or shared library)")
    return real


# enum bpf_attach_type of each trampoline kind (an freplace program has none: 0)
_TRAMPOLINE_ATTACH_TYPES = {"fentry": 24, "fexit": 25, "freplace": 0}


def _link(program, target: Target, ifindex: int, attach_type: int) -> Attachment:
    try:
        link = libbpf.link_create(program.fd, ifindex, attach_type)
    except OSError as e:
        hint = ""
        if e.errno == 16 and target.kind == "freplace":  # EBUSY
            hint = " (another freplace program replaces that function already; unload the module that holds it)"
        elif e.errno == 16:
            hint = " (another XDP program is attached there; detach it or unload the module that holds it)"
        raise AttachError(f"cannot attach {program.qualname} to {target}: {e.strerror}{hint}") from None
    return Attachment(target, program, [link], "link")


def _raw_tracepoint_hint(event: str) -> str:
    try:
        with open(f"{TRACEFS}/available_events") as f:
            names = sorted({line.strip().split(":", 1)[1] for line in f if ":" in line})
    except OSError:
        return "Raw tracepoints are named like sys_enter, sched_switch."
    close = difflib.get_close_matches(event, names, n=3)
    return f"Did you mean {', '.join(close)}?" if close else "Raw tracepoints are named like sys_enter, sched_switch."


def _tracepoint_hint(category: str, event: str) -> str:
    try:
        with open(f"{TRACEFS}/available_events") as f:
            names = [line.strip() for line in f]
    except OSError:
        return f" (is tracefs mounted? mount -t tracefs nodev {TRACEFS})"
    close = difflib.get_close_matches(f"{category}:{event}", names, n=3)
    return f" Did you mean {', '.join('tracepoint:' + c for c in close)}?" if close else ""
