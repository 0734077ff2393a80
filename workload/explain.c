/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What connect4/6 does with a destination, read from the model's image of the maps (which the maps hold,
 * entry for entry): untouched, or the service, its candidate backends by priority with their weights,
 * and the waypoint (with the TLV) when one takes the connection. For `sockmesh explain`.
 */
#include <arpa/inet.h>
#include <string.h>

#include "workload/model.h"

static const char *const lb_modes[] = { "random", "strict", "failover", "passthrough" };

static json_t *address_json(const uint8_t addr[16])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	char text[INET6_ADDRSTRLEN];
	bool v4 = memcmp(addr, mapped, 12) == 0;

	inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? addr + 12 : addr, text, sizeof(text));
	return json_string(text);
}

static void mapped_v4(__be32 addr4, uint8_t out[16])
{
	memset(out, 0, 10);
	out[10] = out[11] = 0xff;
	memcpy(out + 12, &addr4, 4);
}

static json_t *waypoint_json(const struct sm_waypoint *waypoint, bool v4)
{
	uint8_t addr[16];

	if (!waypoint->flags)
		return NULL;
	if (waypoint->flags & SM_WAYPOINT_UNRESOLVED)
		return json_pack("{s:b}", "unresolved", 1);
	if (v4 && (waypoint->flags & SM_WAYPOINT_V4))
		mapped_v4(waypoint->addr4, addr);
	else
		memcpy(addr, waypoint->addr6, 16);
	return json_pack("{s:o, s:i, s:b}", "address", address_json(addr), "port", ntohs(waypoint->port), "tlv", 1);
}

/* The endpoints of one priority: each backend once, its weight the slots it holds. */
static json_t *priority_json(const struct sm_model *model, uint32_t service_id, uint8_t priority, uint16_t count,
			     uint8_t port_index, uint16_t service_port, bool v4)
{
	json_t *list = json_array();

	for (uint32_t i = 0; list && i < count; i++) {
		struct sm_endpoint_key key = { .service_id = service_id, .priority = priority, .index = i };
		const struct sm_endpoint_value *slot = sm_image_get(model->image, SM_MAP_ENDPOINTS, &key);
		const struct sm_backend_value *backend;
		const struct wl *wl;
		uint8_t addr[16];
		json_t *seen = NULL;
		size_t at;

		if (!slot || !(backend = sm_image_get(model->image, SM_MAP_BACKENDS, &slot->backend_id)))
			continue;
		json_array_foreach(list, at, seen) {
			if (json_integer_value(json_object_get(seen, "backend_id")) == slot->backend_id)
				break;
			seen = NULL;
		}
		if (seen) {
			json_object_set_new(seen, "weight", json_integer(json_integer_value(json_object_get(seen, "weight")) + 1));
			continue;
		}
		wl = model->backend_owner[slot->backend_id];
		if (v4 && (backend->families & SM_HAS_V4))
			mapped_v4(backend->addr4, addr);
		else
			memcpy(addr, backend->addr6, 16);
		json_array_append_new(list, json_pack("{s:i, s:s, s:o, s:i, s:i, s:o*}", "backend_id", slot->backend_id,
						      "workload", wl ? wl->uid : "", "address", address_json(addr),
						      "port", ntohs(slot->target_ports[port_index]) ?
								      ntohs(slot->target_ports[port_index]) : service_port,
						      "weight", 1, "waypoint", waypoint_json(&backend->waypoint, v4)));
	}
	return list;
}

json_t *sm_model_explain_connect(const struct sm_model *model, const uint8_t dst[16], uint16_t port)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	struct sm_frontend_key key;
	const struct sm_frontend_value *frontend;
	const struct sm_service_value *service;
	bool v4 = memcmp(dst, mapped, 12) == 0;
	json_t *out, *priorities;
	int port_index = -1;

	memcpy(key.addr, dst, 16);
	frontend = sm_image_get(model->image, SM_MAP_FRONTENDS, &key);
	if (!frontend)
		return json_pack("{s:s, s:s}", "outcome", "untouched", "why", "not a service VIP nor a pod with a waypoint");
	if (frontend->kind == SM_FRONTEND_WORKLOAD) {
		const struct sm_backend_value *backend = sm_image_get(model->image, SM_MAP_BACKENDS, &frontend->id);
		const struct wl *wl = model->backend_owner[frontend->id];
		return json_pack("{s:s, s:s, s:o*}", "outcome", "workload", "workload", wl ? wl->uid : "", "waypoint",
				 backend ? waypoint_json(&backend->waypoint, v4) : NULL);
	}
	service = sm_image_get(model->image, SM_MAP_SERVICES, &frontend->id);
	const struct svc *svc = model->service_owner[frontend->id];
	if (!service)
		return json_pack("{s:s, s:s}", "outcome", "untouched", "why", "the VIP's service is not in the maps");
	for (uint8_t i = 0; i < service->n_ports && i < SM_MAX_PORTS; i++) {
		if (ntohs(service->ports[i]) == port)
			port_index = i;
	}
	out = json_pack("{s:s, s:s, s:s}", "outcome", "service", "service", svc ? svc->key : "", "lb_mode",
			service->lb_mode < 4 ? lb_modes[service->lb_mode] : "unknown");
	if (!out)
		return NULL;
	if (service->lb_mode == SM_LB_PASSTHROUGH) {
		json_object_set_new(out, "outcome", json_string("untouched"));
		json_object_set_new(out, "why", json_string("a passthrough service is never rewritten"));
		return out;
	}
	if (port_index < 0) {
		json_object_set_new(out, "outcome", json_string("untouched"));
		json_object_set_new(out, "why", json_string("not one of the service's ports"));
		return out;
	}
	json_t *waypoint = waypoint_json(&service->waypoint, v4);
	if (waypoint)
		json_object_set_new(out, "waypoint", waypoint);
	priorities = json_array();
	for (uint8_t p = 0; priorities && p < SM_MAX_PRIORITIES; p++) {
		if (!service->endpoint_counts[p])
			continue;
		json_array_append_new(priorities,
				      json_pack("{s:i, s:o}", "priority", p, "endpoints",
						priority_json(model, frontend->id, p, service->endpoint_counts[p],
							      (uint8_t)port_index, port, v4)));
	}
	json_object_set_new(out, "priorities", priorities);
	return out;
}
