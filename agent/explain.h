/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sockmesh explain` and the admin endpoint's /explain: what the datapath does with a connection from
 * SRC to DST:PORT, from the model and the pinned maps: untouched, or the service and its candidate
 * backends by priority with their weights, the waypoint and TLV; and for each place the connection can
 * land, the authorization verdict with the policy, rule and matches that decided it, the kernel's own
 * verdict from the pinned tables beside it.
 */
#ifndef SOCKMESH_AGENT_EXPLAIN_H
#define SOCKMESH_AGENT_EXPLAIN_H

#include <stddef.h>

#include <jansson.h>

#include "agent/agent.h"

/* from: an IP; to: IP:PORT or [IPv6]:PORT. NULL with the reason in err (bad input) or when out of memory. */
json_t *agent_explain(struct agent *agent, const char *from, const char *to, char *err, size_t err_size);

#endif
