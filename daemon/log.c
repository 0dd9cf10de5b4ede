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
	char line[2048];
	size_t n = 0;
	va_list ap;

	if (prio > ktlshd_log_level)
		return;
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
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	/* One write per line keeps lines whole when workers log at once. */
	fprintf(stderr, "%s\n", line);
}

void ktlshd_log_trace(void *arg, const char *line)
{
	ktlshd_log(LOG_DEBUG, "%s", line);
}
