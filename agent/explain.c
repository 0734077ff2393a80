/* SPDX-License-Identifier: Apache-2.0 */
/* The answer behind /explain and `sockmesh explain` (agent/explain.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/explain.h"
#include "authz/authz.h"

static void to_mapped(const struct sockaddr_storage *ss, uint8_t out[16], uint16_t *port)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &in->sin_addr, 4);
		*port = ntohs(in->sin_port);
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		memcpy(out, &in6->sin6_addr, 16);
		*port = ntohs(in6->sin6_port);
	}
}

static const char *str_of(const json_t *object, const char *key)
{
	const char *value = json_string_value(json_object_get(object, key));
	return value ? value : "";
}

static const char *reason_text(uint8_t reason)
{
	switch (reason) {
	case SM_AUTHZ_NO_ALLOW_POLICIES: return "no ALLOW policy applies";
	case SM_AUTHZ_ALLOW_MATCHED: return "allowed by an ALLOW policy";
	case SM_AUTHZ_DENY_MATCHED: return "explicitly denied by a DENY policy";
	case SM_AUTHZ_NO_ALLOW_MATCHED: return "allow policies exist, but none allowed";
	}
	return "unknown";
}

static const char *policy_key_of(const struct sm_authz_policy *const *policies, size_t n, uint64_t hash)
{
	for (size_t i = 0; i < n && hash; i++) {
		if (policies[i]->hash == hash)
			return policies[i]->key;
	}
	return NULL;
}

static json_t *witness_json(const struct sm_authz_witness *witness)
{
	json_t *clauses = json_array();

	for (size_t c = 0; clauses && c < witness->n_clauses; c++) {
		size_t match = witness->clause_matches[c];
		json_array_append_new(clauses, match == SIZE_MAX ? json_pack("{s:i, s:s}", "clause", (int)c, "match",
									      "none: a clause without matches is true")
								 : json_pack("{s:i, s:i}", "clause", (int)c, "match", (int)match));
	}
	return json_pack("{s:i, s:o}", "rule", (int)witness->rule, "clauses", clauses);
}

static json_t *kernel_json(struct agent *agent, const uint8_t src[16], const uint8_t dst[16], uint16_t port,
			   const struct sm_authz_policy *const *policies, size_t n, const struct sm_authz_decision *model)
{
	struct sm_authz_verdict verdict;
	int ret = sm_datapath_authz_lookup(agent->dp, src, dst, port, &verdict);

	if (ret == -ENOENT)
		return json_pack("{s:b, s:s}", "checked", 0, "why", "the source is the node itself (exempt)");
	if (ret == 0)
		return json_pack("{s:b, s:s}", "checked", 0, "why", "the destination is not guarded by the tables in force");
	if (ret < 0)
		return json_pack("{s:s}", "error", strerror(-ret));
	const char *key = policy_key_of(policies, n, verdict.policy);
	bool agrees = verdict.action == model->action && verdict.reason == model->reason &&
		      verdict.policy == (model->policy ? model->policy->hash : 0);
	return json_pack("{s:b, s:s, s:s, s:s*, s:b}", "checked", 1, "verdict",
			 verdict.action == SM_AUTHZ_DENY ? "deny" : "allow", "reason", reason_text(verdict.reason), "policy",
			 key, "agrees_with_model", agrees);
}

/* The authorization of src → dst:port where it lands. Under the model lock. */
static json_t *authz_json(struct agent *agent, const uint8_t src[16], const uint8_t dst[16], uint16_t port)
{
	const struct sm_authz_policy **policies = NULL;
	struct sm_authz_identity identity;
	struct sm_authz_connection conn = { .dst_port = port };
	struct sm_authz_decision decision;
	char principal[600];
	size_t n = 0;
	bool local = false;
	json_t *out, *names;

	if (sm_model_authz_policies_for(agent->model, dst, &policies, &n, &local))
		return NULL;
	memcpy(conn.src, src, 16);
	memcpy(conn.dst, dst, 16);
	if (sm_model_authz_identity(agent->model, src, &identity) && !sm_authz_principal(&identity, principal, sizeof(principal)))
		conn.src_identity = &identity;
	sm_authz_evaluate(policies, n, &conn, &decision);
	names = json_array();
	for (size_t i = 0; names && i < n; i++)
		json_array_append_new(names, json_pack("{s:s, s:s, s:b}", "policy", policies[i]->key, "action",
						       policies[i]->action == SM_AUTHZ_DENY ? "DENY" : "ALLOW", "dry_run",
						       policies[i]->dry_run));
	out = json_pack("{s:b, s:s*, s:o, s:s, s:s, s:s*}", "local_workload", local, "source_identity",
			conn.src_identity ? principal : NULL, "policies", names, "verdict",
			decision.action == SM_AUTHZ_DENY ? "deny" : "allow", "reason", reason_text(decision.reason),
			"policy", decision.policy ? decision.policy->key : NULL);
	if (out && decision.policy)
		json_object_set_new(out, "matched", witness_json(&decision.witness));
	if (out && (decision.dry_run_action != decision.action || decision.dry_run_policy))
		json_object_set_new(out, "dry_run",
				    json_pack("{s:s, s:s, s:s*}", "verdict",
					      decision.dry_run_action == SM_AUTHZ_DENY ? "deny" : "allow", "reason",
					      reason_text(decision.dry_run_reason), "policy",
					      decision.dry_run_policy ? decision.dry_run_policy->key : NULL));
	if (out && !local)
		json_object_set_new(out, "note", json_string("not a workload of this node: its own node's agent enforces"));
	if (out)
		json_object_set_new(out, "kernel",
				    kernel_json(agent, src, dst, port, (const struct sm_authz_policy *const *)policies, n,
						&decision));
	free(policies);
	return out;
}

static void add_landing(struct agent *agent, json_t *landings, const uint8_t src[16], const char *address,
			json_int_t port, const char *via)
{
	uint8_t dst[16];
	char text[80];

	if (!address || parse_mapped_address(address, dst))
		return;
	snprintf(text, sizeof(text), strchr(address, ':') ? "[%s]:%lld" : "%s:%lld", address, (long long)port);
	json_t *authz = authz_json(agent, src, dst, (uint16_t)port);
	json_array_append_new(landings, json_pack("{s:s, s:s, s:o*}", "destination", text, "via", via, "authorization", authz));
}

/* Where the connection lands: each endpoint (or its waypoint), the service's waypoint, or dst itself. */
static void landings_of(struct agent *agent, const json_t *translation, const uint8_t src[16],
			const char *to_address, uint16_t port, json_t *landings)
{
	const char *outcome = json_string_value(json_object_get(translation, "outcome"));
	json_t *waypoint = json_object_get(translation, "waypoint"), *priority, *endpoint;
	size_t i;

	if (waypoint && json_object_get(waypoint, "address")) {
		add_landing(agent, landings, src, json_string_value(json_object_get(waypoint, "address")),
			    json_integer_value(json_object_get(waypoint, "port")), "waypoint");
		return;
	}
	if (!outcome || strcmp(outcome, "service") != 0) {
		add_landing(agent, landings, src, to_address, port, "direct");
		return;
	}
	/* connect4/6 draws from the first priority with endpoints (random keeps every one in priority 0;
	 * strict takes priority 0 only, else leaves the connection alone) */
	priority = json_array_get(json_object_get(translation, "priorities"), 0);
	if (!priority || (strcmp(str_of(translation, "lb_mode"), "strict") == 0 &&
			  json_integer_value(json_object_get(priority, "priority")) != 0)) {
		add_landing(agent, landings, src, to_address, port, "direct (no endpoint takes it)");
		return;
	}
	json_array_foreach(json_object_get(priority, "endpoints"), i, endpoint) {
		json_t *own = json_object_get(endpoint, "waypoint");
		if (own && json_object_get(own, "address"))
			add_landing(agent, landings, src, json_string_value(json_object_get(own, "address")),
				    json_integer_value(json_object_get(own, "port")), "endpoint's waypoint");
		else
			add_landing(agent, landings, src, json_string_value(json_object_get(endpoint, "address")),
				    json_integer_value(json_object_get(endpoint, "port")), "endpoint");
	}
}

json_t *agent_explain(struct agent *agent, const char *from, const char *to, char *err, size_t size)
{
	struct sockaddr_storage ss;
	uint8_t src[16], dst[16];
	char to_address[INET6_ADDRSTRLEN];
	uint16_t port;
	json_t *out, *translation, *landings;

	if (!from || parse_mapped_address(from, src)) {
		snprintf(err, size, "from: '%s' is not an IPv4 or IPv6 address", from ? from : "");
		return NULL;
	}
	if (!to || parse_ip_port(to, &ss)) {
		snprintf(err, size, "to: '%s' is not IP:PORT or [IPv6]:PORT", to ? to : "");
		return NULL;
	}
	to_mapped(&ss, dst, &port);
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, to_address, sizeof(to_address));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, to_address, sizeof(to_address));
	landings = json_array();
	model_gate_lock(&agent->model_gate);
	translation = sm_model_explain_connect(agent->model, dst, port);
	if (translation && landings)
		landings_of(agent, translation, src, to_address, port, landings);
	model_gate_unlock(&agent->model_gate);
	out = json_pack("{s:s, s:s, s:o*, s:o*}", "from", from, "to", to, "connect", translation, "lands_on", landings);
	if (!out)
		snprintf(err, size, "out of memory");
	return out;
}
