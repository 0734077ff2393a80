/* SPDX-License-Identifier: Apache-2.0 */
/* The running agent: the layers wired together, shared by the daemon and its admin endpoint. */
#ifndef SOCKMESH_AGENT_AGENT_H
#define SOCKMESH_AGENT_AGENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "agent/local_addrs.h"
#include "agent/model_gate.h"
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
	const char *metrics_address; /* the istio_tcp_* counters (docs/telemetry.md) */
	bool telemetry;		     /* connection events from the datapath (SM_CONFIG_TELEMETRY) */
	bool access_log;	     /* ztunnel's access log on stdout */
	bool log_json;		     /* LOG_FORMAT=json: the access log in JSON */
	const char *record;
	const char *dns_proxy;
	bool enroll_all;
	bool accelerate;
	uint32_t capacity[SM_MAP_COUNT]; /* for maps created now; 0: the default */
	const char *cni_conf_dir, *cni_bin_dir, *cni_plugin; /* cni_conf_dir NULL: sockmesh-cni not installed */
	/* the enroller (agent/enroller.h): runs when kube_watch */
	bool kube_watch;		/* KUBERNETES_SERVICE_HOST set or --kube-api given */
	const char *kube_api, *kube_token, *kube_ca;
	const char *cni_socket, *proc_root;
	bool enroll_system_namespaces;
	const char *node_addresses; /* agent/authz.h: "auto", "none" or a list */
};

/* IP:PORT or [IPv6]:PORT (port 0 included); 0 or -EINVAL. */
int parse_ip_port(const char *text, struct sockaddr_storage *out);
/* An IPv4 or IPv6 address as the maps hold it (IPv4 as ::ffff:a.b.c.d); 0 or -EINVAL. */
int parse_mapped_address(const char *text, uint8_t out[16]);
/* Such an address and a port (host order) as "a.b.c.d:P" or "[v6]:P". */
void format_mapped_endpoint(const uint8_t addr[16], uint16_t port, char *buf, size_t size);

struct agent {
	struct run_options options;
	struct sm_datapath *dp;
	struct sm_model *model;
	struct model_gate model_gate; /* the model is written by one thread (under the lock); readers take it */
	struct sm_xds_node node;
	struct sm_xds_client *xds;
	/* NULL without the Kubernetes watcher; set once started, after the admin endpoint serves */
	_Atomic(struct enroller *) enroller;
	struct sm_latency local_apply; /* local-config mode: its applies (the first and each reload) */
	uint64_t local_apply_failures; /* local-config mode: applies that failed whole (under the model's lock) */
	atomic_bool local_config_applied;
	struct local_state *local; /* local-config mode: the last applied file, the watcher */
	atomic_bool datapath_committed; /* false while a layout migration waits for the first sync */
	struct local_addrs local_addrs; /* sm_local_addrs in step with the model (under the model's lock) */
	/* What the start prepares before it touches the kernel: */
	struct sm_config knobs;		/* the datapath's config map */
	struct sm_pin_lock *lock;	/* the pin directory's, held for the agent's life */
	int admin_fd;			/* bound and listening; -1 once the admin endpoint owns it */
	char admin_bound[64];		/* the admin address actually bound (port 0 resolved) */
	char cni_plugin[4096];		/* --cni-conf-dir: the sockmesh-cni binary to install */
	struct sm_cni_watch *cni_watch; /* keeps its conflist entry in place */
	struct agent_authz *authz;	/* L4 authorization: compiles, writes, logs */
	struct agent_telemetry *telemetry; /* NULL with --no-telemetry */
	int metrics_fd;			/* like admin_fd, for --metrics-address */
	char metrics_bound[64];
};

/* After each response is applied (under the model lock): local addresses, a layout migration's switch. */
void agent_after_apply(void *agent, const char *type_url);
/*
 * After a response could not be applied: on -EIO (the maps differ from the model) the agent stops, leaving
 * the datapath pinned and serving, and exits 1 so that its restart adopts the maps as they are.
 */
void agent_apply_failed(void *agent, int err);

/*
 * The wait before trying again what failed on the agent's side and no config change may redo (memory, a
 * table write): 1 s after the first failure, doubling up to 30 s. previous_ms 0: the first.
 */
static inline unsigned agent_next_retry_ms(unsigned previous_ms)
{
	enum { FIRST_MS = 1000, MAX_MS = 30000 };

	return !previous_ms ? FIRST_MS : previous_ms >= MAX_MS / 2 ? MAX_MS : previous_ms * 2;
}

/* CLOCK_MONOTONIC in milliseconds: when such a try is due. */
static inline uint64_t agent_monotonic_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/* Whether the agent serves: config applied (first response of each type, or the local config) and the
 * datapath attached. */
bool agent_ready(struct agent *agent, char *why, size_t why_size);

/*
 * Reads the pinned maps into model: ids are kept, nothing unchanged is rewritten, and the first Address
 * response sweeps what its config no longer holds. counts: the entries adopted per map.
 */
int adopt_pinned_maps(struct sm_datapath *dp, struct sm_model *model, size_t counts[SM_MAP_COUNT]);

struct admin;

/*
 * Binds and listens on address ("IP:PORT" or "[IPv6]:PORT"; port 0 picks one) before anything touches
 * the kernel; bound is the address actually bound. The fd is admin_start's (or the caller's to close).
 */
int admin_bind(const char *what, const char *address, int *fd, char *bound, size_t bound_size, char *err,
	       size_t err_size);
/* Serves /config_dump, /healthz/ready and /metrics on the listening fd, which it then owns. */
int admin_start(struct agent *agent, int fd, struct admin **out, char *err, size_t err_size);
/* Serves the istio_tcp_* counters at /metrics and /stats/prometheus (as ztunnel's :15020); stopped with admin_stop. */
int metrics_start(struct agent *agent, int fd, struct admin **out, char *err, size_t err_size);
void admin_stop(struct admin *admin);

#endif
