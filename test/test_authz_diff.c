/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kernel differential test of L4 authorization. Random worlds (test/authz_random.h: policies of every
 * field kind and their not_ twins, every StringMatch kind, empty rules, clauses and matches, dry-run;
 * sources with and without identities, node sources; destinations with their policy lists) are moved to
 * addresses local to the case's network namespace (127.0.0.0/8, and 16 fd00:: addresses put on lo),
 * compiled (sm_authz_compile), written (sm_datapath_authz_write) and then tried with real TCP connects
 * from random sources: refused is DENY, established is ALLOW, and that must be what sm_authz_evaluate
 * says over the destination's policies (node sources exempt, unlisted destinations unguarded). Also
 * checked per connection: the kernel's event names the evaluator's policy and reason, and
 * sm_datapath_authz_lookup gives the evaluator's whole verdict; at the end, the kernel's counters.
 *   AUTHZ_DIFF_SEED=N   the seed (printed; default: from the clock)
 *   AUTHZ_DIFF_CASES=N  connections (default 20,000, the slice CI runs: about 4 s)
 * A mismatch prints the seed, the connection, both sides, the world and the destination's policies.
 */
#include <time.h>

#include "authz_random.h"
#include "datapath_env.h"
#include "helpers.h"
#include "netns/netns.h"

#define DEFAULT_CASES 20000
#define PER_WORLD 32		/* connections tried against one compilation */
#define IO_TIMEOUT_MS 2000	/* loopback answers at once; this only bounds a broken case */

struct params {
	uint64_t seed;
	uint64_t cases;
};

/* ---- addresses: the generator's, made local ---- */

static bool is_v4(const uint8_t a[16])
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	return memcmp(a, mapped, sizeof(mapped)) == 0;
}

/* 10.{0,1}.x.y → 127.{10,11}.x.y and 192.168.x.y → 127.168.x.y, all local on lo (and never 127.0.0.0,
 * the loopback network's broadcast). The fd00:{0,1}::{0..7} addresses stay: the case puts them on lo. */
static void localize(uint8_t a[16])
{
	if (!is_v4(a))
		return;
	if (a[12] == 10) {
		a[12] = 127;
		a[13] = (uint8_t)(a[13] + 10);
	} else if (a[12] == 192 && a[13] == 168) {
		a[12] = 127;
	}
}

static void localize_cidrs(struct sm_authz_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		localize(l->cidrs[i].addr);
}

/* Every address of the world, the policies' CIDRs included, so that the CIDRs cover the addresses used. */
static void localize_world(struct authz_world *w)
{
	for (size_t i = 0; i < w->n_sources; i++)
		localize(w->sources[i].addr);
	for (size_t i = 0; i < w->n_destinations; i++)
		localize(w->destinations[i].addr);
	for (size_t p = 0; p < w->n_policies; p++)
		for (size_t r = 0; r < w->policies[p]->n_rules; r++)
			for (size_t c = 0; c < w->policies[p]->rules[r].n_clauses; c++) {
				const struct sm_authz_clause *clause = &w->policies[p]->rules[r].clauses[c];

				for (size_t m = 0; m < clause->n_matches; m++) {
					struct sm_authz_match *match = &clause->matches[m];

					localize_cidrs(&match->positive[SM_AUTHZ_SOURCE_IPS]);
					localize_cidrs(&match->negative[SM_AUTHZ_SOURCE_IPS]);
					localize_cidrs(&match->positive[SM_AUTHZ_DESTINATION_IPS]);
					localize_cidrs(&match->negative[SM_AUTHZ_DESTINATION_IPS]);
				}
			}
}

/* fd00:{0,1}::{0..7}, the generator's IPv6 addresses, on lo (one by one: a prefix would not make them local). */
static void add_v6_addresses(void)
{
	char command[2048];
	size_t len = 0;

	for (int net = 0; net < 2; net++)
		for (int host = 0; host < 8; host++)
			len += (size_t)snprintf(command + len, sizeof(command) - len,
						"%sip -6 addr add fd00:%d::%d/128 dev lo nodad", len ? " && " : "", net,
						host);
	CHECK(len < sizeof(command) && system(command) == 0, "adding fd00:{0,1}::{0..7} to lo failed");
}

/* dual: an IPv4 address as an IPv6 socket takes it (::ffff:a.b.c.d), for a dual-stack client. */
static socklen_t sockaddr_of(const uint8_t a[16], uint16_t port, bool dual, union sockaddr_any *out)
{
	memset(out, 0, sizeof(*out));
	if (is_v4(a) && !dual) {
		out->in.sin_family = AF_INET;
		out->in.sin_port = htons(port);
		memcpy(&out->in.sin_addr, &a[12], 4);
		return sizeof(out->in);
	}
	out->in6.sin6_family = AF_INET6;
	out->in6.sin6_port = htons(port);
	memcpy(&out->in6.sin6_addr, a, 16);
	return sizeof(out->in6);
}

static const char *addr_text(const uint8_t a[16], char *buf, size_t size)
{
	if (is_v4(a))
		return inet_ntop(AF_INET, &a[12], buf, (socklen_t)size);
	return inet_ntop(AF_INET6, a, buf, (socklen_t)size);
}

/* ---- connections: the generator's, within one family and to ports the world names ---- */

static void random_local_addr(struct authz_rng *r, bool v4, uint8_t out[16])
{
	do
		authz_random_addr(r, out);
	while (is_v4(out) != v4);
	localize(out);
}

/* The ports the world's policies name (positive or negative), and one none of them names. */
struct ports {
	uint16_t named[256];
	size_t n_named;
	uint16_t unnamed;
};

static bool port_named(const struct ports *p, uint16_t port)
{
	for (size_t i = 0; i < p->n_named; i++)
		if (p->named[i] == port)
			return true;
	return false;
}

static void add_ports(struct ports *p, const struct sm_authz_list *l)
{
	for (size_t i = 0; i < l->n && p->n_named < TEST_ARRAY_SIZE(p->named); i++)
		if (!port_named(p, l->ports[i]))
			p->named[p->n_named++] = l->ports[i];
}

static void world_ports(const struct authz_world *w, struct ports *p)
{
	memset(p, 0, sizeof(*p));
	for (size_t k = 0; k < w->n_policies; k++)
		for (size_t r = 0; r < w->policies[k]->n_rules; r++)
			for (size_t c = 0; c < w->policies[k]->rules[r].n_clauses; c++) {
				const struct sm_authz_clause *clause = &w->policies[k]->rules[r].clauses[c];

				for (size_t m = 0; m < clause->n_matches; m++) {
					add_ports(p, &clause->matches[m].positive[SM_AUTHZ_DESTINATION_PORTS]);
					add_ports(p, &clause->matches[m].negative[SM_AUTHZ_DESTINATION_PORTS]);
				}
			}
	for (p->unnamed = 4242; port_named(p, p->unnamed); p->unnamed++)
		;
}

/* Mostly from a source of the world to one of its destinations, always within one address family. */
static void random_connection(struct authz_rng *r, const struct authz_world *w, const struct ports *ports,
			      struct sm_authz_connection *conn)
{
	const struct sm_authz_source *same[64], *s;
	uint32_t n_same = 0, roll;
	bool v4;

	memset(conn, 0, sizeof(*conn));
	if (w->n_destinations && authz_chance(r, 85))
		memcpy(conn->dst, w->destinations[authz_below(r, (uint32_t)w->n_destinations)].addr, 16);
	else
		random_local_addr(r, authz_chance(r, 75), conn->dst);
	v4 = is_v4(conn->dst);
	for (size_t i = 0; i < w->n_sources && n_same < TEST_ARRAY_SIZE(same); i++)
		if (is_v4(w->sources[i].addr) == v4)
			same[n_same++] = &w->sources[i];
	if (n_same && authz_chance(r, 75))
		memcpy(conn->src, same[authz_below(r, n_same)]->addr, 16);
	else
		random_local_addr(r, v4, conn->src);
	roll = authz_below(r, 100);
	if (roll < 60)
		conn->dst_port = authz_pool_ports[authz_below(r, AUTHZ_POOL_N(authz_pool_ports))];
	else if (roll < 80 && ports->n_named)
		conn->dst_port = ports->named[authz_below(r, (uint32_t)ports->n_named)];
	else if (roll < 92)
		conn->dst_port = ports->unnamed;
	else
		conn->dst_port = (uint16_t)(1 + authz_below(r, 65535));
	s = authz_world_source(w, conn->src);
	conn->src_identity = s && !s->node ? &s->identity : NULL;
}

/* ---- listeners, opened as connections need them, one per destination address and port ---- */

struct listener {
	uint8_t addr[16];
	uint16_t port;
	int fd;
};

struct listeners {
	struct listener l[PER_WORLD];
	size_t n;
};

static int listener_for(struct listeners *ls, const uint8_t addr[16], uint16_t port)
{
	union sockaddr_any sa;
	socklen_t len;
	struct listener *l;
	char text[INET6_ADDRSTRLEN];
	int one = 1;

	for (size_t i = 0; i < ls->n; i++)
		if (ls->l[i].port == port && !memcmp(ls->l[i].addr, addr, 16))
			return ls->l[i].fd;
	CHECK(ls->n < TEST_ARRAY_SIZE(ls->l), "more listeners than connections");
	l = &ls->l[ls->n];
	len = sockaddr_of(addr, port, false, &sa);
	l->fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	CHECK(l->fd >= 0, "socket: %s", strerror(errno));
	ls->n++;
	memcpy(l->addr, addr, 16);
	l->port = port;
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	CHECK(bind(l->fd, &sa.sa, len) == 0 && listen(l->fd, 16) == 0, "listening on %s port %u: %s",
	      addr_text(addr, text, sizeof(text)), port, strerror(errno));
	return l->fd;
}

static void listeners_close(struct listeners *ls)
{
	for (size_t i = 0; i < ls->n; i++)
		close(ls->l[i].fd);
	ls->n = 0;
}

/* Closes with a reset, which leaves no TIME_WAIT behind to hold the port. */
static void close_reset(int fd)
{
	struct linger linger = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger));
	close(fd);
}

/* ---- what the kernel did ---- */

struct observed {
	bool dual;			  /* asked: the client an IPv6 socket even for IPv4 (::ffff:a.b.c.d) */
	int connect;			  /* 0: established and accepted; else -errno (-ECONNREFUSED: denied) */
	uint16_t src_port;		  /* the client's */
	bool accepted_refused;		  /* a refused connection that the server accepted all the same */
	int lookup;			  /* sm_datapath_authz_lookup's return, and its verdict */
	struct sm_authz_verdict verdict;
	struct sm_authz_event events[4]; /* the kernel's events for this connection */
	size_t n_events;
};

static int keep_event(void *ctx, const struct sm_authz_event *event)
{
	struct observed *o = ctx;

	if (o->n_events < TEST_ARRAY_SIZE(o->events))
		o->events[o->n_events] = *event;
	o->n_events++;
	return 0;
}

/* A non-blocking connect from conn's source (port chosen by the kernel), accepted when established; o->dual:
 * from an IPv6 socket, the IPv4 addresses written ::ffff:a.b.c.d (the packets are IPv4 all the same). */
static void try_connect(const struct sm_authz_connection *conn, int listener, struct observed *o)
{
	union sockaddr_any from, to, local;
	socklen_t from_len = sockaddr_of(conn->src, 0, o->dual, &from);
	socklen_t to_len = sockaddr_of(conn->dst, conn->dst_port, o->dual, &to);
	socklen_t local_len = sizeof(local), err_len = sizeof(int);
	int fd = socket(to.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err = 0, server;
	struct pollfd out = { .fd = fd, .events = POLLOUT }, in = { .fd = listener, .events = POLLIN };
	char text[INET6_ADDRSTRLEN];

	CHECK(fd >= 0, "socket: %s", strerror(errno));
	CHECK(bind(fd, &from.sa, from_len) == 0 && getsockname(fd, &local.sa, &local_len) == 0, "binding to %s: %s",
	      addr_text(conn->src, text, sizeof(text)), strerror(errno));
	o->src_port = ntohs(local.sa.sa_family == AF_INET ? local.in.sin_port : local.in6.sin6_port);
	if (connect(fd, &to.sa, to_len)) {
		err = errno;
		if (err == EINPROGRESS) {
			CHECK(poll(&out, 1, IO_TIMEOUT_MS) == 1, "a connect still in progress after %d ms",
			      IO_TIMEOUT_MS);
			CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) == 0, "SO_ERROR: %s",
			      strerror(errno));
		}
	}
	o->connect = -err;
	if (!err) {
		server = poll(&in, 1, IO_TIMEOUT_MS) == 1 ? accept4(listener, NULL, NULL, SOCK_CLOEXEC) : -1;
		if (server < 0)
			o->connect = -ETIMEDOUT; /* established, never accepted: reported as a mismatch */
		close_reset(fd);
		if (server >= 0)
			close(server);
		return;
	}
	close(fd);
	server = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	o->accepted_refused = server >= 0;
	if (server >= 0)
		close(server);
}

/* ---- the comparison ---- */

struct expected {
	int rc; /* authz_world_expect: -ENOENT node, 0 unguarded, 1 checked (decision) */
	struct sm_authz_decision decision;
	bool allowed;
	uint64_t policy, dry_run_policy;
};

static void expect(const struct authz_world *w, const struct sm_authz_connection *conn, struct expected *e)
{
	memset(e, 0, sizeof(*e));
	e->rc = authz_world_expect(w, conn, &e->decision);
	e->allowed = e->rc != 1 || e->decision.action == SM_AUTHZ_ALLOW;
	if (e->rc == 1) {
		e->policy = e->decision.policy ? e->decision.policy->hash : 0;
		e->dry_run_policy = e->decision.dry_run_policy ? e->decision.dry_run_policy->hash : 0;
	}
}

static bool event_is(const struct sm_authz_connection *conn, const struct observed *o, uint8_t kind, uint64_t policy,
		     uint8_t reason)
{
	const struct sm_authz_event *ev = &o->events[0];

	return o->n_events == 1 && ev->kind == kind && ev->policy == policy && ev->reason == reason &&
	       !memcmp(ev->src_addr, conn->src, 16) && !memcmp(ev->dst_addr, conn->dst, 16) &&
	       ntohs(ev->src_port) == o->src_port && ntohs(ev->dst_port) == conn->dst_port;
}

/* NULL when the kernel agrees with the evaluator, else the first disagreement. */
static const char *disagreement(const struct sm_authz_connection *conn, const struct expected *e,
				const struct observed *o)
{
	const struct sm_authz_verdict *v = &o->verdict;

	if (o->connect != 0 && o->connect != -ECONNREFUSED)
		return "the connect neither established nor refused";
	if (o->accepted_refused)
		return "the server accepted a refused connection";
	if ((o->connect == 0) != e->allowed)
		return e->allowed ? "the kernel refused, the evaluator allows"
				  : "the kernel allowed, the evaluator denies";
	if (o->lookup != e->rc)
		return "sm_datapath_authz_lookup's outcome (node, unguarded, checked) differs";
	if (e->rc == 1 && (v->action != e->decision.action || v->reason != e->decision.reason ||
			   v->policy != e->policy || v->dry_run_action != e->decision.dry_run_action ||
			   v->dry_run_reason != e->decision.dry_run_reason || v->dry_run_policy != e->dry_run_policy))
		return "sm_datapath_authz_lookup's verdict differs";
	if (e->rc == 1 && e->decision.action == SM_AUTHZ_DENY)
		return event_is(conn, o, SM_AUTHZ_EVENT_DENIED, e->policy, e->decision.reason)
			       ? NULL
			       : "the kernel's events do not name the evaluator's deny";
	if (e->rc == 1 && e->decision.dry_run_action == SM_AUTHZ_DENY)
		return event_is(conn, o, SM_AUTHZ_EVENT_DRY_RUN_DENIED, e->dry_run_policy, e->decision.dry_run_reason)
			       ? NULL
			       : "the kernel's events do not name the evaluator's dry-run deny";
	return o->n_events ? "the kernel sent an event for a connection it allowed outright" : NULL;
}

/* ---- a compact dump of what a mismatch needs ---- */

static const char *const field_names[SM_AUTHZ_FIELD_COUNT] = {
	"source_ips", "destination_ips", "destination_ports", "principals", "namespaces", "service_accounts",
};

static void dump_list(enum sm_authz_field f, const struct sm_authz_list *l)
{
	char text[INET6_ADDRSTRLEN];

	for (size_t i = 0; i < l->n; i++) {
		const char *sep = i ? "," : "";

		switch (f) {
		case SM_AUTHZ_SOURCE_IPS:
		case SM_AUTHZ_DESTINATION_IPS:
			if (is_v4(l->cidrs[i].addr) && l->cidrs[i].prefix_len >= 96)
				fprintf(stderr, "%s%s/%u", sep, addr_text(l->cidrs[i].addr, text, sizeof(text)),
					l->cidrs[i].prefix_len - 96);
			else
				fprintf(stderr, "%s%s/%u(v6)", sep,
					inet_ntop(AF_INET6, l->cidrs[i].addr, text, sizeof(text)),
					l->cidrs[i].prefix_len);
			break;
		case SM_AUTHZ_DESTINATION_PORTS:
			fprintf(stderr, "%s%u", sep, l->ports[i]);
			break;
		case SM_AUTHZ_PRINCIPALS:
		case SM_AUTHZ_NAMESPACES:
			fprintf(stderr, l->strings[i].kind == SM_AUTHZ_EXACT	? "%s\"%s\""
					: l->strings[i].kind == SM_AUTHZ_PREFIX ? "%s\"%s\"*"
					: l->strings[i].kind == SM_AUTHZ_SUFFIX ? "%s*\"%s\""
								     : "%s*%s",
				sep, l->strings[i].value);
			break;
		default:
			fprintf(stderr, "%s%s/%s", sep, l->accounts[i].namespace, l->accounts[i].name);
			break;
		}
	}
}

/* "{field=a,b not_field=c}": the match's lists ({} never matches). */
static void dump_match(const struct sm_authz_match *match)
{
	const char *sep = "";

	fprintf(stderr, "{");
	for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++)
		for (int neg = 0; neg < 2; neg++) {
			const struct sm_authz_list *l = neg ? &match->negative[f] : &match->positive[f];

			if (!l->n)
				continue;
			fprintf(stderr, "%s%s%s=", sep, neg ? "not_" : "", field_names[f]);
			dump_list(f, l);
			sep = " ";
		}
	fprintf(stderr, "}");
}

/* "key (hash) ACTION [dry-run]: rule 0: [{match} | {match}] & [...]; rule 1: ..." ([] always matches). */
static void dump_policy(const struct sm_authz_policy *p)
{
	fprintf(stderr, "#     %s (%016llx) %s%s:%s", p->key, (unsigned long long)p->hash,
		p->action == SM_AUTHZ_DENY ? "DENY" : "ALLOW", p->dry_run ? " dry-run" : "",
		p->n_rules ? "" : " no rules");
	for (size_t r = 0; r < p->n_rules; r++) {
		fprintf(stderr, "%s rule %zu:%s", r ? ";" : "", r, p->rules[r].n_clauses ? "" : " no clauses");
		for (size_t c = 0; c < p->rules[r].n_clauses; c++) {
			const struct sm_authz_clause *clause = &p->rules[r].clauses[c];

			fprintf(stderr, "%s[", c ? " & " : " ");
			for (size_t m = 0; m < clause->n_matches; m++) {
				fprintf(stderr, "%s", m ? " | " : "");
				dump_match(&clause->matches[m]);
			}
			fprintf(stderr, "]");
		}
	}
	fprintf(stderr, "\n");
}

static const char *principal_text(const struct sm_authz_identity *id, char *buf, size_t size)
{
	if (!id)
		return "no identity";
	if (sm_authz_principal(id, buf, size))
		return "(too long)";
	return buf;
}

static void dump_verdict(const char *who, const struct sm_authz_verdict *v)
{
	fprintf(stderr, "#   %s: action %u reason %u policy %016llx, dry-run action %u reason %u policy %016llx\n", who,
		v->action, v->reason, (unsigned long long)v->policy, v->dry_run_action, v->dry_run_reason,
		(unsigned long long)v->dry_run_policy);
}

static void dump_mismatch(const struct params *p, uint64_t world, uint64_t index, const struct authz_world *w,
			  const struct sm_authz_connection *conn, const struct expected *e, const struct observed *o,
			  const char *why)
{
	const struct sm_authz_destination *d = authz_world_destination(w, conn->dst);
	const struct sm_authz_source *s = authz_world_source(w, conn->src);
	struct sm_authz_verdict want = {
		.policy = e->policy, .dry_run_policy = e->dry_run_policy, .action = e->decision.action,
		.reason = e->decision.reason, .dry_run_action = e->decision.dry_run_action,
		.dry_run_reason = e->decision.dry_run_reason,
	};
	char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], principal[256];

	fprintf(stderr, "# MISMATCH (AUTHZ_DIFF_SEED=%llu, world %llu, connection %llu of the run): %s\n",
		(unsigned long long)p->seed, (unsigned long long)world, (unsigned long long)index, why);
	fprintf(stderr, "#   %s port %u (%s) -> %s port %u%s\n", addr_text(conn->src, src, sizeof(src)), o->src_port,
		s && s->node ? "the node" : principal_text(conn->src_identity, principal, sizeof(principal)),
		addr_text(conn->dst, dst, sizeof(dst)), conn->dst_port, o->dual ? ", from a dual-stack socket" : "");
	fprintf(stderr, "#   evaluator: %s\n", e->rc < 0 ? "the node: exempt" : e->rc ? "checked" : "unguarded");
	if (e->rc == 1)
		dump_verdict("evaluator", &want);
	fprintf(stderr, "#   kernel: connect %s, %zu event(s)\n", o->connect ? strerror(-o->connect) : "established",
		o->n_events);
	for (size_t i = 0; i < o->n_events && i < TEST_ARRAY_SIZE(o->events); i++)
		fprintf(stderr, "#     event kind %u policy %016llx reason %u src port %u dst port %u\n",
			o->events[i].kind, (unsigned long long)o->events[i].policy, o->events[i].reason,
			ntohs(o->events[i].src_port), ntohs(o->events[i].dst_port));
	fprintf(stderr, "#   sm_datapath_authz_lookup: %d\n", o->lookup);
	if (o->lookup == 1)
		dump_verdict("lookup", &o->verdict);
	fprintf(stderr, "#   sources:");
	for (size_t i = 0; i < w->n_sources; i++)
		fprintf(stderr, " %s=%s", addr_text(w->sources[i].addr, src, sizeof(src)),
			w->sources[i].node ? "node"
					   : principal_text(&w->sources[i].identity, principal, sizeof(principal)));
	fprintf(stderr, "\n#   destinations:");
	for (size_t i = 0; i < w->n_destinations; i++) {
		fprintf(stderr, " %s=[", addr_text(w->destinations[i].addr, dst, sizeof(dst)));
		for (size_t k = 0; k < w->destinations[i].n_policies; k++)
			fprintf(stderr, "%s%s", k ? "," : "", w->destinations[i].policies[k]->key);
		fprintf(stderr, "]");
	}
	fprintf(stderr, "\n#   the destination's policies, in order:\n");
	for (size_t k = 0; d && k < d->n_policies; k++)
		dump_policy(d->policies[k]);
}

/* ---- the case ---- */

struct tally {
	uint64_t worlds, done, exempt, unguarded, allowed, denied, dry_run_denied, v6, dual;
};

static uint64_t guard_here(struct env *env)
{
	char err[256];
	uint64_t cookie;
	int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

	CHECK(fd >= 0, "opening /proc/self/ns/net: %s", strerror(errno));
	CHECK(sm_netns_cookie_of(fd, &cookie) == 0, "reading the namespace's cookie");
	CHECK(sm_datapath_guard_netns(env->dp, fd, cookie, err, sizeof(err)) == 0, "guarding the namespace: %s", err);
	close(fd);
	return cookie;
}

static void compile_and_write(struct env *env, const struct authz_world *w)
{
	struct sm_authz_compile_input in = { .destinations = w->destinations, .n_destinations = w->n_destinations,
					     .sources = w->sources, .n_sources = w->n_sources };
	struct sm_authz_tables *t = NULL;
	uint32_t generation = 0;
	char err[256] = "";
	int ret;

	CHECK(sm_datapath_authz_generation(env->dp, &generation) == 0, "reading the generation in force");
	ret = sm_authz_compile(&in, generation + 1, &t, err, sizeof(err));
	CHECK(ret == 0, "compiling: %s (%d)", err, ret);
	ret = sm_datapath_authz_write(env->dp, t, err, sizeof(err));
	sm_authz_tables_free(t);
	CHECK(ret == 0, "writing generation %u: %s", generation + 1, err);
}

/* One world: compiled, written, then n connections compared. */
static void one_world(struct env *env, const struct params *p, struct authz_rng *rng, struct sm_authz_events *events,
		      struct observed *o, uint64_t n, struct tally *t)
{
	struct authz_world w;
	struct listeners ls = { .n = 0 };
	struct ports ports;

	authz_random_world(rng, &w);
	localize_world(&w);
	world_ports(&w, &ports);
	compile_and_write(env, &w);
	for (uint64_t i = 0; i < n; i++) {
		struct sm_authz_connection conn;
		struct expected e;
		const char *why;
		int listener;

		random_connection(rng, &w, &ports, &conn);
		expect(&w, &conn, &e);
		listener = listener_for(&ls, conn.dst, conn.dst_port);
		memset(o, 0, sizeof(*o));
		o->dual = is_v4(conn.dst) && authz_chance(rng, 20);
		try_connect(&conn, listener, o);
		CHECK(sm_authz_events_poll(events, 0) >= 0, "reading the kernel's events");
		o->lookup = sm_datapath_authz_lookup(env->dp, conn.src, conn.dst, conn.dst_port, &o->verdict);
		why = disagreement(&conn, &e, o);
		if (why) {
			dump_mismatch(p, t->worlds, t->done, &w, &conn, &e, o, why);
			CHECK(0, "the kernel disagrees with the evaluator (AUTHZ_DIFF_SEED=%llu)",
			      (unsigned long long)p->seed);
		}
		t->done++;
		t->v6 += !is_v4(conn.dst);
		t->dual += o->dual;
		t->exempt += e.rc < 0;
		t->unguarded += e.rc == 0;
		t->allowed += e.rc == 1 && e.allowed;
		t->denied += !e.allowed;
		t->dry_run_denied += e.rc == 1 && e.allowed && e.decision.dry_run_action == SM_AUTHZ_DENY;
	}
	listeners_close(&ls);
	authz_world_free(&w);
	t->worlds++;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void differential(struct env *env, const void *arg)
{
	const struct params *p = arg;
	struct authz_rng rng = { p->seed };
	struct observed o;
	struct sm_authz_events *events = NULL;
	struct tally t = { 0 };
	double start = now_s();

	alarm(60 + (unsigned)(p->cases / 20)); /* bounded, whatever the count asked for */
	add_v6_addresses();
	guard_here(env);
	CHECK(sm_datapath_authz_events_open(env->dp, keep_event, &o, &events) == 0, "opening the events");
	while (t.done < p->cases) {
		uint64_t n = p->cases - t.done < PER_WORLD ? p->cases - t.done : PER_WORLD;

		one_world(env, p, &rng, events, &o, n, &t);
	}
	sm_authz_events_close(events);
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_DENIED) == t.denied &&
		      env_counter(env, SM_COUNTER_AUTHZ_ALLOWED) == t.allowed &&
		      env_counter(env, SM_COUNTER_AUTHZ_EXEMPT) == t.exempt &&
		      env_counter(env, SM_COUNTER_AUTHZ_UNGUARDED) == t.unguarded,
	      "the kernel's counters (denied %llu allowed %llu exempt %llu unguarded %llu) are not the connections'",
	      (unsigned long long)env_counter(env, SM_COUNTER_AUTHZ_DENIED),
	      (unsigned long long)env_counter(env, SM_COUNTER_AUTHZ_ALLOWED),
	      (unsigned long long)env_counter(env, SM_COUNTER_AUTHZ_EXEMPT),
	      (unsigned long long)env_counter(env, SM_COUNTER_AUTHZ_UNGUARDED));
	CHECK(env_counter(env, SM_COUNTER_ERRORS) == 0 && env_counter(env, SM_COUNTER_AUTHZ_EVENTS_LOST) == 0,
	      "the kernel counted errors or lost events");
	printf("# %llu connections agree over %llu worlds in %.1f s (AUTHZ_DIFF_SEED=%llu): %llu denied, "
	       "%llu allowed by policy (%llu of them denied by a dry-run policy), %llu unguarded, "
	       "%llu from the node; %llu over IPv6, %llu from dual-stack sockets\n",
	       (unsigned long long)t.done, (unsigned long long)t.worlds, now_s() - start, (unsigned long long)p->seed,
	       (unsigned long long)t.denied, (unsigned long long)t.allowed, (unsigned long long)t.dry_run_denied,
	       (unsigned long long)t.unguarded, (unsigned long long)t.exempt, (unsigned long long)t.v6,
	       (unsigned long long)t.dual);
	fflush(stdout);
}

static uint64_t env_number(const char *name, uint64_t fallback)
{
	const char *text = getenv(name);

	return text && *text ? strtoull(text, NULL, 0) : fallback;
}

static void test_differential(void **state)
{
	struct timespec ts;
	struct params p;

	(void)state;
	clock_gettime(CLOCK_REALTIME, &ts);
	p.seed = env_number("AUTHZ_DIFF_SEED", (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec);
	p.cases = env_number("AUTHZ_DIFF_CASES", DEFAULT_CASES);
	printf("# AUTHZ_DIFF_SEED=%llu AUTHZ_DIFF_CASES=%llu\n", (unsigned long long)p.seed,
	       (unsigned long long)p.cases);
	fflush(stdout);
	assert_int_equal(run_case(differential, &p), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_differential),
	};

	return cmocka_run_group_tests_name("authz-diff", tests, NULL, NULL);
}
