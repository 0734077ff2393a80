/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "telemetry/internal.h"

bool tel_text_grow(struct tel_text *text, size_t more)
{
	if (text->failed || text->fixed)
		return false;
	if (text->len + more < text->capacity)
		return true;
	size_t capacity = (text->capacity ? text->capacity * 2 : 4096) + more;
	char *data = realloc(text->data, capacity);
	if (!data) {
		text->failed = true;
		return false;
	}
	text->data = data;
	text->capacity = capacity;
	return true;
}

void tel_append_cut(struct tel_text *text, const char *s, size_t n)
{
	if (!text->fixed)
		return; /* failed */
	if (text->len + 1 < text->capacity) {
		size_t room = text->capacity - 1 - text->len;
		memcpy(text->data + text->len, s, n < room ? n : room);
	}
	text->len += n;
}

void tel_append_u64(struct tel_text *text, uint64_t value)
{
	char digits[20];
	size_t i = sizeof(digits);

	do {
		digits[--i] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	tel_append_mem(text, digits + i, sizeof(digits) - i);
}

void tel_append(struct tel_text *text, const char *fmt, ...)
{
	size_t room = !text->fixed && text->capacity > text->len ? text->capacity - text->len : 0;
	va_list ap;
	int n;

	/* one pass when it fits, which it does once the buffer has grown */
	va_start(ap, fmt);
	n = vsnprintf(room ? text->data + text->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n < 0) {
		text->failed = true;
		return;
	}
	if ((size_t)n < room) {
		text->len += (size_t)n;
		return;
	}
	char *formatted = malloc((size_t)n + 1);
	if (!formatted) {
		text->failed = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(formatted, (size_t)n + 1, fmt, ap);
	va_end(ap);
	tel_append_mem(text, formatted, (size_t)n);
	free(formatted);
}

size_t tel_text_end(struct tel_text *text)
{
	if (text->len < text->capacity)
		text->data[text->len] = '\0';
	else if (text->fixed && text->capacity)
		text->data[text->capacity - 1] = '\0';
	else if (tel_text_grow(text, 0))
		text->data[text->len] = '\0';
	return text->len;
}

/* What each byte is to the escapes: most stand for themselves in all three. */
enum byte_class {
	PLAIN = 0,
	END,	 /* the NUL that ends the value */
	SPECIAL, /* \\, \" and \n: escaped in all three */
	CONTROL, /* other control characters: as they are in Prometheus, escaped in the log's */
};

static const unsigned char byte_class[256] = {
	[0] = END, ['\n'] = SPECIAL, ['"'] = SPECIAL, ['\\'] = SPECIAL, [0x01] = CONTROL, [0x02] = CONTROL,
	[0x03] = CONTROL, [0x04] = CONTROL, [0x05] = CONTROL, [0x06] = CONTROL, [0x07] = CONTROL,
	[0x08] = CONTROL, [0x09] = CONTROL, [0x0b] = CONTROL, [0x0c] = CONTROL, [0x0d] = CONTROL,
	[0x0e] = CONTROL, [0x0f] = CONTROL, [0x10] = CONTROL, [0x11] = CONTROL, [0x12] = CONTROL,
	[0x13] = CONTROL, [0x14] = CONTROL, [0x15] = CONTROL, [0x16] = CONTROL, [0x17] = CONTROL,
	[0x18] = CONTROL, [0x19] = CONTROL, [0x1a] = CONTROL, [0x1b] = CONTROL, [0x1c] = CONTROL,
	[0x1d] = CONTROL, [0x1e] = CONTROL, [0x1f] = CONTROL, [0x7f] = CONTROL
};

/* The escape of c, a byte that does not stand for itself. */
static void append_escape(struct tel_text *text, unsigned char c, enum tel_escape escape)
{
	static const char hex[] = "0123456789abcdef";
	char buf[8];

	switch (c) {
	case '\\': TEL_APPEND_LITERAL(text, "\\\\"); return;
	case '"': TEL_APPEND_LITERAL(text, "\\\""); return;
	case '\n': TEL_APPEND_LITERAL(text, "\\n"); return;
	case '\r': TEL_APPEND_LITERAL(text, "\\r"); return;
	case '\t': TEL_APPEND_LITERAL(text, "\\t"); return;
	default: break;
	}
	if (escape == TEL_ESCAPE_JSON) { /* \u00XX */
		memcpy(buf, "\\u00", 4);
		buf[4] = hex[c >> 4];
		buf[5] = hex[c & 15];
		tel_append_mem(text, buf, 6);
		return;
	}
	/* \u{X} or \u{XX}, as Rust's escape_debug */
	size_t n = 0;
	buf[n++] = '\\';
	buf[n++] = 'u';
	buf[n++] = '{';
	if (c >> 4)
		buf[n++] = hex[c >> 4];
	buf[n++] = hex[c & 15];
	buf[n++] = '}';
	tel_append_mem(text, buf, n);
}

void tel_append_escaped(struct tel_text *text, const char *value, enum tel_escape escape)
{
	tel_append_escaped_raw(text, value && value[0] ? value : "unknown", escape);
}

void tel_append_escaped_raw(struct tel_text *text, const char *value, enum tel_escape escape)
{
	/* the classes that stand for themselves */
	unsigned char most = escape == TEL_ESCAPE_PROMETHEUS ? CONTROL : PLAIN;
	const unsigned char *p;

	/* runs of bytes that stand for themselves are copied whole */
	for (p = (const unsigned char *)value; *p;) {
		const unsigned char *run = p;
		while (byte_class[*p] == PLAIN || byte_class[*p] == most)
			p++;
		tel_append_mem(text, (const char *)run, (size_t)(p - run));
		if (!*p)
			break;
		append_escape(text, *p++, escape);
	}
}
