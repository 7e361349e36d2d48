"""Tail calls, BPF-to-BPF calls and inlined code side by side: the same stage
work chained four ways, timed with BPF_PROG_TEST_RUN at several numbers of
hops, with each way's image size and stack; and the limits of each
(frames, stack, mixing) as experiments whose result is the kernel's own words.

The stage work is one byte of packet work: each stage counts itself in the
packet's first byte, so the run's return value is the number of stages that
ran, and every timed run checks it."""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass

from ..errors import BpfError, UsageProblem
from ..kernel.proginfo import prog_info
from .progress import progress
from .timing import check_repeat, figure, fit_line, run_without_stats, slope_stderr

MECHANISMS = ("tail_call_const", "tail_call_var", "bpf2bpf", "inline")
DEFAULT_HOPS = (0, 1, 2, 4, 8, 16, 32)
MAX_HOPS = 32  # a tail-call chain takes at most 33 tail calls (MAX_TAIL_CALL_CNT); one is left for the end
MODULE = "_bench_calls_{}"
ARRAY = "_bc_{}"

_COMMON = r"""#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* One byte of packet work per stage: the stage counts itself in the packet's first byte. */
static __always_inline int work(struct xdp_md *ctx)
{
    asm volatile("" ::: "memory");    /* each stage reads ctx itself: clang may not merge stages' loads */
    __u8 *count = (void *)(long)ctx->data;
    if ((void *)(count + 1) > (void *)(long)ctx->data_end)
        return -1;
    *count += 1;
    return *count;
}

/* The packet is reused across the repeats of a test run: every run starts from 0. */
static __always_inline int reset(struct xdp_md *ctx)
{
    __u8 *count = (void *)(long)ctx->data;
    if ((void *)(count + 1) > (void *)(long)ctx->data_end)
        return -1;
    *count = 0;
    return *(volatile __u8 *)count;   /* read back: a value the verifier cannot know */
}

char LICENSE[] SEC("license") = "GPL";
"""


def _prog_array(name: str, size: int) -> str:
    return (
        "struct {\n    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);\n"
        f'    __uint(max_entries, {size});\n    __type(key, __u32);\n    __type(value, __u32);\n}} {name} SEC(".maps");\n'
    )


def source(mechanism: str, hops: list[int]) -> str:
    """The --core C of one mechanism: for bpf2bpf and inline one entry program per number
    of hops (the calls are compiled in); for tail calls one chain whose slots are filled
    up to the number of hops (slot hops+1 stays empty: the chain ends there)."""
    top = max(hops)
    out = [_COMMON]
    if mechanism in ("bpf2bpf", "inline"):
        attr = "__noinline" if mechanism == "bpf2bpf" else "__always_inline"
        out.append(f"static {attr} int stage(struct xdp_md *ctx)\n{{\n    return work(ctx);\n}}\n")
        for n in hops:
            body = "".join("    n = stage(ctx);\n" for _ in range(n))
            head = f'SEC("xdp")\nint hops_{n}(struct xdp_md *ctx)\n{{\n    int n = reset(ctx);\n    if (n < 0)\n        return -1;\n'
            out.append(f"{head}{body}    return n;\n}}\n")
    elif mechanism == "tail_call_const":
        array = ARRAY.format("const")
        out.append(_prog_array(array, top + 2))
        out.append(
            f'SEC("xdp")\nint hop_0(struct xdp_md *ctx)\n{{\n    if (reset(ctx) < 0)\n        return -1;\n'
            f"    bpf_tail_call_static(ctx, &{array}, 1);\n    return 0;\n}}\n"
        )
        for k in range(1, top + 1):
            out.append(
                f'SEC("xdp")\nint hop_{k}(struct xdp_md *ctx)\n{{\n    int n = work(ctx);\n'
                f"    bpf_tail_call_static(ctx, &{array}, {k + 1});\n    return n;\n}}\n"
            )
    elif mechanism == "tail_call_var":
        array = ARRAY.format("var")
        out.append(_prog_array(array, top + 2))
        out.append(
            f'SEC("xdp")\nint entry(struct xdp_md *ctx)\n{{\n    int n = reset(ctx);\n    if (n < 0)\n        return -1;\n'
            f"    bpf_tail_call(ctx, &{array}, n + 1);   /* n from the packet: a variable index */\n    return n;\n}}\n"
            f'SEC("xdp")\nint hop(struct xdp_md *ctx)\n{{\n    int n = work(ctx);\n    if (n < 0)\n        return -1;\n'
            f"    bpf_tail_call(ctx, &{array}, n + 1);\n    return n;\n}}\n"
        )
    else:
        raise UsageProblem(f"mechanism is one of {', '.join(MECHANISMS)} (got {mechanism!r})")
    return "\n".join(out)


@dataclass
class _Setup:
    """One mechanism at one number of hops: what to run, and what runs."""

    entry: object  # the Program test-run
    programs: list  # every program the run passes through (distinct), for sizes and stack
    slots: list[tuple[str, str | None]]  # (array[key], MODULE.FUNC or None) to set before running


def _setups(session, mechanism: str, hops: list[int]) -> dict[int, _Setup]:
    module = session.modules[MODULE.format(mechanism)]
    name = module.name
    out = {}
    top = max(hops)
    for n in hops:
        if mechanism in ("bpf2bpf", "inline"):
            p = module.programs[f"hops_{n}"]
            out[n] = _Setup(p, [p], [])
        elif mechanism == "tail_call_const":
            array = ARRAY.format("const")
            programs = [module.programs[f"hop_{k}"] for k in range(n + 1)]
            slots = [(f"{array}[{k}]", f"{name}.hop_{k}" if k <= n else None) for k in range(1, top + 2)]
            out[n] = _Setup(programs[0], programs, slots)
        else:
            array = ARRAY.format("var")
            programs = [module.programs["entry"]] + ([module.programs["hop"]] if n else [])
            slots = [(f"{array}[{k}]", f"{name}.hop" if k <= n else None) for k in range(1, top + 2)]
            out[n] = _Setup(programs[0], programs, slots)
    return out


def _apply_slots(session, setup: _Setup, current: dict) -> None:
    """Set the chain's slots for SETUP, touching only those that change (one map update each)."""
    for key, func in setup.slots:
        if current.get(key) == func:
            continue
        if func is None:
            session.unslot(key)
        else:
            session.slot(key, func)
        current[key] = func


def _sizes(mechanism: str, setup: _Setup) -> dict:
    infos = [prog_info(p.fd) for p in setup.programs]
    stacks = [p.verifier.stack or 0 for p in setup.programs]
    return {
        "jited_bytes": sum(i.jited_len for i in infos),
        "xlated_insns": sum(i.xlated_len for i in infos) // 8,
        # a tail call replaces the frame: the chain needs its largest; a call stacks frames on top
        "stack_bytes": max(stacks) if mechanism.startswith("tail_call") else sum(stacks),
        "verified_insns": sum(i.verified_insns for i in infos),
    }


def bench_calls(session, depths=DEFAULT_HOPS, repeat: int = 100_000, rounds: int = 5, mechanisms=MECHANISMS):
    """The same stage work chained by a constant-index tail call, a variable-index tail
    call, a BPF-to-BPF call and inlined code, at each of DEPTHS (hops): a DataFrame with one
    row per (mechanism, hops): ns_per_run (the median of ROUNDS test runs of REPEAT runs,
    rounds interleaved across mechanisms and hops, kernel run stats off), jited_bytes,
    xlated_insns, stack_bytes, verified_insns; ``attrs["ns_per_hop"]`` is each mechanism's
    fitted slope. Every run checks that its packet counted exactly HOPS stages."""
    import numpy as np
    import pandas as pd

    hops = [depths] if isinstance(depths, int) else sorted(set(depths))
    if not hops or any(not isinstance(h, int) or isinstance(h, bool) or not 0 <= h <= MAX_HOPS for h in hops):
        raise UsageProblem(f"hops are whole numbers 0..{MAX_HOPS} (a chain ends within 33 tail calls)")
    repeat = check_repeat(repeat)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise UsageProblem(f"rounds must be a positive integer (got {rounds!r})")
    mechanisms = list(mechanisms)
    unknown = [m for m in mechanisms if m not in MECHANISMS]
    if unknown or not mechanisms:
        raise UsageProblem(f"mechanisms are {', '.join(MECHANISMS)} (got {unknown or 'none'})")
    taken = [MODULE.format(m) for m in mechanisms if MODULE.format(m) in session.modules]
    taken += [ARRAY.format(i) for i in ("const", "var") if ARRAY.format(i) in session.arrays]
    if taken:
        raise UsageProblem(f"{', '.join(taken)} already exist in this session: is another benchmark running? `%bpf unload` them if not")
    packet = bytes(64)
    times: dict[tuple[str, int], list[int]] = {(m, n): [] for m in mechanisms for n in hops}
    sizes: dict[tuple[str, int], dict] = {}
    stats_on_runs = 0
    with session.instrumentation(stats=False, paths=False), _cleaned_up(session, mechanisms):  # bare calls, no run stats
        setups = {}
        for m in mechanisms:
            session.load(MODULE.format(m), source(m, hops), core=True, count_tail_calls=False, origin="bench_calls")
            setups[m] = _setups(session, m, hops)
        current: dict = {}
        for n in hops:
            for m in mechanisms:
                _apply_slots(session, setups[m][n], current)
                sizes[(m, n)] = _sizes(m, setups[m][n])
        bar = progress(rounds * len(hops) * len(mechanisms), "bench calls")
        with bar:
            for r in range(rounds):
                # interleaved: each round visits every (mechanism, hops), in a rotated order, so a
                # noisy moment spoils one point of several curves rather than one whole curve
                rotated = mechanisms[r % len(mechanisms) :] + mechanisms[: r % len(mechanisms)]
                order = [(m, n) for n in (hops if r % 2 == 0 else hops[::-1]) for m in rotated]
                for m, n in order:
                    bar.update()
                    setup = setups[m][n]
                    _apply_slots(session, setup, current)
                    out, stats_on = run_without_stats(setup.entry, packet, repeat)
                    stats_on_runs += stats_on
                    if out["retval"] != n:
                        raise BpfError(f"bench_calls: {m} with {n} hops counted {out['retval']} stages; the chain is not what it should be")
                    times[(m, n)].append(out["duration_ns"])
    rows = [{"mechanism": m, "hops": n, "ns_per_run": float(np.median(times[(m, n)])), **sizes[(m, n)]} for m in mechanisms for n in hops]
    df = pd.DataFrame(rows, columns=["mechanism", "hops", "ns_per_run", "jited_bytes", "xlated_insns", "stack_bytes", "verified_insns"])
    per_hop, stderr = {}, {}
    for m in mechanisms:
        part = df[df["mechanism"] == m]
        per_hop[m] = fit_line(part["hops"], part["ns_per_run"])[0]
        stderr[m] = slope_stderr(part["hops"], part["ns_per_run"])  # how far this run's noise moves the slope
    df.attrs.update(
        {
            "ns_per_hop": per_hop,
            "ns_per_hop_stderr": stderr,
            "repeat": repeat,
            "rounds": rounds,
            "kernel": platform.release(),
            "stats_on_runs": stats_on_runs,
            "emulated": _emulated(),
        }
    )
    return df


@contextlib.contextmanager
def _cleaned_up(session, mechanisms):
    """The bench's modules and arrays unloaded after the block, however it ends."""
    try:
        yield
    finally:
        for m in mechanisms:
            if MODULE.format(m) in session.modules:
                session.unload(MODULE.format(m))
        for i in ("const", "var"):
            if ARRAY.format(i) in session.arrays:
                session.unload(ARRAY.format(i))


def _emulated() -> bool:
    """Under a software-emulated CPU (QEMU's TCG) timings say nothing about real hardware."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("model name") and "QEMU" in line for line in f)
    except OSError:
        return False


def within_noise(slope: float, stderr: float) -> bool:
    """A per-hop figure this run cannot tell from zero (two standard errors)."""
    return stderr == stderr and abs(slope) < 2 * stderr


def describe(df) -> str:
    """One line per mechanism: ns per hop, and the image and stack at the most hops."""
    a = df.attrs
    top = int(df["hops"].max())
    lines = [f"kernel {a['kernel']}, median of {a['rounds']} x {a['repeat']:,} runs, kernel run stats off while timing"]
    for m, slope in a["ns_per_hop"].items():
        row = df[(df["mechanism"] == m) & (df["hops"] == top)].iloc[0]
        err = a.get("ns_per_hop_stderr", {}).get(m, float("nan"))
        spread = f" ± {err:.2f}" if err == err else ""
        noisy = " (within this run's noise)" if within_noise(slope, err) else ""
        lines.append(f"{m:<16} {slope:6.2f}{spread} ns per hop{noisy}; at {top} hops: {row.jited_bytes} JIT bytes, {row.stack_bytes} B of stack")
    if a.get("emulated"):
        lines.append("(an emulated CPU: these timings show what runs, not what it costs on hardware)")
    if a.get("stats_on_runs"):
        lines.append(f"({a['stats_on_runs']} runs had kernel run stats on: another process holds them)")
    return "\n".join(lines)


def plot_calls(df, axes=None):
    """ns per run against hops (one line per mechanism) beside JIT image size against hops."""
    fig, axes = figure(9, 3.6, columns=2) if axes is None else (axes[0].figure, axes)
    for m, part in df.groupby("mechanism", sort=False):
        slope = df.attrs.get("ns_per_hop", {}).get(m)
        label = f"{m} ({slope:.1f} ns/hop)" if slope == slope and slope is not None else m
        axes[0].plot(part["hops"], part["ns_per_run"], "o-", ms=4, label=label)
        axes[1].plot(part["hops"], part["jited_bytes"], "o-", ms=4, label=m)
    axes[0].set_xlabel("hops (stages chained)")
    axes[0].set_ylabel("ns per run (BPF_PROG_TEST_RUN)")
    axes[0].set_title("time")
    axes[1].set_xlabel("hops (stages chained)")
    axes[1].set_ylabel("JIT image bytes (programs that run)")
    axes[1].set_title("image size")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Tail calls, BPF-to-BPF calls and inlined code, kernel {platform.release()}", fontsize=10)
    return fig


# ------------------------------------------------------------------ the limits, as experiments

LIMITS_MODULE = "_call_limits"


def _frame(name: str, size: int) -> str:
    """A stack array of SIZE bytes that the compiler must keep whole: written every 8 bytes
    and read at an index only known at run time (volatile: every store stays)."""
    return f"    volatile char {name}[{size}];\n    for (int i = 0; i < {size}; i += 8)\n        {name}[i] = i;\n"


def _nested(frames: int, frame_bytes: int = 8) -> str:
    """A main program and FRAMES-1 nested subprograms, each calling the next."""
    out = [_COMMON]
    for k in range(frames - 1, 0, -1):
        call = f"f{k + 1}(ctx)" if k < frames - 1 else "work(ctx)"
        out.append(
            f"static __noinline int f{k}(struct xdp_md *ctx)\n{{\n{_frame('pad', frame_bytes)}"
            f"    return {call} + pad[bpf_get_prandom_u32() & 7];\n}}\n"
        )
    first = "f1(ctx)" if frames > 1 else "work(ctx)"
    out.append(f'SEC("xdp")\nint main_prog(struct xdp_md *ctx)\n{{\n    return {first};\n}}\n')
    return "\n".join(out)


def _stacked(main_bytes: int, sub_bytes: int, tail_call: bool) -> str:
    """A main program using MAIN_BYTES of stack calling a subprogram using SUB_BYTES, which
    tail-calls (TAIL_CALL) or not."""
    array = "_limits_pa"
    call = f"    bpf_tail_call(ctx, &{array}, 0);\n" if tail_call else ""
    return "\n".join(
        [
            _COMMON,
            _prog_array(array, 1),
            f"static __noinline int sub(struct xdp_md *ctx)\n{{\n{_frame('b', sub_bytes)}{call}    return b[bpf_get_prandom_u32() & 7];\n}}\n",
            f'SEC("xdp")\nint main_prog(struct xdp_md *ctx)\n{{\n{_frame("a", main_bytes)}    return sub(ctx) + a[bpf_get_prandom_u32() & 7];\n}}\n',
        ]
    )


LIMIT_EXPERIMENTS = [
    ("8 call frames (main + 7 nested calls)", "loads", lambda: _nested(8)),
    ("9 call frames (main + 8 nested calls)", "refused: at most 8 frames", lambda: _nested(9)),
    ("stack 256 + 248 B across two frames", "loads: 512 B in all is the limit", lambda: _stacked(256, 248, False)),
    ("stack 256 + 320 B across two frames", "refused: over 512 B", lambda: _stacked(256, 320, False)),
    ("a subprogram tail-calls, frames above it 240 B", "loads: calls and tail calls mix", lambda: _stacked(240, 16, True)),
    ("a subprogram tail-calls, frames above it 264 B", "refused: 256 B rule", lambda: _stacked(264, 16, True)),
]


def _kernel_words(error: Exception) -> str:
    """The verifier's own line that says why, from a refusal."""
    text = str(error)
    for key in ("too deep", "Too large", "too large", "combined stack", "tail_calls are not allowed", "invalid"):
        for line in text.splitlines():
            if key in line:
                return line.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else text


def call_limits(session):
    """Each limit of calls and tail calls tried on this kernel: a DataFrame of experiment,
    expected, loaded (bool), kernel_says (the verifier's line when refused, the program's
    stack per frame when loaded)."""
    import pandas as pd

    if LIMITS_MODULE in session.modules:
        raise UsageProblem(f"{LIMITS_MODULE} already exists in this session: `%bpf unload {LIMITS_MODULE}`")
    rows = []
    for name, expected, make in LIMIT_EXPERIMENTS:
        try:
            m = session.load(LIMITS_MODULE, make(), core=True, count_tail_calls=False, origin="call_limits")
        except BpfError as e:
            rows.append({"experiment": name, "expected": expected, "loaded": False, "kernel_says": _kernel_words(e)})
            continue
        try:
            v = m.programs["main_prog"].verifier
            frames = " + ".join(str(d) for d in v.stack_depths)
            rows.append({"experiment": name, "expected": expected, "loaded": True, "kernel_says": f"verified; stack {frames} = {v.stack} B"})
        finally:
            session.unload(LIMITS_MODULE)
    if "_limits_pa" in session.arrays:
        session.unload("_limits_pa")
    return pd.DataFrame(rows, columns=["experiment", "expected", "loaded", "kernel_says"])


def mixing_allowed(limits) -> bool:
    """Whether this kernel let a subprogram tail-call (the x86-64 JIT allows it since 5.10)."""
    row = limits[limits["experiment"].str.startswith("a subprogram tail-calls, frames above it 240")]
    return bool(len(row) and row["loaded"].iloc[0])


CHAIN_STACK_BUDGET = 33 * 256  # 33 tail calls, each leaving at most 256 B of frames below a tail-calling subprogram
