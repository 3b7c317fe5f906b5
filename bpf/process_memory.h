/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Writes into process memory (the DDexec class). Included by driftguard.bpf.c
 * after memory.h. docs/bpf.md, "Process memory", has the table.
 *
 *   lsm/file_open   the caller's own /proc/<pid>/mem (self, <own pid>,
 *                   task/<tid>, reopened through /proc/self/fd/N, io_uring's
 *                   openat) opened for writing -> -EPERM
 *   lsm/ptrace_access_check  attach mode, from a task under policy: ptrace
 *                   attach/seize, process_vm_readv/writev, another process's
 *                   mem, pidfd_getfd -> -EPERM (off with the debug opt-out)
 *                   and into a process under policy, from a task of another
 *                   container, decided by the target's policy (off with the
 *                   target's debug opt-out)
 *   lsm/ptrace_traceme       PTRACE_TRACEME from a task under policy -> -EPERM
 *   lsm/file_receive a mem file opened for writing, received over a unix
 *                   socket or with pidfd_getfd: the receiver's own (rule 1)
 *                   or another's (as ptrace_access_check) -> -EPERM
 *
 * The kernel never asks ptrace_access_check about a process's own mem
 * (mm_access skips it when the mm is the caller's), so the open is the one
 * place to refuse it. file_open runs for every open on the node: the tests
 * that rule out all other files come first (write mode, procfs, the name
 * "mem"), the policy lookup last.
 */
#ifndef DRIFTGUARD_PROCESS_MEMORY_H
#define DRIFTGUARD_PROCESS_MEMORY_H

#define FMODE_WRITE 0x2
#define PROC_SUPER_MAGIC 0x9fa0

/* fs/proc/internal.h: the task a /proc/<pid> inode stands for is pid's. */
struct proc_inode___dg {
	struct pid *pid;
	struct inode vfs_inode;
} __attribute__((preserve_access_index));

/* A procfs file named "mem": the superblock's magic, then the name's first four bytes. */
static __always_inline bool proc_mem_named(unsigned long magic, const unsigned char *name)
{
	char buf[4] = {};

	if (magic != PROC_SUPER_MAGIC)
		return false;
	if (bpf_probe_read_kernel(buf, sizeof(buf), name) < 0)
		return false;
	return buf[0] == 'm' && buf[1] == 'e' && buf[2] == 'm' && buf[3] == 0;
}

/*
 * Is `file` a procfs mem file opened for writing? Cheapest tests first. For
 * the LSM hooks, whose `file` is a BTF pointer: plain loads, no probe read
 * until the name of a procfs file open for writing. Every open on the node
 * runs this, and a read-only open returns after one load.
 */
static __always_inline bool proc_mem_for_write_btf(struct file *file)
{
	if (!(file->f_mode & FMODE_WRITE))
		return false;
	return proc_mem_named(file->f_inode->i_sb->s_magic, file->f_path.dentry->d_name.name);
}

/* The same for a file pointer read from kernel memory (the fallback): probe reads. */
static __always_inline bool proc_mem_for_write(struct file *file)
{
	if (!(BPF_CORE_READ(file, f_mode) & FMODE_WRITE))
		return false;
	return proc_mem_named(BPF_CORE_READ(file, f_inode, i_sb, s_magic), BPF_CORE_READ(file, f_path.dentry, d_name.name));
}

/* The task of a /proc/<pid> (or task/<tid>) inode, NULL when it is gone. */
static __always_inline struct task_struct *proc_inode_task(struct inode *inode)
{
	struct proc_inode___dg *pi;
	struct hlist_node *first;
	struct pid *pid;

	pi = (void *)inode - bpf_core_field_offset(struct proc_inode___dg, vfs_inode);
	pid = BPF_CORE_READ(pi, pid);
	if (!pid)
		return NULL;
	first = BPF_CORE_READ(pid, tasks[PIDTYPE_PID].first);
	if (!first)
		return NULL;
	return (void *)first - bpf_core_field_offset(struct task_struct, pid_links);
}

/*
 * Is `task`'s memory the caller's own (its own process, a thread of it, or a
 * process sharing its memory through CLONE_VM)?
 */
static __always_inline bool shares_current_mm(struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);

	return mm && mm == BPF_CORE_READ(current_task(), mm);
}

/* An LSM hook's answer to a process-memory verdict. */
static __always_inline int lsm_errno(__u32 act)
{
	barrier_var(act);
	return act == DG_ACT_DENY ? -EPERM : 0;
}

/*
 * The decision and the event of an access to process memory under policy p
 * (cgid: the caller's cgroup; matched: p's cgroup): the caller's own memory
 * (`file` is its mem file, which names the event's path), another process's,
 * or, with p the target's, the target's from another container (`file` NULL,
 * no path). `target` is the process reached, named in the event. Returns the
 * verdict's action.
 */
static __always_inline __u32 decide_process(const struct dg_policy *p, __u32 kind, __u32 hook,
					    struct file *file, struct task_struct *target, __u64 cgid,
					    __u64 matched, __u32 enforce_action)
{
	struct cgroup *cg;
	struct dg_event *e;
	struct dg_input in = {};
	struct dg_verdict v;
	struct dg_scratch *s;
	__u32 flags = 0;

	stat_inc(DG_STAT_CHECKS);
	in.mode = p->mode;
	in.rules = p->rules;
	in.file_kind = kind;
	in.list = DG_LIST_NONE;
	in.access = DG_ACCESS_MEM_WRITE;
	in.enforce_action = enforce_action;
	v = dg_decide(&in);
	if (v.action == DG_ACT_ALLOW)
		return DG_ACT_ALLOW;
	s = scratch();
	if (!s)
		return v.action;
	/* decided on scalars, not by testing `file` (see check_memory()) */
	barrier_var(kind);
	barrier_var(hook);
	if (kind == DG_FILE_OWN_MEMORY || hook == DG_HOOK_FILE_RECEIVE || hook == DG_HOOK_SYS_OPEN)
		flags = walk_path(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), 1);
	e = event_begin(s, &v, hook, kind, in.mode, flags, cgid, matched);
	if (!e)
		return v.action;
	if (target) {
		e->target_pid = BPF_CORE_READ(target, pid);
		e->target_tgid = BPF_CORE_READ(target, tgid);
		bpf_probe_read_kernel_str(e->target_comm, sizeof(e->target_comm), &target->comm);
		cg = BPF_CORE_READ(target, cgroups, dfl_cgrp);
		if (cg)
			e->target_cgroup_id = BPF_CORE_READ(cg, kn, id);
		e->target_policy_cgroup_id = dg_cgroup_policy_cgroup((__u64)cg);
	}
	event_submit(e);
	return v.action;
}

/* The caller's policy decides (rules 1 and 2). */
static __always_inline __u32 check_process(__u32 kind, __u32 hook, struct file *file,
					   struct task_struct *target, __u32 enforce_action)
{
	__u64 cgid = 0, matched = 0;
	struct dg_policy *p = lookup_policy(&cgid, &matched);

	if (!p)
		return DG_ACT_ALLOW;
	return decide_process(p, kind, hook, file, target, cgid, matched, enforce_action);
}

/*
 * Is the current task in a pid namespace below the node's? Every container
 * runtime gives a container one unless told to share the node's (hostPID).
 */
static __always_inline bool in_pid_namespace(void)
{
	return BPF_CORE_READ(current_task(), thread_pid, level) > 0;
}

#define PTRACE_MODE_ATTACH 0x02

/*
 * The kernel asks this about another thread group only (its own passes before
 * the LSM), in attach mode for ptrace attach and seize, process_vm_readv and
 * process_vm_writev, another process's /proc/<pid>/mem (read or write),
 * pidfd_getfd. Read mode (ps, /proc/<pid>/maps, status, environ) passes.
 */
/*
 * Rules 2 and 3 for reaching `target`, another process (its mem `file` when
 * that names the event's path): 0 or -EPERM.
 */
static __always_inline int reach_other(struct task_struct *target, __u32 hook, struct file *file)
{
	__u64 cgid = 0, matched = 0, tpol;
	struct dg_policy *p;
	__u32 act;

	/* rule 2: the caller's policy */
	p = lookup_policy(&cgid, &matched);
	if (p) {
		act = decide_process(p, DG_FILE_OTHER_PROCESS, hook, file, target, cgid, matched, DG_ACT_DENY);
		if (lsm_errno(act))
			return -EPERM;
	} else if (!in_pid_namespace()) {
		/* the node's own processes (pid namespace of the node, no policy) keep their power */
		return 0;
	}
	/*
	 * rule 3: a task of another container (under another policy, or in a pid
	 * namespace of its own) reaching into a process under policy: the
	 * target's policy decides. The same policy already decided above.
	 */
	tpol = dg_cgroup_policy_cgroup((__u64)BPF_CORE_READ(target, cgroups, dfl_cgrp));
	if (!tpol || tpol == matched)
		return 0;
	p = bpf_map_lookup_elem(&dg_policies, &tpol);
	if (!p)
		return 0;
	return lsm_errno(decide_process(p, DG_FILE_FROM_OTHER_CONTAINER, hook, file, target, cgid, tpol, DG_ACT_DENY));
}

/*
 * The kernel asks this about another thread group only (its own passes before
 * the LSM), in attach mode for ptrace attach and seize, process_vm_readv and
 * process_vm_writev, another process's /proc/<pid>/mem (read or write),
 * pidfd_getfd. Read mode (ps, /proc/<pid>/maps, status, environ) passes.
 */
SEC("lsm/ptrace_access_check")
int BPF_PROG(dg_ptrace_access, struct task_struct *child, unsigned int mode)
{
	if (!(mode & PTRACE_MODE_ATTACH))
		return 0;
	return reach_other(child, DG_HOOK_PTRACE_ACCESS, NULL);
}

/* PTRACE_TRACEME: the caller offers itself to its parent, who could then write its memory. */
SEC("lsm/ptrace_traceme")
int BPF_PROG(dg_ptrace_traceme, struct task_struct *parent)
{
	return lsm_errno(check_process(DG_FILE_OTHER_PROCESS, DG_HOOK_PTRACE_TRACEME, NULL, parent, DG_ACT_DENY));
}

SEC("lsm/file_open")
int BPF_PROG(dg_file_open, struct file *file)
{
	struct task_struct *target;

	if (!proc_mem_for_write_btf(file))
		return 0;
	/* another process's mem: mem_open's own ptrace check asks dg_ptrace_access */
	target = proc_inode_task(BPF_CORE_READ(file, f_inode));
	if (!target || !shares_current_mm(target))
		return 0;
	return lsm_errno(check_process(DG_FILE_OWN_MEMORY, DG_HOOK_FILE_OPEN, file, target, DG_ACT_DENY));
}

/*
 * An fd received over a unix socket (SCM_RIGHTS) or taken with pidfd_getfd:
 * a mem file opened for writing by someone else. Of the receiver's own memory
 * it is rule 1 (no opt-out); of another process's, rules 2 and 3 as if the
 * receiver had opened it. A refused fd is not installed (recvmsg reports
 * MSG_CTRUNC, pidfd_getfd -EPERM).
 */
SEC("lsm/file_receive")
int BPF_PROG(dg_file_receive, struct file *file)
{
	struct task_struct *target;

	if (!proc_mem_for_write_btf(file))
		return 0;
	target = proc_inode_task(BPF_CORE_READ(file, f_inode));
	if (!target)
		return 0;
	if (!shares_current_mm(target))
		return reach_other(target, DG_HOOK_FILE_RECEIVE, file);
	return lsm_errno(check_process(DG_FILE_OWN_MEMORY, DG_HOOK_FILE_RECEIVE, file, target, DG_ACT_DENY));
}

#endif
