/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L4 authorization in the kernel: hand-built tables (no compiler) written with sm_datapath_authz_write,
 * the sk_lookup check on real TCP connections over 127.0.0.0/8 and fd00:10::/64 addresses inside the
 * case's own network namespace (test/datapath_env.h), the reaper, counters, events, restarts and
 * cleanup. Each case runs in a forked child; the parent removes what it leaves.
 */
#include <pthread.h>
#include <time.h>

#include <bpf/bpf.h>

#include "datapath_env.h"
#include "helpers.h"
#include "netns/netns.h"

#define ID_A 0x1111111111111111ull /* the identity of 127.0.0.2 and fd00:10::2 */
#define ID_B 0x2222222222222222ull /* of 127.0.0.3 */
#define ID_C 0x3333333333333333ull /* new with idents written alone, in A's class */
#define P_ALLOW 0xa110ull	   /* policy hashes */
#define P_DENY 0xde11ull
#define P_CIDR 0xc1d0ull
#define P_PORT 0x9090ull
#define P_DRY 0xd41ull
#define P_ALLOW6 0xa116ull
#define P_NONE 0ull		   /* "allow policies exist, but none allowed" */

#define MAX_ENTRIES 16

/* Tables of one generation, built by hand. */
struct tables {
	struct sm_authz_tables t;
	struct sm_authz_dest_key dest_keys[MAX_ENTRIES];
	struct sm_authz_dest_value dest_values[MAX_ENTRIES];
	struct sm_authz_cidr_key cidr_keys[MAX_ENTRIES];
	struct sm_authz_cidr_value cidr_values[MAX_ENTRIES];
	struct sm_authz_source_key source_keys[MAX_ENTRIES];
	struct sm_authz_source_value source_values[MAX_ENTRIES];
	struct sm_authz_verdict_key verdict_keys[MAX_ENTRIES];
	struct sm_authz_verdict verdicts[MAX_ENTRIES];
	struct sm_frontend_key ident_keys[MAX_ENTRIES];
	struct sm_authz_ident_value ident_values[MAX_ENTRIES];
};

static void tables_init(struct tables *b, uint32_t generation)
{
	memset(b, 0, sizeof(*b));
	b->t = (struct sm_authz_tables){
		.generation = generation,
		.dest_keys = b->dest_keys, .dest_values = b->dest_values,
		.cidr_keys = b->cidr_keys, .cidr_values = b->cidr_values,
		.source_keys = b->source_keys, .source_values = b->source_values,
		.verdict_keys = b->verdict_keys, .verdicts = b->verdicts,
		.ident_keys = b->ident_keys, .ident_values = b->ident_values,
	};
}

/* An address as the maps hold it: IPv4 mapped into IPv6. */
static void addr16(const char *text, uint8_t out[16])
{
	struct in_addr v4;

	memset(out, 0, 16);
	if (inet_pton(AF_INET, text, &v4) == 1) {
		out[10] = out[11] = 0xff;
		memcpy(&out[12], &v4, 4);
		return;
	}
	CHECK(inet_pton(AF_INET6, text, out) == 1, "bad address %s", text);
}

static void add_dest(struct tables *b, const char *addr, uint32_t set)
{
	size_t i = b->t.n_dests++;

	b->dest_keys[i].generation = b->t.generation;
	addr16(addr, b->dest_keys[i].addr);
	b->dest_values[i].dest_set = set;
}

/* prefix: of the address as written (an IPv4 /25 is 96 + 25 bits of the mapped address). */
static void add_cidr(struct tables *b, const char *addr, uint32_t prefix, uint32_t cidr_class)
{
	size_t i = b->t.n_cidrs++;

	b->cidr_keys[i].prefixlen = SM_AUTHZ_CIDR_PREFIX_BASE + (strchr(addr, ':') ? prefix : 96 + prefix);
	b->cidr_keys[i].generation = htonl(b->t.generation);
	addr16(addr, b->cidr_keys[i].addr);
	b->cidr_values[i].cidr_class = cidr_class;
}

static void add_source(struct tables *b, uint64_t identity, uint32_t cidr_class, uint32_t source_class)
{
	size_t i = b->t.n_sources++;

	b->source_keys[i] = (struct sm_authz_source_key){ b->t.generation, cidr_class, identity };
	b->source_values[i].source_class = source_class;
}

static void add_verdict(struct tables *b, uint32_t set, uint32_t source_class, uint16_t port, uint8_t action,
			uint64_t policy, uint8_t reason)
{
	size_t i = b->t.n_verdicts++;

	b->verdict_keys[i] = (struct sm_authz_verdict_key){ b->t.generation, set, source_class, htons(port), 0 };
	b->verdicts[i] = (struct sm_authz_verdict){
		.policy = policy, .action = action, .reason = reason, .dry_run_action = action, .dry_run_reason = reason,
	};
}

static void add_ident(struct tables *b, const char *addr, uint64_t identity)
{
	size_t i = b->t.n_idents++;

	addr16(addr, b->ident_keys[i].addr);
	b->ident_values[i].identity = identity;
}

static void write_tables(struct env *env, const struct tables *b)
{
	char err[256];
	int ret = sm_datapath_authz_write(env->dp, &b->t, err, sizeof(err));

	CHECK(ret == 0, "writing generation %u: %s", b->t.generation, err);
}

/*
 * Generation g of the main tables: 127.0.0.10 (set 1) and fd00:10::1 (set 2) are guarded, 127.0.0.20 is
 * not. Identity A is source class 1, 127.0.0.128/25 (no identity) class 2, anything else class 0.
 */
static void main_tables(struct tables *b, uint32_t generation)
{
	tables_init(b, generation);
	add_ident(b, "127.0.0.2", ID_A);
	add_ident(b, "127.0.0.3", ID_B);
	add_ident(b, "127.0.0.4", SM_AUTHZ_IDENTITY_NODE);
	add_ident(b, "fd00:10::2", ID_A);
	add_dest(b, "127.0.0.10", 1);
	add_dest(b, "fd00:10::1", 2);
	add_cidr(b, "127.0.0.128", 25, 1);
	add_source(b, ID_A, 0, 1);
	add_source(b, SM_AUTHZ_IDENTITY_NONE, 1, 2);
	add_verdict(b, 1, 0, 0, SM_AUTHZ_DENY, P_NONE, SM_AUTHZ_NO_ALLOW_MATCHED);
	add_verdict(b, 1, 1, 8080, SM_AUTHZ_ALLOW, P_ALLOW, SM_AUTHZ_ALLOW_MATCHED);
	add_verdict(b, 1, 1, 0, SM_AUTHZ_DENY, P_DENY, SM_AUTHZ_DENY_MATCHED);
	add_verdict(b, 1, 2, 0, SM_AUTHZ_ALLOW, P_CIDR, SM_AUTHZ_ALLOW_MATCHED);
	add_verdict(b, 1, 0, 9090, SM_AUTHZ_ALLOW, P_PORT, SM_AUTHZ_ALLOW_MATCHED);
	b->verdicts[b->t.n_verdicts - 1].dry_run_policy = P_DRY;
	b->verdicts[b->t.n_verdicts - 1].dry_run_action = SM_AUTHZ_DENY;
	b->verdicts[b->t.n_verdicts - 1].dry_run_reason = SM_AUTHZ_DENY_MATCHED;
	add_verdict(b, 2, 0, 0, SM_AUTHZ_DENY, P_NONE, SM_AUTHZ_NO_ALLOW_MATCHED);
	add_verdict(b, 2, 1, 0, SM_AUTHZ_ALLOW, P_ALLOW6, SM_AUTHZ_ALLOW_MATCHED);
}

/* ---- the namespace ---- */

static int own_netns(uint64_t *cookie)
{
	int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

	CHECK(fd >= 0, "opening /proc/self/ns/net: %s", strerror(errno));
	CHECK(sm_netns_cookie_of(fd, cookie) == 0, "reading the namespace's cookie");
	return fd;
}

static uint64_t guard_here(struct env *env)
{
	char err[256];
	uint64_t cookie;
	int fd = own_netns(&cookie);
	int ret = sm_datapath_guard_netns(env->dp, fd, cookie, err, sizeof(err));

	CHECK(ret == 0, "guarding the namespace: %s", err);
	close(fd);
	return cookie;
}

/* ---- connections ---- */

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A TCP connect from src (port chosen by the kernel) to dst:port; the fd or -errno. *ms: how long. */
static int connect_from(const char *src, const char *dst, uint16_t port, double *ms)
{
	union sockaddr_any from, to;
	socklen_t from_len = make_addr(src, 0, &from), to_len = make_addr(dst, port, &to);
	int fd = socket(to.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0), ret;
	double start;

	CHECK(fd >= 0, "socket: %s", strerror(errno));
	CHECK(bind(fd, &from.sa, from_len) == 0, "bind %s: %s", src, strerror(errno));
	start = now_ms();
	ret = connect(fd, &to.sa, to_len) ? -errno : fd;
	if (ms)
		*ms = now_ms() - start;
	if (ret < 0)
		close(fd);
	return ret;
}

/* A listener that never blocks: a refused connection must never show up in accept(). */
static int listen_nonblocking(const char *addr, uint16_t port)
{
	int fd = listen_on(SOCK_STREAM, addr, port);

	CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK: %s", strerror(errno));
	return fd;
}

/* One connection: allowed (connected and accepted) or refused (ECONNREFUSED at once, never accepted). */
static void expect_connect(const char *src, const char *dst, uint16_t port, bool allowed)
{
	int listener = listen_nonblocking(dst, port), client, server;
	double ms;

	client = connect_from(src, dst, port, &ms);
	if (allowed) {
		CHECK(client >= 0, "%s -> %s:%u refused: %s", src, dst, port, strerror(-client));
		server = accept_within(listener, 1000);
		CHECK(server >= 0, "%s -> %s:%u connected but never accepted", src, dst, port);
		close(server);
		close(client);
	} else {
		CHECK(client == -ECONNREFUSED, "%s -> %s:%u: %s, not refused", src, dst, port,
		      client >= 0 ? "connected" : strerror(-client));
		CHECK(ms < 500, "%s -> %s:%u refused only after %.0f ms", src, dst, port, ms);
		server = accept_within(listener, 100);
		CHECK(server < 0, "%s -> %s:%u: the server accepted a refused connection", src, dst, port);
	}
	close(listener);
}

/* ---- events and counts ---- */

struct events_seen {
	struct sm_authz_event events[64];
	size_t n;
};

static int keep_event(void *ctx, const struct sm_authz_event *event)
{
	struct events_seen *seen = ctx;

	if (seen->n < TEST_ARRAY_SIZE(seen->events))
		seen->events[seen->n++] = *event;
	return 0;
}

static size_t events_of(const struct events_seen *seen, uint8_t kind, uint64_t policy, uint16_t dst_port)
{
	size_t n = 0;

	for (size_t i = 0; i < seen->n; i++)
		n += seen->events[i].kind == kind && seen->events[i].policy == policy &&
		     seen->events[i].dst_port == htons(dst_port);
	return n;
}

struct policy_count {
	uint64_t policy;
	struct sm_authz_policy_counts sum;
};

static int find_policy(void *ctx, uint64_t policy, const struct sm_authz_policy_counts *sum)
{
	struct policy_count *want = ctx;

	if (policy != want->policy)
		return 0;
	want->sum = *sum;
	return 1;
}

static struct sm_authz_policy_counts policy_counts(struct env *env, uint64_t policy)
{
	struct policy_count want = { .policy = policy };

	CHECK(sm_datapath_authz_policy_counts(env->dp, find_policy, &want) >= 0, "reading the policy counts");
	return want.sum;
}

/* The sk_lookup program's id, from the namespace's pinned link. */
static int check_prog_fd(struct env *env, uint64_t cookie)
{
	struct bpf_link_info info = { 0 };
	__u32 len = sizeof(info);
	char path[256];
	int link, prog;

	snprintf(path, sizeof(path), "%s/links/authz-%llu", env->pin_dir, (unsigned long long)cookie);
	link = bpf_obj_get(path);
	CHECK(link >= 0, "no pinned link %s: %s", path, strerror(errno));
	CHECK(bpf_obj_get_info_by_fd(link, &info, &len) == 0, "reading the link");
	prog = bpf_prog_get_fd_by_id(info.prog_id);
	CHECK(prog >= 0, "the link's program: %s", strerror(errno));
	close(link);
	return prog;
}

/* ---- cases ---- */

static const struct connect_case {
	const char *what;
	const char *src, *dst;
	uint16_t port;
	bool allowed;
} connect_cases[] = {
	{ "identity A, its port-specific allow", "127.0.0.2", "127.0.0.10", 8080, true },
	{ "identity A, another port: its class's port 0 deny", "127.0.0.2", "127.0.0.10", 8081, false },
	{ "identity B (no source class): class 0 port 0 deny", "127.0.0.3", "127.0.0.10", 8080, false },
	{ "no identity, outside every CIDR: denied", "127.0.0.5", "127.0.0.10", 8080, false },
	{ "no identity, in 127.0.0.128/25: the CIDR's class allows", "127.0.0.200", "127.0.0.10", 8081, true },
	{ "the node itself: exempt", "127.0.0.4", "127.0.0.10", 8081, true },
	{ "an unguarded destination: untouched", "127.0.0.3", "127.0.0.20", 8080, true },
	{ "class 0 with its port's allow (and a dry-run deny)", "127.0.0.3", "127.0.0.10", 9090, true },
	{ "IPv6: identity A allowed", "fd00:10::2", "fd00:10::1", 8080, true },
	{ "IPv6: no identity denied", "::1", "fd00:10::1", 8080, false },
};

/* Every row of connect_cases, then what the counters, policy counts and events say of them. */
static void verdicts_on_real_connections(struct env *env, const void *arg)
{
	struct events_seen seen = { 0 };
	struct sm_authz_events *events;
	struct tables b;
	unsigned denied = 0;
	uint64_t before = env_counter(env, SM_COUNTER_AUTHZ_DENIED);

	(void)arg;
	/* nothing written yet: nothing is checked */
	guard_here(env);
	expect_connect("127.0.0.5", "127.0.0.10", 8080, true);
	main_tables(&b, 1);
	write_tables(env, &b);
	CHECK(sm_datapath_authz_events_open(env->dp, keep_event, &seen, &events) == 0, "opening the events");
	for (size_t i = 0; i < TEST_ARRAY_SIZE(connect_cases); i++) {
		const struct connect_case *c = &connect_cases[i];
		fprintf(stderr, "# %s: %s -> %s:%u %s\n", c->what, c->src, c->dst, c->port,
			c->allowed ? "allowed" : "refused");
		expect_connect(c->src, c->dst, c->port, c->allowed);
		denied += !c->allowed;
	}
	CHECK(sm_authz_events_poll(events, 100) >= 0, "polling the events");
	sm_authz_events_close(events);

	CHECK(env_counter(env, SM_COUNTER_AUTHZ_DENIED) - before == denied, "denied counted %llu, not %u",
	      (unsigned long long)(env_counter(env, SM_COUNTER_AUTHZ_DENIED) - before), denied);
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_EXEMPT) == 1, "exempt not counted once");
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_UNGUARDED) >= 1, "unguarded not counted");
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_ALLOWED) == 4, "allowed counted %llu, not 4",
	      (unsigned long long)env_counter(env, SM_COUNTER_AUTHZ_ALLOWED));
	CHECK(env_counter(env, SM_COUNTER_ERRORS) == 0, "errors counted");
	CHECK(policy_counts(env, P_DENY).denied == 1, "the deny policy's count");
	CHECK(policy_counts(env, P_NONE).denied == 3, "the none-allowed count: %llu",
	      (unsigned long long)policy_counts(env, P_NONE).denied);
	CHECK(policy_counts(env, P_ALLOW).allowed == 1 && policy_counts(env, P_CIDR).allowed == 1 &&
		      policy_counts(env, P_ALLOW6).allowed == 1 && policy_counts(env, P_PORT).allowed == 1,
	      "the allow policies' counts");
	CHECK(policy_counts(env, P_DRY).dry_run_denied == 1, "the dry-run policy's count");
	CHECK(events_of(&seen, SM_AUTHZ_EVENT_DENIED, P_DENY, 8081) == 1, "no denial event of the deny policy");
	CHECK(events_of(&seen, SM_AUTHZ_EVENT_DENIED, P_NONE, 8080) == 3, "not 3 none-allowed events");
	CHECK(events_of(&seen, SM_AUTHZ_EVENT_DRY_RUN_DENIED, P_DRY, 9090) == 1, "no dry-run event");
	CHECK(seen.n == denied + 1, "%zu events, not %u", seen.n, denied + 1);
	for (size_t i = 0; i < seen.n; i++) {
		uint8_t want[16];
		addr16(seen.events[i].dst_addr[0] == 0xfd ? "fd00:10::1" : "127.0.0.10", want);
		CHECK(memcmp(seen.events[i].dst_addr, want, 16) == 0, "event %zu: the wrong destination", i);
		CHECK(seen.events[i].src_port != 0, "event %zu: no source port", i);
	}
}

/* UDP is never checked, even to a guarded address. */
static void udp_untouched(struct env *env, const void *arg)
{
	struct tables b;
	char from[64];

	(void)arg;
	guard_here(env);
	main_tables(&b, 1);
	write_tables(env, &b);
	int server = listen_on(SOCK_DGRAM, "127.0.0.10", 8081);
	int client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	union sockaddr_any src, dst;
	socklen_t src_len = make_addr("127.0.0.5", 0, &src), dst_len = make_addr("127.0.0.10", 8081, &dst);
	CHECK(bind(client, &src.sa, src_len) == 0, "bind: %s", strerror(errno));
	udp_round_trip(client, &dst, dst_len, server, from, sizeof(from));
	close(client);
	close(server);
}

/* Two generations that disagree: a lookup mixing them would find no verdict and count an error. */
static void flip_tables(struct tables *b, uint32_t generation)
{
	tables_init(b, generation);
	add_dest(b, "127.0.0.10", generation % 2 ? 1 : 2);
	add_verdict(b, generation % 2 ? 1 : 2, 0, 0, generation % 2 ? SM_AUTHZ_ALLOW : SM_AUTHZ_DENY, 0,
		    generation % 2 ? SM_AUTHZ_NO_ALLOW_POLICIES : SM_AUTHZ_NO_ALLOW_MATCHED);
}

struct connector {
	volatile bool stop;
	unsigned connects, failures_other;
};

static void *connect_loop(void *arg)
{
	struct connector *c = arg;

	while (!c->stop) {
		int fd = connect_from("127.0.0.5", "127.0.0.10", 8080, NULL);
		if (fd >= 0)
			close(fd);
		else if (fd != -ECONNREFUSED)
			c->failures_other++;
		c->connects++;
	}
	return NULL;
}

static void generation_flip(struct env *env, const void *arg)
{
	struct connector c = { 0 };
	struct tables b;
	pthread_t thread;
	uint32_t generation;

	(void)arg;
	guard_here(env);
	flip_tables(&b, 1);
	write_tables(env, &b);
	expect_connect("127.0.0.5", "127.0.0.10", 8080, true);
	flip_tables(&b, 2);
	write_tables(env, &b);
	expect_connect("127.0.0.5", "127.0.0.10", 8080, false);
	CHECK(sm_datapath_authz_generation(env->dp, &generation) == 0 && generation == 2, "generation %u", generation);

	/* a listener that takes whatever comes, while the tables flip 40 times under a connecting thread */
	int listener = listen_nonblocking("127.0.0.10", 8080);
	uint64_t checked = env_counter(env, SM_COUNTER_AUTHZ_ALLOWED) + env_counter(env, SM_COUNTER_AUTHZ_DENIED);
	CHECK(pthread_create(&thread, NULL, connect_loop, &c) == 0, "starting the connecting thread");
	for (uint32_t g = 3; g < 43; g++) {
		flip_tables(&b, g);
		write_tables(env, &b);
		for (int fd; (fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
			close(fd);
	}
	c.stop = true;
	pthread_join(thread, NULL);
	close(listener);
	checked = env_counter(env, SM_COUNTER_AUTHZ_ALLOWED) + env_counter(env, SM_COUNTER_AUTHZ_DENIED) - checked;
	fprintf(stderr, "# %u connects across 40 flips\n", c.connects);
	CHECK(env_counter(env, SM_COUNTER_ERRORS) == 0, "a lookup found no verdict: it mixed two generations");
	CHECK(c.failures_other == 0, "%u connects failed otherwise than refused", c.failures_other);
	CHECK(checked >= c.connects, "%llu checks for %u connects", (unsigned long long)checked, c.connects);

	/* a generation already in force, or 0, is refused and changes nothing */
	char err[256];
	flip_tables(&b, 42);
	CHECK(sm_datapath_authz_write(env->dp, &b.t, err, sizeof(err)) == -EINVAL, "rewriting the generation in force");
	flip_tables(&b, 0);
	CHECK(sm_datapath_authz_write(env->dp, &b.t, err, sizeof(err)) == -EINVAL, "writing generation 0");
	expect_connect("127.0.0.5", "127.0.0.10", 8080, false);
	/* empty tables: nothing guarded */
	tables_init(&b, 50);
	write_tables(env, &b);
	expect_connect("127.0.0.5", "127.0.0.10", 8080, true);
}

/* Reads until the peer resets (true) or 2 s pass (false). */
static bool reset_by_peer(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[16];

	if (poll(&pfd, 1, 2000) != 1)
		return false;
	return read(fd, buf, sizeof(buf)) < 0 && errno == ECONNRESET;
}

static void echo_works(int client, int server)
{
	char buf[4];

	write_all(client, "ping", 4);
	read_exactly(server, buf, 4);
	write_all(server, "pong", 4);
	read_exactly(client, buf, 4);
}

static void reaper(struct env *env, const void *arg)
{
	struct events_seen seen = { 0 };
	struct sm_authz_events *events;
	struct tables b;
	char err[256];
	unsigned closed = 99;
	uint64_t cookie;

	(void)arg;
	cookie = guard_here(env);
	main_tables(&b, 1);
	write_tables(env, &b);
	int l_a = listen_on(SOCK_STREAM, "127.0.0.10", 8080), l_b = listen_on(SOCK_STREAM, "127.0.0.10", 9090);
	int l_out = listen_on(SOCK_STREAM, "127.0.0.2", 7000);
	int a = connect_from("127.0.0.2", "127.0.0.10", 8080, NULL);
	int b_client = connect_from("127.0.0.3", "127.0.0.10", 9090, NULL);
	/* the guarded workload's own outbound connection, to identity A: never taken for inbound */
	int out = connect_from("127.0.0.10", "127.0.0.2", 7000, NULL);
	CHECK(a >= 0 && b_client >= 0 && out >= 0, "connecting: %d %d %d", a, b_client, out);
	int a_server = accept_within(l_a, 1000), b_server = accept_within(l_b, 1000), out_server = accept_within(l_out, 1000);
	CHECK(a_server >= 0 && b_server >= 0 && out_server >= 0, "accepting");

	/* the same tables: nothing to close */
	CHECK(sm_datapath_authz_reap(env->dp, -1, NULL, 0, NULL, &closed, err, sizeof(err)) == 0, "reaping: %s", err);
	CHECK(closed == 0, "closed %u under the tables that allowed them", closed);

	/* generation 2 denies identity A everything, allows the rest */
	tables_init(&b, 2);
	add_ident(&b, "127.0.0.2", ID_A);
	add_ident(&b, "127.0.0.3", ID_B);
	add_dest(&b, "127.0.0.10", 1);
	add_source(&b, ID_A, 0, 1);
	add_verdict(&b, 1, 1, 0, SM_AUTHZ_DENY, P_DENY, SM_AUTHZ_DENY_MATCHED);
	add_verdict(&b, 1, 0, 0, SM_AUTHZ_ALLOW, P_ALLOW, SM_AUTHZ_ALLOW_MATCHED);
	write_tables(env, &b);
	CHECK(sm_datapath_authz_events_open(env->dp, keep_event, &seen, &events) == 0, "opening the events");
	int netns_fd = own_netns(&cookie);
	/* asked to walk only where one of some destinations is local: addresses of no interface or route here
	 * are not, and nothing is walked; with the guarded workload's among them it is */
	struct sm_frontend_key elsewhere[2], with_local[3];
	bool walked = true;
	addr16("10.99.0.1", elsewhere[0].addr);
	addr16("fd00:99::1", elsewhere[1].addr);
	memcpy(with_local, elsewhere, sizeof(elsewhere));
	addr16("127.0.0.10", with_local[2].addr);
	CHECK(sm_datapath_authz_reap(env->dp, netns_fd, elsewhere, 2, &walked, &closed, err, sizeof(err)) == 0,
	      "reaping where nothing is local: %s", err);
	CHECK(!walked && closed == 0, "walked %d, closed %u where no destination is local", walked, closed);
	echo_works(a, a_server); /* denied, not closed yet */
	CHECK(sm_datapath_authz_reap(env->dp, netns_fd, with_local, 3, &walked, &closed, err, sizeof(err)) == 0,
	      "reaping: %s", err);
	close(netns_fd);
	CHECK(walked && closed == 1, "walked %d, closed %u, not 1", walked, closed);
	CHECK(reset_by_peer(a), "the denied connection's client got no reset");
	echo_works(b_client, b_server);
	echo_works(out, out_server);
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_CLOSED) == 1, "closed not counted");
	CHECK(policy_counts(env, P_DENY).closed == 1, "the policy's closed count");
	/* the dry-run denial of b's connect, then the close */
	CHECK(sm_authz_events_poll(events, 100) == 2 && seen.n == 2, "%zu events, not 2", seen.n);
	const struct sm_authz_event *ev = &seen.events[1];
	CHECK(seen.events[0].kind == SM_AUTHZ_EVENT_DRY_RUN_DENIED, "the first event is of kind %u", seen.events[0].kind);
	CHECK(ev->kind == SM_AUTHZ_EVENT_CLOSED && ev->policy == P_DENY && ev->netns_cookie == cookie &&
		      ev->dst_port == htons(8080) && ev->reason == SM_AUTHZ_DENY_MATCHED,
	      "the close event: kind %u policy %llx cookie %llu", ev->kind, (unsigned long long)ev->policy,
	      (unsigned long long)ev->netns_cookie);
	sm_authz_events_close(events);
	CHECK(sm_datapath_authz_reap(env->dp, -1, NULL, 0, NULL, &closed, err, sizeof(err)) == 0 && closed == 0, "a second pass closed %u",
	      closed);
	close(a), close(a_server), close(b_client), close(b_server), close(out), close(out_server);
	close(l_a), close(l_b), close(l_out);
}

struct cookies {
	uint64_t found[8];
	size_t n;
};

static int keep_cookie(void *ctx, uint64_t cookie)
{
	struct cookies *c = ctx;

	if (c->n < TEST_ARRAY_SIZE(c->found))
		c->found[c->n++] = cookie;
	return 0;
}

/* The pinned link keeps enforcing without an agent; a reopened datapath adopts it; uninstall ends it. */
static void restart_and_uninstall(struct env *env, const void *arg)
{
	struct cookies cookies = { 0 };
	struct tables b;
	uint32_t generation = 0;
	char err[256];

	(void)arg;
	uint64_t cookie = guard_here(env);
	CHECK(guard_here(env) == cookie, "guarding twice"); /* idempotent */
	main_tables(&b, 7);
	write_tables(env, &b);
	struct bpf_prog_info before = { 0 }, info = { 0 }, again = { 0 };
	__u32 len = sizeof(before);
	int prog = check_prog_fd(env, cookie);
	CHECK(bpf_obj_get_info_by_fd(prog, &before, &len) == 0, "reading the program");
	close(prog);
	sm_datapath_close(env->dp);
	env->dp = NULL;
	expect_connect("127.0.0.5", "127.0.0.10", 8080, false);
	expect_connect("127.0.0.2", "127.0.0.10", 8080, true);

	CHECK(env_open_datapath(env) == 0, "reopening");
	CHECK(sm_datapath_adopted(env->dp), "the maps were not adopted");
	CHECK(sm_datapath_authz_generation(env->dp, &generation) == 0 && generation == 7, "generation %u", generation);
	CHECK(sm_datapath_for_each_guard(env->dp, keep_cookie, &cookies) == 0 && cookies.n == 1 &&
		      cookies.found[0] == cookie, "the guards: %zu", cookies.n);
	/* the link now runs the reopened datapath's program, which a second guard keeps */
	prog = check_prog_fd(env, cookie);
	len = sizeof(info);
	CHECK(bpf_obj_get_info_by_fd(prog, &info, &len) == 0 && info.id != before.id,
	      "the reopened datapath did not switch the link to its program");
	close(prog);
	guard_here(env);
	prog = check_prog_fd(env, cookie);
	len = sizeof(again);
	CHECK(bpf_obj_get_info_by_fd(prog, &again, &len) == 0 && again.id == info.id, "the link's program changed on guard");
	close(prog);
	expect_connect("127.0.0.5", "127.0.0.10", 8080, false);

	CHECK(sm_datapath_unguard_netns(env->dp, cookie) == 0, "unguarding");
	expect_connect("127.0.0.5", "127.0.0.10", 8080, true);
	CHECK(sm_datapath_unguard_netns(env->dp, cookie) == 0, "unguarding again");
	guard_here(env);
	expect_connect("127.0.0.5", "127.0.0.10", 8080, false);

	sm_datapath_close(env->dp);
	env->dp = NULL;
	CHECK(sm_datapath_uninstall(env->pin_dir, err, sizeof(err)) == 0, "uninstalling: %s", err);
	CHECK(access(env->pin_dir, F_OK) != 0, "%s is still there", env->pin_dir);
	expect_connect("127.0.0.5", "127.0.0.10", 8080, true);
}

/* A guard whose namespace is gone is swept; the live one stays. */
static void sweep(struct env *env, const void *arg)
{
	struct cookies cookies = { 0 };
	char err[256];
	uint64_t here = guard_here(env), gone;
	int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), other;
	int swept = 0;

	(void)arg;
	CHECK(home >= 0 && unshare(CLONE_NEWNET) == 0, "a second namespace: %s", strerror(errno));
	other = own_netns(&gone);
	CHECK(setns(home, CLONE_NEWNET) == 0, "back home: %s", strerror(errno));
	close(home);
	CHECK(sm_datapath_guard_netns(env->dp, other, gone, err, sizeof(err)) == 0, "guarding the second: %s", err);
	CHECK(sm_datapath_sweep_guards(env->dp) == 0, "a live namespace's guard was swept");
	close(other); /* its last reference: the namespace goes, asynchronously */
	for (int i = 0; i < 100 && swept == 0; i++) {
		usleep(50000);
		swept = sm_datapath_sweep_guards(env->dp);
	}
	CHECK(swept == 1, "swept %d", swept);
	CHECK(sm_datapath_for_each_guard(env->dp, keep_cookie, &cookies) == 0 && cookies.n == 1 && cookies.found[0] == here,
	      "the guards left: %zu", cookies.n);
}

/* The check's run time per connection for one kind of source: connects n times, reads the stats. */
static void time_checks(struct env *env, int prog, const char *what, const char *src, uint16_t port, int n)
{
	struct bpf_prog_info before = { 0 }, after = { 0 };
	__u32 len = sizeof(before);
	int listener = listen_nonblocking("127.0.0.10", port);

	CHECK(bpf_obj_get_info_by_fd(prog, &before, &len) == 0, "reading the program's stats");
	for (int i = 0; i < n; i++) {
		int fd = connect_from(src, "127.0.0.10", port, NULL);
		if (fd >= 0)
			close(fd);
		for (int s; (s = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
			close(s);
	}
	len = sizeof(after);
	CHECK(bpf_obj_get_info_by_fd(prog, &after, &len) == 0, "reading the program's stats");
	close(listener);
	CHECK(after.run_cnt - before.run_cnt >= (unsigned)n, "run %llu times",
	      (unsigned long long)(after.run_cnt - before.run_cnt));
	/* the same check under BPF_PROG_TEST_RUN: the program alone, warm, without the stack around it */
	struct bpf_sk_lookup ctx = {
		.family = AF_INET, .protocol = IPPROTO_TCP, .remote_port = htons(40000), .local_port = port,
	};
	inet_pton(AF_INET, src, &ctx.remote_ip4);
	inet_pton(AF_INET, "127.0.0.10", &ctx.local_ip4);
	LIBBPF_OPTS(bpf_test_run_opts, run, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = 10000);
	CHECK(bpf_prog_test_run_opts(prog, &run) == 0, "BPF_PROG_TEST_RUN: %s", strerror(errno));
	printf("# sm_authz_check, %s: %.0f ns per connection (%llu runs), %u ns per test run\n", what,
	       (double)(after.run_time_ns - before.run_time_ns) / (double)(after.run_cnt - before.run_cnt),
	       (unsigned long long)(after.run_cnt - before.run_cnt), run.duration);
	fflush(stdout);
	(void)env;
}

/* The check's own run time per connection (bpf_enable_stats), printed, not asserted. */
static void run_time(struct env *env, const void *arg)
{
	struct tables b;
	int stats, prog;

	(void)arg;
	uint64_t cookie = guard_here(env);
	main_tables(&b, 1);
	write_tables(env, &b);
	prog = check_prog_fd(env, cookie);
	stats = bpf_enable_stats(BPF_STATS_RUN_TIME);
	CHECK(stats >= 0, "bpf_enable_stats: %s", strerror(errno));
	time_checks(env, prog, "allowed (identity, port-specific verdict)", "127.0.0.2", 8080, 1000);
	time_checks(env, prog, "denied (no identity, 3 verdict lookups, event)", "127.0.0.5", 8080, 1000);
	time_checks(env, prog, "allowed with a dry-run event", "127.0.0.3", 9090, 1000);
	time_checks(env, prog, "exempt (the node)", "127.0.0.4", 8080, 1000);
	close(stats);
	close(prog);
}

/* Entries of a pinned map, and how many are of generation g (by the key's leading 32 bits). */
static size_t map_entries(struct env *env, const char *name, uint32_t g, size_t *of_g)
{
	_Alignas(8) unsigned char key[32], next[32];
	void *previous = NULL;
	size_t n = 0;
	int fd = env_pinned_map(env, name);

	*of_g = 0;
	while (bpf_map_get_next_key(fd, previous, next) == 0) {
		uint32_t generation;
		memcpy(key, next, sizeof(key));
		previous = key;
		memcpy(&generation, key, sizeof(generation));
		*of_g += generation == g;
		n++;
	}
	close(fd);
	return n;
}

/* Big tables: generation g with n verdicts over 1,000 destination sets, 10,000 idents. */
static struct sm_authz_tables *big_tables(uint32_t g, size_t n)
{
	struct sm_authz_tables *t = calloc(1, sizeof(*t));

	CHECK(t, "out of memory");
	t->generation = g;
	t->n_dests = 1000, t->n_sources = 1000, t->n_idents = 10000, t->n_verdicts = n;
	t->dest_keys = calloc(t->n_dests, sizeof(*t->dest_keys));
	t->dest_values = calloc(t->n_dests, sizeof(*t->dest_values));
	t->source_keys = calloc(t->n_sources, sizeof(*t->source_keys));
	t->source_values = calloc(t->n_sources, sizeof(*t->source_values));
	t->ident_keys = calloc(t->n_idents, sizeof(*t->ident_keys));
	t->ident_values = calloc(t->n_idents, sizeof(*t->ident_values));
	t->verdict_keys = calloc(n, sizeof(*t->verdict_keys));
	t->verdicts = calloc(n, sizeof(*t->verdicts));
	CHECK(t->dest_keys && t->dest_values && t->source_keys && t->source_values && t->ident_keys && t->ident_values &&
		      t->verdict_keys && t->verdicts, "out of memory");
	for (uint32_t i = 0; i < t->n_dests; i++) {
		t->dest_keys[i].generation = g;
		t->dest_keys[i].addr[0] = 0xfd, t->dest_keys[i].addr[14] = (uint8_t)(i >> 8), t->dest_keys[i].addr[15] = (uint8_t)i;
		t->dest_values[i].dest_set = i + 1;
	}
	for (uint32_t i = 0; i < t->n_sources; i++) {
		t->source_keys[i] = (struct sm_authz_source_key){ g, 0, 1000 + i };
		t->source_values[i].source_class = i % 100 + 1;
	}
	for (uint32_t i = 0; i < t->n_idents; i++) {
		t->ident_keys[i].addr[0] = 0xfd, t->ident_keys[i].addr[1] = 1;
		t->ident_keys[i].addr[14] = (uint8_t)(i >> 8), t->ident_keys[i].addr[15] = (uint8_t)i;
		t->ident_values[i].identity = 1000 + i % 1000 + g % 2; /* half change between generations */
	}
	for (uint32_t i = 0; i < n; i++)
		t->verdict_keys[i] = (struct sm_authz_verdict_key){ g, i % 1000 + 1, i / 1000, htons((uint16_t)(i % 7)), 0 };
	return t;
}

static void big_tables_free(struct sm_authz_tables *t)
{
	free(t->dest_keys), free(t->dest_values), free(t->source_keys), free(t->source_values);
	free(t->ident_keys), free(t->ident_values), free(t->verdict_keys), free(t->verdicts);
	free(t);
}

/* The writer's cost on big tables, printed; and that only the generation in force stays. */
static void big_writes(struct env *env, const void *arg)
{
	char err[256];
	size_t of_g;

	(void)arg;
	for (uint32_t g = 1; g <= 3; g++) {
		struct sm_authz_tables *t = big_tables(g, 200000);
		double start = now_ms();
		CHECK(sm_datapath_authz_write(env->dp, t, err, sizeof(err)) == 0, "writing generation %u: %s", g, err);
		printf("# writing generation %u (200,000 verdicts, 1,000 dests and sources, 10,000 idents): %.0f ms\n", g,
		       now_ms() - start);
		fflush(stdout);
		big_tables_free(t);
		CHECK(map_entries(env, "sm_authz_verdicts", g, &of_g) == 200000 && of_g == 200000,
		      "the verdicts of other generations are left");
		CHECK(map_entries(env, "sm_authz_dests", g, &of_g) == 1000 && of_g == 1000, "dests of other generations");
	}
	/* a write that fails (more dests than the map takes) leaves generation 3 in force and nothing of 4 */
	struct sm_authz_tables *t = big_tables(4, 10);
	free(t->dest_keys), free(t->dest_values);
	t->n_dests = SM_DEFAULT_MAX_AUTHZ_DESTS + 1;
	t->dest_keys = calloc(t->n_dests, sizeof(*t->dest_keys));
	t->dest_values = calloc(t->n_dests, sizeof(*t->dest_values));
	for (uint32_t i = 0; i < t->n_dests; i++) {
		t->dest_keys[i].generation = 4;
		memcpy(t->dest_keys[i].addr, &i, sizeof(i));
	}
	int ret = sm_datapath_authz_write(env->dp, t, err, sizeof(err));
	big_tables_free(t);
	uint32_t g = 0;
	CHECK(ret < 0 && strstr(err, "sm_authz_dests"), "an overfull write: %d (%s)", ret, err);
	fprintf(stderr, "# the overfull write: %s\n", err);
	CHECK(sm_datapath_authz_generation(env->dp, &g) == 0 && g == 3, "generation %u after a failed write", g);
	CHECK(map_entries(env, "sm_authz_dests", 3, &of_g) == 1000 && of_g == 1000, "the failed write left entries");
	CHECK(map_entries(env, "sm_authz_verdicts", 3, &of_g) == 200000 && of_g == 200000, "the failed write left verdicts");
}

/* Tables of generation g with only idents: n addresses from first on, each with an identity salted by salt. */
static struct sm_authz_tables *ident_tables(uint32_t g, uint32_t first, uint32_t n, uint64_t salt)
{
	struct sm_authz_tables *t = calloc(1, sizeof(*t));

	CHECK(t, "out of memory");
	t->generation = g;
	t->n_idents = n;
	t->ident_keys = calloc(n ? n : 1, sizeof(*t->ident_keys));
	t->ident_values = calloc(n ? n : 1, sizeof(*t->ident_values));
	CHECK(t->ident_keys && t->ident_values, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		uint32_t a = first + i;
		t->ident_keys[i].addr[0] = 0xfd, t->ident_keys[i].addr[1] = 2;
		memcpy(&t->ident_keys[i].addr[12], &a, sizeof(a));
		t->ident_values[i].identity = 1000 + a % 100 + salt;
	}
	return t;
}

/* Whether sm_authz_idents holds exactly the tables' idents. */
/* sm_authz_idents as pinned, opened anew (the caller closes it). */
static int idents_map(struct env *env)
{
	return env_pinned_map(env, "sm_authz_idents");
}

static bool idents_exactly(struct env *env, const struct sm_authz_tables *t)
{
	struct sm_frontend_key key, next, *previous = NULL;
	struct sm_authz_ident_value value;
	size_t n = 0;
	bool same = true;
	int fd = idents_map(env);

	while (bpf_map_get_next_key(fd, previous, &next) == 0) {
		key = next;
		previous = &key;
		n++;
	}
	for (size_t i = 0; i < t->n_idents && same; i++)
		same = bpf_map_lookup_elem(fd, &t->ident_keys[i], &value) == 0 &&
		       value.identity == t->ident_values[i].identity;
	close(fd);
	if (!same || n != t->n_idents)
		printf("# sm_authz_idents holds %zu entries, the tables %zu%s\n", n, t->n_idents,
		       same ? "" : "; some differ");
	return same && n == t->n_idents;
}

/*
 * The writer diffs the idents against what its last write left (kept in memory), and reads the map back
 * when it does not know: after a write that failed part of the way. Either way the map ends holding the
 * tables' idents exactly.
 */
static void idents_follow_each_write(struct env *env, const void *arg)
{
	struct sm_authz_tables *t;
	uint32_t info_max = 0;
	char err[256];

	(void)arg;
	t = ident_tables(1, 0, 1000, 0);
	CHECK(sm_datapath_authz_write(env->dp, t, err, sizeof(err)) == 0, "writing generation 1: %s", err);
	CHECK(idents_exactly(env, t), "generation 1's idents");
	big_tables_free(t);
	t = ident_tables(2, 500, 1000, 7); /* half gone, half changed, half new */
	CHECK(sm_datapath_authz_write(env->dp, t, err, sizeof(err)) == 0, "writing generation 2: %s", err);
	CHECK(idents_exactly(env, t), "generation 2's idents");
	big_tables_free(t);

	/* more idents than the map takes: written part of the way, then refused */
	CHECK(sm_datapath_authz_capacity(env->dp, SM_DP_MAP_AUTHZ_IDENTS, &info_max) == 0, "the idents' capacity");
	t = ident_tables(3, 0, info_max + 1, 3);
	CHECK(sm_datapath_authz_write(env->dp, t, err, sizeof(err)) < 0 && strstr(err, "sm_authz_idents"),
	      "an overfull idents write: %s", err);
	big_tables_free(t);
	t = ident_tables(4, 200, 700, 1);
	CHECK(sm_datapath_authz_write(env->dp, t, err, sizeof(err)) == 0, "writing generation 4: %s", err);
	CHECK(idents_exactly(env, t), "after the failed write, the next one's idents exactly");
	big_tables_free(t);
	/* alone under the generation in force, also after an overfull write of them */
	t = ident_tables(4, 100, 900, 2);
	CHECK(sm_datapath_authz_write_update(env->dp, t, err, sizeof(err)) == 0, "idents alone: %s", err);
	CHECK(idents_exactly(env, t), "the idents written alone");
	big_tables_free(t);
	t = ident_tables(4, 0, info_max + 1, 5);
	CHECK(sm_datapath_authz_write_update(env->dp, t, err, sizeof(err)) < 0 && strstr(err, "sm_authz_idents"),
	      "an overfull write of idents alone: %s", err);
	big_tables_free(t);
	t = ident_tables(4, 50, 300, 4);
	CHECK(sm_datapath_authz_write_update(env->dp, t, err, sizeof(err)) == 0, "idents alone: %s", err);
	CHECK(idents_exactly(env, t), "after the failed write of idents, the next one's exactly");
	big_tables_free(t);
	t = ident_tables(5, 0, 0, 0);
	CHECK(sm_datapath_authz_write(env->dp, t, err, sizeof(err)) == 0, "writing generation 5: %s", err);
	CHECK(idents_exactly(env, t), "no idents left");
	big_tables_free(t);
}

/* Idents written alone under the generation in force (a pod of another node started, gone, or given
 * another identity), the changed addresses alone diffed against the map: real connections follow them at
 * once; the generation's other tables stay, but for the sources entry a new identity's class needs,
 * written first. */
static void idents_alone(struct env *env, const void *arg)
{
	struct tables b;
	uint32_t g = 0;
	char err[256];

	(void)arg;
	guard_here(env);
	main_tables(&b, 1);
	write_tables(env, &b);
	expect_connect("127.0.0.2", "127.0.0.10", 8080, true);	/* identity A */
	expect_connect("127.0.0.3", "127.0.0.10", 8080, false); /* B: no allow matches */
	addr16("127.0.0.6", b.ident_keys[0].addr);		/* 127.0.0.2 gone, 127.0.0.6 new as A */
	b.ident_values[1].identity = ID_A;			/* 127.0.0.3 now A */
	/* as sm_authz_update_idents lists them: only these addresses are diffed against the map */
	struct sm_frontend_key changed[4];
	addr16("127.0.0.2", changed[0].addr);
	addr16("127.0.0.3", changed[1].addr);
	addr16("127.0.0.4", changed[2].addr); /* listed, not changed */
	addr16("127.0.0.6", changed[3].addr);
	b.t.changed_idents = changed;
	b.t.n_changed_idents = 4;
	/* only the listed addresses are diffed: fd00:10::2, given B here but not listed, keeps A in the map; a
	 * write with no list diffs every address and gives it A again */
	struct sm_frontend_key unlisted;
	struct sm_authz_ident_value value = { 0 };
	int idents = idents_map(env);
	addr16("fd00:10::2", unlisted.addr);
	b.ident_values[3].identity = ID_B;
	CHECK(sm_datapath_authz_write_update(env->dp, &b.t, err, sizeof(err)) == 0, "writing the idents: %s", err);
	CHECK(bpf_map_lookup_elem(idents, &unlisted, &value) == 0 && value.identity == ID_A,
	      "an address the list does not name was diffed (identity %llx)", (unsigned long long)value.identity);
	/* the listed ones are: .2 deleted, .3 changed, .6 added (.4 unchanged) */
	CHECK(bpf_map_lookup_elem(idents, &changed[0], &value) != 0 && errno == ENOENT, "127.0.0.2 was not deleted");
	CHECK(bpf_map_lookup_elem(idents, &changed[1], &value) == 0 && value.identity == ID_A,
	      "127.0.0.3 was not changed (identity %llx)", (unsigned long long)value.identity);
	CHECK(bpf_map_lookup_elem(idents, &changed[2], &value) == 0 && value.identity == SM_AUTHZ_IDENTITY_NODE,
	      "127.0.0.4 changed (identity %llx)", (unsigned long long)value.identity);
	CHECK(bpf_map_lookup_elem(idents, &changed[3], &value) == 0 && value.identity == ID_A,
	      "127.0.0.6 was not added (identity %llx)", (unsigned long long)value.identity);
	b.ident_values[3].identity = ID_A;
	b.t.changed_idents = NULL;
	CHECK(sm_datapath_authz_write_update(env->dp, &b.t, err, sizeof(err)) == 0, "writing the idents: %s", err);
	b.t.changed_idents = changed;
	close(idents);
	CHECK(sm_datapath_authz_generation(env->dp, &g) == 0 && g == 1, "generation %u after the idents", g);
	CHECK(idents_exactly(env, &b.t), "the idents written alone");
	expect_connect("127.0.0.3", "127.0.0.10", 8080, true);
	expect_connect("127.0.0.6", "127.0.0.10", 8080, true);
	expect_connect("127.0.0.2", "127.0.0.10", 8080, false); /* no identity */
	expect_connect("127.0.0.3", "127.0.0.10", 8081, false); /* A's deny, the generation's verdicts as they were */

	/* a new identity in A's class: its sources entry goes in with the idents, before them */
	struct sm_authz_source_key added_key = { 1, 0, ID_C };
	struct sm_authz_source_value added_value = { .source_class = 1 };
	add_ident(&b, "127.0.0.5", ID_C);
	addr16("127.0.0.5", changed[0].addr);
	b.t.n_changed_idents = 1;
	expect_connect("127.0.0.5", "127.0.0.10", 8080, false); /* not written yet: no identity */
	b.t.added_source_keys = &added_key;
	b.t.added_source_values = &added_value;
	b.t.n_added_sources = 1;
	CHECK(sm_datapath_authz_write_update(env->dp, &b.t, err, sizeof(err)) == 0, "writing the idents: %s", err);
	CHECK(idents_exactly(env, &b.t), "the idents with a new identity");
	expect_connect("127.0.0.5", "127.0.0.10", 8080, true);	/* A's class */
	expect_connect("127.0.0.5", "127.0.0.10", 8081, false); /* and its deny */
	expect_connect("127.0.0.3", "127.0.0.10", 8080, true);	/* the others as they were */

	b.t.generation = 2;
	CHECK(sm_datapath_authz_write_update(env->dp, &b.t, err, sizeof(err)) == -EINVAL && strstr(err, "in force"),
	      "idents of a generation not in force: %s", err);
}

/* A workload of this node started or gone with the policies unchanged (sm_authz_update_destinations): the
 * dests entries its changed_dests lists are written or deleted under the generation in force, the others
 * left as they are, and real connections follow at once. */
static void dests_under_the_generation_in_force(struct env *env, const void *arg)
{
	struct tables b;
	struct sm_frontend_key changed[3];
	size_t of_g, n;
	uint32_t g = 0;
	char err[256];

	(void)arg;
	guard_here(env);
	main_tables(&b, 1);
	write_tables(env, &b);
	expect_connect("127.0.0.3", "127.0.0.20", 8080, true);	 /* not guarded */
	expect_connect("127.0.0.3", "127.0.0.10", 8080, false); /* set 1: B not let in */
	/* 127.0.0.10 gone, 127.0.0.20 started with set 1's policies; 127.0.0.30 listed, guarded by neither */
	add_dest(&b, "fd00:10::1", 2);
	addr16("127.0.0.20", b.dest_keys[0].addr);
	b.dest_keys[1] = b.dest_keys[2];
	b.t.n_dests = 2;
	addr16("127.0.0.10", changed[0].addr);
	addr16("127.0.0.20", changed[1].addr);
	addr16("127.0.0.30", changed[2].addr);
	b.t.changed_dests = changed;
	b.t.n_changed_dests = 3;
	CHECK(sm_datapath_authz_write_update(env->dp, &b.t, err, sizeof(err)) == 0, "writing the dests: %s", err);
	CHECK(sm_datapath_authz_generation(env->dp, &g) == 0 && g == 1, "generation %u after the dests", g);
	n = map_entries(env, "sm_authz_dests", 1, &of_g);
	CHECK(n == 2 && of_g == 2, "sm_authz_dests holds %zu entries, %zu of generation 1; expected 2 and 2", n, of_g);
	expect_connect("127.0.0.3", "127.0.0.20", 8080, false); /* guarded now */
	expect_connect("127.0.0.2", "127.0.0.20", 8080, true);	 /* A is let in */
	expect_connect("127.0.0.3", "127.0.0.10", 8080, true);	 /* not guarded any more */
	expect_connect("fd00:10::2", "fd00:10::1", 8080, true); /* not listed: as it was */

	/* only the listed addresses are written: 127.0.0.10 given set 1 again but not listed stays unguarded */
	add_dest(&b, "127.0.0.10", 1);
	b.t.n_changed_dests = 0;
	CHECK(sm_datapath_authz_write_update(env->dp, &b.t, err, sizeof(err)) == 0, "writing the dests: %s", err);
	expect_connect("127.0.0.3", "127.0.0.10", 8080, true);
}

/* sm_authz_state as pinned. */
static struct sm_authz_state state_of(struct env *env)
{
	struct sm_authz_state state = { 0 };
	int fd = env_pinned_map(env, "sm_authz_state");

	CHECK(bpf_map_lookup_elem(fd, &(__u32){ 0 }, &state) == 0, "reading sm_authz_state: %s", strerror(errno));
	close(fd);
	return state;
}

/* Writes a dests entry straight into the map, behind the writer's back. */
static void plant_dest(struct env *env, uint32_t generation, const char *addr, uint32_t set)
{
	struct sm_authz_dest_key key = { .generation = generation };
	struct sm_authz_dest_value value = { .dest_set = set };
	int fd = env_pinned_map(env, "sm_authz_dests");

	addr16(addr, key.addr);
	CHECK(bpf_map_update_elem(fd, &key, &value, BPF_ANY) == 0, "planting %s in sm_authz_dests: %s", addr,
	      strerror(errno));
	close(fd);
}

/*
 * Tables that guard no address (a node without policies for its workloads): the flip marks the generation
 * unguarded and the check returns before any lookup, so a dests entry planted behind the writer's back is
 * not seen, by the kernel nor by sm_datapath_authz_lookup. An update that guards a first address clears
 * the mark before writing it; one that removes the last sets it again; tables with dests never carry it.
 */
static void tables_that_guard_nothing(struct env *env, const void *arg)
{
	struct tables b;
	struct sm_frontend_key changed;
	struct sm_authz_verdict verdict;
	uint8_t src[16], dst[16];
	uint64_t unguarded = env_counter(env, SM_COUNTER_AUTHZ_UNGUARDED);
	char err[256];

	(void)arg;
	guard_here(env);
	tables_init(&b, 1);
	add_ident(&b, "127.0.0.3", ID_B);
	add_ident(&b, "127.0.0.4", SM_AUTHZ_IDENTITY_NODE);
	add_verdict(&b, 1, 0, 0, SM_AUTHZ_DENY, P_NONE, SM_AUTHZ_NO_ALLOW_MATCHED);
	write_tables(env, &b);
	CHECK(state_of(env).unguarded_generation == 1, "generation 1 guards nothing, but is not marked so");
	expect_connect("127.0.0.3", "127.0.0.10", 8080, true);
	expect_connect("127.0.0.4", "127.0.0.10", 8080, true); /* the node: unguarded too, nothing to exempt from */
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_UNGUARDED) - unguarded == 2, "unguarded not counted twice");
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_EXEMPT) == 0, "exempt counted");

	plant_dest(env, 1, "127.0.0.10", 1);
	expect_connect("127.0.0.3", "127.0.0.10", 8080, true); /* the mark: no lookup */
	addr16("127.0.0.3", src);
	addr16("127.0.0.10", dst);
	CHECK(sm_datapath_authz_lookup(env->dp, src, dst, 8080, &verdict) == 0, "the lookup did not stop at the mark");

	/* a first guarded address, under the generation in force */
	add_dest(&b, "127.0.0.10", 1);
	addr16("127.0.0.10", changed.addr);
	b.t.changed_dests = &changed;
	b.t.n_changed_dests = 1;
	CHECK(sm_datapath_authz_write_update(env->dp, &b.t, err, sizeof(err)) == 0, "writing the dest: %s", err);
	CHECK(state_of(env).generation == 1 && state_of(env).unguarded_generation == 0, "the mark stayed");
	expect_connect("127.0.0.3", "127.0.0.10", 8080, false);
	expect_connect("127.0.0.4", "127.0.0.10", 8080, true); /* the node, exempt */
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_EXEMPT) == 1, "exempt not counted once");
	/* the destination is looked up first: the node to an address no policy guards is unguarded */
	unguarded = env_counter(env, SM_COUNTER_AUTHZ_UNGUARDED);
	expect_connect("127.0.0.4", "127.0.0.20", 8080, true);
	CHECK(env_counter(env, SM_COUNTER_AUTHZ_EXEMPT) == 1 && env_counter(env, SM_COUNTER_AUTHZ_UNGUARDED) == unguarded + 1,
	      "the node's connection to an unguarded address counted as exempt");
	addr16("127.0.0.4", src);
	addr16("127.0.0.20", dst);
	CHECK(sm_datapath_authz_lookup(env->dp, src, dst, 8080, &verdict) == 0, "the lookup took the node first");

	/* and gone again */
	b.t.n_dests = 0;
	CHECK(sm_datapath_authz_write_update(env->dp, &b.t, err, sizeof(err)) == 0, "deleting the dest: %s", err);
	CHECK(state_of(env).unguarded_generation == 1, "the last guarded address gone, but no mark");
	expect_connect("127.0.0.3", "127.0.0.10", 8080, true);

	main_tables(&b, 2);
	write_tables(env, &b);
	CHECK(state_of(env).generation == 2 && state_of(env).unguarded_generation == 0, "tables with dests marked");
	expect_connect("127.0.0.3", "127.0.0.10", 8080, false);
}

static const struct case_row {
	const char *name;
	void (*fn)(struct env *env, const void *arg);
} cases[] = {
	{ "verdicts on real connections, counters and events", verdicts_on_real_connections },
	{ "UDP is not checked", udp_untouched },
	{ "a generation flip never mixes two compilations", generation_flip },
	{ "the reaper closes what a change denies, nothing else", reaper },
	{ "a pinned guard outlives the agent; reopen, unguard, uninstall", restart_and_uninstall },
	{ "sweep removes a guard whose namespace is gone", sweep },
	{ "the check's run time", run_time },
	{ "big tables: write time, one generation left, a failed write undone", big_writes },
	{ "the idents follow each write, also after one that failed part of the way", idents_follow_each_write },
	{ "idents written alone under the generation in force", idents_alone },
	{ "this node's dests entries written under the generation in force", dests_under_the_generation_in_force },
	{ "tables that guard nothing: the check returns before any lookup", tables_that_guard_nothing },
};

static void run_named_case(void **state)
{
	const struct case_row *row = *state;

	assert_int_equal(run_case(row->fn, NULL), 0);
}

int main(void)
{
	struct CMUnitTest tests[TEST_ARRAY_SIZE(cases)];

	for (size_t i = 0; i < TEST_ARRAY_SIZE(cases); i++)
		tests[i] = (struct CMUnitTest){ cases[i].name, run_named_case, NULL, NULL, (void *)&cases[i] };
	return _cmocka_run_group_tests("authz-kernel", tests, TEST_ARRAY_SIZE(cases), NULL, NULL);
}
