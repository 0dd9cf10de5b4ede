// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The runtime: one loaded configuration and the SSL_CTXs built from it.
 * Contexts are built once per load, never per handshake — loading keys,
 * chains and CA stores is most of what a context costs. A reload builds a
 * complete new runtime and swaps it in; handshakes keep the one they began
 * with until they reply.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "ktlshd.h"

static pthread_mutex_t ktlshd_current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ktlshd_runtime *ktlshd_current;
static uint64_t ktlshd_generation;

struct ktlshd_runtime *ktlshd_runtime_get(struct ktlshd_runtime *rt)
{
	if (rt)
		atomic_fetch_add(&rt->refs, 1);
	return rt;
}

void ktlshd_runtime_put(struct ktlshd_runtime *rt)
{
	size_t i;

	if (!rt || atomic_fetch_sub(&rt->refs, 1) != 1)
		return;
	for (i = 0; i < rt->n_idents; i++)
		SSL_CTX_free(rt->idents[i].ctx);
	for (i = 0; i < rt->n_clients; i++)
		SSL_CTX_free(rt->clients[i].ctx);
	free(rt->idents);
	free(rt->clients);
	ktlsh_config_put(rt->cfg);
	free(rt);
}

struct ktlshd_runtime *ktlshd_current_get(void)
{
	struct ktlshd_runtime *rt;

	pthread_mutex_lock(&ktlshd_current_lock);
	rt = ktlshd_runtime_get(ktlshd_current);
	pthread_mutex_unlock(&ktlshd_current_lock);
	return rt;
}

void ktlshd_current_set(struct ktlshd_runtime *rt)
{
	struct ktlshd_runtime *old;

	pthread_mutex_lock(&ktlshd_current_lock);
	old = ktlshd_current;
	ktlshd_current = rt;
	pthread_mutex_unlock(&ktlshd_current_lock);
	ktlshd_runtime_put(old);
}

const struct ktlshd_ident *ktlshd_runtime_ident(const struct ktlshd_runtime *rt, const char *name)
{
	size_t i;

	for (i = 0; i < rt->n_idents; i++)
		if (!strcmp(rt->idents[i].cfg->name, name))
			return &rt->idents[i];
	return NULL;
}

const struct ktlshd_client_profile *ktlshd_runtime_client(const struct ktlshd_runtime *rt,
							   const char *name)
{
	size_t i;

	for (i = 0; i < rt->n_clients; i++)
		if (!strcmp(rt->clients[i].cfg->name, name))
			return &rt->clients[i];
	return NULL;
}

/* "file:line: what: OpenSSL's reason" into err. */
__attribute__((format(printf, 5, 6)))
static int ktlshd_rt_fail(char *err, size_t errlen, const struct ktlsh_config *cfg, unsigned line,
			  const char *fmt, ...)
{
	unsigned long e = ERR_peek_last_error();
	size_t n;
	va_list ap;

	n = (size_t)snprintf(err, errlen, "%s:%u: ", cfg->path, line);
	if (n >= errlen)
		return -EINVAL;
	va_start(ap, fmt);
	n += (size_t)vsnprintf(err + n, errlen - n, fmt, ap);
	va_end(ap);
	if (e && n < errlen)
		snprintf(err + n, errlen - n, ": %s", ERR_reason_error_string(e) ?
			 ERR_reason_error_string(e) : "OpenSSL error");
	ERR_clear_error();
	return -EINVAL;
}

/* What identities and client profiles share: versions, lists, trust. */
static int ktlshd_ctx_common(SSL_CTX *ctx, const struct ktlsh_config *cfg,
			     const struct ktlsh_config_tls *tls, unsigned line, char *err,
			     size_t errlen)
{
	X509_STORE *store;
	X509_LOOKUP *lookup;
	size_t i;

	if (!SSL_CTX_set_min_proto_version(ctx, tls->min_version))
		return ktlshd_rt_fail(err, errlen, cfg, line, "min_version");
	if (tls->ciphers.str && !SSL_CTX_set_cipher_list(ctx, tls->ciphers.str))
		return ktlshd_rt_fail(err, errlen, cfg, tls->ciphers.line,
				      "ciphers '%s' not accepted", tls->ciphers.str);
	if (tls->ciphersuites.str && !SSL_CTX_set_ciphersuites(ctx, tls->ciphersuites.str))
		return ktlshd_rt_fail(err, errlen, cfg, tls->ciphersuites.line,
				      "ciphersuites '%s' not accepted", tls->ciphersuites.str);
	if (tls->groups.str && !SSL_CTX_set1_groups_list(ctx, tls->groups.str))
		return ktlshd_rt_fail(err, errlen, cfg, tls->groups.line,
				      "groups '%s' not accepted", tls->groups.str);
	for (i = 0; i < tls->n_certs; i++) {
		const struct ktlsh_config_certkey *ck = &tls->certs[i];

		if (SSL_CTX_use_certificate_chain_file(ctx, ck->cert.str) != 1)
			return ktlshd_rt_fail(err, errlen, cfg, ck->cert.line,
					      "cannot load certificate chain %s", ck->cert.str);
		if (SSL_CTX_use_PrivateKey_file(ctx, ck->key.str, SSL_FILETYPE_PEM) != 1)
			return ktlshd_rt_fail(err, errlen, cfg, ck->key.line,
					      "cannot load private key %s", ck->key.str);
		if (SSL_CTX_check_private_key(ctx) != 1)
			return ktlshd_rt_fail(err, errlen, cfg, ck->key.line,
					      "private key %s does not match certificate %s",
					      ck->key.str, ck->cert.str);
	}
	/* Buffers only while a handshake has data in flight: a silent client
	 * then costs the daemon little memory. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* Send the chain file as it is (leaf, then intermediates), like nginx:
	 * without this OpenSSL rebuilds and verifies the chain from the trust
	 * store on every handshake of a leaf-only file. */
	if (tls->n_certs)
		SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
	if (tls->ca_file.str || tls->ca_dir.str) {
		if (SSL_CTX_load_verify_locations(ctx, tls->ca_file.str, tls->ca_dir.str) != 1)
			return ktlshd_rt_fail(err, errlen, cfg,
					      tls->ca_file.str ? tls->ca_file.line : tls->ca_dir.line,
					      "cannot load CA certificates");
	}
	if (tls->crl_file.str) {
		store = SSL_CTX_get_cert_store(ctx);
		lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
		if (!lookup || X509_load_crl_file(lookup, tls->crl_file.str, X509_FILETYPE_PEM) <= 0)
			return ktlshd_rt_fail(err, errlen, cfg, tls->crl_file.line,
					      "cannot load CRL %s", tls->crl_file.str);
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	}
	return 0;
}

/* ALPN (server): the first of our protocols, in our order, that the client
 * offered. Ours are the request's list if it gave one, else the identity's. */
static int ktlshd_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			      const unsigned char *in, unsigned inlen, void *arg)
{
	const struct ktlshd_job *job = ktlshd_job_of(ssl);
	const unsigned char *ours;
	size_t ours_len;
	unsigned char *sel = NULL;
	unsigned char sel_len = 0;

	if (!job)
		return SSL_TLSEXT_ERR_NOACK;
	ours = (const unsigned char *)job->alpn_wire;
	ours_len = job->alpn_wire_len;
	if (!ours_len) {
		const struct ktlsh_config_identity *id = arg;

		ours = id->tls.alpn_wire;
		ours_len = id->tls.alpn_wire_len;
	}
	if (!ours_len)
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_select_next_proto(&sel, &sel_len, ours, (unsigned)ours_len, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;	/* RFC 7301 3.2: no_application_protocol */
	*out = sel;
	*outlen = sel_len;
	return SSL_TLSEXT_ERR_OK;
}

/* SNI: switch to the identity that serves this name, if the caller may use it. */
static int ktlshd_servername_cb(SSL *ssl, int *alert, void *arg)
{
	struct ktlshd_job *job = ktlshd_job_of(ssl);
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	const struct ktlsh_config_identity *dflt, *pick;
	const struct ktlshd_ident *cur;
	size_t i;

	if (!job || !sni)
		return SSL_TLSEXT_ERR_OK;
	cur = ktlshd_runtime_ident(job->rt, job->identity);
	dflt = cur ? cur->cfg : NULL;
	pick = ktlsh_config_identity_for_sni(job->rt->cfg, dflt, sni);
	if (!pick || pick == dflt)
		return SSL_TLSEXT_ERR_OK;
	if (ktlsh_config_may_use(job->rt->cfg, pick, job->conn->uid, job->conn->gid)) {
		log_debug("SNI %s names identity %s, which uid %u may not use; staying with %s",
			  sni, pick->name, (unsigned)job->conn->uid, dflt ? dflt->name : "-");
		return SSL_TLSEXT_ERR_OK;
	}
	for (i = 0; i < job->rt->n_idents; i++) {
		if (job->rt->idents[i].cfg == pick) {
			SSL_set_SSL_CTX(ssl, job->rt->idents[i].ctx);
			/* SSL_set_SSL_CTX does not carry the verify mode over. */
			SSL_set_verify(ssl, SSL_CTX_get_verify_mode(job->rt->idents[i].ctx),
				       SSL_get_verify_callback(ssl));
			break;
		}
	}
	(void)alert;
	(void)arg;
	return SSL_TLSEXT_ERR_OK;
}

static int ktlshd_ctx_identity(SSL_CTX **out, const struct ktlsh_config *cfg,
			       const struct ktlsh_config_identity *id,
			       const struct ktlsh_kcaps *caps, unsigned setup_flags, char *err,
			       size_t errlen)
{
	unsigned char sid_ctx[SHA256_DIGEST_LENGTH];
	SSL_CTX *ctx;
	int mode, ret;

	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return -ENOMEM;
	/* Unless configured otherwise, choose AES-128-GCM: its SHA-256 key
	 * schedule is the cheapest (SHA-NI), and ChaCha20 where the client asks
	 * for it first (no AES hardware on its side). */
	if (!id->tls.ciphersuites.str &&
	    !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
				      "TLS_AES_256_GCM_SHA384")) {
		ret = -EINVAL;
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
	ret = ktlshd_ctx_common(ctx, cfg, &id->tls, id->line, err, errlen);
	if (ret)
		goto fail;
	switch (id->verify_client) {
	case KTLSH_CONFIG_VERIFY_REQUIRED:
		mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
		break;
	case KTLSH_CONFIG_VERIFY_OPTIONAL:
		mode = SSL_VERIFY_PEER;
		break;
	default:
		mode = SSL_VERIFY_NONE;
		break;
	}
	SSL_CTX_set_verify(ctx, mode, NULL);
	if (mode != SSL_VERIFY_NONE && id->tls.ca_file.str) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(id->tls.ca_file.str);

		if (names)
			SSL_CTX_set_client_CA_list(ctx, names);
	}
	/* Resumption must not cross identities: bind sessions to this one. */
	SHA256((const unsigned char *)id->name, strlen(id->name), sid_ctx);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, SSL_MAX_SID_CTX_LENGTH < sizeof(sid_ctx) ?
				       SSL_MAX_SID_CTX_LENGTH : sizeof(sid_ctx));
	/* Stateless tickets only: nothing about a connection stays in the
	 * daemon after handover. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (id->tickets) {
		ktlshd_tickets_attach(ctx);
		/* One TLS 1.3 ticket, not OpenSSL's default two: a client resumes
		 * once per connection, and each ticket costs an encoded session, an
		 * encryption + MAC and a write. The record count (libktlsh) and so
		 * the kernel's TX sequence number start at 1 accordingly. */
		SSL_CTX_set_num_tickets(ctx, 1);
	} else {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
	}
	SSL_CTX_set_alpn_select_cb(ctx, ktlshd_alpn_select, (void *)id);
	SSL_CTX_set_tlsext_servername_callback(ctx, ktlshd_servername_cb);
	ret = ktlsh_ssl_ctx_setup(ctx, caps, setup_flags);
	if (ret) {
		snprintf(err, errlen, "%s:%u: identity %s: no cipher the kernel can offload (%s)",
			 cfg->path, id->line, id->name, strerror(-ret));
		goto fail;
	}
	*out = ctx;
	return 0;
fail:
	SSL_CTX_free(ctx);
	return ret;
}

static int ktlshd_ctx_client(SSL_CTX **out, const struct ktlsh_config *cfg,
			     const struct ktlsh_config_client *cl, const struct ktlsh_kcaps *caps,
			     unsigned setup_flags, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	int ret;

	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return -ENOMEM;
	ret = ktlshd_ctx_common(ctx, cfg, &cl->tls, cl->line, err, errlen);
	if (ret)
		goto fail;
	if (!cl->tls.ca_file.str && !cl->tls.ca_dir.str && !SSL_CTX_set_default_verify_paths(ctx)) {
		ret = ktlshd_rt_fail(err, errlen, cfg, cl->line, "cannot load the system CA store");
		goto fail;
	}
	SSL_CTX_set_verify(ctx, cl->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (cl->tls.alpn_wire_len &&
	    SSL_CTX_set_alpn_protos(ctx, cl->tls.alpn_wire, (unsigned)cl->tls.alpn_wire_len)) {
		ret = ktlshd_rt_fail(err, errlen, cfg, cl->line, "alpn");
		goto fail;
	}
	ret = ktlsh_ssl_ctx_setup(ctx, caps, setup_flags);
	if (ret) {
		snprintf(err, errlen, "%s:%u: client %s: no cipher the kernel can offload (%s)",
			 cfg->path, cl->line, cl->name, strerror(-ret));
		goto fail;
	}
	*out = ctx;
	return 0;
fail:
	SSL_CTX_free(ctx);
	return ret;
}

/*
 * OpenSSL 3 builds its algorithm implementations lazily, a whole operation
 * class (every KDF, every key exchange, ...) on the first fetch of one of
 * them, and marks the class done even where building one failed for want
 * of memory. An out-of-memory moment in the first handshake that needs,
 * say, TLS13-KDF would leave it "unsupported" for the life of the process.
 * So fetch what handshakes use now, and run one handshake in memory per
 * identity, while memory is plentiful; later, out of memory can only fail
 * the handshakes it hits.
 */
static void ktlshd_warm_fetch(void)
{
	static const char *const kdfs[] = { "TLS13-KDF", "TLS1-PRF", "HKDF" };
	size_t i;

	for (i = 0; i < sizeof(kdfs) / sizeof(kdfs[0]); i++)
		EVP_KDF_free(EVP_KDF_fetch(NULL, kdfs[i], NULL));
	EVP_MAC_free(EVP_MAC_fetch(NULL, "HMAC", NULL));
	EVP_KEYEXCH_free(EVP_KEYEXCH_fetch(NULL, "X25519", NULL));
	EVP_KEYMGMT_free(EVP_KEYMGMT_fetch(NULL, "X25519", NULL));
	EVP_SIGNATURE_free(EVP_SIGNATURE_fetch(NULL, "ECDSA", NULL));
	EVP_ASYM_CIPHER_free(EVP_ASYM_CIPHER_fetch(NULL, "RSA", NULL));
	EVP_RAND_free(EVP_RAND_fetch(NULL, "CTR-DRBG", NULL));
	ERR_clear_error();
}

/* One handshake of sctx with a throwaway client over a BIO pair, at most
 * version. Returns 0, or -EPROTO with why filled from OpenSSL. */
static int ktlshd_warm_handshake(SSL_CTX *sctx, int version, char *why, size_t whylen)
{
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL *s = SSL_new(sctx), *c = cctx ? SSL_new(cctx) : NULL;
	BIO *bs = NULL, *bc = NULL;
	int rs = 0, rc = 0, i, ret = -ENOMEM;

	if (!s || !c || !BIO_new_bio_pair(&bs, 0, &bc, 0))
		goto out;
	SSL_set_bio(s, bs, bs);
	SSL_set_bio(c, bc, bc);
	SSL_set_min_proto_version(c, version);
	SSL_set_max_proto_version(c, version);
	SSL_set_verify(c, SSL_VERIFY_NONE, NULL);
	/* Not the identity's client policy (that needs a client certificate),
	 * nor its tickets (the keys may not exist yet: --check-config). */
	SSL_set_verify(s, SSL_VERIFY_NONE, NULL);
	SSL_set_options(s, SSL_OP_NO_TICKET);
	SSL_set_num_tickets(s, 0);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	for (i = 0; i < 16 && (rs != 1 || rc != 1); i++) {
		if (rc != 1)
			rc = SSL_do_handshake(c);
		if (rs != 1)
			rs = SSL_do_handshake(s);
		if ((rc != 1 && SSL_get_error(c, rc) != SSL_ERROR_WANT_READ) ||
		    (rs != 1 && SSL_get_error(s, rs) != SSL_ERROR_WANT_READ))
			break;
	}
	ret = rs == 1 && rc == 1 ? 0 : -EPROTO;
out:
	if (ret) {
		unsigned long e = ERR_peek_last_error();

		snprintf(why, whylen, "%s", e && ERR_reason_error_string(e) ?
			 ERR_reason_error_string(e) : strerror(-ret));
	}
	ERR_clear_error();
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(cctx);
	return ret;
}

static void ktlshd_warm(const struct ktlshd_runtime *rt)
{
	static const int versions[] = { TLS1_3_VERSION, TLS1_2_VERSION };
	char why[128];
	size_t i, v;
	int min;

	ktlshd_warm_fetch();
	for (i = 0; i < rt->n_idents; i++) {
		min = SSL_CTX_get_min_proto_version(rt->idents[i].ctx);
		for (v = 0; v < 2; v++) {
			if (min && versions[v] < min)
				continue;
			if (ktlshd_warm_handshake(rt->idents[i].ctx, versions[v], why, sizeof(why)))
				log_warn("identity %s: a %s handshake in memory at load failed: %s",
					 rt->idents[i].cfg->name,
					 versions[v] == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2", why);
		}
	}
}

int ktlshd_runtime_build(struct ktlsh_config *cfg, const struct ktlsh_kcaps *caps,
			 struct ktlshd_runtime **out, char *err, size_t errlen)
{
	/* Without kernel TLS (--handshake-only) nothing can be narrowed to it. */
	unsigned setup_flags = caps->ulp_err ? 0 : KTLSH_CTX_REQUIRE_OFFLOAD;
	struct ktlshd_runtime *rt;
	size_t i;
	int ret = -ENOMEM;

	*out = NULL;
	err[0] = '\0';
	rt = calloc(1, sizeof(*rt));
	if (!rt)
		return -ENOMEM;
	atomic_init(&rt->refs, 1);
	rt->cfg = ktlsh_config_get(cfg);
	rt->caps = *caps;
	rt->idents = calloc(cfg->n_identities + 1, sizeof(*rt->idents));
	rt->clients = calloc(cfg->n_clients + 1, sizeof(*rt->clients));
	if (!rt->idents || !rt->clients)
		goto fail;
	for (i = 0; i < cfg->n_identities; i++) {
		rt->idents[i].cfg = cfg->identities[i];
		ret = ktlshd_ctx_identity(&rt->idents[i].ctx, cfg, cfg->identities[i], caps,
					  setup_flags, err, errlen);
		if (ret)
			goto fail;
		rt->n_idents++;
	}
	for (i = 0; i < cfg->n_clients; i++) {
		rt->clients[i].cfg = cfg->clients[i];
		ret = ktlshd_ctx_client(&rt->clients[i].ctx, cfg, cfg->clients[i], caps, setup_flags,
					err, errlen);
		if (ret)
			goto fail;
		rt->n_clients++;
	}
	ktlshd_warm(rt);
	rt->generation = ++ktlshd_generation;
	*out = rt;
	return 0;
fail:
	if (!err[0])
		snprintf(err, errlen, "%s: %s", cfg->path, strerror(-ret));
	ktlshd_runtime_put(rt);
	return ret;
}
