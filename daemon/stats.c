// SPDX-License-Identifier: GPL-2.0-or-later
/* Counters for `ktlshctl status`: atomics, so any thread may count. */
#include <errno.h>

#include "ktlshd.h"

struct ktlshd_stats ktlshd_stats;

const char *ktlshd_outcome_name(enum ktlshd_outcome o)
{
	static const char *const names[KTLSHD_OUTCOME_COUNT] = {
		[KTLSHD_OK] = "ok",
		[KTLSHD_FAIL_PROTO] = "tls_error",
		[KTLSHD_FAIL_CERT] = "certificate_rejected",
		[KTLSHD_FAIL_RESET] = "peer_reset",
		[KTLSHD_FAIL_TIMEOUT] = "timeout",
		[KTLSHD_FAIL_KERNEL] = "kernel_refused",
		[KTLSHD_FAIL_DENIED] = "denied",
		[KTLSHD_FAIL_BUSY] = "busy",
		[KTLSHD_FAIL_BADREQ] = "bad_request",
		[KTLSHD_FAIL_OTHER] = "other",
	};

	return (unsigned)o < KTLSHD_OUTCOME_COUNT ? names[o] : "other";
}

enum ktlshd_outcome ktlshd_outcome_of(int err)
{
	switch (err) {
	case 0:
		return KTLSHD_OK;
	case -EPROTO:
	case -EBADMSG:
		return KTLSHD_FAIL_PROTO;
	case -EKEYREJECTED:
		return KTLSHD_FAIL_CERT;
	case -ECONNRESET:
	case -EPIPE:
	case -ENOTCONN:
		return KTLSHD_FAIL_RESET;
	case -ETIMEDOUT:
		return KTLSHD_FAIL_TIMEOUT;
	case -ENOENT:
	case -EPROTONOSUPPORT:
	case -EOPNOTSUPP:
	case -ENOKEY:
		return KTLSHD_FAIL_KERNEL;
	case -EACCES:
		return KTLSHD_FAIL_DENIED;
	case -EBUSY:
		return KTLSHD_FAIL_BUSY;
	case -EINVAL:
	case -EBADF:
	case -ENOTSOCK:
	case -EPROTOTYPE:
	case -EALREADY:
		return KTLSHD_FAIL_BADREQ;
	default:
		return KTLSHD_FAIL_OTHER;
	}
}
