/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The access log's writer: lines go into a bounded ring buffer and a thread of its own writes them to a
 * file descriptor (stdout), so a slow reader of stdout never stalls the thread that records connections.
 * A line that does not fit is dropped whole and counted.
 */
#ifndef SOCKMESH_AGENT_ACCESS_LOG_H
#define SOCKMESH_AGENT_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

struct access_log;

int access_log_new(size_t capacity, int fd, struct access_log **out);
/* Queues one line (newline ended) or drops it when the buffer is full. */
void access_log_write(struct access_log *log, const char *line, size_t len);
uint64_t access_log_dropped(struct access_log *log);
/* Writes out what is queued, stops the thread and frees; NULL is fine. */
void access_log_free(struct access_log *log);

#endif
