/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What datapath/'s files share and nothing outside them sees: the datapath's state and a few helpers.
 */
#ifndef SOCKMESH_DATAPATH_INTERNAL_H
#define SOCKMESH_DATAPATH_INTERNAL_H

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "datapath/datapath.h"
#include "sockmesh.skel.h"

/* Writes the error's text into err and returns ret (-errno): `return fail(err, size, -EINVAL, "...")`. */
__attribute__((format(printf, 4, 5))) static inline int fail(char *err, size_t size, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, size, fmt, ap);
	va_end(ap);
	return ret;
}

/* The kernel's "operation not supported" for bpf() commands a map type lacks; not in userspace errno.h. */
#ifndef ENOTSUPP
#define ENOTSUPP 524
#endif

/* Pin directories are short paths on bpffs; bounding them keeps every derived path in PATH_MAX. */
#define PIN_DIR_MAX 256

/* An entry of sm_authz_idents (datapath/authz.c). */
struct sm_dp_ident {
	struct sm_frontend_key key;
	struct sm_authz_ident_value value;
};

struct sm_datapath {
	struct sm_sockmesh *skel; /* NULL when only the pinned maps were opened */
	struct bpf_link *links[SM_CGROUP_HOOKS];
	int fds[SM_DP_MAP_COUNT];
	struct sm_bpf_writer writer;
	bool adopted;
	bool can_reap;		    /* the kernel has bpf_sock_destroy (6.5): sm_authz_reap is loaded */
	bool can_release;	    /* sm_sock_release is loaded: the kernel has bpf_rdonly_cast (6.2), and the
				     * open asked for it or an earlier agent pinned its link */
	bool migrating;		    /* new maps loaded beside an older layout's; attached at commit */
	bool wrote_probe_memo;	    /* this open remembered what the probe found: undone with it */
	bool created_dirs[3];	    /* the pin dir, links/ and maps-vN/: made by this open */
	bool created_links[SM_CGROUP_HOOKS]; /* pinned by this open (not an earlier agent's, updated in place) */
	__u64 cgroup_id;		    /* the cgroup's inode number, as links report it */
	char old_maps[PIN_DIR_MAX + 32]; /* the older layout's maps directory, removed at commit */
	char cgroup[PATH_MAX];
	char pin_dir[PIN_DIR_MAX];
	/* sm_authz_idents as the last write left it, sorted by address; NULL: not known (the next write reads
	 * the map back) */
	struct sm_dp_ident *authz_idents;
	size_t n_authz_idents;
};

/* The pinned name of a datapath map ("sm_frontends"). */
const char *sm_dp_map_name(int map);
/* Runs an iter/tcp program over the TCP sockets of netns_fd's namespace (-1: the caller's), in a
 * short-lived thread that enters it; *output: the bytes the program wrote (datapath/iter.c). With
 * only_if_local, only when one of those n_only addresses may be local there (*ran, when not NULL, says). */
int sm_dp_run_tcp_iter(struct bpf_program *prog, int netns_fd, const struct sm_frontend_key *only_if_local,
		       size_t n_only, bool *ran, size_t *output, char *err, size_t size);
/* Room for one key's value of a per-CPU map (value_size bytes for each possible CPU), zeroed, and in *cpus
 * how many CPUs; NULL, with *cpus the -errno, when it cannot be had. */
void *sm_dp_per_cpu_values(size_t value_size, int *cpus);
/* One key's __u64 value of a per-CPU map, summed over the cpus (values: room from sm_dp_per_cpu_values); 0 or
 * -errno (-ENOENT: no such key). */
int sm_dp_sum_per_cpu(int fd, const void *key, __u64 *values, int cpus, uint64_t *sum);
/* Switches the pinned sk_lookup links (links/authz-*) to this datapath's program (datapath/authz.c). */
int sm_datapath_relink_guards(struct sm_datapath *dp, char *err, size_t size);

/* The kernel probe's result remembered at path for this boot, kernel and probe object (datapath/probe_memo.c):
 * true with the optional parts' flags when there is one; writing it, true when written. It only saves time:
 * a memo that cannot be read or written is as if absent. */
bool probe_memo_read(const char *path, bool *can_reap, bool *can_release);
bool probe_memo_write(const char *path, bool can_reap, bool can_release);

#endif
