// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The contract (sockmesh.h) as BTF, for test/test_contract.c: never loaded. The programs' own BTF has
 * only the types their maps name; this object names every struct and enum of the header, and gives
 * each object-like #define a value in an enum. test_contract fails when the header has a type or a
 * #define this file does not list.
 */
#include "vmlinux.h"

#include "bpf/sockmesh.h"

#define SM_DEFINE(name) sm_define_##name = (name)

enum sm_contract_defines {
	SM_DEFINE(SM_LAYOUT_VERSION),
	SM_DEFINE(SM_MAX_PORTS),
	SM_DEFINE(SM_MAX_PRIORITIES),
	SM_DEFINE(SM_MAX_SLOTS),
	SM_DEFINE(SM_MAX_WEIGHT),
	SM_DEFINE(SM_DEFAULT_MAX_FRONTENDS),
	SM_DEFINE(SM_DEFAULT_MAX_SERVICES),
	SM_DEFINE(SM_DEFAULT_MAX_ENDPOINTS),
	SM_DEFINE(SM_DEFAULT_MAX_BACKENDS),
	SM_DEFINE(SM_MAX_CAPACITY),
	SM_DEFINE(SM_DEFAULT_MAX_SOCKETS),
	SM_DEFINE(SM_DEFAULT_MAX_NETNS),
	SM_DEFINE(SM_DEFAULT_MAX_LOCAL_ADDRS),
	SM_DEFINE(SM_DNS_PORT),
	SM_DEFINE(SM_TLV_TYPE_ORIG_DST),
	SM_DEFINE(SM_TLV_TYPE_END),
	SM_DEFINE(SM_TLV_TYPE_OFF),
	SM_DEFINE(SM_TLV_LENGTH_OFF),
	SM_DEFINE(SM_TLV_VALUE_OFF),
	SM_DEFINE(SM_TLV_HEADER_LEN),
	SM_DEFINE(SM_TLV_VALUE_LEN_V4),
	SM_DEFINE(SM_TLV_VALUE_LEN_V6),
	SM_DEFINE(SM_TLV_END_OFF_V4),
	SM_DEFINE(SM_TLV_END_OFF_V6),
	SM_DEFINE(SM_TLV_LEN_V4),
	SM_DEFINE(SM_TLV_LEN_V6),
};

/* One member per type of the header, so that each is in the BTF. */
struct sm_contract {
	enum sm_contract_defines defines;
	enum sm_frontend_kind frontend_kind;
	enum sm_lb_mode lb_mode;
	enum sm_family_flags family_flags;
	enum sm_waypoint_flags waypoint_flags;
	enum sm_counter counter;
	enum sm_config_flags config_flags;
	enum sm_sock_flags sock_flags;
	struct sm_waypoint waypoint;
	struct sm_frontend_key frontend_key;
	struct sm_frontend_value frontend_value;
	struct sm_service_value service_value;
	struct sm_endpoint_key endpoint_key;
	struct sm_endpoint_value endpoint_value;
	struct sm_backend_value backend_value;
	struct sm_config config;
	struct sm_meta meta;
	struct sm_sock_state sock_state;
	struct sm_sock_key sock_key;
} sm_contract;
