/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libktlsh internals shared between its files and its unit tests.
 * Not installed; not part of the ABI.
 */
#ifndef KTLSH_INTERNAL_H
#define KTLSH_INTERNAL_H

#include <errno.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>
#include <linux/tls.h>
#include <openssl/evp.h>

#include <ktlsh/handshake.h>
#include <ktlsh/record.h>
#include <ktlsh/proto.h>

#define KTLSH_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Largest secret and key material any supported suite uses. */
#define KTLSH_SECRET_MAX	48	/* SHA-384 */
#define KTLSH_MASTER_LEN	48	/* TLS 1.2 master secret */
#define KTLSH_RANDOM_LEN	32

/* One kernel crypto_info of any layout, and its size for setsockopt(). */
struct ktlsh_crypto_info {
	union {
		struct tls_crypto_info info;
		struct tls12_crypto_info_aes_gcm_128 gcm128;
		struct tls12_crypto_info_aes_gcm_256 gcm256;
		struct tls12_crypto_info_chacha20_poly1305 chacha;
		struct tls12_crypto_info_aes_ccm_128 ccm128;
	} u;
	socklen_t len;
};

/* Key sizes of one kernel cipher. */
struct ktlsh_cipher_desc {
	enum ktlsh_cipher id;
	uint16_t kernel_type;	/* TLS_CIPHER_* */
	uint8_t key_len;
	uint8_t salt_len;	/* implicit nonce part taken from the key schedule's IV */
	uint8_t iv_len;		/* explicit part (TLS 1.2) / rest of the 12-byte IV (TLS 1.3) */
	socklen_t info_len;
	const char *name;
};

const struct ktlsh_cipher_desc *ktlsh_cipher_desc(enum ktlsh_cipher c);

/* keys.c: OpenSSL KDFs only (TLS13-KDF, TLS1-PRF); no hand-rolled crypto. */
int ktlsh_keys_expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len,
			    const char *label, uint8_t *out, size_t out_len);
int ktlsh_keys_tls12_prf(const EVP_MD *md, const uint8_t *secret, size_t secret_len,
			 const char *label, const uint8_t *seed1, size_t seed1_len,
			 const uint8_t *seed2, size_t seed2_len, uint8_t *out, size_t out_len);
/* A TLS 1.3 traffic secret -> crypto_info for one direction. */
int ktlsh_keys_tls13(enum ktlsh_cipher c, const EVP_MD *md, const uint8_t *secret,
		     size_t secret_len, uint64_t seq, struct ktlsh_crypto_info *ci);
/* A TLS 1.2 master secret -> crypto_info for both directions of one side. */
int ktlsh_keys_tls12(enum ktlsh_cipher c, const EVP_MD *md, const uint8_t *master,
		     size_t master_len, const uint8_t client_random[KTLSH_RANDOM_LEN],
		     const uint8_t server_random[KTLSH_RANDOM_LEN], enum ktlsh_role role,
		     uint64_t tx_seq, uint64_t rx_seq, struct ktlsh_crypto_info *tx,
		     struct ktlsh_crypto_info *rx);

/* ktls.c: the seam in front of the kernel. Unit tests swap it; nothing else does. */
struct ktlsh_sys_ops {
	int (*setsockopt)(int fd, int level, int name, const void *val, socklen_t len);
	int (*getsockopt)(int fd, int level, int name, void *val, socklen_t *len);
};
extern const struct ktlsh_sys_ops *ktlsh_sys;

/* Attach the ULP and install TX then RX. Wipes both infos, success or not.
 * *installed gets KTLSH_INSTALLED_TX/RX bits for what took. */
#define KTLSH_INSTALLED_TX 0x1
#define KTLSH_INSTALLED_RX 0x2
int ktlsh_ktls_install(int fd, struct ktlsh_crypto_info *tx, struct ktlsh_crypto_info *rx,
		       unsigned hs_flags, int version, unsigned *installed);

/* Wire cursors come from <ktlsh/proto.h>; TLS also has 24-bit lengths. */
static inline int ktlsh_cur_get_u24(struct ktlsh_cur *c, uint32_t *v)
{
	uint8_t b[3];
	int ret = ktlsh_cur_get(c, b, sizeof(b));

	if (!ret)
		*v = (uint32_t)b[0] << 16 | (uint32_t)b[1] << 8 | b[2];
	return ret;
}

/* hs.c: the key log lines OpenSSL hands the keylog callback. */
enum {
	KTLSH_KEYLOG_OTHER = 0,		/* a label ktlsh does not use */
	KTLSH_KEYLOG_CLIENT_TRAFFIC_0,	/* CLIENT_TRAFFIC_SECRET_0 */
	KTLSH_KEYLOG_SERVER_TRAFFIC_0,	/* SERVER_TRAFFIC_SECRET_0 */
};
/* Which secret a line carries, from its label alone. */
int ktlsh_keylog_label(const char *line);
/* The secret of a line whose label is one of the two above: its length, or
 * -EINVAL (malformed, or longer than cap). */
int ktlsh_keylog_secret(const char *line, uint8_t *out, size_t cap);
/* Hex (either case, even length) -> bytes: the byte count, or -EINVAL
 * (odd length, a non-hex digit: out is zeroed; more than cap bytes). */
int ktlsh_unhex(const char *hex, size_t hex_len, uint8_t *out, size_t cap);

/* hello.c: summaries of ClientHello / ServerHello bodies for the trace. */
struct ktlsh_hello_summary {
	uint16_t versions[8];	/* supported_versions, or legacy_version */
	unsigned n_versions;
	uint16_t ciphers[64];
	unsigned n_ciphers;	/* count seen (may exceed what is stored) */
	uint16_t groups[16];
	unsigned n_groups;
	uint16_t key_share_group; /* ServerHello: the chosen group */
	char sni[256];
};
int ktlsh_hello_parse_client(const uint8_t *body, size_t len, struct ktlsh_hello_summary *s);
int ktlsh_hello_parse_server(const uint8_t *body, size_t len, struct ktlsh_hello_summary *s);
const char *ktlsh_version_name(uint16_t v);
const char *ktlsh_group_name(uint16_t g);

#endif /* KTLSH_INTERNAL_H */
