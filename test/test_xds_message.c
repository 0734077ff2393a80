/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A received message joined into one buffer (xds/message.h): the bytes of every slice in order, in
 * malloc'd memory when small and in a mapping on a huge page boundary when large; -ENOMEM when memory is
 * short; a mapped message's whole huge pages before a bound given back, the rest kept. (gRPC decompresses a message before the client reads it: its byte buffer reader hands the bytes
 * over as they are.)
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "failing_alloc.h"
#include "helpers.h"
#include "xds/message.h"

#define HUGE_PAGE ((size_t)2 << 20)

static uint8_t pattern_byte(size_t i)
{
	return (uint8_t)((i * 131) ^ (i >> 9));
}

/* A message of len pattern bytes, in slices of slice_len (the last one shorter). */
static grpc_byte_buffer *sliced(size_t len, size_t slice_len)
{
	size_t n = len ? (len + slice_len - 1) / slice_len : 1;
	grpc_slice *slices = calloc(n, sizeof(*slices));

	assert_non_null(slices);
	for (size_t s = 0, at = 0; s < n; s++) {
		size_t this_len = len - at < slice_len ? len - at : slice_len;
		slices[s] = grpc_slice_malloc(this_len);
		for (size_t i = 0; i < this_len; i++)
			GRPC_SLICE_START_PTR(slices[s])[i] = pattern_byte(at + i);
		at += this_len;
	}
	grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(slices, n);
	for (size_t s = 0; s < n; s++)
		grpc_slice_unref(slices[s]);
	free(slices);
	return buffer;
}

static void assert_pattern(const struct xds_message *message, size_t len)
{
	assert_int_equal(message->len, len);
	for (size_t i = 0; i < len; i++) {
		if (message->bytes[i] != pattern_byte(i))
			fail_msg("byte %zu of %zu is %#x, not %#x", i, len, message->bytes[i], pattern_byte(i));
	}
}

static void join_case(size_t len, size_t slice_len, bool mapped)
{
	grpc_byte_buffer *buffer = sliced(len, slice_len);
	struct xds_message message;

	assert_int_equal(xds_message_join(buffer, &message), 0);
	grpc_byte_buffer_destroy(buffer);
	assert_pattern(&message, len);
	assert_true((message.mapping != NULL) == mapped);
	if (mapped)
		assert_int_equal((uintptr_t)message.bytes % HUGE_PAGE, 0);
	xds_message_free(&message);
	xds_message_free(&message); /* again: nothing */
}

static void small_messages_are_malloced(void **state)
{
	(void)state;
	join_case(0, 16, false);
	join_case(1, 16, false);
	join_case(1000, 7, false);
	join_case(HUGE_PAGE - 1, 65536, false);
}

static void large_messages_are_mapped_on_a_huge_page_boundary(void **state)
{
	(void)state;
	join_case(HUGE_PAGE, 65536, true);
	join_case(5 * HUGE_PAGE + 12345, 65536 + 7, true); /* hundreds of slices, as a full push comes */
}

static void no_memory_is_said(void **state)
{
	(void)state;
	grpc_byte_buffer *buffer = sliced(1000, 100);
	struct xds_message message;

	oom_arm(FAIL_ONE, 0);
	int ret = xds_message_join(buffer, &message);
	oom.armed = false;
	assert_int_equal(ret, -ENOMEM);
	assert_null(message.bytes);
	xds_message_free(&message);
	assert_int_equal(xds_message_join(buffer, &message), 0); /* the buffer is whole still */
	assert_pattern(&message, 1000);
	xds_message_free(&message);
	grpc_byte_buffer_destroy(buffer);
}

/* Whether any page of [start, start + len) is mapped: mincore fails with ENOMEM on a range with none. */
static bool mapped(const uint8_t *start, size_t len)
{
	static unsigned char pages[HUGE_PAGE / 4096 * 8];
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	for (size_t at = 0; at < len; at += page) {
		if (mincore((void *)(start + at), page, pages) == 0)
			return true;
		assert_int_equal(errno, ENOMEM);
	}
	return false;
}

/* Bytes from the bound on as they were, none of the whole huge pages before it mapped. */
static void large_messages_give_back_what_was_read(void **state)
{
	(void)state;
	size_t len = 5 * HUGE_PAGE + 12345;
	grpc_byte_buffer *buffer = sliced(len, 65536);
	struct xds_message message;

	assert_int_equal(xds_message_join(buffer, &message), 0);
	grpc_byte_buffer_destroy(buffer);
	uint8_t *bytes = message.bytes;
	assert_int_equal(xds_message_drop_before(&message, bytes + HUGE_PAGE - 1), 0); /* no whole huge page */
	assert_true(mapped(bytes, HUGE_PAGE));
	assert_true(xds_message_drop_before(&message, bytes + 2 * HUGE_PAGE + 100) >= 2 * HUGE_PAGE);
	assert_false(mapped(bytes, 2 * HUGE_PAGE));
	assert_int_equal(xds_message_drop_before(&message, bytes + HUGE_PAGE), 0); /* behind what is gone */
	assert_int_equal(xds_message_drop_before(&message, bytes + len + 1), 0);   /* beyond the message */
	assert_int_equal(xds_message_drop_before(&message, bytes - 1), 0);
	for (size_t i = 2 * HUGE_PAGE; i < len; i++) {
		if (bytes[i] != pattern_byte(i))
			fail_msg("byte %zu of %zu is %#x, not %#x", i, len, bytes[i], pattern_byte(i));
	}
	assert_int_equal(xds_message_drop_before(&message, bytes + len), 3 * HUGE_PAGE); /* the whole rest */
	assert_false(mapped(bytes, 5 * HUGE_PAGE));
	assert_int_equal(bytes[5 * HUGE_PAGE], pattern_byte(5 * HUGE_PAGE));
	xds_message_free(&message);

	/* a malloc'd message keeps its bytes until freed */
	buffer = sliced(1000, 100);
	assert_int_equal(xds_message_join(buffer, &message), 0);
	grpc_byte_buffer_destroy(buffer);
	assert_int_equal(xds_message_drop_before(&message, message.bytes + 999), 0);
	assert_pattern(&message, 1000);
	xds_message_free(&message);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(small_messages_are_malloced),
		cmocka_unit_test(large_messages_are_mapped_on_a_huge_page_boundary),
		cmocka_unit_test(no_memory_is_said),
		cmocka_unit_test(large_messages_give_back_what_was_read),
	};

	grpc_init();
	int failed = cmocka_run_group_tests_name("xds-message", tests, NULL, NULL);
	grpc_shutdown();
	return failed;
}
