// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The control socket: an AF_UNIX SOCK_SEQPACKET listener (one message per
 * packet, so framing is the kernel's job). The main thread accepts,
 * receives, decodes, checks the passed socket and the caller's rights, and
 * hands handshakes to the workers; replies go back from whichever thread
 * finishes. Everything that arrives is bounded and checked before use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "ktlshd.h"
#include "ctl.h"

#define KTLSHD_CTL_MAX_FDS	8	/* more than one is refused; room to close extras */
#define KTLSHD_CTL_BATCH		64	/* messages per connection per loop pass */

struct ktlshd_conn *ktlshd_conn_get(struct ktlshd_conn *c)
{
	if (c)
		atomic_fetch_add(&c->refs, 1);
	return c;
}

void ktlshd_conn_put(struct ktlshd_conn *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	close(c->fd);
	free(c);
}

static int ktlshd_conn_send(struct ktlshd_conn *c, const void *buf, size_t len)
{
	if (send(c->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
		return 0;
	if (errno != EAGAIN)
		return -errno;
	/* A client that lets its socket fill up stops reading replies. Waiting
	 * for it would stall a worker or the main loop for everyone, and
	 * buffering would grow without bound: hang up instead. The client sees
	 * its connection end and fails every handshake it still had pending. */
	log_warn("control: pid %d does not read its replies; closing its connection",
		 (int)c->pid);
	(void)shutdown(c->fd, SHUT_RDWR);
	return -EAGAIN;
}

int ktlshd_conn_send_reply(struct ktlshd_conn *c, const struct ktlsh_proto_reply *rep)
{
	uint8_t mem[8192];
	struct ktlsh_buf b;
	int ret;

	ktlsh_buf_init(&b, mem, sizeof(mem));
	ret = ktlsh_proto_encode_reply(&b, rep);
	if (ret) {
		/* Never leave a caller waiting: send the bare outcome instead. */
		struct ktlsh_proto_reply bare;

		log_err("cannot encode a reply for request %u: %s", rep->id, strerror(-ret));
		ktlsh_proto_reply_init(&bare, rep->type, rep->id);
		bare.status = rep->status;
		if (bare.type == KTLSH_PROTO_ERROR && !bare.status)
			bare.status = -EPROTO;
		ktlsh_buf_init(&b, mem, sizeof(mem));
		ret = ktlsh_proto_encode_reply(&b, &bare);
		if (ret)
			return ret;
	}
	ret = ktlshd_conn_send(c, b.data, b.len);
	if (ret)
		log_debug("reply %u to pid %d not delivered: %s", rep->id, (int)c->pid,
			  strerror(-ret));
	return ret;
}

static void ktlshd_reply_vsend(struct ktlshd_conn *c, enum ktlsh_proto_type type, uint32_t id,
			       int status, const char *fmt, va_list ap)
{
	struct ktlsh_proto_reply rep;
	size_t i;

	ktlsh_proto_reply_init(&rep, type, id);
	vsnprintf(rep.reason, sizeof(rep.reason), fmt, ap);
	for (i = 0; rep.reason[i]; i++)
		if ((unsigned char)rep.reason[i] < 0x20 || (unsigned char)rep.reason[i] >= 0x7f)
			rep.reason[i] = '?';
	rep.status = status < 0 ? status : -EINVAL;
	(void)ktlshd_conn_send_reply(c, &rep);
}

void ktlshd_reply_error(struct ktlshd_conn *c, uint32_t id, int status, const char *fmt, ...)
{
	va_list ap;

	if (!c)
		return;
	va_start(ap, fmt);
	ktlshd_reply_vsend(c, KTLSH_PROTO_ERROR, id, status, fmt, ap);
	va_end(ap);
}

/* A handshake request that was understood but refused gets the reply type
 * the caller waits for (protocol.md): HANDSHAKE_REPLY with the status. */
void ktlshd_reply_refused(struct ktlshd_conn *c, uint32_t id, int status,
			  const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ktlshd_reply_vsend(c, KTLSH_PROTO_HANDSHAKE_REPLY, id, status, fmt, ap);
	va_end(ap);
}

/* ---- the listening socket ---- */

int ktlshd_ctl_listen(const char *path, int *out)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	size_t plen = strlen(path);
	char dir[sizeof(sun.sun_path)];
	char *slash;
	int fd, ret;

	*out = -1;
	if (plen == 0 || plen >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	memcpy(sun.sun_path, path, plen);
	if (path[0] == '@') {
		sun.sun_path[0] = '\0';	/* abstract namespace */
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
	} else {
		len = (socklen_t)sizeof(sun);
		snprintf(dir, sizeof(dir), "%s", path);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			(void)mkdir(dir, 0755);
		}
		/* A stale socket from a previous run; a live daemon would still
		 * answer, and systemd hands us its socket instead of a path. */
		(void)unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&sun, len) < 0) {
		ret = -errno;
		goto fail;
	}
	/* Anyone may connect; what they may do is decided per identity by
	 * SO_PEERCRED (ktlshd.conf allow_uids / allow_gids). */
	if (path[0] != '@' && chmod(path, 0666) < 0) {
		ret = -errno;
		goto fail;
	}
	if (listen(fd, SOMAXCONN) < 0) {
		ret = -errno;
		goto fail;
	}
	*out = fd;
	return 0;
fail:
	close(fd);
	return ret;
}

/*
 * One descriptor held in reserve: when accept() fails for want of
 * descriptors the pending connection would keep the listener readable and
 * the level-triggered loop would spin. Spending the reserve lets us accept
 * it and hang up, so the caller sees a closed connection and we see the
 * queue drain.
 */
static int ktlshd_spare_fd = -1;

static void ktlshd_ctl_shed(int lfd)
{
	static uint64_t last_log_us;
	int fd;

	if (ktlshd_spare_fd < 0)
		return;
	close(ktlshd_spare_fd);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0)
		close(fd);
	ktlshd_spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (ktlshd_now_us() - last_log_us > 1000000) {
		last_log_us = ktlshd_now_us();
		log_warn("control: out of file descriptors; refusing control connections");
	}
}

struct ktlshd_conn *ktlshd_ctl_accept(int lfd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct ktlshd_conn *c;
	int fd;

	if (ktlshd_spare_fd < 0)
		ktlshd_spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE)
			ktlshd_ctl_shed(lfd);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn("control connection refused: %s", c ? strerror(errno) : "out of memory");
		free(c);
		close(fd);
		return NULL;
	}
	atomic_init(&c->refs, 1);
	c->fd = fd;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->gid = cred.gid;
	atomic_fetch_add(&ktlshd_stats.ctl_connections, 1);
	return c;
}

/* ---- requests ---- */

/*
 * The passed fd must be a connected TCP socket with no ULP yet. Three system
 * calls on the way that succeeds: SO_PROTOCOL fails with ENOTSOCK on what is
 * not a socket (no fstat needed), and only a TCP socket (SOCK_STREAM) says
 * IPPROTO_TCP and answers TCP_INFO, so SO_TYPE is asked only to word a
 * refusal. libktlsh's engine does not ask the type again: its first call,
 * TCP_NODELAY, fails on anything but TCP.
 */
static int ktlshd_check_socket(int fd, char *why, size_t whylen)
{
	struct tcp_info ti;
	char ulp[16] = "";
	int type = 0, proto = 0;
	socklen_t len;

	len = sizeof(proto);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) < 0 && errno == ENOTSOCK) {
		snprintf(why, whylen, "the passed descriptor is not a socket");
		return -ENOTSOCK;
	}
	if (proto != IPPROTO_TCP) {
		len = sizeof(type);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
			snprintf(why, whylen, "the passed socket is not a stream socket");
		else
			snprintf(why, whylen, "the passed socket is not TCP");
		return -EPROTOTYPE;
	}
	len = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || ti.tcpi_state != TCP_ESTABLISHED) {
		snprintf(why, whylen, "the passed socket is not connected (TCP state %u)",
			 (unsigned)ti.tcpi_state);
		return -ENOTCONN;
	}
	len = sizeof(ulp);
	if (getsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, &len) == 0 && ulp[0]) {
		snprintf(why, whylen, "the passed socket already has ULP \"%.15s\"", ulp);
		return -EALREADY;
	}
	return 0;
}

static void ktlshd_peer_name(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(out, len, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

static int ktlshd_alpn_wire(const struct ktlsh_proto_request *req, struct ktlshd_job *job)
{
	size_t i, l, n = 0;

	for (i = 0; i < req->n_alpn; i++) {
		l = strlen(req->alpn[i]);
		if (!l || l > 255 || n + 1 + l > sizeof(job->alpn_wire))
			return -EINVAL;
		job->alpn_wire[n++] = (char)l;
		memcpy(job->alpn_wire + n, req->alpn[i], l);
		n += l;
	}
	job->alpn_wire_len = n;
	return 0;
}

static void ktlshd_handle_handshake(struct ktlshd_conn *c, const struct ktlsh_proto_request *req,
				    int fd)
{
	struct ktlshd_runtime *rt = ktlshd_current_get();
	const struct ktlsh_config *cfg = rt->cfg;
	struct ktlshd_job *job = NULL;
	char why[160];
	const char *name = req->identity;
	int ret;

	ret = ktlshd_check_socket(fd, why, sizeof(why));
	if (ret)
		goto refuse;
	ret = -EOPNOTSUPP;
	if (rt->caps.ulp_err && !ktlshd_handshake_only) {
		/* Fail closed before any TLS byte moves: the socket could only
		 * come back unencrypted. */
		snprintf(why, sizeof(why), "kernel TLS is not available here (tls ULP: %s)",
			 strerror(-rt->caps.ulp_err));
		goto refuse;
	}
	job = calloc(1, sizeof(*job));
	ret = -ENOMEM;
	if (!job) {
		snprintf(why, sizeof(why), "out of memory");
		goto refuse;
	}
	job->fd = -1;
	job->role = req->role == KTLSH_PROTO_ROLE_SERVER ? KTLSH_ROLE_SERVER : KTLSH_ROLE_CLIENT;
	job->id = req->id;
	job->flags = req->flags;
	ret = -EINVAL;
	if (ktlshd_alpn_wire(req, job)) {
		snprintf(why, sizeof(why), "bad ALPN list");
		goto refuse;
	}
	if (job->role == KTLSH_ROLE_SERVER) {
		const struct ktlshd_ident *id = NULL;

		if (!name[0] && rt->n_idents == 1)
			id = &rt->idents[0];
		else if (name[0])
			id = ktlshd_runtime_ident(rt, name);
		ret = -ENOENT;
		if (!id) {
			snprintf(why, sizeof(why), name[0] ? "no identity \"%s\" in the configuration" :
				 "no identity named and more than one configured%s", name);
			goto refuse;
		}
		ret = ktlsh_config_may_use(cfg, id->cfg, c->uid, c->gid);
		if (ret) {
			snprintf(why, sizeof(why), "uid %u may not use identity \"%s\"",
				 (unsigned)c->uid, id->cfg->name);
			goto refuse;
		}
		ret = -EINVAL;
		if (req->server_name[0] && id->cfg->verify_client == KTLSH_CONFIG_VERIFY_NONE) {
			snprintf(why, sizeof(why), "an expected client name needs client certificates, "
				 "but identity \"%s\" has verify_client = none", id->cfg->name);
			goto refuse;
		}
		job->ctx = id->ctx;
		snprintf(job->identity, sizeof(job->identity), "%s", id->cfg->name);
		if (req->flags & KTLSH_PROTO_F_TRUSTED_PEER && !id->cfg->tls.trusted_peer)
			job->flags &= ~KTLSH_PROTO_F_TRUSTED_PEER;
		else if (id->cfg->tls.trusted_peer)
			job->flags |= KTLSH_PROTO_F_TRUSTED_PEER;
	} else {
		const struct ktlshd_client_profile *cl = NULL;

		if (!name[0] && rt->n_clients == 1)
			cl = &rt->clients[0];
		else if (name[0])
			cl = ktlshd_runtime_client(rt, name);
		ret = -ENOENT;
		if (!cl) {
			snprintf(why, sizeof(why), name[0] ? "no client profile \"%s\" in the configuration" :
				 "no client profile named and not exactly one configured%s", name);
			goto refuse;
		}
		ret = ktlsh_config_client_may_use(cfg, cl->cfg, c->uid, c->gid);
		if (ret) {
			snprintf(why, sizeof(why), "uid %u may not use client profile \"%s\"",
				 (unsigned)c->uid, cl->cfg->name);
			goto refuse;
		}
		job->ctx = cl->ctx;
		snprintf(job->identity, sizeof(job->identity), "%s", cl->cfg->name);
		snprintf(job->server_name, sizeof(job->server_name), "%s",
			 req->server_name[0] ? req->server_name :
			 cl->cfg->server_name ? cl->cfg->server_name : "");
		ret = -EINVAL;
		if (!job->server_name[0] && !cl->cfg->insecure) {
			snprintf(why, sizeof(why), "client role needs a server name to verify");
			goto refuse;
		}
		if (cl->cfg->tls.trusted_peer)
			job->flags |= KTLSH_PROTO_F_TRUSTED_PEER;
	}
	if (job->role == KTLSH_ROLE_SERVER && req->server_name[0])
		snprintf(job->server_name, sizeof(job->server_name), "%s", req->server_name);
	job->start_us = ktlshd_now_us();
	/* A request may shorten the configured limit, never extend it: a caller
	 * must not hold a handshake slot (or a stop) longer than the operator set. */
	job->deadline_us = job->start_us +
		1000ull * (req->timeout_ms && req->timeout_ms < cfg->global.handshake_timeout_ms ?
			   req->timeout_ms : cfg->global.handshake_timeout_ms);
	/* The peer's address serves only the info-level lines of the outcome
	 * (worker.c). It is taken now, not when the line is written: a peer
	 * that reset the connection has no address any more, and that is the
	 * line where it matters most. Below info nothing prints it. */
	if (ktlshd_log_level >= LOG_INFO)
		ktlshd_peer_name(fd, job->peer, sizeof(job->peer));
	job->conn = ktlshd_conn_get(c);
	job->rt = rt;
	job->fd = fd;
	ret = ktlshd_workers_submit(job, cfg->global.max_inflight);
	if (ret) {
		job->fd = -1;	/* closed below, once */
		snprintf(why, sizeof(why), "too many handshakes in flight (max_inflight %u)",
			 cfg->global.max_inflight);
		ktlshd_job_free(job);	/* drops the conn and runtime references */
		job = NULL;
		rt = NULL;
		goto refuse;
	}
	return;
refuse:
	log_warn("handshake request %u from pid %d uid %u refused: %s", req->id, (int)c->pid,
		 (unsigned)c->uid, why);
	/* -ENOENT here is a name the configuration lacks, not the kernel. */
	atomic_fetch_add(&ktlshd_stats.outcomes[ret == -ENOENT ? KTLSHD_FAIL_BADREQ :
						 ktlshd_outcome_of(ret)], 1);
	close(fd);
	free(job);
	ktlshd_runtime_put(rt);
	ktlshd_reply_refused(c, req->id, ret, "%s", why);
}

static void ktlshd_handle_status(struct ktlshd_conn *c, uint32_t id)
{
	struct ktlsh_proto_status *st = calloc(1, sizeof(*st));
	struct ktlsh_buf b;
	uint8_t *mem = malloc(KTLSH_PROTO_MAX_MSG);
	int ret;

	if (!st || !mem) {
		ktlshd_reply_error(c, id, -ENOMEM, "out of memory");
		goto out;
	}
	ktlsh_proto_status_init(st, id);
	ktlshd_status_fill(st);
	st->status = 0;
	ktlsh_buf_init(&b, mem, KTLSH_PROTO_MAX_MSG);
	ret = ktlsh_proto_encode_status(&b, st);
	if (ret)
		ktlshd_reply_error(c, id, ret, "cannot encode status");
	else
		(void)ktlshd_conn_send(c, b.data, b.len);
out:
	free(st);
	free(mem);
}

static void ktlshd_handle_reload(struct ktlshd_conn *c, uint32_t id)
{
	struct ktlsh_proto_reply rep;
	int ret;

	ktlsh_proto_reply_init(&rep, KTLSH_PROTO_RELOAD_REPLY, id);
	if (c->uid != 0 && c->uid != geteuid()) {
		log_warn("reload request from uid %u (pid %d) refused", (unsigned)c->uid, (int)c->pid);
		rep.status = -EACCES;
		snprintf(rep.reason, sizeof(rep.reason), "only root or the daemon's user may reload");
	} else {
		ret = ktlshd_reload(rep.reason, sizeof(rep.reason));
		if (!ret)
			snprintf(rep.reason, sizeof(rep.reason), "configuration reloaded");
		for (size_t i = 0; rep.reason[i]; i++)
			if ((unsigned char)rep.reason[i] < 0x20)
				rep.reason[i] = ' ';
		rep.status = ret;
	}
	(void)ktlshd_conn_send_reply(c, &rep);
}

/*
 * Read and act on every message waiting on c. Returns -ECONNRESET when the
 * connection must be closed (EOF, error, or a message too broken to answer).
 */
int ktlshd_ctl_handle(struct ktlshd_conn *c, uint8_t *buf, size_t buflen)
{
	union {
		char buf[CMSG_SPACE(KTLSHD_CTL_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = buflen };
	struct msghdr msg;
	struct cmsghdr *cmsg;
	struct ktlsh_proto_hdr hdr;
	struct ktlsh_proto_request *req = NULL;
	int fds[KTLSHD_CTL_MAX_FDS], nfds, i, ret = 0, batch;
	ssize_t n;

	/* A bounded batch: the loop comes back (level-triggered), and one busy
	 * connection cannot starve the others. */
	for (batch = 0; batch < KTLSHD_CTL_BATCH; batch++) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = sizeof(cbuf.buf);
		n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			ret = errno == EAGAIN ? 0 : -ECONNRESET;
			break;
		}
		nfds = 0;
		for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
			if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
				continue;
			for (i = 0; (size_t)i < (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int) &&
			     nfds < KTLSHD_CTL_MAX_FDS; i++)
				memcpy(&fds[nfds++], CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
		}
		if (n == 0) {
			ret = -ECONNRESET;
			goto drop_fds;
		}
		if (!(msg.msg_flags & MSG_TRUNC) && (msg.msg_flags & MSG_CTRUNC) &&
		    ktlsh_proto_decode_header(buf, (size_t)n, &hdr) == 0) {
			if (nfds >= KTLSHD_CTL_MAX_FDS) {
				ktlshd_reply_refused(c, hdr.id, -EBADF,
						     "a handshake request carries exactly one socket (got more than %d)",
						     KTLSHD_CTL_MAX_FDS);
				goto drop_fds;
			}
			/* Room for the fds, yet the kernel could not give us the
			 * socket (EMFILE): refuse this request, keep the connection. */
			log_warn("control: request %u from pid %d: its socket was lost "
				 "(out of file descriptors?)", hdr.id, (int)c->pid);
			atomic_fetch_add(&ktlshd_stats.outcomes[KTLSHD_FAIL_OTHER], 1);
			ktlshd_reply_refused(c, hdr.id, -EMFILE,
					     "ktlshd could not receive the socket (out of file descriptors)");
			goto drop_fds;
		}
		if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
		    ktlsh_proto_decode_header(buf, (size_t)n, &hdr) == -EBADMSG ||
		    (size_t)n < KTLSH_PROTO_HDR_LEN) {
			/* Not our protocol, or too broken to answer: hang up. */
			atomic_fetch_add(&ktlshd_stats.ctl_bad_messages, 1);
			log_warn("control: garbage from pid %d uid %u (%zd bytes); closing",
				 (int)c->pid, (unsigned)c->uid, n);
			ret = -ECONNRESET;
			goto drop_fds;
		}
		if (!req)
			req = malloc(sizeof(*req));
		if (!req) {
			ktlshd_reply_error(c, hdr.id, -ENOMEM, "out of memory");
			goto drop_fds;
		}
		ret = ktlsh_proto_decode_request(buf, (size_t)n, req);
		if (ret) {
			atomic_fetch_add(&ktlshd_stats.ctl_bad_messages, 1);
			log_warn("control: bad request from pid %d: %s", (int)c->pid, strerror(-ret));
			ktlshd_reply_error(c, hdr.id, ret, "malformed request: %s", strerror(-ret));
			ret = 0;
			goto drop_fds;
		}
		if (req->type == KTLSH_PROTO_HANDSHAKE_REQ) {
			if (nfds != 1) {
				ktlshd_reply_refused(c, req->id, -EBADF,
						     "a handshake request carries exactly one socket (got %d)",
						     nfds);
				goto drop_fds;
			}
			ktlshd_handle_handshake(c, req, fds[0]);
			continue;	/* the fd is the job's (or closed) now */
		}
		if (nfds) {
			ktlshd_reply_error(c, req->id, -EBADF, "unexpected file descriptor");
			goto drop_fds;
		}
		if (req->type == KTLSH_PROTO_STATUS_REQ)
			ktlshd_handle_status(c, req->id);
		else if (req->type == KTLSH_PROTO_RELOAD_REQ)
			ktlshd_handle_reload(c, req->id);
		else
			ktlshd_reply_error(c, req->id, -EPROTO, "not a request");
		continue;
drop_fds:
		for (i = 0; i < nfds; i++)
			close(fds[i]);
		if (ret)
			break;
	}
	free(req);
	return ret;
}
