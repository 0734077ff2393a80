/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockmesh explain --from SRC --to DST:PORT: asks the running agent's admin endpoint (/explain) what
 * the datapath does with such a connection, and prints it (or the JSON with --json).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "agent/commands.h"
#include "agent/dump_names.h"

static void explain_usage(FILE *out)
{
	fprintf(out,
		"Usage: sockmesh explain --from SRC_IP --to DST_IP:PORT [--json] [--admin-address IP:PORT]\n\n"
		"Explains what the datapath does with a TCP connection from SRC_IP to DST_IP:PORT, from the running\n"
		"agent's model and pinned maps: untouched, or the service with its candidate backends by priority\n"
		"and weight, the waypoint and TLV; and where the connection lands, the authorization verdict with\n"
		"the policy, rule and matches that decided it (or why none applied), the kernel's verdict beside it.\n\n"
		"  --from IP                the client's address\n"
		"  --to IP:PORT             where it connects ([IPv6]:PORT for IPv6)\n"
		"  --json                   print the agent's answer as JSON (the admin endpoint's /explain)\n"
		"  --admin-address IP:PORT  the agent's admin endpoint (default " DEFAULT_ADMIN_ADDRESS ")\n");
}

static const char *str(const json_t *object, const char *key)
{
	const char *value = json_string_value(json_object_get(object, key));
	return value ? value : "";
}

static void print_connect(const json_t *connect)
{
	const json_t *waypoint = json_object_get(connect, "waypoint"), *priority, *endpoint;
	size_t i, j;

	if (strcmp(str(connect, "outcome"), "service") != 0) {
		printf("connect: %s%s%s\n", str(connect, "outcome"), json_object_get(connect, "why") ? ": " : "",
		       str(connect, "why"));
		if (waypoint && json_object_get(waypoint, "address"))
			printf("  waypoint %s:%lld (TLV with the original destination)\n", str(waypoint, "address"),
			       json_integer_value(json_object_get(waypoint, "port")));
		return;
	}
	printf("connect: service %s (%s load balancing)\n", str(connect, "service"), str(connect, "lb_mode"));
	if (waypoint && json_object_get(waypoint, "unresolved"))
		printf("  waypoint not resolved yet: the connect is refused\n");
	else if (waypoint)
		printf("  waypoint %s:%lld (TLV with the original destination)\n", str(waypoint, "address"),
		       json_integer_value(json_object_get(waypoint, "port")));
	json_array_foreach(json_object_get(connect, "priorities"), i, priority) {
		printf("  priority %lld:\n", json_integer_value(json_object_get(priority, "priority")));
		json_array_foreach(json_object_get(priority, "endpoints"), j, endpoint)
			printf("    %s:%lld  %s  weight %lld\n", str(endpoint, "address"),
			       json_integer_value(json_object_get(endpoint, "port")), str(endpoint, "workload"),
			       json_integer_value(json_object_get(endpoint, "weight")));
	}
	if (!json_array_size(json_object_get(connect, "priorities")))
		printf("  no endpoint: the connect is left alone\n");
}

static void print_authz(const json_t *authz)
{
	const json_t *matched = json_object_get(authz, "matched"), *kernel = json_object_get(authz, "kernel");
	const json_t *dry = json_object_get(authz, "dry_run"), *policy, *clause;
	size_t i;

	printf("    source identity: %s\n", json_object_get(authz, "source_identity") ? str(authz, "source_identity")
										: "none (the address is no workload's)");
	printf("    policies that apply: %s", json_array_size(json_object_get(authz, "policies")) ? "" : "none");
	json_array_foreach(json_object_get(authz, "policies"), i, policy)
		printf("%s%s (%s%s)", i ? ", " : "", str(policy, "policy"), str(policy, "action"),
		       json_is_true(json_object_get(policy, "dry_run")) ? ", dry-run" : "");
	printf("\n    verdict: %s: %s%s%s\n", str(authz, "verdict"), str(authz, "reason"),
	       json_object_get(authz, "policy") ? ": " : "", str(authz, "policy"));
	if (matched) {
		printf("    matched: rule %lld", json_integer_value(json_object_get(matched, "rule")));
		json_array_foreach(json_object_get(matched, "clauses"), i, clause) {
			const json_t *match = json_object_get(clause, "match");
			if (json_is_integer(match))
				printf("; clause %lld by match %lld", json_integer_value(json_object_get(clause, "clause")),
				       json_integer_value(match));
			else
				printf("; clause %lld has no matches", json_integer_value(json_object_get(clause, "clause")));
		}
		printf("\n");
	}
	if (dry)
		printf("    dry-run: would be %s: %s%s%s\n", str(dry, "verdict"), str(dry, "reason"),
		       json_object_get(dry, "policy") ? ": " : "", str(dry, "policy"));
	if (json_object_get(authz, "note"))
		printf("    note: %s\n", str(authz, "note"));
	if (json_is_true(json_object_get(kernel, "checked")))
		printf("    kernel: %s: %s%s%s%s\n", str(kernel, "verdict"), str(kernel, "reason"),
		       json_object_get(kernel, "policy") ? ": " : "", str(kernel, "policy"),
		       json_is_true(json_object_get(kernel, "agrees_with_model")) ? "" : "  (DIFFERS from the model)");
	else
		printf("    kernel: not checked: %s%s\n", str(kernel, "why"), str(kernel, "error"));
}

static void print_answer(const json_t *answer)
{
	const json_t *landing;
	size_t i;

	printf("%s -> %s\n", str(answer, "from"), str(answer, "to"));
	print_connect(json_object_get(answer, "connect"));
	json_array_foreach(json_object_get(answer, "lands_on"), i, landing) {
		printf("lands on %s (%s):\n", str(landing, "destination"), str(landing, "via"));
		print_authz(json_object_get(landing, "authorization"));
	}
}

int cmd_explain(int argc, char **argv)
{
	static const struct option options[] = {
		{ "from", required_argument, NULL, 'f' },	   { "to", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },		   { "admin-address", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },		   { 0 },
	};
	const char *from = NULL, *to = NULL, *admin = DEFAULT_ADMIN_ADDRESS;
	bool as_json = false;
	char *path = NULL, *from_q = NULL, *to_q = NULL, err[1024];
	json_t *answer = NULL;
	int opt, ret = 1;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'f': from = optarg; break;
		case 't': to = optarg; break;
		case 'j': as_json = true; break;
		case 'a': admin = optarg; break;
		case 'h': explain_usage(stdout); return 0;
		default: explain_usage(stderr); return 2;
		}
	}
	if (!from || !to || optind != argc) {
		explain_usage(stderr);
		return 2;
	}
	from_q = curl_easy_escape(NULL, from, 0);
	to_q = curl_easy_escape(NULL, to, 0);
	if (!from_q || !to_q || asprintf(&path, "/explain?from=%s&to=%s", from_q, to_q) < 0) {
		fprintf(stderr, "sockmesh explain: out of memory\n");
		path = NULL;
		goto out;
	}
	if (admin_get_json(admin, path, &answer, err, sizeof(err))) {
		fprintf(stderr, "sockmesh explain: %s\n", err);
		goto out;
	}
	if (as_json) {
		char *text = json_dumps(answer, JSON_INDENT(2));
		if (text)
			printf("%s\n", text);
		free(text);
	} else
		print_answer(answer);
	ret = 0;
out:
	json_decref(answer);
	curl_free(from_q);
	curl_free(to_q);
	free(path);
	return ret;
}
