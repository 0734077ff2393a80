/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The authorization benchmarks' policies, as ztunnel's local-config YAML: N policies that all apply to the
 * workloads of one namespace on this node, a mix of what istiod sends for L4 (source ipBlocks with ports,
 * principals exact and by suffix, namespaces with notPorts, service accounts, two clauses ANDed, a few
 * DENYs), scoped Namespace, WorkloadSelector (listed by the workloads) and a few Global. The last one lets
 * every frontend workload in on port 8080, so that the network benchmark's client is allowed after every policy was
 * considered. None of the others matches 127.0.0.1 from frontend/web on 8080, though one of them names
 * 127.0.0.0/8 (on another port), so the client's address falls in a prefix as it would in a real mesh.
 */
#ifndef SOCKMESH_BENCH_AUTHZ_POLICIES_H
#define SOCKMESH_BENCH_AUTHZ_POLICIES_H

#include <stdbool.h>
#include <stdio.h>

enum { SCOPE_NAMESPACE, SCOPE_SELECTOR, SCOPE_GLOBAL };

static inline int policy_scope(int i, int n)
{
	if (i == n - 1)
		return SCOPE_NAMESPACE;
	if (i % 100 == 50)
		return SCOPE_GLOBAL;
	return i % 7 == 3 ? SCOPE_SELECTOR : SCOPE_NAMESPACE;
}

/* Policy i of n in namespace ns (Global ones in istio-system); changed: a variant of it (one change). */
static inline void policy_yaml(FILE *f, int i, int n, const char *ns, bool changed)
{
	static const char *const scope_names[] = { "Namespace", "WorkloadSelector", "Global" };
	int scope = policy_scope(i, n), port = 8000 + i % 1000 + (changed ? 1 : 0), a = i % 250, b = (i / 250) % 256;
	const char *action = "Allow";
	char rules[400];

	if (i == n - 1) {
		snprintf(rules, sizeof(rules), "[[[{namespaces: [frontend], destinationPorts: [8080]}]]]");
	} else {
		switch (i % 10) {
		case 0: /* ipBlocks and a port; once in a hundred the client's own /8, on another port */
			if (i % 100 == 0)
				snprintf(rules, sizeof(rules), "[[[{sourceIps: [127.0.0.0/8], destinationPorts: [%d]}]]]",
					 7000 + i / 100 + (changed ? 1 : 0));
			else
				snprintf(rules, sizeof(rules),
					 "[[[{sourceIps: [10.%d.%d.0/24, 172.%d.0.0/16], destinationPorts: [%d]}]]]", a, b,
					 16 + i % 16, port == 8080 ? 8081 : port);
			break;
		case 1:
			snprintf(rules, sizeof(rules), "[[[{principals: [cluster.local/ns/ns%d/sa/sa%d]}]]]", i % 100,
				 (i + changed) % 20);
			break;
		case 2:
			snprintf(rules, sizeof(rules), "[[[{namespaces: [ns%d], notDestinationPorts: [%d]}]]]", i % 100,
				 9000 + (i + changed) % 7);
			break;
		case 3:
			snprintf(rules, sizeof(rules),
				 "[[[{serviceAccounts: [{namespace: ns%d, serviceAccount: sa%d}], destinationPorts: [8080, %d]}]]]",
				 i % 100, (i + changed) % 20, port);
			break;
		case 4: /* two clauses, ANDed */
			snprintf(rules, sizeof(rules), "[[[{sourceIps: [10.%d.0.0/16]}], [{principals: [{prefix: cluster.local/ns/ns%d/}]}]]]",
				 a, (i + changed) % 100);
			break;
		case 5: /* one in twenty policies a DENY of namespaces */
			action = i % 20 == 5 ? "Deny" : "Allow";
			snprintf(rules, sizeof(rules), "[[[{namespaces: [bad%d, ns%d]}]]]", i % 10, (i + changed) % 100);
			break;
		case 6:
			snprintf(rules, sizeof(rules), "[[[{sourceIps: [10.%d.%d.%d/32, 10.%d.%d.0/28]}]]]", a, b, i % 256,
				 (a + 1 + changed) % 250, b);
			break;
		case 7:
			snprintf(rules, sizeof(rules), "[[[{principals: [{suffix: /sa/sa%d}], destinationPorts: [%d]}]]]",
				 i % 20, 10000 + i + changed);
			break;
		case 8: /* several rules */
			snprintf(rules, sizeof(rules), "[[[{namespaces: [ns%d]}]], [[{destinationPorts: [%d]}, {sourceIps: [172.%d.0.0/12]}]]]",
				 i % 100, 20000 + i + changed, 16 + i % 16);
			break;
		default: /* one in twenty a DENY of ipBlocks */
			action = i % 20 == 9 ? "Deny" : "Allow";
			snprintf(rules, sizeof(rules), "[[[{sourceIps: [192.168.%d.0/24], notDestinationPorts: [%d]}]]]",
				 (i + changed) % 256, 8080 + i % 3);
			break;
		}
	}
	fprintf(f, "- {name: p%d, namespace: %s, scope: %s, action: %s, rules: %s}\n", i,
		scope == SCOPE_GLOBAL ? "istio-system" : ns, scope_names[scope], action, rules);
}

/* The WorkloadSelector policies of n, as a workload lists them: ", authorizationPolicies: [ns/p3, ...]". */
static inline void selector_list_yaml(FILE *f, int n, const char *ns)
{
	bool first = true;

	for (int i = 0; i < n; i++) {
		if (policy_scope(i, n) != SCOPE_SELECTOR)
			continue;
		fprintf(f, "%s%s/p%d", first ? ", authorizationPolicies: [" : ", ", ns, i);
		first = false;
	}
	if (!first)
		fputs("]", f);
}

/* n policies, changed: the index of the one that differs (-1: none). */
static inline void policies_yaml(FILE *f, int n, const char *ns, int changed)
{
	fputs(n ? "policies:\n" : "policies: []\n", f);
	for (int i = 0; i < n; i++)
		policy_yaml(f, i, n, ns, i == changed);
}

#endif
