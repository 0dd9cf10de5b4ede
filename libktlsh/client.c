// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The client side of the ktlshd control protocol (include/ktlsh/ktlsh.h,
 * Documentation/protocol.md): connections to the daemon, HANDSHAKE_REQ with
 * the socket passed by SCM_RIGHTS, replies matched by id, and the pool of
 * idle connections behind the blocking helpers.
 *
 * Nothing that arrives on the control socket is trusted: a reply is
 * decoded by the codec from a buffer that holds the whole packet, file
 * descriptors in a reply are closed, and any reply that is not what a
 * request asked for poisons the connection (the caller then fails every
 * socket in flight on it, since it can no longer know their state).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <ktlsh/ktlsh.h>

/* One attribute carrying n value bytes, padding included. */
#define CLIENT_ATTR(n)		(4 + KTLSH_PROTO_ALIGN(n))

/*
 * The largest HANDSHAKE_REQ this version can encode (~4.5 KiB), from the
 * protocol's limits: big enough that the encoder's -EMSGSIZE cannot happen,
 * small enough to live in the client object instead of a 64 KiB buffer.
 */
#define CLIENT_REQ_MAX							\
	(KTLSH_PROTO_HDR_LEN						\
	 + CLIENT_ATTR(4)					/* ROLE */	\
	 + CLIENT_ATTR(KTLSH_PROTO_IDENTITY_LEN - 1)			\
	 + CLIENT_ATTR(KTLSH_PROTO_NAME_LEN - 1)		/* SERVER_NAME */ \
	 + KTLSH_PROTO_ALPN_MAX * CLIENT_ATTR(KTLSH_PROTO_NAME_LEN - 1)	\
	 + CLIENT_ATTR(4)					/* TIMEOUT_MS */ \
	 + CLIENT_ATTR(4))					/* FLAGS */

_Static_assert(CLIENT_REQ_MAX <= KTLSH_PROTO_MAX_MSG, "a request must fit a message");

/* How long connect() may wait for room in the daemon's listen queue. */
#define CLIENT_CONNECT_TIMEOUT_S	10

/* A reply never carries descriptors; room to receive (and close) a few
 * that a broken daemon sends anyway. */
#define CLIENT_CMSG_FDS		8

struct ktlsh_client {
	int fd;
	int err;			/* sticky channel error; 0 while usable */
	unsigned long fork_gen;		/* client_fork_gen when opened */
	pid_t pid;			/* the process that opened it (pool check) */
	uint32_t next_id;
	unsigned int inflight;		/* requests sent and not yet answered */
	struct ktlsh_client *pool_next;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	uint8_t *rx;			/* KTLSH_PROTO_MAX_MSG: any packet fits whole */
	struct ktlsh_proto_request req;	/* encoder scratch: keeps ~4 KiB off callers' stacks */
	uint8_t tx[CLIENT_REQ_MAX];
};

/*
 * Fork generation: bumped in the child by a pthread_atfork() handler, so
 * that a client opened before fork() is recognised without a getpid()
 * system call on every submit (that costs up to 170 us under UML).
 */
static unsigned long client_fork_gen;
static pthread_once_t client_once = PTHREAD_ONCE_INIT;

/* The pool of idle connections for ktlsh_handshake_fd(). */
static pthread_mutex_t client_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ktlsh_client *client_pool;
static unsigned int client_pool_len;

/*
 * Holding the pool lock across fork() keeps the child from inheriting it
 * locked by a thread that does not exist there. The child then owns copies
 * of its parent's idle connections; they are dropped, never used, the next
 * time the child touches the pool (client_pool_reap()).
 */
static void client_fork_prepare(void)
{
	pthread_mutex_lock(&client_pool_lock);
}

static void client_fork_parent(void)
{
	pthread_mutex_unlock(&client_pool_lock);
}

static void client_fork_child(void)
{
	client_fork_gen++;
	pthread_mutex_unlock(&client_pool_lock);
}

static void client_init_once(void)
{
	/* Without the handlers the pid checks still keep a child off its
	 * parent's connections; only the lock's state would be at risk. */
	(void)pthread_atfork(client_fork_prepare, client_fork_parent, client_fork_child);
}

const char *ktlsh_client_path(const char *path)
{
	const char *env;

	if (path)
		return path;
	/* A set-user-ID program must not let its caller point it at a fake
	 * daemon that claims success and leaves the socket in plaintext. */
	env = secure_getenv(KTLSH_SOCKET_ENV);
	if (env && *env)
		return env;
	return KTLSH_SOCKET_DEFAULT;
}

static int client_addr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
	size_t n = strlen(path);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (!n)
		return -EINVAL;
	if (path[0] == '@') {
		/* Abstract: the name is the bytes after the NUL, exactly. */
		if (n > sizeof(sun->sun_path))
			return -ENAMETOOLONG;
		memcpy(sun->sun_path + 1, path + 1, n - 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return 0;
	}
	if (n >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	memcpy(sun->sun_path, path, n);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

int ktlsh_client_open(struct ktlsh_client **cp, const char *path)
{
	struct timeval tv = { .tv_sec = CLIENT_CONNECT_TIMEOUT_S };
	struct ktlsh_client *c = NULL;
	struct sockaddr_un sun;
	socklen_t len;
	int ret;

	*cp = NULL;
	pthread_once(&client_once, client_init_once);
	path = ktlsh_client_path(path);
	ret = client_addr(path, &sun, &len);
	if (ret)
		goto out;
	c = calloc(1, sizeof(*c));
	if (!c) {
		ret = -ENOMEM;
		goto out;
	}
	c->fd = -1;
	c->rx = malloc(KTLSH_PROTO_MAX_MSG);
	if (!c->rx) {
		ret = -ENOMEM;
		goto out;
	}
	/* strlen(path) < sizeof(c->path) was proven by client_addr() */
	strcpy(c->path, path);
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		ret = -errno;
		goto out;
	}
	/*
	 * connect() on AF_UNIX waits while the daemon's listen queue is full,
	 * for as long as SO_SNDTIMEO says (forever by default). Bound it;
	 * every later send uses MSG_DONTWAIT, so this changes nothing else.
	 */
	if (setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
		ret = -errno;
		goto out;
	}
	/* An interrupted AF_UNIX connect leaves the socket unconnected. */
	do
		ret = connect(c->fd, (struct sockaddr *)&sun, len) ? -errno : 0;
	while (ret == -EINTR);
	if (ret)
		goto out;
	c->pid = getpid();
	c->fork_gen = client_fork_gen;
	c->next_id = 1;
	*cp = c;
	c = NULL;
out:
	ktlsh_client_close(c);
	return ret;
}

void ktlsh_client_close(struct ktlsh_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c->rx);
	free(c);
}

int ktlsh_client_fd(const struct ktlsh_client *c)
{
	return c->fd;
}

/*
 * The channel can no longer be trusted. Shutting it down makes the daemon
 * cancel what is in flight and keeps the fd readable (EOF), so an event
 * loop waiting on it calls ktlsh_complete() and learns the error.
 */
static int client_fail(struct ktlsh_client *c, int err)
{
	if (!c->err) {
		c->err = err;
		shutdown(c->fd, SHUT_RDWR);
	}
	return c->err;
}

static int client_usable(const struct ktlsh_client *c)
{
	if (c->fork_gen != client_fork_gen)
		return -ESTALE;
	return c->err;
}

/* Copy an optional string into a fixed field; absent and "" both mean
 * "not sent". */
static int client_copy_str(char *dst, size_t cap, const char *src)
{
	size_t n;

	if (!src)
		return 0;
	n = strlen(src);
	if (n >= cap)
		return -ENAMETOOLONG;
	memcpy(dst, src, n + 1);
	return 0;
}

static int client_build(struct ktlsh_client *c, const struct ktlsh_request *req, uint32_t id,
			struct ktlsh_buf *out)
{
	struct ktlsh_proto_request *pr = &c->req;
	unsigned int i;
	int ret;

	ktlsh_proto_request_init(pr, KTLSH_PROTO_HANDSHAKE_REQ, id);
	ret = -EINVAL;
	if (req->role != KTLSH_PROTO_ROLE_CLIENT && req->role != KTLSH_PROTO_ROLE_SERVER)
		goto out;
	if (req->flags & ~KTLSH_PROTO_F_ALL)
		goto out;
	if (req->n_alpn > KTLSH_PROTO_ALPN_MAX || (req->n_alpn && !req->alpn))
		goto out;
	pr->role = req->role;
	pr->flags = req->flags;
	pr->timeout_ms = req->timeout_ms;
	ret = client_copy_str(pr->identity, sizeof(pr->identity), req->identity);
	if (ret)
		goto out;
	ret = client_copy_str(pr->server_name, sizeof(pr->server_name), req->server_name);
	if (ret)
		goto out;
	for (i = 0; i < req->n_alpn; i++) {
		/* Unlike the optional fields, a listed protocol must be a name. */
		if (!req->alpn[i] || !req->alpn[i][0]) {
			ret = -EINVAL;
			goto out;
		}
		ret = client_copy_str(pr->alpn[i], sizeof(pr->alpn[i]), req->alpn[i]);
		if (ret)
			goto out;
	}
	pr->n_alpn = req->n_alpn;
	ktlsh_buf_init(out, c->tx, sizeof(c->tx));
	/* -EINVAL for a name the daemon would refuse (a space, a control
	 * character): a sender never produces what a receiver rejects. */
	ret = ktlsh_proto_encode_request(out, pr);
out:
	return ret;
}

/* Send one packet, with fd attached when fd >= 0. */
static int client_send(struct ktlsh_client *c, const void *buf, size_t len, int fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cmsg;
	ssize_t n;
	int ret;

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
	/* MSG_NOSIGNAL: a daemon that went away is an error code, not a
	 * SIGPIPE that kills the application. */
	do
		n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		ret = -errno;
		/* These say the connection is gone; the rest (-EAGAIN, -EBADF
		 * for the caller's fd, -ENOBUFS) leave it usable. */
		if (ret == -EPIPE || ret == -ECONNRESET || ret == -ENOTCONN)
			ret = client_fail(c, ret == -ENOTCONN ? -EPIPE : ret);
		goto out;
	}
	/* SOCK_SEQPACKET sends a packet whole or not at all. */
	ret = (size_t)n == len ? 0 : client_fail(c, -EPIPE);
out:
	return ret;
}

/* Close every descriptor a packet brought; returns how many there were. */
static unsigned int client_close_fds(struct msghdr *msg)
{
	struct cmsghdr *cmsg;
	unsigned int count = 0;
	size_t i, n;
	int fd;

	for (cmsg = CMSG_FIRSTHDR(msg); cmsg; cmsg = CMSG_NXTHDR(msg, cmsg)) {
		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
			close(fd);
			count++;
		}
	}
	return count;
}

/*
 * Receive one packet into c->rx without blocking. Returns its length,
 * -EAGAIN, or a channel error (which the caller makes sticky).
 */
static int client_recv(struct ktlsh_client *c)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * CLIENT_CMSG_FDS)];
	} cbuf;
	struct iovec iov = { .iov_base = c->rx, .iov_len = KTLSH_PROTO_MAX_MSG };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf.buf,
		.msg_controllen = sizeof(cbuf.buf),
	};
	ssize_t n;
	int ret;

	/* MSG_CMSG_CLOEXEC: a descriptor we are about to close must not
	 * leak into a program another thread execs meanwhile. */
	do
		n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		ret = -errno;
		if (ret == -EAGAIN || ret == -EWOULDBLOCK)
			ret = -EAGAIN;
		else if (ret != -ECONNRESET)
			ret = -EPIPE;
		goto out;
	}
	/* Replies never carry descriptors (MSG_CTRUNC: ones that did not
	 * fit, which the kernel has already discarded). */
	if (client_close_fds(&msg) || (msg.msg_flags & MSG_CTRUNC)) {
		ret = -EBADMSG;
		goto out;
	}
	if (msg.msg_flags & MSG_TRUNC) {
		ret = -EMSGSIZE;
		goto out;
	}
	/* End of file: the daemon closed the connection. */
	if (n == 0) {
		ret = -ECONNRESET;
		goto out;
	}
	ret = (int)n;
out:
	return ret;
}

int ktlsh_submit(struct ktlsh_client *c, int fd, const struct ktlsh_request *req, uint32_t *id)
{
	struct ktlsh_buf out;
	uint32_t rid;
	int ret;

	ret = client_usable(c);
	if (ret)
		goto out;
	if (fd < 0) {
		ret = -EBADF;
		goto out;
	}
	if (!req) {
		ret = -EINVAL;
		goto out;
	}
	rid = c->next_id;
	ret = client_build(c, req, rid, &out);
	if (ret)
		goto out;
	ret = client_send(c, out.data, out.len, fd);
	if (ret)
		goto out;
	/* Unique among requests in flight: 2^32 - 1 of them would have to
	 * be outstanding for a wrap to collide. Id 0 is never used, so that
	 * an ERROR with id 0 can never be taken for an answer. */
	if (!++c->next_id)
		c->next_id = 1;
	c->inflight++;
	if (id)
		*id = rid;
out:
	return ret;
}

/* Fill rep as a reply that never came: type 0, status err. */
static void client_reply_fail(struct ktlsh_proto_reply *rep, int err)
{
	ktlsh_proto_reply_init(rep, 0, 0);
	rep->status = err;
}

int ktlsh_complete(struct ktlsh_client *c, struct ktlsh_proto_reply *rep)
{
	int n, ret;

	ret = client_usable(c);
	if (ret)
		goto out;
	n = client_recv(c);
	if (n < 0) {
		ret = n == -EAGAIN ? n : client_fail(c, n);
		goto out;
	}
	ret = ktlsh_proto_decode_reply(c->rx, (size_t)n, rep);
	if (ret) {
		ret = client_fail(c, ret);
		goto out;
	}
	/* This connection only carries HANDSHAKE_REQs. An ERROR with id 0
	 * answers a request the daemon could not even attribute, and a reply
	 * with no request in flight answers nothing: either way some socket
	 * is in an unknown state. */
	if (rep->type != KTLSH_PROTO_HANDSHAKE_REPLY && rep->type != KTLSH_PROTO_ERROR)
		ret = client_fail(c, -EBADMSG);
	else if (rep->type == KTLSH_PROTO_ERROR && rep->id == 0)
		ret = client_fail(c, -EPROTO);
	else if (!c->inflight)
		ret = client_fail(c, -EBADMSG);
	else
		c->inflight--;
out:
	/* -EAGAIN leaves rep alone: event loops call until it. */
	if (ret && ret != -EAGAIN)
		client_reply_fail(rep, ret);
	return ret;
}

/* ---- blocking helpers ---- */

static int64_t client_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on c until deadline (monotonic ms): 0 or -ETIMEDOUT. */
static int client_poll(struct ktlsh_client *c, short events, int64_t deadline)
{
	struct pollfd pfd = { .fd = c->fd, .events = events };
	int64_t left;
	int n;

	for (;;) {
		left = deadline - client_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
	}
}

/*
 * An idle connection must have nothing to read: anything there (EOF from a
 * daemon that restarted, a stray packet) means it is not safe to reuse.
 */
static bool client_idle_ok(const struct ktlsh_client *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 0;
}

/* Drop connections a parent process left in the pool; lock held. Closing
 * the child's copy of the descriptor does not touch the parent's. */
static void client_pool_reap(pid_t self)
{
	struct ktlsh_client **pp = &client_pool, *c;

	while ((c = *pp)) {
		if (c->pid == self && c->fork_gen == client_fork_gen) {
			pp = &c->pool_next;
			continue;
		}
		*pp = c->pool_next;
		client_pool_len--;
		ktlsh_client_close(c);
	}
}

/* An idle connection to path from the pool, or NULL. */
static struct ktlsh_client *client_pool_get(const char *path)
{
	struct ktlsh_client **pp, *c;
	pid_t self = getpid();

	pthread_once(&client_once, client_init_once);
	for (;;) {
		pthread_mutex_lock(&client_pool_lock);
		client_pool_reap(self);
		for (pp = &client_pool; (c = *pp); pp = &c->pool_next)
			if (!strcmp(c->path, path))
				break;
		if (c) {
			*pp = c->pool_next;
			c->pool_next = NULL;
			client_pool_len--;
		}
		pthread_mutex_unlock(&client_pool_lock);
		if (!c || client_idle_ok(c))
			return c;
		ktlsh_client_close(c);
	}
}

/* Give c back: only a clean connection of this process, nothing in flight. */
static void client_pool_put(struct ktlsh_client *c)
{
	if (!c)
		return;
	if (!c->err && !c->inflight && c->fork_gen == client_fork_gen && c->pid == getpid()) {
		pthread_mutex_lock(&client_pool_lock);
		if (client_pool_len < KTLSH_POOL_MAX) {
			c->pool_next = client_pool;
			client_pool = c;
			client_pool_len++;
			c = NULL;
		}
		pthread_mutex_unlock(&client_pool_lock);
	}
	ktlsh_client_close(c);
}

void ktlsh_pool_flush(void)
{
	struct ktlsh_client *c, *next;

	pthread_mutex_lock(&client_pool_lock);
	c = client_pool;
	client_pool = NULL;
	client_pool_len = 0;
	pthread_mutex_unlock(&client_pool_lock);
	for (; c; c = next) {
		next = c->pool_next;
		ktlsh_client_close(c);
	}
}

static int64_t client_deadline(unsigned int timeout_ms)
{
	int64_t wait = timeout_ms ? (int64_t)timeout_ms + KTLSH_WAIT_MARGIN_MS : KTLSH_WAIT_DEFAULT_MS;

	return client_now_ms() + wait;
}

/*
 * Submit on a pooled connection. A pooled connection can die while idle
 * (the daemon restarted); nothing was sent when submit fails, so one retry
 * on a fresh connection is safe and makes a restart invisible.
 */
static int client_pool_submit(const char *path, int fd, const struct ktlsh_request *req,
			      int64_t deadline, struct ktlsh_client **cp, uint32_t *id)
{
	struct ktlsh_client *c = NULL;
	bool pooled;
	int ret;

	for (;;) {
		c = client_pool_get(path);
		pooled = c != NULL;
		if (!c) {
			ret = ktlsh_client_open(&c, path);
			if (ret)
				goto out;
		}
		ret = ktlsh_submit(c, fd, req, id);
		while (ret == -EAGAIN) {
			ret = client_poll(c, POLLOUT, deadline);
			if (!ret)
				ret = ktlsh_submit(c, fd, req, id);
		}
		if (!pooled || (ret != -EPIPE && ret != -ECONNRESET))
			break;
		ktlsh_client_close(c);
		c = NULL;
	}
out:
	if (ret) {
		client_pool_put(c);
		c = NULL;
	}
	*cp = c;
	return ret;
}

int ktlsh_handshake_fd(const char *path, int fd, const struct ktlsh_request *req,
		       struct ktlsh_proto_reply *rep)
{
	struct ktlsh_proto_reply *tmp = NULL;
	struct ktlsh_client *c = NULL;
	bool replied = false;
	int64_t deadline;
	uint32_t id = 0;
	int ret;

	if (!rep) {
		rep = tmp = malloc(sizeof(*rep));
		if (!rep) {
			ret = -ENOMEM;
			goto out;
		}
	}
	if (!req) {
		ret = -EINVAL;
		goto out;
	}
	path = ktlsh_client_path(path);
	deadline = client_deadline(req->timeout_ms);
	ret = client_pool_submit(path, fd, req, deadline, &c, &id);
	if (ret)
		goto out;
	while ((ret = ktlsh_complete(c, rep)) == -EAGAIN) {
		ret = client_poll(c, POLLIN, deadline);
		if (ret) {
			/* A late reply would be read by the connection's next
			 * user: this connection is done. */
			ret = client_fail(c, ret);
			goto out;
		}
	}
	if (ret)
		goto out;
	/* One request in flight: any other id is a reply to nothing. */
	if (rep->id != id) {
		ret = client_fail(c, -EBADMSG);
		goto out;
	}
	replied = true;
	ret = rep->status;
out:
	if (rep && !replied)
		client_reply_fail(rep, ret);
	client_pool_put(c);
	free(tmp);
	return ret;
}

/*
 * One request without a descriptor on a connection of its own; the reply
 * is left in c->rx. Returns its length or a channel error.
 */
static int client_transact(const char *path, enum ktlsh_proto_type type, struct ktlsh_client **cp)
{
	struct ktlsh_client *c = NULL;
	struct ktlsh_buf out;
	int64_t deadline = client_deadline(0);
	int ret;

	ret = ktlsh_client_open(&c, path);
	if (ret)
		goto out;
	ktlsh_proto_request_init(&c->req, type, c->next_id);
	ktlsh_buf_init(&out, c->tx, sizeof(c->tx));
	ret = ktlsh_proto_encode_request(&out, &c->req);
	if (ret)
		goto out;
	while ((ret = client_send(c, out.data, out.len, -1)) == -EAGAIN) {
		ret = client_poll(c, POLLOUT, deadline);
		if (ret)
			goto out;
	}
	if (ret)
		goto out;
	while ((ret = client_recv(c)) == -EAGAIN) {
		ret = client_poll(c, POLLIN, deadline);
		if (ret)
			goto out;
	}
out:
	*cp = c;
	return ret;
}

/* The reply to the one request on c: its id, or 0 in an ERROR (the daemon
 * could not read the header, and there is nothing else it can answer). */
static bool client_id_ok(const struct ktlsh_client *c, enum ktlsh_proto_type type, uint32_t id)
{
	return id == c->req.id || (type == KTLSH_PROTO_ERROR && id == 0);
}

int ktlsh_status(const char *path, struct ktlsh_proto_status *st)
{
	struct ktlsh_client *c = NULL;
	int n, ret;

	n = client_transact(path, KTLSH_PROTO_STATUS_REQ, &c);
	if (n < 0) {
		ret = n;
		goto out;
	}
	ret = ktlsh_proto_decode_status(c->rx, (size_t)n, st);
	if (!ret && !client_id_ok(c, st->type, st->id))
		ret = -EBADMSG;
out:
	if (ret) {
		ktlsh_proto_status_init(st, 0);
		st->type = 0;
		st->status = ret;
	} else {
		ret = st->status;
	}
	ktlsh_client_close(c);
	return ret;
}

int ktlsh_reload(const char *path, struct ktlsh_proto_reply *rep)
{
	struct ktlsh_client *c = NULL;
	int n, ret;

	n = client_transact(path, KTLSH_PROTO_RELOAD_REQ, &c);
	if (n < 0) {
		ret = n;
		goto out;
	}
	ret = ktlsh_proto_decode_reply(c->rx, (size_t)n, rep);
	if (!ret && ((rep->type != KTLSH_PROTO_RELOAD_REPLY && rep->type != KTLSH_PROTO_ERROR) ||
		     !client_id_ok(c, rep->type, rep->id)))
		ret = -EBADMSG;
out:
	if (ret)
		client_reply_fail(rep, ret);
	else
		ret = rep->status;
	ktlsh_client_close(c);
	return ret;
}
