/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An Address that holds a Workload, read in one walk (sm_pb_read_address in proto/proto.h).
 *
 * protobuf-c decodes any message in two generic walks: a scan that finds each field's descriptor by
 * number and counts the repeated ones, then a parse that fills the struct. A full push holds 100,000s
 * of Workloads, and that was 12% of applying it. This reader knows the Workload's fields and takes the
 * form istiod sends: each field with its type's wire type, a field that is not repeated at most once,
 * nothing unknown, a repeated field at most MAX_REPEATED times, varints of at most 64 bits, tags and
 * lengths in at most 4 bytes (protobuf-c refuses them in more than 5, even padded). Any other
 * form is -ENOTSUP and left to protobuf-c, which decodes it (merging a message given twice, keeping
 * unknown fields) or names its defect: what the reader does not take cannot come out differently.
 *
 * What it takes, it fills as protobuf-c would: each message set up by its generated init, strings and
 * bytes copied into the arena (strings NUL-terminated, empty bytes without data), enums and uint32 as
 * a varint's low 32 bits, a bool as any bit set. protobuf-c checks no string's encoding, nor an enum's
 * value, and neither does this. The rarer sub-messages (waypoints, the application tunnel, extensions)
 * are decoded by protobuf-c itself, as its own walk would.
 */
#include <errno.h>
#include <string.h>

#include "proto/proto.h"

#define MAX_REPEATED 32 /* more elements than this in one repeated field go to protobuf-c */

enum {
	WIRE_VARINT = 0,
	WIRE_LEN = 2,
};

struct reader {
	ProtobufCAllocator *allocator;
	const uint8_t *pos, *end;
};

struct field {
	uint32_t number;
	unsigned int wire;
	uint64_t varint;     /* WIRE_VARINT */
	const uint8_t *data; /* WIRE_LEN: the payload */
	size_t len;
};

/* A varint of at most 10 bytes whose value fits 64 bits. */
static inline int read_varint(struct reader *r, uint64_t *value)
{
	uint64_t result = 0;

	if (r->pos < r->end && !(*r->pos & 0x80)) { /* most of them: a tag, a length, a small value */
		*value = *r->pos++;
		return 0;
	}

	for (unsigned int i = 0; i < 10 && r->pos + i < r->end; i++) {
		uint8_t byte = r->pos[i];
		if (i == 9 && byte > 1)
			return -ENOTSUP;
		result |= (uint64_t)(byte & 0x7f) << (7 * i);
		if (!(byte & 0x80)) {
			r->pos += i + 1;
			*value = result;
			return 0;
		}
	}
	return -ENOTSUP;
}

/* A tag or a length: a varint of at most 4 bytes, padded or not (protobuf-c refuses one of more than 5,
 * whatever its value). */
static inline int read_short_varint(struct reader *r, uint64_t *value)
{
	const uint8_t *start = r->pos;

	return read_varint(r, value) || r->pos - start > 4 ? -ENOTSUP : 0;
}

/* The next field, varint or length-delimited, its tag and its length read by read_short_varint. */
static int next_field(struct reader *r, struct field *f)
{
	uint64_t tag, len;

	if (read_short_varint(r, &tag))
		return -ENOTSUP;
	f->number = (uint32_t)(tag >> 3);
	f->wire = (unsigned int)(tag & 7);
	if (f->wire == WIRE_VARINT)
		return read_varint(r, &f->varint);
	if (f->wire != WIRE_LEN || read_short_varint(r, &len) || len > (size_t)(r->end - r->pos))
		return -ENOTSUP;
	f->data = r->pos;
	f->len = (size_t)len;
	r->pos += len;
	return 0;
}

static struct reader inner(const struct reader *r, const struct field *f)
{
	return (struct reader){ .allocator = r->allocator, .pos = f->data, .end = f->data + f->len };
}

static void *alloc(const struct reader *r, size_t size)
{
	return r->allocator->alloc(r->allocator->allocator_data, size);
}

/* A field that is not repeated, seen for the first time (fields numbered below 32). */
static int first(uint32_t *seen, const struct field *f, unsigned int wire)
{
	uint32_t bit = 1u << f->number;

	if (f->wire != wire || (*seen & bit))
		return -ENOTSUP;
	*seen |= bit;
	return 0;
}

static int copy_string(const struct reader *r, const struct field *f, char **out)
{
	char *s = alloc(r, f->len + 1);

	if (!s)
		return -ENOMEM;
	memcpy(s, f->data, f->len);
	s[f->len] = '\0';
	*out = s;
	return 0;
}

static int take_string(const struct reader *r, uint32_t *seen, const struct field *f, char **out)
{
	int err = first(seen, f, WIRE_LEN);

	return err ? err : copy_string(r, f, out);
}

static int take_enum(uint32_t *seen, const struct field *f, int *out)
{
	int err = first(seen, f, WIRE_VARINT);

	if (!err)
		*out = (int)(uint32_t)f->varint;
	return err;
}

static int take_uint32(uint32_t *seen, const struct field *f, uint32_t *out)
{
	int err = first(seen, f, WIRE_VARINT);

	if (!err)
		*out = (uint32_t)f->varint;
	return err;
}

static int take_bool(uint32_t *seen, const struct field *f, protobuf_c_boolean *out)
{
	int err = first(seen, f, WIRE_VARINT);

	if (!err)
		*out = f->varint != 0;
	return err;
}

/* The elements of a repeated field, gathered before the array is allocated at its size. */
struct list {
	void *items[MAX_REPEATED];
	size_t n;
};

static int list_add(struct list *list, void *item)
{
	if (list->n == MAX_REPEATED)
		return -ENOTSUP;
	list->items[list->n++] = item;
	return 0;
}

/* The list as protobuf-c leaves a repeated field: NULL when empty. */
static int list_copy(const struct reader *r, const struct list *list, size_t *n, void *out)
{
	void **items = NULL;

	if (list->n && !(items = alloc(r, list->n * sizeof(*items))))
		return -ENOMEM;
	if (list->n)
		memcpy(items, list->items, list->n * sizeof(*items));
	*n = list->n;
	memcpy(out, &items, sizeof(items));
	return 0;
}

/* Each field of a message, as next_field reads it, to the message's own field function. */
typedef int (*take_field_fn)(const struct reader *r, void *msg, uint32_t *seen, const struct field *f);

/* Walks the message f holds, a field at a time; seen tracks its fields that are not repeated. */
static int read_fields(const struct reader *r, const struct field *f, void *msg, take_field_fn take)
{
	struct reader in = inner(r, f);
	struct field g;
	uint32_t seen = 0;
	int err = 0;

	while (!err && in.pos < in.end) {
		if (!(err = next_field(&in, &g)))
			err = take(r, msg, &seen, &g);
	}
	return err;
}

/* A message in the arena, set up by its generated init. */
static void *new_message(const struct reader *r, const ProtobufCMessageDescriptor *desc)
{
	void *msg = alloc(r, desc->sizeof_message);

	if (msg)
		protobuf_c_message_init(desc, msg);
	return msg;
}

/*
 * A sub-message: a new one filled by take, or, with take NULL, decoded by protobuf-c (the rarer ones),
 * whose NULL is a defect or no memory, either protobuf-c's to tell.
 */
static int read_message(const struct reader *r, const struct field *f, const ProtobufCMessageDescriptor *desc,
			take_field_fn take, void **out)
{
	if (f->wire != WIRE_LEN)
		return -ENOTSUP;
	if (!take) {
		*out = protobuf_c_message_unpack(desc, r->allocator, f->len, f->data);
		return *out ? 0 : -ENOTSUP;
	}
	if (!(*out = new_message(r, desc)))
		return -ENOMEM;
	return read_fields(r, f, *out, take);
}

static int take_port_field(const struct reader *r, void *msg, uint32_t *seen, const struct field *f)
{
	Istio__Workload__Port *port = msg;

	(void)r;
	switch (f->number) {
	case 1:
		return take_uint32(seen, f, &port->service_port);
	case 2:
		return take_uint32(seen, f, &port->target_port);
	case 3:
		return take_enum(seen, f, (int *)&port->app_protocol);
	default:
		return -ENOTSUP;
	}
}

/* A PortList being read: its ports gathered until the array is made. */
struct port_list {
	Istio__Workload__PortList *msg;
	struct list ports;
};

static int take_port_list_field(const struct reader *r, void *msg, uint32_t *seen, const struct field *f)
{
	struct port_list *list = msg;
	void *port;
	int err;

	(void)seen;
	if (f->number != 1)
		return -ENOTSUP;
	err = read_message(r, f, &istio__workload__port__descriptor, take_port_field, &port);
	return err ? err : list_add(&list->ports, port);
}

static int read_port_list(const struct reader *r, const struct field *f, Istio__Workload__PortList **out)
{
	struct port_list list; /* not zeroed whole: only the count says which items hold anything */
	int err;

	list.ports.n = 0;
	if (!(list.msg = new_message(r, &istio__workload__port_list__descriptor)))
		return -ENOMEM;
	*out = list.msg;
	err = read_fields(r, f, &list, take_port_list_field);
	return err ? err : list_copy(r, &list.ports, &list.msg->n_ports, &list.msg->ports);
}

static int take_services_entry_field(const struct reader *r, void *msg, uint32_t *seen, const struct field *f)
{
	Istio__Workload__Workload__ServicesEntry *entry = msg;

	switch (f->number) {
	case 1:
		return take_string(r, seen, f, &entry->key);
	case 2:
		return first(seen, f, WIRE_LEN) ? -ENOTSUP : read_port_list(r, f, &entry->value);
	default:
		return -ENOTSUP;
	}
}

static int take_locality_field(const struct reader *r, void *msg, uint32_t *seen, const struct field *f)
{
	Istio__Workload__Locality *locality = msg;

	switch (f->number) {
	case 1:
		return take_string(r, seen, f, &locality->region);
	case 2:
		return take_string(r, seen, f, &locality->zone);
	case 3:
		return take_string(r, seen, f, &locality->subzone);
	default:
		return -ENOTSUP;
	}
}

static int take_uint32_value_field(const struct reader *r, void *msg, uint32_t *seen, const struct field *f)
{
	Google__Protobuf__UInt32Value *value = msg;

	(void)r;
	return f->number == 1 ? take_uint32(seen, f, &value->value) : -ENOTSUP;
}

/* A message field that is not repeated, read as read_message does; out points to the struct's pointer. */
static int take_message(const struct reader *r, uint32_t *seen, const struct field *f,
			const ProtobufCMessageDescriptor *desc, take_field_fn take, void *out)
{
	void *msg;
	int err = first(seen, f, WIRE_LEN);

	if (!err)
		err = read_message(r, f, desc, take, &msg);
	if (!err)
		memcpy(out, &msg, sizeof(msg));
	return err;
}

/* Workload.addresses: bytes, an array of ProtobufCBinaryData rather than of pointers. */
static int copy_addresses(const struct reader *r, const struct field *fields, size_t n, Istio__Workload__Workload *w)
{
	ProtobufCBinaryData *addresses = NULL;

	if (n && !(addresses = alloc(r, n * sizeof(*addresses))))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct field *f = &fields[i];
		addresses[i] = (ProtobufCBinaryData){ .len = f->len };
		if (f->len && !(addresses[i].data = alloc(r, f->len)))
			return -ENOMEM;
		if (f->len)
			memcpy(addresses[i].data, f->data, f->len);
	}
	w->n_addresses = n;
	w->addresses = addresses;
	return 0;
}

/* A Workload being read: its repeated fields gathered as they come. */
struct workload {
	Istio__Workload__Workload *msg;
	struct field addresses[MAX_REPEATED]; /* their fields: the bytes are copied at the end */
	size_t n_addresses;
	struct list policies, services, extensions;
};

static int take_repeated(const struct reader *r, struct workload *w, const struct field *f)
{
	void *item = NULL;
	int err;

	if (f->wire != WIRE_LEN)
		return -ENOTSUP;
	switch (f->number) {
	case 3:
		if (w->n_addresses == MAX_REPEATED)
			return -ENOTSUP;
		w->addresses[w->n_addresses++] = *f;
		return 0;
	case 16:
		err = copy_string(r, f, (char **)&item);
		return err ? err : list_add(&w->policies, item);
	case 22:
		err = read_message(r, f, &istio__workload__workload__services_entry__descriptor, take_services_entry_field,
				   &item);
		return err ? err : list_add(&w->services, item);
	default: /* 26 */
		err = read_message(r, f, &istio__workload__extension__descriptor, NULL, &item);
		return err ? err : list_add(&w->extensions, item);
	}
}

static int take_workload_field(const struct reader *r, void *msg, uint32_t *seen, const struct field *f)
{
	struct workload *workload = msg;
	Istio__Workload__Workload *w = workload->msg;

	switch (f->number) {
	case 1:
		return take_string(r, seen, f, &w->name);
	case 2:
		return take_string(r, seen, f, &w->namespace_);
	case 3:
	case 16:
	case 22:
	case 26:
		return take_repeated(r, workload, f);
	case 4:
		return take_string(r, seen, f, &w->network);
	case 5:
		return take_enum(seen, f, (int *)&w->tunnel_protocol);
	case 6:
		return take_string(r, seen, f, &w->trust_domain);
	case 7:
		return take_string(r, seen, f, &w->service_account);
	case 8:
		return take_message(r, seen, f, &istio__workload__gateway_address__descriptor, NULL, &w->waypoint);
	case 9:
		return take_string(r, seen, f, &w->node);
	case 10:
		return take_string(r, seen, f, &w->canonical_name);
	case 11:
		return take_string(r, seen, f, &w->canonical_revision);
	case 12:
		return take_enum(seen, f, (int *)&w->workload_type);
	case 13:
		return take_string(r, seen, f, &w->workload_name);
	case 14:
		return take_bool(seen, f, &w->native_tunnel);
	case 17:
		return take_enum(seen, f, (int *)&w->status);
	case 18:
		return take_string(r, seen, f, &w->cluster_id);
	case 19:
		return take_message(r, seen, f, &istio__workload__gateway_address__descriptor, NULL,
				    &w->network_gateway);
	case 20:
		return take_string(r, seen, f, &w->uid);
	case 21:
		return take_string(r, seen, f, &w->hostname);
	case 23:
		return take_message(r, seen, f, &istio__workload__application_tunnel__descriptor, NULL,
				    &w->application_tunnel);
	case 24:
		return take_message(r, seen, f, &istio__workload__locality__descriptor, take_locality_field,
				    &w->locality);
	case 25:
		return take_enum(seen, f, (int *)&w->network_mode);
	case 27:
		return take_message(r, seen, f, &google__protobuf__uint32_value__descriptor, take_uint32_value_field,
				    &w->capacity);
	default:
		return -ENOTSUP; /* unknown (15 is reserved): protobuf-c keeps it */
	}
}

static int read_workload(const struct reader *r, const struct field *f, Istio__Workload__Workload **out)
{
	struct workload workload; /* 2 KiB not zeroed: only the counts say which items hold anything */
	Istio__Workload__Workload *w = new_message(r, &istio__workload__workload__descriptor);
	int err;

	if (!w)
		return -ENOMEM;
	workload.msg = w;
	workload.n_addresses = workload.policies.n = workload.services.n = workload.extensions.n = 0;
	*out = w;
	err = read_fields(r, f, &workload, take_workload_field);
	if (!err)
		err = copy_addresses(r, workload.addresses, workload.n_addresses, w);
	if (!err)
		err = list_copy(r, &workload.policies, &w->n_authorization_policies, &w->authorization_policies);
	if (!err)
		err = list_copy(r, &workload.services, &w->n_services, &w->services);
	if (!err)
		err = list_copy(r, &workload.extensions, &w->n_extensions, &w->extensions);
	return err;
}

int sm_pb_read_address(struct sm_pb_arena *arena, const uint8_t *buf, size_t len, Istio__Workload__Address **out)
{
	struct reader r = { .allocator = &arena->allocator, .pos = buf, .end = buf + len };
	Istio__Workload__Address *address = new_message(&r, &istio__workload__address__descriptor);
	struct field f;
	int err;

	if (!address)
		return -ENOMEM;
	/* One field, the workload: a Service, or a workload given twice (merged), is protobuf-c's. */
	if ((err = next_field(&r, &f)))
		return err;
	if (f.number != 1 || f.wire != WIRE_LEN || r.pos != r.end)
		return -ENOTSUP;
	if ((err = read_workload(&r, &f, &address->workload)))
		return err;
	address->type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	*out = address;
	return 0;
}
