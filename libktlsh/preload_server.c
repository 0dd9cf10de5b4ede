// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Managed listeners: the program's accept() returns only sockets on which
 * ktlshd installed kernel TLS.
 *
 *  - accept() takes raw connections off the listener and submits each to
 *    ktlshd without waiting. The program's thread is never blocked for a
 *    handshake, and a silent client holds up nobody.
 *  - The completion thread puts each finished socket into the listener's
 *    queue: a SOCK_SEQPACKET socketpair created at listen(), carrying the
 *    descriptor (SCM_RIGHTS) and the peer's address. Every process that
 *    inherits the listener (nginx's workers, forked after listen()) shares
 *    it, so a socket finished by one worker can be returned by whichever
 *    worker the kernel wakes next.
 *  - The wake-up: a program asleep in epoll_wait()/poll() on the listener
 *    only wakes for a new connection. So after queueing a socket the thread
 *    makes one: a loopback connection to the listener from a port it
 *    records in a page shared by those processes. accept() recognises it
 *    by that port, discards it, and returns a socket from the queue instead.
 *    One wake-up per finished socket keeps the listener readable for as
 *    long as the queue holds sockets (level- and edge-triggered alike).
 *    The thread keeps its end open until an accept() has claimed the port
 *    (so that no client connection can reuse the port and be taken for
 *    one), then resets it (SO_LINGER 0): no TIME_WAIT is left behind. It
 *    holds at most PL_WAKE_HOLD so, each costing the program a descriptor;
 *    beyond that a wake-up is reset as soon as it is connected.
 *  - A safety net: when sockets have waited in the queue for a second and
 *    no accept() took one, the thread makes another wake-up (at most one
 *    outstanding per process and listener), so a wake-up lost for any
 *    reason (no descriptor for it, the program's accept() saw an error)
 *    delays a connection instead of stranding it.
 *
 * accept() on a nonblocking listener takes every raw connection waiting,
 * then returns a queued socket or EAGAIN; on a blocking listener it loops
 * in the real accept() (which a wake-up ends) until the queue has one, so
 * its EINTR and SA_RESTART behaviour stay the kernel's.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <arpa/inet.h>

#include "preload.h"

#define PL_WAKE_SLOTS	1000
#define PL_QMSG_MAGIC	0x6b514d31u	/* "kQM1" */
#define PL_WAKE_TIMEOUT_MS 30000
#define PL_RECHECK_MS	1000
#define PL_WAKE_HOLD	64	/* connected wake-ups held open at once */

/* Shared by every process holding the listener (MAP_SHARED, inherited). */
struct pl_shared {
	_Atomic int qlen;			/* sockets in the queue, counted before they are put */
	_Atomic int nwake;			/* wake-ups outstanding */
	_Atomic unsigned int taken;		/* sockets ever taken: progress */
	_Atomic uint32_t wake[PL_WAKE_SLOTS];	/* pl_wake_val(): port and time of each */
};

struct pl_listener {
	unsigned int refs;			/* descriptors naming it + jobs in flight */
	int q[2];				/* [0] take, [1] put */
	struct pl_shared *sh;
	const struct pl_rule *rule;		/* NULL: per-connection rules */
	bool dead;				/* could not be set up: drop everything */
	int wake_family;
	uint8_t wake_addr[16];			/* where wake-ups come from and go to */
	uint16_t port;
	char name[64];				/* "0.0.0.0:443" */
	int64_t check_at;			/* safety net armed: when to look (0: off) */
	unsigned int seen_taken;		/* sh->taken when last looked */
};

struct pl_lmap {
	int fd;
	struct pl_listener *l;
};

struct pl_wake {
	int fd;
	struct pl_listener *l;
	uint32_t val;
	int slot;
	int pidx;			/* its entry in this round's poll set, or -1 */
	bool connected;			/* waiting for an accept() to claim the port */
	int64_t deadline;
	struct pl_wake *next;
};

struct pl_qmsg {
	uint32_t magic;
	uint32_t nonblock;
	uint32_t peer_len;
	uint32_t pad;
	struct sockaddr_storage peer;
};

static struct pl_lmap *pl_lmap;
static unsigned int pl_nlmap, pl_caplmap;
static struct pl_wake *pl_wakes;
static unsigned int pl_nheld;		/* of pl_wakes, the connected ones held */

/* ---- listeners ---------------------------------------------------------------- */

static struct pl_listener *pl_find_locked(int fd)
{
	unsigned int i;

	for (i = 0; i < pl_nlmap; i++)
		if (pl_lmap[i].fd == fd)
			return pl_lmap[i].l;
	return NULL;
}

static void pl_unref_locked(struct pl_listener *l)
{
	if (--l->refs)
		return;
	if (l->q[0] >= 0)
		pl_real.close(l->q[0]);
	if (l->q[1] >= 0)
		pl_real.close(l->q[1]);
	if (l->sh)
		munmap(l->sh, sizeof(*l->sh));
	free(l);
}

static int pl_map_add_locked(int fd, struct pl_listener *l)
{
	struct pl_lmap *m;

	if (pl_nlmap == pl_caplmap) {
		m = realloc(pl_lmap, (pl_caplmap ? pl_caplmap * 2 : 8) * sizeof(*m));
		if (!m)
			return -ENOMEM;
		pl_lmap = m;
		pl_caplmap = pl_caplmap ? pl_caplmap * 2 : 8;
	}
	pl_lmap[pl_nlmap++] = (struct pl_lmap){ .fd = fd, .l = l };
	l->refs++;
	return 0;
}

/* Where wake-ups connect: the bound address, or loopback for a wildcard. */
static void pl_wake_target(struct pl_listener *l, int fd, int family, const uint8_t *addr)
{
	static const uint8_t zero[16];
	int v6only = 0;
	socklen_t len = sizeof(v6only);

	l->wake_family = family;
	memcpy(l->wake_addr, addr, 16);
	if (memcmp(addr, zero, family == AF_INET ? 4 : 16))
		return;
	if (family == AF_INET6 &&
	    (pl_real.getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) || v6only)) {
		memset(l->wake_addr, 0, 16);
		l->wake_addr[15] = 1;	/* ::1 */
		return;
	}
	/* An IPv4 listener, or a dual-stack one: 127.0.0.1 always exists. */
	l->wake_family = AF_INET;
	memset(l->wake_addr, 0, 16);
	memcpy(l->wake_addr, "\x7f\x00\x00\x01", 4);
}

/*
 * SO_REUSEPORT: several listening sockets on one address (nginx's
 * "listen ... reuseport", one per worker), among which the kernel spreads
 * connections by a hash, wake-ups included. They share one queue and one
 * wake-up table, so that whichever socket a wake-up lands on, the process
 * that accepts it finds the finished socket.
 */
static bool pl_reuseport_alias(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct pl_listener *l = NULL;
	char name[64];
	socklen_t vl = sizeof(int);
	unsigned int i;
	int v = 0;

	if (pl_real.getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &v, &vl) || !v)
		return false;
	pl_addr_str(sa, len, name, sizeof(name));
	pl_engine_lock();
	for (i = 0; i < pl_nlmap && !l; i++)
		if (!pl_lmap[i].l->dead && !strcmp(pl_lmap[i].l->name, name))
			l = pl_lmap[i].l;
	if (l && pl_map_add_locked(fd, l))
		l = NULL;
	if (l)
		pl_fd_set(fd, PL_FD_LISTEN);
	pl_engine_unlock();
	if (l && pl_conf->verbose)
		pl_log("listener %s (fd %d, SO_REUSEPORT): shares the queue of its siblings", name, fd);
	return l != NULL;
}

static void pl_setup(int fd, bool adopted)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	const struct pl_rule *rule;
	struct pl_listener *l;
	uint8_t addr[16] = { 0 };
	int family, sndbuf = 4 << 20;
	bool partial;
	void *sh;

	if (pl_real.getsockname(fd, (struct sockaddr *)&ss, &len))
		return;
	rule = pl_conf_match(pl_conf, PL_ROLE_SERVER, (struct sockaddr *)&ss, len);
	if (!rule)
		return;
	partial = pl_conf_listener_partial(pl_conf, (struct sockaddr *)&ss, len);
	if (pl_reuseport_alias(fd, (struct sockaddr *)&ss, len))
		return;
	l = calloc(1, sizeof(*l));
	if (!l) {
		pl_log("listener fd %d: out of memory; its connections are dropped", fd);
		/* Marked anyway: never hand out a plaintext connection. */
		pl_fd_set(fd, PL_FD_LISTEN);
		return;
	}
	l->q[0] = l->q[1] = -1;
	l->rule = partial ? NULL : rule;
	pl_addr_str((struct sockaddr *)&ss, len, l->name, sizeof(l->name));
	if (!pl_addr_norm((struct sockaddr *)&ss, len, &family, addr, &l->port))
		l->dead = true;
	pl_wake_target(l, fd, family, addr);
	sh = mmap(NULL, sizeof(*l->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		l->dead = true;
	else
		l->sh = sh;
	if (!l->dead && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, l->q))
		l->dead = true;
	if (!l->dead)
		(void)setsockopt(l->q[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (l->dead)
		pl_log("listener %s (fd %d): cannot set up the shim (%s); its connections are dropped",
		       l->name, fd, strerror(errno));
	pl_engine_lock();
	if (pl_map_add_locked(fd, l)) {
		l->dead = true;
		free(l);
		l = NULL;
	}
	pl_fd_set(fd, PL_FD_LISTEN);
	pl_engine_unlock();
	if (l && pl_conf->verbose)
		pl_log("%s listener %s (fd %d): TLS by ktlshd, %s%s%s", adopted ? "inherited" : "managing",
		       l->name, fd, partial ? "per-connection rules" : rule->text,
		       !partial && rule->identity[0] ? ", identity " : "",
		       !partial ? rule->identity : "");
}

void pl_server_listen(int fd)
{
	pl_setup(fd, false);
}

void pl_server_adopt(int fd)
{
	pl_setup(fd, true);
}

void pl_server_close(int fd)
{
	unsigned int i;

	pl_engine_lock();
	for (i = 0; i < pl_nlmap; i++) {
		if (pl_lmap[i].fd != fd)
			continue;
		pl_unref_locked(pl_lmap[i].l);
		pl_lmap[i] = pl_lmap[--pl_nlmap];
		break;
	}
	pl_engine_unlock();
}

void pl_server_dup(int oldfd, int newfd)
{
	struct pl_listener *l;

	pl_engine_lock();
	l = pl_find_locked(oldfd);
	if (!l || !pl_map_add_locked(newfd, l))
		pl_fd_set(newfd, PL_FD_LISTEN);
	pl_engine_unlock();
}

/* ---- wake-ups ------------------------------------------------------------------ */

/*
 * A slot holds bit 31 (in use), the monotonic clock's seconds modulo 2^15
 * when it was taken, and the port. The process that took a slot frees it
 * by PL_WAKE_TIMEOUT_MS; one that died first cannot, so a slot older than
 * PL_WAKE_STALE_S counts as free: its port, reused by a client later, is
 * not taken for a wake-up.
 */
#define PL_WAKE_STALE_S	(2 * PL_WAKE_TIMEOUT_MS / 1000)

static uint32_t pl_wake_val(uint16_t port)
{
	return 0x80000000u | (uint32_t)((pl_now_ms() / 1000) & 0x7fff) << 16 | port;
}

static bool pl_wake_stale(uint32_t v)
{
	uint32_t now = (uint32_t)(pl_now_ms() / 1000) & 0x7fff;

	return v && ((now - (v >> 16)) & 0x7fff) > PL_WAKE_STALE_S;
}

static bool pl_is_wake(struct pl_listener *l, const struct sockaddr *sa, socklen_t len)
{
	uint8_t addr[16] = { 0 };
	uint16_t port;
	uint32_t v;
	int family, i;

	if (!l->sh || !atomic_load(&l->sh->nwake))
		return false;
	if (!pl_addr_norm(sa, len, &family, addr, &port) || family != l->wake_family ||
	    memcmp(addr, l->wake_addr, family == AF_INET ? 4 : 16))
		return false;
	for (i = 0; i < PL_WAKE_SLOTS; i++) {
		v = atomic_load(&l->sh->wake[i]);
		if (!v || (v & 0xffff) != port)
			continue;
		if (atomic_compare_exchange_strong(&l->sh->wake[i], &v, 0)) {
			atomic_fetch_sub(&l->sh->nwake, 1);
			if (!pl_wake_stale(v))
				return true;
		}
	}
	return false;
}

static void pl_wake_release(struct pl_listener *l, int slot, uint32_t val)
{
	if (atomic_compare_exchange_strong(&l->sh->wake[slot], &val, 0))
		atomic_fetch_sub(&l->sh->nwake, 1);
}

static void pl_reset_close(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	pl_real.close(fd);
}

/* A connected wake-up: hold it until its acceptor claims the slot, if
 * fewer than PL_WAKE_HOLD are held. */
static bool pl_wake_hold(struct pl_wake *w)
{
	if (pl_nheld >= PL_WAKE_HOLD)
		return false;
	w->connected = true;
	pl_nheld++;
	return true;
}

/* Make a connection to l that its accept() will recognise. Lock held. */
static void pl_wake(struct pl_listener *l)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	struct pl_wake *w = NULL;
	uint32_t cur, val;
	int fd, slot = -1, i;

	fd = pl_real.socket(l->wake_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	memset(&ss, 0, sizeof(ss));
	if (l->wake_family == AF_INET) {
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, l->wake_addr, 4);
		len = sizeof(*in);
	} else {
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, l->wake_addr, 16);
		len = sizeof(*in6);
	}
	/* The source: the same address, a port of the kernel's choosing,
	 * recorded before the connection can arrive. */
	if (bind(fd, (struct sockaddr *)&ss, len))
		goto fail;
	if (pl_real.getsockname(fd, (struct sockaddr *)&ss, &len))
		goto fail;
	val = pl_wake_val(l->wake_family == AF_INET ? ntohs(in->sin_port) : ntohs(in6->sin6_port));
	for (i = 0; i < PL_WAKE_SLOTS; i++) {
		cur = atomic_load(&l->sh->wake[i]);
		if (cur && !pl_wake_stale(cur))
			continue;
		if (atomic_compare_exchange_strong(&l->sh->wake[i], &cur, val)) {
			slot = i;
			if (!cur)	/* a stale one stays counted */
				atomic_fetch_add(&l->sh->nwake, 1);
			break;
		}
	}
	if (slot < 0) {
		/* A thousand outstanding: the program is not accepting. The
		 * socket waits in the queue for the next accept(). */
		pl_real.close(fd);
		return;
	}
	if (l->wake_family == AF_INET)
		in->sin_port = htons(l->port);
	else
		in6->sin6_port = htons(l->port);
	w = malloc(sizeof(*w));
	if (!w)
		goto fail;
	*w = (struct pl_wake){ .fd = fd, .l = l, .val = val, .slot = slot, .pidx = -1,
			       .deadline = pl_now_ms() + PL_WAKE_TIMEOUT_MS, .next = pl_wakes };
	if (!pl_real.connect(fd, (struct sockaddr *)&ss, len)) {
		if (!pl_wake_hold(w)) {
			pl_reset_close(fd);	/* the slot stays for the acceptor */
			free(w);
			return;
		}
	} else if (errno != EINPROGRESS) {
		goto fail;
	}
	l->refs++;
	pl_wakes = w;
	return;
fail:
	pl_log_conn("listener %s: wake-up connection failed (%s); a finished handshake waits for "
		    "the next accept() or wake-up", l->name, strerror(errno));
	free(w);
	if (slot >= 0)
		pl_wake_release(l, slot, val);
	if (fd >= 0)
		pl_real.close(fd);
}

/* This process's wake-ups for l still outstanding. */
static bool pl_wake_pending(const struct pl_listener *l)
{
	const struct pl_wake *w;

	for (w = pl_wakes; w; w = w->next)
		if (w->l == l)
			return true;
	return false;
}

/* The safety net: sockets waiting and no accept() taking any since the
 * last look. Lock held. */
static void pl_recheck(struct pl_listener *l, int64_t now)
{
	unsigned int taken;

	if (!l->check_at || now < l->check_at)
		return;
	taken = atomic_load(&l->sh->taken);
	if (atomic_load(&l->sh->qlen) <= 0) {
		l->check_at = 0;
		return;
	}
	if (taken == l->seen_taken && !pl_wake_pending(l)) {
		pl_log_conn("listener %s: %d finished connection(s) waiting and no accept() took one "
			    "for %d ms: waking the listener again", l->name, atomic_load(&l->sh->qlen),
			    PL_RECHECK_MS);
		pl_wake(l);
	}
	l->seen_taken = taken;
	l->check_at = now + PL_RECHECK_MS;
}

/*
 * A wake-up is polled for POLLOUT while it connects, then for the
 * acceptor's close (POLLIN/POLLRDHUP): an accept() that recognised it has
 * claimed its slot by then. Each remembers its index, since completions
 * handled between the poll and the events add wake-ups at the head.
 */
unsigned int pl_server_pollfds_locked(struct pollfd *p, unsigned int cap, int64_t *next)
{
	struct pl_wake *w;
	unsigned int n = 0, i;

	for (w = pl_wakes; w; w = w->next) {
		w->pidx = -1;
		if (w->deadline < *next)
			*next = w->deadline;
		if (n == cap)
			continue;
		w->pidx = (int)n;
		p[n++] = (struct pollfd){ .fd = w->fd,
					  .events = w->connected ? POLLIN | POLLRDHUP : POLLOUT };
	}
	for (i = 0; i < pl_nlmap; i++)
		if (pl_lmap[i].l->check_at && pl_lmap[i].l->check_at < *next)
			*next = pl_lmap[i].l->check_at;
	return n;
}

void pl_server_events_locked(const struct pollfd *p, unsigned int n)
{
	struct pl_wake **pp = &pl_wakes, *w;
	int64_t now = pl_now_ms();
	unsigned int i;
	socklen_t len;
	int err;

	/* Only this thread adds to or removes from the list. */
	while ((w = *pp)) {
		bool done = false;
		short ev = w->pidx >= 0 && (unsigned int)w->pidx < n &&
			   p[w->pidx].fd == w->fd ? p[w->pidx].revents : 0;

		if (ev && !w->connected) {
			err = 0;
			len = sizeof(err);
			(void)pl_real.getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len);
			if (err) {
				pl_wake_release(w->l, w->slot, w->val);
				done = true;
			} else if (!pl_wake_hold(w)) {
				done = true;	/* reset now; the slot stays for the acceptor */
			}
		} else if (ev || now >= w->deadline) {
			/* Closed by the acceptor (which claimed the slot),
			 * or never accepted: the slot is free either way. */
			pl_wake_release(w->l, w->slot, w->val);
			done = true;
		}
		if (!done) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		if (w->connected)
			pl_nheld--;
		pl_reset_close(w->fd);
		pl_unref_locked(w->l);
		free(w);
	}
	for (i = 0; i < pl_nlmap; i++)
		if (!pl_lmap[i].l->dead)
			pl_recheck(pl_lmap[i].l, now);
}

/* ---- completions ------------------------------------------------------------------- */

static void pl_peer_str(const struct pl_job *job, char *buf, size_t cap)
{
	pl_addr_str((const struct sockaddr *)&job->peer, job->peer_len, buf, cap);
}

void pl_server_done_locked(struct pl_job *job, int status, const struct ktlsh_proto_reply *rep)
{
	struct pl_listener *l = job->l;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct pl_qmsg m;
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cmsg;
	char peer[64];

	if (status) {
		pl_peer_str(job, peer, sizeof(peer));
		pl_log_conn("TLS handshake with %s on %s failed, connection closed: %s (%s)", peer,
			    l->name, rep && rep->reason[0] ? rep->reason : pl_status_str(status),
			    pl_status_str(status));
		goto out;
	}
	memset(&m, 0, sizeof(m));
	m.magic = PL_QMSG_MAGIC;
	m.nonblock = job->nonblock;
	m.peer_len = job->peer_len;
	memcpy(&m.peer, &job->peer, sizeof(m.peer));
	memset(&cbuf, 0, sizeof(cbuf));
	msg.msg_control = cbuf.buf;
	msg.msg_controllen = sizeof(cbuf.buf);
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &job->fd, sizeof(int));
	/* Counted first: a count never lags behind what the queue holds, so
	 * an accept() that sees 0 has nothing to miss but a wake-up to come. */
	atomic_fetch_add(&l->sh->qlen, 1);
	if (sendmsg(l->q[1], &msg, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(m)) {
		atomic_fetch_sub(&l->sh->qlen, 1);
		pl_peer_str(job, peer, sizeof(peer));
		pl_log_conn("listener %s: queue full (%s): TLS connection from %s closed", l->name,
			    strerror(errno), peer);
		goto out;
	}
	if (!l->check_at) {
		l->seen_taken = atomic_load(&l->sh->taken);
		l->check_at = pl_now_ms() + PL_RECHECK_MS;
	}
	if (pl_conf->verbose && rep) {
		pl_peer_str(job, peer, sizeof(peer));
		pl_log("TLS from %s on %s: %s %s%s%s, %llu us", peer, l->name,
		       rep->tls_version == 0x0304 ? "TLSv1.3" : "TLSv1.2", rep->cipher,
		       rep->alpn[0] ? ", ALPN " : "", rep->alpn, (unsigned long long)rep->handshake_us);
	}
	pl_wake(l);
out:
	pl_real.close(job->fd);
	pl_unref_locked(l);
	free(job);
}

/* ---- accept ------------------------------------------------------------------------- */

/* A finished socket from the queue, or -EAGAIN. force: look even when the
 * count says it is empty (a wake-up was consumed: its socket is there,
 * unless another accept() took it, even if a process died before it could
 * count it). */
static int pl_take(struct pl_listener *l, struct sockaddr *addr, socklen_t *alen, int flags, bool force)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} cbuf;
	struct pl_qmsg m;
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			      .msg_controllen = sizeof(cbuf.buf) };
	struct cmsghdr *cmsg;
	int fds[4], nfds = 0, fd, i;
	ssize_t n;
	size_t k;

	if (!l->sh || (!force && atomic_load(&l->sh->qlen) <= 0))
		return -EAGAIN;
	n = pl_real.recvmsg(l->q[0], &msg, MSG_DONTWAIT | ((flags & SOCK_CLOEXEC) ? MSG_CMSG_CLOEXEC : 0));
	if (n < 0)
		return errno == EMFILE || errno == ENFILE ? -errno : -EAGAIN;
	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		for (k = 0; CMSG_LEN((k + 1) * sizeof(int)) <= cmsg->cmsg_len && nfds < 4; k++)
			memcpy(&fds[nfds++], CMSG_DATA(cmsg) + k * sizeof(int), sizeof(int));
	}
	atomic_fetch_sub(&l->sh->qlen, 1);
	atomic_fetch_add(&l->sh->taken, 1);
	if (n != (ssize_t)sizeof(m) || m.magic != PL_QMSG_MAGIC || nfds != 1 ||
	    (msg.msg_flags & MSG_CTRUNC)) {
		for (i = 0; i < nfds; i++)
			pl_real.close(fds[i]);
		/* The descriptor did not fit (EMFILE): the kernel dropped it. */
		return (msg.msg_flags & MSG_CTRUNC) ? -EMFILE : -EAGAIN;
	}
	fd = fds[0];
	if (!!m.nonblock != !!(flags & SOCK_NONBLOCK))
		(void)pl_set_nonblock(fd, flags & SOCK_NONBLOCK);
	pl_fd_set(fd, PL_FD_KTLS);
	if (addr && alen) {
		socklen_t plen = m.peer_len <= sizeof(m.peer) ? m.peer_len : sizeof(m.peer);

		memcpy(addr, &m.peer, plen < *alen ? plen : *alen);
		*alen = plen;
	}
	return fd;
}

/* A raw connection: to ktlshd with it. */
static void pl_raw(struct pl_listener *l, int raw, const struct sockaddr_storage *ss, socklen_t sl,
		   int flags)
{
	const struct pl_rule *rule = l->rule;
	struct sockaddr_storage local;
	socklen_t ll = sizeof(local);
	struct pl_job *job;
	char peer[64], here[64];

	if (!rule) {
		if (!pl_real.getsockname(raw, (struct sockaddr *)&local, &ll))
			rule = pl_conf_match(pl_conf, PL_ROLE_SERVER, (struct sockaddr *)&local, ll);
		if (!rule) {
			pl_addr_str((const struct sockaddr *)ss, sl, peer, sizeof(peer));
			pl_addr_str((struct sockaddr *)&local, ll, here, sizeof(here));
			pl_log_conn("connection from %s to %s on listener %s: no server rule names %s; "
				    "closed", peer, here, l->name, here);
			pl_real.close(raw);
			return;
		}
	}
	job = calloc(1, sizeof(*job));
	if (!job) {
		pl_log_conn("listener %s: out of memory; connection closed", l->name);
		pl_real.close(raw);
		return;
	}
	job->kind = PL_JOB_ACCEPT;
	job->fd = raw;
	job->rule = rule;
	job->l = l;
	job->nonblock = !!(flags & SOCK_NONBLOCK);
	job->peer_len = sl <= sizeof(job->peer) ? sl : sizeof(job->peer);
	memcpy(&job->peer, ss, job->peer_len);
	pl_engine_lock();
	l->refs++;
	pl_engine_unlock();
	pl_engine_submit(job);
}

int pl_server_accept(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	struct sockaddr_storage ss;
	struct pl_listener *l;
	socklen_t sl;
	bool nonblock;
	int raw, ret, fl, err;

	pl_engine_lock();
	l = pl_find_locked(fd);
	if (l)
		l->refs++;
	pl_engine_unlock();
	fl = pl_real.fcntl(fd, F_GETFL);
	if (fl < 0) {
		ret = -errno;
		goto out;
	}
	nonblock = fl & O_NONBLOCK;
	for (;;) {
		if (l && !l->dead && !nonblock) {
			ret = pl_take(l, addr, alen, flags, false);
			if (ret >= 0 || ret != -EAGAIN)
				break;
			if (pl_engine_load() >= pl_conf->max_pending) {
				/* Full: wait for a handshake to finish instead of
				 * taking more connections off the backlog. */
				struct pollfd p = { .fd = l->q[0], .events = POLLIN };

				if (poll(&p, 1, 1000) < 0 && errno == EINTR) {
					ret = -EINTR;
					break;
				}
				continue;
			}
		}
		if (l && !l->dead && nonblock && pl_engine_load() >= pl_conf->max_pending) {
			ret = pl_take(l, addr, alen, flags, false);
			break;
		}
		sl = sizeof(ss);
		raw = pl_real.accept4(fd, (struct sockaddr *)&ss, &sl,
				      SOCK_CLOEXEC | (flags & SOCK_NONBLOCK));
		if (raw < 0) {
			err = errno;
			if (err == ECONNABORTED)
				continue;
			if ((err == EAGAIN || err == EWOULDBLOCK) && l && !l->dead) {
				ret = pl_take(l, addr, alen, flags, false);
				break;
			}
			ret = -err;
			break;
		}
		if (!l || l->dead) {
			pl_log_conn("listener fd %d is managed but could not be set up: connection closed", fd);
			pl_real.close(raw);
			continue;
		}
		if (pl_is_wake(l, (struct sockaddr *)&ss, sl)) {
			pl_real.close(raw);
			ret = pl_take(l, addr, alen, flags, true);
			if (ret >= 0 || ret != -EAGAIN)
				break;
			continue;
		}
		pl_raw(l, raw, &ss, sl, flags);
	}
out:
	if (l) {
		pl_engine_lock();
		pl_unref_locked(l);
		pl_engine_unlock();
	}
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	return ret;
}

/* ---- fork ------------------------------------------------------------------------------ */

/* The parent's thread makes its wake-ups: drop the child's copies. */
void pl_server_atfork_child(void)
{
	struct pl_wake *w, *next;

	for (w = pl_wakes; w; w = next) {
		next = w->next;
		pl_real.close(w->fd);
		w->l->refs--;
		free(w);
	}
	pl_wakes = NULL;
	pl_nheld = 0;
}
