/* SPDX-License-Identifier: Apache-2.0 */
/* IP:PORT and [IPv6]:PORT, as the agent's options take them; addresses as the maps hold them (16 bytes, IPv4
 * mapped) to and from text. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"

int parse_ip_port(const char *text, struct sockaddr_storage *out)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(text, ':');
	struct sockaddr_in *in = (struct sockaddr_in *)out;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
	unsigned long port;
	size_t len;
	char *end;

	memset(out, 0, sizeof(*out));
	if (!colon || colon == text || (size_t)(colon - text) >= sizeof(host) || !colon[1])
		return -EINVAL;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port > 65535)
		return -EINVAL;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - text), text);
	len = strlen(host);
	if (host[0] == '[' && len > 2 && host[len - 1] == ']') {
		host[len - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1)
			return -EINVAL;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
		return -EINVAL;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	return 0;
}

int parse_mapped_address(const char *text, uint8_t out[16])
{
	struct in_addr v4;

	if (inet_pton(AF_INET, text, &v4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &v4, 4);
		return 0;
	}
	return inet_pton(AF_INET6, text, out) == 1 ? 0 : -EINVAL;
}

/* n (below 100,000: a port or an octet) in decimal at p; returns the end */
static char *decimal(char *p, unsigned n)
{
	if (n >= 10000)
		*p++ = (char)('0' + n / 10000);
	if (n >= 1000)
		*p++ = (char)('0' + n / 1000 % 10);
	if (n >= 100)
		*p++ = (char)('0' + n / 100 % 10);
	if (n >= 10)
		*p++ = (char)('0' + n / 10 % 10);
	*p++ = (char)('0' + n % 10);
	return p;
}

void format_mapped_endpoint(const uint8_t addr[16], uint16_t port, char *buf, size_t size)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	char text[INET6_ADDRSTRLEN + 8], *p = text;

	/* by hand: inet_ntop and snprintf cost telemetry more than the rest of naming a connection */
	if (memcmp(addr, mapped, 12) == 0) {
		for (int i = 12; i < 16; i++) {
			p = decimal(p, addr[i]);
			*p++ = i < 15 ? '.' : ':';
		}
	} else {
		*p++ = '[';
		inet_ntop(AF_INET6, addr, p, INET6_ADDRSTRLEN);
		p += strlen(p);
		*p++ = ']';
		*p++ = ':';
	}
	p = decimal(p, port);
	if (size) { /* cut like snprintf */
		size_t n = (size_t)(p - text) < size ? (size_t)(p - text) : size - 1;
		memcpy(buf, text, n);
		buf[n] = '\0';
	}
}
