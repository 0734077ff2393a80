/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local-config mode (--local-config, LOCAL_XDS_PATH): ztunnel's local config file as the whole desired
 * state, applied like an xDS update, and applied again when the file changes or on SIGHUP.
 */
#ifndef SOCKMESH_AGENT_LOCAL_CONFIG_H
#define SOCKMESH_AGENT_LOCAL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"

/* A file read and checked, not applied: the two responses it makes (the whole state of each type). */
struct local_config {
	uint8_t *address;
	size_t address_len;
	uint8_t *authorization;
	size_t authorization_len;
};

/*
 * Reads and checks path without touching the kernel or the agent's model: the reader's checks (file,
 * line and reason), then a dry run through a scratch model with these map capacities (0: the default)
 * that every resource must pass, its policies compiled by authz (when not NULL) within the tables' limits.
 * Returns 0 or -errno; the reason is logged. Free with local_config_free.
 */
struct agent_authz;
int local_config_read(const char *path, const uint32_t capacity[SM_MAP_COUNT], const char *node_name,
		      struct agent_authz *authz, struct local_config *out);
void local_config_free(struct local_config *config);

/*
 * Applies a read config (taking it over; it is freed here) as the whole desired state: what the model
 * holds that the file no longer names is removed. Runs on the one thread that writes the model.
 * Returns 0, or -errno when the apply failed or the model rejected a resource (each one logged; the
 * others are applied, the rejected keep their old state).
 */
int local_config_apply(struct agent *agent, struct local_config *config);

/*
 * The first load: applies config (read earlier with local_config_read, before the datapath was opened;
 * taken over) or, when NULL, reads agent->options.local_config now and applies it. Marks the agent
 * ready on success.
 */
int local_config_load(struct agent *agent, struct local_config *config);

/*
 * Reads the file again and, when it changed, applies it. A file that fails to read or check is
 * rejected whole (logged with its line); the state applied before keeps serving. Returns 0 or -errno.
 * After -ENOMEM, local_config_retry_ms says when to call it again.
 */
int local_config_reload(struct agent *agent);
/* Milliseconds until the next try of a reload that ran out of memory (doubling from 1 s to 30 s; at least 1);
 * 0: none waiting. */
unsigned local_config_retry_ms(struct agent *agent);
/* Whether that try is due now. */
bool local_config_retry_due(struct agent *agent);

/*
 * Watches the directory holding the file (so that editors' rename-over writes and Kubernetes
 * ConfigMaps' symlink swaps are seen) and raises SIGHUP in this process after each change, once the
 * directory has been quiet for a moment; the thread that waits for signals reloads. Returns 0 or
 * -errno (logged; SIGHUP still reloads).
 */
int local_config_watch_start(struct agent *agent);
/* Stops the watcher and frees what local-config mode holds. */
void local_config_stop(struct agent *agent);

#endif
