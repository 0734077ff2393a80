/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control plane at scale, on the real pieces: a generated full push (100,000 workloads, 10,000
 * services) from a recorded stream through the mock istiod and the real gRPC client into fresh BPF
 * maps, against the limit of writing the same entries with raw bpf_map_update_elem calls (one at a
 * time, and in batches) in a tight loop, in rounds whose order rotates (medians and the per-round
 * spread). Then single-workload updates at that scale into the real maps (those during which the kernel
 * ran IRQ work told apart: bench/irq_work.h), the same updates sent to the agent one at a time (its
 * own apply time, with what it does after each response), and the agent's time to ready and memory (RSS, peak RSS,
 * BPF map memory) at 1k, 10k, 100k (and 1M) workloads, and its time to ready again when restarted on the
 * maps it pinned (as a DaemonSet update restarts it).
 *
 * Runs in its own network namespace, cgroup and pin directory, removed at the end.
 * Usage: controlplane_bench MOCK_SERVER SOCKMESH [WORKLOADS [SERVICES [UPDATES [ROUNDS [MEMORY_FROM]]]]]
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
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

#include "bench/irq_work.h"
#include "bench/rounds.h"
#include "bench/snapshot.h"
#include "datapath/datapath.h"
#include "test/cgroup2.h"
#include "xds/response.h"
#include "xds/xds.h"

static struct cgroup2 cgroup2; /* the cgroup2 mount, found or mounted for the run */
static char cgroup[PATH_MAX + 64], pin_dir[128];
static const char *mock_path, *sockmesh_path;
static pid_t children[2]; /* the mock server and the agent, while they run */
static char stream_path[128]; /* the recorded stream being served, removed at exit */
static struct irq_work_counter irq_work = { .fd = -1 }; /* while single updates run (it may mount tracefs) */

static void cleanup(void)
{
	char err[256];

	for (int i = 0; i < 2; i++) {
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
		}
	}
	irq_work_counter_close(&irq_work);
	sm_datapath_uninstall(pin_dir, err, sizeof(err));
	if (stream_path[0])
		unlink(stream_path);
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

static void write_stream(const char *path, int workloads, int services, int updates)
{
	int err = write_snapshot_stream(path, workloads, services, updates);

	snprintf(stream_path, sizeof(stream_path), "%s", path);
	if (err)
		exit(fprintf(stderr, "controlplane_bench: writing %s: %s\n", path, strerror(-err)) > 0);
}

/* delay_ms: between responses (0: none) */
static pid_t start_mock(const char *stream, unsigned delay_ms, int *port)
{
	char port_file[160], delay[16];
	pid_t pid;

	snprintf(port_file, sizeof(port_file), "%s.port", stream);
	unlink(port_file);
	pid = fork();
	if (pid == 0) {
		freopen("/dev/null", "w", stdout);
		snprintf(delay, sizeof(delay), "%u", delay_ms);
		execl(mock_path, mock_path, "--stream", stream, "--port-file", port_file, "--delay-ms", delay, (char *)NULL);
		_exit(127);
	}
	children[0] = pid;
	for (int i = 0; i < 12000; i++) { /* 2 min: at 1M workloads it reads a 256 MiB stream */
		FILE *f = fopen(port_file, "r");
		if (f && fscanf(f, "%d", port) == 1) {
			fclose(f);
			unlink(port_file);
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

/* p50 and p99 of n latencies, sorted in place. */
static void print_latencies(const char *what, double *latency, int n)
{
	qsort(latency, (size_t)n, sizeof(double), compare_doubles);
	printf("  %s: p50 %.1f us, p99 %.1f us\n", what, percentile(latency, n, 50) * 1e6,
	       percentile(latency, n, 99) * 1e6);
}

/* p50 and p99 of the updates without the kernel's IRQ work, of one part of their time. */
static void print_part(const char *what, const double *part, const uint64_t *irq, int updates)
{
	double *without = calloc((size_t)updates, sizeof(double));
	int n = 0;

	for (int u = 0; u < updates; u++)
		if (!irq[u])
			without[n++] = part[u];
	print_latencies(what, without, n);
	free(without);
}

/*
 * The kernel's floor under a single update: one bpf_map_update_elem into a map shaped as the endpoints
 * map, holding as many entries, without preallocation, in a tight loop: inserting new keys (each takes
 * an element from the BPF allocator's per-CPU cache, refilled in IRQ work) and replacing existing ones.
 */
static void kernel_floor(size_t entries, int updates)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);
	int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "bench_floor", sizeof(struct sm_endpoint_key),
				sizeof(struct sm_endpoint_value), (__u32)(entries + (size_t)updates + 1), &opts);
	double *inserts = calloc((size_t)updates, sizeof(double)), *replaces = calloc((size_t)updates, sizeof(double));
	struct sm_endpoint_value value = { 0 };

	if (fd < 0 || !inserts || !replaces)
		exit(fprintf(stderr, "controlplane_bench: the floor's map: %s\n", strerror(errno)) > 0);
	for (size_t i = 0; i < entries; i++) {
		struct sm_endpoint_key key = { .service_id = (__u32)(i / 64), .index = (__u32)(i % 64) };
		bpf_map_update_elem(fd, &key, &value, BPF_ANY);
	}
	for (int u = 0; u < updates; u++) {
		struct sm_endpoint_key key = { .service_id = (__u32)(entries / 64 + 1 + (size_t)u / 64),
					       .index = (__u32)(u % 64) };
		double t0 = now_seconds();
		bpf_map_update_elem(fd, &key, &value, BPF_ANY);
		inserts[u] = now_seconds() - t0;
	}
	for (int u = 0; u < updates; u++) {
		size_t i = ((size_t)u * 2654435761u) % entries;
		struct sm_endpoint_key key = { .service_id = (__u32)(i / 64), .index = (__u32)(i % 64) };
		double t0 = now_seconds();
		bpf_map_update_elem(fd, &key, &value, BPF_ANY);
		replaces[u] = now_seconds() - t0;
	}
	printf("the kernel's floor: one bpf_map_update_elem into a map of %zu entries shaped as the endpoints map, "
	       "without preallocation (%d each)\n", entries, updates);
	print_latencies("inserting a new key", inserts, updates);
	print_latencies("replacing a key's value", replaces, updates);
	close(fd);
	free(inserts);
	free(replaces);
}

/* ---- the full push through gRPC into the datapath's maps ---- */

/* Time this thread ran (the kernel's share included): on a shared machine, the cost without waits. */
static double thread_cpu_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Map capacities that hold this mesh: the contract's defaults, raised for a mesh past them. */
static void capacities(int workloads, int services, uint32_t capacity[SM_MAP_COUNT])
{
	uint32_t w = (uint32_t)workloads + (uint32_t)workloads / 8, s = (uint32_t)services * 2 + 1024;

	capacity[SM_MAP_FRONTENDS] = s > SM_DEFAULT_MAX_FRONTENDS ? s : SM_DEFAULT_MAX_FRONTENDS;
	capacity[SM_MAP_SERVICES] = s > SM_DEFAULT_MAX_SERVICES ? s : SM_DEFAULT_MAX_SERVICES;
	capacity[SM_MAP_ENDPOINTS] = w > SM_DEFAULT_MAX_ENDPOINTS ? w : SM_DEFAULT_MAX_ENDPOINTS;
	capacity[SM_MAP_BACKENDS] = w > SM_DEFAULT_MAX_BACKENDS ? w : SM_DEFAULT_MAX_BACKENDS;
}

static int null_apply(struct sm_map_writer *writer, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	(void)writer;
	(void)ops;
	*applied = n;
	return 0;
}

/* The entries a full push writes, from the model alone: what the raw limit writes. */
static struct sm_model *reference_model(int workloads, int services, const uint32_t capacity[SM_MAP_COUNT])
{
	struct sm_model_options options = { .node_name = "node-7" };
	struct sm_map_writer null_writer = { .apply = null_apply };
	struct sm_rejections rejections = { 0 };
	ProtobufCMessage *response;
	struct sm_model *model;
	char err[256];
	size_t len;

	memcpy(options.capacity, capacity, sizeof(options.capacity));
	uint8_t *bytes = make_snapshot(workloads, services, &len);
	if (!bytes || sm_model_new(&options, &model) ||
	    sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len, &response,
			 err, sizeof(err)) ||
	    sm_model_apply(model, (void *)response, &null_writer, &rejections) || rejections.count)
		exit(fprintf(stderr, "controlplane_bench: the reference model failed\n") > 0);
	protobuf_c_message_free_unpacked(response, NULL);
	free(bytes);
	return model;
}

struct push {
	double ready;  /* start to ready: gRPC, decode, apply, writes, ACK */
	double apply;  /* of which decode + apply + writes */
	double writes; /* of which the map writes (the writer's calls) */
};

/* The updates that took the kernel's IRQ work (irq[u] > 0) and the others: latency percentiles of each. */
struct irq_work_split {
	int with;
	double with_p50, without_p50, without_p99;
};

static struct irq_work_split split_by_irq_work(const double *latency, const uint64_t *irq, int updates)
{
	double *with = calloc((size_t)updates, sizeof(double)), *without = calloc((size_t)updates, sizeof(double));
	struct irq_work_split split = { 0 };
	int n_without = 0;

	for (int u = 0; u < updates; u++) {
		if (irq[u])
			with[split.with++] = latency[u];
		else
			without[n_without++] = latency[u];
	}
	qsort(with, (size_t)split.with, sizeof(double), compare_doubles);
	qsort(without, (size_t)n_without, sizeof(double), compare_doubles);
	split.with_p50 = percentile(with, split.with, 50);
	split.without_p50 = percentile(without, n_without, 50);
	split.without_p99 = percentile(without, n_without, 99);
	free(with);
	free(without);
	return split;
}

/* The datapath's writer, timed: how much of an update is the map writes (bpf() calls), how much the model. */
struct timed_writer {
	struct sm_map_writer writer;
	struct sm_map_writer *maps;
	double seconds; /* in apply since the last reset */
};

static int timed_apply(struct sm_map_writer *base, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	struct timed_writer *timed = (struct timed_writer *)base;
	double t0 = now_seconds();
	int err = timed->maps->apply(timed->maps, ops, n, applied);

	timed->seconds += now_seconds() - t0;
	return err;
}

/* Single updates paced (the in-process ones' second run, the agent's): far enough apart that each finds the
 * caches as the rest of the node left them, as when istiod sends them. */
#define UPDATE_GAP_MS 5

/* The mean of the in-process updates paced as the agent's are (0: not measured), which agent_updates compares
 * with. */
static double paced_mean;

/*
 * Single-workload updates into the maps of a full push, with the client's lock held (no other apply) but
 * for the gap_ms between two (0: back to back); the first is the sequence's update number first (even).
 * Each update sets a workload's weight to 2 (one more endpoint slot) or 1 by its number's parity: when
 * adding, each goes to another workload, so every second one adds a slot and none removes one; when
 * adding and removing (as a cluster whose pods come and go about as often), each second update takes the
 * same workload back to 1, removing the slot the one before added.
 */
static void single_updates(struct sm_model *model, struct sm_datapath *dp, pthread_mutex_t *lock, int workloads,
			   int services, int first, int updates, unsigned gap_ms, bool removing)
{
	double *latency = calloc((size_t)updates, sizeof(double)), *cpu = calloc((size_t)updates, sizeof(double));
	double *writes = calloc((size_t)updates, sizeof(double)), *rest = calloc((size_t)updates, sizeof(double));
	uint64_t *irq = calloc((size_t)updates, sizeof(uint64_t));
	struct timed_writer timed = { .writer = { .apply = timed_apply }, .maps = sm_datapath_writer(dp) };
	int irq_work_err = irq_work_counter_open(&irq_work);
	struct sm_pb_arena arena;

	sm_pb_arena_init(&arena);
	pthread_mutex_lock(lock);
	for (int u = 0; u < updates; u++) {
		size_t len;
		int i = update_workload(first + (removing ? u / 2 : u), workloads);
		uint8_t *update = make_update(i, services, first + u, &len);
		struct sm_rejections rejections = { 0 };
		Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response;
		uint64_t irq0 = irq_work_counter_read(&irq_work);
		double c0 = thread_cpu_seconds(), t0 = now_seconds(); /* the CPU clock is a syscall: outside */
		/* as the client reads a response: in place into its arena, which it resets once applied */
		if (sm_xds_response_read(&arena, update, len, &response))
			exit(fprintf(stderr, "controlplane_bench: update %d does not read in place\n", u) > 0);
		timed.seconds = 0;
		sm_model_apply(model, response, &timed.writer, &rejections);
		sm_pb_arena_reset(&arena);
		latency[u] = now_seconds() - t0;
		writes[u] = timed.seconds;
		rest[u] = latency[u] - timed.seconds;
		cpu[u] = thread_cpu_seconds() - c0;
		irq[u] = irq_work_counter_read(&irq_work) - irq0;
		sm_rejections_clear(&rejections);
		free(update);
		if (gap_ms) { /* caches and CPU as they are when the next update comes */
			pthread_mutex_unlock(lock);
			sleep_ms((int)gap_ms);
			pthread_mutex_lock(lock);
		}
	}
	pthread_mutex_unlock(lock);
	sm_pb_arena_release(&arena);
	irq_work_counter_close(&irq_work);
	struct irq_work_split split = irq_work_err ? (struct irq_work_split){ 0 } : split_by_irq_work(latency, irq, updates);
	double sum = 0;
	for (int u = 0; u < updates; u++)
		sum += latency[u];
	if (gap_ms)
		paced_mean = sum / updates;
	qsort(latency, (size_t)updates, sizeof(double), compare_doubles);
	qsort(cpu, (size_t)updates, sizeof(double), compare_doubles);
	char pace[128] = "back to back";
	if (gap_ms)
		snprintf(pace, sizeof(pace), "one every %u ms", gap_ms);
	if (removing)
		snprintf(pace + strlen(pace), sizeof(pace) - strlen(pace),
			 ", each second one removing the slot the one before added");
	printf("single-workload update into the real maps at this scale (%d updates, %s): p50 %.1f us, p99 %.1f us, "
	       "mean %.1f us; this thread's CPU time p50 %.1f us, p99 %.1f us (target <= 20 us)\n",
	       updates, pace, percentile(latency, updates, 50) * 1e6, percentile(latency, updates, 99) * 1e6,
	       sum / updates * 1e6, percentile(cpu, updates, 50) * 1e6, percentile(cpu, updates, 99) * 1e6);
	if (irq_work_err)
		printf("  (the kernel's IRQ work is not told apart: irq_vectors:irq_work_entry: %s)\n", strerror(-irq_work_err));
	else
		printf("  of which %d (%.1f%%) took the kernel's IRQ work, raised by a map write (the BPF allocator refilling "
		       "or trimming its per-CPU cache of elements of maps without preallocation): p50 %.1f us; the other "
		       "updates: p50 %.1f us, p99 %.1f us\n",
		       split.with, 100.0 * split.with / updates, split.with_p50 * 1e6, split.without_p50 * 1e6,
		       split.without_p99 * 1e6);
	if (!irq_work_err) {
		print_part("  of those, the map writes (bpf() calls)", writes, irq, updates);
		print_part("  of those, the rest (decoding, the model, planning)", rest, irq, updates);
	}
	free(latency);
	free(cpu);
	free(writes);
	free(rest);
	free(irq);
}

/* One full push into fresh maps; then, when updates > 0, single-workload updates into them. */
static struct push full_push(int port, int workloads, int services, const uint32_t capacity[SM_MAP_COUNT],
			     bool one_lane, int updates)
{
	static char *const env[] = { "POD_NAME=bench", "POD_NAMESPACE=istio-system", "INSTANCE_IP=127.0.0.1",
				     "NODE_NAME=node-7", NULL };
	struct sm_xds_node node = { 0 };
	struct sm_datapath *dp;
	struct sm_model *model;
	struct sm_model_options model_options = { .node_name = "node-7" };
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	char err[512];

	struct sm_datapath_options dp_options = { .pin_dir = pin_dir, .cgroup = cgroup, .capacity = capacity };
	if (sm_datapath_open(&dp_options, &dp, err, sizeof(err)))
		exit(fprintf(stderr, "controlplane_bench: %s\n", err) > 0);
	for (int m = 0; m < SM_MAP_COUNT; m++)
		sm_datapath_capacity(dp, m, &model_options.capacity[m]);
	if (one_lane)
		sm_datapath_bpf_writer(dp)->two_lanes = false;
	sm_xds_node_from_env(&node, env);
	sm_model_new(&model_options, &model);

	char address[32];
	snprintf(address, sizeof(address), "127.0.0.1:%d", port);
	struct timed_writer timed = { .writer = { .apply = timed_apply }, .maps = sm_datapath_writer(dp) };
	struct sm_xds_options options = { .address = address, .plaintext = true, .node = &node, .model = model,
					  .writer = &timed.writer, .model_lock = &lock };
	struct sm_xds_client *client;
	struct sm_xds_stats stats;
	if (sm_xds_client_new(&options, &client, err, sizeof(err)))
		exit(fprintf(stderr, "controlplane_bench: %s\n", err) > 0);
	double start = now_seconds();
	sm_xds_client_start(client);
	do {
		sleep_ms(1);
		sm_xds_client_stats(client, &stats);
	} while (!stats.ready && now_seconds() - start < 300);
	struct push push = { .ready = now_seconds() - start, .apply = stats.apply.sum, .writes = timed.seconds };
	if (!stats.ready)
		exit(fprintf(stderr, "controlplane_bench: the push did not complete\n") > 0);

	if (updates > 0) {
		struct sm_model_stats stats;

		/* the paced ones go on where the others ended: other workloads, the same kinds of change */
		single_updates(model, dp, &lock, workloads, services, 0, updates, 0, false);
		single_updates(model, dp, &lock, workloads, services, updates, updates, UPDATE_GAP_MS, false);
		single_updates(model, dp, &lock, workloads, services, 2 * updates, updates, 0, true);
		sm_model_stats(model, &stats);
		kernel_floor(stats.map_entries[SM_MAP_ENDPOINTS], updates);
	}
	sm_xds_client_free(client);
	sm_model_free(model);
	sm_xds_node_clear(&node);
	sm_datapath_close(dp);
	sm_datapath_uninstall(pin_dir, err, sizeof(err));
	return push;
}

/* The push as the agent makes it; the same push with its map writes on one thread (as on a one-CPU node,
 * datapath/writer.c); the raw limits. */
enum variant { PUSH, PUSH_ONE_LANE, RAW_SINGLE, RAW_BATCH, VARIANTS };

/* The push against the raw limits in rounds whose order rotates; medians and the per-round spread. */
static void push_rounds(int workloads, int services, int updates, int rounds)
{
	char stream[128];
	int port;
	uint32_t capacity[SM_MAP_COUNT];
	struct push *pushes[2] = { calloc((size_t)rounds, sizeof(struct push)),
				   calloc((size_t)rounds, sizeof(struct push)) };
	double *t[VARIANTS], *part = calloc((size_t)rounds, sizeof(double));
	double *ratio_single = calloc((size_t)rounds, sizeof(double)), *ratio_batch = calloc((size_t)rounds, sizeof(double));
	double *ratio_lanes = calloc((size_t)rounds, sizeof(double));
	size_t single_calls = 0, batch_calls = 0, entries = 0;

	capacities(workloads, services, capacity);
	for (int v = 0; v < VARIANTS; v++)
		t[v] = calloc((size_t)rounds, sizeof(double));
	snprintf(stream, sizeof(stream), "/tmp/sockmesh-bench-%d.xds", (int)getpid());
	write_stream(stream, workloads, services, 0);
	pid_t mock = start_mock(stream, 0, &port);
	struct sm_model *reference = reference_model(workloads, services, capacity);
	const struct sm_image *image = sm_model_image(reference);
	for (int m = 0; m < SM_MAP_COUNT; m++)
		entries += sm_image_count(image, m);

	printf("full push: %d workloads, %d services -> %zu map entries; %d rounds, order rotating\n", workloads,
	       services, entries, rounds);
	for (int r = 0; r < rounds; r++) {
		for (int k = 0; k < VARIANTS; k++) {
			enum variant v = (enum variant)((r + k) % VARIANTS);
			if (v == PUSH || v == PUSH_ONE_LANE) {
				pushes[v][r] = full_push(port, workloads, services, capacity, v == PUSH_ONE_LANE,
							 v == PUSH && r == rounds - 1 ? updates : 0);
				t[v][r] = pushes[v][r].ready;
			} else {
				t[v][r] = raw_writes(image, v == RAW_BATCH, v == RAW_BATCH ? &batch_calls : &single_calls);
			}
		}
		ratio_single[r] = t[PUSH][r] / t[RAW_SINGLE][r];
		ratio_batch[r] = t[PUSH][r] / t[RAW_BATCH][r];
		ratio_lanes[r] = t[PUSH][r] / t[PUSH_ONE_LANE][r];
		printf("  round %d: push %.3f s (decode+apply+writes %.3f s, map writes %.3f s), with one write lane "
		       "%.3f s (map writes %.3f s), raw single %.3f s, raw batch %.3f s -> %.2fx single, %.2fx batch\n",
		       r + 1, t[PUSH][r], pushes[PUSH][r].apply, pushes[PUSH][r].writes, t[PUSH_ONE_LANE][r],
		       pushes[PUSH_ONE_LANE][r].writes, t[RAW_SINGLE][r], t[RAW_BATCH][r], ratio_single[r],
		       ratio_batch[r]);
	}
	double lo, hi, lo2, hi2;
	for (int v = PUSH; v <= PUSH_ONE_LANE; v++) {
		double writes_lo, writes_hi;
		spread(t[v], rounds, &lo, &hi);
		for (int r = 0; r < rounds; r++)
			part[r] = pushes[v][r].apply;
		double apply = median(part, rounds);
		for (int r = 0; r < rounds; r++)
			part[r] = pushes[v][r].writes;
		spread(part, rounds, &writes_lo, &writes_hi);
		printf("  %s: median %.3f s (%.3f-%.3f), of which decode+apply+writes %.3f s, map writes %.3f s "
		       "(%.3f-%.3f)\n",
		       v == PUSH ? "full push to ACK (gRPC, decode, apply, writes)" : "the same, its writes on one lane",
		       median(t[v], rounds), lo, hi, apply, median(part, rounds), writes_lo, writes_hi);
	}
	spread(ratio_lanes, rounds, &lo2, &hi2);
	printf("  full push against the same with one write lane: %.2fx (rounds %.2f-%.2fx)\n",
	       median(ratio_lanes, rounds), lo2, hi2);
	spread(t[RAW_SINGLE], rounds, &lo, &hi);
	spread(ratio_single, rounds, &lo2, &hi2);
	printf("  raw limit, one bpf_map_update_elem per entry: median %.3f s (%.3f-%.3f, %zu calls) -> full push = "
	       "%.2fx (rounds %.2f-%.2fx)\n",
	       median(t[RAW_SINGLE], rounds), lo, hi, single_calls, median(ratio_single, rounds), lo2, hi2);
	spread(t[RAW_BATCH], rounds, &lo, &hi);
	spread(ratio_batch, rounds, &lo2, &hi2);
	printf("  raw limit, bpf_map_update_batch of 1024:      median %.3f s (%.3f-%.3f, %zu calls) -> full push = "
	       "%.2fx (rounds %.2f-%.2fx; target <= 2.0x)\n",
	       median(t[RAW_BATCH], rounds), lo, hi, batch_calls, median(ratio_batch, rounds), lo2, hi2);
	sm_model_free(reference);
	for (int v = 0; v < VARIANTS; v++)
		free(t[v]);
	free(pushes[0]);
	free(pushes[1]);
	free(part);
	free(ratio_single);
	free(ratio_batch);
	free(ratio_lanes);
	stop(mock);
	unlink(stream);
}

/* ---- the agent's memory ---- */

/* GET path from the agent's admin server; the reply (head and body) in reply. Returns its length. */
static size_t admin_get(int admin_port, const char *path, char *reply, size_t size)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	size_t len = 0;
	char request[128];

	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\n\r\n", path);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 && write(fd, request, strlen(request)) > 0) {
		ssize_t n;
		while (len + 1 < size && (n = read(fd, reply + len, size - len - 1)) > 0)
			len += (size_t)n;
	}
	reply[len] = '\0';
	close(fd);
	return len;
}

static bool agent_ready(int admin_port)
{
	char reply[64];

	admin_get(admin_port, "/healthz/ready", reply, sizeof(reply));
	return strstr(reply, " 200 ") != NULL;
}

/* The agent's own time to decode, apply and write what it was sent (its apply histogram's sum). */
static double agent_apply_seconds(int admin_port)
{
	static char reply[1 << 20];
	const char *name = "sockmesh_apply_duration_seconds_sum ";

	admin_get(admin_port, "/metrics", reply, sizeof(reply));
	const char *at = strstr(reply, name);
	return at ? strtod(at + strlen(name), NULL) : -1;
}

/* The agent's apply histogram (sockmesh_apply_duration_seconds), its buckets apart (not cumulative). */
struct apply_histogram {
	double sum, count;
	double buckets[SM_LATENCY_BUCKETS + 1];
};

#define APPLY_HISTOGRAM "sockmesh_apply_duration_seconds"

/* false when the agent did not answer with it whole */
static bool agent_apply_histogram(int admin_port, struct apply_histogram *h)
{
	static char reply[1 << 20];
	const char *at = reply, *sum, *count;
	double below = 0;

	admin_get(admin_port, "/metrics", reply, sizeof(reply));
	for (int b = 0; b <= SM_LATENCY_BUCKETS && at; b++) {
		at = strstr(at, APPLY_HISTOGRAM "_bucket{le=");
		at = at ? strchr(at, '}') : NULL;
		if (at) {
			double cumulative = strtod(at + 1, NULL);
			h->buckets[b] = cumulative - below;
			below = cumulative;
		}
	}
	sum = strstr(reply, APPLY_HISTOGRAM "_sum ");
	count = strstr(reply, APPLY_HISTOGRAM "_count ");
	if (!at || !sum || !count)
		return false;
	h->sum = strtod(sum + strlen(APPLY_HISTOGRAM "_sum "), NULL);
	h->count = strtod(count + strlen(APPLY_HISTOGRAM "_count "), NULL);
	return true;
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

/* An agent whose maps hold a mesh of this size (capacities()), as the in-process push's. */
static pid_t start_agent(const char *address, int workloads, int services)
{
	char capacity_args[SM_MAP_COUNT][64];
	uint32_t capacity[SM_MAP_COUNT];
	pid_t agent;

	capacities(workloads, services, capacity);
	for (int m = 0; m < SM_MAP_COUNT; m++)
		snprintf(capacity_args[m], sizeof(capacity_args[m]), "%s=%u", sm_map_name(m), capacity[m]);
	agent = fork();

	if (agent == 0) {
		freopen("/dev/null", "w", stderr);
		setenv("NODE_NAME", "node-7", 1);
		execl(sockmesh_path, sockmesh_path, "run", "--xds-address", address, "--xds-plaintext", "--cgroup", cgroup,
		      "--pin-dir", pin_dir, "--admin-address", "127.0.0.1:15500", "--map-capacity", capacity_args[0],
		      "--map-capacity", capacity_args[1], "--map-capacity", capacity_args[2], "--map-capacity",
		      capacity_args[3], (char *)NULL);
		_exit(127);
	}
	children[1] = agent;
	return agent;
}

/* From now until the agent answers ready (at most 300 s). */
static double seconds_to_ready(int admin_port)
{
	double start = now_seconds();

	while (!agent_ready(admin_port) && now_seconds() - start < 300)
		sleep_ms(20);
	return now_seconds() - start;
}

/* The agent's time to ready and memory on a mesh of this size, in rounds (an agent each), and again
 * restarted on the maps it pinned. */
static void agent_memory(int workloads, int services, int rounds)
{
	char stream[128], address[32], err[256];
	int port, admin_port = 15500;
	double *ready = calloc((size_t)rounds, sizeof(double)), *rss = calloc((size_t)rounds, sizeof(double));
	double *peak = calloc((size_t)rounds, sizeof(double)), *apply = calloc((size_t)rounds, sizeof(double)), maps = 0;
	double *restart_ready = calloc((size_t)rounds, sizeof(double)), *restart_apply = calloc((size_t)rounds, sizeof(double));
	double *restart_rss = calloc((size_t)rounds, sizeof(double)), *restart_peak = calloc((size_t)rounds, sizeof(double));

	snprintf(stream, sizeof(stream), "/tmp/sockmesh-bench-mem-%d.xds", (int)getpid());
	write_stream(stream, workloads, services, 0);
	pid_t mock = start_mock(stream, 0, &port);
	snprintf(address, sizeof(address), "127.0.0.1:%d", port);
	for (int r = 0; r < rounds; r++) {
		pid_t agent = start_agent(address, workloads, services);
		ready[r] = seconds_to_ready(admin_port);
		apply[r] = agent_apply_seconds(admin_port);
		sleep_ms(500); /* steady: the full push's scratch is given back */
		rss[r] = status_kib(agent, "VmRSS:") / 1024.0;
		peak[r] = status_kib(agent, "VmHWM:") / 1024.0;
		maps = map_memory_kib() / 1024.0;
		stop(agent); /* SIGTERM: the datapath stays pinned */
		/* a restart, as a DaemonSet update makes one: the new agent adopts the pinned maps */
		agent = start_agent(address, workloads, services);
		restart_ready[r] = seconds_to_ready(admin_port);
		restart_apply[r] = agent_apply_seconds(admin_port);
		sleep_ms(500);
		restart_rss[r] = status_kib(agent, "VmRSS:") / 1024.0;
		restart_peak[r] = status_kib(agent, "VmHWM:") / 1024.0;
		stop(agent);
		sm_datapath_uninstall(pin_dir, err, sizeof(err));
	}
	double lo[4], hi[4];
	spread(ready, rounds, &lo[0], &hi[0]);
	spread(apply, rounds, &lo[3], &hi[3]);
	spread(rss, rounds, &lo[1], &hi[1]);
	spread(peak, rounds, &lo[2], &hi[2]);
	printf("agent at %7d workloads, %6d services (%d rounds): ready in %.2f s (%.2f-%.2f), of which its apply "
	       "%.2f s (%.2f-%.2f), RSS %.1f MiB (%.1f-%.1f), peak RSS %.1f MiB (%.1f-%.1f), BPF maps %.1f MiB (%.0f B of "
	       "RSS per workload)\n",
	       workloads, services, rounds, median(ready, rounds), lo[0], hi[0], median(apply, rounds), lo[3], hi[3],
	       median(rss, rounds), lo[1], hi[1],
	       median(peak, rounds), lo[2], hi[2], maps, median(rss, rounds) * 1048576.0 / workloads);
	spread(restart_ready, rounds, &lo[0], &hi[0]);
	spread(restart_apply, rounds, &lo[3], &hi[3]);
	spread(restart_rss, rounds, &lo[1], &hi[1]);
	spread(restart_peak, rounds, &lo[2], &hi[2]);
	printf("  restarted on its pinned maps: ready in %.2f s (%.2f-%.2f), of which its apply %.2f s (%.2f-%.2f), RSS "
	       "%.1f MiB (%.1f-%.1f), peak RSS %.1f MiB (%.1f-%.1f)\n",
	       median(restart_ready, rounds), lo[0], hi[0], median(restart_apply, rounds), lo[3], hi[3],
	       median(restart_rss, rounds), lo[1], hi[1], median(restart_peak, rounds), lo[2], hi[2]);
	free(ready);
	free(rss);
	free(peak);
	free(apply);
	free(restart_ready);
	free(restart_apply);
	free(restart_rss);
	free(restart_peak);
	stop(mock);
	unlink(stream);
}

/*
 * The agent's own single updates, sent one at a time as istiod sends them (one every UPDATE_GAP_MS): the time
 * its apply histogram gives each (reading, the model, the map writes and the agent's work after a
 * response), which the in-process updates above leave out. Its node holds a thousandth of the workloads.
 */
static void agent_updates(int workloads, int services, int updates)
{
	char stream[128], address[32], err[256];
	struct apply_histogram first, last;
	int port, admin_port = 15500;

	snprintf(stream, sizeof(stream), "/tmp/sockmesh-bench-updates-%d.xds", (int)getpid());
	write_stream(stream, workloads, services, updates);
	pid_t mock = start_mock(stream, UPDATE_GAP_MS, &port);
	snprintf(address, sizeof(address), "127.0.0.1:%d", port);
	pid_t agent = start_agent(address, workloads, services);
	seconds_to_ready(admin_port);
	/* from the first reading after ready: the push is in it, and perhaps a few updates */
	bool read = agent_apply_histogram(admin_port, &first);
	double deadline = now_seconds() + updates * UPDATE_GAP_MS / 1000.0 + 60;
	while (read && (read = agent_apply_histogram(admin_port, &last)) && last.count < updates + 2 &&
	       now_seconds() < deadline)
		sleep_ms(100);
	stop(agent);
	stop(mock);
	sm_datapath_uninstall(pin_dir, err, sizeof(err));
	unlink(stream);
	double n = read ? last.count - first.count : 0;
	if (n < 1) {
		printf("the agent's own single updates: none measured (%s)\n", read ? "none applied" : "no metrics");
		return;
	}
	double mean = (last.sum - first.sum) / n;
	printf("the agent's own single updates at %d workloads (%d of them local), %.0f of %d measured, one every %d ms: "
	       "mean %.1f us (its apply histogram", workloads, workloads / 1000, n, updates, UPDATE_GAP_MS, mean * 1e6);
	if (paced_mean > 0)
		printf("; %.2fx the same updates' in-process mean", mean / paced_mean);
	printf(");");
	double within = 0;
	for (int b = 0; b < SM_LATENCY_BUCKETS && within < n; b++) {
		within += last.buckets[b] - first.buckets[b];
		printf(" %.1f%% within %g us%s", 100.0 * within / n, sm_latency_bounds[b] * 1e6,
		       within < n && b + 1 < SM_LATENCY_BUCKETS ? "," : "");
	}
	printf("\n");
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: controlplane_bench MOCK_SERVER SOCKMESH [WORKLOADS [SERVICES [UPDATES [ROUNDS "
				"[MEMORY_FROM]]]]]\n"
				"  the push in ROUNDS rotated rounds (default 9) and UPDATES single updates (default 2000) in-process\n"
				"  and by the agent, then the agent's memory at MEMORY_FROM (default\n"
				"  1000) workloads and each tenfold up to WORKLOADS (3 rounds each; SERVICES at WORKLOADS, a\n"
				"  tenth of the workloads below)\n");
		return 2;
	}
	/* one malloc arena, as the agent runs (agent/main.c): the model built on the xDS thread and the single
	 * updates made on this one then share it, as in the agent, where both are on the xDS thread */
	mallopt(M_ARENA_MAX, 1);
	mock_path = argv[1];
	sockmesh_path = argv[2];
	int workloads = argc > 3 ? atoi(argv[3]) : 100000;
	int services = argc > 4 ? atoi(argv[4]) : workloads / 10;
	int updates = argc > 5 ? atoi(argv[5]) : 2000;
	int rounds = argc > 6 ? atoi(argv[6]) : 9;
	int memory_from = argc > 7 ? atoi(argv[7]) : 1000;

	setvbuf(stdout, NULL, _IOLBF, 0); /* children must not inherit unwritten lines */
	setup_world();
	if (rounds > 0)
		push_rounds(workloads, services, updates, rounds);
	if (updates > 0)
		agent_updates(workloads, services, updates);
	for (int n = memory_from; n > 0 && n <= workloads; n *= 10)
		agent_memory(n, n == workloads ? services : (n / 10 ? n / 10 : 1), getenv("MEMORY_ROUNDS") ? atoi(getenv("MEMORY_ROUNDS")) : 3);
	return 0;
}
