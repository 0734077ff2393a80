/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kernel probe's result, remembered for the boot: an agent that starts again on the same kernel skips
 * loading the probe object (a sixth of a restart's time to ready at 1,000 workloads). The memo is keyed by
 * the boot (its random boot id), the kernel release and the probe object's bytes, so that a reboot, another
 * kernel or another probe probes again. Only a kernel that took every required program is remembered: a
 * refusal is always probed, and explained. The memo only saves time: one that cannot be read or written is
 * as if absent.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <xxhash.h>

#include "datapath/internal.h"
#include "probe.skel.h"

/* "BOOT-ID RELEASE DIGEST" for this boot, kernel and probe object; false when the boot id cannot be read. */
static bool memo_key(char *key, size_t size)
{
	char boot_id[64] = "";
	struct utsname uts;
	size_t elf_size;
	const void *elf = sm_probe__elf_bytes(&elf_size);
	FILE *file = fopen("/proc/sys/kernel/random/boot_id", "re");

	if (!file)
		return false;
	bool read = fgets(boot_id, sizeof(boot_id), file) != NULL;
	fclose(file);
	if (!read || uname(&uts))
		return false;
	boot_id[strcspn(boot_id, "\n")] = '\0';
	int len = snprintf(key, size, "%s %s %016llx", boot_id, uts.release,
			   (unsigned long long)XXH3_64bits(elf, elf_size));
	return len > 0 && (size_t)len < size;
}

bool probe_memo_read(const char *path, bool *can_reap, bool *can_release)
{
	char key[256], line[512];
	unsigned reap, release;
	FILE *file;

	if (!path || !memo_key(key, sizeof(key)) || !(file = fopen(path, "re")))
		return false;
	bool read = fgets(line, sizeof(line), file) != NULL;
	fclose(file);
	size_t key_len = strlen(key);
	if (!read || strncmp(line, key, key_len) != 0 || line[key_len] != ' ' ||
	    sscanf(line + key_len, " %u %u", &reap, &release) != 2 || reap > 1 || release > 1)
		return false;
	*can_reap = reap;
	*can_release = release;
	return true;
}

bool probe_memo_write(const char *path, bool can_reap, bool can_release)
{
	char key[256], staged[PATH_MAX];

	if (!path || !memo_key(key, sizeof(key)) ||
	    snprintf(staged, sizeof(staged), "%s.%d", path, (int)getpid()) >= (int)sizeof(staged))
		return false;
	int fd = open(staged, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	FILE *file = fdopen(fd, "w");
	if (!file) {
		close(fd);
		unlink(staged);
		return false;
	}
	bool written = fprintf(file, "%s %d %d\n", key, can_reap, can_release) > 0;
	if (fclose(file) || !written || rename(staged, path)) { /* whole or not at all */
		unlink(staged);
		return false;
	}
	return true;
}
