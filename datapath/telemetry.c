/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L4 telemetry's user side: the ring buffer of connection events (sm_conn_events). The knob is
 * SM_CONFIG_TELEMETRY in sm_datapath_set_config; what the kernel records: bpf/telemetry.bpf.h. An event that
 * stands for both ends of a local connection is handed on as two, one per end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "datapath/datapath.h"
#include "datapath/internal.h"

struct sm_conn_events {
	struct ring_buffer *ring;
	int (*fn)(void *ctx, const struct sm_conn_event *ev);
	void *ctx;
};

/* The top bit of a socket cookie: the kernel counts cookies up from 1 and never reaches it. */
#define PEER_COOKIE_BIT (1ULL << 63)

/*
 * The accepting end's event, made from its connecting end's that carries SM_CONN_BOTH_ENDS (bpf/sockmesh.h,
 * "One end for two"): the same connection from the other side, bytes swapped, as an inbound one to the
 * address the connecting end reached.
 */
static void peer_event(const struct sm_conn_event *ev, struct sm_conn_event *peer)
{
	*peer = (struct sm_conn_event){
		.socket_cookie = ev->socket_cookie | PEER_COOKIE_BIT,
		.start_ns = ev->start_ns,
		.now_ns = ev->now_ns,
		.bytes_sent = ev->bytes_received,
		.bytes_received = ev->bytes_sent,
		.local_port = ev->remote_port,
		.remote_port = ev->local_port,
		.orig_port = ev->local_port, /* as the kernel's inbound events: no original destination */
		.kind = ev->kind,
		.direction = SM_CONN_INBOUND,
		.flags = ev->flags & (SM_CONN_ACCELERATED | SM_CONN_BOTH_ENDS),
		.failure = ev->failure,
		.srtt_us = ev->srtt_us,
		.min_rtt_us = ev->min_rtt_us,
		.total_retrans = ev->total_retrans,
	};
	memcpy(peer->local_addr, ev->remote_addr, sizeof(peer->local_addr));
	memcpy(peer->remote_addr, ev->local_addr, sizeof(peer->remote_addr));
	memcpy(peer->orig_addr, ev->local_addr, sizeof(peer->orig_addr));
}

static int on_conn_event(void *ctx, void *data, size_t size)
{
	struct sm_conn_events *e = ctx;
	struct sm_conn_event ev, peer;
	int ret;

	if (size < sizeof(ev))
		return 0; /* not of this layout: skipped */
	memcpy(&ev, data, sizeof(ev));
	ret = e->fn(e->ctx, &ev);
	if (ret || !(ev.flags & SM_CONN_BOTH_ENDS) || ev.direction != SM_CONN_OUTBOUND)
		return ret;
	peer_event(&ev, &peer);
	return e->fn(e->ctx, &peer);
}

int sm_datapath_conn_events_open(struct sm_datapath *dp, int (*fn)(void *ctx, const struct sm_conn_event *ev),
				 void *ctx, struct sm_conn_events **out)
{
	struct sm_conn_events *e;
	int ret;

	if (!dp || !fn || !out || dp->fds[SM_DP_MAP_CONN_EVENTS] < 0)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->fn = fn;
	e->ctx = ctx;
	e->ring = ring_buffer__new(dp->fds[SM_DP_MAP_CONN_EVENTS], on_conn_event, e, NULL);
	if (!e->ring) {
		ret = -errno;
		free(e);
		return ret;
	}
	*out = e;
	return 0;
}

int sm_conn_events_poll(struct sm_conn_events *e, int timeout_ms)
{
	int ret = ring_buffer__poll(e->ring, timeout_ms);

	/* the programs wake the reader only when the ring fills up: whatever the wait, read what is there */
	return ret < 0 ? ret : ring_buffer__consume(e->ring);
}

void sm_conn_events_close(struct sm_conn_events *e)
{
	if (!e)
		return;
	ring_buffer__free(e->ring);
	free(e);
}

/* sm_conn_flush writes a byte per followed socket it finds. */
int sm_datapath_conn_flush(struct sm_datapath *dp, int netns_fd, size_t *followed, char *err, size_t size)
{
	*followed = 0;
	if (!dp || !dp->skel)
		return fail(err, size, -EINVAL, "the datapath's programs are not loaded here");
	return sm_dp_run_tcp_iter(dp->skel->progs.sm_conn_flush, netns_fd, NULL, 0, NULL, followed, err, size);
}

int sm_datapath_conn_started(struct sm_datapath *dp, uint64_t netns_cookie, uint64_t *started)
{
	int fd = dp->fds[SM_DP_MAP_CONN_STARTED], cpus, ret;
	__u64 *values = sm_dp_per_cpu_values(sizeof(*values), &cpus);

	if (!values)
		return cpus;
	ret = sm_dp_sum_per_cpu(fd, &netns_cookie, values, cpus, started);
	if (ret == -ENOENT && bpf_map_update_elem(fd, &netns_cookie, values, BPF_NOEXIST) && errno != EEXIST)
		ret = -errno; /* E2BIG: full */
	free(values);
	return ret;
}

int sm_datapath_conn_started_sweep(struct sm_datapath *dp, bool (*keep)(void *ctx, uint64_t netns_cookie),
				   void *ctx)
{
	int fd = dp->fds[SM_DP_MAP_CONN_STARTED], removed = 0;
	__u64 key, next, *previous = NULL;

	while (bpf_map_get_next_key(fd, previous, &next) == 0) {
		key = next;
		previous = &key;
		if (keep(ctx, key) || bpf_map_delete_elem(fd, &key))
			continue;
		removed++;
		previous = NULL; /* the walk's position went with the entry: from the start again */
	}
	return errno == ENOENT ? removed : -errno;
}
