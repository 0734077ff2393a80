/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control plane at scale, on the real pieces: a generated full push (100,000 workloads, 10,000
 * services) from a recorded stream through the mock istiod and the real gRPC client into real BPF
 * maps, against the limit of writing the same entries with raw bpf_map_update_elem calls (one at a
 * time, and in batches) in a tight loop. Then single-workload updates at that scale into the real
 * maps, and the agent's memory (RSS, peak RSS, BPF map memory) at 1k, 10k and 100k workloads.
 *
 * Runs in its own network namespace, cgroup and pin directory, removed at the end.
 * Usage: controlplane_bench MOCK_SERVER SOCKMESH [WORKLOADS [SERVICES [UPDATES]]]
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bench/snapshot.h"
#include "datapath/datapath.h"
#include "test/cgroup2.h"
#include "xds/xds.h"

static struct cgroup2 cgroup2; /* the cgroup2 mount, found or mounted for the run */
static char cgroup[PATH_MAX + 64], pin_dir[128];
static const char *mock_path, *sockmesh_path;
static pid_t children[2]; /* the mock server and the agent, while they run */

static void cleanup(void)
{
	char err[256];

	for (int i = 0; i < 2; i++) {
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
		}
	}
	sm_datapath_uninstall(pin_dir, err, sizeof(err));
	rmdir(cgroup);
	cgroup2_close(&cgroup2);
}

static void on_signal(int sig)
{
	(void)sig;
	exit(1); /* runs cleanup */
}

static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

static void setup_world(void)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	int fd, err;

	if (unshare(CLONE_NEWNET) || (fd = socket(AF_INET, SOCK_DGRAM, 0)) < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr))
		exit(fprintf(stderr, "controlplane_bench: a network namespace needs root\n") > 0);
	ifr.ifr_flags |= IFF_UP;
	ioctl(fd, SIOCSIFFLAGS, &ifr);
	close(fd);
	if ((err = cgroup2_open(&cgroup2)))
		exit(fprintf(stderr, "controlplane_bench: finding or mounting cgroup2: %s\n", strerror(-err)) > 0);
	snprintf(cgroup, sizeof(cgroup), "%s/sockmesh-bench-%d", cgroup2.path, (int)getpid());
	snprintf(pin_dir, sizeof(pin_dir), "/sys/fs/bpf/sockmesh-bench-%d", (int)getpid());
	if (mkdir(cgroup, 0755)) {
		fprintf(stderr, "controlplane_bench: %s: %s\n", cgroup, strerror(errno));
		cgroup2_close(&cgroup2);
		exit(1);
	}
	atexit(cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	libbpf_set_print(quiet);
}

static void write_stream(const char *path, int workloads, int services)
{
	int err = write_snapshot_stream(path, workloads, services);

	if (err)
		exit(fprintf(stderr, "controlplane_bench: writing %s: %s\n", path, strerror(-err)) > 0);
}

static pid_t start_mock(const char *stream, int *port)
{
	char port_file[160];
	pid_t pid;

	snprintf(port_file, sizeof(port_file), "%s.port", stream);
	unlink(port_file);
	pid = fork();
	if (pid == 0) {
		freopen("/dev/null", "w", stdout);
		execl(mock_path, mock_path, "--stream", stream, "--port-file", port_file, (char *)NULL);
		_exit(127);
	}
	children[0] = pid;
	for (int i = 0; i < 1000; i++) {
		FILE *f = fopen(port_file, "r");
		if (f && fscanf(f, "%d", port) == 1) {
			fclose(f);
			return pid;
		}
		if (f)
			fclose(f);
		sleep_ms(10);
	}
	exit(fprintf(stderr, "controlplane_bench: the mock server did not start\n") > 0);
}

static void stop(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	for (int i = 0; i < 2; i++) {
		if (children[i] == pid)
			children[i] = 0;
	}
}

/* ---- the raw limit: the same entries, written with nothing but bpf() ---- */

struct entries {
	uint8_t *keys, *values;
	size_t n;
};

struct collect_ctx {
	struct entries *entries;
	enum sm_map_id map;
};

static int collect_entry(void *ctx, const void *key, const void *value)
{
	struct collect_ctx *c = ctx;
	struct entries *e = c->entries;
	size_t ks = sm_map_key_size(c->map), vs = sm_map_value_size(c->map);

	memcpy(e->keys + e->n * ks, key, ks);
	memcpy(e->values + e->n * vs, value, vs);
	e->n++;
	return 0;
}

static double raw_writes(const struct sm_image *image, bool batch, size_t *calls)
{
	double elapsed = 0;

	*calls = 0;
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		size_t count = sm_image_count(image, map), ks = sm_map_key_size(map), vs = sm_map_value_size(map);
		struct entries e = { .keys = malloc(count * ks + 1), .values = malloc(count * vs + 1) };
		struct collect_ctx ctx = { .entries = &e, .map = map };
		LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);
		int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "bench_raw", (__u32)ks, (__u32)vs, (__u32)count + 1, &opts);

		sm_image_for_each(image, map, collect_entry, &ctx);
		double start = now_seconds();
		for (size_t i = 0; i < e.n;) {
			if (batch) {
				__u32 n = (__u32)(e.n - i < 1024 ? e.n - i : 1024);
				LIBBPF_OPTS(bpf_map_batch_opts, bopts);
				bpf_map_update_batch(fd, e.keys + i * ks, e.values + i * vs, &n, &bopts);
				i += n;
			} else {
				bpf_map_update_elem(fd, e.keys + i * ks, e.values + i * vs, BPF_ANY);
				i++;
			}
			(*calls)++;
		}
		elapsed += now_seconds() - start;
		close(fd);
		free(e.keys);
		free(e.values);
	}
	return elapsed;
}

/* ---- the full push through gRPC into the datapath's maps ---- */

static int compare(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void full_push(int workloads, int services, int updates)
{
	char stream[128], err[512];
	int port;
	static char *const env[] = { "POD_NAME=bench", "POD_NAMESPACE=istio-system", "INSTANCE_IP=127.0.0.1",
				     "NODE_NAME=node-7", NULL };
	struct sm_xds_node node = { 0 };
	struct sm_datapath *dp;
	struct sm_model *model;
	struct sm_model_options model_options = { .node_name = "node-7" };
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

	snprintf(stream, sizeof(stream), "/tmp/sockmesh-bench-%d.xds", (int)getpid());
	write_stream(stream, workloads, services);
	pid_t mock = start_mock(stream, &port);

	struct sm_datapath_options dp_options = { .pin_dir = pin_dir, .cgroup = cgroup };
	if (sm_datapath_open(&dp_options, &dp, err, sizeof(err)))
		exit(fprintf(stderr, "controlplane_bench: %s\n", err) > 0);
	for (int m = 0; m < SM_MAP_COUNT; m++)
		sm_datapath_capacity(dp, m, &model_options.capacity[m]);
	sm_xds_node_from_env(&node, env);
	sm_model_new(&model_options, &model);

	char address[32];
	snprintf(address, sizeof(address), "127.0.0.1:%d", port);
	struct sm_xds_options options = { .address = address, .plaintext = true, .node = &node, .model = model,
					  .writer = sm_datapath_writer(dp), .model_lock = &lock };
	struct sm_xds_client *client;
	struct sm_xds_stats stats;
	if (sm_xds_client_new(&options, &client, err, sizeof(err)))
		exit(fprintf(stderr, "controlplane_bench: %s\n", err) > 0);
	double start = now_seconds();
	sm_xds_client_start(client);
	do {
		sleep_ms(1);
		sm_xds_client_stats(client, &stats);
	} while (!stats.ready && now_seconds() - start < 120);
	double full = now_seconds() - start;

	size_t single_calls, batch_calls, entries = 0;
	pthread_mutex_lock(&lock);
	const struct sm_image *image = sm_model_image(model);
	for (int m = 0; m < SM_MAP_COUNT; m++)
		entries += sm_image_count(image, m);
	double raw_single = raw_writes(image, false, &single_calls);
	double raw_batch = raw_writes(image, true, &batch_calls);

	/* single-workload updates at this scale, into the real maps */
	double *latency = calloc((size_t)updates, sizeof(double));
	for (int u = 0; u < updates; u++) {
		size_t len;
		int i = (int)(((unsigned)u * 2654435761u) % (unsigned)workloads);
		uint8_t *update = make_update(i, services, u, &len);
		struct sm_rejections rejections = { 0 };
		ProtobufCMessage *response;
		double t0 = now_seconds();
		sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, update, len, &response,
			     err, sizeof(err));
		sm_model_apply(model, (void *)response, sm_datapath_writer(dp), &rejections);
		latency[u] = now_seconds() - t0;
		protobuf_c_message_free_unpacked(response, NULL);
		sm_rejections_clear(&rejections);
		free(update);
	}
	pthread_mutex_unlock(&lock);
	qsort(latency, (size_t)updates, sizeof(double), compare);

	printf("full push: %d workloads, %d services -> %zu map entries, ready after %.3f s (gRPC, decode, apply, "
	       "writes, ACK), of which decode+apply+writes %.3f s\n",
	       workloads, services, entries, full, stats.apply.sum);
	printf("  raw limit, one bpf_map_update_elem per entry: %.3f s (%zu calls)  -> full push = %.2fx\n", raw_single,
	       single_calls, full / raw_single);
	printf("  raw limit, bpf_map_update_batch of 1024:      %.3f s (%zu calls)  -> full push = %.2fx\n", raw_batch,
	       batch_calls, full / raw_batch);
	printf("single-workload update into the real maps at this scale: p50 %.1f us, p99 %.1f us (target < 20 us)\n",
	       latency[updates / 2] * 1e6, latency[updates * 99 / 100] * 1e6);
	free(latency);
	sm_xds_client_free(client);
	sm_model_free(model);
	sm_xds_node_clear(&node);
	sm_datapath_close(dp);
	sm_datapath_uninstall(pin_dir, err, sizeof(err));
	stop(mock);
	unlink(stream);
}

/* ---- the agent's memory ---- */

static bool agent_ready(int admin_port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port) };
	char reply[64] = "";
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ready = false;

	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
		const char *request = "GET /healthz/ready HTTP/1.0\r\n\r\n";
		if (write(fd, request, strlen(request)) > 0 && read(fd, reply, sizeof(reply) - 1) > 0)
			ready = strstr(reply, " 200 ") != NULL;
	}
	close(fd);
	return ready;
}

static long status_kib(pid_t pid, const char *field)
{
	char path[64], line[256];
	long value = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, field, strlen(field)) == 0)
			value = strtol(line + strlen(field) + 1, NULL, 10);
	}
	if (f)
		fclose(f);
	return value;
}

/* What the kernel charges for the datapath's maps (fdinfo "memlock"), in KiB. */
static long map_memory_kib(void)
{
	static const char *const maps[] = { "sm_frontends", "sm_services", "sm_endpoints", "sm_backends" };
	long total = 0;

	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		char path[256], line[256];
		snprintf(path, sizeof(path), "%s/maps-v%u/%s", pin_dir, SM_LAYOUT_VERSION, maps[i]);
		int fd = bpf_obj_get(path);
		if (fd < 0)
			continue;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
		FILE *f = fopen(path, "r");
		while (f && fgets(line, sizeof(line), f)) {
			if (strncmp(line, "memlock:", 8) == 0)
				total += strtol(line + 8, NULL, 10) / 1024;
		}
		if (f)
			fclose(f);
		close(fd);
	}
	return total;
}

static void agent_memory(int workloads)
{
	char stream[128], address[32], err[256];
	int port, admin_port = 15500;
	int services = workloads / 10 ? workloads / 10 : 1;

	snprintf(stream, sizeof(stream), "/tmp/sockmesh-bench-mem-%d.xds", (int)getpid());
	write_stream(stream, workloads, services);
	pid_t mock = start_mock(stream, &port);
	snprintf(address, sizeof(address), "127.0.0.1:%d", port);
	pid_t agent = fork();
	if (agent == 0) {
		freopen("/dev/null", "w", stderr);
		setenv("NODE_NAME", "node-7", 1);
		execl(sockmesh_path, sockmesh_path, "run", "--xds-address", address, "--xds-plaintext", "--cgroup", cgroup,
		      "--pin-dir", pin_dir, "--admin-address", "127.0.0.1:15500", (char *)NULL);
		_exit(127);
	}
	children[1] = agent;
	double start = now_seconds();
	while (!agent_ready(admin_port) && now_seconds() - start < 120)
		sleep_ms(20);
	double ready = now_seconds() - start;
	sleep_ms(500); /* steady: the full push's scratch is given back */
	long rss = status_kib(agent, "VmRSS:"), peak = status_kib(agent, "VmHWM:"), maps = map_memory_kib();
	printf("agent at %6d workloads, %5d services: ready in %.2f s, RSS %.1f MiB, peak RSS %.1f MiB, BPF maps %.1f "
	       "MiB (%.0f B of RSS per workload)\n",
	       workloads, services, ready, rss / 1024.0, peak / 1024.0, maps / 1024.0, rss * 1024.0 / workloads);
	stop(agent);
	stop(mock);
	sm_datapath_uninstall(pin_dir, err, sizeof(err));
	unlink(stream);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: controlplane_bench MOCK_SERVER SOCKMESH [WORKLOADS [SERVICES [UPDATES]]]\n");
		return 2;
	}
	mock_path = argv[1];
	sockmesh_path = argv[2];
	int workloads = argc > 3 ? atoi(argv[3]) : 100000;
	int services = argc > 4 ? atoi(argv[4]) : workloads / 10;
	int updates = argc > 5 ? atoi(argv[5]) : 2000;

	setvbuf(stdout, NULL, _IOLBF, 0); /* children must not inherit unwritten lines */
	setup_world();
	full_push(workloads, services, updates);
	for (int n = 1000; n <= workloads; n *= 10)
		agent_memory(n);
	return 0;
}
