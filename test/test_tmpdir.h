/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one place a test program keeps the files it writes: a directory of its own, made on first use
 * under $TMPDIR (or /tmp), never inside the source tree, and removed with everything in it when the
 * program exits. A test deletes only what it made there; nothing is ever removed by path prefix.
 */
#ifndef SOCKMESH_TEST_TMPDIR_H
#define SOCKMESH_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char test_tmpdir_path[256];
static pid_t test_tmpdir_owner;

static inline int test_tmpdir_remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

/* Only the process that made it removes it: a forked helper that exits must not take it along. */
static inline void test_tmpdir_remove(void)
{
	if (test_tmpdir_path[0] && getpid() == test_tmpdir_owner && !getenv("SM_KEEP_LOG"))
		nftw(test_tmpdir_path, test_tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* This program's directory (made now if need be); exits when it cannot be made. */
static inline const char *test_tmpdir(void)
{
	if (test_tmpdir_path[0])
		return test_tmpdir_path;
	const char *base = getenv("TMPDIR");
	snprintf(test_tmpdir_path, sizeof(test_tmpdir_path), "%s/sm-test-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(test_tmpdir_path)) {
		fprintf(stderr, "making a temporary directory %s: %m\n", test_tmpdir_path);
		exit(1);
	}
	test_tmpdir_owner = getpid();
	atexit(test_tmpdir_remove);
	return test_tmpdir_path;
}

/* A fresh path in this program's directory for one of its files ("what" names it in the path). */
static inline void temp_path(char *out, size_t size, const char *what)
{
	static unsigned serial;
	int n = snprintf(out, size, "%s/%s-%u", test_tmpdir(), what, ++serial);

	if (n < 0 || (size_t)n >= size) {
		fprintf(stderr, "a temporary path in %s is too long (set a shorter TMPDIR)\n", test_tmpdir());
		exit(1);
	}
}

#endif
