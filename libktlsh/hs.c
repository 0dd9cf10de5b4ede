// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The handshake engine: OpenSSL drives the handshake on the caller's socket,
 * ktlsh watches it through three callbacks and then hands the keys to the
 * kernel.
 *
 *  - keylog: the TLS 1.3 application traffic secrets (OpenSSL has no other
 *    public way to give them out);
 *  - msg: every record header OpenSSL writes or reads, and the message that
 *    switches each direction to its final keys, so the record sequence
 *    numbers the kernel must continue from are counted, not guessed;
 *  - info/verify: alerts and certificate results for the trace and reasons.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define KTLSH_HS_FINISHED	20
#define KTLSH_HS_CLIENT_HELLO	1
#define KTLSH_HS_SERVER_HELLO	2
#define KTLSH_HS_CERTIFICATE	11

struct ktlsh_hs {
	SSL *ssl;
	int fd;
	enum ktlsh_role role;
	unsigned flags;
	ktlsh_trace_fn trace;
	void *trace_arg;

	/* Socket state to give back exactly as found. */
	int saved_fl;
	int saved_nodelay;
	bool restored;

	short events;
	bool done;
	bool installed;

	/* Records OpenSSL wrote / read under the final keys of each direction. */
	bool tx_final, rx_final;
	uint64_t tx_recs, rx_recs;

	/* TLS 1.3 application traffic secrets, from the keylog callback. */
	uint8_t secret_client[KTLSH_SECRET_MAX];
	uint8_t secret_server[KTLSH_SECRET_MAX];
	size_t secret_client_len, secret_server_len;

	SSL_verify_cb app_verify_cb;
	struct ktlsh_hs_info info;
};

static int ktlsh_ssl_idx = -1;
static pthread_once_t ktlsh_ssl_idx_once = PTHREAD_ONCE_INIT;

static void ktlsh_ssl_idx_init(void)
{
	ktlsh_ssl_idx = SSL_get_ex_new_index(0, "ktlsh_hs", NULL, NULL, NULL);
}

static struct ktlsh_hs *ktlsh_hs_of(const SSL *ssl)
{
	return ktlsh_ssl_idx < 0 ? NULL : SSL_get_ex_data(ssl, ktlsh_ssl_idx);
}

static const char *ktlsh_role_name(enum ktlsh_role role)
{
	return role == KTLSH_ROLE_SERVER ? "server" : "client";
}

__attribute__((format(printf, 3, 4)))
static void ktlsh_trace(struct ktlsh_hs *hs, const char *step, const char *fmt, ...)
{
	char line[1024];
	int n;
	va_list ap;

	if (!hs->trace)
		return;
	n = snprintf(line, sizeof(line), "ktlsh: fd=%d role=%s step=%s ", hs->fd,
		     ktlsh_role_name(hs->role), step);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	hs->trace(hs->trace_arg, line);
}

/* Append "a,b,c" of at most n items to buf. */
static void ktlsh_join(char *buf, size_t len, const char *item)
{
	size_t used = strlen(buf);

	if (used + strlen(item) + 2 >= len)
		return;
	if (used)
		buf[used++] = ',';
	strcpy(buf + used, item);
}

static void ktlsh_trace_hello(struct ktlsh_hs *hs, int write_p, const uint8_t *msg, size_t len)
{
	struct ktlsh_hello_summary s;
	char versions[128] = "", ciphers[768] = "", groups[256] = "", tmp[16];
	const SSL_CIPHER *c;
	unsigned i;
	int client = msg[0] == KTLSH_HS_CLIENT_HELLO;
	int ret;

	ret = client ? ktlsh_hello_parse_client(msg + 4, len - 4, &s)
		     : ktlsh_hello_parse_server(msg + 4, len - 4, &s);
	if (ret) {
		ktlsh_trace(hs, client ? "clienthello" : "serverhello", "dir=%s malformed=1",
			    write_p ? "sent" : "received");
		return;
	}
	for (i = 0; i < s.n_versions && i < KTLSH_ARRAY_SIZE(s.versions); i++)
		if (strcmp(ktlsh_version_name(s.versions[i]), "grease"))
			ktlsh_join(versions, sizeof(versions), ktlsh_version_name(s.versions[i]));
	for (i = 0; i < s.n_ciphers && i < KTLSH_ARRAY_SIZE(s.ciphers); i++) {
		uint8_t id[2] = { s.ciphers[i] >> 8, s.ciphers[i] & 0xff };

		c = SSL_CIPHER_find(hs->ssl, id);
		if (c) {
			ktlsh_join(ciphers, sizeof(ciphers), SSL_CIPHER_get_name(c));
		} else {
			snprintf(tmp, sizeof(tmp), "0x%04x", s.ciphers[i]);
			ktlsh_join(ciphers, sizeof(ciphers), tmp);
		}
	}
	if (client) {
		for (i = 0; i < s.n_groups && i < KTLSH_ARRAY_SIZE(s.groups); i++)
			if (strcmp(ktlsh_group_name(s.groups[i]), "grease"))
				ktlsh_join(groups, sizeof(groups), ktlsh_group_name(s.groups[i]));
		ktlsh_trace(hs, "clienthello", "dir=%s versions=%s ciphers=%s groups=%s sni=%s",
			    write_p ? "sent" : "received", versions, ciphers, groups,
			    s.sni[0] ? s.sni : "-");
	} else {
		ktlsh_trace(hs, "serverhello", "dir=%s version=%s cipher=%s group=%s",
			    write_p ? "sent" : "received", versions, ciphers,
			    s.key_share_group ? ktlsh_group_name(s.key_share_group) : "-");
	}
}

/*
 * Record accounting. OpenSSL reports a record header (SSL3_RT_HEADER) when it
 * builds or reads each record, and a whole message after it is written or
 * read — so the message that switches a direction's keys is reported after
 * its own record header and before the next record's. Records counted after
 * the switch are the ones the kernel's sequence number must skip:
 *   TLS 1.2: the switch is the ChangeCipherSpec record; Finished is record 0.
 *   TLS 1.3: the switch is Finished; NewSessionTickets follow under the
 *   application keys.
 */
static void ktlsh_msg_cb(int write_p, int version, int content_type, const void *buf,
			 size_t len, SSL *ssl, void *arg)
{
	struct ktlsh_hs *hs = arg;
	const uint8_t *msg = buf;
	bool tls13 = SSL_version(ssl) == TLS1_3_VERSION;

	switch (content_type) {
	case SSL3_RT_HEADER:
		if (len < 5)
			break;
		/* TLS 1.2: the ChangeCipherSpec record switches keys; OpenSSL 3.0
		 * reports a CCS it reads only by this header. In TLS 1.3 a CCS is
		 * only middlebox camouflage and switches nothing. */
		if (msg[0] == SSL3_RT_CHANGE_CIPHER_SPEC && !tls13) {
			if (write_p)
				hs->tx_final = true;
			else
				hs->rx_final = true;
		} else if (write_p && hs->tx_final) {
			hs->tx_recs++;
		} else if (!write_p && hs->rx_final) {
			hs->rx_recs++;
		}
		break;
	case SSL3_RT_HANDSHAKE:
		if (len < 4)
			break;
		if (msg[0] == KTLSH_HS_FINISHED && tls13) {
			if (write_p)
				hs->tx_final = true;
			else
				hs->rx_final = true;
		}
		if (!hs->trace)
			break;
		switch (msg[0]) {
		case KTLSH_HS_CLIENT_HELLO:
		case KTLSH_HS_SERVER_HELLO:
			ktlsh_trace_hello(hs, write_p, msg, len);
			break;
		case KTLSH_HS_CERTIFICATE:
			ktlsh_trace(hs, "certificate", "dir=%s bytes=%zu",
				    write_p ? "sent" : "received", len);
			break;
		case KTLSH_HS_FINISHED:
			ktlsh_trace(hs, "finished", "dir=%s", write_p ? "sent" : "received");
			break;
		}
		break;
	}
	(void)version;
}

static void ktlsh_info_cb(const SSL *ssl, int where, int ret)
{
	struct ktlsh_hs *hs = ktlsh_hs_of(ssl);

	if (!hs || !(where & SSL_CB_ALERT))
		return;
	if (where & SSL_CB_READ)
		hs->info.alert_received = ret & 0xff;
	else
		hs->info.alert_sent = ret & 0xff;
	ktlsh_trace(hs, "alert", "dir=%s level=%s desc=%s",
		    (where & SSL_CB_READ) ? "received" : "sent", SSL_alert_type_string_long(ret),
		    SSL_alert_desc_string_long(ret));
}

static int ktlsh_verify_cb(int ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct ktlsh_hs *hs = ssl ? ktlsh_hs_of(ssl) : NULL;
	int depth = X509_STORE_CTX_get_error_depth(store);
	char subject[256] = "-";
	X509 *cert;

	if (!hs)
		return ok;
	if (hs->app_verify_cb)
		ok = hs->app_verify_cb(ok, store);
	if (hs->trace && (depth == 0 || !ok)) {
		cert = X509_STORE_CTX_get_current_cert(store);
		if (cert)
			X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
		ktlsh_trace(hs, "verify", "depth=%d subject=%s result=%s", depth, subject,
			    ok ? "ok" : X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
	}
	return ok;
}

/* Hex digit -> value + 1; 0 for anything else. One load per nibble. */
static const uint8_t ktlsh_hex_tab[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
	['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
	['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
	['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int ktlsh_unhex(const char *hex, size_t hex_len, uint8_t *out, size_t cap)
{
	const unsigned char *h = (const unsigned char *)hex;
	unsigned hi, lo, bad = 0;
	size_t i;

	if (hex_len % 2 || hex_len / 2 > cap)
		return -EINVAL;
	for (i = 0; i < hex_len / 2; i++) {
		hi = ktlsh_hex_tab[h[2 * i]];
		lo = ktlsh_hex_tab[h[2 * i + 1]];
		bad |= !hi | !lo;
		out[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
	}
	if (bad) {
		explicit_bzero(out, hex_len / 2);
		return -EINVAL;
	}
	return (int)(hex_len / 2);
}

/*
 * "LABEL <client_random: 64 hex> <secret hex>" (NSS key log format), as
 * OpenSSL 3.0 formats it. Of the five TLS 1.3 labels (and TLS 1.2's
 * CLIENT_RANDOM) only the two application traffic secrets are used; the
 * others are told apart by the label alone, before any hex is touched.
 */
#define KTLSH_KEYLOG_LABEL_LEN	24	/* "CLIENT_TRAFFIC_SECRET_0 " */
#define KTLSH_KEYLOG_RANDOM_HEX	(2 * KTLSH_RANDOM_LEN)

int ktlsh_keylog_label(const char *line)
{
	if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", KTLSH_KEYLOG_LABEL_LEN))
		return KTLSH_KEYLOG_CLIENT_TRAFFIC_0;
	if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", KTLSH_KEYLOG_LABEL_LEN))
		return KTLSH_KEYLOG_SERVER_TRAFFIC_0;
	return KTLSH_KEYLOG_OTHER;
}

int ktlsh_keylog_secret(const char *line, uint8_t *out, size_t cap)
{
	const char *hex = line + KTLSH_KEYLOG_LABEL_LEN;

	/* The client random is a fixed 64 hex digits: no search for the spaces. */
	if (strnlen(hex, KTLSH_KEYLOG_RANDOM_HEX + 1) != KTLSH_KEYLOG_RANDOM_HEX + 1 ||
	    hex[KTLSH_KEYLOG_RANDOM_HEX] != ' ')
		return -EINVAL;
	hex += KTLSH_KEYLOG_RANDOM_HEX + 1;
	return ktlsh_unhex(hex, strlen(hex), out, cap);
}

static void ktlsh_keylog_cb(const SSL *ssl, const char *line)
{
	struct ktlsh_hs *hs = ktlsh_hs_of(ssl);
	uint8_t *dst;
	size_t *dst_len;
	int n;

	if (!hs)
		return;
	switch (ktlsh_keylog_label(line)) {
	case KTLSH_KEYLOG_CLIENT_TRAFFIC_0:
		dst = hs->secret_client;
		dst_len = &hs->secret_client_len;
		break;
	case KTLSH_KEYLOG_SERVER_TRAFFIC_0:
		dst = hs->secret_server;
		dst_len = &hs->secret_server_len;
		break;
	default:
		return;
	}
	n = ktlsh_keylog_secret(line, dst, KTLSH_SECRET_MAX);
	*dst_len = n > 0 ? (size_t)n : 0;
}

static int ktlsh_ctx_restrict(SSL_CTX *ctx, const struct ktlsh_kcaps *caps)
{
	STACK_OF(SSL_CIPHER) *all = SSL_CTX_get_ciphers(ctx);
	char list12[2048] = "", list13[512] = "";
	const SSL_CIPHER *c;
	int i, ret = 0;

	for (i = 0; all && i < sk_SSL_CIPHER_num(all); i++) {
		c = sk_SSL_CIPHER_value(all, i);
		if ((SSL_CIPHER_get_protocol_id(c) & 0xff00) == 0x1300) {	/* TLS 1.3 suites */
			if (ktlsh_kcaps_has(caps, TLS1_3_VERSION, ktlsh_cipher_from_ssl(c)))
				ktlsh_join(list13, sizeof(list13), SSL_CIPHER_get_name(c));
		} else if (ktlsh_kcaps_has(caps, TLS1_2_VERSION, ktlsh_cipher_from_ssl(c))) {
			ktlsh_join(list12, sizeof(list12), SSL_CIPHER_get_name(c));
		}
	}
	for (i = 0; list13[i]; i++)	/* ciphersuites lists use ':' */
		if (list13[i] == ',')
			list13[i] = ':';
	for (i = 0; list12[i]; i++)
		if (list12[i] == ',')
			list12[i] = ':';
	if (!list12[0] && !list13[0])
		return -ENOPROTOOPT;
	if (!SSL_CTX_set_ciphersuites(ctx, list13))
		ret = -EINVAL;
	if (list12[0] && !SSL_CTX_set_cipher_list(ctx, list12))
		ret = -EINVAL;
	if (!list12[0] && !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION))
		ret = -EINVAL;
	if (!list13[0] && !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION))
		ret = -EINVAL;
	return ret;
}

int ktlsh_ssl_ctx_setup(SSL_CTX *ctx, const struct ktlsh_kcaps *caps, unsigned flags)
{
	int ret = 0;

	pthread_once(&ktlsh_ssl_idx_once, ktlsh_ssl_idx_init);
	if (ktlsh_ssl_idx < 0)
		return -ENOMEM;
	if (SSL_CTX_get_min_proto_version(ctx) < TLS1_2_VERSION &&
	    !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
		return -EINVAL;
	/* The kernel cannot renegotiate, replay-protect 0-RTT, or answer a
	 * post-handshake CertificateRequest; and OpenSSL must not read past the
	 * handshake, or those bytes never reach the kernel. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_clear_options(ctx, SSL_OP_ENABLE_KTLS);
	SSL_CTX_set_max_early_data(ctx, 0);
	SSL_CTX_set_recv_max_early_data(ctx, 0);
	SSL_CTX_set_read_ahead(ctx, 0);
	SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
	SSL_CTX_set_keylog_callback(ctx, ktlsh_keylog_cb);
	if (flags & KTLSH_CTX_REQUIRE_OFFLOAD)
		ret = ktlsh_ctx_restrict(ctx, caps);
	return ret;
}

static int ktlsh_hs_socket_prepare(struct ktlsh_hs *hs)
{
	socklen_t len = sizeof(hs->saved_nodelay);
	int one = 1;

	/* Reading TCP_NODELAY is also the type check (no SO_TYPE round trip):
	 * only a TCP socket, which is SOCK_STREAM, answers it. Not a socket:
	 * ENOTSOCK; any other socket (UDP, raw, AF_UNIX, netlink, ...):
	 * ENOPROTOOPT or EOPNOTSUPP, depending on the family. */
	if (getsockopt(hs->fd, IPPROTO_TCP, TCP_NODELAY, &hs->saved_nodelay, &len) < 0)
		return errno == ENOPROTOOPT || errno == EOPNOTSUPP ? -ESOCKTNOSUPPORT : -errno;
	hs->saved_fl = fcntl(hs->fd, F_GETFL);
	if (hs->saved_fl < 0)
		return -errno;
	/* Flights are small; Nagle plus delayed ACK would stall them ~40 ms. */
	if (!hs->saved_nodelay &&
	    setsockopt(hs->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -errno;
	if (!(hs->saved_fl & O_NONBLOCK) && fcntl(hs->fd, F_SETFL, hs->saved_fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static void ktlsh_hs_socket_restore(struct ktlsh_hs *hs)
{
	if (hs->restored)
		return;
	hs->restored = true;
	if (!(hs->saved_fl & O_NONBLOCK))
		(void)fcntl(hs->fd, F_SETFL, hs->saved_fl);
	if (!hs->saved_nodelay)
		(void)setsockopt(hs->fd, IPPROTO_TCP, TCP_NODELAY, &hs->saved_nodelay,
				 sizeof(hs->saved_nodelay));
}

/* The name the peer's certificate must carry; a client also sends it as SNI. */
static int ktlsh_hs_set_peer_name(struct ktlsh_hs *hs, const char *name)
{
	X509_VERIFY_PARAM *vp = SSL_get0_param(hs->ssl);
	struct in6_addr a6;
	struct in_addr a4;

	/* RFC 6066 3: SNI carries host names only, never address literals. */
	if (inet_pton(AF_INET, name, &a4) == 1 || inet_pton(AF_INET6, name, &a6) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(vp, name) == 1 ? 0 : -EINVAL;
	if (!SSL_set1_host(hs->ssl, name))
		return -EINVAL;
	if (hs->role == KTLSH_ROLE_CLIENT && !SSL_set_tlsext_host_name(hs->ssl, name))
		return -EINVAL;
	return 0;
}

int ktlsh_hs_new(struct ktlsh_hs **hsp, SSL_CTX *ctx, int fd, const struct ktlsh_hs_params *p)
{
	struct ktlsh_hs *hs;
	int ret;

	*hsp = NULL;
	if (!ctx || fd < 0 || !p || (p->role != KTLSH_ROLE_CLIENT && p->role != KTLSH_ROLE_SERVER))
		return -EINVAL;
	pthread_once(&ktlsh_ssl_idx_once, ktlsh_ssl_idx_init);
	if (ktlsh_ssl_idx < 0)
		return -ENOMEM;
	hs = calloc(1, sizeof(*hs));
	if (!hs)
		return -ENOMEM;
	hs->fd = fd;
	hs->role = p->role;
	hs->flags = p->flags;
	hs->trace = p->trace;
	hs->trace_arg = p->trace_arg;
	hs->restored = true;	/* nothing to restore until prepared */
	hs->info.alert_sent = hs->info.alert_received = -1;
	hs->info.verify_result = X509_V_OK;

	ret = -ENOMEM;
	hs->ssl = SSL_new(ctx);
	if (!hs->ssl)
		goto fail;
	ret = ktlsh_hs_socket_prepare(hs);
	if (ret)
		goto fail;
	hs->restored = false;
	ret = -ENOMEM;
	if (!SSL_set_fd(hs->ssl, fd) || !SSL_set_ex_data(hs->ssl, ktlsh_ssl_idx, hs))
		goto fail;
	if (p->role == KTLSH_ROLE_CLIENT) {
		SSL_set_connect_state(hs->ssl);
		if (p->server_name && p->server_name[0]) {
			ret = ktlsh_hs_set_peer_name(hs, p->server_name);
			if (ret)
				goto fail;
		}
	} else {
		SSL_set_accept_state(hs->ssl);
		if (p->server_name && p->server_name[0]) {
			/* An expected client name means a client certificate is
			 * required and must carry it. */
			ret = ktlsh_hs_set_peer_name(hs, p->server_name);
			if (ret)
				goto fail;
			SSL_set_verify(hs->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				       SSL_get_verify_callback(hs->ssl));
		}
	}
	SSL_set_msg_callback(hs->ssl, ktlsh_msg_cb);
	SSL_set_msg_callback_arg(hs->ssl, hs);
	SSL_set_info_callback(hs->ssl, ktlsh_info_cb);
	hs->app_verify_cb = SSL_get_verify_callback(hs->ssl);
	SSL_set_verify(hs->ssl, SSL_get_verify_mode(hs->ssl), ktlsh_verify_cb);
	hs->events = p->role == KTLSH_ROLE_CLIENT ? POLLOUT : POLLIN;
	*hsp = hs;
	return 0;
fail:
	ktlsh_hs_free(hs);
	return ret;
}

/* Name why a handshake failed, from OpenSSL's error queue and state. */
static int ktlsh_hs_failure(struct ktlsh_hs *hs, int ssl_err, int saved_errno)
{
	unsigned long e = ERR_peek_error();
	long vr = SSL_get_verify_result(hs->ssl);
	int reason = ERR_GET_REASON(e);
	int ret;

	if (ssl_err == SSL_ERROR_SYSCALL && !e) {
		ret = -ECONNRESET;
		snprintf(hs->info.reason, sizeof(hs->info.reason), "peer %s during handshake (%s)",
			 saved_errno ? "reset the connection" : "closed the connection",
			 saved_errno ? strerror(saved_errno) : "EOF");
		if (saved_errno && saved_errno != ECONNRESET && saved_errno != EPIPE)
			ret = -saved_errno;
	} else if (ssl_err == SSL_ERROR_ZERO_RETURN ||
		   (ERR_GET_LIB(e) == ERR_LIB_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
		ret = -ECONNRESET;
		snprintf(hs->info.reason, sizeof(hs->info.reason),
			 "peer closed the connection during handshake");
	} else if (vr != X509_V_OK) {
		ret = -EKEYREJECTED;
		hs->info.verify_result = (int)vr;
		snprintf(hs->info.reason, sizeof(hs->info.reason), "certificate verify failed: %s",
			 X509_verify_cert_error_string(vr));
	} else if (e) {
		ret = -EPROTO;
		snprintf(hs->info.reason, sizeof(hs->info.reason), "%s",
			 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "TLS error");
	} else {
		ret = -EPROTO;
		snprintf(hs->info.reason, sizeof(hs->info.reason), "TLS error %d in %s", ssl_err,
			 SSL_state_string_long(hs->ssl));
	}
	if (hs->info.alert_received >= 0 && ret == -EPROTO) {
		size_t used = strlen(hs->info.reason);

		snprintf(hs->info.reason + used, sizeof(hs->info.reason) - used,
			 " (peer sent alert %s)", ktlsh_alert_name((uint8_t)hs->info.alert_received));
	}
	ERR_clear_error();
	ktlsh_trace(hs, "fail", "err=%d state=\"%s\" reason=\"%s\"", ret,
		    SSL_state_string_long(hs->ssl), hs->info.reason);
	return ret;
}

static void ktlsh_hs_fill_info(struct ktlsh_hs *hs)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(hs->ssl);
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	int nid;

	hs->info.version = SSL_version(hs->ssl);
	hs->info.cipher = ktlsh_cipher_from_ssl(c);
	snprintf(hs->info.cipher_name, sizeof(hs->info.cipher_name), "%s",
		 c ? SSL_CIPHER_get_name(c) : "none");
	nid = SSL_get_negotiated_group(hs->ssl);
	snprintf(hs->info.group, sizeof(hs->info.group), "%s",
		 nid > 0 && OBJ_nid2sn(nid) ? OBJ_nid2sn(nid) : "-");
	SSL_get0_alpn_selected(hs->ssl, &alpn, &alpn_len);
	if (alpn_len && alpn_len < sizeof(hs->info.alpn)) {
		memcpy(hs->info.alpn, alpn, alpn_len);
		hs->info.alpn[alpn_len] = '\0';
	}
	hs->info.resumed = SSL_session_reused(hs->ssl);
}

int ktlsh_hs_step(struct ktlsh_hs *hs)
{
	int rc, err, saved_errno;

	if (hs->done)
		return 0;
	ERR_clear_error();
	errno = 0;
	rc = SSL_do_handshake(hs->ssl);
	saved_errno = errno;
	if (rc == 1) {
		hs->done = true;
		ktlsh_hs_fill_info(hs);
		ktlsh_trace(hs, "done", "version=%s cipher=%s group=%s resumed=%d alpn=%s",
			    SSL_get_version(hs->ssl), hs->info.cipher_name, hs->info.group,
			    hs->info.resumed, hs->info.alpn[0] ? hs->info.alpn : "-");
		return 0;
	}
	err = SSL_get_error(hs->ssl, rc);
	switch (err) {
	case SSL_ERROR_WANT_READ:
		hs->events = POLLIN;
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		hs->events = POLLOUT;
		return -EAGAIN;
	default:
		return ktlsh_hs_failure(hs, err, saved_errno);
	}
}

short ktlsh_hs_events(const struct ktlsh_hs *hs)
{
	return hs->events;
}

static void ktlsh_hs_wipe_secrets(struct ktlsh_hs *hs)
{
	explicit_bzero(hs->secret_client, sizeof(hs->secret_client));
	explicit_bzero(hs->secret_server, sizeof(hs->secret_server));
	hs->secret_client_len = hs->secret_server_len = 0;
}

static int ktlsh_hs_derive(struct ktlsh_hs *hs, const EVP_MD *md, struct ktlsh_crypto_info *tx,
			   struct ktlsh_crypto_info *rx)
{
	SSL_SESSION *sess = SSL_get_session(hs->ssl);
	uint8_t master[KTLSH_MASTER_LEN], cr[KTLSH_RANDOM_LEN], sr[KTLSH_RANDOM_LEN];
	const uint8_t *tx_secret, *rx_secret;
	size_t tx_len, rx_len, mlen;
	int ret;

	if (hs->info.version == TLS1_3_VERSION) {
		bool client = hs->role == KTLSH_ROLE_CLIENT;

		tx_secret = client ? hs->secret_client : hs->secret_server;
		tx_len = client ? hs->secret_client_len : hs->secret_server_len;
		rx_secret = client ? hs->secret_server : hs->secret_client;
		rx_len = client ? hs->secret_server_len : hs->secret_client_len;
		if (!tx_len || !rx_len || tx_len != (size_t)EVP_MD_get_size(md) || tx_len != rx_len)
			return -ENOKEY;	/* ktlsh_ssl_ctx_setup() was not called on this ctx */
		ret = ktlsh_keys_tls13(hs->info.cipher, md, tx_secret, tx_len, hs->tx_recs, tx);
		if (!ret)
			ret = ktlsh_keys_tls13(hs->info.cipher, md, rx_secret, rx_len, hs->rx_recs, rx);
		return ret;
	}
	mlen = sess ? SSL_SESSION_get_master_key(sess, master, sizeof(master)) : 0;
	if (mlen != sizeof(master) ||
	    SSL_get_client_random(hs->ssl, cr, sizeof(cr)) != sizeof(cr) ||
	    SSL_get_server_random(hs->ssl, sr, sizeof(sr)) != sizeof(sr)) {
		ret = -ENOKEY;
		goto out;
	}
	ret = ktlsh_keys_tls12(hs->info.cipher, md, master, mlen, cr, sr, hs->role, hs->tx_recs,
			       hs->rx_recs, tx, rx);
out:
	explicit_bzero(master, sizeof(master));
	return ret;
}

int ktlsh_hs_install(struct ktlsh_hs *hs)
{
	struct ktlsh_crypto_info tx, rx;
	const EVP_MD *md;
	unsigned installed = 0;
	int ret;

	if (!hs->done)
		return -EINPROGRESS;
	if (hs->installed)
		return -EALREADY;
	memset(&tx, 0, sizeof(tx));
	memset(&rx, 0, sizeof(rx));
	ret = -EPROTONOSUPPORT;
	if (hs->info.version != TLS1_2_VERSION && hs->info.version != TLS1_3_VERSION) {
		snprintf(hs->info.reason, sizeof(hs->info.reason), "%s cannot be offloaded",
			 SSL_get_version(hs->ssl));
		goto out;
	}
	if (hs->info.cipher == KTLSH_CIPHER_NONE) {
		snprintf(hs->info.reason, sizeof(hs->info.reason),
			 "cipher %s has no kernel TLS equivalent", hs->info.cipher_name);
		goto out;
	}
	/* Bytes OpenSSL already pulled off the socket would never reach the kernel. */
	ret = -EBADMSG;
	if (SSL_has_pending(hs->ssl)) {
		snprintf(hs->info.reason, sizeof(hs->info.reason),
			 "data past the handshake is buffered in user space");
		goto out;
	}
	md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(hs->ssl));
	ret = -EPROTONOSUPPORT;
	if (!md)
		goto out;
	ret = ktlsh_hs_derive(hs, md, &tx, &rx);
	if (ret) {
		snprintf(hs->info.reason, sizeof(hs->info.reason), "key derivation failed: %s",
			 strerror(-ret));
		goto out;
	}
	hs->info.tx_seq = hs->tx_recs;
	hs->info.rx_seq = hs->rx_recs;
	ret = ktlsh_ktls_install(hs->fd, &tx, &rx, hs->flags, hs->info.version, &installed);
	if (ret) {
		if (ret == -ENOTCONN)
			snprintf(hs->info.reason, sizeof(hs->info.reason),
				 "connection no longer established (peer closed before kTLS was installed)");
		else if (ret == -ENOENT && !installed)
			snprintf(hs->info.reason, sizeof(hs->info.reason),
				 "kernel TLS unavailable or lacks %s (%s)",
				 ktlsh_cipher_name(hs->info.cipher), strerror(-ret));
		else
			snprintf(hs->info.reason, sizeof(hs->info.reason), "kTLS %s install failed: %s",
				 installed ? "RX" : "TX", strerror(-ret));
		goto out;
	}
	/* Point of no return: the kernel owns the keys; only bookkeeping follows. */
	hs->installed = true;
	ktlsh_hs_socket_restore(hs);
	ktlsh_trace(hs, "install", "tx=%s rx=%s tx_seq=%llu rx_seq=%llu",
		    ktlsh_cipher_name(hs->info.cipher), ktlsh_cipher_name(hs->info.cipher),
		    (unsigned long long)hs->info.tx_seq, (unsigned long long)hs->info.rx_seq);
out:
	explicit_bzero(&tx, sizeof(tx));
	explicit_bzero(&rx, sizeof(rx));
	ktlsh_hs_wipe_secrets(hs);
	if (ret)
		ktlsh_trace(hs, "fail", "err=%d reason=\"%s\"", ret, hs->info.reason);
	return ret;
}

const struct ktlsh_hs_info *ktlsh_hs_info(const struct ktlsh_hs *hs)
{
	return &hs->info;
}

SSL *ktlsh_hs_ssl(const struct ktlsh_hs *hs)
{
	return hs->ssl;
}

void ktlsh_hs_free(struct ktlsh_hs *hs)
{
	if (!hs)
		return;
	ktlsh_hs_socket_restore(hs);
	ktlsh_hs_wipe_secrets(hs);
	if (hs->ssl) {
		/* An SSL freed without a recorded shutdown invalidates its session;
		 * after handover the kernel owns the connection, so record one
		 * without sending anything. */
		if (hs->installed)
			SSL_set_shutdown(hs->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_set_ex_data(hs->ssl, ktlsh_ssl_idx, NULL);
		SSL_free(hs->ssl);
	}
	free(hs);
}

static int64_t ktlsh_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ktlsh_handshake(SSL_CTX *ctx, int fd, const struct ktlsh_hs_params *params, int timeout_ms,
		   struct ktlsh_hs_info *info)
{
	struct ktlsh_hs *hs = NULL;
	int64_t deadline = ktlsh_now_ms() + timeout_ms;
	struct pollfd pfd = { .fd = fd };
	int ret, left;

	ret = ktlsh_hs_new(&hs, ctx, fd, params);
	if (ret)
		goto out;
	while ((ret = ktlsh_hs_step(hs)) == -EAGAIN) {
		left = (int)(deadline - ktlsh_now_ms());
		if (timeout_ms >= 0 && left <= 0) {
			ret = -ETIMEDOUT;
			snprintf(hs->info.reason, sizeof(hs->info.reason),
				 "handshake timed out after %d ms in state \"%s\"", timeout_ms,
				 SSL_state_string_long(hs->ssl));
			ktlsh_trace(hs, "fail", "err=%d reason=\"%s\"", ret, hs->info.reason);
			break;
		}
		pfd.events = ktlsh_hs_events(hs);
		if (poll(&pfd, 1, timeout_ms >= 0 ? left : -1) < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
	}
	if (!ret)
		ret = ktlsh_hs_install(hs);
out:
	if (info) {
		if (hs)
			*info = hs->info;
		else
			memset(info, 0, sizeof(*info));
	}
	ktlsh_hs_free(hs);
	return ret;
}
