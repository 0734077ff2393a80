/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L4 telemetry's user side: the ring buffer of connection events (sm_conn_events). The knob is
 * SM_CONFIG_TELEMETRY in sm_datapath_set_config; what the kernel records: bpf/telemetry.bpf.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "datapath/datapath.h"
#include "datapath/internal.h"

struct sm_conn_events {
	struct ring_buffer *ring;
	int (*fn)(void *ctx, const struct sm_conn_event *ev);
	void *ctx;
};

static int on_conn_event(void *ctx, void *data, size_t size)
{
	struct sm_conn_events *e = ctx;
	struct sm_conn_event ev;

	if (size < sizeof(ev))
		return 0; /* not of this layout: skipped */
	memcpy(&ev, data, sizeof(ev));
	return e->fn(e->ctx, &ev);
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

int sm_datapath_conn_flush(struct sm_datapath *dp, int netns_fd, char *err, size_t size)
{
	size_t output;

	if (!dp || !dp->skel) {
		snprintf(err, size, "the datapath's programs are not loaded here");
		return -EINVAL;
	}
	return sm_dp_run_tcp_iter(dp->skel->progs.sm_conn_flush, netns_fd, &output, err, size);
}
