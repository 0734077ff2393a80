/* SPDX-License-Identifier: Apache-2.0 */
/* The message types an Any may carry that we can decode. */
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proto/proto.h"

static const ProtobufCMessageDescriptor *const known_types[] = {
	&istio__workload__address__descriptor,
	&istio__workload__workload__descriptor,
	&istio__workload__service__descriptor,
	&istio__workload__extension__descriptor,
	&istio__workload__gateway_address__descriptor,
	&istio__workload__network_address__descriptor,
	&istio__security__authorization__descriptor,
	&envoy__service__discovery__v3__delta_discovery_request__descriptor,
	&envoy__service__discovery__v3__delta_discovery_response__descriptor,
	&envoy__service__discovery__v3__discovery_request__descriptor,
	&envoy__service__discovery__v3__discovery_response__descriptor,
	&envoy__service__discovery__v3__resource__descriptor,
	&envoy__service__discovery__v3__status__descriptor,
	&envoy__service__discovery__v3__node__descriptor,
	&google__protobuf__any__descriptor,
	&google__protobuf__duration__descriptor,
	&google__protobuf__empty__descriptor,
	&google__protobuf__struct__descriptor,
	&google__protobuf__value__descriptor,
	&google__protobuf__list_value__descriptor,
	&google__protobuf__bool_value__descriptor,
	&google__protobuf__bytes_value__descriptor,
	&google__protobuf__double_value__descriptor,
	&google__protobuf__float_value__descriptor,
	&google__protobuf__int32_value__descriptor,
	&google__protobuf__int64_value__descriptor,
	&google__protobuf__string_value__descriptor,
	&google__protobuf__uint32_value__descriptor,
	&google__protobuf__uint64_value__descriptor,
};

const ProtobufCMessageDescriptor *sm_pb_find_type(const char *type_url)
{
	/* Any's rule: the type name is what follows the last '/'. */
	const char *slash = strrchr(type_url, '/');
	const char *name = slash ? slash + 1 : type_url;

	for (size_t i = 0; i < sizeof(known_types) / sizeof(known_types[0]); i++) {
		if (strcmp(known_types[i]->name, name) == 0)
			return known_types[i];
	}
	return NULL;
}
