/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The model in the shape of ztunnel's config dump, so that tools that read ztunnel's read ours:
 * workloads keyed by "network/ip", services keyed by "network/vip" with their endpoints, and policies.
 * Each workload also lists the authorizations that select it (global, its namespace, its own list).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <utlist.h>

#include "workload/model.h"

static void format_ip(const struct sm_ip *ip, char *out, size_t size)
{
	if (ip_is_v4(ip))
		inet_ntop(AF_INET, ip->bytes + 12, out, (socklen_t)size);
	else
		inet_ntop(AF_INET6, ip->bytes, out, (socklen_t)size);
}

static json_t *network_address(const char *network, const struct sm_ip *ip)
{
	char text[INET6_ADDRSTRLEN];

	format_ip(ip, text, sizeof(text));
	return json_sprintf("%s/%s", network ? network : "", text);
}

/* Sets key to value when value is non-empty (ztunnel leaves defaults out). */
static int set_string(json_t *object, const char *key, const char *value)
{
	return value && value[0] ? json_object_set_new(object, key, json_string(value)) : 0;
}

static json_t *gateway_json(const struct gateway *gateway)
{
	json_t *destination;

	if (gateway->kind == GATEWAY_ADDRESS)
		destination = network_address(gateway->network, &gateway->address);
	else
		destination = json_string(gateway->service->key);
	return json_pack("{s:o, s:i}", "destination", destination, "port", gateway->port);
}

static const char *protocol_name(uint8_t tunnel)
{
	switch (tunnel) {
	case ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE:
		return "HBONE";
	case ISTIO__WORKLOAD__TUNNEL_PROTOCOL__LEGACY_ISTIO_MTLS:
		return "LegacyIstioMtls";
	default:
		return "TCP";
	}
}

static const char *workload_type_name(uint8_t type)
{
	static const char *const names[] = { "deployment", "cronjob", "pod", "job" };

	return type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown";
}

static bool authorization_selects(const struct authz *authz, const struct wl_def *def)
{
	switch (authz->def->scope) {
	case ISTIO__SECURITY__SCOPE__GLOBAL:
		return true;
	case ISTIO__SECURITY__SCOPE__NAMESPACE:
		return authz->def->namespace == def->namespace;
	default:
		for (uint16_t i = 0; i < def->n_policies; i++) {
			if (strcmp(def->policies[i], authz->key) == 0)
				return true;
		}
		return false;
	}
}

static json_t *selected_policies(const struct sm_model *model, const struct wl_def *def)
{
	json_t *list = json_array();

	for (const struct authz *authz = model->authorizations; list && authz; authz = authz->hh.next) {
		if (authz->def && authorization_selects(authz, def))
			json_array_append_new(list, json_string(authz->key));
	}
	return list;
}

static json_t *workload_json(const struct sm_model *model, const struct wl *wl)
{
	const struct wl_def *def = wl->def;
	json_t *object = json_object();
	json_t *ips = json_array();
	int err = !object || !ips;

	for (uint8_t i = 0; !err && i < def->n_addresses; i++) {
		char text[INET6_ADDRSTRLEN];
		format_ip(&def->addresses[i], text, sizeof(text));
		err = json_array_append_new(ips, json_string(text));
	}
	err = err || json_object_set_new(object, "workloadIps", ips);
	if (!err && def->waypoint)
		err = json_object_set_new(object, "waypoint", gateway_json(def->waypoint));
	err = err || json_object_set_new(object, "protocol", json_string(protocol_name(def->tunnel_protocol)));
	err = err || json_object_set_new(object, "uid", json_string(wl->uid));
	err = err || set_string(object, "name", def->name);
	err = err || set_string(object, "namespace", def->namespace);
	err = err || set_string(object, "trustDomain", def->trust_domain);
	err = err || set_string(object, "serviceAccount", def->service_account);
	err = err || set_string(object, "workloadName", def->workload_name);
	err = err || json_object_set_new(object, "workloadType", json_string(workload_type_name(def->workload_type)));
	err = err || set_string(object, "canonicalName", def->canonical_name);
	err = err || set_string(object, "canonicalRevision", def->canonical_revision);
	err = err || set_string(object, "network", def->network);
	err = err || set_string(object, "node", def->node);
	err = err || set_string(object, "hostname", def->hostname);
	if (!err && def->native_tunnel)
		err = json_object_set_new(object, "nativeTunnel", json_true());
	err = err || json_object_set_new(object, "status", json_string(def->status ? "Unhealthy" : "Healthy"));
	err = err || set_string(object, "clusterId", def->cluster_id);
	if (!err && (def->region[0] || def->zone[0] || def->subzone[0]))
		err = json_object_set_new(object, "locality",
					  json_pack("{s:s, s:s, s:s}", "region", def->region, "zone", def->zone,
						    "subzone", def->subzone));
	if (!err && def->network_mode == ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK)
		err = json_object_set_new(object, "networkMode", json_string("HostNetwork"));
	if (!err && def->has_capacity)
		err = json_object_set_new(object, "capacity", json_integer(def->capacity));
	if (!err) {
		json_t *policies = selected_policies(model, def);
		err = !policies || (json_array_size(policies) ? json_object_set_new(object, "authorizationPolicies", policies)
							      : (json_decref(policies), 0));
	}
	if (err) {
		json_decref(object);
		return NULL;
	}
	return object;
}

static int add_workloads(const struct sm_model *model, json_t *workloads)
{
	for (const struct wl *wl = model->workloads; wl; wl = wl->next) {
		if (!wl->def)
			continue;
		json_t *object = workload_json(model, wl);
		if (!object)
			return -1;
		if (!wl->def->n_addresses) {
			if (json_object_set_new(workloads, wl->uid, object))
				return -1;
			continue;
		}
		for (uint8_t i = 0; i < wl->def->n_addresses; i++) {
			json_t *key = network_address(wl->def->network, &wl->def->addresses[i]);
			int err = !key || json_object_set(workloads, json_string_value(key), object);
			json_decref(key);
			if (err) {
				json_decref(object);
				return -1;
			}
		}
		json_decref(object);
	}
	return 0;
}

static json_t *port_map(const struct svc_def *def, const struct membership *membership)
{
	json_t *ports = json_object();

	for (uint8_t i = 0; ports && i < def->n_ports; i++) {
		char key[8];
		uint16_t target = target_port(def, i, membership);
		snprintf(key, sizeof(key), "%u", def->ports[i].service_port);
		if (json_object_set_new(ports, key, json_integer(target))) {
			json_decref(ports);
			return NULL;
		}
	}
	return ports;
}

static json_t *endpoints_json(const struct svc *svc)
{
	const struct membership *membership;
	json_t *endpoints = json_object();

	DL_FOREACH(svc->members, membership) {
		const struct wl *wl = membership->workload;
		if (!endpoints || !wl->def || !wl->def->n_addresses)
			continue;
		/* ztunnel names an endpoint's address in the service's network, as its dump shows */
		const char *network = svc->def->n_vips ? svc->def->vip_networks[0] : "";
		json_t *address = network_address(network, &wl->def->addresses[0]);
		json_t *key = json_sprintf("%s:%s", wl->uid, json_string_value(address));
		json_t *endpoint = json_pack("{s:s, s:s, s:O, s:o}", "workloadUid", wl->uid, "service", svc->key,
					     "address", address, "port", port_map(svc->def, membership));
		int err = !key || !endpoint || json_object_set(endpoints, json_string_value(key), endpoint);
		json_decref(address);
		json_decref(key);
		json_decref(endpoint);
		if (err) {
			json_decref(endpoints);
			endpoints = NULL;
		}
	}
	return endpoints;
}

static json_t *load_balancer_json(const struct svc_def *def)
{
	static const char *const scopes[] = { "", "Region", "Zone", "Subzone", "Node", "Cluster", "Network" };
	static const char *const modes[] = { "Random", "Strict", "Failover", "Passthrough" };
	json_t *preferences = json_array();

	for (uint8_t i = 0; preferences && i < def->n_scopes; i++)
		json_array_append_new(preferences, json_string(scopes[def->scopes[i]]));
	return json_pack("{s:o, s:s, s:s}", "routingPreferences", preferences, "mode", modes[def->lb_mode],
			 "healthPolicy", def->allow_unhealthy ? "AllowAll" : "OnlyHealthy");
}

static json_t *service_json(const struct svc *svc)
{
	const struct svc_def *def = svc->def;
	const char *hostname = strchr(svc->key, '/') + 1;
	json_t *vips = json_array();
	json_t *sans = json_array();
	int err = !vips || !sans;

	for (uint8_t i = 0; !err && i < def->n_vips; i++)
		err = json_array_append_new(vips, network_address(def->vip_networks[i], &def->vips[i]));
	for (uint16_t i = 0; !err && i < def->n_subject_alt_names; i++)
		err = json_array_append_new(sans, json_string(def->subject_alt_names[i]));
	json_t *object = err ? NULL
			     : json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "name", def->name, "namespace",
					 def->namespace, "hostname", hostname, "vips", vips, "ports", port_map(def, NULL),
					 "endpoints", endpoints_json(svc), "subjectAltNames", sans);
	if (!object) {
		if (err) {
			json_decref(vips);
			json_decref(sans);
		}
		return NULL;
	}
	if (def->waypoint.kind != GATEWAY_NONE)
		err = json_object_set_new(object, "waypoint", gateway_json(&def->waypoint));
	if (!err && (def->n_scopes || def->lb_mode != SM_LB_RANDOM || def->allow_unhealthy))
		err = json_object_set_new(object, "loadBalancer", load_balancer_json(def));
	if (err) {
		json_decref(object);
		return NULL;
	}
	return object;
}

static int add_services(const struct sm_model *model, json_t *services)
{
	for (const struct svc *svc = model->services; svc; svc = svc->next) {
		if (!svc->def)
			continue;
		json_t *object = service_json(svc);
		if (!object)
			return -1;
		int err = 0;
		for (uint8_t i = 0; !err && i < svc->def->n_vips; i++) {
			json_t *key = network_address(svc->def->vip_networks[i], &svc->def->vips[i]);
			err = !key || json_object_set(services, json_string_value(key), object);
			json_decref(key);
		}
		/* A service without a VIP (headless) is still worth seeing. */
		if (!err && !svc->def->n_vips)
			err = json_object_set(services, svc->key, object);
		json_decref(object);
		if (err)
			return -1;
	}
	return 0;
}

/* Authorization addresses as CIDR text (the model accepts only 4- or 16-byte addresses). */
static void set_cidrs(json_t *match, const char *field, Istio__Security__Address *const *addresses, size_t n)
{
	json_t *list = n ? json_array() : NULL;

	for (size_t i = 0; list && i < n; i++) {
		char text[INET6_ADDRSTRLEN] = "?";
		const ProtobufCBinaryData *ip = &addresses[i]->address;
		if (ip->len == 4 || ip->len == 16)
			inet_ntop(ip->len == 4 ? AF_INET : AF_INET6, ip->data, text, sizeof(text));
		json_array_append_new(list, json_sprintf("%s/%u", text, addresses[i]->length));
	}
	if (list)
		json_object_set_new(match, field, list);
}

static json_t *policy_json(const struct authz *authz)
{
	static const char *const scopes[] = { "Global", "Namespace", "WorkloadSelector" };
	ProtobufCMessage *decoded;
	char err_text[256];

	if (sm_pb_decode(&istio__security__authorization__descriptor, authz->def->bytes, authz->def->len, &decoded,
			 err_text, sizeof(err_text)))
		return NULL;
	const Istio__Security__Authorization *msg = (const Istio__Security__Authorization *)decoded;
	json_t *rules = json_array();
	for (size_t r = 0; rules && r < msg->n_rules; r++) {
		json_t *clauses = json_array();
		for (size_t c = 0; clauses && c < msg->rules[r]->n_clauses; c++) {
			const Istio__Security__Clause *clause = msg->rules[r]->clauses[c];
			json_t *matches = json_array();
			for (size_t m = 0; matches && m < clause->n_matches; m++) {
				const Istio__Security__Match *fields = clause->matches[m];
				json_t *match = sm_pb_to_json(&fields->base);
				if (match) {
					set_cidrs(match, "sourceIps", fields->source_ips, fields->n_source_ips);
					set_cidrs(match, "notSourceIps", fields->not_source_ips, fields->n_not_source_ips);
					set_cidrs(match, "destinationIps", fields->destination_ips, fields->n_destination_ips);
					set_cidrs(match, "notDestinationIps", fields->not_destination_ips,
						  fields->n_not_destination_ips);
				}
				json_array_append_new(matches, match);
			}
			json_array_append_new(clauses, matches);
		}
		json_array_append_new(rules, clauses);
	}
	json_t *object = json_pack("{s:s, s:s, s:s, s:s, s:o}", "action",
				   msg->action == ISTIO__SECURITY__ACTION__DENY ? "Deny" : "Allow", "name", msg->name,
				   "namespace", msg->namespace_, "scope", scopes[authz->def->scope], "rules", rules);
	if (object && msg->dry_run)
		json_object_set_new(object, "dryRun", json_true());
	protobuf_c_message_free_unpacked(decoded, NULL);
	return object;
}

json_t *sm_model_config_dump(const struct sm_model *model)
{
	json_t *workloads = json_object();
	json_t *services = json_object();
	json_t *policies = json_array();
	json_t *dump = NULL;

	if (!workloads || !services || !policies || add_workloads(model, workloads) || add_services(model, services))
		goto fail;
	for (const struct authz *authz = model->authorizations; authz; authz = authz->hh.next) {
		if (authz->def && json_array_append_new(policies, policy_json(authz)))
			goto fail;
	}
	dump = json_pack("{s:o, s:o, s:o}", "workloads", workloads, "services", services, "policies", policies);
	return dump;
fail:
	json_decref(workloads);
	json_decref(services);
	json_decref(policies);
	return NULL;
}
