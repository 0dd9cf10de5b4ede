// SPDX-License-Identifier: GPL-2.0-or-later
// fuzz-sources: daemon/netlink_msg.c -I/usr/include/libnl3 -lnl-genl-3 -lnl-3
/*
 * libFuzzer target for the kernel handshake upcall's message codec
 * (daemon/netlink_msg.c): arbitrary bytes are parsed as the kernel's reply
 * to ACCEPT, as a READY notification and as a GETPOLICY dump message. The
 * kernel is trusted, but the parser is the one place where the daemon reads
 * a variable-length structure from outside its own code, so it must never
 * read out of bounds, whatever arrives. Invariants checked on every input:
 *
 *   - the result is 0 or one of -EBADMSG, -EPROTO, -ENOMSG;
 *   - "why" is always a terminated string;
 *   - on success: a socket descriptor, a known message type and auth mode,
 *     at most KTLSHD_NL_PEERIDS_MAX identities, a terminated peer name,
 *     a certificate only together with its key;
 *   - DONE built from what was parsed fits and parses back as not-ACCEPT.
 *
 * The first two bytes of the input choose the family id the parser is
 * told to expect (so both "ours" and "someone else's" are explored), the
 * rest is the message. Seeds (tests/fuzz/corpus/netlink) are valid ACCEPT
 * replies as Linux 6.12 and 6.17 send them (server and client, x509, PSK,
 * unauthenticated, with certificate nests, peer identities, a peer name, a
 * keyring) and a READY notification, each prefixed with family 26.
 *
 *   scripts/fuzz netlink 30
 *
 * Built with -DKTLSH_FUZZ_MAIN instead of -fsanitize=fuzzer it has its own
 * main: "--seeds DIR" writes the seed corpus, other arguments are files to
 * run once each.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>

#include "netlink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_netlink: invariant broken: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ktlshd_nl_accept a;
	struct ktlshd_nl_policy pol;
	uint16_t family;
	uint8_t *msg, done[512];
	char why[128];
	int ret, n;

	if (size < 2)
		return 0;
	family = (uint16_t)(data[0] | data[1] << 8);
	/* An exact-size heap copy: ASan sees any read past the end. */
	msg = malloc(size - 2 ? size - 2 : 1);
	if (!msg)
		return 0;
	memcpy(msg, data + 2, size - 2);

	memset(why, 'X', sizeof(why));
	ret = ktlshd_nl_parse_accept(msg, size - 2, family, &a, why, sizeof(why));
	check(ret == 0 || ret == -EBADMSG || ret == -EPROTO || ret == -ENOMSG, "result");
	check(memchr(why, '\0', sizeof(why)) != NULL, "why terminated");
	check(a.sockfd >= -1, "sockfd");
	if (ret == 0) {
		check(a.sockfd >= 0, "socket present");
		check(a.message_type == KTLSHD_HS_MSG_TYPE_CLIENTHELLO ||
		      a.message_type == KTLSHD_HS_MSG_TYPE_SERVERHELLO, "message type");
		check(a.auth_mode >= KTLSHD_HS_AUTH_UNAUTH && a.auth_mode <= KTLSHD_HS_AUTH_X509,
		      "auth mode");
		check(a.n_peerids <= KTLSHD_NL_PEERIDS_MAX, "peer identities");
		check(memchr(a.peername, '\0', sizeof(a.peername)) != NULL, "peer name terminated");
		check(!a.cert_serial == !a.privkey_serial, "certificate with its key");
		n = ktlshd_nl_build_done(done, sizeof(done), family, 0, a.sockfd, a.peerids,
					 a.n_peerids, true);
		check(n > 0 && (size_t)n <= sizeof(done), "DONE fits");
		check(ktlshd_nl_parse_accept(done, (size_t)n, family, &a, why, sizeof(why)) != 0,
		      "DONE is not an ACCEPT");
	}
	(void)ktlshd_nl_is_ready(msg, size - 2, family);

	ktlshd_nl_policy_init(&pol, family, KTLSHD_HS_CMD_DONE);
	(void)ktlshd_nl_policy_feed(&pol, msg, size - 2);
	for (unsigned int t = 0; t < 70; t++) {
		ret = ktlshd_nl_policy_has(&pol, t);
		check(ret == 0 || ret == 1 || ret == -ENODATA, "policy answer");
	}
	free(msg);
	return 0;
}

#ifdef KTLSH_FUZZ_MAIN
/* ---- seeds ---------------------------------------------------------------- */

struct msg {
	uint8_t b[1024];
	size_t len;
	size_t nest;
};

static void msg_start(struct msg *m, uint16_t type, uint8_t cmd)
{
	struct nlmsghdr *nlh = (struct nlmsghdr *)(m->b + 2);
	struct genlmsghdr *gh = (struct genlmsghdr *)(m->b + 2 + NLMSG_HDRLEN);

	memset(m, 0, sizeof(*m));
	m->b[0] = 26;	/* the family id the fuzzer tells the parser */
	nlh->nlmsg_type = type;
	gh->cmd = cmd;
	gh->version = 1;
	m->len = 2 + NLMSG_HDRLEN + GENL_HDRLEN;
}

static void msg_attr(struct msg *m, uint16_t type, const void *d, size_t len)
{
	struct nlattr *nla = (struct nlattr *)(m->b + m->len);

	nla->nla_len = (uint16_t)(NLA_HDRLEN + len);
	nla->nla_type = type;
	memcpy(m->b + m->len + NLA_HDRLEN, d, len);
	m->len += NLA_ALIGN(NLA_HDRLEN + len);
}

static void msg_u32(struct msg *m, uint16_t type, uint32_t v)
{
	msg_attr(m, type, &v, 4);
}

static void nest_start(struct msg *m, uint16_t type)
{
	struct nlattr *nla = (struct nlattr *)(m->b + m->len);

	m->nest = m->len;
	nla->nla_type = type | NLA_F_NESTED;
	m->len += NLA_HDRLEN;
}

static void nest_end(struct msg *m)
{
	((struct nlattr *)(m->b + m->nest))->nla_len = (uint16_t)(m->len - m->nest);
}

static void msg_write(struct msg *m, const char *dir, const char *name)
{
	char path[512];
	FILE *f;

	((struct nlmsghdr *)(m->b + 2))->nlmsg_len = (uint32_t)(m->len - 2);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(m->b, 1, m->len, f) != m->len) {
		perror(path);
		exit(1);
	}
	fclose(f);
}

static void accept_base(struct msg *m, uint32_t type, uint32_t auth)
{
	msg_start(m, 26, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_SOCKFD, 7);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, KTLSHD_HS_HANDLER_CLASS_TLSHD);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, type);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_TIMEOUT, 10000);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, auth);
}

static void seeds(const char *dir)
{
	struct msg m;

	accept_base(&m, KTLSHD_HS_MSG_TYPE_SERVERHELLO, KTLSHD_HS_AUTH_X509);
	msg_write(&m, dir, "accept-server-x509");

	accept_base(&m, KTLSHD_HS_MSG_TYPE_SERVERHELLO, KTLSHD_HS_AUTH_X509);
	nest_start(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 0x1111);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 0x2222);
	nest_end(&m);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "client.example", 15);
	msg_write(&m, dir, "accept-server-x509-cert");

	accept_base(&m, KTLSHD_HS_MSG_TYPE_CLIENTHELLO, KTLSHD_HS_AUTH_X509);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "nfs.example.org", 16);
	nest_start(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 0x3333);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 0x4444);
	nest_end(&m);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_KEYRING, 0x5555);
	msg_write(&m, dir, "accept-client-mtls-keyring");

	accept_base(&m, KTLSHD_HS_MSG_TYPE_CLIENTHELLO, KTLSHD_HS_AUTH_PSK);
	for (uint32_t i = 0; i < 3; i++)
		msg_u32(&m, KTLSHD_HS_A_ACCEPT_PEER_IDENTITY, 0x100 + i);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "192.0.2.1", 10);
	msg_write(&m, dir, "accept-client-psk");

	accept_base(&m, KTLSHD_HS_MSG_TYPE_CLIENTHELLO, KTLSHD_HS_AUTH_UNAUTH);
	msg_u32(&m, 42, 1);	/* an attribute of a newer kernel */
	msg_write(&m, dir, "accept-client-unauth-unknown-attr");

	msg_start(&m, 26, KTLSHD_HS_CMD_READY);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, KTLSHD_HS_HANDLER_CLASS_TLSHD);
	msg_write(&m, dir, "ready");
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--seeds")) {
		seeds(argv[2]);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		static uint8_t buf[70000];
		FILE *f = fopen(argv[i], "rb");
		size_t n;

		if (!f) {
			perror(argv[i]);
			return 1;
		}
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
	}
	return 0;
}
#endif
