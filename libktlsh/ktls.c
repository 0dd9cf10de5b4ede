// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The kernel side: attach the "tls" ULP, install TLS_TX/TLS_RX, probe which
 * ciphers the running kernel takes, and map OpenSSL ciphers onto them.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/objects.h>

#include "internal.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static const struct ktlsh_sys_ops ktlsh_sys_real = {
	.setsockopt = setsockopt,
	.getsockopt = getsockopt,
};
const struct ktlsh_sys_ops *ktlsh_sys = &ktlsh_sys_real;

static int ktlsh_sys_set(int fd, int level, int name, const void *val, socklen_t len)
{
	return ktlsh_sys->setsockopt(fd, level, name, val, len) ? -errno : 0;
}

int ktlsh_ktls_install(int fd, struct ktlsh_crypto_info *tx, struct ktlsh_crypto_info *rx,
		       unsigned hs_flags, int version, unsigned *installed)
{
	int one = 1;
	int ret;

	*installed = 0;
	ret = ktlsh_sys_set(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls"));
	if (ret)
		goto out;
	ret = ktlsh_sys_set(fd, SOL_TLS, TLS_TX, &tx->u, tx->len);
	if (ret)
		goto out;
	*installed |= KTLSH_INSTALLED_TX;
	ret = ktlsh_sys_set(fd, SOL_TLS, TLS_RX, &rx->u, rx->len);
	if (ret)
		goto out;
	*installed |= KTLSH_INSTALLED_RX;

	/* Both options are optimisations: a kernel without them still works. */
	if ((hs_flags & KTLSH_HS_TRUSTED_PEER) && version == TLS1_3_VERSION)
		(void)ktlsh_sys_set(fd, SOL_TLS, TLS_RX_EXPECT_NO_PAD, &one, sizeof(one));
	if (hs_flags & KTLSH_HS_TX_ZEROCOPY_RO)
		(void)ktlsh_sys_set(fd, SOL_TLS, TLS_TX_ZEROCOPY_RO, &one, sizeof(one));
out:
	explicit_bzero(tx, sizeof(*tx));
	explicit_bzero(rx, sizeof(*rx));
	return ret;
}

enum ktlsh_cipher ktlsh_cipher_from_ssl(const SSL_CIPHER *cipher)
{
	if (!cipher)
		return KTLSH_CIPHER_NONE;
	switch (SSL_CIPHER_get_cipher_nid(cipher)) {
	case NID_aes_128_gcm:
		return KTLSH_CIPHER_AES_GCM_128;
	case NID_aes_256_gcm:
		return KTLSH_CIPHER_AES_GCM_256;
	case NID_chacha20_poly1305:
		return KTLSH_CIPHER_CHACHA20_POLY1305;
	case NID_aes_128_ccm:
		/* The kernel's CCM has a 16-byte tag; the CCM_8 suites are not it. */
		if (strstr(SSL_CIPHER_get_name(cipher), "CCM8") ||
		    strstr(SSL_CIPHER_get_name(cipher), "CCM_8"))
			return KTLSH_CIPHER_NONE;
		return KTLSH_CIPHER_AES_CCM_128;
	default:
		return KTLSH_CIPHER_NONE;
	}
}

int ktlsh_kcaps_has(const struct ktlsh_kcaps *caps, int version, enum ktlsh_cipher c)
{
	uint32_t bit = KTLSH_CIPHER_BIT(c);

	if (!caps || c <= KTLSH_CIPHER_NONE || c >= KTLSH_CIPHER_COUNT)
		return 0;
	if (version == TLS1_3_VERSION)
		return (caps->tls13_tx & bit) && (caps->tls13_rx & bit);
	if (version == TLS1_2_VERSION)
		return (caps->tls12_tx & bit) && (caps->tls12_rx & bit);
	return 0;
}

/* A connected loopback pair; the far end only has to exist. */
static int ktlsh_probe_pair(int lfd, const struct sockaddr_in *addr, int *cfd, int *afd)
{
	int ret;

	*cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*cfd < 0)
		return -errno;
	if (connect(*cfd, (const struct sockaddr *)addr, sizeof(*addr)) < 0) {
		ret = -errno;
		goto fail;
	}
	*afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (*afd < 0) {
		ret = -errno;
		goto fail;
	}
	return 0;
fail:
	close(*cfd);
	*cfd = -1;
	return ret;
}

/* Try one (version, cipher) on a fresh connection: TLS_TX and TLS_RX each. */
static int ktlsh_probe_one(int lfd, const struct sockaddr_in *addr, int version,
			   enum ktlsh_cipher c, int *tx_ok, int *rx_ok)
{
	const struct ktlsh_cipher_desc *d = ktlsh_cipher_desc(c);
	struct ktlsh_crypto_info ci;
	int cfd = -1, afd = -1, ret;

	*tx_ok = *rx_ok = 0;
	ret = ktlsh_probe_pair(lfd, addr, &cfd, &afd);
	if (ret)
		return ret;
	ret = ktlsh_sys_set(cfd, SOL_TCP, TCP_ULP, "tls", sizeof("tls"));
	if (ret)
		goto out;
	memset(&ci, 0, sizeof(ci));
	ci.u.info.version = version == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION;
	ci.u.info.cipher_type = d->kernel_type;
	ci.len = d->info_len;
	*tx_ok = ktlsh_sys_set(cfd, SOL_TLS, TLS_TX, &ci.u, ci.len) == 0;
	*rx_ok = ktlsh_sys_set(cfd, SOL_TLS, TLS_RX, &ci.u, ci.len) == 0;
out:
	close(cfd);
	close(afd);
	return ret;
}

int ktlsh_kernel_probe(struct ktlsh_kcaps *caps)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);
	static const int versions[] = { TLS1_2_VERSION, TLS1_3_VERSION };
	int lfd, ret, tx_ok, rx_ok;
	size_t v;
	int c;

	memset(caps, 0, sizeof(*caps));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 4) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
		ret = -errno;
		goto out;
	}
	for (v = 0; v < KTLSH_ARRAY_SIZE(versions); v++) {
		for (c = KTLSH_CIPHER_NONE + 1; c < KTLSH_CIPHER_COUNT; c++) {
			ret = ktlsh_probe_one(lfd, &addr, versions[v], c, &tx_ok, &rx_ok);
			if (ret == -ENOENT || ret == -ENOPROTOOPT || ret == -EOPNOTSUPP) {
				/* No "tls" ULP at all: nothing is offloadable. */
				caps->ulp_err = ret;
				ret = 0;
				goto out;
			}
			if (ret)
				goto out;
			if (versions[v] == TLS1_3_VERSION) {
				caps->tls13_tx |= tx_ok ? KTLSH_CIPHER_BIT(c) : 0;
				caps->tls13_rx |= rx_ok ? KTLSH_CIPHER_BIT(c) : 0;
			} else {
				caps->tls12_tx |= tx_ok ? KTLSH_CIPHER_BIT(c) : 0;
				caps->tls12_rx |= rx_ok ? KTLSH_CIPHER_BIT(c) : 0;
			}
		}
	}
out:
	close(lfd);
	return ret;
}
