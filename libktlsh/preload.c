// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libktlsh-preload.so: kernel TLS for unmodified programs.
 *
 *   LD_PRELOAD=libktlsh-preload.so KTLSH_PRELOAD='server=0.0.0.0:443,identity=web' nginx
 *
 * Listening sockets and connect() destinations that the configuration names
 * are handed to ktlshd, which performs the TLS handshake and installs the
 * keys in the kernel; the program then reads and writes plaintext on a
 * socket the kernel encrypts. Everything else passes straight through.
 *
 * This file: load time, the per-descriptor table, and the interposed calls.
 * Every interposed call first looks its descriptor up in pl_fds, one byte
 * per descriptor number; 0 means "not ours" and the call goes straight to
 * the real function: a bounds check, a byte load and a tail call. Only
 * sockets the shim manages take the slow paths, and on them only the
 * failure path of a read pays (a non-data TLS record made it fail with EIO).
 *
 * The real functions are resolved once with dlsym(RTLD_NEXT) at load, or at
 * the first call if another library's constructor gets there first.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/close_range.h>
#include <sys/uio.h>
#include <netinet/tcp.h>
#include <linux/tls.h>

#include "preload.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define PL_EXPORT __attribute__((visibility("default")))
#define PL_LIKELY(x) __builtin_expect(!!(x), 1)

uint8_t *pl_fds;
unsigned int pl_nfds;
uint8_t *pl_fd_err;
unsigned int pl_fd_hiwat;
struct pl_conf *pl_conf;
bool pl_broken;
const char *pl_sock_path;

static bool pl_have_server, pl_have_client;
static int pl_log_fd = -1;

/* ---- the real functions ---------------------------------------------------- */

static void pl_resolve(void);

/* Until pl_resolve() ran, every pointer leads to a stub that runs it first. */
#define PL_LAZY(name, ret, params, args)				\
	static ret pl_lazy_##name params				\
	{								\
		pl_resolve();						\
		return pl_real.name args;				\
	}

PL_LAZY(socket, int, (int a, int b, int c), (a, b, c))
PL_LAZY(close, int, (int fd), (fd))
PL_LAZY(shutdown, int, (int fd, int how), (fd, how))
PL_LAZY(listen, int, (int fd, int b), (fd, b))
PL_LAZY(accept, int, (int fd, struct sockaddr *a, socklen_t *l), (fd, a, l))
PL_LAZY(accept4, int, (int fd, struct sockaddr *a, socklen_t *l, int f), (fd, a, l, f))
PL_LAZY(connect, int, (int fd, const struct sockaddr *a, socklen_t l), (fd, a, l))
PL_LAZY(read, ssize_t, (int fd, void *b, size_t n), (fd, b, n))
PL_LAZY(readv, ssize_t, (int fd, const struct iovec *v, int n), (fd, v, n))
PL_LAZY(recv, ssize_t, (int fd, void *b, size_t n, int f), (fd, b, n, f))
PL_LAZY(recvfrom, ssize_t, (int fd, void *b, size_t n, int f, struct sockaddr *a, socklen_t *l),
	(fd, b, n, f, a, l))
PL_LAZY(recvmsg, ssize_t, (int fd, struct msghdr *m, int f), (fd, m, f))
PL_LAZY(getsockopt, int, (int fd, int l, int o, void *v, socklen_t *n), (fd, l, o, v, n))
PL_LAZY(setsockopt, int, (int fd, int l, int o, const void *v, socklen_t n), (fd, l, o, v, n))
PL_LAZY(getpeername, int, (int fd, struct sockaddr *a, socklen_t *l), (fd, a, l))
PL_LAZY(getsockname, int, (int fd, struct sockaddr *a, socklen_t *l), (fd, a, l))
PL_LAZY(dup, int, (int fd), (fd))
PL_LAZY(dup2, int, (int a, int b), (a, b))
PL_LAZY(dup3, int, (int a, int b, int f), (a, b, f))
PL_LAZY(epoll_ctl, int, (int e, int op, int fd, struct epoll_event *ev), (e, op, fd, ev))

static int pl_lazy_fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	pl_resolve();
	return pl_real.fcntl(fd, cmd, arg);
}

struct pl_real pl_real = {
	.socket = pl_lazy_socket,
	.close = pl_lazy_close,
	.shutdown = pl_lazy_shutdown,
	.listen = pl_lazy_listen,
	.accept = pl_lazy_accept,
	.accept4 = pl_lazy_accept4,
	.connect = pl_lazy_connect,
	.read = pl_lazy_read,
	.readv = pl_lazy_readv,
	.recv = pl_lazy_recv,
	.recvfrom = pl_lazy_recvfrom,
	.recvmsg = pl_lazy_recvmsg,
	.getsockopt = pl_lazy_getsockopt,
	.setsockopt = pl_lazy_setsockopt,
	.getpeername = pl_lazy_getpeername,
	.getsockname = pl_lazy_getsockname,
	.dup = pl_lazy_dup,
	.dup2 = pl_lazy_dup2,
	.dup3 = pl_lazy_dup3,
	.fcntl = pl_lazy_fcntl,
	.epoll_ctl = pl_lazy_epoll_ctl,
};

static void pl_resolve_one(void **slot, const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (!p) {
		/* Nothing to pass through to: this process cannot run. */
		static const char msg[] = "ktlsh-preload: dlsym(RTLD_NEXT) failed for a libc function\n";

		(void)!write(2, msg, sizeof(msg) - 1);
		abort();
	}
	__atomic_store_n(slot, p, __ATOMIC_RELEASE);
}

static void pl_resolve(void)
{
#define PL_R(name) pl_resolve_one((void **)&pl_real.name, #name)
	PL_R(socket);
	PL_R(close);
	PL_R(shutdown);
	PL_R(listen);
	PL_R(accept);
	PL_R(accept4);
	PL_R(connect);
	PL_R(read);
	PL_R(readv);
	PL_R(recv);
	PL_R(recvfrom);
	PL_R(recvmsg);
	PL_R(getsockopt);
	PL_R(setsockopt);
	PL_R(getpeername);
	PL_R(getsockname);
	PL_R(dup);
	PL_R(dup2);
	PL_R(dup3);
	PL_R(fcntl);
	PL_R(epoll_ctl);
#undef PL_R
	/* glibc 2.34 and later; a raw system call otherwise. */
	pl_real.close_range = (int (*)(unsigned int, unsigned int, int))dlsym(RTLD_NEXT, "close_range");
	pl_real.closefrom = (void (*)(int))dlsym(RTLD_NEXT, "closefrom");
}

/* ---- small helpers ----------------------------------------------------------- */

int64_t pl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pl_set_nonblock(int fd, bool on)
{
	int fl = pl_real.fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	if (!!(fl & O_NONBLOCK) == on)
		return 0;
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return pl_real.fcntl(fd, F_SETFL, fl) ? -errno : 0;
}

static void pl_vlog(const char *fmt, va_list ap)
{
	char line[768];
	int n, saved = errno;

	if (!pl_conf || pl_conf->log == PL_LOG_NONE)
		goto out;
	if (pl_conf->log == PL_LOG_SYSLOG) {
		vsyslog(LOG_DAEMON | LOG_WARNING, fmt, ap);
		goto out;
	}
	n = snprintf(line, sizeof(line), "ktlsh-preload[%d]: ", (int)getpid());
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(pl_log_fd >= 0 ? pl_log_fd : 2, line, (size_t)n);
out:
	errno = saved;
}

void pl_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pl_vlog(fmt, ap);
	va_end(ap);
}

static pthread_mutex_t pl_log_lock = PTHREAD_MUTEX_INITIALIZER;

void pl_log_conn(const char *fmt, ...)
{
	static int64_t window;
	static unsigned int count, dropped;
	unsigned int was_dropped = 0;
	int64_t now = pl_now_ms();
	bool say;
	va_list ap;

	pthread_mutex_lock(&pl_log_lock);
	if (now - window >= 1000) {
		was_dropped = dropped;
		window = now;
		count = dropped = 0;
	}
	say = count++ < PL_LOG_BURST;
	if (!say)
		dropped++;
	pthread_mutex_unlock(&pl_log_lock);
	if (was_dropped)
		pl_log("(%u similar lines suppressed)", was_dropped);
	if (!say)
		return;
	va_start(ap, fmt);
	pl_vlog(fmt, ap);
	va_end(ap);
}

/* ---- control records: only the failure path of a read gets here --------------- */

/* Copy n bytes of a record that turned out to be data into the caller's
 * buffers; returns what fit, or -EMSGSIZE when it did not all fit. */
static ssize_t pl_scatter(const struct iovec *iov, int iovcnt, const uint8_t *p, size_t n)
{
	size_t done = 0, k;
	int i;

	for (i = 0; i < iovcnt && done < n; i++) {
		k = iov[i].iov_len < n - done ? iov[i].iov_len : n - done;
		memcpy(iov[i].iov_base, p + done, k);
		done += k;
	}
	return done == n ? (ssize_t)n : -EMSGSIZE;
}

/* pl_control(): a record was consumed, read again. */
#define PL_CTL_AGAIN	(-100000)

/*
 * A read on a kTLS socket failed with EIO: the next record is not data.
 * Read it with TLS_GET_RECORD_TYPE and decide. Returns PL_CTL_AGAIN to
 * retry the read (a NewSessionTicket or a warning alert was consumed), 0
 * for end of file (close_notify), a byte count (the record was data after
 * all: another reader raced us), or -errno.
 */
static ssize_t pl_control(int fd, const struct iovec *iov, int iovcnt)
{
	union {
		char buf[CMSG_SPACE(sizeof(uint8_t))];
		struct cmsghdr align;
	} cbuf;
	struct ktlsh_record rec;
	struct iovec riov;
	struct msghdr msg;
	struct cmsghdr *cmsg;
	uint8_t *rbuf, type = KTLSH_CT_APPLICATION_DATA;
	ssize_t n, ret;

	rbuf = malloc(KTLSH_RECORD_MAX);
	if (!rbuf)
		return -ENOMEM;
	riov.iov_base = rbuf;
	riov.iov_len = KTLSH_RECORD_MAX;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &riov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf.buf;
	msg.msg_controllen = sizeof(cbuf.buf);
	n = pl_real.recvmsg(fd, &msg, MSG_DONTWAIT);
	if (n < 0) {
		ret = -errno;
		goto out;
	}
	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg))
		if (cmsg->cmsg_level == SOL_TLS && cmsg->cmsg_type == TLS_GET_RECORD_TYPE &&
		    cmsg->cmsg_len >= CMSG_LEN(sizeof(uint8_t)))
			type = *(uint8_t *)CMSG_DATA(cmsg);
	ktlsh_record_classify(type, rbuf, (size_t)n, &rec);
	switch (rec.kind) {
	case KTLSH_REC_DATA:
		ret = n ? pl_scatter(iov, iovcnt, rbuf, (size_t)n) : 0;
		break;
	case KTLSH_REC_NEW_SESSION_TICKET:
	case KTLSH_REC_ALERT_WARNING:
		ret = PL_CTL_AGAIN;
		break;
	case KTLSH_REC_CLOSE_NOTIFY:
		pl_fd_or(fd, PL_FD_EOF);
		ret = 0;
		break;
	case KTLSH_REC_ALERT_FATAL:
		pl_log_conn("fd %d: the peer sent a fatal alert (%s): reporting ECONNRESET", fd,
			    ktlsh_alert_name(rec.alert_desc));
		ret = -ECONNRESET;
		break;
	case KTLSH_REC_KEY_UPDATE:
		/* The kernel cannot take new RX keys before Linux 6.14, and the
		 * keys live in ktlshd, not here: the connection cannot go on. */
		pl_log_conn("fd %d: the peer sent a TLS 1.3 KeyUpdate, which this kernel cannot "
			    "follow: reporting EKEYEXPIRED", fd);
		ret = -EKEYEXPIRED;
		break;
	default:
		pl_log_conn("fd %d: unexpected TLS record after the handshake (%s, content type %u): "
			    "reporting EBADMSG", fd, ktlsh_rec_kind_name(rec.kind), type);
		ret = -EBADMSG;
		break;
	}
out:
	if (n > 0)
		explicit_bzero(rbuf, (size_t)n);	/* tickets are resumption secrets */
	free(rbuf);
	return ret;
}

/*
 * The slow path of every read-like call on a managed descriptor. op does
 * the real call; on EIO the record is examined and the call repeated.
 */
enum pl_rd { PL_RD_READ, PL_RD_READV, PL_RD_RECV, PL_RD_RECVFROM, PL_RD_RECVMSG };

struct pl_rdargs {
	enum pl_rd op;
	void *buf;
	size_t len;
	const struct iovec *iov;
	int iovcnt;
	int flags;
	struct sockaddr *addr;
	socklen_t *alen;
	struct msghdr *msg;
};

static ssize_t pl_rd_do(int fd, const struct pl_rdargs *a)
{
	switch (a->op) {
	case PL_RD_READ:
		return pl_real.read(fd, a->buf, a->len);
	case PL_RD_READV:
		return pl_real.readv(fd, a->iov, a->iovcnt);
	case PL_RD_RECV:
		return pl_real.recv(fd, a->buf, a->len, a->flags);
	case PL_RD_RECVFROM:
		return pl_real.recvfrom(fd, a->buf, a->len, a->flags, a->addr, a->alen);
	default:
		return pl_real.recvmsg(fd, a->msg, a->flags);
	}
}

static __attribute__((noinline)) ssize_t pl_rd_slow(int fd, unsigned int st, const struct pl_rdargs *a)
{
	struct iovec one;
	const struct iovec *iov;
	int iovcnt;
	ssize_t n;

	if ((st & PL_FD_KIND) != PL_FD_KTLS)
		return pl_rd_do(fd, a);
	if (st & PL_FD_EOF)
		return 0;
	for (;;) {
		n = pl_rd_do(fd, a);
		if (n >= 0 || errno != EIO)
			return n;
		if (a->op == PL_RD_READV) {
			iov = a->iov;
			iovcnt = a->iovcnt;
		} else if (a->op == PL_RD_RECVMSG) {
			iov = a->msg->msg_iov;
			iovcnt = (int)a->msg->msg_iovlen;
		} else {
			one.iov_base = a->buf;
			one.iov_len = a->len;
			iov = &one;
			iovcnt = 1;
		}
		n = pl_control(fd, iov, iovcnt);
		if (n == PL_CTL_AGAIN)
			continue;
		if (n < 0) {
			errno = (int)-n;
			return -1;
		}
		return n;
	}
}

/* ---- interposed: reads -------------------------------------------------------- */

PL_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
	unsigned int st = pl_fd_get(fd);

	if (PL_LIKELY(!st))
		return pl_real.read(fd, buf, len);
	return pl_rd_slow(fd, st, &(struct pl_rdargs){ .op = PL_RD_READ, .buf = buf, .len = len });
}

PL_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (len > buflen)
		__builtin_trap();
	return read(fd, buf, len);
}

PL_EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	unsigned int st = pl_fd_get(fd);

	if (PL_LIKELY(!st))
		return pl_real.readv(fd, iov, iovcnt);
	return pl_rd_slow(fd, st, &(struct pl_rdargs){ .op = PL_RD_READV, .iov = iov, .iovcnt = iovcnt });
}

PL_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	unsigned int st = pl_fd_get(fd);

	if (PL_LIKELY(!st))
		return pl_real.recv(fd, buf, len, flags);
	return pl_rd_slow(fd, st, &(struct pl_rdargs){ .op = PL_RD_RECV, .buf = buf, .len = len,
						       .flags = flags });
}

PL_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		__builtin_trap();
	return recv(fd, buf, len, flags);
}

PL_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
			   socklen_t *alen)
{
	unsigned int st = pl_fd_get(fd);

	if (PL_LIKELY(!st))
		return pl_real.recvfrom(fd, buf, len, flags, addr, alen);
	return pl_rd_slow(fd, st, &(struct pl_rdargs){ .op = PL_RD_RECVFROM, .buf = buf, .len = len,
						       .flags = flags, .addr = addr, .alen = alen });
}

PL_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
				 struct sockaddr *addr, socklen_t *alen)
{
	if (len > buflen)
		__builtin_trap();
	return recvfrom(fd, buf, len, flags, addr, alen);
}

PL_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	unsigned int st = pl_fd_get(fd);

	if (PL_LIKELY(!st))
		return pl_real.recvmsg(fd, msg, flags);
	/* A caller that asks for control messages itself reads TLS records
	 * knowingly (TLS_GET_RECORD_TYPE): leave them to it. */
	if (msg->msg_control && msg->msg_controllen)
		return pl_real.recvmsg(fd, msg, flags);
	return pl_rd_slow(fd, st, &(struct pl_rdargs){ .op = PL_RD_RECVMSG, .msg = msg, .flags = flags });
}

/* ---- interposed: closing ------------------------------------------------------ */

/* Is fd really a socket with the kernel's TLS ULP? A table entry that went
 * stale behind the shim's back (a raw close syscall, io_uring) must never
 * make it write TLS bytes into a plain socket. */
static bool pl_is_ktls(int fd)
{
	char ulp[16] = "";
	socklen_t len = sizeof(ulp);

	return !pl_real.getsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, &len) && !strcmp(ulp, "tls");
}

/*
 * Send close_notify once, never blocking. If the socket buffer is full,
 * the completion thread sends it (on a duplicate of the descriptor) as soon
 * as there is room, then does the shutdown(SHUT_WR) the program asked for
 * if shut: returns 1 then, and the caller must not shut down itself.
 */
static int pl_close_notify(int fd, unsigned int st, bool shut)
{
	struct linger lg = { 0 };
	socklen_t len = sizeof(lg);
	ssize_t n;
	int dup;

	if ((st & PL_FD_KIND) != PL_FD_KTLS || (st & PL_FD_CN_SENT))
		return 0;
	pl_fd_or(fd, PL_FD_CN_SENT);
	if (!pl_is_ktls(fd))
		return 0;
	n = ktlsh_record_send(fd, KTLSH_CT_ALERT, "\x01\x00", 2, MSG_DONTWAIT);
	if (n == 2 || (n != -EAGAIN && n != -EWOULDBLOCK))
		return 0;
	/* SO_LINGER 0: the program wants a reset, not an orderly end. */
	if (!pl_real.getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) && lg.l_onoff && !lg.l_linger)
		return 0;
	dup = pl_real.fcntl(fd, F_DUPFD_CLOEXEC, (void *)3L);
	if (dup < 0)
		return 0;
	if (pl_conf->verbose)
		pl_log_conn("fd %d: socket buffer full: close_notify follows when it has room", fd);
	pl_engine_linger(dup, shut);
	return shut;
}

/* The descriptor number fd stops referring to what the table says (close,
 * or dup2() over it). notify: send close_notify if fd was the only
 * reference this process knows of. */
static void pl_forget(int fd, unsigned int st, bool notify)
{
	switch (st & PL_FD_KIND) {
	case PL_FD_KTLS:
		if (notify && !(st & PL_FD_SHARED))
			(void)pl_close_notify(fd, st, false);
		break;
	case PL_FD_LISTEN:
		pl_server_close(fd);
		break;
	case PL_FD_PENDING:
		pl_client_close(fd);
		break;
	default:
		break;
	}
	pl_fd_set(fd, 0);
}

PL_EXPORT int close(int fd)
{
	unsigned int st = pl_fd_get(fd);

	if (PL_LIKELY(!st))
		return pl_real.close(fd);
	pl_forget(fd, st, true);
	return pl_real.close(fd);
}

/* close_range()/closefrom(): forget what they close (no close_notify:
 * they are used before exec, where the parent keeps the sockets). */
static void pl_forget_range(unsigned int first, unsigned int last)
{
	unsigned int fd, hi = __atomic_load_n(&pl_fd_hiwat, __ATOMIC_RELAXED);

	for (fd = first; fd <= last && fd <= hi && fd < pl_nfds; fd++)
		if (pl_fds[fd])
			pl_forget((int)fd, pl_fds[fd], false);
}

PL_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	if (pl_nfds && !(flags & CLOSE_RANGE_CLOEXEC))
		pl_forget_range(first, last);
	if (pl_real.close_range)
		return pl_real.close_range(first, last, flags);
	return (int)syscall(SYS_close_range, first, last, flags);
}

PL_EXPORT void closefrom(int lowfd)
{
	if (pl_nfds && lowfd >= 0)
		pl_forget_range((unsigned int)lowfd, ~0u);
	if (pl_real.closefrom) {
		pl_real.closefrom(lowfd);
		return;
	}
	(void)syscall(SYS_close_range, (unsigned int)lowfd, ~0u, 0);
}

PL_EXPORT int shutdown(int fd, int how)
{
	unsigned int st = pl_fd_get(fd);

	if (PL_LIKELY(!st))
		return pl_real.shutdown(fd, how);
	if ((how == SHUT_WR || how == SHUT_RDWR) && pl_close_notify(fd, st, true)) {
		/* close_notify waits for room; the shutdown follows it. */
		return how == SHUT_RDWR ? pl_real.shutdown(fd, SHUT_RD) : 0;
	}
	return pl_real.shutdown(fd, how);
}

/* ---- interposed: duplicating ---------------------------------------------------- */

/* newfd now refers to what oldfd does. */
static void pl_dup_note(int oldfd, int newfd)
{
	unsigned int st = pl_fd_get(oldfd);

	if (newfd < 0 || !st)
		return;
	switch (st & PL_FD_KIND) {
	case PL_FD_KTLS:
		/* Two references: close() of one must not end the stream. */
		pl_fd_or(oldfd, PL_FD_SHARED);
		pl_fd_set(newfd, st | PL_FD_SHARED);
		break;
	case PL_FD_LISTEN:
		pl_server_dup(oldfd, newfd);
		break;
	default:
		/* A placeholder or a failed connect: the copy is just a socket. */
		break;
	}
}

PL_EXPORT int dup(int fd)
{
	int nfd = pl_real.dup(fd);

	if (PL_LIKELY(!pl_fd_get(fd)))
		return nfd;
	pl_dup_note(fd, nfd);
	return nfd;
}

static int pl_dup23(int oldfd, int newfd, int flags, bool three)
{
	unsigned int nst = pl_fd_get(newfd);
	int ret;

	if (PL_LIKELY(!nst && !pl_fd_get(oldfd)))
		return three ? pl_real.dup3(oldfd, newfd, flags) : pl_real.dup2(oldfd, newfd);
	if (oldfd == newfd)
		return three ? pl_real.dup3(oldfd, newfd, flags) : pl_real.dup2(oldfd, newfd);
	ret = three ? pl_real.dup3(oldfd, newfd, flags) : pl_real.dup2(oldfd, newfd);
	if (ret < 0)
		return ret;
	if (nst)
		pl_forget(newfd, nst, false);
	pl_dup_note(oldfd, newfd);
	return ret;
}

PL_EXPORT int dup2(int oldfd, int newfd)
{
	return pl_dup23(oldfd, newfd, 0, false);
}

PL_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	return pl_dup23(oldfd, newfd, flags, true);
}

static int pl_fcntl(int fd, int cmd, void *arg)
{
	int ret = pl_real.fcntl(fd, cmd, arg);

	if (PL_LIKELY(!pl_fd_get(fd)) || (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC))
		return ret;
	pl_dup_note(fd, ret);
	return ret;
}

PL_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return pl_fcntl(fd, cmd, arg);
}

PL_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return pl_fcntl(fd, cmd, arg);
}

/* ---- interposed: server side ------------------------------------------------------ */

/* Is fd an AF_INET/AF_INET6 stream socket? */
static bool pl_is_tcp(int fd)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (pl_real.getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) || v != SOCK_STREAM)
		return false;
	l = sizeof(v);
	if (pl_real.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l))
		return false;
	return v == AF_INET || v == AF_INET6;
}

PL_EXPORT int listen(int fd, int backlog)
{
	int ret;

	if (PL_LIKELY(!pl_have_server && !pl_broken))
		return pl_real.listen(fd, backlog);
	if (pl_broken && pl_is_tcp(fd)) {
		pl_log("listen(fd %d) refused: the shim's configuration is broken (%s)", fd, pl_conf->err);
		errno = EACCES;
		return -1;
	}
	ret = pl_real.listen(fd, backlog);
	if (!ret && pl_fd_get(fd) != PL_FD_LISTEN)
		pl_server_listen(fd);
	return ret;
}

PL_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	if (PL_LIKELY(pl_fd_get(fd) != PL_FD_LISTEN))
		return pl_real.accept4(fd, addr, alen, flags);
	return pl_server_accept(fd, addr, alen, flags);
}

PL_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
	if (PL_LIKELY(pl_fd_get(fd) != PL_FD_LISTEN))
		return pl_real.accept(fd, addr, alen);
	return pl_server_accept(fd, addr, alen, 0);
}

/* ---- interposed: client side -------------------------------------------------------- */

PL_EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	const struct pl_rule *rule;
	unsigned int st = pl_fd_get(fd);
	char dst[64];

	if (PL_LIKELY(!st && !pl_have_client && !pl_broken))
		return pl_real.connect(fd, sa, len);
	switch (st & PL_FD_KIND) {
	case PL_FD_PENDING:
		errno = EALREADY;
		return -1;
	case PL_FD_FAILED:
		errno = pl_fd_err[fd] ? pl_fd_err[fd] : ECONNABORTED;
		pl_fd_err[fd] = 0;
		return -1;
	case PL_FD_KTLS:
		return pl_real.connect(fd, sa, len);	/* EISCONN */
	default:
		break;
	}
	if (!sa || len < sizeof(sa_family_t) || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return pl_real.connect(fd, sa, len);
	if (pl_broken) {
		if (!pl_is_tcp(fd))
			return pl_real.connect(fd, sa, len);
		pl_addr_str(sa, len, dst, sizeof(dst));
		pl_log("connect(fd %d, %s) refused: the shim's configuration is broken (%s)", fd, dst,
		       pl_conf->err);
		errno = EACCES;
		return -1;
	}
	rule = pl_conf_match(pl_conf, PL_ROLE_CLIENT, sa, len);
	if (!rule || !pl_is_tcp(fd))
		return pl_real.connect(fd, sa, len);
	return pl_client_connect(fd, sa, len, rule);
}

PL_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	unsigned int st = pl_fd_get(fd), kind;

	if (PL_LIKELY(!st))
		return pl_real.getsockopt(fd, level, name, val, len);
	kind = st & PL_FD_KIND;
	if ((kind == PL_FD_PENDING || kind == PL_FD_FAILED) && level == SOL_SOCKET &&
	    name == SO_ERROR && val && len && *len >= sizeof(int)) {
		/* Like TCP: 0 while in progress, the error once it failed
		 * (reported once, then 0). */
		int e = 0;

		if (kind == PL_FD_FAILED) {
			e = pl_fd_err[fd];
			pl_fd_err[fd] = 0;
		}
		memcpy(val, &e, sizeof(e));
		*len = sizeof(int);
		return 0;
	}
	if (kind == PL_FD_PENDING)
		return pl_client_getsockopt(fd, level, name, val, len);
	return pl_real.getsockopt(fd, level, name, val, len);
}

PL_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	if (PL_LIKELY(pl_fd_get(fd) != PL_FD_PENDING))
		return pl_real.setsockopt(fd, level, name, val, len);
	return pl_client_setsockopt(fd, level, name, val, len);
}

PL_EXPORT int getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
	if (PL_LIKELY(pl_fd_get(fd) != PL_FD_PENDING))
		return pl_real.getpeername(fd, sa, len);
	return pl_client_name(fd, true, sa, len);
}

PL_EXPORT int getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
	if (PL_LIKELY(pl_fd_get(fd) != PL_FD_PENDING))
		return pl_real.getsockname(fd, sa, len);
	return pl_client_name(fd, false, sa, len);
}

PL_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	if (PL_LIKELY(pl_fd_get(fd) != PL_FD_PENDING))
		return pl_real.epoll_ctl(epfd, op, fd, ev);
	pl_client_epoll_ctl(epfd, op, fd, ev);
	return pl_real.epoll_ctl(epfd, op, fd, ev);
}

/* ---- fork ------------------------------------------------------------------------- */

/* After fork() both processes hold every kTLS socket: neither's close()
 * may end the stream for the other (shutdown() still does). */
static void pl_mark_shared(void)
{
	unsigned int i, hi = pl_fd_hiwat;

	for (i = 0; i <= hi && i < pl_nfds; i++)
		if ((pl_fds[i] & PL_FD_KIND) == PL_FD_KTLS)
			pl_fds[i] |= PL_FD_SHARED;
}

static void pl_atfork_prepare(void)
{
	pl_engine_atfork_prepare();
	pthread_mutex_lock(&pl_log_lock);
}

static void pl_atfork_parent(void)
{
	pthread_mutex_unlock(&pl_log_lock);
	pl_engine_atfork_parent();
	pl_mark_shared();
}

static void pl_atfork_child(void)
{
	pthread_mutex_unlock(&pl_log_lock);
	pl_engine_atfork_child();
	pl_server_atfork_child();
	pl_client_atfork_child();
	pl_mark_shared();
}

/* ---- load time -------------------------------------------------------------------- */

static unsigned int pl_fd_limit(void)
{
	char buf[32];
	unsigned long v = 0;
	ssize_t n;
	int fd;

	fd = open("/proc/sys/fs/nr_open", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = pl_real.read(fd, buf, sizeof(buf) - 1);
		pl_real.close(fd);
		if (n > 0) {
			buf[n] = '\0';
			v = strtoul(buf, NULL, 10);
		}
	}
	if (v < 1024 || v > (1ul << 30))
		v = 1ul << 20;
	return (unsigned int)v;
}

/* Descriptors inherited at exec (systemd socket activation, a server
 * re-executing itself, inetd-style children): managed listeners are taken
 * over, kTLS sockets recognised. */
static void pl_adopt_inherited(void)
{
	char ulp[16];
	socklen_t l;
	DIR *d;
	struct dirent *e;
	int fd, dfd, v;

	d = opendir("/proc/self/fd");
	if (!d)
		return;
	dfd = dirfd(d);
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		fd = atoi(e->d_name);
		if (fd == dfd || !pl_is_tcp(fd))
			continue;
		v = 0;
		l = sizeof(v);
		if (!pl_real.getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) && v) {
			if (pl_have_server)
				pl_server_adopt(fd);
			continue;
		}
		l = sizeof(ulp);
		memset(ulp, 0, sizeof(ulp));
		if (!pl_real.getsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, &l) && !strcmp(ulp, "tls"))
			pl_fd_set(fd, PL_FD_KTLS | PL_FD_SHARED);
	}
	closedir(d);
}

static struct pl_conf pl_conf_storage;
static char pl_sock_buf[sizeof(((struct pl_conf *)0)->socket) + 1];

__attribute__((constructor)) static void pl_init(void)
{
	const char *file, *inl;
	unsigned int i, n;
	void *p;
	int ret = 0;

	pl_resolve();
	file = secure_getenv(PL_ENV_FILE);
	inl = secure_getenv(PL_ENV_INLINE);
	if ((!file || !*file) && (!inl || !*inl))
		return;	/* nothing named: every call passes through */
	pl_conf_init(&pl_conf_storage);
	if (file && *file)
		ret = pl_conf_load_file(&pl_conf_storage, file);
	if (!ret && inl && *inl)
		ret = pl_conf_parse(&pl_conf_storage, inl, PL_ENV_INLINE, false);
	pl_conf = &pl_conf_storage;
	if (pl_conf->log == PL_LOG_FILE) {
		pl_log_fd = open(pl_conf->log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		/* The descriptor must not collide with the program's view of
		 * low numbers (it may dup2() onto 0-2 later). */
		if (pl_log_fd >= 0 && pl_log_fd < 10) {
			int hi = pl_real.fcntl(pl_log_fd, F_DUPFD_CLOEXEC, (void *)(long)100);

			pl_real.close(pl_log_fd);
			pl_log_fd = hi;
		}
	}
	if (ret) {
		pl_broken = true;
		pl_log("configuration error: %s; every TCP listen() and connect() of this process fails "
		       "with EACCES until it is fixed", pl_conf->err);
	}
	/* A copy: the environment's memory may be reused by the program
	 * (nginx writes its process titles over it). */
	snprintf(pl_sock_buf, sizeof(pl_sock_buf), "%s",
		 ktlsh_client_path(pl_conf->socket[0] ? pl_conf->socket : NULL));
	pl_sock_path = pl_sock_buf;
	n = pl_fd_limit();
	p = mmap(NULL, (size_t)n * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (p == MAP_FAILED) {
		pl_broken = true;
		snprintf(pl_conf->err, sizeof(pl_conf->err), "cannot map the descriptor table: %s",
			 strerror(errno));
		pl_log("%s; every TCP listen() and connect() fails with EACCES", pl_conf->err);
		return;
	}
	pl_fd_err = (uint8_t *)p + n;
	pl_fds = p;
	for (i = 0; !pl_broken && i < pl_conf->n_rules; i++) {
		if (pl_conf->rules[i].role == PL_ROLE_SERVER)
			pl_have_server = true;
		else
			pl_have_client = true;
	}
	if (pthread_atfork(pl_atfork_prepare, pl_atfork_parent, pl_atfork_child)) {
		pl_broken = true;
		pl_log("pthread_atfork failed; every TCP listen() and connect() fails with EACCES");
	}
	__atomic_store_n(&pl_nfds, n, __ATOMIC_RELEASE);
	if (!pl_broken)
		pl_adopt_inherited();
	if (pl_conf->verbose)
		pl_log("loaded: %u rule(s), ktlshd at %s", pl_conf->n_rules, pl_sock_path);
}
