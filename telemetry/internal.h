/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to telemetry/: a growing text buffer and the escapes each output needs. */
#ifndef SOCKMESH_TELEMETRY_INTERNAL_H
#define SOCKMESH_TELEMETRY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

struct tel_text {
	char *data;
	size_t len, capacity;
	bool failed; /* out of memory: everything after is dropped */
};

void tel_append(struct tel_text *text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a string as it is (the hot path: no format). */
void tel_append_str(struct tel_text *text, const char *s);

enum tel_escape {
	TEL_ESCAPE_PROMETHEUS, /* label values: \\, \" and \n */
	TEL_ESCAPE_QUOTED,     /* the plain log's quoted strings: also \r, \t and \u{XX} for other controls */
	TEL_ESCAPE_JSON,       /* JSON strings: \\, \", \n, \r, \t and \u00XX */
};

/* Appends value escaped (without the quotes); NULL or "" appends `unknown`, as ztunnel writes a missing value. */
void tel_append_escaped(struct tel_text *text, const char *value, enum tel_escape escape);

#endif
