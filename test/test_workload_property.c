/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A seeded walk through random responses: valid and invalid workloads and services from small pools
 * (so that addresses collide, waypoints name services that come and go, localities shift), removals,
 * maps too small for everything, writes that fail, memory that runs short at one allocation of an apply or
 * from one on (failing_writer.h; such an apply returns -ENOMEM, and only the items the model's versions name
 * were taken),
 * and agent restarts. After every write no reference dangles; after every response the kernel's maps equal
 * the model's image and a from-scratch build; after every restart and resync, nothing that did not change is
 * rewritten (so a failed apply left nothing behind but what it took).
 *
 * SM_PROPERTY_SEED and SM_PROPERTY_STEPS override the defaults.
 */
#include <stdio.h>
#include <stdlib.h>

#include "failing_writer.h"
#include "model_harness.h"

#define N_SERVICES 12
#define N_WORKLOADS 30
#define DEFAULT_STEPS 10000
#define RESTART_EVERY 500
/* An apply short of memory fails one of its first this many allocations, or every one from there (a response
 * here makes 4 to 65, 15 in the median). */
#define SHORT_WITHIN 32

static const char *service_names[N_SERVICES] = { "ns/s0", "ns/s1", "ns/s2", "ns/s3", "ns/s4",  "ns/s5",
						 "ns/s6", "ns/s7", "ns/s8", "ns/s9", "ns/s10", "ns/s11" };
static const char *service_hosts[N_SERVICES] = { "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11" };
static char workload_names[N_WORKLOADS][16];
static const char *vip_pool[] = { "10.96.0.1", "10.96.0.2", "10.96.0.3", "10.96.0.4", "10.96.0.5", "10.96.0.6",
				  "10.96.0.7", "10.96.0.8", "fd00::1", "fd00::2", "fd00::3", "10.0.0.1" };
static const char *pod_pool[] = { "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
				  "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.10", "fd00:1::1", "fd00:1::2",
				  "fd00:1::3", "10.96.0.1" };
static const char *nodes[] = { "node-a", "node-b", "node-c" };
static const char *regions[] = { "r0", "r1" };
static const char *zones[] = { "z0", "z1", "z2" };
static const uint32_t ports[] = { 80, 81, 443, 8080 };
static const int scopes[] = { ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION, ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE,
			      ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE, ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK,
			      ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__CLUSTER };

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

static bool chance(uint32_t percent)
{
	return rnd(100) < percent;
}

#define PICK(array) (array[rnd(sizeof(array) / sizeof(array[0]))])

/* What the agent holds, as istiod would send it again: name → the packed Address and its version. */
struct held {
	char *name;
	uint8_t *bytes;
	size_t len;
};

static struct held held[N_SERVICES + N_WORKLOADS];
static size_t n_held;

static struct held *find_held(const char *name)
{
	for (size_t i = 0; i < n_held; i++) {
		if (strcmp(held[i].name, name) == 0)
			return &held[i];
	}
	return NULL;
}

static void hold(const char *name, const uint8_t *bytes, size_t len)
{
	struct held *entry = find_held(name);

	if (!entry) {
		entry = &held[n_held++];
		entry->name = strdup(name);
	} else {
		free(entry->bytes);
	}
	entry->bytes = malloc(len ? len : 1);
	memcpy(entry->bytes, bytes, len);
	entry->len = len;
}

static void release(const char *name)
{
	struct held *entry = find_held(name);

	if (!entry)
		return;
	free(entry->name);
	free(entry->bytes);
	*entry = held[--n_held];
}

static void random_service(struct service_spec *spec, int index)
{
	*spec = (struct service_spec){ .namespace = "ns", .hostname = service_hosts[index] };
	for (int i = 0, n = (int)rnd(3); i < n; i++)
		spec->vips[i] = PICK(vip_pool);
	for (int i = 0, n = (int)rnd(4); i < n; i++) {
		spec->ports[i].service_port = ports[(i + index) % 4];
		spec->ports[i].target_port = chance(50) ? 9000 + rnd(3) : 0;
	}
	if (chance(20))
		spec->waypoint_ip = PICK(pod_pool);
	else if (chance(15))
		spec->waypoint_service = service_names[rnd(N_SERVICES)];
	spec->mode = (int)rnd(4);
	for (int i = 0, n = (int)rnd(3); i < n; i++)
		spec->scopes[i] = PICK(scopes);
	spec->allow_unhealthy = chance(30);
}

static void random_workload(struct workload_spec *spec, int index)
{
	*spec = (struct workload_spec){ .uid = workload_names[index], .node = PICK(nodes), .region = PICK(regions),
					.zone = PICK(zones), .network = chance(20) ? "net2" : "" };
	for (int i = 0, n = (int)rnd(3); i < n; i++)
		spec->addresses[i] = PICK(pod_pool);
	for (int i = 0, n = (int)rnd(4); i < n; i++) {
		spec->services[i].service = service_names[rnd(N_SERVICES)];
		if (chance(30))
			spec->services[i].ports[0] = (struct port_spec){ ports[rnd(4)], 7000 + rnd(2) };
	}
	/* the same service twice is a repeated map key: the later entry wins */
	if (chance(20))
		spec->waypoint_ip = PICK(pod_pool);
	else if (chance(10))
		spec->waypoint_service = service_names[rnd(N_SERVICES)];
	spec->unhealthy = chance(20);
	spec->capacity = rnd(4);
	spec->zero_capacity = chance(5);
	spec->host_network = chance(5);
}

/* One of the ways istiod (or a broken one) sends something we must reject. */
static void corrupt(Istio__Workload__Address *address)
{
	if (address->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD) {
		address->workload->status = 5;
	} else if (address->service->n_ports) {
		address->service->ports[0]->service_port = 0;
	} else {
		address->service->hostname = "bad/host";
	}
}

struct step_item {
	const char *name;
	char version[16]; /* random: the model holding it says this update was applied */
	uint8_t *bytes;
	size_t len;
	bool removal;
};

static void add_update(struct response *r, struct step_item *item, bool invalid)
{
	Istio__Workload__Address address = ISTIO__WORKLOAD__ADDRESS__INIT;
	int index = (int)rnd(N_SERVICES + N_WORKLOADS);

	if (index < N_SERVICES) {
		struct service_spec spec;
		random_service(&spec, index);
		address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
		address.service = service_from(r, &spec);
		item->name = service_names[index];
	} else {
		struct workload_spec spec;
		random_workload(&spec, index - N_SERVICES);
		address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
		address.workload = workload_from(r, &spec);
		item->name = workload_names[index - N_SERVICES];
	}
	if (invalid)
		corrupt(&address);
	item->len = protobuf_c_message_get_packed_size(&address.base);
	item->bytes = malloc(item->len ? item->len : 1); /* outlives the response */
	protobuf_c_message_pack(&address.base, item->bytes);
	snprintf(item->version, sizeof(item->version), "v%u", rnd(1000000));
	response_add_raw(r, item->name, item->version, SM_TYPE_URL_ADDRESS, item->bytes, item->len);
}

struct version_check {
	const struct step_item *item;
	bool named, same_version;
};

static int check_version(void *ctx, const char *name, const char *version)
{
	struct version_check *check = ctx;

	if (strcmp(name, check->item->name) == 0) {
		check->named = true;
		check->same_version = strcmp(version, check->item->version) == 0;
	}
	return 0;
}

/*
 * Whether the model took item. An apply that ran short of memory may have taken some items: a response
 * being applied item by item (after a map overflowed) keeps those done before; the versions say which.
 */
static bool taken(const struct harness *h, const struct step_item *item, int err)
{
	struct version_check check = { .item = item };

	if (!err)
		return !has_rejection(h, item->name, "");
	assert_int_equal(sm_model_for_each_version(h->model, SM_TYPE_URL_ADDRESS, check_version, &check), 0);
	return item->removal ? !check.named : check.same_version;
}

static bool name_used(const struct step_item *items, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(items[i].name, name) == 0)
			return true;
	}
	return false;
}

static void random_step(struct harness *h, size_t *rejections_seen, size_t *memory_failures)
{
	struct step_item items[8];
	size_t n = 0;
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int i = 0, updates = chance(75) ? 1 + (int)rnd(4) : 0; i < updates; i++) {
		items[n] = (struct step_item){ 0 };
		add_update(&r, &items[n], chance(5));
		if (name_used(items, n, items[n].name)) {
			r.msg.n_resources--; /* one name per response: duplicates have their own test */
			free(items[n].bytes);
			continue;
		}
		n++;
	}
	for (int i = 0, removals = chance(35) ? 1 + (int)rnd(3) : 0; i < removals; i++) {
		int index = (int)rnd(N_SERVICES + N_WORKLOADS);
		const char *name = index < N_SERVICES ? service_names[index] : workload_names[index - N_SERVICES];
		if (name_used(items, n, name))
			continue;
		items[n++] = (struct step_item){ .name = name, .removal = true };
		response_remove(&r, name);
	}
	if (chance(3))
		h->writer.fail_after = h->writer.ops_applied + 1 + rnd(6);

	sm_rejections_clear(&h->rejections);
	struct shielded_writer shielded = shielded_writer(&h->writer.writer);
	bool persistent = false;
	if (chance(4)) {
		persistent = chance(50);
		oom_arm(persistent ? FAIL_FROM : FAIL_ONE, rnd(SHORT_WITHIN));
	}
	int err = sm_model_apply(h->model, &r.msg, persistent ? &shielded.writer : &h->writer.writer, &h->rejections);
	bool short_of_memory = oom.any_failed;
	oom.armed = false;
	if (err && !(err == -ENOMEM && short_of_memory))
		fail_msg("the apply returned %d%s", err, short_of_memory ? " with an allocation failing" : "");
	assert_consistent(h);
	response_free(&r);
	h->writer.fail_after = 0;
	*rejections_seen += h->rejections.count;
	*memory_failures += err != 0;
	for (size_t i = 0; i < n; i++) {
		if (taken(h, &items[i], err)) {
			if (items[i].removal)
				release(items[i].name);
			else
				hold(items[i].name, items[i].bytes, items[i].len);
		}
		free(items[i].bytes);
	}
}

/* A new agent adopts the maps and gets everything again: nothing may be rewritten. */
static void restart(struct harness *h, const struct sm_model_options *options)
{
	struct response r;

	sm_model_free(h->model);
	assert_int_equal(sm_model_new(options, &h->model), 0);
	assert_int_equal(sm_model_adopt(h->model, h->kernel), 0);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (size_t i = n_held; i-- > 0;)
		response_add_raw(&r, held[i].name, "v", SM_TYPE_URL_ADDRESS, held[i].bytes, held[i].len);
	size_t ops_before = h->writer.ops_applied;
	apply_ok(h, &r);
	if (h->writer.ops_applied != ops_before)
		fail_msg("a restart rewrote %zu entries that did not change", h->writer.ops_applied - ops_before);
}

static void random_walk(void **state)
{
	(void)state;
	uint32_t capacity[SM_MAP_COUNT] = { [SM_MAP_FRONTENDS] = 14, [SM_MAP_SERVICES] = 9,
					    [SM_MAP_ENDPOINTS] = 48, [SM_MAP_BACKENDS] = 26 };
	struct sm_model_options options = { .node_name = "node-a" };
	const char *seed_env = getenv("SM_PROPERTY_SEED"), *steps_env = getenv("SM_PROPERTY_STEPS");
	uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : 0x5eed5eedULL;
	long steps = steps_env ? strtol(steps_env, NULL, 0) : DEFAULT_STEPS;
	size_t rejections_seen = 0, restarts = 0, memory_failures = 0;
	struct harness h;

	memcpy(options.capacity, capacity, sizeof(capacity));
	rng_state = seed ? seed : 1;
	printf("# seed 0x%llx, %ld steps\n", (unsigned long long)seed, steps);
	for (int i = 0; i < N_WORKLOADS; i++)
		snprintf(workload_names[i], sizeof(workload_names[i]), "c//Pod/ns/w%d", i);

	harness_open(&h, "node-a", capacity);
	for (long step = 1; step <= steps; step++) {
		if (getenv("SM_PROPERTY_VERBOSE")) fprintf(stderr, "# step %ld\n", step);
		random_step(&h, &rejections_seen, &memory_failures);
		if (step % RESTART_EVERY == 0) {
			restart(&h, &options);
			restarts++;
		}
	}
	printf("# %zu rejections, %zu applies short of memory, %zu restarts; held at the end: %zu resources, "
	       "%zu map entries\n", rejections_seen, memory_failures, restarts, n_held,
	       sm_image_count(h.kernel, SM_MAP_FRONTENDS) + sm_image_count(h.kernel, SM_MAP_SERVICES) +
		       sm_image_count(h.kernel, SM_MAP_ENDPOINTS) + sm_image_count(h.kernel, SM_MAP_BACKENDS));
	assert_true(rejections_seen > 0);
	assert_true(restarts > 0);
	assert_true(memory_failures > 0);
	while (n_held)
		release(held[0].name);
	harness_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(random_walk),
	};

	return cmocka_run_group_tests_name("workload-property", tests, NULL, NULL);
}
