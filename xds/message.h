/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A received message's bytes joined in one buffer of the client's own: the in-place reader (response.h)
 * writes into them, and the decoded response points into them until the model has read it.
 *
 * gRPC holds a full push (one message of tens of MB) in hundreds of slices. The buffer that joins them is
 * memory nothing has touched yet, and each 4 KiB page of it costs a fault when first written: on the test
 * VM 110-119 ms for a 28 MB push, a sixth of a fresh agent's apply (docs/benchmarks.md, "A fresh agent's
 * first touch"). A large message's buffer is therefore mapped on transparent huge pages, when the node
 * allows them for madvise: a fault per 2 MiB.
 */
#ifndef SOCKMESH_XDS_MESSAGE_H
#define SOCKMESH_XDS_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/byte_buffer.h>

struct xds_message {
	uint8_t *bytes;
	size_t len;
	void *mapping; /* NULL: bytes were malloc'd; else what is left mapped (xds_message_drop_before) */
	size_t mapping_size;
};

/* The bytes of buffer in *out. Returns 0, -ENOMEM, or -EBADMSG when gRPC cannot read them (its byte
 * buffer reader, which some versions of gRPC let decompress). Leaves buffer to the caller. */
int xds_message_join(grpc_byte_buffer *buffer, struct xds_message *out);
/*
 * Gives the whole huge pages of a mapped message that lie before bound back to the system: the model has
 * read them (a full push's first resources, while it takes in the rest). The bytes from bound on stay.
 * A malloc'd message, or a bound outside the message, keeps everything until the message is freed.
 * Returns how many bytes went back.
 */
size_t xds_message_drop_before(struct xds_message *message, const uint8_t *bound);
/* Safe to repeat. */
void xds_message_free(struct xds_message *message);

#endif
