// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The handshake engine against a plain OpenSSL peer in the same process,
 * over loopback TCP, with the seam in front of setsockopt() capturing what
 * would go to the kernel. The captured keys and sequence numbers are then
 * checked the strongest way possible without a kernel: records sealed with
 * them are read by the peer's OpenSSL, and records the peer's OpenSSL writes
 * open with them. A wrong key, IV split or record count fails here.
 *
 * The same paths run against the real kernel in tests/kernel/.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <CUnit/Basic.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "unit.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/* ---- the seam: what the kernel would have been given ---- */

static struct {
	struct ktlsh_crypto_info tx, rx;
	int ulp_calls, tx_calls, rx_calls, no_pad_calls;
	int fail_level, fail_name, fail_errno;	/* make one call fail */
} cap;

static int cap_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	if (cap.fail_level == level && cap.fail_name == name) {
		errno = cap.fail_errno;
		return -1;
	}
	if (level == SOL_TCP && name == TCP_ULP) {
		cap.ulp_calls++;
		return 0;
	}
	if (level == SOL_TLS && (name == TLS_TX || name == TLS_RX)) {
		struct ktlsh_crypto_info *ci = name == TLS_TX ? &cap.tx : &cap.rx;

		if (len > sizeof(ci->u)) {
			errno = EINVAL;
			return -1;
		}
		memcpy(&ci->u, val, len);
		ci->len = len;
		if (name == TLS_TX)
			cap.tx_calls++;
		else
			cap.rx_calls++;
		return 0;
	}
	if (level == SOL_TLS && name == TLS_RX_EXPECT_NO_PAD) {
		cap.no_pad_calls++;
		return 0;
	}
	return setsockopt(fd, level, name, val, len);
}

static const struct ktlsh_sys_ops cap_ops = { cap_setsockopt, getsockopt };
static const struct ktlsh_sys_ops *t_real_sys;

static void cap_reset(void)
{
	memset(&cap, 0, sizeof(cap));
	ktlsh_sys = &cap_ops;
}

/* ---- a test PKI made in memory ---- */

static EVP_PKEY *t_key;
static X509 *t_cert;

static int t_pki_init(void)
{
	X509_NAME *name;
	X509_EXTENSION *ext;
	X509V3_CTX v3;

	t_key = EVP_EC_gen("P-256");
	t_cert = X509_new();
	if (!t_key || !t_cert)
		return -1;
	X509_set_version(t_cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(t_cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(t_cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(t_cert), 3600);
	X509_set_pubkey(t_cert, t_key);
	name = X509_get_subject_name(t_cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost",
				   -1, -1, 0);
	X509_set_issuer_name(t_cert, name);
	X509V3_set_ctx(&v3, t_cert, t_cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost");
	X509_add_ext(t_cert, ext, -1);
	X509_EXTENSION_free(ext);
	return X509_sign(t_cert, t_key, EVP_sha256()) > 0 ? 0 : -1;
}

static SSL_CTX *t_ctx(int server, int version, const char *cipher)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	SSL_CTX_set_min_proto_version(ctx, version);
	SSL_CTX_set_max_proto_version(ctx, version);
	if (version == TLS1_3_VERSION)
		SSL_CTX_set_ciphersuites(ctx, cipher);
	else
		SSL_CTX_set_cipher_list(ctx, cipher);
	if (server) {
		SSL_CTX_use_certificate(ctx, t_cert);
		SSL_CTX_use_PrivateKey(ctx, t_key);
	} else {
		X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), t_cert);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	return ctx;
}

/* ---- loopback TCP pair ---- */

static int t_tcp_pair(int fds[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	int l;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		return -1;
	fds[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fds[0], (struct sockaddr *)&a, sizeof(a)))
		return -1;
	fds[1] = accept(l, NULL, NULL);
	close(l);
	return fds[1] < 0 ? -1 : 0;
}

/* ---- record protection done independently with EVP ---- */

struct t_dir {
	enum ktlsh_cipher c;
	int tls13;
	uint8_t key[32], iv12[12], salt[4];
	uint64_t seq;
};

static void t_dir_from(struct t_dir *d, const struct ktlsh_crypto_info *ci)
{
	const struct ktlsh_cipher_desc *desc;
	const uint8_t *iv, *key, *salt, *seq;
	int i;

	memset(d, 0, sizeof(*d));
	switch (ci->u.info.cipher_type) {
	case TLS_CIPHER_AES_GCM_128: d->c = KTLSH_CIPHER_AES_GCM_128; break;
	case TLS_CIPHER_AES_GCM_256: d->c = KTLSH_CIPHER_AES_GCM_256; break;
	case TLS_CIPHER_CHACHA20_POLY1305: d->c = KTLSH_CIPHER_CHACHA20_POLY1305; break;
	case TLS_CIPHER_AES_CCM_128: d->c = KTLSH_CIPHER_AES_CCM_128; break;
	}
	desc = ktlsh_cipher_desc(d->c);
	d->tls13 = ci->u.info.version == TLS_1_3_VERSION;
	iv = (const uint8_t *)&ci->u + sizeof(struct tls_crypto_info);
	key = iv + desc->iv_len;
	salt = key + desc->key_len;
	seq = salt + desc->salt_len;
	memcpy(d->key, key, desc->key_len);
	memcpy(d->salt, salt, desc->salt_len);
	/* the 12-byte IV of the AEAD nonce, where there is one */
	memcpy(d->iv12, salt, desc->salt_len);
	memcpy(d->iv12 + desc->salt_len, iv, desc->iv_len);
	for (i = 0; i < 8; i++)
		d->seq = d->seq << 8 | seq[i];
}

static const EVP_CIPHER *t_evp(enum ktlsh_cipher c)
{
	switch (c) {
	case KTLSH_CIPHER_AES_GCM_128: return EVP_aes_128_gcm();
	case KTLSH_CIPHER_AES_GCM_256: return EVP_aes_256_gcm();
	case KTLSH_CIPHER_CHACHA20_POLY1305: return EVP_chacha20_poly1305();
	case KTLSH_CIPHER_AES_CCM_128: return EVP_aes_128_ccm();
	default: return NULL;
	}
}

static int t_aead(int enc, const struct t_dir *d, const uint8_t nonce[12], const uint8_t *aad,
		  size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[16])
{
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
	int ccm = d->c == KTLSH_CIPHER_AES_CCM_128;
	int ok, l;

	ok = EVP_CipherInit_ex(x, t_evp(d->c), NULL, NULL, NULL, enc);
	ok = ok && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL);
	if (ccm)
		ok = ok && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, enc ? NULL : tag);
	ok = ok && EVP_CipherInit_ex(x, NULL, NULL, d->key, nonce, enc);
	if (ccm)
		ok = ok && EVP_CipherUpdate(x, NULL, &l, NULL, (int)len);
	ok = ok && EVP_CipherUpdate(x, NULL, &l, aad, (int)aad_len);
	ok = ok && EVP_CipherUpdate(x, out, &l, in, (int)len);
	if (!enc && !ccm) {
		ok = ok && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, tag);
		ok = ok && EVP_CipherFinal_ex(x, out + l, &l);
	} else if (enc) {
		ok = ok && EVP_CipherFinal_ex(x, out + l, &l);
		ok = ok && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, tag);
	}
	EVP_CIPHER_CTX_free(x);
	return ok ? 0 : -1;
}

static void t_nonce(const struct t_dir *d, const uint8_t *explicit_iv, uint8_t nonce[12])
{
	int i;

	if (!d->tls13 && d->c != KTLSH_CIPHER_CHACHA20_POLY1305) {
		memcpy(nonce, d->salt, 4);	/* RFC 5288 */
		memcpy(nonce + 4, explicit_iv, 8);
		return;
	}
	memcpy(nonce, d->iv12, 12);	/* RFC 8446 5.3, RFC 7905 */
	for (i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(d->seq >> (56 - 8 * i));
}

static void t_put_seq(uint8_t *p, uint64_t seq)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (uint8_t)(seq >> (56 - 8 * i));
}

static int t_explicit(const struct t_dir *d)
{
	return !d->tls13 && d->c != KTLSH_CIPHER_CHACHA20_POLY1305 ? 8 : 0;
}

/* Seal one application-data record; returns its length. */
static size_t t_seal(struct t_dir *d, const void *data, size_t len, uint8_t *rec)
{
	uint8_t inner[256], nonce[12], aad[13], *body;
	size_t in_len = len, ex = (size_t)t_explicit(d), total;

	memcpy(inner, data, len);
	if (d->tls13)
		inner[in_len++] = KTLSH_CT_APPLICATION_DATA;
	total = ex + in_len + 16;
	rec[0] = KTLSH_CT_APPLICATION_DATA;
	rec[1] = 3;
	rec[2] = 3;
	rec[3] = (uint8_t)(total >> 8);
	rec[4] = (uint8_t)total;
	body = rec + 5;
	if (ex)
		t_put_seq(body, d->seq);
	t_nonce(d, body, nonce);
	if (d->tls13) {
		memcpy(aad, rec, 5);
		t_aead(1, d, nonce, aad, 5, inner, in_len, body + ex, body + ex + in_len);
	} else {
		t_put_seq(aad, d->seq);
		aad[8] = KTLSH_CT_APPLICATION_DATA;
		aad[9] = 3;
		aad[10] = 3;
		aad[11] = (uint8_t)(len >> 8);
		aad[12] = (uint8_t)len;
		t_aead(1, d, nonce, aad, 13, inner, in_len, body + ex, body + ex + in_len);
	}
	d->seq++;
	return 5 + total;
}

static int t_read_full(int fd, uint8_t *buf, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = read(fd, buf + got, len - got);
		if (n > 0) {
			got += (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			if (poll(&p, 1, 2000) <= 0)
				return -1;
		} else {
			return -1;
		}
	}
	return 0;
}

/* Read and open one record from fd; returns the inner content type, or -1. */
static int t_open(struct t_dir *d, int fd, uint8_t *out, size_t *out_len)
{
	uint8_t hdr[5], body[20000], nonce[12], aad[13];
	size_t len, ex = (size_t)t_explicit(d), ct_len;
	int type;

	if (t_read_full(fd, hdr, 5))
		return -1;
	len = (size_t)hdr[3] << 8 | hdr[4];
	if (len > sizeof(body) || len < ex + 16 || t_read_full(fd, body, len))
		return -1;
	ct_len = len - ex - 16;
	t_nonce(d, body, nonce);
	if (d->tls13) {
		if (t_aead(0, d, nonce, hdr, 5, body, ct_len, out, body + ex + ct_len))
			return -1;
		while (ct_len && !out[ct_len - 1])
			ct_len--;	/* padding */
		if (!ct_len)
			return -1;
		type = out[--ct_len];
	} else {
		t_put_seq(aad, d->seq);
		aad[8] = hdr[0];
		aad[9] = 3;
		aad[10] = 3;
		aad[11] = (uint8_t)(ct_len >> 8);
		aad[12] = (uint8_t)ct_len;
		if (t_aead(0, d, nonce, aad, 13, body + ex, ct_len, out, body + ex + ct_len))
			return -1;
		type = hdr[0];
	}
	d->seq++;
	*out_len = ct_len;
	return type;
}

/* ---- driving both ends ---- */

struct t_run {
	int version;
	const char *cipher;
	enum ktlsh_role ktlsh_role;
	int tickets;		/* server tickets (TLS 1.3); -1 = OpenSSL default */
	const struct ktlsh_hs_info *info;
};

static void t_trace_collect(void *arg, const char *line)
{
	char *buf = arg;
	size_t used = strlen(buf);

	snprintf(buf + used, 8192 - used, "%s\n", line);
}

static char t_trace_buf[8192];

static void t_handshake_case(int version, const char *cipher, enum ktlsh_role role, int tickets,
			     unsigned hs_flags, enum ktlsh_cipher want_cipher)
{
	struct ktlsh_kcaps caps;
	int srv = role == KTLSH_ROLE_SERVER;
	SSL_CTX *kctx = t_ctx(srv, version, cipher);
	SSL_CTX *pctx = t_ctx(!srv, version, cipher);
	struct ktlsh_hs_params params = {
		.role = role, .server_name = srv ? NULL : "localhost", .flags = hs_flags,
		.trace = t_trace_collect, .trace_arg = t_trace_buf,
	};
	struct ktlsh_hs *hs = NULL;
	SSL *peer;
	int fds[2], kfd, pfd, i, rc, hs_ret = -EAGAIN, peer_done = 0;
	uint8_t rec[512], plain[20000];
	size_t rec_len, plain_len;
	struct t_dir tx, rx;
	char buf[64];
	const char *ping = "ping from the ktlsh side", *pong = "pong from OpenSSL";
	int type, nst = 0;

	memset(&caps, 0xff, sizeof(caps));
	caps.ulp_err = 0;
	t_trace_buf[0] = '\0';
	cap_reset();
	CU_ASSERT_EQUAL_FATAL(ktlsh_ssl_ctx_setup(kctx, &caps, KTLSH_CTX_REQUIRE_OFFLOAD), 0);
	if (tickets >= 0)
		SSL_CTX_set_num_tickets(srv ? kctx : pctx, (size_t)tickets);
	CU_ASSERT_EQUAL_FATAL(t_tcp_pair(fds), 0);
	kfd = srv ? fds[1] : fds[0];
	pfd = srv ? fds[0] : fds[1];
	fcntl(pfd, F_SETFL, O_NONBLOCK);
	peer = SSL_new(pctx);
	SSL_set_fd(peer, pfd);
	if (srv)
		SSL_set_connect_state(peer);
	else
		SSL_set_accept_state(peer);
	CU_ASSERT_EQUAL_FATAL(ktlsh_hs_new(&hs, kctx, kfd, &params), 0);

	for (i = 0; i < 2000 && (hs_ret == -EAGAIN || !peer_done); i++) {
		if (hs_ret == -EAGAIN)
			hs_ret = ktlsh_hs_step(hs);
		if (!peer_done) {
			rc = SSL_do_handshake(peer);
			if (rc == 1)
				peer_done = 1;
			else if (SSL_get_error(peer, rc) != SSL_ERROR_WANT_READ &&
				 SSL_get_error(peer, rc) != SSL_ERROR_WANT_WRITE)
				break;
		}
		if (hs_ret == -EAGAIN || !peer_done)
			poll(NULL, 0, 0);
	}
	CU_ASSERT_EQUAL_FATAL(hs_ret, 0);
	CU_ASSERT_EQUAL_FATAL(peer_done, 1);
	CU_ASSERT_EQUAL_FATAL(ktlsh_hs_install(hs), 0);
	CU_ASSERT_EQUAL(cap.ulp_calls, 1);
	CU_ASSERT_EQUAL(cap.tx_calls, 1);
	CU_ASSERT_EQUAL(cap.rx_calls, 1);
	CU_ASSERT_EQUAL(ktlsh_hs_info(hs)->version, version);
	CU_ASSERT_EQUAL(ktlsh_hs_info(hs)->cipher, want_cipher);
	CU_ASSERT_EQUAL(cap.no_pad_calls,
			(hs_flags & KTLSH_HS_TRUSTED_PEER) && version == TLS1_3_VERSION ? 1 : 0);
	if (version == TLS1_2_VERSION) {
		CU_ASSERT_EQUAL(ktlsh_hs_info(hs)->tx_seq, 1);
		CU_ASSERT_EQUAL(ktlsh_hs_info(hs)->rx_seq, 1);
	} else if (srv) {
		CU_ASSERT_EQUAL(ktlsh_hs_info(hs)->tx_seq, tickets >= 0 ? (uint64_t)tickets : 2);
		CU_ASSERT_EQUAL(ktlsh_hs_info(hs)->rx_seq, 0);
	} else {
		CU_ASSERT_EQUAL(ktlsh_hs_info(hs)->tx_seq, 0);
		CU_ASSERT_EQUAL(ktlsh_hs_info(hs)->rx_seq, 0);
	}
	t_dir_from(&tx, &cap.tx);
	t_dir_from(&rx, &cap.rx);
	CU_ASSERT_EQUAL(tx.seq, ktlsh_hs_info(hs)->tx_seq);
	CU_ASSERT_EQUAL(rx.seq, ktlsh_hs_info(hs)->rx_seq);

	/* TX: our sealed record must be readable by the peer's OpenSSL. */
	rec_len = t_seal(&tx, ping, strlen(ping), rec);
	CU_ASSERT_EQUAL(write(kfd, rec, rec_len), (ssize_t)rec_len);
	memset(buf, 0, sizeof(buf));
	for (i = 0, rc = -1; i < 200 && rc <= 0; i++) {
		rc = SSL_read(peer, buf, sizeof(buf) - 1);
		if (rc <= 0 && SSL_get_error(peer, rc) != SSL_ERROR_WANT_READ)
			break;
		if (rc <= 0)
			poll(NULL, 0, 5);
	}
	CU_ASSERT_EQUAL(rc, (int)strlen(ping));
	CU_ASSERT_STRING_EQUAL(buf, ping);

	/* RX: whatever the peer's OpenSSL writes must open with our RX keys,
	 * tickets first when it is a TLS 1.3 server. */
	for (i = 0, rc = -1; i < 200 && rc <= 0; i++) {
		rc = SSL_write(peer, pong, (int)strlen(pong));
		if (rc <= 0)
			poll(NULL, 0, 5);
	}
	CU_ASSERT_EQUAL(rc, (int)strlen(pong));
	for (;;) {
		type = t_open(&rx, kfd, plain, &plain_len);
		if (type != KTLSH_CT_HANDSHAKE)
			break;
		nst++;
	}
	CU_ASSERT_EQUAL(type, KTLSH_CT_APPLICATION_DATA);
	CU_ASSERT_EQUAL(plain_len, strlen(pong));
	CU_ASSERT_EQUAL(memcmp(plain, pong, strlen(pong)), 0);
	if (!srv && version == TLS1_3_VERSION)
		CU_ASSERT_EQUAL(nst, tickets >= 0 ? tickets : 2);

	/* The trace tells the story in order. */
	CU_ASSERT_PTR_NOT_NULL(strstr(t_trace_buf, "step=clienthello"));
	CU_ASSERT_PTR_NOT_NULL(strstr(t_trace_buf, "step=serverhello"));
	CU_ASSERT_PTR_NOT_NULL(strstr(t_trace_buf, "step=done"));
	CU_ASSERT_PTR_NOT_NULL(strstr(t_trace_buf, "step=install"));
	CU_ASSERT(strstr(t_trace_buf, "step=clienthello") < strstr(t_trace_buf, "step=install"));
	if (!srv)
		CU_ASSERT_PTR_NOT_NULL(strstr(t_trace_buf, "step=verify depth=0"));

	ktlsh_hs_free(hs);
	SSL_free(peer);
	SSL_CTX_free(kctx);
	SSL_CTX_free(pctx);
	close(fds[0]);
	close(fds[1]);
	ktlsh_sys = t_real_sys;
}

#define T13 TLS1_3_VERSION
#define T12 TLS1_2_VERSION
#define S KTLSH_ROLE_SERVER
#define C KTLSH_ROLE_CLIENT

static void test_tls13_aes128_server(void)
{
	t_handshake_case(T13, "TLS_AES_128_GCM_SHA256", S, -1, 0, KTLSH_CIPHER_AES_GCM_128);
}

static void test_tls13_aes128_server_tickets(void)
{
	t_handshake_case(T13, "TLS_AES_128_GCM_SHA256", S, 0, 0, KTLSH_CIPHER_AES_GCM_128);
	t_handshake_case(T13, "TLS_AES_128_GCM_SHA256", S, 1, 0, KTLSH_CIPHER_AES_GCM_128);
	t_handshake_case(T13, "TLS_AES_128_GCM_SHA256", S, 5, 0, KTLSH_CIPHER_AES_GCM_128);
}

static void test_tls13_client_tickets(void)
{
	t_handshake_case(T13, "TLS_AES_128_GCM_SHA256", C, -1, 0, KTLSH_CIPHER_AES_GCM_128);
	t_handshake_case(T13, "TLS_AES_128_GCM_SHA256", C, 0, 0, KTLSH_CIPHER_AES_GCM_128);
	t_handshake_case(T13, "TLS_AES_128_GCM_SHA256", C, 4, 0, KTLSH_CIPHER_AES_GCM_128);
}

static void test_tls13_all_ciphers(void)
{
	static const struct {
		const char *name;
		enum ktlsh_cipher c;
	} v[] = {
		{ "TLS_AES_256_GCM_SHA384", KTLSH_CIPHER_AES_GCM_256 },
		{ "TLS_CHACHA20_POLY1305_SHA256", KTLSH_CIPHER_CHACHA20_POLY1305 },
		{ "TLS_AES_128_CCM_SHA256", KTLSH_CIPHER_AES_CCM_128 },
	};
	size_t i;

	for (i = 0; i < KTLSH_ARRAY_SIZE(v); i++) {
		t_handshake_case(T13, v[i].name, S, -1, 0, v[i].c);
		t_handshake_case(T13, v[i].name, C, -1, 0, v[i].c);
	}
}

static void test_tls12_all_ciphers(void)
{
	static const struct {
		const char *name;
		enum ktlsh_cipher c;
	} v[] = {
		{ "ECDHE-ECDSA-AES128-GCM-SHA256", KTLSH_CIPHER_AES_GCM_128 },
		{ "ECDHE-ECDSA-AES256-GCM-SHA384", KTLSH_CIPHER_AES_GCM_256 },
		{ "ECDHE-ECDSA-CHACHA20-POLY1305", KTLSH_CIPHER_CHACHA20_POLY1305 },
		{ "ECDHE-ECDSA-AES128-CCM", KTLSH_CIPHER_AES_CCM_128 },
	};
	size_t i;

	for (i = 0; i < KTLSH_ARRAY_SIZE(v); i++) {
		t_handshake_case(T12, v[i].name, S, -1, 0, v[i].c);
		t_handshake_case(T12, v[i].name, C, -1, 0, v[i].c);
	}
}

static void test_trusted_peer_no_pad(void)
{
	t_handshake_case(T13, "TLS_AES_128_GCM_SHA256", S, -1, KTLSH_HS_TRUSTED_PEER,
			 KTLSH_CIPHER_AES_GCM_128);
	t_handshake_case(T12, "ECDHE-ECDSA-AES128-GCM-SHA256", S, -1, KTLSH_HS_TRUSTED_PEER,
			 KTLSH_CIPHER_AES_GCM_128);
}

/* Run a handshake to completion with both ends in this process. */
static int t_pair_handshake(SSL_CTX *kctx, SSL_CTX *pctx, int fds[2], struct ktlsh_hs **hsp)
{
	struct ktlsh_hs_params params = { .role = KTLSH_ROLE_SERVER };
	int i, rc, hs_ret = -EAGAIN, peer_done = 0;
	SSL *peer;

	if (t_tcp_pair(fds))
		return -1;
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	peer = SSL_new(pctx);
	SSL_set_fd(peer, fds[0]);
	SSL_set_connect_state(peer);
	if (ktlsh_hs_new(hsp, kctx, fds[1], &params))
		return -1;
	for (i = 0; i < 2000 && (hs_ret == -EAGAIN || !peer_done); i++) {
		if (hs_ret == -EAGAIN)
			hs_ret = ktlsh_hs_step(*hsp);
		if (!peer_done) {
			rc = SSL_do_handshake(peer);
			peer_done = rc == 1;
			if (rc != 1 && SSL_get_error(peer, rc) != SSL_ERROR_WANT_READ)
				break;
		}
	}
	SSL_free(peer);
	return hs_ret;
}

/* The install step's error paths, through the seam. */
static void test_install_errors(void)
{
	struct ktlsh_kcaps caps;
	SSL_CTX *kctx = t_ctx(1, T13, "TLS_AES_128_GCM_SHA256");
	SSL_CTX *pctx = t_ctx(0, T13, "TLS_AES_128_GCM_SHA256");
	struct ktlsh_hs *hs;
	int fds[2];
	static const struct {
		int level, name, err, want;
		const char *reason;
		int tx_calls;
	} v[] = {
		{ SOL_TCP, TCP_ULP, ENOENT, -ENOENT, "kernel TLS unavailable", 0 },
		{ SOL_TCP, TCP_ULP, ENOTCONN, -ENOTCONN, "no longer established", 0 },
		{ SOL_TLS, TLS_TX, ENOENT, -ENOENT, "kernel TLS unavailable", 0 },
		{ SOL_TLS, TLS_RX, EINVAL, -EINVAL, "RX install failed", 1 },
	};
	size_t i;

	memset(&caps, 0xff, sizeof(caps));
	CU_ASSERT_EQUAL_FATAL(ktlsh_ssl_ctx_setup(kctx, &caps, 0), 0);
	for (i = 0; i < KTLSH_ARRAY_SIZE(v); i++) {
		cap_reset();
		CU_ASSERT_EQUAL_FATAL(t_pair_handshake(kctx, pctx, fds, &hs), 0);
		cap.fail_level = v[i].level;
		cap.fail_name = v[i].name;
		cap.fail_errno = v[i].err;
		CU_ASSERT_EQUAL(ktlsh_hs_install(hs), v[i].want);
		CU_ASSERT_PTR_NOT_NULL(strstr(ktlsh_hs_info(hs)->reason, v[i].reason));
		CU_ASSERT_EQUAL(cap.tx_calls, v[i].tx_calls);
		ktlsh_hs_free(hs);
		close(fds[0]);
		close(fds[1]);
	}
	ktlsh_sys = t_real_sys;
	SSL_CTX_free(kctx);
	SSL_CTX_free(pctx);
}

/* Blocking mode and Nagle come back the way the caller had them. */
static void test_socket_state_restored(void)
{
	struct ktlsh_kcaps caps;
	SSL_CTX *kctx = t_ctx(1, T13, "TLS_AES_128_GCM_SHA256");
	SSL_CTX *pctx = t_ctx(0, T13, "TLS_AES_128_GCM_SHA256");
	struct ktlsh_hs *hs;
	int fds[2], nodelay = -1;
	socklen_t len = sizeof(nodelay);

	memset(&caps, 0xff, sizeof(caps));
	CU_ASSERT_EQUAL_FATAL(ktlsh_ssl_ctx_setup(kctx, &caps, 0), 0);
	cap_reset();
	CU_ASSERT_EQUAL_FATAL(t_pair_handshake(kctx, pctx, fds, &hs), 0);
	CU_ASSERT(fcntl(fds[1], F_GETFL) & O_NONBLOCK);	/* during the handshake */
	CU_ASSERT_EQUAL(ktlsh_hs_install(hs), 0);
	CU_ASSERT_FALSE(fcntl(fds[1], F_GETFL) & O_NONBLOCK);
	getsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
	CU_ASSERT_EQUAL(nodelay, 0);
	ktlsh_hs_free(hs);
	close(fds[0]);
	close(fds[1]);
	ktlsh_sys = t_real_sys;
	SSL_CTX_free(kctx);
	SSL_CTX_free(pctx);
}

/* KTLSH_CTX_REQUIRE_OFFLOAD offers only what the kernel takes. */
static void test_ctx_restrict(void)
{
	struct ktlsh_kcaps caps;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	STACK_OF(SSL_CIPHER) *sk;
	int i, n13 = 0, n12 = 0;

	SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
				      "TLS_CHACHA20_POLY1305_SHA256");
	SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA");
	memset(&caps, 0, sizeof(caps));
	caps.tls13_tx = caps.tls13_rx = KTLSH_CIPHER_BIT(KTLSH_CIPHER_CHACHA20_POLY1305);
	caps.tls12_tx = caps.tls12_rx = KTLSH_CIPHER_BIT(KTLSH_CIPHER_AES_GCM_128);
	CU_ASSERT_EQUAL_FATAL(ktlsh_ssl_ctx_setup(ctx, &caps, KTLSH_CTX_REQUIRE_OFFLOAD), 0);
	sk = SSL_CTX_get_ciphers(ctx);
	for (i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);

		if (!strcmp(SSL_CIPHER_get_name(c), "TLS_CHACHA20_POLY1305_SHA256"))
			n13++;
		else if (!strcmp(SSL_CIPHER_get_name(c), "ECDHE-ECDSA-AES128-GCM-SHA256"))
			n12++;
		else
			CU_FAIL("a cipher the kernel cannot take is still offered");
	}
	CU_ASSERT_EQUAL(n13, 1);
	CU_ASSERT_EQUAL(n12, 1);

	memset(&caps, 0, sizeof(caps));
	CU_ASSERT_EQUAL(ktlsh_ssl_ctx_setup(ctx, &caps, KTLSH_CTX_REQUIRE_OFFLOAD), -ENOPROTOOPT);
	SSL_CTX_free(ctx);
}

static void test_cipher_mapping(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	SSL *ssl = SSL_new(ctx);
	static const struct {
		uint8_t id[2];
		enum ktlsh_cipher want;
	} v[] = {
		{ { 0x13, 0x01 }, KTLSH_CIPHER_AES_GCM_128 },
		{ { 0x13, 0x02 }, KTLSH_CIPHER_AES_GCM_256 },
		{ { 0x13, 0x03 }, KTLSH_CIPHER_CHACHA20_POLY1305 },
		{ { 0x13, 0x04 }, KTLSH_CIPHER_AES_CCM_128 },
		{ { 0x13, 0x05 }, KTLSH_CIPHER_NONE },		/* CCM_8: 8-byte tag */
		{ { 0xc0, 0x2b }, KTLSH_CIPHER_AES_GCM_128 },
		{ { 0xc0, 0x2c }, KTLSH_CIPHER_AES_GCM_256 },
		{ { 0xcc, 0xa9 }, KTLSH_CIPHER_CHACHA20_POLY1305 },
		{ { 0xc0, 0xac }, KTLSH_CIPHER_AES_CCM_128 },
		{ { 0xc0, 0x09 }, KTLSH_CIPHER_NONE },		/* CBC */
	};
	size_t i;

	for (i = 0; i < KTLSH_ARRAY_SIZE(v); i++) {
		const SSL_CIPHER *c = SSL_CIPHER_find(ssl, v[i].id);

		CU_ASSERT_PTR_NOT_NULL_FATAL(c);
		CU_ASSERT_EQUAL(ktlsh_cipher_from_ssl(c), v[i].want);
	}
	CU_ASSERT_EQUAL(ktlsh_cipher_from_ssl(NULL), KTLSH_CIPHER_NONE);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
}

/* On this host the probe must run and report honestly, whatever the kernel. */
static void test_kernel_probe_runs(void)
{
	struct ktlsh_kcaps caps;

	ktlsh_sys = t_real_sys;
	CU_ASSERT_EQUAL(ktlsh_kernel_probe(&caps), 0);
	if (caps.ulp_err)
		CU_ASSERT_EQUAL(caps.tls13_tx | caps.tls13_rx | caps.tls12_tx | caps.tls12_rx, 0);
	printf("\n    kernel probe: ulp_err=%d tls13 tx=%#x rx=%#x tls12 tx=%#x rx=%#x\n",
	       caps.ulp_err, caps.tls13_tx, caps.tls13_rx, caps.tls12_tx, caps.tls12_rx);
}

/* The key log's hex: both cases, every digit, and nothing else. */
static void test_unhex(void)
{
	static const char all[] = "00010203040506070809aAbBcCdDeEfF10f0fFFf";
	static const uint8_t want[] = { 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
					0x09, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x10, 0xf0,
					0xff, 0xff };
	static const char *const bad[] = { "0g", "g0", "0 ", " 0", "-1", "0x", "+f", "\xff" "0",
					   "0\x80", ":0", "0@", "`a", "G0", "0/" };
	uint8_t out[64], ref[1];
	char hex[3];
	size_t i;
	int v;

	CU_ASSERT_EQUAL(ktlsh_unhex(all, strlen(all), out, sizeof(out)), (int)sizeof(want));
	CU_ASSERT_EQUAL(memcmp(out, want, sizeof(want)), 0);
	CU_ASSERT_EQUAL(ktlsh_unhex("", 0, out, sizeof(out)), 0);
	CU_ASSERT_EQUAL(ktlsh_unhex("abc", 3, out, sizeof(out)), -EINVAL);	/* odd */
	CU_ASSERT_EQUAL(ktlsh_unhex(all, 4, out, 1), -EINVAL);		/* over cap */
	CU_ASSERT_EQUAL(ktlsh_unhex(all, 2, out, 1), 1);
	for (i = 0; i < KTLSH_ARRAY_SIZE(bad); i++) {
		memset(out, 0x55, sizeof(out));
		CU_ASSERT_EQUAL(ktlsh_unhex(bad[i], 2, out, sizeof(out)), -EINVAL);
		CU_ASSERT_EQUAL(out[0], 0);	/* no half-parsed secret left behind */
	}
	/* a bad digit after good ones fails the whole string */
	CU_ASSERT_EQUAL(ktlsh_unhex("00112z", 6, out, sizeof(out)), -EINVAL);
	/* every byte value against sscanf's reading */
	for (v = 0; v < 256; v++) {
		snprintf(hex, sizeof(hex), v & 1 ? "%02X" : "%02x", v);
		CU_ASSERT_EQUAL(t_unhex(hex, ref, sizeof(ref)), 1);
		CU_ASSERT_EQUAL(ktlsh_unhex(hex, 2, out, sizeof(out)), 1);
		CU_ASSERT_EQUAL(out[0], ref[0]);
	}
}

/* Key log lines as OpenSSL 3.0 writes them: only the two application
 * traffic secrets are taken, by label, the rest is never parsed. */
static void test_keylog_lines(void)
{
	static const char rnd[] =
		"3de0a2b4c6d8e0f20416283a4c5e60728496a8bacedef00112233445566778899";
	static const char *const others[] = {
		"CLIENT_HANDSHAKE_TRAFFIC_SECRET ", "SERVER_HANDSHAKE_TRAFFIC_SECRET ",
		"EXPORTER_SECRET ", "CLIENT_EARLY_TRAFFIC_SECRET ", "CLIENT_RANDOM ",
		"CLIENT_TRAFFIC_SECRET_1 ", "client_traffic_secret_0 ", "CLIENT_TRAFFIC_SECRET_0",
		"SERVER_TRAFFIC_SECRET_0\t", "",
	};
	char line[512], sec_hex[2 * KTLSH_SECRET_MAX + 3];
	uint8_t secret[KTLSH_SECRET_MAX + 1], out[KTLSH_SECRET_MAX];
	size_t i, len;

	CU_ASSERT_EQUAL_FATAL(strlen(rnd), 2 * KTLSH_RANDOM_LEN + 1);	/* 65: one too many */
	for (i = 0; i < sizeof(secret); i++)
		secret[i] = (uint8_t)(0xa5 ^ (i * 7));
	for (len = 32; len <= KTLSH_SECRET_MAX; len += 16) {	/* SHA-256, SHA-384 */
		for (i = 0; i < len; i++)
			snprintf(sec_hex + 2 * i, 3, "%02x", secret[i]);
		snprintf(line, sizeof(line), "CLIENT_TRAFFIC_SECRET_0 %.64s %s", rnd, sec_hex);
		CU_ASSERT_EQUAL(ktlsh_keylog_label(line), KTLSH_KEYLOG_CLIENT_TRAFFIC_0);
		memset(out, 0, sizeof(out));
		CU_ASSERT_EQUAL(ktlsh_keylog_secret(line, out, sizeof(out)), (int)len);
		CU_ASSERT_EQUAL(memcmp(out, secret, len), 0);
		snprintf(line, sizeof(line), "SERVER_TRAFFIC_SECRET_0 %.64s %s", rnd, sec_hex);
		CU_ASSERT_EQUAL(ktlsh_keylog_label(line), KTLSH_KEYLOG_SERVER_TRAFFIC_0);
		CU_ASSERT_EQUAL(ktlsh_keylog_secret(line, out, sizeof(out)), (int)len);
		CU_ASSERT_EQUAL(memcmp(out, secret, len), 0);
	}
	for (i = 0; i < KTLSH_ARRAY_SIZE(others); i++) {
		snprintf(line, sizeof(line), "%s%.64s %s", others[i], rnd, sec_hex);
		CU_ASSERT_EQUAL(ktlsh_keylog_label(line), KTLSH_KEYLOG_OTHER);
	}
	/* malformed lines under a label that is used */
	snprintf(line, sizeof(line), "CLIENT_TRAFFIC_SECRET_0 %.63s %s", rnd, sec_hex);
	CU_ASSERT_EQUAL(ktlsh_keylog_secret(line, out, sizeof(out)), -EINVAL);	/* short random */
	snprintf(line, sizeof(line), "CLIENT_TRAFFIC_SECRET_0 %s %s", rnd, sec_hex);
	CU_ASSERT_EQUAL(ktlsh_keylog_secret(line, out, sizeof(out)), -EINVAL);	/* long random */
	snprintf(line, sizeof(line), "CLIENT_TRAFFIC_SECRET_0 %.64s", rnd);
	CU_ASSERT_EQUAL(ktlsh_keylog_secret(line, out, sizeof(out)), -EINVAL);	/* no secret */
	CU_ASSERT_EQUAL(ktlsh_keylog_secret("CLIENT_TRAFFIC_SECRET_0 ", out, sizeof(out)), -EINVAL);
	snprintf(line, sizeof(line), "CLIENT_TRAFFIC_SECRET_0 %.64s %sx", rnd, sec_hex);
	CU_ASSERT_EQUAL(ktlsh_keylog_secret(line, out, sizeof(out)), -EINVAL);	/* odd, bad */
	for (i = 0; i < sizeof(secret); i++)
		snprintf(sec_hex + 2 * i, 3, "%02x", secret[i]);
	snprintf(line, sizeof(line), "CLIENT_TRAFFIC_SECRET_0 %.64s %s", rnd, sec_hex);
	CU_ASSERT_EQUAL(ktlsh_keylog_secret(line, out, sizeof(out)), -EINVAL);	/* 49 bytes */
}

/* ktlsh_hs_new() refuses what is not TCP with its first system call, and
 * leaves such a descriptor's flags alone. */
static void test_not_tcp_refused(void)
{
	SSL_CTX *ctx = t_ctx(1, T13, "TLS_AES_128_GCM_SHA256");
	struct ktlsh_hs_params params = { .role = KTLSH_ROLE_SERVER };
	struct ktlsh_kcaps caps;
	struct ktlsh_hs *hs = (struct ktlsh_hs *)1;
	int u[2], p[2], udp, fds[2];

	memset(&caps, 0xff, sizeof(caps));
	CU_ASSERT_EQUAL_FATAL(ktlsh_ssl_ctx_setup(ctx, &caps, 0), 0);
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, u), 0);
	CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	CU_ASSERT_FATAL(udp >= 0);
	CU_ASSERT_EQUAL(ktlsh_hs_new(&hs, ctx, u[0], &params), -ESOCKTNOSUPPORT);
	CU_ASSERT_PTR_NULL(hs);
	CU_ASSERT_EQUAL(ktlsh_hs_new(&hs, ctx, udp, &params), -ESOCKTNOSUPPORT);
	CU_ASSERT_EQUAL(ktlsh_hs_new(&hs, ctx, p[0], &params), -ENOTSOCK);
	CU_ASSERT_FALSE(fcntl(u[0], F_GETFL) & O_NONBLOCK);
	CU_ASSERT_FALSE(fcntl(udp, F_GETFL) & O_NONBLOCK);
	CU_ASSERT_FALSE(fcntl(p[0], F_GETFL) & O_NONBLOCK);
	/* and a TCP socket is taken */
	CU_ASSERT_EQUAL_FATAL(t_tcp_pair(fds), 0);
	CU_ASSERT_EQUAL(ktlsh_hs_new(&hs, ctx, fds[1], &params), 0);
	ktlsh_hs_free(hs);
	close(fds[0]);
	close(fds[1]);
	close(u[0]);
	close(u[1]);
	close(p[0]);
	close(p[1]);
	close(udp);
	SSL_CTX_free(ctx);
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "TLS 1.3 server, default tickets: keys and seq", test_tls13_aes128_server },
		{ "TLS 1.3 server with 0, 1, 5 tickets", test_tls13_aes128_server_tickets },
		{ "TLS 1.3 client, tickets after handover", test_tls13_client_tickets },
		{ "TLS 1.3 AES-256-GCM, ChaCha20, CCM both roles", test_tls13_all_ciphers },
		{ "TLS 1.2 every AEAD both roles", test_tls12_all_ciphers },
		{ "trusted peer sets EXPECT_NO_PAD on 1.3 only", test_trusted_peer_no_pad },
		{ "install error paths", test_install_errors },
		{ "socket flags restored", test_socket_state_restored },
		{ "REQUIRE_OFFLOAD narrows the cipher lists", test_ctx_restrict },
		{ "OpenSSL cipher to kernel cipher", test_cipher_mapping },
		{ "kernel probe", test_kernel_probe_runs },
		{ "key log hex: table parser", test_unhex },
		{ "key log lines: labels first, then the secret", test_keylog_lines },
		{ "not TCP: refused, flags untouched", test_not_tcp_refused },
		{ NULL, NULL },
	};
	t_real_sys = ktlsh_sys;
	if (t_pki_init())
		return 2;
	return t_run("handshake", cases);
}
