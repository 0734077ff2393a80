/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A generated mesh for the benchmarks: WORKLOADS pods behind SERVICES services (10 endpoints each on
 * average when WORKLOADS = 10 x SERVICES), half of the services with a second (IPv6) VIP, a quarter
 * with locality failover over three zones of one region, a thousand nodes.
 */
#ifndef SOCKMESH_BENCH_SNAPSHOT_H
#define SOCKMESH_BENCH_SNAPSHOT_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../test/builders.h"
#include "../test/clock.h"
#include "workload/workload.h"

static const char *zones[] = { "zone-a", "zone-b", "zone-c" };

static inline void make_workload(struct response *r, int i, int n_services, const char *version, uint32_t capacity)
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

static inline void make_service(struct response *r, int s)
{
	char *ns = response_alloc(r, 16), *host = response_alloc(r, 48), *vip = response_alloc(r, 20),
	     *vip6 = response_alloc(r, 40);
	static const int scopes[] = { ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION,
				      ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE };

	snprintf(ns, 16, "ns%d", s % 100);
	snprintf(host, 48, "svc-%d.ns%d.svc.cluster.local", s, s % 100);
	snprintf(vip, 20, "10.%d.%d.%d", 96 + s / 65536, (s / 256) % 256, s % 256);
	snprintf(vip6, 40, "fd00:96::%x:%x", s >> 16, s & 0xffff);
	struct service_spec spec = {
		.namespace = ns, .hostname = host, .vips = { vip, s % 2 ? vip6 : NULL },
		.ports = { { 80, 8080 }, { 443, 8443 } },
		.mode = s % 4 == 0 ? ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER : 0,
		.scopes = { s % 4 == 0 ? scopes[0] : 0, s % 4 == 0 ? scopes[1] : 0 },
	};
	response_add_service(r, &spec, "v1");
}

/* The whole mesh as one Address response, packed. */
static inline uint8_t *make_snapshot(int n_workloads, int n_services, size_t *len)
{
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	r.msg.nonce = "snapshot";
	for (int s = 0; s < n_services; s++)
		make_service(&r, s);
	for (int i = 0; i < n_workloads; i++)
		make_workload(&r, i, n_services, "v1", 0);
	uint8_t *bytes = response_pack(&r, len);
	response_free(&r);
	return bytes;
}

/* One workload changed (its weight), as a response of its own. */
static inline uint8_t *make_update(int i, int n_services, int round, size_t *len)
{
	struct response r;
	char version[16];

	snprintf(version, sizeof(version), "u%d", round);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	r.msg.nonce = "update";
	make_workload(&r, i, n_services, version, round % 2 ? 1 : 2);
	uint8_t *bytes = response_pack(&r, len);
	response_free(&r);
	return bytes;
}

/* A recorded stream: the snapshot, then an empty Authorization response (readiness needs both), then
 * `updates` single-workload updates (make_update, the workloads single updates pick: update_workload). */
static inline int update_workload(int update, int n_workloads)
{
	return (int)(((unsigned)update * 2654435761u) % (unsigned)n_workloads);
}

static inline int write_snapshot_stream(const char *path, int n_workloads, int n_services, int updates)
{
	struct response authz;
	size_t len;
	uint8_t *snapshot = make_snapshot(n_workloads, n_services, &len);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int err = fd < 0 ? -errno : snapshot ? 0 : -ENOMEM;

	response_init(&authz, SM_TYPE_URL_AUTHORIZATION);
	if (!err)
		err = sm_stream_append(fd, snapshot, len);
	if (!err)
		err = response_append(fd, &authz);
	for (int u = 0; !err && u < updates; u++) {
		uint8_t *update = make_update(update_workload(u, n_workloads), n_services, u, &len);
		err = update ? sm_stream_append(fd, update, len) : -ENOMEM;
		free(update);
	}
	if (fd >= 0)
		close(fd);
	response_free(&authz);
	free(snapshot);
	return err;
}

#endif
