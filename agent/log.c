/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <bpf/libbpf.h>
#include <grpc/support/log.h>

#include "agent/log.h"

static enum log_level threshold = LOG_INFO;
static const char *const level_names[] = { "error", "warn", "info", "debug" };

int log_set_level_name(const char *name)
{
	for (int level = LOG_ERROR; level <= LOG_DEBUG; level++) {
		if (strcmp(name, level_names[level]) == 0) {
			threshold = level;
			return 0;
		}
	}
	return -EINVAL;
}

static void log_line(enum log_level level, const char *fmt, va_list ap)
{
	char message[2048], stamp[32];
	struct timeval tv;
	struct tm tm;
	size_t len;

	if (level > threshold)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	vsnprintf(message, sizeof(message), fmt, ap);
	len = strlen(message);
	while (len && message[len - 1] == '\n')
		message[--len] = '\0';
	/* one fprintf per line: stdio's lock keeps lines whole across threads */
	fprintf(stderr, "%s.%03ldZ %-5s %s\n", stamp, (long)(tv.tv_usec / 1000), level_names[level], message);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(level, fmt, ap);
	va_end(ap);
}

void log_xds(enum sm_xds_log_level level, const char *line)
{
	static const enum log_level levels[] = {
		[SM_XDS_LOG_ERROR] = LOG_ERROR,
		[SM_XDS_LOG_WARN] = LOG_WARN,
		[SM_XDS_LOG_INFO] = LOG_INFO,
		[SM_XDS_LOG_DEBUG] = LOG_DEBUG,
	};

	log_msg(levels[level], "%s", line);
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[2048];

	vsnprintf(line, sizeof(line), fmt, ap);
	log_msg(level == LIBBPF_WARN ? LOG_WARN : LOG_DEBUG, "libbpf: %s", line);
	return 0;
}

static void grpc_print(gpr_log_func_args *args)
{
	log_msg(args->severity == GPR_LOG_SEVERITY_ERROR ? LOG_WARN : LOG_DEBUG, "grpc: %s", args->message);
}

void log_capture_libraries(void)
{
	libbpf_set_print(libbpf_print);
	gpr_set_log_function(grpc_print);
}
