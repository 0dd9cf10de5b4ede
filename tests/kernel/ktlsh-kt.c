// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ktlsh-kt: the kernel TLS integration suite.
 *
 * This program is one side of every connection: it builds the SSL_CTX,
 * handshakes with libktlsh, and from then on uses the plain socket, whose
 * records the kernel encrypts and decrypts. The other side is a real,
 * independent TLS stack run as a child process: openssl s_server/s_client or
 * gnutls-serv/gnutls-cli. One poll() loop moves the payload through our
 * socket, the peer's stdin and the peer's stdout, hashing as it goes.
 *
 * Every case runs in a forked child under a deadline; the runner kills it and
 * its peers if it overruns, so no case can hang the suite. Output is TAP-ish:
 *
 *   ok N - name            not ok N - name: why        SKIP name: why
 *   kernel: N passed, M failed, K skipped
 *
 * Cases that need kernel TLS print SKIP with the reason on a kernel without
 * it; the handshake-only negative cases run anywhere. --userspace replaces
 * kTLS with OpenSSL's own record layer on our side: a control that checks the
 * peers and the pump, not ktlsh.
 *
 * What the peers do, measured (OpenSSL 3.0, GnuTLS 3.7):
 *  - s_server -quiet: stdout carries exactly the bytes it received, stderr
 *    only "verify return" lines and errors. At EOF on stdin it closes the
 *    connection at once (close_notify), whatever is still in flight, so its
 *    stdin stays open until we have everything. On our close_notify it
 *    answers with its own and exits 0 (-naccept 1). It exits 0 after a
 *    failed handshake too: its stderr is what tells.
 *  - s_client -quiet implies -ign_eof; -no_ign_eof makes EOF on stdin send
 *    close_notify, and -nocommands stops lines that start with Q/R/K from
 *    being taken as commands (random data does start with them).
 *  - gnutls-serv --echo is a line echo for text (NUL ends a "line", CRLF
 *    becomes LF, lines starting "**" are commands), so its payload is
 *    base64-alphabet lines; it logs every line to stderr (twice the payload),
 *    answers close_notify with close_notify, and never exits by itself.
 *  - gnutls-cli prints its banners on stdout unless --logfile is given; it
 *    reads stdin in 4 KiB blocks but writes what it receives to stdout one
 *    byte per write(2), so the payload towards it is small (see
 *    GNUTLS_CLI_OUT). At EOF on stdin it sends close_notify and exits 0.
 *  - s_client at EOF on stdin (-no_ign_eof) sends close_notify, half-closes,
 *    drains for up to 0.5 s and exits 0.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <linux/tls.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <ktlsh/handshake.h>
#include <ktlsh/record.h>

#define MIB			(1024 * 1024)
#define CASE_TIMEOUT_S		60
#define HS_TIMEOUT_MS		20000
#define PEER_EXIT_MS		10000
#define SHA256_LEN		32
#define TAIL_HEAD		2048
#define TAIL_TAIL		6144
#define TRACE_MAX		128
#define IO_CHUNK		(256 * 1024)
#define GNUTLS_CLI_OUT		(opt.quick ? 16 * 1024 : 64 * 1024)

#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))

/* Helpers shared with the other integration-suite driver (t_*). */
#include "../lib/t_util.h"

/* ---- options and global facts ------------------------------------------ */

static struct {
	const char *certs;
	const char *filters[16];
	unsigned n_filters;
	bool quick, list, userspace;
	int timeout_s;
	size_t payload, sendfile_size;
} opt = {
	.timeout_s = CASE_TIMEOUT_S,
};

static struct ktlsh_kcaps caps;
static bool ktls_ok;
static char ktls_why[256];
static char tool_openssl[PATH_MAX], tool_gnutls_serv[PATH_MAX], tool_gnutls_cli[PATH_MAX];

/* ---- small utilities ----------------------------------------------------- */

/* A phase's deadline: ms from now, but never past the case's. */
static uint64_t phase_deadline(uint64_t case_deadline, int ms)
{
	uint64_t d = t_now_ms() + (uint64_t)ms;

	return d < case_deadline ? d : case_deadline;
}

static void hex_str(const uint8_t *b, size_t n, char *out, size_t outlen)
{
	size_t i;

	out[0] = '\0';
	for (i = 0; i < n && 3 * i + 3 < outlen; i++)
		snprintf(out + 3 * i, outlen - 3 * i, "%02x ", b[i]);
}

static const char *cert_path(char *buf, size_t len, const char *file)
{
	snprintf(buf, len, "%s/%s", opt.certs, file);
	return buf;
}

/* ---- peer processes -------------------------------------------------------- */

static bool peer_exited_ok(const struct t_peer *p)
{
	return p->exited && WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
}

static void peer_close_stdin(struct t_peer *p)
{
	t_close_fd(&p->in_fd);
}

static void peer_log_note(const struct t_peer *p)
{
	struct t_tail t;
	char buf[4096];
	ssize_t n;
	int fd;

	if (!p->log_path[0])
		return;
	fd = open(p->log_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	memset(&t, 0, sizeof(t));
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		t_tail_add(&t, buf, (size_t)n);
	close(fd);
	t_tail_note(&t, "peer log");
}

static void peer_diagnose(const struct t_peer *p)
{
	char st[64];

	if (!p->pid)
		return;
	t_note("peer %s: %s", p->name, t_peer_status_str(p, st, sizeof(st)));
	t_tail_note(&p->err, "peer stderr");
	t_tail_note(&p->out, "peer stdout");
	peer_log_note(p);
}

/* ---- sockets on our side ------------------------------------------------- */

/* Accept one connection; fail early if the peer died instead of dialing. */
static int accept_deadline(int lfd, struct t_peer *p, uint64_t deadline, struct t_result *r)
{
	struct pollfd pfd[3];
	char st[64];
	int fd, n;

	for (;;) {
		int left = t_ms_left(deadline);

		if (!left)
			return t_fail(r, "no connection from %s before the deadline", p->name);
		n = 0;
		pfd[n++] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		if (p->err_fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = p->err_fd, .events = POLLIN };
		if (p->out_fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = p->out_fd, .events = POLLIN };
		poll(pfd, (nfds_t)n, t_min_int(left, 100));
		if (pfd[0].revents & POLLIN) {
			fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				return fd;
			if (errno != EAGAIN && errno != EINTR)
				return t_fail(r, "accept: %s", strerror(errno));
		}
		t_peer_drain(p);
		if (!t_peer_running(p))
			return t_fail(r, "%s exited (%s) before connecting", p->name,
				    t_peer_status_str(p, st, sizeof(st)));
	}
}

/* ---- /proc/net/tls_stat ---------------------------------------------------- */

#define TLS_STAT_MAX 32

struct tls_stat {
	bool present;
	unsigned n;
	char name[TLS_STAT_MAX][40];
	unsigned long long val[TLS_STAT_MAX];
};

static void tls_stat_read(struct tls_stat *s)
{
	char line[128];
	FILE *f;

	memset(s, 0, sizeof(*s));
	f = fopen("/proc/net/tls_stat", "re");
	if (!f)
		return;
	s->present = true;
	while (s->n < TLS_STAT_MAX && fgets(line, sizeof(line), f))
		if (sscanf(line, "%39s %llu", s->name[s->n], &s->val[s->n]) == 2)
			s->n++;
	fclose(f);
}

static long long tls_stat_delta(const struct tls_stat *a, const struct tls_stat *b,
				const char *name)
{
	unsigned i, j;

	for (i = 0; i < a->n; i++)
		if (!strcmp(a->name[i], name))
			for (j = 0; j < b->n; j++)
				if (!strcmp(b->name[j], name))
					return (long long)(b->val[j] - a->val[i]);
	return LLONG_MIN;
}

/* The offload shows in the counters: software TX and RX contexts were
 * created on this connection (cases run one at a time), no decrypt error. */
static void tls_stat_check(const struct tls_stat *before, const struct tls_stat *after,
			   struct t_result *r)
{
	static const char *const show[] = { "TlsCurrTxSw", "TlsCurrRxSw", "TlsTxSw", "TlsRxSw",
					    "TlsDecryptError", "TlsRxNoPadViolation" };
	char line[512] = "tls_stat:";
	size_t used = strlen(line);
	long long d;
	unsigned i;

	if (!before->present || !after->present) {
		t_fail(r, "/proc/net/tls_stat is missing, cannot show the offload");
		return;
	}
	for (i = 0; i < ARRAY_SIZE(show); i++) {
		d = tls_stat_delta(before, after, show[i]);
		if (d != LLONG_MIN)
			used += (size_t)snprintf(line + used, sizeof(line) - used, " %s %+lld",
						 show[i], d);
	}
	t_note("%s", line);
	if (tls_stat_delta(before, after, "TlsTxSw") < 1)
		t_fail(r, "tls_stat: TlsTxSw did not increase: TX was not offloaded");
	if (tls_stat_delta(before, after, "TlsRxSw") < 1)
		t_fail(r, "tls_stat: TlsRxSw did not increase: RX was not offloaded");
	d = tls_stat_delta(before, after, "TlsDecryptError");
	if (d != LLONG_MIN && d > 0)
		t_fail(r, "tls_stat: %lld decrypt errors", d);
	d = tls_stat_delta(before, after, "TlsRxNoPadViolation");
	if (d != LLONG_MIN && d > 0)
		t_fail(r, "tls_stat: %lld TLS_RX_EXPECT_NO_PAD violations", d);
}

/* ---- the cases' vocabulary ------------------------------------------------ */

enum peer_kind {
	PEER_S_SERVER = 1,	/* we are the client */
	PEER_S_CLIENT,		/* we are the server */
	PEER_GNUTLS_SERV,	/* we are the client; it echoes */
	PEER_GNUTLS_CLI,	/* we are the server */
	PEER_RAW,		/* a forked helper speaking raw TCP */
};

enum case_kind {
	K_DATA,			/* payload both ways + close_notify */
	K_NEG_CIPHER,
	K_NEG_VERIFY,		/* our client rejects the server certificate */
	K_NEG_CLIENT_CERT,	/* our server rejects the client certificate */
	K_NEG_RAW,
};

enum raw_mode {
	RAW_RESET_MID = 1,	/* half a ClientHello, then RST */
	RAW_CLOSE_MID,		/* half a ClientHello, then FIN */
	RAW_GARBAGE,		/* an HTTP request instead of a ClientHello */
	RAW_SILENT,		/* connects, says nothing */
	RAW_SERVER_RESET,	/* a server that reads the ClientHello and resets */
};

struct kt_case {
	char name[128];
	enum case_kind kind;
	enum peer_kind peer;
	enum ktlsh_role role;		/* ours */
	int version;			/* TLS1_2_VERSION / TLS1_3_VERSION, 0: peer default */
	enum ktlsh_cipher cipher;	/* NONE: peer default */
	bool needs_ktls;
	bool matrix;			/* skip when caps lack (version, cipher) */
	bool rsa;			/* our server uses the RSA certificate */
	bool use_sendfile;
	bool count_tickets;		/* read with ktlsh_recv_control, count tickets */
	bool trace;
	int num_tickets;		/* our server's SSL_CTX_set_num_tickets, -1: default */
	unsigned hs_flags;
	/* negative cases */
	const char *peer_cert;		/* stem of the certificate the peer presents */
	int expect_err;
	int expect_verify;
	enum raw_mode raw;
};

static const char *version_tag(int v)
{
	return v == TLS1_3_VERSION ? "tls13" : v == TLS1_2_VERSION ? "tls12" : "tls";
}

static const char *peer_tool_name(enum peer_kind k)
{
	switch (k) {
	case PEER_S_SERVER: return "openssl-s_server";
	case PEER_S_CLIENT: return "openssl-s_client";
	case PEER_GNUTLS_SERV: return "gnutls-serv";
	case PEER_GNUTLS_CLI: return "gnutls-cli";
	default: return "raw";
	}
}

static const char *openssl_tls13_suite(enum ktlsh_cipher c)
{
	switch (c) {
	case KTLSH_CIPHER_AES_GCM_128: return "TLS_AES_128_GCM_SHA256";
	case KTLSH_CIPHER_AES_GCM_256: return "TLS_AES_256_GCM_SHA384";
	case KTLSH_CIPHER_CHACHA20_POLY1305: return "TLS_CHACHA20_POLY1305_SHA256";
	case KTLSH_CIPHER_AES_CCM_128: return "TLS_AES_128_CCM_SHA256";
	default: return NULL;
	}
}

static const char *openssl_tls12_cipher(enum ktlsh_cipher c, bool rsa)
{
	switch (c) {
	case KTLSH_CIPHER_AES_GCM_128:
		return rsa ? "ECDHE-RSA-AES128-GCM-SHA256" : "ECDHE-ECDSA-AES128-GCM-SHA256";
	case KTLSH_CIPHER_AES_GCM_256:
		return rsa ? "ECDHE-RSA-AES256-GCM-SHA384" : "ECDHE-ECDSA-AES256-GCM-SHA384";
	case KTLSH_CIPHER_CHACHA20_POLY1305:
		return rsa ? "ECDHE-RSA-CHACHA20-POLY1305" : "ECDHE-ECDSA-CHACHA20-POLY1305";
	case KTLSH_CIPHER_AES_CCM_128:
		return rsa ? NULL : "ECDHE-ECDSA-AES128-CCM";
	default:
		return NULL;
	}
}

static const char *gnutls_cipher(enum ktlsh_cipher c)
{
	switch (c) {
	case KTLSH_CIPHER_AES_GCM_128: return "AES-128-GCM";
	case KTLSH_CIPHER_AES_GCM_256: return "AES-256-GCM";
	case KTLSH_CIPHER_CHACHA20_POLY1305: return "CHACHA20-POLY1305";
	case KTLSH_CIPHER_AES_CCM_128: return "AES-128-CCM";
	default: return NULL;
	}
}

static unsigned kernel_cipher_type(enum ktlsh_cipher c)
{
	switch (c) {
	case KTLSH_CIPHER_AES_GCM_128: return TLS_CIPHER_AES_GCM_128;
	case KTLSH_CIPHER_AES_GCM_256: return TLS_CIPHER_AES_GCM_256;
	case KTLSH_CIPHER_CHACHA20_POLY1305: return TLS_CIPHER_CHACHA20_POLY1305;
	case KTLSH_CIPHER_AES_CCM_128: return TLS_CIPHER_AES_CCM_128;
	default: return 0;
	}
}

/* Every AEAD suite the kernel has a layout for, CCM included (not in
 * OpenSSL's DEFAULT); ktlsh_ssl_ctx_setup() narrows it to what the kernel
 * takes. The peer picks the one a case is about. */
#define OUR_TLS12_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-CCM:" \
	"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
#define OUR_TLS13_SUITES \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:" \
	"TLS_AES_128_CCM_SHA256"

/* ---- argv building --------------------------------------------------------- */

static void arg_openssl_version(struct t_argv *a, const struct kt_case *c,
				enum ktlsh_cipher cipher)
{
	if (c->version == TLS1_3_VERSION) {
		t_arg_add(a, "-tls1_3");
		if (openssl_tls13_suite(cipher)) {
			t_arg_add(a, "-ciphersuites");
			t_arg_add(a, "%s", openssl_tls13_suite(cipher));
		}
	} else if (c->version == TLS1_2_VERSION) {
		t_arg_add(a, "-tls1_2");
		if (openssl_tls12_cipher(cipher, c->rsa)) {
			t_arg_add(a, "-cipher");
			t_arg_add(a, "%s", openssl_tls12_cipher(cipher, c->rsa));
		}
	}
}

static void arg_gnutls_priority(struct t_argv *a, const struct kt_case *c)
{
	char prio[256] = "NORMAL";

	if (c->version == TLS1_3_VERSION)
		strcat(prio, ":-VERS-ALL:+VERS-TLS1.3");
	else if (c->version == TLS1_2_VERSION)
		strcat(prio, ":-VERS-ALL:+VERS-TLS1.2");
	if (gnutls_cipher(c->cipher)) {
		strcat(prio, ":-CIPHER-ALL:+");
		strcat(prio, gnutls_cipher(c->cipher));
	}
	t_arg_add(a, "--priority=%s", prio);
}

/*
 * The peer's command line. Both ends verify: the peer checks our
 * certificate against ca.pem, and whoever is the server requires the
 * client's (mutual TLS).
 */
static void peer_argv(struct t_argv *a, const struct kt_case *c, int port, const char *logfile)
{
	const char *srv = c->peer_cert ? c->peer_cert : "server-ecdsa";
	const char *cli = c->peer_cert ? c->peer_cert : "client";
	enum ktlsh_cipher cipher = c->cipher;

	switch (c->peer) {
	case PEER_S_SERVER:
		t_arg_s_server(a, tool_openssl, port, opt.certs, srv);
		arg_openssl_version(a, c, cipher);
		break;
	case PEER_S_CLIENT:
		t_arg_s_client(a, tool_openssl, port, opt.certs, cli);
		if (c->kind == K_NEG_CIPHER) {
			t_arg_add(a, "-tls1_3");
			t_arg_add(a, "-ciphersuites");
			t_arg_add(a, "TLS_AES_128_GCM_SHA256");
		} else {
			arg_openssl_version(a, c, cipher);
		}
		break;
	case PEER_GNUTLS_SERV:
		t_arg_add(a, "%s", tool_gnutls_serv);
		t_arg_add(a, "--quiet");
		t_arg_add(a, "--echo");
		t_arg_add(a, "--port=%d", port);
		t_arg_add(a, "--x509cafile=%s/ca.pem", opt.certs);
		t_arg_add(a, "--x509certfile=%s/%s.pem", opt.certs, srv);
		t_arg_add(a, "--x509keyfile=%s/%s.key", opt.certs, srv);
		t_arg_add(a, "--require-client-cert");
		t_arg_add(a, "--verify-client-cert");
		arg_gnutls_priority(a, c);
		break;
	case PEER_GNUTLS_CLI:
		t_arg_add(a, "%s", tool_gnutls_cli);
		t_arg_add(a, "--logfile=%s", logfile);
		t_arg_add(a, "--port=%d", port);
		t_arg_add(a, "--x509cafile=%s/ca.pem", opt.certs);
		t_arg_add(a, "--x509certfile=%s/%s.pem", opt.certs, cli);
		t_arg_add(a, "--x509keyfile=%s/%s.key", opt.certs, cli);
		t_arg_add(a, "--sni-hostname=localhost");
		t_arg_add(a, "--verify-hostname=localhost");
		arg_gnutls_priority(a, c);
		t_arg_add(a, "127.0.0.1");
		break;
	case PEER_RAW:
		break;
	}
}

/* ---- our SSL_CTX --------------------------------------------------------- */

static unsigned tickets_seen;	/* userspace control: NewSessionTickets OpenSSL took */

static int count_ticket_cb(SSL *ssl, SSL_SESSION *sess)
{
	tickets_seen++;
	return 0;	/* not kept */
}

static SSL_CTX *our_ctx(const struct kt_case *c, struct t_result *r)
{
	bool server = c->role == KTLSH_ROLE_SERVER;
	const char *stem = server ? (c->rsa ? "server-rsa" : "server-ecdsa") : "client";
	char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX], file[64];
	SSL_CTX *ctx;
	int ret;

	ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		t_fail(r, "SSL_CTX_new failed");
		return NULL;
	}
	snprintf(file, sizeof(file), "%s.pem", stem);
	cert_path(cert, sizeof(cert), file);
	snprintf(file, sizeof(file), "%s.key", stem);
	cert_path(key, sizeof(key), file);
	cert_path(ca, sizeof(ca), "ca.pem");
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_cipher_list(ctx, OUR_TLS12_CIPHERS) ||
	    !SSL_CTX_set_ciphersuites(ctx, OUR_TLS13_SUITES) ||
	    SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		t_fail(r, "cannot set up our SSL_CTX from %s: %s", opt.certs,
		     ERR_reason_error_string(ERR_peek_last_error()));
		goto fail;
	}
	if (server) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);

		if (names)
			SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"ktlsh-kt", 8);
		if (c->num_tickets >= 0)
			SSL_CTX_set_num_tickets(ctx, (size_t)c->num_tickets);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (opt.userspace && c->count_tickets) {
			SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
			SSL_CTX_sess_set_new_cb(ctx, count_ticket_cb);
		}
	}
	if (opt.userspace)
		return ctx;
	ret = ktlsh_ssl_ctx_setup(ctx, &caps, ktls_ok ? KTLSH_CTX_REQUIRE_OFFLOAD : 0);
	if (ret) {
		t_fail(r, "ktlsh_ssl_ctx_setup: %s", strerror(-ret));
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- handshake trace ------------------------------------------------------- */

struct trace_buf {
	char *line[TRACE_MAX];
	int n;
};

static void trace_collect(void *arg, const char *line)
{
	struct trace_buf *t = arg;

	if (t->n < TRACE_MAX)
		t->line[t->n++] = strdup(line);
}

static void trace_free(struct trace_buf *t)
{
	while (t->n > 0)
		free(t->line[--t->n]);
}

static bool trace_has(const struct trace_buf *t, const char *needle)
{
	int i;

	for (i = 0; i < t->n; i++)
		if (t_contains_ci(t->line[i], needle))
			return true;
	return false;
}

static void trace_print(const struct trace_buf *t)
{
	int i;

	t_note("handshake trace (%d lines):", t->n);
	for (i = 0; i < t->n; i++)
		t_note("    %s", t->line[i]);
}

/* ---- one connection's state -------------------------------------------------- */

enum eof_kind { EOF_NONE, EOF_FIN, EOF_CLOSE_NOTIFY };

static const char *eof_name(enum eof_kind k)
{
	return k == EOF_CLOSE_NOTIFY ? "close_notify" : k == EOF_FIN ? "TCP FIN without close_notify"
								     : "nothing";
}

enum rx_mode { RX_KTLSH, RX_COUNT, RX_SSL };

struct conn {
	const struct kt_case *c;
	struct t_result *r;
	uint64_t deadline;
	char tmpdir[1024];

	SSL_CTX *ctx;
	SSL *ssl;		/* userspace control only */
	int lfd, fd;
	struct t_peer peer;
	struct ktlsh_hs_info info;
	struct trace_buf trace;

	/* our sending side: a buffer, or a file for sendfile() */
	uint8_t *tx_buf;
	size_t tx_len, tx_off;
	int tx_file;
	off_t tx_file_off;
	void *tx_map;

	/* what the peer sends us, fed to its stdin */
	uint8_t *in_buf;
	size_t in_len, in_off;

	struct t_stream rx;	/* what we read from our socket */
	struct t_stream out;	/* what the peer printed on stdout */
	bool out_is_data;
	enum rx_mode rx_mode;
	enum eof_kind rx_eof;
	bool closing;
	unsigned tickets, ctrl_records;
	char err[600];
};

/* Compare the stream's hash with what was sent; -1 and a reason if not. */
static int stream_verify(struct t_stream *s, const char *what, struct t_result *r)
{
	uint8_t got[SHA256_LEN];
	unsigned len = 0;
	char a[80], b[80];

	if (s->n != s->expect)
		return t_fail(r, "%s: %zu of %zu bytes", what, s->n, s->expect);
	EVP_DigestFinal_ex(s->md, got, &len);
	if (memcmp(got, s->want, SHA256_LEN)) {
		hex_str(got, 8, a, sizeof(a));
		hex_str(s->want, 8, b, sizeof(b));
		return t_fail(r, "%s: SHA-256 mismatch (got %s... want %s...)", what, a, b);
	}
	hex_str(got, 8, a, sizeof(a));
	t_note("%s: %zu bytes, SHA-256 %s... matches", what, s->n, a);
	return 0;
}

/* A random file for sendfile(), in TMPDIR; hashed while written. */
static int sendfile_source(struct conn *k, size_t len, uint8_t want[SHA256_LEN])
{
	char path[PATH_MAX + 32];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t *chunk = malloc(MIB);
	size_t done = 0, n;
	unsigned hl = 0;
	int fd = -1, ret = -ENOMEM;

	if (!md || !chunk || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
		goto out;
	snprintf(path, sizeof(path), "%s/sendfile.bin", k->tmpdir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	unlink(path);
	while (done < len) {
		n = len - done < MIB ? len - done : MIB;
		if (RAND_bytes(chunk, (int)n) != 1) {
			ret = -EIO;
			goto out;
		}
		EVP_DigestUpdate(md, chunk, n);
		if (write(fd, chunk, n) != (ssize_t)n) {
			ret = errno ? -errno : -EIO;
			goto out;
		}
		done += n;
	}
	EVP_DigestFinal_ex(md, want, &hl);
	k->tx_file = fd;
	k->tx_len = len;
	fd = -1;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	free(chunk);
	EVP_MD_CTX_free(md);
	return ret;
}

/* ---- the pump --------------------------------------------------------------- */

static int rx_consume(struct conn *k, const void *buf, size_t n)
{
	if (k->closing) {
		snprintf(k->err, sizeof(k->err), "%zu bytes of data after the payload", n);
		return -1;
	}
	return t_stream_add(&k->rx, buf, n, k->err, sizeof(k->err), "our socket");
}

/* A non-data record read with ktlsh_recv_control(). */
static int rx_control(struct conn *k)
{
	struct ktlsh_record rec;
	int ret = ktlsh_recv_control(k->fd, &rec);

	if (ret == -EAGAIN)
		return 0;
	if (ret < 0) {
		snprintf(k->err, sizeof(k->err), "ktlsh_recv_control: %s", strerror(-ret));
		return -1;
	}
	k->ctrl_records++;
	switch (rec.kind) {
	case KTLSH_REC_NEW_SESSION_TICKET:
		k->tickets += rec.n_messages ? rec.n_messages : 1;
		return 0;
	case KTLSH_REC_CLOSE_NOTIFY:
		k->rx_eof = EOF_CLOSE_NOTIFY;
		return 0;
	default:
		snprintf(k->err, sizeof(k->err), "unexpected %s record (type %u, alert %s)",
			 ktlsh_rec_kind_name(rec.kind), rec.type, ktlsh_alert_name(rec.alert_desc));
		return -1;
	}
}

/*
 * Read what our socket has. With kTLS the data path is ktlsh_recv(), which
 * consumes tickets and returns 0 at close_notify; once the payload is in,
 * (closing) a plain recv() comes first so that the two kinds of EOF can be
 * told apart: EIO means a control record is next (ktlsh_recv must then
 * return 0 for close_notify), 0 means a bare TCP FIN.
 */
static int rx_some(struct conn *k)
{
	static uint8_t buf[IO_CHUNK];
	ssize_t n;
	int i, err;

	for (i = 0; i < 64 && k->rx_eof == EOF_NONE; i++) {
		if (k->rx_mode == RX_SSL) {
			n = SSL_read(k->ssl, buf, sizeof(buf));
			if (n > 0) {
				if (rx_consume(k, buf, (size_t)n))
					return -1;
				continue;
			}
			err = SSL_get_error(k->ssl, (int)n);
			if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
				return 0;
			if (err == SSL_ERROR_ZERO_RETURN) {
				k->rx_eof = EOF_CLOSE_NOTIFY;
				return 0;
			}
			if ((err == SSL_ERROR_SYSCALL && !ERR_peek_error()) ||
			    ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
				ERR_clear_error();
				k->rx_eof = EOF_FIN;
				return 0;
			}
			snprintf(k->err, sizeof(k->err), "SSL_read: %s",
				 ERR_reason_error_string(ERR_peek_error()) ?: strerror(errno));
			return -1;
		}
		if (k->rx_mode == RX_KTLSH && !k->closing) {
			n = ktlsh_recv(k->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n > 0) {
				if (rx_consume(k, buf, (size_t)n))
					return -1;
				continue;
			}
			if (n == -EAGAIN)
				return 0;
			if (n == 0) {
				k->rx_eof = EOF_FIN;	/* either kind: early in any case */
				return 0;
			}
			snprintf(k->err, sizeof(k->err), "ktlsh_recv: %s", strerror((int)-n));
			return -1;
		}
		/* RX_COUNT, or the closing phase. */
		n = recv(k->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0) {
			if (rx_consume(k, buf, (size_t)n))
				return -1;
			continue;
		}
		if (n == 0) {
			k->rx_eof = EOF_FIN;
			return 0;
		}
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		if (errno != EIO) {
			snprintf(k->err, sizeof(k->err), "recv: %s", strerror(errno));
			return -1;
		}
		if (k->rx_mode == RX_COUNT) {
			if (rx_control(k))
				return -1;
			continue;
		}
		n = ktlsh_recv(k->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0) {
			k->rx_eof = EOF_CLOSE_NOTIFY;
			return 0;
		}
		if (n > 0) {
			if (rx_consume(k, buf, (size_t)n))
				return -1;
			continue;
		}
		if (n == -EAGAIN)
			return 0;	/* it was a ticket */
		snprintf(k->err, sizeof(k->err), "ktlsh_recv after EIO: %s", strerror((int)-n));
		return -1;
	}
	return 0;
}

static int tx_some(struct conn *k)
{
	ssize_t n;
	size_t want;
	int i, err;

	for (i = 0; i < 16 && k->tx_off < k->tx_len; i++) {
		want = k->tx_len - k->tx_off;
		if (want > IO_CHUNK)
			want = IO_CHUNK;
		if (k->ssl) {
			const uint8_t *src = k->tx_map ? (const uint8_t *)k->tx_map : k->tx_buf;

			n = SSL_write(k->ssl, src + k->tx_off, (int)want);
			if (n > 0) {
				k->tx_off += (size_t)n;
				continue;
			}
			err = SSL_get_error(k->ssl, (int)n);
			if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
				return 0;
			snprintf(k->err, sizeof(k->err), "SSL_write: %s",
				 ERR_reason_error_string(ERR_peek_error()) ?: strerror(errno));
			return -1;
		}
		if (k->tx_file >= 0)
			n = sendfile(k->fd, k->tx_file, &k->tx_file_off, want);
		else
			n = send(k->fd, k->tx_buf + k->tx_off, want, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			k->tx_off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		snprintf(k->err, sizeof(k->err), "%s: %s", k->tx_file >= 0 ? "sendfile" : "send",
			 n == 0 ? "wrote nothing" : strerror(errno));
		return -1;
	}
	return 0;
}

static int peer_feed(struct conn *k)
{
	ssize_t n;
	size_t want;

	while (k->peer.in_fd >= 0 && k->in_off < k->in_len) {
		want = k->in_len - k->in_off;
		if (want > 65536)
			want = 65536;
		n = write(k->peer.in_fd, k->in_buf + k->in_off, want);
		if (n > 0) {
			k->in_off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		snprintf(k->err, sizeof(k->err), "writing the peer's stdin: %s",
			 n < 0 ? strerror(errno) : "short write");
		return -1;
	}
	return 0;
}

static int peer_read_out(struct conn *k)
{
	static char buf[IO_CHUNK];
	ssize_t n;
	int i;

	for (i = 0; i < 64 && k->peer.out_fd >= 0; i++) {
		n = read(k->peer.out_fd, buf, sizeof(buf));
		if (n > 0) {
			if (!k->out_is_data)
				t_tail_add(&k->peer.out, buf, (size_t)n);
			else if (t_stream_add(&k->out, buf, (size_t)n, k->err, sizeof(k->err),
						      "peer's stdout"))
				return -1;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			t_close_fd(&k->peer.out_fd);
		break;
	}
	return 0;
}

static bool pump_data_done(const struct conn *k)
{
	return k->tx_off == k->tx_len && k->rx.n == k->rx.expect &&
	       (!k->out_is_data || k->out.n == k->out.expect);
}

static void pump_progress(const struct conn *k, char *buf, size_t len)
{
	char st[64];

	snprintf(buf, len, "sent %zu/%zu, received %zu/%zu, peer stdin %zu/%zu, peer stdout %zu/%zu, "
		 "peer %s, our EOF: %s", k->tx_off, k->tx_len, k->rx.n, k->rx.expect,
		 k->in_off, k->in_len, k->out.n, k->out.expect,
		 t_peer_status_str(&k->peer, st, sizeof(st)), eof_name(k->rx_eof));
}

/*
 * The one loop: our socket both ways, the peer's stdin, stdout and stderr,
 * and its exit. Runs until done(k), an error, EOF on our socket before done,
 * or the deadline. Returns 0 or -1 with k->err set.
 */
static int pump(struct conn *k, bool (*done)(const struct conn *), uint64_t deadline,
		const char *phase)
{
	struct pollfd pfd[5];
	char prog[400];
	int n, left;

	for (;;) {
		if (done(k))
			return 0;
		if (k->rx_eof != EOF_NONE && !k->closing) {
			pump_progress(k, prog, sizeof(prog));
			snprintf(k->err, sizeof(k->err), "%s: connection ended early (%s)", phase, prog);
			return -1;
		}
		left = t_ms_left(deadline);
		if (!left) {
			pump_progress(k, prog, sizeof(prog));
			snprintf(k->err, sizeof(k->err), "%s: timed out (%s)", phase, prog);
			return -1;
		}
		n = 0;
		pfd[n] = (struct pollfd){ .fd = k->fd, .events = 0 };
		if (k->rx_eof == EOF_NONE)
			pfd[n].events |= POLLIN;
		if (k->tx_off < k->tx_len)
			pfd[n].events |= POLLOUT;
		if (k->ssl && SSL_pending(k->ssl))
			left = 0;
		n++;
		if (k->peer.in_fd >= 0 && k->in_off < k->in_len)
			pfd[n++] = (struct pollfd){ .fd = k->peer.in_fd, .events = POLLOUT };
		if (k->peer.out_fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = k->peer.out_fd, .events = POLLIN };
		if (k->peer.err_fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = k->peer.err_fd, .events = POLLIN };
		if (k->peer.pidfd >= 0 && !k->peer.exited)
			pfd[n++] = (struct pollfd){ .fd = k->peer.pidfd, .events = POLLIN };
		if (poll(pfd, (nfds_t)n, t_min_int(left, 250)) < 0 && errno != EINTR) {
			snprintf(k->err, sizeof(k->err), "poll: %s", strerror(errno));
			return -1;
		}
		/* Cheap enough to try every source each round; nonblocking. */
		if (k->rx_eof == EOF_NONE && rx_some(k))
			return -1;
		if (tx_some(k) || peer_feed(k) || peer_read_out(k))
			return -1;
		t_peer_drain_fd(&k->peer.err_fd, &k->peer.err);
		t_peer_running(&k->peer);
	}
}

static bool close_done_peer_exit(const struct conn *k)
{
	return k->rx_eof != EOF_NONE && k->peer.exited && k->peer.out_fd < 0;
}

static bool close_done_eof(const struct conn *k)
{
	return k->rx_eof != EOF_NONE;
}

/* Send our close_notify and half-close. */
static int our_close_notify(struct conn *k, bool must_work)
{
	int ret = 0;

	if (k->ssl) {
		ret = SSL_shutdown(k->ssl) < 0 ? -EIO : 0;
	} else {
		ret = ktlsh_send_close_notify(k->fd);
	}
	if (!ret && shutdown(k->fd, SHUT_WR))
		ret = -errno;
	if (ret && must_work)
		return t_fail(k->r, "sending close_notify: %s", strerror(-ret));
	if (ret)
		t_note("our close_notify after the peer's: %s (peer already gone)", strerror(-ret));
	else
		t_note("sent close_notify and SHUT_WR");
	return 0;
}

/* ---- handshake on our side ------------------------------------------------- */

/* Userspace control: plain OpenSSL, nonblocking, under the deadline. */
static int userspace_handshake(struct conn *k)
{
	struct pollfd pfd = { .fd = k->fd };
	int rc, err;

	k->ssl = SSL_new(k->ctx);
	if (!k->ssl || !SSL_set_fd(k->ssl, k->fd) || t_set_nonblock(k->fd, true))
		return -ENOMEM;
	SSL_set_mode(k->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (k->c->role == KTLSH_ROLE_CLIENT) {
		SSL_set_tlsext_host_name(k->ssl, "localhost");
		SSL_set1_host(k->ssl, "localhost");
		SSL_set_connect_state(k->ssl);
	} else {
		SSL_set_accept_state(k->ssl);
	}
	for (;;) {
		ERR_clear_error();
		rc = SSL_do_handshake(k->ssl);
		if (rc == 1)
			break;
		err = SSL_get_error(k->ssl, rc);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
			snprintf(k->info.reason, sizeof(k->info.reason), "%s (verify: %s)",
				 ERR_reason_error_string(ERR_peek_error()) ?: "handshake failed",
				 X509_verify_cert_error_string(SSL_get_verify_result(k->ssl)));
			return -EPROTO;
		}
		pfd.events = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		if (!t_ms_left(k->deadline))
			return -ETIMEDOUT;
		poll(&pfd, 1, t_min_int(t_ms_left(k->deadline), 1000));
	}
	k->info.version = SSL_version(k->ssl);
	snprintf(k->info.group, sizeof(k->info.group), "%s",
		 OBJ_nid2sn(SSL_get_negotiated_group(k->ssl)) ?: "-");
	k->info.cipher = ktlsh_cipher_from_ssl(SSL_get_current_cipher(k->ssl));
	snprintf(k->info.cipher_name, sizeof(k->info.cipher_name), "%s",
		 SSL_CIPHER_get_name(SSL_get_current_cipher(k->ssl)));
	return 0;
}

static int our_handshake(struct conn *k, int timeout_ms)
{
	struct ktlsh_hs_params params = {
		.role = k->c->role,
		.server_name = k->c->role == KTLSH_ROLE_CLIENT ? "localhost" : NULL,
		.flags = k->c->hs_flags,
	};

	if (k->c->trace) {
		params.trace = trace_collect;
		params.trace_arg = &k->trace;
	}
	memset(&k->info, 0, sizeof(k->info));
	if (opt.userspace && k->c->kind == K_DATA)
		return userspace_handshake(k);
	return ktlsh_handshake(k->ctx, k->fd, &params, timeout_ms, &k->info);
}

/* After a successful install: the kernel holds what ktlsh says it holds. */
static void check_install(struct conn *k)
{
	const struct kt_case *c = k->c;
	struct t_result *r = k->r;
	unsigned kv[2], kc[2];
	uint64_t kseq[2];
	char ulp[32];
	int ret, i;
	long expect_tx = -1, expect_rx = -1;

	t_note("handshake: %s %s group %s, installed tx_seq=%llu rx_seq=%llu",
	     k->info.version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2", k->info.cipher_name,
	     k->info.group, (unsigned long long)k->info.tx_seq, (unsigned long long)k->info.rx_seq);
	if (c->version && k->info.version != c->version)
		t_fail(r, "negotiated version 0x%x, wanted 0x%x", k->info.version, c->version);
	if (c->cipher && k->info.cipher != c->cipher)
		t_fail(r, "negotiated %s (%s), wanted %s", ktlsh_cipher_name(k->info.cipher),
		     k->info.cipher_name, ktlsh_cipher_name(c->cipher));
	if (opt.userspace)
		return;

	ret = t_ulp_name(k->fd, ulp, sizeof(ulp));
	if (ret || strcmp(ulp, "tls"))
		t_fail(r, "TCP_ULP reads back \"%s\" (%s), not \"tls\"", ulp, ret ? strerror(-ret) : "ok");
	for (i = 0; i < 2; i++) {
		ret = t_ktls_readback(k->fd, i ? TLS_RX : TLS_TX, &kv[i], &kc[i], &kseq[i]);
		if (ret) {
			t_fail(r, "getsockopt(SOL_TLS, %s): %s", i ? "TLS_RX" : "TLS_TX", strerror(-ret));
			return;
		}
	}
	t_note("kernel: TLS_TX version 0x%04x cipher %u seq %llu; TLS_RX version 0x%04x cipher %u seq %llu",
	     kv[0], kc[0], (unsigned long long)kseq[0], kv[1], kc[1], (unsigned long long)kseq[1]);
	for (i = 0; i < 2; i++) {
		const char *dir = i ? "TLS_RX" : "TLS_TX";
		uint64_t want = i ? k->info.rx_seq : k->info.tx_seq;

		if (kv[i] != (unsigned)k->info.version)
			t_fail(r, "kernel %s version 0x%x, handshake 0x%x", dir, kv[i], k->info.version);
		if (kc[i] != kernel_cipher_type(k->info.cipher))
			t_fail(r, "kernel %s cipher %u, handshake %s", dir, kc[i],
			     ktlsh_cipher_name(k->info.cipher));
		if (kseq[i] != want)
			t_fail(r, "kernel %s sequence %llu, ktlsh says %llu", dir,
			     (unsigned long long)kseq[i], (unsigned long long)want);
	}

	/*
	 * Where each side's first application record number comes from:
	 * TLS 1.2 Finished is record 0 under the new keys both ways; TLS 1.3
	 * starts at 0, except that a server's NewSessionTickets go out under
	 * the application keys before handover.
	 */
	if (k->info.version == TLS1_2_VERSION) {
		expect_tx = expect_rx = 1;
	} else if (c->role == KTLSH_ROLE_CLIENT) {
		expect_tx = expect_rx = 0;
	} else {
		expect_tx = (long)SSL_CTX_get_num_tickets(k->ctx);
		expect_rx = 0;
	}
	if ((long)k->info.tx_seq != expect_tx || (long)k->info.rx_seq != expect_rx)
		t_fail(r, "installed tx_seq=%llu rx_seq=%llu, expected %ld/%ld",
		     (unsigned long long)k->info.tx_seq, (unsigned long long)k->info.rx_seq,
		     expect_tx, expect_rx);

	if (c->hs_flags & KTLSH_HS_TRUSTED_PEER) {
		int v = 0;
		socklen_t l = sizeof(v);

		if (getsockopt(k->fd, SOL_TLS, TLS_RX_EXPECT_NO_PAD, &v, &l))
			t_fail(r, "getsockopt(TLS_RX_EXPECT_NO_PAD): %s", strerror(errno));
		else if (!v)
			t_fail(r, "TLS_RX_EXPECT_NO_PAD is off despite KTLSH_HS_TRUSTED_PEER");
		else
			t_note("TLS_RX_EXPECT_NO_PAD is on");
	}
}

/* Errors an OpenSSL or GnuTLS peer prints when something went wrong. */
static void check_peer_stderr(struct conn *k)
{
	static const char *const bad_openssl[] = { ":error:", "ERROR\n", "bad record mac",
						   "decryption failed", "unexpected eof" };
	/* Not "*** " alone: gnutls-serv logs "*** Processing ... command" for
	 * every echoed line. Its payload lines have no spaces, so phrases with
	 * spaces cannot match data. */
	static const char *const bad_gnutls[] = { "Error in ", "Error while ", "*** Fatal",
						  "*** Received corrupted", "has failed",
						  "terminated the connection abnormally",
						  "Decryption has failed" };
	const char *const *bad;
	size_t n, i;

	if (k->c->peer == PEER_S_SERVER || k->c->peer == PEER_S_CLIENT) {
		bad = bad_openssl;
		n = ARRAY_SIZE(bad_openssl);
	} else {
		bad = bad_gnutls;
		n = ARRAY_SIZE(bad_gnutls);
	}
	for (i = 0; i < n; i++)
		if (t_tail_contains(&k->peer.err, bad[i]))
			t_fail(k->r, "peer reported an error (\"%s\" on its stderr)", bad[i]);
}

/* ---- case setup and teardown -------------------------------------------- */

static int conn_init(struct conn *k, const struct kt_case *c, struct t_result *r)
{
	const char *tmp = getenv("TMPDIR");

	memset(k, 0, sizeof(*k));
	k->c = c;
	k->r = r;
	k->deadline = t_now_ms() + (uint64_t)opt.timeout_s * 1000;
	k->lfd = k->fd = k->tx_file = -1;
	t_peer_init(&k->peer);
	snprintf(k->tmpdir, sizeof(k->tmpdir), "%s/ktlsh-kt.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(k->tmpdir)) {
		k->tmpdir[0] = '\0';
		return t_fail(r, "mkdtemp in %s: %s", tmp && *tmp ? tmp : "/tmp", strerror(errno));
	}
	return 0;
}

static void conn_free(struct conn *k)
{
	char path[PATH_MAX + 32];

	t_peer_stop(&k->peer);
	if (k->ssl) {
		SSL_set_shutdown(k->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(k->ssl);
	}
	SSL_CTX_free(k->ctx);
	t_close_fd(&k->fd);
	t_close_fd(&k->lfd);
	if (k->tx_map)
		munmap(k->tx_map, k->tx_len);
	t_close_fd(&k->tx_file);
	free(k->tx_buf);
	free(k->in_buf);
	t_stream_free(&k->rx);
	t_stream_free(&k->out);
	trace_free(&k->trace);
	if (k->peer.log_path[0])
		unlink(k->peer.log_path);
	if (k->tmpdir[0]) {
		snprintf(path, sizeof(path), "%s/sendfile.bin", k->tmpdir);
		unlink(path);
		rmdir(k->tmpdir);
	}
}

/* Start the peer and get our connected socket to it, whichever side dials. */
static int conn_connect(struct conn *k)
{
	struct t_argv a = { .n = 0 };
	int port, ret;

	if (k->c->role == KTLSH_ROLE_SERVER) {
		k->lfd = t_listen_local(&port, 8);
		if (k->lfd < 0)
			return t_fail(k->r, "listen: %s", strerror(-k->lfd));
	} else {
		port = t_free_port();
		if (port < 0)
			return t_fail(k->r, "no free port: %s", strerror(-port));
	}
	if (k->c->peer == PEER_GNUTLS_CLI)
		snprintf(k->peer.log_path, sizeof(k->peer.log_path), "%s/gnutls-cli.log", k->tmpdir);
	peer_argv(&a, k->c, port, k->peer.log_path);
	ret = t_peer_start(&k->peer, peer_tool_name(k->c->peer), a.v, NULL, NULL, NULL);
	t_argv_free(&a);
	if (ret)
		return t_fail(k->r, "starting %s: %s", peer_tool_name(k->c->peer), strerror(-ret));
	if (k->c->role == KTLSH_ROLE_SERVER) {
		k->fd = accept_deadline(k->lfd, &k->peer, k->deadline, k->r);
		t_close_fd(&k->lfd);
	} else {
		k->fd = t_connect_retry(port, &k->peer, k->deadline, 200, k->r);
	}
	return k->fd < 0 ? -1 : 0;
}

/* ---- K_DATA: the payload both ways over kTLS ------------------------------- */

static void case_data(const struct kt_case *c, struct t_result *r)
{
	bool echo = c->peer == PEER_GNUTLS_SERV;
	size_t out_len = c->use_sendfile ? opt.sendfile_size : opt.payload;
	size_t in_len = (echo || c->use_sendfile) ? 0 : opt.payload;
	uint8_t h_out[SHA256_LEN], h_in[SHA256_LEN];
	struct tls_stat st0, st1;
	struct conn k;
	bool peer_first;
	char stbuf[64];
	int ret;

	/*
	 * gnutls-cli writes what it receives to stdout one byte per write(2):
	 * 16 MiB would be 16 million system calls, minutes natively and hours
	 * in the UML guest. It reads its stdin in 4 KiB blocks, so only the
	 * direction towards it is kept small.
	 */
	if (c->peer == PEER_GNUTLS_CLI && out_len > GNUTLS_CLI_OUT)
		out_len = GNUTLS_CLI_OUT;
	if (conn_init(&k, c, r))
		goto out;
	if (c->peer == PEER_GNUTLS_CLI)
		t_note("to gnutls-cli: %zu KiB (it writes its stdout a byte at a time); from it: %zu MiB",
		     out_len / 1024, in_len / MIB);

	/* Payloads and their hashes, before any clock matters. */
	if (c->use_sendfile) {
		ret = sendfile_source(&k, out_len, h_out);
		if (ret) {
			t_fail(r, "making the %zu MiB sendfile source in %s: %s", out_len / MIB,
			     k.tmpdir, strerror(-ret));
			goto out;
		}
		if (opt.userspace) {
			k.tx_map = mmap(NULL, out_len, PROT_READ, MAP_PRIVATE, k.tx_file, 0);
			if (k.tx_map == MAP_FAILED) {
				k.tx_map = NULL;
				t_fail(r, "mmap: %s", strerror(errno));
				goto out;
			}
		}
	} else {
		k.tx_buf = t_payload_make(out_len, echo);
		if (!k.tx_buf) {
			t_fail(r, "no memory for the payload");
			goto out;
		}
		k.tx_len = out_len;
		t_sha256(k.tx_buf, out_len, h_out);
	}
	k.in_buf = t_payload_make(in_len, false);
	if (!k.in_buf) {
		t_fail(r, "no memory for the payload");
		goto out;
	}
	k.in_len = in_len;
	t_sha256(k.in_buf, in_len, h_in);
	/* gnutls-serv echoes: what comes back must be what we sent. */
	k.out_is_data = !echo && c->peer != PEER_RAW;
	if (t_stream_init(&k.rx, echo ? out_len : in_len, echo ? h_out : h_in) ||
	    t_stream_init(&k.out, k.out_is_data ? out_len : 0, h_out)) {
		t_fail(r, "no memory");
		goto out;
	}
	k.rx_mode = opt.userspace ? RX_SSL : c->count_tickets ? RX_COUNT : RX_KTLSH;

	k.ctx = our_ctx(c, r);
	if (!k.ctx)
		goto out;
	tls_stat_read(&st0);
	if (conn_connect(&k))
		goto out;

	ret = our_handshake(&k, t_min_int(t_ms_left(k.deadline), HS_TIMEOUT_MS));
	if (c->trace)
		trace_print(&k.trace);
	if (ret) {
		t_fail(r, "handshake failed: %s: %s", strerror(-ret), k.info.reason);
		goto out;
	}
	check_install(&k);
	if (c->trace) {
		if (!k.trace.n || !trace_has(&k.trace, "clienthello") || !trace_has(&k.trace, "install"))
			t_fail(r, "trace lacks the clienthello or install step");
		else if (!t_contains_ci(k.trace.line[k.trace.n - 1], "install"))
			t_fail(r, "the last trace line is not the install step");
		else if (strncmp(k.trace.line[0], "ktlsh:", 6))
			t_fail(r, "trace lines do not start with \"ktlsh:\"");
	}
	if (r->verdict == T_FAIL)
		goto out;
	if (!k.ssl && t_set_nonblock(k.fd, true)) {
		t_fail(r, "O_NONBLOCK: %s", strerror(errno));
		goto out;
	}

	if (pump(&k, pump_data_done, k.deadline, "data")) {
		t_fail(r, "%s", k.err);
		goto out;
	}
	stream_verify(&k.rx, echo ? "echoed back to us" : "received by us", r);
	if (k.out_is_data)
		stream_verify(&k.out, "received by the peer", r);
	if (c->count_tickets) {
		if (opt.userspace)
			t_note("NewSessionTickets OpenSSL took after the handshake: %u", tickets_seen);
		else
			t_note("NewSessionTickets read with ktlsh_recv_control() after handover: %u "
			     "(in %u records), none delivered as data", k.tickets, k.ctrl_records);
		if ((opt.userspace ? tickets_seen : k.tickets) != 2)
			t_fail(r, "expected the 2 tickets s_server sends, saw %u",
			     opt.userspace ? tickets_seen : k.tickets);
	}
	tls_stat_read(&st1);
	if (!opt.userspace)
		tls_stat_check(&st0, &st1, r);

	/*
	 * close_notify both ways. A server peer (s_server, gnutls-serv) gets
	 * ours first; a client peer is told to close (EOF on its stdin) and
	 * ours answers its close_notify.
	 */
	k.closing = true;
	peer_first = c->role == KTLSH_ROLE_SERVER;
	if (!peer_first) {
		/* s_server also exits (-naccept 1); gnutls-serv keeps serving. */
		bool (*done)(const struct conn *) = c->peer == PEER_S_SERVER ? close_done_peer_exit
									      : close_done_eof;

		if (our_close_notify(&k, true))
			goto out;
		if (pump(&k, done, phase_deadline(k.deadline, PEER_EXIT_MS), "close")) {
			t_fail(r, "%s", k.err);
			goto out;
		}
		t_note("after our close_notify, %s answered with %s%s; %s", k.peer.name,
		     eof_name(k.rx_eof), k.rx_eof == EOF_CLOSE_NOTIFY && !opt.userspace
		     ? " (recv() failed with EIO, then ktlsh_recv() returned 0)" : "",
		     t_peer_status_str(&k.peer, stbuf, sizeof(stbuf)));
		if (k.rx_eof != EOF_CLOSE_NOTIFY)
			t_fail(r, "%s did not answer our close_notify with its own", k.peer.name);
		if (c->peer == PEER_S_SERVER && !peer_exited_ok(&k.peer))
			t_fail(r, "%s did not exit 0 after our close_notify", k.peer.name);
	} else {
		peer_close_stdin(&k.peer);
		if (pump(&k, close_done_eof, phase_deadline(k.deadline, PEER_EXIT_MS), "close")) {
			t_fail(r, "%s", k.err);
			goto out;
		}
		t_note("after EOF on its stdin, %s sent %s%s", k.peer.name, eof_name(k.rx_eof),
		     k.rx_eof == EOF_CLOSE_NOTIFY && !opt.userspace
		     ? ": recv() failed with EIO, then ktlsh_recv() returned 0" : "");
		if (k.rx_eof != EOF_CLOSE_NOTIFY)
			t_fail(r, "the peer's close ended in %s, not close_notify", eof_name(k.rx_eof));
		our_close_notify(&k, false);
		if (t_peer_wait(&k.peer, phase_deadline(k.deadline, PEER_EXIT_MS)))
			t_fail(r, "%s did not exit after the close_notify exchange", k.peer.name);
		else if (!peer_exited_ok(&k.peer))
			t_fail(r, "%s %s after the close_notify exchange", k.peer.name,
			     t_peer_status_str(&k.peer, stbuf, sizeof(stbuf)));
	}
	t_peer_stop(&k.peer);
	check_peer_stderr(&k);
out:
	if (r->verdict == T_FAIL)
		peer_diagnose(&k.peer);
	else if (t_verbose)
		t_tail_note(&k.peer.err, "peer stderr");
	conn_free(&k);
}

/* ---- negative cases ---------------------------------------------------------- */

/* Nothing reached the kernel: no ULP on the socket. */
static void check_no_ulp(struct conn *k)
{
	char ulp[32];
	int ret = t_ulp_name(k->fd, ulp, sizeof(ulp));

	if (ret)
		t_fail(k->r, "getsockopt(TCP_ULP): %s", strerror(-ret));
	else if (ulp[0])
		t_fail(k->r, "TCP_ULP is \"%s\" after a failed handshake: keys went to the kernel", ulp);
}

static void expect_hs_error(struct conn *k, int ret, int want)
{
	t_note("ktlsh_handshake: %d (%s), reason \"%s\", verify %d (%s), alert sent %d (%s), "
	     "received %d", ret, ret ? strerror(-ret) : "ok", k->info.reason, k->info.verify_result,
	     X509_verify_cert_error_string(k->info.verify_result), k->info.alert_sent,
	     k->info.alert_sent >= 0 ? ktlsh_alert_name((uint8_t)k->info.alert_sent) : "-",
	     k->info.alert_received);
	if (ret != -want)
		t_fail(k->r, "ktlsh_handshake returned %d (%s), expected -%s", ret,
		     ret ? strerror(-ret) : "success", strerrorname_np(want));
	if (!k->info.reason[0])
		t_fail(k->r, "info.reason is empty");
}

/* The peer saw an alert: OpenSSL prints "... alert <name> ..." */
static void expect_peer_saw_alert(struct conn *k)
{
	if (t_peer_wait(&k->peer, phase_deadline(k->deadline, PEER_EXIT_MS)))
		t_note("%s still running after the failed handshake", k->peer.name);
	if (!t_tail_contains(&k->peer.err, "alert"))
		t_fail(k->r, "%s's stderr does not mention the alert", k->peer.name);
	else
		t_note("%s's stderr mentions the alert", k->peer.name);
}

static void case_neg_tls(const struct kt_case *c, struct t_result *r)
{
	struct conn k;
	int ret;

	if (conn_init(&k, c, r))
		goto out;
	k.ctx = our_ctx(c, r);
	if (!k.ctx)
		goto out;
	if (c->kind == K_NEG_CIPHER) {
		/* Set after ktlsh_ssl_ctx_setup() so nothing widens it again. */
		if (!SSL_CTX_set_ciphersuites(k.ctx, "TLS_AES_256_GCM_SHA384") ||
		    !SSL_CTX_set_min_proto_version(k.ctx, TLS1_3_VERSION)) {
			t_fail(r, "cannot restrict our ciphers");
			goto out;
		}
	}
	if (conn_connect(&k))
		goto out;
	ret = our_handshake(&k, t_min_int(t_ms_left(k.deadline), HS_TIMEOUT_MS));
	if (c->trace)
		trace_print(&k.trace);
	expect_hs_error(&k, ret, c->expect_err);
	if (c->expect_verify && k.info.verify_result != c->expect_verify)
		t_fail(r, "verify_result %d (%s), expected %d (%s)", k.info.verify_result,
		     X509_verify_cert_error_string(k.info.verify_result), c->expect_verify,
		     X509_verify_cert_error_string(c->expect_verify));
	if (c->kind == K_NEG_CIPHER && !t_contains_ci(k.info.reason, "cipher"))
		t_fail(r, "reason \"%s\" does not name the cipher problem", k.info.reason);
	if (k.info.alert_sent < 0)
		t_fail(r, "no alert was sent (info.alert_sent == -1)");
	check_no_ulp(&k);
	/* Closing ours lets a peer still waiting on us read the alert. */
	t_close_fd(&k.fd);
	expect_peer_saw_alert(&k);
	if (c->trace && (!trace_has(&k.trace, "fail") ||
			 !(trace_has(&k.trace, "verify") || trace_has(&k.trace, "alert"))))
		t_fail(r, "the trace does not show where the handshake stopped");
out:
	if (r->verdict == T_FAIL)
		peer_diagnose(&k.peer);
	conn_free(&k);
}

struct raw_arg {
	enum raw_mode mode;
	int port;
};

static void raw_reset(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* The misbehaving peers, run in a forked child; stdout reports to us. */
static int raw_peer_main(void *p)
{
	const struct raw_arg *a = p;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)a->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	static const char http[] = "GET / HTTP/1.1\r\n\r\n";
	uint8_t ch[2048], buf[256];
	char hex[800];
	struct pollfd pfd;
	ssize_t n, got = 0;
	int fd, lfd, one = 1, i;

	if (a->mode == RAW_SERVER_RESET) {
		lfd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1))
			return 2;
		fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			return 2;
		pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
		poll(&pfd, 1, 5000);
		n = read(fd, buf, sizeof(buf));
		printf("read %zd bytes of ClientHello, resetting\n", n);
		fflush(stdout);
		raw_reset(fd);
		return 0;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	for (i = 0; i < 100 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)); i++)
		t_msleep(20);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	switch (a->mode) {
	case RAW_RESET_MID:
	case RAW_CLOSE_MID:
		n = t_make_client_hello(ch, sizeof(ch));
		if (n < 40)
			return 3;
		if (write(fd, ch, (size_t)n / 2) != n / 2)
			return 4;
		printf("sent %zd of a %zd-byte ClientHello\n", n / 2, n);
		fflush(stdout);
		t_msleep(300);	/* let the server sit mid-handshake in poll() */
		if (a->mode == RAW_RESET_MID)
			raw_reset(fd);
		else
			close(fd);
		return 0;
	case RAW_GARBAGE:
		if (write(fd, http, sizeof(http) - 1) != (ssize_t)sizeof(http) - 1)
			return 4;
		/* What does the server answer, if anything? */
		for (;;) {
			pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
			if (poll(&pfd, 1, 5000) <= 0)
				break;
			n = read(fd, buf + got, sizeof(buf) - (size_t)got);
			if (n <= 0)
				break;
			got += n;
			if ((size_t)got == sizeof(buf))
				break;
		}
		hex_str(buf, (size_t)got < 16 ? (size_t)got : 16, hex, sizeof(hex));
		if (got)
			printf("the server answered %zd bytes: %s\n", got, hex);
		else
			printf("the server closed without answering (no alert for an HTTP request)\n");
		return 0;
	case RAW_SILENT:
		t_msleep(30000);
		return 0;
	default:
		return 5;
	}
}

static void case_neg_raw(const struct kt_case *c, struct t_result *r)
{
	struct raw_arg arg = { .mode = c->raw };
	uint64_t t0;
	struct conn k;
	int ret, port, timeout_ms = c->raw == RAW_SILENT ? 1000 : HS_TIMEOUT_MS;

	if (conn_init(&k, c, r))
		goto out;
	k.ctx = our_ctx(c, r);
	if (!k.ctx)
		goto out;
	if (c->role == KTLSH_ROLE_SERVER) {
		k.lfd = t_listen_local(&port, 8);
		if (k.lfd < 0) {
			t_fail(r, "listen: %s", strerror(-k.lfd));
			goto out;
		}
	} else {
		port = t_free_port();
	}
	arg.port = port;
	ret = t_peer_start(&k.peer, "raw peer", NULL, raw_peer_main, &arg, NULL);
	if (ret) {
		t_fail(r, "fork: %s", strerror(-ret));
		goto out;
	}
	if (c->role == KTLSH_ROLE_SERVER) {
		k.fd = accept_deadline(k.lfd, &k.peer, k.deadline, r);
		t_close_fd(&k.lfd);
	} else {
		k.fd = t_connect_retry(port, &k.peer, k.deadline, 200, r);
	}
	if (k.fd < 0)
		goto out;
	t0 = t_now_ms();
	ret = our_handshake(&k, timeout_ms);
	expect_hs_error(&k, ret, c->expect_err);
	if (c->raw == RAW_SILENT) {
		uint64_t took = t_now_ms() - t0;

		t_note("gave up after %llu ms", (unsigned long long)took);
		if (took < 900 || took > 5000)
			t_fail(r, "the 1000 ms handshake timeout fired after %llu ms",
			     (unsigned long long)took);
	}
	check_no_ulp(&k);
	t_close_fd(&k.fd);
	if (c->raw != RAW_SILENT)
		t_peer_wait(&k.peer, phase_deadline(k.deadline, PEER_EXIT_MS));
	t_peer_stop(&k.peer);
	if (k.peer.out.total)
		t_note("raw peer: %.*s", (int)strcspn(k.peer.out.head, "\n"), k.peer.out.head);
out:
	if (r->verdict == T_FAIL)
		peer_diagnose(&k.peer);
	conn_free(&k);
}

/* ---- the case table ------------------------------------------------------------ */

static struct kt_case *cases;
static unsigned n_cases;

static struct kt_case *case_add(const char *name)
{
	struct kt_case *c;

	cases = realloc(cases, (n_cases + 1) * sizeof(*cases));
	if (!cases) {
		perror("realloc");
		exit(2);
	}
	c = &cases[n_cases++];
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->num_tickets = -1;
	return c;
}

static struct kt_case *data_case(int version, enum ktlsh_cipher cipher, enum peer_kind peer,
				 const char *suffix)
{
	enum ktlsh_role role = (peer == PEER_S_SERVER || peer == PEER_GNUTLS_SERV)
			       ? KTLSH_ROLE_CLIENT : KTLSH_ROLE_SERVER;
	char name[128];
	struct kt_case *c;

	snprintf(name, sizeof(name), "%s/%s/%s/%s%s", version_tag(version), ktlsh_cipher_name(cipher),
		 role == KTLSH_ROLE_CLIENT ? "client" : "server", peer_tool_name(peer), suffix);
	c = case_add(name);
	c->kind = K_DATA;
	c->peer = peer;
	c->role = role;
	c->version = version;
	c->cipher = cipher;
	c->needs_ktls = true;
	return c;
}

static struct kt_case *neg_case(const char *name, enum case_kind kind, enum peer_kind peer,
				int err)
{
	struct kt_case *c = case_add(name);

	c->kind = kind;
	c->peer = peer;
	c->role = (peer == PEER_S_SERVER) || kind == K_NEG_VERIFY ? KTLSH_ROLE_CLIENT
								 : KTLSH_ROLE_SERVER;
	c->expect_err = err;
	return c;
}

static void cases_build(void)
{
	static const int versions[] = { TLS1_2_VERSION, TLS1_3_VERSION };
	static const enum ktlsh_cipher ciphers[] = {
		KTLSH_CIPHER_AES_GCM_128, KTLSH_CIPHER_AES_GCM_256,
		KTLSH_CIPHER_CHACHA20_POLY1305, KTLSH_CIPHER_AES_CCM_128,
	};
	static const enum peer_kind peers[] = {
		PEER_S_SERVER, PEER_GNUTLS_SERV, PEER_S_CLIENT, PEER_GNUTLS_CLI,
	};
	struct kt_case *c;
	unsigned v, ci, p;

	/* a. version x cipher x role x peer */
	for (v = 0; v < ARRAY_SIZE(versions); v++)
		for (ci = 0; ci < ARRAY_SIZE(ciphers); ci++)
			for (p = 0; p < ARRAY_SIZE(peers); p++)
				data_case(versions[v], ciphers[ci], peers[p], "")->matrix = true;

	/* The RSA certificate, for the ECDHE-RSA suites. */
	c = data_case(TLS1_3_VERSION, KTLSH_CIPHER_AES_GCM_128, PEER_S_CLIENT, "/rsa-cert");
	c->rsa = c->matrix = true;
	c = data_case(TLS1_2_VERSION, KTLSH_CIPHER_AES_GCM_128, PEER_S_CLIENT, "/rsa-cert");
	c->rsa = c->matrix = true;

	/* b. sendfile() through the kTLS socket */
	c = data_case(TLS1_3_VERSION, KTLSH_CIPHER_AES_GCM_128, PEER_S_CLIENT, "/sendfile");
	c->use_sendfile = c->matrix = true;
	c = data_case(TLS1_2_VERSION, KTLSH_CIPHER_AES_GCM_256, PEER_S_SERVER, "/sendfile");
	c->use_sendfile = c->matrix = true;

	/* c. NewSessionTickets arriving after handover, counted */
	c = data_case(TLS1_3_VERSION, KTLSH_CIPHER_AES_GCM_128, PEER_S_SERVER, "/tickets-after-handover");
	c->count_tickets = c->matrix = true;

	/* d. our server's TX sequence with 0 and 3 tickets */
	c = data_case(TLS1_3_VERSION, KTLSH_CIPHER_AES_GCM_128, PEER_S_CLIENT, "/num-tickets-0");
	c->num_tickets = 0;
	c->matrix = true;
	c = data_case(TLS1_3_VERSION, KTLSH_CIPHER_CHACHA20_POLY1305, PEER_S_CLIENT, "/num-tickets-3");
	c->num_tickets = 3;
	c->matrix = true;

	/* TLS_RX_EXPECT_NO_PAD for a trusted peer */
	c = data_case(TLS1_3_VERSION, KTLSH_CIPHER_AES_GCM_128, PEER_S_SERVER, "/rx-expect-no-pad");
	c->hs_flags = KTLSH_HS_TRUSTED_PEER;
	c->matrix = true;

	/* The per-step trace of a successful handshake */
	c = data_case(TLS1_3_VERSION, KTLSH_CIPHER_AES_GCM_128, PEER_S_SERVER, "/trace");
	c->trace = c->matrix = true;

	/* e. negative: no kernel TLS needed */
	neg_case("neg/no-common-cipher/server/openssl-s_client", K_NEG_CIPHER, PEER_S_CLIENT,
		 EPROTO);
	c = neg_case("neg/wrong-ca/client/openssl-s_server", K_NEG_VERIFY, PEER_S_SERVER,
		     EKEYREJECTED);
	c->peer_cert = "other-server";
	c->expect_verify = X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
	c = neg_case("neg/wrong-ca/tls12/client/openssl-s_server", K_NEG_VERIFY, PEER_S_SERVER,
		     EKEYREJECTED);
	c->peer_cert = "other-server";
	c->version = TLS1_2_VERSION;
	c->expect_verify = X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
	c = neg_case("neg/wrong-hostname/client/openssl-s_server", K_NEG_VERIFY, PEER_S_SERVER,
		     EKEYREJECTED);
	c->peer_cert = "wrongname";
	c->expect_verify = X509_V_ERR_HOSTNAME_MISMATCH;
	c = neg_case("neg/expired/client/openssl-s_server", K_NEG_VERIFY, PEER_S_SERVER,
		     EKEYREJECTED);
	c->peer_cert = "expired";
	c->expect_verify = X509_V_ERR_CERT_HAS_EXPIRED;
	c = neg_case("neg/client-cert-wrong-ca/server/openssl-s_client", K_NEG_CLIENT_CERT,
		     PEER_S_CLIENT, EKEYREJECTED);
	c->peer_cert = "other-server";
	c->expect_verify = X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
	c = neg_case("neg/trace/wrong-ca/client/openssl-s_server", K_NEG_VERIFY, PEER_S_SERVER,
		     EKEYREJECTED);
	c->peer_cert = "other-server";
	c->expect_verify = X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
	c->trace = true;

	c = neg_case("neg/reset-mid-handshake/server/raw", K_NEG_RAW, PEER_RAW, ECONNRESET);
	c->raw = RAW_RESET_MID;
	c = neg_case("neg/close-mid-handshake/server/raw", K_NEG_RAW, PEER_RAW, ECONNRESET);
	c->raw = RAW_CLOSE_MID;
	c = neg_case("neg/reset-after-clienthello/client/raw", K_NEG_RAW, PEER_RAW, ECONNRESET);
	c->raw = RAW_SERVER_RESET;
	c->role = KTLSH_ROLE_CLIENT;
	c = neg_case("neg/garbage-instead-of-clienthello/server/raw", K_NEG_RAW, PEER_RAW, EPROTO);
	c->raw = RAW_GARBAGE;
	c = neg_case("neg/silent-client-timeout/server/raw", K_NEG_RAW, PEER_RAW, ETIMEDOUT);
	c->raw = RAW_SILENT;
}

static bool case_selected(const struct kt_case *c)
{
	unsigned i;

	if (!opt.n_filters)
		return true;
	for (i = 0; i < opt.n_filters; i++)
		if (strstr(c->name, opt.filters[i]))
			return true;
	return false;
}

/* Why a case cannot run here, or NULL. */
static const char *case_skip_reason(const struct kt_case *c, char *buf, size_t len)
{
	const char *tool = NULL;

	switch (c->peer) {
	case PEER_S_SERVER:
	case PEER_S_CLIENT:
		tool = tool_openssl[0] ? NULL : "openssl";
		break;
	case PEER_GNUTLS_SERV:
		tool = tool_gnutls_serv[0] ? NULL : "gnutls-serv (gnutls-bin)";
		break;
	case PEER_GNUTLS_CLI:
		tool = tool_gnutls_cli[0] ? NULL : "gnutls-cli (gnutls-bin)";
		break;
	case PEER_RAW:
		break;
	}
	if (tool) {
		snprintf(buf, len, "%s not found in PATH", tool);
		return buf;
	}
	if (opt.userspace && (c->trace || c->hs_flags) && c->kind == K_DATA) {
		snprintf(buf, len, "about ktlsh's kTLS install; not in the userspace control");
		return buf;
	}
	if (c->needs_ktls && !opt.userspace && !ktls_ok) {
		snprintf(buf, len, "no kernel TLS here: %s", ktls_why);
		return buf;
	}
	if (c->matrix && !opt.userspace && !ktlsh_kcaps_has(&caps, c->version, c->cipher)) {
		snprintf(buf, len, "this kernel does not take %s %s for TLS_TX and TLS_RX (probe)",
			 c->version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2",
			 ktlsh_cipher_name(c->cipher));
		return buf;
	}
	if (c->matrix && c->version == TLS1_2_VERSION && !openssl_tls12_cipher(c->cipher, c->rsa)) {
		snprintf(buf, len, "no TLS 1.2 suite for %s with this certificate",
			 ktlsh_cipher_name(c->cipher));
		return buf;
	}
	return NULL;
}

/* In the forked case process: run, report, exit. */
static void case_child(const struct kt_case *c)
{
	struct t_result r = { .verdict = T_PASS };
	int fds0 = t_count_fds(), fds1;

	t_case_t0 = t_now_ms();
	switch (c->kind) {
	case K_DATA:
		case_data(c, &r);
		break;
	case K_NEG_CIPHER:
	case K_NEG_VERIFY:
	case K_NEG_CLIENT_CERT:
		case_neg_tls(c, &r);
		break;
	case K_NEG_RAW:
		case_neg_raw(c, &r);
		break;
	}
	/* Every descriptor the case opened is closed again. */
	fds1 = t_count_fds();
	if (fds1 != fds0)
		t_fail(&r, "fd leak: %d open descriptors before the case, %d after", fds0, fds1);
	else if (c->kind != K_DATA)
		t_note("open descriptors before and after: %d", fds0);
	fflush(stdout);
	t_report("result %d %s", (int)r.verdict, r.why);
	/* exit(), not _exit(): a sanitizer build checks the case for leaks. */
	exit(0);
}

static void case_entry(const void *arg)
{
	case_child(arg);
}

/* One case in a child process (t_run_forked: under its deadline plus
 * grace, killed with its peers if it overruns). */
static void run_case(const struct kt_case *c, struct t_totals *tot)
{
	char skipbuf[300];
	const char *skip_why;
	struct t_outcome o;

	skip_why = case_skip_reason(c, skipbuf, sizeof(skipbuf));
	if (skip_why) {
		printf("SKIP %s: %s\n", c->name, skip_why);
		fflush(stdout);
		tot->skipped++;
		return;
	}
	t_run_forked(opt.timeout_s, case_entry, c, &o);
	t_count_outcome(c->name, &o, tot);
}

/* ---- start-up ---------------------------------------------------------------- */

static void caps_line(const char *what, uint32_t bits, char *buf, size_t len)
{
	size_t used = (size_t)snprintf(buf, len, "%s:", what);
	int ci;

	for (ci = 1; ci < KTLSH_CIPHER_COUNT; ci++)
		if (bits & KTLSH_CIPHER_BIT(ci))
			used += (size_t)snprintf(buf + used, len - used, " %s",
						 ktlsh_cipher_name((enum ktlsh_cipher)ci));
	if (!bits)
		snprintf(buf + used, len - used, " none");
}

static void probe_kernel(void)
{
	struct utsname u;
	char l1[200], l2[200], l3[200], l4[200];
	bool stat_present = !access("/proc/net/tls_stat", R_OK);
	int ret;

	uname(&u);
	memset(&caps, 0, sizeof(caps));
	ret = ktlsh_kernel_probe(&caps);
	if (ret) {
		snprintf(ktls_why, sizeof(ktls_why), "ktlsh_kernel_probe failed: %s", strerror(-ret));
	} else if (caps.ulp_err) {
		snprintf(ktls_why, sizeof(ktls_why), "TCP_ULP \"tls\" fails with %s%s",
			 strerrorname_np(-caps.ulp_err) ?: "?",
			 stat_present ? "" : ", no /proc/net/tls_stat");
	} else if (!(caps.tls12_tx | caps.tls12_rx | caps.tls13_tx | caps.tls13_rx)) {
		snprintf(ktls_why, sizeof(ktls_why), "the kernel took no cipher in the probe");
	} else {
		ktls_ok = true;
	}
	printf("# ktlsh-kt: kernel %s %s, kTLS %s%s%s\n", u.sysname, u.release,
	       ktls_ok ? "available" : "unavailable", ktls_ok ? "" : ": ", ktls_ok ? "" : ktls_why);
	if (ktls_ok) {
		caps_line("TLS1.2 TX", caps.tls12_tx, l1, sizeof(l1));
		caps_line("TLS1.2 RX", caps.tls12_rx, l2, sizeof(l2));
		caps_line("TLS1.3 TX", caps.tls13_tx, l3, sizeof(l3));
		caps_line("TLS1.3 RX", caps.tls13_rx, l4, sizeof(l4));
		printf("# kernel takes %s; %s; %s; %s\n", l1, l2, l3, l4);
		if (!stat_present)
			printf("# warning: kTLS works but /proc/net/tls_stat is missing\n");
	}
}

/* The certificates: DIR must hold them, or ktlsh-mkcerts (next to us in
 * the build tree) makes them. */
static int certs_ready(void)
{
	char path[PATH_MAX], self[PATH_MAX], cmd[3 * PATH_MAX];
	ssize_t n;
	char *slash;

	snprintf(path, sizeof(path), "%s/other-server.key", opt.certs);
	if (!access(path, R_OK))
		return 0;
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -1;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (!slash)
		return -1;
	*slash = '\0';
	snprintf(cmd, sizeof(cmd), "'%s/../tools/ktlsh-mkcerts' '%s'", self, opt.certs);
	if (system(cmd))
		return -1;
	return access(path, R_OK) ? -1 : 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ktlsh-kt [--certs DIR] [--filter SUBSTR]... [--quick] [--list]\n"
		"                [--userspace] [--timeout SECONDS] [--verbose]\n"
		"\n"
		"  --certs DIR     the test PKI (made with ktlsh-mkcerts if missing;\n"
		"                  default $KTLSH_CERTS or build/tests/certs)\n"
		"  --filter S      run only cases whose name contains S (repeatable)\n"
		"  --quick         1 MiB payloads (4 MiB sendfile) instead of 16 (64)\n"
		"  --list          print the case names and exit\n"
		"  --userspace     control run: OpenSSL's record layer instead of kTLS on\n"
		"                  our side (checks the peers and the pump, not ktlsh)\n"
		"  --timeout S     per-case deadline (default %d)\n"
		"  --verbose       peer command lines and stderr for passing cases too\n",
		CASE_TIMEOUT_S);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "certs", required_argument, NULL, 'c' },
		{ "filter", required_argument, NULL, 'f' },
		{ "quick", no_argument, NULL, 'q' },
		{ "list", no_argument, NULL, 'l' },
		{ "userspace", no_argument, NULL, 'u' },
		{ "timeout", required_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct t_totals tot = { 0 };
	struct sigaction sa;
	unsigned i;
	int o, fds0, fds1;
	SSL_CTX *warm;
	uint8_t b;

	opt.certs = getenv("KTLSH_CERTS") ?: "build/tests/certs";
	while ((o = getopt_long(argc, argv, "c:f:qlut:vh", longopts, NULL)) != -1) {
		switch (o) {
		case 'c':
			opt.certs = optarg;
			break;
		case 'f':
			if (opt.n_filters < ARRAY_SIZE(opt.filters))
				opt.filters[opt.n_filters++] = optarg;
			break;
		case 'q':
			opt.quick = true;
			break;
		case 'l':
			opt.list = true;
			break;
		case 'u':
			opt.userspace = true;
			break;
		case 't':
			opt.timeout_s = atoi(optarg);
			if (opt.timeout_s <= 0)
				opt.timeout_s = CASE_TIMEOUT_S;
			break;
		case 'v':
			t_verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	opt.payload = (opt.quick ? 1 : 16) * (size_t)MIB;
	opt.sendfile_size = (opt.quick ? 4 : 64) * (size_t)MIB;

	cases_build();
	if (opt.list) {
		for (i = 0; i < n_cases; i++)
			if (case_selected(&cases[i]))
				printf("%s\n", cases[i].name);
		return 0;
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	/* Orphaned peers of a killed case come back to us to be reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);

	if (certs_ready()) {
		printf("# no test PKI in %s and ktlsh-mkcerts could not make one\n", opt.certs);
		printf("kernel: 0 passed, 1 failed, 0 skipped\n");
		return 1;
	}
	/* Whatever OpenSSL opens once (config, entropy) is open before the
	 * cases count descriptors. */
	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL);
	RAND_bytes(&b, 1);
	warm = SSL_CTX_new(TLS_method());
	SSL_CTX_free(warm);

	t_find_tool("openssl", tool_openssl, sizeof(tool_openssl));
	t_find_tool("gnutls-serv", tool_gnutls_serv, sizeof(tool_gnutls_serv));
	t_find_tool("gnutls-cli", tool_gnutls_cli, sizeof(tool_gnutls_cli));
	probe_kernel();
	printf("# peers: %s, %s, %s\n", tool_openssl[0] ? tool_openssl : "no openssl",
	       tool_gnutls_serv[0] ? tool_gnutls_serv : "no gnutls-serv",
	       tool_gnutls_cli[0] ? tool_gnutls_cli : "no gnutls-cli");
	printf("# payload %zu MiB each way, sendfile %zu MiB, %d s per case%s\n",
	       opt.payload / MIB, opt.sendfile_size / MIB, opt.timeout_s,
	       opt.userspace ? "; USERSPACE CONTROL: our side uses OpenSSL, not kTLS" : "");

	fds0 = t_count_fds();
	for (i = 0; i < n_cases; i++)
		if (case_selected(&cases[i]))
			run_case(&cases[i], &tot);
	fds1 = t_count_fds();
	if (fds1 != fds0) {
		printf("not ok %u - runner: %d open descriptors before the cases, %d after\n",
		       ++tot.num, fds0, fds1);
		tot.failed++;
	}
	printf("kernel: %u passed, %u failed, %u skipped\n", tot.passed, tot.failed, tot.skipped);
	free(cases);
	return tot.failed ? 1 : 0;
}
