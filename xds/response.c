/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A DeltaDiscoveryResponse read in place, in two walks over the same code: the first checks every
 * field's framing and wire type as protobuf-c does and counts the resources, Anys, aliases and removed
 * names; the second fills structs taken from arrays allocated once for those counts. Strings are
 * terminated in place: the byte after a string is always the next tag (of its message or of one around
 * it), and the walk has read that tag when it writes the NUL over it. A string that ends the buffer
 * has no such byte and is copied.
 *
 * protobuf-c's rules, followed here: a tag or length prefix is at most 5 bytes, a varint at most 10;
 * a field of ours must have its type's wire type; wire types 3, 4, 6 and 7 are refused; unknown fields
 * are skipped; a string or the Any's type_url given twice keeps the last; a repeated field keeps all.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "xds/response.h"

enum {
	WIRE_VARINT = 0,
	WIRE_FIXED64 = 1,
	WIRE_LEN = 2,
	WIRE_FIXED32 = 5,
};

/* What the first walk counts and the second fills. */
struct pools {
	Envoy__Service__Discovery__V3__Resource *resources;
	Envoy__Service__Discovery__V3__Resource **resource_ptrs;
	Google__Protobuf__Any *anys;
	char **aliases;
	char **removed;
	size_t n_resources, n_anys, n_aliases, n_removed;
};

struct reader {
	struct sm_pb_arena *arena;
	uint8_t *buf;
	size_t len;
	bool fill;	  /* the second walk: write the structs and the NULs */
	uint8_t *pending; /* where the last string ends: NUL-terminated once the tag there is read */
	struct pools pools;
};

struct field {
	uint32_t number;
	unsigned int wire;
	size_t start, end; /* a length-delimited field's payload */
};

/*
 * A tag or length prefix: protobuf-c reads at most 5 bytes (refusing it when they run out unterminated)
 * and lets a fifth byte's high bits overflow; four bytes hold every length and field number we use, so
 * a fifth is left to protobuf-c.
 */
static int read_prefix(const struct reader *r, size_t *pos, size_t end, uint32_t *value)
{
	size_t avail = end - *pos;
	uint32_t result = 0;

	for (unsigned int i = 0; i < 4; i++) {
		if (i == avail)
			return -EBADMSG;
		uint8_t byte = r->buf[*pos + i];
		result |= (uint32_t)(byte & 0x7f) << (7 * i);
		if (!(byte & 0x80)) {
			*pos += i + 1;
			*value = result;
			return 0;
		}
	}
	return avail == 4 ? -EBADMSG : -ENOTSUP;
}

/* A varint's value is skipped: at most 10 bytes, the last without its continuation bit. */
static int skip_varint(const struct reader *r, size_t *pos, size_t end)
{
	for (size_t i = 0; i < 10 && *pos + i < end; i++) {
		if (!(r->buf[*pos + i] & 0x80)) {
			*pos += i + 1;
			return 0;
		}
	}
	return -EBADMSG;
}

/* The next field of the message ending at end: its number, wire type and extent; *pos moves past it. */
static int read_field(struct reader *r, size_t *pos, size_t end, struct field *f)
{
	uint32_t tag, length;
	int err = read_prefix(r, pos, end, &tag);

	if (err)
		return err;
	if (r->pending) {
		*r->pending = '\0'; /* the tag just read was there */
		r->pending = NULL;
	}
	f->number = tag >> 3;
	f->wire = tag & 7;
	if (f->number == 0)
		return -ENOTSUP; /* protobuf-c's versions differ on field 0 */
	switch (f->wire) {
	case WIRE_VARINT:
		return skip_varint(r, pos, end);
	case WIRE_FIXED64:
	case WIRE_FIXED32: {
		size_t width = f->wire == WIRE_FIXED64 ? 8 : 4;
		if (end - *pos < width)
			return -EBADMSG;
		*pos += width;
		return 0;
	}
	case WIRE_LEN:
		err = read_prefix(r, pos, end, &length);
		if (err)
			return err;
		if (length > end - *pos)
			return -EBADMSG;
		f->start = *pos;
		f->end = *pos + length;
		*pos = f->end;
		return 0;
	default:
		return -EBADMSG; /* groups and invalid wire types */
	}
}

/* A string or bytes field of ours: only length-delimited fits. */
static int expect_len(const struct field *f)
{
	return f->wire == WIRE_LEN ? 0 : -EBADMSG;
}

static int take_string(struct reader *r, const struct field *f, char **out)
{
	int err = expect_len(f);

	if (err || !r->fill)
		return err;
	size_t n = f->end - f->start;
	if (f->end == r->len) {
		char *copy = r->arena->allocator.alloc(r->arena->allocator.allocator_data, n + 1);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, r->buf + f->start, n);
		copy[n] = '\0';
		*out = copy;
		return 0;
	}
	*out = (char *)r->buf + f->start;
	r->pending = r->buf + f->end;
	return 0;
}

static int read_any(struct reader *r, size_t pos, size_t end, Google__Protobuf__Any *any)
{
	struct field f;
	int err = 0;

	while (!err && pos < end) {
		err = read_field(r, &pos, end, &f);
		if (err)
			break;
		switch (f.number) {
		case 1:
			err = take_string(r, &f, any ? &any->type_url : NULL);
			break;
		case 2:
			err = expect_len(&f);
			if (!err && any) {
				/* protobuf-c gives empty bytes no data */
				any->value.len = f.end - f.start;
				any->value.data = any->value.len ? r->buf + f.start : NULL;
			}
			break;
		default:
			break;
		}
	}
	return err;
}

static int read_resource(struct reader *r, size_t pos, size_t end, Envoy__Service__Discovery__V3__Resource *res)
{
	struct pools *p = &r->pools;
	size_t first_alias = p->n_aliases;
	bool has_any = false;
	struct field f;
	int err = 0;

	while (!err && pos < end) {
		err = read_field(r, &pos, end, &f);
		if (err)
			break;
		switch (f.number) {
		case 1:
			err = take_string(r, &f, res ? &res->version : NULL);
			break;
		case 2: {
			err = expect_len(&f);
			if (!err && has_any)
				err = -ENOTSUP; /* protobuf-c merges the two */
			if (err)
				break;
			has_any = true;
			Google__Protobuf__Any *any = res ? &p->anys[p->n_anys] : NULL;
			if (any) {
				google__protobuf__any__init(any);
				res->resource = any;
			}
			p->n_anys++;
			err = read_any(r, f.start, f.end, any);
			break;
		}
		case 3:
			err = take_string(r, &f, res ? &res->name : NULL);
			break;
		case 4:
			err = take_string(r, &f, res ? &p->aliases[p->n_aliases] : NULL);
			p->n_aliases++;
			if (res)
				res->n_aliases++;
			break;
		case 6:
		case 7:
			err = expect_len(&f);
			if (!err)
				err = -ENOTSUP; /* ttl, cache_control: read by protobuf-c */
			break;
		default:
			break;
		}
	}
	if (res && res->n_aliases)
		res->aliases = &p->aliases[first_alias];
	return err;
}

static int read_response(struct reader *r, Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *resp)
{
	struct pools *p = &r->pools;
	size_t pos = 0;
	struct field f;
	int err = 0;

	while (!err && pos < r->len) {
		err = read_field(r, &pos, r->len, &f);
		if (err)
			break;
		switch (f.number) {
		case 1:
			err = take_string(r, &f, resp ? &resp->system_version_info : NULL);
			break;
		case 2: {
			err = expect_len(&f);
			if (err)
				break;
			Envoy__Service__Discovery__V3__Resource *res = resp ? &p->resources[p->n_resources] : NULL;
			if (res) {
				envoy__service__discovery__v3__resource__init(res);
				p->resource_ptrs[p->n_resources] = res;
			}
			p->n_resources++;
			err = read_resource(r, f.start, f.end, res);
			break;
		}
		case 4:
			err = take_string(r, &f, resp ? &resp->type_url : NULL);
			break;
		case 5:
			err = take_string(r, &f, resp ? &resp->nonce : NULL);
			break;
		case 6:
			err = take_string(r, &f, resp ? &p->removed[p->n_removed] : NULL);
			p->n_removed++;
			break;
		default:
			break;
		}
	}
	return err;
}

static void *take(uint8_t **at, size_t n, size_t size)
{
	void *block = n ? *at : NULL;

	*at += (n * size + 15) & ~(size_t)15;
	return block;
}

/* One allocation for every struct and pointer array the counts call for. */
static int allocate_pools(struct reader *r, const struct pools *counts,
			  Envoy__Service__Discovery__V3__DeltaDiscoveryResponse **resp)
{
	size_t sizes[] = { sizeof(**resp), counts->n_resources * sizeof(*r->pools.resources),
			   counts->n_resources * sizeof(*r->pools.resource_ptrs), counts->n_anys * sizeof(*r->pools.anys),
			   counts->n_aliases * sizeof(char *), counts->n_removed * sizeof(char *) };
	size_t total = 0;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		total += (sizes[i] + 15) & ~(size_t)15;
	uint8_t *at = r->arena->allocator.alloc(r->arena->allocator.allocator_data, total);
	if (!at)
		return -ENOMEM;
	*resp = take(&at, 1, sizeof(**resp));
	r->pools = (struct pools){
		.resources = take(&at, counts->n_resources, sizeof(*r->pools.resources)),
		.resource_ptrs = take(&at, counts->n_resources, sizeof(*r->pools.resource_ptrs)),
		.anys = take(&at, counts->n_anys, sizeof(*r->pools.anys)),
		.aliases = take(&at, counts->n_aliases, sizeof(char *)),
		.removed = take(&at, counts->n_removed, sizeof(char *)),
	};
	envoy__service__discovery__v3__delta_discovery_response__init(*resp);
	return 0;
}

int sm_xds_response_read(struct sm_pb_arena *arena, uint8_t *buf, size_t len,
			 Envoy__Service__Discovery__V3__DeltaDiscoveryResponse **out)
{
	struct reader r = { .arena = arena, .buf = buf, .len = len };
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *resp;
	int err = read_response(&r, NULL);

	if (err)
		return err;
	struct pools counts = r.pools;
	err = allocate_pools(&r, &counts, &resp);
	if (err)
		return err;
	r.fill = true;
	err = read_response(&r, resp);
	if (err)
		return err; /* only -ENOMEM: the first walk found the bytes sound */
	resp->n_resources = r.pools.n_resources;
	resp->resources = r.pools.resource_ptrs;
	resp->n_removed_resources = r.pools.n_removed;
	resp->removed_resources = r.pools.removed;
	*out = resp;
	return 0;
}
