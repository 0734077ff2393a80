/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's access log line ("connection complete"), plain or JSON, with its field names and order,
 * then what the kernel adds (RTT, retransmissions, how the bytes went). Unknown names are left out, as
 * ztunnel leaves out a field with no value. The names of each side, formatted once, are copied from the
 * caller's cache (telemetry/log_cache.c) while their generation lasts.
 */
#include <stdint.h>
#include <string.h>

#include "bpf/sockmesh.h"
#include "telemetry/internal.h"
#include "telemetry/telemetry.h"

struct line {
	struct tel_text text; /* the caller's buffer */
	enum sm_tel_log_format format;
	bool started; /* a field is written: the next is separated */
};

/* A field's name with its separator and its '=' or ':': ` name=` in the plain format, `,"name":` in JSON
 * (whose header comes before any field), both spelled out at compile time by FIELD. */
struct field {
	const char *plain, *json;
	size_t plain_len, json_len;
};

#define FIELD(name) \
	((struct field){ " " name "=", ",\"" name "\":", sizeof(" " name "=") - 1, sizeof(",\"" name "\":") - 1 })

static void key(struct line *l, struct field f)
{
	if (l->format == SM_TEL_LOG_JSON)
		tel_append_mem(&l->text, f.json, f.json_len);
	else if (l->started)
		tel_append_mem(&l->text, f.plain, f.plain_len);
	else /* the first field: no separator */
		tel_append_mem(&l->text, f.plain + 1, f.plain_len - 1);
	l->started = true;
}

#define KEY(l, name) key((l), FIELD(name))

static void quoted(struct line *l, const char *value)
{
	TEL_APPEND_LITERAL(&l->text, "\"");
	tel_append_escaped(&l->text, value, l->format == SM_TEL_LOG_JSON ? TEL_ESCAPE_JSON : TEL_ESCAPE_QUOTED);
	TEL_APPEND_LITERAL(&l->text, "\"");
}

/* A string field, quoted (ztunnel quotes its string values); skipped when unknown. */
#define STRING(l, name, value)                          \
	do {                                            \
		const char *value_ = (value);           \
		if (value_ && value_[0]) {              \
			KEY(l, name);                   \
			quoted(l, value_);              \
		}                                       \
	} while (0)

/* An address: unquoted in the plain format, as ztunnel displays a socket address. */
static void address(struct line *l, struct field f, const char *value)
{
	if (l->format == SM_TEL_LOG_JSON) {
		if (!value || !value[0])
			return;
		key(l, f);
		quoted(l, value);
		return;
	}
	key(l, f);
	tel_append_str(&l->text, value && value[0] ? value : "unknown");
}

#define ADDRESS(l, name, value) address((l), FIELD(name), (value))

#define NUMBER(l, name, value)                    \
	do {                                      \
		KEY(l, name);                     \
		tel_append_u64(&(l)->text, (value)); \
	} while (0)

#define BOOLEAN(l, name, value)                                                           \
	do {                                                                              \
		KEY(l, name);                                                             \
		if (value)                                                                \
			TEL_APPEND_LITERAL(&(l)->text, "true");                           \
		else                                                                      \
			TEL_APPEND_LITERAL(&(l)->text, "false");                          \
	} while (0)

static void identity(struct line *l, struct field f, const struct sm_tel_workload *w)
{
	enum tel_escape escape = l->format == SM_TEL_LOG_JSON ? TEL_ESCAPE_JSON : TEL_ESCAPE_QUOTED;

	if (!w->namespace || !w->namespace[0] || !w->trust_domain || !w->service_account)
		return;
	/* spiffe://TD/ns/NS/sa/SA, each part escaped as the whole would be (escaping works byte by byte) */
	key(l, f);
	TEL_APPEND_LITERAL(&l->text, "\"spiffe://");
	tel_append_escaped_raw(&l->text, w->trust_domain, escape);
	TEL_APPEND_LITERAL(&l->text, "/ns/");
	tel_append_escaped_raw(&l->text, w->namespace, escape);
	TEL_APPEND_LITERAL(&l->text, "/sa/");
	tel_append_escaped_raw(&l->text, w->service_account, escape);
	TEL_APPEND_LITERAL(&l->text, "\"");
}

#define IDENTITY(l, name, w) identity((l), FIELD(name), (w))

/* ztunnel's src.workload / dst.workload: the pod's name, else its canonical service. */
static const char *workload_name(const struct sm_tel_workload *w)
{
	return w->pod && w->pod[0] ? w->pod : w->canonical_service;
}

static void source_names(struct line *l, const struct sm_tel_conn *c)
{
	STRING(l, "src.workload", workload_name(&c->src));
	STRING(l, "src.namespace", c->src.namespace);
	IDENTITY(l, "src.identity", &c->src);
}

static void destination_names(struct line *l, const struct sm_tel_conn *c)
{
	STRING(l, "dst.service", c->service.hostname);
	STRING(l, "dst.workload", workload_name(&c->dst));
	STRING(l, "dst.namespace", c->dst.namespace);
	IDENTITY(l, "dst.identity", &c->dst);
	STRING(l, "direction", c->direction == SM_CONN_OUTBOUND ? "outbound" : "inbound");
}

/*
 * One side's names, from the cache when they were formatted before. Each follows an address, which
 * always writes its key in the plain format: a fragment never starts the line, so it reads the same
 * wherever it goes.
 */
static void names(struct line *l, struct sm_tel_log_cache *cache, enum tel_log_side side,
		  const struct sm_tel_conn *c)
{
	const struct sm_tel_workload *w = side == TEL_LOG_SOURCE ? &c->src : &c->dst;
	struct tel_log_fragment *slot;
	struct tel_log_names key;
	size_t start = l->text.len;

	memset(&key, 0, sizeof(key));
	key.names[0] = workload_name(w);
	key.names[1] = w->namespace;
	key.names[2] = w->trust_domain;
	key.names[3] = w->service_account;
	if (side == TEL_LOG_DESTINATION) {
		key.names[4] = c->service.hostname;
		key.direction = c->direction;
	}
	key.generation = c->names_generation;
	key.format = (uint8_t)l->format;
	slot = tel_log_cache_slot(cache, side, &key);
	if (tel_log_fragment_is(slot, &key)) {
		tel_append_mem(&l->text, slot->text, slot->len);
		return;
	}
	if (side == TEL_LOG_SOURCE)
		source_names(l, c);
	else
		destination_names(l, c);
	if (l->text.len < l->text.capacity) /* all of it is in the buffer */
		tel_log_fragment_keep(slot, &key, l->text.data + start, l->text.len - start);
}

static void fields(struct line *l, struct sm_tel_log_cache *cache, const struct sm_tel_conn *c)
{
	ADDRESS(l, "src.addr", c->src_addr);
	names(l, cache, TEL_LOG_SOURCE, c);
	ADDRESS(l, "dst.addr", c->dst_addr);
	names(l, cache, TEL_LOG_DESTINATION, c);
	/* the local workload's view, as ztunnel's log (not the metrics' request/response) */
	NUMBER(l, "bytes_sent", c->bytes_sent);
	NUMBER(l, "bytes_recv", c->bytes_received);
	KEY(l, "duration"); /* "13ms": a string, as ztunnel's */
	TEL_APPEND_LITERAL(&l->text, "\"");
	tel_append_u64(&l->text, c->duration_ns / 1000000);
	TEL_APPEND_LITERAL(&l->text, "ms\"");
	STRING(l, "error", c->error);
	NUMBER(l, "rtt_us", c->srtt_us);
	NUMBER(l, "min_rtt_us", c->min_rtt_us);
	NUMBER(l, "retransmits", c->retransmits);
	BOOLEAN(l, "accelerated", c->flags & SM_CONN_ACCELERATED);
	BOOLEAN(l, "waypoint", c->flags & SM_CONN_WAYPOINT);
}

/* n as two digits, or four */
static char *digits(char *at, unsigned n, int width)
{
	for (int i = width - 1; i >= 0; i--, n /= 10)
		at[i] = (char)('0' + n % 10);
	return at + width;
}

/*
 * YYYY-MM-DDTHH:MM:SS.uuuuuuZ, as gmtime_r and strftime gave it (years 0 to 9999), without them: the civil
 * date of a day count is a few divisions (H. Hinnant's days_to_civil), where gmtime_r and strftime cost more
 * than the rest of the line.
 */
static size_t timestamp(const struct timespec *now, char out[32])
{
	int64_t days = now->tv_sec / 86400, secs = now->tv_sec % 86400;
	char *p = out;

	if (secs < 0) {
		secs += 86400;
		days--;
	}
	days += 719468;
	int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	unsigned doe = (unsigned)(days - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	unsigned day = doy - (153 * mp + 2) / 5 + 1, month = mp < 10 ? mp + 3 : mp - 9;
	int64_t year = (int64_t)yoe + era * 400 + (month <= 2);

	if (year < 0 || year > 9999) /* no clock says so; keep the line's shape */
		year = year < 0 ? 0 : 9999;
	p = digits(p, (unsigned)year, 4);
	*p++ = '-';
	p = digits(p, month, 2);
	*p++ = '-';
	p = digits(p, day, 2);
	*p++ = 'T';
	p = digits(p, (unsigned)(secs / 3600), 2);
	*p++ = ':';
	p = digits(p, (unsigned)(secs / 60 % 60), 2);
	*p++ = ':';
	p = digits(p, (unsigned)(secs % 60), 2);
	*p++ = '.';
	p = digits(p, (unsigned)(now->tv_nsec / 1000), 6);
	*p++ = 'Z';
	return (size_t)(p - out);
}

size_t sm_telemetry_access_log(const struct sm_tel_conn *c, enum sm_tel_log_format format,
			       struct sm_tel_log_cache *cache, const struct timespec *now, char *buf, size_t size)
{
	struct line l = { .text = tel_text_fixed(buf, size), .format = format };
	bool failed = c->kind == SM_CONN_FAILED || c->response != SM_TEL_RESPONSE_OK || (c->error && c->error[0]);
	char stamp[32];
	size_t stamp_len = timestamp(now, stamp);

	if (format == SM_TEL_LOG_JSON) {
		if (failed)
			TEL_APPEND_LITERAL(&l.text, "{\"level\":\"error\",\"time\":\"");
		else
			TEL_APPEND_LITERAL(&l.text, "{\"level\":\"info\",\"time\":\"");
		tel_append_mem(&l.text, stamp, stamp_len);
		TEL_APPEND_LITERAL(&l.text, "\",\"scope\":\"access\",\"message\":\"connection complete\"");
	} else {
		tel_append_mem(&l.text, stamp, stamp_len);
		if (failed)
			TEL_APPEND_LITERAL(&l.text, "\terror\taccess\tconnection complete\t");
		else
			TEL_APPEND_LITERAL(&l.text, "\tinfo\taccess\tconnection complete\t");
	}
	fields(&l, cache, c);
	if (format == SM_TEL_LOG_JSON)
		TEL_APPEND_LITERAL(&l.text, "}\n");
	else
		TEL_APPEND_LITERAL(&l.text, "\n");
	return tel_text_end(&l.text);
}
