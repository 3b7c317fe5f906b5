/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Mapping checks of the fallback (no BPF LSM): syscall tracepoints, loaded
 * only when the operator opts in (`[bpf] fallback_mappings`), because
 * enabling any syscall tracepoint sends every syscall on the node through the
 * tracing slow path (BENCHMARKS.md, "syscall"). Included by driftguard.bpf.c
 * after memory.h. docs/bpf.md, "Mapping checks on the fallback", has the table.
 *
 *   sys_enter_mmap           PROT_EXEC: MAP_ANONYMOUS -> anonymous; PROT_WRITE -> writable;
 *                            else the file behind the fd (fd table) -> the file rules
 *   sys_exit_mmap            the fd still holds the file the entry judged (a sibling's dup2)
 *   sys_enter_mprotect,      PROT_EXEC: each mapping of the range (bpf_find_vma, 5.17+)
 *   sys_enter_pkey_mprotect  -> anonymous / writable / modified, or the file rules
 *   sys_exit_mprotect, ...   the same on the mappings as they now are (a sibling's munmap+mmap)
 *   sys_enter_shmat          SHM_EXEC -> writable, or anonymous with SHM_RDONLY
 *
 * The verdict is SIGKILL: the call itself still completes (a tracepoint cannot
 * fail it), the process dies before it returns to user space. Cheap arguments
 * (prot, flags) are tested before the policy lookup; tasks under no policy pay
 * one lookup per executable mapping call, nothing for the others.
 *
 * Kernels without bpf_find_vma (before 5.17) load dg_sys_mprotect_novma
 * instead: an mprotect to PROT_EXEC under the memory rule is killed, as
 * writable memory when PROT_WRITE is asked, else as anonymous memory with
 * DG_EVF_MAPPING_UNKNOWN (fail closed); there is no exit re-check of mprotect. A find_vma lookup that fails (-EBUSY: the mmap
 * lock is held by a sibling; -ENOENT after a successful call: the mapping
 * vanished) fails closed the same way.
 */
#ifndef DRIFTGUARD_MEMORY_FALLBACK_H
#define DRIFTGUARD_MEMORY_FALLBACK_H

#define MAP_ANONYMOUS 0x20
#define SHM_RDONLY 010000
#define SHM_EXEC 0100000
#define READ_IMPLIES_EXEC 0x0400000
#define VM_WRITE 0x2
#define VM_EXEC 0x4
#define DG_VMA_MAX 8 /* mappings of one mprotect range checked; a longer range fails closed */

/* The records of the syscalls/ tracepoints (their format files: the arguments from offset 16). */
struct dg_sys_enter {
	__u64 common;
	__s32 nr;
	__u32 pad;
	unsigned long args[6];
};

struct dg_sys_exit {
	__u64 common;
	__s32 nr;
	__u32 pad;
	long ret;
};

/* What the entry of a call left for its exit, keyed by pid_tgid. */
struct dg_sys_call {
	__u64 a;   /* mmap: the file the entry judged; mprotect: start */
	__u64 b;   /* mmap: the fd; mprotect: length */
	__u32 prot;
	__u32 hook;
};

/*
 * LRU: an entry whose exit never came (the task died in the call) is reclaimed,
 * so no task can fill the map for the others. An entry evicted while its call
 * runs (more than 16,384 calls in flight) loses only the exit re-check.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct dg_sys_call);
} dg_sys_calls SEC(".maps");

static __always_inline void kill_if(__u32 act)
{
	if (act == DG_ACT_KILL)
		bpf_send_signal(SIGKILL);
}

/* The protection the kernel applies: READ_IMPLIES_EXEC adds exec to readable memory. */
static __always_inline unsigned long effective_prot(unsigned long prot)
{
	if ((prot & PROT_READ) && !(prot & PROT_EXEC) &&
	    (BPF_CORE_READ(current_task(), personality) & READ_IMPLIES_EXEC))
		prot |= PROT_EXEC;
	return prot;
}

/* The file behind a descriptor of the current task (NULL when there is none). */
static __always_inline struct file *current_fd_file(long fd)
{
	struct file **fds;
	struct file *f = NULL;
	struct fdtable *fdt;

	if (fd < 0)
		return NULL;
	/*
	 * 5.11+: plain loads to the fd array through the BTF task (the open exit
	 * runs on every open on the node); before, probe reads. libbpf resolves
	 * the test at load time and the verifier drops the branch not taken.
	 */
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf)) {
		fdt = bpf_get_current_task_btf()->files->fdt;
		if ((unsigned long)fd >= fdt->max_fds)
			return NULL;
		fds = fdt->fd;
	} else {
		fdt = BPF_CORE_READ(current_task(), files, fdt);
		if ((unsigned long)fd >= BPF_CORE_READ(fdt, max_fds))
			return NULL;
		fds = BPF_CORE_READ(fdt, fd);
	}
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline bool under_policy(void)
{
	__u64 cgid = 0, matched = 0;

	return lookup_policy(&cgid, &matched) != NULL;
}

/* Whether a policy with the memory rule applies to the current task. */
static __always_inline bool memory_rule_applies(void)
{
	__u64 cgid = 0, matched = 0;
	struct dg_policy *p = lookup_policy(&cgid, &matched);

	return p && (p->rules & DG_RULE_EXEC_MEMORY);
}

/*
 * The checks of an executable file mapping: the memory rule when it is also
 * writable, then the file rules. Returns the action.
 */
static __always_inline __u32 check_file_mapping(struct file *file, unsigned long prot, __u32 hook)
{
	__u32 act;

	if (prot & PROT_WRITE) {
		act = check_memory(DG_FILE_WRITABLE, hook, prot, file, DG_ACT_KILL, 0);
		if (act != DG_ACT_ALLOW)
			return act;
	}
	return check_file(file, hook, DG_ACCESS_MMAP_EXEC, DG_ACT_KILL, DG_PATH_WALK);
}

/* Fail closed: the mapping could not be told, judged as anonymous memory. */
static __always_inline __u32 mapping_unknown(__u32 hook, unsigned long prot)
{
	return check_memory(DG_FILE_ANONYMOUS, hook, prot, NULL, DG_ACT_KILL, DG_EVF_MAPPING_UNKNOWN);
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int dg_sys_mmap(struct dg_sys_enter *ctx)
{
	unsigned long prot = effective_prot(ctx->args[2]), flags = ctx->args[3];
	struct dg_sys_call call = {};
	struct file *file;
	__u64 id;
	__u32 act;

	if (!(prot & PROT_EXEC))
		return 0;
	if (flags & MAP_ANONYMOUS) {
		kill_if(check_memory(DG_FILE_ANONYMOUS, DG_HOOK_SYS_MMAP, prot, NULL, DG_ACT_KILL, 0));
		return 0;
	}
	file = current_fd_file((long)(int)ctx->args[4]);
	if (!file)
		return 0; /* EBADF */
	act = check_file_mapping(file, prot, DG_HOOK_SYS_MMAP);
	kill_if(act);
	/* A verdict other than allow was reported already (monitor: once, not again at exit). */
	if (act != DG_ACT_ALLOW)
		return 0;
	/* Allowed at entry; the exit sees whether the fd still holds that file. */
	id = bpf_get_current_pid_tgid();
	call.a = (__u64)file;
	call.b = (__u64)(long)(int)ctx->args[4];
	call.prot = prot;
	call.hook = DG_HOOK_SYS_MMAP;
	if (under_policy())
		bpf_map_update_elem(&dg_sys_calls, &id, &call, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int dg_sys_exit_mmap(struct dg_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct dg_sys_call *c = bpf_map_lookup_elem(&dg_sys_calls, &id);
	struct dg_sys_call call;
	struct file *now;

	if (!c)
		return 0;
	call = *c;
	bpf_map_delete_elem(&dg_sys_calls, &id);
	if (call.hook != DG_HOOK_SYS_MMAP || (unsigned long)ctx->ret >= (unsigned long)-4095)
		return 0;
	now = current_fd_file((long)call.b);
	if ((__u64)now == call.a)
		return 0;
	/* A sibling replaced (or closed) the fd during the call: judge what it holds now. */
	if (!now)
		kill_if(mapping_unknown(DG_HOOK_SYS_MMAP, call.prot));
	else
		kill_if(check_file_mapping(now, call.prot, DG_HOOK_SYS_MMAP));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_shmat")
int dg_sys_shmat(struct dg_sys_enter *ctx)
{
	unsigned long shmflg = ctx->args[2];
	__u32 prot = PROT_READ | PROT_EXEC;

	if (!(shmflg & SHM_EXEC))
		return 0;
	if (!(shmflg & SHM_RDONLY))
		prot |= PROT_WRITE;
	/* SysV shared memory has no image file behind it: anonymous, or writable and executable. */
	kill_if(check_memory(prot & PROT_WRITE ? DG_FILE_WRITABLE : DG_FILE_ANONYMOUS, DG_HOOK_SYS_SHMAT, prot, NULL,
			     DG_ACT_KILL, 0));
	return 0;
}

/* --- mprotect: the mappings of the range, through bpf_find_vma (5.17+) --------------------- */

/* Facts of one mapping, copied by the find_vma callback. */
struct dg_vma_facts {
	__u64 file;
	__u64 end;
	__u64 flags;
	__u64 anon;
};

static long dg_vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct dg_vma_facts *f = data;

	f->file = (__u64)BPF_CORE_READ(vma, vm_file);
	f->end = BPF_CORE_READ(vma, vm_end);
	f->flags = BPF_CORE_READ(vma, vm_flags);
	f->anon = (__u64)BPF_CORE_READ(vma, anon_vma);
	return 0;
}

/*
 * The verdict on one mapping made (or, at exit, found) executable with
 * `prot`. A global function taking scalars: verified once, whatever the
 * caller's loop state.
 */
__noinline __u32 dg_mapping_verdict(__u64 file_addr, __u64 anon, __u32 prot, __u32 hook)
{
	struct file *file = (struct file *)file_addr;
	__u32 kind;

	if (!file)
		return check_memory(DG_FILE_ANONYMOUS, hook, prot, NULL, DG_ACT_KILL, 0);
	if (prot & PROT_WRITE)
		kind = DG_FILE_WRITABLE;
	else if (anon)
		kind = DG_FILE_MODIFIED; /* written copy-on-write pages (SELinux's execmod) */
	else
		/* vm_file is overlay's real file: the mapped-file classification finds the overlay one */
		return check_file(file, hook, DG_ACCESS_MMAP_EXEC, DG_ACT_KILL, DG_PATH_MAPPED);
	return check_memory(kind, hook, prot, file, DG_ACT_KILL, 0);
}

/*
 * Every mapping of [start, start + len): at entry with the protection asked
 * for, at exit (`at_exit`) with the flags each mapping now has. A hole at
 * entry is the call's own error (ENOMEM); at exit, after a successful call,
 * it is a sibling's doing and fails closed, as does a busy lock or a range of
 * more than DG_VMA_MAX mappings.
 */
static __always_inline __u32 check_range(__u64 start, __u64 len, __u32 prot, __u32 hook, bool at_exit)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 addr = start & ~4095ull, end = start + len;
	struct dg_vma_facts f;
	__u32 act, p;
	long r;

	for (int i = 0; i < DG_VMA_MAX; i++) {
		if (addr >= end)
			return DG_ACT_ALLOW;
		__builtin_memset(&f, 0, sizeof(f));
		r = bpf_find_vma(task, addr, dg_vma_cb, &f, 0);
		if (r == -2 /* ENOENT */ && !at_exit)
			return DG_ACT_ALLOW;
		if (r)
			return mapping_unknown(hook, prot);
		p = prot;
		if (at_exit) {
			p = PROT_READ | (f.flags & VM_WRITE ? PROT_WRITE : 0) | (f.flags & VM_EXEC ? PROT_EXEC : 0);
			if (!(p & PROT_EXEC))
				p = 0;
		}
		if (p) {
			act = dg_mapping_verdict(f.file, f.anon, p, hook);
			if (act != DG_ACT_ALLOW)
				return act;
		}
		if (f.end <= addr)
			return mapping_unknown(hook, prot);
		addr = f.end;
	}
	return addr >= end ? DG_ACT_ALLOW : mapping_unknown(hook, prot);
}

static __always_inline int sys_mprotect_vma(struct dg_sys_enter *ctx)
{
	unsigned long prot = effective_prot(ctx->args[2]);
	struct dg_sys_call call = {};
	__u64 id;
	__u32 act;

	if (!(prot & PROT_EXEC))
		return 0;
	/* The JIT opt-out (and a policy from before the rule) needs no lookup of the mappings. */
	if (!memory_rule_applies())
		return 0;
	act = check_range(ctx->args[0], ctx->args[1], prot, DG_HOOK_SYS_MPROTECT, false);
	kill_if(act);
	/* A verdict other than allow was reported already (monitor: once, not again at exit). */
	if (act != DG_ACT_ALLOW)
		return 0;
	id = bpf_get_current_pid_tgid();
	call.a = ctx->args[0];
	call.b = ctx->args[1];
	call.prot = prot;
	call.hook = DG_HOOK_SYS_MPROTECT;
	bpf_map_update_elem(&dg_sys_calls, &id, &call, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mprotect")
int dg_sys_mprotect_vma(struct dg_sys_enter *ctx)
{
	return sys_mprotect_vma(ctx);
}

SEC("tracepoint/syscalls/sys_enter_pkey_mprotect")
int dg_sys_pkey_mprotect_vma(struct dg_sys_enter *ctx)
{
	return sys_mprotect_vma(ctx);
}

static __always_inline int sys_exit_mprotect(struct dg_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct dg_sys_call *c = bpf_map_lookup_elem(&dg_sys_calls, &id);
	struct dg_sys_call call;

	if (!c)
		return 0;
	call = *c;
	bpf_map_delete_elem(&dg_sys_calls, &id);
	if (call.hook != DG_HOOK_SYS_MPROTECT || ctx->ret != 0)
		return 0;
	kill_if(check_range(call.a, call.b, call.prot, DG_HOOK_SYS_MPROTECT, true));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mprotect")
int dg_sys_exit_mprotect_vma(struct dg_sys_exit *ctx)
{
	return sys_exit_mprotect(ctx);
}

SEC("tracepoint/syscalls/sys_exit_pkey_mprotect")
int dg_sys_exit_pkey_mprotect_vma(struct dg_sys_exit *ctx)
{
	return sys_exit_mprotect(ctx);
}

/*
 * Without bpf_find_vma: an mprotect to PROT_EXEC under the memory rule is
 * writable (PROT_WRITE asked) or fails closed as anonymous memory.
 */
static __always_inline int sys_mprotect_novma(struct dg_sys_enter *ctx)
{
	unsigned long prot = effective_prot(ctx->args[2]);

	if (!(prot & PROT_EXEC))
		return 0;
	if (!memory_rule_applies())
		return 0;
	/* writable and executable at once needs no lookup */
	if (prot & PROT_WRITE)
		kill_if(check_memory(DG_FILE_WRITABLE, DG_HOOK_SYS_MPROTECT, prot, NULL, DG_ACT_KILL, 0));
	else
		kill_if(mapping_unknown(DG_HOOK_SYS_MPROTECT, prot));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mprotect")
int dg_sys_mprotect_novma(struct dg_sys_enter *ctx)
{
	return sys_mprotect_novma(ctx);
}

SEC("tracepoint/syscalls/sys_enter_pkey_mprotect")
int dg_sys_pkey_mprotect_novma(struct dg_sys_enter *ctx)
{
	return sys_mprotect_novma(ctx);
}

#endif
