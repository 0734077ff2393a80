/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fuzzer's input as a stream of choices (in the manner of LLVM's FuzzedDataProvider), so that
 * libFuzzer's mutations of bytes become mutations of decisions. An exhausted input answers 0 to
 * everything: the first option, "no", an empty blob, which keeps short inputs meaningful.
 */
#ifndef SOCKMESH_TEST_FUZZ_INPUT_H
#define SOCKMESH_TEST_FUZZ_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fuzz_input {
	const uint8_t *data;
	size_t size;
	size_t pos;
};

static inline bool input_empty(const struct fuzz_input *in)
{
	return in->pos >= in->size;
}

static inline uint8_t input_byte(struct fuzz_input *in)
{
	return in->pos < in->size ? in->data[in->pos++] : 0;
}

/* A value in [0, n): one byte for small ranges, two for larger ones. */
static inline uint32_t input_below(struct fuzz_input *in, uint32_t n)
{
	uint32_t value;

	if (n <= 1)
		return 0;
	value = input_byte(in);
	if (n > 256)
		value = value << 8 | input_byte(in);
	return value % n;
}

/* True with about the given probability; an exhausted input says no. */
static inline bool input_chance(struct fuzz_input *in, uint32_t percent)
{
	return (uint32_t)input_byte(in) * 100 >= (100 - percent) * 256;
}

/* Up to max raw bytes, taken as they are (for values the model must reject or survive). */
static inline const uint8_t *input_bytes(struct fuzz_input *in, size_t max, size_t *len)
{
	size_t want = input_below(in, (uint32_t)max + 1);
	size_t pos = in->pos < in->size ? in->pos : in->size;
	size_t left = in->size - pos;

	*len = want < left ? want : left;
	in->pos = pos + *len;
	return in->data + pos;
}

#define INPUT_PICK(in, array) ((array)[input_below((in), sizeof(array) / sizeof((array)[0]))])

#endif
