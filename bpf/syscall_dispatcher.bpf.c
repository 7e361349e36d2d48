/* A syscall dispatcher (the tracex5 pattern) for `%%bpf NAME --file`.
 *
 *   %bpf progarray progs 512 --keys syscalls
 *   %%bpf disp --file bpf/syscall_dispatcher.bpf.c -a dispatch=raw_tracepoint:sys_enter
 *
 * Every syscall (of TARGET_PID only, when compiled with --cflags "-DTARGET_PID=...")
 * tail-calls progs[syscall number]; an empty slot falls through and is counted.
 */
BPF_PROG_ARRAY(progs, 512);
BPF_ARRAY(dispatch_counts, u64, 2);       /* [0] dispatched, [1] fell through */

int dispatch(struct bpf_raw_tracepoint_args *ctx) {
#ifdef TARGET_PID
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET_PID)
        return 0;
#endif
    int k = 0;
    dispatch_counts.atomic_increment(k);
    progs.call(ctx, ctx->args[1]);        /* args[1]: the syscall number */
    k = 1;
    dispatch_counts.atomic_increment(k);  /* only reached when the slot is empty */
    return 0;
}
