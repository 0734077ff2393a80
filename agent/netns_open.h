/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opening a network namespace the datapath knows only by its cookie (a guarded, enrolled namespace), to
 * run an iterator inside it: the authorization reaper's and telemetry's flush.
 */
#ifndef SOCKMESH_AGENT_NETNS_OPEN_H
#define SOCKMESH_AGENT_NETNS_OPEN_H

#include <stddef.h>
#include <stdint.h>

#include "bpf/sockmesh.h"

struct enroller;

/* From now on, namespaces are first asked of the enroller's pods (NULL: no enroller). */
void agent_netns_set_enroller(struct enroller *enroller);
/*
 * Opens the namespace whose cookie is cookie: a pod of the enroller's, else a /run/netns name or a
 * process in it (/proc, whose scan is remembered: the next open of the same namespace is an open() and
 * a stat()). 0 and *fd (the caller closes it), -ENOENT when it is nowhere to be found, or -errno.
 */
int agent_netns_open(uint64_t cookie, int *fd);
/* Whether the namespace holds one of addrs (its pod's IPs, as the enroller knows them): 1, 0, or -ENOENT
 * when that is not known (no enroller, or not one of its pods). */
int agent_netns_holds(uint64_t cookie, const struct sm_frontend_key *addrs, size_t n);

#endif
