// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Traffic keys for the kernel, from OpenSSL's secrets, with OpenSSL's KDFs:
 * TLS 1.3 HKDF-Expand-Label through EVP_KDF "TLS13-KDF" (RFC 8446 7.3), the
 * TLS 1.2 key block through EVP_KDF "TLS1-PRF" (RFC 5246 6.3). Nothing here
 * implements a hash or a MAC.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <endian.h>

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "internal.h"

static const struct ktlsh_cipher_desc ktlsh_ciphers[KTLSH_CIPHER_COUNT] = {
	[KTLSH_CIPHER_AES_GCM_128] = {
		KTLSH_CIPHER_AES_GCM_128, TLS_CIPHER_AES_GCM_128,
		TLS_CIPHER_AES_GCM_128_KEY_SIZE, TLS_CIPHER_AES_GCM_128_SALT_SIZE,
		TLS_CIPHER_AES_GCM_128_IV_SIZE,
		sizeof(struct tls12_crypto_info_aes_gcm_128), "AES-GCM-128",
	},
	[KTLSH_CIPHER_AES_GCM_256] = {
		KTLSH_CIPHER_AES_GCM_256, TLS_CIPHER_AES_GCM_256,
		TLS_CIPHER_AES_GCM_256_KEY_SIZE, TLS_CIPHER_AES_GCM_256_SALT_SIZE,
		TLS_CIPHER_AES_GCM_256_IV_SIZE,
		sizeof(struct tls12_crypto_info_aes_gcm_256), "AES-GCM-256",
	},
	[KTLSH_CIPHER_CHACHA20_POLY1305] = {
		KTLSH_CIPHER_CHACHA20_POLY1305, TLS_CIPHER_CHACHA20_POLY1305,
		TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE, TLS_CIPHER_CHACHA20_POLY1305_SALT_SIZE,
		TLS_CIPHER_CHACHA20_POLY1305_IV_SIZE,
		sizeof(struct tls12_crypto_info_chacha20_poly1305), "CHACHA20-POLY1305",
	},
	[KTLSH_CIPHER_AES_CCM_128] = {
		KTLSH_CIPHER_AES_CCM_128, TLS_CIPHER_AES_CCM_128,
		TLS_CIPHER_AES_CCM_128_KEY_SIZE, TLS_CIPHER_AES_CCM_128_SALT_SIZE,
		TLS_CIPHER_AES_CCM_128_IV_SIZE,
		sizeof(struct tls12_crypto_info_aes_ccm_128), "AES-CCM-128",
	},
};

const struct ktlsh_cipher_desc *ktlsh_cipher_desc(enum ktlsh_cipher c)
{
	if (c <= KTLSH_CIPHER_NONE || c >= KTLSH_CIPHER_COUNT)
		return NULL;
	return &ktlsh_ciphers[c];
}

const char *ktlsh_cipher_name(enum ktlsh_cipher c)
{
	const struct ktlsh_cipher_desc *d = ktlsh_cipher_desc(c);

	return d ? d->name : "none";
}

/* Fetching a KDF walks the provider tables; do it once per process. */
static EVP_KDF *ktlsh_kdf_tls13, *ktlsh_kdf_tls1_prf;
static pthread_once_t ktlsh_kdf_once = PTHREAD_ONCE_INIT;

static void ktlsh_kdf_fetch(void)
{
	ktlsh_kdf_tls13 = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_3_KDF, NULL);
	ktlsh_kdf_tls1_prf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_PRF, NULL);
}

static int ktlsh_kdf_derive(EVP_KDF *kdf, const OSSL_PARAM *params, uint8_t *out, size_t out_len)
{
	EVP_KDF_CTX *kctx;
	int ret = -ENOPROTOOPT;

	if (!kdf)
		return ret;
	kctx = EVP_KDF_CTX_new(kdf);
	if (!kctx)
		return -ENOMEM;
	ret = EVP_KDF_derive(kctx, out, out_len, params) == 1 ? 0 : -EINVAL;
	EVP_KDF_CTX_free(kctx);
	return ret;
}

int ktlsh_keys_expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len,
			    const char *label, uint8_t *out, size_t out_len)
{
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	static const char prefix[] = "tls13 ";
	OSSL_PARAM params[6];

	pthread_once(&ktlsh_kdf_once, ktlsh_kdf_fetch);
	params[0] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						     (char *)EVP_MD_get0_name(md), 0);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret,
						      secret_len);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, (void *)prefix,
						      sizeof(prefix) - 1);
	params[4] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)label,
						      strlen(label));
	params[5] = OSSL_PARAM_construct_end();
	return ktlsh_kdf_derive(ktlsh_kdf_tls13, params, out, out_len);
}

int ktlsh_keys_tls12_prf(const EVP_MD *md, const uint8_t *secret, size_t secret_len,
			 const char *label, const uint8_t *seed1, size_t seed1_len,
			 const uint8_t *seed2, size_t seed2_len, uint8_t *out, size_t out_len)
{
	OSSL_PARAM params[6];
	size_t n = 0;

	pthread_once(&ktlsh_kdf_once, ktlsh_kdf_fetch);
	params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						       (char *)EVP_MD_get0_name(md), 0);
	params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, (void *)secret,
							secret_len);
	/* TLS1-PRF concatenates repeated seed parameters: label || seed1 || seed2. */
	params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)label,
							strlen(label));
	if (seed1_len)
		params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED,
								(void *)seed1, seed1_len);
	if (seed2_len)
		params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED,
								(void *)seed2, seed2_len);
	params[n] = OSSL_PARAM_construct_end();
	return ktlsh_kdf_derive(ktlsh_kdf_tls1_prf, params, out, out_len);
}

/* Fill one crypto_info. nonce is the full implicit nonce material from the
 * key schedule: salt_len + iv_len bytes for TLS 1.3, salt_len for TLS 1.2. */
static void ktlsh_keys_fill(const struct ktlsh_cipher_desc *d, int version, const uint8_t *key,
			    const uint8_t *nonce, uint64_t seq, struct ktlsh_crypto_info *ci)
{
	uint64_t seq_be = htobe64(seq);
	unsigned char *iv, *k, *salt, *rec_seq;

	memset(ci, 0, sizeof(*ci));
	ci->u.info.version = version;
	ci->u.info.cipher_type = d->kernel_type;
	ci->len = d->info_len;

	/* All four layouts are info, iv, key, salt, rec_seq; only the sizes differ. */
	iv = (unsigned char *)&ci->u + sizeof(struct tls_crypto_info);
	k = iv + d->iv_len;
	salt = k + d->key_len;
	rec_seq = salt + d->salt_len;

	memcpy(k, key, d->key_len);
	memcpy(rec_seq, &seq_be, sizeof(seq_be));
	if (version == TLS_1_3_VERSION) {
		/* RFC 8446 5.3: the 12-byte IV is salt || iv; the kernel XORs in the seq. */
		memcpy(salt, nonce, d->salt_len);
		memcpy(iv, nonce + d->salt_len, d->iv_len);
	} else if (d->salt_len) {
		/* RFC 5288: 4-byte implicit salt; the 8-byte explicit nonce goes on
		 * the wire and only has to be unique, so start it at the seq. */
		memcpy(salt, nonce, d->salt_len);
		memcpy(iv, &seq_be, sizeof(seq_be));
	} else {
		/* RFC 7905: ChaCha20-Poly1305 uses a 12-byte fixed IV, no explicit part. */
		memcpy(iv, nonce, d->iv_len);
	}
}

int ktlsh_keys_tls13(enum ktlsh_cipher c, const EVP_MD *md, const uint8_t *secret,
		     size_t secret_len, uint64_t seq, struct ktlsh_crypto_info *ci)
{
	const struct ktlsh_cipher_desc *d = ktlsh_cipher_desc(c);
	uint8_t key[32], nonce[12];
	int ret = -EINVAL;

	if (!d || d->salt_len + d->iv_len != sizeof(nonce))
		goto out;
	ret = ktlsh_keys_expand_label(md, secret, secret_len, "key", key, d->key_len);
	if (ret)
		goto out;
	ret = ktlsh_keys_expand_label(md, secret, secret_len, "iv", nonce, sizeof(nonce));
	if (ret)
		goto out;
	ktlsh_keys_fill(d, TLS_1_3_VERSION, key, nonce, seq, ci);
out:
	explicit_bzero(key, sizeof(key));
	explicit_bzero(nonce, sizeof(nonce));
	return ret;
}

int ktlsh_keys_tls12(enum ktlsh_cipher c, const EVP_MD *md, const uint8_t *master,
		     size_t master_len, const uint8_t client_random[KTLSH_RANDOM_LEN],
		     const uint8_t server_random[KTLSH_RANDOM_LEN], enum ktlsh_role role,
		     uint64_t tx_seq, uint64_t rx_seq, struct ktlsh_crypto_info *tx,
		     struct ktlsh_crypto_info *rx)
{
	const struct ktlsh_cipher_desc *d = ktlsh_cipher_desc(c);
	/* AEAD suites have no MAC keys: client_key, server_key, client_iv, server_iv. */
	uint8_t block[2 * 32 + 2 * 12];
	size_t fixed_iv, need;
	const uint8_t *ckey, *skey, *civ, *siv;
	int ret = -EINVAL;

	if (!d)
		goto out;
	fixed_iv = d->salt_len ? d->salt_len : d->iv_len;
	need = 2 * (size_t)d->key_len + 2 * fixed_iv;
	/* RFC 5246 6.3: PRF(master, "key expansion", server_random + client_random) */
	ret = ktlsh_keys_tls12_prf(md, master, master_len, "key expansion", server_random,
				   KTLSH_RANDOM_LEN, client_random, KTLSH_RANDOM_LEN, block, need);
	if (ret)
		goto out;
	ckey = block;
	skey = ckey + d->key_len;
	civ = skey + d->key_len;
	siv = civ + fixed_iv;
	if (role == KTLSH_ROLE_CLIENT) {
		ktlsh_keys_fill(d, TLS_1_2_VERSION, ckey, civ, tx_seq, tx);
		ktlsh_keys_fill(d, TLS_1_2_VERSION, skey, siv, rx_seq, rx);
	} else {
		ktlsh_keys_fill(d, TLS_1_2_VERSION, skey, siv, tx_seq, tx);
		ktlsh_keys_fill(d, TLS_1_2_VERSION, ckey, civ, rx_seq, rx);
	}
out:
	explicit_bzero(block, sizeof(block));
	return ret;
}
