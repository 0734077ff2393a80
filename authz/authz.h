/* SPDX-License-Identifier: Apache-2.0 */
/*
 * authz/: Istio L4 authorization with ztunnel's semantics (docs/authorization.md).
 *
 *   policy   istio.security.Authorization → struct sm_authz_policy, validated against the limits below
 *   evaluate the reference evaluator: plain C, written from the semantics, the oracle of every test
 *   compile  the policies that apply to this node's workloads → the datapath's tables (bpf/sockmesh.h)
 *
 * It knows nothing of the workload model, gRPC or libbpf: its caller says which policies apply to
 * which destination and what identity each source address has.
 */
#ifndef SOCKMESH_AUTHZ_H
#define SOCKMESH_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bpf/sockmesh.h"
#include "datapath/datapath.h"
#include "proto/proto.h"

/* ---- limits a policy is checked against (a policy beyond them is rejected by name, never cut) ---- */
#define SM_AUTHZ_MAX_RULES 1024	     /* rules of one policy */
#define SM_AUTHZ_MAX_CLAUSES 64	     /* clauses of one rule */
#define SM_AUTHZ_MAX_MATCHES 256     /* matches of one clause */
#define SM_AUTHZ_MAX_VALUES 4096     /* entries of one list (CIDRs, ports, strings) */
#define SM_AUTHZ_MAX_STRING 1024     /* bytes of one string */

/* ---- the policy ---- */

enum sm_authz_scope {
	SM_AUTHZ_SCOPE_GLOBAL = 0,
	SM_AUTHZ_SCOPE_NAMESPACE = 1,
	SM_AUTHZ_SCOPE_WORKLOAD_SELECTOR = 2,
};

enum sm_authz_string_kind {
	SM_AUTHZ_EXACT,
	SM_AUTHZ_PREFIX,
	SM_AUTHZ_SUFFIX,
	SM_AUTHZ_PRESENCE, /* any non-empty value */
};

struct sm_authz_string {
	uint8_t kind; /* enum sm_authz_string_kind */
	char *value;  /* "" for PRESENCE */
};

/* A prefix over 16 bytes: IPv4 as ::ffff:a.b.c.d with 96 added to its length. Host bits are kept. */
struct sm_authz_cidr {
	uint8_t addr[16];
	uint8_t prefix_len; /* 0..128 */
};

struct sm_authz_service_account {
	char *namespace;
	char *name;
};

/* The field kinds of a Match; inside a match they AND. */
enum sm_authz_field {
	SM_AUTHZ_SOURCE_IPS,
	SM_AUTHZ_DESTINATION_IPS,
	SM_AUTHZ_DESTINATION_PORTS,
	SM_AUTHZ_PRINCIPALS,
	SM_AUTHZ_NAMESPACES,
	SM_AUTHZ_SERVICE_ACCOUNTS,
	SM_AUTHZ_FIELD_COUNT,
};

struct sm_authz_list {
	size_t n;
	union {
		struct sm_authz_cidr *cidrs;		       /* SOURCE_IPS, DESTINATION_IPS */
		uint16_t *ports;			       /* DESTINATION_PORTS */
		struct sm_authz_string *strings;	       /* PRINCIPALS, NAMESPACES */
		struct sm_authz_service_account *accounts;     /* SERVICE_ACCOUNTS */
	};
};

/* Per kind: (positive list empty, or one entry matches) and no entry of the negative list matches. */
struct sm_authz_match {
	struct sm_authz_list positive[SM_AUTHZ_FIELD_COUNT];
	struct sm_authz_list negative[SM_AUTHZ_FIELD_COUNT];
};

struct sm_authz_clause {
	size_t n_matches; /* OR; zero: true */
	struct sm_authz_match *matches;
};

struct sm_authz_rule {
	size_t n_clauses; /* AND; zero: true */
	struct sm_authz_clause *clauses;
};

struct sm_authz_policy {
	char *key;	 /* "namespace/name", the xDS resource's name */
	char *name;
	char *namespace;
	uint64_t hash;	 /* sm_authz_policy_hash(key) */
	uint8_t scope;	 /* enum sm_authz_scope */
	uint8_t action;	 /* enum sm_authz_action (bpf/sockmesh.h) */
	bool dry_run;
	size_t n_rules;	 /* OR; zero: never matches */
	struct sm_authz_rule *rules;
};

/*
 * Validates msg (scope and action known, addresses of 4 or 16 bytes with a prefix that fits, ports up to
 * 65535, every StringMatch with a kind, the limits above) and builds the policy, keyed "namespace/name".
 * Returns 0, -EINVAL with the reason (naming the rule, clause, match and field), or -ENOMEM.
 */
int sm_authz_policy_parse(const Istio__Security__Authorization *msg, struct sm_authz_policy **out, char *reason,
			  size_t reason_size);
void sm_authz_policy_free(struct sm_authz_policy *policy);

/* 64-bit FNV-1a of "namespace/name", never 0: how the maps and counters name a policy. */
uint64_t sm_authz_policy_hash(const char *key);

/* ---- identities ---- */

/* A source's identity, derived from the workload holding its address; NULL fields are not allowed. */
struct sm_authz_identity {
	const char *trust_domain;    /* "cluster.local" when the workload gives none */
	const char *namespace;
	const char *service_account; /* "default" when the workload gives none */
};

/* "TD/ns/NS/sa/SA" into buf (the principal the policies name, without spiffe://); -ENAMETOOLONG. */
int sm_authz_principal(const struct sm_authz_identity *identity, char *buf, size_t size);
/* 64-bit hash of the principal, never SM_AUTHZ_IDENTITY_NONE nor SM_AUTHZ_IDENTITY_NODE. */
uint64_t sm_authz_identity_hash(const struct sm_authz_identity *identity);

/* ---- the reference evaluator ---- */

struct sm_authz_connection {
	uint8_t src[16]; /* IPv4 as ::ffff:a.b.c.d */
	const struct sm_authz_identity *src_identity; /* NULL: none */
	uint8_t dst[16];
	uint16_t dst_port; /* host order, the real port after any VIP translation */
};

/* Where in a policy a verdict came from: the first rule that matched, and in it the match that made each
 * clause true (SIZE_MAX for a clause with no matches). */
struct sm_authz_witness {
	size_t rule;
	size_t clause_matches[SM_AUTHZ_MAX_CLAUSES];
	size_t n_clauses;
};

struct sm_authz_decision {
	uint8_t action; /* enum sm_authz_action */
	uint8_t reason; /* enum sm_authz_reason */
	const struct sm_authz_policy *policy;	/* the deciding policy (DENY_MATCHED, ALLOW_MATCHED), else NULL */
	struct sm_authz_witness witness;	/* in policy */
	/* Had the dry-run policies been enforced too: */
	uint8_t dry_run_action;
	uint8_t dry_run_reason;
	const struct sm_authz_policy *dry_run_policy;
};

/* Whether policy matches conn; when it does and witness is not NULL, where. */
bool sm_authz_policy_matches(const struct sm_authz_policy *policy, const struct sm_authz_connection *conn,
			     struct sm_authz_witness *witness);

/*
 * ztunnel's decision over the policies that apply to the destination: an enforced DENY that matches →
 * denied; no enforced ALLOW → allowed; an enforced ALLOW that matches → allowed; otherwise denied.
 * Dry-run policies only set the dry_run_* fields. Policies are taken in the order given.
 */
void sm_authz_evaluate(const struct sm_authz_policy *const *policies, size_t n,
		       const struct sm_authz_connection *conn, struct sm_authz_decision *out);

/* ---- the compiler ---- */

/* A local workload's address and the policies that apply to it (its scope's: global, its namespace's,
 * and those its Workload lists that have arrived). */
struct sm_authz_destination {
	uint8_t addr[16];
	const struct sm_authz_policy *const *policies;
	size_t n_policies;
};

/* An address of the mesh: a workload's (identity set) or the node's (node set: never checked). */
struct sm_authz_source {
	uint8_t addr[16];
	struct sm_authz_identity identity;
	bool node;
};

struct sm_authz_compile_input {
	const struct sm_authz_destination *destinations;
	size_t n_destinations;
	const struct sm_authz_source *sources;
	size_t n_sources;
	/* Entries each table may hold for one generation; 0: half the SM_DEFAULT_MAX_AUTHZ_* (two live). */
	uint32_t max_dests, max_cidrs, max_sources, max_verdicts;
};

/* The compiled tables: struct sm_authz_tables, datapath/datapath.h. */

/*
 * Compiles input into the tables of generation (never 0). Looked up as bpf/sockmesh.h describes, they give
 * for every (source address, destination address of input, port) the verdict sm_authz_evaluate gives,
 * with the same policy. Returns 0, -E2BIG when a table would exceed its limit (reason names the table,
 * what it needs and what it holds), or -ENOMEM.
 */
int sm_authz_compile(const struct sm_authz_compile_input *input, uint32_t generation,
		     struct sm_authz_tables **out, char *reason, size_t reason_size);
void sm_authz_tables_free(struct sm_authz_tables *tables);

/*
 * The tables for input when only its sources differ from those prev was compiled from: the same
 * destinations with the same policies (the caller knows: sm_model_authz_destinations_generation). They are
 * prev's destinations, prefixes, sources and verdicts, of prev's generation, with input's idents (and the
 * sources entries of new pairs, as added_source_*): for every connection the verdict the tables of
 * sm_authz_compile(input) give. Returns 0; -ESRCH when a source's (identity, CIDR class) pair is neither
 * among those prev evaluated nor of a class its compilation made, or when new pairs' entries would pass the
 * sources' limit (then compile in full), reason naming the address; -ENOMEM.
 */
int sm_authz_update_sources(const struct sm_authz_tables *prev, const struct sm_authz_compile_input *input,
			    struct sm_authz_tables **out, char *reason, size_t reason_size);
/*
 * The same from the changed addresses alone: prev's tables with each address of set[] given its identity
 * (or the node's), each of unset[] none, the others as prev has them (the first listing of an address
 * counts). Returns 0, -ESRCH when a changed source's pair is of a class the compilation did not make (reason
 * naming it), -ENOMEM. Both updates list in next->changed_idents the addresses whose identity may differ.
 */
int sm_authz_update_idents(const struct sm_authz_tables *prev, const struct sm_authz_source *set, size_t n_set,
			   const uint8_t (*unset)[16], size_t n_unset, struct sm_authz_tables **out, char *reason,
			   size_t reason_size);
/*
 * Tables an update of sources handed out (sm_authz_update_idents, _sources), not yet written, brought to a
 * change of this node's addresses with the policies the same (the caller knows:
 * sm_model_authz_policies_generation): each destination of set[] guarded by its policies, each address of
 * unset[] not guarded (the first listing of an address counts), each with a set the compilation made; t
 * lists in changed_dests the addresses whose entry differs. Returns 0; -ESRCH when an address's policies make
 * a set the compilation did not, or the dests would pass their limit (then compile in full), reason
 * naming the address; -EINVAL when t was updated so before; -ENOMEM. On error t is as it was.
 */
int sm_authz_update_destinations(struct sm_authz_tables *t, const struct sm_authz_destination *set, size_t n_set,
				 const uint8_t (*unset)[16], size_t n_unset, char *reason, size_t reason_size);
/*
 * Whether next, made from prev by sm_authz_update_sources or sm_authz_update_idents (and perhaps
 * sm_authz_update_destinations), denies some source address a destination and port that prev let it reach:
 * an address of next->changed_idents whose identity changed, came or went, or an address of
 * next->changed_dests guarded now or by another set. Only then can an established connection need
 * closing. 1 when it may, 0 when it cannot, -ENOMEM. When dests is not NULL, *dests (malloc'ed) and
 * *n_dests get the destinations where it may: no connection to another one can need closing.
 */
int sm_authz_update_denies(const struct sm_authz_tables *prev, const struct sm_authz_tables *next,
			   struct sm_frontend_key **dests, size_t *n_dests);

/*
 * What the tables say for one connection, following the lookups of bpf/sockmesh.h exactly as the kernel
 * does (a userspace model of sk_lookup, for tests and `sockmesh explain`): 1 and the verdict when the
 * destination is guarded, 0 when it is not, -ENOENT when it is and the source is the node (exempt).
 */
int sm_authz_tables_lookup(const struct sm_authz_tables *tables, const uint8_t src[16], const uint8_t dst[16],
			   uint16_t dst_port, struct sm_authz_verdict *out);

#endif
