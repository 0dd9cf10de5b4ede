/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ktls-bench: results, repeats, statistics and the three output forms
 * (table, Markdown table, JSON). Included once, by tools/ktls-bench.c; a
 * header because the Makefile turns every tools/<name>.c into a program.
 *
 * A command first lays out its rows (one per configuration measured, with
 * its parameters), then runs every row once per repeat, in the same order,
 * so that each repeat sees the same machine noise across rows. Each run
 * adds one sample to each of the row's metrics; derived metrics (ratios
 * between rows) are computed per repeat from the samples of that repeat,
 * so a ratio compares two measurements taken side by side.
 */
#ifndef KTLS_BENCH_OUT_H
#define KTLS_BENCH_OUT_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KB_MAX_REPEAT	64
#define KB_MAX_METRICS	28
#define KB_MAX_PARAMS	10
#define KB_MAX_ROWS	512
#define KB_MAX_WARN	64
#define KB_SPREAD_WARN	0.10	/* (max - min) / median above this is "wide" */

enum kb_status {
	KB_PENDING = 0,
	KB_OK,
	KB_NA,		/* cannot be measured here; reason says why */
	KB_FAIL,	/* tried and failed; reason says why */
};

struct kb_metric {
	char key[32];		/* JSON key */
	char head[32];		/* table header, with unit */
	char unit[16];
	int prec;		/* decimals in tables */
	bool in_table;
	bool check_spread;	/* warn when the spread is wide */
	int n;
	double v[KB_MAX_REPEAT];	/* NAN: no sample in that repeat */
};

struct kb_row {
	int np;
	char pkey[KB_MAX_PARAMS][24];
	char pval[KB_MAX_PARAMS][96];
	bool pshow[KB_MAX_PARAMS];	/* shown in the table */
	enum kb_status status;
	char reason[320];
	int nm;
	struct kb_metric m[KB_MAX_METRICS];
	void *priv;			/* the command's own description of the row */
};

struct kb_out {
	const char *command;
	char title[256];
	char argv_line[1024];
	int repeat;
	int nrows;
	struct kb_row rows[KB_MAX_ROWS];
	int nwarn;
	char warn[KB_MAX_WARN][800];
	int nnotes;
	char notes[16][400];
};

static struct kb_out kb_out;

/* ---- small helpers ---- */

static uint64_t kb_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t kb_clock_ns(clockid_t clk)
{
	struct timespec ts;

	if (clock_gettime(clk, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2)))
static void kb_warn(const char *fmt, ...)
{
	va_list ap;

	if (kb_out.nwarn >= KB_MAX_WARN)
		return;
	va_start(ap, fmt);
	vsnprintf(kb_out.warn[kb_out.nwarn], sizeof(kb_out.warn[0]), fmt, ap);
	va_end(ap);
	kb_out.nwarn++;
}

__attribute__((format(printf, 1, 2)))
static void kb_note(const char *fmt, ...)
{
	va_list ap;

	if (kb_out.nnotes >= (int)(sizeof(kb_out.notes) / sizeof(kb_out.notes[0])))
		return;
	va_start(ap, fmt);
	vsnprintf(kb_out.notes[kb_out.nnotes], sizeof(kb_out.notes[0]), fmt, ap);
	va_end(ap);
	kb_out.nnotes++;
}

/* ---- progress: one line on stderr, only when it is a terminal ---- */

static bool kb_progress_on;
static bool kb_progress_dirty;

__attribute__((format(printf, 1, 2)))
static void kb_progress(const char *fmt, ...)
{
	char line[160];
	va_list ap;

	if (!kb_progress_on)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "\r\033[K%s", line);
	fflush(stderr);
	kb_progress_dirty = true;
}

static void kb_progress_clear(void)
{
	if (kb_progress_dirty) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
		kb_progress_dirty = false;
	}
}

/* ---- rows and metrics ---- */

static struct kb_row *kb_row_new(void)
{
	struct kb_row *r;

	if (kb_out.nrows >= KB_MAX_ROWS) {
		fprintf(stderr, "ktls-bench: too many configurations (at most %d)\n", KB_MAX_ROWS);
		exit(2);
	}
	r = &kb_out.rows[kb_out.nrows++];
	memset(r, 0, sizeof(*r));
	return r;
}

__attribute__((format(printf, 4, 5)))
static void kb_param(struct kb_row *r, const char *key, bool show, const char *fmt, ...)
{
	va_list ap;

	if (r->np >= KB_MAX_PARAMS)
		return;
	snprintf(r->pkey[r->np], sizeof(r->pkey[0]), "%s", key);
	va_start(ap, fmt);
	vsnprintf(r->pval[r->np], sizeof(r->pval[0]), fmt, ap);
	va_end(ap);
	r->pshow[r->np] = show;
	r->np++;
}

static const char *kb_param_get(const struct kb_row *r, const char *key)
{
	int i;

	for (i = 0; i < r->np; i++)
		if (!strcmp(r->pkey[i], key))
			return r->pval[i];
	return "";
}

__attribute__((format(printf, 3, 4)))
static void kb_row_set(struct kb_row *r, enum kb_status st, const char *fmt, ...)
{
	va_list ap;

	r->status = st;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
}

/* Declare a metric (idempotent); flags: T = in table, S = check spread. */
#define KB_T	0x1
#define KB_S	0x2
static struct kb_metric *kb_metric_decl(struct kb_row *r, const char *key, const char *head,
					const char *unit, int prec, unsigned flags)
{
	struct kb_metric *m;
	int i;

	for (i = 0; i < r->nm; i++)
		if (!strcmp(r->m[i].key, key))
			return &r->m[i];
	if (r->nm >= KB_MAX_METRICS)
		return NULL;
	m = &r->m[r->nm++];
	memset(m, 0, sizeof(*m));
	snprintf(m->key, sizeof(m->key), "%s", key);
	snprintf(m->head, sizeof(m->head), "%s", head);
	snprintf(m->unit, sizeof(m->unit), "%s", unit);
	m->prec = prec;
	m->in_table = flags & KB_T;
	m->check_spread = flags & KB_S;
	for (i = 0; i < KB_MAX_REPEAT; i++)
		m->v[i] = NAN;
	return m;
}

static struct kb_metric *kb_metric_find(const struct kb_row *r, const char *key)
{
	int i;

	for (i = 0; i < r->nm; i++)
		if (!strcmp(r->m[i].key, key))
			return (struct kb_metric *)&r->m[i];
	return NULL;
}

/* The sample of repeat rep (NAN if none). */
static double kb_sample(const struct kb_row *r, const char *key, int rep)
{
	const struct kb_metric *m = kb_metric_find(r, key);

	return m && rep < KB_MAX_REPEAT ? m->v[rep] : NAN;
}

static void kb_set(struct kb_row *r, int rep, const char *key, const char *head, const char *unit,
		   int prec, unsigned flags, double v)
{
	struct kb_metric *m = kb_metric_decl(r, key, head, unit, prec, flags);

	if (!m || rep >= KB_MAX_REPEAT)
		return;
	if (isinf(v))
		v = NAN;	/* a quotient by zero is no measurement */
	if (isnan(m->v[rep]) && !isnan(v))
		m->n++;
	m->v[rep] = v;
}

static int kb_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct kb_stats {
	int n;
	double median, min, max, q1, q3, spread;	/* spread = (max - min) / |median| */
};

/* Linear interpolation between closest ranks (R-7, like numpy's default). */
static double kb_quantile_sorted(const double *s, int n, double q)
{
	double pos, frac;
	int lo;

	if (n <= 0)
		return NAN;
	pos = q * (n - 1);
	lo = (int)pos;
	frac = pos - lo;
	if (lo + 1 >= n)
		return s[n - 1];
	return s[lo] + frac * (s[lo + 1] - s[lo]);
}

static struct kb_stats kb_metric_stats(const struct kb_metric *m)
{
	struct kb_stats st = { 0 };
	double s[KB_MAX_REPEAT];
	int i;

	for (i = 0; i < KB_MAX_REPEAT; i++)
		if (!isnan(m->v[i]))
			s[st.n++] = m->v[i];
	if (!st.n) {
		st.median = st.min = st.max = st.q1 = st.q3 = st.spread = NAN;
		return st;
	}
	qsort(s, (size_t)st.n, sizeof(s[0]), kb_cmp_double);
	st.min = s[0];
	st.max = s[st.n - 1];
	st.median = kb_quantile_sorted(s, st.n, 0.5);
	st.q1 = kb_quantile_sorted(s, st.n, 0.25);
	st.q3 = kb_quantile_sorted(s, st.n, 0.75);
	st.spread = st.n > 1 && st.median != 0 ? (st.max - st.min) / fabs(st.median) : 0;
	return st;
}

/* Percentile of an unsorted sample array (sorts it). */
static double kb_percentile(double *v, size_t n, double q)
{
	if (!n)
		return NAN;
	qsort(v, n, sizeof(v[0]), kb_cmp_double);
	return kb_quantile_sorted(v, (int)n, q);
}

/* After all repeats: one warning per row whose main metrics spread wide. */
static void kb_check_spreads(void)
{
	struct kb_stats st;
	int i, j, k;

	for (i = 0; i < kb_out.nrows; i++) {
		struct kb_row *r = &kb_out.rows[i];
		char name[256] = "", wide[400] = "";
		size_t used = 0, wused = 0;

		if (r->status != KB_OK)
			continue;
		for (j = 0; j < r->nm && wused < sizeof(wide) - 1; j++) {
			if (!r->m[j].check_spread)
				continue;
			st = kb_metric_stats(&r->m[j]);
			if (st.n > 1 && st.spread > KB_SPREAD_WARN)
				wused += (size_t)snprintf(wide + wused, sizeof(wide) - wused,
							  "%s%s %.0f%% (%.4g..%.4g)", wused ? ", " : "",
							  r->m[j].head, st.spread * 100, st.min, st.max);
		}
		if (!wused)
			continue;
		for (k = 0; k < r->np && used < sizeof(name) - 1; k++)
			if (r->pshow[k])
				used += (size_t)snprintf(name + used, sizeof(name) - used, "%s%s",
							 used ? " " : "", r->pval[k]);
		kb_warn("wide spread across %d runs in [%s]: %s; the machine is busy or the "
			"runs are short: trust ratios measured side by side, or rerun on an idle "
			"machine with longer runs and more --repeat", kb_out.repeat, name, wide);
	}
}

/* ---- machine description ---- */

struct kb_machine {
	char cpu[128];
	int cores;
	char kernel[160];
	char openssl[96];
	char ktls[160];
	char liburing[32];
};

static struct kb_machine kb_machine;

/* ---- JSON ---- */

static void kb_json_str(FILE *f, const char *s)
{
	const unsigned char *p;

	fputc('"', f);
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void kb_json_num(FILE *f, double v)
{
	if (isnan(v) || isinf(v))
		fputs("null", f);
	else if (v == floor(v) && fabs(v) < 1e15)
		fprintf(f, "%.0f", v);
	else
		fprintf(f, "%.6g", v);
}

static const char *kb_status_name(enum kb_status s)
{
	switch (s) {
	case KB_OK:
		return "ok";
	case KB_NA:
		return "n/a";
	case KB_FAIL:
		return "fail";
	default:
		return "not run";
	}
}

static void kb_print_json(FILE *f)
{
	struct kb_stats st;
	int i, j, k, first;

	fprintf(f, "{\n  \"tool\": \"ktls-bench\",\n  \"version\": ");
	kb_json_str(f, KTLSH_VERSION_STRING);
	fprintf(f, ",\n  \"command\": ");
	kb_json_str(f, kb_out.command);
	fprintf(f, ",\n  \"argv\": ");
	kb_json_str(f, kb_out.argv_line);
	fprintf(f, ",\n  \"machine\": {\"cpu\": ");
	kb_json_str(f, kb_machine.cpu);
	fprintf(f, ", \"cores\": %d, \"kernel\": ", kb_machine.cores);
	kb_json_str(f, kb_machine.kernel);
	fprintf(f, ", \"openssl\": ");
	kb_json_str(f, kb_machine.openssl);
	fprintf(f, ", \"kernel_tls\": ");
	kb_json_str(f, kb_machine.ktls);
	fprintf(f, ", \"liburing\": ");
	kb_json_str(f, kb_machine.liburing);
	fprintf(f, "},\n  \"repeat\": %d,\n  \"spread_warn\": %.2f,\n  \"results\": [",
		kb_out.repeat, KB_SPREAD_WARN);
	for (i = 0; i < kb_out.nrows; i++) {
		const struct kb_row *r = &kb_out.rows[i];

		fprintf(f, "%s\n    {\"params\": {", i ? "," : "");
		for (k = 0; k < r->np; k++) {
			fprintf(f, "%s", k ? ", " : "");
			kb_json_str(f, r->pkey[k]);
			fputs(": ", f);
			kb_json_str(f, r->pval[k]);
		}
		fprintf(f, "},\n     \"status\": ");
		kb_json_str(f, kb_status_name(r->status));
		if (r->reason[0]) {
			fprintf(f, ", \"reason\": ");
			kb_json_str(f, r->reason);
		}
		fprintf(f, ",\n     \"metrics\": {");
		first = 1;
		for (j = 0; j < r->nm; j++) {
			const struct kb_metric *m = &r->m[j];

			if (!m->n)
				continue;
			st = kb_metric_stats(m);
			fprintf(f, "%s\n       ", first ? "" : ",");
			first = 0;
			kb_json_str(f, m->key);
			fprintf(f, ": {\"unit\": ");
			kb_json_str(f, m->unit);
			fprintf(f, ", \"median\": ");
			kb_json_num(f, st.median);
			fprintf(f, ", \"min\": ");
			kb_json_num(f, st.min);
			fprintf(f, ", \"max\": ");
			kb_json_num(f, st.max);
			fprintf(f, ", \"q1\": ");
			kb_json_num(f, st.q1);
			fprintf(f, ", \"q3\": ");
			kb_json_num(f, st.q3);
			fprintf(f, ", \"spread\": ");
			kb_json_num(f, st.spread);
			fprintf(f, ", \"samples\": [");
			for (k = 0; k < KB_MAX_REPEAT && k < kb_out.repeat; k++) {
				fprintf(f, "%s", k ? ", " : "");
				kb_json_num(f, m->v[k]);
			}
			fprintf(f, "]}");
		}
		fprintf(f, "%s}}", first ? "" : "\n     ");
	}
	fprintf(f, "\n  ],\n  \"notes\": [");
	for (i = 0; i < kb_out.nnotes; i++) {
		fprintf(f, "%s\n    ", i ? "," : "");
		kb_json_str(f, kb_out.notes[i]);
	}
	fprintf(f, "%s],\n  \"warnings\": [", kb_out.nnotes ? "\n  " : "");
	for (i = 0; i < kb_out.nwarn; i++) {
		fprintf(f, "%s\n    ", i ? "," : "");
		kb_json_str(f, kb_out.warn[i]);
	}
	fprintf(f, "%s]\n}\n", kb_out.nwarn ? "\n  " : "");
}

/* ---- tables ---- */

#define KB_MAX_COLS	(KB_MAX_PARAMS + KB_MAX_METRICS + 2)

struct kb_col {
	char head[40];
	bool is_param;
	bool is_spread;
	char key[32];
};

/* Display width of UTF-8 text: characters, not bytes ("µs"). */
static int kb_width(const char *s)
{
	int w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* One cell, padded to width w, left or right aligned. */
static void kb_pad(FILE *f, const char *s, int w, bool left)
{
	int pad = w - kb_width(s);

	if (!left)
		for (; pad > 0; pad--)
			fputc(' ', f);
	fputs(s, f);
	if (left)
		for (; pad > 0; pad--)
			fputc(' ', f);
}

static void kb_fmt_num(char *buf, size_t len, double v, int prec)
{
	if (isnan(v))
		snprintf(buf, len, "-");
	else if (fabs(v) >= 1e5 && prec > 0)
		snprintf(buf, len, "%.0f", v);
	else
		snprintf(buf, len, "%.*f", prec, v);
}

/*
 * Columns: the parameters marked shown, then every table metric that some
 * row has, then the spread (only with --repeat > 1). Rows that could not be
 * measured say why in a line of their own below the table.
 */
static void kb_print_table(FILE *f, bool markdown)
{
	struct kb_col cols[KB_MAX_COLS];
	int ncols = 0, i, j, c, w[KB_MAX_COLS];
	static char cell[KB_MAX_ROWS][KB_MAX_COLS][48];
	bool any_ok = false;

	memset(cols, 0, sizeof(cols));
	/* parameter columns from the first row (all rows share the keys) */
	if (kb_out.nrows) {
		const struct kb_row *r0 = &kb_out.rows[0];

		for (i = 0; i < r0->np; i++) {
			if (!r0->pshow[i])
				continue;
			snprintf(cols[ncols].head, sizeof(cols[0].head), "%s", r0->pkey[i]);
			snprintf(cols[ncols].key, sizeof(cols[0].key), "%s", r0->pkey[i]);
			cols[ncols++].is_param = true;
		}
	}
	for (i = 0; i < kb_out.nrows; i++) {
		const struct kb_row *r = &kb_out.rows[i];

		for (j = 0; j < r->nm; j++) {
			if (!r->m[j].in_table || !r->m[j].n)
				continue;
			for (c = 0; c < ncols; c++)
				if (!cols[c].is_param && !strcmp(cols[c].key, r->m[j].key))
					break;
			if (c == ncols && ncols < KB_MAX_COLS - 1) {
				snprintf(cols[ncols].head, sizeof(cols[0].head), "%s", r->m[j].head);
				snprintf(cols[ncols].key, sizeof(cols[0].key), "%s", r->m[j].key);
				ncols++;
			}
		}
		if (r->status == KB_OK)
			any_ok = true;
	}
	if (kb_out.repeat > 1 && any_ok) {
		snprintf(cols[ncols].head, sizeof(cols[0].head), "spread");
		cols[ncols++].is_spread = true;
	}
	for (c = 0; c < ncols; c++)
		w[c] = kb_width(cols[c].head);
	for (i = 0; i < kb_out.nrows; i++) {
		const struct kb_row *r = &kb_out.rows[i];
		double worst = -1;

		for (c = 0; c < ncols; c++) {
			char *out = cell[i][c];

			out[0] = '\0';
			if (cols[c].is_param) {
				snprintf(out, 48, "%s", kb_param_get(r, cols[c].key));
			} else if (cols[c].is_spread) {
				for (j = 0; j < r->nm; j++) {
					struct kb_stats st;

					if (!r->m[j].check_spread || !r->m[j].n)
						continue;
					st = kb_metric_stats(&r->m[j]);
					if (st.spread > worst)
						worst = st.spread;
				}
				if (worst >= 0)
					snprintf(out, 48, "%.0f%%%s", worst * 100,
						 worst > KB_SPREAD_WARN ? " !" : "");
				else
					snprintf(out, 48, "-");
			} else if (r->status != KB_OK) {
				/* the status under the first metric column, the rest empty */
				snprintf(out, 48, "%s", c > 0 && cols[c - 1].is_param ?
					 kb_status_name(r->status) : "");
			} else {
				const struct kb_metric *m = kb_metric_find(r, cols[c].key);

				if (m && m->n)
					kb_fmt_num(out, 48, kb_metric_stats(m).median, m->prec);
				else
					snprintf(out, 48, "-");
			}
			if (kb_width(out) > w[c])
				w[c] = kb_width(out);
		}
	}
	fprintf(f, markdown ? "**%s**\n\n" : "%s\n\n", kb_out.title);
	for (c = 0; c < ncols; c++) {
		fputs(markdown ? "| " : "", f);
		kb_pad(f, cols[c].head, w[c], markdown || cols[c].is_param);
		fputs(markdown || c < ncols - 1 ? " " : "", f);
		fputs(!markdown && c < ncols - 1 ? " " : "", f);
	}
	fprintf(f, markdown ? "|\n" : "\n");
	for (c = 0; c < ncols; c++) {
		if (markdown) {
			fprintf(f, "|");
			for (j = 0; j < w[c] + 1; j++)
				fputc('-', f);
			fputc(cols[c].is_param ? '-' : ':', f);
		} else {
			for (j = 0; j < w[c]; j++)
				fputc('-', f);
			fputs(c < ncols - 1 ? "  " : "", f);
		}
	}
	fprintf(f, markdown ? "|\n" : "\n");
	for (i = 0; i < kb_out.nrows; i++) {
		for (c = 0; c < ncols; c++) {
			fputs(markdown ? "| " : "", f);
			kb_pad(f, cell[i][c], w[c], cols[c].is_param);
			fputs(markdown || c < ncols - 1 ? " " : "", f);
			fputs(!markdown && c < ncols - 1 ? " " : "", f);
		}
		fprintf(f, markdown ? "|\n" : "\n");
	}
	/* the reasons, once each */
	for (i = 0; i < kb_out.nrows; i++) {
		const struct kb_row *r = &kb_out.rows[i];
		char name[256] = "";
		size_t used = 0;
		int same = 0;

		if (r->status == KB_OK || !r->reason[0])
			continue;
		for (j = 0; j < i; j++)
			if (kb_out.rows[j].status == r->status &&
			    !strcmp(kb_out.rows[j].reason, r->reason))
				break;
		if (j < i)
			continue;
		for (j = i; j < kb_out.nrows; j++)
			if (kb_out.rows[j].status == r->status &&
			    !strcmp(kb_out.rows[j].reason, r->reason))
				same++;
		for (c = 0; c < r->np && used < sizeof(name) - 1; c++)
			if (r->pshow[c])
				used += (size_t)snprintf(name + used, sizeof(name) - used, "%s%s",
							 used ? " " : "", r->pval[c]);
		if (same > 1)
			fprintf(f, "\n%s (%d rows, e.g. %s): %s\n", kb_status_name(r->status), same,
				name, r->reason);
		else
			fprintf(f, "\n%s (%s): %s\n", kb_status_name(r->status), name, r->reason);
	}
	if (kb_out.repeat > 1)
		fprintf(f, "\nMedian of %d runs; spread = (max - min) / median of the row's main "
			"metrics, \"!\" above %.0f%%.\n", kb_out.repeat, KB_SPREAD_WARN * 100);
	for (i = 0; i < kb_out.nnotes; i++)
		fprintf(f, "%s%s\n", markdown ? "\n" : "note: ", kb_out.notes[i]);
	for (i = 0; i < kb_out.nwarn; i++)
		fprintf(f, "%swarning: %s\n", markdown ? "\n" : "", kb_out.warn[i]);
}

#endif /* KTLS_BENCH_OUT_H */
