/* SPDX-License-Identifier: Apache-2.0 */
/* A received message's bytes in one buffer (xds/message.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "xds/message.h"

#define HUGE_PAGE ((size_t)2 << 20)

/*
 * Room for len bytes starting on a huge page boundary (the mapping has one huge page more, so that the
 * kernel can back every whole 2 MiB of it with one), advised for huge pages. The part never written is
 * never backed. NULL when the kernel gives no mapping; without huge pages it still serves, a page at a time.
 */
static uint8_t *map_huge(size_t len, struct xds_message *message)
{
	size_t size = (len + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE + HUGE_PAGE;
	void *mapping = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (mapping == MAP_FAILED)
		return NULL;
	uint8_t *start = (uint8_t *)(((uintptr_t)mapping + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
	madvise(start, size - (size_t)(start - (uint8_t *)mapping), MADV_HUGEPAGE); /* advice: refused is fine */
	message->mapping = mapping;
	message->mapping_size = size;
	return start;
}

int xds_message_join(grpc_byte_buffer *buffer, struct xds_message *out)
{
	grpc_byte_buffer_reader reader;
	grpc_slice slice;
	size_t at = 0;

	*out = (struct xds_message){ 0 };
	if (!grpc_byte_buffer_reader_init(&reader, buffer))
		return -EBADMSG;
	size_t len = grpc_byte_buffer_length(reader.buffer_out);
	out->bytes = len >= HUGE_PAGE ? map_huge(len, out) : NULL;
	if (!out->bytes)
		out->bytes = malloc(len ? len : 1);
	if (!out->bytes) {
		grpc_byte_buffer_reader_destroy(&reader);
		return -ENOMEM;
	}
	while (grpc_byte_buffer_reader_next(&reader, &slice)) {
		size_t n = GRPC_SLICE_LENGTH(slice);
		if (n <= len - at) /* they add up to len: gRPC says so */
			memcpy(out->bytes + at, GRPC_SLICE_START_PTR(slice), n);
		at += n;
		grpc_slice_unref(slice);
	}
	grpc_byte_buffer_reader_destroy(&reader);
	out->len = at;
	if (at == len)
		return 0;
	xds_message_free(out);
	return -EBADMSG;
}

size_t xds_message_drop_before(struct xds_message *message, const uint8_t *bound)
{
	uint8_t *start = message->mapping;

	if (!start || bound <= message->bytes || bound > message->bytes + message->len)
		return 0;
	/* bytes starts on a huge page boundary: whole huge pages only, so that none is split */
	uint8_t *end = message->bytes + (size_t)(bound - message->bytes) / HUGE_PAGE * HUGE_PAGE;
	if (end <= start || munmap(start, (size_t)(end - start)))
		return 0; /* nothing whole to give, or kept as it was */
	message->mapping_size -= (size_t)(end - start);
	message->mapping = end;
	return (size_t)(end - start);
}

void xds_message_free(struct xds_message *message)
{
	if (message->mapping)
		munmap(message->mapping, message->mapping_size);
	else
		free(message->bytes);
	*message = (struct xds_message){ 0 };
}
