/* SPDX-License-Identifier: Apache-2.0 */
/*
 * proto3 canonical JSON for any protobuf-c message, driven by its descriptor: the printer behind debug
 * output, the agent's dumps and the wire tests. Well-known types take their special JSON forms.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "proto/proto.h"

/* Any may nest Any; hostile input must not turn that into unbounded recursion. */
#define ANY_MAX_DEPTH 16

/* Where the printer is: how deep in nested Any, and the options it was given. */
struct walk {
	int depth;
	const char *const *ip_fields;
};

static json_t *message_to_json(const ProtobufCMessage *msg, struct walk walk);

static const void *field_storage(const ProtobufCMessage *msg, unsigned int offset)
{
	return (const char *)msg + offset;
}

static size_t element_size(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return sizeof(uint64_t);
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default: /* 32-bit integers and enums */
		return sizeof(uint32_t);
	}
}

static bool is_default_value(ProtobufCType type, const void *value)
{
	switch (type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)value;
		return !s || !s[0];
	}
	case PROTOBUF_C_TYPE_MESSAGE:
		return !*(void *const *)value;
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)value)->len == 0;
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)value == 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)value == 0;
	default: {
		static const uint8_t zeros[sizeof(uint64_t)];
		return memcmp(value, zeros, element_size(type)) == 0;
	}
	}
}

/* How many values the field holds for printing: repeated → its count, singular → 0 or 1. */
static size_t field_count(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field)
{
	const void *value = field_storage(msg, field->offset);

	if (field->label == PROTOBUF_C_LABEL_REPEATED)
		return *(const size_t *)field_storage(msg, field->quantifier_offset);
	if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		return *(const uint32_t *)field_storage(msg, field->quantifier_offset) == field->id;
	if (field->label == PROTOBUF_C_LABEL_OPTIONAL && field->quantifier_offset &&
	    field->type != PROTOBUF_C_TYPE_MESSAGE && field->type != PROTOBUF_C_TYPE_STRING)
		return *(const protobuf_c_boolean *)field_storage(msg, field->quantifier_offset) != 0;
	return !is_default_value(field->type, value);
}

/* protoc's JSON name: underscores dropped, the letter after each one capitalised. */
static void json_field_name(const char *proto_name, char *out, size_t size)
{
	size_t n = 0;
	bool upper = false;

	for (const char *p = proto_name; *p && n + 1 < size; p++) {
		if (*p == '_') {
			upper = true;
			continue;
		}
		out[n++] = upper && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
		upper = false;
	}
	out[n] = '\0';
}

static size_t utf8_sequence_length(const unsigned char *s, size_t left)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, cp = c & 0x07;
	else
		return 0;
	if (len > left)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* A string from the wire may hold invalid UTF-8; JSON may not. Bad bytes become U+FFFD. */
static json_t *string_to_json(const char *s)
{
	json_t *json = json_string(s);
	if (json)
		return json;

	size_t len = strlen(s);
	char *clean = malloc(len * 3 + 1);
	if (!clean)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < len;) {
		size_t seq = utf8_sequence_length((const unsigned char *)s + i, len - i);
		if (seq) {
			memcpy(clean + n, s + i, seq);
			n += seq;
			i += seq;
		} else {
			memcpy(clean + n, "\xef\xbf\xbd", 3);
			n += 3;
			i++;
		}
	}
	json = json_stringn(clean, n);
	free(clean);
	return json;
}

static json_t *bytes_to_json(const ProtobufCBinaryData *bytes)
{
	size_t encoded_len = 4 * ((bytes->len + 2) / 3);
	unsigned char *encoded = malloc(encoded_len + 1);
	json_t *json;

	if (!encoded)
		return NULL;
	if (bytes->len > INT32_MAX) {
		free(encoded);
		return NULL;
	}
	int n = EVP_EncodeBlock(encoded, bytes->data, (int)bytes->len);
	json = json_stringn((const char *)encoded, (size_t)n);
	free(encoded);
	return json;
}

static json_t *real_to_json(double value)
{
	if (isnan(value))
		return json_string("NaN");
	if (isinf(value))
		return json_string(value > 0 ? "Infinity" : "-Infinity");
	return json_real(value);
}

static json_t *enum_to_json(const ProtobufCEnumDescriptor *desc, int value)
{
	if (strcmp(desc->name, "google.protobuf.NullValue") == 0)
		return json_null();

	const ProtobufCEnumValue *named = protobuf_c_enum_descriptor_get_value(desc, value);
	return named ? json_string(named->name) : json_integer(value);
}

static json_t *value_to_json(const ProtobufCFieldDescriptor *field, const void *value, struct walk walk)
{
	char digits[24];

	switch (field->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return json_integer(*(const int32_t *)value);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return json_integer(*(const uint32_t *)value);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		snprintf(digits, sizeof(digits), "%" PRId64, *(const int64_t *)value);
		return json_string(digits);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		snprintf(digits, sizeof(digits), "%" PRIu64, *(const uint64_t *)value);
		return json_string(digits);
	case PROTOBUF_C_TYPE_FLOAT:
		return real_to_json(*(const float *)value);
	case PROTOBUF_C_TYPE_DOUBLE:
		return real_to_json(*(const double *)value);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)value);
	case PROTOBUF_C_TYPE_ENUM:
		return enum_to_json(field->descriptor, *(const int *)value);
	case PROTOBUF_C_TYPE_STRING:
		return string_to_json(*(char *const *)value);
	case PROTOBUF_C_TYPE_BYTES:
		return bytes_to_json(value);
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *msg = *(ProtobufCMessage *const *)value;
		/* Only a map entry can lack its message value; it then holds the empty message. */
		return msg ? message_to_json(msg, walk) : json_object();
	}
	}
	return NULL;
}

/* protoc names a map's entry type after the field, e.g. services → ServicesEntry {key = 1; value = 2}. */
static bool is_map_field(const ProtobufCFieldDescriptor *field)
{
	if (field->label != PROTOBUF_C_LABEL_REPEATED || field->type != PROTOBUF_C_TYPE_MESSAGE)
		return false;

	const ProtobufCMessageDescriptor *entry = field->descriptor;
	size_t name_len = strlen(entry->short_name);
	return entry->n_fields == 2 && name_len > 5 &&
	       strcmp(entry->short_name + name_len - 5, "Entry") == 0 &&
	       entry->fields[0].id == 1 && strcmp(entry->fields[0].name, "key") == 0 &&
	       entry->fields[1].id == 2 && strcmp(entry->fields[1].name, "value") == 0;
}

/* JSON object keys are strings: map keys print as their JSON value would, then quoted. */
static json_t *map_key_to_json_key(const ProtobufCFieldDescriptor *key_field, const void *key)
{
	json_t *value = value_to_json(key_field, key, (struct walk){ 0 });
	char text[24];

	if (json_is_boolean(value))
		snprintf(text, sizeof(text), "%s", json_is_true(value) ? "true" : "false");
	else if (json_is_integer(value))
		snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
	else
		return value;
	json_decref(value);
	return json_string(text);
}

static json_t *map_to_json(const ProtobufCFieldDescriptor *field, ProtobufCMessage *const *entries,
			   size_t count, struct walk walk)
{
	const ProtobufCMessageDescriptor *entry = field->descriptor;
	const ProtobufCFieldDescriptor *key_field = &entry->fields[0];
	const ProtobufCFieldDescriptor *value_field = &entry->fields[1];
	json_t *object = json_object();

	for (size_t i = 0; object && i < count; i++) {
		json_t *key = map_key_to_json_key(key_field, field_storage(entries[i], key_field->offset));
		json_t *value = value_to_json(value_field, field_storage(entries[i], value_field->offset),
					      walk);
		if (!key || !value || json_object_set_new(object, json_string_value(key), value)) {
			json_decref(object);
			object = NULL;
		}
		json_decref(key);
		if (!object)
			json_decref(value);
	}
	return object;
}

/* Is this bytes field ("pkg.Message.field") one the caller asked to see as IP address text? */
static bool is_ip_field(const ProtobufCMessageDescriptor *desc, const ProtobufCFieldDescriptor *field,
			const char *const *ip_fields)
{
	size_t len = strlen(desc->name);

	if (field->type != PROTOBUF_C_TYPE_BYTES)
		return false;
	for (const char *const *name = ip_fields; name && *name; name++) {
		if (strncmp(*name, desc->name, len) == 0 && (*name)[len] == '.' &&
		    strcmp(*name + len + 1, field->name) == 0)
			return true;
	}
	return false;
}

/* 4 bytes as IPv4 text, 16 as IPv6 text; any other length is no address and stays base64. */
static json_t *ip_to_json(const ProtobufCBinaryData *bytes)
{
	char text[INET6_ADDRSTRLEN];

	if (bytes->len == 4 && inet_ntop(AF_INET, bytes->data, text, sizeof(text)))
		return json_string(text);
	if (bytes->len == 16 && inet_ntop(AF_INET6, bytes->data, text, sizeof(text)))
		return json_string(text);
	return bytes_to_json(bytes);
}

static json_t *element_to_json(bool as_ip, const ProtobufCFieldDescriptor *field, const void *value,
			       struct walk walk)
{
	return as_ip ? ip_to_json(value) : value_to_json(field, value, walk);
}

static json_t *field_to_json(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field,
			     size_t count, struct walk walk)
{
	const void *storage = field_storage(msg, field->offset);
	bool as_ip = is_ip_field(msg->descriptor, field, walk.ip_fields);

	if (field->label != PROTOBUF_C_LABEL_REPEATED)
		return element_to_json(as_ip, field, storage, walk);

	const char *values = *(const char *const *)storage;
	if (is_map_field(field))
		return map_to_json(field, (ProtobufCMessage *const *)values, count, walk);

	json_t *array = json_array();
	size_t size = element_size(field->type);
	for (size_t i = 0; array && i < count; i++) {
		if (json_array_append_new(array, element_to_json(as_ip, field, values + i * size, walk))) {
			json_decref(array);
			array = NULL;
		}
	}
	return array;
}

static json_t *plain_message_to_json(const ProtobufCMessage *msg, struct walk walk)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	json_t *object = json_object();

	for (unsigned int i = 0; object && i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *field = &desc->fields[i];
		size_t count = field_count(msg, field);
		char name[128];

		if (!count)
			continue;
		json_field_name(field->name, name, sizeof(name));
		if (json_object_set_new(object, name, field_to_json(msg, field, count, walk))) {
			json_decref(object);
			object = NULL;
		}
	}
	return object;
}

/* Takes the one member a well-known type's plain form has, e.g. Struct {"fields": {...}} → {...}. */
static json_t *unwrap_member(json_t *plain, const char *member, json_t *fallback)
{
	json_t *inner;

	if (!plain) {
		json_decref(fallback);
		return NULL;
	}
	inner = member ? json_object_get(plain, member) : json_object_iter_value(json_object_iter(plain));
	if (inner) {
		json_incref(inner);
		json_decref(fallback);
	} else {
		inner = fallback;
	}
	json_decref(plain);
	return inner;
}

static json_t *duration_to_json(const ProtobufCMessage *msg)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	int64_t seconds = *(const int64_t *)field_storage(msg, desc->fields[0].offset);
	int32_t nanos = *(const int32_t *)field_storage(msg, desc->fields[1].offset);
	bool negative = seconds < 0 || nanos < 0;
	uint64_t abs_seconds = seconds < 0 ? -(uint64_t)seconds : (uint64_t)seconds;
	uint32_t abs_nanos = nanos < 0 ? -(uint32_t)nanos : (uint32_t)nanos;
	char text[48];
	int n = snprintf(text, sizeof(text), "%s%" PRIu64, negative ? "-" : "", abs_seconds);

	/* 0, 3, 6 or 9 fractional digits, as protobuf prints them. */
	if (abs_nanos % 1000000 == 0 && abs_nanos)
		n += snprintf(text + n, sizeof(text) - n, ".%03u", abs_nanos / 1000000);
	else if (abs_nanos % 1000 == 0 && abs_nanos)
		n += snprintf(text + n, sizeof(text) - n, ".%06u", abs_nanos / 1000);
	else if (abs_nanos)
		n += snprintf(text + n, sizeof(text) - n, ".%09u", abs_nanos);
	snprintf(text + n, sizeof(text) - n, "s");
	return json_string(text);
}

static bool is_wrapper(const ProtobufCMessageDescriptor *desc)
{
	static const char *const wrappers[] = {
		"google.protobuf.BoolValue",   "google.protobuf.BytesValue",  "google.protobuf.DoubleValue",
		"google.protobuf.FloatValue",  "google.protobuf.Int32Value",  "google.protobuf.Int64Value",
		"google.protobuf.StringValue", "google.protobuf.UInt32Value", "google.protobuf.UInt64Value",
	};

	for (size_t i = 0; i < sizeof(wrappers) / sizeof(wrappers[0]); i++) {
		if (strcmp(desc->name, wrappers[i]) == 0)
			return true;
	}
	return false;
}

/* Well-known types whose JSON is not an object of their fields; in an Any they sit under "value". */
static bool has_special_json(const ProtobufCMessageDescriptor *desc)
{
	return is_wrapper(desc) || strcmp(desc->name, "google.protobuf.Struct") == 0 ||
	       strcmp(desc->name, "google.protobuf.Value") == 0 ||
	       strcmp(desc->name, "google.protobuf.ListValue") == 0 ||
	       strcmp(desc->name, "google.protobuf.Duration") == 0 ||
	       strcmp(desc->name, "google.protobuf.Any") == 0;
}

static json_t *any_to_json(const ProtobufCMessage *msg, struct walk walk)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	const char *type_url = *(char *const *)field_storage(msg, desc->fields[0].offset);
	const ProtobufCBinaryData *value = field_storage(msg, desc->fields[1].offset);
	const ProtobufCMessageDescriptor *type = sm_pb_find_type(type_url);
	ProtobufCMessage *inner = NULL;
	json_t *object = NULL;
	char err[8];

	if (type && walk.depth < ANY_MAX_DEPTH && sm_pb_decode(type, value->data, value->len, &inner, err, sizeof(err)))
		inner = NULL;
	if (!inner) {
		/* Unknown, undecodable or too deep: keep the raw bytes visible. */
		object = json_pack("{s:o, s:o}", "@type", string_to_json(type_url), "value",
				   bytes_to_json(value));
		return object;
	}

	json_t *inner_json = message_to_json(inner, (struct walk){ walk.depth + 1, walk.ip_fields });
	if (inner_json) {
		/* "@type" first: people read dumps top-down. */
		object = json_pack("{s:o}", "@type", string_to_json(type_url));
		int err = !object;
		if (!err && has_special_json(type))
			err = json_object_set(object, "value", inner_json);
		else if (!err)
			err = json_object_update(object, inner_json);
		if (err) {
			json_decref(object);
			object = NULL;
		}
		json_decref(inner_json);
	}
	protobuf_c_message_free_unpacked(inner, NULL);
	return object;
}

static json_t *message_to_json(const ProtobufCMessage *msg, struct walk walk)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;

	if (strcmp(desc->name, "google.protobuf.Any") == 0)
		return any_to_json(msg, walk);
	if (strcmp(desc->name, "google.protobuf.Duration") == 0)
		return duration_to_json(msg);
	if (is_wrapper(desc))
		return value_to_json(&desc->fields[0], field_storage(msg, desc->fields[0].offset), walk);
	if (strcmp(desc->name, "google.protobuf.Struct") == 0)
		return unwrap_member(plain_message_to_json(msg, walk), "fields", json_object());
	if (strcmp(desc->name, "google.protobuf.ListValue") == 0)
		return unwrap_member(plain_message_to_json(msg, walk), "values", json_array());
	if (strcmp(desc->name, "google.protobuf.Value") == 0)
		return unwrap_member(plain_message_to_json(msg, walk), NULL, json_null());
	return plain_message_to_json(msg, walk);
}

const char *const sm_pb_ip_fields[] = {
	"istio.workload.Workload.addresses",
	"istio.workload.NetworkAddress.address",
	"istio.security.Address.address",
	NULL,
};

json_t *sm_pb_to_json(const ProtobufCMessage *msg)
{
	return message_to_json(msg, (struct walk){ 0 });
}

json_t *sm_pb_to_json_ips(const ProtobufCMessage *msg, const char *const *ip_fields)
{
	return message_to_json(msg, (struct walk){ .ip_fields = ip_fields });
}
