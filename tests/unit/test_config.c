// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Unit tests of the ktlshd.conf parser (daemon/config.c): a full valid file
 * parses into the right values, and every error path reports the right
 * "file:line: message". Files are written into a fresh mkdtemp() directory
 * with a throwaway ECDSA and RSA certificate made with OpenSSL's API.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <CUnit/Basic.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config.h"

static char dir[PATH_MAX];		/* realpath of the mkdtemp directory */
static char conf[PATH_MAX + 32];	/* dir/test.conf */
static char me[256];			/* the name of the user running us */

static void path_in(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

static int write_file(const char *name, const char *text, size_t len,
		      mode_t mode)
{
	char path[PATH_MAX + 64];
	int fd, ret = 0;

	path_in(path, sizeof(path), name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len)
		ret = -EIO;
	if (fchmod(fd, mode))
		ret = -errno;
	close(fd);
	return ret;
}

static int load_text(const char *text, struct ktlsh_config **cfg, char *err,
		     size_t errlen)
{
	int ret = write_file("test.conf", text, strlen(text), 0644);

	if (ret) {
		*cfg = NULL;
		return ret;
	}
	return ktlsh_config_load(conf, cfg, err, errlen);
}

/* ---- fixtures: a throwaway PKI ----------------------------------------- */

static int write_pem(const char *name, EVP_PKEY *pkey, X509 *x509,
		     X509_CRL *crl, mode_t mode)
{
	char path[PATH_MAX + 64];
	FILE *f;
	int ok;

	path_in(path, sizeof(path), name);
	f = fopen(path, "w");
	if (!f)
		return -1;
	ok = pkey ? PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) :
	     x509 ? PEM_write_X509(f, x509) : PEM_write_X509_CRL(f, crl);
	if (fclose(f) || !ok || chmod(path, mode))
		return -1;
	return 0;
}

static X509 *self_signed(EVP_PKEY *pkey)
{
	X509 *x = X509_new();
	X509_NAME *name;

	if (!x)
		return NULL;
	name = X509_get_subject_name(x);
	if (!X509_set_version(x, 2) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), 2L * 86400) ||
	    !X509_set_pubkey(x, pkey) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const unsigned char *)"localhost",
					-1, -1, 0) ||
	    !X509_set_issuer_name(x, name) ||
	    !X509_sign(x, pkey, EVP_sha256())) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static int make_pair(const char *stem, EVP_PKEY *pkey, X509 **cert)
{
	char name[64];
	X509 *x;
	int ret;

	if (!pkey)
		return -1;
	x = self_signed(pkey);
	if (!x)
		return -1;
	snprintf(name, sizeof(name), "%s.key", stem);
	ret = write_pem(name, pkey, NULL, NULL, 0600);
	snprintf(name, sizeof(name), "%s.pem", stem);
	ret = ret ? ret : write_pem(name, NULL, x, NULL, 0644);
	if (cert && !ret)
		*cert = x;
	else
		X509_free(x);
	return ret;
}

static int make_crl(EVP_PKEY *pkey, X509 *issuer)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_new();
	int ret = -1;

	if (!crl || !t || !X509_gmtime_adj(t, 0) ||
	    !X509_CRL_set_version(crl, 1) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)) ||
	    !X509_CRL_set1_lastUpdate(crl, t) ||
	    !X509_gmtime_adj(t, 86400) || !X509_CRL_set1_nextUpdate(crl, t) ||
	    !X509_CRL_sign(crl, pkey, EVP_sha256()))
		goto out;
	ret = write_pem("crl.pem", NULL, NULL, crl, 0644);
out:
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	return ret;
}

static int suite_init(void)
{
	char tmpl[] = "/tmp/ktlsh-test-config-XXXXXX";
	char cadir[PATH_MAX + 64];
	EVP_PKEY *ec = NULL, *rsa = NULL;
	struct passwd *pw;
	X509 *ca = NULL;
	int ret = -1;

	if (!mkdtemp(tmpl) || !realpath(tmpl, dir))
		return -1;
	/* Traversable by others, for the test that drops privileges. */
	if (chmod(dir, 0711))
		return -1;
	snprintf(conf, sizeof(conf), "%s/test.conf", dir);
	pw = getpwuid(getuid());
	if (!pw)
		return -1;
	snprintf(me, sizeof(me), "%s", pw->pw_name);

	ec = EVP_EC_gen("P-256");
	rsa = EVP_RSA_gen(2048);
	if (make_pair("ec", ec, &ca) || make_pair("rsa", rsa, NULL) ||
	    make_crl(ec, ca) || write_pem("ca.pem", NULL, ca, NULL, 0644))
		goto out;
	if (write_file("tickets.key", "0123456789abcdef", 16, 0600))
		goto out;
	if (write_file("open.key", "not really a key", 16, 0644))
		goto out;
	path_in(cadir, sizeof(cadir), "cadir");
	if (mkdir(cadir, 0755))
		goto out;
	ret = 0;
out:
	X509_free(ca);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
	return ret;
}

static int rm_one(const char *path, const struct stat *st, int type,
		  struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	return remove(path);
}

static int suite_cleanup(void)
{
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- helpers for error cases ------------------------------------------- */

/*
 * Load text and expect -EINVAL with "conf:line: msg" among the reported
 * lines; with only set, it must be the one and only line (no cascade).
 */
static void check_error(int src, const char *text, unsigned int line,
			const char *msg, bool only)
{
	struct ktlsh_config *cfg = NULL;
	char err[8192], want[PATH_MAX + 512];
	const char *hit;
	bool ok;
	int ret;

	memset(err, 0, sizeof(err));
	ret = load_text(text, &cfg, err, sizeof(err));
	snprintf(want, sizeof(want), "%s:%u: %s", conf, line, msg);
	hit = strstr(err, want);
	ok = ret == -EINVAL && !cfg && hit && (hit == err || hit[-1] == '\n');
	if (ok && only)
		ok = hit == err && !strchr(err, '\n');
	if (!ok)
		fprintf(stderr,
			"\n    test_config.c:%d: want%s \"%s\" (-EINVAL)\n    got %d: \"%s\"\n",
			src, only ? " only" : "", want, ret, err);
	CU_ASSERT(ok);
	ktlsh_config_put(cfg);
}

#define EXPECT_ONLY(text, line, msg) check_error(__LINE__, text, line, msg, true)
#define EXPECT_ERROR(text, line, msg) check_error(__LINE__, text, line, msg, false)

/* A minimal valid identity, for cases about something else. */
#define WEB "[identity web]\ncert = ec.pem\nkey = ec.key\n"

static struct ktlsh_config *load_ok(int src, const char *text)
{
	struct ktlsh_config *cfg = NULL;
	char err[8192] = "";
	int ret;

	ret = load_text(text, &cfg, err, sizeof(err));
	if (ret || !cfg)
		fprintf(stderr, "\n    test_config.c:%d: load failed %d: \"%s\"\n",
			src, ret, err);
	CU_ASSERT_EQUAL(ret, 0);
	CU_ASSERT_PTR_NOT_NULL(cfg);
	CU_ASSERT_STRING_EQUAL(err, "");
	return cfg;
}

#define LOAD_OK(text) load_ok(__LINE__, text)

static bool has_warning(const struct ktlsh_config *cfg, unsigned int line,
			const char *msg)
{
	char want[PATH_MAX + 512];

	snprintf(want, sizeof(want), "%s:%u: %s", conf, line, msg);
	if (cfg && cfg->warnings && strstr(cfg->warnings, want))
		return true;
	fprintf(stderr, "\n    want warning \"%s\"\n    got \"%s\"\n", want,
		cfg && cfg->warnings ? cfg->warnings : "(none)");
	return false;
}

/* ---- valid configurations ---------------------------------------------- */

static void test_full(void)
{
	const struct ktlsh_config_identity *web, *dflt;
	const struct ktlsh_config_client *up, *lab;
	const struct ktlsh_config_tls *t;
	static const unsigned char wire[] = "\x02h2\x08http/1.1";
	char text[4096 + PATH_MAX + sizeof(me)], path[PATH_MAX + 64];
	struct ktlsh_config *cfg;
	struct passwd *pw = getpwnam(me);

	snprintf(text, sizeof(text),
		 "# ktlshd test configuration\n"		/* 1 */
		 "[global]\n"
		 "socket = @ktlsh-test\n"
		 "workers = 3\n"
		 "log_level = debug\n"				/* 5 */
		 "max_inflight = 100\n"
		 "handshake_timeout = 2500ms\n"
		 "user = %s\n"
		 "ticket_rotation = 1h 30m\n"
		 "ticket_key_file = tickets.key\n"		/* 10 */
		 "\n"
		 "[identity web]\n"
		 "cert = ec.pem\n"
		 "key = ec.key\n"
		 "cert = rsa.pem\n"				/* 15 */
		 "key = rsa.key\n"
		 "server_names = www.example.com, *.example.org\n"
		 "\tapi.example.com\n"
		 "server_names = Example.NET\n"
		 "alpn = h2, http/1.1 ; inline comment\n"	/* 20 */
		 "ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n"
		 "    ECDHE-RSA-AES128-GCM-SHA256\n"
		 "ciphersuites = TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256\n"
		 "groups = X25519:P-256\n"
		 "min_version = 1.3\n"				/* 25 */
		 "tickets = off\n"
		 "trusted_peer = yes\n"
		 "allow_uids = 1000, root\n"
		 "allow_gids = 2000 root\n"
		 "verify_client = required\n"			/* 30 */
		 "ca_file = ca.pem\n"
		 "ca_dir = cadir\n"
		 "crl_file = crl.pem\n"
		 "\n"
		 "[identity default]\n"				/* 35 */
		 "cert = %s/ec.pem\n"
		 "key = ec.key\n"
		 "\n"
		 "[client upstream]\n"
		 "ca_file = ca.pem\n"				/* 40 */
		 "verify = yes\n"
		 "server_name = Backend.Example.com\n"
		 "cert = ec.pem\n"
		 "key = ec.key\n"
		 "alpn = h2\n"					/* 45 */
		 "allow_uids = *\n"
		 "min_version = TLSv1.2\n"
		 "\n"
		 "[client lab]\n"
		 "verify = insecure\n"				/* 50 */
		 "server_name = 192.0.2.1\n", me, dir);
	cfg = LOAD_OK(text);
	if (!cfg)
		return;
	if (cfg->warnings)
		fprintf(stderr, "\n    unexpected warnings: %s\n", cfg->warnings);
	CU_ASSERT_PTR_NULL(cfg->warnings);
	CU_ASSERT_STRING_EQUAL(cfg->path, conf);

	CU_ASSERT_STRING_EQUAL(cfg->global.socket, "@ktlsh-test");
	CU_ASSERT_EQUAL(cfg->global.workers, 3);
	CU_ASSERT_EQUAL(cfg->global.log_level, LOG_DEBUG);
	CU_ASSERT_EQUAL(cfg->global.max_inflight, 100);
	CU_ASSERT_EQUAL(cfg->global.handshake_timeout_ms, 2500);
	CU_ASSERT_STRING_EQUAL(cfg->global.user, me);
	CU_ASSERT_EQUAL(cfg->global.uid, pw->pw_uid);
	CU_ASSERT_EQUAL(cfg->global.gid, pw->pw_gid);
	CU_ASSERT_EQUAL(cfg->global.ticket_rotation_s, 5400);
	path_in(path, sizeof(path), "tickets.key");
	CU_ASSERT_STRING_EQUAL(cfg->global.ticket_key_file.str, path);
	CU_ASSERT_EQUAL(cfg->global.ticket_key_file.line, 10);

	CU_ASSERT_EQUAL_FATAL(cfg->n_identities, 2);
	web = cfg->identities[0];
	CU_ASSERT_STRING_EQUAL(web->name, "web");
	CU_ASSERT_EQUAL(web->line, 12);
	t = &web->tls;
	CU_ASSERT_EQUAL_FATAL(t->n_certs, 2);
	path_in(path, sizeof(path), "ec.pem");
	CU_ASSERT_STRING_EQUAL(t->certs[0].cert.str, path);
	CU_ASSERT_EQUAL(t->certs[0].cert.line, 13);
	path_in(path, sizeof(path), "ec.key");
	CU_ASSERT_STRING_EQUAL(t->certs[0].key.str, path);
	CU_ASSERT_EQUAL(t->certs[0].key.line, 14);
	path_in(path, sizeof(path), "rsa.pem");
	CU_ASSERT_STRING_EQUAL(t->certs[1].cert.str, path);
	path_in(path, sizeof(path), "rsa.key");
	CU_ASSERT_STRING_EQUAL(t->certs[1].key.str, path);
	CU_ASSERT_EQUAL(t->certs[1].key.line, 16);
	CU_ASSERT_EQUAL_FATAL(web->n_server_names, 4);
	CU_ASSERT_STRING_EQUAL(web->server_names[0], "www.example.com");
	CU_ASSERT_STRING_EQUAL(web->server_names[1], "*.example.org");
	CU_ASSERT_STRING_EQUAL(web->server_names[2], "api.example.com");
	CU_ASSERT_STRING_EQUAL(web->server_names[3], "example.net");
	CU_ASSERT_EQUAL_FATAL(t->n_alpn, 2);
	CU_ASSERT_STRING_EQUAL(t->alpn[0], "h2");
	CU_ASSERT_STRING_EQUAL(t->alpn[1], "http/1.1");
	CU_ASSERT_EQUAL_FATAL(t->alpn_wire_len, sizeof(wire) - 1);
	CU_ASSERT(!memcmp(t->alpn_wire, wire, sizeof(wire) - 1));
	CU_ASSERT_STRING_EQUAL(t->ciphers.str,
			       "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
	CU_ASSERT_EQUAL(t->ciphers.line, 21);
	CU_ASSERT_STRING_EQUAL(t->ciphersuites.str,
			       "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
	CU_ASSERT_STRING_EQUAL(t->groups.str, "X25519:P-256");
	CU_ASSERT_EQUAL(t->groups.line, 24);
	CU_ASSERT_EQUAL(t->min_version, KTLSH_CONFIG_TLS13);
	CU_ASSERT_FALSE(web->tickets);
	CU_ASSERT_TRUE(t->trusted_peer);
	CU_ASSERT_FALSE(t->acl.any);
	CU_ASSERT_EQUAL_FATAL(t->acl.n_uids, 2);
	CU_ASSERT_EQUAL(t->acl.uids[0], 1000);
	CU_ASSERT_EQUAL(t->acl.uids[1], 0);
	CU_ASSERT_EQUAL_FATAL(t->acl.n_gids, 2);
	CU_ASSERT_EQUAL(t->acl.gids[0], 2000);
	CU_ASSERT_EQUAL(t->acl.gids[1], 0);
	CU_ASSERT_EQUAL(web->verify_client, KTLSH_CONFIG_VERIFY_REQUIRED);
	path_in(path, sizeof(path), "ca.pem");
	CU_ASSERT_STRING_EQUAL(t->ca_file.str, path);
	path_in(path, sizeof(path), "cadir");
	CU_ASSERT_STRING_EQUAL(t->ca_dir.str, path);
	path_in(path, sizeof(path), "crl.pem");
	CU_ASSERT_STRING_EQUAL(t->crl_file.str, path);
	CU_ASSERT_EQUAL(t->crl_file.line, 33);

	/* Defaults of an identity that sets only its pair. */
	dflt = cfg->identities[1];
	CU_ASSERT_STRING_EQUAL(dflt->name, "default");
	CU_ASSERT_EQUAL(dflt->tls.n_certs, 1);
	path_in(path, sizeof(path), "ec.pem");
	CU_ASSERT_STRING_EQUAL(dflt->tls.certs[0].cert.str, path);
	CU_ASSERT_EQUAL(dflt->n_server_names, 0);
	CU_ASSERT_EQUAL(dflt->tls.n_alpn, 0);
	CU_ASSERT_PTR_NULL(dflt->tls.alpn_wire);
	CU_ASSERT_PTR_NULL(dflt->tls.ciphers.str);
	CU_ASSERT_PTR_NULL(dflt->tls.ciphersuites.str);
	CU_ASSERT_PTR_NULL(dflt->tls.groups.str);
	CU_ASSERT_EQUAL(dflt->tls.min_version, KTLSH_CONFIG_TLS12);
	CU_ASSERT_TRUE(dflt->tickets);
	CU_ASSERT_FALSE(dflt->tls.trusted_peer);
	CU_ASSERT_EQUAL(dflt->verify_client, KTLSH_CONFIG_VERIFY_NONE);
	CU_ASSERT_PTR_NULL(dflt->tls.ca_file.str);
	CU_ASSERT_EQUAL(dflt->tls.acl.n_uids + dflt->tls.acl.n_gids, 0);

	CU_ASSERT_EQUAL_FATAL(cfg->n_clients, 2);
	up = cfg->clients[0];
	CU_ASSERT_STRING_EQUAL(up->name, "upstream");
	CU_ASSERT_FALSE(up->insecure);
	CU_ASSERT_STRING_EQUAL(up->server_name, "backend.example.com");
	CU_ASSERT_EQUAL(up->tls.n_certs, 1);
	CU_ASSERT_EQUAL(up->tls.n_alpn, 1);
	CU_ASSERT_TRUE(up->tls.acl.any);
	CU_ASSERT_EQUAL(up->tls.min_version, KTLSH_CONFIG_TLS12);
	lab = cfg->clients[1];
	CU_ASSERT_TRUE(lab->insecure);
	CU_ASSERT_STRING_EQUAL(lab->server_name, "192.0.2.1");
	CU_ASSERT_EQUAL(lab->tls.n_certs, 0);

	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity(cfg, "web"), web);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity(cfg, "default"), dflt);
	CU_ASSERT_PTR_NULL(ktlsh_config_identity(cfg, "Web"));
	CU_ASSERT_PTR_NULL(ktlsh_config_identity(cfg, NULL));
	CU_ASSERT_PTR_EQUAL(ktlsh_config_client(cfg, "lab"), lab);
	CU_ASSERT_PTR_NULL(ktlsh_config_client(cfg, "web"));
	ktlsh_config_put(cfg);
}

static void test_defaults(void)
{
	struct ktlsh_config *cfg = LOAD_OK(WEB);

	if (!cfg)
		return;
	CU_ASSERT_STRING_EQUAL(cfg->global.socket, KTLSH_CONFIG_DEFAULT_SOCKET);
	CU_ASSERT_EQUAL(cfg->global.workers, 0);
	CU_ASSERT_EQUAL(cfg->global.log_level, LOG_INFO);
	CU_ASSERT_EQUAL(cfg->global.max_inflight,
			KTLSH_CONFIG_DEFAULT_MAX_INFLIGHT);
	CU_ASSERT_EQUAL(cfg->global.handshake_timeout_ms, 10000);
	CU_ASSERT_PTR_NULL(cfg->global.user);
	CU_ASSERT_EQUAL(cfg->global.ticket_rotation_s, 3600);
	CU_ASSERT_PTR_NULL(cfg->global.ticket_key_file.str);
	CU_ASSERT_PTR_NULL(cfg->warnings);
	ktlsh_config_put(cfg);
}

static void test_syntax_variants(void)
{
	struct ktlsh_config *cfg;

	/* BOM, CRLF, ':' as separator, comments of both kinds, indented
	 * keys right after a header, "auto", a bare number of seconds. */
	cfg = LOAD_OK("\xEF\xBB\xBF; comment\r\n"
		      "[ global ] ; comment\r\n"
		      "  workers: auto\r\n"
		      "# another comment\r\n"
		      "handshake_timeout = 3 ; seconds\r\n"
		      "socket=/run/x.sock\r\n"
		      "[identity   web]\r\n"
		      "cert = ec.pem\r\n"
		      "key = ec.key\r\n");
	if (cfg) {
		CU_ASSERT_EQUAL(cfg->global.workers, 0);
		CU_ASSERT_EQUAL(cfg->global.handshake_timeout_ms, 3000);
		CU_ASSERT_STRING_EQUAL(cfg->global.socket, "/run/x.sock");
		CU_ASSERT_PTR_NOT_NULL(ktlsh_config_identity(cfg, "web"));
	}
	ktlsh_config_put(cfg);

	/* Durations. */
	cfg = LOAD_OK("[global]\nhandshake_timeout = 1m 30s\n"
		      "ticket_rotation = 2d\n" WEB);
	if (cfg) {
		CU_ASSERT_EQUAL(cfg->global.handshake_timeout_ms, 90000);
		CU_ASSERT_EQUAL(cfg->global.ticket_rotation_s, 2 * 86400);
	}
	ktlsh_config_put(cfg);
	cfg = LOAD_OK("[global]\nhandshake_timeout = 1h\nticket_rotation = 1s\n" WEB);
	if (cfg) {
		CU_ASSERT_EQUAL(cfg->global.handshake_timeout_ms, 3600000);
		CU_ASSERT_EQUAL(cfg->global.ticket_rotation_s, 1);
	}
	ktlsh_config_put(cfg);
}

static void test_load_buffer(void)
{
	static const char text[] = WEB "server_names = a.example\n";
	struct ktlsh_config *cfg = NULL;
	char err[512], name[PATH_MAX + 64], path[PATH_MAX + 64];
	int ret;

	/* Not NUL-terminated: the length is what counts. */
	path_in(name, sizeof(name), "in-memory.conf");
	ret = ktlsh_config_load_buffer(name, text, sizeof(text) - 1, &cfg,
				       err, sizeof(err));
	CU_ASSERT_EQUAL_FATAL(ret, 0);
	path_in(path, sizeof(path), "ec.pem");
	CU_ASSERT_STRING_EQUAL(cfg->identities[0]->tls.certs[0].cert.str, path);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, NULL, "a.example"),
			    cfg->identities[0]);
	ktlsh_config_put(cfg);

	ret = ktlsh_config_load_buffer(name, "[global]\nworkers = 0\n", 21,
				       &cfg, err, sizeof(err));
	CU_ASSERT_EQUAL(ret, -EINVAL);
	CU_ASSERT_PTR_NULL(cfg);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "in-memory.conf:2: workers: expected"));
}

/*
 * Documentation/ktlshd.conf.example must load, once its /etc/ktlsh/ paths
 * point into our directory. Found from the working directory or from this
 * program's place in build/tests/.
 */
static FILE *open_example(void)
{
	char exe[PATH_MAX], path[PATH_MAX + 64];
	ssize_t n;
	FILE *f;
	int up;

	f = fopen("Documentation/ktlshd.conf.example", "r");
	if (f)
		return f;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	for (up = 0; up < 3; up++) {
		char *slash = strrchr(exe, '/');

		if (!slash)
			return NULL;
		*slash = '\0';
	}
	snprintf(path, sizeof(path), "%s/Documentation/ktlshd.conf.example",
		 exe);
	return fopen(path, "r");
}

static void test_example(void)
{
	static const char *const files[] = {
		"www-ecdsa.pem", "www-rsa.pem", "api.pem", "clients-ca.pem",
		"backend-ca.pem",
	};
	static const char *const keys[] = {
		"private/www-ecdsa.key", "private/www-rsa.key",
		"private/api.key",
	};
	char *in = NULL, *out = NULL, *c, prefix[PATH_MAX + 16];
	struct ktlsh_config *cfg;
	size_t len = 0, n, i;
	FILE *f, *o;

	if (!getpwnam("www-data") || !getgrnam("www-data")) {
		fprintf(stderr, "\n    SKIP: the example names www-data, which this system lacks ");
		return;
	}
	f = open_example();
	if (!f) {
		fprintf(stderr, "\n    SKIP: Documentation/ktlshd.conf.example not found ");
		return;
	}
	CU_ASSERT_FATAL(getdelim(&in, &len, '\0', f) > 0);
	fclose(f);
	snprintf(prefix, sizeof(prefix), "%s/", dir);
	o = open_memstream(&out, &n);
	CU_ASSERT_FATAL(o != NULL);
	for (c = in; *c; c++) {
		if (!strncmp(c, "/etc/ktlsh/", 11)) {
			fputs(prefix, o);
			c += 10;
		} else {
			fputc(*c, o);
		}
	}
	fclose(o);
	free(in);

	snprintf(prefix, sizeof(prefix), "%s/private", dir);
	CU_ASSERT_FATAL(mkdir(prefix, 0700) == 0 || errno == EEXIST);
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		CU_ASSERT_EQUAL(write_file(files[i], "PEM\n", 4, 0644), 0);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		CU_ASSERT_EQUAL(write_file(keys[i], "KEY\n", 4, 0600), 0);

	cfg = LOAD_OK(out);
	free(out);
	if (!cfg)
		return;
	CU_ASSERT_PTR_NULL(cfg->warnings);
	CU_ASSERT_EQUAL(cfg->n_identities, 2);
	CU_ASSERT_EQUAL(cfg->n_clients, 1);
	CU_ASSERT_EQUAL(ktlsh_config_identity(cfg, "www")->tls.n_certs, 2);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, NULL, "shop.example.com"),
			    ktlsh_config_identity(cfg, "www"));
	ktlsh_config_put(cfg);
}

/* ---- lookups and references -------------------------------------------- */

static void test_sni(void)
{
	const struct ktlsh_config_identity *a, *b, *c;
	struct ktlsh_config *cfg;

	cfg = LOAD_OK("[identity a]\ncert = ec.pem\nkey = ec.key\n"
		      "server_names = www.example.com *.example.com\n"
		      "[identity b]\ncert = ec.pem\nkey = ec.key\n"
		      "server_names = *.sub.example.com api.example.com\n"
		      "[identity c]\ncert = ec.pem\nkey = ec.key\n");
	if (!cfg)
		return;
	a = ktlsh_config_identity(cfg, "a");
	b = ktlsh_config_identity(cfg, "b");
	c = ktlsh_config_identity(cfg, "c");
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "www.example.com"), a);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "WWW.Example.COM"), a);
	/* Exact beats wildcard. */
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "api.example.com"), b);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "mail.example.com"), a);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "x.sub.example.com"), b);
	/* A wildcard covers one label: not the bare domain, not two labels. */
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "example.com"), c);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "a.b.example.org"), c);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "y.x.sub.example.com"), c);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, NULL, "a.b.example.org"), NULL);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, ".example.com"), c);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "*.example.com"), c);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, "www."), c);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, c, NULL), c);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, b, ""), b);
	CU_ASSERT_PTR_EQUAL(ktlsh_config_identity_for_sni(cfg, NULL, "localhost"), NULL);
	ktlsh_config_put(cfg);
}

static void test_may_use(void)
{
	const struct ktlsh_config_identity *a, *b, *any;
	const struct ktlsh_config_client *cl;
	struct ktlsh_config *cfg;

	cfg = LOAD_OK("[identity a]\ncert = ec.pem\nkey = ec.key\n"
		      "allow_uids = 1000 1001\nallow_gids = 50\n"
		      "[identity b]\ncert = ec.pem\nkey = ec.key\n"
		      "[identity any]\ncert = ec.pem\nkey = ec.key\n"
		      "allow_gids = *\n"
		      "[client c]\nallow_uids = 7\n");
	if (!cfg)
		return;
	a = ktlsh_config_identity(cfg, "a");
	b = ktlsh_config_identity(cfg, "b");
	any = ktlsh_config_identity(cfg, "any");
	cl = ktlsh_config_client(cfg, "c");
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, a, 1000, 1000), 0);
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, a, 1001, 9), 0);
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, a, 1002, 50), 0);
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, a, 1002, 51), -EACCES);
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, a, 0, 0), 0);
	/* No list: nobody but root. */
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, b, 1000, 1000), -EACCES);
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, b, 0, 0), 0);
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, any, 12345, 12345), 0);
	CU_ASSERT_EQUAL(ktlsh_config_may_use(cfg, NULL, 0, 0), -EACCES);
	CU_ASSERT_EQUAL(ktlsh_config_client_may_use(cfg, cl, 7, 7), 0);
	CU_ASSERT_EQUAL(ktlsh_config_client_may_use(cfg, cl, 8, 7), -EACCES);
	ktlsh_config_put(cfg);
}

struct slot_reader {
	struct ktlsh_config_slot *slot;
	int loops;
	int bad;
};

static void *slot_reader_run(void *arg)
{
	struct slot_reader *r = arg;
	struct ktlsh_config *cfg;
	int i;

	for (i = 0; i < r->loops; i++) {
		cfg = ktlsh_config_slot_get(r->slot);
		/* Use it as a handshake would, after a possible swap. */
		if (!cfg || !ktlsh_config_identity(cfg, "web"))
			r->bad++;
		ktlsh_config_put(cfg);
	}
	return NULL;
}

static void test_refs_and_slot(void)
{
	struct ktlsh_config *one, *two, *held;
	struct ktlsh_config_slot slot;
	struct slot_reader r[4];
	pthread_t th[4];
	int i;

	one = LOAD_OK(WEB);
	two = LOAD_OK(WEB "server_names = x.example\n");
	if (!one || !two)
		return;
	CU_ASSERT_PTR_EQUAL(ktlsh_config_get(one), one);
	ktlsh_config_put(one);
	ktlsh_config_put(NULL);

	ktlsh_config_slot_init(&slot, one);
	held = ktlsh_config_slot_get(&slot);
	CU_ASSERT_PTR_EQUAL(held, one);
	ktlsh_config_slot_replace(&slot, two);
	/* The handshake that began under "one" still has it. */
	CU_ASSERT_STRING_EQUAL(held->identities[0]->name, "web");
	CU_ASSERT_EQUAL(held->n_sni, 0);
	ktlsh_config_put(held);

	for (i = 0; i < 4; i++) {
		r[i] = (struct slot_reader){ .slot = &slot, .loops = 20000 };
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL,
						     slot_reader_run, &r[i]), 0);
	}
	for (i = 0; i < 200; i++) {
		char err[256];
		struct ktlsh_config *next;

		if (ktlsh_config_load(conf, &next, err, sizeof(err)))
			break;
		ktlsh_config_slot_replace(&slot, next);
	}
	CU_ASSERT_EQUAL(i, 200);
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CU_ASSERT_EQUAL(r[i].bad, 0);
	}
	ktlsh_config_slot_destroy(&slot);
}

/* ---- errors: the file itself ------------------------------------------- */

static void test_err_file(void)
{
	struct ktlsh_config *cfg = (void *)1;
	char err[PATH_MAX + 256], want[PATH_MAX + 256];
	char big[PATH_MAX + 64];
	char *text;
	int ret;

	ret = ktlsh_config_load("/nonexistent/ktlshd.conf", &cfg, err,
				sizeof(err));
	CU_ASSERT_EQUAL(ret, -ENOENT);
	CU_ASSERT_PTR_NULL(cfg);
	CU_ASSERT_STRING_EQUAL(err,
		"/nonexistent/ktlshd.conf: No such file or directory");

	ret = ktlsh_config_load(dir, &cfg, err, sizeof(err));
	CU_ASSERT_EQUAL(ret, -EISDIR);
	snprintf(want, sizeof(want), "%s: Is a directory", dir);
	CU_ASSERT_STRING_EQUAL(err, want);

	/* Over 1 MiB: refused before parsing. */
	text = malloc((1u << 20) + 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	memset(text, '#', (1u << 20) + 1);
	text[(1u << 20) + 1] = '\0';
	CU_ASSERT_EQUAL(write_file("big.conf", text, (1u << 20) + 1, 0644), 0);
	free(text);
	path_in(big, sizeof(big), "big.conf");
	ret = ktlsh_config_load(big, &cfg, err, sizeof(err));
	CU_ASSERT_EQUAL(ret, -EFBIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "big.conf: file is larger than 1 MiB"));

	/* An empty file is valid, with a warning: it serves nothing. */
	cfg = LOAD_OK("");
	CU_ASSERT(cfg && cfg->warnings && strstr(cfg->warnings,
		  "no [identity NAME] or [client NAME] section"));
	ktlsh_config_put(cfg);
}

/* Syntax that libinih rejects, and what the reader refuses for it. */
static void test_err_syntax(void)
{
	char text[512];
	struct ktlsh_config *cfg;
	char err[1024];
	int ret;

	EXPECT_ONLY("[global]\nworkers 2\n", 2,
		    "expected 'key = value', '[section]' or a comment");
	EXPECT_ONLY("[global\nworkers = 2\n", 1, "section header without ']'");
	EXPECT_ONLY("[global ; comment]\n", 1, "section header without ']'");
	EXPECT_ONLY("[global] workers = 2\n", 1, "unexpected text after ']'");
	/* Nothing of a section with a broken header is read, not even the
	 * continuation of a key before it. */
	EXPECT_ONLY(WEB "server_names = a.example\n[global\n\tb!.example\n"
		    "workers = x\n", 5, "section header without ']'");
	/* "; " starts a comment, so this line has no '='. */
	EXPECT_ONLY("[global]\nworkers ; = 2\n", 2,
		    "expected 'key = value', '[section]' or a comment");
	/* Every syntax error is reported, not only the first. */
	EXPECT_ERROR("[global]\nworkers 2\nlog_level debug\n", 2, "expected");
	EXPECT_ERROR("[global]\nworkers 2\nlog_level debug\n", 3, "expected");

	memset(text, 0, sizeof(text));
	snprintf(text, sizeof(text), "[global]\nsocket = /run/");
	memset(text + strlen(text), 'x', 250);
	strcat(text, "\n");
	EXPECT_ONLY(text, 2,
		    "line is longer than 198 characters; continue a list on indented lines");

	ret = ktlsh_config_load_buffer(conf, "[global]\nwork\0ers = 2\n", 22,
				       &cfg, err, sizeof(err));
	CU_ASSERT_EQUAL(ret, -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, ":2: line contains a NUL byte"));

	EXPECT_ONLY("workers = 2\n[global]\n", 1,
		    "'workers' is outside any section; settings go after [global], [identity NAME] or [client NAME]");
	EXPECT_ONLY("[global]\n= 2\n", 2, "no key name before '='");
}

static void test_err_sections(void)
{
	EXPECT_ONLY(WEB "\n[frobnicate]\nx = 1\n", 5,
		    "unknown section [frobnicate]; expected [global], [identity NAME], [client NAME] or [service NAME]");
	EXPECT_ONLY("[]\n", 1, "unknown section []");
	EXPECT_ONLY("[global]\n[global]\nworkers = 2\n", 2,
		    "duplicate section [global] (first at line 1)");
	EXPECT_ONLY(WEB "[identity web]\ncert = ec.pem\nkey = ec.key\n", 4,
		    "duplicate section [identity web] (first at line 1)");
	EXPECT_ONLY("[client c]\n[client c]\n", 2,
		    "duplicate section [client c] (first at line 1)");
	EXPECT_ONLY("[global x]\n", 1, "[global] takes no name");
	EXPECT_ONLY("[identity]\ncert = ec.pem\n", 1,
		    "[identity] needs a name: [identity NAME]");
	EXPECT_ONLY("[client]\n", 1, "[client] needs a name: [client NAME]");
	EXPECT_ONLY("[identity a b]\n", 1,
		    "invalid identity name 'a b': one word of up to 32 letters, digits, '.', '_' or '-'");
	EXPECT_ONLY("[identity we/b]\n", 1, "invalid identity name 'we/b'");
	EXPECT_ONLY("[identity abcdefghijabcdefghijabcdefghijabc]\n", 1,
		    "invalid identity name 'abcdefghijabcdefghijabcdefghijabc'");
	EXPECT_ONLY("[client abcdefghijabcdefghijabcdefghijabcdefghijabcdefghij]\n",
		    1, "section header is longer than 49 characters");
	/* A missing required key is reported at the header. */
	EXPECT_ONLY("[global]\n\n[identity web]\nserver_names = a.example\n", 3,
		    "[identity web] has no cert; add 'cert = PATH' and 'key = PATH'");
	EXPECT_ONLY("[identity web]\n", 1, "[identity web] has no cert");
}

/* ---- [service NAME]: the proxy ------------------------------------------ */

static void check_addr(const struct ktlsh_config_addr *a, int family, const char *ip,
		       unsigned int port)
{
	char buf[64] = "";
	unsigned int p = 0;

	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;

		inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
		p = ntohs(in->sin_port);
	} else if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
		p = ntohs(in6->sin6_port);
	}
	CU_ASSERT_EQUAL(a->ss.ss_family, family);
	CU_ASSERT_STRING_EQUAL(buf, ip);
	CU_ASSERT_EQUAL(p, port);
	CU_ASSERT(a->len > 0);
}

static void test_service(void)
{
	const struct ktlsh_config_service *t, *o, *d, *p;
	static const unsigned char wire[] = "\x02h2\x08http/1.1";
	struct ktlsh_config *cfg;

	cfg = LOAD_OK(WEB						/* 1-3 */
		      "[client up]\nca_file = ec.pem\nserver_name = up.example\n"
		      "[service tls]\n"					/* 7 */
		      "mode = terminate\n"
		      "listen = 127.0.0.1:8443\n"
		      "backend = [::1]:8080\n"				/* 10 */
		      "identity = web\n"
		      "alpn = h2, http/1.1\n"
		      "proxy_protocol = v2\n"
		      "max_connections = 100\n"
		      "idle_timeout = 90s\n"				/* 15 */
		      "fallback = refuse\n"
		      "data_path = splice\n"
		      "[service out]\n"
		      "mode = originate\n"
		      "listen = *:8080\n"				/* 20 */
		      "connect = 127.0.0.1:443\n"
		      "server_name = Remote.Example\n"
		      "client = up\n"
		      "[service dflt]\nmode = terminate\nlisten = [::1]:9443\n"
		      "backend = localhost:80\ndata_path = auto\n"
		      "[service plain]\nmode = originate\nlisten = 127.0.0.1:1\n"
		      "connect = [::1]:2\nidle_timeout = off\nproxy_protocol = off\n"
		      "data_path = copy\nfallback = userspace\n");
	if (!cfg)
		return;
	CU_ASSERT_EQUAL(cfg->n_services, 4);
	t = ktlsh_config_service(cfg, "tls");
	o = ktlsh_config_service(cfg, "out");
	d = ktlsh_config_service(cfg, "dflt");
	p = ktlsh_config_service(cfg, "plain");
	CU_ASSERT_PTR_NULL(ktlsh_config_service(cfg, "TLS"));
	CU_ASSERT_PTR_NULL(ktlsh_config_service(cfg, NULL));
	if (!t || !o || !d || !p)
		return;
	CU_ASSERT_STRING_EQUAL(t->name, "tls");
	CU_ASSERT_EQUAL(t->line, 7);
	CU_ASSERT_EQUAL(t->mode, KTLSH_SERVICE_TERMINATE);
	check_addr(&t->listen, AF_INET, "127.0.0.1", 8443);
	CU_ASSERT_STRING_EQUAL(t->listen.text, "127.0.0.1:8443");
	CU_ASSERT_EQUAL(t->listen.line, 9);
	check_addr(&t->target, AF_INET6, "::1", 8080);
	CU_ASSERT_STRING_EQUAL(t->target.host, "::1");
	CU_ASSERT_PTR_EQUAL(t->identity, ktlsh_config_identity(cfg, "web"));
	CU_ASSERT_PTR_NULL(t->client);
	CU_ASSERT_EQUAL(t->tls.n_alpn, 2);
	CU_ASSERT_EQUAL(t->tls.alpn_wire_len, sizeof(wire) - 1);
	CU_ASSERT(!memcmp(t->tls.alpn_wire, wire, sizeof(wire) - 1));
	CU_ASSERT(t->proxy_protocol);
	CU_ASSERT_EQUAL(t->max_connections, 100);
	CU_ASSERT_EQUAL(t->idle_timeout_ms, 90000);
	CU_ASSERT_EQUAL(t->fallback, KTLSH_FALLBACK_REFUSE);
	CU_ASSERT_EQUAL(t->data_path, KTLSH_DATA_SPLICE);

	CU_ASSERT_EQUAL(o->mode, KTLSH_SERVICE_ORIGINATE);
	check_addr(&o->listen, AF_INET, "0.0.0.0", 8080);
	check_addr(&o->target, AF_INET, "127.0.0.1", 443);
	CU_ASSERT_STRING_EQUAL(o->server_name, "remote.example");
	CU_ASSERT_PTR_EQUAL(o->client, ktlsh_config_client(cfg, "up"));
	CU_ASSERT_PTR_NULL(o->identity);
	/* Defaults. */
	CU_ASSERT(!o->proxy_protocol);
	CU_ASSERT_EQUAL(o->max_connections, KTLSH_CONFIG_DEFAULT_MAX_CONNECTIONS);
	CU_ASSERT_EQUAL(o->idle_timeout_ms, KTLSH_CONFIG_DEFAULT_IDLE_TIMEOUT_MS);
	CU_ASSERT_EQUAL(o->fallback, KTLSH_FALLBACK_USERSPACE);
	CU_ASSERT_EQUAL(o->data_path, KTLSH_DATA_AUTO);
	CU_ASSERT_EQUAL(o->tls.n_alpn, 0);

	/* The only identity / client profile when none is named; host names
	 * resolve when the file loads. */
	CU_ASSERT_PTR_EQUAL(d->identity, ktlsh_config_identity(cfg, "web"));
	check_addr(&d->listen, AF_INET6, "::1", 9443);
	CU_ASSERT_STRING_EQUAL(d->target.host, "localhost");
	CU_ASSERT(d->target.ss.ss_family == AF_INET || d->target.ss.ss_family == AF_INET6);
	CU_ASSERT_PTR_EQUAL(p->client, ktlsh_config_client(cfg, "up"));
	CU_ASSERT_PTR_NULL(p->server_name);
	CU_ASSERT_EQUAL(p->idle_timeout_ms, 0);
	CU_ASSERT_EQUAL(p->data_path, KTLSH_DATA_COPY);
	CU_ASSERT_EQUAL(d->data_path, KTLSH_DATA_AUTO);
	ktlsh_config_put(cfg);

	/* Sections may come in any order: references resolve at the end. */
	cfg = LOAD_OK("[service s]\nmode = terminate\nlisten = 127.0.0.1:1\n"
		      "backend = 127.0.0.1:2\nidentity = b\n"
		      WEB "[identity b]\ncert = ec.pem\nkey = ec.key\n");
	if (cfg) {
		t = ktlsh_config_service(cfg, "s");
		CU_ASSERT_PTR_EQUAL(t ? t->identity : NULL, ktlsh_config_identity(cfg, "b"));
		ktlsh_config_put(cfg);
	}
}

#define SVC_T "[service s]\nmode = terminate\nlisten = 127.0.0.1:8443\nbackend = 127.0.0.1:80\n"
#define SVC_O "[client c]\n[service s]\nmode = originate\nlisten = 127.0.0.1:8080\n" \
	      "connect = 127.0.0.1:443\n"

static void test_err_service(void)
{
	/* Sections. */
	EXPECT_ONLY(WEB "[service]\n", 4, "[service] needs a name: [service NAME]");
	EXPECT_ONLY(WEB "[service a b]\n", 4,
		    "invalid service name 'a b': one word of up to 32 letters, digits, '.', '_' or '-'");
	EXPECT_ONLY(WEB SVC_T "[service s]\n", 8, "duplicate section [service s] (first at line 4)");
	/* Required keys, reported at the header. */
	EXPECT_ONLY(WEB "[service s]\nlisten = 127.0.0.1:1\nbackend = 127.0.0.1:2\n", 4,
		    "[service s] has no mode; add 'mode = terminate' or 'mode = originate'");
	EXPECT_ONLY(WEB "[service s]\nmode = terminate\nbackend = 127.0.0.1:2\n", 4,
		    "[service s] has no listen address; add 'listen = ADDR:PORT'");
	EXPECT_ONLY(WEB "[service s]\nmode = terminate\nlisten = 127.0.0.1:2\n", 4,
		    "[service s] (terminate) has no backend; add 'backend = ADDR:PORT'");
	EXPECT_ONLY("[client c]\n[service s]\nmode = originate\nlisten = 127.0.0.1:2\n", 2,
		    "[service s] (originate) has no remote address; add 'connect = HOST:PORT'");
	/* Keys of the other mode, reported where they are. */
	EXPECT_ONLY(WEB SVC_T "connect = 127.0.0.1:3\n", 8,
		    "connect: not valid with mode = terminate; the plaintext side is 'backend'");
	EXPECT_ONLY(WEB "[client c]\n" SVC_T "client = c\n", 9,
		    "client: not valid with mode = terminate; a terminating service presents an 'identity'");
	EXPECT_ONLY(WEB SVC_T "server_name = a.example\n", 8,
		    "server_name: not valid with mode = terminate; server names belong to the [identity]");
	EXPECT_ONLY(SVC_O "backend = 127.0.0.1:3\n", 6,
		    "backend: not valid with mode = originate; the TLS side is 'connect'");
	EXPECT_ONLY(WEB SVC_O "identity = web\n", 9,
		    "identity: not valid with mode = originate; an originating service uses a 'client' profile");
	EXPECT_ONLY(SVC_O "proxy_protocol = v2\n", 6,
		    "proxy_protocol: not valid with mode = originate");
	/* References. */
	EXPECT_ONLY(WEB SVC_T "identity = nope\n", 8, "identity: there is no [identity nope]");
	EXPECT_ONLY(SVC_O "client = nope\n", 6, "client: there is no [client nope]");
	EXPECT_ONLY(WEB "[identity b]\ncert = ec.pem\nkey = ec.key\n" SVC_T, 7,
		    "[service s] needs 'identity = NAME': the file has 2 [identity] sections");
	EXPECT_ONLY("[client c]\n" SVC_T, 2,
		    "[service s] needs 'identity = NAME': the file has 0 [identity] sections");
	EXPECT_ONLY("[client c]\n[client d]\n[service s]\nmode = originate\n"
		    "listen = 127.0.0.1:1\nconnect = 127.0.0.1:2\n", 3,
		    "[service s] needs 'client = NAME': the file has 2 [client] sections");
	EXPECT_ONLY(WEB SVC_T "identity = a/b\n", 8,
		    "identity: expected the name of an [identity NAME] section, got 'a/b'");
	/* Values. */
	EXPECT_ONLY(WEB "[service s]\nmode = proxy\nlisten = 127.0.0.1:1\n", 5,
		    "mode: expected terminate or originate, got 'proxy'");
	EXPECT_ERROR(WEB "[service s]\nmode = terminate\nlisten = 8443\n", 6,
		     "listen: expected ADDR:PORT, like 0.0.0.0:443, [::1]:8443 or *:443, got '8443'");
	EXPECT_ERROR(WEB "[service s]\nmode = terminate\nlisten = 127.0.0.1:0\n", 6,
		     "listen: expected ADDR:PORT");
	EXPECT_ERROR(WEB "[service s]\nmode = terminate\nlisten = 127.0.0.1:65536\n", 6,
		     "listen: expected ADDR:PORT");
	EXPECT_ERROR(WEB "[service s]\nmode = terminate\nlisten = 127.0.0.1:http\n", 6,
		     "listen: expected ADDR:PORT");
	EXPECT_ERROR(WEB "[service s]\nmode = terminate\nlisten = :443\n", 6,
		     "listen: expected ADDR:PORT");
	EXPECT_ERROR(WEB "[service s]\nmode = terminate\nlisten = [::1]443\n", 6,
		     "listen: expected ADDR:PORT");
	EXPECT_ERROR(WEB "[service s]\nmode = terminate\nlisten = ::1:443\n", 6,
		     "listen: write an IPv6 address in brackets, like [::1]:443; got '::1:443'");
	EXPECT_ERROR(WEB "[service s]\nmode = terminate\nlisten = [zz::1]:443\n", 6,
		     "listen: cannot resolve 'zz::1': ");
	EXPECT_ONLY(WEB "[service s]\nmode = terminate\nlisten = 127.0.0.1:1\nbackend = *:80\n", 7,
		    "backend: expected ADDR:PORT or HOST:PORT, like 127.0.0.1:8080, got '*:80'");
	EXPECT_ONLY(WEB SVC_T "proxy_protocol = v1\n", 8,
		    "proxy_protocol: expected v2 or off, got 'v1'");
	EXPECT_ONLY(WEB SVC_T "max_connections = 0\n", 8,
		    "max_connections: expected a number from 1 to 1048576, got '0'");
	EXPECT_ONLY(WEB SVC_T "max_connections = 1048577\n", 8,
		    "max_connections: expected a number from 1 to 1048576");
	EXPECT_ONLY(WEB SVC_T "idle_timeout = 500ms\n", 8,
		    "idle_timeout: expected off or a duration from 1s to 7d, like 5min, got '500ms'");
	EXPECT_ONLY(WEB SVC_T "idle_timeout = forever\n", 8, "idle_timeout: expected off");
	EXPECT_ONLY(WEB SVC_T "idle_timeout = 8d\n", 8, "idle_timeout: expected off");
	EXPECT_ONLY(WEB SVC_T "fallback = maybe\n", 8,
		    "fallback: expected userspace or refuse, got 'maybe'");
	EXPECT_ONLY(WEB SVC_T "data_path = zerocopy\n", 8,
		    "data_path: expected auto, copy or splice, got 'zerocopy'");
	EXPECT_ONLY(SVC_O "server_name = a..b\n", 6,
		    "server_name: expected a host name or IP address, got 'a..b'");
	EXPECT_ONLY(WEB SVC_T "alpn = ,\n", 8, "alpn: expected protocol names");
	/* Keys: duplicates, unknown, misplaced. */
	EXPECT_ONLY(WEB SVC_T "mode = originate\n", 8, "duplicate key 'mode' (first set at line 5)");
	EXPECT_ONLY(WEB SVC_T "foo = 1\n", 8, "unknown key 'foo' in [service]");
	EXPECT_ONLY(WEB SVC_T "cert = ec.pem\n", 8,
		    "'cert' is not valid in [service]; it belongs in [identity NAME] or [client NAME]");
	EXPECT_ONLY("[global]\nmode = terminate\n", 2,
		    "'mode' is not valid in [global]; it belongs in [service NAME]");
	EXPECT_ONLY(WEB "server_name = a.example\n", 4,
		    "'server_name' is not valid in [identity]; it belongs in [client NAME] or [service NAME]");
	EXPECT_ONLY("[global]\nalpn = h2\n", 2,
		    "'alpn' is not valid in [global]; it belongs in [identity NAME], [client NAME] or [service NAME]");
	/* Two services on one address. */
	EXPECT_ONLY(WEB SVC_T "[service t]\nmode = terminate\nlisten = 127.0.0.1:8443\n"
		    "backend = 127.0.0.1:81\n", 10,
		    "listen: 127.0.0.1:8443 is already the address of [service s] at line 6");
}

/* ---- [handshake]: the kernel's handshake upcall ------------------------ */

static void test_handshake(void)
{
	const struct ktlsh_config_handshake *hs;
	struct ktlsh_config *cfg;
	char want[PATH_MAX + 64];

	cfg = LOAD_OK("[global]\nhandshake_timeout = 7s\n"
		      "[handshake]\n"				/* 3 */
		      "keyrings = .nvme;.nfs 0x1c8b2e7e\n"
		      "  .nfsd\n"
		      "timeout = 3s\n"
		      "verify_client = required\n"
		      "ciphersuites = TLS_AES_128_GCM_SHA256\n"
		      "  TLS_AES_256_GCM_SHA384\n"
		      "groups = X25519:P-256\n"			/* 10 */
		      "client_cert = ec.pem\n"
		      "client_key = ec.key\n"
		      "client_ca_file = ca.pem\n"
		      "client_crl_file = crl.pem\n"
		      "server_cert = rsa.pem\n"			/* 15 */
		      "server_key = rsa.key\n"
		      "server_ca_dir = cadir\n");
	if (!cfg)
		return;
	hs = &cfg->handshake;
	CU_ASSERT_EQUAL(hs->line, 3);
	CU_ASSERT(hs->enabled);
	CU_ASSERT_EQUAL(hs->n_keyrings, 4);
	if (hs->n_keyrings == 4) {
		CU_ASSERT_STRING_EQUAL(hs->keyrings[0], ".nvme");
		CU_ASSERT_STRING_EQUAL(hs->keyrings[1], ".nfs");
		CU_ASSERT_STRING_EQUAL(hs->keyrings[2], "0x1c8b2e7e");
		CU_ASSERT_STRING_EQUAL(hs->keyrings[3], ".nfsd");
	}
	CU_ASSERT_EQUAL(hs->timeout_ms, 3000);
	CU_ASSERT_EQUAL(cfg->global.handshake_timeout_ms, 7000);
	CU_ASSERT_EQUAL(hs->verify_client, KTLSH_CONFIG_VERIFY_REQUIRED);
	CU_ASSERT_STRING_EQUAL(hs->ciphersuites.str,
			       "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384");
	CU_ASSERT_EQUAL(hs->ciphersuites.line, 8);
	CU_ASSERT_STRING_EQUAL(hs->groups.str, "X25519:P-256");
	path_in(want, sizeof(want), "ec.pem");
	CU_ASSERT_STRING_EQUAL(hs->client.certkey.cert.str, want);
	CU_ASSERT_EQUAL(hs->client.certkey.cert.line, 11);
	path_in(want, sizeof(want), "ec.key");
	CU_ASSERT_STRING_EQUAL(hs->client.certkey.key.str, want);
	path_in(want, sizeof(want), "ca.pem");
	CU_ASSERT_STRING_EQUAL(hs->client.ca_file.str, want);
	CU_ASSERT_PTR_NULL(hs->client.ca_dir.str);
	path_in(want, sizeof(want), "crl.pem");
	CU_ASSERT_STRING_EQUAL(hs->client.crl_file.str, want);
	path_in(want, sizeof(want), "rsa.pem");
	CU_ASSERT_STRING_EQUAL(hs->server.certkey.cert.str, want);
	CU_ASSERT_EQUAL(hs->server.certkey.cert.line, 15);
	path_in(want, sizeof(want), "rsa.key");
	CU_ASSERT_STRING_EQUAL(hs->server.certkey.key.str, want);
	path_in(want, sizeof(want), "cadir");
	CU_ASSERT_STRING_EQUAL(hs->server.ca_dir.str, want);
	CU_ASSERT_PTR_NULL(hs->server.ca_file.str);
	/* An upcall-only daemon is a complete configuration. */
	CU_ASSERT_PTR_NULL(cfg->warnings);
	ktlsh_config_put(cfg);

	/* Defaults: served, optional client certificates, [global]'s timeout. */
	cfg = LOAD_OK("[handshake]\nserver_cert = ec.pem\nserver_key = ec.key\n" WEB);
	if (!cfg)
		return;
	hs = &cfg->handshake;
	CU_ASSERT(hs->enabled);
	CU_ASSERT_EQUAL(hs->line, 1);
	CU_ASSERT_EQUAL(hs->verify_client, KTLSH_CONFIG_VERIFY_OPTIONAL);
	CU_ASSERT_EQUAL(hs->timeout_ms, 0);
	CU_ASSERT_EQUAL(hs->n_keyrings, 0);
	CU_ASSERT_PTR_NULL(hs->client.certkey.cert.str);
	CU_ASSERT_PTR_NULL(hs->ciphersuites.str);
	/* The section ends at the next header: [identity web] follows it. */
	CU_ASSERT_EQUAL(cfg->n_identities, 1);
	CU_ASSERT_PTR_NULL(cfg->warnings);
	ktlsh_config_put(cfg);

	/* No section: not served. */
	cfg = LOAD_OK(WEB);
	if (cfg) {
		CU_ASSERT_EQUAL(cfg->handshake.line, 0);
		CU_ASSERT(!cfg->handshake.enabled);
		ktlsh_config_put(cfg);
	}

	/* enabled = no keeps the settings but serves nothing. */
	cfg = LOAD_OK("[handshake]\nenabled = no\nserver_cert = ec.pem\nserver_key = ec.key\n");
	if (cfg) {
		CU_ASSERT(!cfg->handshake.enabled);
		CU_ASSERT(cfg->handshake.server.certkey.cert.str != NULL);
		CU_ASSERT(cfg->warnings &&
			  strstr(cfg->warnings, "no [identity NAME] or [client NAME] section"));
		ktlsh_config_put(cfg);
	}
}

#define HS_SERVER "server_cert = ec.pem\nserver_key = ec.key\n"

static void test_err_handshake(void)
{
	char many[1024];
	size_t n;
	int i;

	EXPECT_ONLY("[handshake nfs]\n", 1, "[handshake] takes no name");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "[handshake]\n", 4,
		    "duplicate section [handshake] (first at line 1)");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "cert = ec.pem\n", 4,
		    "'cert' is not valid in [handshake]; keys there name the role, like client_cert, server_cert, client_ca_file, server_ca_file");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "keyring = .nvme\n", 4,
		    "unknown key 'keyring' in [handshake]");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "= 1\n", 4, "no key name before '='");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "timeout = 1s\ntimeout = 2s\n", 5,
		    "duplicate key 'timeout' (first set at line 4)");
	EXPECT_ONLY(WEB "client_cert = ec.pem\n", 4, "unknown key 'client_cert' in [identity]");

	/* Values. */
	EXPECT_ONLY("[handshake]\n" HS_SERVER "enabled = maybe\n", 4,
		    "enabled: expected yes or no, got 'maybe'");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "timeout = 0\n", 4,
		    "timeout: expected a duration from 1ms to 1h, like 10s, got '0'");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "timeout = 2h\n", 4,
		    "timeout: expected a duration from 1ms to 1h, like 10s, got '2h'");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "verify_client = sometimes\n", 4,
		    "verify_client: expected none, optional or required, got 'sometimes'");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "keyrings = .nvme 0\n", 4,
		    "keyrings: expected keyring names or serials, like .nvme or 0x1c8b2e7e, got '0'");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "keyrings = 0x80000000\n", 4,
		    "keyrings: expected keyring names or serials, like .nvme or 0x1c8b2e7e, got '0x80000000'");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "keyrings = 12abc\n", 4,
		    "keyrings: expected keyring names or serials, like .nvme or 0x1c8b2e7e, got '12abc'");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "keyrings = ,\n", 4,
		    "keyrings: expected keyring names or serials, like .nvme or 0x1c8b2e7e, got ','");
	n = (size_t)snprintf(many, sizeof(many), "[handshake]\n" HS_SERVER "keyrings =");
	for (i = 0; i < 17; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, " k%d", i);
	snprintf(many + n, sizeof(many) - n, "\n");
	EXPECT_ONLY(many, 4, "keyrings: more than 16 keyrings");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "ciphersuites = TLS_AES_128_GCM_SHA256 x\n", 4,
		    "ciphersuites: expected an OpenSSL TLS 1.3 ciphersuite list, got 'TLS_AES_128_GCM_SHA256 x'");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "timeout = 1s\n  2s\n", 5,
		    "indented line continues 'timeout', which takes one value; remove the indentation");
	EXPECT_ONLY("[handshake]\n" HS_SERVER "keyrings = .nvme\n  server_ca_file = ca.pem\n", 5,
		    "indented line continues 'keyrings'; remove the indentation to start a new key or section");

	/* Pairs and files. */
	EXPECT_ONLY("[handshake]\n" HS_SERVER "client_cert = ec.pem\n", 4,
		    "client_cert: has no client_key; add 'client_key = PATH'");
	EXPECT_ONLY("[handshake]\nserver_key = ec.key\n", 2,
		    "server_key: has no server_cert; add 'server_cert = PATH'");
	EXPECT_ERROR("[handshake]\n" HS_SERVER "client_ca_file = nope.pem\n", 4,
		     "client_ca_file: cannot open '");
	EXPECT_ERROR("[handshake]\n" HS_SERVER "server_ca_dir = ec.pem\n", 4,
		     "server_ca_dir: cannot open '");
	EXPECT_ONLY("[handshake]\nserver_cert = cadir\nserver_key = ec.key\n", 2,
		    "server_cert: '");
}

static void test_warn_handshake(void)
{
	struct ktlsh_config *cfg;

	cfg = LOAD_OK("[handshake]\nkeyrings = .nvme .nvme\n");
	if (cfg) {
		CU_ASSERT(has_warning(cfg, 2, "keyrings: '.nvme' is listed twice"));
		CU_ASSERT(has_warning(cfg, 1,
			  "[handshake] has no server_cert: server-side handshakes (nfsd with TLS) work only when the kernel names a certificate in a keyring"));
		CU_ASSERT_EQUAL(cfg->handshake.n_keyrings, 1);
		ktlsh_config_put(cfg);
	}
	cfg = LOAD_OK("[handshake]\n" HS_SERVER "verify_client = none\nserver_ca_file = ca.pem\n");
	if (cfg) {
		CU_ASSERT(has_warning(cfg, 5,
			  "server_ca_file: has no effect with verify_client = none"));
		ktlsh_config_put(cfg);
	}
	cfg = LOAD_OK("[handshake]\nserver_cert = ec.pem\nserver_key = open.key\n");
	if (cfg) {
		CU_ASSERT(has_warning(cfg, 3, "server_key: '"));
		CU_ASSERT(cfg->warnings && strstr(cfg->warnings, "is readable by every user"));
		ktlsh_config_put(cfg);
	}
}

static void test_err_keys(void)
{
	EXPECT_ONLY("[global]\nfoo = 1\n", 2, "unknown key 'foo' in [global]");
	EXPECT_ONLY(WEB "bar = 1\n", 4, "unknown key 'bar' in [identity]");
	EXPECT_ONLY("[client c]\ntickets = on\n", 2,
		    "'tickets' is not valid in [client]; it belongs in [identity NAME]");
	EXPECT_ONLY("[global]\ncert = ec.pem\n", 2,
		    "'cert' is not valid in [global]; it belongs in [identity NAME] or [client NAME]");
	EXPECT_ONLY(WEB "workers = 2\n", 4,
		    "'workers' is not valid in [identity]; it belongs in [global]");
	EXPECT_ONLY(WEB "verify = yes\n", 4,
		    "'verify' is not valid in [identity]; it belongs in [client NAME]");
	EXPECT_ONLY("[global]\nWorkers = 2\n", 2, "unknown key 'Workers' in [global]");
	/* Keys the section does not know do not cascade onto their
	 * continuation lines. */
	EXPECT_ONLY("[global]\nfoo = 1\n  2\n", 2, "unknown key 'foo'");

	EXPECT_ONLY("[global]\nworkers = 2\n\nworkers = 3\n", 4,
		    "duplicate key 'workers' (first set at line 2)");
	EXPECT_ONLY(WEB "min_version = 1.2\nmin_version = 1.3\n", 5,
		    "duplicate key 'min_version' (first set at line 4)");
	EXPECT_ONLY(WEB "ciphers = A\nciphers = B\n", 5,
		    "duplicate key 'ciphers' (first set at line 4)");
	EXPECT_ONLY("[client c]\nverify = yes\nverify = yes\n", 3,
		    "duplicate key 'verify' (first set at line 2)");

	/* Continuation lines. */
	EXPECT_ONLY("[global]\nworkers = 2\n  3\n", 3,
		    "indented line continues 'workers', which takes one value; remove the indentation");
	EXPECT_ONLY(WEB "server_names = a.example\n  [identity x]\n", 5,
		    "indented line continues 'server_names'; remove the indentation to start a new key or section");
	EXPECT_ONLY(WEB "alpn = h2\n  tickets = off\n", 5,
		    "indented line continues 'alpn'; remove the indentation");
}

static void test_err_values(void)
{
	char text[512];

	EXPECT_ONLY("[global]\nworkers = lots\n", 2,
		    "workers: expected 'auto' or a number from 1 to 1024, got 'lots'");
	EXPECT_ONLY("[global]\nworkers = 0\n", 2, "workers: expected");
	EXPECT_ONLY("[global]\nworkers = 1025\n", 2, "workers: expected");
	EXPECT_ONLY("[global]\nworkers = -1\n", 2, "workers: expected");
	EXPECT_ONLY("[global]\nworkers = 2x\n", 2, "workers: expected");
	EXPECT_ONLY("[global]\nworkers =\n", 2,
		    "workers: expected 'auto' or a number from 1 to 1024, got ''");
	EXPECT_ONLY("[global]\nlog_level = verbose\n", 2,
		    "log_level: expected error, warning, info or debug, got 'verbose'");
	EXPECT_ONLY("[global]\nmax_inflight = 0\n", 2,
		    "max_inflight: expected a number from 1 to 1048576, got '0'");
	EXPECT_ONLY("[global]\nmax_inflight = 99999999999999999999999\n", 2,
		    "max_inflight: expected");
	EXPECT_ONLY("[global]\nhandshake_timeout = 10 parsecs\n", 2,
		    "handshake_timeout: expected a duration from 1ms to 1h, like 10s or 500ms, got '10 parsecs'");
	EXPECT_ONLY("[global]\nhandshake_timeout = 0s\n", 2, "handshake_timeout: expected");
	EXPECT_ONLY("[global]\nhandshake_timeout = 61m\n", 2, "handshake_timeout: expected");
	EXPECT_ONLY("[global]\nhandshake_timeout = s\n", 2, "handshake_timeout: expected");
	EXPECT_ONLY("[global]\nhandshake_timeout = 5 5s\n", 2, "handshake_timeout: expected");
	EXPECT_ONLY("[global]\nticket_rotation = 1500ms\n", 2,
		    "ticket_rotation: expected a duration in whole seconds from 1s to 7d, like 1h, got '1500ms'");
	EXPECT_ONLY("[global]\nticket_rotation = 8d\n", 2, "ticket_rotation: expected");
	EXPECT_ONLY("[global]\nsocket = run/ktlshd.sock\n", 2,
		    "socket: expected an absolute path or @abstract-name, at most 107 bytes, got 'run/ktlshd.sock'");
	EXPECT_ONLY("[global]\nsocket = @\n", 2, "socket: expected");
	snprintf(text, sizeof(text), "[global]\nsocket = /%0108d\n", 0);
	EXPECT_ONLY(text, 2, "socket: expected");

	EXPECT_ONLY(WEB "min_version = 1.1\n", 4,
		    "min_version: expected 1.2 or 1.3, got '1.1'");
	EXPECT_ONLY(WEB "tickets = maybe\n", 4,
		    "tickets: expected on or off, got 'maybe'");
	EXPECT_ONLY(WEB "trusted_peer = sometimes\n", 4,
		    "trusted_peer: expected yes or no, got 'sometimes'");
	EXPECT_ONLY(WEB "verify_client = always\n", 4,
		    "verify_client: expected none, optional or required, got 'always'");
	EXPECT_ONLY(WEB "server_names = *.*.example.com\n", 4,
		    "server_names: expected host names or *.domain wildcards without a trailing dot, got '*.*.example.com'");
	EXPECT_ONLY(WEB "server_names = a..example\n", 4, "server_names: expected");
	EXPECT_ONLY(WEB "server_names = www.example.com.\n", 4, "server_names: expected");
	EXPECT_ONLY(WEB "server_names = w*.example.com\n", 4, "server_names: expected");
	EXPECT_ONLY(WEB "server_names = *\n", 4, "server_names: expected");
	EXPECT_ONLY(WEB "server_names =\n", 4,
		    "server_names: expected host names or *.domain wildcards without a trailing dot, got ''");
	/* Only the bad item of a list is reported. */
	EXPECT_ONLY(WEB "server_names = a.example, b!.example, c.example\n", 4,
		    "server_names: expected host names or *.domain wildcards without a trailing dot, got 'b!.example'");
	EXPECT_ONLY(WEB "alpn = ,\n", 4,
		    "alpn: expected protocol names of 1 to 255 bytes, like h2, http/1.1, got ','");
	EXPECT_ONLY(WEB "ciphers = \x01\n", 4,
		    "ciphers: expected an OpenSSL cipher list, got '?'");
	EXPECT_ONLY(WEB "groups = X25519 P-256\n", 4,
		    "groups: expected an OpenSSL group list, like X25519:P-256, got 'X25519 P-256'");
	EXPECT_ONLY("[client c]\nverify = no\n", 2,
		    "verify: expected yes or insecure, got 'no'");
	EXPECT_ONLY("[client c]\nverify = off\n", 2, "verify: expected yes or insecure");
	EXPECT_ONLY("[client c]\nverify = Insecure\n", 2, "verify: expected yes or insecure");
	EXPECT_ONLY("[client c]\nserver_name = not a name\n", 2,
		    "server_name: expected a host name or IP address, got 'not a name'");
	EXPECT_ONLY("[client c]\nserver_name = *.example.com\n", 2, "server_name: expected");
	EXPECT_ONLY(WEB "cert = \nkey = ec.key\n", 4, "cert: expected a path, got ''");
}

static void test_err_users(void)
{
	EXPECT_ONLY("[global]\nuser = ktlsh-no-such-user\n", 2,
		    "user: unknown user 'ktlsh-no-such-user'");
	EXPECT_ONLY(WEB "allow_uids = root, ktlsh-no-such-user\n", 4,
		    "allow_uids: unknown user 'ktlsh-no-such-user'");
	EXPECT_ONLY(WEB "allow_gids = ktlsh-no-such-group 5\n", 4,
		    "allow_gids: unknown group 'ktlsh-no-such-group'");
	EXPECT_ONLY(WEB "allow_uids = 4294967295\n", 4,
		    "allow_uids: unknown user '4294967295'");
}

static void test_err_pairs(void)
{
	char want[PATH_MAX + 128], text[1024];
	int i, n;

	/* A cert without its key, reported at the cert: in the middle of a
	 * section, and at its end. */
	snprintf(want, sizeof(want),
		 "cert: '%s/ec.pem' has no key; add 'key = PATH' on the line after it",
		 dir);
	EXPECT_ONLY("[identity web]\ncert = ec.pem\ncert = rsa.pem\nkey = rsa.key\n",
		    2, want);
	EXPECT_ONLY("[identity web]\ncert = rsa.pem\nkey = rsa.key\n"
		    "cert = ec.pem\n\n[global]\n", 4, want);
	EXPECT_ONLY("[client c]\ncert = ec.pem\n", 2, want);
	EXPECT_ONLY("[identity web]\nkey = ec.key\ncert = ec.pem\nkey = ec.key\n",
		    2,
		    "key: no cert before it; write 'cert = PATH' first, then its 'key = PATH'");
	EXPECT_ONLY("[identity web]\ncert = ec.pem\nkey = ec.key\nkey = rsa.key\n",
		    4,
		    "key: the cert on line 2 already has its key (line 3); each key follows its own cert");

	n = snprintf(text, sizeof(text), "[identity web]\n");
	for (i = 0; i < KTLSH_CONFIG_MAX_CERTS + 1; i++)
		n += snprintf(text + n, sizeof(text) - n,
			      "cert = ec.pem\nkey = ec.key\n");
	EXPECT_ONLY(text, 2 + 2 * KTLSH_CONFIG_MAX_CERTS,
		    "cert: too many cert/key pairs (at most 8)");
}

static void test_err_sni(void)
{
	EXPECT_ONLY("[identity a]\ncert = ec.pem\nkey = ec.key\n"
		    "server_names = www.example.com\n"
		    "[identity b]\ncert = ec.pem\nkey = ec.key\n"
		    "server_names = other.example\n"
		    "  WWW.Example.com\n", 9,
		    "server_names: 'www.example.com' is already claimed by [identity a] at line 4");
	EXPECT_ONLY("[identity a]\ncert = ec.pem\nkey = ec.key\n"
		    "server_names = *.example.com\n"
		    "[identity b]\ncert = ec.pem\nkey = ec.key\n"
		    "server_names = *.example.com\n", 8,
		    "server_names: '*.example.com' is already claimed by [identity a] at line 4");
	EXPECT_ONLY(WEB "server_names = a.example a.example\n", 4,
		    "server_names: 'a.example' is already listed at line 4");
}

static void test_err_files(void)
{
	char want[PATH_MAX + 256];

	snprintf(want, sizeof(want),
		 "cert: cannot open '%s/missing.pem': No such file or directory",
		 dir);
	EXPECT_ONLY("[identity web]\ncert = missing.pem\nkey = ec.key\n", 2, want);
	snprintf(want, sizeof(want),
		 "key: cannot open '/nonexistent/k.key': No such file or directory");
	EXPECT_ONLY("[identity web]\ncert = ec.pem\nkey = /nonexistent/k.key\n",
		    3, want);
	snprintf(want, sizeof(want), "cert: '%s/cadir' is not a regular file", dir);
	EXPECT_ONLY("[identity web]\ncert = cadir\nkey = ec.key\n", 2, want);
	snprintf(want, sizeof(want), "ca_dir: cannot open '%s/ca.pem': Not a directory",
		 dir);
	EXPECT_ONLY(WEB "verify_client = optional\nca_dir = ca.pem\n", 5, want);
	EXPECT_ONLY(WEB "verify_client = optional\nca_file = nope.pem\n", 5,
		    "ca_file: cannot open");
	EXPECT_ONLY(WEB "verify_client = optional\nca_file = ca.pem\n"
		    "crl_file = nope.pem\n", 6, "crl_file: cannot open");
	EXPECT_ONLY("[global]\nticket_key_file = nope.key\n", 2,
		    "ticket_key_file: cannot open");
	EXPECT_ONLY("[client c]\nca_file = nope.pem\n", 2, "ca_file: cannot open");

	/* verify_client needs a CA to check against; reported at its line. */
	EXPECT_ONLY(WEB "verify_client = required\n\n", 4,
		    "verify_client: checking client certificates needs ca_file or ca_dir in [identity web]");
	EXPECT_ONLY("[identity web]\nverify_client = optional\ncert = ec.pem\n"
		    "key = ec.key\n", 2, "verify_client: checking client");
}

/* Permission denied, as a user who cannot read the root-owned 0600 key. */
static void test_err_eacces(void)
{
	char want[3 * PATH_MAX];
	pid_t pid;
	int status;

	if (write_file("test.conf", WEB, strlen(WEB), 0644)) {
		CU_FAIL("cannot write test.conf");
		return;
	}
	snprintf(want, sizeof(want),
		 "%s:3: key: cannot open '%s/ec.key': Permission denied",
		 conf, dir);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct ktlsh_config *cfg;
		char err[1024] = "";
		int ret;

		if (geteuid() == 0 && (setgroups(0, NULL) ||
				       setresgid(65534, 65534, 65534) ||
				       setresuid(65534, 65534, 65534)))
			_exit(77);
		ret = ktlsh_config_load(conf, &cfg, err, sizeof(err));
		if (ret == 0)
			_exit(77);	/* we own the key: nothing to test */
		if (ret != -EINVAL || strcmp(err, want)) {
			fprintf(stderr, "\n    want \"%s\"\n    got %d \"%s\"\n",
				want, ret, err);
			_exit(1);
		}
		_exit(0);
	}
	CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		fprintf(stderr, "\n    SKIP: cannot test EACCES as this user ");
		return;
	}
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_warnings(void)
{
	struct ktlsh_config *cfg;
	char want[PATH_MAX + 256];

	snprintf(want, sizeof(want),
		 "key: '%s/open.key' is readable by every user (mode 0644); a private key should be readable by ktlshd only",
		 dir);
	cfg = LOAD_OK("[identity web]\ncert = ec.pem\nkey = open.key\n"
		      "ca_file = ca.pem\ncrl_file = crl.pem\n"
		      "[client c]\nverify = insecure\nca_dir = cadir\n"
		      "[global]\nticket_key_file = tickets.key\n"
		      "ticket_rotation = 1h\n");
	CU_ASSERT(has_warning(cfg, 3, want));
	CU_ASSERT(has_warning(cfg, 4,
		  "ca_file: has no effect unless verify_client is optional or required"));
	CU_ASSERT(has_warning(cfg, 5, "crl_file: has no effect unless"));
	CU_ASSERT(has_warning(cfg, 8, "ca_dir: has no effect with verify = insecure"));
	/* One per line, in line order. */
	CU_ASSERT(cfg && cfg->warnings &&
		  strstr(cfg->warnings, ":3: ") < strstr(cfg->warnings, ":4: ") &&
		  strstr(cfg->warnings, ":4: ") < strstr(cfg->warnings, ":8: ") &&
		  cfg->warnings[strlen(cfg->warnings) - 1] != '\n');
	ktlsh_config_put(cfg);
}

/* Every error is reported, one per line, sorted by line, whatever order
 * they were found in; a small buffer gets whole lines only. */
static void test_err_many(void)
{
	static const char text[] =
		"[identity web]\n"		/* 1: no cert (found at the end) */
		"foo = 1\n"			/* 2 */
		"[global]\n"
		"workers = x\n"			/* 4 */
		"log_level = y\n";		/* 5 */
	struct ktlsh_config *cfg;
	char err[4096], small[80], line1[PATH_MAX + 128];
	const char *l1, *l2, *l4, *l5;
	size_t len;
	int ret;

	ret = load_text(text, &cfg, err, sizeof(err));
	CU_ASSERT_EQUAL(ret, -EINVAL);
	snprintf(line1, sizeof(line1), "%s:1: [identity web] has no cert", conf);
	l1 = strstr(err, line1);
	l2 = strstr(err, ":2: unknown key 'foo'");
	l4 = strstr(err, ":4: workers: expected");
	l5 = strstr(err, ":5: log_level: expected");
	CU_ASSERT(l1 == err && l2 && l4 && l5 && l1 < l2 && l2 < l4 && l4 < l5);
	CU_ASSERT_PTR_NULL(strstr(l5 ? l5 : err, "\n"));

	/* Only the first line fits: it is there, and nothing after it. */
	len = strchr(err, '\n') - err;
	ret = load_text(text, &cfg, line1, len + 1 + 10);
	CU_ASSERT_EQUAL(ret, -EINVAL);
	CU_ASSERT_EQUAL(strlen(line1), len);
	CU_ASSERT_PTR_NULL(strchr(line1, '\n'));
	/* Not even the first line fits: cut short, terminated. */
	ret = load_text(text, &cfg, small, sizeof(small));
	CU_ASSERT_EQUAL(ret, -EINVAL);
	CU_ASSERT_EQUAL(strlen(small), sizeof(small) - 1);
	CU_ASSERT(!strncmp(small, err, sizeof(small) - 1));
	/* No buffer at all is fine. */
	ret = load_text(text, &cfg, NULL, 0);
	CU_ASSERT_EQUAL(ret, -EINVAL);
}

int main(void)
{
	static const struct {
		const char *name;
		CU_TestFunc fn;
	} tests[] = {
		{ "full valid config", test_full },
		{ "defaults", test_defaults },
		{ "syntax variants", test_syntax_variants },
		{ "load from buffer", test_load_buffer },
		{ "the documented example", test_example },
		{ "SNI lookup", test_sni },
		{ "caller authorization", test_may_use },
		{ "references and slot", test_refs_and_slot },
		{ "errors: the file", test_err_file },
		{ "errors: syntax", test_err_syntax },
		{ "errors: sections", test_err_sections },
		{ "[service]", test_service },
		{ "errors: [service]", test_err_service },
		{ "errors: keys", test_err_keys },
		{ "errors: values", test_err_values },
		{ "errors: users and groups", test_err_users },
		{ "errors: cert/key pairs", test_err_pairs },
		{ "errors: SNI claimed twice", test_err_sni },
		{ "errors: files", test_err_files },
		{ "errors: permission denied", test_err_eacces },
		{ "warnings", test_warnings },
		{ "errors: many, sorted", test_err_many },
		{ "[handshake]", test_handshake },
		{ "errors: [handshake]", test_err_handshake },
		{ "warnings: [handshake]", test_warn_handshake },
	};
	CU_pSuite suite;
	unsigned int failed;
	size_t i;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	suite = CU_add_suite("config", suite_init, suite_cleanup);
	if (!suite)
		goto fail;
	for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (!CU_add_test(suite, tests[i].name, tests[i].fn))
			goto fail;
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
fail:
	CU_cleanup_registry();
	return 2;
}
