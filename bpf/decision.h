/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The one decision function. Pure: no helpers, no maps, no kernel types.
 * Every entry point (LSM hooks, exec tracepoint) classifies the file, looks
 * up the policy and list membership, then asks dg_decide() for the verdict.
 * The test-only program dg_test_decide runs it through BPF_PROG_TEST_RUN.
 */
#ifndef DRIFTGUARD_DECISION_H
#define DRIFTGUARD_DECISION_H

#include "driftguard.h"

static __always_inline struct dg_verdict dg_decide(const struct dg_input *in)
{
	struct dg_verdict v = { .match = DG_MATCH_NONE, .action = DG_ACT_ALLOW };
	__u32 rules = in->rules;

	if (in->mode != DG_MODE_MONITOR && in->mode != DG_MODE_ENFORCE)
		return v;

	if (in->access == DG_ACCESS_MEM_EXEC) {
		/*
		 * Memory made executable that does not hold a file's own pages
		 * (anonymous, writable at once, or written copy-on-write pages):
		 * no path, so no list applies. The JIT opt-out clears the rule.
		 */
		if (rules & DG_RULE_EXEC_MEMORY)
			v.match = DG_MATCH_EXEC_MEMORY;
	} else if (in->access == DG_ACCESS_MEM_WRITE) {
		/*
		 * Writing into the caller's own memory through /proc/<pid>/mem (DDexec):
		 * denied whatever the rule bits (no opt-out needs it, and a policy
		 * pinned by an older agent gets it too); no path, no list.
		 */
		if (in->file_kind == DG_FILE_OWN_MEMORY)
			v.match = DG_MATCH_MEMORY_WRITE;
		/*
		 * another process's memory (the caller's policy), or this process's
		 * from another container (the target's): the rule bit, off with the
		 * debug opt-out
		 */
		else if ((in->file_kind == DG_FILE_OTHER_PROCESS || in->file_kind == DG_FILE_FROM_OTHER_CONTAINER) &&
			 (rules & DG_RULE_PROCESS_ACCESS))
			v.match = DG_MATCH_PROCESS_ACCESS;
	} else if (in->list == DG_LIST_DENY)
		v.match = DG_MATCH_DENY_LIST;
	else if (in->file_kind == DG_FILE_FILELESS && (rules & DG_RULE_FILELESS) &&
		 !(in->access == DG_ACCESS_MMAP_EXEC && in->shmem && (rules & DG_RULE_JIT)))
		/*
		 * fileless code cannot be allow-listed by path. The JIT opt-out lets
		 * shmem memory (a memfd, as .NET double-maps it) be mapped executable;
		 * exec of it stays fileless.
		 */
		v.match = DG_MATCH_FILELESS;
	else if (in->list == DG_LIST_ALLOW && !(rules & DG_RULE_ALLOWLIST_ONLY))
		/* allow entries exempt a path (e.g. a tool the pod downloads) from the file rules */
		v.match = DG_MATCH_NONE;
	else if ((in->file_kind == DG_FILE_UPPER || in->file_kind == DG_FILE_UPPER_UNKNOWN) &&
		 (rules & DG_RULE_DRIFT))
		/*
		 * In allow-list-only mode the list names what may run, not what may be
		 * replaced: a file written over an allowed path is still drift. A file
		 * whose layer could not be told is drift too: a wrong guess must not
		 * let a written binary pass as image.
		 */
		v.match = DG_MATCH_DRIFT;
	else if ((in->file_kind == DG_FILE_OTHER_FS || in->file_kind == DG_FILE_OTHER_OVERLAY) &&
		 (rules & DG_RULE_NON_IMAGE))
		/* not from this container's image layers (exempt volumes are DG_FILE_EXEC_VOLUME) */
		v.match = DG_MATCH_NON_IMAGE;
	else if (in->access == DG_ACCESS_EXEC && (rules & DG_RULE_ALLOWLIST_ONLY) && in->list != DG_LIST_ALLOW)
		/* allow-list-only governs exec, not the libraries a program maps */
		v.match = DG_MATCH_NOT_ALLOWED;

	if (v.match == DG_MATCH_NONE)
		return v;
	v.action = in->mode == DG_MODE_ENFORCE ? in->enforce_action : DG_ACT_ALERT;
	return v;
}

#endif
