// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Unit tests for the preload shim's configuration (libktlsh/preload_conf.c):
 * the grammar shared by $KTLSH_PRELOAD and $KTLSH_PRELOAD_CONFIG, its error
 * messages (which say where), and address matching for listeners and
 * connect() destinations. The parser is pure, so it is included here whole.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <CUnit/Basic.h>

#include "../../libktlsh/preload_conf.c"
#include "unit.h"

static struct pl_conf *conf_new(void)
{
	struct pl_conf *c = malloc(sizeof(*c));

	CU_ASSERT_FATAL(c != NULL);
	pl_conf_init(c);
	return c;
}

static int parse(struct pl_conf *c, const char *text)
{
	return pl_conf_parse(c, text, "KTLSH_PRELOAD", false);
}

static struct sockaddr_storage ss_v4(const char *ip, int port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	CU_ASSERT_FATAL(inet_pton(AF_INET, ip, &in->sin_addr) == 1);
	return ss;
}

static struct sockaddr_storage ss_v6(const char *ip, int port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons((uint16_t)port);
	CU_ASSERT_FATAL(inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1);
	return ss;
}


static const struct pl_rule *match(const struct pl_conf *c, enum pl_role role, struct sockaddr_storage ss)
{
	return pl_conf_match(c, role, (struct sockaddr *)&ss,
			     ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
}

static bool partial(const struct pl_conf *c, struct sockaddr_storage ss)
{
	return pl_conf_listener_partial(c, (struct sockaddr *)&ss,
					ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) :
								   sizeof(struct sockaddr_in6));
}

static void t_example(void)
{
	struct pl_conf *c = conf_new();
	const struct pl_rule *r;

	CU_ASSERT_EQUAL_FATAL(parse(c, "server=0.0.0.0:443,identity=web,alpn=h2,alpn=http/1.1;"
				    "client=10.0.0.5:443,name=api.example,profile=internal,timeout=500ms;"
				    "socket=@ktlsh,verbose,max_pending=64"), 0);
	CU_ASSERT_EQUAL(c->n_rules, 2);
	r = &c->rules[0];
	CU_ASSERT_EQUAL(r->role, PL_ROLE_SERVER);
	CU_ASSERT_EQUAL(r->ep.family, AF_INET);
	CU_ASSERT(r->ep.any);
	CU_ASSERT_EQUAL(r->ep.port, 443);
	CU_ASSERT_STRING_EQUAL(r->identity, "web");
	CU_ASSERT_EQUAL(r->n_alpn, 2);
	CU_ASSERT_STRING_EQUAL(r->alpn_ptr[0], "h2");
	CU_ASSERT_STRING_EQUAL(r->alpn_ptr[1], "http/1.1");
	CU_ASSERT_STRING_EQUAL(r->text, "server=0.0.0.0:443");
	r = &c->rules[1];
	CU_ASSERT_EQUAL(r->role, PL_ROLE_CLIENT);
	CU_ASSERT(!r->ep.any);
	CU_ASSERT_STRING_EQUAL(r->name, "api.example");
	CU_ASSERT_STRING_EQUAL(r->identity, "internal");
	CU_ASSERT_EQUAL(r->timeout_ms, 500);
	CU_ASSERT_STRING_EQUAL(c->socket, "@ktlsh");
	CU_ASSERT(c->verbose);
	CU_ASSERT_EQUAL(c->max_pending, 64);
	CU_ASSERT_STRING_EQUAL(c->err, "");
	free(c);
}

static void t_file_form(void)
{
	struct pl_conf *c = conf_new();
	char path[] = "/tmp/ktlsh-preload-conf.XXXXXX";
	const char *text =
		"# the shim's configuration\n"
		"socket = /run/ktlsh/ktlshd.sock\n"
		"log = syslog\n"
		"\n"
		"server = [::]:8443   identity = web   # comment; not an item\n"
		"server=*:9443, identity=api, trusted_peer, sendfile_zerocopy=yes\r\n"
		"client = [2001:db8::1]:443, name = db.example ; client=127.0.0.1:5432,timeout=2s\n";
	int fd = mkstemp(path);

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	CU_ASSERT_EQUAL(pl_conf_load_file(c, path), 0);
	CU_ASSERT_STRING_EQUAL(c->err, "");
	CU_ASSERT_EQUAL(c->n_rules, 4);
	CU_ASSERT_STRING_EQUAL(c->socket, "/run/ktlsh/ktlshd.sock");
	CU_ASSERT_EQUAL(c->log, PL_LOG_SYSLOG);
	CU_ASSERT_EQUAL(c->rules[0].ep.family, AF_INET6);
	CU_ASSERT(c->rules[0].ep.any);
	CU_ASSERT_EQUAL(c->rules[1].ep.family, AF_UNSPEC);
	CU_ASSERT_EQUAL(c->rules[1].flags, KTLSH_F_TRUSTED_PEER | KTLSH_F_TX_ZEROCOPY_RO);
	CU_ASSERT_STRING_EQUAL(c->rules[2].name, "db.example");
	CU_ASSERT_EQUAL(c->rules[3].timeout_ms, 2000);
	unlink(path);
	free(c);
}

/* Every error says where and what. */
static void t_errors(void)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ "server=1.2.3.4", "item 1: server=1.2.3.4: expected ADDRESS:PORT" },
		{ "server=1.2.3.4:0", "expected ADDRESS:PORT" },
		{ "server=1.2.3.4:65536", "expected ADDRESS:PORT" },
		{ "server=host.example:443", "numeric addresses only" },
		{ "server=[::1:443", "expected ADDRESS:PORT" },
		{ "server=:443", "expected ADDRESS:PORT" },
		{ ";;client=10.0.0.5:443,nmae=x", "item 3: client=10.0.0.5:443: unknown key 'nmae' (expected name," },
		{ "server=*:443,name=x", "unknown key 'name'" },
		{ "client=*:443,client_name=x", "unknown key 'client_name'" },
		{ "server=*:443,identity=we/b", "identity: 'we/b' is not a name" },
		{ "server=*:443,identity=a,identity=b", "identity given twice" },
		{ "server=*:443,identity", "identity needs a value" },
		{ "server=*:443,alpn=a,alpn=b,alpn=c,alpn=d,alpn=e,alpn=f,alpn=g,alpn=h,alpn=i",
		  "alpn: more than 8 protocols" },
		{ "server=*:443,timeout=5x", "timeout: expected a duration" },
		{ "server=*:443,timeout=0", "timeout: expected a duration" },
		{ "server=*:443,timeout=2h", "timeout: expected a duration" },
		{ "server=*:443,trusted_peer=maybe", "trusted_peer: expected yes or no" },
		{ "server=*:443;server=443", "item 2: server=443: named twice (first as server=*:443)" },
		{ "identity=web,server=*:443", "unknown key 'identity'" },
		{ "verbose,server=*:443", "server= must come first in its item" },
		{ "socket=relative.sock", "socket: expected an absolute path or @name" },
		{ "log=loud", "log: expected stderr, syslog, none or an absolute file name" },
		{ "max_pending=0", "max_pending: expected a number from 1 to 65536" },
		{ "=x", "'=x' has no key" },
	};
	struct pl_conf *c = conf_new();
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pl_conf_init(c);
		CU_ASSERT_EQUAL(parse(c, cases[i].text), -EINVAL);
		if (!strstr(c->err, cases[i].want))
			fprintf(stderr, "\n'%s': got '%s', want '%s'\n", cases[i].text, c->err, cases[i].want);
		CU_ASSERT_PTR_NOT_NULL(strstr(c->err, cases[i].want));
		CU_ASSERT(!strncmp(c->err, "KTLSH_PRELOAD: item ", 20));
	}
	/* Files count lines. */
	pl_conf_init(c);
	CU_ASSERT_EQUAL(pl_conf_parse(c, "# x\n\nserver=*:1\nserver=*:2 bogus\n", "p.conf", true), -EINVAL);
	CU_ASSERT_STRING_EQUAL(c->err, "p.conf:4: server=*:2: unknown key 'bogus' (expected identity, alpn, "
			       "timeout, client_name, trusted_peer, sendfile_zerocopy)");
	pl_conf_init(c);
	CU_ASSERT_EQUAL(pl_conf_load_file(c, "/nonexistent/preload.conf"), -ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(c->err, "/nonexistent/preload.conf: cannot open"));
	free(c);
}

static void t_match_server(void)
{
	struct pl_conf *c = conf_new();
	const struct pl_rule *r;

	CU_ASSERT_EQUAL_FATAL(parse(c, "server=127.0.0.1:443,identity=lo;server=*:443,identity=any;"
				    "server=10.0.0.1:8443,identity=ten;server=0.0.0.0:80,identity=v4"), 0);
	/* Exact beats the wildcard. */
	r = match(c, PL_ROLE_SERVER, ss_v4("127.0.0.1", 443));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->identity, "lo");
	r = match(c, PL_ROLE_SERVER, ss_v4("192.0.2.1", 443));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->identity, "any");
	r = match(c, PL_ROLE_SERVER, ss_v6("::", 443));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->identity, "any");
	CU_ASSERT(!partial(c, ss_v6("::", 443)));
	/* IPv4-mapped addresses are IPv4. */
	r = match(c, PL_ROLE_SERVER, ss_v6("::ffff:127.0.0.1", 443));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->identity, "lo");
	/* A wildcard listener on a port that only a specific rule names is
	 * managed, per connection. */
	r = match(c, PL_ROLE_SERVER, ss_v4("0.0.0.0", 8443));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT(partial(c, ss_v4("0.0.0.0", 8443)));
	CU_ASSERT_PTR_NULL(match(c, PL_ROLE_SERVER, ss_v4("10.0.0.2", 8443)));
	/* A dual-stack [::] listener covers 0.0.0.0:80, partly. */
	r = match(c, PL_ROLE_SERVER, ss_v6("::", 80));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT(partial(c, ss_v6("::", 80)));
	CU_ASSERT_PTR_NULL(match(c, PL_ROLE_SERVER, ss_v6("2001:db8::1", 80)));
	CU_ASSERT_PTR_NOT_NULL(match(c, PL_ROLE_SERVER, ss_v4("0.0.0.0", 80)));
	CU_ASSERT(!partial(c, ss_v4("0.0.0.0", 80)));
	/* Other ports, and client rules, are not named. */
	CU_ASSERT_PTR_NULL(match(c, PL_ROLE_SERVER, ss_v4("127.0.0.1", 444)));
	CU_ASSERT_PTR_NULL(match(c, PL_ROLE_CLIENT, ss_v4("127.0.0.1", 443)));
	free(c);
}

static void t_match_client(void)
{
	struct pl_conf *c = conf_new();
	const struct pl_rule *r;

	CU_ASSERT_EQUAL_FATAL(parse(c, "client=10.0.0.5:443,name=a;client=*:5432,name=db;"
				    "client=[2001:db8::1]:443,name=v6"), 0);
	r = match(c, PL_ROLE_CLIENT, ss_v4("10.0.0.5", 443));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->name, "a");
	CU_ASSERT_PTR_NULL(match(c, PL_ROLE_CLIENT, ss_v4("10.0.0.6", 443)));
	CU_ASSERT_PTR_NULL(match(c, PL_ROLE_CLIENT, ss_v4("0.0.0.0", 443)));
	r = match(c, PL_ROLE_CLIENT, ss_v6("::ffff:10.0.0.5", 443));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->name, "a");
	r = match(c, PL_ROLE_CLIENT, ss_v6("2001:db8::9", 5432));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->name, "db");
	r = match(c, PL_ROLE_CLIENT, ss_v6("2001:db8::1", 443));
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT_STRING_EQUAL(r->name, "v6");
	CU_ASSERT_PTR_NULL(match(c, PL_ROLE_SERVER, ss_v4("10.0.0.5", 443)));
	/* Not an inet address: never named. */
	{
		struct sockaddr sa = { .sa_family = AF_UNIX };

		CU_ASSERT_PTR_NULL(pl_conf_match(c, PL_ROLE_CLIENT, &sa, sizeof(sa)));
	}
	free(c);
}

static void t_addr_str(void)
{
	struct sockaddr_storage ss = ss_v6("::ffff:192.0.2.7", 8080);
	char buf[64];

	pl_addr_str((struct sockaddr *)&ss, sizeof(struct sockaddr_in6), buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "192.0.2.7:8080");
	ss = ss_v6("2001:db8::1", 443);
	pl_addr_str((struct sockaddr *)&ss, sizeof(struct sockaddr_in6), buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "[2001:db8::1]:443");
	pl_addr_str((struct sockaddr *)&ss, 3, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "?");
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "inline example", t_example },
		{ "file form", t_file_form },
		{ "errors say where", t_errors },
		{ "server matching", t_match_server },
		{ "client matching", t_match_client },
		{ "address strings", t_addr_str },
		{ NULL, NULL },
	};

	return t_run("preload configuration", cases);
}
