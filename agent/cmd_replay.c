/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockmesh replay FILE: applies a recorded stream to a fresh model (and, with --datapath, to the
 * pinned maps) without a server, and says what the agent would have answered to each response.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/commands.h"
#include "datapath/datapath.h"
#include "workload/workload.h"

static void replay_usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh replay [--datapath] [--pin-dir PATH] [--node-name NAME] FILE\n\n"
		     "Applies FILE, a recorded stream of DeltaDiscoveryResponses, to the workload model and\n"
		     "prints the ACK or NACK (with every rejected resource and its reason) of each response.\n\n"
		     "  --datapath         write the pinned maps too (the agent should not be running)\n"
		     "  --pin-dir PATH     where the datapath is pinned (default " SM_DEFAULT_PIN_DIR ")\n"
		     "  --node-name NAME   this node, for locality (default: NODE_NAME)\n");
}

int cmd_replay(int argc, char **argv)
{
	static const struct option options[] = {
		{ "datapath", no_argument, NULL, 'd' },	    { "pin-dir", required_argument, NULL, 'p' },
		{ "node-name", required_argument, NULL, 'n' }, { "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *pin_dir = SM_DEFAULT_PIN_DIR;
	struct sm_model_options model_options = { .node_name = getenv("NODE_NAME") };
	bool use_datapath = false;
	struct sm_datapath *dp = NULL;
	struct sm_model *model = NULL;
	struct sm_image *image = NULL;
	struct sm_image_writer image_writer;
	struct sm_map_writer *writer;
	struct sm_stream_reader reader;
	char err[512];
	int opt, status = 1;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'd': use_datapath = true; break;
		case 'p': pin_dir = optarg; break;
		case 'n': model_options.node_name = optarg; break;
		case 'h': replay_usage(stdout); return 0;
		default: replay_usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		replay_usage(stderr);
		return 2;
	}
	if (sm_stream_open(&reader, argv[optind], err, sizeof(err))) {
		fprintf(stderr, "sockmesh replay: %s\n", err);
		return 1;
	}
	if (use_datapath) {
		if (sm_datapath_open_pinned(pin_dir, &dp, err, sizeof(err))) {
			fprintf(stderr, "sockmesh replay: %s\n", err);
			goto out;
		}
		for (int m = 0; m < SM_MAP_COUNT; m++)
			sm_datapath_capacity(dp, m, &model_options.capacity[m]);
		writer = sm_datapath_writer(dp);
	} else {
		if (sm_image_new(&image))
			goto out;
		sm_image_writer_init(&image_writer, image);
		writer = &image_writer.writer;
	}
	if (sm_model_new(&model_options, &model))
		goto out;

	status = 0;
	for (;;) {
		const uint8_t *msg;
		size_t len, index = reader.index;
		ProtobufCMessage *decoded;
		struct sm_rejections rejections = { 0 };

		if (sm_stream_next(&reader, &msg, &len, err, sizeof(err))) {
			fprintf(stderr, "sockmesh replay: %s: %s\n", argv[optind], err);
			status = 1;
			break;
		}
		if (!msg)
			break;
		if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, msg, len, &decoded,
				 err, sizeof(err))) {
			printf("response %zu: NACK: does not decode: %s\n", index, err);
			continue;
		}
		const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response = (const void *)decoded;
		int ret = sm_model_apply(model, response, writer, &rejections);
		printf("response %zu (%s, nonce %s, %zu resources, %zu removed): ", index, response->type_url,
		       response->nonce, response->n_resources, response->n_removed_resources);
		if (ret) {
			printf("failed: %s\n", strerror(-ret));
			status = 1;
		} else if (rejections.count) {
			printf("NACK, %zu rejected\n", rejections.count);
			for (size_t i = 0; i < rejections.count; i++)
				printf("    %s: %s\n", rejections.items[i].name, rejections.items[i].reason);
		} else {
			printf("ACK\n");
		}
		sm_rejections_clear(&rejections);
		protobuf_c_message_free_unpacked(decoded, NULL);
	}
	struct sm_model_stats stats;
	sm_model_stats(model, &stats);
	printf("held: %zu workloads, %zu services, %zu authorizations; map entries: %zu frontends, %zu services, "
	       "%zu endpoints, %zu backends\n",
	       stats.workloads, stats.services, stats.authorizations, stats.map_entries[SM_MAP_FRONTENDS],
	       stats.map_entries[SM_MAP_SERVICES], stats.map_entries[SM_MAP_ENDPOINTS], stats.map_entries[SM_MAP_BACKENDS]);
out:
	sm_model_free(model);
	sm_image_free(image);
	sm_datapath_close(dp);
	sm_stream_close(&reader);
	return status;
}
