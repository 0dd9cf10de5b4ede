/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The ktlshd control protocol: messages between libktlsh (applications, the
 * preload shim, ktlshctl) and the daemon over an AF_UNIX SOCK_SEQPACKET
 * socket. Documentation/protocol.md is the specification; this header is
 * the codec. Nothing here does I/O.
 *
 * A message is a 16-byte header followed by attributes (TLV, netlink-like):
 *
 *	magic u32 | version u8 | type u8 | flags u16 | length u32 | id u32
 *	{ type u16 | length u16 | value, zero-padded to 4 bytes }*
 *
 * Every integer on the wire is big-endian (network order): the socket is
 * local, but a fixed order keeps captured messages and fuzz seeds portable.
 *
 * HANDSHAKE_REQ travels with exactly one file descriptor (SCM_RIGHTS): a
 * connected TCP stream socket with no ULP attached. This codec never sees
 * it; the socket layer sends and checks it.
 *
 * Every fallible function returns 0 on success or a negative errno, and
 * never sets errno. Decoders tell three kinds of refusal apart:
 *   -EBADMSG  malformed: bad magic, a length that disagrees with the bytes
 *             received, a truncated or overlong attribute, a duplicate, a
 *             missing required attribute, a bad string, a value out of range
 *   -EMSGSIZE over a limit: a message above KTLSH_PROTO_MAX_MSG, a string
 *             longer than its field, more list entries than the array holds
 *             (and, when encoding, a caller buffer too small)
 *   -EPROTO   well-formed but from a protocol this side does not speak:
 *             another version, an unknown message type, an unknown
 *             attribute marked mandatory, unknown flag bits
 * Encoders return -EINVAL for a struct that could not decode (unterminated
 * or invalid string, value out of range) so that what is sent always parses.
 */
#ifndef KTLSH_PROTO_H
#define KTLSH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef KTLSH_MUST_CHECK
#define KTLSH_MUST_CHECK __attribute__((warn_unused_result))
#endif

#define KTLSH_PROTO_MAGIC	0x4b544c48u	/* "KTLH" */
#define KTLSH_PROTO_VERSION	1
#define KTLSH_PROTO_HDR_LEN	16
#define KTLSH_PROTO_MAX_MSG	65536		/* header included; a receive buffer this big always suffices */
#define KTLSH_PROTO_ALIGN(n)	(((n) + 3u) & ~(size_t)3u)

/* Message types (header byte 5). Requests go to the daemon, replies come
 * back with the request's id. */
enum ktlsh_proto_type {
	KTLSH_PROTO_HANDSHAKE_REQ	= 1,	/* + one fd via SCM_RIGHTS */
	KTLSH_PROTO_HANDSHAKE_REPLY	= 2,
	KTLSH_PROTO_STATUS_REQ		= 3,
	KTLSH_PROTO_STATUS_REPLY	= 4,
	KTLSH_PROTO_RELOAD_REQ		= 5,
	KTLSH_PROTO_RELOAD_REPLY	= 6,
	KTLSH_PROTO_ERROR		= 7,	/* answers a request that could not be taken */
};

/* Attribute types. Bit 15 of the wire type marks an attribute mandatory:
 * a receiver that does not know it (in that message) must refuse the
 * message with -EPROTO instead of skipping it. */
#define KTLSH_PROTO_ATTR_MANDATORY	0x8000u

enum ktlsh_proto_attr {
	/* HANDSHAKE_REQ */
	KTLSH_PROTO_A_ROLE		= 1,	/* u32: enum ktlsh_proto_role; required */
	KTLSH_PROTO_A_IDENTITY		= 2,	/* token: config identity/profile */
	KTLSH_PROTO_A_SERVER_NAME	= 3,	/* token: SNI and name to verify (client); expected peer (server) */
	KTLSH_PROTO_A_ALPN		= 4,	/* token, repeated: ALPN offer, in preference order */
	KTLSH_PROTO_A_TIMEOUT_MS	= 5,	/* u32: handshake deadline from receipt; 0/absent: daemon default */
	KTLSH_PROTO_A_FLAGS		= 6,	/* u32: KTLSH_PROTO_F_* */

	/* replies */
	KTLSH_PROTO_A_STATUS		= 16,	/* s32: 0 or -errno; required in every reply */
	KTLSH_PROTO_A_REASON		= 17,	/* text: why, for people */
	KTLSH_PROTO_A_ALERT_SENT	= 18,	/* u32 0..255: TLS alert description we sent */
	KTLSH_PROTO_A_ALERT_RECEIVED	= 19,	/* u32 0..255: TLS alert description the peer sent */
	KTLSH_PROTO_A_TLS_VERSION	= 20,	/* u32: 0x0301..0x0304 */
	KTLSH_PROTO_A_CIPHER		= 21,	/* token: OpenSSL's cipher suite name */
	KTLSH_PROTO_A_GROUP		= 22,	/* token: key exchange group */
	KTLSH_PROTO_A_ALPN_CHOSEN	= 23,	/* token */
	KTLSH_PROTO_A_RESUMED		= 24,	/* u32 0 or 1 */
	KTLSH_PROTO_A_PEER_SUBJECT	= 25,	/* text: peer certificate subject */
	KTLSH_PROTO_A_PEER_SAN		= 26,	/* text, repeated: "DNS:example.com", "IP:192.0.2.1" */
	KTLSH_PROTO_A_PEER_FINGERPRINT	= 27,	/* 32 bytes: SHA-256 of the peer certificate (DER) */
	KTLSH_PROTO_A_HANDSHAKE_US	= 28,	/* u64: handshake wall time, microseconds */
	KTLSH_PROTO_A_TX_SEQ		= 29,	/* u64: TX record sequence installed in the kernel */
	KTLSH_PROTO_A_RX_SEQ		= 30,	/* u64: RX record sequence installed in the kernel */

	/* STATUS_REPLY */
	KTLSH_PROTO_A_STATUS_ITEM	= 32,	/* nested { ITEM_KEY, ITEM_VALUE }, repeated */
	KTLSH_PROTO_A_ITEM_KEY		= 33,	/* token; required inside an item */
	KTLSH_PROTO_A_ITEM_VALUE	= 34,	/* text; absent means "" */

	KTLSH_PROTO_A_MAX		= 34,	/* highest type this version knows */
};

enum ktlsh_proto_role {
	KTLSH_PROTO_ROLE_CLIENT		= 1,	/* same values as enum ktlsh_role */
	KTLSH_PROTO_ROLE_SERVER		= 2,
};

/* KTLSH_PROTO_A_FLAGS bits. Unknown bits are refused (-EPROTO): a daemon
 * must not silently drop a behaviour the caller asked for. */
#define KTLSH_PROTO_F_TRUSTED_PEER	0x1u	/* TLS 1.3: set TLS_RX_EXPECT_NO_PAD */
#define KTLSH_PROTO_F_TX_ZEROCOPY_RO	0x2u	/* set TLS_TX_ZEROCOPY_RO for sendfile() */
#define KTLSH_PROTO_F_ALL		(KTLSH_PROTO_F_TRUSTED_PEER | KTLSH_PROTO_F_TX_ZEROCOPY_RO)

/* Field sizes, terminating NUL included: a field of N bytes carries at most
 * N - 1 characters on the wire. */
#define KTLSH_PROTO_IDENTITY_LEN	64
#define KTLSH_PROTO_NAME_LEN		256	/* server name, one ALPN protocol, one SAN */
#define KTLSH_PROTO_ALPN_MAX		16	/* ALPN entries */
#define KTLSH_PROTO_REASON_LEN		256
#define KTLSH_PROTO_CIPHER_LEN		64
#define KTLSH_PROTO_GROUP_LEN		32
#define KTLSH_PROTO_SUBJECT_LEN		512
#define KTLSH_PROTO_SAN_MAX		32	/* SAN entries */
#define KTLSH_PROTO_FINGERPRINT_LEN	32
#define KTLSH_PROTO_KEY_LEN		48
#define KTLSH_PROTO_VALUE_LEN		208
#define KTLSH_PROTO_ITEMS_MAX		128	/* status items */

/* Status values are -errno: 0 down to -KTLSH_PROTO_ERRNO_MAX. */
#define KTLSH_PROTO_ERRNO_MAX		4095

/* The decoded header. */
struct ktlsh_proto_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t type;
	uint16_t flags;		/* none defined in version 1; must be 0 */
	uint32_t len;		/* whole message, header included */
	uint32_t id;		/* chosen by the requester, echoed in the reply */
};

/* HANDSHAKE_REQ, STATUS_REQ, RELOAD_REQ (the last two carry no attributes
 * in version 1). Empty strings are not sent. */
struct ktlsh_proto_request {
	enum ktlsh_proto_type type;
	uint32_t id;
	enum ktlsh_proto_role role;
	uint32_t flags;				/* KTLSH_PROTO_F_* */
	uint32_t timeout_ms;			/* 0: the daemon's default */
	char identity[KTLSH_PROTO_IDENTITY_LEN];
	char server_name[KTLSH_PROTO_NAME_LEN];
	unsigned int n_alpn;
	char alpn[KTLSH_PROTO_ALPN_MAX][KTLSH_PROTO_NAME_LEN];
};

/* HANDSHAKE_REPLY, RELOAD_REPLY and ERROR (the last two carry only status
 * and reason). Zero and empty fields are not sent; absent alerts decode
 * as -1. */
struct ktlsh_proto_reply {
	enum ktlsh_proto_type type;
	uint32_t id;
	int32_t status;				/* 0 or -errno; always < 0 in ERROR */
	int32_t alert_sent;			/* TLS alert description, -1 if none */
	int32_t alert_received;
	char reason[KTLSH_PROTO_REASON_LEN];
	uint32_t tls_version;			/* 0x0303, 0x0304; 0 if none negotiated */
	char cipher[KTLSH_PROTO_CIPHER_LEN];
	char group[KTLSH_PROTO_GROUP_LEN];
	char alpn[KTLSH_PROTO_NAME_LEN];
	bool resumed;
	char peer_subject[KTLSH_PROTO_SUBJECT_LEN];
	unsigned int n_peer_sans;
	char peer_san[KTLSH_PROTO_SAN_MAX][KTLSH_PROTO_NAME_LEN];
	bool has_peer_fingerprint;
	uint8_t peer_fingerprint[KTLSH_PROTO_FINGERPRINT_LEN];
	uint64_t handshake_us;
	uint64_t tx_seq, rx_seq;
};

struct ktlsh_proto_item {
	char key[KTLSH_PROTO_KEY_LEN];		/* token, e.g. "handshakes.ok" */
	char value[KTLSH_PROTO_VALUE_LEN];	/* text, may be empty */
};

/* STATUS_REPLY (and ERROR, when decoded with ktlsh_proto_decode_status).
 * Items keep their order; ~33 KiB, so allocate it rather than put it on a
 * worker's stack. */
struct ktlsh_proto_status {
	enum ktlsh_proto_type type;
	uint32_t id;
	int32_t status;
	char reason[KTLSH_PROTO_REASON_LEN];
	unsigned int n_items;
	struct ktlsh_proto_item items[KTLSH_PROTO_ITEMS_MAX];
};

/*
 * Wire buffers, shared with the other parsers in libktlsh.
 *
 * struct ktlsh_buf builds: data[0, len) is written, cap bytes belong to the
 * caller; a put that does not fit returns -EMSGSIZE and writes nothing.
 * struct ktlsh_cur reads: a get of n bytes with fewer than n left returns
 * -EBADMSG and leaves the cursor where it was. Integers are big-endian.
 */
struct ktlsh_buf {
	uint8_t *data;
	size_t len, cap;
};

struct ktlsh_cur {
	const uint8_t *p;
	size_t left;
};

void ktlsh_buf_init(struct ktlsh_buf *b, void *mem, size_t cap);
KTLSH_MUST_CHECK int ktlsh_buf_put(struct ktlsh_buf *b, const void *src, size_t n);
KTLSH_MUST_CHECK int ktlsh_buf_put_zero(struct ktlsh_buf *b, size_t n);
KTLSH_MUST_CHECK int ktlsh_buf_put_u8(struct ktlsh_buf *b, uint8_t v);
KTLSH_MUST_CHECK int ktlsh_buf_put_u16(struct ktlsh_buf *b, uint16_t v);
KTLSH_MUST_CHECK int ktlsh_buf_put_u32(struct ktlsh_buf *b, uint32_t v);
KTLSH_MUST_CHECK int ktlsh_buf_put_u64(struct ktlsh_buf *b, uint64_t v);

void ktlsh_cur_init(struct ktlsh_cur *c, const void *buf, size_t len);
KTLSH_MUST_CHECK int ktlsh_cur_get(struct ktlsh_cur *c, void *dst, size_t n);
KTLSH_MUST_CHECK int ktlsh_cur_skip(struct ktlsh_cur *c, size_t n);
KTLSH_MUST_CHECK int ktlsh_cur_get_u8(struct ktlsh_cur *c, uint8_t *v);
KTLSH_MUST_CHECK int ktlsh_cur_get_u16(struct ktlsh_cur *c, uint16_t *v);
KTLSH_MUST_CHECK int ktlsh_cur_get_u32(struct ktlsh_cur *c, uint32_t *v);
KTLSH_MUST_CHECK int ktlsh_cur_get_u64(struct ktlsh_cur *c, uint64_t *v);
/* Split the next n bytes off c into sub (c moves past them). */
KTLSH_MUST_CHECK int ktlsh_cur_sub(struct ktlsh_cur *c, size_t n, struct ktlsh_cur *sub);

/*
 * Initialise a message struct: everything zero, alerts -1. A reply's status
 * starts as -ECANCELED and only the success path sets it to 0, so a reply
 * sent early by mistake never reads as success.
 */
void ktlsh_proto_request_init(struct ktlsh_proto_request *req, enum ktlsh_proto_type type, uint32_t id);
void ktlsh_proto_reply_init(struct ktlsh_proto_reply *rep, enum ktlsh_proto_type type, uint32_t id);
void ktlsh_proto_status_init(struct ktlsh_proto_status *st, uint32_t id);

/*
 * Append one message to out. On failure nothing is appended (out->len is
 * unchanged): -EMSGSIZE when out is too small, -EINVAL when the struct is
 * invalid (bad type for this encoder, unterminated or invalid string, a
 * count above its array, a value out of range). Only the attributes the
 * message type carries are encoded; other fields are ignored.
 */
KTLSH_MUST_CHECK int ktlsh_proto_encode_request(struct ktlsh_buf *out, const struct ktlsh_proto_request *req);
KTLSH_MUST_CHECK int ktlsh_proto_encode_reply(struct ktlsh_buf *out, const struct ktlsh_proto_reply *rep);
KTLSH_MUST_CHECK int ktlsh_proto_encode_status(struct ktlsh_buf *out, const struct ktlsh_proto_status *st);

/*
 * Check the header of the len bytes received: magic, version, length within
 * [KTLSH_PROTO_HDR_LEN, KTLSH_PROTO_MAX_MSG] and a multiple of 4, no
 * unknown flags. It does not compare hdr->len with len (a stream reader
 * uses it to frame) and does not judge the type. hdr is filled whenever
 * len >= KTLSH_PROTO_HDR_LEN, even on failure, so that an ERROR reply can
 * echo the id.
 */
KTLSH_MUST_CHECK int ktlsh_proto_decode_header(const void *buf, size_t len, struct ktlsh_proto_hdr *hdr);

/*
 * Decode exactly one message of len bytes (len must equal the header's
 * length). ktlsh_proto_decode_request takes the request types,
 * ktlsh_proto_decode_reply HANDSHAKE_REPLY, RELOAD_REPLY and ERROR,
 * ktlsh_proto_decode_status STATUS_REPLY and ERROR; a known type of the
 * other kind is -EBADMSG, an unknown type -EPROTO. Strings come out
 * NUL-terminated. On failure the struct is zeroed and a reply's status is
 * set to the error, so an unchecked result fails closed.
 */
KTLSH_MUST_CHECK int ktlsh_proto_decode_request(const void *buf, size_t len, struct ktlsh_proto_request *req);
KTLSH_MUST_CHECK int ktlsh_proto_decode_reply(const void *buf, size_t len, struct ktlsh_proto_reply *rep);
KTLSH_MUST_CHECK int ktlsh_proto_decode_status(const void *buf, size_t len, struct ktlsh_proto_status *st);

/* "HANDSHAKE_REQ", ...; "unknown" for anything else. */
const char *ktlsh_proto_type_name(unsigned int type);

#ifdef __cplusplus
}
#endif
#endif /* KTLSH_PROTO_H */
