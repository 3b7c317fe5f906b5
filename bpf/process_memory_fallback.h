/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Writes into process memory on the fallback (no BPF LSM): syscall
 * tracepoints, loaded with the mapping checks (`[bpf] fallback_mappings`:
 * any syscall tracepoint slows every syscall on the node). Included by
 * driftguard.bpf.c after memory_fallback.h and process_memory.h. The verdict
 * is SIGKILL of the caller; docs/bpf.md, "Process memory on the fallback".
 *
 *   sys_enter_ptrace          PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_TRACEME
 *   sys_enter_process_vm_readv, _writev
 *   sys_enter_pidfd_getfd     -> rule 2 (process_access), from a task under policy
 *   sys_exit_open, _openat, _openat2
 *                             the fd the call returned: a procfs mem file opened
 *                             for writing -> rule 1 (the caller's own memory) or 2
 *
 * Decided on what the call did, not on its arguments in user memory (a sibling
 * thread can rewrite a path after the entry read it): the open's exit looks at
 * the file in the fd table. A kill at a call's entry stops the caller's own
 * access (__get_user_pages stops on a pending fatal signal); a kill at the
 * open's exit leaves the fd in the table, which a process sharing it
 * (clone(CLONE_FILES) without CLONE_THREAD) can still use: a named limit, as
 * are the target's policy (rule 3: the target is a pid of the caller's
 * namespace, which BPF cannot resolve here), io_uring's opens and the 32-bit
 * compat calls, which no syscall tracepoint sees.
 */
#ifndef DRIFTGUARD_PROCESS_MEMORY_FALLBACK_H
#define DRIFTGUARD_PROCESS_MEMORY_FALLBACK_H

#define PTRACE_TRACEME 0
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

/* Rule 2 at a call's entry: kill a caller under policy (an alert in monitor mode). */
static __always_inline int kill_other_process_access(__u32 hook, struct task_struct *target)
{
	kill_if(check_process(DG_FILE_OTHER_PROCESS, hook, NULL, target, DG_ACT_KILL));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_ptrace")
int dg_sys_ptrace(struct dg_sys_enter *ctx)
{
	long req = (long)ctx->args[0];

	if (req == PTRACE_TRACEME)
		return kill_other_process_access(DG_HOOK_SYS_PTRACE, BPF_CORE_READ(current_task(), real_parent));
	if (req == PTRACE_ATTACH || req == PTRACE_SEIZE)
		return kill_other_process_access(DG_HOOK_SYS_PTRACE, NULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_process_vm_writev")
int dg_sys_process_vm_writev(struct dg_sys_enter *ctx)
{
	return kill_other_process_access(DG_HOOK_SYS_PROCESS_VM, NULL);
}

SEC("tracepoint/syscalls/sys_enter_process_vm_readv")
int dg_sys_process_vm_readv(struct dg_sys_enter *ctx)
{
	return kill_other_process_access(DG_HOOK_SYS_PROCESS_VM, NULL);
}

SEC("tracepoint/syscalls/sys_enter_pidfd_getfd")
int dg_sys_pidfd_getfd(struct dg_sys_enter *ctx)
{
	return kill_other_process_access(DG_HOOK_SYS_PIDFD_GETFD, NULL);
}

/* The exit of an open: the file of the returned fd, judged as lsm/file_open and ptrace_access_check would. */
static __always_inline int sys_exit_open(struct dg_sys_exit *ctx)
{
	struct task_struct *target;
	struct file *file;
	__u32 kind;

	if (ctx->ret < 0)
		return 0;
	file = current_fd_file(ctx->ret);
	if (!file || !proc_mem_for_write(file))
		return 0;
	target = proc_inode_task(BPF_CORE_READ(file, f_inode));
	if (!target)
		return 0;
	kind = shares_current_mm(target) ? DG_FILE_OWN_MEMORY : DG_FILE_OTHER_PROCESS;
	kill_if(check_process(kind, DG_HOOK_SYS_OPEN, file, target, DG_ACT_KILL));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int dg_sys_exit_open(struct dg_sys_exit *ctx)
{
	return sys_exit_open(ctx);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int dg_sys_exit_openat(struct dg_sys_exit *ctx)
{
	return sys_exit_open(ctx);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int dg_sys_exit_openat2(struct dg_sys_exit *ctx)
{
	return sys_exit_open(ctx);
}

#endif
