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

#include "../test/builders.h"
#include "workload/workload.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int null_apply(struct sm_map_writer *writer, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	(void)writer;
	(void)ops;
	*applied = n;
	return 0;
}

static struct sm_map_writer null_writer = { .apply = null_apply };
static const char *zones[] = { "zone-a", "zone-b", "zone-c" };

static void make_workload(struct response *r, int i, int n_services, const char *version, uint32_t capacity)
{
	char *uid = response_alloc(r, 48), *ip = response_alloc(r, 20), *service = response_alloc(r, 48);
	char *node = response_alloc(r, 16);

	snprintf(uid, 48, "Kubernetes//Pod/ns%d/pod-%d", i % 100, i);
	snprintf(ip, 20, "10.%d.%d.%d", 64 + i / 65536, (i / 256) % 256, i % 256);
	snprintf(service, 48, "ns%d/svc-%d.ns%d.svc.cluster.local", (i % n_services) % 100, i % n_services,
		 (i % n_services) % 100);
	snprintf(node, 16, "node-%d", i % 1000);
	struct workload_spec spec = {
		.uid = uid, .addresses = { ip }, .node = node, .region = "region-1", .zone = zones[i % 3],
		.namespace = "bench", .capacity = capacity, .services = { { service, { { 80, 8080 } } } },
	};
	response_add_workload(r, &spec, version);
}

static void make_service(struct response *r, int s)
{
	char *ns = response_alloc(r, 16), *host = response_alloc(r, 48), *vip = response_alloc(r, 20),
	     *vip6 = response_alloc(r, 40);
	static const int scopes[] = { ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION,
				      ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE };

	snprintf(ns, 16, "ns%d", s % 100);
	snprintf(host, 48, "svc-%d.ns%d.svc.cluster.local", s, s % 100);
	snprintf(vip, 20, "10.96.%d.%d", s / 256, s % 256);
	snprintf(vip6, 40, "fd00:96::%x", s);
	struct service_spec spec = {
		.namespace = ns, .hostname = host, .vips = { vip, s % 2 ? vip6 : NULL },
		.ports = { { 80, 8080 }, { 443, 8443 } },
		.mode = s % 4 == 0 ? ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER : 0,
		.scopes = { s % 4 == 0 ? scopes[0] : 0, s % 4 == 0 ? scopes[1] : 0 },
	};
	response_add_service(r, &spec, "v1");
}

static uint8_t *pack_response(struct response *r, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(&r->msg.base);
	uint8_t *bytes = malloc(*len);
	protobuf_c_message_pack(&r->msg.base, bytes);
	return bytes;
}

static double decode_baseline(const uint8_t *bytes, size_t len)
{
	double start = now();
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response =
		envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, bytes);

	for (size_t i = 0; i < response->n_resources; i++) {
		const Google__Protobuf__Any *any = response->resources[i]->resource;
		Istio__Workload__Address *address = istio__workload__address__unpack(NULL, any->value.len, any->value.data);
		istio__workload__address__free_unpacked(address, NULL);
	}
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(response, NULL);
	return now() - start;
}

static double apply_bytes(struct sm_model *model, const uint8_t *bytes, size_t len)
{
	struct sm_rejections rejections = { 0 };
	ProtobufCMessage *response;
	char err[256];
	double start = now();

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len, &response,
			 err, sizeof(err)) ||
	    sm_model_apply(model, (void *)response, &null_writer, &rejections) || rejections.count) {
		fprintf(stderr, "model_bench: apply failed: %s %s\n", err,
			rejections.count ? rejections.items[0].reason : "");
		exit(1);
	}
	double elapsed = now() - start;
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
	struct response r;
	size_t len;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int s = 0; s < n_services; s++)
		make_service(&r, s);
	for (int i = 0; i < n_workloads; i++)
		make_workload(&r, i, n_services, "v1", 0);
	uint8_t *bytes = pack_response(&r, &len);
	size_t full_len = len;
	response_free(&r);

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
		response_init(&r, SM_TYPE_URL_ADDRESS);
		make_workload(&r, i, n_services, u % 2 ? "v3" : "v2", u % 2 ? 1 : 2);
		uint8_t *update = pack_response(&r, &len);
		response_free(&r);
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
