/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockmesh run: the node agent. It opens the datapath (adopting what an earlier agent pinned), takes
 * config from istiod (or a local config file, reloaded on change and SIGHUP) into the model, and serves
 * the admin endpoint until SIGTERM or SIGINT; then it ends the xDS stream and exits, leaving the
 * datapath pinned and serving.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "agent/agent.h"
#include "agent/authz.h"
#include "agent/cni_install.h"
#include "agent/commands.h"
#include "agent/enroller.h"
#include "agent/netns_open.h"
#include "agent/local_config.h"
#include "agent/log.h"
#include "agent/telemetry.h"
#include "k8s/k8s.h"
#include "netns/netns.h"

#define DEFAULT_XDS_ADDRESS "istiod.istio-system.svc:15012"
#define DEFAULT_ROOT_CERT "/var/run/secrets/istio/root-cert.pem"
#define DEFAULT_TOKEN "/var/run/secrets/tokens/istio-token"
#define DEFAULT_ADMIN_ADDRESS "127.0.0.1:15000"
#define DEFAULT_METRICS_ADDRESS "0.0.0.0:15020"
#define DEFAULT_CNI_SOCKET "/var/run/sockmesh/cni.sock"
#define DEFAULT_PROC_ROOT "/proc"

extern char **environ;

_Static_assert(SM_DATAPATH_MAX_CAPACITY == 67108864, "run_usage names the largest --map-capacity");

static void run_usage(FILE *out)
{
	fprintf(out,
		"Usage: sockmesh run --cgroup PATH [options]\n\n"
		"Runs the node agent: takes config from istiod over Delta ADS (or from a local config file)\n"
		"and programs the eBPF datapath attached to the cgroup. Stops on SIGTERM or SIGINT, leaving\n"
		"the datapath pinned and serving the last config; SIGHUP reloads a local config; SIGUSR1 stops\n"
		"it the same way with exit 1, for a restart that adopts the maps. Every option is\n"
		"checked, the local config read, the pin directory locked and the admin address bound before the\n"
		"kernel is touched.\n\n"
		"  --xds-address HOST:PORT  istiod's xDS address (XDS_ADDRESS; default " DEFAULT_XDS_ADDRESS ")\n"
		"  --xds-plaintext          no TLS (istiod's plaintext port 15010, tests)\n"
		"  --xds-root-cert FILE     the CA of istiod's certificate (XDS_ROOT_CA; default\n"
		"                           " DEFAULT_ROOT_CERT ")\n"
		"  --xds-server-name NAME   the name istiod's certificate must carry, when the address is not it\n"
		"  --xds-token FILE         bearer token file, re-read on each stream (default with TLS:\n"
		"                           " DEFAULT_TOKEN "; '' for none)\n"
		"  --local-config FILE      ztunnel's local config YAML, used instead of xDS (LOCAL_XDS_PATH);\n"
		"                           reloaded when it changes and on SIGHUP; not with --xds-* or --record\n"
		"  --cgroup PATH            the cgroup v2 directory whose sockets are steered (required)\n"
		"  --pin-dir PATH           where maps and links are pinned (default " SM_DEFAULT_PIN_DIR ")\n"
		"  --admin-address IP:PORT  /config_dump, /healthz/ready, /metrics (default " DEFAULT_ADMIN_ADDRESS ";\n"
		"                           port 0: one the kernel picks, logged)\n"
		"  --metrics-address IP:PORT  Istio's istio_tcp_* metrics at /metrics and /stats/prometheus\n"
		"                           (default " DEFAULT_METRICS_ADDRESS ", as ztunnel; port 0: one the kernel picks)\n"
		"  --access-log on|off      ztunnel's access log on stdout, a line per connection (default on;\n"
		"                           JSON with LOG_FORMAT=json)\n"
		"  --no-telemetry           no connection events from the datapath: no metrics endpoint, no\n"
		"                           access log (on Linux 6.2+, translated sockets then free their slot\n"
		"                           at their close: a faster connect)\n"
		"  --enroll-all             steer every network namespace, not only enrolled ones\n"
		"  --no-accelerate          no same-node sockmap acceleration\n"
		"  --dns-proxy IP:PORT      send DNS (port 53) to this proxy; [IPv6]:PORT for IPv6 sockets\n"
		"  --record FILE            append every xDS response received to a recorded stream\n"
		"  --map-capacity MAP=N     entries of a map created now: frontends, services, endpoints or\n"
		"                           backends, N up to 67108864 (repeatable; pinned maps keep their size)\n"
		"  --cni-conf-dir DIR       install sockmesh-cni: its entry goes last in the first CNI config\n"
		"                           of DIR (by name), and is put back while the agent runs when the\n"
		"                           primary CNI rewrites the file; nothing CNI is touched without it\n"
		"  --cni-bin-dir DIR        where sockmesh-cni's binary goes (default " CNI_DEFAULT_BIN_DIR ")\n"
		"  --cni-plugin PATH        the sockmesh-cni binary to install (default: beside sockmesh)\n"
		"  --log-level LEVEL        error, warn, info (default) or debug\n"
		"  --kube-api URL           the Kubernetes API (default in-cluster: KUBERNETES_SERVICE_HOST);\n"
		"                           with either, the agent enrolls the pods of NODE_NAME labelled\n"
		"                           istio.io/dataplane-mode=sockmesh (or in a namespace so labelled)\n"
		"                           and owns the enrollment map: other cookies in it are removed\n"
		"  --kube-token FILE        the API's bearer token ('' for none; default\n"
		"                           " SM_K8S_DEFAULT_TOKEN_FILE ")\n"
		"  --kube-ca FILE           the API's CA ('' for the system CAs; default\n"
		"                           " SM_K8S_DEFAULT_CA_FILE ")\n"
		"  --cni-socket PATH        where sockmesh-cni hands over new pods, served with the watcher\n"
		"                           (default " DEFAULT_CNI_SOCKET ")\n"
		"  --proc-root PATH         the node's /proc, to find running pods' namespaces (default " DEFAULT_PROC_ROOT ")\n"
		"  --enroll-system-namespaces  also enroll labelled pods in kube-system and the agent's namespace\n"
		"  --node-addresses LIST    sources never checked by authorization policies (the node itself:\n"
		"                           kubelet probes): 'auto' (default: this network namespace's addresses\n"
		"                           that are no workload's), 'none', or IP,IP,...\n\n"
		"The node identity comes from INSTANCE_IP, POD_NAME, POD_NAMESPACE, NODE_NAME, CLUSTER_ID and\n"
		"ISTIO_META_*, as for ztunnel.\n");
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *value = getenv(name);

	return value && value[0] ? value : fallback;
}

/* MAP=N, N within what the kernel takes for a map (see SM_DATAPATH_MAX_CAPACITY). */
static int parse_capacity(const char *text, uint32_t capacity[SM_MAP_COUNT])
{
	const char *eq = strchr(text, '=');
	char *end;

	if (!eq || !isdigit((unsigned char)eq[1]))
		return -EINVAL;
	errno = 0;
	unsigned long long n = strtoull(eq + 1, &end, 10);
	if (errno || *end || !n || n > SM_DATAPATH_MAX_CAPACITY)
		return -EINVAL;
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		if (strlen(sm_map_name(map)) == (size_t)(eq - text) && strncmp(text, sm_map_name(map), (size_t)(eq - text)) == 0) {
			capacity[map] = (uint32_t)n;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_run_options(int argc, char **argv, struct run_options *o)
{
	static const struct option options[] = {
		{ "xds-address", required_argument, NULL, 'a' }, { "xds-plaintext", no_argument, NULL, 'P' },
		{ "xds-root-cert", required_argument, NULL, 'r' }, { "xds-server-name", required_argument, NULL, 'n' },
		{ "xds-token", required_argument, NULL, 't' },	 { "local-config", required_argument, NULL, 'l' },
		{ "cgroup", required_argument, NULL, 'c' },	 { "pin-dir", required_argument, NULL, 'p' },
		{ "admin-address", required_argument, NULL, 'A' }, { "enroll-all", no_argument, NULL, 'E' },
		{ "no-accelerate", no_argument, NULL, 'N' },	 { "dns-proxy", required_argument, NULL, 'd' },
		{ "record", required_argument, NULL, 'R' },	 { "log-level", required_argument, NULL, 'L' },
		{ "map-capacity", required_argument, NULL, 'M' },
		{ "cni-conf-dir", required_argument, NULL, 1001 }, { "cni-bin-dir", required_argument, NULL, 1002 },
		{ "cni-plugin", required_argument, NULL, 1003 },
		{ "kube-api", required_argument, NULL, 'K' },	 { "kube-token", required_argument, NULL, 'T' },
		{ "kube-ca", required_argument, NULL, 'C' },	 { "cni-socket", required_argument, NULL, 'S' },
		{ "proc-root", required_argument, NULL, 'O' },	 { "enroll-system-namespaces", no_argument, NULL, 'Y' },
		{ "node-addresses", required_argument, NULL, 1004 },
		{ "metrics-address", required_argument, NULL, 1005 }, { "access-log", required_argument, NULL, 1006 },
		{ "no-telemetry", no_argument, NULL, 1007 },
		{ "help", no_argument, NULL, 'h' },		 { 0 },
	};
	const char *token = NULL, *xds_flag = NULL; /* an explicit --xds-* or --record, refused with a local config */
	int opt, index = 0;

	*o = (struct run_options){
		.xds_address = env_or("XDS_ADDRESS", DEFAULT_XDS_ADDRESS),
		.xds_root_cert = env_or("XDS_ROOT_CA", DEFAULT_ROOT_CERT),
		.local_config = env_or("LOCAL_XDS_PATH", NULL),
		.pin_dir = SM_DEFAULT_PIN_DIR,
		.admin_address = DEFAULT_ADMIN_ADDRESS,
		.metrics_address = DEFAULT_METRICS_ADDRESS,
		.telemetry = true,
		.access_log = true,
		.log_json = strcmp(env_or("LOG_FORMAT", ""), "json") == 0,
		.accelerate = true,
		.kube_watch = env_or("KUBERNETES_SERVICE_HOST", NULL) != NULL,
		.cni_socket = DEFAULT_CNI_SOCKET,
		.proc_root = DEFAULT_PROC_ROOT,
		.node_addresses = AGENT_NODE_ADDRESSES_DEFAULT,
	};
	while ((opt = getopt_long(argc, argv, "h", options, &index)) != -1) {
		if (opt > 0 && strchr("aPrntR", opt))
			xds_flag = options[index].name;
		switch (opt) {
		case 'a': o->xds_address = optarg; break;
		case 'P': o->xds_plaintext = true; break;
		case 'r': o->xds_root_cert = optarg; break;
		case 'n': o->xds_server_name = optarg; break;
		case 't': token = optarg; break;
		case 'l': o->local_config = optarg; break;
		case 'c': o->cgroup = optarg; break;
		case 'p': o->pin_dir = optarg; break;
		case 'A': o->admin_address = optarg; break;
		case 'E': o->enroll_all = true; break;
		case 'N': o->accelerate = false; break;
		case 'd': o->dns_proxy = optarg; break;
		case 'R': o->record = optarg; break;
		case 1001: o->cni_conf_dir = optarg; break;
		case 1002: o->cni_bin_dir = optarg; break;
		case 1003: o->cni_plugin = optarg; break;
		case 1004: o->node_addresses = optarg; break;
		case 1005: o->metrics_address = optarg; break;
		case 1006:
			if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
				fprintf(stderr, "sockmesh run: --access-log '%s' is not on or off\n", optarg);
				return 2;
			}
			o->access_log = strcmp(optarg, "on") == 0;
			break;
		case 1007: o->telemetry = false; break;
		case 'K': o->kube_api = optarg; o->kube_watch = true; break;
		case 'T': o->kube_token = optarg; break;
		case 'C': o->kube_ca = optarg; break;
		case 'S': o->cni_socket = optarg; break;
		case 'O': o->proc_root = optarg; break;
		case 'Y': o->enroll_system_namespaces = true; break;
		case 'M':
			if (parse_capacity(optarg, o->capacity)) {
				fprintf(stderr,
					"sockmesh run: --map-capacity '%s' is not MAP=N with MAP one of frontends, "
					"services, endpoints or backends and N from 1 to %u (the kernel's limit)\n",
					optarg, SM_DATAPATH_MAX_CAPACITY);
				return 2;
			}
			break;
		case 'L':
			if (log_set_level_name(optarg)) {
				fprintf(stderr, "sockmesh run: unknown log level '%s'\n", optarg);
				return 2;
			}
			break;
		case 'h': run_usage(stdout); return 1;
		default: run_usage(stderr); return 2;
		}
	}
	if (optind != argc || !o->cgroup) {
		fprintf(stderr, "sockmesh run: %s\n\n", o->cgroup ? "unexpected arguments" : "--cgroup is required");
		run_usage(stderr);
		return 2;
	}
	/* the environment's XDS_ADDRESS and XDS_ROOT_CA (set by charts for every mode) are ignored then */
	if (o->local_config && xds_flag) {
		fprintf(stderr, "sockmesh run: --%s is for xDS; with --local-config (or LOCAL_XDS_PATH) the config comes "
				"from the file%s\n", xds_flag,
			strcmp(xds_flag, "record") == 0 ? " (sockmesh convert FILE OUT makes it a recorded stream)" : "");
		return 2;
	}
	/* the node's CNI config is changed only when the operator names its directory */
	if ((o->cni_bin_dir || o->cni_plugin) && !o->cni_conf_dir) {
		fprintf(stderr, "sockmesh run: --%s installs sockmesh-cni, which needs --cni-conf-dir\n",
			o->cni_bin_dir ? "cni-bin-dir" : "cni-plugin");
		return 2;
	}
	if (!o->cni_bin_dir)
		o->cni_bin_dir = CNI_DEFAULT_BIN_DIR;
	o->xds_token = token ? (token[0] ? token : NULL) : (o->xds_plaintext ? NULL : DEFAULT_TOKEN);
	if (o->xds_plaintext)
		o->xds_root_cert = NULL;
	return 0;
}

/* ---- the datapath's knobs ---- */

static int parse_dns_proxy(const char *text, struct sm_config *config)
{
	struct sockaddr_storage addr;
	const struct sockaddr_in *in = (const struct sockaddr_in *)&addr;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr;

	if (parse_ip_port(text, &addr))
		return -EINVAL;
	if (addr.ss_family == AF_INET6) {
		if (!in6->sin6_port)
			return -EINVAL;
		memcpy(config->dns_addr6, &in6->sin6_addr, 16);
		config->dns_port = in6->sin6_port;
		config->flags |= SM_CONFIG_DNS6;
	} else {
		if (!in->sin_port)
			return -EINVAL;
		config->dns_addr4 = in->sin_addr.s_addr;
		config->dns_port = in->sin_port;
		config->flags |= SM_CONFIG_DNS4;
	}
	return 0;
}

static int make_knobs(const struct run_options *options, struct sm_config *config, char *err, size_t size)
{
	*config = (struct sm_config){ 0 };
	if (options->enroll_all)
		config->flags |= SM_CONFIG_ENROLL_ALL;
	if (options->accelerate)
		config->flags |= SM_CONFIG_ACCELERATE;
	if (options->telemetry)
		config->flags |= SM_CONFIG_TELEMETRY;
	if (options->dns_proxy && parse_dns_proxy(options->dns_proxy, config)) {
		snprintf(err, size, "--dns-proxy '%s' is not IP:PORT or [IPv6]:PORT with a port", options->dns_proxy);
		return -EINVAL;
	}
	return 0;
}

static int set_knobs(struct agent *agent)
{
	int err = sm_datapath_set_config(agent->dp, &agent->knobs);

	if (err)
		log_msg(LOG_ERROR, "writing the datapath's config: %s", strerror(-err));
	return err;
}

/* ---- applying ---- */

/* The signal by which a thread that found the maps unlike the model stops the agent for a restart. */
#define SIGNAL_RESTART_TO_ADOPT SIGUSR1
/* The signal by which a thread that scheduled a retry wakes the main thread, which then waits for that retry. */
#define SIGNAL_RETRY_SCHEDULED SIGUSR2
/* The longest a split lets readers have the model between two runs: a full backlog of connection events
 * (65,536, about a microsecond each) is named in under 100 ms; a run takes from milliseconds to seconds. */
#define READERS_TURN_MS 100

void agent_apply_failed(void *ctx, int err)
{
	(void)ctx;
	if (err != -EIO)
		return;
	log_msg(LOG_ERROR, "the maps differ from the model: a map write failed and could not be undone; "
		"stopping, so that the next start adopts the maps as they are");
	kill(getpid(), SIGNAL_RESTART_TO_ADOPT);
}

/* This node's addresses, which may accelerate (under the model lock): after a batch changed this node's
 * workloads, and when a write that failed is due again (agent/local_addrs.h). */
static void write_local_addresses(struct agent *agent)
{
	unsigned failures = agent->local_addrs.failures;
	int ret = local_addrs_sync(&agent->local_addrs, agent->model, agent->dp, agent_monotonic_ms());

	if (ret) {
		log_msg(LOG_WARN, "writing this node's workload addresses (sm_local_addrs): %s; tried again in %u s",
			strerror(-ret), agent->local_addrs.retry_ms / 1000);
		kill(getpid(), SIGNAL_RETRY_SCHEDULED); /* the xDS thread's apply: the main thread may wait for no retry */
	} else if (failures && !agent->local_addrs.failures) {
		log_msg(LOG_INFO, "this node's workload addresses written (sm_local_addrs) after %u failed %s", failures,
			failures == 1 ? "try" : "tries");
	}
}

/* The wait until the next retry the main thread makes (wait_for_signal's timeout; 0: none waiting). */
static unsigned next_retry_ms(struct agent *agent)
{
	unsigned config = local_config_retry_ms(agent), addrs;

	model_gate_lock(&agent->model_gate);
	addrs = local_addrs_retry_in_ms(&agent->local_addrs, agent_monotonic_ms());
	model_gate_unlock(&agent->model_gate);
	return !config ? addrs : !addrs || config < addrs ? config : addrs;
}

static void retry_what_is_due(struct agent *agent)
{
	if (local_config_retry_due(agent))
		local_config_reload(agent);
	model_gate_lock(&agent->model_gate);
	if (local_addrs_retry_due(&agent->local_addrs, agent_monotonic_ms()))
		write_local_addresses(agent);
	model_gate_unlock(&agent->model_gate);
}

/* Between two runs of a split (a response that does not fit as one batch): the admin endpoint's requests and
 * the events threads' backlogs, which wait for the model, have it first, so that a split of thousands of
 * policies (minutes) neither holds up /metrics nor fills the backlogs until they drop events. */
static void let_readers_in(void *ctx)
{
	struct agent *agent = ctx;

	model_gate_yield(&agent->model_gate, READERS_TURN_MS);
}

/* After each response (under the model lock): this node's addresses; once the first Address response is
 * applied, telemetry names connections (the Authorization response may still be split for minutes), and a
 * layout migration switches over to the new maps it filled. */
void agent_after_apply(void *ctx, const char *type_url)
{
	struct agent *agent = ctx;
	char err[256];

	write_local_addresses(agent);
	agent_authz_after_apply(agent->authz, agent->model, type_url);
	if (strcmp(type_url, SM_TYPE_URL_ADDRESS) != 0)
		return;
	agent_telemetry_model_synced(agent->telemetry);
	if (!agent->datapath_committed) {
		if (sm_datapath_commit(agent->dp, err, sizeof(err)))
			log_msg(LOG_ERROR, "switching to the new datapath layout: %s", err);
		else {
			log_msg(LOG_INFO, "the new datapath layout is filled and attached");
			agent->datapath_committed = true;
		}
	}
}

bool agent_ready(struct agent *agent, char *why, size_t size)
{
	struct sm_xds_stats stats = { 0 };

	char detached[256];

	if (!agent->datapath_committed) {
		snprintf(why, size, "not ready: the datapath waits for its first full config");
		return false;
	}
	if (sm_datapath_attached(agent->dp, detached, sizeof(detached))) {
		snprintf(why, size, "not ready: the datapath is not attached: %s", detached);
		return false;
	}
	if (agent->options.local_config) {
		if (!agent->local_config_applied)
			snprintf(why, size, "not ready: the local config is not applied");
		return agent->local_config_applied;
	}
	sm_xds_client_stats(agent->xds, &stats);
	if (!stats.ready)
		snprintf(why, size, "not ready: waiting for the first response of each type from %s%s%s",
			 agent->options.xds_address, stats.last_error[0] ? ": " : "", stats.last_error);
	return stats.ready;
}

/* ---- start and stop ---- */

/* The maps as the last agent left them: ids are kept, and nothing unchanged is rewritten. */
static int adopt_maps(struct agent *agent)
{
	size_t counts[SM_MAP_COUNT];
	int ret = adopt_pinned_maps(agent->dp, agent->model, counts);

	if (!ret)
		log_msg(LOG_INFO, "adopted the pinned maps: %zu services, %zu backends, %zu endpoints, %zu frontends",
			counts[SM_MAP_SERVICES], counts[SM_MAP_BACKENDS], counts[SM_MAP_ENDPOINTS], counts[SM_MAP_FRONTENDS]);
	return ret;
}

/* Authorization: the model's check, the events' logger, and in --enroll-all mode the agent's own network
 * namespace guarded (the others are guarded as they are enrolled). */
static int start_authz(struct agent *agent)
{
	char err[512];
	uint64_t cookie;
	int fd, ret;

	if (!agent->options.enroll_all && !agent->options.kube_watch)
		agent_authz_guard_enrolled(agent->authz);
	ret = agent_authz_start(agent->authz, agent->dp, agent->model, &agent->model_gate, err, sizeof(err));

	if (ret) {
		log_msg(LOG_ERROR, "authorization: %s", err);
		return ret;
	}
	sm_model_set_authz_check(agent->model, agent_authz_check, agent->authz);
	if (!agent->options.enroll_all)
		return 0;
	fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	ret = fd < 0 ? -errno : sm_netns_cookie_of(fd, &cookie);
	if (!ret)
		ret = sm_datapath_guard_netns(agent->dp, fd, cookie, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "this network namespace: %s", strerror(-ret));
	if (fd >= 0)
		close(fd);
	if (ret)
		log_msg(LOG_ERROR, "authorization: guarding the agent's own network namespace: %s", err);
	return ret;
}

static int open_layers(struct agent *agent)
{
	struct sm_datapath_options dp_options = { .pin_dir = agent->options.pin_dir,
						  .cgroup = agent->options.cgroup,
						  .capacity = agent->options.capacity,
						  .release_slots = !agent->options.telemetry };
	struct sm_model_options model_options = { .node_name = agent->node.node_name };
	char err[512];
	int ret;

	ret = sm_datapath_open(&dp_options, &agent->dp, err, sizeof(err));
	if (ret) {
		log_msg(LOG_ERROR, "datapath: %s", err);
		return ret;
	}
	agent->datapath_committed = !sm_datapath_migrating(agent->dp);
	log_msg(LOG_INFO, "datapath %s at %s, attached to %s", sm_datapath_migrating(agent->dp) ? "loaded beside an older layout"
				: sm_datapath_adopted(agent->dp) ? "adopted" : "installed",
		agent->options.pin_dir, agent->options.cgroup);
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		if ((ret = sm_datapath_capacity(agent->dp, map, &model_options.capacity[map])))
			return ret;
	}
	ret = sm_model_new(&model_options, &agent->model);
	if (!ret)
		sm_model_set_between_runs(agent->model, let_readers_in, agent);
	if (!ret && sm_datapath_adopted(agent->dp) && !sm_datapath_migrating(agent->dp))
		ret = adopt_maps(agent);
	if (ret) {
		log_msg(LOG_ERROR, "the workload model: %s", strerror(-ret));
		return ret;
	}
	/* before authorization's thread, whose denials it counts */
	if (agent->telemetry &&
	    (ret = agent_telemetry_start(agent->telemetry, agent->dp, agent->model, &agent->model_gate, err, sizeof(err)))) {
		log_msg(LOG_ERROR, "telemetry: %s", err);
		return ret;
	}
	return start_authz(agent);
}

/* Created before the admin endpoint serves (which reads it), started after. */
static int create_xds(struct agent *agent)
{
	struct sm_xds_options options = {
		.address = agent->options.xds_address,
		.plaintext = agent->options.xds_plaintext,
		.root_cert = agent->options.xds_root_cert,
		.server_name = agent->options.xds_server_name,
		.token_path = agent->options.xds_token,
		.record_path = agent->options.record,
		.node = &agent->node,
		.model = agent->model,
		.writer = sm_datapath_writer(agent->dp),
		.model_lock = &agent->model_gate.lock,
		.after_apply = agent_after_apply,
		.after_apply_ctx = agent,
		.apply_failed = agent_apply_failed,
		.apply_failed_ctx = agent,
		.log = log_xds,
	};
	char err[512];
	int ret = sm_xds_client_new(&options, &agent->xds, err, sizeof(err));

	if (ret)
		log_msg(LOG_ERROR, "xDS client: %s", err);
	return ret;
}

static int start_xds(struct agent *agent)
{
	char id[512];

	sm_xds_node_id(&agent->node, id, sizeof(id));
	log_msg(LOG_INFO, "connecting to %s as %s", agent->options.xds_address, id);
	return sm_xds_client_start(agent->xds);
}

/* The next signal; 0 when timeout_ms (0: none) passed first. */
static int wait_for_signal(unsigned timeout_ms)
{
	struct timespec timeout = { .tv_sec = timeout_ms / 1000, .tv_nsec = (long)(timeout_ms % 1000) * 1000000 };
	sigset_t signals;
	int sig;

	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	sigaddset(&signals, SIGNAL_RESTART_TO_ADOPT);
	sigaddset(&signals, SIGNAL_RETRY_SCHEDULED);
	do
		sig = sigtimedwait(&signals, NULL, timeout_ms ? &timeout : NULL);
	while (sig < 0 && errno == EINTR);
	return sig < 0 ? 0 : sig;
}

/* A CA file gRPC would reject on every connect (not PEM, not a certificate) is refused at start. */
static int check_root_cert(const char *path, char *err, size_t size)
{
	FILE *file = fopen(path, "r");
	X509 *cert;

	if (!file) {
		snprintf(err, size, "--xds-root-cert %s: %s", path, strerror(errno));
		return -errno;
	}
	cert = PEM_read_X509(file, NULL, NULL, NULL);
	fclose(file);
	if (!cert) {
		snprintf(err, size, "--xds-root-cert %s is not a PEM certificate (-----BEGIN CERTIFICATE-----)", path);
		return -EINVAL;
	}
	X509_free(cert);
	return 0;
}

/* The record file is opened for append by the xDS client; it must open before the kernel is touched. */
static int check_record(const char *path, char *err, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

	if (fd < 0) {
		snprintf(err, size, "--record %s: %s", path, strerror(errno));
		return -errno;
	}
	close(fd);
	return 0;
}

/* The enroller's inputs: NODE_NAME, and the files and folders it reads later. */
static int check_kube(const struct agent *agent, char *err, size_t size)
{
	const struct run_options *o = &agent->options;
	const char *files[][2] = { { "--kube-token", o->kube_token }, { "--kube-ca", o->kube_ca } };

	if (!agent->node.node_name || !agent->node.node_name[0]) {
		snprintf(err, size, "the Kubernetes watcher (%s) needs NODE_NAME: the pods of which node to enroll",
			 o->kube_api ? "--kube-api" : "KUBERNETES_SERVICE_HOST is set");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (files[i][1] && files[i][1][0] && access(files[i][1], R_OK)) {
			snprintf(err, size, "%s %s: %s", files[i][0], files[i][1], strerror(errno));
			return -errno;
		}
	}
	if (access(o->proc_root, R_OK | X_OK)) {
		snprintf(err, size, "--proc-root %s: %s", o->proc_root, strerror(errno));
		return -errno;
	}
	if (o->cni_socket[0] != '/') {
		snprintf(err, size, "--cni-socket %s: not an absolute path", o->cni_socket);
		return -EINVAL;
	}
	return 0;
}

static int start_enroller(struct agent *agent)
{
	const struct run_options *o = &agent->options;
	struct enroller_options options = {
		.api_url = o->kube_api, .token_file = o->kube_token, .ca_file = o->kube_ca,
		.node_name = agent->node.node_name, .agent_namespace = getenv("POD_NAMESPACE"),
		.cni_socket = o->cni_socket, .proc_root = o->proc_root,
		.system_namespaces = o->enroll_system_namespaces,
	};
	char err[512];
	struct enroller *enroller = NULL;
	int ret = enroller_start(&options, agent->dp, &enroller, err, sizeof(err));

	if (ret) {
		log_msg(LOG_ERROR, "%s", err);
		return ret;
	}
	atomic_store(&agent->enroller, enroller); /* the admin endpoint reads it from here on */
	agent_netns_set_enroller(enroller);	  /* the reaper and telemetry's flush find pods' namespaces there */
	log_msg(LOG_INFO, "enrolling the labelled pods of node %s; sockmesh-cni served on %s", options.node_name,
			o->cni_socket);
	return 0;
}

/*
 * Everything that can fail on the operator's input or on another owner, before the kernel is touched:
 * a start that fails here changes nothing (an agent already serving the pin directory keeps its
 * programs, maps and knobs).
 */
static int prepare(struct agent *agent, struct local_config *local, char *err, size_t size)
{
	const struct run_options *o = &agent->options;
	struct sm_datapath_options dp_options = { .pin_dir = o->pin_dir, .cgroup = o->cgroup, .capacity = o->capacity };
	struct sockaddr_storage admin, metrics;
	int ret = sm_datapath_check_options(&dp_options, err, size);

	if (!ret)
		ret = make_knobs(o, &agent->knobs, err, size);
	if (!ret && o->xds_root_cert && !o->local_config)
		ret = check_root_cert(o->xds_root_cert, err, size);
	if (!ret && o->record && !o->local_config)
		ret = check_record(o->record, err, size);
	if (!ret)
		ret = agent_authz_new(o->node_addresses, &agent->authz, err, size);
	if (!ret && o->telemetry) {
		ret = agent_telemetry_new(o->access_log, o->log_json ? SM_TEL_LOG_JSON : SM_TEL_LOG_PLAIN, &agent->telemetry,
					  err, size);
		if (!ret)
			agent_authz_set_denied_hook(agent->authz, agent_telemetry_denied, agent->telemetry,
						    o->access_log);
	}
	if (!ret && o->local_config) {
		ret = local_config_read(o->local_config, o->capacity, agent->node.node_name, agent->authz, local);
		if (ret)
			snprintf(err, size, "--local-config %s: %s (the reason is above)", o->local_config, strerror(-ret));
	}
	if (!ret)
		ret = cni_install_check(agent, err, size);
	if (!ret && o->kube_watch)
		ret = check_kube(agent, err, size);
	if (!ret && parse_ip_port(o->admin_address, &admin)) {
		snprintf(err, size, "admin address '%s' is not IP:PORT or [IPv6]:PORT", o->admin_address);
		ret = -EINVAL;
	}
	if (!ret && o->telemetry && parse_ip_port(o->metrics_address, &metrics)) {
		snprintf(err, size, "--metrics-address '%s' is not IP:PORT or [IPv6]:PORT", o->metrics_address);
		ret = -EINVAL;
	}
	/* the operator's typos first, then the owner: a second agent is told whose the pin directory is */
	if (!ret)
		ret = sm_pin_dir_lock(o->pin_dir, &agent->lock, err, size);
	if (!ret)
		ret = admin_bind("admin", o->admin_address, &agent->admin_fd, agent->admin_bound, sizeof(agent->admin_bound),
				 err, size);
	if (!ret && o->telemetry)
		ret = admin_bind("metrics", o->metrics_address, &agent->metrics_fd, agent->metrics_bound,
				 sizeof(agent->metrics_bound), err, size);
	return ret;
}

int cmd_run(int argc, char **argv)
{
	struct agent agent = { .model_gate = MODEL_GATE_INITIALIZER, .admin_fd = -1, .metrics_fd = -1 };
	struct local_config first_config = { 0 }; /* local-config mode: the file, read before the kernel is touched */
	struct admin *admin = NULL, *metrics = NULL;
	sigset_t signals;
	bool restart_to_adopt = false;
	char err[512];
	int ret;

	ret = parse_run_options(argc, argv, &agent.options);
	if (ret)
		return ret == 1 ? 0 : ret;
	log_capture_libraries();
	/* Threads started from here on inherit these blocked; the main thread takes them with sigwait. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	sigaddset(&signals, SIGNAL_RESTART_TO_ADOPT);
	sigaddset(&signals, SIGNAL_RETRY_SCHEDULED);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	log_msg(LOG_INFO, "sockmesh %s starting", SOCKMESH_VERSION);
	ret = sm_xds_node_from_env(&agent.node, environ);
	if (!ret && sm_xds_node_missing(&agent.node, err, sizeof(err)))
		log_msg(LOG_WARN, "node identity: %s not set: istiod cannot tell which pod this agent is", err);
	if (!ret && (ret = prepare(&agent, &first_config, err, sizeof(err))))
		log_msg(LOG_ERROR, "%s", err);
	/* From here on the kernel is touched: a failure undoes what this start made. */
	if (!ret)
		ret = open_layers(&agent);
	if (!ret && !agent.options.local_config)
		ret = create_xds(&agent);
	if (!ret) {
		ret = admin_start(&agent, agent.admin_fd, &admin, err, sizeof(err));
		agent.admin_fd = -1; /* libmicrohttpd's now, closed with it */
		if (ret)
			log_msg(LOG_ERROR, "%s", err);
	}
	if (!ret && agent.telemetry) {
		ret = metrics_start(&agent, agent.metrics_fd, &metrics, err, sizeof(err));
		agent.metrics_fd = -1;
		if (ret)
			log_msg(LOG_ERROR, "%s", err);
	}
	if (!ret)
		ret = set_knobs(&agent);
	if (!ret && agent.options.kube_watch)
		ret = start_enroller(&agent);
	if (!ret)
		ret = agent.options.local_config ? local_config_load(&agent, &first_config) : start_xds(&agent);
	if (!ret && agent.options.local_config)
		local_config_watch_start(&agent); /* without it, SIGHUP still reloads */
	if (!ret)
		ret = cni_install_start(&agent);
	if (!ret) {
		log_msg(LOG_INFO, "serving; admin endpoint on %s, metrics on %s", agent.admin_bound,
			agent.telemetry ? agent.metrics_bound : "(none: --no-telemetry)");
		int sig;
		/* no signal: a retry is due (a local config reload that ran out of memory, a failed write) */
		while (!(sig = wait_for_signal(next_retry_ms(&agent))) || sig == SIGHUP || sig == SIGNAL_RETRY_SCHEDULED) {
			if (!sig)
				retry_what_is_due(&agent);
			else if (sig == SIGNAL_RETRY_SCHEDULED)
				continue; /* waits anew, for it */
			else if (agent.options.local_config)
				local_config_reload(&agent);
			else
				log_msg(LOG_INFO, "SIGHUP: nothing to reload, the config comes from istiod");
		}
		if (sig == SIGNAL_RESTART_TO_ADOPT)
			restart_to_adopt = true; /* said why above; exits 1, the datapath closed, not abandoned */
		else
			log_msg(LOG_INFO, "%s: stopping; the datapath stays pinned and serving", strsignal(sig));
	}

	if (agent.model) /* first: a split of thousands of policies takes minutes, past a pod's grace period */
		sm_model_stop_splits(agent.model);
	admin_stop(admin); /* then: its handlers read the client and the model, which a split holds */
	admin_stop(metrics);
	local_config_stop(&agent);
	agent_netns_set_enroller(NULL);
	enroller_stop(atomic_load(&agent.enroller)); /* before the datapath closes: it writes sm_enrolled */
	cni_install_stop(&agent);
	sm_xds_client_free(agent.xds);
	agent_authz_free(agent.authz); /* after the last apply; its thread calls telemetry's denial hook */
	agent_telemetry_free(agent.telemetry); /* before the datapath closes: it reads its events */
	if (ret)
		sm_datapath_abandon(agent.dp);
	else
		sm_datapath_close(agent.dp);
	sm_model_free(agent.model);
	sm_xds_node_clear(&agent.node);
	sm_pin_dir_unlock(agent.lock); /* last: the datapath is left as it should be */
	if (agent.admin_fd >= 0)
		close(agent.admin_fd);
	if (agent.metrics_fd >= 0)
		close(agent.metrics_fd);
	local_config_free(&first_config);
	return ret || restart_to_adopt ? 1 : 0;
}
