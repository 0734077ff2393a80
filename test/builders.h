/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Building xDS responses in tests: workloads and services from short specs, packed into Resources as
 * istiod would send them. Everything a response allocates is freed with it.
 */
#ifndef SOCKMESH_TEST_BUILDERS_H
#define SOCKMESH_TEST_BUILDERS_H

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/wrappers.pb-c.h"
#include "proto/proto.h"

struct response {
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse msg;
	void **allocations;
	size_t n_allocations;
};

/* Room for one more in an array of n pointers, doubling at powers of two (responses grow to 100k). */
static inline void *grow_for_one(void *array, size_t n)
{
	if (n & (n - 1))
		return array;
	return realloc(array, (n ? 2 * n : 1) * sizeof(void *));
}

static inline void *response_keep(struct response *r, void *allocation)
{
	r->allocations = grow_for_one(r->allocations, r->n_allocations);
	r->allocations[r->n_allocations++] = allocation;
	return allocation;
}

static inline void *response_alloc(struct response *r, size_t size)
{
	return response_keep(r, calloc(1, size));
}

static inline void response_init(struct response *r, const char *type_url)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse init = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;

	*r = (struct response){ .msg = init };
	r->msg.type_url = (char *)type_url;
	r->msg.nonce = "nonce";
}

static inline void response_free(struct response *r)
{
	for (size_t i = 0; i < r->n_allocations; i++)
		free(r->allocations[i]);
	free(r->allocations);
	free(r->msg.resources);
	free(r->msg.removed_resources);
}

/* Appends the response to a recorded stream (fd) as one framed message. Returns 0 or -errno. */
static inline uint8_t *response_pack(const struct response *r, size_t *len)
{
	uint8_t *bytes;

	*len = protobuf_c_message_get_packed_size(&r->msg.base);
	bytes = malloc(*len ? *len : 1);
	if (bytes)
		protobuf_c_message_pack(&r->msg.base, bytes);
	return bytes;
}

static inline int response_append(int fd, const struct response *r)
{
	size_t len;
	uint8_t *bytes = response_pack(r, &len);
	int err;

	if (!bytes)
		return -ENOMEM;
	err = sm_stream_append(fd, bytes, len);
	free(bytes);
	return err;
}

/* Adds a resource whose Any holds raw bytes of a type URL (for malformed cases). */
static inline void response_add_raw(struct response *r, const char *name, const char *version, const char *type_url,
				    const void *bytes, size_t len)
{
	Envoy__Service__Discovery__V3__Resource *resource = response_alloc(r, sizeof(*resource));
	Google__Protobuf__Any *any = response_alloc(r, sizeof(*any));
	Envoy__Service__Discovery__V3__Resource resource_init = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
	Google__Protobuf__Any any_init = GOOGLE__PROTOBUF__ANY__INIT;

	*resource = resource_init;
	*any = any_init;
	any->type_url = response_keep(r, strdup(type_url));
	any->value.data = response_keep(r, malloc(len ? len : 1));
	memcpy(any->value.data, bytes, len);
	any->value.len = len;
	resource->resource = any;
	resource->name = response_keep(r, strdup(name));
	resource->version = response_keep(r, strdup(version));
	r->msg.resources = grow_for_one(r->msg.resources, r->msg.n_resources);
	r->msg.resources[r->msg.n_resources++] = resource;
}

static inline void response_add_message(struct response *r, const char *name, const char *version,
					const char *type_url, const ProtobufCMessage *msg)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *bytes = malloc(len ? len : 1);

	protobuf_c_message_pack(msg, bytes);
	response_add_raw(r, name, version, type_url, bytes, len);
	free(bytes);
}

/* A NAMESPACE-scoped policy NAMESPACE/NAME of action whose one rule matches the sources of namespace `from`. */
static inline void response_add_policy_from_namespace(struct response *r, const char *namespace, const char *name,
						      Istio__Security__Action action, const char *from)
{
	Istio__Security__Authorization policy = ISTIO__SECURITY__AUTHORIZATION__INIT;
	Istio__Security__Rule rule = ISTIO__SECURITY__RULE__INIT, *rules[] = { &rule };
	Istio__Security__Clause clause = ISTIO__SECURITY__CLAUSE__INIT, *clauses[] = { &clause };
	Istio__Security__Match match = ISTIO__SECURITY__MATCH__INIT, *matches[] = { &match };
	Istio__Security__StringMatch ns = ISTIO__SECURITY__STRING_MATCH__INIT, *namespaces[] = { &ns };
	char key[256];

	ns.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
	ns.exact = (char *)from;
	match.n_namespaces = 1, match.namespaces = namespaces;
	clause.n_matches = 1, clause.matches = matches;
	rule.n_clauses = 1, rule.clauses = clauses;
	policy.name = (char *)name, policy.namespace_ = (char *)namespace;
	policy.scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
	policy.action = action;
	policy.n_rules = 1, policy.rules = rules;
	snprintf(key, sizeof(key), "%s/%s", namespace, name);
	response_add_message(r, response_keep(r, strdup(key)), "v1", SM_TYPE_URL_AUTHORIZATION, &policy.base);
}

/* The same, ALLOW: it lets in the sources of namespace `from` alone. */
static inline void response_add_allow_from_namespace(struct response *r, const char *namespace, const char *name,
						     const char *from)
{
	response_add_policy_from_namespace(r, namespace, name, ISTIO__SECURITY__ACTION__ALLOW, from);
}

static inline void response_remove(struct response *r, const char *name)
{
	r->msg.removed_resources = grow_for_one(r->msg.removed_resources, r->msg.n_removed_resources);
	r->msg.removed_resources[r->msg.n_removed_resources++] = response_keep(r, strdup(name));
}

/* ---- specs ---- */

struct port_spec {
	uint32_t service_port;
	uint32_t target_port;
};

struct membership_spec {
	const char *service; /* "ns/hostname" */
	struct port_spec ports[4];
};

#define SPEC_MAX_POLICIES 4 /* the authorization policies a workload_spec may name */

struct workload_spec {
	const char *uid;
	const char *addresses[3]; /* text IPs */
	const char *node;
	const char *region, *zone, *subzone;
	const char *network;
	const char *cluster;
	struct membership_spec services[4];
	const char *waypoint_ip;	/* or */
	const char *waypoint_service; /* "ns/hostname" */
	uint32_t waypoint_port;		/* 0 → 15008 */
	bool unhealthy;
	uint32_t capacity; /* 0: unset (weight 1) */
	bool zero_capacity;
	const char *namespace;
	const char *policies[SPEC_MAX_POLICIES];
	bool host_network;
};

struct service_spec {
	const char *namespace, *hostname;
	const char *vips[3];
	struct port_spec ports[4];
	const char *waypoint_ip;
	const char *waypoint_service;
	uint32_t waypoint_port;
	/* load_balancing is sent when any of these is set */
	int mode;	/* istio LoadBalancing.Mode */
	int scopes[4];	/* istio scopes, 0-terminated */
	bool allow_unhealthy;
};

static inline ProtobufCBinaryData ip_bytes(struct response *r, const char *text)
{
	uint8_t *bytes = response_alloc(r, 32); /* room for tests that lengthen it */

	if (inet_pton(AF_INET, text, bytes) == 1)
		return (ProtobufCBinaryData){ .len = 4, .data = bytes };
	if (inet_pton(AF_INET6, text, bytes) == 1)
		return (ProtobufCBinaryData){ .len = 16, .data = bytes };
	abort();
}

static inline Istio__Workload__GatewayAddress *gateway_from(struct response *r, const char *ip, const char *service,
							    uint32_t port)
{
	Istio__Workload__GatewayAddress init = ISTIO__WORKLOAD__GATEWAY_ADDRESS__INIT;
	Istio__Workload__GatewayAddress *gateway;

	if (!ip && !service)
		return NULL;
	gateway = response_alloc(r, sizeof(*gateway));
	*gateway = init;
	gateway->hbone_mtls_port = port ? port : 15008;
	if (ip) {
		Istio__Workload__NetworkAddress address_init = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
		Istio__Workload__NetworkAddress *address = response_alloc(r, sizeof(*address));
		*address = address_init;
		address->address = ip_bytes(r, ip);
		gateway->destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS;
		gateway->address = address;
	} else {
		Istio__Workload__NamespacedHostname name_init = ISTIO__WORKLOAD__NAMESPACED_HOSTNAME__INIT;
		Istio__Workload__NamespacedHostname *name = response_alloc(r, sizeof(*name));
		char *copy = response_keep(r, strdup(service));
		*name = name_init;
		*strchr(copy, '/') = '\0';
		name->namespace_ = copy;
		name->hostname = copy + strlen(copy) + 1;
		gateway->destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME;
		gateway->hostname = name;
	}
	return gateway;
}

static inline Istio__Workload__Port **ports_from(struct response *r, const struct port_spec *specs, size_t *n)
{
	Istio__Workload__Port **ports = response_alloc(r, 4 * sizeof(void *));
	Istio__Workload__Port init = ISTIO__WORKLOAD__PORT__INIT;

	for (*n = 0; *n < 4 && specs[*n].service_port; (*n)++) {
		ports[*n] = response_alloc(r, sizeof(Istio__Workload__Port));
		*ports[*n] = init;
		ports[*n]->service_port = specs[*n].service_port;
		ports[*n]->target_port = specs[*n].target_port;
	}
	return ports;
}

static inline Istio__Workload__Workload *workload_from(struct response *r, const struct workload_spec *spec)
{
	Istio__Workload__Workload init = ISTIO__WORKLOAD__WORKLOAD__INIT;
	Istio__Workload__Workload *w = response_alloc(r, sizeof(*w));

	*w = init;
	w->uid = (char *)spec->uid;
	w->name = (char *)spec->uid;
	w->namespace_ = (char *)(spec->namespace ? spec->namespace : "default");
	w->node = (char *)(spec->node ? spec->node : "");
	w->network = (char *)(spec->network ? spec->network : "");
	w->cluster_id = (char *)(spec->cluster ? spec->cluster : "Kubernetes");
	w->addresses = response_alloc(r, 3 * sizeof(ProtobufCBinaryData));
	for (; w->n_addresses < 3 && spec->addresses[w->n_addresses]; w->n_addresses++)
		w->addresses[w->n_addresses] = ip_bytes(r, spec->addresses[w->n_addresses]);
	if (spec->region || spec->zone || spec->subzone) {
		Istio__Workload__Locality locality_init = ISTIO__WORKLOAD__LOCALITY__INIT;
		w->locality = response_alloc(r, sizeof(*w->locality));
		*w->locality = locality_init;
		w->locality->region = (char *)(spec->region ? spec->region : "");
		w->locality->zone = (char *)(spec->zone ? spec->zone : "");
		w->locality->subzone = (char *)(spec->subzone ? spec->subzone : "");
	}
	w->services = response_alloc(r, 4 * sizeof(void *));
	for (; w->n_services < 4 && spec->services[w->n_services].service; w->n_services++) {
		const struct membership_spec *m = &spec->services[w->n_services];
		Istio__Workload__Workload__ServicesEntry entry_init = ISTIO__WORKLOAD__WORKLOAD__SERVICES_ENTRY__INIT;
		Istio__Workload__PortList list_init = ISTIO__WORKLOAD__PORT_LIST__INIT;
		Istio__Workload__Workload__ServicesEntry *entry = response_alloc(r, sizeof(*entry));
		Istio__Workload__PortList *list = response_alloc(r, sizeof(*list));
		*entry = entry_init;
		*list = list_init;
		list->ports = ports_from(r, m->ports, &list->n_ports);
		entry->key = (char *)m->service;
		entry->value = list;
		w->services[w->n_services] = entry;
	}
	w->waypoint = gateway_from(r, spec->waypoint_ip, spec->waypoint_service, spec->waypoint_port);
	w->status = spec->unhealthy ? ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY : ISTIO__WORKLOAD__WORKLOAD_STATUS__HEALTHY;
	if (spec->capacity || spec->zero_capacity) {
		Google__Protobuf__UInt32Value capacity_init = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
		w->capacity = response_alloc(r, sizeof(*w->capacity));
		*w->capacity = capacity_init;
		w->capacity->value = spec->capacity;
	}
	w->authorization_policies = response_alloc(r, SPEC_MAX_POLICIES * sizeof(char *));
	for (; w->n_authorization_policies < SPEC_MAX_POLICIES && spec->policies[w->n_authorization_policies];
	     w->n_authorization_policies++)
		w->authorization_policies[w->n_authorization_policies] = (char *)spec->policies[w->n_authorization_policies];
	if (spec->host_network)
		w->network_mode = ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK;
	return w;
}

static inline Istio__Workload__Service *service_from(struct response *r, const struct service_spec *spec)
{
	Istio__Workload__Service init = ISTIO__WORKLOAD__SERVICE__INIT;
	Istio__Workload__Service *s = response_alloc(r, sizeof(*s));

	*s = init;
	s->name = (char *)spec->hostname;
	s->namespace_ = (char *)spec->namespace;
	s->hostname = (char *)spec->hostname;
	s->addresses = response_alloc(r, 3 * sizeof(void *));
	for (; s->n_addresses < 3 && spec->vips[s->n_addresses]; s->n_addresses++) {
		Istio__Workload__NetworkAddress address_init = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
		Istio__Workload__NetworkAddress *address = response_alloc(r, sizeof(*address));
		*address = address_init;
		address->address = ip_bytes(r, spec->vips[s->n_addresses]);
		s->addresses[s->n_addresses] = address;
	}
	s->ports = ports_from(r, spec->ports, &s->n_ports);
	s->waypoint = gateway_from(r, spec->waypoint_ip, spec->waypoint_service, spec->waypoint_port);
	if (spec->mode || spec->scopes[0] || spec->allow_unhealthy) {
		Istio__Workload__LoadBalancing lb_init = ISTIO__WORKLOAD__LOAD_BALANCING__INIT;
		Istio__Workload__LoadBalancing *lb = response_alloc(r, sizeof(*lb));
		*lb = lb_init;
		lb->mode = spec->mode;
		lb->health_policy = spec->allow_unhealthy ? ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL
							  : ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ONLY_HEALTHY;
		lb->routing_preference = response_alloc(r, 4 * sizeof(*lb->routing_preference));
		for (; lb->n_routing_preference < 4 && spec->scopes[lb->n_routing_preference]; lb->n_routing_preference++)
			lb->routing_preference[lb->n_routing_preference] = spec->scopes[lb->n_routing_preference];
		s->load_balancing = lb;
	}
	return s;
}

static inline void response_add_workload_msg(struct response *r, Istio__Workload__Workload *w, const char *version)
{
	Istio__Workload__Address address = ISTIO__WORKLOAD__ADDRESS__INIT;

	address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	address.workload = w;
	response_add_message(r, w->uid, version, SM_TYPE_URL_ADDRESS, &address.base);
}

static inline void response_add_workload(struct response *r, const struct workload_spec *spec, const char *version)
{
	response_add_workload_msg(r, workload_from(r, spec), version);
}

static inline void response_add_service_msg(struct response *r, Istio__Workload__Service *s, const char *version)
{
	Istio__Workload__Address address = ISTIO__WORKLOAD__ADDRESS__INIT;
	char *key = response_alloc(r, strlen(s->namespace_) + strlen(s->hostname) + 2);

	sprintf(key, "%s/%s", s->namespace_, s->hostname);
	address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
	address.service = s;
	response_add_message(r, key, version, SM_TYPE_URL_ADDRESS, &address.base);
}

static inline void response_add_service(struct response *r, const struct service_spec *spec, const char *version)
{
	response_add_service_msg(r, service_from(r, spec), version);
}

#endif
