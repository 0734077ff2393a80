/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Validation: a decoded resource becomes a definition only if every field the datapath depends on is
 * well formed and fits the maps. The first problem found is the rejection's reason, written for the
 * operator reading istiod's logs.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workload/model.h"

#define MAX_WORKLOAD_ADDRESSES 16
#define MAX_WORKLOAD_SERVICES 1024
#define MAX_SERVICE_VIPS 255
#define MAX_PORT 65535
/* Far above any Kubernetes name (253) or Istio key; a longer string is a broken or hostile push. */
#define MAX_STRING 4096

static int reject(char *reason, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, size, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int parse_ip(const ProtobufCBinaryData *bytes, struct sm_ip *out)
{
	if (bytes->len == 4) {
		memset(out->bytes, 0, 10);
		out->bytes[10] = 0xff;
		out->bytes[11] = 0xff;
		memcpy(out->bytes + 12, bytes->data, 4);
		return 0;
	}
	if (bytes->len == 16) {
		memcpy(out->bytes, bytes->data, 16);
		return 0;
	}
	return -EINVAL;
}

bool ip_is_v4(const struct sm_ip *ip)
{
	static const uint8_t mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(ip->bytes, mapped_prefix, sizeof(mapped_prefix)) == 0;
}

static bool valid_service_key(const char *key)
{
	const char *slash = strchr(key, '/');

	return slash && slash != key && slash[1] && !strchr(slash + 1, '/');
}

/* A waypoint or network gateway. With resolve, a hostname is linked to its service entity. */
static int parse_gateway(struct sm_model *model, const Istio__Workload__GatewayAddress *msg, const char *what,
			 bool resolve, struct gateway *out, char *reason, size_t size)
{
	*out = (struct gateway){ 0 };
	if (!msg)
		return 0;
	if (msg->hbone_mtls_port == 0 || msg->hbone_mtls_port > MAX_PORT)
		return reject(reason, size, "%s port %u is not in 1..65535", what, msg->hbone_mtls_port);

	switch (msg->destination_case) {
	case ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS:
		if (parse_ip(&msg->address->address, &out->address))
			return reject(reason, size, "%s address has %zu bytes, not 4 or 16", what,
				      msg->address->address.len);
		out->kind = GATEWAY_ADDRESS;
		if (resolve && !(out->network = model_intern(model, msg->address->network)))
			return -ENOMEM;
		break;
	case ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME: {
		const Istio__Workload__NamespacedHostname *name = msg->hostname;
		char key[512];
		if (!name->namespace_[0] || !name->hostname[0] || strchr(name->hostname, '/') ||
		    strchr(name->namespace_, '/'))
			return reject(reason, size, "%s hostname '%s/%s' is not namespace/hostname", what,
				      name->namespace_, name->hostname);
		if (snprintf(key, sizeof(key), "%s/%s", name->namespace_, name->hostname) >= (int)sizeof(key))
			return reject(reason, size, "%s hostname is longer than %zu bytes", what, sizeof(key) - 1);
		out->kind = GATEWAY_SERVICE;
		if (resolve && !(out->service = model_service_ref(model, key)))
			return -ENOMEM;
		break;
	}
	default:
		return reject(reason, size, "%s has neither an address nor a hostname", what);
	}
	out->port = (uint16_t)msg->hbone_mtls_port;
	return 0;
}

/* A port's pair; on -EINVAL, problem says what is wrong with it, for the caller to say whose port it is. */
static int parse_port_pair(const Istio__Workload__Port *port, struct port_pair *out, char *problem, size_t size)
{
	if (port->service_port == 0 || port->service_port > MAX_PORT)
		return reject(problem, size, "service port %u is not in 1..65535", port->service_port);
	if (port->target_port > MAX_PORT)
		return reject(problem, size, "target port %u is above 65535", port->target_port);
	out->service_port = (uint16_t)port->service_port;
	out->target_port = (uint16_t)port->target_port;
	return 0;
}

static int check_length(const char *text, const char *what, char *reason, size_t size)
{
	size_t len = strlen(text);

	return len > MAX_STRING ? reject(reason, size, "%s is %zu bytes long, at most %d are accepted", what, len, MAX_STRING)
				: 0;
}

static int check_lengths(const char *const *texts, const char *const *names, size_t n, char *reason, size_t size)
{
	for (size_t i = 0; i < n; i++) {
		int err = check_length(texts[i], names[i], reason, size);
		if (err)
			return err;
	}
	return 0;
}

/* ---- workloads ---- */

static void free_ports(struct membership *membership)
{
	if (membership->ports != &membership->one_port)
		free(membership->ports);
}

void free_wl_def(struct sm_model *model, struct wl_def *def)
{
	if (!def)
		return;
	const char **interned[] = {
		&def->namespace, &def->service_account, &def->trust_domain, &def->node, &def->network,
		&def->cluster_id, &def->region, &def->zone, &def->subzone, &def->canonical_name,
		&def->canonical_revision, &def->workload_name,
	};
	for (size_t i = 0; i < sizeof(interned) / sizeof(interned[0]); i++)
		model_unintern(model, *interned[i]);
	for (uint16_t i = 0; i < def->n_policies; i++)
		model_unintern(model, def->policies[i]);
	for (uint16_t i = 0; i < def->n_memberships; i++)
		free_ports(&def->memberships[i]);
	if (def->waypoint)
		model_unintern(model, def->waypoint->network);
	free(def->waypoint);
	free(def->policies);
	free(def->memberships);
	free(def->addresses);
	free(def);
}

static int intern_all(struct sm_model *model, const char **targets[], const char *const sources[], size_t n)
{
	for (size_t i = 0; i < n; i++) {
		*targets[i] = model_intern(model, sources[i]);
		if (!*targets[i])
			return -ENOMEM;
	}
	return 0;
}

static int parse_workload_strings(struct sm_model *model, const Istio__Workload__Workload *msg, struct wl_def *def)
{
	const Istio__Workload__Locality *locality = msg->locality;
	const char **targets[] = {
		&def->namespace, &def->service_account, &def->trust_domain, &def->node, &def->network,
		&def->cluster_id, &def->region, &def->zone, &def->subzone, &def->canonical_name,
		&def->canonical_revision, &def->workload_name,
	};
	const char *const sources[] = {
		msg->namespace_, msg->service_account, msg->trust_domain, msg->node, msg->network, msg->cluster_id,
		locality ? locality->region : "", locality ? locality->zone : "", locality ? locality->subzone : "",
		msg->canonical_name, msg->canonical_revision, msg->workload_name,
	};

	if (intern_all(model, targets, sources, sizeof(targets) / sizeof(targets[0])))
		return -ENOMEM;

	if (!msg->n_authorization_policies)
		return 0;
	def->policies = calloc(msg->n_authorization_policies, sizeof(char *));
	if (!def->policies)
		return -ENOMEM;
	for (size_t i = 0; i < msg->n_authorization_policies; i++) {
		def->policies[i] = model_intern(model, msg->authorization_policies[i]);
		if (!def->policies[i])
			return -ENOMEM;
		def->n_policies++;
	}
	return 0;
}

static int parse_workload_addresses(const Istio__Workload__Workload *msg, struct wl_def *def, char *reason,
				    size_t size)
{
	if (msg->n_addresses > MAX_WORKLOAD_ADDRESSES)
		return reject(reason, size, "%zu addresses, at most %d are supported", msg->n_addresses,
			      MAX_WORKLOAD_ADDRESSES);
	def->addresses = calloc(msg->n_addresses ? msg->n_addresses : 1, sizeof(struct sm_ip));
	if (!def->addresses)
		return -ENOMEM;
	for (size_t i = 0; i < msg->n_addresses; i++) {
		if (parse_ip(&msg->addresses[i], &def->addresses[i]))
			return reject(reason, size, "address %zu has %zu bytes, not 4 or 16", i, msg->addresses[i].len);
	}
	def->n_addresses = (uint8_t)msg->n_addresses;
	return 0;
}

static int parse_membership(struct sm_model *model, const Istio__Workload__Workload__ServicesEntry *entry,
			    struct wl_def *def, char *reason, size_t size)
{
	const Istio__Workload__PortList *list = entry->value;
	size_t n_ports = list ? list->n_ports : 0;
	struct port_pair *ports;
	char problem[64];

	if (!valid_service_key(entry->key))
		return reject(reason, size, "services key '%s' is not namespace/hostname", entry->key);
	if (n_ports > SM_MAX_PORTS)
		return reject(reason, size, "services key '%s' lists %zu ports, at most %d are supported", entry->key,
			      n_ports, SM_MAX_PORTS);
	struct port_pair one_port = { 0 };
	ports = n_ports > 1 ? calloc(n_ports, sizeof(*ports)) : &one_port;
	if (!ports)
		return -ENOMEM;
	int err = 0;
	for (size_t i = 0; i < n_ports && !err; i++)
		err = parse_port_pair(list->ports[i], &ports[i], problem, sizeof(problem));
	if (err)
		reject(reason, size, "services key '%s': %s", entry->key, problem);
	struct svc *svc = err ? NULL : model_service_ref(model, entry->key);
	if (!svc) {
		if (ports != &one_port)
			free(ports);
		return err ? err : -ENOMEM;
	}
	/* A map key seen twice: the later entry wins, as protobuf decoding of maps does. */
	struct membership *membership = find_membership(def, svc);
	if (membership)
		free_ports(membership);
	else
		membership = &def->memberships[def->n_memberships++];
	*membership = (struct membership){ .service = svc, .n_ports = (uint16_t)n_ports, .one_port = one_port };
	membership->ports = ports == &one_port ? &membership->one_port : ports;
	return 0;
}

/* The definition and its own strings in one allocation: a mesh holds many workloads. */
static struct wl_def *new_wl_def(const Istio__Workload__Workload *msg, const char *version)
{
	size_t version_len = strlen(version) + 1, name_len = strlen(msg->name) + 1, host_len = strlen(msg->hostname) + 1;
	struct wl_def *def = calloc(1, sizeof(*def) + version_len + name_len + host_len);

	if (!def)
		return NULL;
	def->version = memcpy((char *)(def + 1), version, version_len);
	def->name = memcpy(def->version + version_len, msg->name, name_len);
	def->hostname = memcpy(def->name + name_len, msg->hostname, host_len);
	return def;
}

int parse_workload(struct sm_model *model, const Istio__Workload__Workload *msg, const char *version,
		   struct wl_def **out, char *reason, size_t size)
{
	struct wl_def *def = new_wl_def(msg, version);
	struct gateway unused;
	int err;

	if (!def)
		return -ENOMEM;
	const Istio__Workload__Locality *locality = msg->locality;
	const char *const texts[] = { version, msg->name, msg->namespace_, msg->hostname, msg->service_account,
				      msg->trust_domain, msg->node, msg->network, msg->cluster_id, msg->canonical_name,
				      msg->canonical_revision, msg->workload_name, locality ? locality->region : "",
				      locality ? locality->zone : "", locality ? locality->subzone : "" };
	const char *const names[] = { "version", "name", "namespace", "hostname", "service account", "trust domain",
				      "node", "network", "cluster id", "canonical name", "canonical revision",
				      "workload name", "region", "zone", "subzone" };
	err = check_lengths(texts, names, sizeof(texts) / sizeof(texts[0]), reason, size);
	for (size_t i = 0; !err && i < msg->n_authorization_policies; i++)
		err = check_length(msg->authorization_policies[i], "an authorization policy name", reason, size);
	for (size_t i = 0; !err && i < msg->n_services; i++)
		err = check_length(msg->services[i]->key, "a services key", reason, size);
	if (err)
		goto fail;
	if (msg->status > ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY) {
		err = reject(reason, size, "unknown status %d", msg->status);
		goto fail;
	}
	if (msg->network_mode > ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK) {
		err = reject(reason, size, "unknown network mode %d", msg->network_mode);
		goto fail;
	}
	if (msg->n_services > MAX_WORKLOAD_SERVICES) {
		err = reject(reason, size, "backs %zu services, at most %d are supported", msg->n_services,
			     MAX_WORKLOAD_SERVICES);
		goto fail;
	}
	err = parse_workload_strings(model, msg, def);
	if (!err)
		err = parse_workload_addresses(msg, def, reason, size);
	if (!err && msg->waypoint) {
		def->waypoint = calloc(1, sizeof(*def->waypoint));
		err = def->waypoint ? parse_gateway(model, msg->waypoint, "waypoint", true, def->waypoint, reason, size)
				    : -ENOMEM;
	}
	if (!err)
		err = parse_gateway(model, msg->network_gateway, "network gateway", false, &unused, reason, size);
	if (err)
		goto fail;

	def->memberships = calloc(msg->n_services ? msg->n_services : 1, sizeof(*def->memberships));
	if (!def->memberships) {
		err = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < msg->n_services; i++) {
		err = parse_membership(model, msg->services[i], def, reason, size);
		if (err)
			goto fail;
	}

	def->workload_type = (uint8_t)msg->workload_type;
	def->tunnel_protocol = (uint8_t)msg->tunnel_protocol;
	def->status = (uint8_t)msg->status;
	def->network_mode = (uint8_t)msg->network_mode;
	def->native_tunnel = msg->native_tunnel;
	def->has_capacity = msg->capacity != NULL;
	def->capacity = msg->capacity ? msg->capacity->value : 1;
	*out = def;
	return 0;
fail:
	free_wl_def(model, def);
	return err;
}

/* ---- services ---- */

void free_svc_def(struct sm_model *model, struct svc_def *def)
{
	if (!def)
		return;
	model_unintern(model, def->namespace);
	model_unintern(model, def->waypoint.network);
	for (uint8_t i = 0; i < def->n_vips; i++)
		model_unintern(model, def->vip_networks[i]);
	for (uint16_t i = 0; i < def->n_subject_alt_names; i++)
		free(def->subject_alt_names[i]);
	free(def->subject_alt_names);
	free(def->vip_networks);
	free(def->vips);
	free(def->version);
	free(def->name);
	free(def);
}

static int parse_vips(struct sm_model *model, const Istio__Workload__Service *msg, struct svc_def *def,
		      char *reason, size_t size)
{
	if (msg->n_addresses > MAX_SERVICE_VIPS)
		return reject(reason, size, "%zu addresses, at most %d are supported", msg->n_addresses,
			      MAX_SERVICE_VIPS);
	def->vips = calloc(msg->n_addresses ? msg->n_addresses : 1, sizeof(*def->vips));
	def->vip_networks = calloc(msg->n_addresses ? msg->n_addresses : 1, sizeof(*def->vip_networks));
	if (!def->vips || !def->vip_networks)
		return -ENOMEM;

	for (size_t i = 0; i < msg->n_addresses; i++) {
		const Istio__Workload__NetworkAddress *address = msg->addresses[i];
		struct sm_ip ip;

		if (parse_ip(&address->address, &ip))
			return reject(reason, size, "address %zu has %zu bytes, not 4 or 16", i, address->address.len);
		unsigned int full = address->address.len * 8;
		if (address->optional_length_case == ISTIO__WORKLOAD__NETWORK_ADDRESS__OPTIONAL_LENGTH_LENGTH &&
		    address->length != full)
			return reject(reason, size, "address %zu is a /%u range; only single VIPs are supported", i,
				      address->length);
		bool seen = false;
		for (uint8_t j = 0; j < def->n_vips; j++)
			seen |= memcmp(&def->vips[j], &ip, sizeof(ip)) == 0;
		if (seen)
			continue;
		def->vip_networks[def->n_vips] = model_intern(model, address->network);
		if (!def->vip_networks[def->n_vips])
			return -ENOMEM;
		def->vips[def->n_vips++] = ip;
	}
	return 0;
}

static int parse_service_ports(const Istio__Workload__Service *msg, struct svc_def *def, char *reason,
			       size_t size)
{
	if (msg->n_ports > SM_MAX_PORTS)
		return reject(reason, size, "%zu ports, the datapath holds at most %d per service", msg->n_ports,
			      SM_MAX_PORTS);
	for (size_t i = 0; i < msg->n_ports; i++) {
		struct port_pair pair = { 0 };
		char problem[64];
		if (parse_port_pair(msg->ports[i], &pair, problem, sizeof(problem)))
			return reject(reason, size, "ports: %s", problem);
		for (size_t j = 0; j < i; j++) {
			if (def->ports[j].service_port == pair.service_port)
				return reject(reason, size, "port %u is listed twice", pair.service_port);
		}
		def->ports[i] = (struct service_port){
			.service_port = pair.service_port,
			.target_port = pair.target_port,
		};
	}
	def->n_ports = (uint8_t)msg->n_ports;
	return 0;
}

static int parse_load_balancing(const Istio__Workload__LoadBalancing *lb, struct svc_def *def, char *reason,
				size_t size)
{
	def->lb_mode = SM_LB_RANDOM;
	if (!lb)
		return 0;
	if (lb->mode > ISTIO__WORKLOAD__LOAD_BALANCING__MODE__PASSTHROUGH)
		return reject(reason, size, "unknown load balancing mode %d", lb->mode);
	if (lb->health_policy > ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL)
		return reject(reason, size, "unknown health policy %d", lb->health_policy);
	if (lb->n_routing_preference > SM_MAX_PRIORITIES - 1)
		return reject(reason, size, "%zu routing preferences, at most %d are supported",
			      lb->n_routing_preference, SM_MAX_PRIORITIES - 1);
	for (size_t i = 0; i < lb->n_routing_preference; i++) {
		Istio__Workload__LoadBalancing__Scope scope = lb->routing_preference[i];
		if (scope < ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION ||
		    scope > ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK)
			return reject(reason, size, "unknown routing preference scope %d", scope);
		def->scopes[i] = (uint8_t)scope;
	}
	def->n_scopes = (uint8_t)lb->n_routing_preference;
	def->allow_unhealthy = lb->health_policy == ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL;

	switch (lb->mode) {
	case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__STRICT:
		def->lb_mode = SM_LB_STRICT;
		break;
	case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER:
		def->lb_mode = SM_LB_FAILOVER;
		break;
	case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__PASSTHROUGH:
		def->lb_mode = SM_LB_PASSTHROUGH;
		break;
	default: /* unspecified: preferences, if any, fail over */
		def->lb_mode = def->n_scopes ? SM_LB_FAILOVER : SM_LB_RANDOM;
		break;
	}
	return 0;
}

int parse_service(struct sm_model *model, const Istio__Workload__Service *msg, const char *version,
		  struct svc_def **out, char *reason, size_t size)
{
	struct svc_def *def = calloc(1, sizeof(*def));
	const char *const texts[] = { version, msg->name };
	const char *const names[] = { "version", "name" };
	int err;

	if (!def)
		return -ENOMEM;
	err = check_lengths(texts, names, 2, reason, size);
	for (size_t i = 0; !err && i < msg->n_subject_alt_names; i++)
		err = check_length(msg->subject_alt_names[i], "a subject alt name", reason, size);
	if (err)
		goto fail;
	def->version = strdup(version);
	def->name = strdup(msg->name);
	def->namespace = model_intern(model, msg->namespace_);
	def->subject_alt_names = calloc(msg->n_subject_alt_names ? msg->n_subject_alt_names : 1, sizeof(char *));
	if (!def->version || !def->name || !def->namespace || !def->subject_alt_names) {
		err = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < msg->n_subject_alt_names; i++) {
		if (!(def->subject_alt_names[i] = strdup(msg->subject_alt_names[i]))) {
			err = -ENOMEM;
			goto fail;
		}
		def->n_subject_alt_names++;
	}
	err = parse_vips(model, msg, def, reason, size);
	if (!err)
		err = parse_service_ports(msg, def, reason, size);
	if (!err)
		err = parse_load_balancing(msg->load_balancing, def, reason, size);
	if (!err)
		err = parse_gateway(model, msg->waypoint, "waypoint", true, &def->waypoint, reason, size);
	if (err)
		goto fail;
	*out = def;
	return 0;
fail:
	free_svc_def(model, def);
	return err;
}

/* ---- authorizations ---- */

void free_authz_def(struct sm_model *model, struct authz_def *def)
{
	if (!def)
		return;
	model_unintern(model, def->namespace);
	sm_authz_policy_free(def->policy);
	free(def->version);
	free(def->bytes);
	free(def);
}

int parse_authorization(struct sm_model *model, const Istio__Security__Authorization *msg, const uint8_t *bytes,
			size_t len, const char *version, struct authz_def **out, char *reason, size_t size)
{
	struct authz_def *def;

	struct sm_authz_policy *policy;
	int err;

	if (check_length(version, "version", reason, size))
		return -EINVAL;
	err = sm_authz_policy_parse(msg, &policy, reason, size);
	if (err)
		return err;
	def = calloc(1, sizeof(*def));
	if (!def) {
		sm_authz_policy_free(policy);
		return -ENOMEM;
	}
	def->policy = policy;
	def->version = strdup(version);
	def->namespace = model_intern(model, msg->namespace_);
	def->bytes = malloc(len ? len : 1);
	if (!def->version || !def->namespace || !def->bytes) {
		free_authz_def(model, def);
		return -ENOMEM;
	}
	memcpy(def->bytes, bytes, len);
	def->len = len;
	def->scope = (uint8_t)msg->scope;
	*out = def;
	return 0;
}
