/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The workload model at scale: a generated full push of 100,000 workloads and 10,000 services (10
 * endpoints each on average, half with a second VIP, three zones), decoded, validated, modelled and
 * planned in one process; then single-workload updates at that scale; then the model's memory.
 *
 * Baseline, measured in the same run: protobuf-c decoding the same bytes (the response and every
 * resource in it), the floor under any agent that reads this config.
 *
 * Usage: model_bench [WORKLOADS [SERVICES [UPDATES]]]
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench/snapshot.h"

static int null_apply(struct sm_map_writer *writer, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	(void)writer;
	(void)ops;
	*applied = n;
	return 0;
}

static struct sm_map_writer null_writer = { .apply = null_apply };
static double decode_baseline(const uint8_t *bytes, size_t len)
{
	double start = now_seconds();
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response =
		envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, bytes);

	for (size_t i = 0; i < response->n_resources; i++) {
		const Google__Protobuf__Any *any = response->resources[i]->resource;
		Istio__Workload__Address *address = istio__workload__address__unpack(NULL, any->value.len, any->value.data);
		istio__workload__address__free_unpacked(address, NULL);
	}
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(response, NULL);
	return now_seconds() - start;
}

static double apply_bytes(struct sm_model *model, const uint8_t *bytes, size_t len)
{
	struct sm_rejections rejections = { 0 };
	ProtobufCMessage *response;
	char err[256];
	double start = now_seconds();

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len, &response,
			 err, sizeof(err)) ||
	    sm_model_apply(model, (void *)response, &null_writer, &rejections) || rejections.count) {
		fprintf(stderr, "model_bench: apply failed: %s %s\n", err,
			rejections.count ? rejections.items[0].reason : "");
		exit(1);
	}
	double elapsed = now_seconds() - start;
	protobuf_c_message_free_unpacked(response, NULL);
	sm_rejections_clear(&rejections);
	return elapsed;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int n_workloads = argc > 1 ? atoi(argv[1]) : 100000;
	int n_services = argc > 2 ? atoi(argv[2]) : 10000;
	int n_updates = argc > 3 ? atoi(argv[3]) : 2000;
	struct sm_model_options options = { .node_name = "node-7" };
	size_t len;

	uint8_t *bytes = make_snapshot(n_workloads, n_services, &len);
	size_t full_len = len;

	double baseline = decode_baseline(bytes, len);

	struct mallinfo2 before = mallinfo2();
	struct sm_model *model;
	if (sm_model_new(&options, &model))
		return 1;
	double full = apply_bytes(model, bytes, len);
	struct mallinfo2 after = mallinfo2();
	free(bytes);

	struct sm_model_stats stats;
	sm_model_stats(model, &stats);

	/* Single-workload updates at this scale: a capacity change moves the workload's slots. */
	double *latencies = calloc((size_t)n_updates, sizeof(double));
	for (int u = 0; u < n_updates; u++) {
		int i = (int)(((unsigned)u * 2654435761u) % (unsigned)n_workloads);
		uint8_t *update = make_update(i, n_services, u, &len);
		latencies[u] = apply_bytes(model, update, len);
		free(update);
	}
	qsort(latencies, (size_t)n_updates, sizeof(double), compare_doubles);

	double bytes_per_workload = (double)(after.uordblks - before.uordblks) / n_workloads;
	printf("model_bench: %d workloads, %d services, a %zu-byte response\n", n_workloads, n_services, full_len);
	printf("  map entries: %zu frontends, %zu services, %zu endpoints, %zu backends\n",
	       stats.map_entries[SM_MAP_FRONTENDS], stats.map_entries[SM_MAP_SERVICES],
	       stats.map_entries[SM_MAP_ENDPOINTS], stats.map_entries[SM_MAP_BACKENDS]);
	printf("  baseline, protobuf-c decode only:       %8.3f s\n", baseline);
	printf("  full snapshot (decode+validate+model+plan): %8.3f s  = %.2fx the baseline  (target < 1.0 s)\n",
	       full, full / baseline);
	printf("  single-workload update: p50 %.1f us, p99 %.1f us  (target < 20 us) = %.1fx a workload's share of the full push\n",
	       latencies[n_updates / 2] * 1e6, latencies[n_updates * 99 / 100] * 1e6,
	       latencies[n_updates / 2] / (full / n_workloads));
	printf("  model memory: %.0f bytes per workload (target < 1024; ztunnel's workload alone is 528)\n",
	       bytes_per_workload);
	free(latencies);
	sm_model_free(model);
	return 0;
}
