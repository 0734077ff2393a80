/* SPDX-License-Identifier: Apache-2.0 */
/* Socket addresses from text, for the small network tools of the tests and benchmarks. */
#ifndef SOCKMESH_TEST_NET_ADDR_H
#define SOCKMESH_TEST_NET_ADDR_H

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

union addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* ADDR (IPv4 or IPv6) and PORT into out; exits with a message naming the tool when ADDR is not one. */
static inline socklen_t make_addr(const char *tool, const char *text, const char *port, union addr *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, text, &out->in.sin_addr) == 1) {
		out->in.sin_family = AF_INET;
		out->in.sin_port = htons((uint16_t)atoi(port));
		return sizeof(out->in);
	}
	if (inet_pton(AF_INET6, text, &out->in6.sin6_addr) == 1) {
		out->in6.sin6_family = AF_INET6;
		out->in6.sin6_port = htons((uint16_t)atoi(port));
		return sizeof(out->in6);
	}
	fprintf(stderr, "%s: '%s' is not an address\n", tool, text);
	exit(2);
}

#endif
