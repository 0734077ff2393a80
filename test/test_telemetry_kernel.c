/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L4 telemetry in the kernel: real TCP connections inside the case's own network namespace and cgroup
 * (test/datapath_env.h), read back from sm_conn_events. A client sends N bytes and the server M back,
 * then both close: the client's OUTBOUND and the server's INBOUND CLOSED events carry exactly N and M,
 * each from its own view, over plain TCP, the sockhash (accelerated), a service VIP (the client's event
 * names the VIP it asked for), a waypoint (the TLV is not the client's) and IPv6; the end is each socket's
 * only event. A connection through no waypoint is followed
 * at its connecting end only, which reports both (the accepting socket has no sm_conn_stats). Refused and
 * timed-out connects fail with their reason; an open connection reports its bytes when the flush iterator
 * runs, also the last burst of one gone idle; with the knob off nothing is recorded. The added cost per
 * connection is printed.
 */
#include <time.h>

#include <bpf/bpf.h>

#include "clock.h"
#include "datapath_env.h"
#include "helpers.h"
#include "netns/netns.h"

#define N_SENT 30011
#define M_BACK 20011
#define MAX_EVENTS 512
#define COST_ROUNDS 5
#define COST_CONNECTIONS 100
#define FLUSH_SECONDS 2.5 /* the agent's flush interval */

struct events {
	struct sm_conn_event ev[MAX_EVENTS];
	size_t n;
};

static int collect(void *ctx, const struct sm_conn_event *ev)
{
	struct events *events = ctx;

	if (events->n < MAX_EVENTS)
		events->ev[events->n++] = *ev;
	return 0;
}

static void telemetry(struct sm_config *config)
{
	config->flags |= SM_CONFIG_TELEMETRY;
}

static void telemetry_accelerated(struct sm_config *config)
{
	config->flags |= SM_CONFIG_TELEMETRY | SM_CONFIG_ACCELERATE;
}

static uint16_t local_port_of(int fd)
{
	union sockaddr_any sa;
	socklen_t len = sizeof(sa);

	CHECK(getsockname(fd, &sa.sa, &len) == 0, "getsockname: %s", strerror(errno));
	return ntohs(sa.sa.sa_family == AF_INET ? sa.in.sin_port : sa.in6.sin6_port);
}

/* The event of a kind and direction of the connection whose client port is port; NULL when none. */
static const struct sm_conn_event *find(const struct events *events, uint8_t kind, uint8_t direction, uint16_t port)
{
	for (size_t i = 0; i < events->n; i++) {
		const struct sm_conn_event *ev = &events->ev[i];
		uint16_t client = ntohs(direction == SM_CONN_OUTBOUND ? ev->local_port : ev->remote_port);

		if (ev->kind == kind && ev->direction == direction && client == port)
			return ev;
	}
	return NULL;
}

static size_t count_of(const struct events *events, uint64_t cookie)
{
	size_t n = 0;

	for (size_t i = 0; i < events->n; i++)
		n += events->ev[i].socket_cookie == cookie;
	return n;
}

/* What the agent does every few seconds in each enrolled namespace (here: the test's own): returns how
 * many followed sockets the flush found. */
static size_t flush(struct env *env)
{
	size_t followed = 0;
	char err[256];

	CHECK(sm_datapath_conn_flush(env->dp, -1, &followed, err, sizeof(err)) == 0, "flushing: %s", err);
	return followed;
}

/* Polls until fn holds or ms pass. */
static bool poll_until(struct sm_conn_events *ring, struct events *events, int ms,
		       bool (*done)(const struct events *events, const void *arg), const void *arg)
{
	double end = now_seconds() + ms / 1000.0;

	do {
		CHECK(sm_conn_events_poll(ring, 50) >= 0, "polling the events");
		if (done(events, arg))
			return true;
	} while (now_seconds() < end);
	return false;
}

static bool both_closed(const struct events *events, const void *arg)
{
	uint16_t port = *(const uint16_t *)arg;

	return find(events, SM_CONN_CLOSED, SM_CONN_OUTBOUND, port) && find(events, SM_CONN_CLOSED, SM_CONN_INBOUND, port);
}

static void fill(uint8_t *buf, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(i * 13 + seed);
}

/* The server's address is a workload of this node's: only connections to those report as INBOUND. */
static void local_workload(struct env *env, const char *addr)
{
	struct sm_frontend_key key = { 0 };
	struct in_addr v4;

	if (inet_pton(AF_INET, addr, &v4) == 1) {
		key.addr[10] = key.addr[11] = 0xff;
		memcpy(key.addr + 12, &v4, 4);
	} else
		CHECK(inet_pton(AF_INET6, addr, key.addr) == 1, "'%s' is no address", addr);
	CHECK(sm_datapath_set_local_addresses(env->dp, &key, 1) == 0, "writing the local addresses");
}

/* ---- exact byte counts ---- */

struct bytes_row {
	const char *name;
	void (*knobs)(struct sm_config *config);
	void (*resources)(struct env *env); /* NULL: none */
	int family;
	const char *listen_addr;
	uint16_t listen_port;
	const char *connect_addr;
	uint16_t connect_port;
	size_t tlv;	       /* bytes the server reads before the client's (the waypoint TLV) */
	uint8_t client_flags;  /* the flags the client's events must carry */
	uint8_t server_flags;
};

/* The service web (VIP 127.10.0.1:80) with one workload, 127.0.1.1:8080, and the waypoint given, if any. */
static void apply_web(struct env *env, const char *waypoint_ip)
{
	struct service_spec svc = { .namespace = "ns", .hostname = "web", .vips = { "127.10.0.1" },
				    .ports = { { 80, 8080 } }, .waypoint_ip = waypoint_ip };
	struct workload_spec w = { .uid = "w/a", .addresses = { "127.0.1.1" }, .services = { { "ns/web" } } };
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &svc, "v1");
	response_add_workload(&r, &w, "v1");
	env_apply(env, &r);
}

static void web_service_waypoint(struct env *env)
{
	apply_web(env, "127.0.7.7");
}

/* Without a waypoint: a connection translated to its backend, named by the VIP asked for. */
static void web_service(struct env *env)
{
	apply_web(env, NULL);
}

static const struct bytes_row bytes_rows[] = {
	{ "plain TCP over IPv4", telemetry, NULL, AF_INET, "127.0.0.1", 9000, "127.0.0.1", 9000, 0, SM_CONN_BOTH_ENDS,
	  SM_CONN_BOTH_ENDS },
	{ "accelerated (sockhash) over IPv4", telemetry_accelerated, NULL, AF_INET, "127.0.0.1", 9000, "127.0.0.1",
	  9000, 0, SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS, SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS },
	{ "a waypoint with the TLV", telemetry, web_service_waypoint, AF_INET, "127.0.7.7", 15008, "127.10.0.1", 80,
	  SM_TLV_LEN_V4, SM_CONN_WAYPOINT | SM_CONN_TRANSLATED, 0 },
	{ "an accelerated waypoint with the TLV", telemetry_accelerated, web_service_waypoint, AF_INET, "127.0.7.7",
	  15008, "127.10.0.1", 80, SM_TLV_LEN_V4, SM_CONN_WAYPOINT | SM_CONN_TRANSLATED | SM_CONN_ACCELERATED,
	  SM_CONN_ACCELERATED },
	{ "a service VIP", telemetry, web_service, AF_INET, "127.0.1.1", 8080, "127.10.0.1", 80, 0,
	  SM_CONN_TRANSLATED | SM_CONN_BOTH_ENDS, SM_CONN_BOTH_ENDS },
	{ "an accelerated service VIP", telemetry_accelerated, web_service, AF_INET, "127.0.1.1", 8080, "127.10.0.1",
	  80, 0, SM_CONN_TRANSLATED | SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS, SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS },
	{ "plain TCP over IPv6", telemetry, NULL, AF_INET6, "::1", 9000, "::1", 9000, 0, SM_CONN_BOTH_ENDS,
	  SM_CONN_BOTH_ENDS },
	{ "accelerated over IPv6", telemetry_accelerated, NULL, AF_INET6, "::1", 9000, "::1", 9000, 0,
	  SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS, SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS },
	{ "accelerated, an IPv6 client to an IPv4 server", telemetry_accelerated, NULL, AF_INET6, "127.0.0.1", 9000,
	  "::ffff:127.0.0.1", 9000, 0, SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS, SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS },
};

/* Whether the socket fd has sm_conn_stats in socket storage. */
static bool stats_in_storage(struct env *env, int fd)
{
	struct sm_conn_stats st;
	int map = env_pinned_map(env, "sm_conn_stats"); /* entries by the socket's fd */
	int ret = bpf_map_lookup_elem(map, &fd, &st) ? -errno : 0;
	close(map);
	CHECK(ret == 0 || ret == -ENOENT, "looking socket %d up in sm_conn_stats: %s", fd, strerror(-ret));
	return ret == 0;
}

/* Whether the kernel follows the socket fd: its sm_conn_stats in socket storage or in its slot. */
static bool followed_socket(struct env *env, int fd)
{
	return stats_in_storage(env, fd) || env_holds_slot(env, fd);
}

static void exact_bytes(struct env *env, const void *arg)
{
	const struct bytes_row *row = arg;
	static struct events events;
	struct sm_conn_events *ring = NULL;
	uint8_t *out = malloc(N_SENT), *in = malloc(N_SENT + SM_TLV_LEN_V6);

	CHECK(out && in, "out of memory");
	events.n = 0;
	if (row->resources)
		row->resources(env);
	local_workload(env, row->listen_addr);
	env_config(env, row->knobs);
	CHECK(sm_datapath_conn_events_open(env->dp, collect, &events, &ring) == 0, "opening the events");
	int listener = listen_on(SOCK_STREAM, row->listen_addr, row->listen_port);
	int fd = connect_to(row->family, row->connect_addr, row->connect_port);
	CHECK(fd >= 0, "connect: %s", strerror(-fd));
	int server = accept_within(listener, 2000);
	CHECK(server >= 0, "no connection");
	uint16_t port = local_port_of(fd);
	bool both_ends = row->server_flags & SM_CONN_BOTH_ENDS;

	fill(out, N_SENT, 1);
	write_all(fd, out, N_SENT);
	read_exactly(server, in, N_SENT + row->tlv);
	CHECK(memcmp(in + row->tlv, out, N_SENT) == 0, "the server read other bytes");
	fill(out, M_BACK, 2);
	write_all(server, out, M_BACK);
	read_exactly(fd, in, M_BACK);
	CHECK(memcmp(in, out, M_BACK) == 0, "the client read other bytes");
	/* the accepting end of a connection its connecting end reports is not followed at all */
	CHECK(followed_socket(env, fd) && followed_socket(env, server) == !both_ends,
	      "followed: client %d, server %d (want 1, %d)", followed_socket(env, fd), followed_socket(env, server),
	      !both_ends);
	/* a translated client (to a backend, or to a waypoint since layout 11) keeps its stats and original
	 * destination in a slot, no storage */
	bool in_slot = row->client_flags & SM_CONN_TRANSLATED;
	uint64_t cookie = env_socket_cookie(fd);
	CHECK(env_holds_slot(env, fd) == in_slot && stats_in_storage(env, fd) == !in_slot,
	      "the client's stats: in a slot %d, in storage %d (want %d, %d)", env_holds_slot(env, fd),
	      stats_in_storage(env, fd), in_slot, !in_slot);
	close(fd);
	char end;
	struct pollfd pfd = { .fd = server, .events = POLLIN };
	CHECK(poll(&pfd, 1, 2000) == 1 && read(server, &end, 1) == 0, "the server did not see the end");
	close(server);
	close(listener);

	CHECK(poll_until(ring, &events, 3000, both_closed, &port), "no CLOSED event of both ends (%zu events)",
	      events.n);
	CHECK(!in_slot || env_slot_freed(env, cookie), "the client's slot was still held after its close");
	const struct sm_conn_event *client = find(&events, SM_CONN_CLOSED, SM_CONN_OUTBOUND, port);
	const struct sm_conn_event *srv = find(&events, SM_CONN_CLOSED, SM_CONN_INBOUND, port);
	CHECK(client->bytes_sent == N_SENT && client->bytes_received == M_BACK,
	      "the client's view: sent %llu (want %d), received %llu (want %d)", (unsigned long long)client->bytes_sent,
	      N_SENT, (unsigned long long)client->bytes_received, M_BACK);
	CHECK(srv->bytes_received == N_SENT + row->tlv && srv->bytes_sent == M_BACK,
	      "the server's view: received %llu (want %zu), sent %llu (want %d)",
	      (unsigned long long)srv->bytes_received, N_SENT + row->tlv, (unsigned long long)srv->bytes_sent, M_BACK);
	CHECK(client->flags == row->client_flags && srv->flags == row->server_flags, "flags: client %#x, server %#x",
	      client->flags, srv->flags);
	CHECK(count_of(&events, client->socket_cookie) == 1 && count_of(&events, srv->socket_cookie) == 1,
	      "the close is not each socket's only event (client %zu, server %zu)", count_of(&events, client->socket_cookie),
	      count_of(&events, srv->socket_cookie));
	/* the event made from the connecting end's: that end's cookie with the top bit, no namespace */
	CHECK(client->socket_cookie != srv->socket_cookie && client->netns_cookie &&
		      (both_ends ? srv->socket_cookie == (client->socket_cookie | 1ULL << 63) && srv->netns_cookie == 0
				 : client->netns_cookie == srv->netns_cookie),
	      "cookies: socket %llu/%llu, netns %llu/%llu", (unsigned long long)client->socket_cookie,
	      (unsigned long long)srv->socket_cookie, (unsigned long long)client->netns_cookie,
	      (unsigned long long)srv->netns_cookie);
	CHECK(client->failure == SM_CONN_FAIL_NONE && client->now_ns >= client->start_ns && client->start_ns,
	      "times or failure");
	CHECK(memcmp(client->local_addr, srv->remote_addr, 16) == 0 && memcmp(client->remote_addr, srv->local_addr, 16) == 0 &&
		      client->local_port == srv->remote_port && client->remote_port == srv->local_port,
	      "the two ends disagree on the addresses");
	/* an accepted socket knows no original destination: the kernel's inbound events give the remote end */
	CHECK(memcmp(srv->orig_addr, srv->remote_addr, 16) == 0 && srv->orig_port == srv->remote_port,
	      "the server's event names an original destination");
	union sockaddr_any orig;
	make_addr(row->connect_addr, row->connect_port, &orig);
	CHECK(client->orig_port == htons(row->connect_port), "orig port %u", ntohs(client->orig_port));
	if (orig.sa.sa_family == AF_INET)
		CHECK(memcmp(client->orig_addr + 12, &orig.in.sin_addr, 4) == 0, "the orig address differs");
	else
		CHECK(memcmp(client->orig_addr, &orig.in6.sin6_addr, 16) == 0, "the orig address differs");
	CHECK(env_counter(env, SM_COUNTER_CONN_EVENTS_LOST) == 0, "events lost");
	CHECK(env_sock_key_entries(env, "sm_conn_received") == 0, "closed sockets left entries in sm_conn_received");
	sm_conn_events_close(ring);
	free(out);
	free(in);
}

static void run_bytes_row(void **state)
{
	assert_int_equal(run_case(exact_bytes, *state), 0);
}

/* ---- failures ---- */

static bool failed(const struct events *events, const void *arg)
{
	return find(events, SM_CONN_FAILED, SM_CONN_OUTBOUND, *(const uint16_t *)arg) != NULL;
}

/* Connects fd (bound to a port first, so that its events can be found); returns the port and the errno. */
static uint16_t connect_bound(int fd, const char *addr, uint16_t port, int *err)
{
	union sockaddr_any sa, any;
	socklen_t len = make_addr(addr, port, &sa);

	make_addr("127.0.0.1", 0, &any);
	CHECK(bind(fd, &any.sa, sizeof(any.in)) == 0, "bind: %s", strerror(errno));
	uint16_t local = local_port_of(fd);
	*err = connect(fd, &sa.sa, len) ? errno : 0;
	return local;
}

static void refused(struct env *env, const void *arg)
{
	(void)arg;
	static struct events events;
	struct sm_conn_events *ring = NULL;
	int err;

	events.n = 0;
	env_config(env, telemetry);
	CHECK(sm_datapath_conn_events_open(env->dp, collect, &events, &ring) == 0, "opening the events");
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t port = connect_bound(fd, "127.0.0.1", 9, &err);
	CHECK(err == ECONNREFUSED, "connect to a closed port: %s", strerror(err));
	CHECK(poll_until(ring, &events, 3000, failed, &port), "no FAILED event");
	const struct sm_conn_event *ev = find(&events, SM_CONN_FAILED, SM_CONN_OUTBOUND, port);
	CHECK(ev->failure == SM_CONN_FAIL_REFUSED && ev->bytes_sent == 0 && ev->bytes_received == 0,
	      "failure %u, bytes %llu/%llu", ev->failure, (unsigned long long)ev->bytes_sent,
	      (unsigned long long)ev->bytes_received);
	CHECK(count_of(&events, ev->socket_cookie) == 1, "the failure is not the socket's only event");
	close(fd);
	sm_conn_events_close(ring);
}

/* A listener whose accept queue is full drops the next SYN: the client times out (in about a second). */
static void timed_out(struct env *env, const void *arg)
{
	(void)arg;
	static struct events events;
	struct sm_conn_events *ring = NULL;
	union sockaddr_any sa;
	socklen_t len = make_addr("127.0.0.1", 9001, &sa);
	int one = 1, syncnt = 1, user_timeout = 500, err;

	events.n = 0;
	env_config(env, telemetry);
	CHECK(sm_datapath_conn_events_open(env->dp, collect, &events, &ring) == 0, "opening the events");
	int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	CHECK(bind(listener, &sa.sa, len) == 0 && listen(listener, 0) == 0, "listen: %s", strerror(errno));
	int first = connect_to(AF_INET, "127.0.0.1", 9001); /* fills the accept queue */
	CHECK(first >= 0, "the first connect: %s", strerror(-first));
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(setsockopt(fd, IPPROTO_TCP, TCP_SYNCNT, &syncnt, sizeof(syncnt)) == 0 &&
		      setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout)) == 0,
	      "TCP_SYNCNT / TCP_USER_TIMEOUT: %s", strerror(errno));
	uint16_t port = connect_bound(fd, "127.0.0.1", 9001, &err);
	CHECK(err == ETIMEDOUT, "connect to a full listener: %s", strerror(err));
	CHECK(poll_until(ring, &events, 3000, failed, &port), "no FAILED event");
	const struct sm_conn_event *ev = find(&events, SM_CONN_FAILED, SM_CONN_OUTBOUND, port);
	CHECK(ev->failure == SM_CONN_FAIL_TIMEOUT, "failure %u", ev->failure);
	close(fd);
	close(first);
	close(listener);
	sm_conn_events_close(ring);
}

/* ---- what lets the agent skip a namespace's flush (agent/flush_memo.h) ---- */

static bool keep_none(void *ctx, uint64_t cookie)
{
	(void)ctx;
	(void)cookie;
	return false;
}

/* Polls the flush until it finds want followed sockets, for up to ms. */
static size_t flush_until(struct env *env, size_t want, int ms)
{
	double end = now_seconds() + ms / 1000.0;
	size_t found;

	while ((found = flush(env)) != want && now_seconds() < end)
		usleep(20 * 1000);
	return found;
}

/*
 * The namespace's count of started connections moves with each followed connect once it has an entry (made
 * by the first read); the flush finds each followed socket, one still connecting too, and none once they
 * are closed; a sweep removes the count.
 */
static void started_and_found(struct env *env, const void *arg)
{
	(void)arg;
	union sockaddr_any sa;
	socklen_t len = make_addr("127.0.0.1", 9002, &sa);
	uint64_t cookie, started = 1;
	int one = 1, syncnt = 1;

	env_config(env, telemetry);
	CHECK(sm_netns_cookie_here(&cookie) == 0, "the namespace's cookie: %s", strerror(errno));
	CHECK(sm_datapath_conn_started(env->dp, cookie, &started) == -ENOENT, "a count before the first read");
	CHECK(sm_datapath_conn_started(env->dp, cookie, &started) == 0 && started == 0, "count %llu, not 0",
	      (unsigned long long)started);
	CHECK(flush(env) == 0, "the flush found followed sockets in an empty namespace");
	int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	CHECK(bind(listener, &sa.sa, len) == 0 && listen(listener, 0) == 0, "listen: %s", strerror(errno));
	int first = connect_to(AF_INET, "127.0.0.1", 9002); /* established, and fills the accept queue */
	CHECK(first >= 0, "the first connect: %s", strerror(-first));
	CHECK(sm_datapath_conn_started(env->dp, cookie, &started) == 0 && started == 1, "count %llu after a connect",
	      (unsigned long long)started);
	CHECK(flush(env) == 1, "the flush did not find the established socket");
	int connecting = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	CHECK(setsockopt(connecting, IPPROTO_TCP, TCP_SYNCNT, &syncnt, sizeof(syncnt)) == 0, "TCP_SYNCNT: %s",
	      strerror(errno));
	CHECK(connect(connecting, &sa.sa, len) && errno == EINPROGRESS, "a connect to a full listener: %s",
	      strerror(errno));
	CHECK(sm_datapath_conn_started(env->dp, cookie, &started) == 0 && started == 2, "count %llu after two connects",
	      (unsigned long long)started);
	CHECK(flush(env) == 2, "the flush did not find the socket still connecting");
	close(connecting);
	close(first);
	close(listener);
	size_t left = flush_until(env, 0, 3000);
	CHECK(left == 0, "the flush found %zu followed sockets after all closed", left);
	CHECK(sm_datapath_conn_started(env->dp, cookie, &started) == 0 && started == 2, "count %llu after the closes",
	      (unsigned long long)started);
	CHECK(sm_datapath_conn_started_sweep(env->dp, keep_none, NULL) >= 1, "the sweep removed nothing");
	CHECK(sm_datapath_conn_started(env->dp, cookie, &started) == -ENOENT, "the count survived the sweep");
}

/* ---- a long connection, the knob off ---- */

static bool updated(const struct events *events, const void *arg)
{
	const struct sm_conn_event *ev = find(events, SM_CONN_UPDATE, SM_CONN_OUTBOUND, *(const uint16_t *)arg);

	return ev && ev->bytes_sent > 0;
}

/* One connection between two sockets on 127.0.0.1 (a local workload), followed with knobs, its events
 * read into events (emptied first). */
struct followed {
	int listener, client, server;
	uint16_t port; /* the client's */
};

static struct followed follow_one(struct env *env, void (*knobs)(struct sm_config *config), struct events *events,
				  struct sm_conn_events **ring)
{
	struct followed c;

	events->n = 0;
	local_workload(env, "127.0.0.1");
	env_config(env, knobs);
	CHECK(sm_datapath_conn_events_open(env->dp, collect, events, ring) == 0, "opening the events");
	c.listener = listen_on(SOCK_STREAM, "127.0.0.1", 9000);
	c.client = connect_to(AF_INET, "127.0.0.1", 9000);
	c.server = accept_within(c.listener, 2000);
	CHECK(c.client >= 0 && c.server >= 0, "connect");
	c.port = local_port_of(c.client);
	return c;
}

static void unfollow(struct followed *c, struct sm_conn_events *ring)
{
	close(c->client);
	close(c->server);
	close(c->listener);
	sm_conn_events_close(ring);
}

/* A connection that keeps sending reports its bytes while open, within 5 s. */
static void long_connection(struct env *env, const void *arg)
{
	void (*knobs)(struct sm_config *config) = arg;
	static struct events events;
	struct sm_conn_events *ring = NULL;
	char buf[1000] = { 0 };

	struct followed c = follow_one(env, knobs, &events, &ring);
	int fd = c.client, server = c.server;
	uint16_t port = c.port;
	double end = now_seconds() + 5, next_flush = now_seconds() + FLUSH_SECONDS;
	bool seen = false;
	while (!seen && now_seconds() < end) {
		write_all(fd, buf, sizeof(buf));
		read_exactly(server, buf, sizeof(buf));
		if (now_seconds() >= next_flush) {
			flush(env);
			next_flush += FLUSH_SECONDS;
		}
		seen = poll_until(ring, &events, 50, updated, &port);
	}
	CHECK(seen, "no UPDATE with bytes within 5 s, flushing every %.1f s (%zu events)", FLUSH_SECONDS, events.n);
	CHECK(find(&events, SM_CONN_CLOSED, SM_CONN_OUTBOUND, port) == NULL, "closed while open");
	unfollow(&c, ring);
}

static void knob_off(struct env *env, const void *arg)
{
	(void)arg;
	static struct events events;
	struct sm_conn_events *ring = NULL;
	char byte = 'x';
	int err;

	events.n = 0;
	CHECK(sm_datapath_conn_events_open(env->dp, collect, &events, &ring) == 0, "opening the events");
	int listener = listen_on(SOCK_STREAM, "127.0.0.1", 9000);
	int fd = connect_to(AF_INET, "127.0.0.1", 9000);
	int server = accept_within(listener, 2000);
	CHECK(fd >= 0 && server >= 0, "connect");
	write_all(fd, &byte, 1);
	read_exactly(server, &byte, 1);
	close(fd);
	close(server);
	close(listener);
	int refused_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	connect_bound(refused_fd, "127.0.0.1", 9, &err);
	close(refused_fd);
	CHECK(sm_conn_events_poll(ring, 500) == 0 && events.n == 0, "%zu events with the knob off", events.n);
	sm_conn_events_close(ring);
}

/* ---- the cost: the datapath's sockops and sk_msg run time per connection, knob off and on ---- */

static uint64_t prog_run_ns(uint32_t id, uint64_t *runs)
{
	struct bpf_prog_info info = { 0 };
	uint32_t len = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(id);

	CHECK(fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0, "reading program %u", id);
	close(fd);
	*runs += info.run_cnt;
	return info.run_time_ns;
}

/* The run time so far of the cgroup's sockops and of the sockhash's sk_msg. */
static uint64_t run_ns(struct env *env, uint64_t *runs)
{
	uint32_t ids[4], n = 4;
	uint64_t total = 0;
	int cgroup = open(env->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	CHECK(cgroup >= 0 && bpf_prog_query(cgroup, BPF_CGROUP_SOCK_OPS, 0, NULL, ids, &n) == 0 && n == 1,
	      "querying the cgroup's sockops: %s", strerror(errno));
	close(cgroup);
	total += prog_run_ns(ids[0], runs);
	int sockhash = env_pinned_map(env, "sm_sockhash");
	n = 4;
	CHECK(bpf_prog_query(sockhash, BPF_SK_MSG_VERDICT, 0, NULL, ids, &n) == 0 && n == 1,
	      "querying the sockhash's sk_msg: %s", strerror(errno));
	close(sockhash);
	total += prog_run_ns(ids[0], runs);
	return total;
}

/* This thread's CPU time: with both ends here, loopback's softirqs run in it too (the kernel's work for
 * the connection, the programs and what calls them: what the rate of connections pays). */
static double thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Connections with one message each way and a close; returns the ns of program run time per connection,
 * and in *runs_per the programs' runs per connection. */
static double cost_per_connection(struct env *env, int listener, int n, double *runs_per, double *cpu_per)
{
	uint64_t runs_before = 0, runs_after = 0, before = run_ns(env, &runs_before);
	double cpu_before = thread_cpu_ns();
	char byte = 'x';

	for (int i = 0; i < n; i++) {
		int fd = connect_to(AF_INET, "127.0.0.1", 9000);
		int server = accept_within(listener, 2000);
		CHECK(fd >= 0 && server >= 0, "connect %d", i);
		write_all(fd, &byte, 1);
		read_exactly(server, &byte, 1);
		write_all(server, &byte, 1);
		read_exactly(fd, &byte, 1);
		close(fd);
		close(server);
	}
	*cpu_per = (thread_cpu_ns() - cpu_before) / n;
	usleep(100 * 1000); /* the last closes */
	uint64_t after = run_ns(env, &runs_after);
	*runs_per = (double)(runs_after - runs_before) / n;
	return (double)(after - before) / n;
}

/* One connection moving BULK_BYTES from client to server in 64 KiB writes; the ns of program run time
 * per MiB (the RTT callbacks of its ACKs, the sk_msg runs of its sends). */
#define BULK_BYTES (16 << 20)
static double cost_per_mib(struct env *env, int listener, double *runs_per)
{
	static char buf[64 << 10];
	uint64_t runs_before = 0, runs_after = 0, before;
	int fd = connect_to(AF_INET, "127.0.0.1", 9000), server = accept_within(listener, 2000);

	CHECK(fd >= 0 && server >= 0, "connect for the bulk transfer");
	before = run_ns(env, &runs_before);
	pid_t pid = fork();
	if (pid == 0) {
		for (size_t done = 0; done < BULK_BYTES; done += sizeof(buf))
			read_exactly(server, buf, sizeof(buf));
		_exit(0);
	}
	for (size_t done = 0; done < BULK_BYTES; done += sizeof(buf))
		write_all(fd, buf, sizeof(buf));
	int status;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the bulk reader failed");
	uint64_t after = run_ns(env, &runs_after);
	close(fd);
	close(server);
	*runs_per = (double)(runs_after - runs_before) / (BULK_BYTES >> 20);
	return (double)(after - before) / (BULK_BYTES >> 20);
}

/* The UPDATE of the connection whose client port is port, in direction, that carries `sent` bytes. */
struct update_want {
	uint16_t port;
	uint8_t direction;
	uint64_t sent, received;
};

static bool updated_to(const struct events *events, const void *arg)
{
	const struct update_want *want = arg;

	for (size_t i = 0; i < events->n; i++) {
		const struct sm_conn_event *ev = &events->ev[i];
		uint16_t client = ntohs(want->direction == SM_CONN_OUTBOUND ? ev->local_port : ev->remote_port);
		if (ev->kind == SM_CONN_UPDATE && ev->direction == want->direction && client == want->port &&
		    ev->bytes_sent == want->sent && ev->bytes_received == want->received)
			return true;
	}
	return false;
}

/* Moves the followed socket fd's last report ns back in time (in its sm_conn_stats), as if that long had
 * passed: the idle report is a minute away, too long for a test to wait. */
static void age_last_report(struct env *env, int fd, uint64_t ns)
{
	struct sm_conn_stats st;
	int map = env_pinned_map(env, "sm_conn_stats"); /* entries by the socket's fd */
	int ret = bpf_map_lookup_elem(map, &fd, &st) ? -errno : 0;
	if (ret == 0) {
		st.reported_ns -= ns;
		ret = bpf_map_update_elem(map, &fd, &st, BPF_EXIST) ? -errno : 0;
	}
	close(map);
	CHECK(ret == 0, "moving socket %d's last report back: %s", fd, strerror(-ret));
}

/*
 * A connection that sends a burst and goes idle: no callback runs any more, yet the next flush after
 * SM_CONN_REPORT_NS reports exactly the bytes so far, at both ends, and a second burst the same way; once
 * those are reported, flushes say nothing while no byte passes, until SM_CONN_IDLE_REPORT_S after the last
 * report, when the same bytes are reported once more.
 */
static void idle_burst(struct env *env, const void *arg)
{
	void (*knobs)(struct sm_config *config) = arg;
	static struct events events;
	struct sm_conn_events *ring = NULL;
	static uint8_t buf[N_SENT];

	struct followed c = follow_one(env, knobs, &events, &ring);
	int fd = c.client, server = c.server;
	uint16_t port = c.port;
	uint64_t sent = 0, back = 0;
	for (int burst = 0; burst < 2; burst++) {
		write_all(fd, buf, N_SENT);
		read_exactly(server, buf, N_SENT);
		write_all(server, buf, M_BACK);
		read_exactly(fd, buf, M_BACK);
		sent += N_SENT;
		back += M_BACK;
		struct update_want client = { port, SM_CONN_OUTBOUND, sent, back }, srv = { port, SM_CONN_INBOUND, back, sent };
		usleep((useconds_t)(SM_CONN_REPORT_NS / 1000) + 100 * 1000); /* idle, longer than a report's age */
		events.n = 0;
		flush(env);
		CHECK(poll_until(ring, &events, 1000, updated_to, &client), "burst %d: no UPDATE of the client with %llu/%llu bytes "
		      "(%zu events)", burst, (unsigned long long)sent, (unsigned long long)back, events.n);
		CHECK(updated_to(&events, &srv), "burst %d: no UPDATE of the server with %llu/%llu bytes", burst,
		      (unsigned long long)back, (unsigned long long)sent);
		events.n = 0;
		flush(env); /* reported just now: nothing to say */
		CHECK(sm_conn_events_poll(ring, 100) == 0 && events.n == 0, "a second flush reported %zu events", events.n);
	}
	/* idle for longer than a report's age, no byte since the last report: nothing to say either */
	usleep((useconds_t)(SM_CONN_REPORT_NS / 1000) + 100 * 1000);
	events.n = 0;
	CHECK(flush(env) == 1, "the flush did not find the idle connection");
	CHECK(sm_conn_events_poll(ring, 100) == 0 && events.n == 0, "an idle connection reported again (%zu events)",
	      events.n);
	/* ... until its last report is SM_CONN_IDLE_REPORT_S old: then the same bytes again, once */
	age_last_report(env, fd, SM_CONN_IDLE_REPORT_S * 1000000000ULL);
	struct update_want client = { port, SM_CONN_OUTBOUND, sent, back }, srv = { port, SM_CONN_INBOUND, back, sent };
	events.n = 0;
	flush(env);
	CHECK(poll_until(ring, &events, 1000, updated_to, &client), "no heartbeat UPDATE of the client with %llu/%llu "
	      "bytes (%zu events)", (unsigned long long)sent, (unsigned long long)back, events.n);
	CHECK(updated_to(&events, &srv), "no heartbeat UPDATE of the server with %llu/%llu bytes",
	      (unsigned long long)back, (unsigned long long)sent);
	events.n = 0;
	flush(env);
	CHECK(sm_conn_events_poll(ring, 100) == 0 && events.n == 0, "the heartbeat repeated (%zu events)", events.n);
	unfollow(&c, ring);
}

static double least(double a, double b)
{
	return a < b ? a : b;
}

static void cost(struct env *env, const void *arg)
{
	(void)arg;
	static struct events events;
	struct sm_conn_events *ring = NULL;
	int stats = bpf_enable_stats(BPF_STATS_RUN_TIME);

	CHECK(stats >= 0, "bpf_enable_stats: %s", strerror(errno));
	CHECK(sm_datapath_conn_events_open(env->dp, collect, &events, &ring) == 0, "opening the events");
	local_workload(env, "127.0.0.1"); /* both ends are local workloads, as in bench/run telemetry */
	int listener = listen_on(SOCK_STREAM, "127.0.0.1", 9000);
	for (int accelerated = 0; accelerated < 2; accelerated++) {
		struct sm_config config;
		double off = 1e12, on = 1e12, runs_off = 0, runs_on = 0, bulk_off = 1e12, bulk_on = 1e12, bulk_runs_off = 0,
		       bulk_runs_on = 0, cpu_off = 1e12, cpu_on = 1e12, cpu;

		CHECK(sm_datapath_get_config(env->dp, &config) == 0, "reading the config");
		if (accelerated)
			config.flags |= SM_CONFIG_ACCELERATE;
		/* the least of a few rounds: the machine's other load only ever adds */
		for (int round = 0; round < COST_ROUNDS; round++) {
			config.flags &= ~SM_CONFIG_TELEMETRY;
			CHECK(sm_datapath_set_config(env->dp, &config) == 0, "writing the config");
			off = least(off, cost_per_connection(env, listener, COST_CONNECTIONS, &runs_off, &cpu));
			cpu_off = least(cpu_off, cpu);
			bulk_off = least(bulk_off, cost_per_mib(env, listener, &bulk_runs_off));
			config.flags |= SM_CONFIG_TELEMETRY;
			CHECK(sm_datapath_set_config(env->dp, &config) == 0, "writing the config");
			on = least(on, cost_per_connection(env, listener, COST_CONNECTIONS, &runs_on, &cpu));
			cpu_on = least(cpu_on, cpu);
			bulk_on = least(bulk_on, cost_per_mib(env, listener, &bulk_runs_on));
			while (sm_conn_events_poll(ring, 0) > 0) /* room in the ring for the next round */
				;
		}
		printf("# %s: sockops + sk_msg run time per connection (both ends, one message each way; the least "
		       "of %d rounds of %d): %.0f ns in %.1f runs with telemetry off, %.0f ns in %.1f runs on: %.0f ns added\n",
		       accelerated ? "accelerated" : "plain TCP", COST_ROUNDS, COST_CONNECTIONS, off, runs_off, on, runs_on,
		       on - off);
		printf("# %s: CPU time per connection (both ends and the kernel's work for them, in one thread; the least of "
		       "%d rounds): %.0f ns with telemetry off, %.0f ns on: %.0f ns added (%.3fx)\n",
		       accelerated ? "accelerated" : "plain TCP", COST_ROUNDS, cpu_off, cpu_on, cpu_on - cpu_off, cpu_off / cpu_on);
		printf("# %s: run time per MiB of a bulk transfer: %.0f ns in %.1f runs with telemetry off, %.0f ns in "
		       "%.1f runs on: %.0f ns added\n",
		       accelerated ? "accelerated" : "plain TCP", bulk_off, bulk_runs_off, bulk_on, bulk_runs_on,
		       bulk_on - bulk_off);
	}
	close(listener);
	close(stats);
	sm_conn_events_close(ring);
}

typedef void (*case_fn)(struct env *env, const void *arg);

static const struct case_row {
	const char *name;
	case_fn fn;
	const void *arg;
} cases[] = {
	{ "a refused connect fails as REFUSED", refused, NULL },
	{ "an unanswered SYN fails as TIMEOUT", timed_out, NULL },
	{ "an open connection reports its bytes (TCP)", long_connection, (const void *)telemetry },
	{ "an open connection reports its bytes (accelerated)", long_connection, (const void *)telemetry_accelerated },
	{ "an idle connection's last burst is reported by the flush (TCP)", idle_burst, (const void *)telemetry },
	{ "an idle connection's last burst is reported by the flush (accelerated)", idle_burst,
	  (const void *)telemetry_accelerated },
	{ "a namespace's started connections counted, its followed sockets found by the flush", started_and_found,
	  NULL },
	{ "with the knob off nothing is recorded", knob_off, NULL },
	{ "the added cost per connection (printed)", cost, NULL },
};

static void run_named_case(void **state)
{
	const struct case_row *row = *state;

	assert_int_equal(run_case(row->fn, row->arg), 0);
}

int main(void)
{
	struct CMUnitTest tests[TEST_ARRAY_SIZE(bytes_rows) + TEST_ARRAY_SIZE(cases)];
	size_t n = 0;

	setvbuf(stdout, NULL, _IONBF, 0);
	for (size_t i = 0; i < TEST_ARRAY_SIZE(bytes_rows); i++)
		tests[n++] = (struct CMUnitTest){ bytes_rows[i].name, run_bytes_row, NULL, NULL, (void *)&bytes_rows[i] };
	for (size_t i = 0; i < TEST_ARRAY_SIZE(cases); i++)
		tests[n++] = (struct CMUnitTest){ cases[i].name, run_named_case, NULL, NULL, (void *)&cases[i] };
	return _cmocka_run_group_tests("telemetry-kernel", tests, n, NULL, NULL);
}
