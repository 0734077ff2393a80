/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Recorded streams: DeltaDiscoveryResponse messages, each preceded by its length as a varint (protobuf's
 * delimited framing). Files are mapped, not read, because a recorded full push can be hundreds of MiB.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proto/proto.h"
#include "proto/wire.h"

void sm_stream_init(struct sm_stream_reader *reader, const uint8_t *data, size_t size)
{
	*reader = (struct sm_stream_reader){ .data = data, .size = size };
}

int sm_stream_open(struct sm_stream_reader *reader, const char *path, char *err, size_t err_size)
{
	struct stat st;
	void *mapping = NULL;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		snprintf(err, err_size, "%s: cannot stat: %s", path, strerror(errno));
		goto out_close;
	}
	if (st.st_size > 0) {
		mapping = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (mapping == MAP_FAILED) {
			ret = -errno;
			snprintf(err, err_size, "%s: cannot map %lld bytes: %s", path, (long long)st.st_size,
				 strerror(errno));
			goto out_close;
		}
	}
	sm_stream_init(reader, mapping, (size_t)st.st_size);
	reader->mapping = mapping;
out_close:
	close(fd);
	return ret;
}

int sm_stream_next(struct sm_stream_reader *reader, const uint8_t **msg, size_t *len, char *err,
		   size_t err_size)
{
	size_t start = reader->offset;
	size_t pos = start;
	uint64_t length;

	*msg = NULL;
	*len = 0;
	if (pos == reader->size)
		return 0;

	int ret = sm_wire_read_varint(reader->data, reader->size, &pos, &length);
	if (ret) {
		snprintf(err, err_size, "message %zu at byte %zu: %s length prefix", reader->index, start,
			 ret == -ENODATA ? "truncated" : "over-long");
		return -EBADMSG;
	}
	if (length > reader->size - pos) {
		snprintf(err, err_size, "message %zu at byte %zu: needs %llu bytes, the stream has %zu left",
			 reader->index, start, (unsigned long long)length, reader->size - pos);
		return -EBADMSG;
	}
	*msg = reader->data + pos;
	*len = (size_t)length;
	reader->offset = pos + (size_t)length;
	reader->index++;
	return 0;
}

void sm_stream_close(struct sm_stream_reader *reader)
{
	if (reader->mapping)
		munmap(reader->mapping, reader->size);
	*reader = (struct sm_stream_reader){ 0 };
}

int sm_stream_append(int fd, const uint8_t *msg, size_t len)
{
	uint8_t prefix[SM_VARINT_MAX_BYTES];
	struct iovec iov[2] = {
		{ .iov_base = prefix, .iov_len = sm_wire_write_varint(len, prefix) },
		{ .iov_base = (void *)msg, .iov_len = len },
	};
	size_t left = iov[0].iov_len + iov[1].iov_len;
	struct iovec *cur = iov;
	int count = 2;

	while (left) {
		ssize_t n = writev(fd, cur, count);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		left -= (size_t)n;
		while (count && (size_t)n >= cur->iov_len) {
			n -= (ssize_t)cur->iov_len;
			cur++;
			count--;
		}
		if (count) {
			cur->iov_base = (char *)cur->iov_base + n;
			cur->iov_len -= (size_t)n;
		}
	}
	return 0;
}
