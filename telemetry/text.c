/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry/internal.h"

static bool reserve(struct tel_text *text, size_t more)
{
	if (text->failed)
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

void tel_append(struct tel_text *text, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		text->failed = true;
		return;
	}
	if (!reserve(text, (size_t)n + 1))
		return;
	va_start(ap, fmt);
	vsnprintf(text->data + text->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	text->len += (size_t)n;
}

void tel_append_str(struct tel_text *text, const char *s)
{
	size_t n = strlen(s);

	if (!reserve(text, n + 1))
		return;
	memcpy(text->data + text->len, s, n + 1);
	text->len += n;
}

/* The escape of c, or NULL when c stands for itself. */
static const char *escape_of(unsigned char c, enum tel_escape escape, char buf[16])
{
	switch (c) {
	case '\\': return "\\\\";
	case '"': return "\\\"";
	case '\n': return "\\n";
	default: break;
	}
	if (escape == TEL_ESCAPE_PROMETHEUS || (c >= 0x20 && c != 0x7f))
		return NULL;
	if (c == '\r')
		return "\\r";
	if (c == '\t')
		return "\\t";
	snprintf(buf, 16, escape == TEL_ESCAPE_JSON ? "\\u%04x" : "\\u{%x}", c);
	return buf;
}

void tel_append_escaped(struct tel_text *text, const char *value, enum tel_escape escape)
{
	char buf[16];
	const char *run;

	if (!value || !value[0])
		value = "unknown";
	/* runs of characters that stand for themselves are copied whole */
	for (const char *p = value; *p;) {
		const char *e = NULL;
		for (run = p; *p && !(e = escape_of((unsigned char)*p, escape, buf)); p++)
			;
		if (!reserve(text, (size_t)(p - run) + (e ? 16 : 0) + 1))
			return;
		memcpy(text->data + text->len, run, (size_t)(p - run));
		text->len += (size_t)(p - run);
		if (e) {
			text->len += (size_t)snprintf(text->data + text->len, 16, "%s", e);
			p++;
		}
		text->data[text->len] = '\0';
	}
}
