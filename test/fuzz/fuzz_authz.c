/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy compiler against the reference evaluator. The input is a stream of choices (fuzz_input.h):
 * up to 4 byte strings, each decoded as an istio.security.Authorization and parsed (what fails either
 * is skipped); the policies that parse are compiled for three destinations (all of them in order, all
 * in reverse order, every other one) and a fixed set of workload and node sources. Then every
 * connection from a pool of source addresses (the sources', addresses of nobody, and addresses taken
 * from and next to the policies' CIDRs) to each destination, on pool ports and the policies' ports,
 * must get from sm_authz_tables_lookup what sm_authz_evaluate gives. Then three sources change identity
 * (one of them new, one of them maybe gone), as pods come and go elsewhere, and the tables updated address
 * by address (sm_authz_update_idents) must agree the same way when the update is taken. Then, as pods of
 * this node come and go, the second destination goes and a new one comes with one of the three policy
 * lists (sm_authz_update_destinations): the same again, the one gone unguarded. A mismatch aborts: that is
 * the oracle. Compile may refuse a world that does not fit its tables (-E2BIG), and an update a pair of a
 * new class or a destination of a new set (-ESRCH); neither may crash or leak.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz_random.h"
#include "fuzz_input.h"
#include "proto/proto.h"

#define MAX_POLICIES 4
#define MAX_ADDRS 48
#define MAX_PORTS 24

static void v4(uint8_t out[16], uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	memset(out, 0, 16);
	out[10] = out[11] = 0xff;
	out[12] = a;
	out[13] = b;
	out[14] = c;
	out[15] = d;
}

static void add_addr(uint8_t (*addrs)[16], size_t *n, const uint8_t addr[16])
{
	if (*n < MAX_ADDRS)
		memcpy(addrs[(*n)++], addr, 16);
}

static void add_port(uint16_t *ports, size_t *n, uint16_t port)
{
	if (*n < MAX_PORTS && port)
		ports[(*n)++] = port;
}

/* From each CIDR of the policies: its address, the last address it covers, the first one past it. */
static void from_list(const struct sm_authz_list *l, uint8_t (*addrs)[16], size_t *n)
{
	for (size_t i = 0; i < l->n && i < 4; i++) {
		uint8_t a[16];
		unsigned len = l->cidrs[i].prefix_len > 128 ? 128 : l->cidrs[i].prefix_len;

		add_addr(addrs, n, l->cidrs[i].addr);
		memcpy(a, l->cidrs[i].addr, 16);
		for (unsigned b = len; b < 128; b++)
			a[b / 8] |= (uint8_t)(0x80 >> (b % 8));
		add_addr(addrs, n, a);
		if (len) {
			a[(len - 1) / 8] ^= (uint8_t)(0x80 >> ((len - 1) % 8));
			add_addr(addrs, n, a);
		}
	}
}

static void harvest(const struct sm_authz_policy *p, uint8_t (*addrs)[16], size_t *n_addrs, uint16_t *ports,
		    size_t *n_ports)
{
	for (size_t r = 0; r < p->n_rules; r++)
		for (size_t k = 0; k < p->rules[r].n_clauses; k++)
			for (size_t m = 0; m < p->rules[r].clauses[k].n_matches; m++) {
				const struct sm_authz_match *mt = &p->rules[r].clauses[k].matches[m];

				for (int sign = 0; sign < 2; sign++) {
					const struct sm_authz_list *lists = sign ? mt->negative : mt->positive;

					from_list(&lists[SM_AUTHZ_SOURCE_IPS], addrs, n_addrs);
					for (size_t i = 0; i < lists[SM_AUTHZ_DESTINATION_PORTS].n && i < 4; i++)
						add_port(ports, n_ports, lists[SM_AUTHZ_DESTINATION_PORTS].ports[i]);
				}
			}
}

static struct sm_authz_policy *next_policy(struct fuzz_input *in)
{
	ProtobufCMessage *msg = NULL;
	struct sm_authz_policy *policy = NULL;
	char reason[256];
	size_t len;
	const uint8_t *bytes = input_bytes(in, 4096, &len);

	if (sm_pb_decode(&istio__security__authorization__descriptor, bytes, len, &msg, reason, sizeof(reason)))
		return NULL;
	if (sm_authz_policy_parse((const Istio__Security__Authorization *)msg, &policy, reason, sizeof(reason)))
		policy = NULL;
	protobuf_c_message_free_unpacked(msg, NULL);
	return policy;
}

/* Every connection from the pool's addresses to each destination (and one that is none), on the pool's ports:
 * the tables' lookup must be the evaluator's decision for the world. */
static void agree_everywhere(const struct authz_world *w, const struct sm_authz_tables *t, uint8_t (*addrs)[16],
			     size_t n_addrs, const struct sm_authz_destination *dests, const uint8_t other[16],
			     const uint16_t *ports, size_t n_ports, const char *which)
{
	char why[512];

	for (size_t s = 0; s < n_addrs; s++)
		for (size_t d = 0; d <= 3; d++)
			for (size_t p = 0; p < n_ports; p++) {
				struct sm_authz_connection conn = { .dst_port = ports[p] };
				const struct sm_authz_source *src = authz_world_source(w, addrs[s]);

				memcpy(conn.src, addrs[s], 16);
				memcpy(conn.dst, d < 3 ? dests[d].addr : other, 16);
				conn.src_identity = src && !src->node ? &src->identity : NULL;
				if (!authz_tables_agree(w, t, &conn, why, sizeof(why))) {
					fprintf(stderr, "fuzz_authz: %s tables, source %zu, destination %zu, port %u: %s\n",
						which, s, d, ports[p], why);
					abort();
				}
			}
}

static const char *const trust_domains[] = { "cluster.local", "other.td" };
static const char *const namespaces[] = { "ns1", "ns2", "ns3", "ns9", "" };
static const char *const accounts[] = { "sa1", "sa2", "default", "new" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size, 0 };
	struct sm_authz_policy *policies[MAX_POLICIES];
	const struct sm_authz_policy *all[MAX_POLICIES], *reversed[MAX_POLICIES], *every_other[MAX_POLICIES];
	struct sm_authz_destination dests[3];
	struct sm_authz_source sources[6] = {
		{ .identity = { "cluster.local", "ns1", "sa1" } }, { .identity = { "cluster.local", "ns2", "default" } },
		{ .identity = { "other.td", "ns1", "sa1" } },	   { .identity = { "cluster.local", "ns1", "sa2" } },
		{ .identity = { "cluster.local", "ns1", "sa1" }, .node = true },
		{ .identity = { "cluster.local", "ns3", "sa3" } }, /* listed twice: the first wins */
	};
	struct authz_world w = { .sources = sources, .n_sources = 6, .destinations = dests, .n_destinations = 3 };
	struct sm_authz_compile_input input = { .destinations = dests, .n_destinations = 3, .sources = sources,
						.n_sources = 6 };
	uint8_t addrs[MAX_ADDRS][16], other[16];
	uint16_t ports[MAX_PORTS] = { 80, 443, 1, 65535 };
	size_t n = 0, n_odd = 0, n_addrs = 0, n_ports = 4;
	unsigned count = 1 + input_below(&in, MAX_POLICIES);
	struct sm_authz_tables *t = NULL, *updated = NULL;
	char reason[256];

	for (unsigned i = 0; i < count; i++)
		if ((policies[n] = next_policy(&in)))
			n++;
	for (size_t i = 0; i < n; i++) {
		all[i] = policies[i];
		reversed[n - 1 - i] = policies[i];
		if (i % 2 == 0)
			every_other[n_odd++] = policies[i];
	}
	dests[0] = (struct sm_authz_destination){ .policies = all, .n_policies = n };
	dests[1] = (struct sm_authz_destination){ .policies = reversed, .n_policies = n };
	dests[2] = (struct sm_authz_destination){ .policies = every_other, .n_policies = n_odd };
	v4(dests[0].addr, 10, 0, 0, 100);
	v4(dests[1].addr, 10, 0, 0, 101);
	memset(dests[2].addr, 0, 16);
	dests[2].addr[0] = 0xfd;
	dests[2].addr[15] = 0x64;
	v4(sources[0].addr, 10, 0, 0, 1);
	v4(sources[1].addr, 10, 0, 1, 1);
	v4(sources[2].addr, 10, 1, 0, 1);
	memset(sources[3].addr, 0, 16);
	sources[3].addr[0] = 0xfd;
	sources[3].addr[15] = 1;
	v4(sources[4].addr, 10, 0, 0, 254);
	memcpy(sources[5].addr, sources[0].addr, 16);
	for (size_t i = 0; i < 5; i++)
		add_addr(addrs, &n_addrs, sources[i].addr);
	v4(other, 10, 0, 0, 2); /* nobody's */
	add_addr(addrs, &n_addrs, other);
	v4(other, 192, 168, 0, 1);
	add_addr(addrs, &n_addrs, other);
	for (size_t i = 0; i < n; i++)
		harvest(policies[i], addrs, &n_addrs, ports, &n_ports);

	if (sm_authz_compile(&input, 1 + input_below(&in, 3), &t, reason, sizeof(reason))) {
		if (!reason[0])
			abort(); /* a refusal must say why */
		goto out;
	}
	agree_everywhere(&w, t, addrs, n_addrs, dests, other, ports, n_ports, "compiled");

	/* then pods come and go elsewhere: the tables updated address by address (a pair never evaluated given
	 * the class its vector has, or refused for a new class) must agree with the evaluator as well */
	struct sm_authz_source after[7], set[3];
	uint8_t unset[1][16];
	size_t n_after = 0, n_unset = input_below(&in, 2);
	memcpy(unset[0], sources[2].addr, 16);
	for (size_t i = 0; i < 6; i++)
		if (!(n_unset && i == 2))
			after[n_after++] = sources[i];
	set[0] = sources[1];
	set[1] = sources[3];
	set[2] = (struct sm_authz_source){ .identity = sources[0].identity };
	v4(set[2].addr, 10, 0, 0, 3); /* a new address */
	for (size_t i = 0; i < 3; i++) {
		set[i].identity = (struct sm_authz_identity){ INPUT_PICK(&in, trust_domains), INPUT_PICK(&in, namespaces),
							      INPUT_PICK(&in, accounts) };
		add_addr(addrs, &n_addrs, set[i].addr);
	}
	after[1].identity = set[0].identity; /* sources[1] and [3] keep their places, [2] perhaps gone */
	after[n_unset ? 2 : 3].identity = set[1].identity;
	after[n_after++] = set[2];
	struct authz_world changed = w;
	changed.sources = after;
	changed.n_sources = n_after;
	int err = sm_authz_update_idents(t, set, 3, (const uint8_t(*)[16])unset, n_unset, &updated, reason,
					 sizeof(reason));
	if (err && err != -ESRCH)
		abort();
	if (err)
		goto out;
	agree_everywhere(&changed, updated, addrs, n_addrs, dests, other, ports, n_ports, "updated");

	const struct sm_authz_destination *lists[] = { &dests[0], &dests[1], &dests[2] };
	struct sm_authz_destination moved[3] = { dests[0], dests[2], *INPUT_PICK(&in, lists) };
	v4(moved[2].addr, 10, 0, 0, 102);
	add_addr(addrs, &n_addrs, moved[2].addr);
	changed.destinations = moved;
	err = sm_authz_update_destinations(updated, &moved[2], 1, (const uint8_t(*)[16])dests[1].addr, 1, reason,
					   sizeof(reason));
	if (err && err != -ESRCH)
		abort();
	if (!err)
		agree_everywhere(&changed, updated, addrs, n_addrs, moved, dests[1].addr, ports, n_ports,
				 "updated of destinations");
out:
	sm_authz_tables_free(updated);
	sm_authz_tables_free(t);
	for (size_t i = 0; i < n; i++)
		sm_authz_policy_free(policies[i]);
	return 0;
}
