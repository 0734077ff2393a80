/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/access_log.h"
#include "agent/deadline.h"

/* The writer wakes this often, or when a quarter of the buffer waits: a wakeup per line cost the
 * recording thread more than the line (a futex wake and two context switches). */
#define FLUSH_INTERVAL_NS (100 * 1000 * 1000L)

struct access_log {
	pthread_mutex_t lock;
	pthread_cond_t ready;
	pthread_t thread;
	int fd;
	bool stop;
	char *ring;
	size_t capacity, head, used; /* bytes [head - used, head) modulo capacity wait to be written */
	atomic_uint_least64_t dropped;
};

/* Writes [at, at + n) whole, retrying short writes; a broken stdout loses the lines. */
static void write_all(int fd, const char *at, size_t n)
{
	while (n) {
		ssize_t done = write(fd, at, n);
		if (done < 0 && errno == EINTR)
			continue;
		if (done <= 0)
			return;
		at += done;
		n -= (size_t)done;
	}
}

static void *writer_main(void *arg)
{
	struct access_log *log = arg;

	pthread_mutex_lock(&log->lock);
	for (;;) {
		while (!log->used && !log->stop)
			pthread_cond_wait(&log->ready, &log->lock);
		if (log->used < log->capacity / 4 && !log->stop) {
			struct timespec until = deadline_in_ns(FLUSH_INTERVAL_NS);

			pthread_cond_timedwait(&log->ready, &log->lock, &until);
		}
		if (!log->used)
			break;
		/* the oldest contiguous run: the producer only writes into the free part, never into it */
		size_t tail = (log->head + log->capacity - log->used) % log->capacity;
		size_t n = log->used < log->capacity - tail ? log->used : log->capacity - tail;
		pthread_mutex_unlock(&log->lock);
		write_all(log->fd, log->ring + tail, n);
		pthread_mutex_lock(&log->lock);
		log->used -= n;
	}
	pthread_mutex_unlock(&log->lock);
	return NULL;
}

int access_log_new(size_t capacity, int fd, struct access_log **out)
{
	struct access_log *log = calloc(1, sizeof(*log));
	int err;

	if (!log || !(log->ring = malloc(capacity))) {
		free(log);
		return -ENOMEM;
	}
	log->capacity = capacity;
	log->fd = fd;
	pthread_mutex_init(&log->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&log->ready, &attr);
	pthread_condattr_destroy(&attr);
	err = -pthread_create(&log->thread, NULL, writer_main, log);
	if (err) {
		pthread_cond_destroy(&log->ready);
		pthread_mutex_destroy(&log->lock);
		free(log->ring);
		free(log);
		return err;
	}
	*out = log;
	return 0;
}

void access_log_write(struct access_log *log, const char *line, size_t len)
{
	pthread_mutex_lock(&log->lock);
	if (len > log->capacity - log->used) {
		pthread_mutex_unlock(&log->lock);
		atomic_fetch_add(&log->dropped, 1);
		return;
	}
	size_t first = len < log->capacity - log->head ? len : log->capacity - log->head;
	memcpy(log->ring + log->head, line, first);
	memcpy(log->ring, line + first, len - first);
	log->head = (log->head + len) % log->capacity;
	/* the writer is asleep (nothing waited) or on its timer (a quarter waits: now) */
	if (!log->used || (log->used < log->capacity / 4 && log->used + len >= log->capacity / 4))
		pthread_cond_signal(&log->ready);
	log->used += len;
	pthread_mutex_unlock(&log->lock);
}

uint64_t access_log_dropped(struct access_log *log)
{
	return log ? atomic_load(&log->dropped) : 0;
}

void access_log_free(struct access_log *log)
{
	if (!log)
		return;
	pthread_mutex_lock(&log->lock);
	log->stop = true;
	pthread_cond_signal(&log->ready);
	pthread_mutex_unlock(&log->lock);
	pthread_join(log->thread, NULL);
	pthread_cond_destroy(&log->ready);
	pthread_mutex_destroy(&log->lock);
	free(log->ring);
	free(log);
}
