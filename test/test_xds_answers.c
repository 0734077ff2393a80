/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An ACK that cannot be queued (out of memory) is not lost: the client ends the stream, and the next
 * stream answers the response again. The allocation fails through the linker (--wrap=calloc, see
 * test/meson.build): the first calloc of the xDS code after the first response's apply is the one
 * that queues its answer.
 */
#include "xds_env.h"

#define FIXTURE_STREAM SM_FIXTURES_DIR "/wire/stream.xds"

void *__real_calloc(size_t n, size_t size);

static __thread bool fail_next_calloc; /* on the client's thread only */
static int armed;		       /* times the failure was armed */

void *__wrap_calloc(size_t n, size_t size)
{
	if (fail_next_calloc) {
		fail_next_calloc = false;
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(n, size);
}

/* Called on the client's thread after each apply, just before the response is answered. */
static void fail_first_answer(void *ctx, const char *type_url)
{
	(void)ctx;
	(void)type_url;
	if (__atomic_fetch_add(&armed, 1, __ATOMIC_SEQ_CST) == 0)
		fail_next_calloc = true;
}

/* Whether the client answered (ACK or NACK) the response of this nonce. */
static bool answered(json_t *requests, const char *nonce)
{
	size_t i;
	json_t *request;

	json_array_foreach(requests, i, request) {
		const char *got = json_string_value(json_object_get(request, "responseNonce"));
		if (got && strcmp(got, nonce) == 0)
			return true;
	}
	return false;
}

/*
 * Whether every response the server sent on the second stream has its answer; *sent counts them, and
 * unanswered names the first without one.
 */
static bool second_stream_answered(const struct server *server, size_t *sent, char *unanswered, size_t size)
{
	json_t *sending = server_events(server, "sending"), *requests = server_events(server, "request");
	bool all = true;
	size_t i;
	json_t *event;

	*sent = 0;
	json_array_foreach(sending, i, event) {
		const char *nonce = json_string_value(json_object_get(event, "nonce"));
		if (json_integer_value(json_object_get(event, "stream")) != 2)
			continue;
		(*sent)++;
		if (all && !answered(requests, nonce)) {
			snprintf(unanswered, size, "%s", nonce);
			all = false;
		}
	}
	json_decref(sending);
	json_decref(requests);
	return all;
}

static void ack_not_lost_on_enomem(void **state)
{
	(void)state;
	struct server server;
	struct client c;
	char unanswered[128] = "";
	size_t on_second = 0;

	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true,
						   .after_apply = fail_first_answer });
	/* the first stream ends at the lost ACK; the second resumes, and both types are answered */
	WAIT_FOR(&c, 20, stats.streams >= 2 && stats.ready && stats.responses >= 3);
	/* a response is counted when it comes, its answer goes after its apply: wait for the answers to arrive */
	for (int ms = 0; ms < 10000 && !second_stream_answered(&server, &on_second, unanswered, sizeof(unanswered));
	     ms += 20)
		sleep_ms(20);
	client_stop(&c);
	server_stop(&server);
	assert_true(armed >= 1);
	assert_false(fail_next_calloc);

	/* on the second stream, every response the server sent has its answer */
	if (!second_stream_answered(&server, &on_second, unanswered, sizeof(unanswered)))
		fail_msg("response %s of the second stream was never answered", unanswered);
	assert_true(on_second >= 2);
	unlink(server.log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ack_not_lost_on_enomem),
	};

	return cmocka_run_group_tests_name("xds-answers", tests, NULL, NULL);
}
