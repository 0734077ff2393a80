/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sm_local_addrs kept in step with the model (agent/local_addrs.c): written when a batch changed this
 * node's workloads and only then, and a write that failed made again after a back-off (1 s, 2 s, ... 30 s)
 * with no further change, as the agent's main thread does on its timer. The real model; the datapath
 * replaced by this test, its writes failing on demand.
 */
#include <errno.h>
#include <string.h>

#include "builders.h"
#include "helpers.h"

#include "agent/agent.h"
#include "agent/local_addrs.h"

/* ---- what agent/local_addrs.c calls, replaced ---- */

static int writes_to_fail; /* the next writes that fail with -ENOMEM */
static int writes;	   /* tried */
static size_t held;	   /* addresses the map holds after the last write taken */

int sm_datapath_set_local_addresses(struct sm_datapath *dp, const struct sm_frontend_key *addrs, size_t n)
{
	(void)dp;
	(void)addrs;
	writes++;
	if (writes_to_fail > 0) {
		writes_to_fail--;
		return -ENOMEM;
	}
	held = n;
	return 0;
}

/* ---- the model ---- */

static struct sm_model *model_open(struct sm_image **image, struct sm_image_writer *writer)
{
	struct sm_model_options options = { .node_name = "node-a" };
	struct sm_model *model;

	assert_int_equal(sm_model_new(&options, &model), 0);
	assert_int_equal(sm_image_new(image), 0);
	sm_image_writer_init(writer, *image);
	return model;
}

/* A workload of node at address, sent (or removed when address is NULL). */
static void workload_on(struct sm_model *model, struct sm_image_writer *writer, const char *uid, const char *address,
			const char *node)
{
	struct workload_spec spec = { .uid = uid, .addresses = { address }, .namespace = "ns", .node = node };
	struct sm_rejections rejections = { 0 };
	ProtobufCMessage *decoded;
	struct response r;
	uint8_t *bytes;
	char err[256];
	size_t len;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	if (address)
		response_add_workload(&r, &spec, "v1");
	else
		response_remove(&r, uid);
	bytes = response_pack(&r, &len);
	assert_int_equal(sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len,
				      &decoded, err, sizeof(err)), 0);
	assert_int_equal(sm_model_apply(model, (void *)decoded, &writer->writer, &rejections), 0);
	assert_int_equal(rejections.count, 0);
	protobuf_c_message_free_unpacked(decoded, NULL);
	free(bytes);
	response_free(&r);
}

/* Only a change to this node's workloads writes; nothing changed writes nothing. */
static void written_when_this_nodes_workloads_change(void **state)
{
	(void)state;
	struct sm_image_writer writer;
	struct local_addrs la = { 0 };
	struct sm_image *image;
	struct sm_model *model = model_open(&image, &writer);

	writes = writes_to_fail = 0;
	assert_int_equal(local_addrs_sync(&la, model, NULL, 0), 0);
	assert_int_equal(writes, 1); /* the first: the map is cleared of what an earlier agent left */
	assert_int_equal(held, 0);
	workload_on(model, &writer, "w/remote", "10.0.0.1", "node-b");
	assert_int_equal(local_addrs_sync(&la, model, NULL, 0), 0);
	assert_int_equal(writes, 1);
	workload_on(model, &writer, "w/local", "10.0.0.2", "node-a");
	assert_int_equal(local_addrs_sync(&la, model, NULL, 0), 0);
	assert_int_equal(writes, 2);
	assert_int_equal(held, 1);
	assert_int_equal(local_addrs_sync(&la, model, NULL, 0), 0);
	assert_int_equal(writes, 2);
	assert_int_equal(local_addrs_retry_in_ms(&la, 0), 0);
	sm_model_free(model);
	sm_image_free(image);
}

/* A failed write waits 1 s, 2 s, 4 s ... (30 s at most), then is made with no change to prompt it. */
static void failed_write_is_tried_again_after_a_back_off(void **state)
{
	(void)state;
	static const unsigned waits[] = { 1000, 2000, 4000, 8000, 16000, 30000, 30000 };
	struct sm_image_writer writer;
	struct local_addrs la = { 0 };
	struct sm_image *image;
	struct sm_model *model = model_open(&image, &writer);
	uint64_t now = 5000;

	writes = 0;
	held = 0;
	writes_to_fail = (int)(sizeof(waits) / sizeof(waits[0]));
	workload_on(model, &writer, "w/local", "10.0.0.2", "node-a");
	assert_int_equal(local_addrs_sync(&la, model, NULL, now), -ENOMEM);
	for (size_t i = 0; i < sizeof(waits) / sizeof(waits[0]); i++) {
		assert_int_equal(local_addrs_retry_in_ms(&la, now), waits[i]);
		assert_false(local_addrs_retry_due(&la, now + waits[i] - 1));
		assert_int_equal(local_addrs_retry_in_ms(&la, now + waits[i] - 1), 1);
		now += waits[i];
		assert_true(local_addrs_retry_due(&la, now));
		assert_int_equal(local_addrs_retry_in_ms(&la, now + 5), 1); /* overdue: due at once */
		assert_int_equal(local_addrs_sync(&la, model, NULL, now), i + 1 < sizeof(waits) / sizeof(waits[0]) ? -ENOMEM : 0);
	}
	assert_int_equal(writes, 8);
	assert_int_equal(held, 1);
	assert_int_equal(la.failures, 0);
	assert_false(local_addrs_retry_due(&la, now + 60000));
	assert_int_equal(local_addrs_retry_in_ms(&la, now + 60000), 0);

	/* a failure, then a change before the try is due: the change writes at once, and the wait is over */
	writes_to_fail = 1;
	workload_on(model, &writer, "w/local2", "10.0.0.3", "node-a");
	assert_int_equal(local_addrs_sync(&la, model, NULL, now), -ENOMEM);
	assert_int_equal(la.failures, 1);
	workload_on(model, &writer, "w/local3", "10.0.0.4", "node-a");
	assert_int_equal(local_addrs_sync(&la, model, NULL, now + 10), 0);
	assert_int_equal(held, 3);
	assert_int_equal(local_addrs_retry_in_ms(&la, now + 10), 0);

	/* a failure with no change after it: the next sync is the retry, even with the same generation */
	writes_to_fail = 1;
	workload_on(model, &writer, "w/local3", NULL, NULL);
	assert_int_equal(local_addrs_sync(&la, model, NULL, now), -ENOMEM);
	assert_int_equal(local_addrs_retry_in_ms(&la, now), 1000);
	assert_int_equal(local_addrs_sync(&la, model, NULL, now + 1000), 0);
	assert_int_equal(held, 2);
	sm_model_free(model);
	sm_image_free(image);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(written_when_this_nodes_workloads_change),
		cmocka_unit_test(failed_write_is_tried_again_after_a_back_off),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
