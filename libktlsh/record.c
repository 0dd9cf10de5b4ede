// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Records on a socket whose keys live in the kernel: reading the non-data
 * records that make recv() fail with EIO, and sending alerts.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "internal.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

#define KTLSH_HS_NEW_SESSION_TICKET	4
#define KTLSH_HS_KEY_UPDATE		24
#define KTLSH_ALERT_USER_CANCELED	90

static void ktlsh_classify_alert(const uint8_t *p, size_t len, struct ktlsh_record *rec)
{
	/* RFC 8446 5.1: one alert per record, two bytes. */
	if (len != 2) {
		rec->kind = KTLSH_REC_MALFORMED;
		return;
	}
	rec->alert_level = p[0];
	rec->alert_desc = p[1];
	if (p[1] == KTLSH_ALERT_CLOSE_NOTIFY)
		rec->kind = KTLSH_REC_CLOSE_NOTIFY;
	else if (p[0] == KTLSH_ALERT_WARNING)
		rec->kind = KTLSH_REC_ALERT_WARNING;
	else
		rec->kind = KTLSH_REC_ALERT_FATAL;
}

static void ktlsh_classify_handshake(const uint8_t *p, size_t len, struct ktlsh_record *rec)
{
	struct ktlsh_cur cur = { p, len }, body;
	int saw_other = 0, saw_ku = 0, saw_nst = 0;
	uint8_t msg_type;
	uint32_t msg_len;

	while (cur.left) {
		if (ktlsh_cur_get_u8(&cur, &msg_type) || ktlsh_cur_get_u24(&cur, &msg_len) ||
		    ktlsh_cur_sub(&cur, msg_len, &body)) {
			/* A message split across records is legal TLS but not something
			 * a kernel socket can reassemble for us: treat as malformed. */
			rec->kind = KTLSH_REC_MALFORMED;
			return;
		}
		rec->n_messages++;
		switch (msg_type) {
		case KTLSH_HS_NEW_SESSION_TICKET:
			saw_nst = 1;
			break;
		case KTLSH_HS_KEY_UPDATE:
			if (body.left != 1 || body.p[0] > 1) {
				rec->kind = KTLSH_REC_MALFORMED;
				return;
			}
			rec->key_update_request = body.p[0];
			saw_ku = 1;
			break;
		default:
			saw_other = 1;
			break;
		}
	}
	if (saw_ku)
		rec->kind = KTLSH_REC_KEY_UPDATE;
	else if (saw_other)
		rec->kind = KTLSH_REC_HANDSHAKE_OTHER;
	else if (saw_nst)
		rec->kind = KTLSH_REC_NEW_SESSION_TICKET;
	else
		rec->kind = KTLSH_REC_MALFORMED;	/* empty handshake record */
}

void ktlsh_record_classify(uint8_t type, const void *buf, size_t len, struct ktlsh_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->type = type;
	rec->len = len;
	switch (type) {
	case KTLSH_CT_APPLICATION_DATA:
		rec->kind = KTLSH_REC_DATA;
		break;
	case KTLSH_CT_ALERT:
		ktlsh_classify_alert(buf, len, rec);
		break;
	case KTLSH_CT_HANDSHAKE:
		ktlsh_classify_handshake(buf, len, rec);
		break;
	default:
		rec->kind = KTLSH_REC_MALFORMED;
		break;
	}
}

const char *ktlsh_rec_kind_name(enum ktlsh_rec_kind kind)
{
	static const char *const names[] = {
		[KTLSH_REC_DATA] = "data",
		[KTLSH_REC_CLOSE_NOTIFY] = "close_notify",
		[KTLSH_REC_ALERT_WARNING] = "warning alert",
		[KTLSH_REC_ALERT_FATAL] = "fatal alert",
		[KTLSH_REC_NEW_SESSION_TICKET] = "NewSessionTicket",
		[KTLSH_REC_KEY_UPDATE] = "KeyUpdate",
		[KTLSH_REC_HANDSHAKE_OTHER] = "post-handshake message",
		[KTLSH_REC_MALFORMED] = "malformed record",
	};

	if ((unsigned)kind >= KTLSH_ARRAY_SIZE(names))
		return "unknown";
	return names[kind];
}

const char *ktlsh_alert_name(uint8_t desc)
{
	switch (desc) {
	case 0: return "close_notify";
	case 10: return "unexpected_message";
	case 20: return "bad_record_mac";
	case 22: return "record_overflow";
	case 40: return "handshake_failure";
	case 42: return "bad_certificate";
	case 43: return "unsupported_certificate";
	case 44: return "certificate_revoked";
	case 45: return "certificate_expired";
	case 46: return "certificate_unknown";
	case 47: return "illegal_parameter";
	case 48: return "unknown_ca";
	case 49: return "access_denied";
	case 50: return "decode_error";
	case 51: return "decrypt_error";
	case 70: return "protocol_version";
	case 71: return "insufficient_security";
	case 80: return "internal_error";
	case 86: return "inappropriate_fallback";
	case 90: return "user_canceled";
	case 100: return "no_renegotiation";
	case 109: return "missing_extension";
	case 110: return "unsupported_extension";
	case 112: return "unrecognized_name";
	case 113: return "bad_certificate_status_response";
	case 115: return "unknown_psk_identity";
	case 116: return "certificate_required";
	case 120: return "no_application_protocol";
	default: return "unknown";
	}
}

ssize_t ktlsh_record_recv(int fd, void *buf, size_t len, int flags, uint8_t *type)
{
	union {
		char buf[CMSG_SPACE(sizeof(uint8_t))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf.buf,
		.msg_controllen = sizeof(cbuf.buf),
	};
	struct cmsghdr *cmsg;
	ssize_t n;

	n = recvmsg(fd, &msg, flags);
	if (n < 0)
		return -errno;
	*type = KTLSH_CT_APPLICATION_DATA;
	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_level == SOL_TLS && cmsg->cmsg_type == TLS_GET_RECORD_TYPE &&
		    cmsg->cmsg_len >= CMSG_LEN(sizeof(uint8_t)))
			*type = *(uint8_t *)CMSG_DATA(cmsg);
	}
	return n;
}

ssize_t ktlsh_record_send(int fd, uint8_t type, const void *buf, size_t len, int flags)
{
	union {
		char buf[CMSG_SPACE(sizeof(uint8_t))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf.buf,
		.msg_controllen = sizeof(cbuf.buf),
	};
	struct cmsghdr *cmsg;
	ssize_t n;

	memset(&cbuf, 0, sizeof(cbuf));
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_TLS;
	cmsg->cmsg_type = TLS_SET_RECORD_TYPE;
	cmsg->cmsg_len = CMSG_LEN(sizeof(uint8_t));
	*(uint8_t *)CMSG_DATA(cmsg) = type;
	n = sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
	return n < 0 ? -errno : n;
}

int ktlsh_send_alert(int fd, uint8_t level, uint8_t desc)
{
	const uint8_t alert[2] = { level, desc };
	ssize_t n = ktlsh_record_send(fd, KTLSH_CT_ALERT, alert, sizeof(alert), 0);

	if (n < 0)
		return (int)n;
	return n == sizeof(alert) ? 0 : -EIO;
}

int ktlsh_send_close_notify(int fd)
{
	return ktlsh_send_alert(fd, KTLSH_ALERT_WARNING, KTLSH_ALERT_CLOSE_NOTIFY);
}

int ktlsh_recv_control(int fd, struct ktlsh_record *rec)
{
	uint8_t buf[KTLSH_RECORD_MAX];
	uint8_t type;
	ssize_t n;

	n = ktlsh_record_recv(fd, buf, sizeof(buf), 0, &type);
	if (n < 0)
		return (int)n;
	ktlsh_record_classify(type, buf, (size_t)n, rec);
	explicit_bzero(buf, (size_t)n);	/* tickets are resumption secrets */
	return 0;
}

ssize_t ktlsh_recv(int fd, void *buf, size_t len, int flags)
{
	uint8_t ctl[KTLSH_RECORD_MAX];
	struct ktlsh_record rec;
	uint8_t type;
	ssize_t n;

	for (;;) {
		n = recv(fd, buf, len, flags);
		if (n >= 0)
			return n;
		if (errno != EIO)
			return -errno;
		/* Only the failure path pays: the next record is not data. */
		n = ktlsh_record_recv(fd, ctl, sizeof(ctl), flags & MSG_DONTWAIT, &type);
		if (n < 0)
			return n;
		ktlsh_record_classify(type, ctl, (size_t)n, &rec);
		if (rec.kind == KTLSH_REC_DATA) {
			/* Another reader took the control record in between and this
			 * is data after all: hand it over rather than drop it. */
			if ((size_t)n <= len)
				memcpy(buf, ctl, (size_t)n);
			explicit_bzero(ctl, (size_t)n);
			return (size_t)n <= len ? n : -EMSGSIZE;
		}
		explicit_bzero(ctl, (size_t)n);
		switch (rec.kind) {
		case KTLSH_REC_NEW_SESSION_TICKET:
		case KTLSH_REC_ALERT_WARNING:
			continue;
		case KTLSH_REC_CLOSE_NOTIFY:
			return 0;
		case KTLSH_REC_ALERT_FATAL:
			return -ECONNRESET;
		case KTLSH_REC_KEY_UPDATE:
			return -EKEYEXPIRED;
		default:
			return -EBADMSG;
		}
	}
}
