/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The datapath on the real kernel, one throwaway netns + cgroup + pin directory per case. Config goes
 * in through the workload model (as the agent does); then a process in the cgroup connects, and the
 * case checks which server accepted, what getpeername said, and which bytes the server read first.
 */
#include <time.h>

#include <bpf/bpf.h>

#include "clock.h"
#include "datapath_env.h"
#include "helpers.h"
#include "netns/netns.h"

#define SCOPE(name) ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__##name
#define MODE(name) ISTIO__WORKLOAD__LOAD_BALANCING__MODE__##name

/* ---- config used by the cases ---- */

static const struct service_spec web = {
	.namespace = "ns", .hostname = "web", .vips = { "127.10.0.1", "fd00:10::1" },
	.ports = { { 80, 8080 }, { 443, 8443 } },
};

static void apply_web(struct env *env, const struct workload_spec *workloads, size_t n)
{
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &web, "v1");
	for (size_t i = 0; i < n; i++)
		response_add_workload(&r, &workloads[i], "v1");
	env_apply(env, &r);
}

static void web_one_backend(struct env *env)
{
	struct workload_spec w = { .uid = "w/a", .addresses = { "127.0.1.1", "::1" }, .services = { { "ns/web" } } };

	apply_web(env, &w, 1);
}

static void web_own_target_port(struct env *env)
{
	struct workload_spec w = { .uid = "w/a", .addresses = { "127.0.1.1" },
				   .services = { { "ns/web", { { 80, 8082 } } } } };

	apply_web(env, &w, 1);
}

static void web_service_waypoint(struct env *env)
{
	struct service_spec svc = web;
	struct workload_spec w = { .uid = "w/a", .addresses = { "127.0.1.1", "::1" }, .services = { { "ns/web" } } };
	struct response r;

	svc.waypoint_ip = "127.0.7.7";
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &svc, "v1");
	response_add_workload(&r, &w, "v1");
	env_apply(env, &r);
}

static void web6_service_waypoint(struct env *env)
{
	struct service_spec svc = { .namespace = "ns", .hostname = "web6", .vips = { "fd00:10::2" },
				    .ports = { { 80, 8080 } }, .waypoint_ip = "::1" };
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &svc, "v1");
	env_apply(env, &r);
}

static void web_workload_waypoint(struct env *env)
{
	struct workload_spec w = { .uid = "w/a", .addresses = { "127.0.1.1" }, .services = { { "ns/web" } },
				   .waypoint_ip = "127.0.7.8" };

	apply_web(env, &w, 1);
}

static void pod_with_waypoint(struct env *env)
{
	struct workload_spec w = { .uid = "w/pod", .addresses = { "127.0.1.5" }, .waypoint_ip = "127.0.7.7" };
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &w, "v1");
	env_apply(env, &r);
}

/* The waypoint is a service (by hostname) with its own VIP and pods: the connection reaches a pod. */
static void web_waypoint_service(struct env *env)
{
	struct service_spec svc = web;
	struct service_spec waypoint = { .namespace = "ns", .hostname = "waypoint", .vips = { "127.10.0.7" },
					 .ports = { { 15008, 15008 } } };
	struct workload_spec waypoint_pod = { .uid = "w/waypoint", .addresses = { "127.0.7.9" },
					      .services = { { "ns/waypoint" } } };
	struct response r;

	svc.waypoint_service = "ns/waypoint";
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &svc, "v1");
	response_add_service(&r, &waypoint, "v1");
	response_add_workload(&r, &waypoint_pod, "v1");
	env_apply(env, &r);
}

static void web_waypoint_unknown(struct env *env)
{
	struct service_spec svc = web;
	struct response r;

	svc.waypoint_service = "ns/not-yet";
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &svc, "v1");
	env_apply(env, &r);
}

/* The node (node-a) is in zone-a. */
static void zoned(struct env *env, int mode, bool local_endpoint)
{
	struct service_spec svc = { .namespace = "ns", .hostname = "zoned", .vips = { "127.10.0.3" },
				    .ports = { { 80, 8080 } }, .mode = mode, .scopes = { SCOPE(ZONE) } };
	struct workload_spec w[] = {
		{ .uid = "w/node", .addresses = { "127.0.9.1" }, .node = "node-a", .zone = "zone-a" },
		{ .uid = "w/far", .addresses = { "127.0.1.2" }, .zone = "zone-b", .services = { { "ns/zoned" } } },
		{ .uid = "w/near", .addresses = { "127.0.1.1" }, .zone = "zone-a", .services = { { "ns/zoned" } } },
	};
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &svc, "v1");
	for (size_t i = 0; i < (local_endpoint ? 3u : 2u); i++)
		response_add_workload(&r, &w[i], "v1");
	env_apply(env, &r);
}

static void strict_with_local(struct env *env)
{
	zoned(env, MODE(STRICT), true);
}

static void strict_without_local(struct env *env)
{
	zoned(env, MODE(STRICT), false);
}

static void failover_to_far(struct env *env)
{
	zoned(env, MODE(FAILOVER), false);
}

/* ---- connect rows ---- */

struct connect_row {
	const char *name;
	void (*setup)(struct env *env);
	int family;
	const char *to;
	uint16_t port;
	int expect_errno;	   /* 0: the connection must reach the server */
	const char *server;	   /* where it must land */
	uint16_t server_port;
	const char *peer;	   /* what getpeername must say; NULL: what was connected to */
	const uint8_t *first;	   /* bytes the server must read before the payload (the TLV) */
	size_t first_len;
	int counter;		   /* an sm_counter that must move, or -1 */
	int times;		   /* connections to make (all must land on server); 0: 1 */
};

/* type 1, length 6, 127.10.0.1, port 80, end marker */
static const uint8_t tlv_web_v4[] = { 0x01, 0, 0, 0, 6, 127, 10, 0, 1, 0, 80, 0xfe, 0, 0, 0, 0 };
static const uint8_t tlv_pod_v4[] = { 0x01, 0, 0, 0, 6, 127, 0, 1, 5, 0x1f, 0x90, 0xfe, 0, 0, 0, 0 };
static const uint8_t tlv_web6[] = { 0x01, 0, 0, 0, 18, 0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
				    0, 80, 0xfe, 0, 0, 0, 0 };

static const struct connect_row connect_rows[] = {
	{ "VIP to backend over IPv4", web_one_backend, AF_INET, "127.10.0.1", 80, 0, "127.0.1.1", 8080,
	  .counter = SM_COUNTER_REDIRECTED },
	{ "VIP to backend over IPv6", web_one_backend, AF_INET6, "fd00:10::1", 443, 0, "::1", 8443,
	  .counter = SM_COUNTER_REDIRECTED },
	{ "VIP to backend over IPv4-mapped IPv6", web_one_backend, AF_INET6, "::ffff:127.10.0.1", 80, 0, "127.0.1.1", 8080,
	  .counter = SM_COUNTER_REDIRECTED },
	{ "a port with no mapping", web_one_backend, AF_INET, "127.10.0.1", 81, ECONNREFUSED,
	  .counter = SM_COUNTER_UNTOUCHED },
	{ "an unknown VIP", web_one_backend, AF_INET, "127.10.0.99", 80, ECONNREFUSED, .counter = SM_COUNTER_UNTOUCHED },
	{ "the workload's own target port", web_own_target_port, AF_INET, "127.10.0.1", 80, 0, "127.0.1.1", 8082,
	  .counter = -1 },
	{ "strict with a local endpoint", strict_with_local, AF_INET, "127.10.0.3", 80, 0, "127.0.1.1", 8080,
	  .counter = -1, .times = 20 },
	{ "strict without a local endpoint", strict_without_local, AF_INET, "127.10.0.3", 80, ECONNREFUSED,
	  .counter = SM_COUNTER_STRICT_NO_MATCH },
	{ "failover when priority 0 is empty", failover_to_far, AF_INET, "127.10.0.3", 80, 0, "127.0.1.2", 8080,
	  .counter = -1, .times = 10 },
	{ "service waypoint over IPv4", web_service_waypoint, AF_INET, "127.10.0.1", 80, 0, "127.0.7.7", 15008,
	  .first = tlv_web_v4, .first_len = sizeof(tlv_web_v4), .counter = SM_COUNTER_TLV },
	{ "service waypoint over IPv6", web6_service_waypoint, AF_INET6, "fd00:10::2", 80, 0, "::1", 15008,
	  .first = tlv_web6, .first_len = sizeof(tlv_web6), .counter = SM_COUNTER_TLV },
	{ "service waypoint over IPv4-mapped IPv6", web_service_waypoint, AF_INET6, "::ffff:127.10.0.1", 80, 0,
	  "127.0.7.7", 15008, .first = tlv_web_v4, .first_len = sizeof(tlv_web_v4), .counter = SM_COUNTER_VIA_WAYPOINT },
	{ "a waypoint service resolved to its pod", web_waypoint_service, AF_INET, "127.10.0.1", 80, 0, "127.0.7.9",
	  15008, .first = tlv_web_v4, .first_len = sizeof(tlv_web_v4), .counter = SM_COUNTER_VIA_WAYPOINT },
	{ "workload waypoint", web_workload_waypoint, AF_INET, "127.10.0.1", 80, 0, "127.0.7.8", 15008,
	  .first = tlv_web_v4, .first_len = sizeof(tlv_web_v4), .counter = SM_COUNTER_VIA_WAYPOINT },
	{ "direct pod address with a waypoint", pod_with_waypoint, AF_INET, "127.0.1.5", 8080, 0, "127.0.7.7", 15008,
	  .first = tlv_pod_v4, .first_len = sizeof(tlv_pod_v4), .counter = SM_COUNTER_VIA_WAYPOINT },
	{ "a waypoint not known yet refuses", web_waypoint_unknown, AF_INET, "127.10.0.1", 80, EPERM,
	  .counter = SM_COUNTER_WAYPOINT_UNRESOLVED },
};

static void connect_case(struct env *env, const void *arg)
{
	const struct connect_row *row = arg;
	char peer[80], want_peer[80];
	union sockaddr_any want;
	int listener = -1;

	row->setup(env);
	if (row->server)
		listener = listen_on(SOCK_STREAM, row->server, row->server_port);
	uint64_t before = row->counter >= 0 ? env_counter(env, row->counter) : 0;

	for (int i = 0; i < (row->times ? row->times : 1); i++) {
		int fd = connect_to(row->family, row->to, row->port);
		if (row->expect_errno) {
			CHECK(fd == -row->expect_errno, "connect gave %s, want %s", strerror(fd < 0 ? -fd : 0),
			      strerror(row->expect_errno));
			continue;
		}
		CHECK(fd >= 0, "connect to %s:%u: %s", row->to, row->port, strerror(-fd));
		peer_of(fd, peer, sizeof(peer));
		make_addr(row->peer ? row->peer : row->to, row->port, &want);
		format_addr(&want, want_peer, sizeof(want_peer));
		CHECK(strcmp(peer, want_peer) == 0, "getpeername gave %s, want %s", peer, want_peer);
		write_all(fd, "hello", 5);

		int server = accept_within(listener, 2000);
		CHECK(server >= 0, "connection %d did not reach %s:%u", i, row->server, row->server_port);
		uint8_t got[64];
		read_exactly(server, got, row->first_len + 5);
		CHECK(memcmp(got, row->first, row->first_len) == 0, "the first bytes are not the expected TLV");
		CHECK(memcmp(got + row->first_len, "hello", 5) == 0, "the payload differs");
		close(server);
		close(fd);
	}
	if (row->counter >= 0)
		CHECK(env_counter(env, row->counter) > before, "counter %s did not move", sm_counter_name(row->counter));
	if (listener >= 0)
		close(listener);
}

static void run_connect_row(void **state)
{
	assert_int_equal(run_case(connect_case, *state), 0);
}

/* ---- cases that need more than one connection ---- */

static void weighted_random_spread(struct env *env, const void *arg)
{
	(void)arg;
	enum { CONNECTS = 1000 };
	struct workload_spec w[] = {
		{ .uid = "w/a", .addresses = { "127.0.1.1" }, .services = { { "ns/web" } } },
		{ .uid = "w/b", .addresses = { "127.0.1.2" }, .services = { { "ns/web" } } },
		{ .uid = "w/c", .addresses = { "127.0.1.3" }, .capacity = 2, .services = { { "ns/web" } } },
	};
	const double share[] = { 0.25, 0.25, 0.5 };
	int listeners[3], hits[3] = { 0 };

	apply_web(env, w, 3);
	for (int i = 0; i < 3; i++)
		listeners[i] = listen_on(SOCK_STREAM, w[i].addresses[0], 8080);
	for (int n = 0; n < CONNECTS; n++) {
		int fd = connect_to(AF_INET, "127.10.0.1", 80);
		CHECK(fd >= 0, "connect %d: %s", n, strerror(-fd));
		close(fd);
		struct pollfd pfd[3];
		for (int i = 0; i < 3; i++)
			pfd[i] = (struct pollfd){ .fd = listeners[i], .events = POLLIN };
		CHECK(poll(pfd, 3, 2000) == 1, "connect %d reached no backend (or two)", n);
		for (int i = 0; i < 3; i++) {
			if (pfd[i].revents & POLLIN) {
				close(accept4(listeners[i], NULL, NULL, SOCK_CLOEXEC));
				hits[i]++;
			}
		}
	}
	for (int i = 0; i < 3; i++) {
		double expected = share[i] * CONNECTS;
		fprintf(stderr, "# %s: %d of %d (expected %.0f)\n", w[i].uid, hits[i], CONNECTS, expected);
		CHECK(hits[i] > expected * 0.7 && hits[i] < expected * 1.3, "%s got %d, expected %.0f +-30%%", w[i].uid,
		      hits[i], expected);
		close(listeners[i]);
	}
}

static void unhealthy_excluded(struct env *env, const void *arg)
{
	(void)arg;
	struct workload_spec w[] = {
		{ .uid = "w/sick", .addresses = { "127.0.1.1" }, .unhealthy = true, .services = { { "ns/web" } } },
		{ .uid = "w/well", .addresses = { "127.0.1.2" }, .services = { { "ns/web" } } },
	};
	int sick = listen_on(SOCK_STREAM, "127.0.1.1", 8080), well = listen_on(SOCK_STREAM, "127.0.1.2", 8080);

	apply_web(env, w, 2);
	for (int n = 0; n < 50; n++) {
		int fd = connect_to(AF_INET, "127.10.0.1", 80);
		CHECK(fd >= 0, "connect: %s", strerror(-fd));
		close(fd);
		int server = accept_within(well, 2000);
		CHECK(server >= 0, "connection %d missed the healthy backend", n);
		close(server);
	}
	CHECK(accept_within(sick, 0) < 0, "the unhealthy backend got a connection");
	close(sick);
	close(well);
}

static size_t sockhash_size(struct env *env);

static void tlv_exactly_once(struct env *env, const void *arg)
{
	(void)arg;
	int listener = listen_on(SOCK_STREAM, "127.0.7.7", 15008);
	uint8_t got[sizeof(tlv_web_v4) + 9];
	int one = 1;

	web_service_waypoint(env);
	int fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd >= 0, "connect: %s", strerror(-fd));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int server = accept_within(listener, 2000);
	CHECK(server >= 0, "no connection at the waypoint");
	CHECK(sockhash_size(env) == 1, "the socket owing a TLV is not in the sockhash (%zu are)", sockhash_size(env));
	write_all(fd, "one", 3);
	/* its TLV written, it leaves the sockhash: its later sends take TCP's own path */
	CHECK(sockhash_size(env) == 0, "the socket is still in the sockhash after its TLV");
	write_all(fd, "two", 3);
	write_all(fd, "six", 3);
	read_exactly(server, got, sizeof(got));
	CHECK(memcmp(got, tlv_web_v4, sizeof(tlv_web_v4)) == 0, "the TLV is not first");
	CHECK(memcmp(got + sizeof(tlv_web_v4), "onetwosix", 9) == 0, "the payload is not the three sends, once");
	close(fd);
	char rest;
	CHECK(read(server, &rest, 1) == 0, "more bytes than sent");
	close(server);
	close(listener);
}

/* Whether connect4/6 marked a port (host order) as one a TLV was owed to (sm_tlv_ports). */
static bool tlv_port_marked(struct env *env, uint16_t port)
{
	struct sm_port_bits ports;
	int map = env_pinned_map(env, "sm_tlv_ports");

	CHECK(bpf_map_lookup_elem(map, &(__u32){ 0 }, &ports) == 0, "reading sm_tlv_ports: %s", strerror(errno));
	close(map);
	return ports.words[port / 32] & (1u << (port % 32));
}

/* One connection to the waypoint's own address (nothing to translate): what its listener reads first. */
static void direct_to_waypoint_gets_no_tlv(int listener, const char *when)
{
	uint8_t got[5];
	int fd = connect_to(AF_INET, "127.0.7.7", 15008);

	CHECK(fd >= 0, "connect to the waypoint %s: %s", when, strerror(-fd));
	write_all(fd, "hello", 5);
	int server = accept_within(listener, 2000);
	CHECK(server >= 0, "no connection at the waypoint %s", when);
	read_exactly(server, got, sizeof(got));
	CHECK(memcmp(got, "hello", 5) == 0, "a socket that owes no TLV got one %s", when);
	close(server);
	close(fd);
}

/* sockops looks for a TLV only on a port connect4 sent one to; there, only a socket that owes one gets it. */
static void tlv_port_marks(struct env *env, const void *arg)
{
	(void)arg;
	int listener = listen_on(SOCK_STREAM, "127.0.7.7", 15008);
	uint8_t got[sizeof(tlv_web_v4)];

	web_service_waypoint(env);
	CHECK(!tlv_port_marked(env, 15008), "the waypoint's port is marked before any connect");
	direct_to_waypoint_gets_no_tlv(listener, "before its port is marked");

	int fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd >= 0, "connect to the VIP: %s", strerror(-fd));
	CHECK(tlv_port_marked(env, 15008), "the waypoint's port is not marked after a connect owing a TLV");
	CHECK(!tlv_port_marked(env, 80) && !tlv_port_marked(env, 8080), "a port no TLV is owed to is marked");
	write_all(fd, "x", 1);
	int server = accept_within(listener, 2000);
	CHECK(server >= 0, "no connection at the waypoint through the VIP");
	read_exactly(server, got, sizeof(got));
	CHECK(memcmp(got, tlv_web_v4, sizeof(tlv_web_v4)) == 0, "the TLV is not first");
	close(server);
	close(fd);

	direct_to_waypoint_gets_no_tlv(listener, "once its port is marked");
	close(listener);
}

static void set_dns(struct sm_config *config)
{
	config->flags |= SM_CONFIG_DNS4;
	inet_pton(AF_INET, "127.0.0.53", &config->dns_addr4);
	config->dns_port = htons(15053);
}

static void dns_to_the_proxy(struct env *env, const void *arg)
{
	(void)arg;
	union sockaddr_any server;
	socklen_t len;
	char text[64];
	int client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	/* None set: untouched (nothing listens on port 53 here). */
	len = make_addr("127.10.0.53", 53, &server);
	int tcp = connect_to(AF_INET, "127.10.0.53", 53);
	CHECK(tcp == -ECONNREFUSED, "TCP to port 53 without a proxy: %s", strerror(tcp < 0 ? -tcp : 0));

	env_config(env, set_dns);
	int proxy = listen_on(SOCK_DGRAM, "127.0.0.53", 15053);
	udp_round_trip(client, &server, len, proxy, text, sizeof(text));
	CHECK(strcmp(text, "127.10.0.53:53") == 0, "the reply came from %s, not the server asked", text);

	int tcp_proxy = listen_on(SOCK_STREAM, "127.0.0.53", 15053);
	tcp = connect_to(AF_INET, "127.10.0.53", 53);
	CHECK(tcp >= 0, "TCP DNS: %s", strerror(-tcp));
	CHECK(accept_within(tcp_proxy, 2000) >= 0, "TCP DNS did not reach the proxy");
	CHECK(env_counter(env, SM_COUNTER_DNS) >= 2, "the DNS counter did not move");
	close(tcp);
	close(tcp_proxy);
	close(proxy);
	close(client);
}

static void not_enroll_all(struct sm_config *config)
{
	config->flags &= ~SM_CONFIG_ENROLL_ALL;
}

static void enrollment(struct env *env, const void *arg)
{
	(void)arg;
	uint64_t cookie;
	int listener = listen_on(SOCK_STREAM, "127.0.1.1", 8080);

	web_one_backend(env);
	env_config(env, not_enroll_all);
	int fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd == -ECONNREFUSED, "a namespace not enrolled was redirected");

	CHECK(sm_netns_cookie_here(&cookie) == 0, "netns cookie: %s", strerror(errno));
	CHECK(sm_datapath_enroll(env->dp, cookie, true) == 0, "enrolling");
	fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd >= 0, "an enrolled namespace was not redirected: %s", strerror(-fd));
	CHECK(accept_within(listener, 2000) >= 0, "no connection at the backend");
	close(fd);

	CHECK(sm_datapath_enroll(env->dp, cookie, false) == 0, "unenrolling");
	fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd == -ECONNREFUSED, "a namespace no longer enrolled was redirected");
	close(listener);
}

static void connected_udp(struct env *env, const void *arg)
{
	(void)arg;
	union sockaddr_any vip;
	socklen_t len = make_addr("127.10.0.1", 80, &vip);
	char text[64];
	int server = listen_on(SOCK_DGRAM, "127.0.1.1", 8080);
	int client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	web_one_backend(env);
	CHECK(connect(client, &vip.sa, len) == 0, "connect: %s", strerror(errno));
	udp_round_trip(client, NULL, 0, server, text, sizeof(text));
	CHECK(strcmp(text, "127.10.0.1:80") == 0, "the reply came from %s, not the VIP", text);

	/* connected again, elsewhere: what it remembered of the VIP no longer holds */
	int other = listen_on(SOCK_DGRAM, "127.0.1.9", 9090);
	len = make_addr("127.0.1.9", 9090, &vip);
	CHECK(connect(client, &vip.sa, len) == 0, "connect again: %s", strerror(errno));
	peer_of(client, text, sizeof(text));
	CHECK(strcmp(text, "127.0.1.9:9090") == 0, "getpeername after connecting elsewhere gave %s", text);
	udp_round_trip(client, NULL, 0, other, text, sizeof(text));
	CHECK(strcmp(text, "127.0.1.9:9090") == 0, "the reply came from %s, not the server", text);
	close(other);
	close(client);
	close(server);
}

/* ---- where a translated TCP socket keeps its original destination (sm_orig_slots) ---- */

static void telemetry_on(struct sm_config *config)
{
	config->flags |= SM_CONFIG_TELEMETRY;
}

static void telemetry_off(struct sm_config *config)
{
	config->flags &= ~SM_CONFIG_TELEMETRY;
}

static void set_slot(struct env *env, uint64_t cookie, const struct sm_orig_slot *slot)
{
	__u32 index = (__u32)cookie & (SM_ORIG_SLOTS - 1);
	int map = env_pinned_map(env, "sm_orig_slots");
	int ret = bpf_map_update_elem(map, &index, slot, BPF_ANY) ? -errno : 0;

	close(map);
	CHECK(ret == 0, "writing slot %u: %s", index, strerror(-ret));
}

/* Whether the socket has its own storage in sm_sock_state (made by connect4 when it got no slot). */
static bool has_sock_state(struct env *env, int fd)
{
	struct sm_sock_state state;
	int map = env_pinned_map(env, "sm_sock_state");
	bool found = bpf_map_lookup_elem(map, &fd, &state) == 0;

	close(map);
	return found;
}

/* The kernel's clock that bpf_ktime_get_coarse_ns() reads. */
static uint64_t coarse_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int connect_fd(int fd, const char *addr, uint16_t port)
{
	union sockaddr_any sa;
	socklen_t len = make_addr(addr, port, &sa);

	return connect(fd, &sa.sa, len) ? -errno : 0;
}

/* Connects fd to the web VIP and checks that getpeername names the VIP and that the backend got it. */
static void through_the_vip(int fd, int listener)
{
	int ret = connect_fd(fd, "127.10.0.1", 80);
	char peer[64];

	CHECK(ret == 0, "connect to the VIP: %s", strerror(-ret));
	peer_of(fd, peer, sizeof(peer));
	CHECK(strcmp(peer, "127.10.0.1:80") == 0, "getpeername gave %s, not the VIP", peer);
	int server = accept_within(listener, 2000);
	CHECK(server >= 0, "the backend got no connection");
	close(server);
}

/* The datapath of the case loaded again, asking for the slot release or not (as an agent with telemetry off
 * or on does). */
static void reopen_datapath(struct env *env, bool release_slots)
{
	struct sm_datapath_options options = { .pin_dir = env->pin_dir,
						.cgroup = env->cgroup,
						.release_slots = release_slots };
	char err[512], why[256];

	sm_datapath_close(env->dp);
	env->dp = NULL;
	int ret = sm_datapath_open(&options, &env->dp, err, sizeof(err));
	CHECK(ret == 0, "opening the datapath again: %s", err);
	ret = sm_datapath_attached(env->dp, why, sizeof(why));
	CHECK(ret == 0, "attached: %s", why);
}

static void slot_through_connects(struct env *env, const void *arg)
{
	(void)arg;
	int listener = listen_on(SOCK_STREAM, "127.0.1.1", 8080);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	reopen_datapath(env, true); /* as an agent with telemetry off */
	web_one_backend(env);
	/* telemetry off: confirmed at once, not followed, given back by the socket's release */
	through_the_vip(fd, listener);
	uint64_t cookie = env_socket_cookie(fd);
	struct sm_orig_slot slot = env_slot_of(env, cookie);
	CHECK(slot.cookie == cookie, "telemetry off: the socket holds no slot (it holds %llu)", (unsigned long long)slot.cookie);
	CHECK(slot.unconfirmed_since == 0 && slot.stats.direction == 0,
	      "telemetry off: the slot is unconfirmed (%llu) or followed (direction %u)",
	      (unsigned long long)slot.unconfirmed_since, slot.stats.direction);
	CHECK(slot.state.flags == (SM_SOCK_REDIRECTED | SM_SOCK_ORIG_V4), "the slot's flags are %#x", slot.state.flags);
	CHECK(!has_sock_state(env, fd), "telemetry off: a socket storage was made beside the slot");
	close(fd);
	CHECK(env_slot_freed(env, cookie), "telemetry off: the slot was still held after the socket's release");

	env_config(env, telemetry_on);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	through_the_vip(fd, listener);
	cookie = env_socket_cookie(fd);
	slot = env_slot_of(env, cookie);
	CHECK(slot.cookie == cookie, "the socket holds no slot (it holds %llu)", (unsigned long long)slot.cookie);
	CHECK(slot.unconfirmed_since == 0, "the slot was not confirmed at TCP_CONNECT_CB");
	CHECK(slot.stats.direction == SM_CONN_OUTBOUND, "the slot's connection is not followed outbound");
	CHECK(slot.state.flags == (SM_SOCK_REDIRECTED | SM_SOCK_ORIG_V4), "the slot's flags are %#x", slot.state.flags);
	CHECK(slot.state.orig_port == htons(80), "the slot's port is %u", ntohs(slot.state.orig_port));
	CHECK(!has_sock_state(env, fd), "a socket storage was made beside the slot");
	close(fd);
	CHECK(env_slot_freed(env, cookie), "the slot was still held after the socket closed");

	/* refused after TCP_CONNECT_CB: its state callback sees it close */
	close(listener);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ret = connect_fd(fd, "127.10.0.1", 80);
	CHECK(ret == -ECONNREFUSED, "a VIP whose backend does not listen: %s", strerror(-ret));
	CHECK(env_slot_freed(env, env_socket_cookie(fd)), "a refused connect kept its slot");
	close(fd);
	/* with telemetry off the socket keeps it until its release */
	env_config(env, telemetry_off);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ret = connect_fd(fd, "127.10.0.1", 80);
	CHECK(ret == -ECONNREFUSED, "telemetry off, a VIP whose backend does not listen: %s", strerror(-ret));
	cookie = env_socket_cookie(fd);
	close(fd);
	CHECK(env_slot_freed(env, cookie), "telemetry off: a refused connect's release kept its slot");
	env_config(env, telemetry_on);

	/* failed before TCP_CONNECT_CB (no route in the case's namespace: nothing is sent): an unconfirmed
	 * claim, which connecting elsewhere gives back */
	struct workload_spec far = { .uid = "w/far", .addresses = { "192.0.2.1" }, .services = { { "ns/web" } } };
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &far, "v1");
	response_remove(&r, "w/a");
	env_apply(env, &r);
	listener = listen_on(SOCK_STREAM, "127.0.1.1", 8080);
	int failed[3];
	for (int i = 0; i < 3; i++) {
		failed[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ret = connect_fd(failed[i], "127.10.0.1", 80);
		CHECK(ret == -ENETUNREACH, "a backend without a route: %s", strerror(-ret));
		cookie = env_socket_cookie(failed[i]);
		slot = env_slot_of(env, cookie);
		CHECK(slot.cookie == cookie && slot.unconfirmed_since, "the failed connect left no unconfirmed claim");
	}
	cookie = env_socket_cookie(failed[2]);
	close(failed[2]);
	CHECK(env_slot_freed(env, cookie), "the release of a socket whose connect failed kept its claim");
	ret = connect_fd(failed[0], "127.0.1.1", 8080);
	CHECK(ret == 0, "connect elsewhere: %s", strerror(-ret));
	CHECK(!env_holds_slot(env, failed[0]), "connecting elsewhere kept the slot");
	/* and connecting the VIP again with telemetry off: its own claim, confirmed now, freed at its release */
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_remove(&r, "w/far");
	env_apply(env, &r);
	web_one_backend(env);
	env_config(env, telemetry_off);
	through_the_vip(failed[1], listener);
	cookie = env_socket_cookie(failed[1]);
	slot = env_slot_of(env, cookie);
	CHECK(slot.cookie == cookie && !slot.unconfirmed_since && !has_sock_state(env, failed[1]),
	      "connecting again with telemetry off did not confirm the socket's claim");
	close(failed[0]);
	close(failed[1]);
	CHECK(env_slot_freed(env, cookie), "the release kept a slot confirmed with telemetry off");
	close(listener);
}

/* A socket sent to a waypoint keeps its original destination, and its pending TLV, in a slot too (layout 11):
 * the TLV is read from there, once, and the slot is freed at the socket's release. */
static void tlv_from_a_slot(struct env *env, const void *arg)
{
	(void)arg;
	int listener = listen_on(SOCK_STREAM, "127.0.7.7", 15008);
	uint8_t got[sizeof(tlv_web_v4) + 6];
	char peer[64];

	reopen_datapath(env, true); /* as an agent with telemetry off */
	web_service_waypoint(env);
	int fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd >= 0, "connect: %s", strerror(-fd));
	uint64_t cookie = env_socket_cookie(fd);
	struct sm_orig_slot slot = env_slot_of(env, cookie);
	CHECK(slot.cookie == cookie && !slot.unconfirmed_since, "the socket owing a TLV holds no confirmed slot");
	CHECK(slot.state.flags & SM_SOCK_TLV_ONLY, "sockops did not find the pending TLV in the slot (flags %#x)",
	      slot.state.flags);
	CHECK(!has_sock_state(env, fd), "a socket storage was made beside the slot");
	peer_of(fd, peer, sizeof(peer));
	CHECK(strcmp(peer, "127.10.0.1:80") == 0, "getpeername gave %s, not the VIP", peer);
	int server = accept_within(listener, 2000);
	CHECK(server >= 0, "no connection at the waypoint");
	write_all(fd, "one", 3);
	write_all(fd, "two", 3);
	read_exactly(server, got, sizeof(got));
	CHECK(memcmp(got, tlv_web_v4, sizeof(tlv_web_v4)) == 0, "the TLV from the slot is not first");
	CHECK(memcmp(got + sizeof(tlv_web_v4), "onetwo", 6) == 0, "the payload is not the two sends, once");
	CHECK(!(env_slot_of(env, cookie).state.flags & SM_SOCK_TLV_PENDING), "the slot still owes its TLV");
	CHECK(sockhash_size(env) == 0, "the socket is still in the sockhash after its TLV");
	close(fd);
	CHECK(env_slot_freed(env, cookie), "the slot was still held after the socket's release");
	close(server);
	close(listener);
}

/* Whether the socket's connect through the VIP left its original destination in a slot (else in storage). */
static bool vip_in_slot(struct env *env, int listener)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	through_the_vip(fd, listener);
	bool in_slot = env_holds_slot(env, fd);
	CHECK(in_slot != has_sock_state(env, fd), "the original destination is in both or in neither");
	close(fd);
	return in_slot;
}

/* Without sm_sock_release (an agent with telemetry on, or a kernel before 6.2) nothing would free a slot that
 * telemetry does not follow: such a socket keeps socket storage; once attached, the release stays. */
static void slot_release_where_asked(struct env *env, const void *arg)
{
	(void)arg;
	int listener = listen_on(SOCK_STREAM, "127.0.1.1", 8080);
	char link[PATH_MAX];

	web_one_backend(env);
	snprintf(link, sizeof(link), "%s/links/sm_sock_release", env->pin_dir);
	CHECK(access(link, F_OK) != 0, "sm_sock_release was attached without being asked for");
	CHECK(!vip_in_slot(env, listener), "without the release, telemetry off took a slot");
	env_config(env, telemetry_on);
	CHECK(vip_in_slot(env, listener), "without the release, a followed socket took no slot");
	env_config(env, telemetry_off);
	reopen_datapath(env, true);
	CHECK(access(link, F_OK) == 0, "sm_sock_release is not attached when asked for");
	CHECK(vip_in_slot(env, listener), "with the release, telemetry off took no slot");
	reopen_datapath(env, false);
	CHECK(access(link, F_OK) == 0, "a later open detached the release its slots need");
	CHECK(vip_in_slot(env, listener), "with the release kept, telemetry off took no slot");
	close(listener);
}

/* Another socket's slot, held as each row says: confirmed, just claimed, or left unconfirmed long ago. */
static void slot_held_by_another(struct env *env, const void *arg)
{
	(void)arg;
	int listener = listen_on(SOCK_STREAM, "127.0.1.1", 8080);
	const struct {
		const char *what;
		uint64_t unconfirmed_for_s; /* 0: confirmed */
		bool taken;
	} holders[] = {
		{ "a confirmed holder", 0, false },
		{ "a holder that claimed it a second ago", 1, false },
		{ "a holder unconfirmed for longer than the stale time", SM_ORIG_SLOT_STALE_S + 2, true },
	};

	web_one_backend(env);
	env_config(env, telemetry_on);
	for (size_t i = 0; i < TEST_ARRAY_SIZE(holders); i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		uint64_t cookie = env_socket_cookie(fd), now = coarse_now_ns();
		struct sm_orig_slot other = { .cookie = cookie + SM_ORIG_SLOTS }; /* same slot, not this socket */

		CHECK(now > (SM_ORIG_SLOT_STALE_S + 2) * 1000000000ULL, "the machine booted seconds ago");
		if (holders[i].unconfirmed_for_s)
			other.unconfirmed_since = now - holders[i].unconfirmed_for_s * 1000000000ULL;
		set_slot(env, cookie, &other);
		uint64_t taken_before = env_counter(env, SM_COUNTER_ORIG_SLOT_TAKEN);
		through_the_vip(fd, listener);
		struct sm_orig_slot slot = env_slot_of(env, cookie);
		CHECK(env_counter(env, SM_COUNTER_ORIG_SLOT_TAKEN) - taken_before == !holders[i].taken,
		      "%s: orig_slot_taken moved by %llu", holders[i].what,
		      (unsigned long long)(env_counter(env, SM_COUNTER_ORIG_SLOT_TAKEN) - taken_before));
		if (holders[i].taken) {
			CHECK(slot.cookie == cookie && !slot.unconfirmed_since, "%s: its slot was not taken over",
			      holders[i].what);
			CHECK(!has_sock_state(env, fd), "%s: a socket storage was made too", holders[i].what);
		} else {
			CHECK(slot.cookie == other.cookie && slot.unconfirmed_since == other.unconfirmed_since,
			      "%s: its slot was taken", holders[i].what);
			CHECK(has_sock_state(env, fd), "%s: the original destination went nowhere", holders[i].what);
		}
		close(fd);
		if (holders[i].taken)
			CHECK(env_slot_freed(env, cookie), "%s: the slot taken over was not freed", holders[i].what);
		else
			CHECK(env_slot_of(env, cookie).cookie == other.cookie, "%s: its close freed the other's slot",
			      holders[i].what);
		memset(&other, 0, sizeof(other));
		set_slot(env, cookie, &other);
	}
	close(listener);
}

/* ---- acceleration ---- */

static size_t sockhash_size(struct env *env)
{
	return env_sock_key_entries(env, "sm_sockhash");
}

static void accelerate(struct sm_config *config)
{
	config->flags |= SM_CONFIG_ACCELERATE;
}

static void no_acceleration(struct sm_config *config)
{
	config->flags &= ~SM_CONFIG_ACCELERATE;
}

static uint8_t pattern_byte(size_t i)
{
	return (uint8_t)(i * 7 + i / 251);
}

/*
 * A local client and server exchange small and large (2 MiB) messages both ways, the server reading in
 * odd-sized pieces; then the client closes and the server sees the end of the stream.
 */
static void exchange(struct env *env, const char *server_addr, const char *connect_addr, int family)
{
	enum { LARGE = 2 << 20 };
	int listener = listen_on(SOCK_STREAM, server_addr, 9000);
	uint8_t *data = malloc(LARGE), *got = malloc(LARGE);

	for (size_t i = 0; i < LARGE; i++)
		data[i] = pattern_byte(i);
	pid_t pid = fork();
	if (pid == 0) {
		/* the server: echo a small message, then check the large one, read in pieces */
		int s = accept_within(listener, 5000);
		char small[5];
		read_exactly(s, small, 5);
		write_all(s, small, 5);
		for (size_t done = 0; done < LARGE;) {
			size_t piece = 1 + (done % 4093);
			if (piece > LARGE - done)
				piece = LARGE - done;
			read_exactly(s, got + done, piece);
			done += piece;
		}
		if (memcmp(got, data, LARGE))
			_exit(2);
		write_all(s, "done", 4);
		char end;
		_exit(read(s, &end, 1) == 0 ? 0 : 3);
	}
	int fd = connect_to(family, connect_addr, 9000);
	CHECK(fd >= 0, "connect: %s", strerror(-fd));
	char reply[5];
	write_all(fd, "small", 5);
	read_exactly(fd, reply, 5);
	CHECK(memcmp(reply, "small", 5) == 0, "the echo differs");
	write_all(fd, data, LARGE);
	read_exactly(fd, reply, 4);
	CHECK(memcmp(reply, "done", 4) == 0, "the server did not confirm");
	close(fd);
	int status;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the server saw different bytes (status %d)", status);
	close(listener);
	free(data);
	free(got);
	(void)env;
}

static void acceleration_on_and_off(struct env *env, const void *arg)
{
	(void)arg;
	uint64_t before = env_counter(env, SM_COUNTER_ACCELERATED);

	exchange(env, "127.0.0.1", "127.0.0.1", AF_INET);
	CHECK(env_counter(env, SM_COUNTER_ACCELERATED) == before, "accelerated while off");

	env_config(env, accelerate);
	exchange(env, "127.0.0.1", "127.0.0.1", AF_INET);
	uint64_t v4 = env_counter(env, SM_COUNTER_ACCELERATED);
	CHECK(v4 > before, "not accelerated while on");
	exchange(env, "::1", "::1", AF_INET6);
	uint64_t v6 = env_counter(env, SM_COUNTER_ACCELERATED);
	CHECK(v6 > v4, "IPv6 not accelerated");
	exchange(env, "127.0.0.1", "::ffff:127.0.0.1", AF_INET6);
	CHECK(env_counter(env, SM_COUNTER_ACCELERATED) > v6, "IPv4-mapped not accelerated");
	CHECK(sockhash_size(env) == 0, "closed sockets are still in the sockhash");

	env_config(env, no_acceleration);
	uint64_t off = env_counter(env, SM_COUNTER_ACCELERATED);
	exchange(env, "127.0.0.1", "127.0.0.1", AF_INET);
	CHECK(env_counter(env, SM_COUNTER_ACCELERATED) == off, "accelerated after being turned off");
}

/*
 * Only sockets whose peer is local enter the sockhash: an address on this host that is not loopback
 * and not listed as a local workload's is left alone, until the agent lists it.
 */
static void only_local_peers_enter(struct env *env, const void *arg)
{
	(void)arg;
	struct sm_frontend_key local = { .addr = { [10] = 0xff, [11] = 0xff, 10, 99, 0, 1 } };
	char byte;

	CHECK(system("ip addr add 10.99.0.1/32 dev lo") == 0, "adding 10.99.0.1 to lo");
	env_config(env, accelerate);
	int listener = listen_on(SOCK_STREAM, "10.99.0.1", 9000);
	int fd = connect_to(AF_INET, "10.99.0.1", 9000);
	int server = accept_within(listener, 2000);
	CHECK(fd >= 0 && server >= 0, "connect to 10.99.0.1");
	CHECK(sockhash_size(env) == 0, "a socket whose peer is not known local entered the sockhash");
	uint64_t before = env_counter(env, SM_COUNTER_ACCELERATED);
	write_all(fd, "x", 1);
	read_exactly(server, &byte, 1);
	CHECK(env_counter(env, SM_COUNTER_ACCELERATED) == before, "accelerated a peer not known local");
	close(fd);
	close(server);

	CHECK(sm_datapath_set_local_addresses(env->dp, &local, 1) == 0, "listing the local address");
	fd = connect_to(AF_INET, "10.99.0.1", 9000);
	server = accept_within(listener, 2000);
	CHECK(fd >= 0 && server >= 0, "connect to 10.99.0.1 again");
	CHECK(sockhash_size(env) == 2, "both ends of a local pair must be in the sockhash, %zu are",
	      sockhash_size(env));
	write_all(fd, "y", 1);
	read_exactly(server, &byte, 1);
	CHECK(byte == 'y' && env_counter(env, SM_COUNTER_ACCELERATED) > before, "a listed local peer was not accelerated");
	close(fd);
	close(server);
	CHECK(sockhash_size(env) == 0, "closed sockets are still in the sockhash");
	CHECK(sm_datapath_set_local_addresses(env->dp, NULL, 0) == 0, "clearing the local addresses");
	close(listener);
}

/* A connection to a local waypoint gets its TLV and is accelerated too. */
static void accelerated_waypoint(struct env *env, const void *arg)
{
	(void)arg;
	int listener = listen_on(SOCK_STREAM, "127.0.7.7", 15008);
	uint8_t got[sizeof(tlv_web_v4) + 5];

	web_service_waypoint(env);
	env_config(env, accelerate);
	int fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd >= 0, "connect: %s", strerror(-fd));
	int server = accept_within(listener, 2000);
	CHECK(server >= 0, "no connection at the waypoint");
	uint64_t before = env_counter(env, SM_COUNTER_ACCELERATED);
	write_all(fd, "hello", 5);
	read_exactly(server, got, sizeof(got));
	CHECK(memcmp(got, tlv_web_v4, sizeof(tlv_web_v4)) == 0, "no TLV first");
	CHECK(memcmp(got + sizeof(tlv_web_v4), "hello", 5) == 0, "the payload differs");
	write_all(server, "back", 4);
	read_exactly(fd, got, 4);
	CHECK(memcmp(got, "back", 4) == 0, "the reply differs");
	CHECK(env_counter(env, SM_COUNTER_ACCELERATED) >= before + 2, "not accelerated both ways");
	CHECK(sockhash_size(env) == 2, "an accelerated end left the sockhash after its TLV (%zu are in it)",
	      sockhash_size(env));
	close(fd);
	close(server);
	close(listener);
}

/* ---- restarts ---- */

static pid_t connect_loop(int report[2], int stop[2]);
static void drain(int listener, int ms);
static void collect_counts(int report, int listener, int counts[2]);

/* The datapath is closed and opened again from its pins while a client keeps connecting. */
static void reopen_while_connecting(struct env *env, const void *arg)
{
	(void)arg;
	enum { REOPENS = 5 };
	int listener = listen_on(SOCK_STREAM, "127.0.1.1", 8080);
	int report[2], stop[2], counts[2];

	web_one_backend(env);
	pid_t pid = connect_loop(report, stop);
	for (int reopen = 0; reopen < REOPENS; reopen++) {
		drain(listener, 100);
		sm_datapath_close(env->dp);
		env->dp = NULL;
		CHECK(env_open_datapath(env) == 0, "reopening the datapath");
		CHECK(sm_datapath_adopted(env->dp), "the reopened datapath did not adopt the pinned maps");
	}
	CHECK(write(stop[1], "x", 1) == 1, "stop");
	collect_counts(report[0], listener, counts);
	waitpid(pid, NULL, 0);
	fprintf(stderr, "# %d connects across %d reopens, %d failures\n", counts[0] + counts[1], REOPENS, counts[1]);
	CHECK(counts[1] == 0, "%d connects failed while the datapath was reopened", counts[1]);
	CHECK(counts[0] >= 100, "only %d connects were made", counts[0]);
	close(listener);
}

/* Connects to web's VIP until told to stop; returns the pid, and the fds to stop it and read counts. */
static pid_t connect_loop(int report[2], int stop[2])
{
	CHECK(pipe(report) == 0 && pipe(stop) == 0, "pipe");
	pid_t pid = fork();
	if (pid == 0) {
		int counts[2] = { 0, 0 };
		struct pollfd done = { .fd = stop[0], .events = POLLIN };
		while (poll(&done, 1, 0) == 0) {
			int fd = connect_to(AF_INET, "127.10.0.1", 80);
			counts[fd < 0]++;
			if (fd >= 0)
				close(fd);
		}
		_exit(write(report[1], counts, sizeof(counts)) == sizeof(counts) ? 0 : 1);
	}
	return pid;
}

/* Accepts (and closes) what comes for about ms milliseconds. */
static void drain(int listener, int ms)
{
	double until = now_seconds() + ms / 1000.0;
	int s;

	do {
		if ((s = accept_within(listener, 10)) >= 0)
			close(s);
	} while (now_seconds() < until);
}

/* Reads the loop's counts, accepting meanwhile so that its last connects are not stuck in a full backlog. */
static void collect_counts(int report, int listener, int counts[2])
{
	struct pollfd pfd = { .fd = report, .events = POLLIN };

	while (poll(&pfd, 1, 0) == 0)
		drain(listener, 10);
	CHECK(read(report, counts, 2 * sizeof(int)) == 2 * sizeof(int), "no report from the connect loop");
}

/* The case's datapath closed, its pinned maps renamed and relabelled as those of layout 0, as an older
 * agent would have left them; old_dir: where they are now. */
static void make_pins_look_older(struct env *env, char *old_dir, size_t size)
{
	char new_dir[256], meta[300];
	struct sm_meta old_layout = { .layout_version = 0 };
	__u32 key = 0;

	sm_datapath_close(env->dp);
	env->dp = NULL;
	snprintf(new_dir, sizeof(new_dir), "%s/maps-v%u", env->pin_dir, SM_LAYOUT_VERSION);
	snprintf(old_dir, size, "%s/maps-v0", env->pin_dir);
	CHECK(rename(new_dir, old_dir) == 0, "making the maps look older: %s", strerror(errno));
	snprintf(meta, sizeof(meta), "%s/sm_meta", old_dir);
	int meta_fd = bpf_obj_get(meta);
	CHECK(meta_fd >= 0 && bpf_map_update_elem(meta_fd, &key, &old_layout, BPF_ANY) == 0, "writing the old layout");
	close(meta_fd);
}

/* The new layout's maps filled by a first full sync (model), then the links switched; the old maps gone. */
static void migrate(struct env *env, const char *old_dir, void (*model)(struct env *env))
{
	char err[256];

	sm_model_free(env->model);
	CHECK(sm_model_new(&(struct sm_model_options){ .node_name = "node-a" }, &env->model) == 0, "model");
	model(env);
	CHECK(sm_datapath_commit(env->dp, err, sizeof(err)) == 0, "commit: %s", err);
	CHECK(access(old_dir, F_OK) != 0, "the old maps are still pinned");
}

/*
 * A new layout version: the agent loads its maps beside the old ones (which keep serving), fills them,
 * then switches the links. Connections never see a gap.
 */
static void layout_migration_without_a_gap(struct env *env, const void *arg)
{
	(void)arg;
	char old_dir[256];
	int listener = listen_on(SOCK_STREAM, "127.0.1.1", 8080);
	int report[2], stop[2], counts[2] = { 0, -1 };

	web_one_backend(env);
	make_pins_look_older(env, old_dir, sizeof(old_dir));

	pid_t pid = connect_loop(report, stop);
	drain(listener, 200);
	CHECK(env_open_datapath(env) == 0, "opening beside the old layout");
	CHECK(sm_datapath_migrating(env->dp), "the datapath did not see the old layout");
	drain(listener, 200);
	migrate(env, old_dir, web_one_backend);
	drain(listener, 200);

	CHECK(write(stop[1], "x", 1) == 1, "stop");
	collect_counts(report[0], listener, counts);
	waitpid(pid, NULL, 0);
	fprintf(stderr, "# %d connects across the migration, %d failures\n", counts[0] + counts[1], counts[1]);
	CHECK(counts[1] == 0 && counts[0] > 50, "%d of %d connects failed", counts[1], counts[0] + counts[1]);
	close(listener);
}

/* How many times the cgroup's sockops program has run (while bpf_enable_stats is on). */
static uint64_t sockops_runs(struct env *env)
{
	struct bpf_prog_info info = { 0 };
	uint32_t id, n = 1, len = sizeof(info);
	int cgroup = open(env->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	CHECK(cgroup >= 0 && bpf_prog_query(cgroup, BPF_CGROUP_SOCK_OPS, 0, NULL, &id, &n) == 0 && n == 1,
	      "querying the cgroup's sockops: %s", strerror(errno));
	close(cgroup);
	int fd = bpf_prog_get_fd_by_id(id);
	CHECK(fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0, "reading program %u", id);
	close(fd);
	return info.run_cnt;
}

/*
 * A socket connected to a waypoint by the old layout's programs, which sends nothing before the new
 * layout takes over: its first send still carries the TLV, once and first. The socket keeps the old
 * sockhash's sk_msg (a socket in a sockhash holds its own reference to the map's programs, which keep
 * their maps), so the old program writes it from what the old maps hold: socket storage, or a slot when
 * the release was asked for.
 */
static void tlv_across_a_migration(struct env *env, bool release_slots)
{
	char old_dir[256];
	int listener = listen_on(SOCK_STREAM, "127.0.7.7", 15008);
	uint8_t got[sizeof(tlv_web_v4) + 6];

	if (release_slots)
		reopen_datapath(env, true);
	web_service_waypoint(env);
	int fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd >= 0, "connect: %s", strerror(-fd));
	int server = accept_within(listener, 2000);
	CHECK(server >= 0, "no connection at the waypoint");
	struct sm_orig_slot slot = env_slot_of(env, env_socket_cookie(fd));
	bool owed_from_slot = slot.cookie && (slot.state.flags & SM_SOCK_TLV_PENDING);
	CHECK(owed_from_slot == release_slots && has_sock_state(env, fd) == !release_slots,
	      "the TLV is owed from a slot %d, from storage %d (want %d, %d)", owed_from_slot, has_sock_state(env, fd),
	      release_slots, !release_slots);

	make_pins_look_older(env, old_dir, sizeof(old_dir));
	CHECK(env_open_datapath(env) == 0, "opening beside the old layout");
	migrate(env, old_dir, web_service_waypoint);

	int stats = bpf_enable_stats(BPF_STATS_RUN_TIME);
	CHECK(stats >= 0, "bpf_enable_stats: %s", strerror(errno));
	write_all(fd, "one", 3);
	write_all(fd, "two", 3);
	read_exactly(server, got, sizeof(got));
	CHECK(memcmp(got, tlv_web_v4, sizeof(tlv_web_v4)) == 0, "the TLV owed from before the migration is not first");
	CHECK(memcmp(got + sizeof(tlv_web_v4), "onetwo", 6) == 0, "the payload is not the two sends, once");
	/* the new sockops, which cannot see what the old maps hold, stops the segments' callbacks it gets */
	uint64_t runs = sockops_runs(env);
	for (int i = 0; i < 20; i++) {
		write_all(fd, "x", 1);
		read_exactly(server, got, 1);
	}
	runs = sockops_runs(env) - runs;
	CHECK(runs <= 2, "sockops ran %llu times over 20 sends after the TLV", (unsigned long long)runs);
	close(stats);
	close(fd);
	char rest;
	CHECK(read(server, &rest, 1) == 0, "more bytes than sent");
	close(server);

	/* and a socket of the new layout's gets its own */
	fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd >= 0, "connect after the migration: %s", strerror(-fd));
	server = accept_within(listener, 2000);
	CHECK(server >= 0, "no connection at the waypoint after the migration");
	write_all(fd, "one", 3);
	read_exactly(server, got, sizeof(tlv_web_v4) + 3);
	CHECK(memcmp(got, tlv_web_v4, sizeof(tlv_web_v4)) == 0, "no TLV after the migration");
	close(fd);
	close(server);
	close(listener);
}

static void tlv_in_storage_across_a_migration(struct env *env, const void *arg)
{
	(void)arg;
	tlv_across_a_migration(env, false);
}

static void tlv_in_a_slot_across_a_migration(struct env *env, const void *arg)
{
	(void)arg;
	tlv_across_a_migration(env, true);
}

/* How many programs are attached to the case's cgroup at connect4. */
static __u32 connect4_programs(struct env *env)
{
	__u32 count = 0;
	int fd = open(env->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	CHECK(fd >= 0 && bpf_prog_query(fd, BPF_CGROUP_INET4_CONNECT, 0, NULL, NULL, &count) == 0, "querying %s",
	      env->cgroup);
	close(fd);
	return count;
}

/* The probe memo of pin_dir into out; false when there is none. */
static bool probe_memo_of(const char *pin_dir, char *out, size_t size)
{
	sm_datapath_probe_memo_path(pin_dir, out, size);
	return access(out, F_OK) == 0;
}

static void read_line(const char *path, char *line, size_t size)
{
	FILE *file = fopen(path, "re");

	CHECK(file && fgets(line, (int)size, file), "reading %s: %s", path, strerror(errno));
	fclose(file);
}

static void write_line(const char *path, const char *line)
{
	FILE *file = fopen(path, "we");

	CHECK(file && fputs(line, file) >= 0 && fclose(file) == 0, "writing %s: %s", path, strerror(errno));
}

/*
 * A start that fails after opening the datapath abandons it: a first open leaves no pin, directory or
 * attached program behind; a reopen leaves what the earlier agent pinned serving.
 */
static void abandoned_open_leaves_what_it_found(struct env *env, const void *arg)
{
	(void)arg;
	struct sm_datapath_options first = { .cgroup = env->cgroup };
	struct sm_datapath *dp = NULL;
	char pin_dir[160], err[512];

	char memo[PATH_MAX];
	snprintf(pin_dir, sizeof(pin_dir), "%s-first", env->pin_dir);
	first.pin_dir = pin_dir;
	CHECK(mkdir(SM_LOCK_DIR, 0755) == 0 || errno == EEXIST, "creating %s: %s", SM_LOCK_DIR, strerror(errno));
	CHECK(sm_datapath_open(&first, &dp, err, sizeof(err)) == 0, "a second datapath: %s", err);
	CHECK(connect4_programs(env) == 2, "the second datapath is not attached");
	bool remembered = probe_memo_of(pin_dir, memo, sizeof(memo));
	sm_datapath_abandon(dp);
	bool left = access(pin_dir, F_OK) == 0, memo_left = probe_memo_of(pin_dir, memo, sizeof(memo));
	if (left) /* the case's cleanup knows only its own pin directory */
		sm_datapath_uninstall(pin_dir, err, sizeof(err));
	if (memo_left)
		unlink(memo);
	CHECK(!left, "the abandoned first open left %s", pin_dir);
	CHECK(remembered, "the first open remembered no probe for %s", pin_dir);
	CHECK(!memo_left, "the abandoned first open left its probe memo %s", memo);
	CHECK(connect4_programs(env) == 1, "the abandoned first open left its programs attached");

	int listener = listen_on(SOCK_STREAM, "127.0.1.1", 8080);
	web_one_backend(env);
	struct sm_datapath_options again = { .pin_dir = env->pin_dir, .cgroup = env->cgroup };
	CHECK(sm_datapath_open(&again, &dp, err, sizeof(err)) == 0, "reopening: %s", err);
	sm_datapath_abandon(dp);
	CHECK(connect4_programs(env) == 1, "the abandoned reopen detached the earlier agent's programs");
	int fd = connect_to(AF_INET, "127.10.0.1", 80);
	CHECK(fd >= 0, "the VIP no longer connects after an abandoned reopen: %s", strerror(-fd));
	close(fd);
	close(listener);
}

/* Whether the datapath loaded its socket reaper (where the kernel has bpf_sock_destroy): asked to reap only
 * if an address that is nowhere local is, it says it cannot, or walks nothing. */
static bool reaper_loaded(struct env *env)
{
	struct sm_frontend_key nowhere = { .addr = { [10] = 0xff, [11] = 0xff, 192, 0, 2, 1 } };
	unsigned closed;
	char err[256];

	return sm_datapath_authz_reap(env->dp, -1, &nowhere, 1, NULL, &closed, err, sizeof(err)) != -EOPNOTSUPP;
}

/*
 * What the kernel probe found is remembered for the boot beside the pin directory's lock, and the next
 * open on the same boot, kernel and probe object takes it from there instead of probing; another key is
 * probed again and rewritten, and uninstall removes the memo.
 */
static void probe_remembered_for_the_boot(struct env *env, const void *arg)
{
	(void)arg;
	char memo[PATH_MAX], line[512], changed[512], pin_dir[160], err[512];

	CHECK(mkdir(SM_LOCK_DIR, 0755) == 0 || errno == EEXIST, "creating %s: %s", SM_LOCK_DIR, strerror(errno));
	reopen_datapath(env, true);
	CHECK(probe_memo_of(env->pin_dir, memo, sizeof(memo)), "no probe memo for %s in %s", env->pin_dir,
	      SM_LOCK_DIR);
	read_line(memo, line, sizeof(line));
	size_t len = strlen(line);
	CHECK(len > 5 && line[len - 1] == '\n', "the memo reads '%s'", line);
	CHECK((line[len - 4] == '1') == reaper_loaded(env), "the memo '%s' says otherwise than the probe", line);

	/* the same key with the reaper's flag turned: the next open believes it */
	snprintf(changed, sizeof(changed), "%s", line);
	changed[len - 4] = line[len - 4] == '1' ? '0' : '1';
	write_line(memo, changed);
	bool before = reaper_loaded(env);
	reopen_datapath(env, true);
	CHECK(reaper_loaded(env) != before, "the open probed again instead of reading the memo");

	/* another boot's memo: probed again, and the memo made this boot's */
	snprintf(changed, sizeof(changed), "00000000-0000-0000-0000-000000000000%s", strchr(line, ' '));
	changed[strlen(changed) - 4] = line[len - 4] == '1' ? '0' : '1';
	write_line(memo, changed);
	reopen_datapath(env, true);
	CHECK(reaper_loaded(env) == before, "another boot's memo was believed");
	read_line(memo, changed, sizeof(changed));
	CHECK(strcmp(changed, line) == 0, "the memo reads '%s', not '%s'", changed, line);

	/* uninstall removes the memo with the pins */
	struct sm_datapath_options other = { .cgroup = env->cgroup };
	struct sm_datapath *dp = NULL;
	snprintf(pin_dir, sizeof(pin_dir), "%s-memo", env->pin_dir);
	other.pin_dir = pin_dir;
	CHECK(sm_datapath_open(&other, &dp, err, sizeof(err)) == 0, "a second datapath: %s", err);
	bool written = probe_memo_of(pin_dir, memo, sizeof(memo));
	sm_datapath_close(dp);
	CHECK(sm_datapath_uninstall(pin_dir, err, sizeof(err)) == 0, "uninstalling %s: %s", pin_dir, err);
	CHECK(written, "no probe memo for %s", pin_dir);
	CHECK(!probe_memo_of(pin_dir, memo, sizeof(memo)), "uninstall left %s", memo);
}

typedef void (*case_fn)(struct env *env, const void *arg);

static const struct case_row {
	const char *name;
	case_fn fn;
} cases[] = {
	{ "random spreads by weight over 1,000 connects", weighted_random_spread },
	{ "unhealthy endpoints are excluded", unhealthy_excluded },
	{ "the TLV comes once over several sends", tlv_exactly_once },
	{ "sockops looks for a TLV only on a port one was owed to", tlv_port_marks },
	{ "a socket sent to a waypoint keeps its TLV in a slot, read once", tlv_from_a_slot },
	{ "DNS goes to the proxy, and comes back from the server asked", dns_to_the_proxy },
	{ "only enrolled network namespaces are steered", enrollment },
	{ "connected UDP to a VIP, then elsewhere", connected_udp },
	{ "a translated socket's slot, through its connects and its release", slot_through_connects },
	{ "a slot another socket holds is taken over only when left stale", slot_held_by_another },
	{ "only with sm_sock_release asked for (telemetry off) do sockets not followed take a slot", slot_release_where_asked },
	{ "same-node acceleration on and off", acceleration_on_and_off },
	{ "only sockets with a local peer enter the sockhash", only_local_peers_enter },
	{ "a local waypoint gets its TLV and acceleration", accelerated_waypoint },
	{ "reopened from pins while a client keeps connecting", reopen_while_connecting },
	{ "a layout version change is migrated without a gap", layout_migration_without_a_gap },
	{ "a TLV owed from socket storage across a layout migration comes first", tlv_in_storage_across_a_migration },
	{ "a TLV owed from a slot across a layout migration comes first", tlv_in_a_slot_across_a_migration },
	{ "an abandoned open leaves what it found", abandoned_open_leaves_what_it_found },
	{ "the kernel probe's result is remembered for the boot", probe_remembered_for_the_boot },
};

static void run_named_case(void **state)
{
	const struct case_row *row = *state;

	assert_int_equal(run_case(row->fn, NULL), 0);
}

int main(void)
{
	struct CMUnitTest tests[TEST_ARRAY_SIZE(connect_rows) + TEST_ARRAY_SIZE(cases)];
	size_t n = 0;

	for (size_t i = 0; i < TEST_ARRAY_SIZE(connect_rows); i++)
		tests[n++] = (struct CMUnitTest){ connect_rows[i].name, run_connect_row, NULL, NULL, (void *)&connect_rows[i] };
	for (size_t i = 0; i < TEST_ARRAY_SIZE(cases); i++)
		tests[n++] = (struct CMUnitTest){ cases[i].name, run_named_case, NULL, NULL, (void *)&cases[i] };
	return _cmocka_run_group_tests("datapath", tests, n, NULL, NULL);
}
