// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Unit tests for the control-protocol codec (libktlsh/proto.c): round trips
 * of every message, and every way a message from another process can be
 * wrong. Decoders always run on an exact-size heap copy of the input, so
 * that under AddressSanitizer a read one byte past the message is caught.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <ktlsh/proto.h>

#define EXPECT(expr, want) do {							\
	int r_ = (expr);							\
	if (r_ != (want))							\
		fprintf(stderr, "\n%s:%d: %s = %d, want %d\n",			\
			__FILE__, __LINE__, #expr, r_, (int)(want));		\
	CU_ASSERT(r_ == (want));						\
} while (0)

/* ---- decoding on exact-size copies ---- */

enum dec_kind { DEC_REQ, DEC_REPLY, DEC_STATUS };

static struct ktlsh_proto_request g_req, g_req2;
static struct ktlsh_proto_reply g_rep, g_rep2;
static struct ktlsh_proto_status g_st, g_st2;

static uint8_t *dup_exact(const void *buf, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	if (len)
		memcpy(p, buf, len);
	return p;
}

static int dec_req(const void *buf, size_t len, struct ktlsh_proto_request *req)
{
	uint8_t *p = dup_exact(buf, len);
	int ret = ktlsh_proto_decode_request(p, len, req);

	free(p);
	return ret;
}

static int dec_rep(const void *buf, size_t len, struct ktlsh_proto_reply *rep)
{
	uint8_t *p = dup_exact(buf, len);
	int ret = ktlsh_proto_decode_reply(p, len, rep);

	free(p);
	return ret;
}

static int dec_st(const void *buf, size_t len, struct ktlsh_proto_status *st)
{
	uint8_t *p = dup_exact(buf, len);
	int ret = ktlsh_proto_decode_status(p, len, st);

	free(p);
	return ret;
}

static int dec_any(enum dec_kind k, const void *buf, size_t len)
{
	switch (k) {
	case DEC_REQ:
		return dec_req(buf, len, &g_req2);
	case DEC_REPLY:
		return dec_rep(buf, len, &g_rep2);
	case DEC_STATUS:
		return dec_st(buf, len, &g_st2);
	}
	return -1;
}

/* Whatever decoded must encode again (the decoder is no laxer than the
 * encoder) and decode to the same struct. */
static void reencode_check(enum dec_kind k)
{
	static uint8_t mem[KTLSH_PROTO_MAX_MSG];
	struct ktlsh_buf b;

	ktlsh_buf_init(&b, mem, sizeof(mem));
	switch (k) {
	case DEC_REQ:
		EXPECT(ktlsh_proto_encode_request(&b, &g_req2), 0);
		EXPECT(dec_req(mem, b.len, &g_req), 0);
		CU_ASSERT(memcmp(&g_req, &g_req2, sizeof(g_req)) == 0);
		break;
	case DEC_REPLY:
		EXPECT(ktlsh_proto_encode_reply(&b, &g_rep2), 0);
		EXPECT(dec_rep(mem, b.len, &g_rep), 0);
		CU_ASSERT(memcmp(&g_rep, &g_rep2, sizeof(g_rep)) == 0);
		break;
	case DEC_STATUS:
		EXPECT(ktlsh_proto_encode_status(&b, &g_st2), 0);
		EXPECT(dec_st(mem, b.len, &g_st), 0);
		CU_ASSERT(memcmp(&g_st, &g_st2, sizeof(g_st)) == 0);
		break;
	}
}

/* ---- raw message builder, for messages the encoder refuses to make ---- */

static struct {
	uint8_t mem[KTLSH_PROTO_MAX_MSG + 4096];
	struct ktlsh_buf b;
} R;

static void raw_begin(unsigned int type, uint32_t id)
{
	ktlsh_buf_init(&R.b, R.mem, sizeof(R.mem));
	CU_ASSERT_FATAL(ktlsh_buf_put_u32(&R.b, KTLSH_PROTO_MAGIC) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put_u8(&R.b, KTLSH_PROTO_VERSION) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put_u8(&R.b, (uint8_t)type) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put_u16(&R.b, 0) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put_u32(&R.b, 0) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put_u32(&R.b, id) == 0);
}

/* An attribute whose length field says alen (normally 4 + len). */
static void raw_attr_len(uint16_t type, uint16_t alen, const void *val, size_t len)
{
	CU_ASSERT_FATAL(ktlsh_buf_put_u16(&R.b, type) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put_u16(&R.b, alen) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put(&R.b, val, len) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put_zero(&R.b, KTLSH_PROTO_ALIGN(len) - len) == 0);
}

static void raw_attr(uint16_t type, const void *val, size_t len)
{
	raw_attr_len(type, (uint16_t)(4 + len), val, len);
}

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void raw_u32(uint16_t type, uint32_t v)
{
	uint8_t w[4];

	be32(w, v);
	raw_attr(type, w, sizeof(w));
}

static void raw_u64(uint16_t type, uint64_t v)
{
	uint8_t w[8];
	int i;

	for (i = 0; i < 8; i++)
		w[i] = (uint8_t)(v >> (56 - 8 * i));
	raw_attr(type, w, sizeof(w));
}

static void raw_str(uint16_t type, const char *s)
{
	raw_attr(type, s, strlen(s));
}

static void raw_set_len(uint32_t len)
{
	be32(R.mem + 8, len);
}

static size_t raw_end(void)
{
	raw_set_len((uint32_t)R.b.len);
	return R.b.len;
}

/* A nested STATUS_ITEM from inner attributes built by the caller between
 * raw_item_begin() and raw_item_end(). */
static size_t raw_item_begin(void)
{
	size_t at = R.b.len;

	CU_ASSERT_FATAL(ktlsh_buf_put_u16(&R.b, KTLSH_PROTO_A_STATUS_ITEM) == 0);
	CU_ASSERT_FATAL(ktlsh_buf_put_u16(&R.b, 0) == 0);
	return at;
}

static void raw_item_end(size_t at)
{
	size_t n = R.b.len - at;

	R.mem[at + 2] = (uint8_t)(n >> 8);
	R.mem[at + 3] = (uint8_t)n;
}

/* ---- sample messages ---- */

static void fill_request(struct ktlsh_proto_request *r)
{
	ktlsh_proto_request_init(r, KTLSH_PROTO_HANDSHAKE_REQ, 0x01020304);
	r->role = KTLSH_PROTO_ROLE_CLIENT;
	r->flags = KTLSH_PROTO_F_TRUSTED_PEER | KTLSH_PROTO_F_TX_ZEROCOPY_RO;
	r->timeout_ms = 5000;
	strcpy(r->identity, "web-frontend");
	strcpy(r->server_name, "example.com");
	r->n_alpn = 2;
	strcpy(r->alpn[0], "h2");
	strcpy(r->alpn[1], "http/1.1");
}

static void fill_reply(struct ktlsh_proto_reply *r)
{
	int i;

	ktlsh_proto_reply_init(r, KTLSH_PROTO_HANDSHAKE_REPLY, 0xfffffffe);
	r->status = 0;
	r->tls_version = 0x0304;
	strcpy(r->cipher, "TLS_AES_128_GCM_SHA256");
	strcpy(r->group, "x25519");
	strcpy(r->alpn, "h2");
	r->resumed = true;
	strcpy(r->peer_subject, "CN=client.example.com,O=Grüße AG");
	r->n_peer_sans = 3;
	strcpy(r->peer_san[0], "DNS:client.example.com");
	strcpy(r->peer_san[1], "IP:192.0.2.1");
	strcpy(r->peer_san[2], "email:ops@example.com");
	r->has_peer_fingerprint = true;
	for (i = 0; i < KTLSH_PROTO_FINGERPRINT_LEN; i++)
		r->peer_fingerprint[i] = (uint8_t)(0xa0 + i);
	r->handshake_us = 1234;
	r->tx_seq = 2;
	r->rx_seq = 0x1122334455667788ull;
}

static void fill_fail_reply(struct ktlsh_proto_reply *r)
{
	ktlsh_proto_reply_init(r, KTLSH_PROTO_HANDSHAKE_REPLY, 7);
	r->status = -EKEYREJECTED;
	r->alert_sent = 42;		/* bad_certificate */
	r->alert_received = 0;		/* close_notify: 0 is a real alert, not "none" */
	strcpy(r->reason, "certificate verify failed: unable to get local issuer certificate");
	r->tls_version = 0x0303;
	r->handshake_us = 99;
}

static void fill_status(struct ktlsh_proto_status *st, unsigned int n)
{
	unsigned int i;

	ktlsh_proto_status_init(st, 42);
	st->status = 0;
	st->n_items = n;
	for (i = 0; i < n; i++) {
		snprintf(st->items[i].key, sizeof(st->items[i].key), "counter.%u", i);
		if (i % 3)
			snprintf(st->items[i].value, sizeof(st->items[i].value), "%u handshakes", i * 1000);
	}
}

struct sample {
	enum dec_kind kind;
	const char *name;
	uint8_t *buf;
	size_t len;
};

#define N_SAMPLES 9
static struct sample samples[N_SAMPLES];

/* Runs as the suite's init, outside any test, so it reports by return. */
static int make_samples(void)
{
	static uint8_t arena[8 * KTLSH_PROTO_MAX_MSG];
	struct ktlsh_buf b;
	struct ktlsh_proto_request req;
	struct ktlsh_proto_reply rep;
	size_t at;
	int n = 0;

#define ADD(k, nm, call) do {							\
	at = b.len;								\
	if ((call) != 0)							\
		return -1;							\
	samples[n].kind = (k);							\
	samples[n].name = (nm);							\
	samples[n].buf = arena + at;						\
	samples[n].len = b.len - at;						\
	n++;									\
} while (0)

	ktlsh_buf_init(&b, arena, sizeof(arena));
	fill_request(&req);
	ADD(DEC_REQ, "handshake req", ktlsh_proto_encode_request(&b, &req));
	ktlsh_proto_request_init(&req, KTLSH_PROTO_STATUS_REQ, 1);
	ADD(DEC_REQ, "status req", ktlsh_proto_encode_request(&b, &req));
	ktlsh_proto_request_init(&req, KTLSH_PROTO_RELOAD_REQ, 2);
	ADD(DEC_REQ, "reload req", ktlsh_proto_encode_request(&b, &req));
	fill_reply(&rep);
	ADD(DEC_REPLY, "handshake reply", ktlsh_proto_encode_reply(&b, &rep));
	fill_fail_reply(&rep);
	ADD(DEC_REPLY, "failed handshake reply", ktlsh_proto_encode_reply(&b, &rep));
	ktlsh_proto_reply_init(&rep, KTLSH_PROTO_RELOAD_REPLY, 3);
	rep.status = -EINVAL;
	strcpy(rep.reason, "/etc/ktlsh/ktlshd.conf:12: unknown key 'ciphres'");
	ADD(DEC_REPLY, "reload reply", ktlsh_proto_encode_reply(&b, &rep));
	ktlsh_proto_reply_init(&rep, KTLSH_PROTO_ERROR, 4);
	rep.status = -EPROTO;
	strcpy(rep.reason, "unsupported message type");
	ADD(DEC_REPLY, "error", ktlsh_proto_encode_reply(&b, &rep));
	fill_status(&g_st, 5);
	ADD(DEC_STATUS, "status reply", ktlsh_proto_encode_status(&b, &g_st));
	ktlsh_proto_status_init(&g_st, 5);
	g_st.type = KTLSH_PROTO_ERROR;
	g_st.status = -EACCES;
	ADD(DEC_STATUS, "status error", ktlsh_proto_encode_status(&b, &g_st));
#undef ADD
	return n == N_SAMPLES ? 0 : -1;
}

/* ---- buffers and cursors ---- */

static void test_buf_bounds(void)
{
	uint8_t mem[8];
	struct ktlsh_buf b;

	ktlsh_buf_init(&b, mem, 7);
	EXPECT(ktlsh_buf_put_u32(&b, 0x11223344), 0);
	EXPECT(ktlsh_buf_put_u32(&b, 1), -EMSGSIZE);
	CU_ASSERT(b.len == 4);
	EXPECT(ktlsh_buf_put_u16(&b, 0x5566), 0);
	EXPECT(ktlsh_buf_put_zero(&b, 2), -EMSGSIZE);
	EXPECT(ktlsh_buf_put_u8(&b, 0x77), 0);
	EXPECT(ktlsh_buf_put_u8(&b, 0), -EMSGSIZE);
	EXPECT(ktlsh_buf_put(&b, "", 0), 0);
	CU_ASSERT(b.len == 7);
	CU_ASSERT(memcmp(mem, "\x11\x22\x33\x44\x55\x66\x77", 7) == 0);

	/* A length past the capacity is a broken buffer, not a full one. */
	b.len = 9;
	EXPECT(ktlsh_buf_put_u8(&b, 0), -EINVAL);

	ktlsh_buf_init(&b, NULL, 100);
	CU_ASSERT(b.cap == 0);
	EXPECT(ktlsh_buf_put_u8(&b, 0), -EMSGSIZE);
	EXPECT(ktlsh_buf_put_u64(&b, 0), -EMSGSIZE);
}

static void test_cur_bounds(void)
{
	static const uint8_t in[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 };
	struct ktlsh_cur c, sub;
	uint64_t v64;
	uint32_t v32;
	uint16_t v16;
	uint8_t v8, out[4];

	ktlsh_cur_init(&c, in, sizeof(in));
	EXPECT(ktlsh_cur_get_u64(&c, &v64), 0);
	CU_ASSERT(v64 == 0x0102030405060708ull);
	EXPECT(ktlsh_cur_get_u32(&c, &v32), -EBADMSG);
	CU_ASSERT(c.left == 3);			/* a failed get does not move */
	EXPECT(ktlsh_cur_get_u16(&c, &v16), 0);
	CU_ASSERT(v16 == 0x090a);
	EXPECT(ktlsh_cur_get(&c, out, 2), -EBADMSG);
	EXPECT(ktlsh_cur_get_u8(&c, &v8), 0);
	CU_ASSERT(v8 == 11);
	EXPECT(ktlsh_cur_get_u8(&c, &v8), -EBADMSG);
	EXPECT(ktlsh_cur_skip(&c, 1), -EBADMSG);
	EXPECT(ktlsh_cur_skip(&c, 0), 0);

	ktlsh_cur_init(&c, in, sizeof(in));
	EXPECT(ktlsh_cur_sub(&c, 12, &sub), -EBADMSG);
	EXPECT(ktlsh_cur_sub(&c, 4, &sub), 0);
	CU_ASSERT(sub.left == 4 && c.left == 7);
	EXPECT(ktlsh_cur_get_u32(&sub, &v32), 0);
	CU_ASSERT(v32 == 0x01020304);
	EXPECT(ktlsh_cur_get_u8(&sub, &v8), -EBADMSG);	/* the sub-cursor ends where it was cut */
	EXPECT(ktlsh_cur_skip(&c, 7), 0);
	CU_ASSERT(c.left == 0);

	ktlsh_cur_init(&c, NULL, 50);
	CU_ASSERT(c.left == 0);
}

/* ---- round trips ---- */

static void test_wire_bytes(void)
{
	/* The smallest HANDSHAKE_REQ, byte for byte: pins the byte order and
	 * the layout Documentation/protocol.md describes. */
	static const uint8_t want[] = {
		'K', 'T', 'L', 'H', 1, 1, 0, 0, 0, 0, 0, 40, 0, 0, 0, 9,
		0, 1, 0, 8, 0, 0, 0, 2,			/* ROLE = server */
		0, 4, 0, 6, 'h', '2', 0, 0,		/* ALPN "h2", 2 bytes of padding */
		0, 5, 0, 8, 0, 0, 0x03, 0xe8,		/* TIMEOUT_MS = 1000 */
	};
	struct ktlsh_proto_request req;
	uint8_t mem[64];
	struct ktlsh_buf b;

	ktlsh_proto_request_init(&req, KTLSH_PROTO_HANDSHAKE_REQ, 9);
	req.role = KTLSH_PROTO_ROLE_SERVER;
	req.n_alpn = 1;
	strcpy(req.alpn[0], "h2");
	req.timeout_ms = 1000;
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_request(&b, &req), 0);
	CU_ASSERT(b.len == sizeof(want));
	CU_ASSERT(memcmp(mem, want, sizeof(want)) == 0);
	EXPECT(dec_req(want, sizeof(want), &g_req), 0);
	CU_ASSERT(memcmp(&g_req, &req, sizeof(req)) == 0);
}

static void test_roundtrip_requests(void)
{
	static uint8_t mem[KTLSH_PROTO_MAX_MSG];
	struct ktlsh_proto_request req;
	struct ktlsh_buf b;
	unsigned int i;

	fill_request(&req);
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_request(&b, &req), 0);
	EXPECT(dec_req(mem, b.len, &g_req), 0);
	CU_ASSERT(memcmp(&g_req, &req, sizeof(req)) == 0);

	/* Only the role: everything else takes its default. */
	ktlsh_proto_request_init(&req, KTLSH_PROTO_HANDSHAKE_REQ, 0);
	req.role = KTLSH_PROTO_ROLE_SERVER;
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_request(&b, &req), 0);
	CU_ASSERT(b.len == KTLSH_PROTO_HDR_LEN + 8);
	EXPECT(dec_req(mem, b.len, &g_req), 0);
	CU_ASSERT(memcmp(&g_req, &req, sizeof(req)) == 0);

	/* Every field at its largest. */
	ktlsh_proto_request_init(&req, KTLSH_PROTO_HANDSHAKE_REQ, UINT32_MAX);
	req.role = KTLSH_PROTO_ROLE_CLIENT;
	req.flags = KTLSH_PROTO_F_ALL;
	req.timeout_ms = UINT32_MAX;
	memset(req.identity, 'i', sizeof(req.identity) - 1);
	memset(req.server_name, 's', sizeof(req.server_name) - 1);
	req.n_alpn = KTLSH_PROTO_ALPN_MAX;
	for (i = 0; i < KTLSH_PROTO_ALPN_MAX; i++)
		memset(req.alpn[i], 'a' + i, sizeof(req.alpn[i]) - 1);
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_request(&b, &req), 0);
	EXPECT(dec_req(mem, b.len, &g_req), 0);
	CU_ASSERT(memcmp(&g_req, &req, sizeof(req)) == 0);

	ktlsh_proto_request_init(&req, KTLSH_PROTO_STATUS_REQ, 77);
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_request(&b, &req), 0);
	CU_ASSERT(b.len == KTLSH_PROTO_HDR_LEN);
	EXPECT(dec_req(mem, b.len, &g_req), 0);
	CU_ASSERT(g_req.type == KTLSH_PROTO_STATUS_REQ && g_req.id == 77);

	ktlsh_proto_request_init(&req, KTLSH_PROTO_RELOAD_REQ, 78);
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_request(&b, &req), 0);
	EXPECT(dec_req(mem, b.len, &g_req), 0);
	CU_ASSERT(g_req.type == KTLSH_PROTO_RELOAD_REQ && g_req.id == 78);
}

static void test_roundtrip_replies(void)
{
	static uint8_t mem[KTLSH_PROTO_MAX_MSG];
	struct ktlsh_proto_reply rep;
	struct ktlsh_buf b;
	unsigned int i;

	fill_reply(&rep);
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_reply(&b, &rep), 0);
	EXPECT(dec_rep(mem, b.len, &g_rep), 0);
	CU_ASSERT(memcmp(&g_rep, &rep, sizeof(rep)) == 0);

	fill_fail_reply(&rep);
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_reply(&b, &rep), 0);
	EXPECT(dec_rep(mem, b.len, &g_rep), 0);
	CU_ASSERT(memcmp(&g_rep, &rep, sizeof(rep)) == 0);
	CU_ASSERT(g_rep.alert_received == 0 && g_rep.alert_sent == 42);

	/* Largest reply: every string full, every SAN slot used. */
	fill_reply(&rep);
	rep.status = -KTLSH_PROTO_ERRNO_MAX;
	rep.alert_sent = rep.alert_received = 255;
	memset(rep.reason, 'r', sizeof(rep.reason) - 1);
	memset(rep.cipher, 'c', sizeof(rep.cipher) - 1);
	memset(rep.group, 'g', sizeof(rep.group) - 1);
	memset(rep.alpn, 'a', sizeof(rep.alpn) - 1);
	memset(rep.peer_subject, 's', sizeof(rep.peer_subject) - 1);
	rep.n_peer_sans = KTLSH_PROTO_SAN_MAX;
	for (i = 0; i < KTLSH_PROTO_SAN_MAX; i++)
		memset(rep.peer_san[i], 'A' + (i % 26), sizeof(rep.peer_san[i]) - 1);
	rep.handshake_us = rep.tx_seq = rep.rx_seq = UINT64_MAX;
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_reply(&b, &rep), 0);
	CU_ASSERT(b.len <= KTLSH_PROTO_MAX_MSG);
	EXPECT(dec_rep(mem, b.len, &g_rep), 0);
	CU_ASSERT(memcmp(&g_rep, &rep, sizeof(rep)) == 0);

	ktlsh_proto_reply_init(&rep, KTLSH_PROTO_RELOAD_REPLY, 5);
	rep.status = 0;
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_reply(&b, &rep), 0);
	EXPECT(dec_rep(mem, b.len, &g_rep), 0);
	CU_ASSERT(memcmp(&g_rep, &rep, sizeof(rep)) == 0);

	/* ERROR carries status and reason only; the rest is not sent. */
	fill_reply(&rep);
	rep.type = KTLSH_PROTO_ERROR;
	rep.status = -EMSGSIZE;
	strcpy(rep.reason, "message too long");
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_reply(&b, &rep), 0);
	EXPECT(dec_rep(mem, b.len, &g_rep), 0);
	CU_ASSERT(g_rep.type == KTLSH_PROTO_ERROR && g_rep.id == rep.id);
	CU_ASSERT(g_rep.status == -EMSGSIZE);
	CU_ASSERT_STRING_EQUAL(g_rep.reason, "message too long");
	CU_ASSERT(g_rep.tls_version == 0 && g_rep.cipher[0] == 0 && g_rep.n_peer_sans == 0);
	CU_ASSERT(g_rep.alert_sent == -1 && g_rep.alert_received == -1 && !g_rep.resumed);
	/* ...and decode_status takes it too, for ktlshctl. */
	EXPECT(dec_st(mem, b.len, &g_st), 0);
	CU_ASSERT(g_st.type == KTLSH_PROTO_ERROR && g_st.status == -EMSGSIZE && g_st.n_items == 0);
}

static void test_roundtrip_status(void)
{
	static uint8_t mem[KTLSH_PROTO_MAX_MSG];
	static struct ktlsh_proto_status st;
	struct ktlsh_buf b;
	unsigned int i;

	fill_status(&st, 10);
	strcpy(st.items[0].value, "ktlshd 0.1 — ünïcödé ok");
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_status(&b, &st), 0);
	EXPECT(dec_st(mem, b.len, &g_st), 0);
	CU_ASSERT(memcmp(&g_st, &st, sizeof(st)) == 0);
	CU_ASSERT(g_st.items[1].value[0] && !g_st.items[3].value[0]);

	/* Every item, every string full. */
	ktlsh_proto_status_init(&st, 0);
	st.status = 0;
	memset(st.reason, '.', sizeof(st.reason) - 1);
	st.n_items = KTLSH_PROTO_ITEMS_MAX;
	for (i = 0; i < st.n_items; i++) {
		memset(st.items[i].key, 'k', sizeof(st.items[i].key) - 1);
		memset(st.items[i].value, ' ', sizeof(st.items[i].value) - 1);
	}
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_status(&b, &st), 0);
	CU_ASSERT(b.len <= KTLSH_PROTO_MAX_MSG);
	EXPECT(dec_st(mem, b.len, &g_st), 0);
	CU_ASSERT(memcmp(&g_st, &st, sizeof(st)) == 0);

	/* No items at all. */
	fill_status(&st, 0);
	ktlsh_buf_init(&b, mem, sizeof(mem));
	EXPECT(ktlsh_proto_encode_status(&b, &st), 0);
	EXPECT(dec_st(mem, b.len, &g_st), 0);
	CU_ASSERT(memcmp(&g_st, &st, sizeof(st)) == 0);
}

/* Messages appended to one buffer stay separate, and the header alone
 * frames them (a stream reader's view). */
static void test_framing(void)
{
	struct ktlsh_proto_hdr hdr;
	size_t off = 0;
	int i;

	for (i = 0; i < N_SAMPLES; i++) {
		EXPECT(ktlsh_proto_decode_header(samples[i].buf, samples[i].len, &hdr), 0);
		CU_ASSERT(hdr.len == samples[i].len);
		CU_ASSERT(hdr.magic == KTLSH_PROTO_MAGIC && hdr.version == KTLSH_PROTO_VERSION);
		CU_ASSERT(samples[i].buf == samples[0].buf + off);
		EXPECT(dec_any(samples[i].kind, samples[i].buf, samples[i].len), 0);
		off += samples[i].len;
	}
	/* Two messages in one packet are one lie about the length. */
	EXPECT(dec_req(samples[1].buf, samples[1].len + samples[2].len, &g_req), -EBADMSG);
}

/* ---- truncation and corruption ---- */

static void test_truncated_every_offset(void)
{
	int i;
	size_t n;

	for (i = 0; i < N_SAMPLES; i++) {
		for (n = 0; n < samples[i].len; n++) {
			int ret = dec_any(samples[i].kind, samples[i].buf, n);

			if (ret != -EBADMSG)
				fprintf(stderr, "\n%s cut at %zu: %d\n", samples[i].name, n, ret);
			CU_ASSERT(ret == -EBADMSG);
		}
	}
}

/*
 * Truncated, with the header's length patched to agree: now the attributes
 * are what lies. A cut at an attribute boundary may decode (fewer
 * attributes); anywhere else it must fail. Either way nothing past the
 * buffer is read.
 */
static void test_truncated_consistent_header(void)
{
	static uint8_t tmp[KTLSH_PROTO_MAX_MSG];
	int i, ok;
	size_t n;

	for (i = 0; i < N_SAMPLES; i++) {
		ok = 0;
		for (n = KTLSH_PROTO_HDR_LEN; n < samples[i].len; n++) {
			int ret;

			memcpy(tmp, samples[i].buf, n);
			be32(tmp + 8, (uint32_t)n);
			ret = dec_any(samples[i].kind, tmp, n);
			if (n % 4)
				CU_ASSERT(ret == -EBADMSG);
			if (!ret) {
				ok++;
				reencode_check(samples[i].kind);
			} else {
				CU_ASSERT(ret == -EBADMSG);
			}
		}
		/* Cutting inside an attribute never succeeds; some boundary
		 * cuts do (a reply with just its status, say). */
		CU_ASSERT(ok < (int)(samples[i].len / 4));
	}
}

/* Every single-byte change of every sample: no crash, and whatever still
 * decodes re-encodes. The unit-test cousin of the fuzzer. */
static void test_mutations(void)
{
	static uint8_t tmp[KTLSH_PROTO_MAX_MSG];
	static const uint8_t vals[] = { 0x00, 0x01, 0x04, 0x20, 0x7f, 0x80, 0xff };
	int i, ret;
	size_t n, v;

	for (i = 0; i < N_SAMPLES; i++) {
		for (n = 0; n < samples[i].len; n++) {
			for (v = 0; v < sizeof(vals); v++) {
				memcpy(tmp, samples[i].buf, samples[i].len);
				if (tmp[n] == vals[v])
					continue;
				tmp[n] = vals[v];
				ret = dec_any(samples[i].kind, tmp, samples[i].len);
				CU_ASSERT(ret == 0 || ret == -EBADMSG || ret == -EMSGSIZE || ret == -EPROTO);
				if (!ret)
					reencode_check(samples[i].kind);
			}
		}
	}
}

static void test_trailing_bytes(void)
{
	static uint8_t tmp[KTLSH_PROTO_MAX_MSG + 8];
	int i;

	for (i = 0; i < N_SAMPLES; i++) {
		memcpy(tmp, samples[i].buf, samples[i].len);
		memset(tmp + samples[i].len, 0, 8);
		/* header smaller than the bytes received */
		EXPECT(dec_any(samples[i].kind, tmp, samples[i].len + 4), -EBADMSG);
		EXPECT(dec_any(samples[i].kind, tmp, samples[i].len + 1), -EBADMSG);
		/* ...even when what follows is a well-formed attribute */
		memcpy(tmp + samples[i].len, "\x70\x00\x00\x04", 4);
		EXPECT(dec_any(samples[i].kind, tmp, samples[i].len + 4), -EBADMSG);
		CU_ASSERT(dec_any(samples[i].kind, tmp, samples[i].len) == 0);
	}
}

/* ---- header ---- */

static void test_header(void)
{
	struct ktlsh_proto_hdr hdr;
	size_t len;

	raw_begin(KTLSH_PROTO_STATUS_REQ, 0xabcdef01);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), 0);

	R.mem[0] = 'k';				/* bad magic */
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	R.mem[0] = 'K';
	R.mem[3] = 'h';
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	R.mem[3] = 'H';

	R.mem[4] = 0;				/* other versions */
	EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);
	R.mem[4] = 2;
	EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);
	R.mem[4] = 255;
	EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);
	R.mem[4] = KTLSH_PROTO_VERSION;

	R.mem[7] = 1;				/* unknown header flag */
	EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);
	/* the header is still read, so an ERROR can echo the id */
	EXPECT(ktlsh_proto_decode_header(R.mem, len, &hdr), -EPROTO);
	CU_ASSERT(hdr.id == 0xabcdef01 && hdr.flags == 1);
	R.mem[7] = 0;
	R.mem[6] = 0x80;
	EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);
	R.mem[6] = 0;

	R.mem[5] = 0;				/* unknown message types */
	EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);
	EXPECT(dec_rep(R.mem, len, &g_rep), -EPROTO);
	R.mem[5] = 8;
	EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);
	R.mem[5] = 200;
	EXPECT(dec_st(R.mem, len, &g_st), -EPROTO);
	R.mem[5] = KTLSH_PROTO_STATUS_REQ;

	/* length lies */
	raw_set_len(len + 4);			/* bigger than the bytes received */
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	raw_set_len(len - 4);			/* smaller than the header */
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	raw_set_len(0);
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	raw_set_len(len + 2);			/* not a multiple of 4 */
	EXPECT(dec_req(R.mem, len + 2, &g_req), -EBADMSG);
	raw_set_len(KTLSH_PROTO_MAX_MSG + 4);	/* over the limit */
	EXPECT(dec_req(R.mem, len, &g_req), -EMSGSIZE);
	raw_set_len(UINT32_MAX);
	EXPECT(dec_req(R.mem, len, &g_req), -EMSGSIZE);
	EXPECT(ktlsh_proto_decode_header(R.mem, len, &hdr), -EMSGSIZE);
	raw_set_len(len);

	/* a header shorter than a header */
	EXPECT(ktlsh_proto_decode_header(R.mem, KTLSH_PROTO_HDR_LEN - 1, &hdr), -EBADMSG);
	EXPECT(ktlsh_proto_decode_header(NULL, 0, &hdr), -EBADMSG);
	EXPECT(ktlsh_proto_decode_request(NULL, 0, &g_req), -EBADMSG);
	EXPECT(ktlsh_proto_decode_reply(NULL, 100, &g_rep), -EBADMSG);

	/* a message exactly at the limit is fine; one byte over is not */
	raw_begin(KTLSH_PROTO_STATUS_REQ, 1);
	{
		static uint8_t filler[KTLSH_PROTO_MAX_MSG];
		size_t room = KTLSH_PROTO_MAX_MSG - KTLSH_PROTO_HDR_LEN;

		memset(filler, 'x', sizeof(filler));
		while (room) {
			size_t n = room > 60000 ? 60000 : room - 4;

			raw_attr(0x7000, filler, n);	/* unknown, skipped */
			room -= 4 + n;
		}
	}
	len = raw_end();
	CU_ASSERT(len == KTLSH_PROTO_MAX_MSG);
	EXPECT(dec_req(R.mem, len, &g_req), 0);
	raw_attr(0x7000, NULL, 0);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EMSGSIZE);
}

static void test_wrong_decoder(void)
{
	EXPECT(dec_rep(samples[0].buf, samples[0].len, &g_rep), -EBADMSG);	/* request */
	EXPECT(dec_st(samples[1].buf, samples[1].len, &g_st), -EBADMSG);
	EXPECT(dec_req(samples[3].buf, samples[3].len, &g_req), -EBADMSG);	/* reply */
	EXPECT(dec_st(samples[3].buf, samples[3].len, &g_st), -EBADMSG);
	EXPECT(dec_req(samples[6].buf, samples[6].len, &g_req), -EBADMSG);	/* error */
	EXPECT(dec_rep(samples[7].buf, samples[7].len, &g_rep), -EBADMSG);	/* status reply */
	EXPECT(dec_req(samples[7].buf, samples[7].len, &g_req), -EBADMSG);
}

/* ---- attributes ---- */

static void test_attr_lengths(void)
{
	static const uint8_t fp33[33];
	size_t len;

	/* attribute length below its own header */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_attr_len(KTLSH_PROTO_A_TIMEOUT_MS, 0, NULL, 0);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_attr_len(KTLSH_PROTO_A_TIMEOUT_MS, 3, NULL, 0);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);

	/* attribute running past the end of the message */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_attr_len(KTLSH_PROTO_A_IDENTITY, 4 + 8, "abcd", 4);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	/* ...by only its padding */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_attr_len(KTLSH_PROTO_A_IDENTITY, 4 + 5, "abcd", 4);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	/* the largest u16 length in a small message */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_attr_len(KTLSH_PROTO_A_ROLE, 0xffff, "\0\0\0\1", 4);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);

	/* nonzero padding */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_str(KTLSH_PROTO_A_IDENTITY, "abc");
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), 0);
	R.mem[len - 1] = ' ';
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);

	/* fixed-size values of the wrong size */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_attr(KTLSH_PROTO_A_ROLE, "\0\1", 2);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u64(KTLSH_PROTO_A_ROLE, 1);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_u32(KTLSH_PROTO_A_TX_SEQ, 1);
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);
	raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_attr(KTLSH_PROTO_A_PEER_FINGERPRINT, fp33, 31);
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);
	raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_attr(KTLSH_PROTO_A_PEER_FINGERPRINT, fp33, 33);
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);
	raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_attr(KTLSH_PROTO_A_PEER_FINGERPRINT, "0123456789abcdef0123456789abcdef", 32);
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), 0);
	CU_ASSERT(g_rep.has_peer_fingerprint && g_rep.peer_fingerprint[31] == 'f');
}

static void test_duplicates(void)
{
	size_t len;

	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);

	/* a second server name could verify one name and send another */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_str(KTLSH_PROTO_A_SERVER_NAME, "good.example");
	raw_str(KTLSH_PROTO_A_SERVER_NAME, "evil.example");
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);

	/* a duplicate marked mandatory is still a duplicate */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_u32(KTLSH_PROTO_A_ROLE | KTLSH_PROTO_ATTR_MANDATORY, 2);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);

	raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_u32(KTLSH_PROTO_A_STATUS, (uint32_t)-EIO);
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);

	raw_begin(KTLSH_PROTO_ERROR, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, (uint32_t)-EIO);
	raw_str(KTLSH_PROTO_A_REASON, "a");
	raw_str(KTLSH_PROTO_A_REASON, "b");
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);

	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	{
		size_t at = raw_item_begin();

		raw_str(KTLSH_PROTO_A_ITEM_KEY, "a");
		raw_str(KTLSH_PROTO_A_ITEM_KEY, "b");
		raw_item_end(at);
	}
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EBADMSG);

	/* repeatable ones may repeat, in order */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_str(KTLSH_PROTO_A_ALPN, "h2");
	raw_str(KTLSH_PROTO_A_ALPN, "h2");
	raw_str(KTLSH_PROTO_A_ALPN, "http/1.1");
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), 0);
	CU_ASSERT(g_req.n_alpn == 3);
	CU_ASSERT_STRING_EQUAL(g_req.alpn[2], "http/1.1");
}

static void test_missing_required(void)
{
	size_t len;

	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_str(KTLSH_PROTO_A_SERVER_NAME, "example.com");
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);

	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);

	raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	raw_str(KTLSH_PROTO_A_CIPHER, "TLS_AES_128_GCM_SHA256");
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);

	raw_begin(KTLSH_PROTO_RELOAD_REPLY, 1);
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);

	raw_begin(KTLSH_PROTO_ERROR, 1);
	raw_str(KTLSH_PROTO_A_REASON, "no status");
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);

	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EBADMSG);

	/* an item without its key */
	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	{
		size_t at = raw_item_begin();

		raw_str(KTLSH_PROTO_A_ITEM_VALUE, "orphan");
		raw_item_end(at);
	}
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EBADMSG);
	/* ...or empty */
	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_item_end(raw_item_begin());
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EBADMSG);
}

static void test_unknown_attrs(void)
{
	static const uint16_t unknown[] = { 0, 7, 15, 31, 35, 63, 64, 1000, 0x7fff };
	size_t len, i;

	for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		/* optional: skipped, the rest decodes as without it */
		raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
		raw_attr(unknown[i], "future", 6);
		raw_u32(KTLSH_PROTO_A_ROLE, 2);
		raw_attr(unknown[i], NULL, 0);
		raw_str(KTLSH_PROTO_A_SERVER_NAME, "example.com");
		len = raw_end();
		EXPECT(dec_req(R.mem, len, &g_req), 0);
		CU_ASSERT(g_req.role == KTLSH_PROTO_ROLE_SERVER);
		CU_ASSERT_STRING_EQUAL(g_req.server_name, "example.com");

		/* mandatory: refused */
		raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
		raw_u32(KTLSH_PROTO_A_ROLE, 2);
		raw_attr(unknown[i] | KTLSH_PROTO_ATTR_MANDATORY, "future", 6);
		len = raw_end();
		EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);
	}

	/* A known attribute may carry the mandatory bit. */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE | KTLSH_PROTO_ATTR_MANDATORY, 1);
	raw_u32(KTLSH_PROTO_A_FLAGS | KTLSH_PROTO_ATTR_MANDATORY, KTLSH_PROTO_F_TRUSTED_PEER);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), 0);
	CU_ASSERT(g_req.role == KTLSH_PROTO_ROLE_CLIENT && g_req.flags == KTLSH_PROTO_F_TRUSTED_PEER);

	/* Known elsewhere, unknown here: a reply attribute in a request. */
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_str(KTLSH_PROTO_A_PEER_SAN, "DNS:x");
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), 0);
	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_str(KTLSH_PROTO_A_PEER_SAN | KTLSH_PROTO_ATTR_MANDATORY, "DNS:x");
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EPROTO);

	/* handshake attributes in a RELOAD_REQ / ERROR: not theirs */
	raw_begin(KTLSH_PROTO_RELOAD_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), 0);
	CU_ASSERT(g_req.role == 0);
	raw_begin(KTLSH_PROTO_ERROR, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, (uint32_t)-EIO);
	raw_str(KTLSH_PROTO_A_CIPHER, "X");
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), 0);
	CU_ASSERT(g_rep.cipher[0] == 0);
	raw_begin(KTLSH_PROTO_RELOAD_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_str(KTLSH_PROTO_A_CIPHER | KTLSH_PROTO_ATTR_MANDATORY, "X");
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EPROTO);

	/* Inside an item, the same rules. */
	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	{
		size_t at = raw_item_begin();

		raw_str(40, "unit");
		raw_str(KTLSH_PROTO_A_ITEM_KEY, "uptime");
		raw_str(KTLSH_PROTO_A_ITEM_VALUE, "12");
		raw_str(KTLSH_PROTO_A_STATUS_ITEM, "not nested here");
		raw_item_end(at);
	}
	raw_str(KTLSH_PROTO_A_ITEM_KEY, "outside an item: unknown");
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), 0);
	CU_ASSERT(g_st.n_items == 1);
	CU_ASSERT_STRING_EQUAL(g_st.items[0].key, "uptime");
	CU_ASSERT_STRING_EQUAL(g_st.items[0].value, "12");
	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	{
		size_t at = raw_item_begin();

		raw_str(KTLSH_PROTO_A_ITEM_KEY, "uptime");
		raw_str(40 | KTLSH_PROTO_ATTR_MANDATORY, "unit");
		raw_item_end(at);
	}
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EPROTO);
}

static void test_nested_lengths(void)
{
	size_t len, at;

	/* an inner attribute running past the item */
	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	at = raw_item_begin();
	raw_str(KTLSH_PROTO_A_ITEM_KEY, "abcd");
	raw_item_end(at);
	R.mem[at + 3] -= 4;		/* the item now ends inside its key */
	raw_str(KTLSH_PROTO_A_REASON, "x");
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EBADMSG);

	/* inner padding outside the item */
	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	at = raw_item_begin();
	raw_str(KTLSH_PROTO_A_ITEM_KEY, "ab");
	raw_item_end(at);
	R.mem[at + 3] -= 2;
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EBADMSG);

	/* an item whose content is not attributes */
	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_str(KTLSH_PROTO_A_STATUS_ITEM, "garbage!");
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EBADMSG);
}

static void test_ranges(void)
{
	static const struct {
		unsigned int msg;
		uint16_t attr;
		uint32_t val;
		int want;
	} cases[] = {
		{ KTLSH_PROTO_HANDSHAKE_REQ, KTLSH_PROTO_A_ROLE, 0, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REQ, KTLSH_PROTO_A_ROLE, 3, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REQ, KTLSH_PROTO_A_ROLE, UINT32_MAX, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REQ, KTLSH_PROTO_A_FLAGS, 0x4, -EPROTO },
		{ KTLSH_PROTO_HANDSHAKE_REQ, KTLSH_PROTO_A_FLAGS, 0x80000000u, -EPROTO },
		{ KTLSH_PROTO_HANDSHAKE_REQ, KTLSH_PROTO_A_FLAGS, KTLSH_PROTO_F_ALL, 0 },
		{ KTLSH_PROTO_HANDSHAKE_REQ, KTLSH_PROTO_A_TIMEOUT_MS, UINT32_MAX, 0 },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_ALERT_SENT, 255, 0 },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_ALERT_SENT, 256, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_ALERT_RECEIVED, UINT32_MAX, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_TLS_VERSION, 0x0300, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_TLS_VERSION, 0x0301, 0 },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_TLS_VERSION, 0x0305, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_TLS_VERSION, 0, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_RESUMED, 0, 0 },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, KTLSH_PROTO_A_RESUMED, 2, -EBADMSG },
	};
	size_t i, len;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		raw_begin(cases[i].msg, 1);
		if (cases[i].msg == KTLSH_PROTO_HANDSHAKE_REQ) {
			if (cases[i].attr != KTLSH_PROTO_A_ROLE)
				raw_u32(KTLSH_PROTO_A_ROLE, 1);
		} else {
			raw_u32(KTLSH_PROTO_A_STATUS, 0);
		}
		raw_u32(cases[i].attr, cases[i].val);
		len = raw_end();
		if (cases[i].msg == KTLSH_PROTO_HANDSHAKE_REQ)
			EXPECT(dec_req(R.mem, len, &g_req), cases[i].want);
		else
			EXPECT(dec_rep(R.mem, len, &g_rep), cases[i].want);
	}
}

static void test_status_values(void)
{
	static const struct {
		unsigned int msg;
		uint32_t val;
		int want;
	} cases[] = {
		{ KTLSH_PROTO_HANDSHAKE_REPLY, 0, 0 },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, (uint32_t)-1, 0 },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, (uint32_t)-KTLSH_PROTO_ERRNO_MAX, 0 },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, (uint32_t)-KTLSH_PROTO_ERRNO_MAX - 1, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, 1, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, 0x7fffffff, -EBADMSG },
		{ KTLSH_PROTO_HANDSHAKE_REPLY, 0x80000000u, -EBADMSG },
		{ KTLSH_PROTO_RELOAD_REPLY, 0, 0 },
		{ KTLSH_PROTO_ERROR, 0, -EBADMSG },		/* an ERROR must be an error */
		{ KTLSH_PROTO_ERROR, (uint32_t)-EPROTO, 0 },
		{ KTLSH_PROTO_STATUS_REPLY, 5, -EBADMSG },
		{ KTLSH_PROTO_STATUS_REPLY, (uint32_t)-EAGAIN, 0 },
	};
	size_t i, len;
	int ret;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		raw_begin(cases[i].msg, 1);
		raw_u32(KTLSH_PROTO_A_STATUS, cases[i].val);
		len = raw_end();
		if (cases[i].msg == KTLSH_PROTO_STATUS_REPLY)
			ret = dec_st(R.mem, len, &g_st);
		else
			ret = dec_rep(R.mem, len, &g_rep);
		EXPECT(ret, cases[i].want);
		if (!ret && cases[i].msg != KTLSH_PROTO_STATUS_REPLY)
			CU_ASSERT(g_rep.status == (int32_t)cases[i].val);
	}
	/* ERROR with status 0 through the status decoder too */
	raw_begin(KTLSH_PROTO_ERROR, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EBADMSG);
}

/* One string attribute in its natural message. */
#define SC(a, lit) str_case((a), (lit), sizeof(lit) - 1)

static int str_case(uint16_t attr, const void *s, size_t n)
{
	size_t len;

	switch (attr) {
	case KTLSH_PROTO_A_IDENTITY:
	case KTLSH_PROTO_A_SERVER_NAME:
	case KTLSH_PROTO_A_ALPN:
		raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
		raw_u32(KTLSH_PROTO_A_ROLE, 1);
		raw_attr(attr, s, n);
		len = raw_end();
		return dec_req(R.mem, len, &g_req);
	case KTLSH_PROTO_A_ITEM_KEY:
	case KTLSH_PROTO_A_ITEM_VALUE: {
		size_t at;

		raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
		raw_u32(KTLSH_PROTO_A_STATUS, 0);
		at = raw_item_begin();
		if (attr == KTLSH_PROTO_A_ITEM_VALUE)
			raw_str(KTLSH_PROTO_A_ITEM_KEY, "k");
		raw_attr(attr, s, n);
		raw_item_end(at);
		len = raw_end();
		return dec_st(R.mem, len, &g_st);
	}
	default:
		raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 1);
		raw_u32(KTLSH_PROTO_A_STATUS, 0);
		raw_attr(attr, s, n);
		len = raw_end();
		return dec_rep(R.mem, len, &g_rep);
	}
}

static void test_strings(void)
{
	static const struct {
		uint16_t attr;
		size_t max;
		bool text;
	} strs[] = {
		{ KTLSH_PROTO_A_IDENTITY, KTLSH_PROTO_IDENTITY_LEN - 1, false },
		{ KTLSH_PROTO_A_SERVER_NAME, KTLSH_PROTO_NAME_LEN - 1, false },
		{ KTLSH_PROTO_A_ALPN, KTLSH_PROTO_NAME_LEN - 1, false },
		{ KTLSH_PROTO_A_REASON, KTLSH_PROTO_REASON_LEN - 1, true },
		{ KTLSH_PROTO_A_CIPHER, KTLSH_PROTO_CIPHER_LEN - 1, false },
		{ KTLSH_PROTO_A_GROUP, KTLSH_PROTO_GROUP_LEN - 1, false },
		{ KTLSH_PROTO_A_ALPN_CHOSEN, KTLSH_PROTO_NAME_LEN - 1, false },
		{ KTLSH_PROTO_A_PEER_SUBJECT, KTLSH_PROTO_SUBJECT_LEN - 1, true },
		{ KTLSH_PROTO_A_PEER_SAN, KTLSH_PROTO_NAME_LEN - 1, true },
		{ KTLSH_PROTO_A_ITEM_KEY, KTLSH_PROTO_KEY_LEN - 1, false },
		{ KTLSH_PROTO_A_ITEM_VALUE, KTLSH_PROTO_VALUE_LEN - 1, true },
	};
	static char big[KTLSH_PROTO_MAX_MSG];
	size_t i;

	memset(big, 'x', sizeof(big));
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		uint16_t a = strs[i].attr;

		EXPECT(str_case(a, big, strs[i].max), 0);
		EXPECT(str_case(a, big, strs[i].max + 1), -EMSGSIZE);
		EXPECT(str_case(a, big, 60000), -EMSGSIZE);
		EXPECT(SC(a, ""), -EBADMSG);		/* empty is sent as absent */
		EXPECT(SC(a, "ab\0cd"), -EBADMSG);	/* embedded NUL */
		EXPECT(SC(a, "abc\0"), -EBADMSG);	/* a terminator is not sent */
		EXPECT(SC(a, "\0"), -EBADMSG);
		EXPECT(SC(a, "a\nb"), -EBADMSG);	/* no forged log lines */
		EXPECT(SC(a, "a\tb"), -EBADMSG);
		EXPECT(SC(a, "\x1b[2J"), -EBADMSG);	/* no terminal escapes */
		EXPECT(SC(a, "a\x7f"), -EBADMSG);
		EXPECT(SC(a, "a b"), strs[i].text ? 0 : -EBADMSG);
		EXPECT(SC(a, "Gr\xc3\xbc\xc3\x9f" "e \xe2\x82\xac \xf0\x9f\x94\x92"),
		       strs[i].text ? 0 : -EBADMSG);
		/* malformed UTF-8 */
		EXPECT(SC(a, "\x80"), -EBADMSG);		/* lone continuation */
		EXPECT(SC(a, "\xc3"), -EBADMSG);		/* cut short */
		EXPECT(SC(a, "\xe2\x82"), -EBADMSG);
		EXPECT(SC(a, "\xc0\xaf"), -EBADMSG);		/* overlong '/' */
		EXPECT(SC(a, "\xe0\x80\xaf"), -EBADMSG);	/* overlong */
		EXPECT(SC(a, "\xe0\x83\xa9"), -EBADMSG);	/* overlong U+00E9 */
		EXPECT(SC(a, "\xf0\x82\x82\xac"), -EBADMSG);	/* overlong U+20AC */
		EXPECT(SC(a, "\xc3\xa9\xe2\x82\xac"), strs[i].text ? 0 : -EBADMSG);
		EXPECT(SC(a, "\xed\xa0\x80"), -EBADMSG);	/* surrogate */
		EXPECT(SC(a, "\xf4\x90\x80\x80"), -EBADMSG);	/* past U+10FFFF */
		EXPECT(SC(a, "\xf8\x88\x80\x80\x80"), -EBADMSG);
		EXPECT(SC(a, "\xc2\x85"), -EBADMSG);		/* C1 control NEL */
		EXPECT(SC(a, "\xc3\x28"), -EBADMSG);		/* bad continuation */
	}

	/* A sequence cut short by the end of its attribute, where the next
	 * bytes in the message would complete it: the value's end is the end. */
	raw_begin(KTLSH_PROTO_ERROR, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, (uint32_t)-EIO);
	raw_attr(KTLSH_PROTO_A_REASON, "abc\xe2", 4);
	raw_attr(0x82ac, NULL, 0);
	EXPECT(dec_rep(R.mem, raw_end(), &g_rep), -EBADMSG);

	/* Strings come out terminated and exactly as sent. */
	EXPECT(SC(KTLSH_PROTO_A_SERVER_NAME, "[2001:db8::1]:443"), 0);
	CU_ASSERT_STRING_EQUAL(g_req.server_name, "[2001:db8::1]:443");
}

static void test_counts(void)
{
	size_t i, len;

	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 1);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	for (i = 0; i < KTLSH_PROTO_ALPN_MAX; i++)
		raw_str(KTLSH_PROTO_A_ALPN, "h2");
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), 0);
	CU_ASSERT(g_req.n_alpn == KTLSH_PROTO_ALPN_MAX);
	raw_str(KTLSH_PROTO_A_ALPN, "h3");
	len = raw_end();
	EXPECT(dec_req(R.mem, len, &g_req), -EMSGSIZE);

	raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	for (i = 0; i < KTLSH_PROTO_SAN_MAX; i++)
		raw_str(KTLSH_PROTO_A_PEER_SAN, "DNS:a");
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), 0);
	CU_ASSERT(g_rep.n_peer_sans == KTLSH_PROTO_SAN_MAX);
	raw_str(KTLSH_PROTO_A_PEER_SAN, "DNS:b");
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EMSGSIZE);

	raw_begin(KTLSH_PROTO_STATUS_REPLY, 1);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	for (i = 0; i <= KTLSH_PROTO_ITEMS_MAX; i++) {
		size_t at = raw_item_begin();

		raw_str(KTLSH_PROTO_A_ITEM_KEY, "k");
		raw_item_end(at);
		if (i == KTLSH_PROTO_ITEMS_MAX - 1) {
			len = raw_end();
			EXPECT(dec_st(R.mem, len, &g_st), 0);
			CU_ASSERT(g_st.n_items == KTLSH_PROTO_ITEMS_MAX);
		}
	}
	len = raw_end();
	EXPECT(dec_st(R.mem, len, &g_st), -EMSGSIZE);
}

/* A failed decode leaves nothing half-filled, and a reply reads as failed. */
static void test_fail_closed(void)
{
	static const uint8_t zero[sizeof(struct ktlsh_proto_request)];
	size_t len;

	raw_begin(KTLSH_PROTO_HANDSHAKE_REQ, 9);
	raw_u32(KTLSH_PROTO_A_ROLE, 1);
	raw_str(KTLSH_PROTO_A_SERVER_NAME, "example.com");
	raw_str(KTLSH_PROTO_A_IDENTITY, "bad id");
	len = raw_end();
	memset(&g_req, 0x55, sizeof(g_req));
	EXPECT(dec_req(R.mem, len, &g_req), -EBADMSG);
	CU_ASSERT(memcmp(&g_req, zero, sizeof(zero)) == 0);

	raw_begin(KTLSH_PROTO_HANDSHAKE_REPLY, 9);
	raw_u32(KTLSH_PROTO_A_STATUS, 0);
	raw_u32(KTLSH_PROTO_A_TLS_VERSION, 0x0304);
	raw_u32(KTLSH_PROTO_A_RESUMED, 7);
	len = raw_end();
	EXPECT(dec_rep(R.mem, len, &g_rep), -EBADMSG);
	CU_ASSERT(g_rep.status == -EBADMSG);
	CU_ASSERT(g_rep.tls_version == 0 && g_rep.id == 0);
	CU_ASSERT(g_rep.alert_sent == -1 && g_rep.alert_received == -1);

	EXPECT(dec_st(R.mem, 3, &g_st), -EBADMSG);
	CU_ASSERT(g_st.status == -EBADMSG && g_st.n_items == 0);

	/* A freshly initialised reply is a failure until someone says otherwise. */
	ktlsh_proto_reply_init(&g_rep, KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	CU_ASSERT(g_rep.status < 0);
	ktlsh_proto_status_init(&g_st, 1);
	CU_ASSERT(g_st.status < 0 && g_st.type == KTLSH_PROTO_STATUS_REPLY);
}

/* ---- encoder ---- */

static void test_encode_short_buffer(void)
{
	static uint8_t mem[KTLSH_PROTO_MAX_MSG];
	struct ktlsh_proto_request req;
	struct ktlsh_proto_reply rep;
	struct ktlsh_buf b;
	size_t cap, full;
	int ret;

	fill_request(&req);
	fill_reply(&rep);
	fill_status(&g_st, KTLSH_PROTO_ITEMS_MAX);
	for (int kind = 0; kind < 3; kind++) {
		ktlsh_buf_init(&b, mem, sizeof(mem));
		ret = kind == 0 ? ktlsh_proto_encode_request(&b, &req) :
		      kind == 1 ? ktlsh_proto_encode_reply(&b, &rep) :
				  ktlsh_proto_encode_status(&b, &g_st);
		EXPECT(ret, 0);
		full = b.len;
		for (cap = 0; cap < full; cap++) {
			/* something already in the buffer stays untouched */
			ktlsh_buf_init(&b, mem, cap + 3);
			b.len = 3;
			ret = kind == 0 ? ktlsh_proto_encode_request(&b, &req) :
			      kind == 1 ? ktlsh_proto_encode_reply(&b, &rep) :
					  ktlsh_proto_encode_status(&b, &g_st);
			CU_ASSERT(ret == -EMSGSIZE);
			CU_ASSERT(b.len == 3);
		}
		ktlsh_buf_init(&b, mem, full + 3);
		b.len = 3;
		ret = kind == 0 ? ktlsh_proto_encode_request(&b, &req) :
		      kind == 1 ? ktlsh_proto_encode_reply(&b, &rep) :
				  ktlsh_proto_encode_status(&b, &g_st);
		EXPECT(ret, 0);
		CU_ASSERT(b.len == full + 3);
	}
}

static int enc_req(const struct ktlsh_proto_request *req)
{
	static uint8_t mem[KTLSH_PROTO_MAX_MSG];
	struct ktlsh_buf b;
	int ret;

	ktlsh_buf_init(&b, mem, sizeof(mem));
	ret = ktlsh_proto_encode_request(&b, req);
	if (ret)
		CU_ASSERT(b.len == 0);
	return ret;
}

static int enc_rep(const struct ktlsh_proto_reply *rep)
{
	static uint8_t mem[KTLSH_PROTO_MAX_MSG];
	struct ktlsh_buf b;
	int ret;

	ktlsh_buf_init(&b, mem, sizeof(mem));
	ret = ktlsh_proto_encode_reply(&b, rep);
	if (ret)
		CU_ASSERT(b.len == 0);
	return ret;
}

static int enc_st(const struct ktlsh_proto_status *st)
{
	static uint8_t mem[KTLSH_PROTO_MAX_MSG];
	struct ktlsh_buf b;
	int ret;

	ktlsh_buf_init(&b, mem, sizeof(mem));
	ret = ktlsh_proto_encode_status(&b, st);
	if (ret)
		CU_ASSERT(b.len == 0);
	return ret;
}

static void test_encode_invalid(void)
{
	struct ktlsh_proto_request req;
	struct ktlsh_proto_reply rep;
	static struct ktlsh_proto_status st;
	uint8_t mem[8];
	struct ktlsh_buf b;

#define REQ_CASE(stmt, want) do { fill_request(&req); stmt; EXPECT(enc_req(&req), want); } while (0)
	REQ_CASE((void)0, 0);
	REQ_CASE(req.type = KTLSH_PROTO_HANDSHAKE_REPLY, -EINVAL);
	REQ_CASE(req.type = 0, -EINVAL);
	REQ_CASE(req.type = 99, -EINVAL);
	REQ_CASE(req.role = 0, -EINVAL);
	REQ_CASE(req.role = 3, -EINVAL);
	REQ_CASE(req.flags = 0x100, -EINVAL);
	REQ_CASE(req.n_alpn = KTLSH_PROTO_ALPN_MAX + 1, -EINVAL);
	REQ_CASE(req.alpn[1][0] = 0, -EINVAL);		/* empty list entry */
	REQ_CASE(memset(req.identity, 'a', sizeof(req.identity)), -EINVAL);	/* unterminated */
	REQ_CASE(memset(req.server_name, 'a', sizeof(req.server_name)), -EINVAL);
	REQ_CASE(strcpy(req.identity, "two words"), -EINVAL);
	REQ_CASE(strcpy(req.server_name, "evil\r\nHost: x"), -EINVAL);
	REQ_CASE(req.identity[0] = 0, 0);			/* empty: just not sent */
	/* STATUS_REQ ignores the handshake fields, valid or not */
	REQ_CASE((req.type = KTLSH_PROTO_STATUS_REQ, req.role = 0, req.n_alpn = 1000), 0);
#undef REQ_CASE

#define REP_CASE(stmt, want) do { fill_reply(&rep); stmt; EXPECT(enc_rep(&rep), want); } while (0)
	REP_CASE((void)0, 0);
	REP_CASE(rep.type = KTLSH_PROTO_HANDSHAKE_REQ, -EINVAL);
	REP_CASE(rep.type = KTLSH_PROTO_STATUS_REPLY, -EINVAL);
	REP_CASE(rep.status = 1, -EINVAL);
	REP_CASE(rep.status = -KTLSH_PROTO_ERRNO_MAX - 1, -EINVAL);
	REP_CASE(rep.type = KTLSH_PROTO_ERROR, -EINVAL);	/* with status 0 */
	REP_CASE(rep.alert_sent = 256, -EINVAL);
	REP_CASE(rep.alert_received = -2, -EINVAL);
	REP_CASE(rep.tls_version = 0x0200, -EINVAL);
	REP_CASE(rep.tls_version = 0x0305, -EINVAL);
	REP_CASE(rep.n_peer_sans = KTLSH_PROTO_SAN_MAX + 1, -EINVAL);
	REP_CASE(rep.peer_san[2][0] = 0, -EINVAL);
	REP_CASE(strcpy(rep.reason, "line one\nline two"), -EINVAL);
	REP_CASE(strcpy(rep.peer_subject, "CN=\xc3"), -EINVAL);
	REP_CASE(memset(rep.cipher, 'c', sizeof(rep.cipher)), -EINVAL);
	REP_CASE(strcpy(rep.alpn, "h 2"), -EINVAL);
	/* ERROR ignores handshake fields, valid or not */
	REP_CASE((rep.type = KTLSH_PROTO_ERROR, rep.status = -EIO, rep.tls_version = 1), 0);
#undef REP_CASE

#define ST_CASE(stmt, want) do { fill_status(&st, 4); stmt; EXPECT(enc_st(&st), want); } while (0)
	ST_CASE((void)0, 0);
	ST_CASE(st.type = KTLSH_PROTO_HANDSHAKE_REPLY, -EINVAL);
	ST_CASE(st.n_items = KTLSH_PROTO_ITEMS_MAX + 1, -EINVAL);
	ST_CASE(st.items[2].key[0] = 0, -EINVAL);
	ST_CASE(strcpy(st.items[2].key, "has space"), -EINVAL);
	ST_CASE(strcpy(st.items[2].value, "tab\there"), -EINVAL);
	ST_CASE(memset(st.items[2].value, 'v', sizeof(st.items[2].value)), -EINVAL);
	ST_CASE(st.status = 3, -EINVAL);
	ST_CASE(st.type = KTLSH_PROTO_ERROR, -EINVAL);		/* with status 0 */
	ST_CASE((st.type = KTLSH_PROTO_ERROR, st.status = -EIO, st.n_items = 9999), 0);
#undef ST_CASE

	/* a corrupt buffer */
	fill_request(&req);
	ktlsh_buf_init(&b, mem, sizeof(mem));
	b.len = sizeof(mem) + 1;
	EXPECT(ktlsh_proto_encode_request(&b, &req), -EINVAL);
}

static void test_type_names(void)
{
	CU_ASSERT_STRING_EQUAL(ktlsh_proto_type_name(KTLSH_PROTO_HANDSHAKE_REQ), "HANDSHAKE_REQ");
	CU_ASSERT_STRING_EQUAL(ktlsh_proto_type_name(KTLSH_PROTO_ERROR), "ERROR");
	for (unsigned int t = KTLSH_PROTO_HANDSHAKE_REQ; t <= KTLSH_PROTO_ERROR; t++)
		CU_ASSERT(strcmp(ktlsh_proto_type_name(t), "unknown") != 0);
	CU_ASSERT_STRING_EQUAL(ktlsh_proto_type_name(0), "unknown");
	CU_ASSERT_STRING_EQUAL(ktlsh_proto_type_name(1000), "unknown");
}

static int suite_init(void)
{
	return make_samples();
}

int main(void)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "buffer bounds", test_buf_bounds },
		{ "cursor bounds", test_cur_bounds },
		{ "wire bytes", test_wire_bytes },
		{ "round trip: requests", test_roundtrip_requests },
		{ "round trip: replies", test_roundtrip_replies },
		{ "round trip: status", test_roundtrip_status },
		{ "framing", test_framing },
		{ "truncated at every offset", test_truncated_every_offset },
		{ "truncated, header agreeing", test_truncated_consistent_header },
		{ "single-byte mutations", test_mutations },
		{ "trailing bytes", test_trailing_bytes },
		{ "header", test_header },
		{ "wrong decoder", test_wrong_decoder },
		{ "attribute lengths", test_attr_lengths },
		{ "duplicates", test_duplicates },
		{ "missing required", test_missing_required },
		{ "unknown attributes", test_unknown_attrs },
		{ "nested lengths", test_nested_lengths },
		{ "value ranges", test_ranges },
		{ "status values", test_status_values },
		{ "strings", test_strings },
		{ "list counts", test_counts },
		{ "fail closed", test_fail_closed },
		{ "encode: short buffer", test_encode_short_buffer },
		{ "encode: invalid structs", test_encode_invalid },
		{ "type names", test_type_names },
	};
	CU_pSuite suite;
	unsigned int failed;
	size_t i;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	suite = CU_add_suite("proto", suite_init, NULL);
	if (!suite)
		goto fail;
	for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (!CU_add_test(suite, tests[i].name, tests[i].fn))
			goto fail;
	CU_basic_set_mode(CU_BRM_VERBOSE);
	if (CU_basic_run_tests() != CUE_SUCCESS)
		goto fail;
	failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
fail:
	fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
	CU_cleanup_registry();
	return 2;
}
