// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Unit tests of the handshake upcall's codec (daemon/netlink.c): ACCEPT
 * replies well formed and malformed (sizes, truncation, strings, repeats,
 * unknown types, values out of range, random mutations), READY
 * notifications, the DONE encoder, the GETPOLICY reader that decides which
 * optional DONE attributes the kernel takes, and the keyring helpers where
 * the kernel lets this process use keyrings.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/genetlink.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <sys/syscall.h>

#include "netlink.h"
#include "unit.h"

#define FAMILY	26

/* ---- a message builder ------------------------------------------------ */

struct msg {
	uint8_t b[4096];
	size_t len;
	size_t nest[4];
	int depth;
};

static void msg_start(struct msg *m, uint16_t type, uint8_t cmd)
{
	struct nlmsghdr *nlh = (struct nlmsghdr *)m->b;
	struct genlmsghdr *gh = (struct genlmsghdr *)(m->b + NLMSG_HDRLEN);

	memset(m, 0, sizeof(*m));
	nlh->nlmsg_type = type;
	gh->cmd = cmd;
	gh->version = 1;
	m->len = NLMSG_HDRLEN + GENL_HDRLEN;
}

/* An attribute with any length field and payload (len is the payload's). */
static void msg_raw(struct msg *m, uint16_t type, uint16_t nla_len_field, const void *data,
		    size_t len)
{
	struct nlattr *nla = (struct nlattr *)(m->b + m->len);

	nla->nla_len = nla_len_field;
	nla->nla_type = type;
	if (len)
		memcpy(m->b + m->len + NLA_HDRLEN, data, len);
	m->len += NLA_ALIGN(NLA_HDRLEN + len);
}

static void msg_attr(struct msg *m, uint16_t type, const void *data, size_t len)
{
	msg_raw(m, type, (uint16_t)(NLA_HDRLEN + len), data, len);
}

static void msg_u32(struct msg *m, uint16_t type, uint32_t v)
{
	msg_attr(m, type, &v, sizeof(v));
}

static void msg_str(struct msg *m, uint16_t type, const char *s)
{
	msg_attr(m, type, s, strlen(s) + 1);
}

static void msg_nest(struct msg *m, uint16_t type)
{
	m->nest[m->depth++] = m->len;
	msg_raw(m, type | NLA_F_NESTED, 0, NULL, 0);
}

static void msg_end_nest(struct msg *m)
{
	struct nlattr *nla = (struct nlattr *)(m->b + m->nest[--m->depth]);

	nla->nla_len = (uint16_t)(m->len - m->nest[m->depth]);
}

static size_t msg_done(struct msg *m)
{
	((struct nlmsghdr *)m->b)->nlmsg_len = (uint32_t)m->len;
	return m->len;
}

/* The ACCEPT reply the 6.12 kernel sends for nfsd: server, x509. */
static void accept_server(struct msg *m)
{
	msg_start(m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_SOCKFD, 7);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_SERVERHELLO);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_TIMEOUT, 10000);
	msg_u32(m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
}

static int parse(struct msg *m, struct ktlshd_nl_accept *a, char *why, size_t whylen)
{
	return ktlshd_nl_parse_accept(m->b, msg_done(m), FAMILY, a, why, whylen);
}

/* Expect ret and a reason containing want; the fd must be reported as given. */
static void expect(int line, struct msg *m, int ret, int fd, const char *want)
{
	struct ktlshd_nl_accept a;
	char why[160];
	int got = parse(m, &a, why, sizeof(why));

	if (got != ret || a.sockfd != fd || (want && !strstr(why, want)))
		fprintf(stderr, "\n    test_netlink.c:%d: want %d fd %d \"%s\", got %d fd %d \"%s\"\n",
			line, ret, fd, want ? want : "", got, a.sockfd, why);
	CU_ASSERT_EQUAL(got, ret);
	CU_ASSERT_EQUAL(a.sockfd, fd);
	if (want)
		CU_ASSERT_PTR_NOT_NULL(strstr(why, want));
}

#define EXPECT(m, ret, fd, want) expect(__LINE__, m, ret, fd, want)

/* ---- ACCEPT: valid ------------------------------------------------------ */

static void test_accept_valid(void)
{
	struct ktlshd_nl_accept a;
	struct msg m;
	char why[160];
	uint32_t extra = 1;

	/* nfsd: server, x509, no certificate named */
	accept_server(&m);
	CU_ASSERT_EQUAL(parse(&m, &a, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(a.sockfd, 7);
	CU_ASSERT_EQUAL(a.message_type, KTLSHD_HS_MSG_TYPE_SERVERHELLO);
	CU_ASSERT_EQUAL(a.auth_mode, KTLSHD_HS_AUTH_X509);
	CU_ASSERT_EQUAL(a.timeout_ms, 10000);
	CU_ASSERT_EQUAL(a.n_peerids, 0);
	CU_ASSERT_EQUAL(a.cert_serial, 0);
	CU_ASSERT_STRING_EQUAL(a.peername, "");
	CU_ASSERT_EQUAL(a.unknown_attrs, 0);

	/* NFS client, x509, with a certificate by serial and a peer name */
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 12);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_CLIENTHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
	msg_str(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "nfs.example.com");
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 0x1111);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 0x2222);
	msg_end_nest(&m);
	CU_ASSERT_EQUAL(parse(&m, &a, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(a.sockfd, 12);
	CU_ASSERT_EQUAL(a.cert_serial, 0x1111);
	CU_ASSERT_EQUAL(a.privkey_serial, 0x2222);
	CU_ASSERT_STRING_EQUAL(a.peername, "nfs.example.com");
	CU_ASSERT_EQUAL(a.timeout_ms, 0);

	/* NVMe host: PSK client with identities; a 6.17+ keyring; a type this
	 * code does not know (a newer kernel) is skipped, as is one nested in
	 * the certificate */
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 3);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, KTLSHD_HS_HANDLER_CLASS_TLSHD);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_CLIENTHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_PSK);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_PEER_IDENTITY, 0x3333);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_PEER_IDENTITY, 0x4444);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_KEYRING, 0x5555);
	msg_u32(&m, 10, 1);
	msg_attr(&m, 200, "abc", 3);
	CU_ASSERT_EQUAL(parse(&m, &a, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(a.auth_mode, KTLSHD_HS_AUTH_PSK);
	CU_ASSERT_EQUAL(a.n_peerids, 2);
	CU_ASSERT_EQUAL(a.peerids[0], 0x3333);
	CU_ASSERT_EQUAL(a.peerids[1], 0x4444);
	CU_ASSERT_EQUAL(a.keyring, 0x5555);
	CU_ASSERT_EQUAL(a.unknown_attrs, 2);

	/* The attribute order does not matter: the descriptor last; certificate
	 * may repeat (multi-attr) and the first is kept */
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_SERVERHELLO);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 6);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 5);
	msg_attr(&m, 9, &extra, sizeof(extra));
	msg_end_nest(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 7);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 8);
	msg_end_nest(&m);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 0);
	CU_ASSERT_EQUAL(parse(&m, &a, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(a.sockfd, 0);
	CU_ASSERT_EQUAL(a.cert_serial, 5);
	CU_ASSERT_EQUAL(a.privkey_serial, 6);
	CU_ASSERT_EQUAL(a.unknown_attrs, 1);

	/* The last attribute's padding may be missing from the length. */
	accept_server(&m);
	msg_str(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "h1");	/* 3 bytes + 1 pad */
	msg_done(&m);
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(m.b, m.len - 1, FAMILY, &a, why, sizeof(why)), -EBADMSG);
	((struct nlmsghdr *)m.b)->nlmsg_len = (uint32_t)(m.len - 1);
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(m.b, m.len - 1, FAMILY, &a, why, sizeof(why)), 0);
	CU_ASSERT_STRING_EQUAL(a.peername, "h1");
}

/* ---- ACCEPT: malformed -------------------------------------------------- */

static void test_accept_headers(void)
{
	struct ktlshd_nl_accept a;
	struct msg m;
	char why[160];

	accept_server(&m);
	msg_done(&m);
	/* shorter than a netlink header, or than nlmsg_len says */
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(m.b, 8, FAMILY, &a, why, sizeof(why)), -EBADMSG);
	CU_ASSERT_EQUAL(a.sockfd, -1);
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(m.b, m.len - 4, FAMILY, &a, why, sizeof(why)),
			-EBADMSG);
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(NULL, 0, FAMILY, &a, why, sizeof(why)), -EBADMSG);
	/* nlmsg_len below the header */
	((struct nlmsghdr *)m.b)->nlmsg_len = 8;
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(m.b, m.len, FAMILY, &a, why, sizeof(why)), -EBADMSG);
	/* no room for the generic header */
	((struct nlmsghdr *)m.b)->nlmsg_len = NLMSG_HDRLEN + 2;
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(m.b, m.len, FAMILY, &a, why, sizeof(why)), -EBADMSG);
	/* another family, another command, an error message */
	accept_server(&m);
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(m.b, msg_done(&m), FAMILY + 1, &a, why, sizeof(why)),
			-ENOMSG);
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_READY);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 7);
	EXPECT(&m, -ENOMSG, -1, "command 1");
	msg_start(&m, NLMSG_ERROR, 0);
	EXPECT(&m, -ENOMSG, -1, "not the handshake family");
	/* why is optional */
	accept_server(&m);
	CU_ASSERT_EQUAL(ktlshd_nl_parse_accept(m.b, msg_done(&m), FAMILY, &a, NULL, 0), 0);
}

static void test_accept_attrs(void)
{
	struct msg m;
	uint8_t two[2] = { 1, 0 }, eight[8] = { 0 };
	char name[400];

	/* integers of the wrong size */
	accept_server(&m);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, two, 2);
	EXPECT(&m, -EBADMSG, 7, "2 bytes, expected 4");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, two, 2);
	EXPECT(&m, -EBADMSG, -1, "sockfd of 2 bytes");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 7);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, eight, 8);
	EXPECT(&m, -EBADMSG, 7, "8 bytes");
	/* an attribute length below its header, or past the end */
	accept_server(&m);
	msg_raw(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, 2, NULL, 0);
	EXPECT(&m, -EBADMSG, 7, "truncated");
	accept_server(&m);
	msg_raw(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, 200, "x", 2);
	EXPECT(&m, -EBADMSG, 7, "truncated");
	/* trailing bytes that are not an attribute */
	accept_server(&m);
	m.len += 4;
	memset(m.b + m.len - 4, 0xff, 2);
	((struct nlattr *)(m.b + m.len - 4))->nla_len = 3;
	EXPECT(&m, -EBADMSG, 7, "truncated");
	/* repeated single attributes; repeated or negative descriptors */
	accept_server(&m);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
	EXPECT(&m, -EBADMSG, 7, "attribute 5 repeated");
	accept_server(&m);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 9);
	EXPECT(&m, -EBADMSG, 7, "sockfd repeated");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, (uint32_t)-5);
	EXPECT(&m, -EPROTO, -1, "negative sockfd");

	/* strings */
	accept_server(&m);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "host", 4);		/* no NUL */
	EXPECT(&m, -EBADMSG, 7, "NUL-terminated");
	accept_server(&m);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "ho\0st", 6);	/* NUL inside */
	EXPECT(&m, -EBADMSG, 7, "NUL-terminated");
	accept_server(&m);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "", 0);		/* empty payload */
	EXPECT(&m, -EBADMSG, 7, "NUL-terminated");
	accept_server(&m);
	msg_str(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "host name");
	EXPECT(&m, -EPROTO, 7, "byte 0x20");
	accept_server(&m);
	msg_str(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, "host\x1b[2J");
	EXPECT(&m, -EPROTO, 7, "byte 0x1b");
	memset(name, 'a', sizeof(name));
	name[KTLSHD_NL_PEERNAME_MAX + 1] = '\0';
	accept_server(&m);
	msg_str(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, name);
	EXPECT(&m, -EPROTO, 7, "peer name of 256 bytes");
	name[KTLSHD_NL_PEERNAME_MAX] = '\0';
	accept_server(&m);
	msg_str(&m, KTLSHD_HS_A_ACCEPT_PEERNAME, name);
	EXPECT(&m, 0, 7, "ok");
}

static void test_accept_values(void)
{
	struct msg m;
	int i;

	/* what is required */
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_SERVERHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
	EXPECT(&m, -EPROTO, -1, "no sockfd");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
	EXPECT(&m, -EPROTO, 4, "message type 0");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_CLIENTHELLO);
	EXPECT(&m, -EPROTO, 4, "auth mode 0");

	/* values out of range */
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, 3);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
	EXPECT(&m, -EPROTO, 4, "message type 3");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_SERVERHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, 4);
	EXPECT(&m, -EPROTO, 4, "auth mode 4");
	accept_server(&m);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, 2);
	EXPECT(&m, -EPROTO, 7, "handler class 2");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 7);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_SERVERHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_TIMEOUT, 3600001);
	EXPECT(&m, -EPROTO, 7, "timeout of 3600001 ms");
	accept_server(&m);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_KEYRING, 0x80000000u);
	EXPECT(&m, -EPROTO, 7, "negative key serial");

	/* combinations no consumer asks for */
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_SERVERHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_UNAUTH);
	EXPECT(&m, -EPROTO, 4, "an unauthenticated server");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_CLIENTHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_PSK);
	EXPECT(&m, -EPROTO, 4, "a PSK client without a key serial");
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_PEER_IDENTITY, 0);	/* TLS_NO_PEERID */
	EXPECT(&m, -EPROTO, 4, "a PSK client without a key serial");
	/* nvmet's server: one identity, TLS_NO_PEERID */
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_SERVERHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_PSK);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_PEER_IDENTITY, 0);
	EXPECT(&m, 0, 4, "ok");
	/* at most five identities (the kernel's th_peerid[5]) */
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_CLIENTHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_PSK);
	for (i = 0; i < KTLSHD_NL_PEERIDS_MAX; i++)
		msg_u32(&m, KTLSHD_HS_A_ACCEPT_PEER_IDENTITY, 100 + i);
	EXPECT(&m, 0, 4, "ok");
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_PEER_IDENTITY, 200);
	EXPECT(&m, -EPROTO, 4, "more than 5 peer identities");
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_SOCKFD, 4);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_CLIENTHELLO);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_PSK);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_PEER_IDENTITY, (uint32_t)-3);
	EXPECT(&m, -EPROTO, 4, "negative key serial");
}

static void test_accept_certificate(void)
{
	struct msg m;
	uint8_t two[2] = { 0 };

	/* a certificate without its key, or the reverse */
	accept_server(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 5);
	msg_end_nest(&m);
	EXPECT(&m, -EPROTO, 7, "certificate serial 5 with private key serial 0");
	accept_server(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 5);
	msg_end_nest(&m);
	EXPECT(&m, -EPROTO, 7, "certificate serial 0 with private key serial 5");
	/* sizes, repeats and signs inside the nest */
	accept_server(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_attr(&m, KTLSHD_HS_A_X509_CERT, two, 2);
	msg_end_nest(&m);
	EXPECT(&m, -EBADMSG, 7, "certificate: serial of 2 bytes");
	accept_server(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 5);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 6);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 7);
	msg_end_nest(&m);
	EXPECT(&m, -EBADMSG, 7, "certificate: serial repeated");
	accept_server(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, (uint32_t)-1);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 7);
	msg_end_nest(&m);
	EXPECT(&m, -EPROTO, 7, "certificate: negative key serial");
	/* an inner attribute that runs past the nest */
	accept_server(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 5);
	msg_raw(&m, KTLSHD_HS_A_X509_PRIVKEY, 40, "abcd", 4);
	msg_end_nest(&m);
	EXPECT(&m, -EBADMSG, 7, "certificate: truncated attribute");
	/* a second, malformed certificate is not ignored */
	accept_server(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 5);
	msg_u32(&m, KTLSHD_HS_A_X509_PRIVKEY, 6);
	msg_end_nest(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&m, KTLSHD_HS_A_X509_CERT, 5);
	msg_end_nest(&m);
	EXPECT(&m, -EPROTO, 7, "with private key serial 0");
	/* an empty nest names nothing */
	accept_server(&m);
	msg_nest(&m, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_end_nest(&m);
	EXPECT(&m, 0, 7, "ok");
}

/* Random damage to valid messages: the parser must never read out of
 * bounds (ASan build), and whatever it accepts must be self-consistent. */
static void test_accept_mutations(void)
{
	struct ktlshd_nl_accept a;
	struct msg base, m;
	unsigned int seed = 12345, i, j, n;
	size_t len;
	int ret, accepted = 0;

	msg_start(&base, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	msg_u32(&base, KTLSHD_HS_A_ACCEPT_SOCKFD, 9);
	msg_u32(&base, KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE, KTLSHD_HS_MSG_TYPE_CLIENTHELLO);
	msg_u32(&base, KTLSHD_HS_A_ACCEPT_AUTH_MODE, KTLSHD_HS_AUTH_X509);
	msg_u32(&base, KTLSHD_HS_A_ACCEPT_TIMEOUT, 5000);
	msg_str(&base, KTLSHD_HS_A_ACCEPT_PEERNAME, "server.example");
	msg_nest(&base, KTLSHD_HS_A_ACCEPT_CERTIFICATE);
	msg_u32(&base, KTLSHD_HS_A_X509_CERT, 5);
	msg_u32(&base, KTLSHD_HS_A_X509_PRIVKEY, 6);
	msg_end_nest(&base);
	msg_done(&base);
	for (i = 0; i < 50000; i++) {
		m = base;
		len = m.len;
		n = 1 + rand_r(&seed) % 4;
		for (j = 0; j < n; j++)
			m.b[NLMSG_HDRLEN + rand_r(&seed) % (len - NLMSG_HDRLEN)] ^=
				(uint8_t)(1u << (rand_r(&seed) % 8));
		if (rand_r(&seed) % 4 == 0)
			len -= rand_r(&seed) % len;
		ret = ktlshd_nl_parse_accept(m.b, len, FAMILY, &a, NULL, 0);
		if (ret == 0) {
			accepted++;
			CU_ASSERT(a.sockfd >= 0);
			CU_ASSERT(a.n_peerids <= KTLSHD_NL_PEERIDS_MAX);
			CU_ASSERT(strlen(a.peername) <= KTLSHD_NL_PEERNAME_MAX);
			CU_ASSERT(!a.cert_serial == !a.privkey_serial);
		} else {
			CU_ASSERT(ret == -EBADMSG || ret == -EPROTO || ret == -ENOMSG);
		}
	}
	CU_ASSERT(accepted > 0);	/* some flips hit only values that stay valid */
}

/* ---- READY -------------------------------------------------------------- */

static void test_ready(void)
{
	struct msg m;

	msg_start(&m, FAMILY, KTLSHD_HS_CMD_READY);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, KTLSHD_HS_HANDLER_CLASS_TLSHD);
	CU_ASSERT(ktlshd_nl_is_ready(m.b, msg_done(&m), FAMILY));
	CU_ASSERT(!ktlshd_nl_is_ready(m.b, m.len, FAMILY + 1));
	CU_ASSERT(!ktlshd_nl_is_ready(m.b, m.len - 1, FAMILY));
	CU_ASSERT(!ktlshd_nl_is_ready(m.b, 10, FAMILY));
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_READY);
	CU_ASSERT(ktlshd_nl_is_ready(m.b, msg_done(&m), FAMILY));
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_READY);
	msg_u32(&m, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, 2);
	CU_ASSERT(!ktlshd_nl_is_ready(m.b, msg_done(&m), FAMILY));
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_READY);
	msg_attr(&m, KTLSHD_HS_A_ACCEPT_HANDLER_CLASS, "\1", 1);
	CU_ASSERT(!ktlshd_nl_is_ready(m.b, msg_done(&m), FAMILY));
	msg_start(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT);
	CU_ASSERT(!ktlshd_nl_is_ready(m.b, msg_done(&m), FAMILY));
}

/* ---- DONE --------------------------------------------------------------- */

/* Walk a DONE message: the status, the fd, the identities in order. */
static int read_done(const uint8_t *b, int len, uint32_t *status, int32_t *fd, int32_t *ids,
		     int *n_ids)
{
	const struct nlmsghdr *nlh = (const struct nlmsghdr *)b;
	const struct genlmsghdr *gh = (const struct genlmsghdr *)(b + NLMSG_HDRLEN);
	const struct nlattr *nla;
	int off = NLMSG_HDRLEN + GENL_HDRLEN, seen = 0;

	if ((int)nlh->nlmsg_len != len || nlh->nlmsg_type != FAMILY ||
	    !(nlh->nlmsg_flags & NLM_F_REQUEST) || gh->cmd != KTLSHD_HS_CMD_DONE || gh->version != 1)
		return -1;
	*n_ids = 0;
	while (off < len) {
		nla = (const struct nlattr *)(b + off);
		if (nla->nla_len != NLA_HDRLEN + 4)
			return -1;
		if (nla->nla_type == KTLSHD_HS_A_DONE_STATUS)
			memcpy(status, b + off + NLA_HDRLEN, 4), seen |= 1;
		else if (nla->nla_type == KTLSHD_HS_A_DONE_SOCKFD)
			memcpy(fd, b + off + NLA_HDRLEN, 4), seen |= 2;
		else if (nla->nla_type == KTLSHD_HS_A_DONE_REMOTE_AUTH)
			memcpy(&ids[(*n_ids)++], b + off + NLA_HDRLEN, 4);
		else
			return -1;
		off += NLA_ALIGN(nla->nla_len);
	}
	return off == len && seen == 3 ? 0 : -1;
}

static void test_done(void)
{
	const int32_t peers[] = { 0x1234, 0, 0x5678 };
	int32_t ids[8], fd;
	uint8_t b[256];
	uint32_t status;
	int len, n;

	/* success with the peer's identities (0 is TLS_NO_PEERID: left out) */
	len = ktlshd_nl_build_done(b, sizeof(b), FAMILY, 0, 11, peers, 3, true);
	CU_ASSERT_EQUAL(len, NLMSG_HDRLEN + GENL_HDRLEN + 4 * 8);
	CU_ASSERT_EQUAL(read_done(b, len, &status, &fd, ids, &n), 0);
	CU_ASSERT_EQUAL(status, 0);
	CU_ASSERT_EQUAL(fd, 11);
	CU_ASSERT_EQUAL(n, 2);
	CU_ASSERT_EQUAL(ids[0], 0x1234);
	CU_ASSERT_EQUAL(ids[1], 0x5678);
	/* a kernel whose DONE policy lacks REMOTE_AUTH gets none */
	len = ktlshd_nl_build_done(b, sizeof(b), FAMILY, 0, 11, peers, 3, false);
	CU_ASSERT_EQUAL(read_done(b, len, &status, &fd, ids, &n), 0);
	CU_ASSERT_EQUAL(n, 0);
	/* failure: no identities, the status as a positive errno */
	len = ktlshd_nl_build_done(b, sizeof(b), FAMILY, ETIMEDOUT, 3, peers, 3, true);
	CU_ASSERT_EQUAL(read_done(b, len, &status, &fd, ids, &n), 0);
	CU_ASSERT_EQUAL(status, ETIMEDOUT);
	CU_ASSERT_EQUAL(n, 0);
	/* the kernel's policy caps the status at MAX_ERRNO */
	len = ktlshd_nl_build_done(b, sizeof(b), FAMILY, 5000, 3, NULL, 0, true);
	CU_ASSERT_EQUAL(read_done(b, len, &status, &fd, ids, &n), 0);
	CU_ASSERT_EQUAL(status, EIO);
	/* at most five identities; no room is an error, not an overrun */
	{
		const int32_t many[7] = { 1, 2, 3, 4, 5, 6, 7 };

		len = ktlshd_nl_build_done(b, sizeof(b), FAMILY, 0, 3, many, 7, true);
		CU_ASSERT_EQUAL(read_done(b, len, &status, &fd, ids, &n), 0);
		CU_ASSERT_EQUAL(n, KTLSHD_NL_PEERIDS_MAX);
		CU_ASSERT_EQUAL(ktlshd_nl_build_done(b, 40, FAMILY, 0, 3, many, 7, true), -ENOSPC);
		CU_ASSERT_EQUAL(ktlshd_nl_build_done(b, 10, FAMILY, 0, 3, NULL, 0, true), -ENOSPC);
	}
}

static void test_status(void)
{
	CU_ASSERT_EQUAL(ktlshd_nl_status_of(0), 0);
	CU_ASSERT_EQUAL(ktlshd_nl_status_of(-ETIMEDOUT), ETIMEDOUT);
	/* authentication failures are EACCES, which NFS tells from others */
	CU_ASSERT_EQUAL(ktlshd_nl_status_of(-EKEYREJECTED), EACCES);
	CU_ASSERT_EQUAL(ktlshd_nl_status_of(-ENOKEY), EACCES);
	CU_ASSERT_EQUAL(ktlshd_nl_status_of(-ECONNRESET), ECONNRESET);
	CU_ASSERT_EQUAL(ktlshd_nl_status_of(-EPROTO), EPROTO);
	CU_ASSERT_EQUAL(ktlshd_nl_status_of(-5000), EIO);
	CU_ASSERT_EQUAL(ktlshd_nl_status_of(7), EIO);
}

/* ---- GETPOLICY ---------------------------------------------------------- */

static void policy_op_msg(struct msg *m, uint16_t family, uint32_t op, uint32_t idx)
{
	uint16_t f = family;

	msg_start(m, GENL_ID_CTRL, CTRL_CMD_GETPOLICY);
	msg_attr(m, CTRL_ATTR_FAMILY_ID, &f, 2);
	msg_nest(m, CTRL_ATTR_OP_POLICY);
	msg_nest(m, (uint16_t)op);
	msg_u32(m, CTRL_ATTR_POLICY_DO, idx);
	msg_end_nest(m);
	msg_end_nest(m);
	msg_done(m);
}

/* CTRL_ATTR_POLICY { idx { attr { NL_POLICY_TYPE_ATTR_TYPE } ... } } */
static void policy_attrs_msg(struct msg *m, uint32_t idx, const uint16_t *attrs, int n)
{
	uint16_t f = FAMILY;
	int i;

	msg_start(m, GENL_ID_CTRL, CTRL_CMD_GETPOLICY);
	msg_attr(m, CTRL_ATTR_FAMILY_ID, &f, 2);
	msg_nest(m, CTRL_ATTR_POLICY);
	msg_nest(m, (uint16_t)idx);
	for (i = 0; i < n; i++) {
		msg_nest(m, attrs[i]);
		msg_u32(m, NL_POLICY_TYPE_ATTR_TYPE, NL_ATTR_TYPE_U32);
		msg_end_nest(m);
	}
	msg_end_nest(m);
	msg_end_nest(m);
	msg_done(m);
}

static void test_policy(void)
{
	const uint16_t done_612[] = { 1, 2, 3 }, done_old[] = { 1, 2 }, other[] = { 2 };
	struct ktlshd_nl_policy pol;
	struct msg m;

	/* 6.12: DONE takes STATUS, SOCKFD, REMOTE_AUTH */
	ktlshd_nl_policy_init(&pol, FAMILY, KTLSHD_HS_CMD_DONE);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_has(&pol, KTLSHD_HS_A_DONE_REMOTE_AUTH), -ENODATA);
	policy_op_msg(&m, FAMILY, KTLSHD_HS_CMD_DONE, 1);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), 0);
	policy_attrs_msg(&m, 0, other, 1);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), 0);
	policy_attrs_msg(&m, 1, done_612, 3);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), 0);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_has(&pol, KTLSHD_HS_A_DONE_REMOTE_AUTH), 1);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_has(&pol, KTLSHD_HS_A_DONE_STATUS), 1);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_has(&pol, 4), 0);	/* a later kernel's */
	CU_ASSERT_EQUAL(ktlshd_nl_policy_has(&pol, 200), -ENODATA);

	/* a kernel without REMOTE_AUTH: answered, not assumed */
	ktlshd_nl_policy_init(&pol, FAMILY, KTLSHD_HS_CMD_DONE);
	policy_attrs_msg(&m, 0, done_old, 2);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), 0);
	policy_op_msg(&m, FAMILY, KTLSHD_HS_CMD_DONE, 0);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), 0);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_has(&pol, KTLSHD_HS_A_DONE_REMOTE_AUTH), 0);

	/* other ops, other families, and damage are not believed */
	ktlshd_nl_policy_init(&pol, FAMILY, KTLSHD_HS_CMD_DONE);
	policy_op_msg(&m, FAMILY, KTLSHD_HS_CMD_ACCEPT, 0);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), 0);
	policy_attrs_msg(&m, 0, done_612, 3);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), 0);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_has(&pol, KTLSHD_HS_A_DONE_REMOTE_AUTH), -ENODATA);
	policy_op_msg(&m, FAMILY + 1, KTLSHD_HS_CMD_DONE, 0);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), -ENOMSG);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_has(&pol, KTLSHD_HS_A_DONE_REMOTE_AUTH), -ENODATA);
	policy_op_msg(&m, FAMILY, KTLSHD_HS_CMD_DONE, 1000);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, m.len), -EBADMSG);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, 12), -EBADMSG);
	msg_start(&m, FAMILY, CTRL_CMD_GETPOLICY);
	CU_ASSERT_EQUAL(ktlshd_nl_policy_feed(&pol, m.b, msg_done(&m)), -ENOMSG);
}

/* ---- keyrings ----------------------------------------------------------- */

/* The helpers against this process's real keyrings, where it may use them
 * (a container's seccomp filter may refuse keyctl: then there is nothing
 * to test here, and the kernel suite covers them). */
static void test_keyring(void)
{
	const uint8_t payload[] = "not really a certificate\0with a NUL";
	char type[32], desc[128], name[64];
	uint8_t *data = NULL, big[3000];
	size_t len = 0;
	long ring, key;
	int32_t found;

	snprintf(name, sizeof(name), "ktlsh-test-%d", (int)getpid());
	ring = syscall(SYS_add_key, "keyring", name, NULL, 0, KEY_SPEC_PROCESS_KEYRING);
	if (ring < 0) {
		printf("\n    keyrings unavailable here (%s): helpers not exercised\n",
		       strerror(errno));
		return;
	}
	key = syscall(SYS_add_key, "user", "ktlsh test key", payload, sizeof(payload), ring);
	CU_ASSERT(key > 0);
	CU_ASSERT_EQUAL(ktlshd_keyring_read((int32_t)key, &data, &len), 0);
	CU_ASSERT_EQUAL(len, sizeof(payload));
	CU_ASSERT(data && !memcmp(data, payload, sizeof(payload)));
	ktlshd_keyring_free(data, len);
	/* a key larger than a first guess */
	memset(big, 0x5a, sizeof(big));
	key = syscall(SYS_add_key, "user", "ktlsh big key", big, sizeof(big), ring);
	CU_ASSERT_EQUAL(ktlshd_keyring_read((int32_t)key, &data, &len), 0);
	CU_ASSERT(len == sizeof(big) && data && !memcmp(data, big, sizeof(big)));
	ktlshd_keyring_free(data, len);

	CU_ASSERT_EQUAL(ktlshd_keyring_describe((int32_t)key, type, sizeof(type), desc, sizeof(desc)),
			0);
	CU_ASSERT_STRING_EQUAL(type, "user");
	CU_ASSERT_STRING_EQUAL(desc, "ktlsh big key");
	CU_ASSERT_EQUAL(ktlshd_keyring_describe((int32_t)key, type, 3, desc, sizeof(desc)),
			-ENAMETOOLONG);
	/* found by type and description, through the process keyring */
	CU_ASSERT_EQUAL(ktlshd_keyring_search(KEY_SPEC_PROCESS_KEYRING, "user", "ktlsh big key"),
			(int32_t)key);
	CU_ASSERT(ktlshd_keyring_search(KEY_SPEC_PROCESS_KEYRING, "user", "no such key") < 0);
	/* keyrings by name (as /proc/keys shows it) and by serial */
	found = ktlshd_keyring_resolve(name);
	CU_ASSERT_EQUAL(found, (int32_t)ring);
	snprintf(desc, sizeof(desc), "0x%lx", ring);
	CU_ASSERT_EQUAL(ktlshd_keyring_resolve(desc), (int32_t)ring);
	snprintf(desc, sizeof(desc), "%ld", ring);
	CU_ASSERT_EQUAL(ktlshd_keyring_resolve(desc), (int32_t)ring);
	CU_ASSERT_EQUAL(ktlshd_keyring_resolve("ktlsh-no-such-keyring"), -ENOKEY);
	CU_ASSERT_EQUAL(ktlshd_keyring_resolve("12x"), -EINVAL);
	CU_ASSERT_EQUAL(ktlshd_keyring_link((int32_t)ring), 0);
	/* bad serials */
	CU_ASSERT_EQUAL(ktlshd_keyring_read(0, &data, &len), -ENOKEY);
	CU_ASSERT(ktlshd_keyring_read(0x7ffffff0, &data, &len) < 0);
	CU_ASSERT_PTR_NULL(data);
	/* a peer certificate kept for the kernel: readable back */
	found = ktlshd_keyring_add_peer_cert(payload, sizeof(payload), "192.0.2.1");
	CU_ASSERT(found > 0);
	if (found > 0) {
		CU_ASSERT_EQUAL(ktlshd_keyring_read(found, &data, &len), 0);
		CU_ASSERT(len == sizeof(payload) && data && !memcmp(data, payload, len));
		ktlshd_keyring_free(data, len);
		CU_ASSERT_EQUAL(ktlshd_keyring_describe(found, NULL, 0, desc, sizeof(desc)), 0);
		CU_ASSERT_STRING_EQUAL(desc, "TLS x509 192.0.2.1");
	}
	(void)syscall(SYS_keyctl, KEYCTL_CLEAR, ring);
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "ACCEPT: valid replies", test_accept_valid },
		{ "ACCEPT: headers", test_accept_headers },
		{ "ACCEPT: attribute sizes and strings", test_accept_attrs },
		{ "ACCEPT: required and out-of-range values", test_accept_values },
		{ "ACCEPT: certificate nests", test_accept_certificate },
		{ "ACCEPT: 50000 random mutations", test_accept_mutations },
		{ "READY", test_ready },
		{ "DONE encoding", test_done },
		{ "DONE status mapping", test_status },
		{ "GETPOLICY: optional DONE attributes", test_policy },
		{ "keyring helpers", test_keyring },
		{ NULL, NULL },
	};

	return t_run("netlink", cases);
}
