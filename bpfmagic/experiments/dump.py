"""A loaded program's code, as the kernel holds it: the translated BPF
(``bpftool prog dump xlated``) or the JIT's x86-64 image (from the
program's info, disassembled with capstone), with the cell's source lines
interleaved from the BTF line info and every tail-call site marked.

On x86-64 a tail call with a constant index is patched by the kernel into a
direct ``jmp`` to the program in the slot (a 5-byte nop while it is empty);
one with a variable index loads the slot and jumps through a register (or a
retpoline thunk where retpolines are on)."""

from __future__ import annotations

import re
import shutil
import subprocess

from ..errors import EnvironmentProblem, UsageProblem
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
    votes = Counter(li.line - i for li in info.line_info if _is_cell(li.file) and li.line for i in where.get(li.text.strip(), ()))
    return votes.most_common(1)[0][0] if votes else 0


def _cell_line(program, file: str, line: int, btf_text: str, offset: int = 0) -> str:
    """The cell's own line where the BTF's line is the cell's (BCC's BTF quotes its rewritten text)."""
    lines = program.module.source.split("\n")
    if _is_cell(file) and line:
        line -= offset
    if _is_cell(file) and 1 <= line <= len(lines):
        return f"; {lines[line - 1].strip()}  @ {program.module.origin}:{line}"
    if not line:
        return ""
    return f"; {btf_text.strip()}  @ {file.rsplit('/', 1)[-1]}:{line}"


def _tail_call_lines(program) -> set[int]:
    return {t.line for t in program.module.syntax.tail_calls if t.function == program.name or t.function}


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


_kallsyms_cache: dict[int, str] | None = None


def _kernel_symbol(address: int) -> str | None:
    """The kernel symbol at ADDRESS (exact), from /proc/kallsyms (read once)."""
    global _kallsyms_cache
    if _kallsyms_cache is None:
        _kallsyms_cache = {}
        try:
            with open("/proc/kallsyms") as f:
                for line in f:
                    addr, _, name = line.split()[:3]
                    if "thunk" in name or name.startswith("bpf_prog_"):
                        _kallsyms_cache[int(addr, 16)] = name
        except OSError:
            pass
    return _kallsyms_cache.get(address)


def _program_at(session, address: int) -> str | None:
    for m in session.modules.values():
        for p in m.programs.values():
            try:
                info = prog_info(p.fd, code=True)
            except OSError:
                continue
            # a tail call enters a program's main image (its first function), past its prologue
            main_len = info.jited_func_lens[0] if info.jited_func_lens else info.jited_len
            if info.jited_ksyms and info.jited_ksyms[0] <= address < info.jited_ksyms[0] + main_len:
                return p.qualname
    return None


def _jited(program, source: bool) -> str:
    try:
        import capstone
    except ImportError:
        raise EnvironmentProblem("the JIT code is disassembled with capstone: pip install capstone") from None
    info = prog_info(program.fd, code=True)
    if not info.jited:
        raise UsageProblem(f"{program.qualname} has no JIT image (the JIT is off: sysctl net.core.bpf_jit_enable=1)")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    base = info.jited_ksyms[0] if info.jited_ksyms else 0
    # Address -> source line (BTF line info, with the JIT's address of each entry).
    at: dict[int, str] = {}
    site_lines = {t.line for t in program.module.syntax.tail_calls}
    line_of_addr: list[tuple[int, int]] = []
    offset = _line_offset(program, info)
    for li, addr in zip(info.line_info, info.jited_line_info):
        at.setdefault(addr, _cell_line(program, li.file, li.line, li.text, offset))
        if _is_cell(li.file) and li.line:
            line_of_addr.append((addr, li.line - offset))
    line_of_addr.sort()  # (addresses of subprograms may lie below the main program's)
    starts = {a: (info.func_names[i] if i < len(info.func_names) else f"sub{i}") for i, a in enumerate(info.jited_ksyms)}
    out, shown = [], None
    current_line = 0
    j = 0
    # An empty slot's constant-index site: a 5-byte jmp over the patch site (row, where it lands).
    bypass = None
    # Each function (subprogram) is its own JIT image: disassembled at its own address.
    lens = info.jited_func_lens or [len(info.jited)]
    ksyms = info.jited_ksyms or [base]
    pieces, offset = [], 0
    for k, n in zip(ksyms, lens):
        pieces.append((k, info.jited[offset : offset + n]))
        offset += n
    ranges = [(k, k + len(code)) for k, code in pieces]

    def inside(address: int) -> bool:
        return any(a <= address < b for a, b in ranges)

    def instructions():
        for k, code in pieces:
            yield from md.disasm(code, k)

    for ins in instructions():
        if ins.address in starts:
            out.append(f"<{starts[ins.address]}>:")
            base = ins.address
        while j < len(line_of_addr) and line_of_addr[j][0] <= ins.address:
            current_line = line_of_addr[j][1]
            j += 1
        text = at.get(ins.address)
        if source and text and text != shown:
            out.append(text)
            shown = text
        row = f"  {ins.address - base:4x}: {ins.mnemonic} {ins.op_str}".rstrip()
        note = ""
        if ins.mnemonic in ("jmp", "call"):
            target = _immediate(ins.op_str)
            if target is not None and not inside(target):
                sym = _kernel_symbol(target)
                if sym and "thunk" in sym:
                    note = f"{MARK}: indirect jump through the retpoline {sym} (variable index)"
                elif ins.mnemonic == "jmp":
                    name = _program_at(program.module.session, target)
                    note = f"{MARK}: direct jump the kernel patched in for a constant index" + (f", into {name}" if name else "")
            elif target is None and ins.mnemonic == "jmp" and current_line in site_lines:
                note = f"{MARK}: indirect jump to the slot's program (variable index)"
            elif target is not None and ins.mnemonic == "jmp" and ins.size == 5 and current_line in site_lines:
                bypass = (len(out), target)
        elif ins.mnemonic == "nop" and ins.size == 5 and current_line in site_lines and ins.address != base:
            if bypass and bypass[1] == ins.address + 5:
                out[bypass[0]] += f"{MARK}: the slot is empty: jumps over the patch site below"
                note = f"{MARK}: patch site (a nop while the slot is empty: the direct jump when it is filled)"
            else:
                note = f"{MARK}: patch site (a nop while the slot is filled: jumps out when it is empty)"
        out.append(row + note)
    return "\n".join(out)


def _immediate(op: str) -> int | None:
    try:
        return int(op, 16) if op.startswith("0x") else None
    except ValueError:
        return None
