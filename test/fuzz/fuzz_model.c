/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The workload model driven by the input: each input is a short run (at most MAX_STEPS responses) of
 * Address and Authorization responses built from small pools of names, addresses, ports, waypoints and
 * localities, so that addresses collide, waypoints name services that come and go and localities
 * shift; some resources are broken in one of the ways istiod (or a broken istiod) could break them,
 * some maps are tiny, some writes fail, and the agent sometimes restarts.
 *
 * The "kernel" is an image written through the image writer, which checks after every single write
 * that no reference dangles; its maps hold SM_MAP_KERNEL_ENTRIES(capacity) keys, as the datapath sizes
 * them, and a write beyond that traps: the model must never ask for a change the kernel would refuse
 * (-E2BIG), even with a map full to its capacity. Injected write failures run the undo paths.
 *
 * Responses go through sm_model_apply_releasing: once the model releases one, its names and resource
 * bytes are overwritten and poisoned for ASan, so that a split reading it afterwards traps.
 *
 * After every response: no write left a dangling reference, the kernel's image is sound and equal to
 * the model's, a from-scratch build equals the model's image, every rejection says why, and the
 * versions the model would send on reconnect are those of the resources it accepted. After a restart
 * that replays what was accepted, nothing is rejected and nothing is rewritten.
 * Any violation traps, which libFuzzer reports as a crash with the input that caused it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

#include "builders.h"
#include "fuzz_input.h"
#include "workload/workload.h"

#define MAX_STEPS 32
#define MAX_UPDATES 6
#define MAX_REMOVALS 3
#define MAX_ITEMS (MAX_UPDATES + MAX_REMOVALS)
#define N_SERVICES 8
#define N_WORKLOADS 16
#define N_POLICIES 3
#define N_NAMES (N_SERVICES + N_WORKLOADS)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the pools ---- */

static const char *const service_keys[N_SERVICES] = { "ns/s0", "ns/s1", "ns/s2", "ns/s3",
						      "ns/s4", "ns/s5", "ns2/s6", "ns2/s7" };
static const char *const service_namespaces[N_SERVICES] = { "ns", "ns", "ns", "ns", "ns", "ns", "ns2", "ns2" };
static const char *const service_hosts[N_SERVICES] = { "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7" };
static const char *const workload_uids[N_WORKLOADS] = {
	"c//Pod/ns/w0", "c//Pod/ns/w1", "c//Pod/ns/w2",	  "c//Pod/ns/w3",   "c//Pod/ns/w4",   "c//Pod/ns/w5",
	"c//Pod/ns/w6", "c//Pod/ns/w7", "c//Pod/ns/w8",	  "c//Pod/ns/w9",   "c//Pod/ns/w10",  "c//Pod/ns/w11",
	"c//Pod/ns/w12", "c//Pod/ns/w13", "c//Pod/ns2/w14", "c//Pod/ns2/w15",
};
static const char *const policy_keys[N_POLICIES] = { "ns/p0", "ns/p1", "ns2/p2" };
static const char *const policy_namespaces[N_POLICIES] = { "ns", "ns", "ns2" };
static const char *const policy_names[N_POLICIES] = { "p0", "p1", "p2" };

/* Overlapping on purpose: a VIP that is also a pod address, IPv4 next to its IPv4-mapped IPv6 form. */
static const char *const vip_pool[] = { "10.96.0.1", "10.96.0.2", "10.96.0.3", "10.96.0.4", "fd00::1",
					"fd00::2",   "10.0.0.1",  "10.96.0.5", "::ffff:10.96.0.5" };
static const char *const pod_pool[] = { "10.0.0.1", "10.0.0.2",	 "10.0.0.3",	     "10.0.0.4", "10.0.0.5",
					"fd00:1::1", "fd00:1::2", "10.96.0.1", "::ffff:10.0.0.1", "0.0.0.0",
					"::" };
static const char *const nodes[] = { "node-a", "node-b", "node-c", NULL };
static const char *const regions[] = { NULL, "r0", "r1" };
static const char *const zones[] = { NULL, "z0", "z1" };
static const char *const subzones[] = { NULL, "sz0" };
static const char *const networks[] = { NULL, "net2" };
static const char *const clusters[] = { NULL, "c2" };
static const uint32_t service_ports[] = { 80, 81, 443, 8080, 1, 65535 };
static const uint32_t target_ports[] = { 0, 9000, 9001, 65535 };
static const uint32_t waypoint_ports[] = { 0, 15008, 15009 };
/* Workload.capacity: a slot each, mostly few (every slot is a write, checked against the whole image). */
static const uint32_t small_weights[] = { 0, 1, 2, 3 };
static const uint32_t large_weights[] = { 64, 65, 1000, UINT32_MAX };
static const uint32_t policy_ports[] = { 80, 443, 65535, 65536, 0 };
static const char *const bad_service_keys[] = { "noslash", "/s0", "ns/", "ns/s0/x", "" };
static const char *const other_type_urls[] = { "", "type.googleapis.com/istio.workload.Nope", "istio.workload.Address",
					       "type.googleapis.com/istio.workload.Workload",
					       "type.googleapis.com/google.protobuf.Empty" };

static const char *any_name(struct fuzz_input *in)
{
	uint32_t i = input_below(in, N_NAMES);

	return i < N_SERVICES ? service_keys[i] : workload_uids[i - N_SERVICES];
}

static bool is_workload_name(const char *name)
{
	return strncmp(name, "c//", 3) == 0;
}

/* ---- the kernel: the image writer, and hash maps of SM_MAP_KERNEL_ENTRIES(capacity) ---- */

struct kernel_writer {
	struct sm_map_writer writer;
	struct sm_image_writer image;
	uint32_t capacity[SM_MAP_COUNT];
};

static int kernel_apply(struct sm_map_writer *base, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	struct kernel_writer *kernel = (struct kernel_writer *)base;
	struct sm_image *image = kernel->image.image;

	for (*applied = 0; *applied < n; (*applied)++) {
		const struct sm_map_op *op = &ops[*applied];
		size_t one = 0;

		/* before plus after fits SM_MAP_KERNEL_ENTRIES: a write the kernel refuses is the model's bug */
		if (op->kind == SM_OP_UPDATE && !sm_image_get(image, op->map, &op->key) &&
		    sm_image_count(image, op->map) >= kernel->capacity[op->map])
			__builtin_trap();
		int err = kernel->image.writer.apply(&kernel->image.writer, op, 1, &one);
		if (err) {
			*applied += one;
			return err;
		}
	}
	return 0;
}

/* ---- the run ---- */

/* A resource the model accepted, as istiod would send it again after a restart. */
struct held {
	const char *name; /* from the pools */
	char *version;
	uint8_t *bytes;
	size_t len;
};

struct fuzz {
	struct fuzz_input in;
	struct sm_model_options options;
	struct sm_locality locality;
	struct sm_model *model;
	struct sm_image *kernel;
	struct kernel_writer writer;
	struct sm_rejections rejections;
	struct held held[N_NAMES];
	size_t n_held;
	/* held is exactly what the model accepted: no name was ambiguous (empty, twice in a response) */
	bool tracking;
};

/* What one step sent under a name, to learn from the rejections whether the model took it. */
struct step_item {
	const char *name;
	char version[16];
	uint8_t *bytes; /* owned */
	size_t len;
	bool removal;
};

#define CHECK(cond, ...)                                                                                             \
	do {                                                                                                         \
		if (!(cond)) {                                                                                       \
			fprintf(stderr, "fuzz_model: " __VA_ARGS__);                                                 \
			fputc('\n', stderr);                                                                         \
			__builtin_trap();                                                                            \
		}                                                                                                    \
	} while (0)

static struct held *find_held(struct fuzz *f, const char *name)
{
	for (size_t i = 0; i < f->n_held; i++) {
		if (strcmp(f->held[i].name, name) == 0)
			return &f->held[i];
	}
	return NULL;
}

static void release(struct fuzz *f, const char *name)
{
	struct held *entry = find_held(f, name);

	if (!entry)
		return;
	free(entry->version);
	free(entry->bytes);
	*entry = f->held[--f->n_held];
}

/* The kind an accepted resource decoded to must be the kind its name says, or names would be shared. */
static bool kind_matches_name(const char *name, const uint8_t *bytes, size_t len)
{
	ProtobufCMessage *msg;
	char err[256];
	bool matches = false;

	if (sm_pb_decode(&istio__workload__address__descriptor, bytes, len, &msg, err, sizeof(err)))
		return false;
	const Istio__Workload__Address *address = (const Istio__Workload__Address *)msg;
	if (address->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD)
		matches = is_workload_name(name);
	else if (address->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE)
		matches = !is_workload_name(name);
	protobuf_c_message_free_unpacked(msg, NULL);
	return matches;
}

static void hold(struct fuzz *f, const struct step_item *item)
{
	struct held *entry = find_held(f, item->name);

	if (!kind_matches_name(item->name, item->bytes, item->len))
		f->tracking = false;
	if (!entry) {
		entry = &f->held[f->n_held++];
		entry->name = item->name;
	} else {
		free(entry->version);
		free(entry->bytes);
	}
	entry->version = strdup(item->version);
	entry->bytes = malloc(item->len ? item->len : 1);
	CHECK(entry->version && entry->bytes, "out of memory");
	memcpy(entry->bytes, item->bytes, item->len);
	entry->len = item->len;
}

/* ---- checks ---- */

struct version_check {
	struct fuzz *f;
	size_t count;
};

static int check_version(void *ctx, const char *name, const char *version)
{
	struct version_check *check = ctx;
	struct held *entry = find_held(check->f, name);

	CHECK(entry, "the model holds a version of '%s', which it never accepted", name);
	CHECK(strcmp(entry->version, version) == 0, "'%s' has version '%s', the accepted one is '%s'", name,
	      version, entry->version);
	check->count++;
	return 0;
}

static void check_consistent(struct fuzz *f)
{
	const struct sm_image *image = sm_model_image(f->model);
	struct sm_image *scratch = NULL;
	char diff[256] = "", err[256] = "";

	CHECK(!f->writer.image.check_error[0], "a write left a dangling reference: %s", f->writer.image.check_error);
	CHECK(sm_image_check(f->kernel, err, sizeof(err)) == 0, "kernel maps: %s", err);
	CHECK(sm_image_equivalent(f->kernel, image, diff, sizeof(diff)), "kernel maps and the model's image differ: %s",
	      diff);
	CHECK(sm_model_build_image(f->model, &scratch) == 0, "sm_model_build_image failed");
	CHECK(sm_image_equivalent(scratch, image, diff, sizeof(diff)), "incremental and from-scratch images differ: %s",
	      diff);
	sm_image_free(scratch);
	for (size_t i = 0; i < f->rejections.count; i++) {
		CHECK(f->rejections.items[i].name[0] && f->rejections.items[i].reason[0],
		      "a rejection without a name or a reason");
	}
}

/* With no name mistaken for another, the versions (sent on reconnect) are exactly what the model took. */
static void check_versions(struct fuzz *f)
{
	struct version_check check = { .f = f };

	if (!f->tracking)
		return;
	sm_model_for_each_version(f->model, SM_TYPE_URL_ADDRESS, check_version, &check);
	CHECK(check.count == f->n_held, "the model holds %zu versions, it accepted %zu resources", check.count,
	      f->n_held);
}

/* The read side (dumps, stats, lookups) must cope with whatever state the model is in. */
static int count_address(void *ctx, const uint8_t addr[16])
{
	(void)addr;
	(*(size_t *)ctx)++;
	return 0;
}

static void exercise_readers(struct fuzz *f)
{
	struct sm_model_stats stats;
	struct sm_locality locality;
	size_t addresses = 0;
	json_t *dump = sm_model_config_dump(f->model);
	char *text;

	CHECK(dump, "sm_model_config_dump returned NULL");
	text = json_dumps(dump, JSON_COMPACT);
	CHECK(text, "the config dump does not serialise");
	free(text);
	json_decref(dump);
	sm_model_stats(f->model, &stats);
	sm_model_local_locality(f->model, &locality);
	sm_model_for_each_local_address(f->model, count_address, &addresses);
	for (int i = 0; i < N_SERVICES; i++)
		(void)sm_model_service_id(f->model, service_keys[i]);
	for (int i = 0; i < N_WORKLOADS; i++)
		(void)sm_model_backend_id(f->model, workload_uids[i]);
}

/*
 * Once the model says it reads a resource no more, its name and bytes are overwritten and, under ASan,
 * made unreadable until the step frees them; the rest of the response at the release: a read after
 * either traps.
 */
struct release_check {
	struct response *r;
	size_t lens[MAX_ITEMS + N_NAMES + 1]; /* each name's length with its NUL, resources then removals */
	size_t read; /* resources poisoned as read */
	int calls;
};

static void poison_bytes(void *bytes, size_t len)
{
	memset(bytes, 0xa5, len);
	ASAN_POISON_MEMORY_REGION(bytes, len);
}

static void poison_resource(struct release_check *check, size_t i)
{
	const Google__Protobuf__Any *any = check->r->msg.resources[i]->resource; /* NULL in some broken ones */

	poison_bytes(check->r->msg.resources[i]->name, check->lens[i]);
	if (any)
		poison_bytes(any->value.data, any->value.len);
}

static void response_read_up_to(void *ctx, size_t n)
{
	struct release_check *check = ctx;

	CHECK(check->calls == 0 && n > check->read && n <= check->r->msg.n_resources,
	      "read up to %zu after %zu of %zu, released %d times", n, check->read, check->r->msg.n_resources,
	      check->calls);
	for (; check->read < n; check->read++)
		poison_resource(check, check->read);
}

static void release_response(void *ctx)
{
	struct release_check *check = ctx;
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *msg = &check->r->msg;

	check->calls++;
	for (size_t i = check->read; i < msg->n_resources; i++)
		poison_resource(check, i);
	for (size_t i = 0; i < msg->n_removed_resources; i++)
		poison_bytes(msg->removed_resources[i], check->lens[msg->n_resources + i]);
}

static void unpoison_response(struct release_check *check)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *msg = &check->r->msg;
	size_t at = 0;

	for (size_t i = 0; i < msg->n_resources; i++) {
		const Google__Protobuf__Any *any = msg->resources[i]->resource;
		ASAN_UNPOISON_MEMORY_REGION(msg->resources[i]->name, check->lens[at++]);
		if (any)
			ASAN_UNPOISON_MEMORY_REGION(any->value.data, any->value.len);
	}
	for (size_t i = 0; i < msg->n_removed_resources; i++)
		ASAN_UNPOISON_MEMORY_REGION(msg->removed_resources[i], check->lens[at++]);
}

static void apply_response(struct fuzz *f, struct response *r)
{
	struct release_check check = { .r = r };
	size_t n = 0;

	CHECK(r->msg.n_resources + r->msg.n_removed_resources <= ARRAY_SIZE(check.lens), "a response too large");
	for (size_t i = 0; i < r->msg.n_resources; i++)
		check.lens[n++] = strlen(r->msg.resources[i]->name) + 1;
	for (size_t i = 0; i < r->msg.n_removed_resources; i++)
		check.lens[n++] = strlen(r->msg.removed_resources[i]) + 1;
	sm_rejections_clear(&f->rejections);
	int err = sm_model_apply_releasing(f->model, &r->msg,
					   &(struct sm_response_release){ .read_up_to = response_read_up_to,
									  .release = release_response,
									  .ctx = &check },
					   &f->writer.writer, &f->rejections);
	unpoison_response(&check);
	CHECK(err == 0, "sm_model_apply returned %d (%s)", err, strerror(-err));
	CHECK(check.calls == 1, "the response was released %d times", check.calls);
	check_consistent(f);
	exercise_readers(f);
}

static bool rejected(const struct fuzz *f, const char *name)
{
	for (size_t i = 0; i < f->rejections.count; i++) {
		if (strcmp(f->rejections.items[i].name, name) == 0)
			return true;
	}
	return false;
}

/* ---- valid resources from the pools ---- */

static void pick_gateway(struct fuzz_input *in, const char **ip, const char **service, uint32_t *port)
{
	switch (input_below(in, 8)) {
	case 1:
		*ip = INPUT_PICK(in, pod_pool);
		break;
	case 2:
		*service = input_chance(in, 10) ? "ns/nowhere" : service_keys[input_below(in, N_SERVICES)];
		break;
	default:
		return;
	}
	*port = INPUT_PICK(in, waypoint_ports);
}

static void service_spec_from_input(struct fuzz_input *in, int index, struct service_spec *spec)
{
	*spec = (struct service_spec){ .namespace = service_namespaces[index], .hostname = service_hosts[index] };
	for (uint32_t i = 0, n = input_below(in, 4); i < n; i++)
		spec->vips[i] = INPUT_PICK(in, vip_pool);
	/* consecutive entries of the pool: distinct ports (a repeated one is a corruption of its own) */
	uint32_t first = input_below(in, ARRAY_SIZE(service_ports));
	for (uint32_t i = 0, n = input_below(in, 5); i < n; i++) {
		spec->ports[i].service_port = service_ports[(first + i) % ARRAY_SIZE(service_ports)];
		spec->ports[i].target_port = INPUT_PICK(in, target_ports);
	}
	pick_gateway(in, &spec->waypoint_ip, &spec->waypoint_service, &spec->waypoint_port);
	spec->mode = (int)input_below(in, 4);
	for (uint32_t i = 0, n = input_below(in, 4); i < n; i++)
		spec->scopes[i] = 1 + (int)input_below(in, 6);
	spec->allow_unhealthy = input_chance(in, 30);
}

static void workload_spec_from_input(struct fuzz_input *in, int index, struct workload_spec *spec)
{
	*spec = (struct workload_spec){
		.uid = workload_uids[index],
		.node = INPUT_PICK(in, nodes),
		.region = INPUT_PICK(in, regions),
		.zone = INPUT_PICK(in, zones),
		.subzone = INPUT_PICK(in, subzones),
		.network = INPUT_PICK(in, networks),
		.cluster = INPUT_PICK(in, clusters),
		.namespace = index >= 14 ? "ns2" : "ns",
	};
	for (uint32_t i = 0, n = input_below(in, 4); i < n; i++)
		spec->addresses[i] = INPUT_PICK(in, pod_pool);
	for (uint32_t i = 0, n = input_below(in, 5); i < n; i++) {
		struct membership_spec *m = &spec->services[i];
		m->service = input_chance(in, 5) ? "ns/nowhere" : service_keys[input_below(in, N_SERVICES)];
		for (uint32_t p = 0, n_ports = input_below(in, 3); p < n_ports; p++) {
			m->ports[p].service_port = INPUT_PICK(in, service_ports);
			m->ports[p].target_port = INPUT_PICK(in, target_ports);
		}
	}
	pick_gateway(in, &spec->waypoint_ip, &spec->waypoint_service, &spec->waypoint_port);
	spec->unhealthy = input_chance(in, 20);
	spec->capacity = input_chance(in, 3) ? INPUT_PICK(in, large_weights) : INPUT_PICK(in, small_weights);
	spec->zero_capacity = input_chance(in, 5);
	spec->host_network = input_chance(in, 5);
	for (uint32_t i = 0, n = input_below(in, 3); i < n; i++)
		spec->policies[i] = policy_keys[input_below(in, N_POLICIES)];
}

/* ---- broken resources: one defect each, among those the model must reject (or survive) ---- */

static Istio__Workload__Port *new_port(struct response *r, uint32_t service_port, uint32_t target_port)
{
	Istio__Workload__Port init = ISTIO__WORKLOAD__PORT__INIT;
	Istio__Workload__Port *port = response_alloc(r, sizeof(*port));

	*port = init;
	port->service_port = service_port;
	port->target_port = target_port;
	return port;
}

/* n ports with distinct service ports, more than the datapath holds when n > SM_MAX_PORTS. */
static Istio__Workload__Port **many_ports(struct response *r, size_t n)
{
	Istio__Workload__Port **ports = response_alloc(r, n * sizeof(*ports));

	for (size_t i = 0; i < n; i++)
		ports[i] = new_port(r, 1000 + (uint32_t)i, 0);
	return ports;
}

static void corrupt_gateway(struct fuzz_input *in, struct response *r, Istio__Workload__GatewayAddress **slot)
{
	switch (input_below(in, 6)) {
	case 0:
		if (!*slot)
			*slot = gateway_from(r, "10.0.0.1", NULL, 15008);
		(*slot)->hbone_mtls_port = input_chance(in, 50) ? 0 : 65536 + input_byte(in);
		break;
	case 1:
		if (!*slot)
			*slot = gateway_from(r, "10.0.0.1", NULL, 15008);
		(*slot)->destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION__NOT_SET;
		break;
	case 2:
		*slot = gateway_from(r, "10.0.0.1", NULL, 15008);
		(*slot)->address->address.len = input_below(in, 33); /* ip_bytes leaves room for 32 */
		break;
	case 3:
		*slot = gateway_from(r, NULL, "ns/s0", 15008);
		(*slot)->hostname->namespace_ = "";
		break;
	case 4:
		*slot = gateway_from(r, NULL, "ns/s0", 15008);
		(*slot)->hostname->hostname = "s0/x";
		break;
	default: {
		char *long_name = response_alloc(r, 601);
		memset(long_name, 'h', 600);
		*slot = gateway_from(r, NULL, "ns/s0", 15008);
		(*slot)->hostname->hostname = long_name;
		break;
	}
	}
}

static Istio__Workload__Workload__ServicesEntry *some_membership(struct fuzz_input *in, struct response *r,
								  Istio__Workload__Workload *w)
{
	if (!w->n_services) {
		Istio__Workload__Workload__ServicesEntry entry_init = ISTIO__WORKLOAD__WORKLOAD__SERVICES_ENTRY__INIT;
		Istio__Workload__PortList list_init = ISTIO__WORKLOAD__PORT_LIST__INIT;
		Istio__Workload__Workload__ServicesEntry *entry = response_alloc(r, sizeof(*entry));
		Istio__Workload__PortList *list = response_alloc(r, sizeof(*list));

		*entry = entry_init;
		*list = list_init;
		list->ports = response_alloc(r, 4 * sizeof(*list->ports));
		entry->key = (char *)service_keys[0];
		entry->value = list;
		w->services[w->n_services++] = entry; /* workload_from leaves room for 4 */
	}
	return w->services[input_below(in, (uint32_t)w->n_services)];
}

static void corrupt_membership_port(struct fuzz_input *in, struct response *r, Istio__Workload__Workload *w)
{
	Istio__Workload__PortList *list = some_membership(in, r, w)->value;

	if (!list->n_ports)
		list->ports[list->n_ports++] = new_port(r, 80, 0); /* ports_from leaves room for 4 */
	Istio__Workload__Port *port = list->ports[input_below(in, (uint32_t)list->n_ports)];
	if (input_chance(in, 50))
		port->service_port = input_chance(in, 50) ? 0 : 65536 + input_byte(in);
	else
		port->target_port = 65536 + input_byte(in);
}

static void too_many_addresses(struct response *r, Istio__Workload__Workload *w)
{
	size_t n = 17;

	w->addresses = response_alloc(r, n * sizeof(*w->addresses));
	for (size_t i = 0; i < n; i++)
		w->addresses[i] = ip_bytes(r, pod_pool[i % ARRAY_SIZE(pod_pool)]);
	w->n_addresses = n;
}

/* One entry many times: a map key repeated, more entries than the model takes. */
static void too_many_services(struct fuzz_input *in, struct response *r, Istio__Workload__Workload *w)
{
	Istio__Workload__Workload__ServicesEntry *entry = some_membership(in, r, w);
	size_t n = 1025;

	w->services = response_alloc(r, n * sizeof(*w->services));
	for (size_t i = 0; i < n; i++)
		w->services[i] = entry;
	w->n_services = n;
}

static void corrupt_workload(struct fuzz_input *in, struct response *r, Istio__Workload__Workload *w)
{
	switch (input_below(in, 12)) {
	case 0:
		w->status = 2 + input_byte(in);
		break;
	case 1:
		w->network_mode = 2 + input_byte(in);
		break;
	case 2:
		w->uid = "";
		break;
	case 3:
		w->uid = (char *)workload_uids[input_below(in, N_WORKLOADS)];
		break;
	case 4:
		if (!w->n_addresses)
			w->addresses[w->n_addresses++] = ip_bytes(r, "10.0.0.1"); /* room for 3 */
		w->addresses[input_below(in, (uint32_t)w->n_addresses)].len = input_below(in, 33);
		break;
	case 5:
		too_many_addresses(r, w);
		break;
	case 6:
		some_membership(in, r, w)->key = (char *)INPUT_PICK(in, bad_service_keys);
		break;
	case 7:
		corrupt_membership_port(in, r, w);
		break;
	case 8: {
		Istio__Workload__PortList *list = some_membership(in, r, w)->value;
		list->n_ports = SM_MAX_PORTS + 1;
		list->ports = many_ports(r, list->n_ports);
		break;
	}
	case 9:
		corrupt_gateway(in, r, &w->waypoint);
		break;
	case 10:
		/* a network gateway is validated, not used: a good one must not hurt either */
		if (input_chance(in, 50))
			w->network_gateway = gateway_from(r, INPUT_PICK(in, pod_pool), NULL, 15008);
		else
			corrupt_gateway(in, r, &w->network_gateway);
		break;
	default:
		too_many_services(in, r, w);
		break;
	}
}

static Istio__Workload__NetworkAddress *some_vip(struct fuzz_input *in, struct response *r,
						 Istio__Workload__Service *s)
{
	if (!s->n_addresses) {
		Istio__Workload__NetworkAddress init = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
		Istio__Workload__NetworkAddress *address = response_alloc(r, sizeof(*address));
		*address = init;
		address->address = ip_bytes(r, "10.96.0.9");
		s->addresses[s->n_addresses++] = address; /* service_from leaves room for 3 */
	}
	return s->addresses[input_below(in, (uint32_t)s->n_addresses)];
}

static Istio__Workload__LoadBalancing *some_load_balancing(struct response *r, Istio__Workload__Service *s)
{
	if (!s->load_balancing) {
		Istio__Workload__LoadBalancing init = ISTIO__WORKLOAD__LOAD_BALANCING__INIT;
		s->load_balancing = response_alloc(r, sizeof(*s->load_balancing));
		*s->load_balancing = init;
	}
	/* room for more scopes than the datapath has priorities */
	Istio__Workload__LoadBalancing__Scope *scopes = response_alloc(r, 8 * sizeof(*scopes));
	for (size_t i = 0; i < s->load_balancing->n_routing_preference; i++)
		scopes[i] = s->load_balancing->routing_preference[i];
	s->load_balancing->routing_preference = scopes;
	return s->load_balancing;
}

static void corrupt_service_ports(struct fuzz_input *in, struct response *r, Istio__Workload__Service *s)
{
	if (s->n_ports < 2) {
		s->ports[s->n_ports] = new_port(r, s->n_ports ? 81 : 80, 0); /* service_from leaves room for 4 */
		s->n_ports++;
	}
	switch (input_below(in, 4)) {
	case 0:
		s->ports[input_below(in, (uint32_t)s->n_ports)]->service_port = 0;
		break;
	case 1:
		s->ports[input_below(in, (uint32_t)s->n_ports)]->service_port = 65536 + input_byte(in);
		break;
	case 2:
		s->ports[input_below(in, (uint32_t)s->n_ports)]->target_port = 65536 + input_byte(in);
		break;
	default:
		s->ports[s->n_ports - 1]->service_port = s->ports[0]->service_port;
		break;
	}
}

static void too_many_vips(struct response *r, Istio__Workload__Service *s)
{
	size_t n = 256;

	s->addresses = response_alloc(r, n * sizeof(*s->addresses));
	for (size_t i = 0; i < n; i++) {
		Istio__Workload__NetworkAddress init = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
		s->addresses[i] = response_alloc(r, sizeof(*s->addresses[i]));
		*s->addresses[i] = init;
		s->addresses[i]->address = ip_bytes(r, vip_pool[i % ARRAY_SIZE(vip_pool)]);
	}
	s->n_addresses = n;
}

static void corrupt_service(struct fuzz_input *in, struct response *r, Istio__Workload__Service *s)
{
	switch (input_below(in, 14)) {
	case 0:
		corrupt_service_ports(in, r, s);
		break;
	case 1:
		s->hostname = "";
		break;
	case 2:
		s->namespace_ = "";
		break;
	case 3:
		s->hostname = "s0/x";
		break;
	case 4:
		s->namespace_ = "ns3"; /* the key no longer matches the name */
		break;
	case 5:
		some_vip(in, r, s)->address.len = input_below(in, 33);
		break;
	case 6: {
		/* a range, or a prefix that covers the whole address (which is a single VIP) */
		Istio__Workload__NetworkAddress *vip = some_vip(in, r, s);
		vip->optional_length_case = ISTIO__WORKLOAD__NETWORK_ADDRESS__OPTIONAL_LENGTH_LENGTH;
		vip->length = input_chance(in, 30) ? (uint32_t)vip->address.len * 8 : input_byte(in);
		break;
	}
	case 7:
		some_load_balancing(r, s)->mode = 4 + input_byte(in);
		break;
	case 8:
		some_load_balancing(r, s)->health_policy = 2 + input_byte(in);
		break;
	case 9: {
		Istio__Workload__LoadBalancing *lb = some_load_balancing(r, s);
		lb->routing_preference[0] = input_chance(in, 50) ? 0 : 7 + input_byte(in);
		if (!lb->n_routing_preference)
			lb->n_routing_preference = 1;
		break;
	}
	case 10: {
		Istio__Workload__LoadBalancing *lb = some_load_balancing(r, s);
		for (size_t i = 0; i < 8; i++)
			lb->routing_preference[i] = ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION + i % 6;
		lb->n_routing_preference = 8;
		break;
	}
	case 11:
		s->n_ports = SM_MAX_PORTS + 1;
		s->ports = many_ports(r, s->n_ports);
		break;
	case 12:
		too_many_vips(r, s);
		break;
	default:
		corrupt_gateway(in, r, &s->waypoint);
		break;
	}
}

/* ---- responses ---- */

static bool name_used(const struct step_item *items, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(items[i].name, name) == 0)
			return true;
	}
	return false;
}

/*
 * Adds a packed message as a resource, now and then with a defect of the resource rather than of its
 * content: a name that is not the key, no name, another type URL, cut or foreign bytes, no Any at all.
 */
static void add_resource(struct fuzz *f, struct response *r, const char *name, const char *type_url,
			 const ProtobufCMessage *msg, struct step_item *item)
{
	struct fuzz_input *in = &f->in;
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *bytes = malloc(len ? len : 1);
	const char *url = type_url;
	bool no_any = false;

	CHECK(bytes, "out of memory");
	protobuf_c_message_pack(msg, bytes);
	*item = (struct step_item){ .name = name };
	snprintf(item->version, sizeof(item->version), "v%u", input_byte(in));
	if (input_chance(in, 8)) {
		switch (input_below(in, 8)) {
		case 0:
			item->name = strcmp(type_url, SM_TYPE_URL_ADDRESS) == 0 ? any_name(in)
										 : policy_keys[input_below(in, N_POLICIES)];
			break;
		case 1:
			/* rejected as "(unnamed)", or applied under the key: rare, since the run then stops tracking */
			if (!input_chance(in, 10))
				break;
			item->name = "";
			f->tracking = false;
			break;
		case 2:
			url = strcmp(type_url, SM_TYPE_URL_ADDRESS) == 0 ? SM_TYPE_URL_AUTHORIZATION : SM_TYPE_URL_ADDRESS;
			break;
		case 3:
			url = INPUT_PICK(in, other_type_urls);
			break;
		case 4:
			len = input_below(in, (uint32_t)len);
			break;
		case 5: {
			const uint8_t *garbage = input_bytes(in, 64, &len);
			free(bytes);
			bytes = malloc(len ? len : 1);
			CHECK(bytes, "out of memory");
			memcpy(bytes, garbage, len);
			break;
		}
		case 6:
			no_any = true;
			break;
		default:
			len = 0; /* an Address of neither kind */
			break;
		}
	}
	response_add_raw(r, item->name, item->version, url, bytes, len);
	if (no_any)
		r->msg.resources[r->msg.n_resources - 1]->resource = NULL;
	item->bytes = bytes;
	item->len = len;
}

/* A name twice in one response: usually avoided (so that the run can track what the model holds). */
static bool keep_duplicate(struct fuzz *f, const struct step_item *items, size_t n, const char *name)
{
	if (!name[0] || !name_used(items, n, name))
		return true;
	if (!input_chance(&f->in, 5))
		return false;
	f->tracking = false;
	return true;
}

static void add_address(struct fuzz *f, struct response *r, struct step_item *items, size_t *n)
{
	struct fuzz_input *in = &f->in;
	Istio__Workload__Address address = ISTIO__WORKLOAD__ADDRESS__INIT;
	uint32_t index = input_below(in, N_NAMES);
	bool invalid = input_chance(in, 15);
	const char *name;

	if (index < N_SERVICES) {
		struct service_spec spec;
		service_spec_from_input(in, (int)index, &spec);
		address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
		address.service = service_from(r, &spec);
		if (invalid)
			corrupt_service(in, r, address.service);
		name = service_keys[index];
	} else {
		struct workload_spec spec;
		workload_spec_from_input(in, (int)(index - N_SERVICES), &spec);
		address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
		address.workload = workload_from(r, &spec);
		if (invalid)
			corrupt_workload(in, r, address.workload);
		name = workload_uids[index - N_SERVICES];
	}
	add_resource(f, r, name, SM_TYPE_URL_ADDRESS, &address.base, &items[*n]);
	if (keep_duplicate(f, items, *n, items[*n].name)) {
		(*n)++;
		return;
	}
	r->msg.n_resources--; /* its allocations stay with the response */
	free(items[*n].bytes);
}

static void add_removal(struct fuzz *f, struct response *r, struct step_item *items, size_t *n)
{
	const char *name = input_chance(&f->in, 5) ? "nobody" : any_name(&f->in);

	if (!keep_duplicate(f, items, *n, name))
		return;
	items[(*n)++] = (struct step_item){ .name = name, .removal = true };
	response_remove(r, name);
}

static void address_step(struct fuzz *f)
{
	struct fuzz_input *in = &f->in;
	struct step_item items[MAX_ITEMS];
	size_t n = 0;
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (uint32_t i = 0, updates = input_below(in, MAX_UPDATES + 1); i < updates; i++)
		add_address(f, &r, items, &n);
	for (uint32_t i = 0, removals = input_below(in, MAX_REMOVALS + 1); i < removals; i++)
		add_removal(f, &r, items, &n);
	if (input_chance(in, 10))
		f->writer.image.fail_after = f->writer.image.ops_applied + 1 + input_below(in, 8);

	apply_response(f, &r);
	f->writer.image.fail_after = 0;
	response_free(&r);
	for (size_t i = 0; i < n; i++) {
		if (items[i].name[0] && !rejected(f, items[i].name)) {
			if (items[i].removal)
				release(f, items[i].name);
			else
				hold(f, &items[i]);
		}
		free(items[i].bytes);
	}
	check_versions(f);
}

static void add_authorization(struct fuzz *f, struct response *r)
{
	struct fuzz_input *in = &f->in;
	Istio__Security__Authorization policy = ISTIO__SECURITY__AUTHORIZATION__INIT;
	Istio__Security__Rule rule = ISTIO__SECURITY__RULE__INIT, *rules[] = { &rule };
	Istio__Security__Clause clause = ISTIO__SECURITY__CLAUSE__INIT, *clauses[] = { &clause };
	Istio__Security__Match match = ISTIO__SECURITY__MATCH__INIT, *matches[] = { &match };
	Istio__Security__Address source = ISTIO__SECURITY__ADDRESS__INIT, *sources[] = { &source };
	uint32_t port = INPUT_PICK(in, policy_ports), index = input_below(in, N_POLICIES);
	struct step_item item;

	policy.name = (char *)policy_names[index];
	policy.namespace_ = (char *)policy_namespaces[index];
	policy.scope = input_chance(in, 5) ? 3u + input_byte(in) : input_below(in, 3);
	policy.action = input_chance(in, 5) ? 2u + input_byte(in) : input_below(in, 2);
	if (input_chance(in, 50)) {
		source.address = ip_bytes(r, INPUT_PICK(in, pod_pool));
		if (input_chance(in, 10))
			source.address.len = input_below(in, 33);
		source.length = input_below(in, 140);
		match.n_source_ips = 1;
		match.source_ips = sources;
		match.n_destination_ports = 1;
		match.destination_ports = &port;
		clause.n_matches = 1;
		clause.matches = matches;
		rule.n_clauses = 1;
		rule.clauses = clauses;
		policy.n_rules = 1;
		policy.rules = rules;
	}
	add_resource(f, r, policy_keys[index], SM_TYPE_URL_AUTHORIZATION, &policy.base, &item);
	free(item.bytes);
}

/* Authorizations change no map; they must still leave the maps, and everything else, alone. */
static void authorization_step(struct fuzz *f)
{
	struct fuzz_input *in = &f->in;
	struct response r;

	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	for (uint32_t i = 0, n = input_below(in, 4); i < n; i++)
		add_authorization(f, &r);
	for (uint32_t i = 0, n = input_below(in, 2); i < n; i++)
		response_remove(&r, policy_keys[input_below(in, N_POLICIES)]);
	apply_response(f, &r);
	response_free(&r);
	check_versions(f);
}

/* A new agent adopts the maps and gets everything it held again: it must reject and rewrite nothing. */
static void restart_step(struct fuzz *f)
{
	struct response r;

	sm_model_free(f->model);
	CHECK(sm_model_new(&f->options, &f->model) == 0, "sm_model_new failed");
	CHECK(sm_model_adopt(f->model, f->kernel) == 0, "sm_model_adopt failed");
	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (size_t i = f->n_held; i-- > 0;)
		response_add_raw(&r, f->held[i].name, "v", SM_TYPE_URL_ADDRESS, f->held[i].bytes, f->held[i].len);
	size_t ops_before = f->writer.image.ops_applied;
	apply_response(f, &r);
	response_free(&r);
	if (f->tracking) {
		CHECK(!f->rejections.count, "a restart rejected %zu resources it had accepted (first: %s: %s)",
		      f->rejections.count, f->rejections.items[0].name, f->rejections.items[0].reason);
		CHECK(f->writer.image.ops_applied == ops_before, "a restart rewrote %zu entries that did not change",
		      f->writer.image.ops_applied - ops_before);
	}
	for (size_t i = 0; i < f->n_held; i++) {
		free(f->held[i].version);
		f->held[i].version = strdup("v");
		CHECK(f->held[i].version, "out of memory");
	}
	check_versions(f);
}

/* ---- one input ---- */

/*
 * Tiny maps half of the time, so that overflows, splits and undos happen within a few steps. Otherwise
 * roomy ones, which the pools cannot fill either, and now and then the defaults (0): the model sizes
 * its id tables by capacity, and allocating those for every input would cost more than the run.
 */
static void choose_options(struct fuzz *f)
{
	static const uint32_t small[SM_MAP_COUNT] = { 16, 10, 48, 24 };
	static const uint32_t defaults[SM_MAP_COUNT] = { SM_DEFAULT_MAX_FRONTENDS, SM_DEFAULT_MAX_SERVICES,
							 SM_DEFAULT_MAX_ENDPOINTS, SM_DEFAULT_MAX_BACKENDS };
	struct fuzz_input *in = &f->in;
	bool tiny = input_chance(in, 50), roomy = !tiny && !input_chance(in, 10);

	f->options.node_name = INPUT_PICK(in, nodes);
	if (input_chance(in, 20)) {
		f->locality = (struct sm_locality){ .region = INPUT_PICK(in, regions), .zone = INPUT_PICK(in, zones),
						    .network = INPUT_PICK(in, networks) };
		f->options.locality = &f->locality;
	}
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		f->options.capacity[map] = tiny ? 1 + input_below(in, small[map]) : roomy ? 4096 : 0;
		f->writer.capacity[map] =
			SM_MAP_KERNEL_ENTRIES(f->options.capacity[map] ? f->options.capacity[map] : defaults[map]);
	}
}

static void run_open(struct fuzz *f, const uint8_t *data, size_t size)
{
	*f = (struct fuzz){ .in = { .data = data, .size = size }, .tracking = true };
	f->writer.writer.apply = kernel_apply;
	choose_options(f);
	CHECK(sm_model_new(&f->options, &f->model) == 0, "sm_model_new failed");
	CHECK(sm_image_new(&f->kernel) == 0, "sm_image_new failed");
	sm_image_writer_init(&f->writer.image, f->kernel);
	f->writer.image.check_each_write = true;
}

static void run_close(struct fuzz *f)
{
	while (f->n_held)
		release(f, f->held[0].name);
	sm_rejections_clear(&f->rejections);
	sm_model_free(f->model);
	sm_image_free(f->kernel);
}

/* FUZZ_MODEL_VERBOSE=1: a line per input on what it did, to see what a corpus reaches. */
static bool verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	verbose = getenv("FUZZ_MODEL_VERBOSE") != NULL;
	return 0;
}

static void report(const struct fuzz *f, int steps, int restarts, size_t rejections)
{
	size_t entries = 0;

	for (int map = 0; map < SM_MAP_COUNT; map++)
		entries += sm_image_count(f->kernel, map);
	fprintf(stderr, "fuzz_model: %d steps, %d restarts, %zu rejections, %zu writes, %zu held, %zu map entries, %s%s\n",
		steps, restarts, rejections, f->writer.image.ops_applied, f->n_held, entries,
		f->options.capacity[0] == 0 ? "default maps" : f->options.capacity[0] == 4096 ? "roomy maps" : "tiny maps",
		f->tracking ? ", tracked" : "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz f;
	int step, restarts = 0;
	size_t rejections = 0;

	run_open(&f, data, size);
	for (step = 0; step < MAX_STEPS && !input_empty(&f.in); step++) {
		uint32_t kind = input_below(&f.in, 20);
		if (kind == 0) {
			restart_step(&f);
			restarts++;
		} else if (kind <= 2) {
			authorization_step(&f);
		} else {
			address_step(&f);
		}
		rejections += f.rejections.count;
	}
	if (verbose)
		report(&f, step, restarts, rejections);
	run_close(&f);
	return 0;
}
