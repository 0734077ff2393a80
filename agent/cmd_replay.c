/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockmesh replay FILE: applies a recorded stream to a fresh model (and, with --datapath, to the
 * pinned maps) without a server, and says what the agent would have answered to each response.
 */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/commands.h"
#include "datapath/datapath.h"
#include "workload/workload.h"

static void replay_usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh replay [--datapath] [--pin-dir PATH] [--node-name NAME] FILE\n\n"
		     "Applies FILE, a recorded stream of DeltaDiscoveryResponses, to the workload model and\n"
		     "prints the ACK or NACK (with every rejected resource and its reason) of each response.\n\n"
		     "  --datapath         reconcile the pinned maps too, as a restarted agent would (refused\n"
		     "                     while an agent runs on the pin directory)\n"
		     "  --pin-dir PATH     where the datapath is pinned (default " SM_DEFAULT_PIN_DIR ")\n"
		     "  --node-name NAME   this node, for locality (default: NODE_NAME)\n");
}

/* Whether the stream's first framed message is a DeltaDiscoveryResponse (the reader is not moved). */
static bool first_message_decodes(const struct sm_stream_reader *reader)
{
	struct sm_stream_reader copy = *reader;
	ProtobufCMessage *decoded;
	const uint8_t *msg;
	size_t len;
	char err[256];

	if (sm_stream_next(&copy, &msg, &len, err, sizeof(err)) || !msg)
		return !copy.size; /* an empty stream is a stream */
	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, msg, len, &decoded, err,
			 sizeof(err)))
		return false;
	protobuf_c_message_free_unpacked(decoded, NULL);
	return true;
}

/* A recorded stream is binary; first bytes all printable (or UTF-8) say a YAML or JSON file was given. */
static bool looks_like_text(const struct sm_stream_reader *reader)
{
	size_t n = reader->size < 256 ? reader->size : 256;

	for (size_t i = 0; i < n; i++) {
		if (reader->data[i] < 0x80 && !isprint(reader->data[i]) && !isspace(reader->data[i]))
			return false;
	}
	return n > 0;
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
	struct sm_pin_lock *lock = NULL;
	size_t adopted[SM_MAP_COUNT];
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
	if (!first_message_decodes(&reader) && looks_like_text(&reader)) {
		fprintf(stderr,
			"sockmesh replay: %s is text (YAML or JSON?), not a recorded stream; convert it first: "
			"sockmesh convert %s OUT.xds\n",
			argv[optind], argv[optind]);
		goto out;
	}
	if (use_datapath) {
		if (sm_pin_dir_lock(pin_dir, &lock, err, sizeof(err)) ||
		    sm_datapath_open_pinned(pin_dir, &dp, err, sizeof(err))) {
			fprintf(stderr, "sockmesh replay: %s\n", err);
			goto out;
		}
		for (int m = 0; m < SM_MAP_COUNT; m++) {
			if (sm_datapath_capacity(dp, m, &model_options.capacity[m])) {
				fprintf(stderr, "sockmesh replay: reading the %s map's capacity failed\n", sm_map_name(m));
				goto out;
			}
		}
		writer = sm_datapath_writer(dp);
	} else {
		if (sm_image_new(&image))
			goto out;
		sm_image_writer_init(&image_writer, image);
		writer = &image_writer.writer;
	}
	if (sm_model_new(&model_options, &model))
		goto out;
	/* What is pinned is reconciled like a restarted agent does: kept where the stream agrees, swept where not. */
	if (dp && adopt_pinned_maps(dp, model, adopted)) {
		fprintf(stderr, "sockmesh replay: reading the pinned maps under %s failed\n", pin_dir);
		goto out;
	}

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
	sm_pin_dir_unlock(lock);
	sm_stream_close(&reader);
	return status;
}
