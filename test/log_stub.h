/* SPDX-License-Identifier: Apache-2.0 */
/* agent/log.c's log_msg for a test that links agent/ sources without the agent: the line on stderr. Include
 * once per test executable. */
#ifndef SOCKMESH_TEST_LOG_STUB_H
#define SOCKMESH_TEST_LOG_STUB_H

#include <stdarg.h>
#include <stdio.h>

#include "agent/log.h"

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	(void)level;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

#endif
