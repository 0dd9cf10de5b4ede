// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ktlshd.conf parser; the syntax and every key are in ktlshd.conf(5).
 *
 * libinih splits the file into sections and "key = value" pairs, but its
 * handler gets no line numbers (Debian builds it without
 * INI_HANDLER_LINENO, and other builds may differ), it says nothing about a
 * section that has no keys, and it truncates long section names without
 * notice. So inih reads through our own line reader (ini_parse_stream): the
 * reader counts lines, refuses what inih would mangle, and classifies each
 * line the way inih is about to, so the handler knows the line number,
 * whether the line continues the previous key, and which header opened the
 * current section. The handler checks that classification against what inih
 * hands it, and a disagreement is reported rather than trusted.
 *
 * Every problem is collected as "file:line: message"; the load fails if
 * there was any, and reports them all in line order.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <ini.h>

#include "config.h"

/* inih keeps section names in a 50-byte buffer (ini.c MAX_SECTION) and cuts
 * longer ones short; we refuse them so two long names never collide. */
#define CONFIG_INI_SECTION_MAX	49
#define CONFIG_FILE_MAX		(1u << 20)
#define CONFIG_MSGS_MAX		100
#define CONFIG_QUOTE_MAX	72	/* values in messages */
#define CONFIG_QUOTE_PATH	512	/* paths in messages */
#define CONFIG_NSS_BUF_MAX	(1u << 20)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct ktlsh_config_sni {
	const char *name;	/* points into identity->server_names */
	const struct ktlsh_config_identity *identity;
	unsigned int line;
};

enum config_section {
	SEC_NONE,		/* before the first header */
	SEC_GLOBAL,
	SEC_IDENTITY,
	SEC_CLIENT,
	SEC_SERVICE,
	SEC_HANDSHAKE,		/* [handshake]: its own key table, config_hs_keys */
	SEC_SKIP,		/* reserved for later versions, or broken */
};

#define IN_GLOBAL	(1u << SEC_GLOBAL)
#define IN_IDENTITY	(1u << SEC_IDENTITY)
#define IN_CLIENT	(1u << SEC_CLIENT)
#define IN_TLS		(IN_IDENTITY | IN_CLIENT)
#define IN_SERVICE	(1u << SEC_SERVICE)

enum config_line {
	LINE_BLANK,		/* blank or comment */
	LINE_SECTION,
	LINE_KEY,
	LINE_CONT,		/* indented: continues the previous key */
	LINE_BAD,		/* inih will call it a syntax error */
};

struct config_msg {
	unsigned int line;
	unsigned int seq;
	char *text;
};

struct config_msgs {
	struct config_msg *v;
	size_t n;
	size_t cap;
};

enum config_key_id {
	K_SOCKET, K_WORKERS, K_LOG_LEVEL, K_MAX_INFLIGHT, K_HANDSHAKE_TIMEOUT,
	K_USER, K_TICKET_ROTATION, K_TICKET_KEY_FILE,
	K_CERT, K_KEY, K_SERVER_NAMES, K_SERVER_NAME, K_ALPN, K_CIPHERS,
	K_CIPHERSUITES, K_GROUPS, K_MIN_VERSION, K_TICKETS, K_TRUSTED_PEER,
	K_ALLOW_UIDS, K_ALLOW_GIDS, K_VERIFY_CLIENT, K_VERIFY, K_CA_FILE,
	K_CA_DIR, K_CRL_FILE,
	/* [service NAME] */
	K_MODE, K_LISTEN, K_BACKEND, K_CONNECT, K_IDENTITY, K_CLIENT_PROFILE,
	K_PROXY_PROTOCOL, K_MAX_CONNECTIONS, K_IDLE_TIMEOUT, K_FALLBACK,
	K_DATA_PATH,
	K_COUNT
};

/* [handshake] keys (config_hs_keys, below). */
enum config_hs_key {
	HK_ENABLED, HK_KEYRINGS, HK_TIMEOUT, HK_VERIFY_CLIENT, HK_CIPHERSUITES,
	HK_GROUPS, HK_CLIENT_CERT, HK_CLIENT_KEY, HK_CLIENT_CA_FILE,
	HK_CLIENT_CA_DIR, HK_CLIENT_CRL_FILE, HK_SERVER_CERT, HK_SERVER_KEY,
	HK_SERVER_CA_FILE, HK_SERVER_CA_DIR, HK_SERVER_CRL_FILE,
	HK_COUNT
};

struct config_parser {
	struct ktlsh_config *cfg;
	const char *file;		/* for messages */
	char *basedir;			/* for relative paths */
	const char *buf;
	size_t len;
	size_t pos;
	unsigned int lineno;
	unsigned int first_bad;		/* first line inih should reject */
	bool stop;
	bool oom;
	/* The reader's mirror of inih's state. */
	bool prev_name;
	enum config_line kind;
	char section[CONFIG_INI_SECTION_MAX + 1];
	/* The section being filled. */
	enum config_section sec;
	unsigned int sec_line;
	struct ktlsh_config_identity *identity;
	struct ktlsh_config_client *client;
	struct ktlsh_config_service *service;
	int cont_key;			/* key continuation lines extend, or -1 */
	bool orphan_key;		/* the last cert line was refused */
	unsigned int seen[K_COUNT];	/* line each key was first set on */
	unsigned int hs_seen[HK_COUNT];	/* the same for [handshake] */
	int hs_cont;			/* [handshake] key + 1 continuations extend, or 0 */
	unsigned int global_line;
	size_t n_identities_cap;
	size_t n_clients_cap;
	size_t n_sni_cap;
	size_t n_services_cap;
	unsigned int seq;
	struct config_msgs errors;
	struct config_msgs warnings;
};

#define KEY_REPEAT	0x1	/* may appear more than once */
#define KEY_CONT	0x2	/* indented lines continue the value */

struct config_key {
	const char *name;
	unsigned int sections;
	unsigned int flags;
	const char *expect;	/* "expected ..." in messages */
	void (*set)(struct config_parser *p, const struct config_key *k,
		    const char *value);
};

static const struct config_key config_keys[K_COUNT];

/* ---- messages ---------------------------------------------------------- */

static void __attribute__((format(printf, 4, 0)))
config_msg_add(struct config_parser *p, struct config_msgs *m,
	       unsigned int line, const char *fmt, va_list ap)
{
	struct config_msg *v;
	char *body = NULL, *text = NULL;

	if (m->n >= CONFIG_MSGS_MAX)
		return;
	if (vasprintf(&body, fmt, ap) < 0) {
		body = NULL;
		goto oom;
	}
	if ((line ? asprintf(&text, "%s:%u: %s", p->file, line, body) :
		    asprintf(&text, "%s: %s", p->file, body)) < 0) {
		text = NULL;
		goto oom;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 8;

		v = reallocarray(m->v, cap, sizeof(*v));
		if (!v)
			goto oom;
		m->v = v;
		m->cap = cap;
	}
	m->v[m->n].line = line;
	m->v[m->n].seq = p->seq++;
	m->v[m->n].text = text;
	m->n++;
	free(body);
	return;
oom:
	p->oom = true;
	free(body);
	free(text);
}

static void __attribute__((format(printf, 3, 4)))
config_err(struct config_parser *p, unsigned int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_msg_add(p, &p->errors, line, fmt, ap);
	va_end(ap);
}

static void __attribute__((format(printf, 3, 4)))
config_warn(struct config_parser *p, unsigned int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_msg_add(p, &p->warnings, line, fmt, ap);
	va_end(ap);
}

static int config_msg_cmp(const void *a, const void *b)
{
	const struct config_msg *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Join messages in line order, one per line (no newline after the last),
 * into buf: as many whole lines as fit, or the first one cut short if even
 * that does not.
 */
static void config_msgs_join(struct config_msgs *m, char *buf, size_t len)
{
	size_t used = 0, i, n, sep;

	if (!buf || !len)
		return;
	buf[0] = '\0';
	if (!m->n)
		return;
	qsort(m->v, m->n, sizeof(*m->v), config_msg_cmp);
	for (i = 0; i < m->n; i++) {
		n = strlen(m->v[i].text);
		sep = i ? 1 : 0;
		if (used + sep + n + 1 > len) {
			if (i == 0)
				snprintf(buf, len, "%s", m->v[i].text);
			break;
		}
		if (sep)
			buf[used++] = '\n';
		memcpy(buf + used, m->v[i].text, n + 1);
		used += n;
	}
}

static char *config_msgs_dup(struct config_msgs *m)
{
	size_t len = 1, i;
	char *s;

	if (!m->n)
		return NULL;
	for (i = 0; i < m->n; i++)
		len += strlen(m->v[i].text) + 1;
	s = malloc(len);
	if (s)
		config_msgs_join(m, s, len);
	return s;
}

static void config_msgs_free(struct config_msgs *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		free(m->v[i].text);
	free(m->v);
}

/* A value as it may appear in a message: bounded, control bytes as '?'. */
static const char *config_quote(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < len; i++)
		buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	buf[i] = '\0';
	if (s[i] && i >= 3)
		memcpy(buf + i - 3, "...", 3);
	return buf;
}

static void config_bad_value(struct config_parser *p,
			     const struct config_key *k, const char *value)
{
	char q[CONFIG_QUOTE_MAX];

	config_err(p, p->lineno, "%s: expected %s, got '%s'", k->name,
		   k->expect, config_quote(value, q, sizeof(q)));
}

/* ---- small parsers ----------------------------------------------------- */

static char *config_strdup(struct config_parser *p, const char *s)
{
	char *d = strdup(s);

	if (!d)
		p->oom = true;
	return d;
}

static bool config_is_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

/* A decimal number from min to max, nothing else (no sign, no spaces). */
static int config_parse_uint(const char *s, unsigned long long min,
			     unsigned long long max, unsigned long long *out)
{
	unsigned long long v;
	char *end;

	if (!config_is_digits(s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "on", "true", "1" };
	static const char *const no[] = { "no", "off", "false", "0" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * A duration: "10s", "500ms", "1h30m", "2 min"; a bare number is seconds
 * (as in systemd). Result in milliseconds, at most max_ms.
 */
static int config_parse_duration(const char *s, unsigned long long max_ms,
				 unsigned long long *out)
{
	static const struct {
		const char *unit;
		unsigned long long ms;
	} units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "sec", 1000 }, { "m", 60000 },
		{ "min", 60000 }, { "h", 3600000 }, { "d", 86400000 },
	};
	unsigned long long total = 0, v;
	char *end;
	size_t i, n;

	if (config_is_digits(s)) {
		if (config_parse_uint(s, 0, max_ms / 1000, &v))
			return -EINVAL;
		*out = v * 1000;
		return 0;
	}
	while (*s) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		errno = 0;
		v = strtoull(s, &end, 10);
		if (errno || v > max_ms)
			return -EINVAL;
		s = end;
		while (*s == ' ' || *s == '\t')
			s++;
		for (n = 0; isalpha((unsigned char)s[n]); n++)
			;
		for (i = 0; i < ARRAY_SIZE(units); i++)
			if (strlen(units[i].unit) == n &&
			    !strncmp(s, units[i].unit, n))
				break;
		if (!n || i == ARRAY_SIZE(units))
			return -EINVAL;
		if (v > (max_ms - total) / units[i].ms)
			return -EINVAL;
		total += v * units[i].ms;
		s += n;
		while (*s == ' ' || *s == '\t')
			s++;
	}
	*out = total;
	return 0;
}

/*
 * A DNS name as SNI carries it: labels of letters, digits, '-' and '_'
 * (some internal names have those) of 1 to 63 bytes, no trailing dot; with
 * wildcard, "*." may lead. Lower-cased in place.
 */
static bool config_hostname_ok(char *s, bool wildcard)
{
	size_t label = 0, len = strlen(s);
	char *c = s;

	if (!len || len > KTLSH_CONFIG_HOSTNAME_MAX)
		return false;
	if (wildcard && c[0] == '*' && c[1] == '.')
		c += 2;
	if (!*c)
		return false;
	for (; *c; c++) {
		if (*c == '.') {
			if (!label)
				return false;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_')
			return false;
		*c = tolower((unsigned char)*c);
		if (++label > 63)
			return false;
	}
	return label > 0;
}

/* Next item of a list separated by commas and/or blanks; NULL at the end. */
static char *config_next_item(char **cursor)
{
	char *s = *cursor, *item;

	while (*s == ',' || isspace((unsigned char)*s))
		s++;
	if (!*s)
		return NULL;
	item = s;
	while (*s && *s != ',' && !isspace((unsigned char)*s))
		s++;
	if (*s)
		*s++ = '\0';
	*cursor = s;
	return item;
}

static int config_push(struct config_parser *p, void *arrayp, size_t *n,
		       size_t *cap, size_t size)
{
	void **array = arrayp;
	void *v;
	size_t c;

	if (*n < *cap)
		return 0;
	c = *cap ? *cap * 2 : 4;
	v = reallocarray(*array, c, size);
	if (!v) {
		p->oom = true;
		return -ENOMEM;
	}
	*array = v;
	*cap = c;
	return 0;
}

/* Grow to n + 1 elements, for arrays whose capacity we do not track. */
static int config_push1(struct config_parser *p, void *arrayp, size_t n,
			size_t size)
{
	void **array = arrayp;
	void *v = reallocarray(*array, n + 1, size);

	if (!v) {
		p->oom = true;
		return -ENOMEM;
	}
	*array = v;
	return 0;
}

/* ---- users and groups -------------------------------------------------- */

/*
 * getpwnam_r()/getgrnam_r() with a buffer grown on ERANGE (a group with many
 * members needs more than sysconf suggests). 0, -ENOENT, or another -errno.
 */
static int config_lookup_user(const char *name, bool by_id, uid_t id,
			      uid_t *uid, gid_t *gid)
{
	struct passwd pw, *res = NULL;
	size_t len = 1024;
	char *buf = NULL, *nb;
	int ret;

	for (;;) {
		nb = realloc(buf, len);
		if (!nb) {
			ret = -ENOMEM;
			goto out;
		}
		buf = nb;
		ret = by_id ? getpwuid_r(id, &pw, buf, len, &res) :
			      getpwnam_r(name, &pw, buf, len, &res);
		if (ret != ERANGE || len >= CONFIG_NSS_BUF_MAX)
			break;
		len *= 2;
	}
	if (ret) {
		ret = -ret;
		goto out;
	}
	if (!res) {
		ret = -ENOENT;
		goto out;
	}
	*uid = pw.pw_uid;
	*gid = pw.pw_gid;
out:
	free(buf);
	return ret;
}

static int config_lookup_group(const char *name, gid_t *gid)
{
	struct group gr, *res = NULL;
	size_t len = 1024;
	char *buf = NULL, *nb;
	int ret;

	for (;;) {
		nb = realloc(buf, len);
		if (!nb) {
			ret = -ENOMEM;
			goto out;
		}
		buf = nb;
		ret = getgrnam_r(name, &gr, buf, len, &res);
		if (ret != ERANGE || len >= CONFIG_NSS_BUF_MAX)
			break;
		len *= 2;
	}
	if (ret) {
		ret = -ret;
		goto out;
	}
	if (!res) {
		ret = -ENOENT;
		goto out;
	}
	*gid = gr.gr_gid;
out:
	free(buf);
	return ret;
}

/* ---- files ------------------------------------------------------------- */

/* Relative paths are relative to the config file, not to the daemon's
 * working directory (which is "/" once it runs as a service). */
static char *config_path(struct config_parser *p, const char *value)
{
	char *s;

	if (value[0] == '/')
		return config_strdup(p, value);
	if (asprintf(&s, "%s/%s", p->basedir, value) < 0) {
		p->oom = true;
		return NULL;
	}
	return s;
}

/*
 * Can the daemon read it, as whoever runs the check (root at start, before
 * it drops privileges)? Opening is the honest test; access() would answer
 * for the real uid instead of the effective one.
 */
static void config_check_file(struct config_parser *p, const char *key,
			      const char *path, bool dir, bool secret)
{
	char q[CONFIG_QUOTE_PATH];
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
			(dir ? O_DIRECTORY : 0));
	if (fd < 0) {
		config_err(p, p->lineno, "%s: cannot open '%s': %s", key,
			   config_quote(path, q, sizeof(q)), strerror(errno));
		return;
	}
	if (fstat(fd, &st)) {
		config_err(p, p->lineno, "%s: cannot stat '%s': %s", key,
			   config_quote(path, q, sizeof(q)), strerror(errno));
		goto out;
	}
	if (!dir && !S_ISREG(st.st_mode)) {
		config_err(p, p->lineno, "%s: '%s' is not a regular file", key,
			   config_quote(path, q, sizeof(q)));
		goto out;
	}
	if (secret && (st.st_mode & S_IROTH))
		config_warn(p, p->lineno,
			    "%s: '%s' is readable by every user (mode %04o); a private key should be readable by ktlshd only",
			    key, config_quote(path, q, sizeof(q)),
			    (unsigned int)(st.st_mode & 07777));
out:
	close(fd);
}

static void config_set_file(struct config_parser *p, const struct config_key *k,
			    struct ktlsh_config_str *dst, const char *value,
			    bool dir, bool secret)
{
	char *path;

	if (!*value) {
		config_bad_value(p, k, value);
		return;
	}
	path = config_path(p, value);
	if (!path)
		return;
	config_check_file(p, k->name, path, dir, secret);
	free(dst->str);
	dst->str = path;
	dst->line = p->lineno;
}

/* ---- setters: [global] ------------------------------------------------- */

static void config_set_socket(struct config_parser *p,
			      const struct config_key *k, const char *value)
{
	struct sockaddr_un sun;
	size_t len = strlen(value);
	char *s;

	/* The abstract name goes in sun_path after a NUL, a path with one. */
	if (len < 2 || len >= sizeof(sun.sun_path) ||
	    (value[0] != '/' && value[0] != '@')) {
		config_bad_value(p, k, value);
		return;
	}
	s = config_strdup(p, value);
	if (!s)
		return;
	free(p->cfg->global.socket);
	p->cfg->global.socket = s;
}

static void config_set_workers(struct config_parser *p,
			       const struct config_key *k, const char *value)
{
	unsigned long long v;

	if (!strcmp(value, "auto")) {
		p->cfg->global.workers = 0;
		return;
	}
	if (config_parse_uint(value, 1, KTLSH_CONFIG_MAX_WORKERS, &v)) {
		config_bad_value(p, k, value);
		return;
	}
	p->cfg->global.workers = v;
}

static void config_set_log_level(struct config_parser *p,
				 const struct config_key *k, const char *value)
{
	static const struct {
		const char *name;
		int prio;
	} levels[] = {
		{ "error", LOG_ERR }, { "warning", LOG_WARNING },
		{ "info", LOG_INFO }, { "debug", LOG_DEBUG },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(levels); i++) {
		if (!strcasecmp(value, levels[i].name)) {
			p->cfg->global.log_level = levels[i].prio;
			return;
		}
	}
	config_bad_value(p, k, value);
}

static void config_set_max_inflight(struct config_parser *p,
				    const struct config_key *k,
				    const char *value)
{
	unsigned long long v;

	if (config_parse_uint(value, 1, KTLSH_CONFIG_MAX_INFLIGHT, &v)) {
		config_bad_value(p, k, value);
		return;
	}
	p->cfg->global.max_inflight = v;
}

static void config_set_handshake_timeout(struct config_parser *p,
					 const struct config_key *k,
					 const char *value)
{
	unsigned long long ms;

	if (config_parse_duration(value, 3600000, &ms) || !ms) {
		config_bad_value(p, k, value);
		return;
	}
	p->cfg->global.handshake_timeout_ms = ms;
}

static void config_set_user(struct config_parser *p,
			    const struct config_key *k, const char *value)
{
	char q[CONFIG_QUOTE_MAX];
	unsigned long long id = 0;
	uid_t uid;
	gid_t gid;
	bool by_id;
	char *s;
	int ret;

	if (!*value) {
		config_bad_value(p, k, value);
		return;
	}
	by_id = !config_parse_uint(value, 0, (uid_t)-2, &id);
	ret = config_lookup_user(value, by_id, id, &uid, &gid);
	if (ret == -ENOMEM) {
		p->oom = true;
		return;
	}
	if (ret) {
		config_err(p, p->lineno, "user: unknown user '%s'%s%s",
			   config_quote(value, q, sizeof(q)),
			   ret == -ENOENT ? "" : ": ",
			   ret == -ENOENT ? "" : strerror(-ret));
		return;
	}
	s = config_strdup(p, value);
	if (!s)
		return;
	free(p->cfg->global.user);
	p->cfg->global.user = s;
	p->cfg->global.uid = uid;
	p->cfg->global.gid = gid;
}

static void config_set_ticket_rotation(struct config_parser *p,
				       const struct config_key *k,
				       const char *value)
{
	unsigned long long ms;

	/* RFC 8446 caps a ticket's lifetime at seven days. */
	if (config_parse_duration(value, 7ULL * 86400000, &ms) || ms < 1000 ||
	    ms % 1000) {
		config_bad_value(p, k, value);
		return;
	}
	p->cfg->global.ticket_rotation_s = ms / 1000;
}

static void config_set_ticket_key_file(struct config_parser *p,
				       const struct config_key *k,
				       const char *value)
{
	config_set_file(p, k, &p->cfg->global.ticket_key_file, value, false,
			true);
}

/* ---- setters: identities and clients ----------------------------------- */

static struct ktlsh_config_tls *config_tls(struct config_parser *p)
{
	if (p->sec == SEC_SERVICE)
		return &p->service->tls;	/* alpn only */
	return p->sec == SEC_IDENTITY ? &p->identity->tls : &p->client->tls;
}

/*
 * Certificates and keys come in pairs, each "key" right after its "cert",
 * so one section can hold an ECDSA and an RSA chain; the pairing is checked
 * when the section ends (a cert with no key is reported at the cert).
 */
static void config_set_cert(struct config_parser *p,
			    const struct config_key *k, const char *value)
{
	struct ktlsh_config_tls *tls = config_tls(p);
	struct ktlsh_config_certkey *ck;

	/* Until a cert is taken, its key line is not worth a message. */
	p->orphan_key = true;
	if (tls->n_certs == KTLSH_CONFIG_MAX_CERTS) {
		config_err(p, p->lineno,
			   "cert: too many cert/key pairs (at most %d)",
			   KTLSH_CONFIG_MAX_CERTS);
		return;
	}
	ck = &tls->certs[tls->n_certs];
	config_set_file(p, k, &ck->cert, value, false, false);
	if (ck->cert.str) {
		tls->n_certs++;
		p->orphan_key = false;
	}
}

static void config_set_key(struct config_parser *p,
			   const struct config_key *k, const char *value)
{
	struct ktlsh_config_tls *tls = config_tls(p);
	struct ktlsh_config_certkey *ck;

	if (p->orphan_key) {
		p->orphan_key = false;
		return;
	}
	if (!tls->n_certs) {
		config_err(p, p->lineno,
			   "key: no cert before it; write 'cert = PATH' first, then its 'key = PATH'");
		return;
	}
	ck = &tls->certs[tls->n_certs - 1];
	if (ck->key.str) {
		config_err(p, p->lineno,
			   "key: the cert on line %u already has its key (line %u); each key follows its own cert",
			   ck->cert.line, ck->key.line);
		return;
	}
	config_set_file(p, k, &ck->key, value, false, true);
}

static void config_add_server_name(struct config_parser *p, char *name)
{
	struct ktlsh_config_identity *id = p->identity;
	struct ktlsh_config *cfg = p->cfg;
	char *s;

	s = config_strdup(p, name);
	if (!s)
		return;
	if (config_push1(p, &id->server_names, id->n_server_names,
			 sizeof(*id->server_names))) {
		free(s);
		return;
	}
	id->server_names[id->n_server_names++] = s;
	if (config_push(p, &cfg->sni, &cfg->n_sni, &p->n_sni_cap,
			sizeof(*cfg->sni)))
		return;
	cfg->sni[cfg->n_sni].name = s;
	cfg->sni[cfg->n_sni].identity = id;
	cfg->sni[cfg->n_sni].line = p->lineno;
	cfg->n_sni++;
}

/* Parse a list value item by item into a scratch copy. */
#define config_for_each_item(item, copy, cursor)			\
	for (cursor = copy; (item = config_next_item(&cursor)) != NULL;)

static void config_set_server_names(struct config_parser *p,
				    const struct config_key *k,
				    const char *value)
{
	char *copy, *cursor, *item;
	bool any = false;

	copy = config_strdup(p, value);
	if (!copy)
		return;
	config_for_each_item(item, copy, cursor) {
		any = true;
		if (!config_hostname_ok(item, true)) {
			config_bad_value(p, k, item);
			continue;
		}
		config_add_server_name(p, item);
	}
	if (!any)
		config_bad_value(p, k, value);
	free(copy);
}

static void config_set_server_name(struct config_parser *p,
				   const struct config_key *k,
				   const char *value)
{
	unsigned char addr[16];
	char *s;

	s = config_strdup(p, value);
	if (!s)
		return;
	/* A client may expect an IP address (checked against IP SANs, sent
	 * as no SNI) or a DNS name. */
	if (inet_pton(AF_INET, s, addr) != 1 &&
	    inet_pton(AF_INET6, s, addr) != 1 && !config_hostname_ok(s, false)) {
		config_bad_value(p, k, value);
		free(s);
		return;
	}
	if (p->sec == SEC_SERVICE) {
		free(p->service->server_name);
		p->service->server_name = s;
		return;
	}
	free(p->client->server_name);
	p->client->server_name = s;
}

static void config_set_alpn(struct config_parser *p, const struct config_key *k,
			    const char *value)
{
	struct ktlsh_config_tls *tls = config_tls(p);
	char *copy, *cursor, *item, *s;
	unsigned char *wire;
	bool any = false;
	size_t len;

	copy = config_strdup(p, value);
	if (!copy)
		return;
	config_for_each_item(item, copy, cursor) {
		any = true;
		len = strlen(item);
		/* RFC 7301: 1 to 255 bytes each, 2^16 - 1 for the list. */
		if (len > 255 || tls->alpn_wire_len + 1 + len > 65535) {
			config_bad_value(p, k, item);
			continue;
		}
		s = config_strdup(p, item);
		if (!s)
			break;
		if (config_push1(p, &tls->alpn, tls->n_alpn, sizeof(*tls->alpn))) {
			free(s);
			break;
		}
		wire = realloc(tls->alpn_wire, tls->alpn_wire_len + 1 + len);
		if (!wire) {
			p->oom = true;
			free(s);
			break;
		}
		tls->alpn[tls->n_alpn++] = s;
		tls->alpn_wire = wire;
		wire[tls->alpn_wire_len] = len;
		memcpy(wire + tls->alpn_wire_len + 1, item, len);
		tls->alpn_wire_len += 1 + len;
	}
	if (!any)
		config_bad_value(p, k, value);
	free(copy);
}

/* OpenSSL lists: checked by OpenSSL when the daemon builds its contexts
 * (that is why the line is kept); indented lines append with ':'. */
static void config_set_list(struct config_parser *p, const struct config_key *k,
			    struct ktlsh_config_str *dst, const char *value)
{
	const char *c;
	char *s;

	for (c = value; *c; c++) {
		if (!isgraph((unsigned char)*c)) {
			config_bad_value(p, k, value);
			return;
		}
	}
	if (!*value) {
		config_bad_value(p, k, value);
		return;
	}
	if (p->kind == LINE_CONT && dst->str) {
		if (asprintf(&s, "%s:%s", dst->str, value) < 0) {
			p->oom = true;
			return;
		}
	} else {
		s = config_strdup(p, value);
		if (!s)
			return;
		dst->line = p->lineno;
	}
	free(dst->str);
	dst->str = s;
}

static void config_set_openssl_list(struct config_parser *p,
				    const struct config_key *k,
				    const char *value)
{
	struct ktlsh_config_tls *tls = config_tls(p);

	config_set_list(p, k, k == &config_keys[K_CIPHERS] ? &tls->ciphers :
			      k == &config_keys[K_CIPHERSUITES] ? &tls->ciphersuites :
			      &tls->groups, value);
}

static void config_set_min_version(struct config_parser *p,
				   const struct config_key *k,
				   const char *value)
{
	struct ktlsh_config_tls *tls = config_tls(p);

	if (!strcmp(value, "1.2") || !strcasecmp(value, "TLSv1.2"))
		tls->min_version = KTLSH_CONFIG_TLS12;
	else if (!strcmp(value, "1.3") || !strcasecmp(value, "TLSv1.3"))
		tls->min_version = KTLSH_CONFIG_TLS13;
	else
		config_bad_value(p, k, value);
}

static void config_set_tickets(struct config_parser *p,
			       const struct config_key *k, const char *value)
{
	if (config_parse_bool(value, &p->identity->tickets))
		config_bad_value(p, k, value);
}

static void config_set_trusted_peer(struct config_parser *p,
				    const struct config_key *k,
				    const char *value)
{
	if (config_parse_bool(value, &config_tls(p)->trusted_peer))
		config_bad_value(p, k, value);
}

static void config_set_allow(struct config_parser *p,
			     const struct config_key *k, const char *value)
{
	struct ktlsh_config_acl *acl = &config_tls(p)->acl;
	bool gids = k == &config_keys[K_ALLOW_GIDS];
	char *copy, *cursor, *item;
	char q[CONFIG_QUOTE_MAX];
	unsigned long long v;
	bool any = false;
	uid_t uid;
	gid_t gid;
	int ret;

	copy = config_strdup(p, value);
	if (!copy)
		return;
	config_for_each_item(item, copy, cursor) {
		any = true;
		if (!strcmp(item, "*")) {
			acl->any = true;
			continue;
		}
		/* (uid_t)-1 means "no change" to chown() and friends. */
		if (!config_parse_uint(item, 0, (uid_t)-2, &v)) {
			ret = 0;
			uid = v;
			gid = v;
		} else if (gids) {
			ret = config_lookup_group(item, &gid);
		} else {
			ret = config_lookup_user(item, false, 0, &uid, &gid);
		}
		if (ret == -ENOMEM) {
			p->oom = true;
			break;
		}
		if (ret) {
			config_err(p, p->lineno, "%s: unknown %s '%s'%s%s",
				   k->name, gids ? "group" : "user",
				   config_quote(item, q, sizeof(q)),
				   ret == -ENOENT ? "" : ": ",
				   ret == -ENOENT ? "" : strerror(-ret));
			continue;
		}
		if (gids) {
			if (config_push1(p, &acl->gids, acl->n_gids,
					 sizeof(*acl->gids)))
				break;
			acl->gids[acl->n_gids++] = gid;
		} else {
			if (config_push1(p, &acl->uids, acl->n_uids,
					 sizeof(*acl->uids)))
				break;
			acl->uids[acl->n_uids++] = uid;
		}
	}
	if (!any)
		config_bad_value(p, k, value);
	free(copy);
}

static void config_set_verify_client(struct config_parser *p,
				     const struct config_key *k,
				     const char *value)
{
	if (!strcasecmp(value, "none"))
		p->identity->verify_client = KTLSH_CONFIG_VERIFY_NONE;
	else if (!strcasecmp(value, "optional"))
		p->identity->verify_client = KTLSH_CONFIG_VERIFY_OPTIONAL;
	else if (!strcasecmp(value, "required"))
		p->identity->verify_client = KTLSH_CONFIG_VERIFY_REQUIRED;
	else
		config_bad_value(p, k, value);
}

static void config_set_verify(struct config_parser *p,
			      const struct config_key *k, const char *value)
{
	/* Turning verification off must be spelled out: "no", "off" or a
	 * typo must not silently do it. */
	if (!strcasecmp(value, "yes"))
		p->client->insecure = false;
	else if (!strcmp(value, "insecure"))
		p->client->insecure = true;
	else
		config_bad_value(p, k, value);
}

static void config_set_ca_file(struct config_parser *p,
			       const struct config_key *k, const char *value)
{
	config_set_file(p, k, &config_tls(p)->ca_file, value, false, false);
}

static void config_set_ca_dir(struct config_parser *p,
			      const struct config_key *k, const char *value)
{
	config_set_file(p, k, &config_tls(p)->ca_dir, value, true, false);
}

static void config_set_crl_file(struct config_parser *p,
				const struct config_key *k, const char *value)
{
	config_set_file(p, k, &config_tls(p)->crl_file, value, false, false);
}

/* ---- setters: services ------------------------------------------------ */

static bool config_name_ok(const char *s);

/*
 * "ADDR:PORT": ADDR an IPv4 address, an IPv6 address in brackets, or a host
 * name (resolved now; the first address is used); a listen address may also
 * be "*" (every IPv4 address). The port is a number.
 */
static void config_set_addr(struct config_parser *p, const struct config_key *k,
			    const char *value, struct ktlsh_config_addr *dst,
			    bool passive)
{
	struct addrinfo hints = {
		.ai_socktype = SOCK_STREAM,
		.ai_protocol = IPPROTO_TCP,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	struct addrinfo *res = NULL;
	char host[KTLSH_CONFIG_HOSTNAME_MAX + 1], q[CONFIG_QUOTE_MAX];
	const char *h, *port, *rb;
	unsigned long long v;
	size_t hlen;
	int ret;

	if (value[0] == '[') {
		rb = strchr(value, ']');
		if (!rb || rb[1] != ':')
			goto bad;
		h = value + 1;
		hlen = rb - h;
		port = rb + 2;
	} else {
		port = strrchr(value, ':');
		if (!port)
			goto bad;
		h = value;
		hlen = port - value;
		port++;
		if (memchr(h, ':', hlen)) {
			config_err(p, p->lineno,
				   "%s: write an IPv6 address in brackets, like [::1]:443; got '%s'",
				   k->name, config_quote(value, q, sizeof(q)));
			return;
		}
	}
	if (hlen >= sizeof(host) || config_parse_uint(port, 1, 65535, &v))
		goto bad;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (value[0] == '[')
		hints.ai_flags |= AI_NUMERICHOST;	/* brackets hold an address */
	if (!strcmp(host, "*")) {
		if (!passive)
			goto bad;
		strcpy(host, "0.0.0.0");
	}
	if (!host[0])
		goto bad;
	ret = getaddrinfo(host, port, &hints, &res);
	if (ret == EAI_MEMORY) {
		p->oom = true;
		return;
	}
	if (ret || !res || res->ai_addrlen > sizeof(dst->ss)) {
		config_err(p, p->lineno, "%s: cannot resolve '%s': %s", k->name,
			   config_quote(host, q, sizeof(q)),
			   ret ? gai_strerror(ret) : "no address");
		if (res)
			freeaddrinfo(res);
		return;
	}
	free(dst->host);
	free(dst->text);
	memset(&dst->ss, 0, sizeof(dst->ss));
	memcpy(&dst->ss, res->ai_addr, res->ai_addrlen);
	dst->len = res->ai_addrlen;
	dst->line = p->lineno;
	dst->host = config_strdup(p, host);
	dst->text = config_strdup(p, value);
	freeaddrinfo(res);
	return;
bad:
	config_bad_value(p, k, value);
}

static void config_set_mode(struct config_parser *p, const struct config_key *k,
			    const char *value)
{
	if (!strcmp(value, "terminate"))
		p->service->mode = KTLSH_SERVICE_TERMINATE;
	else if (!strcmp(value, "originate"))
		p->service->mode = KTLSH_SERVICE_ORIGINATE;
	else
		config_bad_value(p, k, value);
}

static void config_set_listen(struct config_parser *p, const struct config_key *k,
			      const char *value)
{
	config_set_addr(p, k, value, &p->service->listen, true);
}

static void config_set_target(struct config_parser *p, const struct config_key *k,
			      const char *value)
{
	config_set_addr(p, k, value, &p->service->target, false);
}

/* identity = NAME, client = NAME: resolved once the whole file is read. */
static void config_set_section_ref(struct config_parser *p,
				   const struct config_key *k, const char *value)
{
	struct ktlsh_config_str *dst = k == &config_keys[K_IDENTITY] ?
				       &p->service->identity_name :
				       &p->service->client_name;
	char *s;

	if (!config_name_ok(value)) {
		config_bad_value(p, k, value);
		return;
	}
	s = config_strdup(p, value);
	if (!s)
		return;
	free(dst->str);
	dst->str = s;
	dst->line = p->lineno;
}

static void config_set_proxy_protocol(struct config_parser *p,
				      const struct config_key *k,
				      const char *value)
{
	if (!strcasecmp(value, "v2"))
		p->service->proxy_protocol = true;
	else if (!strcasecmp(value, "off") || !strcasecmp(value, "no"))
		p->service->proxy_protocol = false;
	else
		config_bad_value(p, k, value);
}

static void config_set_max_connections(struct config_parser *p,
				       const struct config_key *k,
				       const char *value)
{
	unsigned long long v;

	if (config_parse_uint(value, 1, KTLSH_CONFIG_MAX_CONNECTIONS, &v)) {
		config_bad_value(p, k, value);
		return;
	}
	p->service->max_connections = v;
}

static void config_set_idle_timeout(struct config_parser *p,
				    const struct config_key *k,
				    const char *value)
{
	unsigned long long ms;

	if (!strcasecmp(value, "off") || !strcasecmp(value, "never")) {
		p->service->idle_timeout_ms = 0;
		return;
	}
	/* Checked once a second: anything finer would be a promise not kept. */
	if (config_parse_duration(value, 7ULL * 86400000, &ms) || (ms && ms < 1000)) {
		config_bad_value(p, k, value);
		return;
	}
	p->service->idle_timeout_ms = ms;
}

static void config_set_fallback(struct config_parser *p,
				const struct config_key *k, const char *value)
{
	if (!strcmp(value, "userspace"))
		p->service->fallback = KTLSH_FALLBACK_USERSPACE;
	else if (!strcmp(value, "refuse"))
		p->service->fallback = KTLSH_FALLBACK_REFUSE;
	else
		config_bad_value(p, k, value);
}

static void config_set_data_path(struct config_parser *p,
				 const struct config_key *k, const char *value)
{
	if (!strcmp(value, "auto"))
		p->service->data_path = KTLSH_DATA_AUTO;
	else if (!strcmp(value, "copy"))
		p->service->data_path = KTLSH_DATA_COPY;
	else if (!strcmp(value, "splice"))
		p->service->data_path = KTLSH_DATA_SPLICE;
	else
		config_bad_value(p, k, value);
}

static const struct config_key config_keys[K_COUNT] = {
	[K_SOCKET] = { "socket", IN_GLOBAL, 0,
		"an absolute path or @abstract-name, at most 107 bytes",
		config_set_socket },
	[K_WORKERS] = { "workers", IN_GLOBAL, 0,
		"'auto' or a number from 1 to 1024", config_set_workers },
	[K_LOG_LEVEL] = { "log_level", IN_GLOBAL, 0,
		"error, warning, info or debug", config_set_log_level },
	[K_MAX_INFLIGHT] = { "max_inflight", IN_GLOBAL, 0,
		"a number from 1 to 1048576", config_set_max_inflight },
	[K_HANDSHAKE_TIMEOUT] = { "handshake_timeout", IN_GLOBAL, 0,
		"a duration from 1ms to 1h, like 10s or 500ms",
		config_set_handshake_timeout },
	[K_USER] = { "user", IN_GLOBAL, 0, "a user name", config_set_user },
	[K_TICKET_ROTATION] = { "ticket_rotation", IN_GLOBAL, 0,
		"a duration in whole seconds from 1s to 7d, like 1h",
		config_set_ticket_rotation },
	[K_TICKET_KEY_FILE] = { "ticket_key_file", IN_GLOBAL, 0, "a path",
		config_set_ticket_key_file },
	[K_CERT] = { "cert", IN_TLS, KEY_REPEAT, "a path", config_set_cert },
	[K_KEY] = { "key", IN_TLS, KEY_REPEAT, "a path", config_set_key },
	[K_SERVER_NAMES] = { "server_names", IN_IDENTITY, KEY_REPEAT | KEY_CONT,
		"host names or *.domain wildcards without a trailing dot",
		config_set_server_names },
	[K_SERVER_NAME] = { "server_name", IN_CLIENT | IN_SERVICE, 0,
		"a host name or IP address", config_set_server_name },
	[K_ALPN] = { "alpn", IN_TLS | IN_SERVICE, KEY_REPEAT | KEY_CONT,
		"protocol names of 1 to 255 bytes, like h2, http/1.1",
		config_set_alpn },
	[K_CIPHERS] = { "ciphers", IN_TLS, KEY_CONT,
		"an OpenSSL cipher list", config_set_openssl_list },
	[K_CIPHERSUITES] = { "ciphersuites", IN_TLS, KEY_CONT,
		"an OpenSSL TLS 1.3 ciphersuite list", config_set_openssl_list },
	[K_GROUPS] = { "groups", IN_TLS, KEY_CONT,
		"an OpenSSL group list, like X25519:P-256",
		config_set_openssl_list },
	[K_MIN_VERSION] = { "min_version", IN_TLS, 0, "1.2 or 1.3",
		config_set_min_version },
	[K_TICKETS] = { "tickets", IN_IDENTITY, 0, "on or off",
		config_set_tickets },
	[K_TRUSTED_PEER] = { "trusted_peer", IN_TLS, 0, "yes or no",
		config_set_trusted_peer },
	[K_ALLOW_UIDS] = { "allow_uids", IN_TLS, KEY_REPEAT | KEY_CONT,
		"user names, uids or *", config_set_allow },
	[K_ALLOW_GIDS] = { "allow_gids", IN_TLS, KEY_REPEAT | KEY_CONT,
		"group names, gids or *", config_set_allow },
	[K_VERIFY_CLIENT] = { "verify_client", IN_IDENTITY, 0,
		"none, optional or required", config_set_verify_client },
	[K_VERIFY] = { "verify", IN_CLIENT, 0, "yes or insecure",
		config_set_verify },
	[K_CA_FILE] = { "ca_file", IN_TLS, 0, "a path", config_set_ca_file },
	[K_CA_DIR] = { "ca_dir", IN_TLS, 0, "a path", config_set_ca_dir },
	[K_CRL_FILE] = { "crl_file", IN_TLS, 0, "a path",
		config_set_crl_file },
	[K_MODE] = { "mode", IN_SERVICE, 0, "terminate or originate",
		config_set_mode },
	[K_LISTEN] = { "listen", IN_SERVICE, 0,
		"ADDR:PORT, like 0.0.0.0:443, [::1]:8443 or *:443",
		config_set_listen },
	[K_BACKEND] = { "backend", IN_SERVICE, 0,
		"ADDR:PORT or HOST:PORT, like 127.0.0.1:8080",
		config_set_target },
	[K_CONNECT] = { "connect", IN_SERVICE, 0,
		"HOST:PORT or ADDR:PORT, like example.com:443",
		config_set_target },
	[K_IDENTITY] = { "identity", IN_SERVICE, 0,
		"the name of an [identity NAME] section", config_set_section_ref },
	[K_CLIENT_PROFILE] = { "client", IN_SERVICE, 0,
		"the name of a [client NAME] section", config_set_section_ref },
	[K_PROXY_PROTOCOL] = { "proxy_protocol", IN_SERVICE, 0, "v2 or off",
		config_set_proxy_protocol },
	[K_MAX_CONNECTIONS] = { "max_connections", IN_SERVICE, 0,
		"a number from 1 to 1048576", config_set_max_connections },
	[K_IDLE_TIMEOUT] = { "idle_timeout", IN_SERVICE, 0,
		"off or a duration from 1s to 7d, like 5min",
		config_set_idle_timeout },
	[K_FALLBACK] = { "fallback", IN_SERVICE, 0, "userspace or refuse",
		config_set_fallback },
	[K_DATA_PATH] = { "data_path", IN_SERVICE, 0, "auto, copy or splice",
		config_set_data_path },
};

/* ---- [handshake]: the kernel's handshake upcall ----------------------- */

/*
 * The section has a key table of its own: its keys name the role they are
 * for (client_cert, server_ca_file, ...), as tlshd.conf's
 * [authenticate.client] and [authenticate.server] subsections do, so the
 * shared [identity]/[client] keys would only mislead here.
 */
#define CONFIG_HS_KEYRINGS_MAX	16
#define CONFIG_HS_KEYRING_LEN	255

static int config_key_find(const char *name);

static struct ktlsh_config_hs_role *config_hs_role(struct config_parser *p,
						   const struct config_key *k)
{
	return !strncmp(k->name, "client_", 7) ? &p->cfg->handshake.client :
						 &p->cfg->handshake.server;
}

static void config_hs_set_enabled(struct config_parser *p,
				  const struct config_key *k, const char *value)
{
	if (config_parse_bool(value, &p->cfg->handshake.enabled))
		config_bad_value(p, k, value);
}

/* A serial as keyctl(1) prints it: decimal, or hex with 0x; 0 if not one. */
static long config_hs_keyring_serial(const char *s)
{
	unsigned long long v;
	char *end;

	if (!isdigit((unsigned char)s[0]))
		return 0;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || !v || v > INT32_MAX)
		return -1;
	return (long)v;
}

/* keyrings = .nvme .nfs 0x1c8b2e7e: names as /proc/keys shows them, or
 * serials; ';' separates too, as in tlshd.conf. */
static void config_hs_set_keyrings(struct config_parser *p,
				   const struct config_key *k, const char *value)
{
	struct ktlsh_config_handshake *hs = &p->cfg->handshake;
	char *copy, *cursor, *item, *c, *s;
	bool any = false;
	size_t i;

	copy = config_strdup(p, value);
	if (!copy)
		return;
	for (c = copy; *c; c++)
		if (*c == ';')
			*c = ' ';
	config_for_each_item(item, copy, cursor) {
		any = true;
		for (c = item; *c && isgraph((unsigned char)*c); c++)
			;
		if (*c || strlen(item) > CONFIG_HS_KEYRING_LEN ||
		    config_hs_keyring_serial(item) < 0) {
			config_bad_value(p, k, item);
			continue;
		}
		for (i = 0; i < hs->n_keyrings; i++)
			if (!strcmp(hs->keyrings[i], item))
				break;
		if (i < hs->n_keyrings) {
			config_warn(p, p->lineno, "keyrings: '%s' is listed twice", item);
			continue;
		}
		if (hs->n_keyrings == CONFIG_HS_KEYRINGS_MAX) {
			config_err(p, p->lineno, "keyrings: more than %d keyrings",
				   CONFIG_HS_KEYRINGS_MAX);
			break;
		}
		s = config_strdup(p, item);
		if (!s)
			break;
		if (config_push1(p, &hs->keyrings, hs->n_keyrings, sizeof(*hs->keyrings))) {
			free(s);
			break;
		}
		hs->keyrings[hs->n_keyrings++] = s;
	}
	if (!any)
		config_bad_value(p, k, value);
	free(copy);
}

static void config_hs_set_timeout(struct config_parser *p,
				  const struct config_key *k, const char *value)
{
	unsigned long long ms;

	if (config_parse_duration(value, 3600000, &ms) || !ms) {
		config_bad_value(p, k, value);
		return;
	}
	p->cfg->handshake.timeout_ms = ms;
}

static void config_hs_set_verify_client(struct config_parser *p,
					const struct config_key *k,
					const char *value)
{
	struct ktlsh_config_handshake *hs = &p->cfg->handshake;

	if (!strcasecmp(value, "none"))
		hs->verify_client = KTLSH_CONFIG_VERIFY_NONE;
	else if (!strcasecmp(value, "optional"))
		hs->verify_client = KTLSH_CONFIG_VERIFY_OPTIONAL;
	else if (!strcasecmp(value, "required"))
		hs->verify_client = KTLSH_CONFIG_VERIFY_REQUIRED;
	else
		config_bad_value(p, k, value);
}

/* ciphersuites, groups: checked by OpenSSL when the daemon builds the
 * upcall's contexts; indented lines append with ':'. */
static void config_hs_set_list(struct config_parser *p,
			       const struct config_key *k, const char *value)
{
	config_set_list(p, k, !strcmp(k->name, "groups") ? &p->cfg->handshake.groups :
			      &p->cfg->handshake.ciphersuites, value);
}

static void config_hs_set_cert(struct config_parser *p,
			       const struct config_key *k, const char *value)
{
	config_set_file(p, k, &config_hs_role(p, k)->certkey.cert, value, false, false);
}

static void config_hs_set_key(struct config_parser *p,
			      const struct config_key *k, const char *value)
{
	config_set_file(p, k, &config_hs_role(p, k)->certkey.key, value, false, true);
}

static void config_hs_set_ca_file(struct config_parser *p,
				  const struct config_key *k, const char *value)
{
	config_set_file(p, k, &config_hs_role(p, k)->ca_file, value, false, false);
}

static void config_hs_set_ca_dir(struct config_parser *p,
				 const struct config_key *k, const char *value)
{
	config_set_file(p, k, &config_hs_role(p, k)->ca_dir, value, true, false);
}

static void config_hs_set_crl_file(struct config_parser *p,
				   const struct config_key *k, const char *value)
{
	config_set_file(p, k, &config_hs_role(p, k)->crl_file, value, false, false);
}

static const struct config_key config_hs_keys[HK_COUNT] = {
	[HK_ENABLED] = { "enabled", 0, 0, "yes or no", config_hs_set_enabled },
	[HK_KEYRINGS] = { "keyrings", 0, KEY_REPEAT | KEY_CONT,
		"keyring names or serials, like .nvme or 0x1c8b2e7e",
		config_hs_set_keyrings },
	[HK_TIMEOUT] = { "timeout", 0, 0, "a duration from 1ms to 1h, like 10s",
		config_hs_set_timeout },
	[HK_VERIFY_CLIENT] = { "verify_client", 0, 0, "none, optional or required",
		config_hs_set_verify_client },
	[HK_CIPHERSUITES] = { "ciphersuites", 0, KEY_CONT,
		"an OpenSSL TLS 1.3 ciphersuite list", config_hs_set_list },
	[HK_GROUPS] = { "groups", 0, KEY_CONT,
		"an OpenSSL group list, like X25519:P-256", config_hs_set_list },
	[HK_CLIENT_CERT] = { "client_cert", 0, 0, "a path", config_hs_set_cert },
	[HK_CLIENT_KEY] = { "client_key", 0, 0, "a path", config_hs_set_key },
	[HK_CLIENT_CA_FILE] = { "client_ca_file", 0, 0, "a path", config_hs_set_ca_file },
	[HK_CLIENT_CA_DIR] = { "client_ca_dir", 0, 0, "a path", config_hs_set_ca_dir },
	[HK_CLIENT_CRL_FILE] = { "client_crl_file", 0, 0, "a path", config_hs_set_crl_file },
	[HK_SERVER_CERT] = { "server_cert", 0, 0, "a path", config_hs_set_cert },
	[HK_SERVER_KEY] = { "server_key", 0, 0, "a path", config_hs_set_key },
	[HK_SERVER_CA_FILE] = { "server_ca_file", 0, 0, "a path", config_hs_set_ca_file },
	[HK_SERVER_CA_DIR] = { "server_ca_dir", 0, 0, "a path", config_hs_set_ca_dir },
	[HK_SERVER_CRL_FILE] = { "server_crl_file", 0, 0, "a path", config_hs_set_crl_file },
};

/* "[handshake]": at most one, without a name. */
static void config_hs_new(struct config_parser *p, const char *name)
{
	struct ktlsh_config_handshake *hs = &p->cfg->handshake;

	if (name) {
		config_err(p, p->lineno, "[handshake] takes no name");
		return;
	}
	if (hs->line) {
		config_err(p, p->lineno, "duplicate section [handshake] (first at line %u)",
			   hs->line);
		return;
	}
	hs->line = p->lineno;
	hs->enabled = true;
	hs->verify_client = KTLSH_CONFIG_VERIFY_OPTIONAL;
	memset(p->hs_seen, 0, sizeof(p->hs_seen));
	p->hs_cont = 0;
	p->sec = SEC_HANDSHAKE;
}

/* A key line or a continuation line inside [handshake]. */
static void config_hs_handle(struct config_parser *p, const char *name,
			     const char *value)
{
	const struct config_key *k;
	char q[CONFIG_QUOTE_MAX];
	int id;

	if (p->kind == LINE_CONT) {
		if (!p->hs_cont)
			return;		/* its key line was refused */
		k = &config_hs_keys[p->hs_cont - 1];
		if (!(k->flags & KEY_CONT))
			config_err(p, p->lineno,
				   "indented line continues '%s', which takes one value; remove the indentation",
				   k->name);
		else if (value[0] == '[' || strchr(value, '='))
			config_err(p, p->lineno,
				   "indented line continues '%s'; remove the indentation to start a new key or section",
				   k->name);
		else
			k->set(p, k, value);
		return;
	}
	p->hs_cont = 0;
	if (!*name) {
		config_err(p, p->lineno, "no key name before '='");
		return;
	}
	for (id = 0; id < HK_COUNT; id++)
		if (!strcmp(config_hs_keys[id].name, name))
			break;
	if (id == HK_COUNT) {
		if (config_key_find(name) >= 0)
			config_err(p, p->lineno,
				   "'%s' is not valid in [handshake]; keys there name the role, like client_cert, server_cert, client_ca_file, server_ca_file",
				   name);
		else
			config_err(p, p->lineno, "unknown key '%s' in [handshake]",
				   config_quote(name, q, sizeof(q)));
		return;
	}
	k = &config_hs_keys[id];
	if (p->hs_seen[id] && !(k->flags & KEY_REPEAT)) {
		config_err(p, p->lineno, "duplicate key '%s' (first set at line %u)",
			   k->name, p->hs_seen[id]);
		return;
	}
	if (!p->hs_seen[id])
		p->hs_seen[id] = p->lineno;
	p->hs_cont = id + 1;
	k->set(p, k, value);
}

static void config_hs_check_pair(struct config_parser *p, int cert, int key)
{
	if (p->hs_seen[cert] && !p->hs_seen[key])
		config_err(p, p->hs_seen[cert], "%s: has no %s; add '%s = PATH'",
			   config_hs_keys[cert].name, config_hs_keys[key].name,
			   config_hs_keys[key].name);
	else if (p->hs_seen[key] && !p->hs_seen[cert])
		config_err(p, p->hs_seen[key], "%s: has no %s; add '%s = PATH'",
			   config_hs_keys[key].name, config_hs_keys[cert].name,
			   config_hs_keys[cert].name);
}

/* Checks that need the whole section, run when the next one starts. */
static void config_hs_finish(struct config_parser *p)
{
	const struct ktlsh_config_handshake *hs = &p->cfg->handshake;
	static const int server_trust[] = {
		HK_SERVER_CA_FILE, HK_SERVER_CA_DIR, HK_SERVER_CRL_FILE,
	};
	size_t i;

	config_hs_check_pair(p, HK_CLIENT_CERT, HK_CLIENT_KEY);
	config_hs_check_pair(p, HK_SERVER_CERT, HK_SERVER_KEY);
	if (hs->verify_client == KTLSH_CONFIG_VERIFY_NONE) {
		for (i = 0; i < ARRAY_SIZE(server_trust); i++)
			if (p->hs_seen[server_trust[i]])
				config_warn(p, p->hs_seen[server_trust[i]],
					    "%s: has no effect with verify_client = none",
					    config_hs_keys[server_trust[i]].name);
	}
	if (hs->enabled && !p->hs_seen[HK_SERVER_CERT])
		config_warn(p, hs->line,
			    "[handshake] has no server_cert: server-side handshakes (nfsd with TLS) work only when the kernel names a certificate in a keyring");
	p->hs_cont = 0;
}

static void config_hs_free(struct ktlsh_config_handshake *hs)
{
	struct ktlsh_config_hs_role *roles[] = { &hs->client, &hs->server };
	size_t i;

	for (i = 0; i < hs->n_keyrings; i++)
		free(hs->keyrings[i]);
	free(hs->keyrings);
	free(hs->ciphersuites.str);
	free(hs->groups.str);
	for (i = 0; i < ARRAY_SIZE(roles); i++) {
		free(roles[i]->certkey.cert.str);
		free(roles[i]->certkey.key.str);
		free(roles[i]->ca_file.str);
		free(roles[i]->ca_dir.str);
		free(roles[i]->crl_file.str);
	}
}

/* ---- sections ---------------------------------------------------------- */

static void config_tls_init(struct ktlsh_config_tls *tls)
{
	tls->min_version = KTLSH_CONFIG_TLS12;
}

static void config_check_pairs(struct config_parser *p,
			       const struct ktlsh_config_tls *tls)
{
	char q[CONFIG_QUOTE_PATH];
	size_t i;

	for (i = 0; i < tls->n_certs; i++)
		if (!tls->certs[i].key.str)
			config_err(p, tls->certs[i].cert.line,
				   "cert: '%s' has no key; add 'key = PATH' on the line after it",
				   config_quote(tls->certs[i].cert.str, q,
						sizeof(q)));
}

/* A key that the other mode has, reported where it was set. */
static void config_service_wrong_mode(struct config_parser *p, int key,
				      const char *mode, const char *hint)
{
	if (p->seen[key])
		config_err(p, p->seen[key], "%s: not valid with mode = %s%s",
			   config_keys[key].name, mode, hint);
}

static void config_finish_service(struct config_parser *p)
{
	struct ktlsh_config_service *sv = p->service;
	const struct ktlsh_config_service *o;
	size_t i;

	if (!sv->mode && !p->seen[K_MODE])
		config_err(p, p->sec_line,
			   "[service %s] has no mode; add 'mode = terminate' or 'mode = originate'",
			   sv->name);
	if (!sv->listen.len && !p->seen[K_LISTEN])
		config_err(p, p->sec_line,
			   "[service %s] has no listen address; add 'listen = ADDR:PORT'",
			   sv->name);
	if (sv->mode == KTLSH_SERVICE_TERMINATE) {
		if (!sv->target.len && !p->seen[K_BACKEND])
			config_err(p, p->sec_line,
				   "[service %s] (terminate) has no backend; add 'backend = ADDR:PORT'",
				   sv->name);
		config_service_wrong_mode(p, K_CONNECT, "terminate",
					  "; the plaintext side is 'backend'");
		config_service_wrong_mode(p, K_CLIENT_PROFILE, "terminate",
					  "; a terminating service presents an 'identity'");
		config_service_wrong_mode(p, K_SERVER_NAME, "terminate",
					  "; server names belong to the [identity]");
	} else if (sv->mode == KTLSH_SERVICE_ORIGINATE) {
		if (!sv->target.len && !p->seen[K_CONNECT])
			config_err(p, p->sec_line,
				   "[service %s] (originate) has no remote address; add 'connect = HOST:PORT'",
				   sv->name);
		config_service_wrong_mode(p, K_BACKEND, "originate",
					  "; the TLS side is 'connect'");
		config_service_wrong_mode(p, K_IDENTITY, "originate",
					  "; an originating service uses a 'client' profile");
		if (sv->proxy_protocol)
			config_service_wrong_mode(p, K_PROXY_PROTOCOL, "originate", "");
	}
	/* Two services cannot share a listening socket. */
	for (i = 0; sv->listen.len && i + 1 < p->cfg->n_services; i++) {
		o = p->cfg->services[i];
		if (o->listen.len == sv->listen.len &&
		    !memcmp(&o->listen.ss, &sv->listen.ss, sv->listen.len)) {
			config_err(p, sv->listen.line,
				   "listen: %s is already the address of [service %s] at line %u",
				   sv->listen.text, o->name, o->listen.line);
			break;
		}
	}
}

/* Checks that need the whole section, run when the next one starts. */
static void config_finish_section(struct config_parser *p)
{
	struct ktlsh_config_identity *id = p->identity;
	struct ktlsh_config_client *cl = p->client;
	const unsigned int trust_keys[] = { K_CA_FILE, K_CA_DIR, K_CRL_FILE };
	bool has_ca;
	size_t i;

	switch (p->sec) {
	case SEC_IDENTITY:
		if (!id->tls.n_certs && !p->seen[K_CERT])
			config_err(p, p->sec_line,
				   "[identity %s] has no cert; add 'cert = PATH' and 'key = PATH'",
				   id->name);
		config_check_pairs(p, &id->tls);
		has_ca = id->tls.ca_file.str || id->tls.ca_dir.str;
		if (id->verify_client != KTLSH_CONFIG_VERIFY_NONE && !has_ca &&
		    !p->seen[K_CA_FILE] && !p->seen[K_CA_DIR])
			config_err(p, p->seen[K_VERIFY_CLIENT],
				   "verify_client: checking client certificates needs ca_file or ca_dir in [identity %s]",
				   id->name);
		if (id->verify_client == KTLSH_CONFIG_VERIFY_NONE) {
			for (i = 0; i < ARRAY_SIZE(trust_keys); i++)
				if (p->seen[trust_keys[i]])
					config_warn(p, p->seen[trust_keys[i]],
						    "%s: has no effect unless verify_client is optional or required",
						    config_keys[trust_keys[i]].name);
		}
		break;
	case SEC_HANDSHAKE:
		config_hs_finish(p);
		break;
	case SEC_CLIENT:
		config_check_pairs(p, &cl->tls);
		if (cl->insecure) {
			for (i = 0; i < ARRAY_SIZE(trust_keys); i++)
				if (p->seen[trust_keys[i]])
					config_warn(p, p->seen[trust_keys[i]],
						    "%s: has no effect with verify = insecure",
						    config_keys[trust_keys[i]].name);
		}
		break;
	case SEC_SERVICE:
		config_finish_service(p);
		break;
	default:
		break;
	}
	p->sec = SEC_NONE;
	p->identity = NULL;
	p->client = NULL;
	p->service = NULL;
	p->cont_key = -1;
}

static bool config_name_ok(const char *s)
{
	size_t n;

	for (n = 0; s[n]; n++)
		if (!isalnum((unsigned char)s[n]) && !strchr("._-", s[n]))
			return false;
	return n > 0 && n <= KTLSH_CONFIG_NAME_MAX;
}

/*
 * Open section [KIND NAME]: a zeroed object of size bytes, its pointer
 * appended to the array at arrayp (count *n, capacity *cap), and a copy of
 * name in *name_out. NULL when the name is taken (dup_line: where it was
 * first; an error is recorded) or memory ran out.
 */
static void *config_new_named(struct config_parser *p, const char *kind, const char *name,
			      unsigned dup_line, void *arrayp, size_t *n, size_t *cap, size_t size,
			      char **name_out)
{
	void ***array = arrayp;
	void *obj;

	if (dup_line) {
		config_err(p, p->lineno, "duplicate section [%s %s] (first at line %u)", kind, name,
			   dup_line);
		return NULL;
	}
	if (config_push(p, arrayp, n, cap, sizeof(void *)))
		return NULL;
	obj = calloc(1, size);
	if (!obj) {
		p->oom = true;
		return NULL;
	}
	*name_out = config_strdup(p, name);
	if (!*name_out) {
		free(obj);
		return NULL;
	}
	(*array)[(*n)++] = obj;
	return obj;
}

static void config_new_identity(struct config_parser *p, const char *name)
{
	struct ktlsh_config *cfg = p->cfg;
	const struct ktlsh_config_identity *old = ktlsh_config_identity(cfg, name);
	struct ktlsh_config_identity *id;
	char *dup;

	id = config_new_named(p, "identity", name, old ? old->line : 0, &cfg->identities,
			      &cfg->n_identities, &p->n_identities_cap, sizeof(*id), &dup);
	if (!id)
		return;
	id->name = dup;
	id->line = p->lineno;
	id->tickets = true;
	config_tls_init(&id->tls);
	p->identity = id;
	p->sec = SEC_IDENTITY;
}

static void config_new_client(struct config_parser *p, const char *name)
{
	struct ktlsh_config *cfg = p->cfg;
	const struct ktlsh_config_client *old = ktlsh_config_client(cfg, name);
	struct ktlsh_config_client *cl;
	char *dup;

	cl = config_new_named(p, "client", name, old ? old->line : 0, &cfg->clients,
			      &cfg->n_clients, &p->n_clients_cap, sizeof(*cl), &dup);
	if (!cl)
		return;
	cl->name = dup;
	cl->line = p->lineno;
	config_tls_init(&cl->tls);
	p->client = cl;
	p->sec = SEC_CLIENT;
}

static void config_new_service(struct config_parser *p, const char *name)
{
	struct ktlsh_config *cfg = p->cfg;
	const struct ktlsh_config_service *old = ktlsh_config_service(cfg, name);
	struct ktlsh_config_service *sv;
	char *dup;

	sv = config_new_named(p, "service", name, old ? old->line : 0, &cfg->services,
			      &cfg->n_services, &p->n_services_cap, sizeof(*sv), &dup);
	if (!sv)
		return;
	sv->name = dup;
	sv->line = p->lineno;
	sv->max_connections = KTLSH_CONFIG_DEFAULT_MAX_CONNECTIONS;
	sv->idle_timeout_ms = KTLSH_CONFIG_DEFAULT_IDLE_TIMEOUT_MS;
	config_tls_init(&sv->tls);
	p->service = sv;
	p->sec = SEC_SERVICE;
}

/* A "[...]" header: text is what lies between the brackets. */
static void config_section(struct config_parser *p, const char *text,
			   size_t len)
{
	char raw[CONFIG_INI_SECTION_MAX + 1], q[CONFIG_QUOTE_MAX];
	char hdr[CONFIG_QUOTE_MAX];
	char *type, *name, *rest, *end;

	config_finish_section(p);
	/* Mirror inih's copy (cut at 49 bytes) for the handler's check. */
	snprintf(p->section, sizeof(p->section), "%.*s", (int)len, text);
	p->sec = SEC_SKIP;
	p->sec_line = p->lineno;
	p->cont_key = -1;
	p->orphan_key = false;
	memset(p->seen, 0, sizeof(p->seen));

	if (len > CONFIG_INI_SECTION_MAX) {
		config_err(p, p->lineno,
			   "section header is longer than %d characters",
			   CONFIG_INI_SECTION_MAX);
		return;
	}
	memcpy(raw, text, len);
	raw[len] = '\0';
	/* "[ identity  web ]": a type word, then the rest as the name. */
	type = raw;
	while (isspace((unsigned char)*type))
		type++;
	end = type + strlen(type);
	while (end > type && isspace((unsigned char)end[-1]))
		*--end = '\0';
	config_quote(type, hdr, sizeof(hdr));
	rest = type;
	while (*rest && !isspace((unsigned char)*rest))
		rest++;
	if (*rest)
		*rest++ = '\0';
	while (isspace((unsigned char)*rest))
		rest++;
	name = *rest ? rest : NULL;

	if (!strcmp(type, "global")) {
		if (name) {
			config_err(p, p->lineno, "[global] takes no name");
		} else if (p->global_line) {
			config_err(p, p->lineno,
				   "duplicate section [global] (first at line %u)",
				   p->global_line);
		} else {
			p->global_line = p->lineno;
			p->sec = SEC_GLOBAL;
		}
		return;
	}
	if (!strcmp(type, "service")) {
		if (!name)
			config_err(p, p->lineno, "[service] needs a name: [service NAME]");
		else if (!config_name_ok(name))
			config_err(p, p->lineno,
				   "invalid service name '%s': one word of up to %d letters, digits, '.', '_' or '-'",
				   config_quote(name, q, sizeof(q)), KTLSH_CONFIG_NAME_MAX);
		else
			config_new_service(p, name);
		return;
	}
	if (!strcmp(type, "identity") || !strcmp(type, "client")) {
		if (!name)
			config_err(p, p->lineno,
				   "[%s] needs a name: [%s NAME]", type, type);
		else if (!config_name_ok(name))
			config_err(p, p->lineno,
				   "invalid %s name '%s': one word of up to %d letters, digits, '.', '_' or '-'",
				   type, config_quote(name, q, sizeof(q)),
				   KTLSH_CONFIG_NAME_MAX);
		else if (type[0] == 'i')
			config_new_identity(p, name);
		else
			config_new_client(p, name);
		return;
	}
	if (!strcmp(type, "handshake")) {
		config_hs_new(p, name);
		return;
	}
	config_err(p, p->lineno,
		   "unknown section [%s]; expected [global], [identity NAME], [client NAME] or [service NAME]",
		   hdr);
}

/* ---- the line reader and the handler ----------------------------------- */

/* inih's find_chars_or_comment(): ';' after a blank starts a comment. */
static const char *config_find(const char *s, const char *end,
			       const char *chars)
{
	bool was_space = false;

	while (s < end && !strchr(chars, *s) && !(was_space && *s == ';')) {
		was_space = isspace((unsigned char)*s);
		s++;
	}
	return s;
}

/* What inih's ini_parse_stream() will make of this line (ini.c, v55). */
static void config_classify(struct config_parser *p, const char *line)
{
	const char *start = line, *end, *e;

	if (p->lineno == 1 && (unsigned char)start[0] == 0xEF &&
	    (unsigned char)start[1] == 0xBB && (unsigned char)start[2] == 0xBF)
		start += 3;
	end = start + strlen(start);
	while (end > start && isspace((unsigned char)end[-1]))
		end--;
	while (start < end && isspace((unsigned char)*start))
		start++;

	if (start == end || *start == ';' || *start == '#') {
		p->kind = LINE_BLANK;
	} else if (p->prev_name && start > line) {
		p->kind = LINE_CONT;
	} else if (*start == '[') {
		e = config_find(start + 1, end, "]");
		if (e < end && *e == ']') {
			p->kind = LINE_SECTION;
			p->prev_name = false;
			config_section(p, start + 1, e - start - 1);
			/* inih ignores whatever follows; a typo may hide there. */
			for (e++; e < end && isspace((unsigned char)*e); e++)
				;
			if (e < end && *e != ';' && *e != '#')
				config_err(p, p->lineno,
					   "unexpected text after ']'");
		} else {
			p->kind = LINE_BAD;
			config_err(p, p->lineno,
				   "section header without ']'");
			/* Its keys would land in the previous section (inih
			 * keeps that name): skip them instead. */
			config_finish_section(p);
			p->sec = SEC_SKIP;
		}
	} else {
		e = config_find(start, end, "=:");
		if (e < end && (*e == '=' || *e == ':')) {
			p->kind = LINE_KEY;
			while (e > start && isspace((unsigned char)e[-1]))
				e--;
			p->prev_name = e > start;
		} else {
			p->kind = LINE_BAD;
			config_err(p, p->lineno,
				   "expected 'key = value', '[section]' or a comment");
		}
	}
	if (p->kind == LINE_BAD && !p->first_bad)
		p->first_bad = p->lineno;
}

/* inih's ini_reader: one line per call, so our count is inih's. */
static char *config_read_line(char *str, int num, void *stream)
{
	struct config_parser *p = stream;
	const char *line, *nl;
	size_t n, avail;

	if (p->stop || p->oom || p->pos >= p->len || num < 2)
		return NULL;
	line = p->buf + p->pos;
	avail = p->len - p->pos;
	nl = memchr(line, '\n', avail);
	n = nl ? (size_t)(nl - line) : avail;
	p->pos += nl ? n + 1 : n;
	p->lineno++;
	p->kind = LINE_BLANK;

	if (memchr(line, '\0', n)) {
		config_err(p, p->lineno, "line contains a NUL byte");
		/* A blank line for inih keeps its state where it was. */
		strcpy(str, "\n");
		return str;
	}
	/* inih would read the rest of a longer line as a line of its own. */
	if (n > (size_t)num - 2) {
		config_err(p, p->lineno,
			   "line is longer than %d characters; continue a list on indented lines",
			   num - 2);
		p->stop = true;
		return NULL;
	}
	memcpy(str, line, n);
	str[n] = '\n';
	str[n + 1] = '\0';
	config_classify(p, str);
	return str;
}

static int config_key_find(const char *name)
{
	int i;

	for (i = 0; i < K_COUNT; i++)
		if (!strcmp(config_keys[i].name, name))
			return i;
	return -1;
}

static void config_unknown_key(struct config_parser *p, const char *name,
			       int id)
{
	const char *where = p->sec == SEC_GLOBAL ? "[global]" :
			    p->sec == SEC_IDENTITY ? "[identity]" :
			    p->sec == SEC_SERVICE ? "[service]" : "[client]";
	char q[CONFIG_QUOTE_MAX];
	unsigned int in;

	if (id < 0) {
		config_err(p, p->lineno, "unknown key '%s' in %s",
			   config_quote(name, q, sizeof(q)), where);
		return;
	}
	in = config_keys[id].sections;
	config_err(p, p->lineno, "'%s' is not valid in %s; it belongs in %s",
		   name, where,
		   in == IN_GLOBAL ? "[global]" :
		   in == IN_IDENTITY ? "[identity NAME]" :
		   in == IN_CLIENT ? "[client NAME]" :
		   in == IN_SERVICE ? "[service NAME]" :
		   in == (IN_CLIENT | IN_SERVICE) ? "[client NAME] or [service NAME]" :
		   in == (IN_TLS | IN_SERVICE) ? "[identity NAME], [client NAME] or [service NAME]" :
		   "[identity NAME] or [client NAME]");
}

static void config_continue(struct config_parser *p, const char *value)
{
	const struct config_key *k;

	/* Its key line was refused, or its section is being skipped. */
	if (p->cont_key < 0 || p->sec == SEC_SKIP || p->sec == SEC_NONE)
		return;
	k = &config_keys[p->cont_key];
	if (!(k->flags & KEY_CONT)) {
		config_err(p, p->lineno,
			   "indented line continues '%s', which takes one value; remove the indentation",
			   k->name);
		return;
	}
	if (value[0] == '[' || strchr(value, '=')) {
		config_err(p, p->lineno,
			   "indented line continues '%s'; remove the indentation to start a new key or section",
			   k->name);
		return;
	}
	k->set(p, k, value);
}

static int config_handler(void *user, const char *section, const char *name,
			  const char *value)
{
	struct config_parser *p = user;
	const struct config_key *k;
	char q[CONFIG_QUOTE_MAX];
	int id;

	if (p->oom || !name || !value)
		return 1;
	/* Always 1: our own messages say what was wrong, so inih's return
	 * value only ever reports its syntax errors. */
	if ((p->kind != LINE_KEY && p->kind != LINE_CONT) ||
	    strcmp(section, p->section)) {
		config_err(p, p->lineno,
			   "internal error: libinih read this line differently");
		return 1;
	}
	if (p->sec == SEC_HANDSHAKE) {
		config_hs_handle(p, name, value);
		return 1;
	}
	if (p->kind == LINE_CONT) {
		config_continue(p, value);
		return 1;
	}
	p->cont_key = -1;
	if (p->sec == SEC_SKIP)
		return 1;
	if (p->sec == SEC_NONE) {
		config_err(p, p->lineno,
			   "'%s' is outside any section; settings go after [global], [identity NAME] or [client NAME]",
			   config_quote(name, q, sizeof(q)));
		return 1;
	}
	if (!*name) {
		config_err(p, p->lineno, "no key name before '='");
		return 1;
	}
	id = config_key_find(name);
	if (id < 0 || !(config_keys[id].sections & (1u << p->sec))) {
		config_unknown_key(p, name, id);
		return 1;
	}
	k = &config_keys[id];
	if (p->seen[id] && !(k->flags & KEY_REPEAT)) {
		config_err(p, p->lineno,
			   "duplicate key '%s' (first set at line %u)",
			   k->name, p->seen[id]);
		return 1;
	}
	if (!p->seen[id])
		p->seen[id] = p->lineno;
	p->cont_key = id;
	k->set(p, k, value);
	return 1;
}

/* ---- whole-file checks ------------------------------------------------- */

static int config_sni_cmp(const void *a, const void *b)
{
	const struct ktlsh_config_sni *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	return x->line < y->line ? -1 : x->line > y->line;
}

/* Sort the SNI index for lookups; a name claimed twice is an error. */
static void config_check_sni(struct config_parser *p)
{
	struct ktlsh_config *cfg = p->cfg;
	const struct ktlsh_config_sni *first = NULL;
	size_t i;

	if (!cfg->n_sni)
		return;
	qsort(cfg->sni, cfg->n_sni, sizeof(*cfg->sni), config_sni_cmp);
	for (i = 0; i < cfg->n_sni; i++) {
		const struct ktlsh_config_sni *e = &cfg->sni[i];

		if (!first || strcmp(first->name, e->name)) {
			first = e;
			continue;
		}
		if (first->identity == e->identity)
			config_err(p, e->line,
				   "server_names: '%s' is already listed at line %u",
				   e->name, first->line);
		else
			config_err(p, e->line,
				   "server_names: '%s' is already claimed by [identity %s] at line %u",
				   e->name, first->identity->name, first->line);
	}
}

/* A service's identity or client profile: the one named, else the only one. */
static const void *config_service_ref(struct config_parser *p,
				      const struct ktlsh_config_service *sv,
				      const struct ktlsh_config_str *ref,
				      const char *kind, size_t n, const void *only,
				      const void *named)
{
	char q[CONFIG_QUOTE_MAX];

	if (ref->str) {
		if (!named)
			config_err(p, ref->line, "%s: there is no [%s %s]", kind,
				   kind, config_quote(ref->str, q, sizeof(q)));
		return named;
	}
	if (n == 1)
		return only;
	config_err(p, sv->line,
		   "[service %s] needs '%s = NAME': the file has %zu [%s] sections",
		   sv->name, kind, n, kind);
	return NULL;
}

/* References between sections, once every section is known. */
static void config_check_services(struct config_parser *p)
{
	struct ktlsh_config *cfg = p->cfg;
	struct ktlsh_config_service *sv;
	size_t i;

	for (i = 0; i < cfg->n_services; i++) {
		sv = cfg->services[i];
		if (sv->mode == KTLSH_SERVICE_TERMINATE)
			sv->identity = config_service_ref(p, sv, &sv->identity_name, "identity",
				cfg->n_identities, cfg->n_identities ? cfg->identities[0] : NULL,
				ktlsh_config_identity(cfg, sv->identity_name.str));
		else if (sv->mode == KTLSH_SERVICE_ORIGINATE)
			sv->client = config_service_ref(p, sv, &sv->client_name, "client",
				cfg->n_clients, cfg->n_clients ? cfg->clients[0] : NULL,
				ktlsh_config_client(cfg, sv->client_name.str));
	}
}

static char *config_basedir(const char *file)
{
	const char *slash = strrchr(file, '/');
	char *dir, *real;

	if (!slash)
		dir = strdup(".");
	else if (slash == file)
		dir = strdup("/");
	else
		dir = strndup(file, slash - file);
	if (!dir)
		return NULL;
	/* Absolute, so the paths stay right after the daemon chdir()s. */
	real = realpath(dir, NULL);
	if (real) {
		free(dir);
		return real;
	}
	return dir;
}

/* ---- freeing ----------------------------------------------------------- */

static void config_tls_free(struct ktlsh_config_tls *tls)
{
	size_t i;

	for (i = 0; i < KTLSH_CONFIG_MAX_CERTS; i++) {
		free(tls->certs[i].cert.str);
		free(tls->certs[i].key.str);
	}
	for (i = 0; i < tls->n_alpn; i++)
		free(tls->alpn[i]);
	free(tls->alpn);
	free(tls->alpn_wire);
	free(tls->ciphers.str);
	free(tls->ciphersuites.str);
	free(tls->groups.str);
	free(tls->ca_file.str);
	free(tls->ca_dir.str);
	free(tls->crl_file.str);
	free(tls->acl.uids);
	free(tls->acl.gids);
}

static void config_free(struct ktlsh_config *cfg)
{
	size_t i, j;

	if (!cfg)
		return;
	for (i = 0; i < cfg->n_identities; i++) {
		struct ktlsh_config_identity *id = cfg->identities[i];

		config_tls_free(&id->tls);
		for (j = 0; j < id->n_server_names; j++)
			free(id->server_names[j]);
		free(id->server_names);
		free(id->name);
		free(id);
	}
	free(cfg->identities);
	for (i = 0; i < cfg->n_clients; i++) {
		struct ktlsh_config_client *cl = cfg->clients[i];

		config_tls_free(&cl->tls);
		free(cl->server_name);
		free(cl->name);
		free(cl);
	}
	free(cfg->clients);
	for (i = 0; i < cfg->n_services; i++) {
		struct ktlsh_config_service *sv = cfg->services[i];

		config_tls_free(&sv->tls);
		free(sv->listen.host);
		free(sv->listen.text);
		free(sv->target.host);
		free(sv->target.text);
		free(sv->identity_name.str);
		free(sv->client_name.str);
		free(sv->server_name);
		free(sv->name);
		free(sv);
	}
	free(cfg->services);
	free(cfg->sni);
	free(cfg->global.socket);
	free(cfg->global.user);
	free(cfg->global.ticket_key_file.str);
	config_hs_free(&cfg->handshake);
	free(cfg->warnings);
	free(cfg->path);
	free(cfg);
}

/* ---- loading ----------------------------------------------------------- */

int ktlsh_config_load_buffer(const char *name, const char *buf, size_t len,
			     struct ktlsh_config **out, char *err,
			     size_t errlen)
{
	struct config_parser p = {
		.file = name,
		.buf = buf,
		.len = len,
		.cont_key = -1,
	};
	struct ktlsh_config *cfg;
	int ret, r;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		ret = -ENOMEM;
		goto out;
	}
	atomic_init(&cfg->refs, 1);
	cfg->global.log_level = LOG_INFO;
	cfg->global.max_inflight = KTLSH_CONFIG_DEFAULT_MAX_INFLIGHT;
	cfg->global.handshake_timeout_ms = KTLSH_CONFIG_DEFAULT_TIMEOUT_MS;
	cfg->global.ticket_rotation_s = KTLSH_CONFIG_DEFAULT_TICKET_ROTATION;
	cfg->global.socket = strdup(KTLSH_CONFIG_DEFAULT_SOCKET);
	cfg->path = strdup(name);
	p.basedir = config_basedir(name);
	p.cfg = cfg;
	if (!cfg->global.socket || !cfg->path || !p.basedir) {
		ret = -ENOMEM;
		goto out;
	}

	r = ini_parse_stream(config_read_line, &p, config_handler, &p);
	config_finish_section(&p);
	if (r == -2 || p.oom) {
		ret = -ENOMEM;
		goto out;
	}
	if (r != (int)p.first_bad && !p.stop)
		config_err(&p, r > 0 ? (unsigned int)r : p.first_bad,
			   "internal error: libinih reported a syntax error at line %d",
			   r);
	config_check_sni(&p);
	config_check_services(&p);
	if (!cfg->n_identities && !cfg->n_clients && !cfg->handshake.enabled && !p.errors.n)
		config_warn(&p, 0,
			    "no [identity NAME] or [client NAME] section; ktlshd will refuse every request");
	if (p.oom) {
		ret = -ENOMEM;
		goto out;
	}
	if (p.errors.n) {
		config_msgs_join(&p.errors, err, errlen);
		ret = -EINVAL;
		goto out;
	}
	if (p.warnings.n) {
		cfg->warnings = config_msgs_dup(&p.warnings);
		if (!cfg->warnings) {
			ret = -ENOMEM;
			goto out;
		}
	}
	*out = cfg;
	cfg = NULL;
	ret = 0;
out:
	if (ret == -ENOMEM && err && errlen)
		snprintf(err, errlen, "%s: out of memory", name);
	config_msgs_free(&p.errors);
	config_msgs_free(&p.warnings);
	free(p.basedir);
	config_free(cfg);
	return ret;
}

int ktlsh_config_load(const char *path, struct ktlsh_config **out, char *err,
		      size_t errlen)
{
	char *buf = NULL, *nb;
	size_t len = 0, cap = 0;
	bool parsed = false;
	ssize_t n;
	int fd, ret;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	for (;;) {
		if (len == cap) {
			/* One byte over the limit tells "too big" from "full". */
			if (cap == CONFIG_FILE_MAX + 1) {
				ret = -EFBIG;
				goto out;
			}
			cap = cap ? cap * 2 : 16384;
			if (cap > CONFIG_FILE_MAX + 1)
				cap = CONFIG_FILE_MAX + 1;
			nb = realloc(buf, cap);
			if (!nb) {
				ret = -ENOMEM;
				goto out;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (!n)
			break;
		len += n;
	}
	parsed = true;
	ret = ktlsh_config_load_buffer(path, buf, len, out, err, errlen);
out:
	if (!parsed && err && errlen)
		snprintf(err, errlen, "%s: %s", path,
			 ret == -EFBIG ? "file is larger than 1 MiB" :
			 strerror(-ret));
	if (fd >= 0)
		close(fd);
	free(buf);
	return ret;
}

/* ---- references -------------------------------------------------------- */

struct ktlsh_config *ktlsh_config_get(struct ktlsh_config *cfg)
{
	atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
	return cfg;
}

void ktlsh_config_put(struct ktlsh_config *cfg)
{
	if (!cfg)
		return;
	/* Release our writes before the last owner frees; acquire theirs. */
	if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
		config_free(cfg);
}

void ktlsh_config_slot_init(struct ktlsh_config_slot *slot,
			    struct ktlsh_config *cfg)
{
	pthread_mutex_init(&slot->lock, NULL);
	slot->cur = cfg;
}

struct ktlsh_config *ktlsh_config_slot_get(struct ktlsh_config_slot *slot)
{
	struct ktlsh_config *cfg;

	pthread_mutex_lock(&slot->lock);
	cfg = slot->cur ? ktlsh_config_get(slot->cur) : NULL;
	pthread_mutex_unlock(&slot->lock);
	return cfg;
}

void ktlsh_config_slot_replace(struct ktlsh_config_slot *slot,
			       struct ktlsh_config *cfg)
{
	struct ktlsh_config *old;

	pthread_mutex_lock(&slot->lock);
	old = slot->cur;
	slot->cur = cfg;
	pthread_mutex_unlock(&slot->lock);
	/* Outside the lock: freeing a big config must not stall readers. */
	ktlsh_config_put(old);
}

void ktlsh_config_slot_destroy(struct ktlsh_config_slot *slot)
{
	ktlsh_config_put(slot->cur);
	slot->cur = NULL;
	pthread_mutex_destroy(&slot->lock);
}

/* ---- lookups ----------------------------------------------------------- */

const struct ktlsh_config_identity *
ktlsh_config_identity(const struct ktlsh_config *cfg, const char *name)
{
	size_t i;

	if (!name)
		return NULL;
	for (i = 0; i < cfg->n_identities; i++)
		if (!strcmp(cfg->identities[i]->name, name))
			return cfg->identities[i];
	return NULL;
}

const struct ktlsh_config_client *
ktlsh_config_client(const struct ktlsh_config *cfg, const char *name)
{
	size_t i;

	if (!name)
		return NULL;
	for (i = 0; i < cfg->n_clients; i++)
		if (!strcmp(cfg->clients[i]->name, name))
			return cfg->clients[i];
	return NULL;
}

const struct ktlsh_config_service *
ktlsh_config_service(const struct ktlsh_config *cfg, const char *name)
{
	size_t i;

	if (!name)
		return NULL;
	for (i = 0; i < cfg->n_services; i++)
		if (!strcmp(cfg->services[i]->name, name))
			return cfg->services[i];
	return NULL;
}

static int config_sni_key_cmp(const void *key, const void *elem)
{
	const struct ktlsh_config_sni *e = elem;

	return strcmp(key, e->name);
}

static const struct ktlsh_config_identity *
config_sni_find(const struct ktlsh_config *cfg, const char *name)
{
	const struct ktlsh_config_sni *e;

	if (!cfg->n_sni)
		return NULL;
	e = bsearch(name, cfg->sni, cfg->n_sni, sizeof(*cfg->sni),
		    config_sni_key_cmp);
	return e ? e->identity : NULL;
}

const struct ktlsh_config_identity *
ktlsh_config_identity_for_sni(const struct ktlsh_config *cfg,
			      const struct ktlsh_config_identity *dflt,
			      const char *sni)
{
	char lc[KTLSH_CONFIG_HOSTNAME_MAX + 2];
	const struct ktlsh_config_identity *id;
	char *dot;
	size_t i;

	if (!sni || !*sni || strlen(sni) > KTLSH_CONFIG_HOSTNAME_MAX)
		return dflt;
	/* '*' never names a host; do not let it select a wildcard entry. */
	if (strchr(sni, '*'))
		return dflt;
	for (i = 0; sni[i]; i++)
		lc[i] = tolower((unsigned char)sni[i]);
	lc[i] = '\0';
	id = config_sni_find(cfg, lc);
	if (id)
		return id;
	/* One label only: "www.example.com" -> "*.example.com". */
	dot = strchr(lc, '.');
	if (!dot || dot == lc || !dot[1])
		return dflt;
	dot[-1] = '*';
	id = config_sni_find(cfg, dot - 1);
	return id ? id : dflt;
}

static int config_acl_allows(const struct ktlsh_config_acl *acl, uid_t uid,
			     gid_t gid)
{
	size_t i;

	if (uid == 0 || acl->any)
		return 0;
	for (i = 0; i < acl->n_uids; i++)
		if (acl->uids[i] == uid)
			return 0;
	for (i = 0; i < acl->n_gids; i++)
		if (acl->gids[i] == gid)
			return 0;
	return -EACCES;
}

int ktlsh_config_may_use(const struct ktlsh_config *cfg,
			 const struct ktlsh_config_identity *id, uid_t uid,
			 gid_t gid)
{
	(void)cfg;	/* for a later global policy */
	return id ? config_acl_allows(&id->tls.acl, uid, gid) : -EACCES;
}

int ktlsh_config_client_may_use(const struct ktlsh_config *cfg,
				const struct ktlsh_config_client *cl,
				uid_t uid, gid_t gid)
{
	(void)cfg;
	return cl ? config_acl_allows(&cl->tls.acl, uid, gid) : -EACCES;
}
