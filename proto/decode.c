/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Decoding with a reason. protobuf-c only says "no" when a message does not decode; on that (rare) path
 * we walk the wire format guided by the descriptors to name the first defect and its byte offset, so a
 * NACK tells istiod's operators what was wrong instead of "bad message".
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "proto/proto.h"
#include "proto/wire.h"

/* Deep enough for every message we exchange; bounds the stack on hostile nesting. */
#define EXPLAIN_MAX_DEPTH 32
#define FIELD_NUMBER_MAX 536870911u

enum wire_type {
	WIRE_VARINT = 0,
	WIRE_FIXED64 = 1,
	WIRE_LENGTH_DELIMITED = 2,
	WIRE_FIXED32 = 5,
};

struct explain_ctx {
	char *err;
	size_t err_size;
	int max_depth;
	bool deeper_is_defect; /* else the walk only skips what lies deeper */
};

static int explain_fail(struct explain_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx->err, ctx->err_size, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

static enum wire_type expected_wire_type(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return WIRE_FIXED64;
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return WIRE_FIXED32;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES:
	case PROTOBUF_C_TYPE_MESSAGE:
		return WIRE_LENGTH_DELIMITED;
	default:
		return WIRE_VARINT;
	}
}

static bool wire_type_fits(const ProtobufCFieldDescriptor *field, unsigned int wire)
{
	enum wire_type expected = expected_wire_type(field->type);

	if (wire == expected)
		return true;
	/* Repeated scalars may arrive packed. */
	return field->label == PROTOBUF_C_LABEL_REPEATED && wire == WIRE_LENGTH_DELIMITED;
}

static int explain_message(struct explain_ctx *ctx, const ProtobufCMessageDescriptor *desc,
			   const uint8_t *buf, size_t len, size_t base, const char *path, int depth);

/* Skips the value of a field whose tag started at byte start, recursing into known sub-messages. */
static int explain_field(struct explain_ctx *ctx, const ProtobufCFieldDescriptor *field,
			 const uint8_t *buf, size_t len, size_t *pos, unsigned int wire, size_t start,
			 size_t base, const char *path, int depth)
{
	uint64_t value;
	int err;

	switch (wire) {
	case WIRE_VARINT:
		err = sm_wire_read_varint(buf, len, pos, &value);
		if (err)
			return explain_fail(ctx, "%s: %s varint at byte %zu", path,
					    err == -ENODATA ? "truncated" : "over-long", base + start);
		return 0;
	case WIRE_FIXED64:
	case WIRE_FIXED32: {
		size_t width = wire == WIRE_FIXED64 ? 8 : 4;
		if (len - *pos < width)
			return explain_fail(ctx, "%s: truncated %zu-byte value at byte %zu (%zu bytes left)",
					    path, width, base + start, len - *pos);
		*pos += width;
		return 0;
	}
	case WIRE_LENGTH_DELIMITED:
		err = sm_wire_read_varint(buf, len, pos, &value);
		if (err)
			return explain_fail(ctx, "%s: %s length at byte %zu", path,
					    err == -ENODATA ? "truncated" : "over-long", base + start);
		if (value > len - *pos)
			return explain_fail(ctx, "%s: length %llu at byte %zu runs past the end (%zu bytes left)",
					    path, (unsigned long long)value, base + start, len - *pos);
		if (field && field->type == PROTOBUF_C_TYPE_MESSAGE && depth >= ctx->max_depth && ctx->deeper_is_defect)
			return explain_fail(ctx, "%s: nested deeper than %d messages at byte %zu", path, ctx->max_depth,
					    base + start);
		if (field && field->type == PROTOBUF_C_TYPE_MESSAGE && depth < ctx->max_depth) {
			err = explain_message(ctx, field->descriptor, buf + *pos, (size_t)value, base + *pos,
					      path, depth + 1);
			if (err)
				return err;
		}
		*pos += (size_t)value;
		return 0;
	default:
		return explain_fail(ctx, "%s: wire type %u (group or invalid) at byte %zu", path, wire,
				    base + start);
	}
}

static int explain_message(struct explain_ctx *ctx, const ProtobufCMessageDescriptor *desc,
			   const uint8_t *buf, size_t len, size_t base, const char *path, int depth)
{
	size_t pos = 0;

	while (pos < len) {
		size_t start = pos;
		uint64_t tag;
		char field_path[256];

		if (sm_wire_read_varint(buf, len, &pos, &tag))
			return explain_fail(ctx, "%s: truncated or over-long field tag at byte %zu", path,
					    base + start);
		uint64_t number = tag >> 3;
		unsigned int wire = tag & 7;
		if (number == 0 || number > FIELD_NUMBER_MAX)
			return explain_fail(ctx, "%s: invalid field number %llu at byte %zu", path,
					    (unsigned long long)number, base + start);

		const ProtobufCFieldDescriptor *field =
			protobuf_c_message_descriptor_get_field(desc, (unsigned int)number);
		if (field)
			snprintf(field_path, sizeof(field_path), "%s.%s", path, field->name);
		else
			snprintf(field_path, sizeof(field_path), "%s.#%llu", path, (unsigned long long)number);
		if (field && !wire_type_fits(field, wire))
			return explain_fail(ctx, "%s: wire type %u does not fit the field's type, at byte %zu",
					    field_path, wire, base + start);

		int err = explain_field(ctx, field, buf, len, &pos, wire, start, base, field_path, depth);
		if (err)
			return err;
	}
	return 0;
}

/* Types in a schema: more than ours and the well-known ones hold together. */
#define SCHEMA_TYPES_MAX 64
/* Far deeper than any message istiod sends; shallow enough for protobuf-c's recursion on any stack. */
#define DECODE_MAX_NESTING 64
#define KNOWN_TYPES_PER_THREAD 16

struct type_walk {
	const ProtobufCMessageDescriptor *on_path[SCHEMA_TYPES_MAX];
	size_t depth;
};

/* Whether some type reachable from desc contains itself, depth first with the path on a stack. */
static bool reaches_a_cycle(struct type_walk *walk, const ProtobufCMessageDescriptor *desc)
{
	for (size_t i = 0; i < walk->depth; i++)
		if (walk->on_path[i] == desc)
			return true;
	if (walk->depth == SCHEMA_TYPES_MAX)
		return true; /* a schema this deep is treated as unbounded: the nesting check stays on */
	walk->on_path[walk->depth++] = desc;
	bool cycle = false;
	for (unsigned int f = 0; f < desc->n_fields && !cycle; f++)
		if (desc->fields[f].type == PROTOBUF_C_TYPE_MESSAGE)
			cycle = reaches_a_cycle(walk, desc->fields[f].descriptor);
	walk->depth--;
	return cycle;
}

/*
 * Whether messages of type desc can nest without bound (a Struct holds Values that hold Structs).
 * Only those need their nesting checked before protobuf-c decodes them recursively; the answer is kept
 * per thread for the few types a thread decodes.
 */
static bool can_nest_unbounded(const ProtobufCMessageDescriptor *desc)
{
	static _Thread_local struct {
		const ProtobufCMessageDescriptor *desc;
		bool unbounded;
	} known[KNOWN_TYPES_PER_THREAD];
	static _Thread_local unsigned int next;

	for (size_t i = 0; i < KNOWN_TYPES_PER_THREAD; i++)
		if (known[i].desc == desc)
			return known[i].unbounded;
	struct type_walk walk = { .depth = 0 };
	bool unbounded = reaches_a_cycle(&walk, desc);
	known[next % KNOWN_TYPES_PER_THREAD].desc = desc;
	known[next % KNOWN_TYPES_PER_THREAD].unbounded = unbounded;
	next++;
	return unbounded;
}

/*
 * protobuf-c answers NULL both for bytes that do not decode and for memory it could not get; the allocator
 * it is handed tells the two apart, so that a short allocation is not reported as the sender's fault.
 */
struct tracked_allocator {
	ProtobufCAllocator allocator;
	ProtobufCAllocator *inner; /* NULL: malloc and free, protobuf-c's own default */
	bool failed;
};

static void *tracked_alloc(void *data, size_t size)
{
	struct tracked_allocator *tracked = data;
	void *block = tracked->inner ? tracked->inner->alloc(tracked->inner->allocator_data, size) : malloc(size);

	tracked->failed |= !block;
	return block;
}

static void tracked_free(void *data, void *block)
{
	struct tracked_allocator *tracked = data;

	if (tracked->inner)
		tracked->inner->free(tracked->inner->allocator_data, block);
	else
		free(block);
}

static int decode(ProtobufCAllocator *allocator, const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
		  size_t len, ProtobufCMessage **out, char *err, size_t err_size)
{
	struct explain_ctx ctx = { .err = err, .err_size = err_size, .max_depth = EXPLAIN_MAX_DEPTH };
	struct tracked_allocator tracked = { .inner = allocator };

	tracked.allocator = (ProtobufCAllocator){ .alloc = tracked_alloc, .free = tracked_free, .allocator_data = &tracked };

	*out = NULL;
	if (can_nest_unbounded(desc)) {
		struct explain_ctx bounded = { .err = err, .err_size = err_size, .max_depth = DECODE_MAX_NESTING,
					       .deeper_is_defect = true };
		if (explain_message(&bounded, desc, buf, len, 0, desc->short_name, 0))
			return -EBADMSG;
	}
	*out = protobuf_c_message_unpack(desc, &tracked.allocator, len, buf);
	if (*out)
		return 0;
	if (tracked.failed) {
		snprintf(err, err_size, "%s: out of memory decoding %zu bytes", desc->short_name, len);
		return -ENOMEM;
	}
	if (explain_message(&ctx, desc, buf, len, 0, desc->short_name, 0) == 0)
		snprintf(err, err_size, "%s: %zu bytes do not decode (a string, enum or nested value is invalid)",
			 desc->short_name, len);
	return -EBADMSG;
}

int sm_pb_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len, ProtobufCMessage **out,
		 char *err, size_t err_size)
{
	return decode(NULL, desc, buf, len, out, err, err_size);
}

int sm_pb_decode_in(struct sm_pb_arena *arena, const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
		    size_t len, ProtobufCMessage **out, char *err, size_t err_size)
{
	/* Whatever the reader does not take (even for want of memory) is protobuf-c's to decode or explain. */
	if (desc == &istio__workload__address__descriptor &&
	    sm_pb_read_address(arena, buf, len, (Istio__Workload__Address **)out) == 0)
		return 0;
	return decode(&arena->allocator, desc, buf, len, out, err, err_size);
}
