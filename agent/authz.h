/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's side of L4 authorization: compiles the model's policies (authz/) after each applied
 * response, writes the tables (datapath/), closes the established connections a change now denies, and
 * logs and counts the datapath's decisions. docs/authorization.md has the whole picture.
 */
#ifndef SOCKMESH_AGENT_AUTHZ_H
#define SOCKMESH_AGENT_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>


#include "agent/model_gate.h"
#include "datapath/datapath.h"
#include "workload/workload.h"

struct agent_authz;

/* "auto" (the agent's own network namespace's addresses that are no workload's), "none", or a comma-separated
 * list of addresses: connections from them are never checked (the node itself: kubelet probes). */
#define AGENT_NODE_ADDRESSES_DEFAULT "auto"

/* Parses the options, touching nothing yet; 0 or -EINVAL with the reason in err. */
int agent_authz_new(const char *node_addresses, struct agent_authz **out, char *err, size_t err_size);
/*
 * Starts on an open datapath: reads the generation in force and starts the thread that logs the
 * datapath's denials. model_gate guards model for the thread's name lookups.
 */
int agent_authz_start(struct agent_authz *authz, struct sm_datapath *dp, const struct sm_model *model,
		      struct model_gate *model_gate, char *err, size_t err_size);
void agent_authz_free(struct agent_authz *authz);
/* Before start, when neither an enroller nor --enroll-all runs: the namespaces `sockmesh enroll` put in
 * sm_enrolled are guarded by the agent (found through /run/netns or a process in them). */
void agent_authz_guard_enrolled(struct agent_authz *authz);

/* Before start: fn is called (from the events thread, under the model lock) with each connection the datapath
 * denied, the access log's error text and when the event was read; telemetry counts them. When logs, fn
 * writes the access log line and the agent's own (rate-limited) denial line is left out. */
typedef void (*agent_authz_denied_fn)(void *ctx, const struct sm_authz_event *ev, const char *error,
				      const struct timespec *at);
void agent_authz_set_denied_hook(struct agent_authz *authz, agent_authz_denied_fn fn, void *ctx, bool logs);

/* The model's check (sm_model_set_authz_check): the state compiles within the tables' limits. The agent's
 * model keeps the compilation for the sync after the response; a scratch model (a dry run) uses
 * agent_authz_check_only. */
int agent_authz_check(void *authz, const struct sm_model *model, char *reason, size_t reason_size);
int agent_authz_check_only(void *authz, const struct sm_model *model, char *reason, size_t reason_size);

/*
 * After each applied response, under the model lock. Nothing is written before the first response of
 * each type since the start (or the local config), so a restarted agent keeps the pinned tables
 * enforcing until it knows the whole state; then each change of the authorization state is compiled,
 * written and its newly denied connections closed.
 */
void agent_authz_after_apply(struct agent_authz *authz, const struct sm_model *model, const char *type_url);

/* Prometheus text for /metrics (malloc'ed, NULL when out of memory). */
char *agent_authz_metrics(struct agent_authz *authz);

#endif
