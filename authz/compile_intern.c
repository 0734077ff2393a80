/* SPDX-License-Identifier: Apache-2.0 */
/* The compiler's tools: interning, growing arrays, bit copies, prefixes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "authz/compile_internal.h"

void sm_intern_init(struct sm_intern *in)
{
	memset(in, 0, sizeof(*in));
}

void sm_intern_free(struct sm_intern *in)
{
	free(in->bytes);
	free(in->offsets);
	free(in->slots);
	free(in->hashes);
	memset(in, 0, sizeof(*in));
}

int sm_grow(void *array, size_t *cap, size_t need, size_t elem)
{
	void **p = array;
	size_t n = *cap ? *cap : 16;
	void *grown;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	grown = realloc(*p, n * elem);
	if (!grown)
		return -ENOMEM;
	*p = grown;
	*cap = n;
	return 0;
}

/* 64-bit multiply-xorshift over 8-byte words: the strings are bitsets and keys, not hostile input. */
static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
	uint64_t w;

	for (; n >= 8; p += 8, n -= 8) {
		memcpy(&w, p, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, p, n);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
	return h ^ h >> 29;
}

static int rehash(struct sm_intern *in)
{
	size_t n_slots = in->n_slots ? in->n_slots * 2 : 64;
	uint32_t *slots = calloc(n_slots, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t id = 0; id < in->n; id++) {
		size_t i = in->hashes[id] & (n_slots - 1);

		while (slots[i])
			i = (i + 1) & (n_slots - 1);
		slots[i] = (uint32_t)id + 1;
	}
	free(in->slots);
	in->slots = slots;
	in->n_slots = n_slots;
	return 0;
}

/* The slot holding blob (hash h), or the empty slot where it would go; in has slots. */
static size_t slot_of(const struct sm_intern *in, const void *blob, size_t size, uint64_t h)
{
	size_t i;

	for (i = h & (in->n_slots - 1); in->slots[i]; i = (i + 1) & (in->n_slots - 1)) {
		uint32_t k = in->slots[i] - 1;
		size_t k_size = in->offsets[k + 1] - in->offsets[k];

		if (in->hashes[k] == h && k_size == size && !memcmp(in->bytes + in->offsets[k], blob, size))
			break;
	}
	return i;
}

int sm_intern_find(const struct sm_intern *in, const void *blob, size_t size, uint32_t *id)
{
	size_t i;

	if (!in->n_slots)
		return -ESRCH;
	i = slot_of(in, blob, size, hash_bytes(blob, size));
	if (!in->slots[i])
		return -ESRCH;
	*id = in->slots[i] - 1;
	return 0;
}

int sm_intern_add(struct sm_intern *in, const void *blob, size_t size, uint32_t *id)
{
	uint64_t h = hash_bytes(blob, size);
	size_t i;
	int err;

	if ((in->n + 1) * 2 > in->n_slots && (err = rehash(in)))
		return err;
	i = slot_of(in, blob, size, h);
	if (in->slots[i]) {
		*id = in->slots[i] - 1;
		return 0;
	}
	if ((err = sm_grow(&in->bytes, &in->cap_bytes, in->n_bytes + size + 1, 1)) || /* never NULL */
	    (err = sm_grow(&in->offsets, &in->cap, in->n + 2, sizeof(*in->offsets))) ||
	    (err = sm_grow(&in->hashes, &in->cap_hashes, in->n + 1, sizeof(*in->hashes))))
		return err;
	if (!in->n)
		in->offsets[0] = 0;
	if (size)
		memcpy(in->bytes + in->n_bytes, blob, size);
	in->n_bytes += size;
	in->hashes[in->n] = h;
	in->offsets[in->n + 1] = in->n_bytes;
	in->slots[i] = (uint32_t)in->n + 1;
	*id = (uint32_t)in->n++;
	return 0;
}

void sm_bits_copy(uint64_t *dst, size_t to, const uint64_t *src, size_t from, size_t n)
{
	while (n) {
		size_t s_off = from % 64, d_off = to % 64;
		size_t take = 64 - (s_off > d_off ? s_off : d_off);
		uint64_t bits, mask;

		if (take > n)
			take = n;
		mask = take == 64 ? ~0ULL : (1ULL << take) - 1;
		bits = src[from / 64] >> s_off & mask;
		dst[to / 64] = (dst[to / 64] & ~(mask << d_off)) | bits << d_off;
		from += take;
		to += take;
		n -= take;
	}
}

bool sm_cidr_contains(const uint8_t addr[16], unsigned len, const uint8_t a[16])
{
	unsigned full = len / 8, rest = len % 8;

	if (memcmp(addr, a, full))
		return false;
	if (!rest)
		return true;
	return !((addr[full] ^ a[full]) & (uint8_t)(0xff << (8 - rest)));
}

void sm_cidr_mask(uint8_t out[16], const uint8_t addr[16], unsigned len)
{
	unsigned full = len / 8, rest = len % 8;

	memcpy(out, addr, 16);
	if (full >= 16)
		return;
	out[full] &= (uint8_t)(0xff << (8 - rest));
	memset(out + full + 1, 0, 15 - full);
}
