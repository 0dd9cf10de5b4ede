// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Logging to stderr, one line per event. Under systemd (JOURNAL_STREAM set)
 * each line carries a "<N>" priority prefix that journald understands, so
 * no syslog connection is needed and nothing is lost before one exists.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "ktlshd.h"

int ktlshd_log_level = LOG_INFO;
static bool ktlshd_log_prefix;

void ktlshd_log_init(bool syslog_prefix)
{
	ktlshd_log_prefix = syslog_prefix;
	setvbuf(stderr, NULL, _IOLBF, 0);
}

void ktlshd_log(int prio, const char *fmt, ...)
{
	static const char *const names[] = {
		"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
	};
	char line[2048], msg[2048], *p, *nl;
	size_t n = 0;
	va_list ap;

	if (prio > ktlshd_log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ktlshd_log_prefix) {
		n = (size_t)snprintf(line, sizeof(line), "<%d>", prio);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ ktlshd %s: ",
				      ts.tv_nsec / 1000000, names[prio & 7]);
	}
	/* Every line of a multi-line message (a reload's file:line list) gets
	 * the prefix; one write per line keeps lines whole across threads. */
	for (p = msg; p; p = nl) {
		nl = strchr(p, '\n');
		if (nl)
			*nl++ = '\0';
		if (!*p && !nl)
			break;
		fprintf(stderr, "%.*s%s\n", (int)n, line, p);
	}
}

void ktlshd_log_trace(void *arg, const char *line)
{
	ktlshd_log(LOG_DEBUG, "%s", line);
}
