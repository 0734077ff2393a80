/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to telemetry/: a text buffer (growing, or the caller's, cut like snprintf) and the escapes each output
 * needs. Everything here is on the per-event path: plain byte copies, no format strings. */
#ifndef SOCKMESH_TELEMETRY_INTERNAL_H
#define SOCKMESH_TELEMETRY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct tel_text {
	char *data;
	size_t len;	 /* what was appended: with fixed, may pass capacity (what the text needed) */
	size_t capacity;
	bool fixed;	 /* the caller's buffer: what does not fit is cut, len still counts it */
	bool failed;	 /* out of memory: everything after is dropped */
};

/* A text written into buf (size bytes, may be 0), cut like snprintf's. */
static inline struct tel_text tel_text_fixed(char *buf, size_t size)
{
	return (struct tel_text){ .data = buf, .capacity = size, .fixed = true };
}

/* Room for more bytes and a NUL past len; false when they do not fit (a fixed text copies what does). */
bool tel_text_grow(struct tel_text *text, size_t more);
void tel_append_cut(struct tel_text *text, const char *s, size_t n);

static inline void tel_append_mem(struct tel_text *text, const char *s, size_t n)
{
	if (text->len + n < text->capacity || tel_text_grow(text, n)) {
		memcpy(text->data + text->len, s, n);
		text->len += n;
	} else {
		tel_append_cut(text, s, n);
	}
}

/* Appends a string as it is. */
static inline void tel_append_str(struct tel_text *text, const char *s)
{
	tel_append_mem(text, s, strlen(s));
}

/* A string literal, its length known at compile time. */
#define TEL_APPEND_LITERAL(text, literal) tel_append_mem((text), "" literal, sizeof(literal) - 1)

void tel_append_u64(struct tel_text *text, uint64_t value);
void tel_append(struct tel_text *text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* NUL-terminates the text (cut to the capacity when fixed); returns len. */
size_t tel_text_end(struct tel_text *text);

enum tel_escape {
	TEL_ESCAPE_PROMETHEUS, /* label values: \\, \" and \n */
	TEL_ESCAPE_QUOTED,     /* the plain log's quoted strings: also \r, \t and \u{XX} for other controls */
	TEL_ESCAPE_JSON,       /* JSON strings: \\, \", \n, \r, \t and \u00XX */
};

/* Appends value escaped (without the quotes); NULL or "" appends `unknown`, as ztunnel writes a missing value. */
void tel_append_escaped(struct tel_text *text, const char *value, enum tel_escape escape);
/* The same, value as it is ("" stays empty). */
void tel_append_escaped_raw(struct tel_text *text, const char *value, enum tel_escape escape);

/* What a fragment of the access log line is made of: the names' pointers (equal pointers are equal strings
 * within one generation), its format and direction. Zeroed before it is filled: it is compared whole. */
struct tel_log_names {
	const char *names[5];
	uint64_t generation;
	uint8_t format, direction;
	uint8_t pad[6];
};

/* A fragment kept: names and the text they gave. */
struct tel_log_fragment {
	struct tel_log_names names;
	uint16_t len;
	char text[230]; /* longer names are formatted each time */
};

enum tel_log_side {
	TEL_LOG_SOURCE,	     /* src.workload .. src.identity */
	TEL_LOG_DESTINATION, /* dst.service .. direction */
};

struct sm_tel_log_cache;

/* The slot names' fragment would be kept in; NULL without a cache or a generation (nothing is kept). */
struct tel_log_fragment *tel_log_cache_slot(struct sm_tel_log_cache *cache, enum tel_log_side side,
					    const struct tel_log_names *names);
/* True when slot holds names' fragment. */
bool tel_log_fragment_is(const struct tel_log_fragment *slot, const struct tel_log_names *names);
/* Keeps text as names' fragment in slot (NULL: nowhere), unless it is longer than a slot holds. */
void tel_log_fragment_keep(struct tel_log_fragment *slot, const struct tel_log_names *names, const char *text,
			   size_t len);

#endif
