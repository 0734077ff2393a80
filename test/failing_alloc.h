/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An allocator that fails on demand, for the tests of what code does when memory runs short. A test
 * linked with failing_alloc_link_args (test/meson.build: -Wl,--wrap=malloc,...) routes the malloc, calloc,
 * realloc, strdup and (v)asprintf calls of every object linked in statically (the project's libraries)
 * through here; what glibc or a shared library allocates inside its own functions is not affected.
 *
 * Include in one file of the test: it defines the wrappers.
 */
#ifndef SOCKMESH_TEST_FAILING_ALLOC_H
#define SOCKMESH_TEST_FAILING_ALLOC_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
char *__real_strdup(const char *s);
int __real_vasprintf(char **out, const char *fmt, va_list ap);

enum failing { FAIL_NONE, FAIL_ONE, FAIL_FROM };

/* Counting while armed: allocation number target fails (FAIL_ONE), or every one from it on (FAIL_FROM). */
static struct allocator {
	bool armed;
	enum failing mode;
	long target;
	long count; /* allocations made while armed */
	bool any_failed;
} oom;

static inline void oom_arm(enum failing mode, long target)
{
	oom = (struct allocator){ .armed = true, .mode = mode, .target = target };
}

/* A place for a debugger's breakpoint: where the allocation that fails was made. */
__attribute__((noinline)) void failing_alloc_failed(void);
__attribute__((noinline)) void failing_alloc_failed(void)
{
	__asm__ volatile("");
}

static bool allocation_fails(void)
{
	if (!oom.armed)
		return false;
	long n = oom.count++;
	bool fails = (oom.mode == FAIL_ONE && n == oom.target) || (oom.mode == FAIL_FROM && n >= oom.target);
	oom.any_failed |= fails;
	if (fails)
		failing_alloc_failed();
	return fails;
}

void *__wrap_malloc(size_t size);
void *__wrap_malloc(size_t size)
{
	return allocation_fails() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
	return allocation_fails() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size);
void *__wrap_realloc(void *p, size_t size)
{
	return allocation_fails() ? NULL : __real_realloc(p, size);
}

char *__wrap_strdup(const char *s);
char *__wrap_strdup(const char *s)
{
	return allocation_fails() ? NULL : __real_strdup(s);
}

int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
	return allocation_fails() ? -1 : __real_vasprintf(out, fmt, ap);
}

int __wrap_asprintf(char **out, const char *fmt, ...);
int __wrap_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (allocation_fails())
		return -1;
	va_start(ap, fmt);
	n = __real_vasprintf(out, fmt, ap);
	va_end(ap);
	return n;
}

#endif
