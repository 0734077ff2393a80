/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hand-made protobuf encodings for the readers' differential tests: fields written one by one, so that
 * a test can give what no encoder would (a field twice, an unknown field, a padded varint, a cut).
 */
#ifndef SOCKMESH_TEST_WIRE_WRITER_H
#define SOCKMESH_TEST_WIRE_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct wire {
	uint8_t b[2048];
	size_t n;
};

static inline void put_raw(struct wire *w, const uint8_t *bytes, size_t n)
{
	memcpy(w->b + w->n, bytes, n);
	w->n += n;
}

static inline void put_varint(struct wire *w, uint64_t v)
{
	while (v >= 0x80) {
		w->b[w->n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	w->b[w->n++] = (uint8_t)v;
}

static inline void put_tag(struct wire *w, uint32_t field, unsigned int wire)
{
	put_varint(w, (uint64_t)field << 3 | wire);
}

static inline void put_bytes(struct wire *w, uint32_t field, const void *data, size_t n)
{
	put_tag(w, field, 2);
	put_varint(w, n);
	put_raw(w, data, n);
}

static inline void put_string(struct wire *w, uint32_t field, const char *s)
{
	put_bytes(w, field, s, strlen(s));
}

static inline void put_message(struct wire *w, uint32_t field, const struct wire *inner)
{
	put_bytes(w, field, inner->b, inner->n);
}

#endif
