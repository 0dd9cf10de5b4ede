// SPDX-License-Identifier: GPL-2.0-or-later
/* ktlshd: command line. Everything else lives in daemon.c and friends. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>

#include "ktlshd.h"
#include "daemon.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ktlshd [-c FILE] [-d] [--handshake-only]\n"
		"       ktlshd -t [-c FILE]\n"
		"\n"
		"  -c, --config FILE     configuration (default %s)\n"
		"  -t, --check-config    parse and load everything, print \"configuration OK\"\n"
		"                        or file:line of each problem, and exit\n"
		"  -d, --debug           log at debug level, with the per-step handshake trace\n"
		"      --handshake-only  benchmarking: handshake but never install kernel TLS;\n"
		"                        every reply is an error (-EOPNOTSUPP) so nothing is used\n"
		"  -h, --help            this text\n"
		"  -V, --version         print the version\n"
		"\n"
		"Signals: SIGHUP reloads the configuration, SIGTERM/SIGINT stop after the\n"
		"handshakes in flight. See ktlshd(8), ktlshd.conf(5).\n",
		KTLSH_CONFIG_DEFAULT_PATH);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "debug", no_argument, NULL, 'd' },
		{ "handshake-only", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ktlshd_opts opts = { .config = KTLSH_CONFIG_DEFAULT_PATH, .log_level = -1 };
	int check = 0, c;

	while ((c = getopt_long(argc, argv, "c:tdhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			opts.config = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'd':
			opts.log_level = LOG_DEBUG;
			break;
		case 'H':
			opts.handshake_only = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("ktlshd %s\n", KTLSHD_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	return check ? ktlshd_check_config(opts.config) : ktlshd_run(&opts);
}
