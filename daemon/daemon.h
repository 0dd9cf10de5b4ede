/* SPDX-License-Identifier: GPL-2.0-or-later */
#ifndef KTLSHD_DAEMON_H
#define KTLSHD_DAEMON_H

#include <stdbool.h>

struct ktlshd_opts {
	const char *config;
	int log_level;		/* -1: from the configuration */
	bool handshake_only;
};

int ktlshd_run(const struct ktlshd_opts *opts);
/* `ktlshd --check-config`: "configuration OK" or file:line errors; exit status. */
int ktlshd_check_config(const char *path);

#endif
