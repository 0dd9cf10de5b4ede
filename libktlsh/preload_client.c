// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Managed connect(): the program's socket is connected and handed to
 * ktlshd as a TLS client before the program may use it.
 *
 * Blocking socket: connect(), then the handshake through ktlsh_handshake_fd()
 * (the pooled, thread-safe blocking call); connect() returns 0 only with
 * kernel TLS installed.
 *
 * Nonblocking socket: connect() returns EINPROGRESS at once, as the kernel
 * would, but the program must not see the socket writable (and write
 * plaintext) before the keys are in. So the descriptor number is pointed
 * at a placeholder meanwhile: one end of an AF_UNIX socketpair whose send
 * buffer is full, which polls as neither readable nor writable, and which
 * reads and writes return EAGAIN on. The completion thread waits for the
 * TCP connection, submits it, and on the reply dup3()s the real socket back
 * onto the program's descriptor (kTLS installed; or shut down, with the
 * error left for getsockopt(SO_ERROR) if the handshake failed), re-adds it
 * to the epoll sets the program registered the placeholder in, and then
 * drains the placeholder's peer so that a poll() or select() asleep on the
 * placeholder wakes up.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "preload.h"

#define PL_EPREG_MAX	8
#define PL_RETIRE_MS	2000

enum pl_pc_state {
	PL_PC_CONNECTING = 1,	/* TCP handshake in progress */
	PL_PC_HANDSHAKING,	/* with ktlshd */
	PL_PC_DONE,		/* swapped back; the placeholder's peer waits to be closed */
};

struct pl_pconn {
	int fd;			/* the program's descriptor */
	int real;		/* ours, of the TCP socket */
	int peer;		/* the placeholder's other end */
	dev_t ph_dev;
	ino_t ph_ino;
	const struct pl_rule *rule;
	char dst[64];
	enum pl_pc_state state;
	bool cancelled;		/* the program closed its descriptor */
	int64_t retire_at;
	unsigned int nreg;
	struct {
		int epfd;
		struct epoll_event ev;
	} reg[PL_EPREG_MAX];
	struct pl_pconn *next;
};

/* Appended at the tail by the program's threads; removed only by the
 * completion thread, so the first n entries it polled stay in order. */
static struct pl_pconn *pl_pcs, **pl_pcs_tail = &pl_pcs;

static void pl_pc_unlink_locked(struct pl_pconn *pc)
{
	struct pl_pconn **pp;

	for (pp = &pl_pcs; *pp; pp = &(*pp)->next) {
		if (*pp != pc)
			continue;
		*pp = pc->next;
		if (!*pp)
			pl_pcs_tail = pp;
		return;
	}
}

static struct pl_pconn *pl_pc_find_locked(int fd)
{
	struct pl_pconn *pc;

	for (pc = pl_pcs; pc; pc = pc->next)
		if (pc->fd == fd && pc->state != PL_PC_DONE && !pc->cancelled)
			return pc;
	return NULL;
}

static void pl_pc_free_locked(struct pl_pconn *pc)
{
	pl_pc_unlink_locked(pc);
	if (pc->real >= 0)
		pl_real.close(pc->real);
	if (pc->peer >= 0)
		pl_real.close(pc->peer);
	free(pc);
}

/* Freed by the thread's next walk over the list (never here: a caller may
 * be walking it). */
static void pl_pc_retire(struct pl_pconn *pc)
{
	if (pc->state == PL_PC_DONE && !pc->cancelled)
		return;		/* swapped: the peer is closed after PL_RETIRE_MS */
	pc->state = PL_PC_DONE;
	pc->retire_at = 0;
	pl_engine_kick();
}

static void pl_fill_request(const struct pl_rule *r, struct ktlsh_request *req)
{
	memset(req, 0, sizeof(*req));
	req->role = KTLSH_PROTO_ROLE_CLIENT;
	req->identity = r->identity[0] ? r->identity : NULL;
	req->server_name = r->name[0] ? r->name : NULL;
	req->alpn = r->alpn_ptr;
	req->n_alpn = r->n_alpn;
	req->timeout_ms = r->timeout_ms;
	req->flags = r->flags;
}

static void pl_fail_log(const char *dst, const struct pl_rule *rule, int status,
			const struct ktlsh_proto_reply *rep, int err)
{
	char why[320];

	if (rep && rep->type)
		snprintf(why, sizeof(why), "%s", rep->reason[0] ? rep->reason : pl_status_str(status));
	else
		snprintf(why, sizeof(why), "no answer from ktlshd at %s", pl_sock_path);
	pl_log_conn("connect to %s (%s%s%s): TLS not established: %s (%s); reporting %s", dst,
		    rule->text, rule->name[0] ? ", name " : "", rule->name, why, pl_status_str(status),
		    strerror(err));
}

/* ---- blocking ----------------------------------------------------------------------- */

static int pl_wait_connected(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int64_t end = pl_now_ms() + timeout_ms, left;
	socklen_t len = sizeof(int);
	int err = 0, n;

	for (;;) {
		left = end - pl_now_ms();
		if (left <= 0)
			return ETIMEDOUT;
		n = poll(&p, 1, (int)left);
		if (n > 0)
			break;
		if (n < 0 && errno != EINTR)
			return errno;
	}
	if (pl_real.getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len))
		return errno;
	return err;
}

static int pl_connect_blocking(int fd, const struct sockaddr *sa, socklen_t len,
			       const struct pl_rule *rule, const char *dst)
{
	struct ktlsh_proto_reply *rep;
	struct ktlsh_request req;
	int ret, err;

	ret = pl_real.connect(fd, sa, len);
	if (ret && (errno == EINTR || errno == EINPROGRESS)) {
		/* The connection goes on in the background; it must be up before
		 * the handshake, so wait for it here (SO_SNDTIMEO or a signal
		 * would otherwise leave the program with a half-made socket). */
		err = pl_wait_connected(fd, rule->timeout_ms ? (int)rule->timeout_ms : KTLSH_WAIT_DEFAULT_MS);
		if (err) {
			errno = err;
			return -1;
		}
		ret = 0;
	}
	if (ret)
		return ret;
	rep = malloc(sizeof(*rep));
	if (!rep) {
		pl_real.shutdown(fd, SHUT_RDWR);
		errno = ENOMEM;
		return -1;
	}
	pl_fill_request(rule, &req);
	ret = ktlsh_handshake_fd(pl_sock_path, fd, &req, rep);
	if (!ret) {
		pl_fd_set(fd, PL_FD_KTLS);
		if (pl_conf->verbose)
			pl_log("TLS to %s (%s): %s %s, %llu us", dst, rule->text,
			       rep->tls_version == 0x0304 ? "TLSv1.3" : "TLSv1.2", rep->cipher,
			       (unsigned long long)rep->handshake_us);
		free(rep);
		return 0;
	}
	/* Fail closed: nothing can be sent on it any more. */
	pl_real.shutdown(fd, SHUT_RDWR);
	err = pl_client_errno(ret);
	pl_fail_log(dst, rule, ret, rep, err);
	pl_fd_err[fd] = 0;
	pl_fd_set(fd, PL_FD_FAILED);
	free(rep);
	errno = err;
	return -1;
}

/* ---- nonblocking ----------------------------------------------------------------------- */

/* A socketpair end that polls neither readable nor writable. */
static int pl_placeholder(int sp[2])
{
	static const char junk[4096];
	int small = 1;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp))
		return -errno;
	(void)setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	(void)setsockopt(sp[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	while (send(sp[0], junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
		;
	return 0;
}

static int pl_connect_nonblocking(int fd, const struct sockaddr *sa, socklen_t len,
				  const struct pl_rule *rule, const char *dst)
{
	struct pl_pconn *pc;
	struct stat st;
	int sp[2] = { -1, -1 }, real = -1, fdfl, err;

	if (pl_real.connect(fd, sa, len) && errno != EINPROGRESS)
		return -1;	/* refused, unreachable...: as the kernel says */
	pc = calloc(1, sizeof(*pc));
	err = ENOMEM;
	if (!pc)
		goto fail;
	err = -pl_placeholder(sp);
	if (err)
		goto fail;
	real = pl_real.fcntl(fd, F_DUPFD_CLOEXEC, (void *)0L);
	fdfl = pl_real.fcntl(fd, F_GETFD);
	if (real < 0 || fdfl < 0 ||
	    pl_real.dup3(sp[0], fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0 || fstat(fd, &st)) {
		err = errno;
		goto fail;
	}
	pl_real.close(sp[0]);
	*pc = (struct pl_pconn){ .fd = fd, .real = real, .peer = sp[1], .ph_dev = st.st_dev,
				 .ph_ino = st.st_ino, .rule = rule, .state = PL_PC_CONNECTING };
	snprintf(pc->dst, sizeof(pc->dst), "%s", dst);
	pl_engine_lock();
	err = -pl_engine_start_locked();
	if (err) {
		pl_engine_unlock();
		/* Put the socket back, shut: the program gets the error now. */
		pl_real.dup3(real, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
		pl_real.shutdown(fd, SHUT_RDWR);
		sp[0] = -1;
		goto fail;
	}
	*pl_pcs_tail = pc;
	pl_pcs_tail = &pc->next;
	pl_fd_set(fd, PL_FD_PENDING);
	pl_engine_kick();
	pl_engine_unlock();
	errno = EINPROGRESS;
	return -1;
fail:
	pl_log_conn("connect to %s (%s): cannot set up the shim (%s)", dst, rule->text, strerror(err));
	if (real >= 0)
		pl_real.close(real);
	if (sp[0] >= 0)
		pl_real.close(sp[0]);
	if (sp[1] >= 0)
		pl_real.close(sp[1]);
	free(pc);
	pl_real.shutdown(fd, SHUT_RDWR);
	errno = err;
	return -1;
}

int pl_client_connect(int fd, const struct sockaddr *sa, socklen_t len, const struct pl_rule *rule)
{
	char dst[64];
	int fl;

	pl_addr_str(sa, len, dst, sizeof(dst));
	fl = pl_real.fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	if (fl & O_NONBLOCK)
		return pl_connect_nonblocking(fd, sa, len, rule, dst);
	return pl_connect_blocking(fd, sa, len, rule, dst);
}

/* ---- the completion thread's side ----------------------------------------------------------- */

unsigned int pl_client_pollfds_locked(struct pollfd *p, unsigned int cap, int64_t *next)
{
	struct pl_pconn *pc;
	unsigned int n = 0;

	for (pc = pl_pcs; pc; pc = pc->next) {
		if (pc->state == PL_PC_DONE) {
			if (pc->retire_at < *next)
				*next = pc->retire_at;
			continue;
		}
		if (pc->cancelled && pc->state == PL_PC_CONNECTING)
			*next = 0;	/* free it now */
		if (pc->state == PL_PC_CONNECTING && n < cap)
			p[n++] = (struct pollfd){ .fd = pc->real, .events = POLLOUT };
	}
	return n;
}

/* Give the program its descriptor back: the real socket (kTLS installed, or
 * shut down with err pending), where the placeholder was. */
static void pl_swap_locked(struct pl_pconn *pc, int err)
{
	struct stat st;
	int fdfl, fl, i, ret;
	char buf[4096];

	if (fstat(pc->fd, &st) || st.st_dev != pc->ph_dev || st.st_ino != pc->ph_ino) {
		/* The program replaced the descriptor (dup2() over it) without
		 * close(): nothing of ours is there any more. */
		pc->cancelled = true;
		return;
	}
	if (err)
		pl_real.shutdown(pc->real, SHUT_RDWR);
	/* The program may have changed O_NONBLOCK on the placeholder. */
	fl = pl_real.fcntl(pc->fd, F_GETFL);
	if (fl >= 0)
		(void)pl_set_nonblock(pc->real, fl & O_NONBLOCK);
	fdfl = pl_real.fcntl(pc->fd, F_GETFD);
	ret = pl_real.dup3(pc->real, pc->fd, (fdfl > 0 && (fdfl & FD_CLOEXEC)) ? O_CLOEXEC : 0);
	if (ret < 0) {
		pl_log_conn("connect to %s: cannot put the socket back on fd %d (%s)", pc->dst, pc->fd,
			    strerror(errno));
		pc->cancelled = true;
		return;
	}
	if (err) {
		pl_fd_err[pc->fd] = (uint8_t)err;
		pl_fd_set(pc->fd, PL_FD_FAILED);
	} else {
		pl_fd_set(pc->fd, PL_FD_KTLS);
	}
	for (i = 0; i < (int)pc->nreg; i++)
		(void)pl_real.epoll_ctl(pc->reg[i].epfd, EPOLL_CTL_ADD, pc->fd, &pc->reg[i].ev);
	/* Wake poll()/select() callers asleep on the placeholder. */
	while (pl_real.read(pc->peer, buf, sizeof(buf)) > 0)
		;
	pl_real.close(pc->real);
	pc->real = -1;
	pc->state = PL_PC_DONE;
	pc->retire_at = pl_now_ms() + PL_RETIRE_MS;
}

void pl_client_done_locked(struct pl_job *job, int status, const struct ktlsh_proto_reply *rep)
{
	struct pl_pconn *pc = job->pc;
	int err = 0;

	free(job);
	if (!pc->cancelled) {
		if (status) {
			err = pl_client_errno(status);
			pl_fail_log(pc->dst, pc->rule, status, rep, err);
		} else if (pl_conf->verbose && rep) {
			pl_log("TLS to %s (%s): %s %s, %llu us", pc->dst, pc->rule->text,
			       rep->tls_version == 0x0304 ? "TLSv1.3" : "TLSv1.2", rep->cipher,
			       (unsigned long long)rep->handshake_us);
		}
		pl_swap_locked(pc, err);
	}
	pl_pc_retire(pc);
}

static void pl_pc_connected_locked(struct pl_pconn *pc)
{
	struct pl_job *job;
	socklen_t len = sizeof(int);
	int err = 0;

	if (pl_real.getsockopt(pc->real, SOL_SOCKET, SO_ERROR, &err, &len))
		err = errno;
	if (err) {
		/* TCP failed: the program learns it as from the kernel. */
		pl_swap_locked(pc, err);
		pl_pc_retire(pc);
		return;
	}
	job = calloc(1, sizeof(*job));
	if (!job) {
		pl_swap_locked(pc, ENOMEM);
		pl_pc_retire(pc);
		return;
	}
	job->kind = PL_JOB_CONNECT;
	job->fd = pc->real;
	job->rule = pc->rule;
	job->pc = pc;
	pc->state = PL_PC_HANDSHAKING;
	pl_engine_submit_locked(job);
}

void pl_client_events_locked(const struct pollfd *p, unsigned int n)
{
	struct pl_pconn *pc, *next;
	int64_t now = pl_now_ms();
	unsigned int i = 0;

	for (pc = pl_pcs; pc; pc = next) {
		bool polled = pc->state == PL_PC_CONNECTING && i < n;

		next = pc->next;
		if (polled)
			i++;
		if (pc->state == PL_PC_DONE) {
			if (now >= pc->retire_at)
				pl_pc_free_locked(pc);
			continue;
		}
		if (pc->cancelled) {
			if (pc->state == PL_PC_CONNECTING)
				pl_pc_retire(pc);
			continue;	/* HANDSHAKING: retired with the reply */
		}
		if (polled && p[i - 1].revents)
			pl_pc_connected_locked(pc);
	}
}

/* ---- the program's calls on a pending descriptor ------------------------------------------------ */

void pl_client_close(int fd)
{
	struct pl_pconn *pc;

	pl_engine_lock();
	pc = pl_pc_find_locked(fd);
	if (pc) {
		pc->cancelled = true;
		pl_engine_kick();
	}
	pl_engine_unlock();
}

void pl_client_epoll_ctl(int epfd, int op, int fd, const struct epoll_event *ev)
{
	struct pl_pconn *pc;
	unsigned int i;

	pl_engine_lock();
	pc = pl_pc_find_locked(fd);
	if (!pc)
		goto out;
	for (i = 0; i < pc->nreg && pc->reg[i].epfd != epfd; i++)
		;
	if (op == EPOLL_CTL_DEL) {
		if (i < pc->nreg)
			pc->reg[i] = pc->reg[--pc->nreg];
	} else if (ev && (i < pc->nreg || pc->nreg < PL_EPREG_MAX)) {
		if (i == pc->nreg)
			pc->nreg++;
		pc->reg[i].epfd = epfd;
		pc->reg[i].ev = *ev;
	}
out:
	pl_engine_unlock();
}

int pl_client_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct pl_pconn *pc;
	int ret, err = 0;

	pl_engine_lock();
	pc = pl_pc_find_locked(fd);
	if (pc && pc->real >= 0) {
		ret = pl_real.getsockopt(pc->real, level, name, val, len);
		err = errno;
	} else {
		ret = pl_real.getsockopt(fd, level, name, val, len);
		err = errno;
	}
	pl_engine_unlock();
	errno = err;
	return ret;
}

int pl_client_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	struct pl_pconn *pc;
	int ret, err = 0;

	pl_engine_lock();
	pc = pl_pc_find_locked(fd);
	ret = pl_real.setsockopt(pc && pc->real >= 0 ? pc->real : fd, level, name, val, len);
	err = errno;
	pl_engine_unlock();
	errno = err;
	return ret;
}

int pl_client_name(int fd, bool peer, struct sockaddr *sa, socklen_t *len)
{
	struct pl_pconn *pc;
	int ret, err = 0;

	pl_engine_lock();
	pc = pl_pc_find_locked(fd);
	if (pc && peer) {
		/* Not connected yet, as far as the program can tell. */
		ret = -1;
		err = ENOTCONN;
	} else if (pc) {
		ret = pl_real.getsockname(pc->real, sa, len);
		err = errno;
	} else {
		ret = peer ? pl_real.getpeername(fd, sa, len) : pl_real.getsockname(fd, sa, len);
		err = errno;
	}
	pl_engine_unlock();
	errno = err;
	return ret;
}

/* ---- fork ------------------------------------------------------------------------------------- */

/* The parent finishes its connects; the child's descriptors stay on the
 * placeholder (see ktlsh-preload(8)). Drop the child's copies. */
void pl_client_atfork_child(void)
{
	struct pl_pconn *pc, *next;

	for (pc = pl_pcs; pc; pc = next) {
		next = pc->next;
		if (pc->real >= 0)
			pl_real.close(pc->real);
		if (pc->peer >= 0)
			pl_real.close(pc->peer);
		free(pc);
	}
	pl_pcs = NULL;
	pl_pcs_tail = &pl_pcs;
}
