/* The tracex5 sample's BPF side as it is written for libbpf: a kprobe on
 * __seccomp_filter (called for every syscall of a task under a seccomp filter,
 * its first argument the syscall number) tail-calls the handler of that
 * syscall through a prog array the loader fills; handlers not in the array
 * fall through to the code after the call. Needs kprobes (not every kernel has
 * them: `%bpf doctor`).
 *
 *   %%bpf tracex5 --core --file bpf/tracex5_seccomp.bpf.c
 *   m.globals["target_tgid"] = PID   # count only PID's syscalls (0: every task)
 *
 * The loader of the original sample filled progs[] from the handlers' section
 * names; libbpf does it from the .values initializer below. counts[] holds,
 * per syscall number, what the handlers (and the fall-through) matched.
 *
 * One change: the sample read the syscall's arguments from __seccomp_filter's
 * seccomp_data argument, which x86-64 syscall entry passes as NULL (the kernel
 * fills its own copy later), so the handlers read them from the task's saved
 * user registers when it is NULL.
 */
#include "vmlinux.h"
#include <asm/unistd.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define PROG(F) SEC("kprobe") int bpf_func_##F

__u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

static __always_inline void count(u32 nr)
{
	u64 *n = bpf_map_lookup_elem(&counts, &nr);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Argument I of the syscall: from seccomp_data where the caller passed one, else from
 * the registers the task entered the kernel with. */
static __always_inline u64 syscall_arg(const struct seccomp_data *sd, int i)
{
	struct pt_regs *regs;

	if (sd)
		return i == 0 ? BPF_CORE_READ(sd, args[0]) : BPF_CORE_READ(sd, args[2]);
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return i == 0 ? PT_REGS_PARM1_CORE_SYSCALL(regs) : PT_REGS_PARM3_CORE_SYSCALL(regs);
}

int bpf_func_SYS__NR_write(struct pt_regs *ctx);
int bpf_func_SYS__NR_read(struct pt_regs *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1024);
	__uint(key_size, sizeof(u32));
	__array(values, int (void *));
} progs SEC(".maps") = {
	.values = {
		[__NR_write] = (void *)&bpf_func_SYS__NR_write,
		[__NR_read] = (void *)&bpf_func_SYS__NR_read,
	},
};

SEC("kprobe/__seccomp_filter")
int BPF_KPROBE(bpf_prog1, int this_syscall, const struct seccomp_data *sd)
{
	if (target_tgid && (bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;

	/* dispatch into next BPF program depending on syscall number */
	bpf_tail_call(ctx, &progs, this_syscall);

	/* fall through -> unknown syscall */
	if (this_syscall >= __NR_getuid && this_syscall <= __NR_getsid) {
		bpf_printk("syscall=%d (one of get/set uid/pid/gid)", this_syscall);
		count(this_syscall);
	}
	return 0;
}

/* we jump here when syscall number == __NR_write */
PROG(SYS__NR_write)(struct pt_regs *ctx)
{
	struct seccomp_data *sd = (struct seccomp_data *)PT_REGS_PARM2(ctx);
	u64 size = syscall_arg(sd, 2);

	if (size == 512) {
		bpf_printk("write(fd=%d, size=%d)", (int)syscall_arg(sd, 0), (int)size);
		count(__NR_write);
	}
	return 0;
}

PROG(SYS__NR_read)(struct pt_regs *ctx)
{
	struct seccomp_data *sd = (struct seccomp_data *)PT_REGS_PARM2(ctx);
	u64 size = syscall_arg(sd, 2);

	if (size > 128 && size <= 1024) {
		bpf_printk("read(fd=%d, size=%d)", (int)syscall_arg(sd, 0), (int)size);
		count(__NR_read);
	}
	return 0;
}

char _license[] SEC("license") = "GPL";
