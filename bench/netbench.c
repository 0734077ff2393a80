/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The network side of the benchmarks: an echo server and a sink, and clients that measure what people
 * choose a mesh datapath for. Every client runs for a fixed time and prints one line of key=value.
 *
 *   netbench echo ADDR PORT                 echo server (epoll, one thread)
 *   netbench waypoint ADDR PORT             the same, reading a connection's leading original-destination
 *                                           TLV off as a waypoint does (not echoing it back)
 *   netbench sink ADDR PORT                 reads and drops everything
 *   netbench short ADDR[,ADDR...] PORT SECONDS SIZE   connect, send SIZE, read SIZE back, close; again
 *                                           (to one of the addresses, drawn at random)
 *   netbench pingpong ADDR PORT CONNS SECONDS SIZE   CONNS connections, each a request/response loop
 *   netbench stream ADDR PORT SECONDS CHUNK one connection writing CHUNK-byte sends
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../test/clock.h"
#include "../test/net_addr.h"

static void die(const char *what)
{
	fprintf(stderr, "netbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- servers ---- */

static int listener(const char *addr, const char *port)
{
	union addr a;
	socklen_t len = make_addr("netbench", addr, port, &a);
	int one = 1, fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, &a.sa, len) || listen(fd, 4096))
		die("listen");
	return fd;
}

/*
 * The length of the original-destination TLV that begins buf (docs/datapath.md, "Waypoints and the TLV":
 * type 0x01, a 4-byte length, the address and port, then the end type 0xfe with length 0), or 0 when buf
 * does not begin with a whole one.
 */
static size_t leading_tlv(const unsigned char *buf, size_t len)
{
	static const unsigned char end[5] = { 0xfe, 0, 0, 0, 0 };

	if (len < 5 || buf[0] != 0x01 || buf[1] || buf[2] || buf[3] || (buf[4] != 6 && buf[4] != 18))
		return 0;
	size_t total = 5 + buf[4] + sizeof(end);
	return len >= total && memcmp(buf + 5 + buf[4], end, sizeof(end)) == 0 ? total : 0;
}

enum serving { SINK, ECHO, WAYPOINT };

static _Noreturn int serve(const char *addr, const char *port, enum serving serving)
{
	int lfd = listener(addr, port), ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, events[256];
	static char buf[1 << 20];
	static bool tlv_pending[1 << 16]; /* by fd, as a waypoint: the connection's first bytes are still to come */

	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, events, 256, -1);
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
					int one = 1;
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					if (c < (int)sizeof(tlv_pending))
						tlv_pending[c] = serving == WAYPOINT;
					ev = (struct epoll_event){ .events = EPOLLIN, .data.fd = c };
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r <= 0) {
				close(fd);
				continue;
			}
			ssize_t done = 0;
			if (fd < (int)sizeof(tlv_pending) && tlv_pending[fd]) {
				/* the TLV comes with the first message, in the same segment */
				tlv_pending[fd] = false;
				done = (ssize_t)leading_tlv((const unsigned char *)buf, (size_t)r);
			}
			/* the clients wait for their answer before sending again: a blocking echo is enough */
			for (; serving != SINK && done < r;) {
				ssize_t w = write(fd, buf + done, (size_t)(r - done));
				if (w <= 0)
					break;
				done += w;
			}
		}
	}
}

/* ---- clients ---- */

static int compare(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct samples {
	double *values;
	size_t n, capacity;
};

static void sample(struct samples *s, double value)
{
	if (s->n == s->capacity) {
		s->capacity = s->capacity ? s->capacity * 2 : 65536;
		s->values = realloc(s->values, s->capacity * sizeof(double));
		if (!s->values)
			die("memory");
	}
	s->values[s->n++] = value;
}

static double percentile(struct samples *s, double p)
{
	if (!s->n)
		return 0;
	qsort(s->values, s->n, sizeof(double), compare);
	return s->values[(size_t)(p * (double)(s->n - 1))];
}

static void read_exactly(int fd, char *buf, size_t n)
{
	for (size_t got = 0; got < n;) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			die("read");
		got += (size_t)r;
	}
}

static void write_all(int fd, const char *buf, size_t n)
{
	for (size_t done = 0; done < n;) {
		ssize_t w = write(fd, buf + done, n - done);
		if (w <= 0)
			die("write");
		done += (size_t)w;
	}
}

#define MAX_SHORT_ADDRS 8

/* addrs: one address, or several separated by commas, one drawn at random per connection (a
 * baseline spread over the same servers as a VIP's random pick) */
static int short_connections(const char *addrs, const char *port, double seconds, size_t size)
{
	union addr a[MAX_SHORT_ADDRS];
	socklen_t len[MAX_SHORT_ADDRS];
	char list[256], *save = NULL;
	int n = 0;
	struct samples total = { 0 }, connect_time = { 0 };
	char *buf = calloc(1, size ? size : 1);
	unsigned long failures = 0;
	double end = now_seconds() + seconds, start = now_seconds();

	snprintf(list, sizeof(list), "%s", addrs);
	for (char *addr = strtok_r(list, ",", &save); addr && n < MAX_SHORT_ADDRS; addr = strtok_r(NULL, ",", &save)) {
		len[n] = make_addr("netbench", addr, port, &a[n]);
		n++;
	}
	if (!n)
		die("no address");
	while (now_seconds() < end) {
		int k = n > 1 ? rand() % n : 0;
		int fd = socket(a[k].sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
		double t0 = now_seconds();
		if (connect(fd, &a[k].sa, len[k])) {
			failures++;
			close(fd);
			continue;
		}
		double t1 = now_seconds();
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		write_all(fd, buf, size);
		read_exactly(fd, buf, size);
		close(fd);
		sample(&connect_time, t1 - t0);
		sample(&total, now_seconds() - t0);
	}
	double elapsed = now_seconds() - start;
	printf("transactions=%zu rate=%.0f p50_us=%.2f p99_us=%.2f connect_p50_us=%.2f connect_p99_us=%.2f failures=%lu\n",
	       total.n, (double)total.n / elapsed, percentile(&total, 0.5) * 1e6, percentile(&total, 0.99) * 1e6,
	       percentile(&connect_time, 0.5) * 1e6, percentile(&connect_time, 0.99) * 1e6, failures);
	return failures ? 1 : 0;
}

struct conn {
	int fd;
	size_t got;
	double sent_at;
};

/* CONNS connections driven from one thread: each sends SIZE bytes, waits for them back, again. */
static int pingpong(const char *addr, const char *port, int conns, double seconds, size_t size)
{
	union addr a;
	socklen_t len = make_addr("netbench", addr, port, &a);
	struct conn *c = calloc((size_t)conns, sizeof(*c));
	struct samples latency = { 0 };
	char *buf = calloc(1, size), *in = malloc(1 << 20);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event events[256];

	for (int i = 0; i < conns; i++) {
		int one = 1;
		c[i].fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(c[i].fd, &a.sa, len))
			die("connect");
		setsockopt(c[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
		epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
	}
	double start = now_seconds(), end = start + seconds;
	for (int i = 0; i < conns; i++) {
		c[i].sent_at = now_seconds();
		write_all(c[i].fd, buf, size);
	}
	while (now_seconds() < end) {
		int n = epoll_wait(ep, events, 256, 100);
		for (int e = 0; e < n; e++) {
			struct conn *k = &c[events[e].data.u32];
			ssize_t r = read(k->fd, in, 1 << 20);
			if (r <= 0)
				die("read");
			k->got += (size_t)r;
			if (k->got < size)
				continue;
			double t = now_seconds();
			sample(&latency, t - k->sent_at);
			k->got -= size;
			k->sent_at = t;
			write_all(k->fd, buf, size);
		}
	}
	double elapsed = now_seconds() - start;
	printf("requests=%zu rate=%.0f p50_us=%.2f p99_us=%.2f\n", latency.n, (double)latency.n / elapsed,
	       percentile(&latency, 0.5) * 1e6, percentile(&latency, 0.99) * 1e6);
	return 0;
}

static int stream(const char *addr, const char *port, double seconds, size_t chunk)
{
	union addr a;
	socklen_t len = make_addr("netbench", addr, port, &a);
	int fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char *buf = calloc(1, chunk);
	unsigned long long bytes = 0;

	if (connect(fd, &a.sa, len))
		die("connect");
	double start = now_seconds(), end = start + seconds;
	while (now_seconds() < end) {
		write_all(fd, buf, chunk);
		bytes += chunk;
	}
	double elapsed = now_seconds() - start;
	close(fd);
	printf("bytes=%llu gbit_per_s=%.3f\n", bytes, (double)bytes * 8 / elapsed / 1e9);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 4 && strcmp(argv[1], "echo") == 0)
		return serve(argv[2], argv[3], ECHO);
	if (argc == 4 && strcmp(argv[1], "waypoint") == 0)
		return serve(argv[2], argv[3], WAYPOINT);
	if (argc == 4 && strcmp(argv[1], "sink") == 0)
		return serve(argv[2], argv[3], SINK);
	if (argc == 6 && strcmp(argv[1], "short") == 0)
		return short_connections(argv[2], argv[3], atof(argv[4]), (size_t)atol(argv[5]));
	if (argc == 7 && strcmp(argv[1], "pingpong") == 0)
		return pingpong(argv[2], argv[3], atoi(argv[4]), atof(argv[5]), (size_t)atol(argv[6]));
	if (argc == 6 && strcmp(argv[1], "stream") == 0)
		return stream(argv[2], argv[3], atof(argv[4]), (size_t)atol(argv[5]));
	fprintf(stderr, "usage: netbench echo|waypoint|sink ADDR PORT | short ADDR PORT SECONDS SIZE |\n"
			"       pingpong ADDR PORT CONNS SECONDS SIZE | stream ADDR PORT SECONDS CHUNK\n");
	return 2;
}
