/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs the xDS client against ADDRESS until it has answered N responses, then shuts it down; the xds
 * test runs this under valgrind to prove a clean shutdown frees everything.
 * Usage: xds_shutdown_probe ADDRESS N
 */
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "xds/xds.h"

int main(int argc, char **argv)
{
	static char *const env[] = { "POD_NAME=probe", "POD_NAMESPACE=istio-system", "INSTANCE_IP=10.0.0.1", NULL };
	struct sm_xds_node node = { 0 };
	struct sm_model *model;
	struct sm_image *image;
	struct sm_image_writer writer;
	struct sm_xds_client *client;
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	char err[256];

	if (argc != 3)
		return 2;
	if (sm_xds_node_from_env(&node, env) || sm_model_new(&(struct sm_model_options){ 0 }, &model) ||
	    sm_image_new(&image))
		return 1;
	sm_image_writer_init(&writer, image);
	struct sm_xds_options options = { .address = argv[1], .plaintext = true, .node = &node, .model = model,
					  .writer = &writer.writer, .model_lock = &lock };
	if (sm_xds_client_new(&options, &client, err, sizeof(err)) || sm_xds_client_start(client)) {
		fprintf(stderr, "xds_shutdown_probe: %s\n", err);
		return 1;
	}
	uint64_t want = strtoull(argv[2], NULL, 10);
	struct sm_xds_stats stats;
	for (int i = 0; i < 6000; i++) { /* valgrind slows gRPC down a lot */
		sm_xds_client_stats(client, &stats);
		if (stats.acks + stats.nacks >= want)
			break;
		sleep_ms(10);
	}
	sm_xds_client_free(client);
	sm_model_free(model);
	sm_image_free(image);
	sm_xds_node_clear(&node);
	if (stats.acks + stats.nacks < want) {
		fprintf(stderr, "xds_shutdown_probe: only %llu answers; last error: %s\n",
			(unsigned long long)(stats.acks + stats.nacks), stats.last_error);
		return 1;
	}
	return 0;
}
