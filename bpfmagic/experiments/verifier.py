"""What the verifier spent on each program: instructions processed (against
the 1,000,000 budget), states, verification time and the stack depth of
each subprogram, from the statistics the kernel prints at log level
BPF_LOG_STATS (4) — a few lines, collected on every load — plus
``verified_insns`` from the program's info.

The backends collect the lines at load: BCC's in backends/bcc_stats.py
(libbcc's load wrapped per thread), --core's in backends/libbpf.py (each
program gets log level 4; libbpf hands the log to its print callback).
This module only reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

INSN_LIMIT = 1_000_000  # BPF_COMPLEXITY_LIMIT_INSNS
MAX_STACK = 512  # per program (all its frames on one call path)
MIXED_FRAME_LIMIT = 256  # a tail call from a subprogram: the frames above it must use less
MAX_TAIL_CALL_CNT = 33
CHAIN_STACK_LIMIT = MIXED_FRAME_LIMIT * MAX_TAIL_CALL_CNT  # 8448 bytes, "8 KB"

_PROCESSED_RE = re.compile(
    r"processed (\d+) insns \(limit (\d+)\) max_states_per_insn (\d+) total_states (\d+) "
    r"peak_states (\d+) mark_read (\d+)"
)
_TIME_RE = re.compile(r"verification time (\d+) usec")
_STACK_RE = re.compile(r"^stack depth ([\d+]+)\s*$", re.M)


@dataclass
class VerifierStats:
    """The verifier's cost of one program."""

    insns_processed: int | None = None
    insn_limit: int = INSN_LIMIT
    max_states_per_insn: int | None = None
    total_states: int | None = None
    peak_states: int | None = None
    time_usec: int | None = None
    stack_depths: list[int] = field(default_factory=list)  # one per subprogram, main program first
    subprograms: list[str] = field(default_factory=list)  # their names (BTF func info), where known
    verified_insns: int | None = None  # the kernel's count in the program's info
    xlated_insns: int | None = None
    jited_bytes: int | None = None

    @property
    def stack(self) -> int | None:
        """The deepest a call path can go: the sum of every subprogram's frame (an upper bound)."""
        return sum(self.stack_depths) if self.stack_depths else None

    @property
    def budget_used(self) -> float | None:
        """Share of the 1,000,000-instruction budget the verification walked."""
        return self.insns_processed / self.insn_limit if self.insns_processed is not None else None

    def as_dict(self) -> dict:
        return {
            "insns_processed": self.insns_processed,
            "insn_limit": self.insn_limit,
            "budget_used": self.budget_used,
            "total_states": self.total_states,
            "peak_states": self.peak_states,
            "max_states_per_insn": self.max_states_per_insn,
            "time_usec": self.time_usec,
            "stack_depths": list(self.stack_depths),
            "subprograms": list(self.subprograms),
            "stack": self.stack,
            "verified_insns": self.verified_insns,
            "xlated_insns": self.xlated_insns,
            "jited_bytes": self.jited_bytes,
        }

    def summary(self) -> str:
        parts = []
        if self.insns_processed is not None:
            parts.append(f"{self.insns_processed:,} insns processed ({100 * self.budget_used:.2f}% of {self.insn_limit:,})")
        elif self.verified_insns is not None:
            parts.append(f"{self.verified_insns:,} insns verified")
        if self.total_states is not None:
            parts.append(f"{self.total_states} states (peak {self.peak_states})")
        if self.time_usec is not None:
            parts.append(f"{self.time_usec} us")
        if self.stack_depths:
            names = self.subprograms if len(self.subprograms) == len(self.stack_depths) else []
            frames = " + ".join((f"{n} " if n else "") + f"{d}" for d, n in zip(self.stack_depths, names or [""] * len(self.stack_depths)))
            total = f" = {self.stack}" if len(self.stack_depths) > 1 else ""
            parts.append(f"stack {frames}{total} B")
        return ", ".join(parts) or "no verifier statistics"

    def __repr__(self) -> str:
        return f"<VerifierStats {self.summary()}>"


def parse_stats(log: str) -> VerifierStats:
    """The statistics lines of a verifier log (the last verification in it)."""
    out = VerifierStats()
    m = None
    for m in _PROCESSED_RE.finditer(log):
        pass
    if m is not None:
        (out.insns_processed, out.insn_limit, out.max_states_per_insn, out.total_states, out.peak_states, _) = (int(x) for x in m.groups())
    times = _TIME_RE.findall(log)
    if times:
        out.time_usec = int(times[-1])
    stacks = _STACK_RE.findall(log)
    if stacks:
        out.stack_depths = [int(x) for x in stacks[-1].split("+")]
    return out


def stats_of(program) -> VerifierStats:
    """A Program's statistics: the log its load collected, and its info."""
    from ..kernel.proginfo import prog_info

    out = parse_stats(getattr(program, "verifier_log", "") or "")
    try:
        info = prog_info(program.fd, code=True)
    except OSError:
        return out
    out.verified_insns = info.verified_insns
    out.xlated_insns = info.xlated_len // 8
    out.jited_bytes = info.jited_len
    out.subprograms = [n or ("main" if i == 0 else f"sub{i}") for i, n in enumerate(info.func_names)]
    if not out.subprograms and info.jited_ksyms:
        out.subprograms = ["main"] + [f"sub{i}" for i in range(1, len(info.jited_ksyms))]
    return out
