/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cookie of a network namespace given by an open nsfs fd (/proc/PID/ns/net, /run/netns/NAME, or an
 * fd received from sockmesh-cni): what the datapath's sm_enrolled map is keyed by. Needs CAP_SYS_ADMIN
 * (setns) and Linux 5.14 (SO_NETNS_COOKIE). The caller's own namespace is never changed: a helper
 * thread enters the namespace and ends.
 */
#ifndef SOCKMESH_NETNS_NETNS_H
#define SOCKMESH_NETNS_NETNS_H

#include <stdint.h>

/* The calling thread's own network namespace: 0 or -errno. */
int sm_netns_cookie_here(uint64_t *cookie);
/* 0 or -errno (-EINVAL: fd is not a network namespace). */
int sm_netns_cookie_of(int netns_fd, uint64_t *cookie);
/* The same for a path; 0 or -errno, the path's open error included. */
int sm_netns_cookie_at(const char *path, uint64_t *cookie);

#endif
