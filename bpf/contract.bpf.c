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
	SM_DEFINE(SM_ORIG_SLOTS),
	SM_DEFINE(SM_ORIG_SLOT_STALE_S),
	SM_DEFINE(SM_TLV_PORT_WORDS),
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
	SM_DEFINE(SM_AUTHZ_IDENTITY_NONE),
	/* 64 bits: an enum member is an int here (a wider one would make the whole enum 64-bit, which
	 * test_contract does not read), so it is listed as its two halves */
	sm_define_SM_AUTHZ_IDENTITY_NODE = (int)(SM_AUTHZ_IDENTITY_NODE & 0xffffffffu),
	sm_define_SM_AUTHZ_IDENTITY_NODE_HIGH = (int)(SM_AUTHZ_IDENTITY_NODE >> 32),
	SM_DEFINE(SM_AUTHZ_CIDR_PREFIX_BASE),
	SM_DEFINE(SM_DEFAULT_MAX_AUTHZ_IDENTS),
	SM_DEFINE(SM_DEFAULT_MAX_AUTHZ_DESTS),
	SM_DEFINE(SM_DEFAULT_MAX_AUTHZ_CIDRS),
	SM_DEFINE(SM_DEFAULT_MAX_AUTHZ_SOURCES),
	SM_DEFINE(SM_DEFAULT_MAX_AUTHZ_VERDICTS),
	SM_DEFINE(SM_DEFAULT_MAX_AUTHZ_POLICIES),
	SM_DEFINE(SM_AUTHZ_EVENTS_BYTES),
	SM_DEFINE(SM_CONN_EVENTS_BYTES),
	SM_DEFINE(SM_CONN_REPORT_NS), /* 2e9: fits an int */
	SM_DEFINE(SM_CONN_IDLE_REPORT_S),
	sm_define_SM_CONN_NOT_REPORTED = (int)(SM_CONN_NOT_REPORTED & 0xffffffffu),
	sm_define_SM_CONN_NOT_REPORTED_HIGH = (int)(SM_CONN_NOT_REPORTED >> 32),
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
	struct sm_orig_slot orig_slot;
	struct sm_port_bits port_bits;
	struct sm_sock_key sock_key;
	enum sm_authz_action authz_action;
	enum sm_authz_reason authz_reason;
	enum sm_authz_event_kind authz_event_kind;
	struct sm_authz_state authz_state;
	struct sm_authz_ident_value authz_ident_value;
	struct sm_authz_dest_key authz_dest_key;
	struct sm_authz_dest_value authz_dest_value;
	struct sm_authz_cidr_key authz_cidr_key;
	struct sm_authz_cidr_value authz_cidr_value;
	struct sm_authz_source_key authz_source_key;
	struct sm_authz_source_value authz_source_value;
	struct sm_authz_verdict_key authz_verdict_key;
	struct sm_authz_verdict authz_verdict;
	struct sm_authz_policy_counts authz_policy_counts;
	struct sm_authz_event authz_event;
	enum sm_conn_direction conn_direction;
	enum sm_conn_event_kind conn_event_kind;
	enum sm_conn_failure conn_failure;
	enum sm_conn_flags conn_flags;
	struct sm_conn_stats conn_stats;
	struct sm_conn_event conn_event;
	enum sm_conn_handover conn_handover;
	struct sm_conn_received conn_received;
} sm_contract;
