/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory running short reading a local config (ztunnel's example and the bookinfo config dump), at every
 * allocation in turn, once or from there on: sm_local_config_read returns 0 with the bytes a read that never
 * ran short gives, or -ENOMEM with "out of memory" in its error and both outputs NULL; it never exits. The
 * library allocates through failing_alloc.h; of libyaml's own allocations, its strdup copies are failed
 * too (below), not its mallocs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "failing_alloc.h"
#include "helpers.h"
#include "xds/xds.h"

/*
 * libyaml's loader copies each node's default tag with strdup (yaml_strdup), and fails without setting an
 * error when that copy fails: defined here, this program's strdup interposes the C library's for libyaml,
 * and its copies count and fail with the others (its malloc is wrapped).
 */
char *strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *copy = malloc(n);

	return copy ? memcpy(copy, s, n) : NULL;
}

struct read_result {
	int err;
	uint8_t *address, *authorization;
	size_t address_len, authorization_len;
	char message[512];
};

static void read_config(const char *path, struct read_result *r)
{
	memset(r, 0, sizeof(*r));
	r->err = sm_local_config_read(path, &r->address, &r->address_len, &r->authorization, &r->authorization_len,
				      r->message, sizeof(r->message));
}

static void sweep(const char *name, enum failing mode)
{
	char path[512];
	struct read_result want, got;

	snprintf(path, sizeof(path), "%s/real/%s", SM_FIXTURES_DIR, name);
	oom_arm(FAIL_NONE, 0);
	read_config(path, &want);
	oom.armed = false;
	if (want.err)
		fail_msg("%s: %s", name, want.message);
	long total = oom.count;
	assert_true(total > 0);
	print_message("# %s: %ld allocations\n", name, total);
	for (long target = 0; target < total; target++) {
		oom_arm(mode, target);
		read_config(path, &got);
		oom.armed = false;
		if (got.err) {
			if (got.err != -ENOMEM || !strstr(got.message, "out of memory") || got.address || got.authorization)
				fail_msg("%s, allocation %ld of %ld failing: returned %d (%s)", name, target, total, got.err,
					 got.message);
			continue;
		}
		if (got.address_len != want.address_len || memcmp(got.address, want.address, want.address_len) ||
		    got.authorization_len != want.authorization_len ||
		    memcmp(got.authorization, want.authorization, want.authorization_len))
			fail_msg("%s, allocation %ld of %ld failing: read, but not what a read that never ran short gives",
				 name, target, total);
		free(got.address);
		free(got.authorization);
	}
	free(want.address);
	free(want.authorization);
}

static void local_config_each_allocation_failing_once(void **state)
{
	(void)state;
	sweep("ztunnel-local-config.yaml", FAIL_ONE);
}

static void local_config_every_allocation_failing_from_one_on(void **state)
{
	(void)state;
	sweep("ztunnel-local-config.yaml", FAIL_FROM);
}

static void config_dump_each_allocation_failing_once(void **state)
{
	(void)state;
	sweep("bookinfo-ztunnel-config-dump.json", FAIL_ONE);
}

static void config_dump_every_allocation_failing_from_one_on(void **state)
{
	(void)state;
	sweep("bookinfo-ztunnel-config-dump.json", FAIL_FROM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(local_config_each_allocation_failing_once),
		cmocka_unit_test(local_config_every_allocation_failing_from_one_on),
		cmocka_unit_test(config_dump_each_allocation_failing_once),
		cmocka_unit_test(config_dump_every_allocation_failing_from_one_on),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
