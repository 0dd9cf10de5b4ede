// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Unit tests for the libktlsh client (libktlsh/client.c) against a fake
 * daemon: a thread that listens on an abstract SOCK_SEQPACKET socket,
 * decodes requests with the real codec and answers the way a test asks,
 * good or broken. No kTLS is needed: the fake never touches the sockets it
 * is handed, it only proves which socket arrived (st_ino) and from which
 * process (SO_PEERCRED).
 *
 * Every test counts /proc/self/fd before and after: the client must close
 * what it opens and every descriptor a broken daemon pushes at it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <CUnit/Basic.h>

#include <ktlsh/ktlsh.h>

#include "unit.h"

#define EXPECT(expr, want) do {							\
	int r_ = (expr);							\
	if (r_ != (want))							\
		fprintf(stderr, "\n%s:%d: %s = %d (%s), want %d\n",		\
			__FILE__, __LINE__, #expr, r_, strerror(r_ < 0 ? -r_ : r_), (int)(want)); \
	CU_ASSERT(r_ == (want));						\
} while (0)

/* ---- the fake daemon ---- */

enum fake_mode {
	FAKE_ECHO,		/* answer at once: tx_seq = st_ino of the fd, handshake_us = peer pid */
	FAKE_REVERSE,		/* hold two requests, answer the second first */
	FAKE_SILENT,		/* read requests, never answer */
	FAKE_STALL,		/* never read from a connection at all */
	FAKE_GARBAGE,		/* answer with bytes that are no message */
	FAKE_HUGE,		/* answer with a packet above KTLSH_PROTO_MAX_MSG */
	FAKE_CLOSE,		/* close the connection on a request */
	FAKE_FD,		/* a valid reply with a descriptor attached */
	FAKE_ERROR,		/* ERROR -EPROTO with the request's id */
	FAKE_ERROR0,		/* ERROR with id 0 */
	FAKE_WRONG_ID,		/* a reply with another id */
	FAKE_UNSOLICITED,	/* a reply right after accept */
};

#define FAKE_CONNS	32

struct fake_held {
	int conn;
	uint32_t id;
	uint64_t ino;
	pid_t pid;
};

struct fake {
	char path[64];
	enum fake_mode mode;
	int lfd, evfd;
	int pipe_w;			/* FAKE_FD: the descriptor to push */
	pthread_t thread;
	pthread_mutex_t lock;
	unsigned int accepted, requests, closed;
	int conns[FAKE_CONNS];
	pid_t pids[FAKE_CONNS];
	unsigned int n_conns;
	struct fake_held held[2];
	unsigned int n_held;
	uint8_t buf[KTLSH_PROTO_MAX_MSG + 8192];
	struct ktlsh_proto_request req;
	struct ktlsh_proto_reply rep;
	struct ktlsh_proto_status st;
};

static unsigned int fake_seq;

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned int fake_get(struct fake *f, unsigned int *counter)
{
	unsigned int v;

	pthread_mutex_lock(&f->lock);
	v = *counter;
	pthread_mutex_unlock(&f->lock);
	return v;
}

static void fake_bump(struct fake *f, unsigned int *counter)
{
	pthread_mutex_lock(&f->lock);
	(*counter)++;
	pthread_mutex_unlock(&f->lock);
}

/* Wait up to a second for a counter to reach want. */
static unsigned int fake_wait(struct fake *f, unsigned int *counter, unsigned int want)
{
	int64_t end = now_ms() + 1000;
	unsigned int v;

	while ((v = fake_get(f, counter)) < want && now_ms() < end)
		usleep(1000);
	return v;
}

static void fake_send(int conn, const void *buf, size_t len, int fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cmsg;

	if (fd >= 0) {
		memset(&cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = sizeof(cbuf.buf);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	}
	if (sendmsg(conn, &msg, MSG_NOSIGNAL) != (ssize_t)len)
		fprintf(stderr, "fake: sendmsg: %s\n", strerror(errno));
}

static void fake_send_reply(struct fake *f, int conn, int fd)
{
	struct ktlsh_buf b;

	ktlsh_buf_init(&b, f->buf, sizeof(f->buf));
	if (ktlsh_proto_encode_reply(&b, &f->rep)) {
		fprintf(stderr, "fake: cannot encode a reply\n");
		return;
	}
	fake_send(conn, b.data, b.len, fd);
}

/* The success reply, carrying what the test checks. */
static void fake_reply_ok(struct fake *f, const struct fake_held *h)
{
	ktlsh_proto_reply_init(&f->rep, KTLSH_PROTO_HANDSHAKE_REPLY, h->id);
	f->rep.status = 0;
	f->rep.tls_version = 0x0304;
	strcpy(f->rep.cipher, "TLS_AES_128_GCM_SHA256");
	f->rep.tx_seq = h->ino;
	f->rep.handshake_us = (uint64_t)h->pid;
}

static void fake_drop(struct fake *f, unsigned int i)
{
	close(f->conns[i]);
	f->conns[i] = f->conns[f->n_conns - 1];
	f->pids[i] = f->pids[f->n_conns - 1];
	f->n_conns--;
	fake_bump(f, &f->closed);
}

static void fake_accept(struct fake *f)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int conn;

	conn = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (conn < 0)
		return;
	if (f->n_conns == FAKE_CONNS || getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len)) {
		close(conn);
		return;
	}
	f->conns[f->n_conns] = conn;
	f->pids[f->n_conns] = cred.pid;
	f->n_conns++;
	fake_bump(f, &f->accepted);
	if (f->mode == FAKE_UNSOLICITED) {
		struct fake_held h = { .conn = conn, .id = 1 };

		fake_reply_ok(f, &h);
		fake_send_reply(f, conn, -1);
	}
}

static void fake_answer_status(struct fake *f, int conn, uint32_t id)
{
	struct ktlsh_buf b;

	ktlsh_proto_status_init(&f->st, id);
	f->st.status = 0;
	f->st.n_items = 2;
	strcpy(f->st.items[0].key, "version");
	strcpy(f->st.items[0].value, "0.1.0");
	strcpy(f->st.items[1].key, "handshakes.ok");
	strcpy(f->st.items[1].value, "42");
	ktlsh_buf_init(&b, f->buf, sizeof(f->buf));
	if (!ktlsh_proto_encode_status(&b, &f->st))
		fake_send(conn, b.data, b.len, -1);
}

/* Serve one readable connection; returns false when it was closed. */
static bool fake_serve(struct fake *f, unsigned int i)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} cbuf;
	struct iovec iov = { .iov_base = f->buf, .iov_len = KTLSH_PROTO_MAX_MSG };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf),
	};
	struct fake_held h = { .conn = f->conns[i], .pid = f->pids[i] };
	struct cmsghdr *cmsg;
	struct stat sb;
	int fd = -1;
	ssize_t n;

	n = recvmsg(h.conn, &msg, MSG_CMSG_CLOEXEC);
	if (n <= 0) {
		fake_drop(f, i);
		return false;
	}
	cmsg = CMSG_FIRSTHDR(&msg);
	if (cmsg && cmsg->cmsg_type == SCM_RIGHTS)
		memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
	if (fd >= 0 && !fstat(fd, &sb))
		h.ino = sb.st_ino;
	if (fd >= 0)
		close(fd);
	if (ktlsh_proto_decode_request(f->buf, (size_t)n, &f->req)) {
		fprintf(stderr, "fake: a request that does not decode\n");
		return true;
	}
	h.id = f->req.id;
	fake_bump(f, &f->requests);
	if (f->req.type == KTLSH_PROTO_STATUS_REQ) {
		fake_answer_status(f, h.conn, h.id);
		return true;
	}
	if (f->req.type == KTLSH_PROTO_RELOAD_REQ) {
		ktlsh_proto_reply_init(&f->rep, KTLSH_PROTO_RELOAD_REPLY, h.id);
		f->rep.status = -EINVAL;
		strcpy(f->rep.reason, "test.conf:3: bad");
		fake_send_reply(f, h.conn, -1);
		return true;
	}
	switch (f->mode) {
	case FAKE_ECHO:
	case FAKE_UNSOLICITED:
		fake_reply_ok(f, &h);
		/* echo the request's fields, to check what was encoded */
		snprintf(f->rep.peer_subject, sizeof(f->rep.peer_subject), "%s", f->req.server_name);
		if (f->req.n_alpn)
			strcpy(f->rep.alpn, f->req.alpn[f->req.n_alpn - 1]);
		f->rep.rx_seq = (uint64_t)f->req.timeout_ms << 8 | f->req.flags;
		f->rep.resumed = f->req.role == KTLSH_PROTO_ROLE_SERVER;
		fake_send_reply(f, h.conn, -1);
		break;
	case FAKE_REVERSE:
		f->held[f->n_held++] = h;
		if (f->n_held == 2) {
			fake_reply_ok(f, &f->held[1]);
			fake_send_reply(f, f->held[1].conn, -1);
			fake_reply_ok(f, &f->held[0]);
			fake_send_reply(f, f->held[0].conn, -1);
			f->n_held = 0;
		}
		break;
	case FAKE_SILENT:
	case FAKE_STALL:
		break;
	case FAKE_GARBAGE:
		memset(f->buf, 0xa5, 64);
		fake_send(h.conn, f->buf, 64, -1);
		break;
	case FAKE_HUGE:
		fake_reply_ok(f, &h);
		fake_send_reply(f, h.conn, -1);
		/* a valid header claiming the whole packet, which is too big */
		fake_send(h.conn, f->buf, KTLSH_PROTO_MAX_MSG + 4096, -1);
		break;
	case FAKE_CLOSE:
		fake_drop(f, i);
		return false;
	case FAKE_FD:
		fake_reply_ok(f, &h);
		fake_send_reply(f, h.conn, f->pipe_w);
		break;
	case FAKE_ERROR:
	case FAKE_ERROR0:
		ktlsh_proto_reply_init(&f->rep, KTLSH_PROTO_ERROR, f->mode == FAKE_ERROR ? h.id : 0);
		f->rep.status = -EPROTO;
		strcpy(f->rep.reason, "no such thing");
		fake_send_reply(f, h.conn, -1);
		break;
	case FAKE_WRONG_ID:
		h.id += 1000;
		fake_reply_ok(f, &h);
		fake_send_reply(f, h.conn, -1);
		break;
	}
	return true;
}

static void *fake_main(void *arg)
{
	struct pollfd pfd[FAKE_CONNS + 2];
	struct fake *f = arg;
	unsigned int i, n;

	for (;;) {
		pfd[0] = (struct pollfd){ .fd = f->evfd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = f->lfd, .events = POLLIN };
		n = f->mode == FAKE_STALL ? 0 : f->n_conns;
		for (i = 0; i < n; i++)
			pfd[2 + i] = (struct pollfd){ .fd = f->conns[i], .events = POLLIN };
		if (poll(pfd, 2 + n, -1) < 0)
			continue;
		if (pfd[0].revents)
			break;
		/* Serve from the end so that a dropped connection (the last one
		 * moves into its slot) is never skipped or served twice. */
		for (i = n; i-- > 0;)
			if (pfd[2 + i].revents)
				fake_serve(f, i);
		if (pfd[1].revents)
			fake_accept(f);
	}
	while (f->n_conns)
		fake_drop(f, 0);
	return NULL;
}

static struct fake *fake_start_at(enum fake_mode mode, const char *path)
{
	struct fake *f = calloc(1, sizeof(*f));
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	f->mode = mode;
	f->pipe_w = -1;
	pthread_mutex_init(&f->lock, NULL);
	if (path)
		snprintf(f->path, sizeof(f->path), "%s", path);
	else
		snprintf(f->path, sizeof(f->path), "@ktlsh-test-%d-%u", (int)getpid(), fake_seq++);
	memcpy(sun.sun_path + 1, f->path + 1, strlen(f->path) - 1);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(f->path));
	f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	CU_ASSERT_FATAL(f->lfd >= 0);
	CU_ASSERT_FATAL(bind(f->lfd, (struct sockaddr *)&sun, len) == 0);
	CU_ASSERT_FATAL(listen(f->lfd, 16) == 0);
	f->evfd = eventfd(0, EFD_CLOEXEC);
	CU_ASSERT_FATAL(f->evfd >= 0);
	CU_ASSERT_FATAL(pthread_create(&f->thread, NULL, fake_main, f) == 0);
	return f;
}

static struct fake *fake_start(enum fake_mode mode)
{
	return fake_start_at(mode, NULL);
}

static void fake_stop(struct fake *f)
{
	uint64_t one = 1;

	CU_ASSERT(write(f->evfd, &one, sizeof(one)) == sizeof(one));
	pthread_join(f->thread, NULL);
	close(f->lfd);
	close(f->evfd);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* ---- helpers ---- */

static uint64_t ino_of(int fd)
{
	struct stat sb;

	return fstat(fd, &sb) ? 0 : sb.st_ino;
}

static bool readable(int fd, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, ms) == 1;
}

/* Wait for and take one reply. */
static int complete_wait(struct ktlsh_client *c, struct ktlsh_proto_reply *rep)
{
	if (!readable(ktlsh_client_fd(c), 5000))
		return -ETIMEDOUT;
	return ktlsh_complete(c, rep);
}

static const struct ktlsh_request req_client = {
	.role = KTLSH_PROTO_ROLE_CLIENT,
	.server_name = "example.com",
};

static struct ktlsh_proto_reply g_rep, g_rep2;

/* ---- tests ---- */

static void test_roundtrip(void)
{
	static const char *const alpn[] = { "h2", "http/1.1" };
	struct ktlsh_request req = {
		.role = KTLSH_PROTO_ROLE_SERVER,
		.identity = "web",
		.server_name = "client.example",
		.alpn = alpn, .n_alpn = 2,
		.timeout_ms = 5000,
		.flags = KTLSH_F_TRUSTED_PEER,
	};
	int fds0 = count_fds(), sp[2];
	struct ktlsh_client *c;
	struct fake *f;
	uint32_t id = 0;

	f = fake_start(FAKE_ECHO);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	EXPECT(ktlsh_complete(c, &g_rep), -EAGAIN);
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), 0);
	CU_ASSERT(id != 0);
	EXPECT(complete_wait(c, &g_rep), 0);
	CU_ASSERT_EQUAL(g_rep.type, KTLSH_PROTO_HANDSHAKE_REPLY);
	CU_ASSERT_EQUAL(g_rep.id, id);
	CU_ASSERT_EQUAL(g_rep.status, 0);
	/* the daemon got a descriptor for the very same socket */
	CU_ASSERT_EQUAL(g_rep.tx_seq, ino_of(sp[0]));
	CU_ASSERT_EQUAL(g_rep.handshake_us, (uint64_t)getpid());
	CU_ASSERT_STRING_EQUAL(g_rep.peer_subject, "client.example");
	CU_ASSERT_STRING_EQUAL(g_rep.alpn, "http/1.1");
	CU_ASSERT_EQUAL(g_rep.rx_seq, (uint64_t)5000 << 8 | KTLSH_F_TRUSTED_PEER);
	CU_ASSERT(g_rep.resumed);
	CU_ASSERT_STRING_EQUAL(g_rep.cipher, "TLS_AES_128_GCM_SHA256");
	EXPECT(ktlsh_complete(c, &g_rep), -EAGAIN);
	/* ids are per client and distinct */
	{
		uint32_t id2 = 0;

		EXPECT(ktlsh_submit(c, sp[0], &req_client, &id2), 0);
		CU_ASSERT(id2 != id && id2 != 0);
		EXPECT(complete_wait(c, &g_rep), 0);
		CU_ASSERT_EQUAL(g_rep.id, id2);
		CU_ASSERT_FALSE(g_rep.resumed);
	}
	ktlsh_client_close(c);
	ktlsh_client_close(NULL);
	close(sp[0]);
	close(sp[1]);
	fake_stop(f);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_out_of_order(void)
{
	int fds0 = count_fds(), a[2], b[2];
	struct ktlsh_client *c;
	uint32_t ida, idb;
	struct fake *f;

	f = fake_start(FAKE_REVERSE);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) == 0);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	EXPECT(ktlsh_submit(c, a[0], &req_client, &ida), 0);
	EXPECT(ktlsh_submit(c, b[0], &req_client, &idb), 0);
	CU_ASSERT(ida != idb);
	EXPECT(complete_wait(c, &g_rep), 0);
	EXPECT(complete_wait(c, &g_rep2), 0);
	CU_ASSERT_EQUAL(g_rep.id, idb);
	CU_ASSERT_EQUAL(g_rep.tx_seq, ino_of(b[0]));
	CU_ASSERT_EQUAL(g_rep2.id, ida);
	CU_ASSERT_EQUAL(g_rep2.tx_seq, ino_of(a[0]));
	/* nothing else is in flight: a third reply would be unsolicited */
	EXPECT(ktlsh_complete(c, &g_rep), -EAGAIN);
	ktlsh_client_close(c);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	fake_stop(f);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

#define THREADS		4
#define PER_THREAD	200

struct worker {
	const char *path;
	int failures;
};

static void *worker_main(void *arg)
{
	struct ktlsh_proto_reply *rep = malloc(sizeof(*rep));
	struct worker *w = arg;
	int i, sp[2];

	if (!rep || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp)) {
		w->failures++;
		free(rep);
		return NULL;
	}
	for (i = 0; i < PER_THREAD; i++) {
		int ret = ktlsh_handshake_fd(w->path, sp[0], &req_client, rep);

		if (ret || rep->status || rep->tx_seq != ino_of(sp[0]) ||
		    rep->type != KTLSH_PROTO_HANDSHAKE_REPLY) {
			fprintf(stderr, "worker: %d %s\n", ret, strerror(-ret));
			w->failures++;
		}
	}
	/* rep may also be NULL */
	if (ktlsh_handshake_fd(w->path, sp[0], &req_client, NULL))
		w->failures++;
	close(sp[0]);
	close(sp[1]);
	free(rep);
	return NULL;
}

static void test_blocking_threads(void)
{
	struct worker w[THREADS];
	pthread_t t[THREADS];
	int fds0 = count_fds(), i;
	struct fake *f;

	f = fake_start(FAKE_ECHO);
	for (i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ .path = f->path };
		CU_ASSERT_FATAL(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		CU_ASSERT_EQUAL(w[i].failures, 0);
	}
	CU_ASSERT_EQUAL(fake_get(f, &f->requests), THREADS * (PER_THREAD + 1));
	/* the pool reused connections: at most one per concurrent caller */
	CU_ASSERT(fake_get(f, &f->accepted) <= THREADS);
	CU_ASSERT_EQUAL(fake_get(f, &f->closed), 0);
	ktlsh_pool_flush();
	CU_ASSERT(fake_wait(f, &f->closed, fake_get(f, &f->accepted)) == fake_get(f, &f->accepted));
	fake_stop(f);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

/* In the child: the exit status says what went wrong. */
static int fork_child(const char *path, struct ktlsh_client *parent_client, int fd)
{
	struct ktlsh_proto_reply *rep = malloc(sizeof(*rep));
	uint32_t id;
	int ret;

	if (!rep)
		return 10;
	/* the parent's client object is off limits here */
	if (ktlsh_submit(parent_client, fd, &req_client, &id) != -ESTALE)
		return 11;
	if (ktlsh_complete(parent_client, rep) != -ESTALE)
		return 12;
	ktlsh_client_close(parent_client);
	/* the blocking helper opens its own connection: SO_PEERCRED says
	 * the child, not the parent whose pooled connection it inherited */
	ret = ktlsh_handshake_fd(path, fd, &req_client, rep);
	if (ret)
		return 13;
	if (rep->handshake_us != (uint64_t)getpid())
		return 14;
	if (ktlsh_handshake_fd(path, fd, &req_client, rep) || rep->handshake_us != (uint64_t)getpid())
		return 15;
	ktlsh_pool_flush();
	free(rep);
	return 0;
}

static void test_fork(void)
{
	int fds0 = count_fds(), sp[2], status = -1;
	struct ktlsh_client *c;
	struct fake *f;
	pid_t pid;

	f = fake_start(FAKE_ECHO);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	/* the parent leaves a connection in the pool and holds a client */
	EXPECT(ktlsh_handshake_fd(f->path, sp[0], &req_client, &g_rep), 0);
	CU_ASSERT_EQUAL(g_rep.handshake_us, (uint64_t)getpid());
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_EQUAL(fake_wait(f, &f->accepted, 2), 2);

	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		int rc = fork_child(f->path, c, sp[0]);

		/* the fake's thread stayed in the parent; its memory did not
		 * (leak checkers follow the child) */
		free(f);
		_exit(rc);
	}
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT(WIFEXITED(status));
	if (WEXITSTATUS(status))
		fprintf(stderr, "\nchild failed with %d\n", WEXITSTATUS(status));
	CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
	/* the child connected once, then reused its own connection */
	CU_ASSERT_EQUAL(fake_get(f, &f->accepted), 3);

	/* the parent's pooled connection and client still work */
	EXPECT(ktlsh_handshake_fd(f->path, sp[0], &req_client, &g_rep), 0);
	CU_ASSERT_EQUAL(g_rep.handshake_us, (uint64_t)getpid());
	CU_ASSERT_EQUAL(fake_get(f, &f->accepted), 3);
	{
		uint32_t id;

		EXPECT(ktlsh_submit(c, sp[0], &req_client, &id), 0);
		EXPECT(complete_wait(c, &g_rep), 0);
		CU_ASSERT_EQUAL(g_rep.id, id);
	}
	ktlsh_client_close(c);
	ktlsh_pool_flush();
	close(sp[0]);
	close(sp[1]);
	fake_stop(f);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_timeout(void)
{
	struct ktlsh_request req = req_client;
	int fds0 = count_fds(), sp[2];
	int64_t t0, dt;
	struct fake *f;

	f = fake_start(FAKE_SILENT);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	req.timeout_ms = 100;
	t0 = now_ms();
	EXPECT(ktlsh_handshake_fd(f->path, sp[0], &req, &g_rep), -ETIMEDOUT);
	dt = now_ms() - t0;
	/* the request's timeout plus the margin, not the 30 s default */
	CU_ASSERT(dt >= 100 + KTLSH_WAIT_MARGIN_MS - 10 && dt < 100 + KTLSH_WAIT_MARGIN_MS + 1000);
	CU_ASSERT_EQUAL(g_rep.type, 0);
	CU_ASSERT_EQUAL(g_rep.status, -ETIMEDOUT);
	/* the connection was dropped, not pooled */
	CU_ASSERT_EQUAL(fake_wait(f, &f->closed, 1), 1);
	ktlsh_pool_flush();
	close(sp[0]);
	close(sp[1]);
	fake_stop(f);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_absent(void)
{
	struct ktlsh_proto_status *st = malloc(sizeof(*st));
	char path[64], longpath[200];
	int fds0 = count_fds(), sp[2];
	struct ktlsh_client *c = (void *)1;

	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	snprintf(path, sizeof(path), "@ktlsh-test-absent-%d", (int)getpid());
	EXPECT(ktlsh_client_open(&c, path), -ECONNREFUSED);
	CU_ASSERT_PTR_NULL(c);
	EXPECT(ktlsh_handshake_fd(path, sp[0], &req_client, &g_rep), -ECONNREFUSED);
	CU_ASSERT_EQUAL(g_rep.type, 0);
	CU_ASSERT_EQUAL(g_rep.status, -ECONNREFUSED);
	EXPECT(ktlsh_status(path, st), -ECONNREFUSED);
	CU_ASSERT_EQUAL(st->type, 0);
	EXPECT(ktlsh_reload(path, &g_rep), -ECONNREFUSED);

	EXPECT(ktlsh_client_open(&c, "/nonexistent-ktlsh-dir/ktlshd.sock"), -ENOENT);
	EXPECT(ktlsh_handshake_fd("/nonexistent-ktlsh-dir/ktlshd.sock", sp[0], &req_client, NULL),
	       -ENOENT);

	/* NULL path: $KTLSH_SOCKET, else the default */
	CU_ASSERT_EQUAL(setenv(KTLSH_SOCKET_ENV, path, 1), 0);
	CU_ASSERT_STRING_EQUAL(ktlsh_client_path(NULL), path);
	EXPECT(ktlsh_client_open(&c, NULL), -ECONNREFUSED);
	CU_ASSERT_EQUAL(setenv(KTLSH_SOCKET_ENV, "", 1), 0);
	CU_ASSERT_STRING_EQUAL(ktlsh_client_path(NULL), KTLSH_SOCKET_DEFAULT);
	unsetenv(KTLSH_SOCKET_ENV);
	CU_ASSERT_STRING_EQUAL(ktlsh_client_path(NULL), KTLSH_SOCKET_DEFAULT);
	CU_ASSERT_STRING_EQUAL(ktlsh_client_path("@x"), "@x");

	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = 0;
	EXPECT(ktlsh_client_open(&c, longpath), -ENAMETOOLONG);
	longpath[0] = '@';
	EXPECT(ktlsh_client_open(&c, longpath), -ENAMETOOLONG);
	EXPECT(ktlsh_client_open(&c, ""), -EINVAL);
	close(sp[0]);
	close(sp[1]);
	free(st);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

/* A broken reply poisons the client: the error is sticky, the fd readable. */
static void check_poisoned(enum fake_mode mode, int want)
{
	int fds0 = count_fds(), sp[2];
	struct ktlsh_client *c;
	struct fake *f;
	uint32_t id;

	f = fake_start(mode);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	if (mode != FAKE_UNSOLICITED) {
		EXPECT(ktlsh_submit(c, sp[0], &req_client, &id), 0);
	}
	EXPECT(complete_wait(c, &g_rep), want);
	CU_ASSERT_EQUAL(g_rep.type, 0);
	CU_ASSERT_EQUAL(g_rep.status, want);
	EXPECT(ktlsh_complete(c, &g_rep), want);
	EXPECT(ktlsh_submit(c, sp[0], &req_client, &id), want);
	CU_ASSERT(readable(ktlsh_client_fd(c), 0));
	ktlsh_client_close(c);
	/* the daemon saw the connection go */
	CU_ASSERT_EQUAL(fake_wait(f, &f->closed, 1), 1);

	/* the blocking helper reports the same */
	if (mode != FAKE_UNSOLICITED) {
		EXPECT(ktlsh_handshake_fd(f->path, sp[0], &req_client, &g_rep), want);
		CU_ASSERT_EQUAL(g_rep.status, want);
	}
	ktlsh_pool_flush();
	close(sp[0]);
	close(sp[1]);
	fake_stop(f);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_garbage(void)
{
	check_poisoned(FAKE_GARBAGE, -EBADMSG);
}

static void test_huge(void)
{
	int fds0 = count_fds(), sp[2];
	struct ktlsh_client *c;
	struct fake *f;
	uint32_t id;

	f = fake_start(FAKE_HUGE);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	EXPECT(ktlsh_submit(c, sp[0], &req_client, &id), 0);
	EXPECT(complete_wait(c, &g_rep), 0);
	CU_ASSERT_EQUAL(g_rep.id, id);
	EXPECT(complete_wait(c, &g_rep), -EMSGSIZE);
	EXPECT(ktlsh_complete(c, &g_rep), -EMSGSIZE);
	ktlsh_client_close(c);
	close(sp[0]);
	close(sp[1]);
	fake_stop(f);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_daemon_closes(void)
{
	int fds0 = count_fds(), sp[2], ret;
	struct ktlsh_client *c;
	struct fake *f;
	uint32_t id;

	check_poisoned(FAKE_CLOSE, -ECONNRESET);

	/* the daemon goes away while the client is idle */
	f = fake_start(FAKE_ECHO);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_EQUAL(fake_wait(f, &f->accepted, 1), 1);
	fake_stop(f);
	CU_ASSERT(readable(ktlsh_client_fd(c), 1000));
	ret = ktlsh_submit(c, sp[0], &req_client, &id);
	CU_ASSERT(ret == -EPIPE || ret == -ECONNRESET);
	EXPECT(ktlsh_complete(c, &g_rep), ret);
	ktlsh_client_close(c);
	close(sp[0]);
	close(sp[1]);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_unexpected_fd(void)
{
	int fds0 = count_fds(), sp[2], pfd[2];
	struct ktlsh_client *c;
	struct fake *f;
	uint32_t id;
	char ch;

	CU_ASSERT_FATAL(pipe2(pfd, O_CLOEXEC) == 0);
	f = fake_start(FAKE_FD);
	f->pipe_w = pfd[1];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	EXPECT(ktlsh_submit(c, sp[0], &req_client, &id), 0);
	EXPECT(complete_wait(c, &g_rep), -EBADMSG);
	CU_ASSERT_EQUAL(g_rep.status, -EBADMSG);
	ktlsh_client_close(c);
	fake_stop(f);
	/* every write end is closed, the client's copy included: EOF */
	close(pfd[1]);
	CU_ASSERT(readable(pfd[0], 1000));
	CU_ASSERT_EQUAL(read(pfd[0], &ch, 1), 0);
	close(pfd[0]);
	close(sp[0]);
	close(sp[1]);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_error_replies(void)
{
	int fds0 = count_fds(), sp[2];
	struct ktlsh_client *c;
	struct fake *f;
	uint32_t id;

	/* ERROR with the request's id fails that request only */
	f = fake_start(FAKE_ERROR);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	EXPECT(ktlsh_submit(c, sp[0], &req_client, &id), 0);
	EXPECT(complete_wait(c, &g_rep), 0);
	CU_ASSERT_EQUAL(g_rep.type, KTLSH_PROTO_ERROR);
	CU_ASSERT_EQUAL(g_rep.id, id);
	CU_ASSERT_EQUAL(g_rep.status, -EPROTO);
	CU_ASSERT_STRING_EQUAL(g_rep.reason, "no such thing");
	EXPECT(ktlsh_submit(c, sp[0], &req_client, &id), 0);
	EXPECT(complete_wait(c, &g_rep), 0);
	ktlsh_client_close(c);
	EXPECT(ktlsh_handshake_fd(f->path, sp[0], &req_client, &g_rep), -EPROTO);
	CU_ASSERT_EQUAL(g_rep.type, KTLSH_PROTO_ERROR);
	ktlsh_pool_flush();
	fake_stop(f);
	close(sp[0]);
	close(sp[1]);
	CU_ASSERT_EQUAL(count_fds(), fds0);

	/* id 0 answers nothing the client can name: the channel fails */
	check_poisoned(FAKE_ERROR0, -EPROTO);
	/* a reply to a request that was never made */
	check_poisoned(FAKE_UNSOLICITED, -EBADMSG);

	/* the blocking helper, with one request in flight, refuses another id */
	fds0 = count_fds();
	f = fake_start(FAKE_WRONG_ID);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_handshake_fd(f->path, sp[0], &req_client, &g_rep), -EBADMSG);
	CU_ASSERT_EQUAL(g_rep.type, 0);
	CU_ASSERT_EQUAL(fake_wait(f, &f->closed, 1), 1);
	ktlsh_pool_flush();
	fake_stop(f);
	close(sp[0]);
	close(sp[1]);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_status_reload(void)
{
	struct ktlsh_proto_status *st = malloc(sizeof(*st));
	int fds0 = count_fds();
	struct fake *f;

	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	f = fake_start(FAKE_ECHO);
	EXPECT(ktlsh_status(f->path, st), 0);
	CU_ASSERT_EQUAL(st->type, KTLSH_PROTO_STATUS_REPLY);
	CU_ASSERT_EQUAL_FATAL(st->n_items, 2);
	CU_ASSERT_STRING_EQUAL(st->items[0].key, "version");
	CU_ASSERT_STRING_EQUAL(st->items[1].key, "handshakes.ok");
	CU_ASSERT_STRING_EQUAL(st->items[1].value, "42");
	EXPECT(ktlsh_reload(f->path, &g_rep), -EINVAL);
	CU_ASSERT_EQUAL(g_rep.type, KTLSH_PROTO_RELOAD_REPLY);
	CU_ASSERT_STRING_EQUAL(g_rep.reason, "test.conf:3: bad");
	/* one connection each, closed afterwards */
	CU_ASSERT_EQUAL(fake_wait(f, &f->closed, 2), 2);
	CU_ASSERT_EQUAL(fake_get(f, &f->accepted), 2);
	fake_stop(f);
	free(st);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_daemon_restart(void)
{
	int fds0 = count_fds(), sp[2];
	char path[64];
	struct fake *f;

	f = fake_start(FAKE_ECHO);
	snprintf(path, sizeof(path), "%s", f->path);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_handshake_fd(path, sp[0], &req_client, &g_rep), 0);
	fake_stop(f);
	/* the pooled connection is dead: a new daemon is reached anyway */
	f = fake_start_at(FAKE_ECHO, path);
	EXPECT(ktlsh_handshake_fd(path, sp[0], &req_client, &g_rep), 0);
	CU_ASSERT_EQUAL(g_rep.tx_seq, ino_of(sp[0]));
	fake_stop(f);
	/* and with none, the pool does not hide it: fail closed */
	EXPECT(ktlsh_handshake_fd(path, sp[0], &req_client, &g_rep), -ECONNREFUSED);
	ktlsh_pool_flush();
	close(sp[0]);
	close(sp[1]);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_bad_requests(void)
{
	static char big[KTLSH_PROTO_NAME_LEN + 1], ident[KTLSH_PROTO_IDENTITY_LEN + 1];
	static const char *alpn[KTLSH_PROTO_ALPN_MAX + 1];
	struct ktlsh_request req;
	int fds0 = count_fds(), sp[2];
	struct ktlsh_client *c;
	struct fake *f;
	uint32_t id;
	unsigned int i;

	f = fake_start(FAKE_ECHO);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);

	EXPECT(ktlsh_submit(c, -1, &req_client, &id), -EBADF);
	EXPECT(ktlsh_submit(c, sp[0], NULL, &id), -EINVAL);
	req = req_client;
	req.role = 0;
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), -EINVAL);
	req = req_client;
	req.flags = 0x100;
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), -EINVAL);
	req = req_client;
	req.identity = "two words";
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), -EINVAL);
	memset(big, 'a', sizeof(big) - 1);
	req = req_client;
	req.server_name = big;
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), -ENAMETOOLONG);
	memset(ident, 'i', sizeof(ident) - 1);
	req = req_client;
	req.identity = ident;
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), -ENAMETOOLONG);
	for (i = 0; i < KTLSH_PROTO_ALPN_MAX + 1; i++)
		alpn[i] = "h2";
	req = req_client;
	req.alpn = alpn;
	req.n_alpn = KTLSH_PROTO_ALPN_MAX + 1;
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), -EINVAL);
	req.n_alpn = 1;
	req.alpn = NULL;
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), -EINVAL);
	alpn[0] = "";
	req.alpn = alpn;
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), -EINVAL);

	/* every field at its limit: the largest request still fits and decodes */
	big[KTLSH_PROTO_NAME_LEN - 1] = 0;
	ident[KTLSH_PROTO_IDENTITY_LEN - 1] = 0;
	for (i = 0; i < KTLSH_PROTO_ALPN_MAX; i++)
		alpn[i] = big;
	req = (struct ktlsh_request){
		.role = KTLSH_PROTO_ROLE_CLIENT, .identity = ident, .server_name = big,
		.alpn = alpn, .n_alpn = KTLSH_PROTO_ALPN_MAX, .timeout_ms = 0xffffffffu,
		.flags = KTLSH_PROTO_F_ALL,
	};
	EXPECT(ktlsh_submit(c, sp[0], &req, &id), 0);
	EXPECT(complete_wait(c, &g_rep), 0);
	CU_ASSERT_EQUAL(g_rep.id, id);
	CU_ASSERT_EQUAL(g_rep.status, 0);
	CU_ASSERT_STRING_EQUAL(g_rep.alpn, big);
	CU_ASSERT_STRING_EQUAL(g_rep.peer_subject, big);
	ktlsh_client_close(c);
	close(sp[0]);
	close(sp[1]);
	fake_stop(f);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

static void test_backpressure(void)
{
	int fds0 = count_fds(), sp[2], ret = 0;
	struct ktlsh_client *c;
	unsigned int n = 0;
	struct fake *f;
	uint32_t id;

	f = fake_start(FAKE_STALL);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	EXPECT(ktlsh_client_open(&c, f->path), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	/* a daemon that does not read: submit says -EAGAIN, never blocks */
	while (n < 100000 && !(ret = ktlsh_submit(c, sp[0], &req_client, &id)))
		n++;
	EXPECT(ret, -EAGAIN);
	CU_ASSERT(n > 0);
	CU_ASSERT_FALSE(readable(ktlsh_client_fd(c), 0));
	ktlsh_client_close(c);
	fake_stop(f);
	close(sp[0]);
	close(sp[1]);
	CU_ASSERT_EQUAL(count_fds(), fds0);
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "submit/complete round trip, same socket arrives", test_roundtrip },
		{ "replies out of order matched by id", test_out_of_order },
		{ "blocking helper from several threads, pooled", test_blocking_threads },
		{ "fork: the child never uses its parent's connections", test_fork },
		{ "no reply in time: -ETIMEDOUT, connection dropped", test_timeout },
		{ "no daemon: -ECONNREFUSED / -ENOENT", test_absent },
		{ "garbage reply: -EBADMSG, sticky", test_garbage },
		{ "oversized reply: -EMSGSIZE", test_huge },
		{ "daemon closes: -ECONNRESET / -EPIPE", test_daemon_closes },
		{ "descriptor in a reply: closed, -EBADMSG", test_unexpected_fd },
		{ "ERROR replies, unsolicited and misaddressed replies", test_error_replies },
		{ "status and reload", test_status_reload },
		{ "daemon restart behind the pool", test_daemon_restart },
		{ "bad requests refused before sending; limits fit", test_bad_requests },
		{ "full socket: -EAGAIN", test_backpressure },
		{ NULL, NULL },
	};

	/* a broken test must not kill the run with SIGPIPE */
	signal(SIGPIPE, SIG_IGN);
	return t_run("client", cases);
}
