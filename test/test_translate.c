/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The datapath's connect decision, case by case, through BPF_PROG_TEST_RUN: test/bpf/translate_test.bpf.c
 * includes bpf/sockmesh.bpf.c and runs decide() (what connect4/6 run) on maps each case seeds, with the
 * slot draws scripted, so every fallback of a connect racing an endpoint swap is hit every time. Each
 * case checks the outcome, where the connect goes, and that exactly one counter moved, by one.
 */
#include <arpa/inet.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/sockmesh.h"
#include "datapath/datapath.h"
#include "helpers.h"
#include "test/bpf/translate_test.h"
#include "translate_test.skel.h"

#define SVC 1	     /* the service under test: VIP 10.96.0.1, port 80 */
#define WP_SVC 2     /* a waypoint's own service: VIP 10.96.0.9, port 15008 */
#define GONE 7	     /* a backend id with no backend */
#define WP_PORT 15008

static struct sm_translate_test *skel;

static int setup(void **state)
{
	(void)state;
	struct bpf_program *prog;

	skel = sm_translate_test__open();
	if (!skel)
		fail_msg("opening the test object: %s", strerror(errno));
	/* only the test's program: the datapath's own are loaded by test_datapath */
	bpf_object__for_each_program(prog, skel->obj)
		bpf_program__set_autoload(prog, prog == skel->progs.decide_connect);
	if (sm_translate_test__load(skel))
		fail_msg("loading the test object: %s (run as root)", strerror(errno));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	sm_translate_test__destroy(skel);
	skel = NULL;
	return 0;
}

static void mapped(__u32 out[4], const char *ip4)
{
	out[0] = out[1] = 0;
	out[2] = htonl(0xffff);
	assert_int_equal(inet_pton(AF_INET, ip4, &out[3]), 1);
}

static void put(struct bpf_map *map, const void *key, const void *value)
{
	assert_int_equal(bpf_map_update_elem(bpf_map__fd(map), key, value, BPF_ANY), 0);
}

static void put_frontend(const char *ip4, __u32 id, __u8 kind)
{
	struct sm_frontend_key key = { 0 };
	struct sm_frontend_value value = { .id = id, .kind = kind };

	mapped((__u32 *)key.addr, ip4);
	put(skel->maps.sm_frontends, &key, &value);
}

static struct sm_waypoint waypoint_v4(const char *ip4)
{
	struct sm_waypoint wp = { .port = htons(WP_PORT), .flags = SM_WAYPOINT_V4 };

	assert_int_equal(inet_pton(AF_INET, ip4, &wp.addr4), 1);
	return wp;
}

/* A service with one port and endpoint counts per priority (the rest 0). */
static void put_service(__u32 id, const char *vip, __u16 port, __u8 lb_mode, const __u16 *counts, size_t n_counts,
			const struct sm_waypoint *wp)
{
	struct sm_service_value svc = { .n_ports = 1, .lb_mode = lb_mode };

	svc.ports[0] = htons(port);
	for (size_t p = 0; p < n_counts; p++)
		svc.endpoint_counts[p] = counts[p];
	if (wp)
		svc.waypoint = *wp;
	put(skel->maps.sm_services, &id, &svc);
	put_frontend(vip, id, SM_FRONTEND_SERVICE);
}

static void put_endpoint(__u32 service, __u8 priority, __u32 index, __u32 backend, __u16 target_port)
{
	struct sm_endpoint_key key = { .service_id = service, .priority = priority, .index = index };
	struct sm_endpoint_value value = { .backend_id = backend };

	value.target_ports[0] = htons(target_port);
	put(skel->maps.sm_endpoints, &key, &value);
}

/* A backend; ip4 NULL: an IPv6-only one. */
static void put_backend(__u32 id, const char *ip4, const struct sm_waypoint *wp)
{
	struct sm_backend_value value = { .families = SM_HAS_V6 };

	value.addr6[15] = (__u8)id;
	value.addr6[0] = 0xfd;
	if (ip4) {
		value.families |= SM_HAS_V4;
		assert_int_equal(inet_pton(AF_INET, ip4, &value.addr4), 1);
	}
	if (wp)
		value.waypoint = *wp;
	put(skel->maps.sm_backends, &id, &value);
}

static void script_draws(const __u32 *draws, size_t n)
{
	assert_true(n <= TEST_RANDOM_MAX);
	memset(skel->bss->random_values, 0, sizeof(skel->bss->random_values));
	memcpy(skel->bss->random_values, draws, n * sizeof(*draws));
}

static __u64 counter(__u32 key)
{
	int cpus = libbpf_num_possible_cpus();
	__u64 values[cpus], sum = 0;

	assert_true(cpus > 0);
	assert_int_equal(bpf_map_lookup_elem(bpf_map__fd(skel->maps.sm_counters), &key, values), 0);
	for (int i = 0; i < cpus; i++)
		sum += values[i];
	return sum;
}

struct expect {
	enum sm_counter outcome;
	const char *ip4; /* where the connect goes (NULL: where it was asked to) */
	__u16 port;
	__u32 draws; /* slot draws made */
};

/* Runs decide() on a connect to ip4:port; checks outcome, destination, draws and the one counter. */
static void check_connect(const char *ip4, __u16 port, bool tcp, struct expect want)
{
	struct decide_args args = { .port = htons(port), .v4 = 1, .tcp = tcp };
	__u64 before[SM_COUNTER_MAX];
	__u32 expected_addr[4];
	LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &args, .ctx_size_in = sizeof(args));

	mapped(args.addr, ip4);
	for (__u32 c = 0; c < SM_COUNTER_MAX; c++)
		before[c] = counter(c);
	assert_int_equal(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.decide_connect), &opts), 0);
	assert_int_equal(opts.retval, 0);

	if (args.outcome != (int)want.outcome)
		fail_msg("connect to %s:%u: outcome %d (%s), expected %d (%s)", ip4, port, args.outcome,
			 args.outcome >= 0 && args.outcome < SM_COUNTER_MAX ? sm_counter_name(args.outcome) : "?",
			 want.outcome, sm_counter_name(want.outcome));
	mapped(expected_addr, want.ip4 ? want.ip4 : ip4);
	assert_memory_equal(args.addr, expected_addr, sizeof(expected_addr));
	assert_int_equal(ntohs(args.port), want.ip4 ? want.port : port);
	assert_int_equal(args.draws, want.draws);
	for (__u32 c = 0; c < SM_COUNTER_MAX; c++) {
		__u64 moved = counter(c) - before[c];
		if (moved != (c == want.outcome ? 1u : 0u))
			fail_msg("connect to %s:%u (%s): counter %s moved by %llu", ip4, port, sm_counter_name(want.outcome),
				 sm_counter_name(c), (unsigned long long)moved);
	}
}

/* ---- what is left alone ---- */

static void not_a_frontend(void **state)
{
	(void)state;
	check_connect("10.1.1.1", 80, true, (struct expect){ .outcome = SM_COUNTER_UNTOUCHED });
}

static void not_a_service_port(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 1 }, 1, NULL);
	put_endpoint(SVC, 0, 0, 1, 8080);
	put_backend(1, "10.0.0.1", NULL);
	check_connect("10.96.0.1", 81, true, (struct expect){ .outcome = SM_COUNTER_UNTOUCHED });
}

static void passthrough(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_PASSTHROUGH, (__u16[]){ 1 }, 1, NULL);
	put_endpoint(SVC, 0, 0, 1, 8080);
	put_backend(1, "10.0.0.1", NULL);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_UNTOUCHED });
}

/* ---- load balancing ---- */

static void redirected(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 2 }, 1, NULL);
	put_endpoint(SVC, 0, 0, 1, 8080);
	put_endpoint(SVC, 0, 1, 2, 8081);
	put_backend(1, "10.0.0.1", NULL);
	put_backend(2, "10.0.0.2", NULL);
	script_draws((__u32[]){ 3 }, 1); /* 3 % 2: slot 1 */
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_REDIRECTED, .ip4 = "10.0.0.2", .port = 8081, .draws = 1 });
	check_connect("10.96.0.1", 80, false, (struct expect){ .outcome = SM_COUNTER_REDIRECTED, .ip4 = "10.0.0.2", .port = 8081, .draws = 1 });
}

/* The count was read before the last slot moved down into a hole and went: slot 0 instead. */
static void slot_gone_falls_back_to_slot_0(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 2 }, 1, NULL);
	put_endpoint(SVC, 0, 0, 1, 8080);
	put_backend(1, "10.0.0.1", NULL);
	script_draws((__u32[]){ 1 }, 1);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_REDIRECTED, .ip4 = "10.0.0.1", .port = 8080, .draws = 1 });
}

/* The slot's backend was deleted after its slots moved: one more pick finds another. */
static void backend_gone_picks_again(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 2 }, 1, NULL);
	put_endpoint(SVC, 0, 0, GONE, 8080);
	put_endpoint(SVC, 0, 1, 2, 8081);
	put_backend(2, "10.0.0.2", NULL);
	script_draws((__u32[]){ 0, 1 }, 2);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_REDIRECTED, .ip4 = "10.0.0.2", .port = 8081, .draws = 2 });
}

static void backend_gone_twice(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 1 }, 1, NULL);
	put_endpoint(SVC, 0, 0, GONE, 8080);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_NO_ENDPOINT, .draws = 2 });
}

/* A count with no slot behind it, not even slot 0 (all went between the two reads). */
static void no_slot_at_all(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 3 }, 1, NULL);
	script_draws((__u32[]){ 2 }, 1);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_NO_ENDPOINT, .draws = 1 });
}

static void backend_without_the_family(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 1 }, 1, NULL);
	put_endpoint(SVC, 0, 0, 1, 8080);
	put_backend(1, NULL, NULL); /* IPv6 only */
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_NO_ENDPOINT, .draws = 1 });
}

static void random_with_no_endpoint(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 0 }, 1, NULL);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_NO_ENDPOINT });
}

static void strict_with_empty_priority_0(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_STRICT, (__u16[]){ 0, 1 }, 2, NULL);
	put_endpoint(SVC, 1, 0, 1, 8080);
	put_backend(1, "10.0.0.1", NULL);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_STRICT_NO_MATCH });
}

static void failover_to_the_first_non_empty(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_FAILOVER, (__u16[]){ 0, 0, 0, 1 }, 4, NULL);
	put_endpoint(SVC, 3, 0, 3, 8083);
	put_backend(3, "10.0.0.3", NULL);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_REDIRECTED, .ip4 = "10.0.0.3", .port = 8083, .draws = 1 });
}

static void failover_with_every_priority_empty(void **state)
{
	(void)state;
	put_service(SVC, "10.96.0.1", 80, SM_LB_FAILOVER, (__u16[]){ 0 }, 1, NULL);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_NO_ENDPOINT });
}

/* ---- waypoints ---- */

static void waypoint_unresolved_refuses_tcp(void **state)
{
	(void)state;
	struct sm_waypoint unresolved = { .flags = SM_WAYPOINT_UNRESOLVED };

	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 1 }, 1, &unresolved);
	put_endpoint(SVC, 0, 0, 1, 8080);
	put_backend(1, "10.0.0.1", NULL);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_WAYPOINT_UNRESOLVED });
	/* UDP does not go through waypoints */
	check_connect("10.96.0.1", 80, false, (struct expect){ .outcome = SM_COUNTER_REDIRECTED, .ip4 = "10.0.0.1", .port = 8080, .draws = 1 });
}

static void waypoint_without_the_family_refuses(void **state)
{
	(void)state;
	struct sm_waypoint v6_only = { .port = htons(WP_PORT), .flags = SM_WAYPOINT_V6 };

	v6_only.addr6[0] = 0xfd;
	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 0 }, 1, &v6_only);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_WAYPOINT_UNRESOLVED });
}

static void service_waypoint(void **state)
{
	(void)state;
	struct sm_waypoint wp = waypoint_v4("10.0.9.9");

	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 0 }, 1, &wp);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_VIA_WAYPOINT, .ip4 = "10.0.9.9", .port = WP_PORT });
}

/* A waypoint named by a service whose VIP has no endpoint yet: to the VIP, counted once. */
static void waypoint_vip_without_endpoint(void **state)
{
	(void)state;
	struct sm_waypoint wp = waypoint_v4("10.96.0.9");

	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 0 }, 1, &wp);
	put_service(WP_SVC, "10.96.0.9", WP_PORT, SM_LB_RANDOM, (__u16[]){ 0 }, 1, NULL);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_VIA_WAYPOINT, .ip4 = "10.96.0.9", .port = WP_PORT });
}

static void waypoint_vip_with_endpoint(void **state)
{
	(void)state;
	struct sm_waypoint wp = waypoint_v4("10.96.0.9");

	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 0 }, 1, &wp);
	put_service(WP_SVC, "10.96.0.9", WP_PORT, SM_LB_RANDOM, (__u16[]){ 2 }, 1, NULL);
	put_endpoint(WP_SVC, 0, 0, 4, 15088);
	put_backend(4, "10.0.0.4", NULL);
	script_draws((__u32[]){ 1 }, 1); /* slot 1 went: slot 0 */
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_VIA_WAYPOINT, .ip4 = "10.0.0.4", .port = 15088, .draws = 1 });
}

static void backend_waypoint(void **state)
{
	(void)state;
	struct sm_waypoint wp = waypoint_v4("10.0.9.9");

	put_service(SVC, "10.96.0.1", 80, SM_LB_RANDOM, (__u16[]){ 1 }, 1, NULL);
	put_endpoint(SVC, 0, 0, 1, 8080);
	put_backend(1, "10.0.0.1", &wp);
	check_connect("10.96.0.1", 80, true, (struct expect){ .outcome = SM_COUNTER_VIA_WAYPOINT, .ip4 = "10.0.9.9", .port = WP_PORT, .draws = 1 });
	check_connect("10.96.0.1", 80, false, (struct expect){ .outcome = SM_COUNTER_REDIRECTED, .ip4 = "10.0.0.1", .port = 8080, .draws = 1 });
}

static void pod_address_waypoint(void **state)
{
	(void)state;
	struct sm_waypoint wp = waypoint_v4("10.0.9.9");

	put_backend(5, "10.0.0.5", &wp);
	put_frontend("10.0.0.5", 5, SM_FRONTEND_WORKLOAD);
	check_connect("10.0.0.5", 9000, true, (struct expect){ .outcome = SM_COUNTER_VIA_WAYPOINT, .ip4 = "10.0.9.9", .port = WP_PORT });
	check_connect("10.0.0.5", 9000, false, (struct expect){ .outcome = SM_COUNTER_UNTOUCHED });
}

/* ---- DNS ---- */

static void dns_to_the_proxy(void **state)
{
	(void)state;
	struct sm_config cfg = { .dns_port = htons(5353), .flags = SM_CONFIG_DNS4 };
	__u32 key = 0;

	assert_int_equal(inet_pton(AF_INET, "10.0.0.53", &cfg.dns_addr4), 1);
	put(skel->maps.sm_config, &key, &cfg);
	check_connect("10.1.1.1", 53, false, (struct expect){ .outcome = SM_COUNTER_DNS, .ip4 = "10.0.0.53", .port = 5353 });
	check_connect("10.1.1.1", 54, false, (struct expect){ .outcome = SM_COUNTER_UNTOUCHED });
}

#define CASE(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		CASE(not_a_frontend),
		CASE(not_a_service_port),
		CASE(passthrough),
		CASE(redirected),
		CASE(slot_gone_falls_back_to_slot_0),
		CASE(backend_gone_picks_again),
		CASE(backend_gone_twice),
		CASE(no_slot_at_all),
		CASE(backend_without_the_family),
		CASE(random_with_no_endpoint),
		CASE(strict_with_empty_priority_0),
		CASE(failover_to_the_first_non_empty),
		CASE(failover_with_every_priority_empty),
		CASE(waypoint_unresolved_refuses_tcp),
		CASE(waypoint_without_the_family_refuses),
		CASE(service_waypoint),
		CASE(waypoint_vip_without_endpoint),
		CASE(waypoint_vip_with_endpoint),
		CASE(backend_waypoint),
		CASE(pod_address_waypoint),
		CASE(dns_to_the_proxy),
	};

	return cmocka_run_group_tests_name("translate", tests, NULL, NULL);
}
