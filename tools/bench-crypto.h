/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ktls-bench: the crypto bound of a handshake, and the keys and contexts the
 * in-process peers use. Included once, by tools/ktls-bench.c.
 *
 * The bound is the public-key work a server cannot avoid in one handshake,
 * timed the way `openssl speed` times it (EVP, contexts set up once, the
 * operation in a loop), as CPU time of the calling thread:
 *
 *   full handshake, ECDHE:  ephemeral keygen + shared-secret derive + 1 signature
 *   TLS 1.3 resumption:     keygen + derive (psk_dhe_ke; no signature)
 *   TLS 1.2 resumption:     nothing asymmetric (the bound is 0, no ratio)
 *
 * Hashing, HKDF, the record layer and the ticket are left out: they are the
 * overhead the ratio server-CPU / bound exposes, together with everything
 * else OpenSSL and ktlsh do around the crypto.
 */
#ifndef KTLS_BENCH_CRYPTO_H
#define KTLS_BENCH_CRYPTO_H

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* What a handshake negotiated, as seen by the client. */
struct kb_suite {
	bool valid;
	int version;			/* TLS1_2_VERSION / TLS1_3_VERSION */
	bool resumed;
	char group[32];			/* OpenSSL group name: "X25519", "P-256" ... */
	int key_type;			/* EVP_PKEY_EC, EVP_PKEY_RSA, EVP_PKEY_ED25519 ... */
	int key_bits;
	char key_group[32];		/* EC: "P-256" */
	int sig_nid;			/* signature type: EVP_PKEY_RSA_PSS, EVP_PKEY_RSA, EVP_PKEY_EC */
	int sig_md;			/* NID of its hash, NID_undef for none (Ed25519) */
	char sig_name[40];		/* "ecdsa-p256-sha256", "rsa-pss-2048-sha256" */
	char cipher[64];		/* IANA-style OpenSSL name */
};

struct kb_bound {
	double keygen_us, derive_us, sign_us;
	double total_us;		/* what this handshake kind needs */
	bool valid;
};

static double kb_bound_time_s = 0.2;	/* per operation, --bound-time */

/* NID of an OpenSSL group name, for the ones TLS uses. */
static const char *kb_group_canon(const char *name)
{
	static const struct {
		const char *alias, *name;
	} g[] = {
		{ "x25519", "X25519" }, { "x448", "X448" },
		{ "p256", "P-256" }, { "p-256", "P-256" }, { "prime256v1", "P-256" },
		{ "secp256r1", "P-256" }, { "p384", "P-384" }, { "p-384", "P-384" },
		{ "secp384r1", "P-384" }, { "p521", "P-521" }, { "p-521", "P-521" },
		{ "secp521r1", "P-521" },
	};
	size_t i;

	for (i = 0; i < sizeof(g) / sizeof(g[0]); i++)
		if (!strcasecmp(name, g[i].alias))
			return g[i].name;
	return NULL;
}

/* Fill s from a client SSL after SSL_do_handshake() returned 1. */
static void kb_suite_from_ssl(SSL *ssl, struct kb_suite *s)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	EVP_PKEY *pk = peer ? X509_get0_pubkey(peer) : NULL;
	int nid = SSL_get_negotiated_group(ssl);
	const char *gname;
	size_t glen = 0;
	int sig = NID_undef, md = NID_undef;

	memset(s, 0, sizeof(*s));
	s->version = SSL_version(ssl);
	snprintf(s->cipher, sizeof(s->cipher), "%s", SSL_get_current_cipher(ssl) ?
		 SSL_CIPHER_standard_name(SSL_get_current_cipher(ssl)) : "-");
	s->resumed = SSL_session_reused(ssl);
	gname = nid > 0 ? OBJ_nid2sn(nid) : NULL;
	if (nid == NID_X9_62_prime256v1)
		gname = "P-256";
	else if (nid == NID_secp384r1)
		gname = "P-384";
	else if (nid == NID_secp521r1)
		gname = "P-521";
	snprintf(s->group, sizeof(s->group), "%s", gname ? gname : "-");
	if (pk) {
		s->key_type = EVP_PKEY_get_base_id(pk);
		s->key_bits = EVP_PKEY_get_bits(pk);
		if (s->key_type == EVP_PKEY_EC)
			EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, s->key_group,
						       sizeof(s->key_group), &glen);
		if (!strcmp(s->key_group, "prime256v1"))
			snprintf(s->key_group, sizeof(s->key_group), "P-256");
		else if (!strcmp(s->key_group, "secp384r1"))
			snprintf(s->key_group, sizeof(s->key_group), "P-384");
	}
	if (!s->resumed) {
		if (SSL_get_peer_signature_type_nid(ssl, &sig) != 1)
			sig = NID_undef;
		if (SSL_get_peer_signature_nid(ssl, &md) != 1)
			md = NID_undef;
	}
	s->sig_nid = sig;
	s->sig_md = md;
	if (s->key_type == EVP_PKEY_EC)
		snprintf(s->sig_name, sizeof(s->sig_name), "ecdsa-%s", s->key_group);
	else if (s->key_type == EVP_PKEY_RSA)
		snprintf(s->sig_name, sizeof(s->sig_name), "rsa%s-%d",
			 sig == EVP_PKEY_RSA_PSS ? "-pss" : "", s->key_bits);
	else if (pk)
		snprintf(s->sig_name, sizeof(s->sig_name), "%s", OBJ_nid2sn(s->key_type));
	else
		snprintf(s->sig_name, sizeof(s->sig_name), "-");
	for (char *p = s->sig_name; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	s->valid = true;
}

/* ---- keys ---- */

/* Generate a key: "EC:P-256", "RSA:2048", "ED25519", or a group name for
 * key exchange ("X25519", "P-256"). */
static EVP_PKEY *kb_key_gen(int type, int bits, const char *group)
{
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *k = NULL;

	if (type == EVP_PKEY_EC || (group && !strncmp(group, "P-", 2))) {
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
		if (!ctx || EVP_PKEY_keygen_init(ctx) <= 0 ||
		    EVP_PKEY_CTX_set_group_name(ctx, group) <= 0)
			goto out;
	} else if (type == EVP_PKEY_RSA) {
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
		if (!ctx || EVP_PKEY_keygen_init(ctx) <= 0 ||
		    EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, bits) <= 0)
			goto out;
	} else {
		ctx = EVP_PKEY_CTX_new_from_name(NULL, group ? group : OBJ_nid2sn(type), NULL);
		if (!ctx || EVP_PKEY_keygen_init(ctx) <= 0)
			goto out;
	}
	if (EVP_PKEY_keygen(ctx, &k) <= 0)
		k = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	return k;
}

/* A self-signed certificate for key (CN=localhost, SAN localhost and
 * 127.0.0.1), for the in-process peers when no --cert is given. */
static X509 *kb_cert_self(EVP_PKEY *key)
{
	X509 *x = X509_new();
	X509_NAME *n;
	X509_EXTENSION *ext;
	X509V3_CTX v3;

	if (!x)
		return NULL;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(kb_now_ns() & 0x7fffffff));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 30L * 24 * 3600);
	X509_set_pubkey(x, key);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
				   -1, 0);
	X509_set_issuer_name(x, n);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
	if (ext) {
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
	}
	if (!X509_sign(x, key, EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256())) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* ---- the bound ---- */

typedef int (*kb_op_fn)(void *arg);

/* CPU µs per call of fn: at least kb_bound_time_s of thread CPU and 8 calls. */
static double kb_time_op(kb_op_fn fn, void *arg)
{
	uint64_t t0, t, budget = (uint64_t)(kb_bound_time_s * 1e9);
	long n = 0;

	if (fn(arg))		/* warm: first call may load providers */
		return NAN;
	t0 = kb_clock_ns(CLOCK_THREAD_CPUTIME_ID);
	do {
		for (int i = 0; i < 8; i++, n++)
			if (fn(arg))
				return NAN;
		t = kb_clock_ns(CLOCK_THREAD_CPUTIME_ID);
	} while (t - t0 < budget);
	return (double)(t - t0) / 1e3 / (double)n;
}

struct kb_op_keygen {
	EVP_PKEY_CTX *ctx;
};

static int kb_op_keygen(void *arg)
{
	struct kb_op_keygen *o = arg;
	EVP_PKEY *k = NULL;

	if (EVP_PKEY_keygen(o->ctx, &k) <= 0)
		return -1;
	EVP_PKEY_free(k);
	return 0;
}

struct kb_op_derive {
	EVP_PKEY_CTX *ctx;
	unsigned char out[256];
};

static int kb_op_derive(void *arg)
{
	struct kb_op_derive *o = arg;
	size_t len = sizeof(o->out);

	return EVP_PKEY_derive(o->ctx, o->out, &len) > 0 ? 0 : -1;
}

struct kb_op_sign {
	EVP_PKEY_CTX *ctx;	/* prehashed (ECDSA, RSA) */
	EVP_PKEY *key;		/* Ed25519: one-shot */
	unsigned char dgst[64];
	size_t dlen;
	unsigned char sig[1024];
};

static int kb_op_sign(void *arg)
{
	struct kb_op_sign *o = arg;
	size_t len = sizeof(o->sig);
	EVP_MD_CTX *md;
	int ok;

	if (o->ctx)
		return EVP_PKEY_sign(o->ctx, o->sig, &len, o->dgst, o->dlen) > 0 ? 0 : -1;
	md = EVP_MD_CTX_new();
	ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, o->key) > 0 &&
	     EVP_DigestSign(md, o->sig, &len, o->dgst, 32) > 0;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

/* Key-exchange cost for group: keygen and derive, µs. */
static int kb_bound_kex(const char *group, double *keygen_us, double *derive_us)
{
	struct kb_op_keygen kg = { 0 };
	struct kb_op_derive dv = { 0 };
	EVP_PKEY *a = NULL, *b = NULL;
	int ret = -1;

	a = kb_key_gen(0, 0, group);
	b = kb_key_gen(0, 0, group);
	if (!a || !b)
		goto out;
	kg.ctx = EVP_PKEY_CTX_new_from_pkey(NULL, a, NULL);
	if (!kg.ctx || EVP_PKEY_keygen_init(kg.ctx) <= 0)
		goto out;
	dv.ctx = EVP_PKEY_CTX_new_from_pkey(NULL, a, NULL);
	if (!dv.ctx || EVP_PKEY_derive_init(dv.ctx) <= 0 || EVP_PKEY_derive_set_peer(dv.ctx, b) <= 0)
		goto out;
	*keygen_us = kb_time_op(kb_op_keygen, &kg);
	*derive_us = kb_time_op(kb_op_derive, &dv);
	ret = isnan(*keygen_us) || isnan(*derive_us) ? -1 : 0;
out:
	EVP_PKEY_CTX_free(kg.ctx);
	EVP_PKEY_CTX_free(dv.ctx);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	ERR_clear_error();
	return ret;
}

/* Signature cost with key (the server's, or one like it), µs. */
static double kb_bound_sign(EVP_PKEY *key, int sig_nid, int md_nid)
{
	struct kb_op_sign o = { 0 };
	const EVP_MD *md = md_nid != NID_undef ? EVP_get_digestbynid(md_nid) : EVP_sha256();
	double us = NAN;

	memset(o.dgst, 0x5a, sizeof(o.dgst));
	if (EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ||
	    EVP_PKEY_get_base_id(key) == EVP_PKEY_ED448) {
		o.key = key;
		us = kb_time_op(kb_op_sign, &o);
		goto out;
	}
	if (!md)
		goto out;
	o.dlen = (size_t)EVP_MD_get_size(md);
	o.ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	if (!o.ctx || EVP_PKEY_sign_init(o.ctx) <= 0 || EVP_PKEY_CTX_set_signature_md(o.ctx, md) <= 0)
		goto out;
	if (EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA && sig_nid == EVP_PKEY_RSA_PSS &&
	    (EVP_PKEY_CTX_set_rsa_padding(o.ctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
	     EVP_PKEY_CTX_set_rsa_pss_saltlen(o.ctx, RSA_PSS_SALTLEN_DIGEST) <= 0))
		goto out;
	us = kb_time_op(kb_op_sign, &o);
out:
	EVP_PKEY_CTX_free(o.ctx);
	ERR_clear_error();
	return us;
}

/* Keys "like the server's", made once per run (RSA keygen is slow). */
static struct {
	int type, bits;
	char group[32];
	EVP_PKEY *key;
} kb_sign_keys[8];

static EVP_PKEY *kb_sign_key_like(const struct kb_suite *s)
{
	size_t i;

	for (i = 0; i < sizeof(kb_sign_keys) / sizeof(kb_sign_keys[0]); i++) {
		if (!kb_sign_keys[i].key)
			break;
		if (kb_sign_keys[i].type == s->key_type && kb_sign_keys[i].bits == s->key_bits &&
		    !strcmp(kb_sign_keys[i].group, s->key_group))
			return kb_sign_keys[i].key;
	}
	if (i == sizeof(kb_sign_keys) / sizeof(kb_sign_keys[0]))
		return NULL;
	kb_sign_keys[i].key = kb_key_gen(s->key_type, s->key_bits,
					 s->key_group[0] ? s->key_group : NULL);
	kb_sign_keys[i].type = s->key_type;
	kb_sign_keys[i].bits = s->key_bits;
	snprintf(kb_sign_keys[i].group, sizeof(kb_sign_keys[i].group), "%s", s->key_group);
	return kb_sign_keys[i].key;
}

/* Measured once per repeat and suite, shared by the rows of that repeat. */
static struct {
	int rep;
	char group[32], sig[40];
	int sig_nid, sig_md;
	struct kb_bound b;
} kb_bound_cache[32];
static int kb_bound_ncache;

/* The bound of the handshake kind s describes (full or resumed). */
static struct kb_bound kb_bound_for(const struct kb_suite *s, int rep)
{
	struct kb_bound b = { .keygen_us = NAN, .derive_us = NAN, .sign_us = NAN,
			      .total_us = NAN };
	EVP_PKEY *key;
	int i;

	if (!s->valid)
		return b;
	for (i = 0; i < kb_bound_ncache; i++) {
		if (kb_bound_cache[i].rep == rep && !strcmp(kb_bound_cache[i].group, s->group) &&
		    !strcmp(kb_bound_cache[i].sig, s->sig_name) &&
		    kb_bound_cache[i].sig_nid == s->sig_nid && kb_bound_cache[i].sig_md == s->sig_md) {
			b = kb_bound_cache[i].b;
			goto total;
		}
	}
	if (kb_group_canon(s->group) && kb_bound_kex(s->group, &b.keygen_us, &b.derive_us))
		b.keygen_us = b.derive_us = NAN;
	key = s->key_type ? kb_sign_key_like(s) : NULL;
	if (key)
		b.sign_us = kb_bound_sign(key, s->sig_nid, s->sig_md);
	if (kb_bound_ncache < (int)(sizeof(kb_bound_cache) / sizeof(kb_bound_cache[0]))) {
		i = kb_bound_ncache++;
		kb_bound_cache[i].rep = rep;
		snprintf(kb_bound_cache[i].group, sizeof(kb_bound_cache[i].group), "%s", s->group);
		snprintf(kb_bound_cache[i].sig, sizeof(kb_bound_cache[i].sig), "%s", s->sig_name);
		kb_bound_cache[i].sig_nid = s->sig_nid;
		kb_bound_cache[i].sig_md = s->sig_md;
		kb_bound_cache[i].b = b;
	}
total:
	b.valid = true;
	if (s->resumed && s->version == TLS1_2_VERSION)
		b.total_us = 0;			/* ticket resumption: no asymmetric crypto */
	else if (s->resumed)
		b.total_us = b.keygen_us + b.derive_us;	/* psk_dhe_ke */
	else
		b.total_us = b.keygen_us + b.derive_us + b.sign_us;
	return b;
}

#endif /* KTLS_BENCH_CRYPTO_H */
