/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>

#include "agent/agent.h"
#include "agent/telemetry_event.h"

/* Under the model lock: the strings point into the model. */
static void name_workload(const struct sm_model *model, const uint8_t addr[16], struct sm_tel_workload *out)
{
	struct sm_workload_labels w;

	*out = (struct sm_tel_workload){ 0 };
	if (!sm_model_workload_at(model, addr, &w))
		return;
	*out = (struct sm_tel_workload){
		.uid = w.uid, .workload = w.workload_name, .pod = w.name, .namespace = w.namespace,
		.canonical_service = w.canonical_name, .canonical_revision = w.canonical_revision,
		.cluster = w.cluster_id, .trust_domain = w.trust_domain, .service_account = w.service_account,
		.region = w.region, .zone = w.zone,
	};
}

/* Outbound (orig set): the service whose VIP the client connected to, none for a pod or an outside
 * address, as ztunnel. Inbound, which does not know the VIP: ztunnel's guess, a service of the local
 * workload on its port. */
static void name_service(const struct sm_model *model, const uint8_t orig[16], const uint8_t dst[16],
			 uint16_t port, struct sm_tel_service *out)
{
	struct sm_service_labels s;
	bool found = orig ? sm_model_service_at(model, orig, &s) : sm_model_service_of_port(model, dst, port, &s);

	*out = (struct sm_tel_service){ 0 };
	if (found)
		*out = (struct sm_tel_service){ .hostname = s.hostname, .name = s.name, .namespace = s.namespace };
}

/*
 * Names conn's ends (src: the client, dst: the server it reached, orig: what it connected to (outbound),
 * NULL inbound; dst_port: the server's port (inbound)), counts it, and formats its line at its end.
 */
static int record(const struct tel_event_sink *sink, const struct sm_model *model, struct sm_tel_conn *conn,
		  const uint8_t src[16], const uint8_t dst[16], const uint8_t orig[16], uint16_t dst_port,
		  const struct timespec *now, char *line, size_t size, size_t *line_len)
{
	bool ends = conn->kind == SM_CONN_CLOSED || conn->kind == SM_CONN_FAILED;
	int ret;

	name_workload(model, src, &conn->src);
	/* the pod the client named (sent through its waypoint), else the peer it reached */
	if (orig)
		name_workload(model, orig, &conn->dst);
	if (!conn->dst.uid)
		name_workload(model, dst, &conn->dst);
	name_service(model, orig, dst, dst_port, &conn->service);
	conn->names_generation = sm_model_generation(model);
	ret = sm_telemetry_record(sink->counters, conn);
	*line_len = 0;
	if (ends && sink->access_log)
		*line_len = sm_telemetry_access_log(conn, sink->format, sink->log_cache, now, line, size);
	return ret;
}

static const char *failure_text(uint8_t failure)
{
	switch (failure) {
	case SM_CONN_FAIL_REFUSED: return "connection refused";
	case SM_CONN_FAIL_TIMEOUT: return "connection timed out";
	default: return "connection failed";
	}
}

int tel_event_conn(const struct tel_event_sink *sink, const struct sm_model *model, const struct sm_conn_event *ev,
		   const struct timespec *now, char *line, size_t size, size_t *line_len)
{
	bool outbound = ev->direction == SM_CONN_OUTBOUND;
	char local[64], remote[64];
	struct sm_tel_conn conn = {
		.id = ev->socket_cookie,
		.kind = ev->kind,
		.direction = ev->direction,
		.response = ev->kind == SM_CONN_FAILED ? SM_TEL_RESPONSE_CONNECT : SM_TEL_RESPONSE_OK,
		.flags = ev->flags,
		.bytes_sent = ev->bytes_sent,
		.bytes_received = ev->bytes_received,
		.duration_ns = ev->now_ns > ev->start_ns ? ev->now_ns - ev->start_ns : 0,
		.srtt_us = ev->srtt_us,
		.min_rtt_us = ev->min_rtt_us == UINT32_MAX ? 0 : ev->min_rtt_us, /* the kernel's ~0: no sample yet */
		.retransmits = ev->total_retrans,
		.error = ev->kind == SM_CONN_FAILED ? failure_text(ev->failure) : NULL,
	};

	*line_len = 0;
	if (ev->direction != SM_CONN_OUTBOUND && ev->direction != SM_CONN_INBOUND)
		return 0;
	format_mapped_endpoint(ev->local_addr, ntohs(ev->local_port), local, sizeof(local));
	format_mapped_endpoint(ev->remote_addr, ntohs(ev->remote_port), remote, sizeof(remote));
	/* the client is the source: the local socket's when it connected out */
	conn.src_addr = outbound ? local : remote;
	conn.dst_addr = outbound ? remote : local;
	/* only an outbound connect knows the address before translation */
	return record(sink, model, &conn, outbound ? ev->local_addr : ev->remote_addr,
		      outbound ? ev->remote_addr : ev->local_addr, outbound ? ev->orig_addr : NULL,
		      outbound ? 0 : ntohs(ev->local_port), now, line, size, line_len);
}

int tel_event_denied(const struct tel_event_sink *sink, const struct sm_model *model, const struct sm_authz_event *ev,
		     const char *error, const struct timespec *now, char *line, size_t size, size_t *line_len)
{
	char src[64], dst[64];
	struct sm_tel_conn conn = {
		.kind = SM_CONN_FAILED,
		.direction = SM_CONN_INBOUND,
		.response = SM_TEL_RESPONSE_DENY,
		.src_addr = src,
		.dst_addr = dst,
		.error = error,
	};

	format_mapped_endpoint(ev->src_addr, ntohs(ev->src_port), src, sizeof(src));
	format_mapped_endpoint(ev->dst_addr, ntohs(ev->dst_port), dst, sizeof(dst));
	return record(sink, model, &conn, ev->src_addr, ev->dst_addr, NULL, ntohs(ev->dst_port), now, line, size,
		      line_len);
}
