/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * driftguard kernel <-> userspace ABI.
 *
 * Every struct and constant here is mirrored byte for byte in
 * src/enforcer/abi.rs. build.rs checks the two agree (a static assertion per
 * constant, struct size, member offset and member size, compiled against this
 * header): change both or the build fails.
 */
#ifndef DRIFTGUARD_H
#define DRIFTGUARD_H

/* Longest path (including the NUL) that lists and events carry. */
#define DG_PATH_MAX 256
/* Cgroup levels searched for a policy above the exec'ing task's own cgroup. */
#define DG_MAX_LEVELS 32
/* Bytes of the command line an event carries (struct dg_event.args). */
#define DG_ARGS_MAX 256
/* Arguments read from an exec's argv (lsm/bprm_check_security) at most. */
#define DG_ARGV_MAX 32
/* Volume mounts one policy may exempt from the non-image rule. */
#define DG_MAX_EXEC_MOUNTS 8

/* Policy modes. OFF is never stored: removing the entry means off. */
#define DG_MODE_OFF 0
#define DG_MODE_MONITOR 1
#define DG_MODE_ENFORCE 2

/* Policy rule bits (struct dg_policy.rules). */
#define DG_RULE_DRIFT (1u << 0)          /* file in the overlayfs upper layer */
#define DG_RULE_FILELESS (1u << 1)       /* memfd / unlinked file (nlink == 0) */
#define DG_RULE_NON_IMAGE (1u << 2)      /* file not from the container's own image layers */
#define DG_RULE_ALLOWLIST_ONLY (1u << 3) /* exec only what the allow list names */
#define DG_RULE_HAS_LISTS (1u << 4)      /* policy has allow/deny path entries */
#define DG_RULE_HAS_MOUNTS (1u << 5)     /* policy exempts volume mounts (exec_mnt_ids) */
/*
 * W^X (bpf/memory.h, docs/bpf.md "Memory"): no executable memory without an
 * image file's own pages behind it. A policy written by an agent that knows
 * the memory rules has exactly one of the two bits; one written before them
 * (pinned across an upgrade) has neither and keeps its old behaviour.
 */
#define DG_RULE_EXEC_MEMORY (1u << 6) /* deny/report anonymous, writable+executable or modified exec memory */
#define DG_RULE_JIT (1u << 7)         /* the JIT opt-out: also lets shmem (memfd) memory be mapped executable */
#define DG_RULE_PROCESS_ACCESS (1u << 8) /* deny attaching to another process (ptrace attach mode, TRACEME) */
#define DG_RULE_DEBUG (1u << 9)          /* the debug opt-out: PROCESS_ACCESS off on purpose (ignored by dg_decide) */

/* Path list membership (value of the paths map). */
#define DG_LIST_NONE 0
#define DG_LIST_ALLOW 1
#define DG_LIST_DENY 2

/*
 * What the exec'd / mapped file is. "Image" and "upper" are judged against the
 * policy's rootfs_dev: only the overlay the runtime mounted as this container's
 * root counts; any other overlay is DG_FILE_OTHER_OVERLAY.
 */
#define DG_FILE_IMAGE 0         /* lower layer of this container's root overlay */
#define DG_FILE_UPPER 1         /* upper layer of it: written or copied up in the container */
#define DG_FILE_FILELESS 2      /* memfd, O_TMPFILE, unlinked */
#define DG_FILE_OTHER_FS 3      /* tmpfs (/dev), host files bind-mounted by the runtime, volumes */
#define DG_FILE_OTHER_OVERLAY 4 /* an overlay that is not this container's root */
#define DG_FILE_EXEC_VOLUME 5   /* on a volume mount the policy exempts from non_image */
/*
 * On the container's root overlay, but whether it is in the upper layer could
 * not be told: the fallback read of the upper dentry (no BTF for struct
 * ovl_inode) gave an implausible pointer, or the start-time proof of that
 * layout failed. Judged like DG_FILE_UPPER (fail closed).
 */
#define DG_FILE_UPPER_UNKNOWN 6
/* What a memory check (DG_ACCESS_MEM_EXEC) is about: the mapping kind. */
#define DG_FILE_ANONYMOUS 7 /* no file behind it: anonymous memory, heap, stack */
#define DG_FILE_WRITABLE 8  /* asked to be writable and executable at once */
#define DG_FILE_MODIFIED 9  /* a private file mapping whose pages were written (copy-on-write) */
/* Process memory (access DG_ACCESS_MEM_WRITE): */
#define DG_FILE_OWN_MEMORY 10 /* the caller's own memory: /proc/<own pid>/mem opened for writing */
#define DG_FILE_OTHER_PROCESS 11 /* another process: ptrace attach mode, PTRACE_TRACEME */
/* a process under policy, attached to from another container (the target's policy decides) */
#define DG_FILE_FROM_OTHER_CONTAINER 12

/* Which rule produced the verdict. */
#define DG_MATCH_NONE 0
#define DG_MATCH_DENY_LIST 1
#define DG_MATCH_DRIFT 2
#define DG_MATCH_FILELESS 3
#define DG_MATCH_NON_IMAGE 4
#define DG_MATCH_NOT_ALLOWED 5
#define DG_MATCH_EXEC_MEMORY 6
#define DG_MATCH_MEMORY_WRITE 7 /* a write into process memory through /proc/<pid>/mem */
#define DG_MATCH_PROCESS_ACCESS 8 /* attaching to another process's memory (ptrace, process_vm_*, its mem) */

/* Actions. ALERT = a rule matched in monitor mode (allowed, reported). */
#define DG_ACT_ALLOW 0
#define DG_ACT_ALERT 1
#define DG_ACT_DENY 2
#define DG_ACT_KILL 3

/* Hooks (entry points). */
#define DG_HOOK_BPRM_CHECK 1
#define DG_HOOK_MMAP_FILE 2
#define DG_HOOK_FILE_MPROTECT 3
#define DG_HOOK_EXEC_TRACEPOINT 4
#define DG_HOOK_SYS_MMAP 5     /* fallback mapping checks: syscall tracepoints */
#define DG_HOOK_SYS_MPROTECT 6 /* mprotect and pkey_mprotect */
#define DG_HOOK_SYS_SHMAT 7
#define DG_HOOK_FILE_OPEN 8 /* lsm/file_open */
#define DG_HOOK_PTRACE_ACCESS 9 /* lsm/ptrace_access_check */
#define DG_HOOK_PTRACE_TRACEME 10 /* lsm/ptrace_traceme */
#define DG_HOOK_FILE_RECEIVE 11 /* lsm/file_receive */
/* The fallback's process-memory checks (syscall tracepoints, with the mapping checks): */
#define DG_HOOK_SYS_PTRACE 12 /* ptrace attach, seize, traceme */
#define DG_HOOK_SYS_PROCESS_VM 13 /* process_vm_readv, process_vm_writev */
#define DG_HOOK_SYS_PIDFD_GETFD 14
#define DG_HOOK_SYS_OPEN 15 /* the exit of open, openat, openat2: a mem file opened for writing */

/* Access kinds given to the decision function. */
#define DG_ACCESS_EXEC 0
#define DG_ACCESS_MMAP_EXEC 1
#define DG_ACCESS_MEM_EXEC 2 /* memory made executable (file_kind ANONYMOUS, WRITABLE or MODIFIED) */
#define DG_ACCESS_MEM_WRITE 3 /* a write into process memory (file_kind OWN_MEMORY, OTHER_PROCESS or FROM_OTHER_CONTAINER) */

/* Event flags. */
#define DG_EVF_PATH_TRUNCATED (1u << 0)
#define DG_EVF_PATH_UNRESOLVED (1u << 1)
#define DG_EVF_PATH_IMAGE (1u << 2) /* path is relative to the container's root filesystem */
#define DG_EVF_MAPPING_UNKNOWN (1u << 3) /* the mapping could not be looked up: judged as anonymous (fail closed) */
#define DG_EVF_ARGS_TRUNCATED (1u << 4) /* args holds the first DG_ARGS_MAX bytes (or DG_ARGV_MAX arguments) only */
#define DG_EVF_ARGS_UNAVAILABLE (1u << 5) /* the command line could not be read: args_len is 0 */
#define DG_EVF_PARENT_EXE_TRUNCATED (1u << 6) /* parent_exe holds the first DG_PATH_MAX - 1 bytes only */
#define DG_EVF_PARENT_EXE_UNAVAILABLE (1u << 7) /* no parent executable (a kernel thread) or its path could not be resolved: parent_exe is empty */

/* Stats slots (per-CPU array). */
#define DG_STAT_EVENTS 0
#define DG_STAT_RINGBUF_DROPS 1
#define DG_STAT_DENIES 2
#define DG_STAT_KILLS 3
#define DG_STAT_ALERTS 4
#define DG_STAT_PATH_ERRORS 5
#define DG_STAT_CHECKS 6
#define DG_STAT_OVL_UNKNOWN 7 /* overlay upper reads not trusted (DG_FILE_UPPER_UNKNOWN) */
#define DG_STAT_MAX 8

/* Value of the policies map, keyed by cgroup v2 id (u64). */
struct dg_policy {
	__u32 mode;
	__u32 rules;
	__u32 level; /* depth of the cgroup in the v2 hierarchy (root = 0) */
	__u32 owner; /* userspace bookkeeping: 1 agent, 2 OCI hook; unused by BPF */
	/*
	 * super_block->s_dev (kernel encoding, MAJOR << 20 | MINOR) of the
	 * container's root filesystem, found by userspace before the entrypoint
	 * runs. 0: unknown, so no file counts as image (fail closed).
	 */
	__u64 rootfs_dev;
	__u32 exec_mnt_count;                         /* used slots of exec_mnt_ids */
	__u32 exec_mnt_ids[DG_MAX_EXEC_MOUNTS];      /* mount ids exempt from non_image */
	__u32 pad;
};

/* Key of the paths map; path is NUL padded to DG_PATH_MAX. Value: __u32 DG_LIST_*. */
struct dg_path_key {
	__u64 cgroup_id;
	char path[DG_PATH_MAX];
};

/* Input and output of the decision function. */
struct dg_input {
	__u32 mode;
	__u32 rules;
	__u32 file_kind;
	__u32 list;
	__u32 access;
	__u32 enforce_action; /* DG_ACT_DENY (LSM) or DG_ACT_KILL (tracepoint) */
	__u32 shmem;          /* the file is shmem or hugetlbfs memory (memfd, shared anonymous, SysV shm) */
};

struct dg_verdict {
	__u32 match;
	__u32 action;
};

/* Context of the test-only BPF_PROG_TEST_RUN program. */
struct dg_decide_args {
	struct dg_input in;
	struct dg_verdict out;
};

/* Ring-buffer event. */
struct dg_event {
	__u64 ts_ns;            /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;        /* cgroup of the exec'ing task */
	__u64 policy_cgroup_id; /* cgroup whose policy matched (ancestor or self) */
	__u32 pid;              /* thread id */
	__u32 tgid;             /* process id */
	__u32 ppid;
	__u32 uid;
	__u32 match;
	__u32 action;
	__u32 hook;
	__u32 file_kind;
	__u32 mode;
	__u32 flags;
	char comm[16];
	char path[DG_PATH_MAX];
	/* Memory checks (0 otherwise): */
	__u32 prot;  /* the protection asked for (PROT_READ 1 | PROT_WRITE 2 | PROT_EXEC 4) */
	__u32 count; /* monitor mode: checks of this container, rule and kind this event stands for */
	/*
	 * Process memory (0 otherwise): the process reached -- the mem file's, the
	 * ptrace or process_vm_* target, for PTRACE_TRACEME the parent.
	 */
	__u64 target_cgroup_id;        /* its cgroup v2 id */
	__u64 target_policy_cgroup_id; /* the cgroup whose policy applies to it, 0: none */
	__u32 target_pid;              /* thread id */
	__u32 target_tgid;             /* process id */
	char target_comm[16];
	/*
	 * The parent (real_parent: ppid) at the time of the check, and the
	 * command line (docs/events.md, "parent and args"): NUL-separated
	 * arguments, args_len bytes of args used. lsm/bprm_check_security: the
	 * argv given to the exec being checked, read from the caller's memory;
	 * every other hook: the process's own, mm->arg_start..arg_end. The
	 * parent's executable (mm->exe_file) as a path from the checked task's
	 * root, crossing mounts like d_path(), NUL padded.
	 */
	char parent_comm[16];
	__u64 parent_start_ns; /* its thread group's start (start_boottime): tells a reused pid apart */
	__u32 args_len;
	__u32 args_pad;
	char args[DG_ARGS_MAX];
	char parent_exe[DG_PATH_MAX];
};

#endif
