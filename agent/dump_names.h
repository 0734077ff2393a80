/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Names for what the pinned maps hold by id. The maps keep, per service and per backend, only a 64-bit
 * hash of its name (bpf/sockmesh.h: name_hash); the running agent's /config_dump has the names. Hashing
 * each name there the way the model does gives a table from hash to name.
 */
#ifndef SOCKMESH_AGENT_DUMP_NAMES_H
#define SOCKMESH_AGENT_DUMP_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct dump_name {
	uint64_t hash;
	char *name; /* services: "namespace/hostname"; workloads: "namespace/name" */
};

struct dump_names {
	struct dump_name *services, *workloads;
	size_t n_services, n_workloads;
};

/* GETs http://ADDRESS/PATH (PATH with its query) within a few seconds: its JSON body, or the status line and
 * the start of the body in err. */
int admin_get_json(const char *address, const char *path, json_t **out, char *err, size_t err_size);
/* GETs http://ADDRESS/config_dump (ADDRESS as IP:PORT or [IPv6]:PORT) within a few seconds. */
int dump_names_fetch(const char *address, json_t **config_dump, char *err, size_t err_size);
/* Indexes the names of config_dump (the shape sm_model_config_dump makes). 0 or -ENOMEM. */
int dump_names_index(const json_t *config_dump, struct dump_names *names);
/* The name of a service or workload by its name hash, or NULL when the dump has none with that hash. */
const char *dump_names_service(const struct dump_names *names, uint64_t hash);
const char *dump_names_workload(const struct dump_names *names, uint64_t hash);
void dump_names_clear(struct dump_names *names);

#endif
