/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory running short in telemetry/, at every allocation in turn, once or from there on: recording an
 * event returns 0 or -ENOMEM and never exits; -ENOMEM counts nothing (every counter is what it was; a series
 * made on the way shows 0), 0 counts what a telemetry that never ran short counts; rendering gives the
 * whole exposition or NULL. The library allocates through failing_alloc.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "failing_alloc.h"
#include "helpers.h"
#include "bpf/sockmesh.h"
#include "telemetry/telemetry.h"

static const struct sm_tel_workload client = {
	.uid = "Kubernetes//Pod/shop/sleep-7d9", .workload = "sleep", .pod = "sleep-7d9", .namespace = "shop",
	.canonical_service = "sleep", .canonical_revision = "v1", .cluster = "Kubernetes",
	.trust_domain = "cluster.local", .service_account = "sleep", .region = "eu", .zone = "eu-1",
};

static const struct sm_tel_workload server = {
	.uid = "Kubernetes//Pod/shop/echo-5c4", .workload = "echo", .pod = "echo-5c4", .namespace = "shop",
	.canonical_service = "echo", .canonical_revision = "latest", .cluster = "Kubernetes",
	.trust_domain = "cluster.local", .service_account = "default",
};

static const struct sm_tel_service echo_service = {
	.hostname = "echo.shop.svc.cluster.local", .name = "echo", .namespace = "shop",
};

static struct sm_tel_conn event(uint64_t id, uint8_t kind, uint8_t direction, uint8_t response, uint64_t sent,
				uint64_t received, uint64_t names_generation)
{
	return (struct sm_tel_conn){
		.id = id, .kind = kind, .direction = direction, .response = response, .bytes_sent = sent,
		.bytes_received = received, .src_addr = "10.0.0.1:40000", .dst_addr = "10.0.0.2:8080",
		.src = client, .dst = server, .service = echo_service, .names_generation = names_generation,
	};
}

/* Opened, moving and closed; refused and denied at once; the other reporter; names found by pointer. */
static struct sm_tel_conn events[9];

static void events_init(void)
{
	size_t i = 0;

	events[i++] = event(1, SM_CONN_UPDATE, SM_CONN_OUTBOUND, SM_TEL_RESPONSE_OK, 100, 0, 0);
	events[i++] = event(1, SM_CONN_UPDATE, SM_CONN_OUTBOUND, SM_TEL_RESPONSE_OK, 150, 20, 0);
	events[i++] = event(2, SM_CONN_FAILED, SM_CONN_OUTBOUND, SM_TEL_RESPONSE_CONNECT, 0, 0, 0);
	events[i++] = event(0, SM_CONN_FAILED, SM_CONN_OUTBOUND, SM_TEL_RESPONSE_DENY, 0, 0, 0);
	events[i++] = event(3, SM_CONN_UPDATE, SM_CONN_INBOUND, SM_TEL_RESPONSE_OK, 0, 10, 0);
	events[i++] = event(1, SM_CONN_CLOSED, SM_CONN_OUTBOUND, SM_TEL_RESPONSE_OK, 200, 50, 0);
	events[i++] = event(4, SM_CONN_UPDATE, SM_CONN_OUTBOUND, SM_TEL_RESPONSE_OK, 7, 0, 7);
	events[i++] = event(4, SM_CONN_CLOSED, SM_CONN_OUTBOUND, SM_TEL_RESPONSE_OK, 9, 3, 7);
	events[i++] = event(3, SM_CONN_CLOSED, SM_CONN_INBOUND, SM_TEL_RESPONSE_OK, 5, 10, 0);
}

#define N_EVENTS (sizeof(events) / sizeof(events[0]))

/* A telemetry that has counted the first n events, memory never short. */
static struct sm_telemetry *after(size_t n)
{
	struct sm_telemetry *t;

	assert_int_equal(sm_telemetry_new(&t), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(sm_telemetry_record(t, &events[i]), 0);
	return t;
}

static char *exposition(struct sm_telemetry *t)
{
	size_t len;
	char *text = sm_telemetry_render(t, &len);

	assert_non_null(text);
	return text;
}

/* The value of the exposition line starting with series ("name{labels}"), or -1 if it has none. */
static long long value_in(const char *text, const char *series, size_t len)
{
	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, series, len) == 0 && line[len] == ' ')
			return strtoll(line + len + 1, NULL, 10);
	}
	return -1;
}

/* Whether now counts what before does: the same values, and 0 in the series before did not have. */
static bool counts_the_same(const char *before, const char *now)
{
	for (const char *line = now; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (*line == '#')
			continue;
		const char *space = strchr(line, ' ');
		long long was = value_in(before, line, (size_t)(space - line));
		if (strtoll(space + 1, NULL, 10) != (was < 0 ? 0 : was))
			return false;
	}
	for (const char *line = before; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (*line != '#' && value_in(now, line, (size_t)(strchr(line, ' ') - line)) < 0)
			return false;
	}
	return true;
}

static long allocations_recording(size_t e)
{
	struct sm_telemetry *t = after(e);

	oom_arm(FAIL_NONE, 0);
	assert_int_equal(sm_telemetry_record(t, &events[e]), 0);
	oom.armed = false;
	sm_telemetry_free(t);
	return oom.count;
}

static void sweep_recording(enum failing mode)
{
	events_init();
	for (size_t e = 0; e < N_EVENTS; e++) {
		struct sm_telemetry *reference = after(e + 1);
		char *expected = exposition(reference);
		long total = allocations_recording(e);

		for (long target = 0; target < total; target++) {
			struct sm_telemetry *t = after(e);
			char *before = exposition(t);
			oom_arm(mode, target);
			int err = sm_telemetry_record(t, &events[e]);
			oom.armed = false;
			if (err != 0 && err != -ENOMEM)
				fail_msg("event %zu, allocation %ld of %ld failing: record returned %d", e, target, total, err);
			char *now = exposition(t);
			/* -ENOMEM counts nothing: a series it made on the way shows 0 (it may count later) */
			if (err ? !counts_the_same(before, now) : strcmp(now, expected) != 0)
				fail_msg("event %zu, allocation %ld of %ld failing (record returned %d): the exposition is\n%s\n"
					 "instead of\n%s", e, target, total, err, now, err ? before : expected);
			/* memory back: the rest is counted */
			for (size_t i = e + 1; i < N_EVENTS; i++)
				assert_int_equal(sm_telemetry_record(t, &events[i]), 0);
			free(now);
			free(before);
			sm_telemetry_free(t);
		}
		free(expected);
		sm_telemetry_free(reference);
	}
}

static void recording_each_allocation_failing_once(void **state)
{
	(void)state;
	sweep_recording(FAIL_ONE);
}

static void recording_every_allocation_failing_from_one_on(void **state)
{
	(void)state;
	sweep_recording(FAIL_FROM);
}

static void rendering_each_allocation_failing(void **state)
{
	(void)state;
	events_init();
	struct sm_telemetry *t = after(N_EVENTS);
	char *expected = exposition(t);
	size_t len;

	oom_arm(FAIL_NONE, 0);
	free(sm_telemetry_render(t, &len));
	long total = oom.count;
	assert_true(total > 0);
	for (long target = 0; target < total; target++) {
		oom_arm(FAIL_ONE, target);
		char *text = sm_telemetry_render(t, &len);
		oom.armed = false;
		if (text && strcmp(text, expected) != 0)
			fail_msg("allocation %ld of %ld failing: a render that is not the whole exposition", target, total);
		free(text);
	}
	free(expected);
	sm_telemetry_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(recording_each_allocation_failing_once),
		cmocka_unit_test(recording_every_allocation_failing_from_one_on),
		cmocka_unit_test(rendering_each_allocation_failing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
