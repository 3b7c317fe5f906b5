// SPDX-License-Identifier: GPL-2.0-only
/*
 * driftguard BPF programs.
 *
 * Entry points are thin: each one finds the policy for the current task's
 * cgroup (or an ancestor), classifies the file, and hands the facts to
 * dg_decide() (decision.h). Verdicts other than a silent allow are sent to
 * the ring buffer.
 *
 *   lsm/bprm_check_security   exec (each stage: script, then interpreter) -> -EPERM
 *   lsm/mmap_file             PROT_EXEC mappings (ld.so, dlopen, LD_PRELOAD) -> -EPERM
 *   lsm/file_mprotect         mprotect(PROT_EXEC) of file mappings -> -EPERM
 *   (both also: executable memory the image did not ship, bpf/memory.h)
 *   lsm/file_open             the caller's own /proc/<pid>/mem opened for writing -> -EPERM
 *   tp_btf/sched_process_exec fallback without BPF LSM -> SIGKILL
 *   tracepoint/syscalls/...   fallback mapping checks, opt-in (bpf/memory_fallback.h) -> SIGKILL
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "driftguard.h"
#include "decision.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define SIGKILL 9
#define PROT_EXEC 0x4
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define DG_WALK_MAX 32 /* path components resolved by the fallback walk */
#define DG_WALK_STEPS 64

/*
 * Set by the loader before load (rodata: the verifier sees the value and drops
 * the branch not taken). bpf_d_path() is allowed in lsm/bprm_check_security and
 * lsm/mmap_file from 5.11 (the LSM d_path allowlist); 5.10 refuses the call,
 * so the loader retries with 0 and the dentry walk makes the event path.
 */
const volatile __u32 dg_use_d_path = 1;

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((void *)(ptr) - __builtin_offsetof(type, member)))
#endif

/* Policies keyed by cgroup v2 id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct dg_policy);
} dg_policies SEC(".maps");

/* Allow/deny path lists, keyed by (cgroup id, path). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct dg_path_key);
	__type(value, __u32);
} dg_paths SEC(".maps");

/*
 * Cgroup levels at which at least one policy exists (1 = yes). Lets the
 * ancestor search skip levels that cannot match. Userspace sets entries and
 * clears them on full reconciliation only.
 */
/*
 * Bit l set: some policy was installed at cgroup depth l, so tasks below it
 * must look up their ancestor at that depth. One u32, mmapable: userspace
 * sets bits with an atomic OR in the shared page (the agent and the OCI hook
 * may install at the same time) and never clears them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32);
} dg_level_mask SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} dg_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DG_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dg_stats SEC(".maps");

/*
 * State of a path walk. It lives in the per-CPU scratch map, not on the stack:
 * the verifier treats map memory as unknown, whereas a walk_ctx on the stack
 * starts with known constants (n = 0), and verifiers without the 6.8 fix for
 * callbacks verify a bpf_loop callback as if it ran once with those values and
 * remove the branches they "prove" dead -- on Debian's 6.1 that removed the
 * n >= DG_WALK_MAX check, so a 33-component path wrapped the names array
 * without being flagged (unresolvable_deep_path_never_matches_allow).
 */
struct walk_ctx {
	struct dentry *d;
	struct vfsmount *vmnt;
	struct mount *mnt;
	struct dentry *root_d;
	struct vfsmount *root_m;
	__u32 n;
	__u32 off;
	__u32 flags;
	__u32 done;
};

struct dg_scratch {
	struct dg_path_key key;
	char buf[2 * DG_PATH_MAX];
	const unsigned char *names[DG_WALK_MAX];
	struct walk_ctx walk;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dg_scratch);
} dg_scratch_map SEC(".maps");

/*
 * The current task for CO-RE reads. bpf_get_current_task_btf() needs 5.11;
 * bpf_get_current_task() (4.8) plus BPF_CORE_READ (probe reads) works on
 * every kernel we support, and we never dereference the task directly.
 */
static __always_inline struct task_struct *current_task(void)
{
	return (struct task_struct *)bpf_get_current_task();
}

static __always_inline void stat_inc(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&dg_stats, &slot);

	if (v)
		*v += 1;
}

/*
 * Until 6.0 struct cgroup kept the ids of its ancestors in ancestor_ids[]
 * (indexed by level; 6.0 replaced it with ancestors[]). Those kernels may
 * refuse bpf_get_current_ancestor_cgroup_id() in tracing and LSM programs
 * (5.10 does: "unknown func"), so read the array with CO-RE there; the field
 * is absent from 6.0, where the helper is allowed. The branch not taken is
 * dead code to the verifier (libbpf turns the guard into a constant).
 */
struct cgroup___pre60 {
	int level;
	u64 ancestor_ids[];
} __attribute__((preserve_access_index));

struct cgroup___post60 {
	struct cgroup *ancestors[0];
} __attribute__((preserve_access_index));

/*
 * Id of the ancestor of `cg` at depth lvl (cg's own id at its own depth), 0
 * when cg is shallower. Read with CO-RE in both layouts: no helper reads the
 * ancestors of another task's cgroup.
 */
static __always_inline __u64 cgroup_ancestor_id(struct cgroup *cg, __u32 lvl)
{
	struct cgroup *a = NULL;
	__u64 id = 0;

	if (!cg || (int)lvl > BPF_CORE_READ(cg, level))
		return 0;
	if (bpf_core_field_exists(struct cgroup___pre60, ancestor_ids)) {
		bpf_probe_read_kernel(&id, sizeof(id),
				      (void *)cg + bpf_core_field_offset(struct cgroup___pre60, ancestor_ids) +
					      (__u64)lvl * sizeof(__u64));
		return id;
	}
	bpf_probe_read_kernel(&a, sizeof(a),
			      (void *)cg + bpf_core_field_offset(struct cgroup___post60, ancestors) +
				      (__u64)lvl * sizeof(a));
	return a ? BPF_CORE_READ(a, kn, id) : 0;
}

static __always_inline __u64 ancestor_cgroup_id(__u32 lvl)
{
	if (bpf_core_field_exists(struct cgroup___pre60, ancestor_ids))
		return cgroup_ancestor_id(BPF_CORE_READ(current_task(), cgroups, dfl_cgrp), lvl);
	return bpf_get_current_ancestor_cgroup_id(lvl);
}

/*
 * Id of the cgroup whose policy applies to a task whose own cgroup is `own`:
 * `own`, or its deepest ancestor that has one; 0 when none has. The ancestors
 * are the current task's (cg NULL, constant: the branch folds away) or cg's.
 *
 * Called from global functions (verified once per program, whatever the
 * caller's state) with a loop that never changes what it tests: the level is
 * the loop counter and the mask of policied levels stays an unknown scalar,
 * so the states of an iteration are all alike and converge. An earlier loop
 * cleared the top set bit of the mask each round; every cleared bit made a
 * distinct verifier state and Debian 6.1's verifier went past its
 * 1,000,000-instruction budget in the exec tracepoint (E2BIG). Runtime cost:
 * 31 shift-and-test steps.
 */
static __always_inline __u64 policy_cgroup_search(__u64 own, struct cgroup *cg)
{
	__u32 zero = 0, *maskp, mask;
	__u64 id;

	if (bpf_map_lookup_elem(&dg_policies, &own))
		return own;
	maskp = bpf_map_lookup_elem(&dg_level_mask, &zero);
	if (!maskp)
		return 0;
	mask = *maskp & ~1u; /* depth 0 is the root: never policied */
	if (!mask)
		return 0;
	/* Deepest flagged level first. */
	for (__u32 i = 1; i < DG_MAX_LEVELS; i++) {
		__u32 lvl = DG_MAX_LEVELS - i;

		if (!((mask >> lvl) & 1))
			continue;
		id = cg ? cgroup_ancestor_id(cg, lvl) : ancestor_cgroup_id(lvl);
		/* id == own: the task sits at that depth, looked up above. */
		if (!id || id == own)
			continue;
		if (bpf_map_lookup_elem(&dg_policies, &id))
			return id;
	}
	return 0;
}

/* The policy cgroup of the current task (own: its cgroup id). */
__noinline __u64 dg_policy_cgroup(__u64 own)
{
	return policy_cgroup_search(own, NULL);
}

/* The policy cgroup of the task whose default-hierarchy cgroup is `cgrp` (a struct cgroup *). */
__noinline __u64 dg_cgroup_policy_cgroup(__u64 cgrp)
{
	struct cgroup *cg = (void *)cgrp;

	if (!cg)
		return 0;
	return policy_cgroup_search(BPF_CORE_READ(cg, kn, id), cg);
}

/* Policy of the current task's cgroup, or of its deepest ancestor that has one. */
static __always_inline struct dg_policy *lookup_policy(__u64 *cgid, __u64 *matched)
{
	__u64 own = bpf_get_current_cgroup_id(), id;

	*cgid = own;
	id = dg_policy_cgroup(own);
	if (!id)
		return NULL;
	*matched = id;
	return bpf_map_lookup_elem(&dg_policies, &id);
}

/*
 * The upper dentry of an overlay inode (NULL: the file is only in a lower
 * layer). With metacopy=on a metadata-only copy-up also sets it: still drift
 * (the file was changed).
 *
 * CO-RE against struct ovl_inode where a BTF has it: vmlinux when overlay is
 * built in, the overlay module's BTF when it is a module loaded before us
 * (libbpf searches module BTF; 5.10 has none, CONFIG_DEBUG_INFO_BTF_MODULES is
 * 5.11+). Fallback ("layout"): ovl_inode embeds struct inode vfs_inode
 * immediately followed by struct dentry *__upperdentry on every kernel from
 * 4.19 to 6.18, so the pointer after the CO-RE size of struct inode.
 *
 * The fallback is checked twice (docs/bpf.md, "Overlay upper layer"):
 * - at start the loader proves it on this kernel against an overlay it mounts
 *   itself (a lower-only file must come out IMAGE, a written one UPPER,
 *   through these very programs); if that fails it sets dg_ovl_untrusted and
 *   every file of a policied container's root overlay is UPPER_UNKNOWN;
 * - every read: a non-NULL pointer must be a dentry of a non-overlay
 *   filesystem (d_sb == d_inode->i_sb) whose inode has the overlay inode's
 *   file type. Anything else is UPPER_UNKNOWN, judged as drift.
 * The agent and `driftguard check` say which source is in use and how the
 * proof went (OverlayUpper and LayoutProof in src/enforcer/caps.rs).
 */
struct ovl_inode___dg {
	struct inode vfs_inode;
	struct dentry *__upperdentry;
} __attribute__((preserve_access_index));

/*
 * Set by the loader (rodata): 1 reads the upper dentry at the layout offset
 * even where a BTF has struct ovl_inode -- set when the loader finds no such
 * BTF, and by the test knob DRIFTGUARD_TEST_OVL_LAYOUT, which also sets the
 * skew: bytes added to the layout offset, so the trials can prove that a wrong
 * layout fails closed (the skew is always 0 outside tests). Without it the
 * programs still read by layout when no BTF has the field.
 */
const volatile __u32 dg_ovl_layout = 0;
const volatile __s32 dg_ovl_layout_skew = 0;
/* Set by the loader after load (.bss) when the start-time proof of the layout failed. */
volatile __u32 dg_ovl_untrusted = 0;

#define DG_OVL_NONE 0    /* no upper dentry: lower layer only */
#define DG_OVL_UNKNOWN 1 /* the upper state cannot be told */
#define DG_OVL_UPPER 2   /* upper dentry present (CO-RE), its inode not read */
#define S_IFMT 00170000

/*
 * DG_OVL_NONE, DG_OVL_UNKNOWN, DG_OVL_UPPER, or the address of the upper
 * dentry's inode. A global function taking a scalar: verified once per
 * program, and every pointer is only read through bpf_probe_read_kernel.
 */
__noinline __u64 dg_ovl_upper(__u64 inode_addr)
{
	struct inode *inode = (struct inode *)inode_addr;
	struct dentry *upper = NULL;
	struct inode *ui;
	__u64 off;
	bool layout = dg_ovl_layout || !bpf_core_field_exists(struct ovl_inode___dg, __upperdentry);

	if (!inode)
		return DG_OVL_NONE;
	if (layout && dg_ovl_untrusted)
		goto unknown;
	if (layout)
		off = bpf_core_type_size(struct inode) + (__s64)dg_ovl_layout_skew;
	else
		off = bpf_core_field_offset(struct ovl_inode___dg, __upperdentry) -
		      bpf_core_field_offset(struct ovl_inode___dg, vfs_inode);
	if (bpf_probe_read_kernel(&upper, sizeof(upper), (void *)inode + off) < 0)
		upper = NULL;
	if (!upper)
		return DG_OVL_NONE;
	ui = BPF_CORE_READ(upper, d_inode);
	if (!layout)
		return ui ? (__u64)ui : DG_OVL_UPPER;
	/* layout read: must look like a real upper dentry, or it is not trusted */
	if (!ui || (__u64)ui <= DG_OVL_UPPER)
		goto unknown;
	if (BPF_CORE_READ(upper, d_sb) != BPF_CORE_READ(ui, i_sb))
		goto unknown;
	if (BPF_CORE_READ(ui, i_sb, s_magic) == OVERLAYFS_SUPER_MAGIC)
		goto unknown;
	if ((BPF_CORE_READ(ui, i_mode) ^ BPF_CORE_READ(inode, i_mode)) & S_IFMT)
		goto unknown;
	return (__u64)ui;
unknown:
	stat_inc(DG_STAT_OVL_UNKNOWN);
	return DG_OVL_UNKNOWN;
}

/* Is the mount one of the volumes the policy exempts from the non-image rule? */
static __always_inline bool exec_volume(struct vfsmount *vmnt, const struct dg_policy *p)
{
	struct mount *m;
	__u32 id, n;

	if (!vmnt || !(p->rules & DG_RULE_HAS_MOUNTS))
		return false;
	m = container_of(vmnt, struct mount, mnt);
	id = (__u32)BPF_CORE_READ(m, mnt_id);
	n = p->exec_mnt_count;
	for (__u32 i = 0; i < DG_MAX_EXEC_MOUNTS; i++) {
		if (i >= n)
			break;
		if (p->exec_mnt_ids[i] == id)
			return true;
	}
	return false;
}

/*
 * What kind of file is this, for this policy? See the table in docs/bpf.md.
 * Image or upper only on the container's own root filesystem (the superblock
 * whose s_dev the policy holds): another overlay (one mounted in a user
 * namespace, another container's root seen through /proc/<pid>/root), a tmpfs
 * such as runc's /dev, or a host file the runtime bind-mounted is not image.
 * A non-overlay root (other snapshotters) cannot tell written files from
 * shipped ones: its files count as image (documented limit).
 */
static __always_inline __u32 classify_inode(struct inode *inode, struct vfsmount *vmnt, const struct dg_policy *p)
{
	struct super_block *sb;
	bool overlay;

	if (!inode)
		return DG_FILE_OTHER_FS;
	if (BPF_CORE_READ(inode, i_nlink) == 0)
		return DG_FILE_FILELESS;
	sb = BPF_CORE_READ(inode, i_sb);
	overlay = BPF_CORE_READ(sb, s_magic) == OVERLAYFS_SUPER_MAGIC;
	if (p->rootfs_dev && (__u64)BPF_CORE_READ(sb, s_dev) == p->rootfs_dev) {
		__u64 up;

		if (!overlay)
			return DG_FILE_IMAGE;
		up = dg_ovl_upper((__u64)inode);
		if (up == DG_OVL_UNKNOWN)
			return DG_FILE_UPPER_UNKNOWN;
		return up ? DG_FILE_UPPER : DG_FILE_IMAGE;
	}
	if (exec_volume(vmnt, p))
		return DG_FILE_EXEC_VOLUME;
	return overlay ? DG_FILE_OTHER_OVERLAY : DG_FILE_OTHER_FS;
}

/*
 * From 6.8 overlay's real file is a struct backing_file whose user_path is
 * the overlay path (6.5-6.7 named the other path real_path, and f_path was
 * the overlay path as before). CO-RE finds user_path inside its anonymous
 * union (6.12+); kernels without the field use f_path only.
 */
struct backing_file___dg {
	struct path user_path;
} __attribute__((preserve_access_index));

/*
 * A mapping of an overlay file holds overlay's *real* file in vma->vm_file,
 * so the overlay inode must be found again: up to 6.7 the real file's f_path
 * is the overlay path ("fake path"); from 6.8 the backing_file's user_path is. A candidate counts as upper only if its
 * overlay inode's upper dentry is the mapped inode, so memory that is not a
 * backing file can never make a file look drifted. Sets *pd/*pm to the path
 * to report (the overlay path when found).
 */
static __always_inline __u32 classify_mapped(struct file *file, const struct dg_policy *p, struct dentry **pd,
					     struct vfsmount **pm)
{
	struct inode *real = BPF_CORE_READ(file, f_inode);
	struct dentry *cand_d[2] = {};
	struct vfsmount *cand_m[2] = {};
	struct inode *overlay_seen = NULL;

	cand_d[0] = BPF_CORE_READ(file, f_path.dentry);
	cand_m[0] = BPF_CORE_READ(file, f_path.mnt);
	if (bpf_core_field_exists(struct backing_file___dg, user_path)) {
		struct path up = {};

		bpf_probe_read_kernel(&up, sizeof(up),
				      (void *)file + bpf_core_field_offset(struct backing_file___dg, user_path));
		cand_d[1] = up.dentry;
		cand_m[1] = up.mnt;
	}
	*pd = cand_d[0];
	*pm = cand_m[0];
	if (!real)
		return DG_FILE_OTHER_FS;
	if (BPF_CORE_READ(real, i_nlink) == 0)
		return DG_FILE_FILELESS;
	for (int i = 0; i < 2; i++) {
		struct dentry *d = cand_d[i];
		struct inode *oi;
		__u64 up;

		if (!d)
			continue;
		oi = BPF_CORE_READ(d, d_inode);
		if (!oi || BPF_CORE_READ(oi, i_sb, s_magic) != OVERLAYFS_SUPER_MAGIC)
			continue;
		if (oi == real)
			return classify_inode(real, cand_m[i], p);
		up = dg_ovl_upper((__u64)oi);
		if (up == DG_OVL_UNKNOWN) {
			*pd = d;
			*pm = cand_m[i];
			if (p->rootfs_dev && (__u64)BPF_CORE_READ(oi, i_sb, s_dev) == p->rootfs_dev)
				return DG_FILE_UPPER_UNKNOWN;
			return DG_FILE_OTHER_OVERLAY;
		}
		if (up == (__u64)real) {
			*pd = d;
			*pm = cand_m[i];
			return classify_inode(oi, cand_m[i], p);
		}
		if (!overlay_seen) {
			overlay_seen = oi;
			*pd = d;
			*pm = cand_m[i];
		}
	}
	if (overlay_seen) {
		/* a lower file of that overlay: image only if it is this container's root */
		if (p->rootfs_dev && (__u64)BPF_CORE_READ(overlay_seen, i_sb, s_dev) == p->rootfs_dev)
			return DG_FILE_IMAGE;
		return DG_FILE_OTHER_OVERLAY;
	}
	return classify_inode(real, cand_m[0], p);
}

static __always_inline struct dg_scratch *scratch(void)
{
	__u32 zero = 0;
	struct dg_scratch *s = bpf_map_lookup_elem(&dg_scratch_map, &zero);

	if (s)
		__builtin_memset(&s->key, 0, sizeof(s->key));
	return s;
}

static __always_inline struct dg_scratch *scratch_raw(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&dg_scratch_map, &zero);
}

/*
 * Path resolution by walking dentries (bpf_d_path is not allowed in tp_btf
 * and file_mprotect, nor in any LSM hook on 5.10). Two kinds:
 *
 * - image paths (cross == 0): from the file up to the root of its own
 *   superblock, never crossing a mount. For a file on the container's root
 *   filesystem that is its path in the image, whatever the task's root, mounts
 *   or namespaces: chroot, pivot_root, bind mounts, /proc/<pid>/root and ".."
 *   cannot change it. List entries are matched against this path only.
 * - task paths (cross == 1): up to the task's root, crossing mounts, like
 *   d_path(). Used for the event path of files outside the root filesystem.
 *
 * A walk that does not reach its root within the step budget, or has more
 * components than fit, is flagged: such a path never matches a list entry.
 *
 * The loops are bounded for loops (5.3+), not bpf_loop() (5.17): a program
 * that passes a bpf_loop callback holds an ld_imm64 BPF_PSEUDO_FUNC, which
 * kernels before 5.13 refuse while parsing the program, before any dead code
 * is removed -- so no CO-RE guard can keep bpf_loop in a program that must
 * also load on 5.10. The walk state lives in map memory (unknown to the
 * verifier), so the states of one iteration converge and each iteration is
 * verified about once: see docs/bpf.md for the cost per kernel.
 */

/* Records the name of c->d; returns 1 when the walk must stop. */
static __always_inline long walk_record(struct walk_ctx *c, struct dg_scratch *s, struct dentry *d)
{
	if (c->n >= DG_WALK_MAX) {
		c->flags |= DG_EVF_PATH_TRUNCATED;
		return 1;
	}
	s->names[c->n & (DG_WALK_MAX - 1)] = BPF_CORE_READ(d, d_name.name);
	c->n++;
	return 0;
}

/* Image path: up to the root of the file's own superblock, never crossing a mount. */
static __always_inline long walk_up_image(struct dg_scratch *s)
{
	struct walk_ctx *c = &s->walk;
	struct dentry *d, *parent_d;

	/* Locals, not c->x, inside BPF_CORE_READ: walk_ctx is ours, not a kernel type. */
	d = c->d;
	parent_d = BPF_CORE_READ(d, d_parent);
	if (parent_d == d) {
		/* the superblock's root: "/" of the image */
		c->done = 1;
		return 1;
	}
	if (walk_record(c, s, d))
		return 1;
	c->d = parent_d;
	return 0;
}

/* Task path: up to the task's root, crossing mounts, like d_path(). */
static __always_inline long walk_up_task(struct dg_scratch *s)
{
	struct walk_ctx *c = &s->walk;
	struct dentry *d, *parent_d;
	struct vfsmount *vmnt;
	struct mount *mnt;

	d = c->d;
	vmnt = c->vmnt;
	mnt = c->mnt;
	if (d == c->root_d && vmnt == c->root_m) {
		c->done = 1;
		return 1;
	}
	if (d == BPF_CORE_READ(vmnt, mnt_root)) {
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);

		if (parent == mnt) {
			c->done = 1;
			return 1;
		}
		c->d = BPF_CORE_READ(mnt, mnt_mountpoint);
		c->mnt = parent;
		c->vmnt = (struct vfsmount *)((void *)parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	parent_d = BPF_CORE_READ(d, d_parent);
	if (walk_record(c, s, d))
		return 1;
	/* A pseudo file (memfd, anon) is its own parent: its name is the whole path. */
	if (parent_d == d) {
		c->done = 1;
		return 1;
	}
	c->d = parent_d;
	return 0;
}

static __always_inline long write_down(struct dg_scratch *s, __u32 j)
{
	struct walk_ctx *c = &s->walk;
	__u32 idx;
	long r;

	if (j >= c->n)
		return 1;
	if (c->off >= DG_PATH_MAX - 1) {
		c->flags |= DG_EVF_PATH_TRUNCATED;
		return 1;
	}
	idx = c->off;
	/* Hide idx from clang so the mask survives for the verifier. */
	barrier_var(idx);
	s->buf[idx & (DG_PATH_MAX - 1)] = '/';
	c->off++;
	idx = c->off;
	barrier_var(idx);
	r = bpf_probe_read_kernel_str(&s->buf[idx & (DG_PATH_MAX - 1)], DG_PATH_MAX,
				      s->names[(c->n - 1 - j) & (DG_WALK_MAX - 1)]);
	if (r <= 0) {
		c->flags |= DG_EVF_PATH_UNRESOLVED;
		return 1;
	}
	c->off += r - 1;
	return 0;
}

/*
 * One step of a walk and one component written, as global functions: the
 * verifier checks each body once per program, and each round of the bounded
 * loops below costs only the call. Inlined, every round was verified again
 * (the loop counter differs), about twice the instructions of the whole
 * program. Their state is in the per-CPU scratch map; they take only scalars.
 */
__noinline long dg_walk_step(__u32 cross)
{
	struct dg_scratch *s = scratch_raw();

	if (!s)
		return 1;
	return cross ? walk_up_task(s) : walk_up_image(s);
}

__noinline long dg_write_step(__u32 j)
{
	struct dg_scratch *s = scratch_raw();

	if (!s)
		return 1;
	return write_down(s, j);
}

/*
 * Writes the per-CPU scratch's key.path; returns DG_EVF_* flags.
 *
 * A global function (not static, not inlined) taking only scalars: the verifier
 * checks it once per program, with no knowledge of the caller's state, instead
 * of once for every caller state that reaches a call site. Inlined, the walks
 * took 6.12's verifier past its 1,000,000-instruction budget. The pointers are
 * only ever read through bpf_probe_read_kernel (BPF_CORE_READ).
 */
__noinline __u32 dg_walk_path(__u64 dentry, __u64 vmnt, __u32 cross)
{
	struct task_struct *task = current_task();
	struct dg_scratch *s = scratch_raw();
	struct walk_ctx *c;
	__u32 flags;

	if (!s)
		return DG_EVF_PATH_UNRESOLVED;
	c = &s->walk;
	__builtin_memset(c, 0, sizeof(*c));
	c->d = (struct dentry *)dentry;
	c->vmnt = (struct vfsmount *)vmnt;
	c->mnt = container_of(c->vmnt, struct mount, mnt);
	c->root_d = BPF_CORE_READ(task, fs, root.dentry);
	c->root_m = BPF_CORE_READ(task, fs, root.mnt);

	if (!dentry) {
		c->flags |= DG_EVF_PATH_UNRESOLVED;
	} else {
		for (__u32 i = 0; i < DG_WALK_STEPS; i++)
			if (dg_walk_step(cross))
				break;
		if (!c->done)
			c->flags |= DG_EVF_PATH_UNRESOLVED;
	}
	__builtin_memset(s->buf, 0, sizeof(s->buf));
	if (c->n == 0)
		s->buf[0] = '/';
	for (__u32 j = 0; j < DG_WALK_MAX; j++)
		if (dg_write_step(j))
			break;
	if (c->off >= DG_PATH_MAX) {
		c->flags |= DG_EVF_PATH_TRUNCATED;
		s->buf[DG_PATH_MAX - 1] = 0;
	}
	flags = c->flags;
	__builtin_memset(&s->key, 0, sizeof(s->key));
	__builtin_memcpy(s->key.path, s->buf, DG_PATH_MAX);
	return flags | (cross ? 0 : DG_EVF_PATH_IMAGE);
}

static __always_inline __u32 walk_path(struct dentry *dentry, struct vfsmount *vmnt, __u32 cross)
{
	return dg_walk_path((__u64)dentry, (__u64)vmnt, cross);
}

/*
 * The command line of an exec being checked by lsm/bprm_check_security: the
 * argv array given to execve(2)/execveat(2), read from the caller's memory
 * through the syscall's registers (the new image's copy is in bprm->mm, which
 * no helper reads). Only events pay for it: an allowed exec reads nothing.
 * x86-64 only, 5.15+ (bpf_task_pt_regs); else, and for 32-bit callers and
 * kernel execs, DG_EVF_ARGS_UNAVAILABLE. Another thread of the caller can
 * change the array after the kernel copied it: a hint, not proof.
 */
static __always_inline void exec_argv(struct dg_event *e, struct dg_scratch *s)
{
#if defined(__TARGET_ARCH_x86)
	const char *const *argv;
	struct pt_regs *regs;
	const char *arg;
	__u32 off = 0, i;
	long nr, n;
	char last;

	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs) ||
	    !bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf))
		goto unavailable;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	nr = BPF_CORE_READ(regs, orig_ax);
	if (nr == 59 /* __NR_execve */)
		argv = (const char *const *)BPF_CORE_READ(regs, si);
	else if (nr == 322 /* __NR_execveat */)
		argv = (const char *const *)BPF_CORE_READ(regs, dx);
	else
		goto unavailable;
	for (i = 0; i < DG_ARGV_MAX; i++) {
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]))
			goto unavailable;
		if (!arg)
			break;
		if (off >= DG_ARGS_MAX) {
			e->flags |= DG_EVF_ARGS_TRUNCATED;
			break;
		}
		/* buf is 2 * DG_ARGS_MAX: a full window fits at any offset below DG_ARGS_MAX */
		n = bpf_probe_read_user_str(&s->buf[off], DG_ARGS_MAX, arg);
		if (n <= 0)
			goto unavailable;
		/* a full window: the argument may go on (exactly 255 bytes if arg[255] is NUL) */
		if (n == DG_ARGS_MAX && (bpf_probe_read_user(&last, 1, arg + DG_ARGS_MAX - 1) || last))
			e->flags |= DG_EVF_ARGS_TRUNCATED;
		off += n;
	}
	if (i == DG_ARGV_MAX && !bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) && arg)
		e->flags |= DG_EVF_ARGS_TRUNCATED;
	if (off > DG_ARGS_MAX) {
		off = DG_ARGS_MAX;
		e->flags |= DG_EVF_ARGS_TRUNCATED;
	}
	__builtin_memcpy(e->args, s->buf, DG_ARGS_MAX);
	e->args_len = off;
	return;
unavailable:
#endif
	e->flags |= DG_EVF_ARGS_UNAVAILABLE;
	e->flags &= ~DG_EVF_ARGS_TRUNCATED;
}

/*
 * The command line of the process itself (every hook but bprm_check): its
 * argument area, mm->arg_start..arg_end, as /proc/<pid>/cmdline shows it. On
 * the fallback's exec tracepoint that is the new program's argv, before it ran
 * an instruction; later the process may have rewritten it.
 */
static __always_inline void own_args(struct dg_event *e, struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start, end, len;

	if (!mm)
		goto unavailable;
	start = BPF_CORE_READ(mm, arg_start);
	end = BPF_CORE_READ(mm, arg_end);
	/* 0 while an exec maps the new image: set after the mappings */
	if (end <= start)
		goto unavailable;
	len = end - start;
	if (len > DG_ARGS_MAX) {
		len = DG_ARGS_MAX;
		e->flags |= DG_EVF_ARGS_TRUNCATED;
	}
	barrier_var(len);
	if (len == 0 || len > DG_ARGS_MAX)
		goto unavailable;
	if (bpf_probe_read_user(e->args, len, (const void *)start))
		goto unavailable;
	e->args_len = len;
	return;
unavailable:
	e->flags |= DG_EVF_ARGS_UNAVAILABLE;
	e->flags &= ~DG_EVF_ARGS_TRUNCATED;
}

/*
 * The parent's executable, walked at the check: the agent cannot read
 * /proc/<ppid>/exe without ptrace access to the parent (CAP_SYS_PTRACE, which
 * the shipped unit and DaemonSet do not grant), and a parent may be gone by
 * then. Only events pay for it. Overwrites the scratch's key and buf: after
 * the event's own path was copied.
 */
static __always_inline void parent_exe(struct dg_event *e, struct dg_scratch *s, struct task_struct *task)
{
	struct file *exe = BPF_CORE_READ(task, real_parent, mm, exe_file);
	__u32 flags;

	if (!exe)
		goto unavailable;
	flags = walk_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), 1);
	if (flags & DG_EVF_PATH_UNRESOLVED)
		goto unavailable;
	if (flags & DG_EVF_PATH_TRUNCATED)
		e->flags |= DG_EVF_PARENT_EXE_TRUNCATED;
	__builtin_memcpy(e->parent_exe, s->key.path, DG_PATH_MAX);
	return;
unavailable:
	e->flags |= DG_EVF_PARENT_EXE_UNAVAILABLE;
	__builtin_memset(e->parent_exe, 0, DG_PATH_MAX);
}

/*
 * The event of a verdict, reserved and filled; the memory checks' and process
 * memory's fields zero (they set theirs before event_submit()). NULL when the
 * ring buffer is full (counted).
 */
static __always_inline struct dg_event *event_begin(struct dg_scratch *s, const struct dg_verdict *v, __u32 hook,
						    __u32 file_kind, __u32 mode, __u32 flags, __u64 cgid,
						    __u64 matched)
{
	struct dg_event *e;
	struct task_struct *task = current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	stat_inc(v->action == DG_ACT_DENY ? DG_STAT_DENIES :
		 v->action == DG_ACT_KILL ? DG_STAT_KILLS : DG_STAT_ALERTS);
	e = bpf_ringbuf_reserve(&dg_events, sizeof(*e), 0);
	if (!e) {
		stat_inc(DG_STAT_RINGBUF_DROPS);
		return NULL;
	}
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = cgid;
	e->policy_cgroup_id = matched;
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->match = v->match;
	e->action = v->action;
	e->hook = hook;
	e->file_kind = file_kind;
	e->mode = mode;
	e->flags = flags;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__builtin_memcpy(e->path, s->key.path, DG_PATH_MAX);
	e->prot = 0;
	e->count = 0;
	e->target_cgroup_id = 0;
	e->target_policy_cgroup_id = 0;
	e->target_pid = 0;
	e->target_tgid = 0;
	__builtin_memset(e->target_comm, 0, sizeof(e->target_comm));
	BPF_CORE_READ_STR_INTO(&e->parent_comm, task, real_parent, comm);
	e->parent_start_ns = BPF_CORE_READ(task, real_parent, group_leader, start_boottime);
	parent_exe(e, s, task);
	e->args_len = 0;
	e->args_pad = 0;
	if (hook == DG_HOOK_BPRM_CHECK)
		exec_argv(e, s);
	else
		own_args(e, task);
	return e;
}

static __always_inline void event_submit(struct dg_event *e)
{
	bpf_ringbuf_submit(e, 0);
	stat_inc(DG_STAT_EVENTS);
}

/* The event of a verdict; prot and count are the memory checks' (0 for files). */
static __always_inline void emit_mem(struct dg_scratch *s, const struct dg_verdict *v, __u32 hook,
				     __u32 file_kind, __u32 mode, __u32 flags, __u64 cgid,
				     __u64 matched, __u32 prot, __u32 count)
{
	struct dg_event *e = event_begin(s, v, hook, file_kind, mode, flags, cgid, matched);

	if (!e)
		return;
	e->prot = prot;
	e->count = count;
	event_submit(e);
}

static __always_inline void emit(struct dg_scratch *s, const struct dg_verdict *v, __u32 hook,
				 __u32 file_kind, __u32 mode, __u32 flags, __u64 cgid,
				 __u64 matched)
{
	emit_mem(s, v, hook, file_kind, mode, flags, cgid, matched, 0, 0);
}

#define DG_PATH_DPATH 0  /* LSM exec/mmap: bpf_d_path for task paths (walk if dg_use_d_path == 0) */
#define DG_PATH_WALK 1   /* tracepoint: dentry walk for task paths */
#define DG_PATH_MAPPED 2 /* file_mprotect: overlay file behind a mapping, dentry walk */

static __always_inline bool on_rootfs(__u32 kind)
{
	return kind == DG_FILE_IMAGE || kind == DG_FILE_UPPER || kind == DG_FILE_UPPER_UNKNOWN;
}

/* The memory rules (W^X): check_memory(), used by mmap_file and file_mprotect. */
#include "memory.h"

/*
 * Shared body of every entry point: policy lookup, classification, lists,
 * the decision, the event. Returns the verdict's action.
 */
static __always_inline __u32 check_file(struct file *file, __u32 hook, __u32 access,
					__u32 enforce_action, int path_mode)
{
	struct dg_input in = {};
	struct dg_verdict v = {};
	struct dg_policy *p;
	struct dg_scratch *s;
	struct dentry *pd = NULL;
	struct vfsmount *pm = NULL;
	__u64 cgid = 0, matched = 0;
	__u32 flags = 0, cross, *list;
	bool need_list, resolved = false;

	if (!file)
		return DG_ACT_ALLOW;
	p = lookup_policy(&cgid, &matched);
	if (!p)
		return DG_ACT_ALLOW;
	stat_inc(DG_STAT_CHECKS);
	s = scratch();
	if (!s)
		return DG_ACT_ALLOW;

	in.mode = p->mode;
	in.rules = p->rules;
	in.access = access;
	in.enforce_action = enforce_action;
	in.list = DG_LIST_NONE;
	/* only the JIT opt-out asks (a shmem mapping may then be executable) */
	if (access == DG_ACCESS_MMAP_EXEC && (in.rules & DG_RULE_JIT))
		in.shmem = is_shmem(file);
	if (path_mode == DG_PATH_MAPPED) {
		in.file_kind = classify_mapped(file, p, &pd, &pm);
	} else {
		pd = BPF_CORE_READ(file, f_path.dentry);
		pm = BPF_CORE_READ(file, f_path.mnt);
		in.file_kind = classify_inode(BPF_CORE_READ(file, f_inode), pm, p);
	}

	/*
	 * List entries name files of the container's root filesystem by their
	 * image path. Files elsewhere never match; an image path that could not
	 * be resolved completely never matches either (fail closed). Without a
	 * list lookup the path is only needed for the event: decide first.
	 */
	need_list = (in.rules & DG_RULE_HAS_LISTS) && on_rootfs(in.file_kind);
	if (!need_list) {
		v = dg_decide(&in);
		if (v.action == DG_ACT_ALLOW)
			return DG_ACT_ALLOW;
	}
	/* One walk call site: the walk is verified once per call site. */
	cross = on_rootfs(in.file_kind) ? 0 : 1;
	if (path_mode == DG_PATH_DPATH && cross && dg_use_d_path) {
		/*
		 * Task-relative path with the kernel's own d_path. It builds the
		 * string at the end of the buffer and moves it to the front, leaving
		 * stale bytes behind the NUL: copy up to the NUL into the zeroed key.
		 */
		long r = bpf_d_path(&file->f_path, s->buf, DG_PATH_MAX);

		if (r >= 0) {
			bpf_probe_read_kernel_str(s->key.path, DG_PATH_MAX, s->buf);
			resolved = true;
		} else {
			/* too long or unresolvable: the walk still reports the first 255 bytes */
			flags = r == -36 /* ENAMETOOLONG */ ? DG_EVF_PATH_TRUNCATED : DG_EVF_PATH_UNRESOLVED;
		}
	}
	if (!resolved)
		flags |= walk_path(pd, pm, cross);
	if (need_list) {
		if (flags & (DG_EVF_PATH_TRUNCATED | DG_EVF_PATH_UNRESOLVED)) {
			stat_inc(DG_STAT_PATH_ERRORS);
		} else {
			s->key.cgroup_id = matched;
			list = bpf_map_lookup_elem(&dg_paths, &s->key);
			if (list)
				in.list = *list;
		}
		v = dg_decide(&in);
		if (v.action == DG_ACT_ALLOW)
			return DG_ACT_ALLOW;
	}
	emit(s, &v, hook, in.file_kind, in.mode, flags, cgid, matched);
	return v.action;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(dg_bprm_check, struct linux_binprm *bprm)
{
	__u32 act = check_file(bprm->file, DG_HOOK_BPRM_CHECK, DG_ACCESS_EXEC, DG_ACT_DENY, DG_PATH_DPATH);

	barrier_var(act);
	if (act == DG_ACT_DENY)
		return -EPERM;
	return 0;
}

/*
 * The ELF loader maps the binary being executed while execve(2) is still in
 * progress. bprm_check_security has just decided on that very file, with the
 * stricter exec access (allowlist-only applies to exec only), so its text
 * mapping needs no second decision: skipping it halves the lookups of a
 * static binary's exec. in_execve is set only on the exec'ing task inside the
 * syscall, so no user code can reach the shortcut (prctl(PR_SET_MM_EXE_FILE)
 * cannot either), and by then the new mm's exe_file is bprm->file. Kernels
 * without in_execve simply check every mapping.
 */
static __always_inline bool exec_maps_own_binary(struct file *file)
{
	struct task_struct *task;
	struct mm_struct *mm;

	if (!bpf_core_field_exists(struct task_struct, in_execve))
		return false;
	task = current_task();
	if (!BPF_CORE_READ_BITFIELD_PROBED(task, in_execve))
		return false;
	mm = BPF_CORE_READ(task, mm);
	if (!mm)
		return false;
	return (unsigned long)BPF_CORE_READ(mm, exe_file) == (unsigned long)file;
}

SEC("lsm/mmap_file")
int BPF_PROG(dg_mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags)
{
	__u32 act, kind;

	if (!(prot & PROT_EXEC))
		return 0;
	kind = mmap_memory_kind(file, prot);
	barrier_var(kind);
	if (memory_denied(kind, DG_HOOK_MMAP_FILE, prot, file))
		return -EPERM;
	/* decided on the scalar: see check_memory() */
	if (kind == DG_FILE_ANONYMOUS)
		return 0;
	if (exec_maps_own_binary(file))
		return 0;
	act = check_file(file, DG_HOOK_MMAP_FILE, DG_ACCESS_MMAP_EXEC, DG_ACT_DENY, DG_PATH_DPATH);
	barrier_var(act);
	if (act == DG_ACT_DENY)
		return -EPERM;
	return 0;
}

SEC("lsm/file_mprotect")
int BPF_PROG(dg_file_mprotect, struct vm_area_struct *vma, unsigned long reqprot,
	     unsigned long prot)
{
	struct file *file;
	__u32 act, kind;

	if (!(prot & PROT_EXEC))
		return 0;
	file = vma->vm_file;
	kind = mprotect_memory_kind(vma, file, prot);
	barrier_var(kind);
	if (memory_denied(kind, DG_HOOK_FILE_MPROTECT, prot, file))
		return -EPERM;
	if (kind == DG_FILE_ANONYMOUS)
		return 0;
	/* vm_file is overlay's real file; bpf_d_path is not allowed here anyway. */
	act = check_file(file, DG_HOOK_FILE_MPROTECT, DG_ACCESS_MMAP_EXEC, DG_ACT_DENY, DG_PATH_MAPPED);
	barrier_var(act);
	if (act == DG_ACT_DENY)
		return -EPERM;
	return 0;
}

/*
 * Fallback without BPF LSM: the exec already happened; kill the new image
 * before it runs its first user instruction. Sees only the final binary
 * (the interpreter for #! scripts) and cannot see mmaps.
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(dg_exec_tp, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct file *file = bprm->file;
	__u32 act = check_file(file, DG_HOOK_EXEC_TRACEPOINT, DG_ACCESS_EXEC, DG_ACT_KILL, DG_PATH_WALK);

	if (act == DG_ACT_KILL)
		bpf_send_signal(SIGKILL);
	return 0;
}

/* The fallback's mapping checks (opt-in): syscall tracepoints. */
#include "memory_fallback.h"

/* Writes into process memory: lsm/file_open, ptrace_access_check, ptrace_traceme, file_receive. */
#include "process_memory.h"

/* The same on the fallback (opt-in with the mapping checks): syscall tracepoints. */
#include "process_memory_fallback.h"

/* Test-only: runs the decision function through BPF_PROG_TEST_RUN. Never autoloaded. */
SEC("syscall")
int dg_test_decide(struct dg_decide_args *args)
{
	struct dg_input in = args->in;

	args->out = dg_decide(&in);
	return 0;
}
