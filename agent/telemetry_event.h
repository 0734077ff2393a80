/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One connection event into telemetry, under the model lock: its ends named from the model, counted by
 * telemetry/ and, at a connection's end, its access log line formatted. The events thread (agent/telemetry.c)
 * and bench/telemetry_bench run this same code.
 */
#ifndef SOCKMESH_AGENT_TELEMETRY_EVENT_H
#define SOCKMESH_AGENT_TELEMETRY_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "bpf/sockmesh.h"
#include "telemetry/telemetry.h"
#include "workload/workload.h"

struct tel_event_sink {
	struct sm_telemetry *counters;
	bool access_log; /* format the line of a connection's end */
	enum sm_tel_log_format format;
	struct sm_tel_log_cache *log_cache; /* the lines' names kept formatted; NULL: none (the model lock guards it) */
};

/*
 * A connection event from the datapath, at now (wall clock). *line_len: the length of its access log line in
 * line (0 when it has none; >= size when it did not fit and must not be written). Returns 0, or -ENOMEM when
 * it could not be counted (its line is still formatted).
 */
int tel_event_conn(const struct tel_event_sink *sink, const struct sm_model *model, const struct sm_conn_event *ev,
		   const struct timespec *now, char *line, size_t size, size_t *line_len);

/* An authorization denial: opened, closed and failed with response_flags DENY, reporter destination. */
int tel_event_denied(const struct tel_event_sink *sink, const struct sm_model *model, const struct sm_authz_event *ev,
		     const char *error, const struct timespec *now, char *line, size_t size, size_t *line_len);

#endif
