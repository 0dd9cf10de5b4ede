// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The handshake upcall's messages (netlink.h): ACCEPT replies and READY
 * notifications parsed and checked, DONE encoded, the controller's policy
 * dump read. Pure functions over message bytes, with libnl's attribute
 * walkers, so the unit tests can feed them anything
 * (tests/unit/test_netlink.c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>

#include <netlink/attr.h>
#include <netlink/msg.h>

#include "netlink.h"

#if defined(__has_include)
#if __has_include(<linux/handshake.h>)
#include <linux/handshake.h>
_Static_assert(KTLSHD_HS_A_ACCEPT_PEERNAME == HANDSHAKE_A_ACCEPT_PEERNAME, "uapi");
_Static_assert(KTLSHD_HS_A_DONE_REMOTE_AUTH == HANDSHAKE_A_DONE_REMOTE_AUTH, "uapi");
_Static_assert(KTLSHD_HS_AUTH_X509 == HANDSHAKE_AUTH_X509, "uapi");
_Static_assert(KTLSHD_HS_CMD_DONE == HANDSHAKE_CMD_DONE, "uapi");
#endif
#endif

static void ktlshd_nl_why(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void ktlshd_nl_why(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

/* The generic netlink payload of msg, if msg is a whole message of
 * family_id with cmd; else NULL. *alen gets the attributes' length. */
static const struct nlattr *ktlshd_nl_genl(const void *msg, size_t len, uint16_t family_id,
					   uint8_t cmd, int *alen, int *err, char *why,
					   size_t whylen)
{
	const struct nlmsghdr *nlh = msg;
	const struct genlmsghdr *gh;
	size_t hdr = NLMSG_HDRLEN + NLMSG_ALIGN(GENL_HDRLEN);

	*err = -EBADMSG;
	if (!msg || len < NLMSG_HDRLEN) {
		ktlshd_nl_why(why, whylen, "message shorter than a netlink header (%zu bytes)", len);
		return NULL;
	}
	if (nlh->nlmsg_len < NLMSG_HDRLEN || nlh->nlmsg_len > len) {
		ktlshd_nl_why(why, whylen, "netlink length %u outside 16..%zu", nlh->nlmsg_len, len);
		return NULL;
	}
	*err = -ENOMSG;
	if (nlh->nlmsg_type != family_id) {
		ktlshd_nl_why(why, whylen, "message type %u is not the handshake family (%u)",
			      nlh->nlmsg_type, family_id);
		return NULL;
	}
	*err = -EBADMSG;
	if (nlh->nlmsg_len < hdr) {
		ktlshd_nl_why(why, whylen, "no room for the generic netlink header");
		return NULL;
	}
	gh = (const struct genlmsghdr *)((const char *)msg + NLMSG_HDRLEN);
	*err = -ENOMSG;
	if (gh->cmd != cmd) {
		ktlshd_nl_why(why, whylen, "command %u, expected %u", gh->cmd, cmd);
		return NULL;
	}
	*err = 0;
	*alen = (int)(nlh->nlmsg_len - hdr);
	return (const struct nlattr *)((const char *)msg + hdr);
}

/* After an attribute walk: anything left over (a partial header, a length
 * past the end) is malformed; only the last attribute's padding may be
 * missing. */
static int ktlshd_nl_tail_ok(const struct nlattr *nla, int rem)
{
	(void)nla;
	return rem <= 0 && rem > -NLA_ALIGNTO ? 0 : -EBADMSG;
}

static int ktlshd_nl_u32(const struct nlattr *nla, uint32_t *v)
{
	if (nla_len(nla) != (int)sizeof(uint32_t))
		return -EBADMSG;
	memcpy(v, nla_data(nla), sizeof(*v));
	return 0;
}

/* One CERTIFICATE nest; the first valid one is kept (the attribute may
 * repeat, though the kernel sends one). */
static int ktlshd_nl_parse_cert(const struct nlattr *nest, struct ktlshd_nl_accept *out,
				char *why, size_t whylen)
{
	const struct nlattr *nla;
	bool seen_cert = false, seen_key = false;
	int32_t cert = 0, key = 0;
	uint32_t v;
	int rem;

	nla_for_each_nested(nla, nest, rem) {
		switch (nla_type(nla)) {
		case KTLSHD_HS_A_X509_CERT:
		case KTLSHD_HS_A_X509_PRIVKEY:
			if (ktlshd_nl_u32(nla, &v)) {
				ktlshd_nl_why(why, whylen, "certificate: serial of %d bytes",
					      nla_len(nla));
				return -EBADMSG;
			}
			if ((nla_type(nla) == KTLSHD_HS_A_X509_CERT ? seen_cert : seen_key)) {
				ktlshd_nl_why(why, whylen, "certificate: serial repeated");
				return -EBADMSG;
			}
			if ((int32_t)v < 0) {
				ktlshd_nl_why(why, whylen, "certificate: negative key serial");
				return -EPROTO;
			}
			if (nla_type(nla) == KTLSHD_HS_A_X509_CERT) {
				seen_cert = true;
				cert = (int32_t)v;
			} else {
				seen_key = true;
				key = (int32_t)v;
			}
			break;
		default:
			out->unknown_attrs++;
			break;
		}
	}
	if (ktlshd_nl_tail_ok(nla, rem)) {
		ktlshd_nl_why(why, whylen, "certificate: truncated attribute");
		return -EBADMSG;
	}
	/* A certificate without its key (or the reverse) is of no use. */
	if (!cert != !key) {
		ktlshd_nl_why(why, whylen, "certificate serial %d with private key serial %d",
			      cert, key);
		return -EPROTO;
	}
	if (!out->cert_serial) {
		out->cert_serial = cert;
		out->privkey_serial = key;
	}
	return 0;
}

int ktlshd_nl_parse_accept(const void *msg, size_t len, uint16_t family_id,
			   struct ktlshd_nl_accept *out, char *why, size_t whylen)
{
	const struct nlattr *head, *nla;
	unsigned int seen = 0;
	uint32_t v;
	int alen, rem, ret, type;

	memset(out, 0, sizeof(*out));
	out->sockfd = -1;
	ktlshd_nl_why(why, whylen, "ok");
	head = ktlshd_nl_genl(msg, len, family_id, KTLSHD_HS_CMD_ACCEPT, &alen, &ret, why,
			      whylen);
	if (!head)
		return ret;

	/* The descriptor first: whatever else is wrong, the caller must be
	 * able to answer DONE on it and close it. */
	nla_for_each_attr(nla, head, alen, rem) {
		if (nla_type(nla) != KTLSHD_HS_A_ACCEPT_SOCKFD)
			continue;
		if (ktlshd_nl_u32(nla, &v)) {
			ktlshd_nl_why(why, whylen, "sockfd of %d bytes", nla_len(nla));
			return -EBADMSG;
		}
		if (out->sockfd >= 0) {
			ktlshd_nl_why(why, whylen, "sockfd repeated");
			return -EBADMSG;
		}
		if ((int32_t)v < 0) {
			ktlshd_nl_why(why, whylen, "negative sockfd %d", (int32_t)v);
			return -EPROTO;
		}
		out->sockfd = (int)v;
	}

	nla_for_each_attr(nla, head, alen, rem) {
		type = nla_type(nla);
		if (type > KTLSHD_HS_A_ACCEPT_MAX || type == 0) {
			out->unknown_attrs++;
			continue;
		}
		/* Only identities and certificates may repeat (multi-attr). */
		if (type != KTLSHD_HS_A_ACCEPT_PEER_IDENTITY && type != KTLSHD_HS_A_ACCEPT_SOCKFD &&
		    type != KTLSHD_HS_A_ACCEPT_CERTIFICATE) {
			if (seen & (1u << type)) {
				ktlshd_nl_why(why, whylen, "attribute %d repeated", type);
				return -EBADMSG;
			}
			seen |= 1u << type;
		}
		switch (type) {
		case KTLSHD_HS_A_ACCEPT_SOCKFD:
			break;
		case KTLSHD_HS_A_ACCEPT_HANDLER_CLASS:
		case KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE:
		case KTLSHD_HS_A_ACCEPT_TIMEOUT:
		case KTLSHD_HS_A_ACCEPT_AUTH_MODE:
		case KTLSHD_HS_A_ACCEPT_PEER_IDENTITY:
		case KTLSHD_HS_A_ACCEPT_KEYRING:
			if (ktlshd_nl_u32(nla, &v)) {
				ktlshd_nl_why(why, whylen, "attribute %d: %d bytes, expected 4", type,
					      nla_len(nla));
				return -EBADMSG;
			}
			if (type == KTLSHD_HS_A_ACCEPT_HANDLER_CLASS &&
			    v != KTLSHD_HS_HANDLER_CLASS_TLSHD) {
				ktlshd_nl_why(why, whylen, "handler class %u", v);
				return -EPROTO;
			}
			if (type == KTLSHD_HS_A_ACCEPT_MESSAGE_TYPE)
				out->message_type = v;
			else if (type == KTLSHD_HS_A_ACCEPT_TIMEOUT)
				out->timeout_ms = v;
			else if (type == KTLSHD_HS_A_ACCEPT_AUTH_MODE)
				out->auth_mode = v;
			else if (type == KTLSHD_HS_A_ACCEPT_KEYRING)
				out->keyring = (int32_t)v;
			else if (type == KTLSHD_HS_A_ACCEPT_PEER_IDENTITY) {
				if (out->n_peerids == KTLSHD_NL_PEERIDS_MAX) {
					ktlshd_nl_why(why, whylen, "more than %d peer identities",
						      KTLSHD_NL_PEERIDS_MAX);
					return -EPROTO;
				}
				out->peerids[out->n_peerids++] = (int32_t)v;
			}
			if ((type == KTLSHD_HS_A_ACCEPT_KEYRING ||
			     type == KTLSHD_HS_A_ACCEPT_PEER_IDENTITY) && (int32_t)v < 0) {
				ktlshd_nl_why(why, whylen, "negative key serial %d", (int32_t)v);
				return -EPROTO;
			}
			break;
		case KTLSHD_HS_A_ACCEPT_CERTIFICATE:
			ret = ktlshd_nl_parse_cert(nla, out, why, whylen);
			if (ret)
				return ret;
			break;
		case KTLSHD_HS_A_ACCEPT_PEERNAME: {
			const char *s = nla_data(nla);
			int n = nla_len(nla);

			/* NUL-terminated, nothing after the NUL, printable. */
			if (n < 1 || s[n - 1] != '\0' || strlen(s) != (size_t)n - 1) {
				ktlshd_nl_why(why, whylen, "peer name not a NUL-terminated string");
				return -EBADMSG;
			}
			if (n - 1 > KTLSHD_NL_PEERNAME_MAX) {
				ktlshd_nl_why(why, whylen, "peer name of %d bytes", n - 1);
				return -EPROTO;
			}
			for (int i = 0; i < n - 1; i++) {
				if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f) {
					ktlshd_nl_why(why, whylen, "peer name has byte 0x%02x",
						      (unsigned char)s[i]);
					return -EPROTO;
				}
			}
			memcpy(out->peername, s, (size_t)n);
			break;
		}
		}
	}
	if (ktlshd_nl_tail_ok(nla, rem)) {
		ktlshd_nl_why(why, whylen, "truncated attribute");
		return -EBADMSG;
	}
	if (out->sockfd < 0) {
		ktlshd_nl_why(why, whylen, "no sockfd");
		return -EPROTO;
	}
	if (out->message_type != KTLSHD_HS_MSG_TYPE_CLIENTHELLO &&
	    out->message_type != KTLSHD_HS_MSG_TYPE_SERVERHELLO) {
		ktlshd_nl_why(why, whylen, "message type %u", out->message_type);
		return -EPROTO;
	}
	if (out->auth_mode != KTLSHD_HS_AUTH_UNAUTH && out->auth_mode != KTLSHD_HS_AUTH_PSK &&
	    out->auth_mode != KTLSHD_HS_AUTH_X509) {
		ktlshd_nl_why(why, whylen, "auth mode %u", out->auth_mode);
		return -EPROTO;
	}
	if (out->auth_mode == KTLSHD_HS_AUTH_UNAUTH &&
	    out->message_type == KTLSHD_HS_MSG_TYPE_SERVERHELLO) {
		ktlshd_nl_why(why, whylen, "an unauthenticated server");
		return -EPROTO;
	}
	if (out->auth_mode == KTLSHD_HS_AUTH_PSK &&
	    out->message_type == KTLSHD_HS_MSG_TYPE_CLIENTHELLO) {
		unsigned int i, usable = 0;

		for (i = 0; i < out->n_peerids; i++)
			usable += out->peerids[i] > 0;
		if (!usable) {
			ktlshd_nl_why(why, whylen, "a PSK client without a key serial");
			return -EPROTO;
		}
	}
	if (out->timeout_ms > 3600000) {
		ktlshd_nl_why(why, whylen, "timeout of %u ms", out->timeout_ms);
		return -EPROTO;
	}
	return 0;
}

bool ktlshd_nl_is_ready(const void *msg, size_t len, uint16_t family_id)
{
	const struct nlattr *head, *nla;
	uint32_t v;
	int alen, rem, err;

	head = ktlshd_nl_genl(msg, len, family_id, KTLSHD_HS_CMD_READY, &alen, &err, NULL, 0);
	if (!head)
		return false;
	nla_for_each_attr(nla, head, alen, rem) {
		if (nla_type(nla) != KTLSHD_HS_A_ACCEPT_HANDLER_CLASS)
			continue;
		if (ktlshd_nl_u32(nla, &v) || v != KTLSHD_HS_HANDLER_CLASS_TLSHD)
			return false;
	}
	return true;
}

static int ktlshd_nl_put_u32(uint8_t *buf, size_t cap, size_t *off, uint16_t type, uint32_t v)
{
	struct nlattr *nla;

	if (*off + NLA_HDRLEN + NLA_ALIGN(sizeof(v)) > cap)
		return -ENOSPC;
	nla = (struct nlattr *)(buf + *off);
	nla->nla_len = NLA_HDRLEN + sizeof(v);
	nla->nla_type = type;
	memcpy(buf + *off + NLA_HDRLEN, &v, sizeof(v));
	*off += NLA_HDRLEN + NLA_ALIGN(sizeof(v));
	return 0;
}

int ktlshd_nl_build_done(void *buf, size_t cap, uint16_t family_id, uint32_t status,
			 int sockfd, const int32_t *peerids, unsigned int n_peerids,
			 bool remote_auth)
{
	struct nlmsghdr *nlh = buf;
	struct genlmsghdr *gh;
	size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(GENL_HDRLEN);
	unsigned int i;

	if (cap < off)
		return -ENOSPC;
	memset(buf, 0, off);
	nlh->nlmsg_type = family_id;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	gh = (struct genlmsghdr *)((uint8_t *)buf + NLMSG_HDRLEN);
	gh->cmd = KTLSHD_HS_CMD_DONE;
	gh->version = KTLSHD_HS_FAMILY_VERSION;
	if (status > KTLSHD_NL_STATUS_MAX)
		status = EIO;
	if (ktlshd_nl_put_u32(buf, cap, &off, KTLSHD_HS_A_DONE_STATUS, status) ||
	    ktlshd_nl_put_u32(buf, cap, &off, KTLSHD_HS_A_DONE_SOCKFD, (uint32_t)sockfd))
		return -ENOSPC;
	/* The kernel looks at identities only on success. */
	for (i = 0; remote_auth && !status && i < n_peerids && i < KTLSHD_NL_PEERIDS_MAX; i++)
		if (peerids[i] > 0 &&
		    ktlshd_nl_put_u32(buf, cap, &off, KTLSHD_HS_A_DONE_REMOTE_AUTH,
				      (uint32_t)peerids[i]))
			return -ENOSPC;
	nlh->nlmsg_len = (uint32_t)off;
	return (int)off;
}

void ktlshd_nl_policy_init(struct ktlshd_nl_policy *pol, uint16_t family_id, uint32_t op)
{
	memset(pol, 0, sizeof(*pol));
	pol->family_id = family_id;
	pol->op = op;
	pol->op_policy_idx = -1;
}

/*
 * One message of a CTRL_CMD_GETPOLICY dump (net/netlink/genetlink.c):
 *   CTRL_ATTR_OP_POLICY { [op] { CTRL_ATTR_POLICY_DO: u32 policy index } }
 *   CTRL_ATTR_POLICY { [policy index] { [attribute type] { ... } } }
 * An attribute the kernel does not accept is absent from its policy.
 */
int ktlshd_nl_policy_feed(struct ktlshd_nl_policy *pol, const void *msg, size_t len)
{
	const struct nlattr *head, *nla, *a, *b;
	uint32_t v;
	int alen, rem, r1, r2, err;

	head = ktlshd_nl_genl(msg, len, GENL_ID_CTRL, CTRL_CMD_GETPOLICY, &alen, &err, NULL, 0);
	if (!head)
		return err;
	nla_for_each_attr(nla, head, alen, rem) {
		switch (nla_type(nla)) {
		case CTRL_ATTR_FAMILY_ID:
			if (nla_len(nla) != 2 || *(const uint16_t *)nla_data(nla) != pol->family_id)
				return -ENOMSG;
			break;
		case CTRL_ATTR_OP_POLICY:
			nla_for_each_nested(a, nla, r1) {
				if ((uint32_t)nla_type(a) != pol->op)
					continue;
				nla_for_each_nested(b, a, r2) {
					if (nla_type(b) != CTRL_ATTR_POLICY_DO)
						continue;
					/* An index into attrs[], read by ktlshd_nl_policy_has(). */
					if (ktlshd_nl_u32(b, &v) ||
					    v >= sizeof(pol->attrs) / sizeof(pol->attrs[0]))
						return -EBADMSG;
					pol->op_policy_idx = (int)v;
				}
			}
			break;
		case CTRL_ATTR_POLICY:
			nla_for_each_nested(a, nla, r1) {
				unsigned int idx = (unsigned int)nla_type(a);

				if (idx >= sizeof(pol->attrs) / sizeof(pol->attrs[0]))
					continue;
				nla_for_each_nested(b, a, r2) {
					if (nla_type(b) < 64)
						pol->attrs[idx] |= 1ull << nla_type(b);
					pol->seen_any = true;
				}
			}
			break;
		default:
			break;
		}
	}
	return 0;
}

int ktlshd_nl_policy_has(const struct ktlshd_nl_policy *pol, unsigned int attr)
{
	if (pol->op_policy_idx < 0 || !pol->seen_any || attr >= 64)
		return -ENODATA;
	return !!(pol->attrs[pol->op_policy_idx] & (1ull << attr));
}

uint32_t ktlshd_nl_status_of(int err)
{
	switch (err) {
	case 0:
		return 0;
	case -ETIMEDOUT:
		return ETIMEDOUT;
	/* An authentication failure: the consumers (NFS) tell it from others. */
	case -EKEYREJECTED:
	case -EACCES:
	case -ENOKEY:
	case -EPERM:
		return EACCES;
	default:
		return err < 0 && -err <= KTLSHD_NL_STATUS_MAX ? (uint32_t)-err : EIO;
	}
}
