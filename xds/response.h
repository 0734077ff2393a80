/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading a DeltaDiscoveryResponse in place: the decoded response points into the received bytes
 * instead of holding copies of them. A full push is one message of tens of MB and 100,000 resources:
 * protobuf-c copies every string and Any into its own allocation, which costs more than everything
 * else the agent does to the response before the model (see docs/benchmarks.md, issue 16).
 */
#ifndef SOCKMESH_XDS_RESPONSE_H
#define SOCKMESH_XDS_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

/*
 * Decodes buf as a DeltaDiscoveryResponse into *out, with what protobuf-c's decoding would give for
 * every field the agent reads (unknown fields are skipped, not kept). The structs live in arena; the
 * strings and each Any's value point into buf, whose bytes after each string are overwritten with its
 * terminating NUL (those bytes are tags already read): buf must be writable and outlive *out.
 *
 * Returns 0; -EBADMSG when protobuf-c refuses the bytes too (buf unchanged); -ENOTSUP when they are
 * valid in a form left to protobuf-c (buf unchanged): a Resource's Any given twice (merged), a ttl or
 * cache_control, a field number of five bytes or 0, a length of five bytes; -ENOMEM (buf may have
 * been changed). On -EBADMSG or -ENOTSUP, sm_pb_decode_in decodes the bytes or says why they do not.
 */
int sm_xds_response_read(struct sm_pb_arena *arena, uint8_t *buf, size_t len,
			 Envoy__Service__Discovery__V3__DeltaDiscoveryResponse **out);

#endif
