/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's local config (LOCAL_XDS_PATH) as an xDS source: the YAML (or JSON) file of workloads,
 * services and policies becomes the two responses istiod would send, so that the agent applies it the
 * way it applies istiod's. A ztunnel config dump reads too (workloads and services keyed by address,
 * endpoints under services), which turns dumps people already have into test inputs.
 *
 * Strict: a key this reader does not know, a value of the wrong shape, a duplicate key, service,
 * workload or policy is an error with the file and line, never a field quietly dropped (a misspelled
 * policy field must not fail open, a misspelled top-level key must not empty the datapath). The only
 * keys accepted and ignored are the config dump's top-level `certificates` and `workloadState`.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <uthash.h>
#include <xxhash.h>
#include <yaml.h>

#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "xds/xds.h"

struct reader {
	const char *path;
	yaml_document_t doc;
	struct sm_pb_arena arena; /* everything a conversion allocates, freed at once after packing */
	char *err;
	size_t err_size;
	bool failed;
	bool out_of_memory;
};

static void problem(struct reader *r, const yaml_node_t *node, const char *fmt, ...);

/* Zeroed, from the arena. */
static void *alloc(struct reader *r, size_t size)
{
	void *block = r->arena.allocator.alloc(r->arena.allocator.allocator_data, size ? size : 1);

	if (!block) {
		r->out_of_memory = true;
		problem(r, NULL, "out of memory");
		return NULL;
	}
	return memset(block, 0, size);
}

#define NEW(r, type) ((type *)alloc((r), sizeof(type)))
#define NEW_ARRAY(r, type, n) ((type *)alloc((r), sizeof(type) * (n)))

static void problem(struct reader *r, const yaml_node_t *node, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->failed)
		return;
	r->failed = true;
	n = snprintf(r->err, r->err_size, "%s:%zu: ", r->path, node ? node->start_mark.line + 1 : 0);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < r->err_size)
		vsnprintf(r->err + n, r->err_size - (size_t)n, fmt, ap);
	va_end(ap);
}

/* ---- reading nodes ---- */

static yaml_node_t *node_at(struct reader *r, int index)
{
	return yaml_document_get_node(&r->doc, index);
}

static yaml_node_t *get(struct reader *r, const yaml_node_t *map, const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = node_at(r, pair->key);
		if (k && k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
			return node_at(r, pair->value);
	}
	return NULL;
}

static const char *scalar(const yaml_node_t *node)
{
	return node && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value : NULL;
}

/* An empty plain value (`key:`), `~` or `null`. */
static bool is_null(const yaml_node_t *node)
{
	const char *value = scalar(node);

	return value && node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (!value[0] || strcmp(value, "~") == 0 || strcasecmp(value, "null") == 0);
}

static const char *shape_name(yaml_node_type_t type)
{
	return type == YAML_SEQUENCE_NODE ? "a list" : type == YAML_MAPPING_NODE ? "a mapping" : "a string";
}

static void wrong_shape(struct reader *r, const yaml_node_t *node, const char *what, const char *want)
{
	if (is_null(node))
		problem(r, node, "%s must be %s, not empty", what, want);
	else if (scalar(node))
		problem(r, node, "%s must be %s, not '%s'", what, want, scalar(node));
	else
		problem(r, node, "%s must be %s, not %s", what, want, shape_name(node->type));
}

/* node when it has this shape; NULL (and a problem) when it has another; NULL when absent. */
static yaml_node_t *shaped(struct reader *r, yaml_node_t *node, yaml_node_type_t type, const char *what)
{
	if (node && node->type != type) {
		wrong_shape(r, node, what, shape_name(type));
		return NULL;
	}
	return node;
}

#define get_list(r, map, key) shaped((r), get((r), (map), (key)), YAML_SEQUENCE_NODE, "'" key "'")
#define get_map(r, map, key) shaped((r), get((r), (map), (key)), YAML_MAPPING_NODE, "'" key "'")

/*
 * map is a mapping whose keys are all among known (NULL-terminated); else a problem at the first
 * unknown key. what names the object in the message.
 */
static bool fields(struct reader *r, const yaml_node_t *map, const char *what, const char *const *known)
{
	if (!map || map->type != YAML_MAPPING_NODE) {
		if (map)
			wrong_shape(r, map, what, "a mapping");
		else
			problem(r, NULL, "%s is missing", what);
		return false;
	}
	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = node_at(r, pair->key);
		const char *name = scalar(k);
		size_t i = 0;

		if (!name) {
			problem(r, k ? k : map, "%s has a key that is not a string", what);
			return false;
		}
		while (known[i] && strcmp(known[i], name) != 0)
			i++;
		if (!known[i]) {
			problem(r, k, "unknown field '%s' in %s", name, what);
			return false;
		}
	}
	return true;
}

/* A string field, copied into the arena ("" when absent or null; protobuf-c wants non-NULL strings). */
static char *text(struct reader *r, const yaml_node_t *map, const char *key)
{
	yaml_node_t *node = get(r, map, key);
	const char *value = scalar(node);
	char *copy;

	if (node && !value) {
		wrong_shape(r, node, key, "a string");
		return "";
	}
	if (is_null(node))
		value = NULL;
	copy = alloc(r, value ? strlen(value) + 1 : 1);
	if (copy && value)
		strcpy(copy, value);
	return copy ? copy : "";
}

static bool number(struct reader *r, const yaml_node_t *node, uint32_t max, uint32_t *out)
{
	const char *value = scalar(node);
	char *end;

	if (!value) {
		if (node)
			problem(r, node, "expected a number, found %s", shape_name(node->type));
		return false;
	}
	errno = 0;
	unsigned long n = strtoul(value, &end, 10);
	if (value[0] < '0' || value[0] > '9' || *end || errno || n > max) {
		problem(r, node, "'%s' is not a number up to %u", value, max);
		return false;
	}
	*out = (uint32_t)n;
	return true;
}

/* true/false (or yes/no, any case); absent is false; anything else is a problem, not false. */
static bool boolean(struct reader *r, const yaml_node_t *map, const char *key)
{
	yaml_node_t *node = get(r, map, key);
	const char *value = scalar(node);

	if (!node)
		return false;
	if (value && (strcasecmp(value, "true") == 0 || strcasecmp(value, "yes") == 0))
		return true;
	if (!value || (strcasecmp(value, "false") != 0 && strcasecmp(value, "no") != 0))
		wrong_shape(r, node, key, "true or false");
	return false;
}

static size_t items(const yaml_node_t *node)
{
	if (node && node->type == YAML_SEQUENCE_NODE)
		return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
	if (node && node->type == YAML_MAPPING_NODE)
		return (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
	return 0;
}

static yaml_node_t *item(struct reader *r, const yaml_node_t *node, size_t i)
{
	if (node->type == YAML_SEQUENCE_NODE)
		return node_at(r, node->data.sequence.items.start[i]);
	return node_at(r, node->data.mapping.pairs.start[i].value);
}

static yaml_node_t *item_key(struct reader *r, const yaml_node_t *node, size_t i)
{
	return node->type == YAML_MAPPING_NODE ? node_at(r, node->data.mapping.pairs.start[i].key) : NULL;
}

/* An enum by its ztunnel name, case-insensitive; -1 when unknown. */
static int name_index(const char *value, const char *const *names, size_t n)
{
	for (size_t i = 0; value && i < n; i++) {
		if (names[i] && strcasecmp(value, names[i]) == 0)
			return (int)i;
	}
	return -1;
}

static int enum_field(struct reader *r, const yaml_node_t *map, const char *key, const char *const *names, size_t n,
		      int fallback)
{
	yaml_node_t *node = get(r, map, key);
	const char *value = scalar(node);
	int index;

	if (node && !value)
		wrong_shape(r, node, key, "a string");
	if (!value)
		return fallback;
	index = name_index(value, names, n);
	if (index < 0)
		problem(r, node, "unknown %s '%s'", key, value);
	return index < 0 ? fallback : index;
}

#define ENUM(r, map, key, names, fallback) enum_field(r, map, key, names, sizeof(names) / sizeof(names[0]), fallback)

/* ---- addresses ---- */

static bool ip_bytes(struct reader *r, const char *text, ProtobufCBinaryData *out)
{
	uint8_t *bytes = alloc(r, 16);

	if (!bytes)
		return false;
	if (inet_pton(AF_INET, text, bytes) == 1) {
		*out = (ProtobufCBinaryData){ .len = 4, .data = bytes };
		return true;
	}
	if (inet_pton(AF_INET6, text, bytes) == 1) {
		*out = (ProtobufCBinaryData){ .len = 16, .data = bytes };
		return true;
	}
	return false;
}

/* "network/ip" (the network may be empty, the slash too), as ztunnel writes addresses. */
static Istio__Workload__NetworkAddress *network_address(struct reader *r, const yaml_node_t *node)
{
	const char *value = scalar(node);
	Istio__Workload__NetworkAddress *address = NEW(r, Istio__Workload__NetworkAddress);

	if (!value || !address) {
		problem(r, node, "an address must be \"network/ip\"");
		return NULL;
	}
	istio__workload__network_address__init(address);
	const char *slash = strrchr(value, '/');
	if (!ip_bytes(r, slash ? slash + 1 : value, &address->address)) {
		problem(r, node, "'%s' is not an address", value);
		return NULL;
	}
	address->network = alloc(r, slash ? (size_t)(slash - value) + 1 : 1);
	if (address->network && slash)
		memcpy(address->network, value, (size_t)(slash - value));
	return address;
}

/* {destination: "network/ip" | "namespace/hostname", port} */
static const char *const gateway_fields[] = { "destination", "port", NULL };

static Istio__Workload__GatewayAddress *gateway(struct reader *r, const yaml_node_t *node, const char *what)
{
	Istio__Workload__GatewayAddress *gateway;
	const char *destination = scalar(get(r, node, "destination"));
	uint32_t port = 15008;

	if (!node || !fields(r, node, what, gateway_fields))
		return NULL;
	if (!destination) {
		problem(r, node, "%s needs a destination", what);
		return NULL;
	}
	gateway = NEW(r, Istio__Workload__GatewayAddress);
	if (!gateway)
		return NULL;
	istio__workload__gateway_address__init(gateway);
	number(r, get(r, node, "port"), 65535, &port);
	gateway->hbone_mtls_port = port;

	const char *slash = strrchr(destination, '/');
	ProtobufCBinaryData probe;
	if (ip_bytes(r, slash ? slash + 1 : destination, &probe)) {
		gateway->destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS;
		gateway->address = network_address(r, get(r, node, "destination"));
		return gateway->address ? gateway : NULL;
	}
	Istio__Workload__NamespacedHostname *name = NEW(r, Istio__Workload__NamespacedHostname);
	if (!name || !slash) {
		problem(r, node, "waypoint destination '%s' is neither network/ip nor namespace/hostname", destination);
		return NULL;
	}
	istio__workload__namespaced_hostname__init(name);
	name->namespace_ = alloc(r, (size_t)(slash - destination) + 1);
	name->hostname = alloc(r, strlen(slash + 1) + 1);
	if (!name->namespace_ || !name->hostname)
		return NULL;
	memcpy(name->namespace_, destination, (size_t)(slash - destination));
	strcpy(name->hostname, slash + 1);
	gateway->destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME;
	gateway->hostname = name;
	return gateway;
}

/* {servicePort: targetPort, ...} */
static Istio__Workload__Port **ports(struct reader *r, const yaml_node_t *map, size_t *n)
{
	size_t count = items(map);
	Istio__Workload__Port **list = NEW_ARRAY(r, Istio__Workload__Port *, count);

	*n = 0;
	if (!shaped(r, (yaml_node_t *)map, YAML_MAPPING_NODE, "ports"))
		return list;
	for (size_t i = 0; list && map && i < count; i++) {
		Istio__Workload__Port *port = NEW(r, Istio__Workload__Port);
		if (!port)
			return NULL;
		istio__workload__port__init(port);
		if (!number(r, item_key(r, map, i), 65535, &port->service_port) ||
		    !number(r, item(r, map, i), 65535, &port->target_port)) {
			problem(r, map, "ports map service ports to target ports");
			*n = 0;
			return NULL;
		}
		list[(*n)++] = port;
	}
	return list;
}

static char **strings(struct reader *r, const yaml_node_t *list, size_t *n)
{
	size_t count = items(list);
	char **out = NEW_ARRAY(r, char *, count);

	*n = 0;
	for (size_t i = 0; out && list && i < count; i++) {
		const char *value = scalar(item(r, list, i));
		char *copy = value ? alloc(r, strlen(value) + 1) : NULL;
		if (!value)
			wrong_shape(r, item(r, list, i), "a list item", "a string");
		if (!copy)
			return out;
		strcpy(copy, value);
		out[(*n)++] = copy;
	}
	return out;
}

/* ---- workloads and services ---- */

static const char *const protocols[] = { "TCP", "HBONE", "LegacyIstioMtls" };
static const char *const workload_types[] = { "deployment", "cronjob", "pod", "job" };
static const char *const statuses[] = { "Healthy", "Unhealthy" };
static const char *const network_modes[] = { "Standard", "HostNetwork" };
static const char *const lb_modes[] = { "UnspecifiedMode", "Strict", "Failover", "Passthrough" };
static const char *const health_policies[] = { "OnlyHealthy", "AllowAll" };
static const char *const lb_scopes[] = { NULL, "Region", "Zone", "Subzone", "Node", "Cluster", "Network" };

struct address_list {
	Istio__Workload__Address **items;
	char **names;
	size_t n;
};

static Istio__Workload__Workload__ServicesEntry *membership(struct reader *r, const char *service,
							   const yaml_node_t *port_map)
{
	Istio__Workload__Workload__ServicesEntry *entry = NEW(r, Istio__Workload__Workload__ServicesEntry);
	Istio__Workload__PortList *list = NEW(r, Istio__Workload__PortList);

	if (!entry || !list)
		return NULL;
	istio__workload__workload__services_entry__init(entry);
	istio__workload__port_list__init(list);
	entry->key = alloc(r, strlen(service) + 1);
	if (entry->key)
		strcpy(entry->key, service);
	list->ports = ports(r, port_map, &list->n_ports);
	entry->value = list;
	return entry;
}

static const char *const workload_fields[] = {
	"uid", "name", "namespace", "serviceAccount", "trustDomain", "node", "network", "canonicalName",
	"canonicalRevision", "workloadName", "clusterId", "hostname", "protocol", "workloadType", "status",
	"networkMode", "nativeTunnel", "waypoint", "networkGateway", "authorizationPolicies", "workloadIps",
	"locality", "capacity", "services", NULL,
};
static const char *const locality_fields[] = { "region", "zone", "subzone", NULL };

static Istio__Workload__Workload *workload(struct reader *r, const yaml_node_t *node)
{
	Istio__Workload__Workload *w;
	yaml_node_t *ips, *services;

	if (!fields(r, node, "a workload", workload_fields))
		return NULL;
	ips = get_list(r, node, "workloadIps");
	services = get_map(r, node, "services");
	w = NEW(r, Istio__Workload__Workload);
	if (!w)
		return NULL;
	istio__workload__workload__init(w);
	w->uid = text(r, node, "uid");
	if (!w->uid[0])
		problem(r, node, "a workload needs a uid");
	w->name = text(r, node, "name");
	w->namespace_ = text(r, node, "namespace");
	w->service_account = text(r, node, "serviceAccount");
	w->trust_domain = text(r, node, "trustDomain");
	w->node = text(r, node, "node");
	w->network = text(r, node, "network");
	w->canonical_name = text(r, node, "canonicalName");
	w->canonical_revision = text(r, node, "canonicalRevision");
	w->workload_name = text(r, node, "workloadName");
	w->cluster_id = text(r, node, "clusterId");
	w->hostname = text(r, node, "hostname");
	w->tunnel_protocol = ENUM(r, node, "protocol", protocols, 0);
	w->workload_type = ENUM(r, node, "workloadType", workload_types, 0);
	w->status = ENUM(r, node, "status", statuses, 0);
	w->network_mode = ENUM(r, node, "networkMode", network_modes, 0);
	w->native_tunnel = boolean(r, node, "nativeTunnel");
	w->waypoint = gateway(r, get(r, node, "waypoint"), "a waypoint");
	w->network_gateway = gateway(r, get(r, node, "networkGateway"), "a network gateway");
	w->authorization_policies = strings(r, get_list(r, node, "authorizationPolicies"), &w->n_authorization_policies);

	w->addresses = NEW_ARRAY(r, ProtobufCBinaryData, items(ips));
	for (size_t i = 0; w->addresses && ips && i < items(ips); i++) {
		const char *ip = scalar(item(r, ips, i));
		if (!ip || !ip_bytes(r, ip, &w->addresses[w->n_addresses++]))
			problem(r, item(r, ips, i), "'%s' is not an address", ip ? ip : "");
	}
	yaml_node_t *locality = get(r, node, "locality");
	if (locality && fields(r, locality, "a locality", locality_fields)) {
		w->locality = NEW(r, Istio__Workload__Locality);
		if (w->locality) {
			istio__workload__locality__init(w->locality);
			w->locality->region = text(r, locality, "region");
			w->locality->zone = text(r, locality, "zone");
			w->locality->subzone = text(r, locality, "subzone");
		}
	}
	uint32_t capacity;
	if (number(r, get(r, node, "capacity"), UINT32_MAX, &capacity)) {
		w->capacity = NEW(r, Google__Protobuf__UInt32Value);
		if (w->capacity) {
			google__protobuf__uint32_value__init(w->capacity);
			w->capacity->value = capacity;
		}
	}
	/* a local config lists its services: "ns/hostname" → {port: target} */
	size_t n_services = items(services);
	w->services = NEW_ARRAY(r, Istio__Workload__Workload__ServicesEntry *, n_services + 1);
	for (size_t i = 0; w->services && services && i < n_services; i++) {
		const char *key = scalar(item_key(r, services, i));
		if (!key) {
			wrong_shape(r, item_key(r, services, i), "a service key", "\"namespace/hostname\"");
			break;
		}
		w->services[w->n_services++] = membership(r, key, item(r, services, i));
	}
	return w;
}

static const char *const load_balancing_fields[] = { "mode", "healthPolicy", "routingPreferences", NULL };

static Istio__Workload__LoadBalancing *load_balancing(struct reader *r, const yaml_node_t *node)
{
	Istio__Workload__LoadBalancing *lb;
	yaml_node_t *preferences;

	if (!node || !fields(r, node, "a loadBalancer", load_balancing_fields))
		return NULL;
	preferences = get_list(r, node, "routingPreferences");
	lb = NEW(r, Istio__Workload__LoadBalancing);
	if (!lb)
		return NULL;
	istio__workload__load_balancing__init(lb);
	lb->mode = ENUM(r, node, "mode", lb_modes, 0);
	lb->health_policy = ENUM(r, node, "healthPolicy", health_policies, 0);
	lb->routing_preference = NEW_ARRAY(r, Istio__Workload__LoadBalancing__Scope, items(preferences));
	for (size_t i = 0; lb->routing_preference && preferences && i < items(preferences); i++) {
		int scope = name_index(scalar(item(r, preferences, i)), lb_scopes, sizeof(lb_scopes) / sizeof(lb_scopes[0]));
		if (scope < 0)
			problem(r, item(r, preferences, i), "unknown routing preference");
		else
			lb->routing_preference[lb->n_routing_preference++] = scope;
	}
	return lb;
}

static const char *const service_fields[] = {
	"name", "namespace", "hostname", "vips", "ports", "subjectAltNames", "waypoint", "loadBalancer",
	"canonical", "endpoints", NULL,
};

static Istio__Workload__Service *service(struct reader *r, const yaml_node_t *node)
{
	Istio__Workload__Service *s;
	yaml_node_t *vips;

	if (!fields(r, node, "a service", service_fields))
		return NULL;
	vips = get_list(r, node, "vips");
	s = NEW(r, Istio__Workload__Service);
	if (!s)
		return NULL;
	istio__workload__service__init(s);
	s->name = text(r, node, "name");
	s->namespace_ = text(r, node, "namespace");
	s->hostname = text(r, node, "hostname");
	if (!s->namespace_[0] || !s->hostname[0])
		problem(r, node, "a service needs a namespace and a hostname");
	s->addresses = NEW_ARRAY(r, Istio__Workload__NetworkAddress *, items(vips));
	for (size_t i = 0; s->addresses && vips && i < items(vips); i++) {
		Istio__Workload__NetworkAddress *vip = network_address(r, item(r, vips, i));
		if (vip)
			s->addresses[s->n_addresses++] = vip;
	}
	s->ports = ports(r, get(r, node, "ports"), &s->n_ports);
	s->subject_alt_names = strings(r, get_list(r, node, "subjectAltNames"), &s->n_subject_alt_names);
	s->waypoint = gateway(r, get(r, node, "waypoint"), "a waypoint");
	s->load_balancing = load_balancing(r, get(r, node, "loadBalancer"));
	s->canonical = boolean(r, node, "canonical");
	return s;
}

/* A config dump lists endpoints under services; a workload's services map is rebuilt from them. */
static const char *const endpoint_fields[] = { "workloadUid", "service", "address", "port", NULL };

/* A string and where it stands (a line of the file, or an index), sorted by the string, then the place:
 * duplicate keys found next to each other, and the first of equal uids found first. */
struct key_at {
	const char *key;
	size_t at;
};

static int by_key_then_at(const void *a, const void *b)
{
	const struct key_at *x = a, *y = b;
	int diff = strcmp(x->key, y->key);

	return diff ? diff : (x->at > y->at) - (x->at < y->at);
}

static int by_key(const void *key, const void *entry)
{
	return strcmp(key, ((const struct key_at *)entry)->key);
}

/* The parsed workloads by uid, the first in the file first among equal uids (a dump lists a workload once per
 * address), so that each endpoint finds its workload in log n: a scan of them per endpoint took 12 s for a
 * dump of 50,000 workloads. */
static struct key_at *index_by_uid(struct reader *r, Istio__Workload__Workload **workloads, size_t n)
{
	struct key_at *index = NEW_ARRAY(r, struct key_at, n + 1);

	for (size_t i = 0; index && i < n; i++)
		index[i] = (struct key_at){ .key = workloads[i]->uid, .at = i };
	if (index)
		qsort(index, n, sizeof(*index), by_key_then_at);
	return index;
}

/* The first parsed workload of uid, or NULL. */
static Istio__Workload__Workload *workload_of(Istio__Workload__Workload **workloads, const struct key_at *index,
					       size_t n, const char *uid)
{
	const struct key_at *found = bsearch(uid, index, n, sizeof(*index), by_key);

	while (found && found > index && strcmp(found[-1].key, uid) == 0)
		found--;
	return found ? workloads[found->at] : NULL;
}

static void add_dump_endpoints(struct reader *r, const yaml_node_t *svc, Istio__Workload__Workload **workloads,
			       const struct key_at *index, size_t n)
{
	yaml_node_t *endpoints = get_map(r, svc, "endpoints");

	for (size_t e = 0; endpoints && e < items(endpoints) && !r->failed; e++) {
		yaml_node_t *endpoint = item(r, endpoints, e);
		if (!fields(r, endpoint, "an endpoint", endpoint_fields))
			return;
		const char *uid = scalar(get(r, endpoint, "workloadUid")), *key = scalar(get(r, endpoint, "service"));
		if (!uid || !key) {
			problem(r, endpoint, "an endpoint needs a workloadUid and a service");
			return;
		}
		Istio__Workload__Workload *w = workload_of(workloads, index, n, uid);
		bool seen = false;
		if (!w)
			continue;
		for (size_t m = 0; m < w->n_services; m++)
			seen |= strcmp(w->services[m]->key, key) == 0;
		if (seen)
			continue;
		Istio__Workload__Workload__ServicesEntry **grown =
			NEW_ARRAY(r, Istio__Workload__Workload__ServicesEntry *, w->n_services + 1);
		if (!grown)
			return;
		memcpy(grown, w->services, w->n_services * sizeof(*grown));
		grown[w->n_services] = membership(r, key, get(r, endpoint, "port"));
		w->services = grown;
		w->n_services++;
	}
}

/* ---- policies ---- */

static const char *const scopes[] = { "Global", "Namespace", "WorkloadSelector" };
static const char *const actions[] = { "Allow", "Deny" };

static Istio__Security__StringMatch **string_matches(struct reader *r, const yaml_node_t *list, size_t *n)
{
	Istio__Security__StringMatch **out = NEW_ARRAY(r, Istio__Security__StringMatch *, items(list));

	*n = 0;
	for (size_t i = 0; out && list && i < items(list); i++) {
		yaml_node_t *node = item(r, list, i);
		Istio__Security__StringMatch *match = NEW(r, Istio__Security__StringMatch);
		if (!match)
			return NULL;
		istio__security__string_match__init(match);
		/* a plain string is an exact match; else {exact|prefix|suffix: ..} or {presence: {}} */
		const char *value = scalar(node), *kind = "exact";
		if (!value && node && node->type == YAML_MAPPING_NODE && items(node) == 1) {
			kind = scalar(item_key(r, node, 0));
			value = scalar(item(r, node, 0));
			if (kind && strcasecmp(kind, "presence") == 0)
				value = "";
		}
		bool known = kind && (strcasecmp(kind, "exact") == 0 || strcasecmp(kind, "prefix") == 0 ||
				      strcasecmp(kind, "suffix") == 0 || strcasecmp(kind, "presence") == 0);
		char *copy = alloc(r, value ? strlen(value) + 1 : 1);
		if (!copy || !value || !known) {
			problem(r, node, "a match is a string or {exact|prefix|suffix|presence: value}");
			*n = 0;
			return NULL;
		}
		if (value)
			strcpy(copy, value);
		if (strcasecmp(kind, "prefix") == 0) {
			match->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX;
			match->prefix = copy;
		} else if (strcasecmp(kind, "suffix") == 0) {
			match->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX;
			match->suffix = copy;
		} else if (strcasecmp(kind, "presence") == 0) {
			match->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE;
			match->presence = NEW(r, Google__Protobuf__Empty);
			if (match->presence)
				google__protobuf__empty__init(match->presence);
		} else {
			match->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
			match->exact = copy;
		}
		out[(*n)++] = match;
	}
	return out;
}

/* "10.0.0.0/8" or "10.0.0.1" */
/* The prefix after a CIDR's '/' (NULL: a bare address, the full length): digits, at most bits. */
static bool prefix_length(const char *slash, uint32_t bits, uint32_t *out)
{
	char *end;
	unsigned long length;

	if (!slash) {
		*out = bits;
		return true;
	}
	if (slash[1] < '0' || slash[1] > '9')
		return false;
	errno = 0;
	length = strtoul(slash + 1, &end, 10);
	if (errno || *end || length > bits)
		return false;
	*out = (uint32_t)length;
	return true;
}

static Istio__Security__Address **cidrs(struct reader *r, const yaml_node_t *list, size_t *n)
{
	Istio__Security__Address **out = NEW_ARRAY(r, Istio__Security__Address *, items(list));

	*n = 0;
	for (size_t i = 0; out && list && i < items(list); i++) {
		const char *value = scalar(item(r, list, i));
		Istio__Security__Address *address = NEW(r, Istio__Security__Address);
		char ip[INET6_ADDRSTRLEN + 1] = "";
		if (!value)
			wrong_shape(r, item(r, list, i), "an address", "a string");
		if (!value || !address)
			return out;
		istio__security__address__init(address);
		const char *slash = strchr(value, '/');
		snprintf(ip, sizeof(ip), "%.*s", slash ? (int)(slash - value) : (int)strlen(value), value);
		if (!ip_bytes(r, ip, &address->address)) {
			problem(r, item(r, list, i), "'%s' is not an address or CIDR", value);
			continue;
		}
		if (!prefix_length(slash, (uint32_t)address->address.len * 8, &address->length)) {
			problem(r, item(r, list, i), "'%s' has no valid prefix length", value);
			continue;
		}
		out[(*n)++] = address;
	}
	return out;
}

static uint32_t *port_list(struct reader *r, const yaml_node_t *list, size_t *n)
{
	uint32_t *out = NEW_ARRAY(r, uint32_t, items(list));

	*n = 0;
	for (size_t i = 0; out && list && i < items(list); i++) {
		if (number(r, item(r, list, i), 65535, &out[*n]))
			(*n)++;
	}
	return out;
}

static const char *const account_fields[] = { "namespace", "serviceAccount", NULL };

static Istio__Security__ServiceAccountMatch **accounts(struct reader *r, const yaml_node_t *list, size_t *n)
{
	Istio__Security__ServiceAccountMatch **out = NEW_ARRAY(r, Istio__Security__ServiceAccountMatch *, items(list));

	*n = 0;
	for (size_t i = 0; out && list && i < items(list); i++) {
		Istio__Security__ServiceAccountMatch *account = NEW(r, Istio__Security__ServiceAccountMatch);
		if (!account || !fields(r, item(r, list, i), "a service account match", account_fields))
			return NULL;
		istio__security__service_account_match__init(account);
		account->namespace_ = text(r, item(r, list, i), "namespace");
		account->serviceaccount = text(r, item(r, list, i), "serviceAccount");
		out[(*n)++] = account;
	}
	return out;
}

static const char *const match_fields[] = {
	"namespaces", "notNamespaces", "principals", "notPrincipals", "sourceIps", "notSourceIps",
	"destinationIps", "notDestinationIps", "destinationPorts", "notDestinationPorts", "serviceAccounts",
	"notServiceAccounts", NULL,
};

static Istio__Security__Match *match(struct reader *r, const yaml_node_t *node)
{
	Istio__Security__Match *m;

	if (!fields(r, node, "a match", match_fields))
		return NULL;
	m = NEW(r, Istio__Security__Match);
	if (!m)
		return NULL;
	istio__security__match__init(m);
	m->namespaces = string_matches(r, get_list(r, node, "namespaces"), &m->n_namespaces);
	m->not_namespaces = string_matches(r, get_list(r, node, "notNamespaces"), &m->n_not_namespaces);
	m->principals = string_matches(r, get_list(r, node, "principals"), &m->n_principals);
	m->not_principals = string_matches(r, get_list(r, node, "notPrincipals"), &m->n_not_principals);
	m->source_ips = cidrs(r, get_list(r, node, "sourceIps"), &m->n_source_ips);
	m->not_source_ips = cidrs(r, get_list(r, node, "notSourceIps"), &m->n_not_source_ips);
	m->destination_ips = cidrs(r, get_list(r, node, "destinationIps"), &m->n_destination_ips);
	m->not_destination_ips = cidrs(r, get_list(r, node, "notDestinationIps"), &m->n_not_destination_ips);
	m->destination_ports = port_list(r, get_list(r, node, "destinationPorts"), &m->n_destination_ports);
	m->not_destination_ports = port_list(r, get_list(r, node, "notDestinationPorts"), &m->n_not_destination_ports);
	m->service_accounts = accounts(r, get_list(r, node, "serviceAccounts"), &m->n_service_accounts);
	m->not_service_accounts = accounts(r, get_list(r, node, "notServiceAccounts"), &m->n_not_service_accounts);
	return m;
}

/* rules: [[[match, ...] (a clause), ...] (a rule), ...] */
static const char *const policy_fields[] = { "name", "namespace", "scope", "action", "rules", "dryRun", NULL };

static Istio__Security__Authorization *policy(struct reader *r, const yaml_node_t *node)
{
	Istio__Security__Authorization *p;
	yaml_node_t *rules;

	if (!fields(r, node, "a policy", policy_fields))
		return NULL;
	rules = get_list(r, node, "rules");
	p = NEW(r, Istio__Security__Authorization);
	if (!p)
		return NULL;
	istio__security__authorization__init(p);
	p->name = text(r, node, "name");
	p->namespace_ = text(r, node, "namespace");
	if (!p->name[0] || !p->namespace_[0])
		problem(r, node, "a policy needs a name and a namespace");
	p->scope = ENUM(r, node, "scope", scopes, 0);
	p->action = ENUM(r, node, "action", actions, 0);
	p->dry_run = boolean(r, node, "dryRun");
	p->rules = NEW_ARRAY(r, Istio__Security__Rule *, items(rules));
	for (size_t i = 0; p->rules && rules && i < items(rules) && !r->failed; i++) {
		yaml_node_t *clauses = shaped(r, item(r, rules, i), YAML_SEQUENCE_NODE, "a rule (a list of clauses)");
		Istio__Security__Rule *rule = NEW(r, Istio__Security__Rule);
		if (!rule)
			return NULL;
		istio__security__rule__init(rule);
		rule->clauses = NEW_ARRAY(r, Istio__Security__Clause *, items(clauses));
		for (size_t c = 0; rule->clauses && clauses && c < items(clauses) && !r->failed; c++) {
			yaml_node_t *matches = shaped(r, item(r, clauses, c), YAML_SEQUENCE_NODE, "a clause (a list of matches)");
			Istio__Security__Clause *clause = NEW(r, Istio__Security__Clause);
			if (!clause)
				return NULL;
			istio__security__clause__init(clause);
			clause->matches = NEW_ARRAY(r, Istio__Security__Match *, items(matches));
			for (size_t m = 0; clause->matches && matches && m < items(matches); m++) {
				Istio__Security__Match *one = match(r, item(r, matches, m));
				if (one)
					clause->matches[clause->n_matches++] = one;
			}
			rule->clauses[rule->n_clauses++] = clause;
		}
		p->rules[p->n_rules++] = rule;
	}
	return p;
}

/* ---- responses ---- */

static Envoy__Service__Discovery__V3__Resource *resource(struct reader *r, const char *type_url, const char *name,
							 const ProtobufCMessage *msg)
{
	/* a failed reader may have left NULLs behind counted array entries: never pack those */
	if (r->failed)
		return NULL;

	Envoy__Service__Discovery__V3__Resource *res = NEW(r, Envoy__Service__Discovery__V3__Resource);
	Google__Protobuf__Any *any = NEW(r, Google__Protobuf__Any);
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *bytes = alloc(r, len);
	char *version = alloc(r, 17), *name_copy = alloc(r, strlen(name) + 1);

	if (!res || !any || !bytes || !version || !name_copy)
		return NULL;
	envoy__service__discovery__v3__resource__init(res);
	google__protobuf__any__init(any);
	protobuf_c_message_pack(msg, bytes);
	any->type_url = (char *)type_url;
	any->value = (ProtobufCBinaryData){ .len = len, .data = bytes };
	/* like istiod, a hash of the content: unchanged resources keep their version */
	snprintf(version, 17, "%016llx", (unsigned long long)XXH3_64bits(bytes, len));
	strcpy(name_copy, name);
	res->name = name_copy;
	res->version = version;
	res->resource = any;
	return res;
}

static int pack_response(Envoy__Service__Discovery__V3__Resource **resources, size_t n, const char *type_url,
			 const char *nonce, uint8_t **out, size_t *len)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse response = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;

	response.type_url = (char *)type_url;
	response.nonce = (char *)nonce;
	response.system_version_info = "local-config";
	response.resources = resources;
	response.n_resources = n;
	*len = protobuf_c_message_get_packed_size(&response.base);
	*out = malloc(*len ? *len : 1);
	if (!*out)
		return -ENOMEM;
	protobuf_c_message_pack(&response.base, *out);
	return 0;
}

static int load_document(struct reader *r)
{
	yaml_parser_t parser;
	FILE *f = fopen(r->path, "rb");
	struct stat st;
	int ret = 0;

	if (!f) {
		ret = -errno;
		snprintf(r->err, r->err_size, "%s: %s", r->path, strerror(-ret));
		return ret;
	}
	/* fopen takes a directory; libyaml would then only say "input error" */
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(r->err, r->err_size, "%s: is a directory, not a config file", r->path);
		fclose(f);
		return -EISDIR;
	}
	if (!yaml_parser_initialize(&parser)) {
		snprintf(r->err, r->err_size, "%s: out of memory", r->path);
		fclose(f);
		return -ENOMEM;
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &r->doc)) {
		/* libyaml's loader fails with no error set only where it could not copy a node's default tag
		 * (yaml_strdup in loader.c): memory, too */
		ret = parser.error == YAML_MEMORY_ERROR || parser.error == YAML_NO_ERROR ? -ENOMEM : -EINVAL;
		if (ret == -ENOMEM)
			snprintf(r->err, r->err_size, "%s: out of memory", r->path);
		else
			snprintf(r->err, r->err_size, "%s:%zu: %s", r->path, parser.problem_mark.line + 1,
				 parser.problem ? parser.problem : "not YAML");
	} else if (!yaml_document_get_root_node(&r->doc) ||
		   yaml_document_get_root_node(&r->doc)->type != YAML_MAPPING_NODE) {
		snprintf(r->err, r->err_size, "%s: expected a mapping of workloads, services and policies", r->path);
		yaml_document_delete(&r->doc);
		ret = -EINVAL;
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return ret;
}

/* No mapping of the document has a key twice: YAML forbids it, libyaml does not check, and a second
 * `services:` or `uid:` would otherwise be dropped without a word. */
static int unique_keys(struct reader *r)
{
	for (yaml_node_t *map = r->doc.nodes.start; map < r->doc.nodes.top && !r->failed; map++) {
		size_t n = 0;

		if (map->type != YAML_MAPPING_NODE || items(map) < 2)
			continue;
		struct key_at *keys = NEW_ARRAY(r, struct key_at, items(map));
		if (!keys)
			return -ENOMEM;
		for (size_t i = 0; i < items(map); i++) {
			yaml_node_t *key = item_key(r, map, i);
			if (scalar(key))
				keys[n++] = (struct key_at){ scalar(key), key->start_mark.line + 1 };
		}
		qsort(keys, n, sizeof(*keys), by_key_then_at);
		for (size_t i = 1; i < n && !r->failed; i++) {
			if (strcmp(keys[i - 1].key, keys[i].key) == 0) {
				r->failed = true;
				snprintf(r->err, r->err_size, "%s:%zu: duplicate key '%s' (also at line %zu)", r->path,
					 keys[i].at, keys[i].key, keys[i - 1].at);
			}
		}
	}
	return r->failed ? -EINVAL : 0;
}

/* The top level: workloads and services as lists (a local config) or keyed by address (a dump). */
static const char *const top_fields[] = { "workloads", "services", "policies",
					  /* a config dump's, not config: */ "certificates", "workloadState", NULL };

static yaml_node_t *collection(struct reader *r, const yaml_node_t *root, const char *key, bool dump_form)
{
	yaml_node_t *node = get(r, root, key);
	char what[32];

	if (!node || node->type == YAML_SEQUENCE_NODE || (dump_form && node->type == YAML_MAPPING_NODE))
		return node;
	snprintf(what, sizeof(what), "'%s'", key);
	wrong_shape(r, node, what, dump_form ? "a list (or a config dump's mapping)" : "a list");
	return NULL;
}

static bool check_top_level(struct reader *r, const yaml_node_t *root)
{
	for (yaml_node_pair_t *pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = node_at(r, pair->key);
		const char *name = scalar(k);
		size_t i = 0;

		while (name && top_fields[i] && strcmp(top_fields[i], name) != 0)
			i++;
		if (!name || !top_fields[i]) {
			problem(r, k, "unknown top-level key '%s' (expected workloads, services and policies)", name ? name : "?");
			return false;
		}
	}
	if (!get(r, root, "workloads") && !get(r, root, "services")) {
		problem(r, root, "neither workloads nor services: write 'workloads: []' for a config that has none");
		return false;
	}
	return true;
}

/* A resource name already given, and the line that gave it: looked up in constant time (a 100,000-workload
 * file used to take 35 s comparing each name with every one before it). */
struct seen_name {
	UT_hash_handle hh;
	size_t line;
	char name[];
};

/* The address-type resource named key is not there yet (it is now recorded at line); in a local config (a
 * list) a second one is an error naming both lines, in a dump (keyed by address) it is the same resource
 * under another address. */
static bool first_of(struct reader *r, struct seen_name **seen, const char *key, size_t line, const yaml_node_t *node,
		     bool listed, const char *what)
{
	struct seen_name *entry;
	size_t len = strlen(key);

	HASH_FIND(hh, *seen, key, len, entry);
	if (entry) {
		if (listed)
			problem(r, node, "%s '%s' is defined twice (also at line %zu)", what, key, entry->line);
		return false;
	}
	entry = alloc(r, sizeof(*entry) + len + 1);
	if (!entry)
		return false;
	memcpy(entry->name, key, len + 1);
	entry->line = line;
	HASH_ADD(hh, *seen, name[0], len, entry);
	if (!entry->hh.tbl) { /* uthash could not grow its table (HASH_NONFATAL_OOM) */
		r->out_of_memory = true;
		problem(r, NULL, "out of memory");
		return false;
	}
	return true;
}

int sm_local_config_read(const char *path, uint8_t **address_response, size_t *address_len,
			 uint8_t **authorization_response, size_t *authorization_len, char *err, size_t err_size)
{
	struct reader r = { .path = path, .err = err, .err_size = err_size };
	struct seen_name *seen_addresses = NULL, *seen_policies = NULL; /* entries in the arena */
	int ret = load_document(&r);

	*address_response = *authorization_response = NULL;
	if (ret)
		return ret;
	sm_pb_arena_init(&r.arena);
	yaml_node_t *root = yaml_document_get_root_node(&r.doc);
	if ((ret = unique_keys(&r)) || !check_top_level(&r, root))
		goto out;
	yaml_node_t *workloads = collection(&r, root, "workloads", true), *services = collection(&r, root, "services", true),
		    *policies = collection(&r, root, "policies", false);
	size_t n_workloads = items(workloads), n_services = items(services), n_policies = items(policies);
	Istio__Workload__Workload **parsed = NEW_ARRAY(&r, Istio__Workload__Workload *, n_workloads);
	size_t *parsed_lines = NEW_ARRAY(&r, size_t, n_workloads);
	Envoy__Service__Discovery__V3__Resource **addresses =
		NEW_ARRAY(&r, Envoy__Service__Discovery__V3__Resource *, n_workloads + n_services);
	Envoy__Service__Discovery__V3__Resource **authorizations =
		NEW_ARRAY(&r, Envoy__Service__Discovery__V3__Resource *, n_policies);
	size_t n_addresses = 0, n_authorizations = 0, n_parsed = 0;

	struct key_at *by_uid = NULL;
	if (!parsed || !parsed_lines || !addresses || !authorizations)
		goto out;
	for (size_t i = 0; i < n_workloads && !r.failed; i++) {
		Istio__Workload__Workload *w = workload(&r, item(&r, workloads, i));
		if (w) {
			parsed_lines[n_parsed] = item(&r, workloads, i)->start_mark.line + 1;
			parsed[n_parsed++] = w;
		}
	}
	if (n_services && !(by_uid = index_by_uid(&r, parsed, n_parsed)))
		goto out;
	for (size_t i = 0; i < n_services && !r.failed; i++) {
		Istio__Workload__Address address = ISTIO__WORKLOAD__ADDRESS__INIT;
		yaml_node_t *node = item(&r, services, i);
		Istio__Workload__Service *s = service(&r, node);
		char key[600];
		if (!s)
			continue;
		add_dump_endpoints(&r, node, parsed, by_uid, n_parsed);
		snprintf(key, sizeof(key), "%s/%s", s->namespace_, s->hostname);
		/* a dump lists a service once per VIP */
		if (!first_of(&r, &seen_addresses, key, node->start_mark.line + 1, node, services->type == YAML_SEQUENCE_NODE,
			      "service"))
			continue;
		address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
		address.service = s;
		addresses[n_addresses++] = resource(&r, SM_TYPE_URL_ADDRESS, key, &address.base);
	}
	for (size_t i = 0; i < n_parsed && !r.failed; i++) {
		Istio__Workload__Address address = ISTIO__WORKLOAD__ADDRESS__INIT;
		yaml_node_t *node = item(&r, workloads, i); /* parsed[i] is its item i: a failed one stops the loop */
		/* a dump lists a workload once per address */
		if (!first_of(&r, &seen_addresses, parsed[i]->uid, parsed_lines[i], node,
			      workloads->type == YAML_SEQUENCE_NODE, "workload"))
			continue;
		address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
		address.workload = parsed[i];
		addresses[n_addresses++] = resource(&r, SM_TYPE_URL_ADDRESS, parsed[i]->uid, &address.base);
	}
	for (size_t i = 0; i < n_policies && !r.failed; i++) {
		yaml_node_t *node = item(&r, policies, i);
		Istio__Security__Authorization *p = policy(&r, node);
		char key[600];
		if (!p)
			continue;
		snprintf(key, sizeof(key), "%s/%s", p->namespace_, p->name);
		if (!first_of(&r, &seen_policies, key, node->start_mark.line + 1, node, true, "policy"))
			continue;
		authorizations[n_authorizations++] = resource(&r, SM_TYPE_URL_AUTHORIZATION, key, &p->base);
	}
	if (!r.failed)
		ret = pack_response(addresses, n_addresses, SM_TYPE_URL_ADDRESS, "local-config-address", address_response,
				    address_len);
	if (!r.failed && !ret)
		ret = pack_response(authorizations, n_authorizations, SM_TYPE_URL_AUTHORIZATION,
				    "local-config-authorization", authorization_response, authorization_len);
	if (ret == -ENOMEM)
		snprintf(err, err_size, "%s: out of memory", path);
out:
	HASH_CLEAR(hh, seen_addresses);
	HASH_CLEAR(hh, seen_policies);
	if (r.failed)
		ret = r.out_of_memory ? -ENOMEM : -EINVAL;
	if (ret) {
		free(*address_response);
		*address_response = NULL;
	}
	sm_pb_arena_release(&r.arena);
	yaml_document_delete(&r.doc);
	return ret;
}
