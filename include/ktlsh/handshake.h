/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ktlsh handshake core: an OpenSSL handshake on a connected TCP socket,
 * steppable from a nonblocking event loop, whose traffic keys are then
 * installed into the kernel with setsockopt(SOL_TLS, TLS_TX/TLS_RX).
 *
 * Every function that can fail returns 0 (or a count) on success and a
 * negative errno on failure; none of them sets errno.
 */
#ifndef KTLSH_HANDSHAKE_H
#define KTLSH_HANDSHAKE_H

#include <stdint.h>
#include <stddef.h>
#include <openssl/ssl.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KTLSH_MUST_CHECK __attribute__((warn_unused_result))

enum ktlsh_role {
	KTLSH_ROLE_CLIENT = 1,
	KTLSH_ROLE_SERVER = 2,
};

/* The kernel's AEADs, one per crypto_info layout in <linux/tls.h>. */
enum ktlsh_cipher {
	KTLSH_CIPHER_NONE = 0,
	KTLSH_CIPHER_AES_GCM_128,
	KTLSH_CIPHER_AES_GCM_256,
	KTLSH_CIPHER_CHACHA20_POLY1305,
	KTLSH_CIPHER_AES_CCM_128,
	KTLSH_CIPHER_COUNT,
};

#define KTLSH_CIPHER_BIT(c) (1u << (c))

/* What the running kernel accepts: bit KTLSH_CIPHER_BIT(c) per version. */
struct ktlsh_kcaps {
	uint32_t tls12_tx, tls12_rx;
	uint32_t tls13_tx, tls13_rx;
	int ulp_err;		/* -errno of attaching the "tls" ULP, 0 if it works */
};

/* Probe once at start: a loopback connection per (version, cipher) tries
 * TLS_TX and TLS_RX with throwaway keys. Returns 0 even when nothing is
 * offloadable (then caps is all zero and ulp_err says why); -errno only
 * when the probe itself could not run (no loopback, out of fds). */
KTLSH_MUST_CHECK int ktlsh_kernel_probe(struct ktlsh_kcaps *caps);

/* Does the kernel take this (version, cipher) both ways? */
int ktlsh_kcaps_has(const struct ktlsh_kcaps *caps, int version, enum ktlsh_cipher c);

/* "AES-GCM-128" etc.; "none" for KTLSH_CIPHER_NONE. */
const char *ktlsh_cipher_name(enum ktlsh_cipher c);

/* Kernel cipher for an OpenSSL cipher, KTLSH_CIPHER_NONE if the kernel has
 * no layout for it (e.g. CBC suites). */
enum ktlsh_cipher ktlsh_cipher_from_ssl(const SSL_CIPHER *cipher);

/* ktlsh_ssl_ctx_setup() flags */
#define KTLSH_CTX_REQUIRE_OFFLOAD	0x1	/* offer only what caps says the kernel takes */

/*
 * Prepare a caller-configured SSL_CTX for handshakes whose keys go to the
 * kernel: TLS 1.2..1.3 only, renegotiation, 0-RTT, post-handshake auth and
 * read-ahead off, compression off, and the callbacks ktlsh needs to learn the
 * secrets and count records. With KTLSH_CTX_REQUIRE_OFFLOAD the cipher lists
 * are narrowed to AEADs the kernel accepted in caps (-ENOPROTOOPT if none).
 * Call once per SSL_CTX, before creating handshakes on it.
 */
KTLSH_MUST_CHECK int ktlsh_ssl_ctx_setup(SSL_CTX *ctx, const struct ktlsh_kcaps *caps,
					 unsigned flags);

/* ktlsh_hs_params.flags */
#define KTLSH_HS_TRUSTED_PEER	0x1	/* TLS 1.3: set TLS_RX_EXPECT_NO_PAD */
#define KTLSH_HS_TX_ZEROCOPY_RO	0x2	/* set TLS_TX_ZEROCOPY_RO (sendfile of files that do not change) */

typedef void (*ktlsh_trace_fn)(void *arg, const char *line);

struct ktlsh_hs_params {
	enum ktlsh_role role;
	const char *server_name;	/* client: SNI and the name verified in the server's
					 * certificate; server: the name the client's
					 * certificate must carry (one is then required) */
	unsigned flags;
	ktlsh_trace_fn trace;		/* optional: one line per handshake step */
	void *trace_arg;
};

struct ktlsh_hs_info {
	int version;			/* TLS1_2_VERSION or TLS1_3_VERSION */
	enum ktlsh_cipher cipher;
	char cipher_name[64];		/* IANA-style OpenSSL name, e.g. TLS_AES_128_GCM_SHA256 */
	char group[32];			/* key exchange group, e.g. x25519 */
	char alpn[256];
	int resumed;
	uint64_t tx_seq, rx_seq;	/* sequence numbers installed in the kernel */
	int alert_sent;			/* TLS alert description, -1 if none */
	int alert_received;
	int verify_result;		/* X509_V_OK or the X509_V_ERR_* that failed */
	char reason[256];		/* why it failed, for people; "" on success */
};

struct ktlsh_hs;

/*
 * Start a handshake on fd, a connected TCP socket. The socket is switched to
 * nonblocking and TCP_NODELAY for the handshake; both are restored by
 * ktlsh_hs_install() or ktlsh_hs_free(). fd stays the caller's: it is never
 * closed here.
 */
KTLSH_MUST_CHECK int ktlsh_hs_new(struct ktlsh_hs **hsp, SSL_CTX *ctx, int fd,
				  const struct ktlsh_hs_params *params);

/*
 * Advance the handshake. Returns 0 when it is complete, -EAGAIN when it must
 * wait for the events ktlsh_hs_events() names, or a negative errno when it
 * failed (info.reason says why):
 *   -EPROTO        TLS protocol failure (no shared cipher, garbage, bad Finished)
 *   -EKEYREJECTED  peer certificate refused (info.verify_result says why)
 *   -ECONNRESET    the peer reset or closed mid-handshake
 *   -EPROTONOSUPPORT negotiated a version or cipher the kernel cannot take
 */
KTLSH_MUST_CHECK int ktlsh_hs_step(struct ktlsh_hs *hs);

/* POLLIN or POLLOUT: what the last -EAGAIN from ktlsh_hs_step waits for. */
short ktlsh_hs_events(const struct ktlsh_hs *hs);

/*
 * Derive the traffic keys from OpenSSL's secrets with OpenSSL's KDFs and
 * install them: TCP_ULP "tls", TLS_TX, TLS_RX, with the exact record
 * sequence numbers. Refuses (-EBADMSG) if OpenSSL holds buffered bytes past
 * the handshake. Key material is wiped before return, success or not.
 * -ENOTCONN if the socket is no longer ESTABLISHED (peer already closed).
 * On failure before TLS_TX took, the socket is still plain TCP and the SSL
 * may continue in user space; after TLS_TX took, the socket is only good for
 * closing.
 */
KTLSH_MUST_CHECK int ktlsh_hs_install(struct ktlsh_hs *hs);

const struct ktlsh_hs_info *ktlsh_hs_info(const struct ktlsh_hs *hs);
SSL *ktlsh_hs_ssl(const struct ktlsh_hs *hs);
void ktlsh_hs_free(struct ktlsh_hs *hs);

/*
 * Blocking convenience: new + step/poll until done or timeout_ms (-ETIMEDOUT)
 * + install + free. info (optional) receives the outcome either way.
 */
KTLSH_MUST_CHECK int ktlsh_handshake(SSL_CTX *ctx, int fd, const struct ktlsh_hs_params *params,
				     int timeout_ms, struct ktlsh_hs_info *info);

#ifdef __cplusplus
}
#endif
#endif /* KTLSH_HANDSHAKE_H */
