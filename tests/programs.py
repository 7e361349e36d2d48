"""Programs and helpers that tests in more than one file use: the ring-buffer
producer of bpf/, a chain with paths, a child Python running this checkout,
the shell with bpfmagic loaded, the kernel release rule of the tail-call budget."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import textwrap

from bpfmagic.kernel import libbpf

from .paths import REPO

PACKET = bytes(64)  # XDP test_run needs at least an Ethernet header

# One fixed 32-byte record per run (the reusable snippet in bpf/): seq counts every run.
RING_PRODUCER_FILE = os.path.join(REPO, "bpf", "xdp_ring_producer.bpf.c")


def ring_producer(pages: int = 256) -> str:
    with open(RING_PRODUCER_FILE) as f:
        return f"#define PAGES {pages}\n" + f.read()


def produce(module, func: str, runs: int) -> None:
    libbpf.test_run(module.program(func).fd, data=PACKET, repeat=runs)


PATH_CHAIN = r"""
BPF_PROG_ARRAY(pj, 8);
int entry(struct xdp_md *ctx) {
  u8 *p = (u8 *)(long)ctx->data;
  if ((void *)(p + 1) > (void *)(long)ctx->data_end) return XDP_ABORTED;
  if (*p == 0xAA) pj.call(ctx, 3);
  pj.call(ctx, 1);
  return XDP_PASS; }
int parse_eth(struct xdp_md *ctx) { pj.call(ctx, 2); return XDP_DROP; }
int parse_ip(struct xdp_md *ctx) { pj.call(ctx, 5); return XDP_TX; }
"""


def run_child(
    code: str, timeout: float = 120, prefix: list[str] | None = None, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run CODE in a fresh Python that imports this checkout's bpfmagic: a
    crash (segfault, abort) there is a failed test, not a dead test run."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    env = {k: v for k, v in env.items() if v != ""}  # an empty value in env_extra unsets the variable
    return subprocess.run(
        [*(prefix or []), sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def child_result(r: subprocess.CompletedProcess) -> dict:
    """The JSON the child printed on its last stdout line."""
    assert r.returncode == 0, f"child died with {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def bpf_shell():
    """The shared test shell with bpfmagic loaded; afterwards the extension is
    unloaded and BpfMagics' config (shared by every later shell test) is as it was."""
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic

    ip = get_ipython()
    saved = copy.deepcopy(ip.config.get("BpfMagics")) if "BpfMagics" in ip.config else None
    ip.run_line_magic("load_ext", "bpfmagic")
    try:
        yield ip
    finally:
        bpfmagic.shell.drop()
        ip.run_line_magic("unload_ext", "bpfmagic")
        if saved is None:
            ip.config.pop("BpfMagics", None)
        else:
            ip.config["BpfMagics"] = saved


def shared_budget(release: str) -> bool:
    """Whether this kernel counts tail calls per run across subprograms (6.10 and later)."""
    major, minor = (int(x) for x in release.split(".")[:2])
    return (major, minor) >= (6, 10)


# A chain as tail-call-bench's kern.c writes it: a legacy prog array, programs that tail-call
# each other through it, a size from a #define.
LEGACY_CHAIN = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define NUM_STAGES 8

struct bpf_map_def SEC("maps") jmp_table = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = NUM_STAGES,
};

SEC("xdp")
int entry(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp_table, 1);
	return XDP_ABORTED;
}

SEC("xdp")
int stage1(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp_table, 2);
	return XDP_PASS;
}

SEC("xdp")
int stage2(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
"""


# The benchmark shape: a legacy-style stage macro that names the function by pasting
# and its section by stringifying, one line per stage, each calling the next slot.
PROG_MACRO_CHAIN = textwrap.dedent(r"""
    #include <linux/bpf.h>
    #include <bpf/bpf_helpers.h>

    struct {
        __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
        __uint(max_entries, 4);
        __uint(key_size, sizeof(__u32));
        __uint(value_size, sizeof(__u32));
    } stages SEC(".maps");

    #define STAGE(X) SEC("xdp/stage" #X)                     \
    int stage_##X(struct xdp_md *ctx) {                       \
        bpf_tail_call(ctx, &stages, X + 1);                   \
        return XDP_PASS;                                      \
    }

    STAGE(0)
    STAGE(1)
    STAGE(2)

    char _license[] SEC("license") = "GPL";
    """)


XDP_PASS_C = "int f(struct xdp_md *ctx) { return XDP_PASS; }\n"
