/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's side of L4 telemetry (docs/telemetry.md): a thread reads the datapath's connection events,
 * names their ends from the model and feeds telemetry/ (the istio_tcp_* counters served on
 * --metrics-address) and the access log (stdout, through a bounded buffer and its own writer thread).
 */
#ifndef SOCKMESH_AGENT_TELEMETRY_H
#define SOCKMESH_AGENT_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "agent/model_gate.h"
#include "datapath/datapath.h"
#include "telemetry/telemetry.h"
#include "workload/workload.h"

struct agent_telemetry;

/* The access log's buffer: lines beyond it are dropped (and counted), never waited for. */
#define AGENT_ACCESS_LOG_BUFFER (4u << 20)

/* Touches nothing yet: the counters and, with access_log, the log's buffer and writer thread. */
int agent_telemetry_new(bool access_log, enum sm_tel_log_format format, struct agent_telemetry **out, char *err,
			size_t err_size);
/* Reads the datapath's connection events from here on; model_gate guards model for the lookups. */
int agent_telemetry_start(struct agent_telemetry *t, struct sm_datapath *dp, const struct sm_model *model,
			  struct model_gate *model_gate, char *err, size_t err_size);
/* Once the model holds every workload and service (the first Address response, or the local config): only
 * then are the connection events read, so that their workloads are known. */
void agent_telemetry_model_synced(struct agent_telemetry *t);
/* Stops the threads (the access log is written out first) and frees; NULL is fine. */
void agent_telemetry_free(struct agent_telemetry *t);

/* An authorization denial read at *at (agent/authz.c's hook, under the model lock): opened, closed and failed
 * with response_flags DENY, reporter destination, and its access log line. */
void agent_telemetry_denied(void *t, const struct sm_authz_event *ev, const char *error, const struct timespec *at);

/* The istio_tcp_* counters (malloc'ed, NULL when out of memory). */
char *agent_telemetry_istio_metrics(struct agent_telemetry *t, size_t *len);
/* sockmesh_telemetry_* for the admin endpoint (malloc'ed, NULL when out of memory); counters: the datapath's. */
char *agent_telemetry_admin_metrics(struct agent_telemetry *t, const uint64_t *counters);

#endif
