/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small TCP peers for the demo and the end-to-end tests:
 *   tcp_echo serve ADDR PORT NAME   answer each connection with NAME (and, when the first bytes are
 *                                   the waypoint TLV, with the original destination it carries)
 *   tcp_echo ask ADDR PORT          connect, ask, print who answered and what getpeername said
 *   tcp_echo loop ADDR PORT STOPFILE  connect and close until STOPFILE exists; print the counts
 *   tcp_echo watch ADDR PORT STOPFILE LOG  ask until STOPFILE exists; LOG gets one line per connect:
 *                                   CLOCK_MONOTONIC seconds at connect and at the answer, and who
 *                                   answered (or "failed"); print the counts
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "net_addr.h"

static void format(const union addr *a, char *out, size_t size)
{
	char text[INET6_ADDRSTRLEN];

	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->in.sin_addr, text, sizeof(text));
		snprintf(out, size, "%s:%u", text, ntohs(a->in.sin_port));
	} else {
		inet_ntop(AF_INET6, &a->in6.sin6_addr, text, sizeof(text));
		snprintf(out, size, "[%s]:%u", text, ntohs(a->in6.sin6_port));
	}
}

/* The original destination in a waypoint TLV (PROTOCOL.md), or "" when the bytes are not one. */
static size_t parse_tlv(const unsigned char *buf, size_t len, char *out, size_t size)
{
	char text[INET6_ADDRSTRLEN];

	out[0] = '\0';
	if (len >= 16 && buf[0] == 1 && buf[4] == 6 && buf[11] == 0xfe) {
		inet_ntop(AF_INET, buf + 5, text, sizeof(text));
		snprintf(out, size, "%s:%u", text, buf[9] << 8 | buf[10]);
		return 16;
	}
	if (len >= 28 && buf[0] == 1 && buf[4] == 18 && buf[23] == 0xfe) {
		inet_ntop(AF_INET6, buf + 5, text, sizeof(text));
		snprintf(out, size, "[%s]:%u", text, buf[21] << 8 | buf[22]);
		return 28;
	}
	return 0;
}

static int serve(const char *addr, const char *port, const char *name)
{
	union addr a;
	socklen_t len = make_addr("tcp_echo", addr, port, &a);
	int one = 1, fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, &a.sa, len) || listen(fd, 4096)) {
		fprintf(stderr, "tcp_echo: %s:%s: %s\n", addr, port, strerror(errno));
		return 1;
	}
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		unsigned char buf[512];
		struct pollfd pfd = { .fd = c, .events = POLLIN };
		ssize_t n = poll(&pfd, 1, 200) == 1 ? read(c, buf, sizeof(buf)) : 0;
		char orig[80], reply[200];
		if (n > 0 && parse_tlv(buf, (size_t)n, orig, sizeof(orig)))
			snprintf(reply, sizeof(reply), "%s (waypoint; original destination %s)\n", name, orig);
		else
			snprintf(reply, sizeof(reply), "%s\n", name);
		if (n > 0 && write(c, reply, strlen(reply)) < 0)
			perror("tcp_echo: write");
		close(c);
	}
}

static int ask(const char *addr, const char *port)
{
	union addr a, peer;
	socklen_t len = make_addr("tcp_echo", addr, port, &a), peer_len = sizeof(peer);
	int fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char reply[256] = "", seen[80] = "?";

	if (connect(fd, &a.sa, len)) {
		printf("%s:%s -> connect failed: %s\n", addr, port, strerror(errno));
		return 1;
	}
	if (getpeername(fd, &peer.sa, &peer_len) == 0)
		format(&peer, seen, sizeof(seen));
	if (write(fd, "?\n", 2) != 2)
		return 1;
	ssize_t n = read(fd, reply, sizeof(reply) - 1);
	reply[n > 0 ? n : 0] = '\0';
	printf("%s:%s -> answered by %s", addr, port, n > 0 ? reply : "nobody\n");
	printf("    (getpeername says %s)\n", seen);
	close(fd);
	return n > 0 ? 0 : 1;
}

static int loop(const char *addr, const char *port, const char *stop_file)
{
	union addr a;
	socklen_t len = make_addr("tcp_echo", addr, port, &a);
	unsigned long ok = 0, failed = 0;

	while (access(stop_file, F_OK) != 0) {
		int fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(fd, &a.sa, len) == 0) {
			ok++;
		} else {
			failed++;
			fprintf(stderr, "tcp_echo: connect %lu: %s\n", ok + failed, strerror(errno));
		}
		close(fd);
		sleep_ms(2);
	}
	printf("connects %lu failures %lu\n", ok + failed, failed);
	return failed ? 1 : 0;
}

/* One connect and question; the first word of the answer in name, or "failed:STEP:ERRNO" (one word). */
static bool ask_quietly(const union addr *a, socklen_t len, char *name, size_t size)
{
	int fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char reply[256];
	const char *step = "connect";
	ssize_t n = -1;

	errno = 0;
	if (connect(fd, &a->sa, len) == 0 && (step = "write", write(fd, "?\n", 2) == 2)) {
		step = "read";
		n = read(fd, reply, sizeof(reply) - 1);
	}
	int error = errno;
	close(fd);
	if (n > 0) {
		reply[n] = '\0';
		snprintf(name, size, "%.*s", (int)strcspn(reply, " \n"), reply);
		return true;
	}
	snprintf(name, size, "failed:%s:%s", step, n == 0 ? "EOF" : strerrorname_np(error) ? strerrorname_np(error) : "?");
	return false;
}

static int watch(const char *addr, const char *port, const char *stop_file, const char *log_path)
{
	union addr a;
	socklen_t len = make_addr("tcp_echo", addr, port, &a);
	unsigned long asked = 0, failed = 0;
	FILE *log = fopen(log_path, "w");

	if (!log) {
		fprintf(stderr, "tcp_echo: %s: %s\n", log_path, strerror(errno));
		return 1;
	}
	while (access(stop_file, F_OK) != 0) {
		char name[128];
		double start = now_seconds();
		bool answered = ask_quietly(&a, len, name, sizeof(name));
		fprintf(log, "%.6f %.6f %s\n", start, now_seconds(), name);
		asked++;
		failed += !answered;
		sleep_ms(1);
	}
	fclose(log);
	printf("connects %lu failures %lu\n", asked, failed);
	return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 5 && strcmp(argv[1], "serve") == 0)
		return serve(argv[2], argv[3], argv[4]);
	if (argc == 4 && strcmp(argv[1], "ask") == 0)
		return ask(argv[2], argv[3]);
	if (argc == 5 && strcmp(argv[1], "loop") == 0)
		return loop(argv[2], argv[3], argv[4]);
	if (argc == 6 && strcmp(argv[1], "watch") == 0)
		return watch(argv[2], argv[3], argv[4], argv[5]);
	fprintf(stderr, "usage: tcp_echo serve ADDR PORT NAME | ask ADDR PORT | loop ADDR PORT STOPFILE |\n"
			"                watch ADDR PORT STOPFILE LOG\n");
	return 2;
}
