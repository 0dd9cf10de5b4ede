/*
 * ktest-modload: load kernel modules inside the ktest guest with one process.
 *
 *   ktest-modload MODULE.ko[.xz|.zst|.gz] ...
 *
 * Each file is loaded in the order given with finit_module(2). Starting a
 * process in UML costs up to a second, so one process for all modules beats
 * one insmod each. A module that is already loaded (EEXIST) counts as loaded.
 * Compressed files are passed with MODULE_INIT_COMPRESSED_FILE (Linux 5.17+
 * with CONFIG_MODULE_DECOMPRESS); a kernel without it rejects the flag with
 * EOPNOTSUPP (or EINVAL before 5.17), and then we exit 3 so that the caller
 * can decompress and run us again.
 *
 * Exit: 0 all loaded, 1 a module failed, 2 usage, 3 compressed unsupported.
 * Built on demand by scripts/ktest (static where possible: the guest runs it
 * before anything else, from the host's filesystem).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s MODULE.ko... (loaded in order)\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		const char *path = argv[i];
		int compressed = ends_with(path, ".xz") || ends_with(path, ".zst") ||
				 ends_with(path, ".gz");
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "ktest-modload: open %s: %s\n", path, strerror(errno));
			return 1;
		}
		long rc = syscall(SYS_finit_module, fd, "",
				  compressed ? MODULE_INIT_COMPRESSED_FILE : 0);
		int err = errno;
		close(fd);
		if (rc == 0 || err == EEXIST)
			continue;
		if (compressed && (err == EOPNOTSUPP || err == EINVAL)) {
			fprintf(stderr, "ktest-modload: %s: kernel cannot load compressed modules\n", path);
			return 3;
		}
		fprintf(stderr, "ktest-modload: finit_module %s: %s\n", path, strerror(err));
		return 1;
	}
	return 0;
}
