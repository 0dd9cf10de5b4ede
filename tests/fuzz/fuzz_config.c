// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-sources: daemon/config.c -linih
/*
 * libFuzzer target for the ktlshd.conf parser (daemon/config.c).
 *
 *   clang -std=gnu11 -g -O1 -D_GNU_SOURCE -Iinclude -Idaemon \
 *         -fsanitize=fuzzer,address,undefined \
 *         -fno-sanitize-recover=undefined \
 *         tests/fuzz/fuzz_config.c daemon/config.c -linih -o fuzz_config
 *   mkdir -p corpus && ./fuzz_config -max_total_time=60 corpus \
 *         tests/fuzz/corpus/config
 *
 * Relative paths in the input resolve against the working directory, so
 * run it from the repository root: the seeds name the Makefile as their
 * certificate and key (the parser only checks that files are readable),
 * which lets the fuzzer reach configurations that load.
 *
 * Besides memory errors it catches the parser's own line reader and
 * libinih disagreeing about a line ("internal error" in the messages), and
 * checks the invariants a loaded configuration promises the daemon.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static void check_loaded(const struct ktlsh_config *cfg)
{
	static const char *const names[] = {
		"www.example.com", "a.example.com", "example.com", "localhost",
		"A.EXAMPLE.ORG", "x.y.z", "", "*.example.com", ".", "a.",
	};
	const struct ktlsh_config_identity *id;
	size_t i, j;

	for (i = 0; i < cfg->n_identities; i++) {
		id = cfg->identities[i];
		if (ktlsh_config_identity(cfg, id->name) != id)
			abort();
		if (!id->tls.n_certs)
			abort();
		for (j = 0; j < id->tls.n_certs; j++)
			if (!id->tls.certs[j].cert.str ||
			    !id->tls.certs[j].key.str)
				abort();
		/* Every listed host name selects its own identity, and
		 * every wildcard selects some identity for a host under it
		 * (its own, unless another lists that host exactly). */
		for (j = 0; j < id->n_server_names; j++) {
			const char *n = id->server_names[j];
			char host[KTLSH_CONFIG_HOSTNAME_MAX + 8];

			if (n[0] != '*') {
				if (ktlsh_config_identity_for_sni(cfg, NULL, n) != id)
					abort();
				continue;
			}
			snprintf(host, sizeof(host), "zz%s", n + 1);
			if (strlen(n) + 1 <= KTLSH_CONFIG_HOSTNAME_MAX &&
			    !ktlsh_config_identity_for_sni(cfg, NULL, host))
				abort();
		}
		(void)ktlsh_config_may_use(cfg, id, 1000, 1000);
		if (ktlsh_config_may_use(cfg, id, 0, 0))
			abort();
	}
	for (i = 0; i < cfg->n_clients; i++)
		if (ktlsh_config_client(cfg, cfg->clients[i]->name) !=
		    cfg->clients[i])
			abort();
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		(void)ktlsh_config_identity_for_sni(cfg, NULL, names[i]);
}

/*
 * A line "fuzz.conf:N: internal error: ...". Only the parser writes that
 * right after the line number; values from the input are quoted later in a
 * message, so the input cannot forge it.
 */
static bool internal_error(const char *err)
{
	static const char prefix[] = "fuzz.conf:";
	const char *line, *p;

	for (line = err; line; line = strchr(line, '\n')) {
		if (*line == '\n')
			line++;
		if (strncmp(line, prefix, sizeof(prefix) - 1))
			continue;
		p = line + sizeof(prefix) - 1;
		while (*p >= '0' && *p <= '9')
			p++;
		if (!strncmp(p, ": internal error", 16))
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ktlsh_config *cfg = NULL;
	char err[4096];
	int ret;

	ret = ktlsh_config_load_buffer("fuzz.conf", (const char *)data, size,
				       &cfg, err, sizeof(err));
	if (internal_error(err)) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	if (ret == 0) {
		if (!cfg || err[0])
			abort();
		check_loaded(cfg);
		/* Take and drop a reference as a handshake would. */
		ktlsh_config_put(ktlsh_config_get(cfg));
		ktlsh_config_put(cfg);
	} else if (cfg || (ret != -EINVAL && ret != -ENOMEM) || !err[0]) {
		abort();
	}
	return 0;
}
