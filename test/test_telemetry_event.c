/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's per-event telemetry path (agent/telemetry_event.c) and the hand-written formatting under it,
 * against what they replaced: endpoints as inet_ntop and snprintf wrote them, timestamps as gmtime_r and
 * strftime, escapes as the per-character escaper; series found by the names' pointers follow the model's
 * changes and eviction, and access log lines whose names are kept formatted read as those formatted anew; a
 * connection whose first event is its end is not followed.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/telemetry_event.h"
#include "bpf/sockmesh.h"
#include "model_harness.h"
#include "telemetry/internal.h"
#include "telemetry/telemetry.h"

static uint32_t next_random(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return (uint32_t)(*state >> 16);
}

/* ---- endpoints ---- */

static void reference_endpoint(const uint8_t addr[16], uint16_t port, char *buf, size_t size)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	char text[INET6_ADDRSTRLEN];
	bool v4 = memcmp(addr, mapped, 12) == 0;

	inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? addr + 12 : addr, text, sizeof(text));
	snprintf(buf, size, v4 ? "%s:%u" : "[%s]:%u", text, port);
}

static void endpoints_as_inet_ntop(void **state)
{
	static const char *const addresses[] = { "0.0.0.0", "255.255.255.255", "10.1.2.3", "127.0.0.1",
						 "192.168.100.9", "::1", "::", "fd00::7",
						 "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0:10.0.0.1" };
	static const uint16_t ports[] = { 0, 9, 80, 8080, 65535 };
	uint64_t random = 12345;

	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(addresses) + 200; i++) {
		uint8_t addr[16] = { 0 };
		if (i < TEST_ARRAY_SIZE(addresses) && strchr(addresses[i], ':')) {
			assert_int_equal(inet_pton(AF_INET6, addresses[i], addr), 1);
		} else if (i < TEST_ARRAY_SIZE(addresses)) {
			addr[10] = addr[11] = 0xff;
			assert_int_equal(inet_pton(AF_INET, addresses[i], addr + 12), 1);
		} else { /* random IPv4, and random IPv6 */
			for (int b = i % 2 ? 12 : 0; b < 16; b++)
				addr[b] = (uint8_t)next_random(&random);
			if (i % 2)
				addr[10] = addr[11] = 0xff;
		}
		for (size_t p = 0; p < TEST_ARRAY_SIZE(ports); p++) {
			char want[64], got[64], full[64];
			reference_endpoint(addr, ports[p], full, sizeof(full));
			/* every size, down to a cut */
			for (size_t size = strlen(full) + 2; size > 0; size--) {
				memset(got, 'x', sizeof(got));
				format_mapped_endpoint(addr, ports[p], got, size);
				reference_endpoint(addr, ports[p], want, size);
				assert_string_equal(got, want);
			}
			memset(got, 'x', sizeof(got));
			format_mapped_endpoint(addr, ports[p], got, 0);
			assert_int_equal(got[0], 'x');
		}
	}
}

/* ---- the access log's timestamp ---- */

static void timestamps_as_strftime(void **state)
{
	/* 1970, the end of a day, 2000-02-29 (a leap day of a century), 2024, 2100-02-28, 2100-03-01, 9999 */
	static const int64_t fixed[] = { 0, 86399, 86400, 951782400, 951868799, 1712849922, 4107456000,
					 4107542400, 253402300799 };
	struct sm_tel_conn c = { .kind = SM_CONN_CLOSED, .direction = SM_CONN_OUTBOUND };
	uint64_t random = 99;

	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(fixed) + 20000; i++) {
		struct timespec now = {
			.tv_sec = i < TEST_ARRAY_SIZE(fixed) ? fixed[i] : (time_t)(next_random(&random) % 4200000000u),
			.tv_nsec = (long)(next_random(&random) % 1000000000u),
		};
		char want[64], line[1024];
		struct tm tm;
		size_t len;

		gmtime_r(&now.tv_sec, &tm);
		len = strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(want + len, sizeof(want) - len, ".%06ldZ\t", now.tv_nsec / 1000);
		sm_telemetry_access_log(&c, SM_TEL_LOG_PLAIN, NULL, &now, line, sizeof(line));
		if (strncmp(line, want, strlen(want)) != 0)
			fail_msg("%lld.%09ld: %.28s, want %s", (long long)now.tv_sec, now.tv_nsec, line, want);
	}
}

/* ---- escapes ---- */

/* The escaper the table replaced: the escape of c, or NULL when c stands for itself. */
static const char *reference_escape(unsigned char c, enum tel_escape escape, char buf[16])
{
	switch (c) {
	case '\\': return "\\\\";
	case '"': return "\\\"";
	case '\n': return "\\n";
	default: break;
	}
	if (escape == TEL_ESCAPE_PROMETHEUS || (c >= 0x20 && c != 0x7f))
		return NULL;
	if (c == '\r')
		return "\\r";
	if (c == '\t')
		return "\\t";
	snprintf(buf, 16, escape == TEL_ESCAPE_JSON ? "\\u%04x" : "\\u{%x}", c);
	return buf;
}

static void escapes_as_before(void **state)
{
	static const enum tel_escape escapes[] = { TEL_ESCAPE_PROMETHEUS, TEL_ESCAPE_QUOTED, TEL_ESCAPE_JSON };

	(void)state;
	for (size_t e = 0; e < TEST_ARRAY_SIZE(escapes); e++) {
		for (int c = 1; c < 256; c++) {
			char value[] = { 'a', 'b', (char)c, 'c', (char)c, '\0' }, want[64], buf[16];
			struct tel_text text = { 0 };
			const char *escaped = reference_escape((unsigned char)c, escapes[e], buf);
			if (escaped)
				snprintf(want, sizeof(want), "ab%sc%s", escaped, escaped);
			else
				snprintf(want, sizeof(want), "%s", value);
			tel_append_escaped(&text, value, escapes[e]);
			tel_text_end(&text);
			assert_string_equal(text.data, want);
			free(text.data);
		}
	}
	/* a missing value is `unknown`; the raw form keeps it empty */
	struct tel_text text = { 0 };
	tel_append_escaped(&text, "", TEL_ESCAPE_JSON);
	tel_append_escaped_raw(&text, "", TEL_ESCAPE_JSON);
	tel_append_escaped(&text, NULL, TEL_ESCAPE_JSON);
	tel_text_end(&text);
	assert_string_equal(text.data, "unknownunknown");
	free(text.data);
}

/* ---- the per-event path, with the model ---- */

static void address16(const char *text, uint8_t out[16])
{
	memset(out, 0, 16);
	out[10] = out[11] = 0xff;
	assert_int_equal(inet_pton(AF_INET, text, out + 12), 1);
}

/* A CLOSED (or other kind) of client 10.1.0.1 → server 10.1.0.2:8080, reached through the VIP 10.96.0.10:80. */
static struct sm_conn_event event_of(uint64_t cookie, uint8_t kind, uint8_t direction)
{
	struct sm_conn_event ev = { .socket_cookie = cookie, .kind = kind, .direction = direction,
				    .bytes_sent = 10, .bytes_received = 20, .start_ns = 1, .now_ns = 2 };
	bool out = direction == SM_CONN_OUTBOUND;

	address16(out ? "10.1.0.1" : "10.1.0.2", ev.local_addr);
	address16(out ? "10.1.0.2" : "10.1.0.1", ev.remote_addr);
	address16("10.96.0.10", ev.orig_addr);
	ev.local_port = htons(out ? 40000 : 8080);
	ev.remote_port = htons(out ? 8080 : 40000);
	return ev;
}

/* The value of istio_tcp_connections_closed_total of the series whose labels contain part; -1 when none. */
static long long closed_with(struct sm_telemetry *t, const char *part)
{
	size_t len;
	char *text = sm_telemetry_render(t, &len);
	long long value = -1;

	assert_non_null(text);
	for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		char *end = strchr(line, '\n');
		if (strncmp(line, "istio_tcp_connections_closed_total{", 35) != 0)
			continue;
		*end = '\0';
		if (strstr(line, part))
			value = strtoll(strrchr(line, ' ') + 1, NULL, 10);
		*end = '\n';
	}
	free(text);
	return value;
}

/* The labels of the client's series as the source reporter, up to its namespace. */
#define SOURCE_IN_SHOP                                                                                     \
	"reporter=\"source\",source_workload=\"unknown\",source_canonical_service=\"unknown\","               \
	"source_canonical_revision=\"unknown\",source_workload_namespace=\"shop\""

static void record_ok(struct tel_event_sink *sink, struct harness *h, struct sm_conn_event ev, char *line,
		      size_t size)
{
	struct timespec now = { .tv_sec = 1712849922 };
	size_t len;

	assert_int_equal(tel_event_conn(sink, h->model, &ev, &now, line, size, &len), 0);
	assert_true(len < size);
}

static bool exists(void *ctx, const char *uid)
{
	return sm_model_workload_exists(ctx, uid);
}

static void cached_names_follow_the_model(void **state)
{
	struct workload_spec pods[] = {
		{ .uid = "Kubernetes//Pod/shop/sleep-1", .addresses = { "10.1.0.1" }, .namespace = "shop", .node = "node-a" },
		{ .uid = "Kubernetes//Pod/shop/echo-1", .addresses = { "10.1.0.2" }, .namespace = "shop", .node = "node-a",
		  .services = { { "shop/echo.shop.svc.cluster.local", { { 80, 8080 } } } } },
	};
	struct service_spec svc = { .namespace = "shop", .hostname = "echo.shop.svc.cluster.local",
				    .vips = { "10.96.0.10" }, .ports = { { 80, 8080 } } };
	struct sm_telemetry_counts counts;
	struct tel_event_sink sink = { .access_log = true, .format = SM_TEL_LOG_PLAIN };
	struct harness h;
	char line[2048];

	(void)state;
	harness_open(&h, "node-a", NULL);
	apply_service(&h, &svc);
	apply_workloads(&h, pods, 2);
	assert_int_equal(sm_telemetry_new(&sink.counters), 0);

	/* both ends, twice: the second time found by the names' pointers */
	for (uint64_t cookie = 1; cookie <= 4; cookie++)
		record_ok(&sink, &h, event_of(cookie, SM_CONN_CLOSED, cookie % 2 ? SM_CONN_OUTBOUND : SM_CONN_INBOUND),
			  line, sizeof(line));
	assert_int_equal(closed_with(sink.counters, SOURCE_IN_SHOP), 2);
	assert_non_null(strstr(line, "dst.service=\"echo.shop.svc.cluster.local\""));
	sm_telemetry_counts(sink.counters, &counts);
	assert_int_equal(counts.series, 2);
	/* a connection whose first event is its end is counted, never followed */
	assert_int_equal(counts.open, 0);

	/* the client moves to another namespace: its next connection is counted under the new names */
	pods[0].namespace = "store";
	apply_workloads(&h, pods, 1);
	record_ok(&sink, &h, event_of(5, SM_CONN_CLOSED, SM_CONN_OUTBOUND), line, sizeof(line));
	assert_int_equal(closed_with(sink.counters, SOURCE_IN_SHOP), 2);
	assert_int_equal(closed_with(sink.counters, "source_workload_namespace=\"store\""), 1);
	assert_non_null(strstr(line, "src.namespace=\"store\""));

	/* the server goes: its series are evicted, and a connection to its address after that (the cache
	 * dropped with them) is counted under `unknown` */
	record_ok(&sink, &h, event_of(6, SM_CONN_OPENED, SM_CONN_OUTBOUND), line, sizeof(line));
	remove_names(&h, (const char *[]){ pods[1].uid }, 1);
	assert_int_equal(sm_telemetry_evict(sink.counters, exists, h.model, 3600), 2);
	record_ok(&sink, &h, event_of(6, SM_CONN_CLOSED, SM_CONN_OUTBOUND), line, sizeof(line));
	assert_int_equal(sm_telemetry_evict(sink.counters, exists, h.model, 3600), 1);
	record_ok(&sink, &h, event_of(7, SM_CONN_CLOSED, SM_CONN_OUTBOUND), line, sizeof(line));
	assert_int_equal(closed_with(sink.counters, "destination_workload_namespace=\"unknown\""), 1);
	sm_telemetry_counts(sink.counters, &counts);
	assert_int_equal(counts.open, 0);
	sm_telemetry_free(sink.counters);
	harness_close(&h);
}

/* ---- cached and uncached counting agree ---- */

struct world {
	char strings[48][16]; /* 24 values, each twice: equal strings at two addresses */
	unsigned epoch;	      /* which uids exist: changes at each eviction */
};

static const char *pick(struct world *w, uint64_t *random)
{
	uint32_t r = next_random(random) % 52;

	return r < 48 ? w->strings[r] : r < 50 ? NULL : "";
}

static bool world_exists(void *ctx, const char *uid)
{
	const struct world *w = ctx;

	return (uid[0] + w->epoch) % 3 != 0;
}

static void random_names(struct world *w, uint64_t *random, struct sm_tel_workload *side)
{
	const char **fields[] = { &side->uid, &side->workload, &side->pod, &side->namespace,
				  &side->canonical_service, &side->canonical_revision, &side->cluster,
				  &side->trust_domain, &side->service_account, &side->region, &side->zone };

	for (size_t i = 0; i < TEST_ARRAY_SIZE(fields); i++)
		*fields[i] = pick(w, random);
}

/* Random events into two counters, one given the names' generation (the cache, cleared as it fills, by
 * new generations and by eviction) and one not: their metrics text must be the same. Nearly every event's
 * names are new, so the cache fills past its bound. */
static void cached_and_uncached_agree(void **state)
{
	static struct world w;
	struct sm_telemetry *cached, *uncached;
	uint64_t random = 777, generation = 1;

	(void)state;
	for (int i = 0; i < 48; i++) /* a few values only (cut to one letter, then two) */
		snprintf(w.strings[i], sizeof(w.strings[i]), "%c%c", 'a' + (i % 24) % 6, (i % 24) < 6 ? '\0' : 'a' + (i % 24) / 6);
	assert_int_equal(sm_telemetry_new(&cached), 0);
	assert_int_equal(sm_telemetry_new(&uncached), 0);
	for (int k = 0; k < 40000; k++) {
		static const uint8_t kinds[] = { SM_CONN_OPENED, SM_CONN_UPDATE, SM_CONN_CLOSED, SM_CONN_FAILED };
		struct sm_tel_conn c = {
			.id = next_random(&random) % 64,
			.kind = kinds[next_random(&random) % 4],
			.direction = next_random(&random) % 2 ? SM_CONN_OUTBOUND : SM_CONN_INBOUND,
			.response = (uint8_t)(next_random(&random) % 3),
			.bytes_sent = next_random(&random) % 1000,
			.bytes_received = next_random(&random) % 1000,
		};
		random_names(&w, &random, &c.src);
		random_names(&w, &random, &c.dst);
		c.service = (struct sm_tel_service){ pick(&w, &random), pick(&w, &random), pick(&w, &random) };
		/* one generation for the first half (past the cache's bound of 16,384), then many */
		if (k > 20000 && next_random(&random) % 1000 == 0)
			generation++;
		c.names_generation = generation;
		assert_int_equal(sm_telemetry_record(cached, &c), 0);
		c.names_generation = 0;
		assert_int_equal(sm_telemetry_record(uncached, &c), 0);
		if (next_random(&random) % 4000 == 0) {
			w.epoch++;
			assert_int_equal(sm_telemetry_evict(cached, world_exists, &w, 3600),
					 sm_telemetry_evict(uncached, world_exists, &w, 3600));
		}
	}
	size_t cached_len, uncached_len;
	char *a = sm_telemetry_render(cached, &cached_len), *b = sm_telemetry_render(uncached, &uncached_len);
	assert_int_equal(cached_len, uncached_len);
	assert_memory_equal(a, b, cached_len);
	free(a);
	free(b);
	sm_telemetry_free(cached);
	sm_telemetry_free(uncached);
}

/* Names for the access log: short, escaped, longer than a kept fragment; rewritten in place at each new
 * generation, as a model may reuse its memory once its generation moved. A few workloads and services made
 * of them, so that most lines' names were seen before. */
struct log_world {
	char strings[12][300];
	struct sm_tel_workload workloads[6];
	const char *services[4];
};

static const char *log_pick(struct log_world *w, uint64_t *random)
{
	uint32_t r = next_random(random) % (TEST_ARRAY_SIZE(w->strings) + 2);

	return r < TEST_ARRAY_SIZE(w->strings) ? w->strings[r] : r == TEST_ARRAY_SIZE(w->strings) ? NULL : "";
}

static void log_world_fill(struct log_world *w, uint64_t *random)
{
	for (size_t i = 0; i < TEST_ARRAY_SIZE(w->strings); i++) {
		size_t len = i % 4 == 3 ? 240 + next_random(random) % 50 : 1 + next_random(random) % 12;
		for (size_t k = 0; k < len; k++)
			w->strings[i][k] = "ab\"\t-x."[next_random(random) % 7];
		w->strings[i][len] = '\0';
	}
	for (size_t i = 0; i < TEST_ARRAY_SIZE(w->workloads); i++)
		w->workloads[i] = (struct sm_tel_workload){
			.uid = log_pick(w, random), .pod = log_pick(w, random), .namespace = log_pick(w, random),
			.canonical_service = log_pick(w, random), .trust_domain = log_pick(w, random),
			.service_account = log_pick(w, random),
		};
	for (size_t i = 0; i < TEST_ARRAY_SIZE(w->services); i++)
		w->services[i] = log_pick(w, random);
}

/* Access log lines formatted with the cache of names (both formats in one cache, buffers of every size,
 * generations that rewrite the strings in place) and without it: the same bytes and lengths. */
static void cached_and_uncached_lines_agree(void **state)
{
	static struct log_world w;
	struct timespec now = { .tv_sec = 1712849922 };
	struct sm_tel_log_cache *cache;
	uint64_t random = 4242, generation = 1;

	(void)state;
	log_world_fill(&w, &random);
	assert_int_equal(sm_tel_log_cache_new(&cache), 0);
	for (int k = 0; k < 20000; k++) {
		enum sm_tel_log_format format = next_random(&random) % 2 ? SM_TEL_LOG_JSON : SM_TEL_LOG_PLAIN;
		size_t size = next_random(&random) % 8 ? 4096 : next_random(&random) % 700;
		struct sm_tel_conn c = {
			.kind = SM_CONN_CLOSED,
			.direction = next_random(&random) % 2 ? SM_CONN_OUTBOUND : SM_CONN_INBOUND,
			.src_addr = "10.0.0.1:40000",
			.dst_addr = "10.0.0.2:8080",
		};
		char cached[4096], uncached[4096];

		c.src = w.workloads[next_random(&random) % TEST_ARRAY_SIZE(w.workloads)];
		c.dst = w.workloads[next_random(&random) % TEST_ARRAY_SIZE(w.workloads)];
		c.service.hostname = w.services[next_random(&random) % TEST_ARRAY_SIZE(w.services)];
		if (next_random(&random) % 500 == 0) {
			log_world_fill(&w, &random);
			generation++;
		}
		c.names_generation = next_random(&random) % 50 ? generation : 0;
		memset(cached, 'x', sizeof(cached));
		memset(uncached, 'x', sizeof(uncached));
		assert_int_equal(sm_telemetry_access_log(&c, format, cache, &now, cached, size),
				 sm_telemetry_access_log(&c, format, NULL, &now, uncached, size));
		assert_memory_equal(cached, uncached, sizeof(cached));
	}
	sm_tel_log_cache_free(cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(endpoints_as_inet_ntop),
		cmocka_unit_test(timestamps_as_strftime),
		cmocka_unit_test(escapes_as_before),
		cmocka_unit_test(cached_names_follow_the_model),
		cmocka_unit_test(cached_and_uncached_agree),
		cmocka_unit_test(cached_and_uncached_lines_agree),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
