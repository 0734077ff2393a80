/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Finding the network namespace of a pod that already runs, from a procfs (the node's /proc, or a
 * fake tree in tests), with istio-cni's safeguards: the pod UID comes from a process's cgroup file,
 * the oldest process wins, and the namespace must hold one of the pod's IPs, else the pairing is
 * refused (a process of the pod may be passing through another namespace). docs/kubernetes.md
 * "Finding a running pod's namespace" has the rules and their sources. The library never logs.
 */
#ifndef SOCKMESH_PODNS_H
#define SOCKMESH_PODNS_H

#include <stddef.h>
#include <sys/types.h>

/* A pod UID in canonical form: 8-4-4-4-12 lowercase hex digits with dashes, and its NUL. */
#define PODNS_UID_LEN 37

enum podns_outcome {
	PODNS_FOUND,       /* netns_fd is the pod's namespace */
	PODNS_NO_PROCESS,  /* no process outside the host's namespace names the pod in its cgroup */
	PODNS_IP_MISSING,  /* processes found, but none of their namespaces holds one of the pod's IPs */
	PODNS_NOT_NETNS,   /* processes found, but their ns/net could not be opened as a network namespace */
};

struct podns_result {
	enum podns_outcome outcome;
	int netns_fd;                  /* O_RDONLY|O_CLOEXEC fd of the namespace when FOUND, else -1 */
	pid_t pid;                     /* the process whose namespace it is; when refused, the oldest candidate */
	unsigned long long start_time; /* that process's start time, clock ticks after boot */
};

/*
 * The pod UID a /proc/<pid>/cgroup file's text names, into uid (PODNS_UID_LEN bytes): 0, -ENOENT when
 * no line names a pod, -EINVAL when lines name different pods or containers.
 */
int podns_cgroup_pod_uid(const char *cgroup_text, char *uid);

/*
 * Walks proc_root (e.g. "/proc", or "/host/proc" in a container) for the processes of pod_uid (either
 * form: dashes or underscores) whose namespace holds one of ips (n_ips IPv4 or IPv6 addresses as text),
 * skipping those in the namespace of proc_root's pid 1 (the host's). 0 with result filled in (the
 * caller closes result->netns_fd when FOUND), or -errno: -EINVAL for a bad UID or address, or when
 * n_ips is 0; -ENOENT and others when proc_root cannot be read. Entering a namespace other than the
 * caller's own needs CAP_SYS_ADMIN; opening other users' ns/net needs CAP_SYS_PTRACE.
 */
int podns_find(const char *proc_root, const char *pod_uid, const char *const *ips, size_t n_ips,
	       struct podns_result *result);

/* The outcome as a short text ("found", "no process", ...). */
const char *podns_outcome_name(enum podns_outcome outcome);

#endif
