// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The preload shim's configuration: which listening addresses speak TLS
 * (server role) and which destinations of connect() do (client role).
 *
 *   server=0.0.0.0:443,identity=web,alpn=http/1.1;client=10.0.0.5:443,name=api.example
 *
 * Items are separated by ';' or newlines, fields by ',' or blanks. An item
 * that starts with server= or client= is a rule; any other item holds global
 * settings. '#' starts a comment that runs to the end of the line. The same
 * grammar serves $KTLSH_PRELOAD and the file $KTLSH_PRELOAD_CONFIG (see
 * ktlsh-preload(8)). Pure: no I/O except pl_conf_load_file(), no globals,
 * so that the unit test can include this file.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/stat.h>

#include "preload.h"

#define PL_FIELDS_MAX	32

struct pl_field {
	char *key;
	char *val;		/* NULL: a bare key ("trusted_peer") */
};

struct pl_ctx {
	struct pl_conf *c;
	const char *where;
	bool is_file;
	unsigned int line;	/* file: the item's line */
	unsigned int item;	/* inline: the item's number, from 1 */
};

static int pl_err(struct pl_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int pl_err(struct pl_ctx *x, const char *fmt, ...)
{
	char msg[PL_ERR_LEN - 64];
	va_list ap;

	if (x->c->err[0])
		return -EINVAL;	/* keep the first */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (x->is_file)
		snprintf(x->c->err, sizeof(x->c->err), "%s:%u: %s", x->where, x->line, msg);
	else
		snprintf(x->c->err, sizeof(x->c->err), "%s: item %u: %s", x->where, x->item, msg);
	return -EINVAL;
}

void pl_conf_init(struct pl_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->log = PL_LOG_STDERR;
	c->max_pending = PL_MAX_PENDING_DEFAULT;
}

/* ---- values -------------------------------------------------------------- */

static bool pl_is_token(const char *s, size_t max, bool ident)
{
	size_t n = 0;

	for (; *s; s++, n++) {
		unsigned char ch = (unsigned char)*s;

		if (ident ? !(isalnum(ch) || ch == '.' || ch == '_' || ch == '-') : (ch <= 0x20 || ch >= 0x7f))
			return false;
	}
	return n > 0 && n <= max;
}

static int pl_bool(struct pl_ctx *x, const struct pl_field *f, bool *out)
{
	static const char *const yes[] = { "yes", "on", "true", "1" };
	static const char *const no[] = { "no", "off", "false", "0" };
	size_t i;

	if (!f->val) {
		*out = true;
		return 0;
	}
	for (i = 0; i < 4; i++) {
		if (!strcasecmp(f->val, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(f->val, no[i])) {
			*out = false;
			return 0;
		}
	}
	return pl_err(x, "%s: expected yes or no, got '%s'", f->key, f->val);
}

/* "250ms", "5s", "2m"; a number alone is seconds, as in ktlshd.conf(5). */
static int pl_duration(struct pl_ctx *x, const struct pl_field *f, unsigned int *ms)
{
	unsigned long long v, mul = 1000;
	char *end;

	if (!f->val || !isdigit((unsigned char)f->val[0]))
		goto bad;
	errno = 0;
	v = strtoull(f->val, &end, 10);
	if (errno)
		goto bad;
	if (!strcmp(end, "ms"))
		mul = 1;
	else if (!strcmp(end, "s") || !*end)
		mul = 1000;
	else if (!strcmp(end, "m"))
		mul = 60000;
	else
		goto bad;
	if (v == 0 || v > 3600000ull / mul)
		goto bad;
	*ms = (unsigned int)(v * mul);
	return 0;
bad:
	return pl_err(x, "%s: expected a duration from 1ms to 1h such as 500ms or 5s, got '%s'",
		      f->key, f->val ? f->val : "");
}

static int pl_need_val(struct pl_ctx *x, const struct pl_field *f)
{
	if (f->val && f->val[0])
		return 0;
	return pl_err(x, "%s needs a value (%s=...)", f->key, f->key);
}

static int pl_port(const char *s, uint16_t *port)
{
	unsigned long v;
	char *end;

	if (!isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/* "1.2.3.4:443", "[::1]:443", "*:443", "443" */
static int pl_endpoint_parse(const char *s, struct pl_endpoint *ep)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon;
	size_t n;

	memset(ep, 0, sizeof(*ep));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -1;
		n = (size_t)(close - s - 1);
		if (n == 0 || n >= sizeof(host))
			return -1;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		if (inet_pton(AF_INET6, host, ep->addr) != 1)
			return -1;
		ep->family = AF_INET6;
		ep->any = !memcmp(ep->addr, &in6addr_any, 16);
		return pl_port(close + 2, &ep->port);
	}
	colon = strrchr(s, ':');
	if (!colon) {
		ep->family = AF_UNSPEC;
		ep->any = true;
		return pl_port(s, &ep->port);
	}
	n = (size_t)(colon - s);
	if (n == 0 || n >= sizeof(host))
		return -1;
	memcpy(host, s, n);
	host[n] = '\0';
	if (!strcmp(host, "*")) {
		ep->family = AF_UNSPEC;
		ep->any = true;
	} else {
		if (inet_pton(AF_INET, host, ep->addr) != 1)
			return -1;
		ep->family = AF_INET;
		ep->any = !memcmp(ep->addr, "\0\0\0\0", 4);
	}
	return pl_port(colon + 1, &ep->port);
}

static bool pl_endpoint_same(const struct pl_endpoint *a, const struct pl_endpoint *b)
{
	if (a->port != b->port || a->family != b->family || a->any != b->any)
		return false;
	return a->any || !memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16);
}

/* ---- items --------------------------------------------------------------- */

static int pl_rule_field(struct pl_ctx *x, struct pl_rule *r, const struct pl_field *f)
{
	bool server = r->role == PL_ROLE_SERVER, b;
	int ret;

	if (!strcmp(f->key, "identity") || (!server && !strcmp(f->key, "profile"))) {
		if ((ret = pl_need_val(x, f)))
			return ret;
		if (!pl_is_token(f->val, PL_IDENT_LEN - 1, true))
			return pl_err(x, "%s: '%s' is not a name of up to %d letters, digits, '.', '_' or '-'",
				      f->key, f->val, PL_IDENT_LEN - 1);
		if (r->identity[0])
			return pl_err(x, "%s given twice", f->key);
		strcpy(r->identity, f->val);
		return 0;
	}
	if ((!server && !strcmp(f->key, "name")) || (server && !strcmp(f->key, "client_name"))) {
		if ((ret = pl_need_val(x, f)))
			return ret;
		if (!pl_is_token(f->val, PL_NAME_LEN - 1, false))
			return pl_err(x, "%s: '%s' is not a name", f->key, f->val);
		if (r->name[0])
			return pl_err(x, "%s given twice", f->key);
		strcpy(r->name, f->val);
		return 0;
	}
	if (!strcmp(f->key, "alpn")) {
		if ((ret = pl_need_val(x, f)))
			return ret;
		if (r->n_alpn == PL_ALPN_MAX)
			return pl_err(x, "alpn: more than %d protocols", PL_ALPN_MAX);
		if (!pl_is_token(f->val, 255, false))
			return pl_err(x, "alpn: '%s' is not a protocol name", f->val);
		strcpy(r->alpn[r->n_alpn], f->val);
		r->alpn_ptr[r->n_alpn] = r->alpn[r->n_alpn];
		r->n_alpn++;
		return 0;
	}
	if (!strcmp(f->key, "timeout"))
		return pl_duration(x, f, &r->timeout_ms);
	if (!strcmp(f->key, "trusted_peer")) {
		if ((ret = pl_bool(x, f, &b)))
			return ret;
		r->flags = b ? r->flags | KTLSH_F_TRUSTED_PEER : r->flags & ~KTLSH_F_TRUSTED_PEER;
		return 0;
	}
	if (server && !strcmp(f->key, "sendfile_zerocopy")) {
		if ((ret = pl_bool(x, f, &b)))
			return ret;
		r->flags = b ? r->flags | KTLSH_F_TX_ZEROCOPY_RO : r->flags & ~KTLSH_F_TX_ZEROCOPY_RO;
		return 0;
	}
	return pl_err(x, "%s: unknown key '%s' (expected %s)", r->text, f->key,
		      server ? "identity, alpn, timeout, client_name, trusted_peer, sendfile_zerocopy" :
			       "name, profile, alpn, timeout, trusted_peer");
}

static int pl_rule_item(struct pl_ctx *x, struct pl_field *f, unsigned int n)
{
	struct pl_conf *c = x->c;
	struct pl_rule *r;
	unsigned int i;
	int ret;

	if (c->n_rules == PL_RULES_MAX)
		return pl_err(x, "more than %d rules", PL_RULES_MAX);
	r = &c->rules[c->n_rules];
	memset(r, 0, sizeof(*r));
	r->role = !strcmp(f[0].key, "server") ? PL_ROLE_SERVER : PL_ROLE_CLIENT;
	if ((ret = pl_need_val(x, &f[0])))
		return ret;
	snprintf(r->text, sizeof(r->text), "%s=%s", f[0].key, f[0].val);
	if (pl_endpoint_parse(f[0].val, &r->ep))
		return pl_err(x, "%s: expected ADDRESS:PORT such as 0.0.0.0:443, [::]:443, *:443 "
			      "or 10.0.0.5:443 (numeric addresses only)", r->text);
	for (i = 0; i < c->n_rules; i++)
		if (c->rules[i].role == r->role && pl_endpoint_same(&c->rules[i].ep, &r->ep))
			return pl_err(x, "%s: named twice (first as %s)", r->text, c->rules[i].text);
	for (i = 1; i < n; i++)
		if ((ret = pl_rule_field(x, r, &f[i])))
			return ret;
	c->n_rules++;
	return 0;
}

static int pl_global_field(struct pl_ctx *x, const struct pl_field *f)
{
	struct pl_conf *c = x->c;
	unsigned long v;
	char *end;
	int ret;

	if (!strcmp(f->key, "socket")) {
		if ((ret = pl_need_val(x, f)))
			return ret;
		if ((f->val[0] != '/' && f->val[0] != '@') || strlen(f->val) >= sizeof(c->socket) - 1)
			return pl_err(x, "socket: expected an absolute path or @name of up to %zu bytes, got '%s'",
				      sizeof(c->socket) - 2, f->val);
		strcpy(c->socket, f->val);
		return 0;
	}
	if (!strcmp(f->key, "log")) {
		if ((ret = pl_need_val(x, f)))
			return ret;
		if (!strcmp(f->val, "stderr")) {
			c->log = PL_LOG_STDERR;
		} else if (!strcmp(f->val, "syslog")) {
			c->log = PL_LOG_SYSLOG;
		} else if (!strcmp(f->val, "none")) {
			c->log = PL_LOG_NONE;
		} else if (f->val[0] == '/' && strlen(f->val) < sizeof(c->log_file)) {
			c->log = PL_LOG_FILE;
			strcpy(c->log_file, f->val);
		} else {
			return pl_err(x, "log: expected stderr, syslog, none or an absolute file name, got '%s'",
				      f->val);
		}
		return 0;
	}
	if (!strcmp(f->key, "verbose"))
		return pl_bool(x, f, &c->verbose);
	if (!strcmp(f->key, "max_pending")) {
		if ((ret = pl_need_val(x, f)))
			return ret;
		errno = 0;
		v = strtoul(f->val, &end, 10);
		if (errno || *end || !isdigit((unsigned char)f->val[0]) || v < 1 || v > 65536)
			return pl_err(x, "max_pending: expected a number from 1 to 65536, got '%s'", f->val);
		c->max_pending = (unsigned int)v;
		return 0;
	}
	return pl_err(x, "unknown key '%s' (an item starts with server= or client=, or sets "
		      "socket, log, verbose or max_pending)", f->key);
}

/* Split one item (NUL-terminated, comments already cut) into fields, in place. */
static int pl_item(struct pl_ctx *x, char *s)
{
	struct pl_field f[PL_FIELDS_MAX];
	unsigned int n = 0, i;
	char *eq;
	int ret;

	for (;;) {
		while (*s == ',' || isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		if (n == PL_FIELDS_MAX)
			return pl_err(x, "more than %d fields", PL_FIELDS_MAX);
		/* key, key=value, or (in files) key = value */
		f[n].key = s;
		f[n].val = NULL;
		while (*s && *s != ',' && *s != '=' && !isspace((unsigned char)*s))
			s++;
		eq = s;
		while (isspace((unsigned char)*eq))
			eq++;
		if (*eq == '=') {
			*s = '\0';
			s = eq + 1;
			while (*s == ' ' || *s == '\t')
				s++;
			f[n].val = s;
			while (*s && *s != ',' && !isspace((unsigned char)*s))
				s++;
		}
		if (*s)
			*s++ = '\0';
		if (!f[n].key[0])
			return pl_err(x, "'=%s' has no key", f[n].val ? f[n].val : "");
		n++;
	}
	if (!n)
		return 0;
	if (!strcmp(f[0].key, "server") || !strcmp(f[0].key, "client"))
		return pl_rule_item(x, f, n);
	for (i = 0; i < n; i++) {
		if (!strcmp(f[i].key, "server") || !strcmp(f[i].key, "client"))
			return pl_err(x, "%s= must come first in its item (separate items with ';' or a new line)",
				      f[i].key);
		if ((ret = pl_global_field(x, &f[i])))
			return ret;
	}
	return 0;
}

int pl_conf_parse(struct pl_conf *c, const char *text, const char *where, bool is_file)
{
	struct pl_ctx x = { .c = c, .where = where, .is_file = is_file, .line = 1 };
	char *buf, *p, *item;
	unsigned int line = 1;
	bool comment = false;
	int ret = 0;

	buf = strdup(text);
	if (!buf) {
		snprintf(c->err, sizeof(c->err), "%s: out of memory", where);
		return -ENOMEM;
	}
	for (p = item = buf;; p++) {
		if (*p == '#')
			comment = true;
		if (*p == '\0' || *p == '\n' || (*p == ';' && !comment)) {
			char end = *p;

			*p = '\0';
			if (comment) {
				char *h = strchr(item, '#');

				if (h)
					*h = '\0';
			}
			x.line = line;
			x.item++;
			ret = pl_item(&x, item);
			if (ret || end == '\0')
				break;
			if (end == '\n') {
				line++;
				comment = false;
			}
			item = p + 1;
		}
	}
	free(buf);
	return ret;
}

int pl_conf_load_file(struct pl_conf *c, const char *path)
{
	char *buf = NULL;
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(c->err, sizeof(c->err), "%s: cannot open: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > PL_CONF_FILE_MAX) {
		snprintf(c->err, sizeof(c->err), "%s: not a regular file of at most %d bytes", path,
			 PL_CONF_FILE_MAX);
		ret = -EINVAL;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	if (strlen(buf) != got) {
		snprintf(c->err, sizeof(c->err), "%s: contains a NUL byte", path);
		ret = -EINVAL;
		goto out;
	}
	ret = pl_conf_parse(c, buf, path, true);
out:
	free(buf);
	close(fd);
	return ret;
}

/* ---- addresses ------------------------------------------------------------ */

bool pl_addr_norm(const struct sockaddr *sa, socklen_t len, int *family, uint8_t addr[16],
		  uint16_t *port)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (!sa || len < sizeof(sa_family_t))
		return false;
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		*family = AF_INET;
		memcpy(addr, &in->sin_addr, 4);
		*port = ntohs(in->sin_port);
		return true;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		*port = ntohs(in6->sin6_port);
		if (!memcmp(in6->sin6_addr.s6_addr, mapped, 12)) {
			*family = AF_INET;
			memcpy(addr, in6->sin6_addr.s6_addr + 12, 4);
		} else {
			*family = AF_INET6;
			memcpy(addr, in6->sin6_addr.s6_addr, 16);
		}
		return true;
	}
	return false;
}

void pl_addr_str(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	uint8_t addr[16];
	uint16_t port;
	int family;

	if (!pl_addr_norm(sa, len, &family, addr, &port)) {
		snprintf(buf, cap, "?");
		return;
	}
	inet_ntop(family, addr, host, sizeof(host));
	snprintf(buf, cap, family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

/*
 * How well rule endpoint ep names a socket address: 0 not at all; 3 the
 * same address; 2 the rule's wildcard covers it; 1 (server only) a
 * listener on a wildcard address accepts on the rule's address, or on the
 * IPv4 part of a dual-stack [::] listener: it must be managed, but each
 * connection is matched on its own local address.
 */
static int pl_ep_score(const struct pl_endpoint *ep, int family, const uint8_t *addr, uint16_t port,
		       bool sock_any)
{
	if (ep->port != port)
		return 0;
	if (ep->any) {
		if (ep->family == AF_UNSPEC || ep->family == family)
			return 2;
		if (sock_any && ep->family == AF_INET && family == AF_INET6)
			return 1;
		return 0;
	}
	if (ep->family == family && !sock_any && !memcmp(ep->addr, addr, family == AF_INET ? 4 : 16))
		return 3;
	if (sock_any && (ep->family == family || (family == AF_INET6 && ep->family == AF_INET)))
		return 1;
	return 0;
}

static bool pl_addr_is_any(int family, const uint8_t *addr)
{
	static const uint8_t zero[16];

	return !memcmp(addr, zero, family == AF_INET ? 4 : 16);
}

static const struct pl_rule *pl_best(const struct pl_conf *c, enum pl_role role,
				     const struct sockaddr *sa, socklen_t len, int *score)
{
	const struct pl_rule *best = NULL;
	uint8_t addr[16];
	uint16_t port;
	int family, s;
	bool sock_any;
	unsigned int i;

	*score = 0;
	if (!c || !pl_addr_norm(sa, len, &family, addr, &port))
		return NULL;
	sock_any = role == PL_ROLE_SERVER && pl_addr_is_any(family, addr);
	for (i = 0; i < c->n_rules; i++) {
		if (c->rules[i].role != role)
			continue;
		s = pl_ep_score(&c->rules[i].ep, family, addr, port, sock_any);
		if (s > *score) {
			*score = s;
			best = &c->rules[i];
		}
	}
	return best;
}

const struct pl_rule *pl_conf_match(const struct pl_conf *c, enum pl_role role,
				    const struct sockaddr *sa, socklen_t len)
{
	int score;

	return pl_best(c, role, sa, len, &score);
}

bool pl_conf_listener_partial(const struct pl_conf *c, const struct sockaddr *sa, socklen_t len)
{
	int score;

	return pl_best(c, PL_ROLE_SERVER, sa, len, &score) && score == 1;
}
