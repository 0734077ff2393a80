/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by the test programs: fixture files and cmocka conveniences. */
#ifndef SOCKMESH_TEST_HELPERS_H
#define SOCKMESH_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

/* Reads a whole file into a malloc'd buffer (NUL-terminated for text use); fails the test if it cannot. */
static inline uint8_t *test_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	long size = 0;

	if (!f)
		fail_msg("cannot open %s", path);
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		fail_msg("cannot size %s", path);
	data = malloc((size_t)size + 1);
	assert_non_null(data);
	if (fread(data, 1, (size_t)size, f) != (size_t)size)
		fail_msg("short read of %s", path);
	fclose(f);
	data[size] = 0;
	*len = (size_t)size;
	return data;
}

static inline uint8_t *test_read_fixture(const char *relative, size_t *len)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", SM_FIXTURES_DIR, relative);
	return test_read_file(path, len);
}

#define TEST_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
