/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The memory rules (W^X): code the image did not ship must not run from
 * memory either. Included by driftguard.bpf.c after the policy lookup, the
 * scratch map and emit(); the LSM entry points mmap_file and file_mprotect
 * call check_memory() before their file check. docs/bpf.md, "Memory", has the
 * table of what each hook sees and which rule each route reports.
 *
 *   mmap(PROT_EXEC) with no file            DG_FILE_ANONYMOUS  (anonymous, MAP_SHARED|MAP_ANONYMOUS:
 *                                                               the kernel makes its shmem file later)
 *   mmap(PROT_WRITE|PROT_EXEC) of a file    DG_FILE_WRITABLE
 *   mprotect(PROT_EXEC), no vm_file         DG_FILE_ANONYMOUS  (heap, stack, anonymous)
 *   mprotect(PROT_WRITE|PROT_EXEC) of a file DG_FILE_WRITABLE
 *   mprotect(PROT_EXEC) of a private file
 *   mapping with written pages (anon_vma)   DG_FILE_MODIFIED   (SELinux's execmod)
 *
 * prot is what the kernel will apply: READ_IMPLIES_EXEC is already folded in.
 */
#ifndef DRIFTGUARD_MEMORY_H
#define DRIFTGUARD_MEMORY_H

#define PROT_READ 0x1
#define PROT_WRITE 0x2
#define TMPFS_MAGIC 0x01021994
#define HUGETLBFS_MAGIC 0x958458f6

/*
 * Monitor mode reports each container, rule and mapping kind at most once per
 * interval: JIT runtimes flip pages between RW and RX all the time. The event
 * carries how many checks it stands for (the ones suppressed since the last
 * event of its key, plus itself). Enforce mode reports every denial.
 */
#define DG_MEM_ALERT_INTERVAL_NS (10ull * 1000 * 1000 * 1000)

struct dg_mem_alert_key {
	__u64 policy_cgroup_id;
	__u32 match;
	__u32 file_kind;
};

struct dg_mem_alert {
	__u64 last_ns;    /* when the last event of this key was written */
	__u64 suppressed; /* checks since then that wrote none */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct dg_mem_alert_key);
	__type(value, struct dg_mem_alert);
} dg_mem_alerts SEC(".maps");

/*
 * Monitor mode: 0 when this alert is folded into the next event of its key,
 * else the count the event carries. Two CPUs racing past an expired interval
 * may both report: at worst a second event, never a lost count.
 */
static __always_inline __u32 mem_alert_count(__u64 matched, __u32 match, __u32 kind)
{
	struct dg_mem_alert_key k = { .policy_cgroup_id = matched, .match = match, .file_kind = kind };
	struct dg_mem_alert fresh = {};
	struct dg_mem_alert *a;
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 n;

	a = bpf_map_lookup_elem(&dg_mem_alerts, &k);
	if (a && now - a->last_ns < DG_MEM_ALERT_INTERVAL_NS) {
		__sync_fetch_and_add(&a->suppressed, 1);
		return 0;
	}
	/* take what was counted; increments racing with this stay for the next event (no fetch atomics on 5.10) */
	n = a ? a->suppressed : 0;
	if (n)
		__sync_fetch_and_add(&a->suppressed, -n);
	if (a) {
		a->last_ns = now;
	} else {
		fresh.last_ns = now;
		bpf_map_update_elem(&dg_mem_alerts, &k, &fresh, BPF_ANY);
	}
	return n + 1 > 0xffffffffull ? 0xffffffffu : (__u32)(n + 1);
}

/*
 * What an mprotect(PROT_EXEC) of this mapping makes executable, or
 * DG_FILE_IMAGE when only the file rules have a say (the mapping shows the
 * file's own pages).
 */
static __always_inline __u32 mprotect_memory_kind(struct vm_area_struct *vma, struct file *file, unsigned long prot)
{
	if (!file)
		return DG_FILE_ANONYMOUS;
	if (prot & PROT_WRITE)
		return DG_FILE_WRITABLE;
	/* set by the first copy-on-write fault of a private mapping */
	if (BPF_CORE_READ(vma, anon_vma))
		return DG_FILE_MODIFIED;
	return DG_FILE_IMAGE;
}

/* What an mmap(PROT_EXEC) makes executable (DG_FILE_IMAGE: only the file rules have a say). */
static __always_inline __u32 mmap_memory_kind(struct file *file, unsigned long prot)
{
	if (!file)
		return DG_FILE_ANONYMOUS;
	if (prot & PROT_WRITE)
		return DG_FILE_WRITABLE;
	return DG_FILE_IMAGE;
}

/* shmem (memfd, shared anonymous memory, SysV shm, tmpfs) or hugetlbfs memory. */
static __always_inline __u32 is_shmem(struct file *file)
{
	unsigned long magic;

	if (!file)
		return 0;
	magic = BPF_CORE_READ(file, f_inode, i_sb, s_magic);
	return magic == TMPFS_MAGIC || magic == HUGETLBFS_MAGIC;
}

/*
 * The policy lookup, the decision and the event of one memory check. `file`
 * (may be NULL) names the event's path; `evflags` are added to the event's flags. Returns the verdict's action.
 */
static __always_inline __u32 check_memory(__u32 kind, __u32 hook, __u32 prot, struct file *file,
					  __u32 enforce_action, __u32 evflags)
{
	struct dg_input in = {};
	struct dg_verdict v;
	struct dg_policy *p;
	struct dg_scratch *s;
	__u64 cgid = 0, matched = 0;
	__u32 flags = evflags, count = 0;

	p = lookup_policy(&cgid, &matched);
	if (!p)
		return DG_ACT_ALLOW;
	stat_inc(DG_STAT_CHECKS);
	in.mode = p->mode;
	in.rules = p->rules;
	in.file_kind = kind;
	in.list = DG_LIST_NONE;
	in.access = DG_ACCESS_MEM_EXEC;
	in.enforce_action = enforce_action;
	v = dg_decide(&in);
	if (v.action == DG_ACT_ALLOW)
		return DG_ACT_ALLOW;
	if (v.action == DG_ACT_ALERT) {
		count = mem_alert_count(matched, v.match, kind);
		if (!count)
			return v.action;
	}
	s = scratch();
	if (!s)
		return v.action;
	/*
	 * Anonymous memory has no file (and no path: scratch() cleared it). Decided
	 * on the kind, a scalar, not by testing `file` again: the verifier treats a
	 * hook's BTF pointer argument as non-NULL and hard-wires such a test (seen on
	 * 6.12: the NULL case walked a NULL dentry).
	 */
	barrier_var(kind);
	if (kind != DG_FILE_ANONYMOUS)
		flags |= walk_path(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), 1);
	emit_mem(s, &v, hook, kind, in.mode, flags, cgid, matched, prot, count);
	return v.action;
}

/*
 * The memory check of a mapping hook (mmap_file, file_mprotect): whether it
 * denies. `kind` is the hook's *_memory_kind(); DG_FILE_IMAGE is not checked.
 */
static __always_inline bool memory_denied(__u32 kind, __u32 hook, unsigned long prot, struct file *file)
{
	__u32 act;

	if (kind == DG_FILE_IMAGE)
		return false;
	act = check_memory(kind, hook, prot, file, DG_ACT_DENY, 0);
	barrier_var(act);
	return act == DG_ACT_DENY;
}

#endif
