/* SPDX-License-Identifier: Apache-2.0 */
/* sockmesh print FILE: a recorded xDS stream, one JSON document per response, for people and tools. */
#include <getopt.h>
#include <stdio.h>

#include "agent/commands.h"
#include "proto/proto.h"

static void print_usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh print [--compact] [--proto3-json] FILE\n\n"
		     "Decodes FILE, a recorded stream of DeltaDiscoveryResponse messages (each preceded by its\n"
		     "length as a varint; what 'sockmesh run --record' writes), and prints each response in\n"
		     "protobuf's canonical JSON, except that IP addresses (workload addresses, VIPs, waypoint\n"
		     "and CIDR addresses) show as text such as 10.0.0.1 instead of base64.\n\n"
		     "  --compact      one line per response\n"
		     "  --proto3-json  exact proto3 JSON: addresses as base64, as any proto3 parser reads them\n");
}

static int print_response(const uint8_t *msg, size_t len, size_t flags, const char *const *ip_fields,
			  size_t index)
{
	ProtobufCMessage *response;
	char err[512];

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, msg, len,
			 &response, err, sizeof(err))) {
		fprintf(stderr, "sockmesh print: message %zu: %s\n", index, err);
		return -1;
	}
	json_t *json = sm_pb_to_json_ips(response, ip_fields);
	protobuf_c_message_free_unpacked(response, NULL);
	if (!json || json_dumpf(json, stdout, flags)) {
		fprintf(stderr, "sockmesh print: message %zu: out of memory\n", index);
		json_decref(json);
		return -1;
	}
	putchar('\n');
	json_decref(json);
	return 0;
}

int cmd_print(int argc, char **argv)
{
	static const struct option options[] = {
		{ "compact", no_argument, NULL, 'c' },
		{ "proto3-json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	size_t flags = JSON_INDENT(2) | JSON_PRESERVE_ORDER;
	const char *const *ip_fields = sm_pb_ip_fields;
	struct sm_stream_reader reader;
	int opt, status = 0;
	char err[512];

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
			break;
		case 'j':
			ip_fields = NULL;
			break;
		case 'h':
			print_usage(stdout);
			return 0;
		default:
			print_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		print_usage(stderr);
		return 2;
	}
	if (sm_stream_open(&reader, argv[optind], err, sizeof(err))) {
		fprintf(stderr, "sockmesh print: %s\n", err);
		return 1;
	}
	for (;;) {
		const uint8_t *msg;
		size_t len;
		size_t index = reader.index;

		if (sm_stream_next(&reader, &msg, &len, err, sizeof(err))) {
			fprintf(stderr, "sockmesh print: %s: %s\n", argv[optind], err);
			status = 1;
			break;
		}
		if (!msg)
			break;
		if (print_response(msg, len, flags, ip_fields, index)) {
			status = 1;
			break;
		}
	}
	sm_stream_close(&reader);
	return status;
}
