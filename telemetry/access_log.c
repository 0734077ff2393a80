/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's access log line ("connection complete"), plain or JSON, with its field names and order,
 * then what the kernel adds (RTT, retransmissions, how the bytes went). Unknown names are left out, as
 * ztunnel leaves out a field with no value.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpf/sockmesh.h"
#include "telemetry/internal.h"
#include "telemetry/telemetry.h"

struct line {
	struct tel_text text;
	enum sm_tel_log_format format;
	bool started; /* a field is written: the next is separated */
};

static void key(struct line *l, const char *name)
{
	if (l->format == SM_TEL_LOG_JSON) {
		tel_append_str(&l->text, ",\"");
		tel_append_str(&l->text, name);
		tel_append_str(&l->text, "\":");
	} else {
		if (l->started)
			tel_append_str(&l->text, " ");
		tel_append_str(&l->text, name);
		tel_append_str(&l->text, "=");
	}
	l->started = true;
}

/* A string field, quoted (ztunnel quotes its string values); skipped when unknown. */
static void string(struct line *l, const char *name, const char *value)
{
	if (!value || !value[0])
		return;
	key(l, name);
	tel_append_str(&l->text, "\"");
	tel_append_escaped(&l->text, value, l->format == SM_TEL_LOG_JSON ? TEL_ESCAPE_JSON : TEL_ESCAPE_QUOTED);
	tel_append_str(&l->text, "\"");
}

/* An address: unquoted in the plain format, as ztunnel displays a socket address. */
static void address(struct line *l, const char *name, const char *value)
{
	if (l->format == SM_TEL_LOG_JSON) {
		string(l, name, value);
		return;
	}
	key(l, name);
	tel_append_str(&l->text, value && value[0] ? value : "unknown");
}

static void number(struct line *l, const char *name, unsigned long long value)
{
	key(l, name);
	tel_append(&l->text, "%llu", value);
}

static void boolean(struct line *l, const char *name, bool value)
{
	key(l, name);
	tel_append_str(&l->text, value ? "true" : "false");
}

static void identity(struct line *l, const char *name, const struct sm_tel_workload *w)
{
	char id[1024];

	if (!w->namespace || !w->namespace[0] || !w->trust_domain || !w->service_account)
		return;
	snprintf(id, sizeof(id), "spiffe://%s/ns/%s/sa/%s", w->trust_domain, w->namespace, w->service_account);
	string(l, name, id);
}

/* ztunnel's src.workload / dst.workload: the pod's name, else its canonical service. */
static const char *workload_name(const struct sm_tel_workload *w)
{
	return w->pod && w->pod[0] ? w->pod : w->canonical_service;
}

static void fields(struct line *l, const struct sm_tel_conn *c)
{
	char duration[32];

	address(l, "src.addr", c->src_addr);
	string(l, "src.workload", workload_name(&c->src));
	string(l, "src.namespace", c->src.namespace);
	identity(l, "src.identity", &c->src);
	address(l, "dst.addr", c->dst_addr);
	string(l, "dst.service", c->service.hostname);
	string(l, "dst.workload", workload_name(&c->dst));
	string(l, "dst.namespace", c->dst.namespace);
	identity(l, "dst.identity", &c->dst);
	string(l, "direction", c->direction == SM_CONN_OUTBOUND ? "outbound" : "inbound");
	/* the local workload's view, as ztunnel's log (not the metrics' request/response) */
	number(l, "bytes_sent", c->bytes_sent);
	number(l, "bytes_recv", c->bytes_received);
	snprintf(duration, sizeof(duration), "%llums", (unsigned long long)(c->duration_ns / 1000000));
	string(l, "duration", duration);
	string(l, "error", c->error);
	number(l, "rtt_us", c->srtt_us);
	number(l, "min_rtt_us", c->min_rtt_us);
	number(l, "retransmits", c->retransmits);
	boolean(l, "accelerated", c->flags & SM_CONN_ACCELERATED);
	boolean(l, "waypoint", c->flags & SM_CONN_WAYPOINT);
}

size_t sm_telemetry_access_log(const struct sm_tel_conn *c, enum sm_tel_log_format format, const struct timespec *now,
			       char *buf, size_t size)
{
	struct line l = { .format = format };
	bool failed = c->kind == SM_CONN_FAILED || c->response != SM_TEL_RESPONSE_OK || (c->error && c->error[0]);
	const char *level = failed ? "error" : "info";
	char stamp[64];
	struct tm tm;
	size_t len;

	gmtime_r(&now->tv_sec, &tm);
	len = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + len, sizeof(stamp) - len, ".%06ldZ", now->tv_nsec / 1000);
	if (format == SM_TEL_LOG_JSON)
		tel_append(&l.text, "{\"level\":\"%s\",\"time\":\"%s\",\"scope\":\"access\",\"message\":\"connection complete\"",
			   level, stamp);
	else
		tel_append(&l.text, "%s\t%s\taccess\tconnection complete\t", stamp, level);
	fields(&l, c);
	tel_append(&l.text, format == SM_TEL_LOG_JSON ? "}\n" : "\n");
	if (l.text.failed || !l.text.data) {
		free(l.text.data);
		if (size)
			buf[0] = '\0';
		return 0;
	}
	len = l.text.len;
	if (size)
		snprintf(buf, size, "%s", l.text.data);
	free(l.text.data);
	return len;
}
