/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockmesh dump: what the pinned maps hold, read straight from bpffs (no daemon needed): services with
 * their VIPs, endpoints by priority and waypoints, pod addresses that go to waypoints, backends, the
 * knobs, the enrolled namespaces' cookies and the counters. The maps hold ids, addresses and name
 * hashes, not names: the names come from the running agent's /config_dump (dump_names.h); without it,
 * services and backends show by id.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent/commands.h"
#include "agent/dump_names.h"
#include "datapath/datapath.h"

struct entry {
	uint8_t key[sizeof(struct sm_endpoint_key) > 16 ? sizeof(struct sm_endpoint_key) : 16];
	uint8_t value[sizeof(struct sm_service_value)];
};

struct table {
	struct entry *entries;
	size_t n, capacity;
	enum sm_map_id map;
};

static int collect(void *ctx, const void *key, const void *value)
{
	struct table *table = ctx;

	if (table->n == table->capacity) {
		size_t capacity = table->capacity ? table->capacity * 2 : 64;
		void *entries = realloc(table->entries, capacity * sizeof(*table->entries));
		if (!entries)
			return -1;
		table->entries = entries;
		table->capacity = capacity;
	}
	memcpy(table->entries[table->n].key, key, sm_map_key_size(table->map));
	memcpy(table->entries[table->n].value, value, sm_map_value_size(table->map));
	table->n++;
	return 0;
}

static void format_addr(const uint8_t addr[16], char *out, size_t size)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (memcmp(addr, mapped, 12) == 0)
		inet_ntop(AF_INET, addr + 12, out, (socklen_t)size);
	else
		inet_ntop(AF_INET6, addr, out, (socklen_t)size);
}

static json_t *waypoint_json(const struct sm_waypoint *waypoint)
{
	char v4[INET_ADDRSTRLEN], v6[INET6_ADDRSTRLEN];
	json_t *object;

	if (!waypoint->flags)
		return json_null();
	if (waypoint->flags & SM_WAYPOINT_UNRESOLVED)
		return json_string("unresolved");
	object = json_pack("{s:i}", "port", ntohs(waypoint->port));
	if (waypoint->flags & SM_WAYPOINT_V4) {
		inet_ntop(AF_INET, &waypoint->addr4, v4, sizeof(v4));
		json_object_set_new(object, "ipv4", json_string(v4));
	}
	if (waypoint->flags & SM_WAYPOINT_V6) {
		inet_ntop(AF_INET6, waypoint->addr6, v6, sizeof(v6));
		json_object_set_new(object, "ipv6", json_string(v6));
	}
	return object;
}

static json_t *backend_json(uint32_t id, const struct sm_backend_value *backend, const struct dump_names *names)
{
	char v4[INET_ADDRSTRLEN], v6[INET6_ADDRSTRLEN];
	json_t *object = json_pack("{s:i}", "id", id);
	const char *name = names ? dump_names_workload(names, backend->name_hash) : NULL;

	if (name)
		json_object_set_new(object, "workload", json_string(name));
	if (backend->families & SM_HAS_V4) {
		inet_ntop(AF_INET, &backend->addr4, v4, sizeof(v4));
		json_object_set_new(object, "ipv4", json_string(v4));
	}
	if (backend->families & SM_HAS_V6) {
		inet_ntop(AF_INET6, backend->addr6, v6, sizeof(v6));
		json_object_set_new(object, "ipv6", json_string(v6));
	}
	if (backend->waypoint.flags)
		json_object_set_new(object, "waypoint", waypoint_json(&backend->waypoint));
	return object;
}

static int by_id(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)((const struct entry *)a)->key, y = *(const uint32_t *)((const struct entry *)b)->key;

	return x < y ? -1 : x > y;
}

/* Endpoints by service, priority, slot. */
static int by_endpoint_key(const void *a, const void *b)
{
	const struct sm_endpoint_key *x = (const void *)((const struct entry *)a)->key;
	const struct sm_endpoint_key *y = (const void *)((const struct entry *)b)->key;

	if (x->service_id != y->service_id)
		return x->service_id < y->service_id ? -1 : 1;
	if (x->priority != y->priority)
		return x->priority < y->priority ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* Frontends by what they lead to (kind, id), then by address. */
static int by_target(const void *a, const void *b)
{
	const struct sm_frontend_value *x = (const void *)((const struct entry *)a)->value;
	const struct sm_frontend_value *y = (const void *)((const struct entry *)b)->value;

	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return memcmp(((const struct entry *)a)->key, ((const struct entry *)b)->key, sizeof(struct sm_frontend_key));
}

/* The tables sorted so that every lookup below is a binary search. */
static void sort_tables(struct table tables[SM_MAP_COUNT])
{
	qsort(tables[SM_MAP_SERVICES].entries, tables[SM_MAP_SERVICES].n, sizeof(struct entry), by_id);
	qsort(tables[SM_MAP_BACKENDS].entries, tables[SM_MAP_BACKENDS].n, sizeof(struct entry), by_id);
	qsort(tables[SM_MAP_ENDPOINTS].entries, tables[SM_MAP_ENDPOINTS].n, sizeof(struct entry), by_endpoint_key);
	qsort(tables[SM_MAP_FRONTENDS].entries, tables[SM_MAP_FRONTENDS].n, sizeof(struct entry), by_target);
}

static const struct sm_backend_value *find_backend(const struct table *backends, uint32_t id)
{
	struct entry probe;
	const struct entry *found;

	memcpy(probe.key, &id, sizeof(id));
	found = bsearch(&probe, backends->entries, backends->n, sizeof(struct entry), by_id);
	return found ? (const void *)found->value : NULL;
}

static const struct sm_endpoint_value *find_endpoint(const struct table *endpoints, uint32_t id, uint8_t priority,
						     uint32_t slot)
{
	struct entry probe;
	const struct entry *found;

	memcpy(probe.key, &(struct sm_endpoint_key){ .service_id = id, .priority = priority, .index = slot },
	       sizeof(struct sm_endpoint_key));
	found = bsearch(&probe, endpoints->entries, endpoints->n, sizeof(struct entry), by_endpoint_key);
	return found ? (const void *)found->value : NULL;
}

/* The first frontend of a service in the sorted table (its VIPs follow it). */
static size_t first_vip(const struct table *frontends, uint32_t id)
{
	size_t lo = 0, hi = frontends->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct sm_frontend_value *frontend = (const void *)frontends->entries[mid].value;
		if (frontend->kind < SM_FRONTEND_SERVICE || (frontend->kind == SM_FRONTEND_SERVICE && frontend->id < id))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* "namespace" and "hostname" of a service whose name hash the agent's dump knows. */
static void set_service_name(json_t *object, const struct sm_service_value *svc, const struct dump_names *names)
{
	const char *name = names ? dump_names_service(names, svc->name_hash) : NULL;
	const char *slash = name ? strchr(name, '/') : NULL;

	if (!slash)
		return;
	json_object_set_new(object, "namespace", json_stringn(name, (size_t)(slash - name)));
	json_object_set_new(object, "hostname", json_string(slash + 1));
}

static json_t *service_json(uint32_t id, const struct sm_service_value *svc, const struct table *frontends,
			    const struct table *endpoints, const struct dump_names *names)
{
	static const char *const modes[] = { "random", "strict", "failover", "passthrough" };
	json_t *vips = json_array(), *ports = json_array(), *priorities = json_array();

	for (size_t i = first_vip(frontends, id); i < frontends->n; i++) {
		const struct sm_frontend_value *frontend = (const void *)frontends->entries[i].value;
		char text[INET6_ADDRSTRLEN];
		if (frontend->kind != SM_FRONTEND_SERVICE || frontend->id != id)
			break;
		format_addr(frontends->entries[i].key, text, sizeof(text));
		json_array_append_new(vips, json_string(text));
	}
	for (uint8_t p = 0; p < svc->n_ports && p < SM_MAX_PORTS; p++)
		json_array_append_new(ports, json_integer(ntohs(svc->ports[p])));
	for (uint8_t p = 0; p < SM_MAX_PRIORITIES; p++) {
		if (!svc->endpoint_counts[p])
			continue;
		json_t *slots = json_array();
		for (uint32_t slot = 0; slot < svc->endpoint_counts[p]; slot++) {
			const struct sm_endpoint_value *value = find_endpoint(endpoints, id, p, slot);
			if (!value)
				continue;
			json_t *targets = json_array();
			for (uint8_t t = 0; t < svc->n_ports && t < SM_MAX_PORTS; t++)
				json_array_append_new(targets, json_integer(ntohs(value->target_ports[t])));
			json_array_append_new(slots, json_pack("{s:i, s:o}", "backend", value->backend_id, "targetPorts", targets));
		}
		json_array_append_new(priorities, json_pack("{s:i, s:o}", "priority", p, "endpoints", slots));
	}
	json_t *object = json_pack("{s:i}", "id", id);
	set_service_name(object, svc, names);
	json_object_update_new(object, json_pack("{s:o, s:o, s:s, s:o}", "vips", vips, "ports", ports, "mode",
						 svc->lb_mode < 4 ? modes[svc->lb_mode] : "unknown", "priorities",
						 priorities));
	if (svc->waypoint.flags)
		json_object_set_new(object, "waypoint", waypoint_json(&svc->waypoint));
	return object;
}

/* Where the names came from, or why there are none. */
struct names_source {
	const struct dump_names *names; /* NULL: none */
	const char *address;
	const char *why_none;
};

static int add_enrolled(void *ctx, uint64_t netns_cookie)
{
	return json_array_append_new(ctx, json_integer((json_int_t)netns_cookie));
}

static json_t *dump_json(struct sm_datapath *dp, struct table tables[SM_MAP_COUNT], const struct names_source *source)
{
	const struct dump_names *names = source->names;
	json_t *services = json_array(), *pods = json_array(), *backends = json_array(), *counters = json_object();
	uint64_t values[SM_COUNTER_MAX];
	struct sm_config config = { 0 };

	for (size_t i = 0; i < tables[SM_MAP_SERVICES].n; i++)
		json_array_append_new(services, service_json(*(uint32_t *)tables[SM_MAP_SERVICES].entries[i].key,
							     (const void *)tables[SM_MAP_SERVICES].entries[i].value,
							     &tables[SM_MAP_FRONTENDS], &tables[SM_MAP_ENDPOINTS], names));
	for (size_t i = 0; i < tables[SM_MAP_FRONTENDS].n; i++) {
		const struct sm_frontend_value *frontend = (const void *)tables[SM_MAP_FRONTENDS].entries[i].value;
		char text[INET6_ADDRSTRLEN];
		if (frontend->kind != SM_FRONTEND_WORKLOAD)
			continue;
		format_addr(tables[SM_MAP_FRONTENDS].entries[i].key, text, sizeof(text));
		json_array_append_new(pods, json_pack("{s:s, s:i}", "address", text, "backend", frontend->id));
	}
	for (size_t i = 0; i < tables[SM_MAP_BACKENDS].n; i++)
		json_array_append_new(backends, backend_json(*(uint32_t *)tables[SM_MAP_BACKENDS].entries[i].key,
							     (const void *)tables[SM_MAP_BACKENDS].entries[i].value, names));
	if (sm_datapath_counters(dp, values) == 0) {
		for (int c = 0; c < SM_COUNTER_MAX; c++)
			json_object_set_new(counters, sm_counter_name(c), json_integer((json_int_t)values[c]));
	}
	sm_datapath_get_config(dp, &config);
	json_t *knobs = json_pack("{s:b, s:b}", "enrollAll", config.flags & SM_CONFIG_ENROLL_ALL ? 1 : 0, "accelerate",
				  config.flags & SM_CONFIG_ACCELERATE ? 1 : 0);
	if (config.flags & (SM_CONFIG_DNS4 | SM_CONFIG_DNS6)) {
		char text[INET6_ADDRSTRLEN];
		if (config.flags & SM_CONFIG_DNS4)
			inet_ntop(AF_INET, &config.dns_addr4, text, sizeof(text));
		else
			inet_ntop(AF_INET6, config.dns_addr6, text, sizeof(text));
		json_object_set_new(knobs, "dnsProxy", json_sprintf("%s:%u", text, ntohs(config.dns_port)));
	}
	json_t *capacity = json_object();
	for (int m = 0; m < SM_MAP_COUNT; m++) {
		uint32_t max = 0;
		sm_datapath_capacity(dp, m, &max);
		json_object_set_new(capacity, sm_map_name(m), json_pack("{s:I, s:I}", "entries", (json_int_t)tables[m].n,
									 "capacity", (json_int_t)max));
	}
	/* the netns cookies that 'sockmesh enroll' or the enroller put in */
	json_t *enrolled = json_array();
	sm_datapath_for_each_enrolled(dp, add_enrolled, enrolled);
	json_t *from = names ? json_pack("{s:s++}", "source", "http://", source->address, "/config_dump")
			     : json_pack("{s:s}", "unavailable", source->why_none);
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "config", knobs, "maps", capacity, "names", from,
			 "enrolled", enrolled, "services", services, "podWaypoints", pods, "backends", backends, "counters", counters);
}

/* The same, for a person: one service a few lines, endpoints by priority with their addresses. */
static void print_human(json_t *dump, const struct table *backends)
{
	size_t i, j, k;
	json_t *svc, *prio, *endpoint, *value;
	const char *key;

	printf("config: enroll all %s, acceleration %s, DNS proxy %s\n",
	       json_is_true(json_object_get(json_object_get(dump, "config"), "enrollAll")) ? "on" : "off",
	       json_is_true(json_object_get(json_object_get(dump, "config"), "accelerate")) ? "on" : "off",
	       json_is_string(json_object_get(json_object_get(dump, "config"), "dnsProxy"))
		       ? json_string_value(json_object_get(json_object_get(dump, "config"), "dnsProxy"))
		       : "none");
	printf("maps:");
	json_object_foreach(json_object_get(dump, "maps"), key, value)
		printf(" %s %lld/%lld", key, json_integer_value(json_object_get(value, "entries")),
		       json_integer_value(json_object_get(value, "capacity")));
	printf("\n");
	json_t *names = json_object_get(dump, "names");
	if (json_object_get(names, "source"))
		printf("names: from %s\n", json_string_value(json_object_get(names, "source")));
	else
		printf("names: not shown, services and backends by id only: %s (is the agent running? "
		       "--admin-address names its admin endpoint)\n",
		       json_string_value(json_object_get(names, "unavailable")));
	printf("enrolled network namespaces (cookies):");
	json_array_foreach(json_object_get(dump, "enrolled"), i, value)
		printf(" %llu", (unsigned long long)json_integer_value(value));
	printf(json_array_size(json_object_get(dump, "enrolled")) ? "\n" : " none\n");
	printf("\nservices\n");
	json_array_foreach(json_object_get(dump, "services"), i, svc) {
		printf("  #%lld", json_integer_value(json_object_get(svc, "id")));
		if (json_object_get(svc, "hostname"))
			printf("  %s/%s", json_string_value(json_object_get(svc, "namespace")),
			       json_string_value(json_object_get(svc, "hostname")));
		else if (json_object_get(names, "source"))
			printf("  (not in the agent's config)");
		printf("  VIPs");
		json_array_foreach(json_object_get(svc, "vips"), j, value)
			printf(" %s", json_string_value(value));
		printf("  ports");
		json_array_foreach(json_object_get(svc, "ports"), j, value)
			printf(" %lld", json_integer_value(value));
		printf("  %s", json_string_value(json_object_get(svc, "mode")));
		json_t *waypoint = json_object_get(svc, "waypoint");
		if (json_is_string(waypoint))
			printf("  waypoint unresolved");
		else if (waypoint) {
			json_t *address = json_object_get(waypoint, "ipv4");
			printf("  waypoint %s:%lld", json_string_value(address ? address : json_object_get(waypoint, "ipv6")),
			       json_integer_value(json_object_get(waypoint, "port")));
		}
		printf("\n");
		json_array_foreach(json_object_get(svc, "priorities"), j, prio) {
			printf("      priority %lld:", json_integer_value(json_object_get(prio, "priority")));
			json_array_foreach(json_object_get(prio, "endpoints"), k, endpoint) {
				uint32_t id = (uint32_t)json_integer_value(json_object_get(endpoint, "backend"));
				const struct sm_backend_value *backend = find_backend(backends, id);
				char text[INET6_ADDRSTRLEN] = "?";
				if (backend && (backend->families & SM_HAS_V4))
					inet_ntop(AF_INET, &backend->addr4, text, sizeof(text));
				else if (backend && (backend->families & SM_HAS_V6))
					inet_ntop(AF_INET6, backend->addr6, text, sizeof(text));
				printf(" %s:%lld", text,
				       json_integer_value(json_array_get(json_object_get(endpoint, "targetPorts"), 0)));
			}
			printf("\n");
		}
	}
	if (json_array_size(json_object_get(dump, "podWaypoints"))) {
		printf("\npod addresses sent to their waypoint\n");
		json_array_foreach(json_object_get(dump, "podWaypoints"), i, value)
			printf("  %s  backend #%lld\n", json_string_value(json_object_get(value, "address")),
			       json_integer_value(json_object_get(value, "backend")));
	}
	printf("\ncounters:");
	json_object_foreach(json_object_get(dump, "counters"), key, value)
		printf(" %s %lld", key, json_integer_value(value));
	printf("\n");
}

/* Read after the maps: a name that appeared between the two reads is just not shown. */
static int load_names(const char *address, struct dump_names *names, char *why_none, size_t size)
{
	json_t *config_dump = NULL;
	int ret = dump_names_fetch(address, &config_dump, why_none, size);

	if (!ret && (ret = dump_names_index(config_dump, names)))
		snprintf(why_none, size, "indexing the agent's /config_dump: %s", strerror(-ret));
	json_decref(config_dump);
	return ret;
}

static void dump_usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh dump [--json] [--pin-dir PATH] [--admin-address IP:PORT]\n\n"
		     "Shows what the pinned datapath maps hold: services (VIPs, ports, LB mode, waypoint,\n"
		     "endpoints by priority), pod addresses sent to waypoints, backends, the knobs, the\n"
		     "enrolled network namespaces' cookies and the counters. No running agent is needed;\n"
		     "when one answers on its admin endpoint, services show their namespace/hostname and\n"
		     "backends their workload (the maps hold only ids).\n\n"
		     "  --json                   print JSON\n"
		     "  --pin-dir PATH           where the datapath is pinned (default " SM_DEFAULT_PIN_DIR ")\n"
		     "  --admin-address IP:PORT  the agent's admin endpoint, for names (default " DEFAULT_ADMIN_ADDRESS ")\n");
}

int cmd_dump(int argc, char **argv)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "pin-dir", required_argument, NULL, 'p' },
		{ "admin-address", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *pin_dir = SM_DEFAULT_PIN_DIR;
	struct names_source source = { .address = DEFAULT_ADMIN_ADDRESS };
	struct dump_names names = { 0 };
	char why_none[512];
	bool as_json = false;
	struct table tables[SM_MAP_COUNT] = { 0 };
	struct sm_datapath *dp;
	char err[512];
	int opt, status = 1;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'j': as_json = true; break;
		case 'p': pin_dir = optarg; break;
		case 'a': source.address = optarg; break;
		case 'h': dump_usage(stdout); return 0;
		default: dump_usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		dump_usage(stderr);
		return 2;
	}
	if (sm_datapath_open_pinned(pin_dir, &dp, err, sizeof(err))) {
		fprintf(stderr, "sockmesh dump: %s\n", err);
		return 1;
	}
	for (int m = 0; m < SM_MAP_COUNT; m++) {
		tables[m].map = m;
		if (sm_datapath_for_each(dp, m, collect, &tables[m])) {
			fprintf(stderr, "sockmesh dump: reading the %s map failed\n", sm_map_name(m));
			goto out;
		}
	}
	sort_tables(tables);
	if (load_names(source.address, &names, why_none, sizeof(why_none)) == 0)
		source.names = &names;
	source.why_none = why_none;
	json_t *dump = dump_json(dp, tables, &source);
	if (as_json) {
		json_dumpf(dump, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		print_human(dump, &tables[SM_MAP_BACKENDS]);
	}
	json_decref(dump);
	status = 0;
out:
	dump_names_clear(&names);
	for (int m = 0; m < SM_MAP_COUNT; m++)
		free(tables[m].entries);
	sm_datapath_close(dp);
	return status;
}
