"""What the host CPU makes the kernel's code do: its speculative-execution
mitigations (sysfs) and the thunks the kernel jumps through instead of a
plain ``ret`` or ``jmp *reg`` (kallsyms).

Hosts of one machine kind differ here: one with enhanced IBRS ends a JIT'ed
function in ``ret`` and jumps to a variable-index tail call through a
register; one with retpolines and return thunks ends it in
``jmp <its_return_thunk>`` (or srso's, or retbleed's) and jumps through
``__x86_indirect_thunk_rcx``. Read both, never assume one host's code."""

from __future__ import annotations

import os

VULNERABILITIES = "/sys/devices/system/cpu/vulnerabilities"
KALLSYMS = "/proc/kallsyms"

# The sysfs entries whose mitigations change the code the BPF JIT emits.
JIT_RELEVANT = ("spectre_v2", "retbleed", "spec_rstack_overflow", "indirect_target_selection")

# Return thunks without "return_thunk" in their name (the untraining and safe-RET sequences).
_RETURN_NAMES = frozenset({"srso_safe_ret", "srso_alias_safe_ret", "entry_untrain_ret", "retbleed_untrain_ret", "zen_untrain_ret"})


def mitigations(root: str = VULNERABILITIES) -> dict[str, str]:
    """Each sysfs vulnerability entry and its state ({} where sysfs has none)."""
    out: dict[str, str] = {}
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(root, name)) as f:
                out[name] = f.read().strip()
        except OSError:
            continue
    return out


def thunk_kind(symbol: str) -> str | None:
    """'return' for a return thunk (the mitigations' replacement of ``ret``), 'indirect'
    for an indirect-branch thunk (a retpoline or an ITS thunk standing for ``jmp *reg``),
    None for any other symbol."""
    if symbol.startswith("__x86_indirect_"):
        return "indirect"
    if "return_thunk" in symbol or symbol in _RETURN_NAMES:
        return "return"
    return None


def thunk_mitigation(symbol: str) -> str:
    """The sysfs entry whose mitigation puts SYMBOL into the code."""
    if "its" in symbol.split("_"):
        return "indirect_target_selection"
    if symbol.startswith("srso"):
        return "spec_rstack_overflow"
    if symbol.startswith(("retbleed", "entry_untrain", "zen_untrain", "call_depth")):
        return "retbleed"
    if symbol.startswith("__x86_indirect_"):
        return "spectre_v2"
    return "return thunk"


def kernel_symbols(path: str = KALLSYMS) -> dict[int, str]:
    """Addresses of the kernel's thunks and of loaded BPF programs (what a JIT image may jump to)."""
    out: dict[int, str] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                name = parts[2]
                if thunk_kind(name) or "thunk" in name or name.startswith("bpf_prog_"):
                    out[int(parts[0], 16)] = name
    except OSError:
        pass
    return out
