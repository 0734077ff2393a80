/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's log: one line per event, with time and level, on stderr. libbpf and gRPC log through it. */
#ifndef SOCKMESH_AGENT_LOG_H
#define SOCKMESH_AGENT_LOG_H

#include "xds/xds.h"

enum log_level {
	LOG_ERROR,
	LOG_WARN,
	LOG_INFO,
	LOG_DEBUG,
};

/* "error", "warn", "info" or "debug"; returns 0 or -EINVAL. */
int log_set_level_name(const char *name);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Routes libbpf's and gRPC's own messages into this log, a level below their own. */
void log_capture_libraries(void);
/* The xDS client's log callback. */
void log_xds(enum sm_xds_log_level level, const char *line);

#endif
