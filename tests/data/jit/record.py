"""Record the JIT images tests/test_dump_recorded.py reads: run as root on a host
(or in a virtual machine booted with other mitigations) to add that host's code.

    python tests/data/jit/record.py OUT.json

Recorded so far: retpoline-srso-6.18.json on a host with retpolines and SRSO
return thunks; plain-6.1.json and retpoline-6.1.json in Debian's 6.1 kernel
booted by virtme-ng under QEMU, with `mitigations=off` (a plain `jmp rcx` and
`ret`) and with the default mitigations (a retpoline, and `ret`: QEMU's CPU
needs no return thunk).

The programs have the shapes real chains have: a constant-index and a
variable-index site in one function (the slot filled, then emptied), and a
--core subprogram that tail-calls (BPF-to-BPF mixed with a tail call)."""

from __future__ import annotations

import json
import os
import platform
import sys

from bpfmagic.experiments.dump import jit_image
from bpfmagic.session import Session

CHAIN = r"""
BPF_PROG_ARRAY(jt, 4);
int entry(struct xdp_md *ctx) {
  jt.call(ctx, 1);
  u32 k = ctx->rx_queue_index;
  jt.call(ctx, k);
  return XDP_PASS; }
int leaf(struct xdp_md *ctx) { return XDP_DROP; }
"""

SUBPROG = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __type(key, u32); __type(value, u32); } sj SEC(".maps");
static __noinline int hop(struct xdp_md *ctx) {
    volatile char b[40];
    b[3] = 5;
    bpf_tail_call(ctx, &sj, 1);
    return b[3];
}
SEC("xdp") int top(struct xdp_md *ctx) { volatile char a[24]; a[1] = 2; return hop(ctx) + a[1]; }
SEC("xdp") int end(struct xdp_md *ctx) { return XDP_DROP; }
char LICENSE[] SEC("license") = "GPL";
"""


def _kept(image):
    """Only the kernel symbols the image jumps or calls to: the file stays small."""
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    targets = set()
    for _, start, code in image.functions:
        for ins in md.disasm(code, start):
            if ins.mnemonic in ("jmp", "call") and ins.op_str.startswith("0x"):
                targets.add(int(ins.op_str, 16))
    image.symbols = {a: s for a, s in image.symbols.items() if a in targets}
    return image.to_json()


def main(out: str) -> int:
    images, notes = {}, []
    with Session() as s:
        s.load("rec", CHAIN, slots={"jt[1]": "leaf"})
        images["const-filled-and-var"] = _kept(jit_image(s.program("rec.entry")))
        s.unslot("jt[1]")
        images["const-empty-and-var"] = _kept(jit_image(s.program("rec.entry")))
        try:
            s.load("sub", SUBPROG, core=True, slots={"sj[1]": "end"})
            images["subprog-const-filled"] = _kept(jit_image(s.program("sub.top")))
        except Exception as e:  # the --core case is optional on a guest without clang's headers
            notes.append(f"--core case not recorded: {e}")
    data = {
        "kernel": platform.release(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""),
        "recorded_by": "tests/data/jit/record.py",
        "notes": notes,
        "images": images,
    }
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, out)
    print(f"recorded {len(images)} images from kernel {data['kernel']} into {out}", *notes, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
