// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The ktlshd control protocol codec. Documentation/protocol.md is the
 * specification; include/ktlsh/proto.h has the API and the error rules.
 *
 * Everything that arrives here came from another process, so every length
 * is proven against the bytes that are really there before it is used: the
 * only way to read is through a struct ktlsh_cur, and attribute values are
 * handed on as sub-cursors that end where the attribute ends.
 */
#include <errno.h>
#include <string.h>

#include <ktlsh/proto.h>

/* ---- wire buffers ---- */

static void proto_wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void proto_wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint16_t proto_rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t proto_rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t proto_rd64(const uint8_t *p)
{
	return (uint64_t)proto_rd32(p) << 32 | proto_rd32(p + 4);
}

void ktlsh_buf_init(struct ktlsh_buf *b, void *mem, size_t cap)
{
	b->data = mem;
	b->len = 0;
	b->cap = mem ? cap : 0;
}

/* Room for n more bytes? Written so that neither side can overflow. */
static int proto_buf_room(const struct ktlsh_buf *b, size_t n)
{
	if (b->len > b->cap)
		return -EINVAL;
	if (n > b->cap - b->len)
		return -EMSGSIZE;
	return 0;
}

int ktlsh_buf_put(struct ktlsh_buf *b, const void *src, size_t n)
{
	int ret = proto_buf_room(b, n);

	if (ret)
		goto out;
	if (n)
		memcpy(b->data + b->len, src, n);
	b->len += n;
out:
	return ret;
}

int ktlsh_buf_put_zero(struct ktlsh_buf *b, size_t n)
{
	int ret = proto_buf_room(b, n);

	if (ret)
		goto out;
	if (n)
		memset(b->data + b->len, 0, n);
	b->len += n;
out:
	return ret;
}

int ktlsh_buf_put_u8(struct ktlsh_buf *b, uint8_t v)
{
	return ktlsh_buf_put(b, &v, 1);
}

int ktlsh_buf_put_u16(struct ktlsh_buf *b, uint16_t v)
{
	uint8_t w[2];

	proto_wr16(w, v);
	return ktlsh_buf_put(b, w, sizeof(w));
}

int ktlsh_buf_put_u32(struct ktlsh_buf *b, uint32_t v)
{
	uint8_t w[4];

	proto_wr32(w, v);
	return ktlsh_buf_put(b, w, sizeof(w));
}

int ktlsh_buf_put_u64(struct ktlsh_buf *b, uint64_t v)
{
	uint8_t w[8];

	proto_wr32(w, (uint32_t)(v >> 32));
	proto_wr32(w + 4, (uint32_t)v);
	return ktlsh_buf_put(b, w, sizeof(w));
}

void ktlsh_cur_init(struct ktlsh_cur *c, const void *buf, size_t len)
{
	c->p = buf;
	c->left = buf ? len : 0;
}

int ktlsh_cur_get(struct ktlsh_cur *c, void *dst, size_t n)
{
	if (n > c->left)
		return -EBADMSG;
	if (n)
		memcpy(dst, c->p, n);
	c->p += n;
	c->left -= n;
	return 0;
}

int ktlsh_cur_skip(struct ktlsh_cur *c, size_t n)
{
	if (n > c->left)
		return -EBADMSG;
	c->p += n;
	c->left -= n;
	return 0;
}

int ktlsh_cur_get_u8(struct ktlsh_cur *c, uint8_t *v)
{
	return ktlsh_cur_get(c, v, 1);
}

int ktlsh_cur_get_u16(struct ktlsh_cur *c, uint16_t *v)
{
	uint8_t w[2];
	int ret = ktlsh_cur_get(c, w, sizeof(w));

	if (!ret)
		*v = proto_rd16(w);
	return ret;
}

int ktlsh_cur_get_u32(struct ktlsh_cur *c, uint32_t *v)
{
	uint8_t w[4];
	int ret = ktlsh_cur_get(c, w, sizeof(w));

	if (!ret)
		*v = proto_rd32(w);
	return ret;
}

int ktlsh_cur_get_u64(struct ktlsh_cur *c, uint64_t *v)
{
	uint8_t w[8];
	int ret = ktlsh_cur_get(c, w, sizeof(w));

	if (!ret)
		*v = proto_rd64(w);
	return ret;
}

int ktlsh_cur_sub(struct ktlsh_cur *c, size_t n, struct ktlsh_cur *sub)
{
	if (n > c->left)
		return -EBADMSG;
	sub->p = c->p;
	sub->left = n;
	c->p += n;
	c->left -= n;
	return 0;
}

/* ---- attribute policy ---- */

enum proto_kind {
	PK_NONE = 0,	/* not an attribute of this version */
	PK_U32,
	PK_U64,
	PK_TOKEN,	/* printable ASCII without spaces */
	PK_TEXT,	/* UTF-8 without control characters */
	PK_FP,		/* KTLSH_PROTO_FINGERPRINT_LEN raw bytes */
	PK_NEST,	/* a sequence of attributes */
};

struct proto_policy {
	uint8_t kind;
	bool repeat;
	uint16_t max;	/* strings: most bytes, field size less the NUL */
};

static const struct proto_policy proto_policy[KTLSH_PROTO_A_MAX + 1] = {
	[KTLSH_PROTO_A_ROLE]		= { .kind = PK_U32 },
	[KTLSH_PROTO_A_IDENTITY]	= { .kind = PK_TOKEN, .max = KTLSH_PROTO_IDENTITY_LEN - 1 },
	[KTLSH_PROTO_A_SERVER_NAME]	= { .kind = PK_TOKEN, .max = KTLSH_PROTO_NAME_LEN - 1 },
	[KTLSH_PROTO_A_ALPN]		= { .kind = PK_TOKEN, .repeat = true, .max = KTLSH_PROTO_NAME_LEN - 1 },
	[KTLSH_PROTO_A_TIMEOUT_MS]	= { .kind = PK_U32 },
	[KTLSH_PROTO_A_FLAGS]		= { .kind = PK_U32 },
	[KTLSH_PROTO_A_STATUS]		= { .kind = PK_U32 },
	[KTLSH_PROTO_A_REASON]		= { .kind = PK_TEXT, .max = KTLSH_PROTO_REASON_LEN - 1 },
	[KTLSH_PROTO_A_ALERT_SENT]	= { .kind = PK_U32 },
	[KTLSH_PROTO_A_ALERT_RECEIVED]	= { .kind = PK_U32 },
	[KTLSH_PROTO_A_TLS_VERSION]	= { .kind = PK_U32 },
	[KTLSH_PROTO_A_CIPHER]		= { .kind = PK_TOKEN, .max = KTLSH_PROTO_CIPHER_LEN - 1 },
	[KTLSH_PROTO_A_GROUP]		= { .kind = PK_TOKEN, .max = KTLSH_PROTO_GROUP_LEN - 1 },
	[KTLSH_PROTO_A_ALPN_CHOSEN]	= { .kind = PK_TOKEN, .max = KTLSH_PROTO_NAME_LEN - 1 },
	[KTLSH_PROTO_A_RESUMED]		= { .kind = PK_U32 },
	[KTLSH_PROTO_A_PEER_SUBJECT]	= { .kind = PK_TEXT, .max = KTLSH_PROTO_SUBJECT_LEN - 1 },
	[KTLSH_PROTO_A_PEER_SAN]	= { .kind = PK_TEXT, .repeat = true, .max = KTLSH_PROTO_NAME_LEN - 1 },
	[KTLSH_PROTO_A_PEER_FINGERPRINT] = { .kind = PK_FP },
	[KTLSH_PROTO_A_HANDSHAKE_US]	= { .kind = PK_U64 },
	[KTLSH_PROTO_A_TX_SEQ]		= { .kind = PK_U64 },
	[KTLSH_PROTO_A_RX_SEQ]		= { .kind = PK_U64 },
	[KTLSH_PROTO_A_STATUS_ITEM]	= { .kind = PK_NEST, .repeat = true },
	[KTLSH_PROTO_A_ITEM_KEY]	= { .kind = PK_TOKEN, .max = KTLSH_PROTO_KEY_LEN - 1 },
	[KTLSH_PROTO_A_ITEM_VALUE]	= { .kind = PK_TEXT, .max = KTLSH_PROTO_VALUE_LEN - 1 },
};

#define ABIT(t)	(UINT64_C(1) << (t))

_Static_assert(KTLSH_PROTO_A_MAX < 64, "attribute sets are 64-bit masks");

/* Which attributes a message carries, and which of them it must carry.
 * An attribute outside "allowed" is unknown in that message, even when
 * another message knows it: a future version may add it there. */
struct proto_rule {
	uint64_t allowed, required;
};

#define REPLY_COMMON	(ABIT(KTLSH_PROTO_A_STATUS) | ABIT(KTLSH_PROTO_A_REASON))

static const struct proto_rule proto_rules[] = {
	[KTLSH_PROTO_HANDSHAKE_REQ] = {
		ABIT(KTLSH_PROTO_A_ROLE) | ABIT(KTLSH_PROTO_A_IDENTITY) |
		ABIT(KTLSH_PROTO_A_SERVER_NAME) | ABIT(KTLSH_PROTO_A_ALPN) |
		ABIT(KTLSH_PROTO_A_TIMEOUT_MS) | ABIT(KTLSH_PROTO_A_FLAGS),
		ABIT(KTLSH_PROTO_A_ROLE),
	},
	[KTLSH_PROTO_HANDSHAKE_REPLY] = {
		REPLY_COMMON | ABIT(KTLSH_PROTO_A_ALERT_SENT) |
		ABIT(KTLSH_PROTO_A_ALERT_RECEIVED) | ABIT(KTLSH_PROTO_A_TLS_VERSION) |
		ABIT(KTLSH_PROTO_A_CIPHER) | ABIT(KTLSH_PROTO_A_GROUP) |
		ABIT(KTLSH_PROTO_A_ALPN_CHOSEN) | ABIT(KTLSH_PROTO_A_RESUMED) |
		ABIT(KTLSH_PROTO_A_PEER_SUBJECT) | ABIT(KTLSH_PROTO_A_PEER_SAN) |
		ABIT(KTLSH_PROTO_A_PEER_FINGERPRINT) | ABIT(KTLSH_PROTO_A_HANDSHAKE_US) |
		ABIT(KTLSH_PROTO_A_TX_SEQ) | ABIT(KTLSH_PROTO_A_RX_SEQ),
		ABIT(KTLSH_PROTO_A_STATUS),
	},
	[KTLSH_PROTO_STATUS_REQ]	= { 0, 0 },
	[KTLSH_PROTO_STATUS_REPLY]	= { REPLY_COMMON | ABIT(KTLSH_PROTO_A_STATUS_ITEM), ABIT(KTLSH_PROTO_A_STATUS) },
	[KTLSH_PROTO_RELOAD_REQ]	= { 0, 0 },
	[KTLSH_PROTO_RELOAD_REPLY]	= { REPLY_COMMON, ABIT(KTLSH_PROTO_A_STATUS) },
	[KTLSH_PROTO_ERROR]		= { REPLY_COMMON, ABIT(KTLSH_PROTO_A_STATUS) },
};

static const struct proto_rule proto_item_rule = {
	ABIT(KTLSH_PROTO_A_ITEM_KEY) | ABIT(KTLSH_PROTO_A_ITEM_VALUE),
	ABIT(KTLSH_PROTO_A_ITEM_KEY),
};

/* Worst cases, so that no valid struct can encode past the message limit. */
#define ATTR_SZ(n)	(4 + KTLSH_PROTO_ALIGN(n))
#define REQ_WORST	(KTLSH_PROTO_HDR_LEN + 3 * ATTR_SZ(4) + \
			 ATTR_SZ(KTLSH_PROTO_IDENTITY_LEN) + \
			 (1 + KTLSH_PROTO_ALPN_MAX) * ATTR_SZ(KTLSH_PROTO_NAME_LEN))
#define REPLY_WORST	(KTLSH_PROTO_HDR_LEN + 6 * ATTR_SZ(4) + 3 * ATTR_SZ(8) + \
			 ATTR_SZ(KTLSH_PROTO_REASON_LEN) + ATTR_SZ(KTLSH_PROTO_CIPHER_LEN) + \
			 ATTR_SZ(KTLSH_PROTO_GROUP_LEN) + ATTR_SZ(KTLSH_PROTO_SUBJECT_LEN) + \
			 ATTR_SZ(KTLSH_PROTO_FINGERPRINT_LEN) + \
			 (1 + KTLSH_PROTO_SAN_MAX) * ATTR_SZ(KTLSH_PROTO_NAME_LEN))
#define ITEM_WORST	(4 + ATTR_SZ(KTLSH_PROTO_KEY_LEN) + ATTR_SZ(KTLSH_PROTO_VALUE_LEN))
#define STATUS_WORST	(KTLSH_PROTO_HDR_LEN + ATTR_SZ(4) + ATTR_SZ(KTLSH_PROTO_REASON_LEN) + \
			 KTLSH_PROTO_ITEMS_MAX * ITEM_WORST)

_Static_assert(REQ_WORST <= KTLSH_PROTO_MAX_MSG, "largest request must fit a message");
_Static_assert(REPLY_WORST <= KTLSH_PROTO_MAX_MSG, "largest reply must fit a message");
_Static_assert(STATUS_WORST <= KTLSH_PROTO_MAX_MSG, "largest status reply must fit a message");
_Static_assert(ITEM_WORST <= UINT16_MAX, "a status item must fit one attribute");

static bool proto_token_valid(const uint8_t *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

/*
 * Text ends up in logs, terminals and JSON, so it must be well-formed
 * UTF-8 without C0 or C1 control characters: no newline can forge a log
 * line and no escape sequence reaches an operator's terminal.
 */
static bool proto_text_valid(const uint8_t *s, size_t n)
{
	size_t i = 0, need, k;
	uint32_t cp, min;

	while (i < n) {
		uint8_t c = s[i];

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			need = 1;
			cp = c & 0x1f;
			min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			need = 2;
			cp = c & 0x0f;
			min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			need = 3;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		if (n - i - 1 < need)
			return false;
		for (k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f)
			return false;
		i += need + 1;
	}
	return true;
}

static bool proto_str_valid(uint8_t kind, const void *s, size_t n)
{
	return kind == PK_TOKEN ? proto_token_valid(s, n) : proto_text_valid(s, n);
}

/* ---- decoding ---- */

struct proto_attr {
	unsigned int type;	/* without KTLSH_PROTO_ATTR_MANDATORY */
	struct ktlsh_cur val;	/* exactly the value, no padding */
};

typedef int (*proto_store_fn)(void *obj, const struct proto_attr *a);

/* Padding exists and is zero: one encoding per message, so nothing can
 * hide in it. */
static int proto_skip_pad(struct ktlsh_cur *c, size_t pad)
{
	struct ktlsh_cur p;
	size_t i;
	int ret = ktlsh_cur_sub(c, pad, &p);

	if (ret)
		goto out;
	for (i = 0; i < pad; i++) {
		if (p.p[i]) {
			ret = -EBADMSG;
			goto out;
		}
	}
out:
	return ret;
}

/* Is the value's shape right for its policy? Ranges are the store's job. */
static int proto_check_value(const struct proto_policy *pol, const struct ktlsh_cur *v)
{
	switch (pol->kind) {
	case PK_U32:
		return v->left == 4 ? 0 : -EBADMSG;
	case PK_U64:
		return v->left == 8 ? 0 : -EBADMSG;
	case PK_FP:
		return v->left == KTLSH_PROTO_FINGERPRINT_LEN ? 0 : -EBADMSG;
	case PK_TOKEN:
	case PK_TEXT:
		/* Empty strings are never sent: absent already means empty. */
		if (!v->left)
			return -EBADMSG;
		if (v->left > pol->max)
			return -EMSGSIZE;
		return proto_str_valid(pol->kind, v->p, v->left) ? 0 : -EBADMSG;
	case PK_NEST:
		return 0;
	}
	return -EBADMSG;
}

/*
 * Walk the attributes in c, which must end exactly at an attribute
 * boundary, check each against rule and policy, and hand the valid known
 * ones to store.
 */
static int proto_parse(struct ktlsh_cur *c, const struct proto_rule *rule,
		       proto_store_fn store, void *obj)
{
	uint64_t seen = 0;
	int ret = 0;

	while (c->left) {
		const struct proto_policy *pol;
		struct proto_attr a;
		uint16_t raw, alen;
		bool mandatory;

		ret = ktlsh_cur_get_u16(c, &raw);
		if (ret)
			goto out;
		ret = ktlsh_cur_get_u16(c, &alen);
		if (ret)
			goto out;
		if (alen < 4) {
			ret = -EBADMSG;
			goto out;
		}
		ret = ktlsh_cur_sub(c, alen - 4u, &a.val);
		if (ret)
			goto out;
		ret = proto_skip_pad(c, KTLSH_PROTO_ALIGN(alen) - alen);
		if (ret)
			goto out;

		mandatory = raw & KTLSH_PROTO_ATTR_MANDATORY;
		a.type = raw & ~KTLSH_PROTO_ATTR_MANDATORY;
		if (a.type > KTLSH_PROTO_A_MAX || !(rule->allowed & ABIT(a.type))) {
			if (mandatory) {
				ret = -EPROTO;
				goto out;
			}
			continue;
		}
		pol = &proto_policy[a.type];
		if ((seen & ABIT(a.type)) && !pol->repeat) {
			ret = -EBADMSG;
			goto out;
		}
		seen |= ABIT(a.type);
		ret = proto_check_value(pol, &a.val);
		if (ret)
			goto out;
		ret = store(obj, &a);
		if (ret)
			goto out;
	}
	if ((seen & rule->required) != rule->required)
		ret = -EBADMSG;
out:
	return ret;
}

/* The value was checked by proto_check_value(); the field size bounds it
 * once more so that a policy typo cannot become an overflow. */
static int proto_copy_str(char *dst, size_t size, const struct proto_attr *a)
{
	if (a->val.left >= size)
		return -EMSGSIZE;
	memcpy(dst, a->val.p, a->val.left);
	dst[a->val.left] = '\0';
	return 0;
}

static uint32_t proto_attr_u32(const struct proto_attr *a)
{
	return proto_rd32(a->val.p);
}

static uint64_t proto_attr_u64(const struct proto_attr *a)
{
	return proto_rd64(a->val.p);
}

static int proto_attr_status(const struct proto_attr *a, int32_t *status)
{
	uint32_t v = proto_attr_u32(a);

	/* -errno in two's complement: 0 or 0xFFFFF001..0xFFFFFFFF. */
	if (v && v < (uint32_t)0 - KTLSH_PROTO_ERRNO_MAX)
		return -EBADMSG;
	*status = v ? -(int32_t)((uint32_t)0 - v) : 0;
	return 0;
}

static int proto_attr_alert(const struct proto_attr *a, int32_t *alert)
{
	uint32_t v = proto_attr_u32(a);

	if (v > 255)
		return -EBADMSG;
	*alert = (int32_t)v;
	return 0;
}

enum proto_class {
	PC_UNKNOWN,
	PC_REQUEST,
	PC_REPLY,	/* HANDSHAKE_REPLY, RELOAD_REPLY */
	PC_STATUS,	/* STATUS_REPLY */
	PC_ERROR,
};

static enum proto_class proto_class(unsigned int type)
{
	switch (type) {
	case KTLSH_PROTO_HANDSHAKE_REQ:
	case KTLSH_PROTO_STATUS_REQ:
	case KTLSH_PROTO_RELOAD_REQ:
		return PC_REQUEST;
	case KTLSH_PROTO_HANDSHAKE_REPLY:
	case KTLSH_PROTO_RELOAD_REPLY:
		return PC_REPLY;
	case KTLSH_PROTO_STATUS_REPLY:
		return PC_STATUS;
	case KTLSH_PROTO_ERROR:
		return PC_ERROR;
	}
	return PC_UNKNOWN;
}

int ktlsh_proto_decode_header(const void *buf, size_t len, struct ktlsh_proto_hdr *hdr)
{
	const uint8_t *p = buf;
	int ret = -EBADMSG;

	memset(hdr, 0, sizeof(*hdr));
	if (!buf || len < KTLSH_PROTO_HDR_LEN)
		goto out;
	hdr->magic = proto_rd32(p);
	hdr->version = p[4];
	hdr->type = p[5];
	hdr->flags = proto_rd16(p + 6);
	hdr->len = proto_rd32(p + 8);
	hdr->id = proto_rd32(p + 12);

	/* Magic and version come first: they are the only fields whose
	 * place every version promises to keep. */
	if (hdr->magic != KTLSH_PROTO_MAGIC)
		goto out;
	ret = -EPROTO;
	if (hdr->version != KTLSH_PROTO_VERSION)
		goto out;
	ret = -EMSGSIZE;
	if (hdr->len > KTLSH_PROTO_MAX_MSG)
		goto out;
	ret = -EBADMSG;
	if (hdr->len < KTLSH_PROTO_HDR_LEN || hdr->len % 4)
		goto out;
	ret = -EPROTO;
	if (hdr->flags)
		goto out;
	ret = 0;
out:
	return ret;
}

/* Header checks shared by the decoders: the message is complete, of a type
 * this decoder takes; c covers the attributes. */
static int proto_decode_begin(const void *buf, size_t len, struct ktlsh_proto_hdr *hdr,
			      enum proto_class want, struct ktlsh_cur *c)
{
	enum proto_class cls;
	int ret = ktlsh_proto_decode_header(buf, len, hdr);

	if (ret)
		goto out;
	if (hdr->len != len) {
		ret = -EBADMSG;
		goto out;
	}
	cls = proto_class(hdr->type);
	if (cls == PC_UNKNOWN) {
		ret = -EPROTO;
		goto out;
	}
	if (cls != want && !(cls == PC_ERROR && (want == PC_REPLY || want == PC_STATUS))) {
		ret = -EBADMSG;
		goto out;
	}
	ktlsh_cur_init(c, (const uint8_t *)buf + KTLSH_PROTO_HDR_LEN, len - KTLSH_PROTO_HDR_LEN);
out:
	return ret;
}

static int proto_store_request(void *obj, const struct proto_attr *a)
{
	struct ktlsh_proto_request *req = obj;
	uint32_t v;

	switch (a->type) {
	case KTLSH_PROTO_A_ROLE:
		v = proto_attr_u32(a);
		if (v != KTLSH_PROTO_ROLE_CLIENT && v != KTLSH_PROTO_ROLE_SERVER)
			return -EBADMSG;
		req->role = (enum ktlsh_proto_role)v;
		return 0;
	case KTLSH_PROTO_A_IDENTITY:
		return proto_copy_str(req->identity, sizeof(req->identity), a);
	case KTLSH_PROTO_A_SERVER_NAME:
		return proto_copy_str(req->server_name, sizeof(req->server_name), a);
	case KTLSH_PROTO_A_ALPN:
		if (req->n_alpn >= KTLSH_PROTO_ALPN_MAX)
			return -EMSGSIZE;
		return proto_copy_str(req->alpn[req->n_alpn++], sizeof(req->alpn[0]), a);
	case KTLSH_PROTO_A_TIMEOUT_MS:
		req->timeout_ms = proto_attr_u32(a);
		return 0;
	case KTLSH_PROTO_A_FLAGS:
		v = proto_attr_u32(a);
		if (v & ~KTLSH_PROTO_F_ALL)
			return -EPROTO;
		req->flags = v;
		return 0;
	}
	return -EBADMSG;	/* a rule allowed what the store does not know */
}

int ktlsh_proto_decode_request(const void *buf, size_t len, struct ktlsh_proto_request *req)
{
	struct ktlsh_proto_hdr hdr;
	struct ktlsh_cur c;
	int ret;

	memset(req, 0, sizeof(*req));
	ret = proto_decode_begin(buf, len, &hdr, PC_REQUEST, &c);
	if (ret)
		goto out;
	req->type = (enum ktlsh_proto_type)hdr.type;
	req->id = hdr.id;
	ret = proto_parse(&c, &proto_rules[hdr.type], proto_store_request, req);
out:
	if (ret)
		memset(req, 0, sizeof(*req));
	return ret;
}

static int proto_store_reply(void *obj, const struct proto_attr *a)
{
	struct ktlsh_proto_reply *rep = obj;
	uint32_t v;

	switch (a->type) {
	case KTLSH_PROTO_A_STATUS:
		return proto_attr_status(a, &rep->status);
	case KTLSH_PROTO_A_REASON:
		return proto_copy_str(rep->reason, sizeof(rep->reason), a);
	case KTLSH_PROTO_A_ALERT_SENT:
		return proto_attr_alert(a, &rep->alert_sent);
	case KTLSH_PROTO_A_ALERT_RECEIVED:
		return proto_attr_alert(a, &rep->alert_received);
	case KTLSH_PROTO_A_TLS_VERSION:
		v = proto_attr_u32(a);
		if (v < 0x0301 || v > 0x0304)
			return -EBADMSG;
		rep->tls_version = v;
		return 0;
	case KTLSH_PROTO_A_CIPHER:
		return proto_copy_str(rep->cipher, sizeof(rep->cipher), a);
	case KTLSH_PROTO_A_GROUP:
		return proto_copy_str(rep->group, sizeof(rep->group), a);
	case KTLSH_PROTO_A_ALPN_CHOSEN:
		return proto_copy_str(rep->alpn, sizeof(rep->alpn), a);
	case KTLSH_PROTO_A_RESUMED:
		v = proto_attr_u32(a);
		if (v > 1)
			return -EBADMSG;
		rep->resumed = v;
		return 0;
	case KTLSH_PROTO_A_PEER_SUBJECT:
		return proto_copy_str(rep->peer_subject, sizeof(rep->peer_subject), a);
	case KTLSH_PROTO_A_PEER_SAN:
		if (rep->n_peer_sans >= KTLSH_PROTO_SAN_MAX)
			return -EMSGSIZE;
		return proto_copy_str(rep->peer_san[rep->n_peer_sans++], sizeof(rep->peer_san[0]), a);
	case KTLSH_PROTO_A_PEER_FINGERPRINT:
		memcpy(rep->peer_fingerprint, a->val.p, KTLSH_PROTO_FINGERPRINT_LEN);
		rep->has_peer_fingerprint = true;
		return 0;
	case KTLSH_PROTO_A_HANDSHAKE_US:
		rep->handshake_us = proto_attr_u64(a);
		return 0;
	case KTLSH_PROTO_A_TX_SEQ:
		rep->tx_seq = proto_attr_u64(a);
		return 0;
	case KTLSH_PROTO_A_RX_SEQ:
		rep->rx_seq = proto_attr_u64(a);
		return 0;
	}
	return -EBADMSG;
}

int ktlsh_proto_decode_reply(const void *buf, size_t len, struct ktlsh_proto_reply *rep)
{
	struct ktlsh_proto_hdr hdr;
	struct ktlsh_cur c;
	int ret;

	ktlsh_proto_reply_init(rep, 0, 0);
	ret = proto_decode_begin(buf, len, &hdr, PC_REPLY, &c);
	if (ret)
		goto out;
	rep->type = (enum ktlsh_proto_type)hdr.type;
	rep->id = hdr.id;
	ret = proto_parse(&c, &proto_rules[hdr.type], proto_store_reply, rep);
	if (ret)
		goto out;
	/* An ERROR that says "success" would let a caller think it has a socket with kTLS. */
	if (rep->type == KTLSH_PROTO_ERROR && rep->status == 0)
		ret = -EBADMSG;
out:
	if (ret) {
		ktlsh_proto_reply_init(rep, 0, 0);
		rep->status = ret;
	}
	return ret;
}

static int proto_store_item(void *obj, const struct proto_attr *a)
{
	struct ktlsh_proto_item *it = obj;

	switch (a->type) {
	case KTLSH_PROTO_A_ITEM_KEY:
		return proto_copy_str(it->key, sizeof(it->key), a);
	case KTLSH_PROTO_A_ITEM_VALUE:
		return proto_copy_str(it->value, sizeof(it->value), a);
	}
	return -EBADMSG;
}

static int proto_store_status(void *obj, const struct proto_attr *a)
{
	struct ktlsh_proto_status *st = obj;
	struct ktlsh_cur inner;
	int ret;

	switch (a->type) {
	case KTLSH_PROTO_A_STATUS:
		return proto_attr_status(a, &st->status);
	case KTLSH_PROTO_A_REASON:
		return proto_copy_str(st->reason, sizeof(st->reason), a);
	case KTLSH_PROTO_A_STATUS_ITEM:
		if (st->n_items >= KTLSH_PROTO_ITEMS_MAX)
			return -EMSGSIZE;
		/* One level deep: the item rule allows no nested attribute. */
		inner = a->val;
		ret = proto_parse(&inner, &proto_item_rule, proto_store_item, &st->items[st->n_items]);
		if (!ret)
			st->n_items++;
		return ret;
	}
	return -EBADMSG;
}

int ktlsh_proto_decode_status(const void *buf, size_t len, struct ktlsh_proto_status *st)
{
	struct ktlsh_proto_hdr hdr;
	struct ktlsh_cur c;
	int ret;

	memset(st, 0, sizeof(*st));
	ret = proto_decode_begin(buf, len, &hdr, PC_STATUS, &c);
	if (ret)
		goto out;
	st->type = (enum ktlsh_proto_type)hdr.type;
	st->id = hdr.id;
	ret = proto_parse(&c, &proto_rules[hdr.type], proto_store_status, st);
	if (ret)
		goto out;
	if (st->type == KTLSH_PROTO_ERROR && st->status == 0)
		ret = -EBADMSG;
out:
	if (ret) {
		memset(st, 0, sizeof(*st));
		st->status = ret;
	}
	return ret;
}

/* ---- encoding ---- */

static int proto_put_attr(struct ktlsh_buf *b, unsigned int type, const void *val, size_t len)
{
	size_t pad = KTLSH_PROTO_ALIGN(len) - len;
	uint8_t *p;
	int ret;

	if (len > UINT16_MAX - 4u) {
		ret = -EMSGSIZE;
		goto out;
	}
	ret = proto_buf_room(b, 4 + len + pad);
	if (ret)
		goto out;
	p = b->data + b->len;
	proto_wr16(p, (uint16_t)type);
	proto_wr16(p + 2, (uint16_t)(4 + len));
	if (len)
		memcpy(p + 4, val, len);
	memset(p + 4 + len, 0, pad);
	b->len += 4 + len + pad;
out:
	return ret;
}

static int proto_put_u32(struct ktlsh_buf *b, unsigned int type, uint32_t v)
{
	uint8_t w[4];

	proto_wr32(w, v);
	return proto_put_attr(b, type, w, sizeof(w));
}

static int proto_put_u64(struct ktlsh_buf *b, unsigned int type, uint64_t v)
{
	uint8_t w[8];

	proto_wr32(w, (uint32_t)(v >> 32));
	proto_wr32(w + 4, (uint32_t)v);
	return proto_put_attr(b, type, w, sizeof(w));
}

/*
 * A string field of size bytes: omitted when empty unless it is a list
 * entry (where an empty entry would change the count, so it is refused).
 * The same policy as the decoder's, so whatever is sent decodes.
 */
static int proto_put_str(struct ktlsh_buf *b, unsigned int type, const char *s, size_t size,
			 bool entry)
{
	const struct proto_policy *pol = &proto_policy[type];
	size_t n = strnlen(s, size);

	if (n == size || n > pol->max)
		return -EINVAL;
	if (!n)
		return entry ? -EINVAL : 0;
	if (!proto_str_valid(pol->kind, s, n))
		return -EINVAL;
	return proto_put_attr(b, type, s, n);
}

static int proto_put_status(struct ktlsh_buf *b, int32_t status)
{
	if (status > 0 || status < -KTLSH_PROTO_ERRNO_MAX)
		return -EINVAL;
	return proto_put_u32(b, KTLSH_PROTO_A_STATUS, (uint32_t)status);
}

static int proto_put_hdr(struct ktlsh_buf *b, unsigned int type, uint32_t id)
{
	uint8_t *p;
	int ret = proto_buf_room(b, KTLSH_PROTO_HDR_LEN);

	if (ret)
		goto out;
	p = b->data + b->len;
	proto_wr32(p, KTLSH_PROTO_MAGIC);
	p[4] = KTLSH_PROTO_VERSION;
	p[5] = (uint8_t)type;
	proto_wr16(p + 6, 0);
	proto_wr32(p + 8, 0);		/* length, set by proto_put_end() */
	proto_wr32(p + 12, id);
	b->len += KTLSH_PROTO_HDR_LEN;
out:
	return ret;
}

static int proto_put_end(struct ktlsh_buf *b, size_t start)
{
	size_t total = b->len - start;

	if (total > KTLSH_PROTO_MAX_MSG)
		return -EMSGSIZE;
	proto_wr32(b->data + start + 8, (uint32_t)total);
	return 0;
}

int ktlsh_proto_encode_request(struct ktlsh_buf *b, const struct ktlsh_proto_request *req)
{
	size_t start = b->len;
	unsigned int i;
	int ret = -EINVAL;

	if (proto_class(req->type) != PC_REQUEST)
		goto out;
	ret = proto_put_hdr(b, req->type, req->id);
	if (ret)
		goto out;
	if (req->type != KTLSH_PROTO_HANDSHAKE_REQ)
		goto end;

	ret = -EINVAL;
	if ((req->role != KTLSH_PROTO_ROLE_CLIENT && req->role != KTLSH_PROTO_ROLE_SERVER) ||
	    (req->flags & ~KTLSH_PROTO_F_ALL) || req->n_alpn > KTLSH_PROTO_ALPN_MAX)
		goto out;
	ret = proto_put_u32(b, KTLSH_PROTO_A_ROLE, req->role);
	if (ret)
		goto out;
	ret = proto_put_str(b, KTLSH_PROTO_A_IDENTITY, req->identity, sizeof(req->identity), false);
	if (ret)
		goto out;
	ret = proto_put_str(b, KTLSH_PROTO_A_SERVER_NAME, req->server_name,
			    sizeof(req->server_name), false);
	if (ret)
		goto out;
	for (i = 0; i < req->n_alpn; i++) {
		ret = proto_put_str(b, KTLSH_PROTO_A_ALPN, req->alpn[i], sizeof(req->alpn[i]), true);
		if (ret)
			goto out;
	}
	if (req->timeout_ms) {
		ret = proto_put_u32(b, KTLSH_PROTO_A_TIMEOUT_MS, req->timeout_ms);
		if (ret)
			goto out;
	}
	if (req->flags) {
		ret = proto_put_u32(b, KTLSH_PROTO_A_FLAGS, req->flags);
		if (ret)
			goto out;
	}
end:
	ret = proto_put_end(b, start);
out:
	if (ret)
		b->len = start;
	return ret;
}

static int proto_put_alert(struct ktlsh_buf *b, unsigned int type, int32_t alert)
{
	if (alert < -1 || alert > 255)
		return -EINVAL;
	if (alert < 0)
		return 0;
	return proto_put_u32(b, type, (uint32_t)alert);
}

static int proto_put_u64_nz(struct ktlsh_buf *b, unsigned int type, uint64_t v)
{
	return v ? proto_put_u64(b, type, v) : 0;
}

/* The HANDSHAKE_REPLY-only attributes. */
static int proto_put_handshake(struct ktlsh_buf *b, const struct ktlsh_proto_reply *rep)
{
	unsigned int i;
	int ret = -EINVAL;

	if ((rep->tls_version && (rep->tls_version < 0x0301 || rep->tls_version > 0x0304)) ||
	    rep->n_peer_sans > KTLSH_PROTO_SAN_MAX)
		goto out;
	ret = proto_put_alert(b, KTLSH_PROTO_A_ALERT_SENT, rep->alert_sent);
	if (ret)
		goto out;
	ret = proto_put_alert(b, KTLSH_PROTO_A_ALERT_RECEIVED, rep->alert_received);
	if (ret)
		goto out;
	if (rep->tls_version) {
		ret = proto_put_u32(b, KTLSH_PROTO_A_TLS_VERSION, rep->tls_version);
		if (ret)
			goto out;
	}
	ret = proto_put_str(b, KTLSH_PROTO_A_CIPHER, rep->cipher, sizeof(rep->cipher), false);
	if (ret)
		goto out;
	ret = proto_put_str(b, KTLSH_PROTO_A_GROUP, rep->group, sizeof(rep->group), false);
	if (ret)
		goto out;
	ret = proto_put_str(b, KTLSH_PROTO_A_ALPN_CHOSEN, rep->alpn, sizeof(rep->alpn), false);
	if (ret)
		goto out;
	if (rep->resumed) {
		ret = proto_put_u32(b, KTLSH_PROTO_A_RESUMED, 1);
		if (ret)
			goto out;
	}
	ret = proto_put_str(b, KTLSH_PROTO_A_PEER_SUBJECT, rep->peer_subject,
			    sizeof(rep->peer_subject), false);
	if (ret)
		goto out;
	for (i = 0; i < rep->n_peer_sans; i++) {
		ret = proto_put_str(b, KTLSH_PROTO_A_PEER_SAN, rep->peer_san[i],
				    sizeof(rep->peer_san[i]), true);
		if (ret)
			goto out;
	}
	if (rep->has_peer_fingerprint) {
		ret = proto_put_attr(b, KTLSH_PROTO_A_PEER_FINGERPRINT, rep->peer_fingerprint,
				     sizeof(rep->peer_fingerprint));
		if (ret)
			goto out;
	}
	ret = proto_put_u64_nz(b, KTLSH_PROTO_A_HANDSHAKE_US, rep->handshake_us);
	if (ret)
		goto out;
	ret = proto_put_u64_nz(b, KTLSH_PROTO_A_TX_SEQ, rep->tx_seq);
	if (ret)
		goto out;
	ret = proto_put_u64_nz(b, KTLSH_PROTO_A_RX_SEQ, rep->rx_seq);
out:
	return ret;
}

int ktlsh_proto_encode_reply(struct ktlsh_buf *b, const struct ktlsh_proto_reply *rep)
{
	size_t start = b->len;
	enum proto_class cls = proto_class(rep->type);
	int ret = -EINVAL;

	if (cls != PC_REPLY && cls != PC_ERROR)
		goto out;
	if (cls == PC_ERROR && rep->status == 0)
		goto out;
	ret = proto_put_hdr(b, rep->type, rep->id);
	if (ret)
		goto out;
	ret = proto_put_status(b, rep->status);
	if (ret)
		goto out;
	ret = proto_put_str(b, KTLSH_PROTO_A_REASON, rep->reason, sizeof(rep->reason), false);
	if (ret)
		goto out;
	if (rep->type == KTLSH_PROTO_HANDSHAKE_REPLY) {
		ret = proto_put_handshake(b, rep);
		if (ret)
			goto out;
	}
	ret = proto_put_end(b, start);
out:
	if (ret)
		b->len = start;
	return ret;
}

static int proto_put_item(struct ktlsh_buf *b, const struct ktlsh_proto_item *it)
{
	size_t start = b->len;
	int ret = -EINVAL;

	if (!it->key[0])
		goto out;
	ret = proto_put_attr(b, KTLSH_PROTO_A_STATUS_ITEM, NULL, 0);
	if (ret)
		goto out;
	ret = proto_put_str(b, KTLSH_PROTO_A_ITEM_KEY, it->key, sizeof(it->key), true);
	if (ret)
		goto out;
	ret = proto_put_str(b, KTLSH_PROTO_A_ITEM_VALUE, it->value, sizeof(it->value), false);
	if (ret)
		goto out;
	/* Inner attributes are padded, so the nested length needs no padding
	 * of its own; ITEM_WORST proves it fits the u16. */
	proto_wr16(b->data + start + 2, (uint16_t)(b->len - start));
out:
	return ret;
}

int ktlsh_proto_encode_status(struct ktlsh_buf *b, const struct ktlsh_proto_status *st)
{
	size_t start = b->len;
	enum proto_class cls = proto_class(st->type);
	unsigned int i;
	int ret = -EINVAL;

	if (cls != PC_STATUS && cls != PC_ERROR)
		goto out;
	if ((cls == PC_ERROR && st->status == 0) ||
	    (cls == PC_STATUS && st->n_items > KTLSH_PROTO_ITEMS_MAX))
		goto out;
	ret = proto_put_hdr(b, st->type, st->id);
	if (ret)
		goto out;
	ret = proto_put_status(b, st->status);
	if (ret)
		goto out;
	ret = proto_put_str(b, KTLSH_PROTO_A_REASON, st->reason, sizeof(st->reason), false);
	if (ret)
		goto out;
	if (cls == PC_STATUS) {
		for (i = 0; i < st->n_items; i++) {
			ret = proto_put_item(b, &st->items[i]);
			if (ret)
				goto out;
		}
	}
	ret = proto_put_end(b, start);
out:
	if (ret)
		b->len = start;
	return ret;
}

/* ---- helpers ---- */

void ktlsh_proto_request_init(struct ktlsh_proto_request *req, enum ktlsh_proto_type type, uint32_t id)
{
	memset(req, 0, sizeof(*req));
	req->type = type;
	req->id = id;
}

void ktlsh_proto_reply_init(struct ktlsh_proto_reply *rep, enum ktlsh_proto_type type, uint32_t id)
{
	memset(rep, 0, sizeof(*rep));
	rep->type = type;
	rep->id = id;
	rep->status = -ECANCELED;
	rep->alert_sent = -1;
	rep->alert_received = -1;
}

void ktlsh_proto_status_init(struct ktlsh_proto_status *st, uint32_t id)
{
	memset(st, 0, sizeof(*st));
	st->type = KTLSH_PROTO_STATUS_REPLY;
	st->id = id;
	st->status = -ECANCELED;
}

const char *ktlsh_proto_type_name(unsigned int type)
{
	switch (type) {
	case KTLSH_PROTO_HANDSHAKE_REQ:
		return "HANDSHAKE_REQ";
	case KTLSH_PROTO_HANDSHAKE_REPLY:
		return "HANDSHAKE_REPLY";
	case KTLSH_PROTO_STATUS_REQ:
		return "STATUS_REQ";
	case KTLSH_PROTO_STATUS_REPLY:
		return "STATUS_REPLY";
	case KTLSH_PROTO_RELOAD_REQ:
		return "RELOAD_REQ";
	case KTLSH_PROTO_RELOAD_REPLY:
		return "RELOAD_REPLY";
	case KTLSH_PROTO_ERROR:
		return "ERROR";
	}
	return "unknown";
}
