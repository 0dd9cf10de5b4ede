// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Kernel keyrings for the handshake upcall: certificates, private keys and
 * pre-shared keys the kernel names by serial (or the daemon finds by
 * identity), through keyctl(2) directly so the daemon needs no libkeyutils.
 *
 * Which keyrings a thread can search is a property of its credentials: its
 * thread, process and session keyrings. The kernel links a request's keyring
 * (NVMe's ".nvme") into the process keyring of the thread that sends ACCEPT,
 * and the process keyring is kept in each thread's credentials: one created
 * on demand by one thread (the kernel does that during the first ACCEPT)
 * would be that thread's alone, invisible to the workers that search it
 * during handshakes. So the process keyring is created here, before main()
 * and before any thread exists: every thread then shares this one keyring,
 * and whatever is linked into it is possessed by every thread.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/keyctl.h>
#include <sys/syscall.h>

#include "netlink.h"

#define KTLSHD_KEY_MAX		(1u << 20)	/* the kernel's own cap is 1 MiB */
#define KTLSHD_PEER_KEY_TTL	600		/* s: the consumer reads it at DONE */

static long ktlshd_keyctl(int cmd, unsigned long a2, unsigned long a3, unsigned long a4,
			  unsigned long a5)
{
	return syscall(SYS_keyctl, cmd, a2, a3, a4, a5);
}

__attribute__((constructor))
static void ktlshd_keyring_early(void)
{
	/* Errors (no CONFIG_KEYS, a seccomp filter) surface later, where a
	 * keyring is actually needed. */
	(void)ktlshd_keyctl(KEYCTL_GET_KEYRING_ID, (unsigned long)KEY_SPEC_PROCESS_KEYRING, 1, 0, 0);
}

void ktlshd_keyring_free(uint8_t *data, size_t len)
{
	if (!data)
		return;
	explicit_bzero(data, len);
	free(data);
}

/* KEYCTL_READ and KEYCTL_DESCRIBE return the full size whatever the
 * buffer: ask, allocate, read, and retry if the key grew in between. */
static int ktlshd_keyctl_alloc(int cmd, int32_t serial, uint8_t **data, size_t *len)
{
	uint8_t *buf = NULL;
	size_t cap = 0;
	long n;

	*data = NULL;
	*len = 0;
	for (;;) {
		n = ktlshd_keyctl(cmd, (unsigned long)(long)serial, (unsigned long)buf, cap, 0);
		if (n < 0) {
			n = -errno;
			ktlshd_keyring_free(buf, cap);
			return (int)n;
		}
		if ((size_t)n <= cap && buf)
			break;
		if ((size_t)n > KTLSHD_KEY_MAX) {
			ktlshd_keyring_free(buf, cap);
			return -EFBIG;
		}
		ktlshd_keyring_free(buf, cap);
		cap = (size_t)n + 1;	/* room for a NUL after a description */
		buf = calloc(1, cap);
		if (!buf)
			return -ENOMEM;
	}
	*data = buf;
	*len = (size_t)n;
	return 0;
}

int ktlshd_keyring_read(int32_t serial, uint8_t **data, size_t *len)
{
	int ret;

	if (serial <= 0)
		return -ENOKEY;
	ret = ktlshd_keyctl_alloc(KEYCTL_READ, serial, data, len);
	if (!ret && !*len) {
		ktlshd_keyring_free(*data, 1);
		*data = NULL;
		return -ENODATA;
	}
	return ret;
}

int ktlshd_keyring_describe(int32_t serial, char *type, size_t typelen, char *desc,
			    size_t desclen)
{
	uint8_t *buf;
	char *s, *semi, *last;
	size_t len;
	int ret;

	if (serial <= 0)
		return -ENOKEY;
	ret = ktlshd_keyctl_alloc(KEYCTL_DESCRIBE, serial, &buf, &len);
	if (ret)
		return ret;
	/* "type;uid;gid;perm;description", NUL-terminated by the kernel; the
	 * buffer has one more byte, so it is terminated whatever it says. */
	s = (char *)buf;
	s[len] = '\0';
	semi = strchr(s, ';');
	last = strrchr(s, ';');
	ret = -EBADMSG;
	if (!semi || semi == last)
		goto out;
	*semi = '\0';
	ret = -ENAMETOOLONG;
	if (type && (size_t)snprintf(type, typelen, "%s", s) >= typelen)
		goto out;
	if (desc && (size_t)snprintf(desc, desclen, "%s", last + 1) >= desclen)
		goto out;
	ret = 0;
out:
	ktlshd_keyring_free(buf, len + 1);
	return ret;
}

int32_t ktlshd_keyring_search(int32_t keyring, const char *type, const char *desc)
{
	long n = ktlshd_keyctl(KEYCTL_SEARCH, (unsigned long)(long)keyring, (unsigned long)type,
			       (unsigned long)desc, 0);

	return n < 0 ? -errno : (int32_t)n;
}

int ktlshd_keyring_link(int32_t keyring)
{
	if (ktlshd_keyctl(KEYCTL_LINK, (unsigned long)(long)keyring,
			  (unsigned long)KEY_SPEC_PROCESS_KEYRING, 0, 0) < 0)
		return -errno;
	return 0;
}

/* /proc/keys: "SERIAL FLAGS USAGE TIMEOUT PERM UID GID TYPE DESC: SUMMARY". */
int32_t ktlshd_keyring_resolve(const char *name)
{
	char line[1024], type[64], desc[512];
	unsigned long long v;
	unsigned int serial;
	int32_t found = -ENOKEY;
	char *end;
	FILE *f;

	if (isdigit((unsigned char)name[0])) {
		errno = 0;
		v = strtoull(name, &end, 0);
		if (errno || *end || !v || v > INT32_MAX)
			return -EINVAL;
		return (int32_t)v;
	}
	f = fopen("/proc/keys", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%x %*s %*s %*s %*s %*s %*s %63s %511[^:]", &serial, type,
			   desc) != 3)
			continue;
		if (!strcmp(type, "keyring") && !strcmp(desc, name) && serial &&
		    serial <= INT32_MAX) {
			found = (int32_t)serial;
			break;
		}
	}
	fclose(f);
	return found;
}

int32_t ktlshd_keyring_add_peer_cert(const uint8_t *der, size_t len, const char *peer)
{
	char desc[300];
	long serial;

	snprintf(desc, sizeof(desc), "TLS x509 %s", peer && peer[0] ? peer : "peer");
	/* "asymmetric" where the kernel parses X.509 (what tlshd adds),
	 * else a "user" key holding the same DER. */
	serial = syscall(SYS_add_key, "asymmetric", desc, der, len, KEY_SPEC_PROCESS_KEYRING);
	if (serial < 0)
		serial = syscall(SYS_add_key, "user", desc, der, len, KEY_SPEC_PROCESS_KEYRING);
	if (serial < 0)
		return -errno;
	(void)ktlshd_keyctl(KEYCTL_SET_TIMEOUT, (unsigned long)serial, KTLSHD_PEER_KEY_TTL, 0, 0);
	return (int32_t)serial;
}
