// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The kernel's handshake upcall, served with libnl-genl.
 *
 *   kernel consumer (NFS, NVMe/TCP) queues a request, multicasts READY
 *   main thread   READY on the "tlshd" group -> ACCEPT until the queue is
 *                 empty; each reply carries a socket (installed in our fd
 *                 table) and its parameters; read what the kernel names by
 *                 serial from the keyrings; submit a job to the workers
 *   worker        the ordinary handshake (prepare hook: PSK callbacks,
 *                 keyring certificates), kTLS install; the done hook notes
 *                 the status and the peer's identity and keeps the socket;
 *                 once the worker let go of it, the released hook queues it
 *   main thread   DONE (status, socket, remote peer identities), then close
 *
 * Every netlink message goes out from the main thread: it keeps the one
 * libnl socket pair single-threaded, and lets only that thread keep
 * CAP_NET_ADMIN (ACCEPT and DONE are GENL_ADMIN_PERM) when ktlshd drops to
 * an unprivileged user (see Documentation/design.md).
 *
 * The messages themselves are parsed and built in netlink_msg.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/capability.h>
#include <linux/genetlink.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <netlink/netlink.h>
#include <netlink/msg.h>
#include <netlink/attr.h>
#include <netlink/genl/genl.h>
#include <netlink/genl/ctrl.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ktlshd.h"
#include "netlink.h"

#define KTLSHD_NL_IDENTITY_MAX	1024	/* NVMe identities carry two NQNs */

/* ===================================================================== */
/* The upcall's TLS contexts                                             */
/* ===================================================================== */

/*
 * Built from [handshake] for one runtime generation; a reload builds new
 * ones at the next request. Requests hold a reference.
 */
struct ktlshd_nl_ctxs {
	atomic_uint refs;
	uint64_t generation;
	SSL_CTX *client;	/* x509: the configured client certificate, if any */
	SSL_CTX *client_anon;	/* unauthenticated: no certificate of ours */
	SSL_CTX *client_psk;	/* PSK: no certificate is ever good enough */
	SSL_CTX *server;	/* x509 */
	SSL_CTX *server_psk;	/* PSK: no certificate to fall back to */
	bool server_cert;	/* server has a configured certificate */
	unsigned int timeout_ms;
};

static struct ktlshd_nl_ctxs *ktlshd_nl_ctxs_get(struct ktlshd_nl_ctxs *c)
{
	if (c)
		atomic_fetch_add(&c->refs, 1);
	return c;
}

static void ktlshd_nl_ctxs_put(struct ktlshd_nl_ctxs *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	SSL_CTX_free(c->client);
	SSL_CTX_free(c->client_anon);
	SSL_CTX_free(c->client_psk);
	SSL_CTX_free(c->server);
	SSL_CTX_free(c->server_psk);
	free(c);
}

__attribute__((format(printf, 5, 6)))
static int ktlshd_nl_ctx_fail(char *err, size_t errlen, const struct ktlsh_config *cfg,
			      unsigned int line, const char *fmt, ...)
{
	unsigned long e = ERR_peek_last_error();
	size_t n;
	va_list ap;

	n = (size_t)snprintf(err, errlen, "%s:%u: ", cfg->path, line);
	if (n < errlen) {
		va_start(ap, fmt);
		n += (size_t)vsnprintf(err + n, errlen - n, fmt, ap);
		va_end(ap);
	}
	if (e && n < errlen)
		snprintf(err + n, errlen - n, ": %s", ERR_reason_error_string(e) ?
			 ERR_reason_error_string(e) : "OpenSSL error");
	ERR_clear_error();
	return -EINVAL;
}

static int ktlshd_nl_psk_hello(SSL *ssl, int *alert, void *arg);

enum ktlshd_nl_ctx_kind {
	NL_CTX_CLIENT, NL_CTX_CLIENT_ANON, NL_CTX_CLIENT_PSK, NL_CTX_SERVER, NL_CTX_SERVER_PSK,
};

static int ktlshd_nl_ctx_new(SSL_CTX **out, enum ktlshd_nl_ctx_kind kind,
			     const struct ktlsh_config *cfg, const struct ktlsh_kcaps *caps,
			     char *err, size_t errlen)
{
	const struct ktlsh_config_handshake *hs = &cfg->handshake;
	bool server = kind == NL_CTX_SERVER || kind == NL_CTX_SERVER_PSK;
	const struct ktlsh_config_hs_role *role = server ? &hs->server : &hs->client;
	bool certs = kind == NL_CTX_CLIENT || kind == NL_CTX_SERVER;
	bool trust = kind == NL_CTX_CLIENT || kind == NL_CTX_CLIENT_ANON ||
		     (kind == NL_CTX_SERVER && hs->verify_client != KTLSH_CONFIG_VERIFY_NONE);
	X509_STORE *store;
	X509_LOOKUP *lookup;
	SSL_CTX *ctx;
	int mode, ret = -EINVAL;

	*out = NULL;
	ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx)
		return -ENOMEM;
	/* The kernel's consumers speak TLS 1.3 only. */
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
		ret = ktlshd_nl_ctx_fail(err, errlen, cfg, hs->line, "TLS 1.3");
		goto fail;
	}
	if (hs->ciphersuites.str && !SSL_CTX_set_ciphersuites(ctx, hs->ciphersuites.str)) {
		ret = ktlshd_nl_ctx_fail(err, errlen, cfg, hs->ciphersuites.line,
					 "ciphersuites '%s' not accepted", hs->ciphersuites.str);
		goto fail;
	}
	if (hs->groups.str && !SSL_CTX_set1_groups_list(ctx, hs->groups.str)) {
		ret = ktlshd_nl_ctx_fail(err, errlen, cfg, hs->groups.line,
					 "groups '%s' not accepted", hs->groups.str);
		goto fail;
	}
	if (certs && role->certkey.cert.str) {
		if (SSL_CTX_use_certificate_chain_file(ctx, role->certkey.cert.str) != 1) {
			ret = ktlshd_nl_ctx_fail(err, errlen, cfg, role->certkey.cert.line,
						 "cannot load certificate chain %s",
						 role->certkey.cert.str);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, role->certkey.key.str, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			ret = ktlshd_nl_ctx_fail(err, errlen, cfg, role->certkey.key.line,
						 "private key %s does not load or match %s",
						 role->certkey.key.str, role->certkey.cert.str);
			goto fail;
		}
	}
	if (trust) {
		/* Like tlshd: the system's trust store unless one is named. */
		if (role->ca_file.str || role->ca_dir.str) {
			if (SSL_CTX_load_verify_locations(ctx, role->ca_file.str,
							  role->ca_dir.str) != 1) {
				ret = ktlshd_nl_ctx_fail(err, errlen, cfg, role->ca_file.str ?
							 role->ca_file.line : role->ca_dir.line,
							 "cannot load CA certificates");
				goto fail;
			}
		} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			ret = ktlshd_nl_ctx_fail(err, errlen, cfg, hs->line,
						 "cannot load the system CA store");
			goto fail;
		}
		if (role->crl_file.str) {
			store = SSL_CTX_get_cert_store(ctx);
			lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
			if (!lookup || X509_load_crl_file(lookup, role->crl_file.str,
							  X509_FILETYPE_PEM) <= 0) {
				ret = ktlshd_nl_ctx_fail(err, errlen, cfg, role->crl_file.line,
							 "cannot load CRL %s", role->crl_file.str);
				goto fail;
			}
			X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
		}
	}
	switch (kind) {
	case NL_CTX_SERVER:
		mode = hs->verify_client == KTLSH_CONFIG_VERIFY_REQUIRED ?
		       SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT :
		       hs->verify_client == KTLSH_CONFIG_VERIFY_OPTIONAL ? SSL_VERIFY_PEER :
		       SSL_VERIFY_NONE;
		if (mode != SSL_VERIFY_NONE && role->ca_file.str) {
			STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(role->ca_file.str);

			if (names)
				SSL_CTX_set_client_CA_list(ctx, names);
		}
		break;
	case NL_CTX_SERVER_PSK:
		mode = SSL_VERIFY_NONE;
		SSL_CTX_set_client_hello_cb(ctx, ktlshd_nl_psk_hello, NULL);
		break;
	default:
		/* client_psk has an empty store: a server that declines the PSK
		 * and sends a certificate instead fails here. */
		mode = SSL_VERIFY_PEER;
		break;
	}
	SSL_CTX_set_verify(ctx, mode, NULL);
	/* Nothing to resume (the kernel consumer keeps no session), and no
	 * NewSessionTicket for it to trip over after handover. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	if (server)
		SSL_CTX_set_num_tickets(ctx, 0);
	ret = ktlsh_ssl_ctx_setup(ctx, caps, caps->ulp_err ? 0 : KTLSH_CTX_REQUIRE_OFFLOAD);
	if (ret) {
		snprintf(err, errlen, "%s:%u: [handshake]: no TLS 1.3 cipher the kernel can offload (%s)",
			 cfg->path, hs->line, strerror(-ret));
		goto fail;
	}
	*out = ctx;
	return 0;
fail:
	SSL_CTX_free(ctx);
	return ret;
}

static int ktlshd_nl_ctxs_build(const struct ktlshd_runtime *rt, struct ktlshd_nl_ctxs **out,
				char *err, size_t errlen)
{
	const struct ktlsh_config *cfg = rt->cfg;
	struct ktlshd_nl_ctxs *c;
	int ret;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	atomic_init(&c->refs, 1);
	c->generation = rt->generation;
	c->server_cert = cfg->handshake.server.certkey.cert.str != NULL;
	c->timeout_ms = cfg->handshake.timeout_ms ? cfg->handshake.timeout_ms :
			cfg->global.handshake_timeout_ms;
	if ((ret = ktlshd_nl_ctx_new(&c->client, NL_CTX_CLIENT, cfg, &rt->caps, err, errlen)) ||
	    (ret = ktlshd_nl_ctx_new(&c->client_anon, NL_CTX_CLIENT_ANON, cfg, &rt->caps, err,
				     errlen)) ||
	    (ret = ktlshd_nl_ctx_new(&c->client_psk, NL_CTX_CLIENT_PSK, cfg, &rt->caps, err,
				     errlen)) ||
	    (ret = ktlshd_nl_ctx_new(&c->server, NL_CTX_SERVER, cfg, &rt->caps, err, errlen)) ||
	    (ret = ktlshd_nl_ctx_new(&c->server_psk, NL_CTX_SERVER_PSK, cfg, &rt->caps, err,
				     errlen))) {
		ktlshd_nl_ctxs_put(c);
		return ret;
	}
	*out = c;
	return 0;
}

int ktlshd_netlink_check(const struct ktlshd_runtime *rt, char *err, size_t errlen)
{
	struct ktlshd_nl_ctxs *c = NULL;
	int ret;

	if (!rt->cfg->handshake.line || !rt->cfg->handshake.enabled)
		return 0;
	ret = ktlshd_nl_ctxs_build(rt, &c, err, errlen);
	ktlshd_nl_ctxs_put(c);
	return ret;
}

/* ===================================================================== */
/* One request                                                           */
/* ===================================================================== */

struct ktlshd_nl_req {
	struct ktlshd_nl_accept acc;
	struct ktlshd_nl_ctxs *ctxs;	/* reference */
	char peer[64];			/* numeric address, for logs and names */
	/* From the keyrings, read on the main thread at ACCEPT. */
	X509 *cert;			/* x509 with serials: ours */
	EVP_PKEY *pkey;
	uint8_t *psk;			/* PSK client: the key named by the kernel */
	size_t psk_len;
	int32_t psk_serial;		/* client: named by the kernel; server: found */
	char psk_identity[KTLSHD_NL_IDENTITY_MAX + 1];
	/* The outcome, from the worker. */
	bool finished;			/* the done hook ran */
	int fd;
	uint32_t status;
	int32_t remote[KTLSHD_NL_PEERIDS_MAX];
	unsigned int n_remote;
	struct ktlshd_nl_req *next;
};

static void ktlshd_nl_req_free(struct ktlshd_nl_req *req)
{
	if (!req)
		return;
	X509_free(req->cert);
	EVP_PKEY_free(req->pkey);
	ktlshd_keyring_free(req->psk, req->psk_len);
	ktlshd_nl_ctxs_put(req->ctxs);
	explicit_bzero(req, sizeof(*req));
	free(req);
}

static const char *ktlshd_nl_auth_name(uint32_t auth)
{
	return auth == KTLSHD_HS_AUTH_PSK ? "psk" : auth == KTLSHD_HS_AUTH_X509 ? "x509" : "unauth";
}

/* ---- the main thread's state ---- */

static struct {
	struct nl_sock *mc;		/* READY notifications */
	struct nl_sock *cmd;		/* ACCEPT and DONE */
	uint16_t family;
	bool remote_auth;		/* DONE takes REMOTE_AUTH */
	int evfd;			/* DONE queue doorbell */
	bool trim_caps;			/* keep only CAP_NET_ADMIN at the first wakeup */
	pthread_mutex_t lock;		/* protects the DONE queue */
	struct ktlshd_nl_req *done_head, *done_tail;
	struct ktlshd_nl_ctxs *ctxs;	/* main thread only */
	uint64_t failed_generation;
} ktlshd_nl = { .evfd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- PSK (TLS 1.3 external PSKs, RFC 8446 2.2 / 4.2.11) ---- */

/*
 * The PSK's hash decides the suite: NVMe identities say it ("NVMe0R01"
 * SHA-256, "NVMe1R02" SHA-384, TP 8011), else a 48-byte key is SHA-384.
 */
static bool ktlshd_nl_psk_sha384(const char *identity, size_t key_len)
{
	if (!strncmp(identity, "NVMe", 4) && strlen(identity) >= 8 &&
	    (identity[5] == 'R' || identity[5] == 'G'))
		return identity[6] == '0' && identity[7] == '2';
	return key_len == 48;
}

static const SSL_CIPHER *ktlshd_nl_psk_cipher(SSL *ssl, const char *identity, size_t key_len)
{
	static const unsigned char sha256[] = { 0x13, 0x01 }, sha384[] = { 0x13, 0x02 };

	return SSL_CIPHER_find(ssl, ktlshd_nl_psk_sha384(identity, key_len) ? sha384 : sha256);
}

/*
 * A PSK binds the handshake to its hash, and OpenSSL's server picks the
 * suite before it looks at the PSK: offer (client) and accept (server)
 * only the suites of the PSK's hash that the kernel can take.
 */
static int ktlshd_nl_psk_suites(SSL *ssl, const struct ktlsh_kcaps *caps, bool sha384)
{
	static const struct {
		const char *name;
		enum ktlsh_cipher kc;
		bool sha384;
	} suites[] = {
		{ "TLS_AES_128_GCM_SHA256", KTLSH_CIPHER_AES_GCM_128, false },
		{ "TLS_CHACHA20_POLY1305_SHA256", KTLSH_CIPHER_CHACHA20_POLY1305, false },
		{ "TLS_AES_128_CCM_SHA256", KTLSH_CIPHER_AES_CCM_128, false },
		{ "TLS_AES_256_GCM_SHA384", KTLSH_CIPHER_AES_GCM_256, true },
	};
	char list[160] = "";
	size_t i, n = 0;

	for (i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		if (suites[i].sha384 != sha384)
			continue;
		if (!caps->ulp_err && !ktlsh_kcaps_has(caps, TLS1_3_VERSION, suites[i].kc))
			continue;
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", n ? ":" : "",
				      suites[i].name);
	}
	if (!n || !SSL_set_ciphersuites(ssl, list)) {
		ERR_clear_error();
		return -EPROTONOSUPPORT;
	}
	return 0;
}

static SSL_SESSION *ktlshd_nl_psk_session(SSL *ssl, const char *identity, const uint8_t *key,
					  size_t key_len)
{
	const SSL_CIPHER *cipher = ktlshd_nl_psk_cipher(ssl, identity, key_len);
	SSL_SESSION *s = SSL_SESSION_new();

	if (!s || !cipher || !SSL_SESSION_set1_master_key(s, key, key_len) ||
	    !SSL_SESSION_set_cipher(s, cipher) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
		SSL_SESSION_free(s);
		return NULL;
	}
	return s;
}

static int ktlshd_nl_psk_use(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
			     SSL_SESSION **sess)
{
	struct ktlshd_job *job = ktlshd_job_of(ssl);
	struct ktlshd_nl_req *req = job ? job->done_arg : NULL;
	SSL_SESSION *s;

	*sess = NULL;
	if (!req || !req->psk)
		return 0;
	s = ktlshd_nl_psk_session(ssl, req->psk_identity, req->psk, req->psk_len);
	if (!s)
		return 0;
	/* After a HelloRetryRequest: only a PSK of the chosen hash. */
	if (md && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s))) {
		SSL_SESSION_free(s);
		return 1;
	}
	*id = (const unsigned char *)req->psk_identity;
	*idlen = strlen(req->psk_identity);
	*sess = s;
	log_debug("upcall %s: offering PSK \"%s\" (key %d, %s)", req->peer, req->psk_identity,
		  req->psk_serial, SSL_CIPHER_get_name(SSL_SESSION_get0_cipher(s)));
	return 1;
}

/*
 * Server: the key for a client's identity, from the request's keyring
 * (6.17+) or else the process keyring (where the kernel linked the
 * consumer's keyring, and where [handshake] keyrings are). The identity is
 * the peer's: printable, bounded, no NUL inside. Cached in req.
 */
static int ktlshd_nl_psk_lookup(struct ktlshd_nl_req *req, const unsigned char *identity,
				size_t identity_len)
{
	char id[KTLSHD_NL_IDENTITY_MAX + 1], type[16], desc[KTLSHD_NL_IDENTITY_MAX + 1];
	size_t i;
	int32_t serial;
	int ret;

	if (req->psk && identity_len == strlen(req->psk_identity) &&
	    !memcmp(identity, req->psk_identity, identity_len))
		return 0;
	if (!identity_len || identity_len > KTLSHD_NL_IDENTITY_MAX) {
		log_info("upcall %s: PSK identity of %zu bytes refused", req->peer, identity_len);
		return -EINVAL;
	}
	for (i = 0; i < identity_len; i++) {
		if (identity[i] < 0x20 || identity[i] >= 0x7f) {
			log_info("upcall %s: PSK identity with byte 0x%02x refused", req->peer,
				 identity[i]);
			return -EINVAL;
		}
	}
	memcpy(id, identity, identity_len);
	id[identity_len] = '\0';
	serial = ktlshd_keyring_search(req->acc.keyring > 0 ? req->acc.keyring :
				       KEY_SPEC_PROCESS_KEYRING, "psk", id);
	if (serial < 0) {
		log_info("upcall %s: no PSK with identity \"%s\" in the keyrings: %s", req->peer, id,
			 strerror(-serial));
		return serial;
	}
	/* Some key types match a prefix of the description: demand it all. */
	ret = ktlshd_keyring_describe(serial, type, sizeof(type), desc, sizeof(desc));
	if (ret || strcmp(desc, id)) {
		log_info("upcall %s: PSK identity \"%s\" matches no key exactly", req->peer, id);
		return -ENOKEY;
	}
	ktlshd_keyring_free(req->psk, req->psk_len);
	req->psk = NULL;
	ret = ktlshd_keyring_read(serial, &req->psk, &req->psk_len);
	if (ret) {
		log_warn("upcall %s: cannot read PSK %d (\"%s\"): %s", req->peer, serial, id,
			 strerror(-ret));
		return ret;
	}
	req->psk_serial = serial;
	snprintf(req->psk_identity, sizeof(req->psk_identity), "%s", id);
	log_info("upcall %s: the client's PSK identity \"%s\" is key %d", req->peer, id, serial);
	return 0;
}

/*
 * Server, before the suite is chosen: find the first identity of the
 * ClientHello's pre_shared_key extension (RFC 8446 4.2.11) that is in the
 * keyrings, and narrow the suites to its hash.
 */
static int ktlshd_nl_psk_hello(SSL *ssl, int *alert, void *arg)
{
	struct ktlshd_job *job = ktlshd_job_of(ssl);
	struct ktlshd_nl_req *req = job ? job->done_arg : NULL;
	const unsigned char *ext, *p, *end;
	size_t ext_len, ids_len, id_len;

	(void)alert;
	(void)arg;
	if (!req || req->acc.auth_mode != KTLSHD_HS_AUTH_PSK ||
	    !SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_psk, &ext, &ext_len) || ext_len < 2)
		return SSL_CLIENT_HELLO_SUCCESS;	/* no PSK: no shared suite will do */
	ids_len = (size_t)ext[0] << 8 | ext[1];
	if (ids_len > ext_len - 2)
		return SSL_CLIENT_HELLO_SUCCESS;	/* OpenSSL rejects it next */
	for (p = ext + 2, end = ext + 2 + ids_len; end - p >= 2;) {
		id_len = (size_t)p[0] << 8 | p[1];
		if (id_len + 6 > (size_t)(end - p))
			break;
		if (!ktlshd_nl_psk_lookup(req, p + 2, id_len)) {
			if (ktlshd_nl_psk_suites(ssl, &job->rt->caps,
						 ktlshd_nl_psk_sha384(req->psk_identity, req->psk_len)))
				log_warn("upcall %s: no suite the kernel takes for the PSK's hash",
					 req->peer);
			break;
		}
		p += 2 + id_len + 4;	/* identity, obfuscated_ticket_age */
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

static int ktlshd_nl_psk_find(SSL *ssl, const unsigned char *identity, size_t identity_len,
			      SSL_SESSION **sess)
{
	struct ktlshd_job *job = ktlshd_job_of(ssl);
	struct ktlshd_nl_req *req = job ? job->done_arg : NULL;

	*sess = NULL;
	if (!req)
		return 0;
	if (ktlshd_nl_psk_lookup(req, identity, identity_len))
		return 1;	/* not ours: no session, the handshake fails */
	*sess = ktlshd_nl_psk_session(ssl, req->psk_identity, req->psk, req->psk_len);
	return *sess ? 1 : 0;
}

/* ---- worker hooks ---- */

/* The numeric address of "addr:port" / "[addr]:port", for verification when
 * the kernel names no peer, and to name keys. */
static void ktlshd_nl_peer_addr(const char *peer, char *out, size_t len)
{
	const char *end;

	if (peer[0] == '[') {
		end = strchr(peer, ']');
		snprintf(out, len, "%.*s", end ? (int)(end - peer - 1) : 0, peer + 1);
	} else {
		end = strrchr(peer, ':');
		snprintf(out, len, "%.*s", end ? (int)(end - peer) : 0, peer);
	}
}

static int ktlshd_nl_prepare(struct ktlshd_job *job, SSL *ssl)
{
	struct ktlshd_nl_req *req = job->done_arg;

	if (req->cert) {
		if (SSL_use_certificate(ssl, req->cert) != 1 || SSL_use_PrivateKey(ssl, req->pkey) != 1 ||
		    SSL_check_private_key(ssl) != 1) {
			ERR_clear_error();
			log_warn("upcall %s: the certificate and key from the keyring do not match",
				 req->peer);
			return -EKEYREJECTED;
		}
	}
	if (req->acc.auth_mode == KTLSHD_HS_AUTH_PSK) {
		if (job->role == KTLSH_ROLE_CLIENT) {
			if (ktlshd_nl_psk_suites(ssl, &job->rt->caps,
						 ktlshd_nl_psk_sha384(req->psk_identity, req->psk_len))) {
				log_warn("upcall %s: no suite the kernel takes for the PSK's hash",
					 req->peer);
				return -EPROTONOSUPPORT;
			}
			SSL_set_psk_use_session_callback(ssl, ktlshd_nl_psk_use);
		} else {
			SSL_set_psk_find_session_callback(ssl, ktlshd_nl_psk_find);
		}
	}
	return 0;
}

static void ktlshd_nl_queue_done(struct ktlshd_nl_req *req)
{
	uint64_t one = 1;

	pthread_mutex_lock(&ktlshd_nl.lock);
	req->next = NULL;
	if (ktlshd_nl.done_tail)
		ktlshd_nl.done_tail->next = req;
	else
		ktlshd_nl.done_head = req;
	ktlshd_nl.done_tail = req;
	pthread_mutex_unlock(&ktlshd_nl.lock);
	(void)!write(ktlshd_nl.evfd, &one, sizeof(one));
}

/* Worker: the handshake ended (keys installed if status is 0). Note the
 * outcome and keep the socket for DONE: the worker must not close it. */
static void ktlshd_nl_done(struct ktlshd_job *job, int status)
{
	struct ktlshd_nl_req *req = job->done_arg;
	SSL *ssl = job->hs ? ktlsh_hs_ssl(job->hs) : NULL;
	char addr[INET6_ADDRSTRLEN];
	X509 *peer;
	unsigned char *der = NULL;
	int32_t serial;
	int n;

	if (!status && ssl && req->acc.auth_mode == KTLSHD_HS_AUTH_PSK) {
		/* A PSK handshake that ended without the PSK authenticated
		 * nobody: fail closed (the consumer closes the socket). */
		if (!SSL_session_reused(ssl)) {
			log_warn("upcall %s: the peer did not use the pre-shared key", req->peer);
			status = -EACCES;
		} else if (req->psk_serial > 0) {
			/* The key that authenticated the peer (NVMe looks it up). */
			req->remote[req->n_remote++] = req->psk_serial;
		}
	} else if (!status && ssl) {
		peer = SSL_get0_peer_certificate(ssl);
		if (peer && SSL_get_verify_result(ssl) == X509_V_OK) {
			/* Named by peer (not port): a reconnecting peer
			 * updates its key rather than adding one. */
			ktlshd_nl_peer_addr(req->peer, addr, sizeof(addr));
			n = i2d_X509(peer, &der);
			serial = n > 0 ? ktlshd_keyring_add_peer_cert(der, (size_t)n,
								     req->acc.peername[0] ?
								     req->acc.peername : addr) :
				 -ENOMEM;
			OPENSSL_free(der);
			if (serial > 0)
				req->remote[req->n_remote++] = serial;
			else
				log_warn("upcall %s: cannot keep the peer's certificate in a keyring: %s",
					 req->peer, strerror(-serial));
		}
	}
	req->status = ktlshd_nl_status_of(status);
	req->fd = job->fd;
	job->fd = -1;
	req->finished = true;
}

/*
 * Worker, after it let go of the handshake (its last use of the socket was
 * restoring the flags it changed): now DONE may go out and the main thread
 * may close the descriptor. Also called if the job never started (out of
 * memory): the kernel still gets an answer.
 */
static void ktlshd_nl_released(struct ktlshd_job *job)
{
	struct ktlshd_nl_req *req = job->done_arg;

	if (!req)
		return;
	if (!req->finished) {
		req->status = ENOMEM;
		req->n_remote = 0;
		req->fd = job->fd;
		job->fd = -1;
	}
	job->done_arg = NULL;
	ktlshd_nl_queue_done(req);
}

/* ---- DONE ---- */

/* Send one request and wait for the kernel's answer to it: the reply's
 * messages go to on_msg (if any), the final status is returned. */
static int ktlshd_nl_transact(struct nl_sock *sk, struct nl_msg *msg,
			      void (*on_msg)(const struct nlmsghdr *nlh, size_t len, void *arg),
			      void *arg)
{
	struct sockaddr_nl peer;
	unsigned char *buf = NULL;
	struct nlmsghdr *nlh;
	uint32_t seq;
	int n, ret, rem;

	ret = nl_send_auto(sk, msg);
	if (ret < 0) {
		log_err("upcall: netlink send: %s", nl_geterror(ret));
		return -EIO;
	}
	seq = nlmsg_hdr(msg)->nlmsg_seq;
	for (;;) {
		n = nl_recv(sk, &peer, &buf, NULL);
		if (n == -NLE_AGAIN)
			return -ETIMEDOUT;
		if (n <= 0) {
			log_err("upcall: netlink receive: %s", n ? nl_geterror(n) : "end of file");
			return -EIO;
		}
		rem = n;
		for (nlh = (struct nlmsghdr *)buf; nlmsg_ok(nlh, rem); nlh = nlmsg_next(nlh, &rem)) {
			if (nlh->nlmsg_seq != seq)
				continue;	/* left over from an earlier exchange */
			if (nlh->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = nlmsg_data(nlh);

				ret = nlh->nlmsg_len >= (uint32_t)nlmsg_size(sizeof(*e)) ? e->error : -EBADMSG;
				free(buf);
				return ret;
			}
			if (nlh->nlmsg_type == NLMSG_DONE) {
				free(buf);
				return 0;
			}
			if (on_msg)
				on_msg(nlh, (size_t)nlh->nlmsg_len, arg);
		}
		free(buf);
		buf = NULL;
	}
}

static void ktlshd_nl_send_done(struct ktlshd_nl_req *req)
{
	unsigned char buf[256];
	struct nl_msg *msg;
	int len, ret;

	len = ktlshd_nl_build_done(buf, sizeof(buf), ktlshd_nl.family, req->status, req->fd,
				   req->remote, req->n_remote, ktlshd_nl.remote_auth);
	msg = len > 0 ? nlmsg_convert((struct nlmsghdr *)buf) : NULL;
	ret = msg ? ktlshd_nl_transact(ktlshd_nl.cmd, msg, NULL, NULL) : -ENOMEM;
	nlmsg_free(msg);
	if (ret == -EBUSY)
		/* The consumer gave up first (its own timer) and cancelled. */
		log_info("upcall %s: DONE: the kernel no longer waits for this handshake",
			 req->peer);
	else if (ret)
		log_err("upcall %s: DONE failed: %s", req->peer, strerror(-ret));
	else if (req->status)
		log_info("upcall %s: reported failure to the kernel: status %u (%s)", req->peer,
			 req->status, strerror((int)req->status));
	else
		log_info("upcall %s: reported success to the kernel, %u remote peer identit%s",
			 req->peer, req->n_remote, req->n_remote == 1 ? "y" : "ies");
	if (req->fd >= 0)
		close(req->fd);
	req->fd = -1;
}

static void ktlshd_nl_drain_done(void)
{
	struct ktlshd_nl_req *req, *next;

	pthread_mutex_lock(&ktlshd_nl.lock);
	req = ktlshd_nl.done_head;
	ktlshd_nl.done_head = ktlshd_nl.done_tail = NULL;
	pthread_mutex_unlock(&ktlshd_nl.lock);
	for (; req; req = next) {
		next = req->next;
		ktlshd_nl_send_done(req);
		ktlshd_nl_req_free(req);
	}
}

/* A request refused before any handshake: DONE with the error, close. */
static void ktlshd_nl_refuse(struct ktlshd_nl_req *req, int err, const char *why)
{
	log_warn("upcall %s: %s handshake (%s) refused: %s", req->peer,
		 req->acc.message_type == KTLSHD_HS_MSG_TYPE_SERVERHELLO ? "server" : "client",
		 ktlshd_nl_auth_name(req->acc.auth_mode), why);
	atomic_fetch_add(&ktlshd_stats.outcomes[ktlshd_outcome_of(err)], 1);
	req->status = ktlshd_nl_status_of(err);
	req->n_remote = 0;
	ktlshd_nl_send_done(req);
	ktlshd_nl_req_free(req);
}

/* ---- ACCEPT ---- */

static X509 *ktlshd_nl_x509_of(const uint8_t *p, size_t len)
{
	const unsigned char *q = p;
	X509 *x = d2i_X509(NULL, &q, (long)len);
	BIO *bio;

	if (x)
		return x;
	bio = BIO_new_mem_buf(p, (int)len);
	x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	ERR_clear_error();
	return x;
}

static EVP_PKEY *ktlshd_nl_pkey_of(const uint8_t *p, size_t len)
{
	const unsigned char *q = p;
	EVP_PKEY *k = d2i_AutoPrivateKey(NULL, &q, (long)len);
	BIO *bio;

	if (k)
		return k;
	bio = BIO_new_mem_buf(p, (int)len);
	k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	ERR_clear_error();
	return k;
}

/* Certificate and key by serial (the kernel hands them in DER, as tlshd
 * expects; PEM is taken too). */
static int ktlshd_nl_load_x509(struct ktlshd_nl_req *req, char *why, size_t whylen)
{
	uint8_t *data;
	size_t len;
	int ret;

	ret = ktlshd_keyring_read(req->acc.cert_serial, &data, &len);
	if (ret) {
		snprintf(why, whylen, "cannot read certificate key %d: %s", req->acc.cert_serial,
			 strerror(-ret));
		return ret;
	}
	req->cert = ktlshd_nl_x509_of(data, len);
	ktlshd_keyring_free(data, len);
	ret = ktlshd_keyring_read(req->acc.privkey_serial, &data, &len);
	if (ret) {
		snprintf(why, whylen, "cannot read private key %d: %s", req->acc.privkey_serial,
			 strerror(-ret));
		return ret;
	}
	req->pkey = ktlshd_nl_pkey_of(data, len);
	ktlshd_keyring_free(data, len);
	if (!req->cert || !req->pkey) {
		snprintf(why, whylen, "key %d or %d is not a certificate or private key",
			 req->acc.cert_serial, req->acc.privkey_serial);
		return -EKEYREJECTED;
	}
	return 0;
}

/* PSK client: the first identity the kernel named that we can read. */
static int ktlshd_nl_load_psk(struct ktlshd_nl_req *req, char *why, size_t whylen)
{
	char type[16];
	unsigned int i;
	int ret = -ENOKEY;

	for (i = 0; i < req->acc.n_peerids; i++) {
		int32_t serial = req->acc.peerids[i];

		if (serial <= 0)
			continue;
		ret = ktlshd_keyring_describe(serial, type, sizeof(type), req->psk_identity,
					      sizeof(req->psk_identity));
		if (!ret)
			ret = ktlshd_keyring_read(serial, &req->psk, &req->psk_len);
		if (!ret) {
			req->psk_serial = serial;
			return 0;
		}
		log_info("upcall %s: PSK key %d unusable: %s", req->peer, serial, strerror(-ret));
	}
	snprintf(why, whylen, "none of the %u PSK serials the kernel named can be read: %s",
		 req->acc.n_peerids, strerror(-ret));
	return ret;
}

/* Is fd what the kernel must have handed us: a TCP socket? */
static int ktlshd_nl_check_fd(int fd, char *peer, size_t peerlen)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int v, domain = 0;
	socklen_t vl = sizeof(v);
	struct stat st;
	char addr[INET6_ADDRSTRLEN] = "?";

	snprintf(peer, peerlen, "fd %d", fd);
	if (fstat(fd, &st) || !S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &vl) ||
	    (domain != AF_INET && domain != AF_INET6))
		return -EAFNOSUPPORT;
	vl = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &vl) || v != IPPROTO_TCP)
		return -EPROTONOSUPPORT;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl))
		return -errno;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
		snprintf(peer, peerlen, "%s:%u", addr, ntohs(sin->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
		snprintf(peer, peerlen, "[%s]:%u", addr, ntohs(sin6->sin6_port));
	}
	return 0;
}

/* The current contexts, rebuilt when the configuration was reloaded. */
static struct ktlshd_nl_ctxs *ktlshd_nl_current(struct ktlshd_runtime *rt)
{
	struct ktlshd_nl_ctxs *c;
	char err[1024];
	int ret;

	if (ktlshd_nl.ctxs && ktlshd_nl.ctxs->generation == rt->generation)
		return ktlshd_nl.ctxs;
	if (ktlshd_nl.failed_generation == rt->generation)
		return ktlshd_nl.ctxs;
	ret = ktlshd_nl_ctxs_build(rt, &c, err, sizeof(err));
	if (ret) {
		/* The contexts of the last good configuration keep serving. */
		ktlshd_nl.failed_generation = rt->generation;
		log_err("[handshake]: %s%s", err, ktlshd_nl.ctxs ?
			"; the upcall keeps the previous configuration" : "");
		return ktlshd_nl.ctxs;
	}
	ktlshd_nl_ctxs_put(ktlshd_nl.ctxs);
	ktlshd_nl.ctxs = c;
	return c;
}

/* A parsed ACCEPT: build the job and hand it to a worker. */
static void ktlshd_nl_start(struct ktlshd_nl_req *req)
{
	struct ktlshd_runtime *rt = ktlshd_current_get();
	struct ktlshd_nl_ctxs *ctxs;
	struct ktlshd_job *job = NULL;
	bool server = req->acc.message_type == KTLSHD_HS_MSG_TYPE_SERVERHELLO;
	char why[256], addr[INET6_ADDRSTRLEN];
	int ret;

	ret = -ESHUTDOWN;
	snprintf(why, sizeof(why), "no configuration");
	if (!rt)
		goto refuse;
	if (!rt->cfg->handshake.enabled) {
		ret = -EOPNOTSUPP;
		snprintf(why, sizeof(why), "[handshake] is disabled in the configuration");
		goto refuse;
	}
	if (rt->caps.ulp_err && !ktlshd_handshake_only) {
		/* Fail before any TLS byte moves. */
		ret = -EOPNOTSUPP;
		snprintf(why, sizeof(why), "kernel TLS is not available here (tls ULP: %s)",
			 strerror(-rt->caps.ulp_err));
		goto refuse;
	}
	ctxs = ktlshd_nl_current(rt);
	ret = -EINVAL;
	if (!ctxs) {
		snprintf(why, sizeof(why), "the [handshake] TLS settings did not load (see above)");
		goto refuse;
	}
	req->ctxs = ktlshd_nl_ctxs_get(ctxs);
	if (req->acc.auth_mode == KTLSHD_HS_AUTH_X509 && req->acc.cert_serial > 0) {
		ret = ktlshd_nl_load_x509(req, why, sizeof(why));
		if (ret)
			goto refuse;
	} else if (req->acc.auth_mode == KTLSHD_HS_AUTH_X509 && server && !ctxs->server_cert) {
		ret = -ENOKEY;
		snprintf(why, sizeof(why),
			 "no server certificate: the kernel named none and [handshake] has no server_cert");
		goto refuse;
	}
	if (req->acc.auth_mode == KTLSHD_HS_AUTH_PSK && !server) {
		ret = ktlshd_nl_load_psk(req, why, sizeof(why));
		if (ret)
			goto refuse;
	}

	job = calloc(1, sizeof(*job));
	ret = -ENOMEM;
	if (!job) {
		snprintf(why, sizeof(why), "out of memory");
		goto refuse;
	}
	job->fd = req->fd;
	job->role = server ? KTLSH_ROLE_SERVER : KTLSH_ROLE_CLIENT;
	if (!server) {
		/* The name the server's certificate must carry: the kernel's
		 * peer name (NFS: the server named in the mount), else the
		 * address connected to. */
		if (req->acc.peername[0]) {
			snprintf(job->server_name, sizeof(job->server_name), "%s", req->acc.peername);
		} else if (req->acc.auth_mode != KTLSHD_HS_AUTH_PSK) {
			ktlshd_nl_peer_addr(req->peer, addr, sizeof(addr));
			snprintf(job->server_name, sizeof(job->server_name), "%s", addr);
		}
	}
	snprintf(job->identity, sizeof(job->identity), "upcall-%s",
		 ktlshd_nl_auth_name(req->acc.auth_mode));
	snprintf(job->peer, sizeof(job->peer), "%s", req->peer);
	job->ctx = req->acc.auth_mode == KTLSHD_HS_AUTH_PSK ?
		   (server ? ctxs->server_psk : ctxs->client_psk) :
		   server ? ctxs->server :
		   req->acc.auth_mode == KTLSHD_HS_AUTH_X509 ? ctxs->client : ctxs->client_anon;
	job->start_us = ktlshd_now_us();
	job->deadline_us = job->start_us +
		1000ull * (req->acc.timeout_ms ? req->acc.timeout_ms : ctxs->timeout_ms);
	job->prepare = ktlshd_nl_prepare;
	job->done = ktlshd_nl_done;
	job->released = ktlshd_nl_released;
	job->done_arg = req;
	job->rt = rt;
	ret = ktlshd_workers_submit(job, rt->cfg->global.max_inflight);
	if (ret) {
		job->fd = -1;
		job->rt = NULL;
		free(job);
		snprintf(why, sizeof(why), "too many handshakes in flight (max_inflight %u)",
			 rt->cfg->global.max_inflight);
		goto refuse;
	}
	log_debug("upcall %s: %s handshake (%s)%s%s, timeout %u ms", req->peer,
		  server ? "server" : "client", ktlshd_nl_auth_name(req->acc.auth_mode),
		  req->acc.peername[0] ? " for " : "", req->acc.peername,
		  req->acc.timeout_ms ? req->acc.timeout_ms : ctxs->timeout_ms);
	return;
refuse:
	ktlshd_runtime_put(rt);
	ktlshd_nl_refuse(req, ret, why);
}

struct ktlshd_nl_accept_ctx {
	struct ktlshd_nl_req *req;	/* the request the reply carried */
	int err;			/* why it cannot be served, or 0 */
	char why[160];
};

static void ktlshd_nl_on_accept(const struct nlmsghdr *nlh, size_t len, void *arg)
{
	struct ktlshd_nl_accept_ctx *a = arg;
	struct ktlshd_nl_req *req;
	struct ktlshd_nl_accept acc;
	int ret;

	ret = ktlshd_nl_parse_accept(nlh, len, ktlshd_nl.family, &acc, a->why, sizeof(a->why));
	if (ret == -ENOMSG)
		return;
	if (a->req) {
		/* One ACCEPT, one request: a second reply is not the kernel's. */
		log_err("upcall: more than one reply to one ACCEPT; ignoring fd %d", acc.sockfd);
		if (acc.sockfd >= 0)
			close(acc.sockfd);
		return;
	}
	if (!ret && acc.unknown_attrs)
		log_debug("upcall: ACCEPT carried %u attribute(s) this ktlshd does not know",
			  acc.unknown_attrs);
	req = calloc(1, sizeof(*req));
	if (!req) {
		if (acc.sockfd >= 0)
			close(acc.sockfd);
		a->err = -ENOMEM;
		return;
	}
	req->acc = acc;
	req->fd = acc.sockfd;
	snprintf(req->peer, sizeof(req->peer), "fd %d", req->fd);
	if (!ret && ktlshd_nl_check_fd(req->fd, req->peer, sizeof(req->peer))) {
		ret = -ENOTSOCK;
		snprintf(a->why, sizeof(a->why), "fd %d is not a connected TCP socket", req->fd);
	}
	a->req = req;
	a->err = ret;
}

/* One ACCEPT: 1 if a request was taken, 0 if the queue is empty, -errno. */
static int ktlshd_nl_accept_one(void)
{
	struct ktlshd_nl_accept_ctx a = { 0 };
	struct nl_msg *msg;
	int ret;

	msg = nlmsg_alloc();
	if (!msg)
		return -ENOMEM;
	if (!genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, ktlshd_nl.family, 0, 0,
			 KTLSHD_HS_CMD_ACCEPT, KTLSHD_HS_FAMILY_VERSION) ||
	    nla_put_u32(msg, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, KTLSHD_HS_HANDLER_CLASS_TLSHD)) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	ret = ktlshd_nl_transact(ktlshd_nl.cmd, msg, ktlshd_nl_on_accept, &a);
	nlmsg_free(msg);
	/* The exchange is over: now DONE may use the socket too. */
	if (a.req && a.err) {
		if (a.req->fd >= 0) {
			ktlshd_nl_refuse(a.req, a.err, a.why);	/* DONE, close */
		} else {
			log_err("upcall: malformed ACCEPT reply without a socket: %s", a.why);
			ktlshd_nl_req_free(a.req);
		}
		return 1;
	}
	if (a.req) {
		ktlshd_nl_start(a.req);
		return 1;
	}
	if (ret == -EAGAIN)
		return 0;
	return ret ? ret : a.err;
}

/* Take every queued request. A failed ACCEPT may be one request's problem
 * (the kernel could not link its keyring for us, and completed it with an
 * error): go on, within bounds. */
static void ktlshd_nl_accept_all(void)
{
	int ret, n = 0, errors = 0;

	while (n + errors < 4096) {
		ret = ktlshd_nl_accept_one();
		if (!ret)
			break;
		if (ret > 0) {
			n++;
			continue;
		}
		errors++;
		log_err("upcall: ACCEPT failed: %s%s", strerror(-ret),
			ret == -EPERM ? " (ACCEPT needs CAP_NET_ADMIN)" :
			ret == -EACCES ? " (the request's keyring could not be linked for ktlshd)" : "");
		if (ret == -EPERM || ret == -EIO || ret == -ETIMEDOUT || errors >= 16)
			break;
	}
}

/* ---- capabilities ---- */

/*
 * After ktlshd drops to [global] user, only the main thread kept its
 * capabilities (PR_SET_KEEPCAPS before the drop); now keep CAP_NET_ADMIN
 * alone, for ACCEPT and DONE, and nothing else anywhere.
 */
static void ktlshd_nl_trim_caps(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2] = { 0 };
	const uint32_t net_admin = 1u << (CAP_NET_ADMIN % 32);
	const uint32_t setpcap = 1u << (CAP_SETPCAP % 32);
	int cap, last = CAP_LAST_CAP;
	FILE *f;

	ktlshd_nl.trim_caps = false;
	if (geteuid() == 0)
		return;		/* still root: nothing was dropped */
	if (syscall(SYS_capget, &h, d) || !(d[CAP_NET_ADMIN / 32].permitted & net_admin)) {
		log_warn("upcall: running as uid %u without CAP_NET_ADMIN: ACCEPT and DONE will fail "
			 "(start ktlshd as root, or give it the capability, e.g. systemd's "
			 "AmbientCapabilities=CAP_NET_ADMIN)", (unsigned)geteuid());
		return;
	}
	if (d[0].permitted == d[0].effective && d[1].permitted == d[1].effective &&
	    d[CAP_NET_ADMIN / 32].permitted == net_admin && !d[1 - CAP_NET_ADMIN / 32].permitted) {
		/* Started that way (systemd: User= with an ambient
		 * CAP_NET_ADMIN): nothing to trim, and no capset() needed. */
		log_info("upcall: running as uid %u with CAP_NET_ADMIN only", (unsigned)geteuid());
		return;
	}
	if (d[CAP_SETPCAP / 32].permitted & setpcap) {
		/* CAP_SETPCAP, still permitted after the drop, empties the
		 * bounding set: no exec() can regain anything. */
		f = fopen("/proc/sys/kernel/cap_last_cap", "re");
		if (f) {
			if (fscanf(f, "%d", &last) != 1)
				last = CAP_LAST_CAP;
			fclose(f);
		}
		memset(d, 0, sizeof(d));
		d[0].effective = d[0].permitted = setpcap;
		d[CAP_NET_ADMIN / 32].effective |= net_admin;
		d[CAP_NET_ADMIN / 32].permitted |= net_admin;
		if (!syscall(SYS_capset, &h, d))
			for (cap = 0; cap <= last; cap++)
				if (cap != CAP_NET_ADMIN)
					(void)prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
	}
	memset(d, 0, sizeof(d));
	d[CAP_NET_ADMIN / 32].effective |= net_admin;
	d[CAP_NET_ADMIN / 32].permitted |= net_admin;
	if (syscall(SYS_capset, &h, d))
		log_warn("upcall: capset: %s", strerror(errno));
	(void)prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	log_info("upcall: running as uid %u with CAP_NET_ADMIN only, on the main thread",
		 (unsigned)geteuid());
}

/* ---- main loop handlers ---- */

/*
 * The first wakeup of the main loop, by either handler: ktlshd has dropped
 * privileges by now, so trim the capabilities before any ACCEPT (until then
 * this thread has only its permitted set), then take what was queued while
 * ktlshd was starting or down.
 */
static void ktlshd_nl_first_wakeup(void)
{
	if (!ktlshd_nl.trim_caps)
		return;
	ktlshd_nl_trim_caps();
	ktlshd_nl_accept_all();
}

static void ktlshd_nl_on_doorbell(void *arg)
{
	uint64_t v;

	(void)arg;
	(void)!read(ktlshd_nl.evfd, &v, sizeof(v));
	ktlshd_nl_first_wakeup();
	ktlshd_nl_drain_done();
}

static void ktlshd_nl_on_notify(void *arg)
{
	struct sockaddr_nl peer;
	unsigned char *buf = NULL;
	struct nlmsghdr *nlh;
	bool ready = false;
	int n, rem;

	(void)arg;
	ktlshd_nl_first_wakeup();
	for (;;) {
		n = nl_recv(ktlshd_nl.mc, &peer, &buf, NULL);
		if (n == -NLE_AGAIN || n == 0)
			break;
		if (n < 0) {
			/* An overrun (ENOBUFS) loses notifications: ask anyway. */
			ready = true;
			if (n != -NLE_NOMEM)
				log_warn("upcall: netlink receive: %s", nl_geterror(n));
			break;
		}
		rem = n;
		for (nlh = (struct nlmsghdr *)buf; nlmsg_ok(nlh, rem); nlh = nlmsg_next(nlh, &rem))
			ready |= ktlshd_nl_is_ready(nlh, (size_t)nlh->nlmsg_len, ktlshd_nl.family);
		free(buf);
		buf = NULL;
	}
	free(buf);
	if (ready)
		ktlshd_nl_accept_all();
}

static void ktlshd_nl_on_policy(const struct nlmsghdr *nlh, size_t len, void *arg)
{
	(void)ktlshd_nl_policy_feed(arg, nlh, len);
}

/*
 * Which optional attributes does DONE take? Asked of the kernel's policy
 * (CTRL_CMD_GETPOLICY), not guessed from a test message: a send that
 * "succeeds" says nothing, the verdict is in the acknowledgment.
 */
static void ktlshd_nl_probe(void)
{
	struct ktlshd_nl_policy pol;
	struct nl_msg *msg;
	int ret, has;

	ktlshd_nl_policy_init(&pol, ktlshd_nl.family, KTLSHD_HS_CMD_DONE);
	msg = nlmsg_alloc();
	if (!msg || !genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, GENL_ID_CTRL, 0, NLM_F_DUMP,
				 CTRL_CMD_GETPOLICY, 1) ||
	    nla_put_u16(msg, CTRL_ATTR_FAMILY_ID, ktlshd_nl.family) ||
	    nla_put_u32(msg, CTRL_ATTR_OP, KTLSHD_HS_CMD_DONE)) {
		nlmsg_free(msg);
		ktlshd_nl.remote_auth = true;
		return;
	}
	ret = ktlshd_nl_transact(ktlshd_nl.cmd, msg, ktlshd_nl_on_policy, &pol);
	nlmsg_free(msg);
	has = ret ? ret : ktlshd_nl_policy_has(&pol, KTLSHD_HS_A_DONE_REMOTE_AUTH);
	/* REMOTE_AUTH is in every kernel that has the family: assume it when
	 * the policy cannot be read. */
	ktlshd_nl.remote_auth = has != 0;
	log_info("upcall: kernel DONE policy: remote peer identities %s",
		 has > 0 ? "supported" : has == 0 ? "not supported" : "assumed (policy not readable)");
}

static void ktlshd_nl_exit_drain(void)
{
	/* The workers have finished by now: answer what they left, so the
	 * kernel's consumers do not wait for their own timeouts. */
	if (ktlshd_nl.cmd)
		ktlshd_nl_drain_done();
}

static void ktlshd_nl_link_keyrings(const struct ktlsh_config_handshake *hs)
{
	size_t i;
	int32_t serial;
	int ret;

	for (i = 0; i < hs->n_keyrings; i++) {
		serial = ktlshd_keyring_resolve(hs->keyrings[i]);
		ret = serial < 0 ? serial : ktlshd_keyring_link(serial);
		if (ret)
			log_warn("[handshake] keyrings: cannot link '%s': %s", hs->keyrings[i],
				 strerror(-ret));
		else
			log_info("upcall: keyring '%s' (%d) linked into the process keyring",
				 hs->keyrings[i], serial);
	}
}

int ktlshd_netlink_start(const struct ktlsh_config *cfg)
{
	struct ktlshd_runtime *rt;
	uint64_t one = 1;
	int family, grp, ret;

	if (!cfg->handshake.enabled)
		return 0;
	ktlshd_nl.mc = nl_socket_alloc();
	ktlshd_nl.cmd = nl_socket_alloc();
	ret = -ENOMEM;
	if (!ktlshd_nl.mc || !ktlshd_nl.cmd)
		goto fail;
	ret = genl_connect(ktlshd_nl.mc);
	if (!ret)
		ret = genl_connect(ktlshd_nl.cmd);
	if (ret) {
		log_err("upcall: cannot open a generic netlink socket: %s", nl_geterror(ret));
		ret = -EIO;
		goto fail;
	}
	family = genl_ctrl_resolve(ktlshd_nl.cmd, KTLSHD_HS_FAMILY_NAME);
	grp = family < 0 ? family :
	      genl_ctrl_resolve_grp(ktlshd_nl.cmd, KTLSHD_HS_FAMILY_NAME, KTLSHD_HS_MCGRP_TLSHD);
	if (family < 0 || grp < 0) {
		log_warn("upcall: the kernel has no \"%s\" generic netlink family with a \"%s\" group "
			 "(needs Linux 6.5+ with CONFIG_NET_HANDSHAKE): in-kernel TLS consumers "
			 "(NFS xprtsec=tls, NVMe/TCP TLS) are not served; everything else is",
			 KTLSHD_HS_FAMILY_NAME, KTLSHD_HS_MCGRP_TLSHD);
		ret = 0;
		goto fail;
	}
	ktlshd_nl.family = (uint16_t)family;
	nl_socket_disable_seq_check(ktlshd_nl.mc);
	nl_socket_enable_msg_peek(ktlshd_nl.mc);
	nl_socket_enable_msg_peek(ktlshd_nl.cmd);
	ret = nl_socket_add_membership(ktlshd_nl.mc, grp);
	if (!ret)
		ret = nl_socket_set_nonblocking(ktlshd_nl.mc);
	if (ret) {
		log_err("upcall: cannot join the \"%s\" group: %s", KTLSHD_HS_MCGRP_TLSHD,
			nl_geterror(ret));
		ret = -EIO;
		goto fail;
	}
	(void)nl_socket_set_buffer_size(ktlshd_nl.mc, 1 << 20, 0);
	{
		struct timeval tv = { .tv_sec = 2 };

		/* The kernel answers inside sendmsg(); this only bounds a bug. */
		(void)setsockopt(nl_socket_get_fd(ktlshd_nl.cmd), SOL_SOCKET, SO_RCVTIMEO, &tv,
				 sizeof(tv));
	}
	ktlshd_nl_probe();

	/* Build the contexts now, so a bad [handshake] shows at start. */
	rt = ktlshd_current_get();
	if (rt) {
		(void)ktlshd_nl_current(rt);
		ktlshd_runtime_put(rt);
	}
	ktlshd_nl_link_keyrings(&cfg->handshake);

	ktlshd_nl.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ret = -errno;
	if (ktlshd_nl.evfd < 0)
		goto fail;
	ret = ktlshd_loop_add(ktlshd_nl.evfd, ktlshd_nl_on_doorbell, NULL);
	if (!ret)
		ret = ktlshd_loop_add(nl_socket_get_fd(ktlshd_nl.mc), ktlshd_nl_on_notify, NULL);
	if (ret)
		goto fail;
	/* ktlshd is about to drop to [global] user: let this thread keep its
	 * capabilities through setuid(), to trim them to CAP_NET_ADMIN at the
	 * first wakeup of the loop (the doorbell rung below). */
	if (cfg->global.user && geteuid() == 0 && cfg->global.uid != 0)
		(void)prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
	ktlshd_nl.trim_caps = true;
	(void)!write(ktlshd_nl.evfd, &one, sizeof(one));
	atexit(ktlshd_nl_exit_drain);
	log_info("upcall: serving the kernel's handshake requests (family %u, group %s %d)",
		 family, KTLSHD_HS_MCGRP_TLSHD, grp);
	return 0;
fail:
	if (ret)
		log_err("upcall: not available: %s", strerror(-ret));
	nl_socket_free(ktlshd_nl.mc);
	nl_socket_free(ktlshd_nl.cmd);
	ktlshd_nl.mc = ktlshd_nl.cmd = NULL;
	if (ktlshd_nl.evfd >= 0)
		close(ktlshd_nl.evfd);
	ktlshd_nl.evfd = -1;
	/* The rest of the daemon keeps working either way. */
	return 0;
}
