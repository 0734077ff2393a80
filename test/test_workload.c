/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The workload model and its map plan. Every apply goes through a harness that writes into an image
 * standing in for the kernel's maps, checks the reader's invariants after every single write, and
 * compares the result with the model's image and with an image built from scratch.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "authz/authz.h"
#include "builders.h"
#include "helpers.h"
#include "model_harness.h"
#include "workload/internal.h"

#define SCOPE(name) ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__##name
#define MODE(name) ISTIO__WORKLOAD__LOAD_BALANCING__MODE__##name

/* ---- reading the kernel image ---- */

static struct sm_frontend_key ip_key(const char *text)
{
	struct sm_frontend_key key = { 0 };

	if (inet_pton(AF_INET, text, key.addr + 12) == 1) {
		key.addr[10] = key.addr[11] = 0xff;
		return key;
	}
	assert_int_equal(inet_pton(AF_INET6, text, key.addr), 1);
	return key;
}

static const struct sm_frontend_value *frontend(struct harness *h, const char *ip)
{
	union sm_map_key key = { .frontend = ip_key(ip) };

	return sm_image_get(h->kernel, SM_MAP_FRONTENDS, &key);
}

static const struct sm_service_value *service(struct harness *h, const char *name)
{
	union sm_map_key key = { .id = sm_model_service_id(h->model, name) };

	return key.id ? sm_image_get(h->kernel, SM_MAP_SERVICES, &key) : NULL;
}

static const struct sm_backend_value *backend(struct harness *h, const char *uid)
{
	union sm_map_key key = { .id = sm_model_backend_id(h->model, uid) };

	return key.id ? sm_image_get(h->kernel, SM_MAP_BACKENDS, &key) : NULL;
}

/* How many slots of a service's priority hold a workload. */
static unsigned int slots_of(struct harness *h, const char *name, uint8_t priority, const char *uid)
{
	uint32_t service_id = sm_model_service_id(h->model, name);
	uint32_t backend_id = sm_model_backend_id(h->model, uid);
	const struct sm_service_value *value = service(h, name);
	unsigned int n = 0;

	for (uint32_t i = 0; value && i < value->endpoint_counts[priority]; i++) {
		union sm_map_key key = { .endpoint = { .service_id = service_id, .priority = priority, .index = i } };
		const struct sm_endpoint_value *slot = sm_image_get(h->kernel, SM_MAP_ENDPOINTS, &key);
		n += slot && slot->backend_id == backend_id;
	}
	return n;
}

static const struct sm_endpoint_value *first_slot(struct harness *h, const char *name, uint8_t priority)
{
	union sm_map_key key = { .endpoint = { .service_id = sm_model_service_id(h->model, name), .priority = priority } };

	return sm_image_get(h->kernel, SM_MAP_ENDPOINTS, &key);
}

static const struct service_spec reviews = {
	.namespace = "bookinfo", .hostname = "reviews.bookinfo.svc.cluster.local",
	.vips = { "10.96.0.10", "fd00::10" }, .ports = { { 9080, 9080 }, { 9443, 0 } },
};
#define REVIEWS "bookinfo/reviews.bookinfo.svc.cluster.local"
static const struct service_spec ratings = {
	.namespace = "bookinfo", .hostname = "ratings.bookinfo.svc.cluster.local",
	.vips = { "10.96.0.20" }, .ports = { { 9080, 9080 } },
};
#define RATINGS "bookinfo/ratings.bookinfo.svc.cluster.local"

/* ---- ordering ---- */

static void workload_before_its_service(void **state)
{
	(void)state;
	struct harness h;
	struct workload_spec w = { .uid = "c//Pod/bookinfo/r1", .addresses = { "10.0.0.1" },
				   .services = { { REVIEWS, { { 9080, 9081 } } } } };

	harness_open(&h, NULL, NULL);
	apply_workloads(&h, &w, 1);
	assert_non_null(backend(&h, w.uid));
	assert_null(service(&h, REVIEWS));
	assert_null(frontend(&h, "10.96.0.10"));

	apply_service(&h, &reviews);
	const struct sm_service_value *value = service(&h, REVIEWS);
	assert_non_null(value);
	assert_int_equal(value->n_ports, 2);
	assert_int_equal(ntohs(value->ports[0]), 9080);
	assert_int_equal(value->endpoint_counts[0], 1);
	assert_int_equal(slots_of(&h, REVIEWS, 0, w.uid), 1);
	/* The workload's own target port for 9080; the service port itself where the service says 0. */
	assert_int_equal(ntohs(first_slot(&h, REVIEWS, 0)->target_ports[0]), 9081);
	assert_int_equal(ntohs(first_slot(&h, REVIEWS, 0)->target_ports[1]), 9443);
	assert_int_equal(frontend(&h, "10.96.0.10")->kind, SM_FRONTEND_SERVICE);
	assert_int_equal(frontend(&h, "10.96.0.10")->id, sm_model_service_id(h.model, REVIEWS));
	assert_int_equal(frontend(&h, "fd00::10")->id, sm_model_service_id(h.model, REVIEWS));
	harness_close(&h);
}

static void service_removed_before_its_workloads(void **state)
{
	(void)state;
	struct harness h;
	struct workload_spec w[] = {
		{ .uid = "c//Pod/bookinfo/r1", .addresses = { "10.0.0.1" }, .services = { { REVIEWS } } },
		{ .uid = "c//Pod/bookinfo/r2", .addresses = { "10.0.0.2" }, .services = { { REVIEWS } } },
	};

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	apply_workloads(&h, w, 2);
	assert_int_equal(service(&h, REVIEWS)->endpoint_counts[0], 2);

	remove_names(&h, (const char *[]){ REVIEWS }, 1);
	assert_null(frontend(&h, "10.96.0.10"));
	assert_int_equal(sm_image_count(h.kernel, SM_MAP_SERVICES), 0);
	assert_int_equal(sm_image_count(h.kernel, SM_MAP_ENDPOINTS), 0);
	assert_int_equal(sm_image_count(h.kernel, SM_MAP_BACKENDS), 2);

	remove_names(&h, (const char *[]){ w[0].uid, w[1].uid }, 2);
	for (int map = 0; map < SM_MAP_COUNT; map++)
		assert_int_equal(sm_image_count(h.kernel, map), 0);

	/* Names never sent are ignored, not rejected. */
	remove_names(&h, (const char *[]){ "never/sent", "c//Pod/x/y" }, 2);
	harness_close(&h);
}

static void service_and_workloads_in_one_response(void **state)
{
	(void)state;
	struct harness h;
	struct response r;
	struct workload_spec w = { .uid = "c//Pod/bookinfo/r1", .addresses = { "10.0.0.1" }, .services = { { REVIEWS } } };

	harness_open(&h, NULL, NULL);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &w, "v1");
	response_add_service(&r, &reviews, "v1");
	apply_ok(&h, &r);
	assert_int_equal(slots_of(&h, REVIEWS, 0, w.uid), 1);

	/* A name both sent and removed is ambiguous (Envoy rejects the response): rejected, kept as it was. */
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &w, "v2");
	response_remove(&r, w.uid);
	apply(&h, &r);
	assert_int_equal(h.rejections.count, 1);
	assert_string_equal(h.rejections.items[0].name, w.uid);
	assert_string_equal(h.rejections.items[0].reason, "is both sent and removed in this response");
	assert_non_null(backend(&h, w.uid));
	assert_int_equal(slots_of(&h, REVIEWS, 0, w.uid), 1);
	harness_close(&h);
}

/* ---- updates ---- */

static void workload_moves_between_services(void **state)
{
	(void)state;
	struct harness h;
	struct workload_spec w = { .uid = "c//Pod/bookinfo/r1", .addresses = { "10.0.0.1" }, .services = { { REVIEWS } } };

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	apply_service(&h, &ratings);
	apply_workloads(&h, &w, 1);
	uint32_t backend_id = sm_model_backend_id(h.model, w.uid);
	assert_int_equal(slots_of(&h, REVIEWS, 0, w.uid), 1);

	w.services[0].service = RATINGS;
	apply_workloads(&h, &w, 1);
	assert_int_equal(service(&h, REVIEWS)->endpoint_counts[0], 0);
	assert_int_equal(slots_of(&h, RATINGS, 0, w.uid), 1);
	assert_int_equal(sm_model_backend_id(h.model, w.uid), backend_id); /* ids are stable */
	harness_close(&h);
}

static void hole_filled_by_the_last_slot(void **state)
{
	(void)state;
	struct harness h;
	struct workload_spec w[4];

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	for (int i = 0; i < 4; i++) {
		char *uid = malloc(32), *ip = malloc(16);
		snprintf(uid, 32, "c//Pod/bookinfo/r%d", i);
		snprintf(ip, 16, "10.0.0.%d", i + 1);
		w[i] = (struct workload_spec){ .uid = uid, .addresses = { ip }, .services = { { REVIEWS } } };
	}
	apply_workloads(&h, w, 4);
	assert_int_equal(service(&h, REVIEWS)->endpoint_counts[0], 4);

	/* Removing the first moves the last into slot 0 before the count drops to 3. */
	size_t ops_before = h.writer.ops_applied;
	remove_names(&h, (const char *[]){ w[0].uid }, 1);
	assert_int_equal(service(&h, REVIEWS)->endpoint_counts[0], 3);
	for (int i = 1; i < 4; i++)
		assert_int_equal(slots_of(&h, REVIEWS, 0, w[i].uid), 1);
	/* slot 0 rewritten, count written, slot 3 deleted, backend deleted: nothing else */
	assert_int_equal(h.writer.ops_applied - ops_before, 4);
	for (int i = 0; i < 4; i++) {
		free((void *)w[i].uid);
		free((void *)w[i].addresses[0]);
	}
	harness_close(&h);
}

static void vips_change(void **state)
{
	(void)state;
	struct harness h;
	struct service_spec moved = reviews;

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	moved.vips[0] = "10.96.0.99";
	moved.vips[1] = NULL;
	apply_service(&h, &moved);
	assert_null(frontend(&h, "10.96.0.10"));
	assert_null(frontend(&h, "fd00::10"));
	assert_non_null(frontend(&h, "10.96.0.99"));
	harness_close(&h);
}

static void unchanged_resource_writes_nothing(void **state)
{
	(void)state;
	struct harness h;
	struct workload_spec w = { .uid = "c//Pod/bookinfo/r1", .addresses = { "10.0.0.1" }, .services = { { REVIEWS } } };

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	apply_workloads(&h, &w, 1);
	size_t ops_before = h.writer.ops_applied;
	apply_service(&h, &reviews);
	apply_workloads(&h, &w, 1);
	assert_int_equal(h.writer.ops_applied, ops_before);
	harness_close(&h);
}

static void load_balancing_modes_and_locality(void **state)
{
	(void)state;
	struct harness h;
	struct service_spec spec = { .namespace = "ns", .hostname = "lb", .vips = { "10.96.1.1" },
				     .ports = { { 80, 8080 } }, .mode = MODE(FAILOVER),
				     .scopes = { SCOPE(REGION), SCOPE(ZONE) } };
	struct workload_spec w[] = {
		{ .uid = "w/same-zone", .addresses = { "10.0.1.1" }, .region = "r1", .zone = "z1", .services = { { "ns/lb" } } },
		{ .uid = "w/same-region", .addresses = { "10.0.1.2" }, .region = "r1", .zone = "z2", .services = { { "ns/lb" } } },
		{ .uid = "w/elsewhere", .addresses = { "10.0.1.3" }, .region = "r2", .zone = "z9", .services = { { "ns/lb" } } },
	};
	struct workload_spec local = { .uid = "w/local", .addresses = { "10.0.9.9" }, .node = "node-a",
				       .region = "r1", .zone = "z1" };

	harness_open(&h, "node-a", NULL);
	apply_service(&h, &spec);
	apply_workloads(&h, w, 3);
	/* The local locality is not known yet: nobody matches, all share the last priority. */
	assert_int_equal(service(&h, "ns/lb")->endpoint_counts[2], 3);
	assert_int_equal(service(&h, "ns/lb")->lb_mode, SM_LB_FAILOVER);

	/* A workload on this node tells where the node is: priorities are recomputed. */
	apply_workloads(&h, &local, 1);
	struct sm_locality where;
	sm_model_local_locality(h.model, &where);
	assert_string_equal(where.region, "r1");
	assert_int_equal(slots_of(&h, "ns/lb", 0, "w/same-zone"), 1);
	assert_int_equal(slots_of(&h, "ns/lb", 1, "w/same-region"), 1);
	assert_int_equal(slots_of(&h, "ns/lb", 2, "w/elsewhere"), 1);

	/* Strict: only the best priority is written. */
	spec.mode = MODE(STRICT);
	apply_service(&h, &spec);
	assert_int_equal(service(&h, "ns/lb")->lb_mode, SM_LB_STRICT);
	assert_int_equal(service(&h, "ns/lb")->endpoint_counts[0], 1);
	assert_int_equal(service(&h, "ns/lb")->endpoint_counts[1], 0);
	assert_int_equal(service(&h, "ns/lb")->endpoint_counts[2], 0);

	/* The node moves: the best priority follows. */
	local.zone = "z2";
	apply_workloads(&h, &local, 1);
	assert_int_equal(slots_of(&h, "ns/lb", 0, "w/same-region"), 1);
	assert_int_equal(slots_of(&h, "ns/lb", 0, "w/same-zone"), 0);

	/* Back to random: everyone in priority 0. */
	spec.mode = 0;
	spec.scopes[0] = 0;
	apply_service(&h, &spec);
	assert_int_equal(service(&h, "ns/lb")->lb_mode, SM_LB_RANDOM);
	assert_int_equal(service(&h, "ns/lb")->endpoint_counts[0], 3);

	spec.mode = MODE(PASSTHROUGH);
	apply_service(&h, &spec);
	assert_int_equal(service(&h, "ns/lb")->lb_mode, SM_LB_PASSTHROUGH);
	assert_int_equal(service(&h, "ns/lb")->endpoint_counts[0], 0);
	harness_close(&h);
}

static void fixed_locality_option(void **state)
{
	(void)state;
	struct sm_locality where = { .region = "r2", .zone = "z9" };
	struct sm_model_options options = { .node_name = "node-a", .locality = &where };
	struct harness h;
	struct service_spec spec = { .namespace = "ns", .hostname = "lb", .vips = { "10.96.1.1" },
				     .ports = { { 80, 8080 } }, .mode = MODE(FAILOVER),
				     .scopes = { SCOPE(REGION), SCOPE(ZONE) } };
	struct workload_spec w[] = {
		{ .uid = "w/a", .addresses = { "10.0.1.1" }, .region = "r2", .zone = "z9", .services = { { "ns/lb" } } },
		{ .uid = "w/local", .addresses = { "10.0.1.2" }, .node = "node-a", .region = "r1", .zone = "z1",
		  .services = { { "ns/lb" } } },
	};

	harness_open(&h, NULL, NULL);
	sm_model_free(h.model);
	assert_int_equal(sm_model_new(&options, &h.model), 0);
	apply_service(&h, &spec);
	apply_workloads(&h, w, 2);
	assert_int_equal(slots_of(&h, "ns/lb", 0, "w/a"), 1);
	assert_int_equal(slots_of(&h, "ns/lb", 2, "w/local"), 1);
	harness_close(&h);
}

static void health_and_weight(void **state)
{
	(void)state;
	struct harness h;
	struct service_spec spec = reviews;
	struct workload_spec w[] = {
		{ .uid = "w/sick", .addresses = { "10.0.0.1" }, .unhealthy = true, .services = { { REVIEWS } } },
		{ .uid = "w/big", .addresses = { "10.0.0.2" }, .capacity = 3, .services = { { REVIEWS } } },
		{ .uid = "w/drained", .addresses = { "10.0.0.3" }, .zero_capacity = true, .services = { { REVIEWS } } },
		{ .uid = "w/huge", .addresses = { "10.0.0.4" }, .capacity = 1000, .services = { { REVIEWS } } },
	};

	harness_open(&h, NULL, NULL);
	apply_service(&h, &spec);
	apply_workloads(&h, w, 4);
	assert_int_equal(slots_of(&h, REVIEWS, 0, "w/sick"), 0);
	assert_int_equal(slots_of(&h, REVIEWS, 0, "w/big"), 3);
	assert_int_equal(slots_of(&h, REVIEWS, 0, "w/drained"), 0);
	assert_int_equal(slots_of(&h, REVIEWS, 0, "w/huge"), SM_MAX_WEIGHT);

	spec.allow_unhealthy = true;
	apply_service(&h, &spec);
	assert_int_equal(slots_of(&h, REVIEWS, 0, "w/sick"), 1);

	w[1].capacity = 1;
	apply_workloads(&h, &w[1], 1);
	assert_int_equal(slots_of(&h, REVIEWS, 0, "w/big"), 1);
	harness_close(&h);
}

static void waypoints(void **state)
{
	(void)state;
	struct harness h;
	struct service_spec with_waypoint = reviews;
	struct service_spec waypoint = { .namespace = "bookinfo", .hostname = "waypoint", .vips = { "10.96.9.9", "fd00::9" },
					 .ports = { { 15008, 15008 } } };
	struct workload_spec w = { .uid = "w/pod", .addresses = { "10.0.0.1" }, .services = { { REVIEWS } },
				   .waypoint_ip = "10.0.7.7", .waypoint_port = 15009 };

	harness_open(&h, NULL, NULL);
	/* A waypoint that names a service not seen yet is unresolved: traffic must not bypass it. */
	with_waypoint.waypoint_service = "bookinfo/waypoint";
	apply_service(&h, &with_waypoint);
	assert_int_equal(service(&h, REVIEWS)->waypoint.flags, SM_WAYPOINT_UNRESOLVED);

	apply_service(&h, &waypoint);
	const struct sm_waypoint *resolved = &service(&h, REVIEWS)->waypoint;
	assert_int_equal(resolved->flags, SM_WAYPOINT_V4 | SM_WAYPOINT_V6);
	assert_int_equal(ntohl(resolved->addr4), 0x0a600909);
	assert_int_equal(ntohs(resolved->port), 15008);

	/* The waypoint's VIP changes: the service that uses it follows. */
	waypoint.vips[0] = "10.96.9.10";
	apply_service(&h, &waypoint);
	assert_int_equal(ntohl(service(&h, REVIEWS)->waypoint.addr4), 0x0a60090a);

	/* A workload with its own waypoint: its backend carries it, and its address becomes a frontend. */
	apply_workloads(&h, &w, 1);
	assert_int_equal(backend(&h, w.uid)->waypoint.flags, SM_WAYPOINT_V4);
	assert_int_equal(ntohs(backend(&h, w.uid)->waypoint.port), 15009);
	assert_int_equal(frontend(&h, "10.0.0.1")->kind, SM_FRONTEND_WORKLOAD);
	assert_int_equal(frontend(&h, "10.0.0.1")->id, sm_model_backend_id(h.model, w.uid));

	/* Without the waypoint, the pod address is no frontend. */
	w.waypoint_ip = NULL;
	apply_workloads(&h, &w, 1);
	assert_int_equal(backend(&h, w.uid)->waypoint.flags, 0);
	assert_null(frontend(&h, "10.0.0.1"));

	/* Removing the service's waypoint, then the waypoint service. */
	apply_service(&h, &reviews);
	assert_int_equal(service(&h, REVIEWS)->waypoint.flags, 0);
	remove_names(&h, (const char *[]){ "bookinfo/waypoint" }, 1);
	harness_close(&h);
}

static void address_conflicts_resolve_by_rule(void **state)
{
	(void)state;
	struct harness h;
	struct service_spec a = { .namespace = "ns", .hostname = "a", .vips = { "10.96.5.5" }, .ports = { { 80 } } };
	struct service_spec b = { .namespace = "ns", .hostname = "b", .vips = { "10.96.5.5" }, .ports = { { 80 } } };
	struct workload_spec pod = { .uid = "w/pod", .addresses = { "10.96.5.5" }, .waypoint_ip = "10.0.7.7" };

	harness_open(&h, NULL, NULL);
	apply_workloads(&h, &pod, 1);
	assert_int_equal(frontend(&h, "10.96.5.5")->kind, SM_FRONTEND_WORKLOAD);
	/* Services win over workloads; among services the smallest name, whatever the order. */
	apply_service(&h, &b);
	assert_int_equal(frontend(&h, "10.96.5.5")->id, sm_model_service_id(h.model, "ns/b"));
	apply_service(&h, &a);
	assert_int_equal(frontend(&h, "10.96.5.5")->id, sm_model_service_id(h.model, "ns/a"));
	remove_names(&h, (const char *[]){ "ns/a" }, 1);
	assert_int_equal(frontend(&h, "10.96.5.5")->id, sm_model_service_id(h.model, "ns/b"));
	remove_names(&h, (const char *[]){ "ns/b" }, 1);
	assert_int_equal(frontend(&h, "10.96.5.5")->kind, SM_FRONTEND_WORKLOAD);
	harness_close(&h);
}

/* ---- rejections ---- */

struct bad_case {
	const char *title;
	struct workload_spec workload;
	struct service_spec service;
	void (*mutate_workload)(struct response *r, Istio__Workload__Workload *w);
	void (*mutate_service)(struct response *r, Istio__Workload__Service *s);
	const char *name;
	const char *reason;
};

static void five_byte_address(struct response *r, Istio__Workload__Workload *w)
{
	(void)r;
	w->addresses[0].len = 5;
}
static void no_uid(struct response *r, Istio__Workload__Workload *w)
{
	(void)r;
	w->uid = "";
}
static void bad_services_key(struct response *r, Istio__Workload__Workload *w)
{
	(void)r;
	w->services[0]->key = "no-slash";
}
static void membership_port_zero(struct response *r, Istio__Workload__Workload *w)
{
	(void)r;
	w->services[0]->value->ports[0]->service_port = 0;
}
static void unknown_status(struct response *r, Istio__Workload__Workload *w)
{
	(void)r;
	w->status = 9;
}
static void waypoint_port_zero(struct response *r, Istio__Workload__Workload *w)
{
	(void)r;
	w->waypoint->hbone_mtls_port = 0;
}
static void waypoint_bad_address(struct response *r, Istio__Workload__Workload *w)
{
	(void)r;
	w->waypoint->address->address.len = 3;
}
static void no_hostname(struct response *r, Istio__Workload__Service *s)
{
	(void)r;
	s->hostname = "";
}
static void port_too_big(struct response *r, Istio__Workload__Service *s)
{
	(void)r;
	s->ports[0]->target_port = 70000;
}
static void service_port_zero(struct response *r, Istio__Workload__Service *s)
{
	(void)r;
	s->ports[0]->service_port = 0;
}
static void too_many_ports(struct response *r, Istio__Workload__Service *s)
{
	Istio__Workload__Port **ports = response_alloc(r, (SM_MAX_PORTS + 1) * sizeof(void *));
	for (size_t i = 0; i <= SM_MAX_PORTS; i++) {
		ports[i] = response_alloc(r, sizeof(Istio__Workload__Port));
		*ports[i] = *s->ports[0];
		ports[i]->service_port = 1000 + (uint32_t)i;
	}
	s->ports = ports;
	s->n_ports = SM_MAX_PORTS + 1;
}
static void duplicate_port(struct response *r, Istio__Workload__Service *s)
{
	(void)r;
	s->ports[1]->service_port = s->ports[0]->service_port;
}
static void unknown_mode(struct response *r, Istio__Workload__Service *s)
{
	(void)r;
	s->load_balancing->mode = 7;
}
static void unknown_scope(struct response *r, Istio__Workload__Service *s)
{
	(void)r;
	s->load_balancing->routing_preference[0] = 42;
}
static void vip_range(struct response *r, Istio__Workload__Service *s)
{
	(void)r;
	s->addresses[0]->optional_length_case = ISTIO__WORKLOAD__NETWORK_ADDRESS__OPTIONAL_LENGTH_LENGTH;
	s->addresses[0]->length = 24;
}
static void vip_seventeen_bytes(struct response *r, Istio__Workload__Service *s)
{
	(void)r;
	s->addresses[0]->address.len = 17;
}

static const struct bad_case bad_cases[] = {
	{ "address of 5 bytes", .workload = { .uid = "w/a", .addresses = { "10.0.0.1" } }, .mutate_workload = five_byte_address,
	  .name = "w/a", .reason = "address 0 has 5 bytes" },
	{ "missing uid", .workload = { .uid = "w/a" }, .mutate_workload = no_uid, .name = "(unnamed)", .reason = "no uid" },
	{ "services key without /", .workload = { .uid = "w/a", .services = { { "ns/x" } } }, .mutate_workload = bad_services_key,
	  .name = "w/a", .reason = "not namespace/hostname" },
	{ "membership port 0", .workload = { .uid = "w/a", .services = { { "ns/x", { { 80, 8080 } } } } },
	  .mutate_workload = membership_port_zero, .name = "w/a",
	  .reason = "services key 'ns/x': service port 0 is not in 1..65535" },
	{ "unknown status", .workload = { .uid = "w/a" }, .mutate_workload = unknown_status, .name = "w/a", .reason = "unknown status 9" },
	{ "waypoint port 0", .workload = { .uid = "w/a", .waypoint_ip = "10.0.0.9" }, .mutate_workload = waypoint_port_zero,
	  .name = "w/a", .reason = "waypoint port 0" },
	{ "waypoint address of 3 bytes", .workload = { .uid = "w/a", .waypoint_ip = "10.0.0.9" },
	  .mutate_workload = waypoint_bad_address, .name = "w/a", .reason = "waypoint address has 3 bytes" },
	{ "missing hostname", .service = { .namespace = "ns", .hostname = "h" }, .mutate_service = no_hostname,
	  .name = "ns/", .reason = "no hostname" },
	{ "target port above 65535", .service = { .namespace = "ns", .hostname = "h", .ports = { { 80, 80 } } },
	  .mutate_service = port_too_big, .name = "ns/h", .reason = "ports: target port 70000 is above 65535" },
	{ "service port 0", .service = { .namespace = "ns", .hostname = "h", .ports = { { 80, 80 } } },
	  .mutate_service = service_port_zero, .name = "ns/h", .reason = "ports: service port 0 is not in 1..65535" },
	{ "more ports than the map holds", .service = { .namespace = "ns", .hostname = "h", .ports = { { 80, 80 } } },
	  .mutate_service = too_many_ports, .name = "ns/h", .reason = "17 ports" },
	{ "a port twice", .service = { .namespace = "ns", .hostname = "h", .ports = { { 80 }, { 81 } } },
	  .mutate_service = duplicate_port, .name = "ns/h", .reason = "listed twice" },
	{ "unknown lb mode", .service = { .namespace = "ns", .hostname = "h", .mode = MODE(STRICT) },
	  .mutate_service = unknown_mode, .name = "ns/h", .reason = "unknown load balancing mode 7" },
	{ "unknown scope", .service = { .namespace = "ns", .hostname = "h", .scopes = { SCOPE(ZONE) } },
	  .mutate_service = unknown_scope, .name = "ns/h", .reason = "unknown routing preference scope 42" },
	{ "a VIP range", .service = { .namespace = "ns", .hostname = "h", .vips = { "10.9.0.0" } }, .mutate_service = vip_range,
	  .name = "ns/h", .reason = "/24 range" },
	{ "a VIP of 17 bytes", .service = { .namespace = "ns", .hostname = "h", .vips = { "10.9.0.0" } },
	  .mutate_service = vip_seventeen_bytes, .name = "ns/h", .reason = "address 0 has 17 bytes" },
};

static void bad_resource_rejected_alone(void **state)
{
	const struct bad_case *c = *state;
	struct harness h;
	struct response r;
	struct workload_spec good = { .uid = "w/good", .addresses = { "10.0.0.50" }, .services = { { "ns/h" } } };

	harness_open(&h, NULL, NULL);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	if (c->mutate_workload) {
		Istio__Workload__Workload *w = workload_from(&r, &c->workload);
		c->mutate_workload(&r, w);
		response_add_workload_msg(&r, w, "v1");
	} else {
		Istio__Workload__Service *s = service_from(&r, &c->service);
		c->mutate_service(&r, s);
		response_add_service_msg(&r, s, "v1");
	}
	response_add_workload(&r, &good, "v1");
	apply(&h, &r);
	if (!has_rejection(&h, c->name, c->reason)) {
		char *text = sm_rejections_format(&h.rejections);
		fail_msg("%s: want '%s: ...%s...', got '%s'", c->title, c->name, c->reason, text);
	}
	assert_int_equal(h.rejections.count, 1);
	assert_non_null(backend(&h, "w/good")); /* the rest of the response is applied */
	harness_close(&h);
}

struct version_lookup {
	const char *name;
	const char *version;
};

static int find_version(void *ctx, const char *name, const char *version)
{
	struct version_lookup *lookup = ctx;

	if (strcmp(name, lookup->name))
		return 0;
	lookup->version = version;
	return 1;
}

static void rejection_keeps_the_previous_state(void **state)
{
	(void)state;
	struct harness h;
	struct response r;
	struct workload_spec w = { .uid = "w/a", .addresses = { "10.0.0.1" }, .services = { { REVIEWS } } };

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	apply_workloads(&h, &w, 1);
	struct sm_backend_value before = *backend(&h, w.uid);

	response_init(&r, SM_TYPE_URL_ADDRESS);
	Istio__Workload__Workload *bad = workload_from(&r, &(struct workload_spec){ .uid = "w/a", .addresses = { "10.0.0.2" } });
	bad->addresses[0].len = 7;
	response_add_workload_msg(&r, bad, "v2");
	apply(&h, &r);
	assert_true(has_rejection(&h, "w/a", "7 bytes"));
	assert_memory_equal(backend(&h, w.uid), &before, sizeof(before));
	assert_int_equal(slots_of(&h, REVIEWS, 0, w.uid), 1);

	/* It keeps its old version too, so that istiod sends it again on reconnect. */
	struct version_lookup lookup = { .name = "w/a" };
	assert_int_equal(sm_model_for_each_version(h.model, SM_TYPE_URL_ADDRESS, find_version, &lookup), 1);
	assert_string_equal(lookup.version, "v1");
	harness_close(&h);
}

static void malformed_resources(void **state)
{
	(void)state;
	struct harness h;
	struct response r;
	static const uint8_t garbage[] = { 0xff, 0xff, 0xff };
	struct workload_spec w = { .uid = "w/a", .addresses = { "10.0.0.1" } };

	harness_open(&h, NULL, NULL);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_raw(&r, "garbage", "v1", SM_TYPE_URL_ADDRESS, garbage, sizeof(garbage));
	response_add_raw(&r, "strange", "v1", "type.googleapis.com/example.Nope", garbage, 0);
	response_add_raw(&r, "wrong-type", "v1", SM_TYPE_URL_AUTHORIZATION, garbage, 0);
	response_add_raw(&r, "empty", "v1", SM_TYPE_URL_ADDRESS, garbage, 0);
	response_add_workload(&r, &w, "v1");
	response_add_workload(&r, &w, "v2");
	apply(&h, &r);
	assert_true(has_rejection(&h, "garbage", "does not decode"));
	assert_true(has_rejection(&h, "strange", "unknown type type.googleapis.com/example.Nope"));
	assert_true(has_rejection(&h, "wrong-type", "a type.googleapis.com/istio.security.Authorization in a"));
	assert_true(has_rejection(&h, "empty", "neither a workload nor a service"));
	assert_true(has_rejection(&h, "w/a", "more than once"));
	assert_int_equal(h.rejections.count, 5);
	assert_non_null(backend(&h, "w/a"));

	char *text = sm_rejections_format(&h.rejections);
	assert_non_null(strstr(text, "garbage: does not decode: Address"));
	assert_non_null(strstr(text, "; strange: "));
	free(text);

	response_init(&r, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
	apply(&h, &r);
	assert_true(has_rejection(&h, "type.googleapis.com/envoy.config.cluster.v3.Cluster", "unknown type URL"));
	harness_close(&h);
}

/* ---- capacity and failed writes ---- */

static void overflow_is_rejected_whole(void **state)
{
	(void)state;
	uint32_t capacity[SM_MAP_COUNT] = { [SM_MAP_SERVICES] = 2, [SM_MAP_ENDPOINTS] = 3 };
	struct harness h;
	struct response r;
	struct service_spec s[3] = {
		{ .namespace = "ns", .hostname = "a", .vips = { "10.96.0.1" }, .ports = { { 80 } } },
		{ .namespace = "ns", .hostname = "b", .vips = { "10.96.0.2" }, .ports = { { 80 } } },
		{ .namespace = "ns", .hostname = "c", .vips = { "10.96.0.3" }, .ports = { { 80 } } },
	};

	harness_open(&h, NULL, capacity);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int i = 0; i < 3; i++)
		response_add_service(&r, &s[i], "v1");
	apply(&h, &r);
	assert_int_equal(h.rejections.count, 1);
	assert_true(has_rejection(&h, "ns/c", "services map is full"));
	assert_null(frontend(&h, "10.96.0.3"));

	/* A workload whose weight needs more endpoint slots than remain. */
	struct workload_spec w[] = {
		{ .uid = "w/1", .addresses = { "10.0.0.1" }, .services = { { "ns/a" } } },
		{ .uid = "w/2", .addresses = { "10.0.0.2" }, .capacity = 3, .services = { { "ns/a" } } },
	};
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &w[0], "v1");
	response_add_workload(&r, &w[1], "v1");
	apply(&h, &r);
	assert_true(has_rejection(&h, "w/2", "endpoints map would hold 4 entries, its capacity is 3"));
	assert_null(backend(&h, "w/2")); /* nothing of it was written */
	struct sm_model_stats stats;
	sm_model_stats(h.model, &stats);
	assert_int_equal(stats.map_overflows[SM_MAP_SERVICES], 1);
	assert_int_equal(stats.map_overflows[SM_MAP_ENDPOINTS], 1);
	assert_int_equal(slots_of(&h, "ns/a", 0, "w/1"), 1);

	/* Room is made: both fit. */
	remove_names(&h, (const char *[]){ "ns/b" }, 1);
	w[1].capacity = 2;
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &s[2], "v1");
	response_add_workload(&r, &w[1], "v1");
	apply_ok(&h, &r);
	assert_int_equal(slots_of(&h, "ns/a", 0, "w/2"), 2);
	assert_non_null(frontend(&h, "10.96.0.3"));
	harness_close(&h);
}

static void failed_write_is_undone(void **state)
{
	(void)state;
	struct harness h;
	struct response r;
	struct workload_spec w[] = {
		{ .uid = "w/1", .addresses = { "10.0.0.1" }, .services = { { REVIEWS } } },
		{ .uid = "w/2", .addresses = { "10.0.0.2" }, .services = { { REVIEWS } }, .waypoint_ip = "10.0.0.9" },
	};

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	apply_workloads(&h, &w[0], 1);

	/* The batch fails midway, then each resource alone: the second write of w/2 fails again. */
	h.writer.fail_after = h.writer.ops_applied + 1;
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &w[1], "v1");
	apply(&h, &r);
	assert_true(has_rejection(&h, "w/2", "map is full"));
	assert_null(backend(&h, "w/2"));
	assert_null(frontend(&h, "10.0.0.2"));
	assert_int_equal(service(&h, REVIEWS)->endpoint_counts[0], 1);

	/* The next time, it goes through. */
	apply_workloads(&h, &w[1], 1);
	assert_int_equal(service(&h, REVIEWS)->endpoint_counts[0], 2);
	harness_close(&h);
}

static int count_local_address(void *ctx, const uint8_t addr[16])
{
	(void)addr;
	(*(int *)ctx)++;
	return 0;
}

static int local_addresses(const struct harness *h)
{
	int n = 0;

	assert_int_equal(sm_model_for_each_local_address(h->model, count_local_address, &n), 0);
	return n;
}

/* The agent writes this node's addresses only when the local generation moved: it moves with every
 * committed change to a workload of this node, and only then. */
static void local_generation_follows_this_nodes_workloads(void **state)
{
	(void)state;
	struct harness h;
	struct response r;
	struct workload_spec remote = { .uid = "w/remote", .addresses = { "10.0.0.1" }, .node = "node-b",
					.services = { { REVIEWS } } };
	struct workload_spec local = { .uid = "w/local", .addresses = { "10.0.0.2" }, .node = "node-a",
				       .services = { { REVIEWS } } };
	struct workload_spec refused = { .uid = "w/refused", .addresses = { "10.0.0.3" }, .node = "node-a",
					 .services = { { REVIEWS } }, .waypoint_ip = "10.0.0.9" };
	uint64_t generation;

	harness_open(&h, "node-a", NULL);
	apply_service(&h, &reviews);
	generation = sm_model_local_generation(h.model);
	apply_workloads(&h, &remote, 1);
	assert_int_equal(sm_model_local_generation(h.model), generation);

	apply_workloads(&h, &local, 1);
	assert_int_not_equal(sm_model_local_generation(h.model), generation);
	assert_int_equal(local_addresses(&h), 1);
	generation = sm_model_local_generation(h.model);

	remote.capacity = 3; /* another node's workload changes: the local addresses are the same */
	apply_workloads(&h, &remote, 1);
	assert_int_equal(sm_model_local_generation(h.model), generation);

	local.addresses[1] = "fd00::2";
	apply_workloads(&h, &local, 1);
	assert_int_not_equal(sm_model_local_generation(h.model), generation);
	assert_int_equal(local_addresses(&h), 2);
	generation = sm_model_local_generation(h.model);

	/* a batch undone changes nothing */
	h.writer.fail_after = h.writer.ops_applied + 1;
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &refused, "v1");
	apply(&h, &r);
	assert_true(has_rejection(&h, "w/refused", "map is full"));
	assert_int_equal(sm_model_local_generation(h.model), generation);
	assert_int_equal(local_addresses(&h), 2);

	remove_names(&h, (const char *[]){ "w/local" }, 1);
	assert_int_not_equal(sm_model_local_generation(h.model), generation);
	assert_int_equal(local_addresses(&h), 0);
	harness_close(&h);
}

/* ---- releasing the response before the writes ---- */

/*
 * sm_model_apply_releasing's callbacks in tests: each resource's bytes are poisoned as soon as the model
 * says it reads them no more, and the rest at the release, which then frees them, so that a read after
 * shows (and ASan and valgrind catch it); notes how many writes came before the release.
 */
struct release_check {
	struct response *r;
	const struct sm_image_writer *writer;
	size_t writes_at_start, writes_at_release;
	size_t read; /* resources poisoned by read_up_to */
	int calls;
};

static void poison_resource(Envoy__Service__Discovery__V3__Resource *resource)
{
	memset(resource->name, 'X', strlen(resource->name));
	memset(resource->resource->value.data, 0xff, resource->resource->value.len);
}

static void poison_read(void *ctx, size_t n)
{
	struct release_check *check = ctx;
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *msg = &check->r->msg;

	assert_int_equal(check->calls, 0);
	assert_true(n > check->read && n <= msg->n_resources);
	for (; check->read < n; check->read++)
		poison_resource(msg->resources[check->read]);
}

static void poison_and_free(void *ctx)
{
	struct release_check *check = ctx;
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *msg = &check->r->msg;

	check->calls++;
	check->writes_at_release = check->writer->ops_applied;
	for (size_t i = check->read; i < msg->n_resources; i++)
		poison_resource(msg->resources[i]);
	for (size_t i = 0; i < msg->n_removed_resources; i++)
		memset(msg->removed_resources[i], 'X', strlen(msg->removed_resources[i]));
	response_free(check->r);
	msg->n_resources = msg->n_removed_resources = 0;
}

/* Applies r releasing it as it is read, which must end once and before any write; r is freed either way. */
static void apply_releasing(struct harness *h, struct response *r, struct sm_map_writer *writer)
{
	struct release_check check = { .r = r, .writer = &h->writer, .writes_at_start = h->writer.ops_applied };
	size_t n_resources = r->msg.n_resources;

	sm_rejections_clear(&h->rejections);
	assert_int_equal(sm_model_apply_releasing(h->model, &r->msg,
						  &(struct sm_response_release){ .read_up_to = poison_read,
										 .release = poison_and_free,
										 .ctx = &check },
						  writer ? writer : &h->writer.writer, &h->rejections),
			 0);
	assert_int_equal(check.calls, 1);
	assert_int_equal(check.read, n_resources); /* every resource was staged in the first batch */
	assert_int_equal(check.writes_at_release, check.writes_at_start);
	assert_consistent(h);
}

static void split_after_release_needs_no_response(void **state)
{
	(void)state;
	uint32_t capacity[SM_MAP_COUNT] = { [SM_MAP_ENDPOINTS] = 3 };
	struct service_spec a = { .namespace = "ns", .hostname = "a", .vips = { "10.96.0.1" }, .ports = { { 80 } } };
	struct workload_spec w[] = {
		{ .uid = "w/0", .addresses = { "10.0.0.10" }, .services = { { "ns/a" } } },
		{ .uid = "w/1", .addresses = { "10.0.0.1" }, .services = { { "ns/a" } } },
		{ .uid = "w/2", .addresses = { "10.0.0.2" }, .capacity = 3, .services = { { "ns/a" } } },
		{ .uid = "w/3", .addresses = { "10.0.0.3" }, .services = { { "ns/a" } } },
		{ .uid = "w/bad", .addresses = { "10.0.0.4" } },
	};
	struct harness h;
	struct response r;

	harness_open(&h, NULL, capacity);
	apply_service(&h, &a);
	apply_workloads(&h, &w[0], 1);

	/* Five slots asked for three: the batch overflows and is split after the response is gone. In it:
	 * a removal (which makes room), an invalid resource, and an unnamed one that cannot fit. */
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_remove(&r, "w/0");
	response_add_workload(&r, &w[1], "v1");
	response_add_workload(&r, &w[2], "v1");
	r.msg.resources[1]->name = response_keep(&r, strdup(""));
	response_add_workload(&r, &w[3], "v1");
	Istio__Workload__Workload *bad = workload_from(&r, &w[4]);
	bad->status = 9;
	response_add_workload_msg(&r, bad, "v1");
	apply_releasing(&h, &r, NULL);

	assert_int_equal(h.rejections.count, 2);
	assert_true(has_rejection(&h, "w/bad", "unknown status 9"));
	assert_true(has_rejection(&h, "(unnamed)", "endpoints map would hold"));
	assert_null(backend(&h, "w/0"));
	assert_non_null(backend(&h, "w/1"));
	assert_null(backend(&h, "w/2"));
	assert_non_null(backend(&h, "w/3"));
	assert_int_equal(slots_of(&h, "ns/a", 0, "w/1") + slots_of(&h, "ns/a", 0, "w/3"), 2);
	harness_close(&h);
}

/* A full push's writes reach the writer in parts; a part that fails is undone with all before it. */
enum { LARGE_BATCH = 3000 }; /* about 9,000 writes: a backend, a slot and a frontend each (a workload
				* with a waypoint of its own is a frontend) */

struct large_batch {
	char uids[LARGE_BATCH][16], ips[LARGE_BATCH][16];
	struct workload_spec specs[LARGE_BATCH];
};

static void large_batch_init(struct large_batch *b)
{
	for (int i = 0; i < LARGE_BATCH; i++) {
		snprintf(b->uids[i], sizeof(b->uids[i]), "w/%d", i);
		snprintf(b->ips[i], sizeof(b->ips[i]), "10.1.%d.%d", i / 250, i % 250 + 1);
		b->specs[i] = (struct workload_spec){ .uid = b->uids[i], .addresses = { b->ips[i] },
						      .services = { { REVIEWS } }, .waypoint_ip = "10.0.0.9" };
	}
}

/*
 * The image writer, failing either once at a given write or at every write of one frontend, as a full
 * map does. After a failure it checks, at the first write of the split that follows (a backend's
 * update: the undo never writes one here), that the undo left the maps as they were before the batch,
 * and that no undo deletes what is not there.
 */
struct failing_writer {
	struct sm_map_writer writer;
	struct sm_image_writer *inner;
	size_t fail_at;	 /* the 1-based write that fails, once; 0: none */
	const char *refused; /* a frontend whose every write fails; NULL: none */
	const struct sm_image *before; /* the maps before the batch */
	size_t writes, largest_call;
	bool failed, checked;
	char undo_diff[256]; /* empty: the undo restored the maps, and exactly */
};

static bool refused_write(const struct failing_writer *w, const struct sm_map_op *op)
{
	union sm_map_key key = { .frontend = ip_key(w->refused ? w->refused : "0.0.0.0") };

	return w->refused && op->map == SM_MAP_FRONTENDS && op->kind == SM_OP_UPDATE &&
	       memcmp(&op->key.frontend, &key.frontend, sizeof(key.frontend)) == 0;
}

static int failing_apply(struct sm_map_writer *base, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	struct failing_writer *w = (struct failing_writer *)base;
	size_t ok = 0;

	if (n > w->largest_call)
		w->largest_call = n;
	if (w->failed && !w->checked && ops[0].map == SM_MAP_BACKENDS && ops[0].kind == SM_OP_UPDATE) {
		w->checked = true;
		if (sm_image_equivalent(w->inner->image, w->before, w->undo_diff, sizeof(w->undo_diff)))
			w->undo_diff[0] = '\0';
	}
	for (size_t i = 0; w->failed && i < n && !w->undo_diff[0]; i++) {
		if (ops[i].kind == SM_OP_DELETE && !sm_image_get(w->inner->image, ops[i].map, &ops[i].key))
			snprintf(w->undo_diff, sizeof(w->undo_diff), "a delete of a %s entry that is not there",
				 sm_map_name(ops[i].map)); /* an undo of a write that never took effect */
	}
	while (ok < n && !refused_write(w, &ops[ok]) && w->writes + ok + 1 != w->fail_at)
		ok++;
	int err = w->inner->writer.apply(&w->inner->writer, ops, ok, applied);
	w->writes += *applied;
	if (err || ok == n)
		return err;
	if (w->writes + 1 == w->fail_at)
		w->fail_at = 0;
	w->failed = true;
	return -ENOSPC;
}

/* The maps of a harness given the same service and, when pre_existing, the last workload. */
static struct sm_image *maps_before(const struct large_batch *b, bool pre_existing, struct harness *reference)
{
	harness_open(reference, NULL, NULL);
	apply_service(reference, &reviews);
	if (pre_existing)
		apply_workloads(reference, &b->specs[LARGE_BATCH - 1], 1);
	return reference->kernel;
}

/* Each of thousands of names decided once, as for a few: the first copy of a name sent twice applied,
 * a name both sent and removed rejected, a removal named twice or never sent ignored. */
static void many_names_each_decided_once(void **state)
{
	(void)state;
	struct large_batch *b = malloc(sizeof(*b));
	struct harness h;
	struct response r;
	enum { THIRD = LARGE_BATCH / 3 };

	assert_non_null(b);
	large_batch_init(b);
	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int i = 0; i < LARGE_BATCH; i++)
		response_add_workload(&r, &b->specs[i], "v1");
	/* the second copies move each workload to another address: only the first copy's may be there */
	static char moved[THIRD][16];
	for (int i = 0; i < THIRD; i++) {
		struct workload_spec again = b->specs[i];
		snprintf(moved[i], sizeof(moved[i]), "10.2.%d.%d", i / 250, i % 250 + 1);
		again.addresses[0] = moved[i];
		response_add_workload(&r, &again, "v2");
	}
	for (int i = THIRD; i < 2 * THIRD; i++)
		response_remove(&r, b->uids[i]);
	response_remove(&r, "w/never");
	response_remove(&r, "w/never");
	apply(&h, &r);
	assert_int_equal(h.rejections.count, 2 * THIRD);
	assert_true(has_rejection(&h, b->uids[0], "appears more than once in this response"));
	assert_true(has_rejection(&h, b->uids[THIRD - 1], "appears more than once in this response"));
	assert_true(has_rejection(&h, b->uids[THIRD], "is both sent and removed in this response"));
	assert_true(has_rejection(&h, b->uids[2 * THIRD - 1], "is both sent and removed in this response"));
	for (int i = 0; i < LARGE_BATCH; i++) {
		bool applied = i < THIRD || i >= 2 * THIRD;
		if ((backend(&h, b->uids[i]) != NULL) != applied)
			fail_msg("workload %s: applied %d, expected %d", b->uids[i], !applied, applied);
		if ((frontend(&h, b->ips[i]) != NULL) != applied)
			fail_msg("workload %s: its first copy's address %s there %d, expected %d", b->uids[i], b->ips[i],
				 !applied, applied);
		if (i < THIRD && frontend(&h, moved[i]))
			fail_msg("workload %s: its second copy's address %s was applied", b->uids[i], moved[i]);
	}
	harness_close(&h);
	free(b);
}

static void large_batch_failing_late_is_undone(void **state)
{
	(void)state;
	struct large_batch *b = malloc(sizeof(*b));
	struct harness h, reference;
	struct response r;

	assert_non_null(b);
	large_batch_init(b);
	harness_open(&h, NULL, NULL);
	h.writer.check_each_write = false; /* assert_consistent checks the end state */
	apply_service(&h, &reviews);

	/* The last workload's frontend is among the last writes: every part before it is undone, then each
	 * workload goes alone and only that one is rejected. */
	struct failing_writer failing = { .writer.apply = failing_apply, .inner = &h.writer,
					  .refused = b->ips[LARGE_BATCH - 1],
					  .before = maps_before(b, false, &reference) };
	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int i = 0; i < LARGE_BATCH; i++)
		response_add_workload(&r, &b->specs[i], "v1");
	apply_releasing(&h, &r, &failing.writer);
	assert_true(failing.checked);
	if (failing.undo_diff[0])
		fail_msg("the undo left: %s", failing.undo_diff);
	assert_int_equal(h.rejections.count, 1);
	assert_true(has_rejection(&h, b->uids[LARGE_BATCH - 1], "frontends map is full"));
	assert_true(failing.largest_call < 3 * LARGE_BATCH); /* never the whole plan at once */
	assert_null(backend(&h, b->uids[LARGE_BATCH - 1]));
	assert_null(frontend(&h, b->ips[LARGE_BATCH - 1]));
	assert_non_null(frontend(&h, b->ips[0]));
	assert_int_equal(service(&h, REVIEWS)->endpoint_counts[0], LARGE_BATCH - 1);
	assert_consistent(&h);
	harness_close(&reference);
	harness_close(&h);
	free(b);
}

/* ---- a response whose policies do not all fit the authorization tables ---- */

#define SPLIT_POLICIES 200

/* The admission check, standing in for the compiler: the policies that apply to this node's one workload fit
 * when there are at most `room` of them and none is named huge*. Counts the compilations it stands for. */
struct fake_tables {
	size_t room;
	unsigned calls;
	struct sm_model *stop_at_call_of; /* with stop_at: sm_model_stop_splits at that call, as a SIGTERM would */
	unsigned stop_at;
};

static int fake_check(void *ctx, const struct sm_model *model, char *reason, size_t size)
{
	struct fake_tables *f = ctx;
	struct sm_model_authz *input;
	size_t n;
	int ret = 0;

	if (++f->calls == f->stop_at)
		sm_model_stop_splits(f->stop_at_call_of);
	assert_int_equal(sm_model_authz_build(model, NULL, 0, &input), 0);
	n = input->input->n_destinations ? input->input->destinations[0].n_policies : 0;
	if (n > f->room) {
		snprintf(reason, size, "verdicts: %zu policies, room for %zu", n, f->room);
		ret = -ENOSPC;
	}
	for (size_t i = 0; !ret && i < n; i++) {
		const struct sm_authz_policy *p = input->input->destinations[0].policies[i];
		if (!strncmp(p->name, "huge", 4)) {
			snprintf(reason, size, "cells: %s alone takes more than the limit", p->key);
			ret = -E2BIG;
		}
	}
	sm_model_authz_free(input);
	return ret;
}

static void policy_name(char *buf, size_t size, int i, const int *huge)
{
	bool is_huge = false;

	for (int k = 0; k < 3; k++)
		is_huge |= huge[k] == i;
	snprintf(buf, size, "%s%03d", is_huge ? "huge" : "p", i);
}

/* Which of the response's policies apply to the local workload now. */
static void policies_in_force(const struct harness *h, bool in_force[SPLIT_POLICIES])
{
	struct sm_model_authz *input;

	memset(in_force, 0, SPLIT_POLICIES * sizeof(*in_force));
	assert_int_equal(sm_model_authz_build(h->model, NULL, 0, &input), 0);
	for (size_t d = 0; d < input->input->n_destinations; d++)
		for (size_t i = 0; i < input->input->destinations[d].n_policies; i++) {
			const char *name = input->input->destinations[d].policies[i]->name;
			in_force[atoi(name + (name[0] == 'h' ? 4 : 1))] = true;
		}
	sm_model_authz_free(input);
}

struct split_case {
	const char *title;
	size_t room;
	int huge[3];		/* indices of policies too large alone, -1: none */
	int alone[4];		/* the policies rejected with their own reason, -1 ends */
	int untried_from;	/* the first rejected untried, with every one after it; -1: none */
	unsigned max_calls;	/* one by one took SPLIT_POLICIES + 1 */
};

static const struct split_case split_cases[] = {
	{ "the tables fill up", 150, { -1, -1, -1 }, { 150, 151, -1 }, 152, 24 },
	{ "two policies too large alone, apart", 1000, { 50, 120, -1 }, { 50, 120, -1 }, -1, 40 },
	{ "two in a row: the rest is tried together", 1000, { 50, 51, -1 }, { 50, 51, -1 }, -1, 24 },
	{ "one too large, then the tables fill up", 150, { 10, -1, -1 }, { 10, 151, 152, -1 }, 153, 40 },
};

/* Policies that do not all fit take what applying each alone in turn would, in a few compilations: runs that
 * fit are found by doubling and halving, each policy that does not fit beside them is rejected with its own
 * reason, and two in a row mean that the tables are full: the rest, not fitting together, is rejected untried.
 * (One by one, 10,000 policies that overflow took 10,000 compilations: hours at 100,000 workloads.) */
static void policies_that_overflow_take_a_few_compilations(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(split_cases) / sizeof(*split_cases); c++) {
		const struct split_case *sc = &split_cases[c];
		struct fake_tables tables = { .room = sc->room };
		struct workload_spec local = { .uid = "w/local", .addresses = { "10.0.0.1" }, .node = "node-a",
					       .namespace = "ns" };
		bool in_force[SPLIT_POLICIES], want_alone[SPLIT_POLICIES] = { false };
		struct harness h;
		struct response r;
		char name[16];

		harness_open(&h, "node-a", NULL);
		apply_workloads(&h, &local, 1);
		sm_model_set_authz_check(h.model, fake_check, &tables);
		response_init(&r, SM_TYPE_URL_AUTHORIZATION);
		for (int i = 0; i < SPLIT_POLICIES; i++) {
			policy_name(name, sizeof(name), i, sc->huge);
			response_add_allow_from_namespace(&r, "ns", name, "ns");
		}
		apply(&h, &r);
		for (int k = 0; k < 4 && sc->alone[k] >= 0; k++)
			want_alone[sc->alone[k]] = true;
		policies_in_force(&h, in_force);
		for (int i = 0; i < SPLIT_POLICIES; i++) {
			bool untried = sc->untried_from >= 0 && i >= sc->untried_from;
			char key[32];

			policy_name(name, sizeof(name), i, sc->huge);
			snprintf(key, sizeof(key), "ns/%s", name);
			if (in_force[i] == (want_alone[i] || untried))
				fail_msg("%s: %s %s", sc->title, key, in_force[i] ? "in force" : "not in force");
			if (want_alone[i] && !has_rejection(&h, key, i == sc->huge[0] || i == sc->huge[1] ? "alone takes more"
													    : "room for"))
				fail_msg("%s: %s not rejected with its own reason", sc->title, key);
			if (untried && !has_rejection(&h, key, "not tried alone: the two policies before it did not fit"))
				fail_msg("%s: %s not rejected untried", sc->title, key);
		}
		assert_int_equal(h.rejections.count, (size_t)(sc->untried_from >= 0 ? SPLIT_POLICIES - sc->untried_from : 0) +
							 (size_t)(sc->alone[2] >= 0 ? 3 : 2));
		if (tables.calls > sc->max_calls)
			fail_msg("%s: %u compilations, more than %u", sc->title, tables.calls, sc->max_calls);
		printf("# %s: %u compilations\n", sc->title, tables.calls);
		harness_close(&h);
	}
}

/* Policies applied in response order (i from first), under names p<i>. */
static struct response policy_response(int first, int n)
{
	struct response r;
	char name[16];

	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	for (int i = first; i < first + n; i++) {
		snprintf(name, sizeof(name), "p%03d", i);
		response_add_allow_from_namespace(&r, "ns", name, "ns");
	}
	return r;
}

/* A split stopped (the agent's SIGTERM) ends before its next run: the runs taken stand, written, nothing is
 * rejected, and no split starts after it; a response that fits whole is still applied. */
static void stopped_split_keeps_the_runs_it_took(void **state)
{
	(void)state;
	struct fake_tables tables = { .room = 120, .stop_at = 2 };
	struct workload_spec local = { .uid = "w/local", .addresses = { "10.0.0.1" }, .node = "node-a",
				       .namespace = "ns" };
	bool in_force[SPLIT_POLICIES];
	struct harness h;
	struct response r = policy_response(0, SPLIT_POLICIES);

	harness_open(&h, "node-a", NULL);
	apply_workloads(&h, &local, 1);
	tables.stop_at_call_of = h.model;
	sm_model_set_authz_check(h.model, fake_check, &tables);
	/* the whole response, then a run of the first 100, during which the splits are stopped */
	assert_int_equal(sm_model_apply(h.model, &r.msg, &h.writer.writer, &h.rejections), -ECANCELED);
	response_free(&r);
	assert_int_equal(tables.calls, 2);
	assert_int_equal(h.rejections.count, 0);
	assert_consistent(&h);
	policies_in_force(&h, in_force);
	for (int i = 0; i < SPLIT_POLICIES; i++)
		if (in_force[i] != (i < 100))
			fail_msg("p%03d %s", i, in_force[i] ? "in force" : "not in force");

	r = policy_response(0, SPLIT_POLICIES); /* does not fit whole: no split starts */
	assert_int_equal(sm_model_apply(h.model, &r.msg, &h.writer.writer, &h.rejections), -ECANCELED);
	response_free(&r);
	assert_int_equal(tables.calls, 3);
	assert_consistent(&h);
	policies_in_force(&h, in_force);
	assert_true(in_force[99] && !in_force[100]);

	r = policy_response(100, 3); /* fits whole */
	apply_ok(&h, &r);
	assert_int_equal(tables.calls, 4);
	policies_in_force(&h, in_force);
	assert_true(in_force[102] && !in_force[103]);
	harness_close(&h);
}

/* What the hook between a split's runs sees: the model as the runs taken left it, whole. */
struct between_runs_probe {
	struct harness *h;
	const struct fake_tables *tables;
	unsigned calls, stop_at;
	size_t held; /* the policies the model held at the last call */
	uint64_t generation; /* the model's, at the last call */
};

static void probe_between_runs(void *ctx)
{
	struct between_runs_probe *p = ctx;
	struct sm_model_stats stats;
	bool in_force[SPLIT_POLICIES];
	size_t n_in_force = 0;

	/* each run compiles once, after the whole response's compilation: one call before each */
	assert_int_equal(++p->calls, p->tables->calls);
	assert_consistent(p->h);
	policies_in_force(p->h, in_force);
	for (int i = 0; i < SPLIT_POLICIES; i++)
		n_in_force += in_force[i];
	sm_model_stats(p->h->model, &stats);
	assert_int_equal(stats.authorizations, n_in_force);
	if (stats.authorizations < p->held)
		fail_msg("call %u: %zu policies held, %zu at the call before", p->calls, stats.authorizations, p->held);
	p->held = stats.authorizations;
	/* names read here are kept by pointer while it stays (telemetry): the runs in between may free them */
	assert_true(sm_model_generation(p->h->model) > p->generation);
	p->generation = sm_model_generation(p->h->model);
	json_t *dump = sm_model_config_dump(p->h->model); /* the staged items' entities are kept meanwhile */
	assert_non_null(dump);
	assert_int_equal(json_array_size(json_object_get(dump, "policies")), stats.authorizations);
	json_decref(dump);
	if (p->calls == p->stop_at)
		sm_model_stop_splits(p->h->model);
}

/* Before each run of a split, the hook the agent lets readers in by: the runs taken are committed and the
 * model reads whole (maps, image, counts and dump agree); a stop that comes there ends the split at once. */
static void readers_between_a_splits_runs_see_what_it_took(void **state)
{
	(void)state;
	for (unsigned stop_at = 0; stop_at <= 3; stop_at += 3) {
		struct fake_tables tables = { .room = 120 };
		struct workload_spec local = { .uid = "w/local", .addresses = { "10.0.0.1" }, .node = "node-a",
					       .namespace = "ns" };
		struct harness h;
		struct between_runs_probe probe = { .h = &h, .tables = &tables, .stop_at = stop_at };
		struct response r = policy_response(0, SPLIT_POLICIES);
		bool in_force[SPLIT_POLICIES];

		harness_open(&h, "node-a", NULL);
		apply_workloads(&h, &local, 1);
		sm_model_set_authz_check(h.model, fake_check, &tables);
		sm_model_set_between_runs(h.model, probe_between_runs, &probe);
		assert_int_equal(sm_model_apply(h.model, &r.msg, &h.writer.writer, &h.rejections),
				 stop_at ? -ECANCELED : 0);
		response_free(&r);
		assert_int_equal(probe.calls, stop_at ? stop_at : tables.calls - 1);
		if (stop_at)
			assert_int_equal(tables.calls, stop_at); /* no run after the stop */
		assert_consistent(&h);
		policies_in_force(&h, in_force);
		assert_true(in_force[0]);
		if (!stop_at)
			assert_true(in_force[119] && !in_force[120]);
		printf("# stop at call %u: %u calls, %zu policies held at the last\n", stop_at, probe.calls, probe.held);
		harness_close(&h);
	}
}

static void large_batch_failing_at_each_part_is_undone(void **state)
{
	(void)state;
	struct large_batch *b = malloc(sizeof(*b));

	assert_non_null(b);
	large_batch_init(b);
	/* A failure at the first, a middle and the last write of a part, and past the second part. */
	const size_t fail_at[] = { 1, 2048, 4096, 4097, 8192, 8193, 8990 };
	for (size_t f = 0; f < sizeof(fail_at) / sizeof(fail_at[0]); f++) {
		struct harness h, reference;
		struct response r;

		harness_open(&h, NULL, NULL);
		h.writer.check_each_write = false;
		apply_service(&h, &reviews);
		apply_workloads(&h, &b->specs[LARGE_BATCH - 1], 1); /* there before: must stay */
		struct failing_writer failing = { .writer.apply = failing_apply, .inner = &h.writer,
						  .fail_at = fail_at[f], .before = maps_before(b, true, &reference) };
		response_init(&r, SM_TYPE_URL_ADDRESS);
		for (int i = 0; i < LARGE_BATCH - 1; i++)
			response_add_workload(&r, &b->specs[i], "v1");
		apply_releasing(&h, &r, &failing.writer);
		if (!failing.checked)
			fail_msg("failing at write %zu: no split followed", fail_at[f]);
		if (failing.undo_diff[0])
			fail_msg("failing at write %zu, the undo left: %s", fail_at[f], failing.undo_diff);
		assert_int_equal(h.rejections.count, 0); /* undone, then split: everything fits */
		assert_non_null(frontend(&h, b->ips[LARGE_BATCH - 1]));
		assert_int_equal(service(&h, REVIEWS)->endpoint_counts[0], LARGE_BATCH);
		assert_consistent(&h);
		harness_close(&reference);
		harness_close(&h);
	}
	free(b);
}

/* ---- restarts ---- */

/* An image holding what the kernel's maps hold, as a restarted agent reads them. */
static struct sm_image *read_back(const struct sm_image *kernel)
{
	struct sm_image *image;

	assert_int_equal(sm_image_new(&image), 0);
	assert_int_equal(image_copy(image, kernel), 0);
	return image;
}

/* taking: the model takes the image read back (sm_model_adopt_image), else copies the kernel's */
static void restart_rewrites_nothing_unchanged(bool taking)
{
	struct harness h;
	struct response r;
	struct workload_spec w[] = {
		{ .uid = "w/1", .addresses = { "10.0.0.1" }, .services = { { REVIEWS } } },
		{ .uid = "w/2", .addresses = { "10.0.0.2", "fd00::2" }, .services = { { REVIEWS }, { RATINGS } }, .capacity = 2 },
		{ .uid = "w/gone", .addresses = { "10.0.0.3" }, .services = { { RATINGS } }, .waypoint_ip = "10.0.0.9" },
	};

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	apply_service(&h, &ratings);
	apply_workloads(&h, w, 3);
	uint32_t reviews_id = sm_model_service_id(h.model, REVIEWS);
	uint32_t w2_id = sm_model_backend_id(h.model, "w/2");

	/* A new agent adopts the maps, and istiod sends everything but w/gone, in another order. */
	sm_model_free(h.model);
	assert_int_equal(sm_model_new(&(struct sm_model_options){ 0 }, &h.model), 0);
	if (taking)
		assert_int_equal(sm_model_adopt_image(h.model, read_back(h.kernel)), 0);
	else
		assert_int_equal(sm_model_adopt(h.model, h.kernel), 0);
	size_t ops_before = h.writer.ops_applied;
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &w[1], "v1");
	response_add_service(&r, &ratings, "v1");
	response_add_workload(&r, &w[0], "v1");
	response_add_service(&r, &reviews, "v1");
	apply_ok(&h, &r);
	assert_int_equal(sm_model_service_id(h.model, REVIEWS), reviews_id);
	assert_int_equal(sm_model_backend_id(h.model, "w/2"), w2_id);
	/* Only w/gone's entries went: its frontend, its slot (the last, so no move), its backend. */
	assert_int_equal(h.writer.ops_applied - ops_before, 4);
	assert_null(frontend(&h, "10.0.0.3"));
	assert_int_equal(sm_image_count(h.kernel, SM_MAP_BACKENDS), 2);
	harness_close(&h);
}

static void restart_copying_the_maps(void **state)
{
	(void)state;
	restart_rewrites_nothing_unchanged(false);
}

static void restart_taking_the_maps_read_back(void **state)
{
	(void)state;
	restart_rewrites_nothing_unchanged(true);
}

/* A model that holds entries already refuses to take an image (and frees it): it is not the one the
 * model's entities point into. */
static void adopting_into_a_model_that_holds_entries(void **state)
{
	(void)state;
	struct harness h;

	harness_open(&h, NULL, NULL);
	apply_service(&h, &reviews);
	uint32_t id = sm_model_service_id(h.model, REVIEWS);
	const struct sm_image *before = sm_model_image(h.model);
	assert_int_equal(sm_model_adopt_image(h.model, read_back(h.kernel)), -EBUSY);
	assert_ptr_equal(sm_model_image(h.model), before);
	assert_int_equal(sm_model_service_id(h.model, REVIEWS), id);
	assert_int_equal(sm_image_count(sm_model_image(h.model), SM_MAP_SERVICES), 1);
	harness_close(&h);
}

/*
 * A restart's first push sets every entry to what it holds. Such sets leave no record in the image's
 * transaction; an entry set so and then changed must still be written once and undone to what it held.
 */
static void setting_entries_to_what_they_hold(void **state)
{
	(void)state;
	struct sm_image *image;
	union sm_map_key keys[SM_MAP_COUNT] = {
		[SM_MAP_FRONTENDS] = { .frontend = ip_key("10.96.0.10") },
		[SM_MAP_SERVICES] = { .id = 2 },
		[SM_MAP_ENDPOINTS] = { .endpoint = { .service_id = 2 } },
		[SM_MAP_BACKENDS] = { .id = 1 },
	};
	struct sm_frontend_value frontend_value = { .id = 2, .kind = SM_FRONTEND_SERVICE };
	struct sm_service_value service_value = { .name_hash = 22, .endpoint_counts = { 1 } };
	struct sm_endpoint_value endpoint_value = { .backend_id = 1 };
	struct sm_backend_value backend_value = { .name_hash = 11 }, changed = { .name_hash = 99 };
	const void *values[SM_MAP_COUNT] = { &frontend_value, &service_value, &endpoint_value, &backend_value };
	union sm_map_key absent = { .id = 7 };
	struct diff_cursor cursor;
	struct plan plan = { 0 };

	assert_int_equal(sm_image_new(&image), 0);
	for (int m = SM_MAP_COUNT - 1; m >= 0; m--)
		assert_int_equal(sm_image_set(image, m, &keys[m], values[m]), 0);
	image_begin(image);
	for (int m = 0; m < SM_MAP_COUNT; m++)
		assert_int_equal(sm_image_set(image, m, &keys[m], values[m]), 0);
	assert_int_equal(sm_image_set(image, SM_MAP_SERVICES, &absent, NULL), 0);
	assert_int_equal(sm_image_set(image, SM_MAP_BACKENDS, &keys[SM_MAP_BACKENDS], &changed), 0);

	image_diff_begin(image, &cursor);
	assert_int_equal(image_diff_next(image, &cursor, &plan, 16), 0);
	assert_int_equal(plan.n, 1);
	assert_int_equal(plan.ops[0].map, SM_MAP_BACKENDS);
	assert_int_equal(((const struct sm_backend_value *)plan.ops[0].value)->name_hash, 99);

	image_rollback(image);
	for (int m = 0; m < SM_MAP_COUNT; m++) {
		assert_int_equal(sm_image_count(image, m), 1);
		assert_memory_equal(sm_image_get(image, m, &keys[m]), values[m], sm_map_value_size(m));
	}
	assert_null(sm_image_get(image, SM_MAP_SERVICES, &absent));
	plan_free(&plan);
	sm_image_free(image);
}

/* Each op of the diff, and of its undo, says what the map holds until it (a writer that splits a run puts
 * that back past a failure). */
static void ops_say_what_the_map_held(void **state)
{
	(void)state;
	struct sm_image *image;
	struct sm_backend_value a = { .name_hash = 1 }, b = { .name_hash = 2 }, c = { .name_hash = 3 };
	struct sm_service_value service = { .name_hash = 4 };
	union sm_map_key one = { .id = 1 }, two = { .id = 2 };
	struct diff_cursor cursor;
	struct plan plan = { 0 };

	assert_int_equal(sm_image_new(&image), 0);
	assert_int_equal(sm_image_set(image, SM_MAP_BACKENDS, &one, &a), 0);
	assert_int_equal(sm_image_set(image, SM_MAP_SERVICES, &two, &service), 0);
	image_begin(image);
	assert_int_equal(sm_image_set(image, SM_MAP_BACKENDS, &one, &b), 0);
	assert_int_equal(sm_image_set(image, SM_MAP_BACKENDS, &two, &c), 0);
	assert_int_equal(sm_image_set(image, SM_MAP_SERVICES, &two, NULL), 0);

	image_diff_begin(image, &cursor);
	assert_int_equal(image_diff_next(image, &cursor, &plan, 16), 0);
	assert_int_equal(plan.n, 3); /* the backends' updates, then the service's delete */
	assert_memory_equal(plan.ops[0].value, &b, sizeof(b));
	assert_memory_equal(plan.ops[0].before, &a, sizeof(a));
	assert_memory_equal(plan.ops[1].value, &c, sizeof(c));
	assert_null(plan.ops[1].before);
	assert_int_equal(plan.ops[2].kind, SM_OP_DELETE);
	assert_memory_equal(plan.ops[2].before, &service, sizeof(service));

	/* all three written: the undo, last first */
	assert_int_equal(image_undo_next(image, &cursor, &plan, 16), 0);
	assert_int_equal(plan.n, 3);
	assert_memory_equal(plan.ops[0].value, &service, sizeof(service));
	assert_null(plan.ops[0].before);
	assert_int_equal(plan.ops[1].kind, SM_OP_DELETE);
	assert_memory_equal(plan.ops[1].before, &c, sizeof(c));
	assert_memory_equal(plan.ops[2].value, &a, sizeof(a));
	assert_memory_equal(plan.ops[2].before, &b, sizeof(b));

	image_rollback(image);
	plan_free(&plan);
	sm_image_free(image);
}

/*
 * A restart near a map's capacity takes what a fresh start takes: the entries of an earlier config
 * that the new one no longer holds must not take the room of the new config's resources. The config
 * is services first..first+n (one VIP each) and two workloads in each.
 */
static size_t apply_config(struct harness *h, size_t first, size_t n)
{
	struct response r;
	char hostnames[16][48], members[16][48], uids[32][16], ips[32][16], vips[16][16];

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (size_t i = 0; i < n; i++) {
		size_t s = first + i;
		snprintf(hostnames[i], sizeof(hostnames[i]), "svc%zu.default.svc", s);
		snprintf(members[i], sizeof(members[i]), "default/svc%zu.default.svc", s);
		snprintf(vips[i], sizeof(vips[i]), "10.96.1.%zu", s + 1);
		struct service_spec spec = { .namespace = "default", .hostname = hostnames[i], .vips = { vips[i] },
					     .ports = { { 80, 8080 } } };
		response_add_service(&r, &spec, "v1");
		for (size_t k = 0; k < 2; k++) {
			snprintf(uids[2 * i + k], sizeof(uids[0]), "w/%zu-%zu", s, k);
			snprintf(ips[2 * i + k], sizeof(ips[0]), "10.0.%zu.%zu", s + 1, k + 1);
			struct workload_spec w = { .uid = uids[2 * i + k], .addresses = { ips[2 * i + k] },
						   .services = { { members[i] } } };
			response_add_workload(&r, &w, "v1");
		}
	}
	apply(h, &r);
	return h->rejections.count;
}

static void restart_near_capacity_rejects_what_a_fresh_start_does(void **state)
{
	(void)state;
	static const uint32_t limits[SM_MAP_COUNT][SM_MAP_COUNT] = {
		[SM_MAP_SERVICES] = { [SM_MAP_SERVICES] = 8 },
		[SM_MAP_FRONTENDS] = { [SM_MAP_FRONTENDS] = 20 },
		[SM_MAP_ENDPOINTS] = { [SM_MAP_ENDPOINTS] = 14 },
		[SM_MAP_BACKENDS] = { [SM_MAP_BACKENDS] = 14 },
	};

	for (int l = 0; l < SM_MAP_COUNT; l++) {
		struct harness fresh, restarted;
		struct sm_model_options options = { 0 };

		/* the second config on a fresh datapath */
		harness_open(&fresh, NULL, limits[l]);
		size_t fresh_rejected = apply_config(&fresh, 4, 12);
		/* the first config, then a restart with the second */
		harness_open(&restarted, NULL, limits[l]);
		apply_config(&restarted, 0, 12);
		sm_model_free(restarted.model);
		memcpy(options.capacity, limits[l], sizeof(options.capacity));
		assert_int_equal(sm_model_new(&options, &restarted.model), 0);
		assert_int_equal(sm_model_adopt(restarted.model, restarted.kernel), 0);
		size_t restart_rejected = apply_config(&restarted, 4, 12);
		if (restart_rejected != fresh_rejected)
			fail_msg("the %s map at capacity: %zu rejected after a restart, %zu on a fresh start",
				 sm_map_name(l),
				 restart_rejected, fresh_rejected);
		for (int m = 0; m < SM_MAP_COUNT; m++)
			assert_int_equal(sm_image_count(restarted.kernel, m), sm_image_count(fresh.kernel, m));
		harness_close(&fresh);
		harness_close(&restarted);
	}
}

/* ---- authorizations and dumps ---- */

static void authorizations_select_workloads(void **state)
{
	(void)state;
	struct harness h;
	struct response r;
	Istio__Security__Authorization allow_init = ISTIO__SECURITY__AUTHORIZATION__INIT;
	Istio__Security__Authorization global = allow_init, in_ns = allow_init, selector = allow_init, bad = allow_init;

	harness_open(&h, NULL, NULL);
	global.name = "all", global.namespace_ = "istio-system", global.scope = ISTIO__SECURITY__SCOPE__GLOBAL;
	in_ns.name = "ns-wide", in_ns.namespace_ = "default", in_ns.scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
	selector.name = "pick", selector.namespace_ = "default", selector.scope = ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR;
	bad.name = "bad", bad.namespace_ = "default", bad.action = 5;
	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	response_add_message(&r, "istio-system/all", "v1", SM_TYPE_URL_AUTHORIZATION, &global.base);
	response_add_message(&r, "default/ns-wide", "v1", SM_TYPE_URL_AUTHORIZATION, &in_ns.base);
	response_add_message(&r, "default/pick", "v1", SM_TYPE_URL_AUTHORIZATION, &selector.base);
	response_add_message(&r, "default/bad", "v1", SM_TYPE_URL_AUTHORIZATION, &bad.base);
	apply(&h, &r);
	assert_int_equal(h.rejections.count, 1);
	assert_true(has_rejection(&h, "default/bad", "action 5 is not ALLOW or DENY"));

	struct workload_spec w[] = {
		{ .uid = "w/picked", .addresses = { "10.0.0.1" }, .namespace = "default", .policies = { "default/pick" } },
		{ .uid = "w/other", .addresses = { "10.0.0.2" }, .namespace = "other" },
		/* names its selector policy twice, and two that apply to it by their scope anyway */
		{ .uid = "w/repeats", .addresses = { "10.0.0.3" }, .namespace = "default",
		  .policies = { "default/pick", "default/ns-wide", "default/pick", "istio-system/all" } },
	};
	apply_workloads(&h, w, 3);

	const struct sm_authz_policy **applied;
	size_t n_applied;
	bool local;
	uint8_t repeats_addr[16] = { [10] = 0xff, [11] = 0xff, [12] = 10, [15] = 3 };
	assert_int_equal(sm_model_authz_policies_for(h.model, repeats_addr, &applied, &n_applied, &local), 0);
	assert_int_equal(n_applied, 3); /* each once: all, ns-wide, pick */
	for (size_t i = 0; i < n_applied; i++)
		for (size_t j = i + 1; j < n_applied; j++)
			assert_ptr_not_equal(applied[i], applied[j]);
	free(applied);

	json_t *dump = sm_model_config_dump(h.model);
	assert_non_null(dump);
	json_t *picked = json_object_get(json_object_get(dump, "workloads"), "/10.0.0.1");
	json_t *other = json_object_get(json_object_get(dump, "workloads"), "/10.0.0.2");
	assert_int_equal(json_array_size(json_object_get(picked, "authorizationPolicies")), 3);
	assert_int_equal(json_array_size(json_object_get(other, "authorizationPolicies")), 1);
	assert_int_equal(json_array_size(json_object_get(dump, "policies")), 3);
	json_decref(dump);

	struct sm_model_stats stats;
	sm_model_stats(h.model, &stats);
	assert_int_equal(stats.authorizations, 3);
	remove_names(&h, (const char *[]){ "w/picked" }, 1);
	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	response_remove(&r, "default/pick");
	apply_ok(&h, &r);
	sm_model_stats(h.model, &stats);
	assert_int_equal(stats.authorizations, 2);
	harness_close(&h);
}

static void apply_policy(struct harness *h, const char *name, Istio__Security__Action action)
{
	Istio__Security__Authorization policy = ISTIO__SECURITY__AUTHORIZATION__INIT;
	struct response r;
	char key[64];

	policy.name = (char *)name, policy.namespace_ = "default", policy.scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
	policy.action = action;
	snprintf(key, sizeof(key), "default/%s", name);
	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	response_add_message(&r, key, "v1", SM_TYPE_URL_AUTHORIZATION, &policy.base);
	apply_ok(h, &r);
}

struct authz_counts {
	uint64_t all, destinations;
};

static struct authz_counts authz_counts(const struct harness *h)
{
	return (struct authz_counts){ sm_model_authz_generation(h->model),
				      sm_model_authz_destinations_generation(h->model) };
}

/* Which of the two authorization counters a change moves: both for a policy or a workload of this node,
 * only the first for another node's workload; neither for a policy sent again unchanged, nor for a batch
 * undone. */
static void authz_generations_follow_their_side(void **state)
{
	(void)state;
	struct harness h;
	struct response r;
	struct workload_spec local = { .uid = "w/local", .addresses = { "10.0.0.2" }, .node = "node-a",
				       .namespace = "default" };
	struct workload_spec remote = { .uid = "w/remote", .addresses = { "10.0.0.1" }, .node = "node-b",
					.namespace = "default" };
	struct workload_spec refused = { .uid = "w/refused", .addresses = { "10.0.0.3" }, .node = "node-a",
					 .namespace = "default", .services = { { REVIEWS } } };
	struct authz_counts was, now;

	harness_open(&h, "node-a", NULL);
	apply_service(&h, &reviews);
	apply_workloads(&h, &local, 1);
	was = authz_counts(&h);
	apply_policy(&h, "deny", ISTIO__SECURITY__ACTION__DENY);
	now = authz_counts(&h);
	assert_true(now.all == was.all + 1 && now.destinations == was.destinations + 1);

	was = now;
	apply_policy(&h, "deny", ISTIO__SECURITY__ACTION__DENY); /* the same again */
	now = authz_counts(&h);
	assert_true(now.all == was.all && now.destinations == was.destinations);
	apply_policy(&h, "deny", ISTIO__SECURITY__ACTION__ALLOW);
	now = authz_counts(&h);
	assert_true(now.all == was.all + 1 && now.destinations == was.destinations + 1);

	was = now;
	apply_workloads(&h, &remote, 1);
	now = authz_counts(&h);
	assert_true(now.all == was.all + 1 && now.destinations == was.destinations);
	remote.namespace = "other";
	apply_workloads(&h, &remote, 1);
	now = authz_counts(&h);
	assert_true(now.all == was.all + 2 && now.destinations == was.destinations);
	remote.node = "node-a"; /* moved here: now a destination */
	apply_workloads(&h, &remote, 1);
	now = authz_counts(&h);
	assert_true(now.all == was.all + 3 && now.destinations == was.destinations + 1);

	was = now;
	local.addresses[1] = "10.0.0.4";
	apply_workloads(&h, &local, 1);
	now = authz_counts(&h);
	assert_true(now.all == was.all + 1 && now.destinations == was.destinations + 1);

	/* a batch undone changes neither */
	was = now;
	h.writer.fail_after = h.writer.ops_applied + 1;
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &refused, "v1");
	apply(&h, &r);
	assert_true(has_rejection(&h, "w/refused", "map is full"));
	now = authz_counts(&h);
	assert_true(now.all == was.all && now.destinations == was.destinations);
	harness_close(&h);
}

/* Workloads of another node, each with its own service account (sa-UID) and the address shared. */
static void apply_sharing(struct harness *h, const char *const *uids, size_t n, const char *shared)
{
	struct response r;
	char sa[8][32];

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (size_t i = 0; i < n; i++) {
		struct workload_spec spec = { .uid = uids[i], .addresses = { shared }, .node = "node-b",
					      .namespace = "default" };
		Istio__Workload__Workload *w = workload_from(&r, &spec);
		snprintf(sa[i], sizeof(sa[i]), "sa-%s", uids[i]);
		w->service_account = response_keep(&r, strdup(sa[i]));
		response_add_workload_msg(&r, w, "v1");
	}
	apply_ok(h, &r);
}

/* The compiler's input holds an address that several workloads share once, with the identity the model's
 * lookup gives (explain and the node's addresses use it), whatever order they came and went in. */
static void shared_address_has_the_lookups_identity(void **state)
{
	(void)state;
	struct harness h;
	struct workload_spec local = { .uid = "w/local", .addresses = { "10.0.0.2" }, .node = "node-a",
				       .namespace = "default" };
	const uint8_t shared[16] = { [10] = 0xff, [11] = 0xff, [12] = 10, [15] = 9 };

	harness_open(&h, "node-a", NULL);
	apply_workloads(&h, &local, 1);
	apply_policy(&h, "deny", ISTIO__SECURITY__ACTION__DENY);
	apply_sharing(&h, (const char *[]){ "a", "b", "c", "d" }, 4, "10.0.0.9");
	for (int step = 0; step < 3; step++) {
		struct sm_model_authz *input;
		struct sm_authz_tables *tables;
		struct sm_authz_identity want;
		char reason[256];
		size_t held = 0;

		assert_true(sm_model_authz_identity(h.model, shared, &want));
		assert_int_equal(sm_model_authz_build(h.model, NULL, 0, &input), 0);
		assert_int_equal(sm_authz_compile(input->input, 1, &tables, reason, sizeof(reason)), 0);
		for (size_t i = 0; i < tables->n_idents; i++) {
			if (memcmp(tables->ident_keys[i].addr, shared, 16))
				continue;
			held++;
			if (tables->ident_values[i].identity != sm_authz_identity_hash(&want))
				fail_msg("step %d: the tables hold another identity than %s's", step, want.service_account);
		}
		assert_int_equal(held, 1);
		sm_authz_tables_free(tables);
		sm_model_authz_free(input);
		if (step == 0) /* the first one gone: the lookup's owner is no longer the first listed */
			remove_names(&h, (const char *[]){ "a" }, 1);
		else if (step == 1) /* another one given a new definition */
			apply_sharing(&h, (const char *[]){ "c" }, 1, "10.0.0.9");
	}

	/* the owner that answers redefined without an authorization change (relinked): the same answer */
	struct sm_authz_identity before, after;
	uint64_t generation = sm_model_authz_generation(h.model);
	struct workload_spec b = { .uid = "b", .addresses = { "10.0.0.9" }, .node = "node-b", .namespace = "default",
				   .capacity = 7 };
	struct response r;
	assert_true(sm_model_authz_identity(h.model, shared, &before));
	response_init(&r, SM_TYPE_URL_ADDRESS);
	Istio__Workload__Workload *msg = workload_from(&r, &b);
	msg->service_account = "sa-b";
	response_add_workload_msg(&r, msg, "v2");
	apply_ok(&h, &r);
	assert_true(sm_model_authz_identity(h.model, shared, &after));
	assert_int_equal(sm_model_authz_generation(h.model), generation);
	assert_string_equal(after.service_account, before.service_account);
	harness_close(&h);
}

static void fixture_stream_applies(void **state)
{
	(void)state;
	struct harness h;
	ProtobufCMessage *responses[3];

	harness_open(&h, "worker-2", NULL);
	fixture_responses("wire/stream.xds", responses, 3);
	for (int i = 0; i < 3; i++) {
		ProtobufCMessage *response = responses[i];
		sm_rejections_clear(&h.rejections);
		assert_int_equal(sm_model_apply(h.model, (void *)response, &h.writer.writer, &h.rejections), 0);
		assert_int_equal(h.rejections.count, 0);
		assert_consistent(&h);
		if (i == 0) {
			/* reviews: a VIP each family, a waypoint by address; its workload is unhealthy but the
			 * service allows all, with capacity 3 and its own target port 9081. */
			const struct sm_service_value *value = service(&h, REVIEWS);
			assert_non_null(value);
			assert_int_equal(value->lb_mode, SM_LB_FAILOVER);
			assert_int_equal(value->waypoint.flags, SM_WAYPOINT_V4);
			assert_int_equal(value->endpoint_counts[0], 3);
			assert_int_equal(ntohs(first_slot(&h, REVIEWS, 0)->target_ports[0]), 9081);
			assert_non_null(frontend(&h, "10.96.12.7"));
			assert_int_equal(frontend(&h, "10.244.2.19")->kind, SM_FRONTEND_WORKLOAD);
			json_t *dump = sm_model_config_dump(h.model);
			assert_non_null(json_object_get(json_object_get(dump, "workloads"), "net1/10.244.2.19"));
			assert_non_null(json_object_get(json_object_get(dump, "services"), "/10.96.12.7"));
			json_decref(dump);
		}
		protobuf_c_message_free_unpacked(response, NULL);
	}
	for (int map = 0; map < SM_MAP_COUNT; map++)
		assert_int_equal(sm_image_count(h.kernel, map), 0);
	harness_close(&h);
}

int main(void)
{
	static const struct CMUnitTest named[] = {
		cmocka_unit_test(workload_before_its_service),
		cmocka_unit_test(service_removed_before_its_workloads),
		cmocka_unit_test(service_and_workloads_in_one_response),
		cmocka_unit_test(workload_moves_between_services),
		cmocka_unit_test(hole_filled_by_the_last_slot),
		cmocka_unit_test(vips_change),
		cmocka_unit_test(unchanged_resource_writes_nothing),
		cmocka_unit_test(load_balancing_modes_and_locality),
		cmocka_unit_test(fixed_locality_option),
		cmocka_unit_test(health_and_weight),
		cmocka_unit_test(waypoints),
		cmocka_unit_test(address_conflicts_resolve_by_rule),
		cmocka_unit_test(rejection_keeps_the_previous_state),
		cmocka_unit_test(malformed_resources),
		cmocka_unit_test(overflow_is_rejected_whole),
		cmocka_unit_test(failed_write_is_undone),
		cmocka_unit_test(local_generation_follows_this_nodes_workloads),
		cmocka_unit_test(split_after_release_needs_no_response),
		cmocka_unit_test(many_names_each_decided_once),
		cmocka_unit_test(large_batch_failing_late_is_undone),
		cmocka_unit_test(policies_that_overflow_take_a_few_compilations),
		cmocka_unit_test(stopped_split_keeps_the_runs_it_took),
		cmocka_unit_test(readers_between_a_splits_runs_see_what_it_took),
		cmocka_unit_test(large_batch_failing_at_each_part_is_undone),
		cmocka_unit_test(restart_copying_the_maps),
		cmocka_unit_test(restart_taking_the_maps_read_back),
		cmocka_unit_test(adopting_into_a_model_that_holds_entries),
		cmocka_unit_test(setting_entries_to_what_they_hold),
		cmocka_unit_test(ops_say_what_the_map_held),
		cmocka_unit_test(restart_near_capacity_rejects_what_a_fresh_start_does),
		cmocka_unit_test(authorizations_select_workloads),
		cmocka_unit_test(authz_generations_follow_their_side),
		cmocka_unit_test(shared_address_has_the_lookups_identity),
		cmocka_unit_test(fixture_stream_applies),
	};
	struct CMUnitTest tests[TEST_ARRAY_SIZE(named) + TEST_ARRAY_SIZE(bad_cases)];
	size_t n = 0;

	for (size_t i = 0; i < TEST_ARRAY_SIZE(named); i++)
		tests[n++] = named[i];

	for (size_t i = 0; i < TEST_ARRAY_SIZE(bad_cases); i++)
		tests[n++] = (struct CMUnitTest){ bad_cases[i].title, bad_resource_rejected_alone, NULL, NULL,
						  (void *)&bad_cases[i] };
	return _cmocka_run_group_tests("workload", tests, n, NULL, NULL);
}
