// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The shim's connection to ktlshd, per process.
 *
 * Raw sockets are submitted with ktlsh_submit() on one control connection
 * (the thread that took the socket submits it at once, so an accept()
 * costs one sendmsg); a completion thread waits for the replies and hands
 * each finished socket on: to the listener's queue (server side) or back
 * under the program's descriptor (nonblocking connect). The thread also
 * watches what the server and client parts give it: wake-up connections
 * being made, connects in progress.
 *
 * Failing closed: when ktlshd cannot be reached, or the control connection
 * breaks with handshakes in flight, every socket concerned is closed (the
 * peer sees the TCP connection end; no byte of plaintext was ever sent by
 * the program on it). The connection is opened again, by the thread, for
 * the next socket: when the daemon is back, TLS works again.
 *
 * One lock protects everything here and in the server and client parts.
 * It is never held across a blocking call other than the brief
 * non-blocking socket calls, and never by the program's threads for
 * longer than a submit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "preload.h"

#define PL_BUCKETS	1024
#define PL_POLL_MAX	1024

static pthread_mutex_t pl_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
	bool started;
	pthread_t thread;
	int evfd;
	struct ktlsh_client *client;
	bool opening;			/* the thread is (re)connecting, unlocked */
	bool down;			/* ktlshd unreachable: said so once */
	unsigned int inflight;		/* jobs submitted and not answered */
	struct pl_job *backlog, **backlog_tail;
	unsigned int n_backlog;
	int64_t next_scan;
} E = { .evfd = -1 };

void pl_engine_lock(void)
{
	pthread_mutex_lock(&pl_lock);
}

void pl_engine_unlock(void)
{
	pthread_mutex_unlock(&pl_lock);
}

const char *pl_status_str(int status)
{
	return strerror(status < 0 ? -status : status);
}

int pl_client_errno(int status)
{
	switch (status) {
	case -EKEYREJECTED:	/* the server's certificate was refused */
	case -EPROTO:		/* TLS protocol failure, alert */
	case -ETIMEDOUT:	/* the handshake took too long */
	case -ECONNRESET:	/* the server went away mid-handshake */
	case -EACCES:		/* ktlshd refused this user the profile */
		return -status;
	default:		/* anything else, ktlshd unreachable included */
		return ECONNABORTED;
	}
}

/* ---- the job table -------------------------------------------------------------- */

/* Jobs in flight, chained by reply id (job->next links the backlog). */
struct pl_jnode {
	struct pl_job *job;
	struct pl_jnode *next;
};

static struct pl_jnode *pl_jt[PL_BUCKETS];

static int pl_jt_add(struct pl_job *job)
{
	struct pl_jnode *n = malloc(sizeof(*n));

	if (!n)
		return -ENOMEM;
	n->job = job;
	n->next = pl_jt[job->id % PL_BUCKETS];
	pl_jt[job->id % PL_BUCKETS] = n;
	E.inflight++;
	return 0;
}

static struct pl_job *pl_jt_take(uint32_t id)
{
	struct pl_jnode **pp = &pl_jt[id % PL_BUCKETS], *n;
	struct pl_job *job;

	for (; (n = *pp); pp = &n->next) {
		if (n->job->id != id)
			continue;
		*pp = n->next;
		job = n->job;
		free(n);
		E.inflight--;
		return job;
	}
	return NULL;
}

static void pl_job_done(struct pl_job *job, int status, const struct ktlsh_proto_reply *rep)
{
	if (job->kind == PL_JOB_ACCEPT)
		pl_server_done_locked(job, status, rep);
	else
		pl_client_done_locked(job, status, rep);
}

/* The control connection failed: every socket in flight on it is in an
 * unknown state and is closed (failed), and the connection with it. */
static void pl_channel_fail(int err)
{
	struct pl_jnode *n, *next;
	unsigned int i, count = E.inflight;

	for (i = 0; i < PL_BUCKETS; i++) {
		for (n = pl_jt[i]; n; n = next) {
			next = n->next;
			pl_job_done(n->job, err, NULL);
			free(n);
		}
		pl_jt[i] = NULL;
	}
	E.inflight = 0;
	ktlsh_client_close(E.client);
	E.client = NULL;
	pl_log("connection to ktlshd at %s lost (%s): %u handshake(s) in flight failed closed; "
	       "reconnecting for the next connection", pl_sock_path, pl_status_str(err), count);
}

static void pl_backlog_push(struct pl_job *job)
{
	job->next = NULL;
	if (!E.backlog)
		E.backlog_tail = &E.backlog;
	*E.backlog_tail = job;
	E.backlog_tail = &job->next;
	E.n_backlog++;
}

static struct pl_job *pl_backlog_pop(void)
{
	struct pl_job *job = E.backlog;

	if (job) {
		E.backlog = job->next;
		E.n_backlog--;
	}
	return job;
}

void pl_engine_kick(void)
{
	uint64_t one = 1;

	if (E.evfd >= 0)
		(void)!write(E.evfd, &one, sizeof(one));
}

static void pl_request(const struct pl_job *job, struct ktlsh_request *req)
{
	const struct pl_rule *r = job->rule;

	memset(req, 0, sizeof(*req));
	req->role = r->role == PL_ROLE_SERVER ? KTLSH_PROTO_ROLE_SERVER : KTLSH_PROTO_ROLE_CLIENT;
	req->identity = r->identity[0] ? r->identity : NULL;
	req->server_name = r->name[0] ? r->name : NULL;
	req->alpn = r->alpn_ptr;
	req->n_alpn = r->n_alpn;
	req->timeout_ms = r->timeout_ms;
	req->flags = r->flags;
}

/* Try to submit job on the open connection. Returns 0 (in flight), -EAGAIN
 * (no room in the socket buffer: keep it), or a failure already handled. */
static int pl_submit_now(struct pl_job *job)
{
	struct ktlsh_request req;
	int ret;

	pl_request(job, &req);
	ret = ktlsh_submit(E.client, job->fd, &req, &job->id);
	if (ret == -EAGAIN)
		return ret;
	if (ret == -EPIPE || ret == -ECONNRESET || ret == -ESTALE || ret == -ENOTCONN) {
		pl_channel_fail(ret);
		return -EAGAIN;	/* retried on a new connection */
	}
	if (!ret)
		ret = pl_jt_add(job);
	if (ret)
		pl_job_done(job, ret, NULL);
	return 0;
}

static void pl_thread_sigmask(sigset_t *old)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, old);
}

static void *pl_engine_main(void *arg);

int pl_engine_start_locked(void)
{
	sigset_t old;
	int ret;

	if (E.started)
		return 0;
	E.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (E.evfd < 0)
		return -errno;
	/* The program's signals must never run on this thread. */
	pl_thread_sigmask(&old);
	ret = -pthread_create(&E.thread, NULL, pl_engine_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		pl_real.close(E.evfd);
		E.evfd = -1;
		return ret;
	}
	pthread_detach(E.thread);
	E.started = true;
	return 0;
}

/* Lock held. The caller's thread submits at once when it can: an accept()
 * costs one sendmsg(), and no thread switch. */
void pl_engine_submit_locked(struct pl_job *job)
{
	job->deadline = pl_now_ms() +
			(job->rule->timeout_ms ? job->rule->timeout_ms : KTLSH_WAIT_DEFAULT_MS) +
			KTLSH_WAIT_MARGIN_MS;
	if (E.inflight + E.n_backlog >= pl_conf->max_pending) {
		pl_job_done(job, -EBUSY, NULL);
		return;
	}
	if (E.client && !E.backlog && pl_submit_now(job) == 0)
		return;
	/* No connection yet, or no room: the thread takes it from here. */
	pl_backlog_push(job);
	pl_engine_kick();
}

void pl_engine_submit(struct pl_job *job)
{
	int ret;

	pthread_mutex_lock(&pl_lock);
	ret = pl_engine_start_locked();
	if (ret)
		pl_job_done(job, ret, NULL);
	else
		pl_engine_submit_locked(job);
	pthread_mutex_unlock(&pl_lock);
}

unsigned int pl_engine_load(void)
{
	return __atomic_load_n(&E.inflight, __ATOMIC_RELAXED) +
	       __atomic_load_n(&E.n_backlog, __ATOMIC_RELAXED);
}

/* ---- close_notify that has to wait for room ------------------------------------ */

struct pl_closer {
	int fd;
	bool shut;
	int64_t deadline;
	struct pl_closer *next;
};

/* Prepended by any thread; the thread only removes, so the polled entries
 * are a suffix of the list it walks. */
static struct pl_closer *pl_closers;

void pl_engine_linger(int fd, bool shut)
{
	struct pl_closer *c = malloc(sizeof(*c));

	pthread_mutex_lock(&pl_lock);
	if (!c || pl_engine_start_locked()) {
		pthread_mutex_unlock(&pl_lock);
		free(c);
		if (shut)
			pl_real.shutdown(fd, SHUT_WR);
		pl_real.close(fd);
		return;
	}
	*c = (struct pl_closer){ .fd = fd, .shut = shut, .deadline = pl_now_ms() + PL_LINGER_MS,
				 .next = pl_closers };
	pl_closers = c;
	pl_engine_kick();
	pthread_mutex_unlock(&pl_lock);
}

static unsigned int pl_closer_pollfds(struct pollfd *p, unsigned int cap, int64_t *next,
				      struct pl_closer **first)
{
	struct pl_closer *c;
	unsigned int n = 0;

	*first = pl_closers;
	for (c = pl_closers; c && n < cap; c = c->next) {
		p[n++] = (struct pollfd){ .fd = c->fd, .events = POLLOUT };
		if (c->deadline < *next)
			*next = c->deadline;
	}
	return n;
}

static void pl_closer_events(const struct pollfd *p, unsigned int n, struct pl_closer *first)
{
	struct pl_closer **pp = &pl_closers, *c;
	int64_t now = pl_now_ms();
	unsigned int i = 0;
	bool started = false;
	ssize_t r;

	while ((c = *pp)) {
		bool done = false;

		if (c == first)
			started = true;
		if (started && i < n) {
			if (p[i].revents) {
				r = ktlsh_record_send(c->fd, KTLSH_CT_ALERT, "\x01\x00", 2, MSG_DONTWAIT);
				done = r != -EAGAIN && r != -EWOULDBLOCK;
			}
			i++;
		}
		if (!done && now >= c->deadline)
			done = true;
		if (!done) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		if (c->shut)
			pl_real.shutdown(c->fd, SHUT_WR);
		pl_real.close(c->fd);
		free(c);
	}
}

/*
 * At exit the completion thread dies with the process: send what close_notify
 * is still waiting, for at most PL_EXIT_LINGER_MS altogether, so that a
 * program that writes, closes and exits still ends its streams properly.
 */
#define PL_EXIT_LINGER_MS 2000

__attribute__((destructor)) static void pl_engine_exit(void)
{
	struct pollfd p[64];
	struct pl_closer *c, *first;
	int64_t end = pl_now_ms() + PL_EXIT_LINGER_MS, next;
	unsigned int n;

	if (!pl_closers)
		return;
	pthread_mutex_lock(&pl_lock);
	while (pl_closers && pl_now_ms() < end) {
		next = end;
		n = pl_closer_pollfds(p, 64, &next, &first);
		(void)poll(p, n, (int)(end - pl_now_ms() > 0 ? end - pl_now_ms() : 0));
		pl_closer_events(p, n, first);
	}
	while ((c = pl_closers)) {
		pl_closers = c->next;
		pl_real.close(c->fd);
		free(c);
	}
	pthread_mutex_unlock(&pl_lock);
}

/* ---- the completion thread ----------------------------------------------------- */

/* (Re)open the control connection for the backlog; lock held on entry and
 * exit, dropped while connecting (connect() may wait for the daemon). */
static void pl_reopen(void)
{
	struct ktlsh_client *c = NULL;
	struct pl_job *job;
	int ret;

	E.opening = true;
	pthread_mutex_unlock(&pl_lock);
	ret = ktlsh_client_open(&c, pl_sock_path);
	pthread_mutex_lock(&pl_lock);
	E.opening = false;
	if (ret) {
		if (!E.down)
			pl_log("ktlshd unreachable at %s (%s): TLS connections fail closed until it is back",
			       pl_sock_path, pl_status_str(ret));
		E.down = true;
		while ((job = pl_backlog_pop()))
			pl_job_done(job, ret, NULL);
		return;
	}
	if (E.down)
		pl_log("ktlshd at %s is reachable again", pl_sock_path);
	E.down = false;
	E.client = c;
}

static void pl_flush_backlog(void)
{
	struct pl_job *job;

	while (E.client && (job = E.backlog)) {
		E.backlog = job->next;
		E.n_backlog--;
		if (pl_submit_now(job) == -EAGAIN) {
			/* Put it back in front, keep the order. */
			job->next = E.backlog;
			if (!E.backlog)
				E.backlog_tail = &job->next;
			E.backlog = job;
			E.n_backlog++;
			if (E.client)
				break;	/* socket buffer full: wait for POLLOUT */
		}
	}
}

static void pl_completions(void)
{
	struct ktlsh_proto_reply *rep = malloc(sizeof(*rep));
	struct pl_job *job;
	int ret;

	if (!rep)
		return;
	while (E.client) {
		ret = ktlsh_complete(E.client, rep);
		if (ret == -EAGAIN)
			break;
		if (ret) {
			pl_channel_fail(ret);
			break;
		}
		job = pl_jt_take(rep->id);
		if (!job)
			continue;	/* we gave up on it already */
		pl_job_done(job, rep->status, rep);
	}
	explicit_bzero(rep, sizeof(*rep));
	free(rep);
}

static void pl_expire(int64_t now)
{
	struct pl_jnode **pp, *n;
	unsigned int i;

	if (now < E.next_scan)
		return;
	E.next_scan = now + 1000;
	for (i = 0; i < PL_BUCKETS; i++) {
		for (pp = &pl_jt[i]; (n = *pp);) {
			if (n->job->deadline > now) {
				pp = &n->next;
				continue;
			}
			*pp = n->next;
			E.inflight--;
			pl_job_done(n->job, -ETIMEDOUT, NULL);
			free(n);
		}
	}
}

static void *pl_engine_main(void *arg)
{
	struct pollfd *p = calloc(PL_POLL_MAX + 2, sizeof(*p));
	struct pl_closer *first;
	unsigned int ns, nc, nl;
	int64_t now, next;
	uint64_t junk;
	int timeout;

	(void)arg;
	if (!p)
		abort();
	pthread_setname_np(pthread_self(), "ktlsh-preload");
	pthread_mutex_lock(&pl_lock);
	for (;;) {
		if (!E.client && E.backlog && !E.opening)
			pl_reopen();
		pl_flush_backlog();
		p[0] = (struct pollfd){ .fd = E.evfd, .events = POLLIN };
		p[1] = (struct pollfd){ .fd = E.client ? ktlsh_client_fd(E.client) : -1,
					.events = (short)(POLLIN | (E.backlog ? POLLOUT : 0)) };
		next = INT64_MAX;
		ns = pl_server_pollfds_locked(p + 2, PL_POLL_MAX / 2, &next);
		nc = pl_client_pollfds_locked(p + 2 + ns, PL_POLL_MAX * 3 / 4 - ns, &next);
		nl = pl_closer_pollfds(p + 2 + ns + nc, PL_POLL_MAX - ns - nc, &next, &first);
		now = pl_now_ms();
		if (E.inflight && E.next_scan < next)
			next = E.next_scan;
		timeout = next == INT64_MAX ? -1 : next <= now ? 0 : next - now > 60000 ? 60000 : (int)(next - now);
		pthread_mutex_unlock(&pl_lock);
		(void)poll(p, 2 + ns + nc + nl, timeout);
		pthread_mutex_lock(&pl_lock);
		if (p[0].revents)
			while (read(E.evfd, &junk, sizeof(junk)) > 0)
				;
		if (p[1].revents && E.client && p[1].fd == ktlsh_client_fd(E.client))
			pl_completions();
		pl_server_events_locked(p + 2, ns);
		pl_client_events_locked(p + 2 + ns, nc);
		pl_closer_events(p + 2 + ns + nc, nl, first);
		now = pl_now_ms();
		if (E.inflight)
			pl_expire(now);
	}
	return NULL;
}

/* ---- fork ------------------------------------------------------------------------ */

void pl_engine_atfork_prepare(void)
{
	pthread_mutex_lock(&pl_lock);
}

void pl_engine_atfork_parent(void)
{
	pthread_mutex_unlock(&pl_lock);
}

/*
 * The child has no completion thread and must not use its parent's
 * control connection or hold copies of its sockets in flight: a socket the
 * parent closes on failure must not stay open here. The child starts over
 * when it first needs the daemon.
 */
void pl_engine_atfork_child(void)
{
	struct pl_jnode *n, *next;
	struct pl_job *job;
	unsigned int i;

	/* This thread took the lock in the prepare handler. */
	pthread_mutex_unlock(&pl_lock);
	for (i = 0; i < PL_BUCKETS; i++) {
		for (n = pl_jt[i]; n; n = next) {
			next = n->next;
			if (n->job->kind == PL_JOB_ACCEPT)
				pl_real.close(n->job->fd);
			free(n->job);
			free(n);
		}
		pl_jt[i] = NULL;
	}
	while ((job = pl_backlog_pop())) {
		if (job->kind == PL_JOB_ACCEPT)
			pl_real.close(job->fd);
		free(job);
	}
	while (pl_closers) {
		struct pl_closer *c = pl_closers;

		pl_closers = c->next;
		pl_real.close(c->fd);
		free(c);
	}
	E.inflight = 0;
	ktlsh_client_close(E.client);
	E.client = NULL;
	if (E.evfd >= 0)
		pl_real.close(E.evfd);
	E.evfd = -1;
	E.started = false;
	E.opening = false;
}
