/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The kernel's handshake upcall: the generic netlink family "handshake"
 * (Linux 6.5+, Documentation/netlink/specs/handshake.yaml), through which
 * in-kernel TLS consumers (NFS with xprtsec=tls|mtls, NVMe/TCP with TLS) ask
 * a daemon in the multicast group "tlshd" to handshake on their sockets.
 *
 * netlink.c serves it; the message codec (netlink_msg.c) is apart from the
 * sockets so unit tests can feed it malformed messages
 * (tests/unit/test_netlink.c); keyring.c reads the kernel's keyrings.
 * Functions return 0 or a negative errno; none of them sets errno.
 */
#ifndef KTLSHD_NETLINK_H
#define KTLSHD_NETLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The family's constants, from the spec (a stable uapi). Debian 12's headers
 * (Linux 6.1) have no <linux/handshake.h>; where they do, the values are
 * checked against it in netlink.c.
 */
#define KTLSHD_HS_FAMILY_NAME		"handshake"
#define KTLSHD_HS_FAMILY_VERSION	1
#define KTLSHD_HS_MCGRP_TLSHD		"tlshd"

#define KTLSHD_HS_HANDLER_CLASS_TLSHD	1

#define KTLSHD_HS_MSG_TYPE_CLIENTHELLO	1
#define KTLSHD_HS_MSG_TYPE_SERVERHELLO	2

#define KTLSHD_HS_AUTH_UNAUTH		1
#define KTLSHD_HS_AUTH_PSK		2
#define KTLSHD_HS_AUTH_X509		3

#define KTLSHD_HS_A_X509_CERT		1	/* s32 key serial */
#define KTLSHD_HS_A_X509_PRIVKEY	2	/* s32 key serial */
#define KTLSHD_HS_A_X509_MAX		2

#define KTLSHD_HS_A_ACCEPT_SOCKFD	1	/* s32 */
#define KTLSHD_HS_A_ACCEPT_HANDLER_CLASS 2	/* u32 */
#define KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE	3	/* u32 */
#define KTLSHD_HS_A_ACCEPT_TIMEOUT	4	/* u32, ms */
#define KTLSHD_HS_A_ACCEPT_AUTH_MODE	5	/* u32 */
#define KTLSHD_HS_A_ACCEPT_PEER_IDENTITY 6	/* u32 key serial, multi */
#define KTLSHD_HS_A_ACCEPT_CERTIFICATE	7	/* nest of X509, multi */
#define KTLSHD_HS_A_ACCEPT_PEERNAME	8	/* string */
#define KTLSHD_HS_A_ACCEPT_KEYRING	9	/* u32 key serial (Linux 6.17+) */
#define KTLSHD_HS_A_ACCEPT_MAX		9	/* what this code knows */

#define KTLSHD_HS_A_DONE_STATUS		1	/* u32, positive errno */
#define KTLSHD_HS_A_DONE_SOCKFD		2	/* s32 */
#define KTLSHD_HS_A_DONE_REMOTE_AUTH	3	/* u32 key serial, multi */

#define KTLSHD_HS_CMD_READY		1
#define KTLSHD_HS_CMD_ACCEPT		2
#define KTLSHD_HS_CMD_DONE		3

/* The kernel keeps at most this many peer identities per request
 * (struct tls_handshake_req.th_peerid[5]). */
#define KTLSHD_NL_PEERIDS_MAX		5
/* A peer name is a host name or an address literal. */
#define KTLSHD_NL_PEERNAME_MAX		255
/* The kernel's MAX_ERRNO: DONE's status policy. */
#define KTLSHD_NL_STATUS_MAX		4095

/* One ACCEPT reply, validated. */
struct ktlshd_nl_accept {
	int sockfd;			/* -1: absent; else a descriptor now ours */
	uint32_t message_type;		/* KTLSHD_HS_MSG_TYPE_* */
	uint32_t auth_mode;		/* KTLSHD_HS_AUTH_* */
	uint32_t timeout_ms;		/* 0: none given */
	int32_t peerids[KTLSHD_NL_PEERIDS_MAX];
	unsigned int n_peerids;
	int32_t cert_serial;		/* 0: none */
	int32_t privkey_serial;		/* 0: none */
	int32_t keyring;		/* 0: none (before 6.17 the kernel links it
					 * into the process keyring instead) */
	char peername[KTLSHD_NL_PEERNAME_MAX + 1];	/* "": none */
	unsigned int unknown_attrs;	/* of types this code does not know */
};

/*
 * Parse one netlink message (header included, len bytes available) that
 * should be the kernel's reply to ACCEPT from family_id. Every attribute is
 * checked: exact sizes for integers, NUL-terminated bounded strings, known
 * message types and auth modes, at most KTLSHD_NL_PEERIDS_MAX identities,
 * one certificate nest, no repeated single attributes. Attribute types this
 * code does not know are counted and skipped (a newer kernel).
 *
 * Returns 0, or -EBADMSG (malformed), -EPROTO (well formed but not a valid
 * request: unknown type, missing socket), -ENOMSG (not an ACCEPT reply).
 * Whatever the result, out->sockfd is the descriptor the message carried if
 * it could be read (so the caller can report DONE on it and close it), else
 * -1. why (if whylen) says what was wrong.
 */
int ktlshd_nl_parse_accept(const void *msg, size_t len, uint16_t family_id,
			   struct ktlshd_nl_accept *out, char *why, size_t whylen);

/*
 * Is this message a READY notification for the tlshd handler class from
 * family_id? (A READY without a class counts: the kernel always sends one.)
 */
bool ktlshd_nl_is_ready(const void *msg, size_t len, uint16_t family_id);

/*
 * Encode a DONE request into buf (nlmsghdr included, seq/port 0: the sender
 * fills them). status is a positive errno (0: success), clamped to
 * KTLSHD_NL_STATUS_MAX; peer identities are added only with remote_auth
 * (what the kernel's DONE policy takes). Returns the length, or -ENOSPC.
 */
int ktlshd_nl_build_done(void *buf, size_t cap, uint16_t family_id, uint32_t status,
			 int sockfd, const int32_t *peerids, unsigned int n_peerids,
			 bool remote_auth);

/*
 * What a CTRL_CMD_GETPOLICY dump says about the DONE operation's request
 * policy. Feed each dump message to ktlshd_nl_policy_feed(); then
 * ktlshd_nl_policy_has() answers whether DONE accepts an attribute type.
 */
struct ktlshd_nl_policy {
	uint16_t family_id;
	uint32_t op;			/* the operation asked about */
	int op_policy_idx;		/* -1 until the op message is seen */
	/* attribute types seen, per policy index (bit t of word idx) */
	uint64_t attrs[8];
	bool seen_any;
};
void ktlshd_nl_policy_init(struct ktlshd_nl_policy *pol, uint16_t family_id, uint32_t op);
int ktlshd_nl_policy_feed(struct ktlshd_nl_policy *pol, const void *msg, size_t len);
/* 1: accepted, 0: not in the policy, -ENODATA: the dump said nothing useful. */
int ktlshd_nl_policy_has(const struct ktlshd_nl_policy *pol, unsigned int attr);

/* DONE's status for a handshake outcome (-errno from the workers). */
uint32_t ktlshd_nl_status_of(int err);

/* ---- keyring.c: the kernel keyrings the upcall takes material from ---- */

/* keyctl(KEYCTL_READ) into a new buffer; *len its length. Free with
 * ktlshd_keyring_free() (it is wiped). */
int ktlshd_keyring_read(int32_t serial, uint8_t **data, size_t *len);
void ktlshd_keyring_free(uint8_t *data, size_t len);
/* The key's description (after the last ';' of KEYCTL_DESCRIBE) and type. */
int ktlshd_keyring_describe(int32_t serial, char *type, size_t typelen, char *desc,
			    size_t desclen);
/* KEYCTL_SEARCH for a key of type whose description is desc, starting
 * at keyring (a serial or a KEY_SPEC_* value); returns the serial or -errno. */
int32_t ktlshd_keyring_search(int32_t keyring, const char *type, const char *desc);
/* A keyring by name (as /proc/keys lists it) or by serial ("0x1c8b...",
 * decimal); returns the serial or -errno. */
int32_t ktlshd_keyring_resolve(const char *name);
/* Link a keyring into the daemon's process keyring (shared by every
 * thread), so searches from any worker find what it holds. */
int ktlshd_keyring_link(int32_t keyring);
/* Store a verified peer certificate (DER) as a key the kernel consumer can
 * be told about; returns its serial or -errno. */
int32_t ktlshd_keyring_add_peer_cert(const uint8_t *der, size_t len, const char *peer);

#endif /* KTLSHD_NETLINK_H */
