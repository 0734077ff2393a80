/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to proto/: the base-128 varint shared by the decoder's explanations and the stream framing. */
#ifndef SOCKMESH_PROTO_WIRE_H
#define SOCKMESH_PROTO_WIRE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#define SM_VARINT_MAX_BYTES 10

/* Reads a varint at *pos, advancing it. -ENODATA when the input ends inside it, -EOVERFLOW past 10 bytes. */
static inline int sm_wire_read_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *value)
{
	uint64_t result = 0;

	for (unsigned int i = 0; i < SM_VARINT_MAX_BYTES; i++) {
		if (*pos >= len)
			return -ENODATA;
		uint8_t byte = buf[(*pos)++];
		result |= (uint64_t)(byte & 0x7f) << (7 * i);
		if (!(byte & 0x80)) {
			*value = result;
			return 0;
		}
	}
	return -EOVERFLOW;
}

/* Writes value as a varint into out (at least SM_VARINT_MAX_BYTES long); returns the bytes used. */
static inline size_t sm_wire_write_varint(uint64_t value, uint8_t *out)
{
	size_t n = 0;

	while (value >= 0x80) {
		out[n++] = (uint8_t)(value | 0x80);
		value >>= 7;
	}
	out[n++] = (uint8_t)value;
	return n;
}

#endif
