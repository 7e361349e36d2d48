/* An event producer driven by BPF_PROG_TEST_RUN: every run of `produce`
 * writes one fixed 32-byte record into the ring buffer `events`.
 *
 *   %%bpf prod --file bpf/xdp_ring_producer.bpf.c --cflags "-DPAGES=256"
 *   %bpf run prod.produce --repeat 1000000
 *   %bpf df events
 *
 * seq counts every run, also those whose output failed (a full ring), so a
 * gap in seq is a lost record. PAGES (a power of two) sizes the ring.
 */
#ifndef PAGES
#define PAGES 256
#endif
#ifndef TAG
#define TAG 0xabcdef
#endif

struct rec { u64 seq; u64 ts; u32 cpu; u32 len; u64 tag; };
BPF_RINGBUF_OUTPUT(events, PAGES);
BPF_ARRAY(seqs, u64, 1);

int produce(struct xdp_md *ctx) {
    int k = 0;
    u64 *c = seqs.lookup(&k);
    if (!c)
        return XDP_PASS;
    struct rec r = {};
    r.seq = *c;
    *c = r.seq + 1;          /* test_run runs the program sequentially: no atomics needed */
    r.ts = bpf_ktime_get_ns();
    r.cpu = bpf_get_smp_processor_id();
    r.len = ctx->data_end - ctx->data;
    r.tag = TAG;
    events.ringbuf_output(&r, sizeof(r), 0);
    return XDP_PASS;
}
