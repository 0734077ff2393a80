/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The workload model at scale: a generated full push of 100,000 workloads and 10,000 services (10
 * endpoints each on average, half with a second VIP, three zones), decoded, validated, modelled and
 * planned in one process; then single-workload updates at that scale; then the model's memory.
 *
 * Baseline, measured in the same run: protobuf-c decoding the same bytes (the response and every
 * resource in it), the floor under any agent that reads this config.
 *
 * And the resources alone decoded into an arena, reset after each as the apply does: by
 * sm_pb_decode_in, which reads an Address holding a Workload itself (proto/address_reader.c), against
 * protobuf-c into the same arena, as sm_pb_decode_in did before.
 *
 * All in ROUNDS rounds (default 9) whose order rotates: medians and the per-round spread.
 *
 * Usage: model_bench [WORKLOADS [SERVICES [UPDATES [ROUNDS]]]]
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/rounds.h"
#include "bench/snapshot.h"

static int null_apply(struct sm_map_writer *writer, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	(void)writer;
	(void)ops;
	*applied = n;
	return 0;
}

static struct sm_map_writer null_writer = { .apply = null_apply };
/* This process's CPU time: on a shared machine, what the work cost without the time others took. */
static double cpu_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double decode_baseline(const uint8_t *bytes, size_t len, double *cpu)
{
	double cpu_start = cpu_seconds(), start = now_seconds(); /* the CPU clock is a syscall: outside */
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response =
		envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, bytes);

	for (size_t i = 0; i < response->n_resources; i++) {
		const Google__Protobuf__Any *any = response->resources[i]->resource;
		Istio__Workload__Address *address = istio__workload__address__unpack(NULL, any->value.len, any->value.data);
		istio__workload__address__free_unpacked(address, NULL);
	}
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(response, NULL);
	double elapsed = now_seconds() - start;
	*cpu = cpu_seconds() - cpu_start;
	return elapsed;
}

static double decode_in_arena(const uint8_t *bytes, size_t len, bool reader)
{
	const ProtobufCMessageDescriptor *desc = &istio__workload__address__descriptor;
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response =
		envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, bytes);
	struct sm_pb_arena arena;
	ProtobufCMessage *address;
	char err[256];

	sm_pb_arena_init(&arena);
	double start = now_seconds();
	for (size_t i = 0; i < response->n_resources; i++) {
		const Google__Protobuf__Any *any = response->resources[i]->resource;
		if (reader ? sm_pb_decode_in(&arena, desc, any->value.data, any->value.len, &address, err, sizeof(err))
			   : !protobuf_c_message_unpack(desc, &arena.allocator, any->value.len, any->value.data)) {
			fprintf(stderr, "model_bench: resource %zu does not decode\n", i);
			exit(1);
		}
		sm_pb_arena_reset(&arena);
	}
	double elapsed = now_seconds() - start;
	sm_pb_arena_release(&arena);
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(response, NULL);
	return elapsed;
}

static double apply_bytes(struct sm_model *model, const uint8_t *bytes, size_t len, double *cpu)
{
	struct sm_rejections rejections = { 0 };
	ProtobufCMessage *response;
	char err[256];
	double cpu_start = cpu_seconds(), start = now_seconds(); /* the CPU clock is a syscall: outside */

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len, &response,
			 err, sizeof(err)) ||
	    sm_model_apply(model, (void *)response, &null_writer, &rejections) || rejections.count) {
		fprintf(stderr, "model_bench: apply failed: %s %s\n", err,
			rejections.count ? rejections.items[0].reason : "");
		exit(1);
	}
	double elapsed = now_seconds() - start;
	*cpu = cpu_seconds() - cpu_start;
	protobuf_c_message_free_unpacked(response, NULL);
	sm_rejections_clear(&rejections);
	return elapsed;
}

/* "median (min-max)" of values */
static void print_spread(const char *label, const double *values, int n, double scale, const char *unit)
{
	double lo, hi;

	spread(values, n, &lo, &hi);
	printf("%s median %.3f %s (%.3f-%.3f)", label, median(values, n) * scale, unit, lo * scale, hi * scale);
}

int main(int argc, char **argv)
{
	int n_workloads = argc > 1 ? atoi(argv[1]) : 100000;
	int n_services = argc > 2 ? atoi(argv[2]) : 10000;
	int n_updates = argc > 3 ? atoi(argv[3]) : 2000;
	int rounds = argc > 4 ? atoi(argv[4]) : 9;
	struct sm_model_options options = { .node_name = "node-7" };
	struct sm_model *model = NULL;
	struct mallinfo2 before = { 0 }, after = { 0 };
	size_t len;

	if (rounds < 1)
		rounds = 1;
	/* a mesh past the contract's default capacities gets maps that hold it */
	uint32_t w = (uint32_t)n_workloads + (uint32_t)n_workloads / 8, s = (uint32_t)n_services * 2 + 1024;
	options.capacity[SM_MAP_FRONTENDS] = s > SM_DEFAULT_MAX_FRONTENDS ? s : 0;
	options.capacity[SM_MAP_SERVICES] = s > SM_DEFAULT_MAX_SERVICES ? s : 0;
	options.capacity[SM_MAP_ENDPOINTS] = w > SM_DEFAULT_MAX_ENDPOINTS ? w : 0;
	options.capacity[SM_MAP_BACKENDS] = w > SM_DEFAULT_MAX_BACKENDS ? w : 0;
	uint8_t *bytes = make_snapshot(n_workloads, n_services, &len);
	size_t full_len = len;
	enum { DECODE, FULL, RATIO, DECODE_CPU, FULL_CPU, RATIO_CPU, ARENA_PBC, ARENA_READER, ARENA_RATIO, N_T };
	double *t[N_T];
	for (int i = 0; i < N_T; i++)
		t[i] = calloc((size_t)rounds, sizeof(double));

	/* Decoding alone (three ways) and the full apply into a new model, in rounds whose order rotates. */
	for (int r = 0; r < rounds; r++) {
		for (int k = 0; k < 4; k++) {
			/* Each on a heap given back to the system: all pay their page faults, as a first push does. */
			sm_model_free(model);
			model = NULL;
			malloc_trim(0);
			int variant = (r + k) % 4;
			if (variant == 0) {
				t[DECODE][r] = decode_baseline(bytes, len, &t[DECODE_CPU][r]);
				continue;
			}
			if (variant == 2 || variant == 3) {
				t[variant == 2 ? ARENA_PBC : ARENA_READER][r] = decode_in_arena(bytes, len, variant == 3);
				continue;
			}
			before = mallinfo2();
			if (sm_model_new(&options, &model))
				return 1;
			t[FULL][r] = apply_bytes(model, bytes, len, &t[FULL_CPU][r]);
			after = mallinfo2();
		}
		t[RATIO][r] = t[FULL][r] / t[DECODE][r];
		t[RATIO_CPU][r] = t[FULL_CPU][r] / t[DECODE_CPU][r];
		t[ARENA_RATIO][r] = t[ARENA_READER][r] / t[ARENA_PBC][r];
		printf("  round %d: decode %.3f s (CPU %.3f s), full %.3f s (CPU %.3f s) = %.2fx (CPU %.2fx); "
		       "into the arena: protobuf-c %.3f s, sm_pb_decode_in %.3f s = %.2fx\n",
		       r + 1, t[DECODE][r], t[DECODE_CPU][r], t[FULL][r], t[FULL_CPU][r], t[RATIO][r], t[RATIO_CPU][r],
		       t[ARENA_PBC][r], t[ARENA_READER][r], t[ARENA_RATIO][r]);
	}
	if (!model) { /* the last round ended on a decoding: the updates below need the model */
		double cpu;
		if (sm_model_new(&options, &model))
			return 1;
		apply_bytes(model, bytes, len, &cpu);
	}
	free(bytes);

	struct sm_model_stats stats;
	sm_model_stats(model, &stats);

	/* Single-workload updates at this scale: a capacity change moves the workload's slots. */
	double *latencies = calloc((size_t)n_updates + 1, sizeof(double));
	double *cpu = calloc((size_t)n_updates + 1, sizeof(double));
	for (int u = 0; u < n_updates; u++) {
		int i = update_workload(u, n_workloads);
		uint8_t *update = make_update(i, n_services, u, &len);
		latencies[u] = apply_bytes(model, update, len, &cpu[u]);
		free(update);
	}
	qsort(latencies, (size_t)n_updates, sizeof(double), compare_doubles);
	qsort(cpu, (size_t)n_updates, sizeof(double), compare_doubles);

	double bytes_per_workload = (double)(after.uordblks - before.uordblks) / n_workloads;
	printf("model_bench: %d workloads, %d services, a %zu-byte response; %d rounds, order rotating\n", n_workloads,
	       n_services, full_len, rounds);
	printf("  map entries: %zu frontends, %zu services, %zu endpoints, %zu backends\n",
	       stats.map_entries[SM_MAP_FRONTENDS], stats.map_entries[SM_MAP_SERVICES],
	       stats.map_entries[SM_MAP_ENDPOINTS], stats.map_entries[SM_MAP_BACKENDS]);
	print_spread("  baseline, protobuf-c decode only:          ", t[DECODE], rounds, 1, "s");
	print_spread(", CPU", t[DECODE_CPU], rounds, 1, "s");
	print_spread("\n  full snapshot (decode+validate+model+plan):", t[FULL], rounds, 1, "s");
	print_spread(", CPU", t[FULL_CPU], rounds, 1, "s");
	print_spread("\n  full snapshot / baseline:                  ", t[RATIO], rounds, 1, "x");
	print_spread(", CPU", t[RATIO_CPU], rounds, 1, "x");
	print_spread("\n  resources into an arena, protobuf-c:       ", t[ARENA_PBC], rounds, 1, "s");
	print_spread("\n  resources into an arena, sm_pb_decode_in:  ", t[ARENA_READER], rounds, 1, "s");
	print_spread("\n  sm_pb_decode_in / protobuf-c:              ", t[ARENA_RATIO], rounds, 1, "x");
	printf("\n");
	if (n_updates > 0)
		printf("  single-workload update (%d): p50 %.1f us, p99 %.1f us; CPU time p50 %.1f us, p99 %.1f us (target "
		       "<= 20 us)\n",
		       n_updates, percentile(latencies, n_updates, 50) * 1e6, percentile(latencies, n_updates, 99) * 1e6,
		       percentile(cpu, n_updates, 50) * 1e6, percentile(cpu, n_updates, 99) * 1e6);
	printf("  model memory: %.0f bytes per workload (target < 1024; ztunnel's workload alone is 528)\n",
	       bytes_per_workload);
	free(latencies);
	free(cpu);
	for (int i = 0; i < N_T; i++)
		free(t[i]);
	sm_model_free(model);
	return 0;
}
