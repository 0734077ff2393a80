/* SPDX-License-Identifier: Apache-2.0 */
/* The running agent: the layers wired together, shared by the daemon and its admin endpoint. */
#ifndef SOCKMESH_AGENT_AGENT_H
#define SOCKMESH_AGENT_AGENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "datapath/datapath.h"
#include "workload/workload.h"
#include "xds/xds.h"

struct run_options {
	const char *xds_address;
	bool xds_plaintext;
	const char *xds_root_cert;
	const char *xds_server_name;
	const char *xds_token;
	const char *local_config;
	const char *cgroup;
	const char *pin_dir;
	const char *admin_address;
	const char *record;
	const char *dns_proxy;
	bool enroll_all;
	bool accelerate;
	uint32_t capacity[SM_MAP_COUNT]; /* for maps created now; 0: the default */
};

/* IP:PORT or [IPv6]:PORT (port 0 included); 0 or -EINVAL. */
int parse_ip_port(const char *text, struct sockaddr_storage *out);

struct agent {
	struct run_options options;
	struct sm_datapath *dp;
	struct sm_model *model;
	pthread_mutex_t model_lock; /* the model is written by one thread; readers take the lock */
	struct sm_xds_node node;
	struct sm_xds_client *xds;
	struct sm_latency local_apply; /* local-config mode: its applies (the first and each reload) */
	atomic_bool local_config_applied;
	struct local_state *local; /* local-config mode: the last applied file, the watcher */
	atomic_bool datapath_committed; /* false while a layout migration waits for the first sync */
};

/* After each response is applied (under the model lock): local addresses, a layout migration's switch. */
void agent_after_apply(void *agent, const char *type_url);

/* Whether the agent serves: config applied (first response of each type, or the local config) and the
 * datapath attached. */
bool agent_ready(struct agent *agent, char *why, size_t why_size);

struct admin;

/* Serves /config_dump, /healthz/ready and /metrics on address ("host:port"). */
int admin_start(struct agent *agent, const char *address, struct admin **out, char *err, size_t err_size);
void admin_stop(struct admin *admin);

#endif
