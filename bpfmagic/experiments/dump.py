"""A loaded program's code, as the kernel holds it: the translated BPF
(``bpftool prog dump xlated``) or the JIT's x86-64 image (from the
program's info, disassembled with capstone), with the cell's source lines
interleaved from the BTF line info and every tail-call site marked.

On x86-64 a tail call with a constant index is patched by the kernel into a
direct ``jmp`` to the program in the slot (a 5-byte nop while it is empty);
one with a variable index loads the slot and jumps through a register (or a
retpoline thunk where retpolines are on). Where the CPU's mitigations use
return thunks, every function ends in a ``jmp`` to one instead of ``ret``:
that jump is a return, never a tail call. Sites are found by the code the
JIT emits for them (the count check against 33, then the patch site or the
indirect jump), so the annotator reads recorded images of other hosts as
well as this one's."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

from ..errors import EnvironmentProblem, UsageProblem
from ..kernel import cpu
from ..kernel.proginfo import prog_info

CELL_FILES = ("main.c", "cell.bpf.c")  # how BCC and --core name the cell in BTF


MARK = "  ◀ tail call"


def _is_cell(file: str) -> bool:
    return file.rsplit("/", 1)[-1] in CELL_FILES


def _line_offset(program, info) -> int:
    """BTF line numbers minus the cell's: BCC compiles its own lines in front of the cell
    (and its rewrites may add some), so the offset most BTF lines agree on, found by
    their text; --core's #line markers keep the cell's numbers."""
    if program.module.object.cell_lines:
        return 0
    from collections import Counter

    lines = program.module.source.split("\n")
    where: dict[str, list[int]] = {}
    for i, text in enumerate(lines, 1):
        if text.strip():
            where.setdefault(text.strip(), []).append(i)
    cell_line = program.module.object.cell_line
    votes = Counter(cell_line(li.line) - i for li in info.line_info if _is_cell(li.file) and li.line for i in where.get(li.text.strip(), ()))
    return votes.most_common(1)[0][0] if votes else 0


def _cell_line(program, file: str, line: int, btf_text: str, offset: int = 0) -> str:
    """The cell's own line where the BTF's line is the cell's (BCC's BTF quotes its rewritten text)."""
    lines = program.module.source.split("\n")
    if _is_cell(file) and line:
        line = program.module.object.cell_line(line) - offset
    if _is_cell(file) and 1 <= line <= len(lines):
        return f"; {lines[line - 1].strip()}  @ {program.module.origin}:{line}"
    if not line:
        return ""
    return f"; {btf_text.strip()}  @ {file.rsplit('/', 1)[-1]}:{line}"


def dump(program, mode: str = "xlated", source: bool = True) -> str:
    if mode not in ("xlated", "jited"):
        raise UsageProblem(f"dump mode is xlated or jited (got {mode!r})")
    return _jited(program, source) if mode == "jited" else _xlated(program, source)


def _xlated(program, source: bool) -> str:
    tool = shutil.which("bpftool")
    if not tool:
        raise EnvironmentProblem("the translated code comes from bpftool: apt-get install -y bpftool")
    out = subprocess.run([tool, "prog", "dump", "xlated", "id", str(program.prog_id), "linum"], capture_output=True, text=True, timeout=30)
    if out.returncode:
        raise UsageProblem(f"bpftool could not dump {program.qualname}: {out.stderr.strip()}")
    lines, shown = [], None
    offset = _line_offset(program, prog_info(program.fd, code=True))
    for raw in out.stdout.splitlines():
        m = re.match(r"^; (.*) \[file:(.*) line_num:(\d+) line_col:(\d+)\]$", raw)
        if m:
            text = _cell_line(program, m[2], int(m[3]), m[1], offset)
            if source and text and text != shown:
                lines.append(text)
            shown = text or shown
            continue
        if "call bpf_tail_call#" in raw:
            raw += MARK
        lines.append(raw)
    return "\n".join(lines)


@dataclass
class JitImage:
    """A program's JIT code as the annotator reads it: taken from the kernel
    (``jit_image``), or recorded on another host and saved as test data
    (``to_json``/``from_json``), so both kinds of host are checked anywhere."""

    functions: list[tuple[str, int, bytes]]  # (name, start address, code), one per function
    source: dict[int, str] = field(default_factory=dict)  # address -> the source line shown above it
    symbols: dict[int, str] = field(default_factory=dict)  # kernel addresses: thunks, BPF programs
    programs: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, name) of main images
    mitigations: dict[str, str] = field(default_factory=dict)  # sysfs vulnerabilities of the host

    def to_json(self) -> dict:
        return {
            "functions": [[n, a, c.hex()] for n, a, c in self.functions],
            "source": {str(a): t for a, t in self.source.items()},
            "symbols": {str(a): s for a, s in self.symbols.items()},
            "programs": [list(p) for p in self.programs],
            "mitigations": self.mitigations,
        }

    @classmethod
    def from_json(cls, data: dict) -> JitImage:
        return cls(
            functions=[(n, a, bytes.fromhex(c)) for n, a, c in data["functions"]],
            source={int(a): t for a, t in data.get("source", {}).items()},
            symbols={int(a): s for a, s in data.get("symbols", {}).items()},
            programs=[(a, b, n) for a, b, n in data.get("programs", [])],
            mitigations=data.get("mitigations", {}),
        )


def _main_images(session) -> list[tuple[int, int, str]]:
    """(start, end, qualname) of every session program's main image: a tail call enters
    a program's first function, past its prologue."""
    out = []
    for m in session.modules.values():
        for p in m.programs.values():
            try:
                info = prog_info(p.fd, code=True)
            except OSError:
                continue
            if info.jited_ksyms:
                main_len = info.jited_func_lens[0] if info.jited_func_lens else info.jited_len
                out.append((info.jited_ksyms[0], info.jited_ksyms[0] + main_len, p.qualname))
    return out


def jit_image(program, source: bool = True) -> JitImage:
    """PROGRAM's JIT image with what annotating it needs from this host."""
    info = prog_info(program.fd, code=True)
    if not info.jited:
        raise UsageProblem(f"{program.qualname} has no JIT image (the JIT is off: sysctl net.core.bpf_jit_enable=1)")
    at: dict[int, str] = {}
    if source:
        offset = _line_offset(program, info)
        for li, addr in zip(info.line_info, info.jited_line_info):
            text = _cell_line(program, li.file, li.line, li.text, offset)
            if text:
                at.setdefault(addr, text)
    lens = info.jited_func_lens or [len(info.jited)]
    ksyms = info.jited_ksyms or [0]
    functions, pos = [], 0
    for i, (k, n) in enumerate(zip(ksyms, lens)):
        name = info.func_names[i] if i < len(info.func_names) and info.func_names[i] else f"sub{i}"
        functions.append((name, k, info.jited[pos : pos + n]))
        pos += n
    return JitImage(functions, at, cpu.kernel_symbols(), _main_images(program.module.session), cpu.mitigations())


def _jited(program, source: bool) -> str:
    return annotate_jited(jit_image(program, source), source)


# x86-64 JIT: `cmp <tail_call_cnt>, 33; jae out` opens every tail-call site (kernels before
# 5.17: `cmp eax, 32; ja out`); the site's code runs up to `out`.
_COUNT_CHECKS = {("jae", 0x21), ("ja", 0x20)}


def _count_limit(ins) -> int | None:
    if ins.mnemonic != "cmp":
        return None
    return _immediate(ins.op_str.rsplit(", ", 1)[-1])


def _tail_call_sites(insns) -> list[tuple[int, int]]:
    """(index of the first instruction after `jae out`, index of `out`) of each site."""
    sites = []
    for i in range(len(insns) - 1):
        limit, branch = _count_limit(insns[i]), insns[i + 1]
        if limit is None or (branch.mnemonic, limit) not in _COUNT_CHECKS:
            continue
        out = _immediate(branch.op_str)
        if out is None or out <= branch.address:
            continue
        j = i + 2
        while j < len(insns) and insns[j].address < out:
            j += 1
        if j < len(insns) + 1 and (j == len(insns) or insns[j].address == out):
            sites.append((i + 2, j))
    return sites


def _mitigation_text(image: JitImage, symbol: str) -> str:
    entry = cpu.thunk_mitigation(symbol)
    state = image.mitigations.get(entry, "").split(";")[0]
    return f"{entry}: {state}" if state else entry


def _annotate_site(image: JitImage, insns, first: int, end: int, notes: dict[int, str]) -> None:
    body = insns[first:end]
    for ins in body:
        if ins.mnemonic != "jmp":
            continue
        target = _immediate(ins.op_str)
        if target is None:
            notes[ins.address] = f"{MARK}: indirect jump to the slot's program (variable index)"
            return
        sym = image.symbols.get(target)
        if sym and cpu.thunk_kind(sym) == "indirect":
            kind = "ITS thunk" if cpu.thunk_mitigation(sym) == "indirect_target_selection" else "retpoline"
            notes[ins.address] = f"{MARK}: indirect jump through the {kind} {sym} (variable index; {_mitigation_text(image, sym)})"
            return
    if not body:
        return
    # the patch site ends the sequence; the bypass is its first 5-byte place (6.x kernels put it
    # right after the count check, 6.1 after the count's increment)
    patch = body[-1]
    bypass = next((x for x in body[:-1] if x.size == 5 and x.mnemonic in ("nop", "jmp")), None)
    if patch.size != 5 or bypass is None:
        return
    if patch.mnemonic == "jmp" and _immediate(patch.op_str) is not None:
        target = _immediate(patch.op_str)
        name = next((n for a, b, n in image.programs if a <= target < b), None)
        notes[patch.address] = f"{MARK}: direct jump the kernel patched in for a constant index" + (f", into {name}" if name else "")
        if bypass.mnemonic == "nop":
            notes[bypass.address] = f"{MARK}: patch site (a nop while the slot is filled: jumps out when it is empty)"
    elif patch.mnemonic == "nop" and bypass.mnemonic == "jmp" and _immediate(bypass.op_str) == patch.address + 5:
        notes[bypass.address] = f"{MARK}: the slot is empty: jumps over the patch site below"
        notes[patch.address] = f"{MARK}: patch site (a nop while the slot is empty: the direct jump when it is filled)"


def host_line(image: JitImage) -> str:
    """The host's mitigations that change what the JIT emits, as one comment line."""
    shown = [f"{k}: {image.mitigations[k]}" for k in cpu.JIT_RELEVANT if image.mitigations.get(k, "Not affected") != "Not affected"]
    return "; host CPU: " + ("; ".join(shown) if shown else "no mitigation that changes the JIT's returns or indirect jumps")


def annotate_jited(image: JitImage, source: bool = True) -> str:
    """The image disassembled, each function under its name, the source lines between,
    every tail-call site marked by its structure (whatever the host's mitigations), and
    each return through a return thunk called a return."""
    try:
        import capstone
    except ImportError:
        raise EnvironmentProblem("the JIT code is disassembled with capstone: pip install capstone") from None
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    out = [host_line(image)] if image.mitigations else []
    shown = None
    spans = [(start, start + len(code), name) for name, start, code in image.functions]
    for name, start, code in image.functions:
        insns = list(md.disasm(code, start))
        end = start + len(code)
        notes: dict[int, str] = {}
        for first, last in _tail_call_sites(insns):
            _annotate_site(image, insns, first, last, notes)
        out.append(f"<{name}>:")
        for ins in insns:
            text = image.source.get(ins.address)
            if source and text and text != shown:
                out.append(text)
                shown = text
            note = notes.get(ins.address, "")
            if not note and ins.mnemonic == "jmp":
                target = _immediate(ins.op_str)
                sym = image.symbols.get(target) if target is not None and not start <= target < end else None
                if sym and cpu.thunk_kind(sym) == "return":
                    note = f"  ◀ return, through the return thunk {sym} ({_mitigation_text(image, sym)})"
                elif sym:
                    note = f"  ◀ jump to the kernel's {sym} (not a tail call)"
            elif ins.mnemonic == "call":
                target = _immediate(ins.op_str)
                callee = next((n for a, b, n in spans if target is not None and a <= target < b and n != name), None)
                if callee:
                    note = f"  ◀ BPF-to-BPF call to {callee}"
            out.append(f"  {ins.address - start:4x}: {ins.mnemonic} {ins.op_str}".rstrip() + note)
    return "\n".join(out)


def _immediate(op: str) -> int | None:
    try:
        return int(op, 16) if op.startswith("0x") else None
    except ValueError:
        return None
