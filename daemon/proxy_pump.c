// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The proxy's data pump: a few threads, one io_uring each, many connections
 * per ring. A connection moves bytes in two directions, each a small state
 * machine with at most one read and one write in flight:
 *
 *   read   src -> buffer     RECV (copy path) or SPLICE into a pipe (splice
 *                            path); on the user-space fallback SSL_read(),
 *                            with a POLL when OpenSSL wants the socket
 *   write  buffer -> dst     SEND / SPLICE out of the pipe / SSL_write()
 *   shut   once src ended and everything is written: shutdown(SHUT_WR)
 *          on a plaintext dst; close_notify then SHUT_WR on a TLS dst
 *
 * A read is only issued while its buffer (PROXY_BUF_SIZE) or pipe has room,
 * so a slow reader on one side stops the reads on the other: the daemon
 * never holds more than that per direction. The connection ends when both
 * directions are shut, or at the first error (then both sides are reset),
 * an idle timeout, or daemon stop (then both sides are closed cleanly).
 *
 * On a kTLS socket RECV and SPLICE fail (EIO / EINVAL) when the next record
 * is not application data; the record is then read with RECVMSG and a
 * TLS_GET_RECORD_TYPE control message: NewSessionTicket and warning alerts
 * are consumed, close_notify is end of stream, a fatal alert resets, a
 * KeyUpdate closes (the kernel cannot follow it; see design.md).
 *
 * Why pump threads of their own and not the handshake workers: handshakes
 * are readiness-driven OpenSSL state machines on epoll, bursts of CPU
 * (an RSA signature is ~0.3 ms); the pump is completion-driven and must
 * never wait behind one. A connection is handed over once, through a locked
 * queue and an eventfd, and stays on its pump to the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <liburing.h>
#include <openssl/err.h>

#include <ktlsh/record.h>

#include "proxy.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

#define PROXY_RING_ENTRIES	1024
#define PROXY_CQ_ENTRIES	8192
#define PROXY_IOWQ_UNBOUND	8	/* io-wq threads per ring (splice runs there) */
#define PROXY_HDR_MAX		512

enum {
	OP_EVENT = 1,		/* eventfd: connections queued, or stop */
	OP_TICK,		/* once a second: timeouts */
	OP_CONNECT,
	OP_CONNECT_POLL,	/* connect in progress: wait for POLLOUT */
	OP_HEADER,		/* PROXY v2 header */
	OP_HEADER_POLL,
	OP_RECV,
	OP_SEND,
	OP_SPLICE_IN,
	OP_SPLICE_OUT,
	OP_CTL,			/* RECVMSG of a kTLS control record */
	OP_NOTIFY,		/* SENDMSG of a kTLS close_notify */
	OP_POLL,		/* readiness; the state machine retries after it */
};

struct proxy_pump {
	pthread_t thread;
	unsigned index;
	struct io_uring ring;
	bool ring_ok;
	int evfd;
	uint64_t evval;
	struct proxy_op ev_op, tick_op;
	struct __kernel_timespec tick_ts;

	pthread_mutex_t lock;		/* queue and stopping */
	struct proxy_conn *q_head, *q_tail;
	bool stopping;

	/* pump thread only */
	bool stop_seen;
	struct proxy_conn *conns;	/* every connection this pump owns */
	unsigned n_conns;
	struct proxy_conn *dead;	/* closed, nothing in flight: free them */
};

static struct proxy_pump *proxy_pumps;
static unsigned proxy_n_pumps;		/* threads running */
static unsigned proxy_n_alloc;
static atomic_uint proxy_rr;

static void conn_kick(struct proxy_conn *c);

/* ---- submission helpers ------------------------------------------------- */

static struct io_uring_sqe *pump_sqe(struct proxy_pump *p)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);

	if (!sqe) {
		(void)io_uring_submit(&p->ring);
		sqe = io_uring_get_sqe(&p->ring);
	}
	return sqe;
}

/* Count a prepared request against c and mark its slot busy. */
static void conn_track(struct proxy_conn *c, struct proxy_op *op, struct io_uring_sqe *sqe,
		       uint8_t kind)
{
	op->kind = kind;
	op->busy = true;
	c->inflight++;
	io_uring_sqe_set_data(sqe, op);
}

/* Closed and nothing in flight: free it at the end of this loop turn. */
static void conn_maybe_dead(struct proxy_pump *p, struct proxy_conn *c)
{
	if (!c->closing || c->inflight || c->dead)
		return;
	c->dead = true;
	c->qnext = p->dead;
	p->dead = c;
}

static void conn_set_end(struct proxy_conn *c, const char *why)
{
	if (!c->end)
		c->end = why;
}

/*
 * Stop the connection: cancel what is in flight; it is freed once the last
 * completion is in (never from inside a state-machine step). reset: an
 * abortive close (RST) for an error; otherwise a clean one, with a
 * close_notify on the TLS side if that direction is still open.
 */
static void conn_close(struct proxy_conn *c, bool reset, const char *why)
{
	struct proxy_pump *p = c->pump;
	struct io_uring_sqe *sqe;
	int fds[6], i, n = 0;

	conn_set_end(c, why);
	if (c->closing)
		return;
	c->closing = true;
	c->reset = reset;
	if (!c->inflight) {
		conn_maybe_dead(p, c);
		return;
	}
	fds[n++] = c->tls_fd;
	fds[n++] = c->plain_fd;
	for (i = 0; i < 2; i++) {
		fds[n++] = c->dir[i].pipe_r;
		fds[n++] = c->dir[i].pipe_w;
	}
	for (i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		sqe = pump_sqe(p);
		if (!sqe)
			break;
		io_uring_prep_cancel_fd(sqe, fds[i], IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, 0);
	}
}

/* POLL for fd readiness in slot op; the state machine retries afterwards. */
static void conn_poll(struct proxy_conn *c, struct proxy_op *op, int fd, unsigned mask,
		      uint8_t kind)
{
	struct io_uring_sqe *sqe = pump_sqe(c->pump);

	if (!sqe) {
		conn_close(c, true, "io_uring submission queue full");
		return;
	}
	io_uring_prep_poll_add(sqe, fd, mask);
	conn_track(c, op, sqe, kind);
}

/* ---- the end of a connection -------------------------------------------- */

static void pump_unlink(struct proxy_pump *p, struct proxy_conn *c)
{
	if (!c->in_list)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->in_list = false;
	p->n_conns--;
}

static void conn_linger0(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	if (fd >= 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

static void conn_finish(struct proxy_pump *p, struct proxy_conn *c)
{
	const char *path = !c->ktls ? (c->ssl ? "userspace" : "-") :
			   c->dir[PROXY_UP].splice && c->dir[PROXY_DOWN].splice ? "ktls/splice" :
			   c->dir[PROXY_DOWN].splice ? "ktls/copy-in+splice-out" : "ktls/copy";
	double ms = (ktlshd_now_us() - c->start_us) / 1000.0;

	if (c->reset) {
		conn_linger0(c->tls_fd);
		conn_linger0(c->plain_fd);
	} else if (c->tls_fd >= 0 && c->hs_ok && !c->dir[PROXY_DOWN].shut) {
		/* Best effort, nonblocking: the peer learns the end is real. */
		if (c->ktls)
			(void)ktlsh_send_close_notify(c->tls_fd);
		else if (c->ssl)
			(void)SSL_shutdown(c->ssl);
	}
	if (c->stage >= PROXY_STAGE_HEADER || c->hs_ok)
		log_info("proxy %s peer=%s path=%s tls=%s cipher=%s in=%llu out=%llu ms=%.1f end=%s",
			 c->svc->name, c->peer, path,
			 c->tls_version == TLS1_3_VERSION ? "1.3" :
			 c->tls_version == TLS1_2_VERSION ? "1.2" : "-",
			 c->cipher[0] ? c->cipher : "-",
			 (unsigned long long)c->dir[PROXY_UP].bytes,
			 (unsigned long long)c->dir[PROXY_DOWN].bytes, ms, c->end ? c->end : "closed");
	pump_unlink(p, c);
	proxy_conn_free(c);
}

/* ---- directions ---------------------------------------------------------- */

static uint64_t dir_filled(const struct proxy_conn *c, const struct proxy_dir *d)
{
	return d->splice ? d->inpipe : d->tail - d->head;
}

static uint64_t dir_space(const struct proxy_conn *c, const struct proxy_dir *d)
{
	return d->splice ? d->pipe_cap - d->inpipe : PROXY_BUF_SIZE - (d->tail - d->head);
}

/* Buffer mode: the ring's free part at tail and its data at head, each up
 * to the ring's end (it wraps): where to read into, what to write out. */
static uint8_t *dir_room(const struct proxy_dir *d, uint64_t *len)
{
	uint64_t off = d->tail % PROXY_BUF_SIZE, room = PROXY_BUF_SIZE - (d->tail - d->head);

	*len = PROXY_BUF_SIZE - off < room ? PROXY_BUF_SIZE - off : room;
	return d->buf + off;
}

static uint8_t *dir_data(const struct proxy_dir *d, uint64_t *len)
{
	uint64_t off = d->head % PROXY_BUF_SIZE, data = d->tail - d->head;

	*len = PROXY_BUF_SIZE - off < data ? PROXY_BUF_SIZE - off : data;
	return d->buf + off;
}

static void dir_count(struct proxy_conn *c, struct proxy_dir *d, uint64_t n)
{
	d->bytes += n;
	c->last_us = ktlshd_now_us();
	atomic_fetch_add(d == &c->dir[PROXY_UP] ? &proxy_stats.bytes_tls_to_plain :
			 &proxy_stats.bytes_plain_to_tls, n);
}

/* An OpenSSL failure on the fallback path: what to tell the log. */
static void conn_ssl_fail(struct proxy_conn *c, int err, const char *what)
{
	unsigned long e = ERR_peek_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	log_debug("proxy %s peer=%s: %s: SSL error %d: %s", c->svc->name, c->peer, what, err,
		  r ? r : "-");
	ERR_clear_error();
	conn_close(c, true, err == SSL_ERROR_SYSCALL ? "TLS peer reset" : "TLS error (user space)");
}

/* Fallback: SSL_read into the buffer while it has room. True if it moved. */
static bool dir_read_ssl(struct proxy_conn *c, struct proxy_dir *d)
{
	bool moved = false;
	uint8_t *p;
	uint64_t len;
	int n, err;

	while (dir_space(c, d)) {
		p = dir_room(d, &len);
		ERR_clear_error();
		errno = 0;
		n = SSL_read(c->ssl, p, (int)len);
		if (n > 0) {
			d->tail += (uint64_t)n;
			c->last_us = ktlshd_now_us();
			moved = true;
			continue;
		}
		err = SSL_get_error(c->ssl, n);
		if (err == SSL_ERROR_WANT_READ) {
			conn_poll(c, &d->rd, c->tls_fd, POLLIN, OP_POLL);
		} else if (err == SSL_ERROR_WANT_WRITE) {
			conn_poll(c, &d->rd, c->tls_fd, POLLOUT, OP_POLL);
		} else if (err == SSL_ERROR_ZERO_RETURN ||
			   (err == SSL_ERROR_SYSCALL && !ERR_peek_error() && !errno)) {
			d->eof = true;		/* close_notify, or FIN without one */
			moved = true;
		} else {
			conn_ssl_fail(c, err, "SSL_read");
		}
		break;
	}
	return moved;
}

/* Fallback: SSL_write out of the buffer. True if it moved. */
static bool dir_write_ssl(struct proxy_conn *c, struct proxy_dir *d)
{
	bool moved = false;
	uint8_t *p;
	uint64_t len;
	int n, err;

	while (dir_filled(c, d)) {
		p = dir_data(d, &len);
		ERR_clear_error();
		n = SSL_write(c->ssl, p, (int)len);
		if (n > 0) {
			d->head += (uint64_t)n;
			dir_count(c, d, (uint64_t)n);
			moved = true;
			continue;
		}
		err = SSL_get_error(c->ssl, n);
		if (err == SSL_ERROR_WANT_WRITE)
			conn_poll(c, &d->wr, c->tls_fd, POLLOUT, OP_POLL);
		else if (err == SSL_ERROR_WANT_READ)
			conn_poll(c, &d->wr, c->tls_fd, POLLIN, OP_POLL);
		else
			conn_ssl_fail(c, err, "SSL_write");
		break;
	}
	return moved;
}

static void dir_read(struct proxy_conn *c, struct proxy_dir *d)
{
	struct io_uring_sqe *sqe = pump_sqe(c->pump);
	uint8_t *p;
	uint64_t len;

	if (!sqe) {
		conn_close(c, true, "io_uring submission queue full");
		return;
	}
	if (d->splice) {
		io_uring_prep_splice(sqe, d->src, -1, d->pipe_w, -1, (unsigned)dir_space(c, d),
				     SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		conn_track(c, &d->rd, sqe, OP_SPLICE_IN);
		return;
	}
	p = dir_room(d, &len);
	io_uring_prep_recv(sqe, d->src, p, (size_t)len, 0);
	conn_track(c, &d->rd, sqe, OP_RECV);
}

static void dir_write(struct proxy_conn *c, struct proxy_dir *d)
{
	struct io_uring_sqe *sqe = pump_sqe(c->pump);
	uint8_t *p;
	uint64_t len;

	if (!sqe) {
		conn_close(c, true, "io_uring submission queue full");
		return;
	}
	if (d->splice) {
		io_uring_prep_splice(sqe, d->pipe_r, -1, d->dst, -1, d->inpipe,
				     SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		conn_track(c, &d->wr, sqe, OP_SPLICE_OUT);
		return;
	}
	p = dir_data(d, &len);
	/* Into kTLS: an EAGAIN comes back here (MSG_DONTWAIT) rather than
	 * waiting inside io_uring, to flush an open record first. */
	io_uring_prep_send(sqe, d->dst, p, (size_t)len,
			   MSG_NOSIGNAL | (d->dst_tls ? MSG_DONTWAIT : 0));
	conn_track(c, &d->wr, sqe, OP_SEND);
}

/*
 * A write that stops short (EAGAIN) can leave bytes the kernel holds back
 * for more: a splice passes MSG_MORE with every page but the last it was
 * asked for, so a cut-short splice leaves TCP corked on what it took (and
 * kTLS's record open); a send() into kTLS cut short leaves its record
 * open. Under memory pressure the send buffer shrinks below what is
 * queued, nothing is in flight to free it, POLLOUT never comes and the
 * connection hangs (seen on 6.1 in the harness; Linux 6.5 added
 * splice_eof for it). Push both: a zero-length sendmsg() with
 * TLS_SET_RECORD_TYPE closes an open kTLS record (tls_handle_open_record),
 * and setting TCP_NODELAY again sends what TCP holds
 * (tcp_push_pending_frames).
 */
static void conn_push(struct proxy_conn *c, struct proxy_dir *d)
{
	int one = 1;

	if (d->dst_tls && c->ktls)
		(void)ktlsh_record_send(d->dst, KTLSH_CT_APPLICATION_DATA, NULL, 0,
					MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)setsockopt(d->dst, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The next record on a kTLS socket is not data: read it whole, with its type. */
static void dir_read_ctl(struct proxy_conn *c, struct proxy_dir *d)
{
	struct io_uring_sqe *sqe;

	if (!c->ctl_buf)
		c->ctl_buf = malloc(KTLSH_RECORD_MAX);
	sqe = c->ctl_buf ? pump_sqe(c->pump) : NULL;
	if (!sqe) {
		conn_close(c, true, "out of memory");
		return;
	}
	memset(&c->ctl_msg, 0, sizeof(c->ctl_msg));
	c->ctl_iov.iov_base = c->ctl_buf;
	c->ctl_iov.iov_len = KTLSH_RECORD_MAX;
	c->ctl_msg.msg_iov = &c->ctl_iov;
	c->ctl_msg.msg_iovlen = 1;
	c->ctl_msg.msg_control = c->ctl_cmsg.buf;
	c->ctl_msg.msg_controllen = sizeof(c->ctl_cmsg.buf);
	io_uring_prep_recvmsg(sqe, d->src, &c->ctl_msg, 0);
	conn_track(c, &d->rd, sqe, OP_CTL);
}

/* src ended and dst has everything: end dst's write side. True if done now. */
static bool dir_shut(struct proxy_conn *c, struct proxy_dir *d)
{
	struct io_uring_sqe *sqe;
	struct cmsghdr *cmsg;
	int r, err;

	if (!d->dst_tls) {
		(void)shutdown(d->dst, SHUT_WR);
		d->shut = true;
		return true;
	}
	if (c->ssl) {
		ERR_clear_error();
		r = SSL_shutdown(c->ssl);
		err = r < 0 ? SSL_get_error(c->ssl, r) : SSL_ERROR_NONE;
		if (err == SSL_ERROR_WANT_WRITE) {
			conn_poll(c, &d->wr, d->dst, POLLOUT, OP_POLL);
			return false;
		}
		ERR_clear_error();
		(void)shutdown(d->dst, SHUT_WR);
		d->shut = true;
		return true;
	}
	/* kTLS: an alert record (close_notify) with TLS_SET_RECORD_TYPE. */
	sqe = pump_sqe(c->pump);
	if (!sqe) {
		conn_close(c, true, "io_uring submission queue full");
		return false;
	}
	memset(&c->cn_msg, 0, sizeof(c->cn_msg));
	memset(&c->cn_cmsg, 0, sizeof(c->cn_cmsg));
	c->cn_alert[0] = KTLSH_ALERT_WARNING;
	c->cn_alert[1] = KTLSH_ALERT_CLOSE_NOTIFY;
	c->cn_iov.iov_base = c->cn_alert;
	c->cn_iov.iov_len = sizeof(c->cn_alert);
	c->cn_msg.msg_iov = &c->cn_iov;
	c->cn_msg.msg_iovlen = 1;
	c->cn_msg.msg_control = c->cn_cmsg.buf;
	c->cn_msg.msg_controllen = sizeof(c->cn_cmsg.buf);
	cmsg = CMSG_FIRSTHDR(&c->cn_msg);
	cmsg->cmsg_level = SOL_TLS;
	cmsg->cmsg_type = TLS_SET_RECORD_TYPE;
	cmsg->cmsg_len = CMSG_LEN(sizeof(uint8_t));
	*CMSG_DATA(cmsg) = KTLSH_CT_ALERT;
	io_uring_prep_sendmsg(sqe, d->dst, &c->cn_msg, MSG_NOSIGNAL);
	conn_track(c, &d->wr, sqe, OP_NOTIFY);
	return false;
}

/* One pass over a direction; true if something moved synchronously (the
 * fallback path), so the caller goes round again. */
static bool dir_step(struct proxy_conn *c, struct proxy_dir *d)
{
	bool moved = false;

	if (!d->wr.busy && !d->shut && dir_filled(c, d)) {
		if (c->ssl && d->dst_tls)
			moved |= dir_write_ssl(c, d);
		else
			dir_write(c, d);
	}
	if (!c->closing && !d->rd.busy && !d->eof && dir_space(c, d) &&
	    !(d->stalled && dir_filled(c, d))) {
		if (c->ssl && d->src_tls)
			moved |= dir_read_ssl(c, d);
		else
			dir_read(c, d);
	}
	if (!c->closing && d->eof && !d->shut && !d->wr.busy && !dir_filled(c, d))
		moved |= dir_shut(c, d);
	return moved;
}

static void conn_kick(struct proxy_conn *c)
{
	bool moved;

	if (c->stage != PROXY_STAGE_DATA)
		return;
	do {
		moved = false;
		if (!c->closing)
			moved |= dir_step(c, &c->dir[PROXY_UP]);
		if (!c->closing)
			moved |= dir_step(c, &c->dir[PROXY_DOWN]);
	} while (moved && !c->closing);
	if (!c->closing && c->dir[PROXY_UP].shut && c->dir[PROXY_DOWN].shut)
		conn_close(c, false, "closed by both sides");
}

/* A record that is not data came off the kTLS socket. */
static void conn_ctl_record(struct proxy_conn *c, struct proxy_dir *d, int res)
{
	struct ktlsh_record rec;
	struct cmsghdr *cmsg;
	uint8_t type = 0;
	uint64_t space;
	ssize_t w;

	for (cmsg = CMSG_FIRSTHDR(&c->ctl_msg); cmsg; cmsg = CMSG_NXTHDR(&c->ctl_msg, cmsg))
		if (cmsg->cmsg_level == SOL_TLS && cmsg->cmsg_type == TLS_GET_RECORD_TYPE &&
		    cmsg->cmsg_len >= CMSG_LEN(sizeof(uint8_t)))
			type = *CMSG_DATA(cmsg);
	if (!type)
		type = KTLSH_CT_APPLICATION_DATA;
	ktlsh_record_classify(type, c->ctl_buf, (size_t)res, &rec);
	switch (rec.kind) {
	case KTLSH_REC_DATA:
		/* Not expected (the failure said a control record was next),
		 * but data is data: keep it if it fits. */
		space = dir_space(c, d);
		if ((uint64_t)res > space) {
			conn_close(c, true, "kTLS record did not fit");
			return;
		}
		if (d->splice) {
			w = write(d->pipe_w, c->ctl_buf, (size_t)res);
			if (w != res) {
				conn_close(c, true, "pipe write failed");
				return;
			}
			d->inpipe += (uint32_t)res;
		} else {
			uint64_t off = d->tail % PROXY_BUF_SIZE, first = PROXY_BUF_SIZE - off;

			if (first > (uint64_t)res)
				first = (uint64_t)res;
			memcpy(d->buf + off, c->ctl_buf, first);
			memcpy(d->buf, c->ctl_buf + first, (size_t)res - first);
			d->tail += (uint64_t)res;
		}
		return;
	case KTLSH_REC_CLOSE_NOTIFY:
		d->eof = true;
		return;
	case KTLSH_REC_NEW_SESSION_TICKET:
	case KTLSH_REC_ALERT_WARNING:
		log_debug("proxy %s peer=%s: %s consumed", c->svc->name, c->peer,
			  rec.kind == KTLSH_REC_ALERT_WARNING ? ktlsh_alert_name(rec.alert_desc) :
			  "NewSessionTicket");
		return;
	case KTLSH_REC_ALERT_FATAL:
		log_info("proxy %s peer=%s: peer sent fatal alert %s", c->svc->name, c->peer,
			 ktlsh_alert_name(rec.alert_desc));
		conn_close(c, true, "fatal alert from the TLS peer");
		return;
	case KTLSH_REC_KEY_UPDATE:
		log_info("proxy %s peer=%s: the TLS peer sent a KeyUpdate; kernel TLS cannot follow "
			 "it here (RX rekeying needs Linux 6.14 and the traffic secret, which ktlshd "
			 "does not keep): closing the connection", c->svc->name, c->peer);
		conn_close(c, false, "KeyUpdate (cannot rekey kTLS)");
		return;
	default:
		log_info("proxy %s peer=%s: unexpected %s from the TLS peer", c->svc->name, c->peer,
			 ktlsh_rec_kind_name(rec.kind));
		conn_close(c, true, "unexpected TLS record");
		return;
	}
}

/* ---- stages ------------------------------------------------------------- */

static void conn_start_data(struct proxy_conn *c)
{
	struct proxy_dir *up = &c->dir[PROXY_UP], *down = &c->dir[PROXY_DOWN];
	int i, fds[2], sz;

	up->src = down->dst = c->tls_fd;
	up->dst = down->src = c->plain_fd;
	up->src_tls = down->dst_tls = true;
	/* The measured choice (design.md): splice into kTLS, copy out of it. */
	down->splice = c->ktls && c->sc->data_path != KTLSH_DATA_COPY;
	up->splice = c->ktls && c->sc->data_path == KTLSH_DATA_SPLICE;
	for (i = 0; i < 2; i++) {
		struct proxy_dir *d = &c->dir[i];

		if (!d->splice) {
			d->buf = malloc(PROXY_BUF_SIZE);
			if (!d->buf)
				goto fail;
			continue;
		}
		if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
			goto fail;
		d->pipe_r = fds[0];
		d->pipe_w = fds[1];
		sz = fcntl(d->pipe_w, F_SETPIPE_SZ, PROXY_PIPE_SIZE);
		if (sz <= 0)
			sz = fcntl(d->pipe_w, F_GETPIPE_SZ);
		d->pipe_cap = sz > 0 ? (uint32_t)sz : 65536;
	}
	if (c->ssl) {
		SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
			     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		/* FIN without close_notify reads as end of stream, as on the kTLS path. */
		SSL_set_options(c->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
		/* The handshake is over: nothing after it has to reach a kernel. */
		SSL_set_read_ahead(c->ssl, 1);
	}
	c->stage = PROXY_STAGE_DATA;
	c->last_us = ktlshd_now_us();
	conn_kick(c);
	return;
fail:
	conn_close(c, true, "out of memory or descriptors");
}

static void conn_send_header(struct proxy_conn *c)
{
	struct io_uring_sqe *sqe = pump_sqe(c->pump);

	if (!sqe) {
		conn_close(c, true, "io_uring submission queue full");
		return;
	}
	io_uring_prep_send(sqe, c->plain_fd, c->hdr + c->hdr_off, c->hdr_len - c->hdr_off,
			   MSG_NOSIGNAL);
	conn_track(c, &c->misc, sqe, OP_HEADER);
}

/* The outbound TCP connection is up. */
static void conn_connected(struct proxy_conn *c)
{
	int ret;

	if (c->sc->mode == KTLSH_SERVICE_ORIGINATE) {
		ret = proxy_handshake_submit(c);
		if (ret) {
			log_warn("service %s: peer %s: cannot start the TLS handshake: %s",
				 c->svc->name, c->peer,
				 ret == -EBUSY ? "too many handshakes in flight" : strerror(-ret));
			atomic_fetch_add(&proxy_stats.failed, 1);
			conn_close(c, false, "handshake not started");
		}
		return;
	}
	if (!c->sc->proxy_protocol) {
		conn_start_data(c);
		return;
	}
	c->stage = PROXY_STAGE_HEADER;
	c->hdr = malloc(PROXY_HDR_MAX);
	c->hdr_len = c->hdr ? proxy_v2_header(c, c->hdr, PROXY_HDR_MAX) : 0;
	if (!c->hdr_len) {
		conn_close(c, true, "cannot build the PROXY header");
		return;
	}
	conn_send_header(c);
}

static void conn_connect(struct proxy_conn *c)
{
	const struct ktlsh_config_addr *a = &c->sc->target;
	struct io_uring_sqe *sqe;
	int fd, one = 1;

	c->stage = PROXY_STAGE_CONNECT;
	c->deadline_us = ktlshd_now_us() + 1000ull * c->rt->cfg->global.handshake_timeout_ms;
	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_warn("service %s: socket: %s", c->svc->name, strerror(errno));
		conn_close(c, false, "out of descriptors");
		return;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->sc->mode == KTLSH_SERVICE_TERMINATE)
		c->plain_fd = fd;
	else
		c->tls_fd = fd;
	sqe = pump_sqe(c->pump);
	if (!sqe) {
		conn_close(c, true, "io_uring submission queue full");
		return;
	}
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&a->ss, a->len);
	conn_track(c, &c->misc, sqe, OP_CONNECT);
}

static void conn_connect_failed(struct proxy_conn *c, int err)
{
	log_warn("service %s: peer %s: %s %s: %s", c->svc->name, c->peer,
		 c->sc->mode == KTLSH_SERVICE_TERMINATE ? "backend" : "remote",
		 c->sc->target.text, strerror(err));
	atomic_fetch_add(&proxy_stats.failed, 1);
	/* Terminate: the TLS client gets close_notify and FIN, a clean end. */
	conn_close(c, false, "connect failed");
}

/* Back from the handshake worker. */
static void conn_handshake_back(struct proxy_conn *c)
{
	if (!c->hs_ok) {
		if (!c->refused)
			atomic_fetch_add(&proxy_stats.failed, 1);
		conn_close(c, false, "handshake failed");
		return;
	}
	if (c->ssl)
		proxy_note_fallback(c);
	if (c->sc->mode == KTLSH_SERVICE_TERMINATE)
		conn_connect(c);
	else
		conn_start_data(c);
}

/* ---- completions -------------------------------------------------------- */

static void conn_complete(struct proxy_conn *c, struct proxy_op *op, int res)
{
	struct proxy_dir *d = &c->dir[op->dir];
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	op->busy = false;
	c->inflight--;
	if (c->closing)
		return;
	switch (op->kind) {
	case OP_CONNECT:
		if (res == -EINPROGRESS || res == -EAGAIN || res == -EALREADY) {
			conn_poll(c, &c->misc, c->sc->mode == KTLSH_SERVICE_TERMINATE ?
				  c->plain_fd : c->tls_fd, POLLOUT, OP_CONNECT_POLL);
			return;
		}
		if (res < 0)
			conn_connect_failed(c, -res);
		else
			conn_connected(c);
		return;
	case OP_CONNECT_POLL:
		if (res < 0 || getsockopt(c->sc->mode == KTLSH_SERVICE_TERMINATE ? c->plain_fd :
					  c->tls_fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = res < 0 ? -res : errno;
		if (soerr)
			conn_connect_failed(c, soerr);
		else
			conn_connected(c);
		return;
	case OP_HEADER:
		if (res == -EAGAIN || res == -EINTR) {
			conn_poll(c, &c->misc, c->plain_fd, POLLOUT, OP_HEADER_POLL);
			return;
		}
		if (res <= 0) {
			conn_close(c, true, "backend write failed");
			return;
		}
		c->hdr_off += (size_t)res;
		if (c->hdr_off < c->hdr_len) {
			conn_send_header(c);
			return;
		}
		free(c->hdr);
		c->hdr = NULL;
		conn_start_data(c);
		return;
	case OP_HEADER_POLL:
		conn_send_header(c);
		return;
	case OP_RECV:
	case OP_SPLICE_IN:
		if (res > 0) {
			if (op->kind == OP_RECV) {
				d->tail += (uint64_t)res;
			} else {
				d->inpipe += (uint32_t)res;
				d->stalled = false;
			}
			c->last_us = ktlshd_now_us();
		} else if (res == 0) {
			d->eof = true;
		} else if (res == -EAGAIN || res == -EINTR) {
			if (d->splice && d->inpipe)
				d->stalled = true;	/* the pipe is full: wait for the writer */
			else
				conn_poll(c, &d->rd, d->src, POLLIN, OP_POLL);
		} else if (d->src_tls && c->ktls && (res == -EIO || res == -EINVAL)) {
			dir_read_ctl(c, d);
		} else {
			log_debug("proxy %s peer=%s: read from the %s side: %s", c->svc->name,
				  c->peer, d->src_tls ? "TLS" : "plaintext", strerror(-res));
			conn_close(c, true, d->src_tls ? "TLS side read error" :
				   "plaintext side read error");
		}
		break;
	case OP_CTL:
		if (res > 0) {
			conn_ctl_record(c, d, res);
			free(c->ctl_buf);	/* rare: no idle connection keeps 16 KiB */
			c->ctl_buf = NULL;
		} else if (res == 0) {
			d->eof = true;
		} else if (res == -EAGAIN || res == -EINTR) {
			conn_poll(c, &d->rd, d->src, POLLIN, OP_POLL);
		} else {
			log_info("proxy %s peer=%s: kTLS receive failed: %s", c->svc->name, c->peer,
				 strerror(-res));
			conn_close(c, true, "kTLS receive error");
		}
		break;
	case OP_SEND:
	case OP_SPLICE_OUT:
		if (res > 0) {
			if (op->kind == OP_SEND) {
				d->head += (uint64_t)res;
			} else {
				d->inpipe -= (uint32_t)res;
				d->stalled = false;
			}
			dir_count(c, d, (uint64_t)res);
		} else if (res == -EAGAIN || res == -EINTR || res == 0) {
			if (op->kind == OP_SPLICE_OUT || (d->dst_tls && c->ktls))
				conn_push(c, d);
			conn_poll(c, &d->wr, d->dst, POLLOUT, OP_POLL);
		} else {
			log_debug("proxy %s peer=%s: write to the %s side: %s", c->svc->name,
				  c->peer, d->dst_tls ? "TLS" : "plaintext", strerror(-res));
			conn_close(c, true, d->dst_tls ? "TLS side write error" :
				   "plaintext side write error");
		}
		break;
	case OP_NOTIFY:
		if (res == -EAGAIN || res == -EINTR) {
			conn_poll(c, &d->wr, d->dst, POLLOUT, OP_POLL);
			return;
		}
		/* Sent, or the peer is gone: either way this direction is over. */
		(void)shutdown(d->dst, SHUT_WR);
		d->shut = true;
		break;
	case OP_POLL:
		if (res < 0) {
			conn_close(c, true, "poll failed");
			return;
		}
		break;	/* retry: the state machine sees the slot free */
	default:
		break;
	}
	conn_kick(c);
}

/* ---- the pump thread ---------------------------------------------------- */

static void pump_arm_event(struct proxy_pump *p)
{
	struct io_uring_sqe *sqe = pump_sqe(p);

	if (sqe) {
		io_uring_prep_read(sqe, p->evfd, &p->evval, sizeof(p->evval), 0);
		io_uring_sqe_set_data(sqe, &p->ev_op);
	}
}

static void pump_arm_tick(struct proxy_pump *p)
{
	struct io_uring_sqe *sqe = pump_sqe(p);

	if (sqe) {
		p->tick_ts.tv_sec = 1;
		p->tick_ts.tv_nsec = 0;
		io_uring_prep_timeout(sqe, &p->tick_ts, 0, 0);
		io_uring_sqe_set_data(sqe, &p->tick_op);
	}
}

static void pump_adopt(struct proxy_pump *p, struct proxy_conn *c)
{
	if (c->in_list)
		return;
	c->prev = NULL;
	c->next = p->conns;
	if (p->conns)
		p->conns->prev = c;
	p->conns = c;
	c->in_list = true;
	p->n_conns++;
}

static void pump_drain_queue(struct proxy_pump *p)
{
	struct proxy_conn *c, *next;
	bool stopping;

	pthread_mutex_lock(&p->lock);
	c = p->q_head;
	p->q_head = p->q_tail = NULL;
	stopping = p->stopping;
	pthread_mutex_unlock(&p->lock);
	if (stopping && !p->stop_seen) {
		p->stop_seen = true;
		for (struct proxy_conn *o = p->conns; o; o = o->next)
			if (o->stage != PROXY_STAGE_HANDSHAKE)
				conn_close(o, false, "ktlshd stopping");
	}
	for (; c; c = next) {
		next = c->qnext;
		c->qnext = NULL;
		pump_adopt(p, c);
		if (stopping) {
			conn_close(c, false, "ktlshd stopping");
		} else if (c->stage == PROXY_STAGE_CONNECT) {
			conn_connect(c);
		} else {
			conn_handshake_back(c);
		}
	}
}

static void pump_tick(struct proxy_pump *p)
{
	uint64_t now = ktlshd_now_us();
	struct proxy_conn *c;

	for (c = p->conns; c; c = c->next) {
		if (c->closing)
			continue;
		if (c->stage == PROXY_STAGE_CONNECT && now > c->deadline_us) {
			log_warn("service %s: peer %s: %s %s: connect timed out", c->svc->name, c->peer,
				 c->sc->mode == KTLSH_SERVICE_TERMINATE ? "backend" : "remote",
				 c->sc->target.text);
			atomic_fetch_add(&proxy_stats.failed, 1);
			conn_close(c, false, "connect timed out");
		} else if ((c->stage == PROXY_STAGE_DATA || c->stage == PROXY_STAGE_HEADER) &&
			   c->sc->idle_timeout_ms &&
			   now - c->last_us > 1000ull * c->sc->idle_timeout_ms) {
			conn_close(c, false, "idle timeout");
		}
	}
}

static void pump_reap(struct proxy_pump *p)
{
	struct proxy_conn *c;

	while ((c = p->dead)) {
		p->dead = c->qnext;
		conn_finish(p, c);
	}
}

static void *pump_main(void *arg)
{
	struct proxy_pump *p = arg;
	struct io_uring_cqe *cqe;
	struct proxy_op *op;
	unsigned head, n;
	int ret;

	pump_arm_event(p);
	pump_arm_tick(p);
	for (;;) {
		ret = io_uring_submit_and_wait(&p->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			log_err("proxy pump %u: io_uring: %s", p->index, strerror(-ret));
			break;
		}
		n = 0;
		io_uring_for_each_cqe(&p->ring, head, cqe) {
			n++;
			op = io_uring_cqe_get_data(cqe);
			if (!op)
				continue;	/* a cancellation */
			if (op->kind == OP_EVENT) {
				pump_drain_queue(p);
				pump_arm_event(p);
			} else if (op->kind == OP_TICK) {
				pump_tick(p);
				pump_arm_tick(p);
			} else {
				conn_complete(op->c, op, cqe->res);
				conn_maybe_dead(p, op->c);
			}
		}
		io_uring_cq_advance(&p->ring, n);
		pump_reap(p);
		if (p->stop_seen && !p->n_conns) {
			pthread_mutex_lock(&p->lock);
			ret = p->q_head != NULL;
			pthread_mutex_unlock(&p->lock);
			if (!ret)
				break;
		}
	}
	return NULL;
}

/* ---- start, stop, hand-off ---------------------------------------------- */

static int pump_ring_init(struct proxy_pump *p)
{
	static const unsigned flags[] = {
		IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_CQSIZE,
		0,
	};
	struct io_uring_params params;
	unsigned limits[2] = { 0, PROXY_IOWQ_UNBOUND };
	size_t i;
	int ret = -EINVAL;

	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		memset(&params, 0, sizeof(params));
		params.flags = flags[i];
		params.cq_entries = PROXY_CQ_ENTRIES;
		ret = io_uring_queue_init_params(PROXY_RING_ENTRIES, &p->ring, &params);
		if (ret != -EINVAL)
			break;
	}
	if (ret)
		return ret;
	(void)io_uring_register_iowq_max_workers(&p->ring, limits);
	return 0;
}

int proxy_pumps_start(unsigned n)
{
	unsigned i;
	int ret;

	if (!n)
		n = 1;
	proxy_pumps = calloc(n, sizeof(*proxy_pumps));
	if (!proxy_pumps)
		return -ENOMEM;
	proxy_n_alloc = n;
	for (i = 0; i < n; i++)
		proxy_pumps[i].evfd = -1;
	for (i = 0; i < n; i++) {
		struct proxy_pump *p = &proxy_pumps[i];

		p->index = i;
		p->ev_op.kind = OP_EVENT;
		p->tick_op.kind = OP_TICK;
		pthread_mutex_init(&p->lock, NULL);
		p->evfd = eventfd(0, EFD_CLOEXEC);
		if (p->evfd < 0)
			return -errno;
		ret = pump_ring_init(p);
		if (ret)
			return ret;
		p->ring_ok = true;
		ret = pthread_create(&p->thread, NULL, pump_main, p);
		if (ret)
			return -ret;
		proxy_n_pumps++;
	}
	log_info("proxy: %u io_uring data pump%s", n, n == 1 ? "" : "s");
	return 0;
}

void proxy_pumps_stop(void)
{
	uint64_t one = 1;
	unsigned i;

	for (i = 0; i < proxy_n_pumps; i++) {
		pthread_mutex_lock(&proxy_pumps[i].lock);
		proxy_pumps[i].stopping = true;
		pthread_mutex_unlock(&proxy_pumps[i].lock);
		(void)!write(proxy_pumps[i].evfd, &one, sizeof(one));
	}
	for (i = 0; i < proxy_n_pumps; i++)
		pthread_join(proxy_pumps[i].thread, NULL);
	for (i = 0; i < proxy_n_alloc; i++) {
		if (proxy_pumps[i].ring_ok)
			io_uring_queue_exit(&proxy_pumps[i].ring);
		if (proxy_pumps[i].evfd >= 0)
			close(proxy_pumps[i].evfd);
		pthread_mutex_destroy(&proxy_pumps[i].lock);
	}
	free(proxy_pumps);
	proxy_pumps = NULL;
	proxy_n_pumps = 0;
	proxy_n_alloc = 0;
}

struct proxy_pump *proxy_pump_pick(void)
{
	return &proxy_pumps[atomic_fetch_add(&proxy_rr, 1) % proxy_n_pumps];
}

void proxy_pump_queue(struct proxy_conn *c)
{
	struct proxy_pump *p = c->pump;
	uint64_t one = 1;

	c->qnext = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->q_tail)
		p->q_tail->qnext = c;
	else
		p->q_head = c;
	p->q_tail = c;
	pthread_mutex_unlock(&p->lock);
	(void)!write(p->evfd, &one, sizeof(one));
}
