// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Key schedule against published vectors: RFC 8448 section 3 (TLS 1.3,
 * AES-128-GCM-SHA256) and the TLS 1.2 P_SHA256 PRF vector from the TLS WG
 * list; and the kernel crypto_info layouts built from them.
 */
#include <stdio.h>
#include <string.h>
#include <CUnit/Basic.h>
#include <openssl/evp.h>

#include "internal.h"
#include "unit.h"

/* RFC 8448 3: {server} / {client} derive write traffic keys for application data */
static const char rfc8448_s_ap[] =
	"a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643";
static const char rfc8448_s_ap_key[] = "9f02283b6c9c07efc26bb9f2ac92e356";
static const char rfc8448_s_ap_iv[] = "cf782b88dd83549aadf1e984";
static const char rfc8448_c_ap[] =
	"9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5";
static const char rfc8448_c_ap_key[] = "17422dda596ed5d9acd890e3c63f5051";
static const char rfc8448_c_ap_iv[] = "5b78923dee08579033e523d9";
/* RFC 8448 3: server handshake traffic secret -> key, iv */
static const char rfc8448_s_hs[] =
	"b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38";
static const char rfc8448_s_hs_key[] = "3fce516009c21727d0f2e4e86ee403bc";
static const char rfc8448_s_hs_iv[] = "5d313eb2671276ee13000b30";

static void test_expand_label_rfc8448(void)
{
	uint8_t secret[32], want[16], got[16], iv_want[12], iv_got[12];
	struct {
		const char *secret, *key, *iv;
	} v[] = {
		{ rfc8448_s_ap, rfc8448_s_ap_key, rfc8448_s_ap_iv },
		{ rfc8448_c_ap, rfc8448_c_ap_key, rfc8448_c_ap_iv },
		{ rfc8448_s_hs, rfc8448_s_hs_key, rfc8448_s_hs_iv },
	};
	size_t i;

	for (i = 0; i < KTLSH_ARRAY_SIZE(v); i++) {
		CU_ASSERT_EQUAL_FATAL(t_unhex(v[i].secret, secret, sizeof(secret)), 32);
		CU_ASSERT_EQUAL_FATAL(t_unhex(v[i].key, want, sizeof(want)), 16);
		CU_ASSERT_EQUAL_FATAL(t_unhex(v[i].iv, iv_want, sizeof(iv_want)), 12);
		CU_ASSERT_EQUAL(ktlsh_keys_expand_label(EVP_sha256(), secret, 32, "key", got, 16), 0);
		CU_ASSERT_EQUAL(memcmp(got, want, 16), 0);
		CU_ASSERT_EQUAL(ktlsh_keys_expand_label(EVP_sha256(), secret, 32, "iv", iv_got, 12), 0);
		CU_ASSERT_EQUAL(memcmp(iv_got, iv_want, 12), 0);
	}
}

static void test_tls13_crypto_info_rfc8448(void)
{
	struct ktlsh_crypto_info ci;
	uint8_t secret[32], key[16], iv[12];
	const uint8_t seq_be[8] = { 0, 0, 0, 0, 0, 0, 0, 2 };

	t_unhex(rfc8448_s_ap, secret, sizeof(secret));
	t_unhex(rfc8448_s_ap_key, key, sizeof(key));
	t_unhex(rfc8448_s_ap_iv, iv, sizeof(iv));
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls13(KTLSH_CIPHER_AES_GCM_128, EVP_sha256(), secret, 32,
					       2, &ci), 0);
	CU_ASSERT_EQUAL(ci.len, sizeof(struct tls12_crypto_info_aes_gcm_128));
	CU_ASSERT_EQUAL(ci.u.info.version, TLS_1_3_VERSION);
	CU_ASSERT_EQUAL(ci.u.info.cipher_type, TLS_CIPHER_AES_GCM_128);
	CU_ASSERT_EQUAL(memcmp(ci.u.gcm128.key, key, 16), 0);
	/* RFC 8446 5.3 nonce = salt || iv, the kernel's split is 4 + 8 */
	CU_ASSERT_EQUAL(memcmp(ci.u.gcm128.salt, iv, 4), 0);
	CU_ASSERT_EQUAL(memcmp(ci.u.gcm128.iv, iv + 4, 8), 0);
	CU_ASSERT_EQUAL(memcmp(ci.u.gcm128.rec_seq, seq_be, 8), 0);
}

static void test_tls13_layouts(void)
{
	struct ktlsh_crypto_info ci;
	uint8_t secret[48];
	uint8_t key[32], iv[12];

	memset(secret, 0x5a, sizeof(secret));
	/* ChaCha20: 32-byte key, whole 12-byte IV, no salt */
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls13(KTLSH_CIPHER_CHACHA20_POLY1305, EVP_sha256(), secret,
					       32, 0, &ci), 0);
	CU_ASSERT_EQUAL(ci.len, sizeof(struct tls12_crypto_info_chacha20_poly1305));
	ktlsh_keys_expand_label(EVP_sha256(), secret, 32, "key", key, 32);
	ktlsh_keys_expand_label(EVP_sha256(), secret, 32, "iv", iv, 12);
	CU_ASSERT_EQUAL(memcmp(ci.u.chacha.key, key, 32), 0);
	CU_ASSERT_EQUAL(memcmp(ci.u.chacha.iv, iv, 12), 0);

	/* AES-256-GCM-SHA384: 48-byte secret, 32-byte key */
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls13(KTLSH_CIPHER_AES_GCM_256, EVP_sha384(), secret, 48,
					       7, &ci), 0);
	CU_ASSERT_EQUAL(ci.len, sizeof(struct tls12_crypto_info_aes_gcm_256));
	ktlsh_keys_expand_label(EVP_sha384(), secret, 48, "key", key, 32);
	ktlsh_keys_expand_label(EVP_sha384(), secret, 48, "iv", iv, 12);
	CU_ASSERT_EQUAL(memcmp(ci.u.gcm256.key, key, 32), 0);
	CU_ASSERT_EQUAL(memcmp(ci.u.gcm256.salt, iv, 4), 0);
	CU_ASSERT_EQUAL(memcmp(ci.u.gcm256.iv, iv + 4, 8), 0);
	CU_ASSERT_EQUAL(ci.u.gcm256.rec_seq[7], 7);

	/* AES-128-CCM */
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls13(KTLSH_CIPHER_AES_CCM_128, EVP_sha256(), secret, 32,
					       0, &ci), 0);
	CU_ASSERT_EQUAL(ci.u.info.cipher_type, TLS_CIPHER_AES_CCM_128);
	CU_ASSERT_EQUAL(ci.len, sizeof(struct tls12_crypto_info_aes_ccm_128));

	CU_ASSERT_EQUAL(ktlsh_keys_tls13(KTLSH_CIPHER_NONE, EVP_sha256(), secret, 32, 0, &ci),
			-EINVAL);
}

/* TLS WG list, "TLS 1.2 PRF test vectors", P_SHA256 */
static void test_tls12_prf_vector(void)
{
	uint8_t secret[16], seed[16], want[100], got[100];

	t_unhex("9bbe436ba940f017b17652849a71db35", secret, sizeof(secret));
	t_unhex("a0ba9f936cda311827a6f796ffd5198c", seed, sizeof(seed));
	t_unhex("e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a"
		"6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab"
		"4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701"
		"87347b66", want, sizeof(want));
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12_prf(EVP_sha256(), secret, 16, "test label", seed,
						   16, NULL, 0, got, sizeof(got)), 0);
	CU_ASSERT_EQUAL(memcmp(got, want, sizeof(want)), 0);
	/* The seed may arrive in two parts: server_random || client_random. */
	memset(got, 0, sizeof(got));
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12_prf(EVP_sha256(), secret, 16, "test label", seed, 5,
						   seed + 5, 11, got, sizeof(got)), 0);
	CU_ASSERT_EQUAL(memcmp(got, want, sizeof(want)), 0);
}

/* The key block split (RFC 5246 6.3) for each AEAD and each role. */
static void test_tls12_key_block(void)
{
	uint8_t master[48], cr[32], sr[32], seed[64], block[88];
	struct ktlsh_crypto_info ctx_tx, ctx_rx, srv_tx, srv_rx;
	const uint8_t seq1[8] = { 0, 0, 0, 0, 0, 0, 0, 1 };

	memset(master, 0x11, sizeof(master));
	memset(cr, 0x22, sizeof(cr));
	memset(sr, 0x33, sizeof(sr));
	memcpy(seed, sr, 32);
	memcpy(seed + 32, cr, 32);

	/* AES-128-GCM: client_key 16, server_key 16, client_salt 4, server_salt 4 */
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12_prf(EVP_sha256(), master, 48, "key expansion", seed,
						   64, NULL, 0, block, 40), 0);
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12(KTLSH_CIPHER_AES_GCM_128, EVP_sha256(), master, 48,
					       cr, sr, KTLSH_ROLE_CLIENT, 1, 1, &ctx_tx, &ctx_rx), 0);
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12(KTLSH_CIPHER_AES_GCM_128, EVP_sha256(), master, 48,
					       cr, sr, KTLSH_ROLE_SERVER, 1, 1, &srv_tx, &srv_rx), 0);
	CU_ASSERT_EQUAL(ctx_tx.u.info.version, TLS_1_2_VERSION);
	CU_ASSERT_EQUAL(memcmp(ctx_tx.u.gcm128.key, block, 16), 0);
	CU_ASSERT_EQUAL(memcmp(ctx_rx.u.gcm128.key, block + 16, 16), 0);
	CU_ASSERT_EQUAL(memcmp(ctx_tx.u.gcm128.salt, block + 32, 4), 0);
	CU_ASSERT_EQUAL(memcmp(ctx_rx.u.gcm128.salt, block + 36, 4), 0);
	CU_ASSERT_EQUAL(memcmp(ctx_tx.u.gcm128.rec_seq, seq1, 8), 0);
	/* the explicit nonce starts at the sequence number */
	CU_ASSERT_EQUAL(memcmp(ctx_tx.u.gcm128.iv, seq1, 8), 0);
	CU_ASSERT_EQUAL(memcmp(&ctx_tx.u, &srv_rx.u, ctx_tx.len), 0);
	CU_ASSERT_EQUAL(memcmp(&ctx_rx.u, &srv_tx.u, ctx_rx.len), 0);

	/* ChaCha20-Poly1305 (RFC 7905): 32-byte keys, 12-byte fixed IVs */
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12_prf(EVP_sha256(), master, 48, "key expansion", seed,
						   64, NULL, 0, block, 88), 0);
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12(KTLSH_CIPHER_CHACHA20_POLY1305, EVP_sha256(), master,
					       48, cr, sr, KTLSH_ROLE_SERVER, 1, 1, &srv_tx, &srv_rx),
			      0);
	CU_ASSERT_EQUAL(memcmp(srv_tx.u.chacha.key, block + 32, 32), 0);
	CU_ASSERT_EQUAL(memcmp(srv_rx.u.chacha.key, block, 32), 0);
	CU_ASSERT_EQUAL(memcmp(srv_tx.u.chacha.iv, block + 64 + 12, 12), 0);
	CU_ASSERT_EQUAL(memcmp(srv_rx.u.chacha.iv, block + 64, 12), 0);

	/* AES-256-GCM-SHA384 uses the SHA-384 PRF */
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12_prf(EVP_sha384(), master, 48, "key expansion", seed,
						   64, NULL, 0, block, 72), 0);
	CU_ASSERT_EQUAL_FATAL(ktlsh_keys_tls12(KTLSH_CIPHER_AES_GCM_256, EVP_sha384(), master, 48,
					       cr, sr, KTLSH_ROLE_CLIENT, 1, 1, &ctx_tx, &ctx_rx), 0);
	CU_ASSERT_EQUAL(memcmp(ctx_tx.u.gcm256.key, block, 32), 0);
	CU_ASSERT_EQUAL(memcmp(ctx_tx.u.gcm256.salt, block + 64, 4), 0);
}

static void test_cipher_names(void)
{
	CU_ASSERT_STRING_EQUAL(ktlsh_cipher_name(KTLSH_CIPHER_AES_GCM_128), "AES-GCM-128");
	CU_ASSERT_STRING_EQUAL(ktlsh_cipher_name(KTLSH_CIPHER_CHACHA20_POLY1305),
			       "CHACHA20-POLY1305");
	CU_ASSERT_STRING_EQUAL(ktlsh_cipher_name(KTLSH_CIPHER_NONE), "none");
	CU_ASSERT_STRING_EQUAL(ktlsh_cipher_name(KTLSH_CIPHER_COUNT), "none");
	CU_ASSERT_PTR_NULL(ktlsh_cipher_desc(KTLSH_CIPHER_COUNT));
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "HKDF-Expand-Label against RFC 8448", test_expand_label_rfc8448 },
		{ "TLS 1.3 crypto_info from RFC 8448 secret", test_tls13_crypto_info_rfc8448 },
		{ "TLS 1.3 layouts of every cipher", test_tls13_layouts },
		{ "TLS 1.2 PRF vector (P_SHA256)", test_tls12_prf_vector },
		{ "TLS 1.2 key block split", test_tls12_key_block },
		{ "cipher names", test_cipher_names },
		{ NULL, NULL },
	};

	return t_run("keys", cases);
}
