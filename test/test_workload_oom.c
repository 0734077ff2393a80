/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory running short in the model's apply, at every allocation in turn, once or from there on: the apply
 * returns 0 or -ENOMEM and never exits (libraries never do); the maps still equal the model's image; a
 * failed apply leaves the model and the maps as if the response had never come, and an apply that took it
 * as if memory had never been short; once memory is back the same response gives what a model that never
 * ran short gives. Ids may differ (a rolled-back batch moves them on), so maps are compared by the names
 * they stand for, and models by their counts and lookups by address. In a restarted agent's first push,
 * whose ids follow what it adopted, they may not differ: once memory is back, every id is the one adopted.
 *
 * The libraries linked in statically (workload, authz, proto) allocate through failing_alloc.h.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "failing_writer.h"
#include "model_harness.h"
#include "workload/internal.h"

/* ---- the maps as the datapath reads them, with ids replaced by the names' hashes they stand for ---- */

struct canon {
	const struct sm_image *image;
	char lines[256][256];
	size_t n;
};

static uint64_t service_named(const struct sm_image *image, uint32_t id)
{
	union sm_map_key key = { .id = id };
	const struct sm_service_value *value = sm_image_get(image, SM_MAP_SERVICES, &key);

	return value ? value->name_hash : 0;
}

static uint64_t backend_named(const struct sm_image *image, uint32_t id)
{
	union sm_map_key key = { .id = id };
	const struct sm_backend_value *value = sm_image_get(image, SM_MAP_BACKENDS, &key);

	return value ? value->name_hash : 0;
}

static char *canon_line(struct canon *c)
{
	assert_true(c->n < sizeof(c->lines) / sizeof(c->lines[0]));
	return c->lines[c->n++];
}

static void hex(char *out, const void *bytes, size_t len)
{
	for (size_t i = 0; i < len; i++)
		sprintf(out + 2 * i, "%02x", ((const uint8_t *)bytes)[i]);
}

static int canon_frontend(void *ctx, const void *key, const void *value)
{
	struct canon *c = ctx;
	const struct sm_frontend_value *v = value;
	char addr[33];

	hex(addr, key, sizeof(struct sm_frontend_key));
	snprintf(canon_line(c), 256, "F %s kind %u -> %016" PRIx64, addr, v->kind,
		 v->kind == SM_FRONTEND_SERVICE ? service_named(c->image, v->id) : backend_named(c->image, v->id));
	return 0;
}

static int canon_service(void *ctx, const void *key, const void *value)
{
	struct canon *c = ctx;
	char text[2 * sizeof(struct sm_service_value) + 1];

	(void)key;
	hex(text, value, sizeof(struct sm_service_value)); /* no ids inside */
	snprintf(canon_line(c), 256, "S %s", text);
	return 0;
}

static int canon_endpoint(void *ctx, const void *key, const void *value)
{
	struct canon *c = ctx;
	const struct sm_endpoint_key *k = key;
	const struct sm_endpoint_value *v = value;
	union sm_map_key service_key = { .id = k->service_id };
	const struct sm_service_value *service = sm_image_get(c->image, SM_MAP_SERVICES, &service_key);
	char ports[2 * sizeof(v->target_ports) + 1];

	if (!service || k->index >= service->endpoint_counts[k->priority])
		return 0; /* a slot no reader reaches */
	hex(ports, v->target_ports, sizeof(v->target_ports));
	snprintf(canon_line(c), 256, "E %016" PRIx64 " p%u -> %016" PRIx64 " %s", (uint64_t)service->name_hash,
		 k->priority, backend_named(c->image, v->backend_id), ports); /* the slot's index left out: any order */
	return 0;
}

static int canon_backend(void *ctx, const void *key, const void *value)
{
	struct canon *c = ctx;
	char text[2 * sizeof(struct sm_backend_value) + 1];

	(void)key;
	hex(text, value, sizeof(struct sm_backend_value));
	snprintf(canon_line(c), 256, "B %s", text);
	return 0;
}

static int by_text(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void canonical(const struct sm_image *image, struct canon *c)
{
	c->image = image;
	c->n = 0;
	sm_image_for_each(image, SM_MAP_FRONTENDS, canon_frontend, c);
	sm_image_for_each(image, SM_MAP_SERVICES, canon_service, c);
	sm_image_for_each(image, SM_MAP_ENDPOINTS, canon_endpoint, c);
	sm_image_for_each(image, SM_MAP_BACKENDS, canon_backend, c);
	qsort(c->lines, c->n, sizeof(c->lines[0]), by_text);
}

/* Whether a and b differ only in their ids (which a rolled-back batch may have moved on); the first line
 * that differs otherwise. */
static bool same_but_ids(const struct sm_image *a, const struct sm_image *b, char *diff, size_t size)
{
	static struct canon ca, cb;

	canonical(a, &ca);
	canonical(b, &cb);
	for (size_t i = 0; i < ca.n || i < cb.n; i++) {
		if (i >= ca.n || i >= cb.n || strcmp(ca.lines[i], cb.lines[i])) {
			snprintf(diff, size, "%s / %s", i < ca.n ? ca.lines[i] : "(none)", i < cb.n ? cb.lines[i] : "(none)");
			return false;
		}
	}
	return true;
}

/* Two models' lookups by address compared, keeping the first disagreement. */
struct lookup_check {
	const struct sm_model *a, *b;
	char *diff;
	size_t size;
	bool same;
};

static void compare_at(struct lookup_check *check, const uint8_t addr[16])
{
	struct sm_workload_labels la, lb;
	bool found_a = sm_model_workload_at(check->a, addr, &la), found_b = sm_model_workload_at(check->b, addr, &lb);
	char text[INET6_ADDRSTRLEN];

	if (!check->same || (found_a == found_b && (!found_a || strcmp(la.uid, lb.uid) == 0)))
		return;
	inet_ntop(AF_INET6, addr, text, sizeof(text));
	snprintf(check->diff, check->size, "%s is %s's against %s's", text, found_a ? la.uid : "nobody",
		 found_b ? lb.uid : "nobody");
	check->same = false;
}

static int compare_backend(void *ctx, const void *key, const void *value)
{
	const struct sm_backend_value *backend = value;
	uint8_t addr[16] = { [10] = 0xff, [11] = 0xff }; /* IPv4 mapped */

	(void)key;
	if (backend->families & SM_HAS_V4) {
		memcpy(&addr[12], &backend->addr4, 4);
		compare_at(ctx, addr);
	}
	if (backend->families & SM_HAS_V6)
		compare_at(ctx, backend->addr6);
	return 0;
}

/*
 * Whether two models' counts and their lookups by address agree (at every address a backend of either
 * names, and at the addresses listed); the first difference.
 */
static bool same_lookups(const struct harness *a, const struct harness *b, const char *const *addresses,
			 char *diff, size_t size)
{
	struct lookup_check check = { .a = a->model, .b = b->model, .diff = diff, .size = size, .same = true };
	struct sm_model_stats sa, sb;

	sm_model_stats(a->model, &sa);
	sm_model_stats(b->model, &sb);
	if (sa.workloads != sb.workloads || sa.services != sb.services || sa.authorizations != sb.authorizations) {
		snprintf(diff, size, "%zu/%zu/%zu workloads/services/authorizations against %zu/%zu/%zu", sa.workloads,
			 sa.services, sa.authorizations, sb.workloads, sb.services, sb.authorizations);
		return false;
	}
	sm_image_for_each(a->kernel, SM_MAP_BACKENDS, compare_backend, &check);
	sm_image_for_each(b->kernel, SM_MAP_BACKENDS, compare_backend, &check);
	for (size_t i = 0; addresses && addresses[i]; i++) {
		uint8_t addr[16] = { [10] = 0xff, [11] = 0xff };
		if (inet_pton(AF_INET, addresses[i], &addr[12]) != 1)
			assert_int_equal(inet_pton(AF_INET6, addresses[i], addr), 1);
		compare_at(&check, addr);
	}
	return check.same;
}

/* ---- built steps: each is swept with the ones before it applied as they are ---- */

#define N_STEPS 4

static void authorization_response(struct response *r, const char *added, const char *removed)
{
	Istio__Security__Authorization *policy;
	const char *slash = strchr(added, '/');

	response_init(r, SM_TYPE_URL_AUTHORIZATION);
	policy = response_alloc(r, sizeof(*policy));
	istio__security__authorization__init(policy);
	policy->namespace_ = response_keep(r, strndup(added, (size_t)(slash - added)));
	policy->name = (char *)slash + 1;
	policy->scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
	response_add_message(r, added, "v1", SM_TYPE_URL_AUTHORIZATION, &policy->base);
	if (removed)
		response_remove(r, removed);
}

static void step_response(int step, struct response *r)
{
	static const struct service_spec services[] = {
		{ .namespace = "ns", .hostname = "s1", .vips = { "10.96.0.1" }, .ports = { { 80, 8080 } } },
		{ .namespace = "ns", .hostname = "s2", .vips = { "10.96.0.2", "fd00::2" }, .ports = { { 443, 8443 } },
		  .waypoint_service = "ns/wp" },
		{ .namespace = "ns", .hostname = "wp", .vips = { "10.96.0.9" }, .ports = { { 15008, 15008 } } },
	};
	static const struct workload_spec first[] = {
		{ .uid = "w1", .addresses = { "10.0.0.1" }, .namespace = "ns", .node = "node-a",
		  .services = { { "ns/s1", { { 80, 8080 } } } }, .policies = { "ns/p1" } },
		{ .uid = "w2", .addresses = { "10.0.0.2", "fd00:1::2" }, .namespace = "ns", .node = "node-b",
		  .services = { { "ns/s1", { { 80, 8080 } } }, { "ns/s2", { { 443, 8443 } } } } },
		{ .uid = "w3", .addresses = { "10.0.0.3" }, .namespace = "ns", .node = "node-a",
		  .services = { { "ns/wp", { { 15008, 15008 } } } } },
	};
	static const struct workload_spec changed[] = {
		{ .uid = "w1", .addresses = { "10.0.0.11" }, .namespace = "ns", .node = "node-a",
		  .services = { { "ns/s2", { { 443, 8443 } } } }, .policies = { "ns/p1", "ns/p2" } },
		{ .uid = "w4", .addresses = { "10.0.0.4", "fd00:1::4" }, .namespace = "ns", .node = "node-b",
		  .services = { { "ns/s1", { { 80, 8080 } } }, { "ns/s2", { { 443, 8443 } } } }, .capacity = 3 },
	};

	switch (step) {
	case 0:
		authorization_response(r, "ns/p1", NULL);
		break;
	case 1:
		response_init(r, SM_TYPE_URL_ADDRESS);
		for (size_t i = 0; i < 3; i++)
			response_add_service(r, &services[i], "v1");
		for (size_t i = 0; i < 3; i++)
			response_add_workload(r, &first[i], "v1");
		break;
	case 2:
		response_init(r, SM_TYPE_URL_ADDRESS);
		for (size_t i = 0; i < 2; i++)
			response_add_workload(r, &changed[i], "v2");
		response_remove(r, "w2");
		response_remove(r, "ns/wp");
		break;
	case 3:
		authorization_response(r, "ns/p2", "ns/p1");
		break;
	}
}

/* Responses applied in order, each swept with the ones before it applied as they are. */
struct scenario {
	const char *node;
	size_t n;
	const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *responses[N_STEPS];
	const char *const *addresses; /* looked up beyond the backends' own, NULL-terminated */
};

/* A harness with the responses before step applied, memory never short. */
static void harness_at(struct harness *h, const struct scenario *scenario, size_t step)
{
	harness_open(h, scenario->node, NULL);
	for (size_t i = 0; i < step; i++) {
		sm_rejections_clear(&h->rejections);
		assert_int_equal(sm_model_apply(h->model, scenario->responses[i], &h->writer.writer, &h->rejections), 0);
		assert_consistent(h);
	}
}

/* Applies step with the allocator set as given; returns what the apply returned. */
static int apply_short(struct harness *h, const struct scenario *scenario, size_t step, enum failing mode,
		       long target, bool shield)
{
	struct shielded_writer shielded = shielded_writer(&h->writer.writer);
	int err;

	sm_rejections_clear(&h->rejections);
	oom_arm(mode, target);
	err = sm_model_apply(h->model, scenario->responses[step], shield ? &shielded.writer : &h->writer.writer,
			     &h->rejections);
	oom.armed = false;
	return err;
}

/* The first difference from what was expected after step, or NULL. */
static const char *differs(const struct harness *h, const struct harness *expected, const struct scenario *scenario,
			   char *diff, size_t size)
{
	if (!same_but_ids(h->kernel, expected->kernel, diff, size) ||
	    !same_lookups(h, expected, scenario->addresses, diff, size))
		return diff;
	return NULL;
}

/*
 * A restarted agent before step: the steps up to and including it applied, then a new model that adopts
 * the maps and is sent step again (as the first response after a restart is), with its id hints still
 * to build.
 */
static void restarted_at(struct harness *h, const struct scenario *scenario, size_t step)
{
	harness_at(h, scenario, step + 1);
	sm_model_free(h->model);
	assert_int_equal(sm_model_new(&(struct sm_model_options){ .node_name = scenario->node }, &h->model), 0);
	assert_int_equal(sm_model_adopt(h->model, h->kernel), 0);
}

/* The harness in which step is to be applied: the steps before it applied, or a restart at it. */
static void harness_before(struct harness *h, const struct scenario *scenario, size_t step, bool restarted)
{
	if (restarted)
		restarted_at(h, scenario, step);
	else
		harness_at(h, scenario, step);
}

static void sweep_step(const struct scenario *scenario, size_t step, enum failing mode, bool restarted)
{
	bool shield = mode == FAIL_FROM;
	struct harness before, reference;
	char diff[400];
	long total;

	harness_before(&before, scenario, step, restarted);
	harness_before(&reference, scenario, step, restarted);
	assert_int_equal(apply_short(&reference, scenario, step, FAIL_NONE, 0, false), 0);
	{ /* how many allocations the step makes when none fails */
		struct harness h;
		harness_before(&h, scenario, step, restarted);
		assert_int_equal(apply_short(&h, scenario, step, FAIL_NONE, 0, shield), 0);
		total = oom.count;
		harness_close(&h);
	}
	assert_true(total > 0);
	for (long target = 0; target < total; target++) {
		struct harness h;
		harness_before(&h, scenario, step, restarted);
		int err = apply_short(&h, scenario, step, mode, target, shield);
		if (err != 0 && err != -ENOMEM)
			fail_msg("step %zu, allocation %ld of %ld failing: apply returned %d", step, target, total, err);
		if (!oom.any_failed)
			fail_msg("step %zu: allocation %ld of %ld was never made", step, target, total);
		if (!sm_image_equivalent(h.kernel, sm_model_image(h.model), diff, sizeof(diff)))
			fail_msg("step %zu, allocation %ld of %ld failing (the apply returned %d): the maps are not the "
				 "model's image: %s", step, target, total, err, diff);
		if (!err || !restarted) /* a restarted model holds what it adopted until its first push */
			assert_consistent(&h);
		/* failed: as if it had never been sent; applied: as if memory had never been short */
		if (differs(&h, err ? &before : &reference, scenario, diff, sizeof(diff)))
			fail_msg("step %zu, allocation %ld of %ld failing (the apply returned %d, %zu rejected: %s): %s",
				 step, target, total, err, h.rejections.count,
				 h.rejections.count ? h.rejections.items[0].reason : "", diff);
		/* memory back: the same response again, as the agent applies the next one */
		assert_int_equal(apply_short(&h, scenario, step, FAIL_NONE, 0, false), 0);
		assert_consistent(&h);
		if (differs(&h, &reference, scenario, diff, sizeof(diff)))
			fail_msg("step %zu, allocation %ld of %ld failed, then applied again: unlike a model that never "
				 "ran short: %s", step, target, total, diff);
		/* a restart keeps every id it adopted, whatever failed on the way */
		if (restarted && !sm_image_equivalent(h.kernel, reference.kernel, diff, sizeof(diff)))
			fail_msg("restarted, allocation %ld of %ld failed, then applied again: the ids are not those "
				 "adopted: %s", target, total, diff);
		harness_close(&h);
	}
	harness_close(&before);
	harness_close(&reference);
}

static void sweep(const struct scenario *scenario, enum failing mode)
{
	for (size_t step = 0; step < scenario->n; step++)
		sweep_step(scenario, step, mode, false);
}

/* The built steps above: authorizations, services with a waypoint, workloads changing and removed. */
static void sweep_built(enum failing mode)
{
	static const char *const addresses[] = { "10.0.0.1", "10.0.0.2", "fd00:1::2", "10.0.0.3", "10.0.0.11",
						 "10.0.0.4", "fd00:1::4", NULL };
	struct response built[N_STEPS];
	struct scenario scenario = { .node = "node-a", .n = N_STEPS, .addresses = addresses };

	for (size_t i = 0; i < N_STEPS; i++) {
		step_response((int)i, &built[i]);
		scenario.responses[i] = &built[i].msg;
	}
	sweep(&scenario, mode);
	for (size_t i = 0; i < N_STEPS; i++)
		response_free(&built[i]);
}

/* The recorded stream (wire/stream.xds): a real mesh's waypoints, localities and failover. */
static void sweep_recorded(enum failing mode, bool restarted)
{
	ProtobufCMessage *responses[3];
	struct scenario scenario = { .node = "worker-2", .n = 3 };

	fixture_responses("wire/stream.xds", responses, 3);
	for (size_t i = 0; i < 3; i++)
		scenario.responses[i] = (const void *)responses[i];
	if (restarted)
		sweep_step(&scenario, 0, mode, true); /* the Address push: the only one with ids to keep */
	else
		sweep(&scenario, mode);
	for (size_t i = 0; i < 3; i++)
		protobuf_c_message_free_unpacked(responses[i], NULL);
}

static void built_steps_each_allocation_failing_once(void **state)
{
	(void)state;
	sweep_built(FAIL_ONE);
}

static void built_steps_every_allocation_failing_from_one_on(void **state)
{
	(void)state;
	sweep_built(FAIL_FROM);
}

static void recorded_stream_each_allocation_failing_once(void **state)
{
	(void)state;
	sweep_recorded(FAIL_ONE, false);
}

static void recorded_stream_every_allocation_failing_from_one_on(void **state)
{
	(void)state;
	sweep_recorded(FAIL_FROM, false);
}

/* A restarted agent's first push, its id hints built then: a failure leaves the adopted maps as they were. */
static void restart_each_allocation_failing_once(void **state)
{
	(void)state;
	sweep_recorded(FAIL_ONE, true);
}

static void restart_every_allocation_failing_from_one_on(void **state)
{
	(void)state;
	sweep_recorded(FAIL_FROM, true);
}

/* ---- setting entries to what they hold ---- */

/*
 * A restart's first push sets every entry it adopted to the value it holds. In a transaction such sets
 * record nothing, so they take no memory at all; a set that changes an entry does record it.
 */
static void setting_what_entries_hold_takes_no_memory(void **state)
{
	(void)state;
	ProtobufCMessage *responses[3];
	struct sm_image *image;
	struct harness h;

	fixture_responses("wire/stream.xds", responses, 3);
	harness_open(&h, "worker-2", NULL);
	assert_int_equal(sm_model_apply(h.model, (const void *)responses[0], &h.writer.writer, &h.rejections), 0);
	assert_int_equal(sm_image_new(&image), 0);
	assert_int_equal(image_copy(image, h.kernel), 0);

	for (int map = 0; map < SM_MAP_COUNT; map++)
		assert_true(sm_image_count(image, map) > 0);
	image_begin(image);
	oom_arm(FAIL_FROM, 0);
	assert_int_equal(image_copy(image, h.kernel), 0); /* every entry set again to what it holds */
	assert_int_equal(oom.count, 0);
	struct sm_backend_value changed = { .name_hash = 1 };
	union sm_map_key backend = { .id = 1 };
	assert_int_equal(sm_image_set(image, SM_MAP_BACKENDS, &backend, &changed), -ENOMEM);
	oom.armed = false;
	image_rollback(image);

	sm_image_free(image);
	harness_close(&h);
	for (size_t i = 0; i < 3; i++)
		protobuf_c_message_free_unpacked(responses[i], NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(built_steps_each_allocation_failing_once),
		cmocka_unit_test(built_steps_every_allocation_failing_from_one_on),
		cmocka_unit_test(recorded_stream_each_allocation_failing_once),
		cmocka_unit_test(recorded_stream_every_allocation_failing_from_one_on),
		cmocka_unit_test(restart_each_allocation_failing_once),
		cmocka_unit_test(restart_every_allocation_failing_from_one_on),
		cmocka_unit_test(setting_what_entries_hold_takes_no_memory),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
