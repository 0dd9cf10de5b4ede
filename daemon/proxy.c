// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Proxy mode: [service NAME] sections. A terminate service accepts TLS,
 * handshakes on the workers, installs kTLS and carries the bytes to a
 * plaintext backend; an originate service accepts plaintext and carries it
 * to a remote TLS service over a kTLS client connection. The bytes move in
 * proxy_pump.c; this file owns the listeners, the hand-off to and from the
 * handshake workers, the user-space fallback decision, the PROXY protocol
 * header and the status counters.
 *
 * Listen addresses are bound once at start (before privileges are
 * dropped); everything else about a service is read from the configuration
 * current when a connection is accepted, so a reload changes backends,
 * certificates and limits for new connections.
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
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "proxy.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

struct proxy_stats proxy_stats;

static struct proxy_svc *proxy_svcs;
static size_t proxy_n_svcs;
static int proxy_spare_fd = -1;		/* given up to accept-and-close on EMFILE */

/*
 * The control connection a proxy handshake answers to: there is none, so
 * one stands in for the daemon itself (uid 0: the configuration chose the
 * identity, and SNI may pick any other, as for a root caller). Its fd is
 * never a socket, so nothing is ever sent on it; its reference never drops
 * to zero.
 */
static struct ktlshd_conn proxy_self = { .refs = 1, .fd = -1 };

static void proxy_addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
	}
	snprintf(out, len, ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

/* ---- connections ---------------------------------------------------------- */

void proxy_conn_free(struct proxy_conn *c)
{
	int i;

	if (!c)
		return;
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->tls_fd >= 0)
		close(c->tls_fd);
	if (c->plain_fd >= 0)
		close(c->plain_fd);
	for (i = 0; i < 2; i++) {
		if (c->dir[i].pipe_r >= 0)
			close(c->dir[i].pipe_r);
		if (c->dir[i].pipe_w >= 0)
			close(c->dir[i].pipe_w);
		free(c->dir[i].buf);
	}
	free(c->ctl_buf);
	free(c->hdr);
	atomic_fetch_sub(&c->svc->active, 1);
	atomic_fetch_sub(&proxy_stats.active, 1);
	ktlshd_runtime_put(c->rt);
	free(c);
}

static struct proxy_conn *proxy_conn_new(struct proxy_svc *svc, struct ktlshd_runtime *rt,
					 const struct ktlsh_config_service *sc)
{
	struct proxy_conn *c = calloc(1, sizeof(*c));
	int i;

	if (!c)
		return NULL;
	c->svc = svc;
	c->sc = sc;
	c->rt = rt;
	c->tls_fd = c->plain_fd = -1;
	for (i = 0; i < 2; i++) {
		c->dir[i].pipe_r = c->dir[i].pipe_w = -1;
		c->dir[i].rd.c = c->dir[i].wr.c = c;
		c->dir[i].rd.dir = c->dir[i].wr.dir = (uint8_t)i;
	}
	c->misc.c = c;
	c->start_us = c->last_us = ktlshd_now_us();
	atomic_fetch_add(&svc->active, 1);
	atomic_fetch_add(&svc->connections, 1);
	atomic_fetch_add(&proxy_stats.active, 1);
	atomic_fetch_add(&proxy_stats.connections, 1);
	return c;
}

void proxy_note_fallback(struct proxy_conn *c)
{
	atomic_fetch_add(&proxy_stats.fallback, 1);
	if (!atomic_exchange(&c->svc->fallback_logged, true))
		log_warn("service %s: kernel TLS cannot carry this connection (%s): serving it "
			 "with OpenSSL in user space (fallback = userspace); said once per service, "
			 "counted in proxy.fallback", c->svc->name, c->fallback_why);
	else
		log_debug("service %s: peer %s in user space: %s", c->svc->name, c->peer,
			  c->fallback_why);
}

/* ---- handshakes --------------------------------------------------------- */

/* Has the kernel taken a TX key on fd? Reads only the version and cipher
 * header of TLS_TX (never the key): fails when there is no tls ULP or no
 * TX state. */
static bool proxy_tx_installed(int fd)
{
	struct tls_crypto_info ci;
	socklen_t len = sizeof(ci);

	return getsockopt(fd, SOL_TLS, TLS_TX, &ci, &len) == 0;
}

/* Worker thread: the handshake ended; decide what the connection keeps. */
static void proxy_hs_done(struct ktlshd_job *job, int status)
{
	struct proxy_conn *c = job->done_arg;
	const struct ktlsh_hs_info *info = job->hs ? ktlsh_hs_info(job->hs) : NULL;
	SSL *ssl = job->hs ? ktlsh_hs_ssl(job->hs) : NULL;

	c->hs_status = status;
	if (info && info->cipher_name[0]) {
		c->tls_version = info->version;
		snprintf(c->cipher, sizeof(c->cipher), "%s", info->cipher_name);
		snprintf(c->alpn, sizeof(c->alpn), "%s", info->alpn);
	}
	snprintf(c->sni, sizeof(c->sni), "%s", job->server_name);
	if (!status) {
		c->ktls = true;
		c->hs_ok = true;
		job->fd = -1;
		return;
	}
	/* The handshake itself must have succeeded; a peer that left before
	 * the install (-ENOTCONN) is gone either way. */
	if (!ssl || !SSL_is_init_finished(ssl) || status == -ENOTCONN || status == -ETIMEDOUT ||
	    proxy_tx_installed(job->fd)) {
		c->tls_fd = -1;		/* the worker closes it */
		return;
	}
	if (c->sc->fallback == KTLSH_FALLBACK_REFUSE) {
		log_info("service %s: peer %s refused: the kernel cannot carry it (%s) and "
			 "fallback = refuse", c->svc->name, c->peer,
			 info && info->reason[0] ? info->reason : strerror(-status));
		(void)SSL_shutdown(ssl);	/* close_notify, best effort */
		atomic_fetch_add(&proxy_stats.refused, 1);
		c->refused = true;
		c->tls_fd = -1;
		return;
	}
	c->ssl = ktlshd_job_keep_ssl(job);
	if (!c->ssl) {
		c->tls_fd = -1;
		return;
	}
	snprintf(c->fallback_why, sizeof(c->fallback_why), "%s",
		 ktlshd_handshake_only ? "ktlshd --handshake-only" :
		 info && info->reason[0] ? info->reason : strerror(-status));
	c->hs_ok = true;
	job->fd = -1;
}

/* Worker thread, after it let go of the handshake: back to the pump. */
static void proxy_hs_released(struct ktlshd_job *job)
{
	struct proxy_conn *c = job->done_arg;

	if (!c->hs_ok)
		c->tls_fd = -1;		/* closed with the job */
	proxy_pump_queue(c);
}

/* Append name to a ':' list unless it is there already. */
static void proxy_list_add(char *list, size_t len, const char *name, size_t nlen)
{
	size_t used = strlen(list);
	const char *p = list;

	while (*p) {
		const char *e = strchr(p, ':');
		size_t l = e ? (size_t)(e - p) : strlen(p);

		if (l == nlen && !strncmp(p, name, nlen))
			return;
		p += l + (e ? 1 : 0);
	}
	if (!nlen || used + nlen + 2 > len)
		return;
	if (used)
		list[used++] = ':';
	memcpy(list + used, name, nlen);
	list[used + nlen] = '\0';
}

/*
 * With fallback = userspace the contexts still offer only what the kernel
 * takes (they serve the control socket too); widen this one connection to
 * the configured lists, the offloadable suites first and preferred, so a
 * peer that has none of them is served in user space instead of refused.
 */
static int proxy_widen(SSL *ssl, const struct ktlsh_config_tls *tls, bool server)
{
	STACK_OF(SSL_CIPHER) *cur = SSL_get_ciphers(ssl);
	char l13[1024] = "", l12[4096] = "";
	const char *cfg13 = tls->ciphersuites.str ? tls->ciphersuites.str : OSSL_default_ciphersuites();
	const char *cfg12 = tls->ciphers.str ? tls->ciphers.str : OSSL_default_cipher_list();
	const SSL_CIPHER *ci;
	const char *p, *e;
	int i;

	for (i = 0; cur && i < sk_SSL_CIPHER_num(cur); i++) {
		ci = sk_SSL_CIPHER_value(cur, i);
		if ((SSL_CIPHER_get_protocol_id(ci) & 0xff00) == 0x1300)
			proxy_list_add(l13, sizeof(l13), SSL_CIPHER_get_name(ci),
				       strlen(SSL_CIPHER_get_name(ci)));
		else
			proxy_list_add(l12, sizeof(l12), SSL_CIPHER_get_name(ci),
				       strlen(SSL_CIPHER_get_name(ci)));
	}
	for (p = cfg13; *p; p = e ? e + 1 : p + strlen(p)) {
		e = strchr(p, ':');
		proxy_list_add(l13, sizeof(l13), p, e ? (size_t)(e - p) : strlen(p));
	}
	/* A cipher rule string, not a plain list: rules keep what is there. */
	if (strlen(l12) + strlen(cfg12) + 2 < sizeof(l12)) {
		if (l12[0])
			strcat(l12, ":");
		strcat(l12, cfg12);
	}
	if (!SSL_set_ciphersuites(ssl, l13) || !SSL_set_cipher_list(ssl, l12) ||
	    !SSL_set_min_proto_version(ssl, tls->min_version) ||
	    !SSL_set_max_proto_version(ssl, 0)) {
		ERR_clear_error();
		return -EINVAL;
	}
	if (server)
		SSL_set_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
	return 0;
}

static int proxy_hs_prepare(struct ktlshd_job *job, SSL *ssl)
{
	struct proxy_conn *c = job->done_arg;
	bool server = c->sc->mode == KTLSH_SERVICE_TERMINATE;

	if (c->sc->fallback != KTLSH_FALLBACK_USERSPACE || job->rt->caps.ulp_err)
		return 0;
	return proxy_widen(ssl, server ? &c->sc->identity->tls : &c->sc->client->tls, server);
}

int proxy_handshake_submit(struct proxy_conn *c)
{
	const struct ktlsh_config_service *sc = c->sc;
	const struct ktlshd_ident *id = NULL;
	const struct ktlshd_client_profile *cl = NULL;
	const struct ktlsh_config_tls *tls;
	struct ktlshd_job *job;
	int ret;

	if (sc->mode == KTLSH_SERVICE_TERMINATE)
		id = sc->identity ? ktlshd_runtime_ident(c->rt, sc->identity->name) : NULL;
	else
		cl = sc->client ? ktlshd_runtime_client(c->rt, sc->client->name) : NULL;
	if (!id && !cl)
		return -ENOENT;
	job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	if (id) {
		job->role = KTLSH_ROLE_SERVER;
		job->ctx = id->ctx;
		tls = &id->cfg->tls;
		snprintf(job->identity, sizeof(job->identity), "%s", id->cfg->name);
	} else {
		job->role = KTLSH_ROLE_CLIENT;
		job->ctx = cl->ctx;
		tls = &cl->cfg->tls;
		snprintf(job->identity, sizeof(job->identity), "%s", cl->cfg->name);
		snprintf(job->server_name, sizeof(job->server_name), "%s",
			 sc->server_name ? sc->server_name :
			 cl->cfg->server_name ? cl->cfg->server_name : sc->target.host);
	}
	if (tls->trusted_peer)
		job->flags |= KTLSH_PROTO_F_TRUSTED_PEER;
	if (sc->tls.alpn_wire_len && sc->tls.alpn_wire_len <= sizeof(job->alpn_wire)) {
		memcpy(job->alpn_wire, sc->tls.alpn_wire, sc->tls.alpn_wire_len);
		job->alpn_wire_len = sc->tls.alpn_wire_len;
	}
	job->fd = c->tls_fd;
	job->start_us = ktlshd_now_us();
	job->deadline_us = job->start_us + 1000ull * c->rt->cfg->global.handshake_timeout_ms;
	snprintf(job->peer, sizeof(job->peer), "%s", c->peer);
	job->conn = ktlshd_conn_get(&proxy_self);
	job->rt = ktlshd_runtime_get(c->rt);
	job->done = proxy_hs_done;
	job->prepare = proxy_hs_prepare;
	job->released = proxy_hs_released;
	job->done_arg = c;
	c->stage = PROXY_STAGE_HANDSHAKE;
	ret = ktlshd_workers_submit(job, c->rt->cfg->global.max_inflight);
	if (ret) {
		job->fd = -1;		/* still c's */
		ktlshd_job_free(job);
	}
	return ret;
}

/* ---- the PROXY protocol, version 2 (haproxy's proxy-protocol.txt) ------- */

#define PP2_SIG			"\r\n\r\n\0\r\nQUIT\n"
#define PP2_CMD_PROXY		0x21	/* version 2, PROXY */
#define PP2_CMD_LOCAL		0x20
#define PP2_FAM_TCP4		0x11
#define PP2_FAM_TCP6		0x21
#define PP2_TYPE_ALPN		0x01
#define PP2_TYPE_AUTHORITY	0x02
#define PP2_TYPE_SSL		0x20
#define PP2_SUBTYPE_SSL_VERSION	0x21
#define PP2_SUBTYPE_SSL_CIPHER	0x23
#define PP2_CLIENT_SSL		0x01

static size_t pp2_tlv(uint8_t *p, size_t room, uint8_t type, const void *v, size_t len)
{
	if (len > 0xffff || 3 + len > room)
		return 0;
	p[0] = type;
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)len;
	memcpy(p + 3, v, len);
	return 3 + len;
}

/* Unmap ::ffff:a.b.c.d so an IPv4 client on a dual-stack listener is
 * announced as TCP4. */
static int pp2_v4(const struct sockaddr_storage *ss, uint8_t addr[4], uint8_t port[2])
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		memcpy(addr, &a->sin_addr, 4);
		memcpy(port, &a->sin_port, 2);
		return 1;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			memcpy(addr, a->sin6_addr.s6_addr + 12, 4);
			memcpy(port, &a->sin6_port, 2);
			return 1;
		}
	}
	return 0;
}

size_t proxy_v2_header(const struct proxy_conn *c, uint8_t *buf, size_t len)
{
	uint8_t ssl[300], sa[4], da[4], sp[2], dp[2];
	size_t n = 16, sn, body;
	const char *ver = c->tls_version == TLS1_3_VERSION ? "TLSv1.3" :
			  c->tls_version == TLS1_2_VERSION ? "TLSv1.2" : NULL;

	if (len < 16 + 36)
		return 0;
	memcpy(buf, PP2_SIG, 12);
	buf[12] = PP2_CMD_PROXY;
	if (pp2_v4(&c->client_addr, sa, sp) && pp2_v4(&c->local_addr, da, dp)) {
		buf[13] = PP2_FAM_TCP4;
		memcpy(buf + n, sa, 4);
		memcpy(buf + n + 4, da, 4);
		memcpy(buf + n + 8, sp, 2);
		memcpy(buf + n + 10, dp, 2);
		n += 12;
	} else if (c->client_addr.ss_family == AF_INET6 && c->local_addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&c->client_addr;
		const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)&c->local_addr;

		buf[13] = PP2_FAM_TCP6;
		memcpy(buf + n, &s->sin6_addr, 16);
		memcpy(buf + n + 16, &d->sin6_addr, 16);
		memcpy(buf + n + 32, &s->sin6_port, 2);
		memcpy(buf + n + 34, &d->sin6_port, 2);
		n += 36;
	} else {
		buf[12] = PP2_CMD_LOCAL;	/* addresses unknown: the backend uses its own */
		buf[13] = 0;
	}
	if (c->alpn[0])
		n += pp2_tlv(buf + n, len - n, PP2_TYPE_ALPN, c->alpn, strlen(c->alpn));
	if (c->sni[0])
		n += pp2_tlv(buf + n, len - n, PP2_TYPE_AUTHORITY, c->sni, strlen(c->sni));
	/* PP2_TYPE_SSL: client flags, verify result (0: verified or none asked),
	 * then sub-TLVs for the version and the cipher. */
	ssl[0] = PP2_CLIENT_SSL;
	memset(ssl + 1, 0, 4);
	sn = 5;
	if (ver)
		sn += pp2_tlv(ssl + sn, sizeof(ssl) - sn, PP2_SUBTYPE_SSL_VERSION, ver, strlen(ver));
	if (c->cipher[0])
		sn += pp2_tlv(ssl + sn, sizeof(ssl) - sn, PP2_SUBTYPE_SSL_CIPHER, c->cipher,
			      strlen(c->cipher));
	n += pp2_tlv(buf + n, len - n, PP2_TYPE_SSL, ssl, sn);
	body = n - 16;
	buf[14] = (uint8_t)(body >> 8);
	buf[15] = (uint8_t)body;
	return n;
}

/* ---- listeners ---------------------------------------------------------- */

static void proxy_refuse(struct proxy_svc *svc, int fd, const char *peer, const char *why)
{
	uint64_t now = ktlshd_now_us();

	atomic_fetch_add(&proxy_stats.refused, 1);
	close(fd);
	/* At most one line a second per service: a flood must not flood the log. */
	if (now - svc->refuse_logged_us >= 1000000) {
		svc->refuse_logged_us = now;
		log_warn("service %s: connection from %s refused: %s", svc->name, peer, why);
	}
}

static void proxy_accepted(struct proxy_svc *svc, int fd, const struct sockaddr_storage *ss,
			   socklen_t sl)
{
	struct ktlshd_runtime *rt = ktlshd_current_get();
	const struct ktlsh_config_service *sc = rt ? ktlsh_config_service(rt->cfg, svc->name) : NULL;
	struct proxy_conn *c;
	char peer[64], why[128];
	int one = 1, ret;

	proxy_addr_text(ss, peer, sizeof(peer));
	if (!sc) {
		proxy_refuse(svc, fd, peer, "the service is no longer in the configuration "
			     "(a reload removed it; its listener closes at restart)");
		goto put;
	}
	if (atomic_load(&svc->active) >= sc->max_connections) {
		snprintf(why, sizeof(why), "max_connections (%u) reached", sc->max_connections);
		proxy_refuse(svc, fd, peer, why);
		goto put;
	}
	if (rt->caps.ulp_err && sc->fallback == KTLSH_FALLBACK_REFUSE && !ktlshd_handshake_only) {
		proxy_refuse(svc, fd, peer, "no kernel TLS here and fallback = refuse");
		goto put;
	}
	c = proxy_conn_new(svc, rt, sc);
	if (!c) {
		proxy_refuse(svc, fd, peer, "out of memory");
		goto put;
	}
	rt = NULL;	/* c's now */
	memcpy(&c->client_addr, ss, sl);
	c->client_len = sl;
	c->local_len = sizeof(c->local_addr);
	if (getsockname(fd, (struct sockaddr *)&c->local_addr, &c->local_len) < 0)
		c->local_len = 0;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	/* Set before the handshake saves the socket's state, so nothing is
	 * "restored" after the pump has it: no Nagle for a relay. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->pump = proxy_pump_pick();
	if (sc->mode == KTLSH_SERVICE_ORIGINATE) {
		c->plain_fd = fd;
		c->stage = PROXY_STAGE_CONNECT;
		proxy_pump_queue(c);
		return;
	}
	c->tls_fd = fd;
	ret = proxy_handshake_submit(c);
	if (ret) {
		log_warn("service %s: connection from %s refused: %s", svc->name, peer,
			 ret == -EBUSY ? "too many handshakes in flight (max_inflight)" :
			 strerror(-ret));
		atomic_fetch_add(&proxy_stats.refused, 1);
		proxy_conn_free(c);
	}
	return;
put:
	ktlshd_runtime_put(rt);
}

/* Main thread: the listener is readable. */
static void proxy_accept(void *arg)
{
	struct proxy_svc *svc = arg;
	struct sockaddr_storage ss;
	socklen_t sl;
	int i, fd;

	/* A bounded batch: the control socket and the other listeners wait. */
	for (i = 0; i < 64; i++) {
		sl = sizeof(ss);
		fd = accept4(svc->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			proxy_accepted(svc, fd, &ss, sl);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if ((errno == EMFILE || errno == ENFILE) && proxy_spare_fd >= 0) {
			/* Out of descriptors: a level-triggered listener would spin.
			 * Take the connection with the spare one and drop it. */
			close(proxy_spare_fd);
			fd = accept4(svc->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				proxy_refuse(svc, fd, "?", "out of file descriptors");
			proxy_spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			continue;
		}
		if (errno != EAGAIN)
			log_warn("service %s: accept: %s", svc->name, strerror(errno));
		break;
	}
}

static int proxy_listen(struct proxy_svc *svc, const struct ktlsh_config_service *sc)
{
	int fd, one = 1;

	fd = socket(sc->listen.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&sc->listen.ss, sc->listen.len) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	svc->lfd = fd;
	return 0;
}

int ktlshd_proxy_start(struct ktlshd_runtime *rt)
{
	const struct ktlsh_config *cfg = rt->cfg;
	const struct ktlsh_config_service *sc;
	size_t i;
	int ret;

	if (!cfg->n_services)
		return 0;
	proxy_self.pid = getpid();
	proxy_svcs = calloc(cfg->n_services, sizeof(*proxy_svcs));
	if (!proxy_svcs)
		return -ENOMEM;
	proxy_spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ret = proxy_pumps_start(ktlshd_workers_count());
	if (ret) {
		log_err("proxy: cannot start the io_uring data pumps: %s", strerror(-ret));
		return ret;
	}
	for (i = 0; i < cfg->n_services; i++) {
		struct proxy_svc *svc = &proxy_svcs[i];

		sc = cfg->services[i];
		snprintf(svc->name, sizeof(svc->name), "%s", sc->name);
		snprintf(svc->listen, sizeof(svc->listen), "%s", sc->listen.text);
		ret = proxy_listen(svc, sc);
		if (ret) {
			log_err("%s:%u: service %s: cannot listen on %s: %s", cfg->path, sc->listen.line,
				sc->name, sc->listen.text, strerror(-ret));
			return ret;
		}
		proxy_n_svcs++;
		ret = ktlshd_loop_add(svc->lfd, proxy_accept, svc);
		if (ret)
			return ret;
		log_info("service %s: %s %s -> %s (%s %s, %s)", sc->name,
			 sc->mode == KTLSH_SERVICE_TERMINATE ? "terminate" : "originate",
			 sc->listen.text, sc->target.text,
			 sc->mode == KTLSH_SERVICE_TERMINATE ? "identity" : "client",
			 sc->mode == KTLSH_SERVICE_TERMINATE ? sc->identity->name : sc->client->name,
			 sc->data_path == KTLSH_DATA_SPLICE ? "data path splice" :
			 sc->data_path == KTLSH_DATA_COPY ? "data path copy" :
			 "data path auto");
		if (rt->caps.ulp_err && !ktlshd_handshake_only)
			log_warn("service %s: kernel TLS unavailable (tls ULP: %s): %s", sc->name,
				 strerror(-rt->caps.ulp_err),
				 sc->fallback == KTLSH_FALLBACK_REFUSE ?
				 "every connection will be refused (fallback = refuse)" :
				 "connections will be served by OpenSSL in user space (fallback = userspace)");
	}
	return 0;
}

void ktlshd_proxy_stop(void)
{
	size_t i;

	if (!proxy_svcs)
		return;
	for (i = 0; i < proxy_n_svcs; i++)
		close(proxy_svcs[i].lfd);
	proxy_pumps_stop();
	free(proxy_svcs);
	proxy_svcs = NULL;
	proxy_n_svcs = 0;
	if (proxy_spare_fd >= 0)
		close(proxy_spare_fd);
	proxy_spare_fd = -1;
}

/* ---- status ------------------------------------------------------------- */

void ktlshd_proxy_status(struct ktlsh_proto_status *st)
{
	char key[KTLSH_PROTO_KEY_LEN];
	size_t i;

	if (!proxy_n_svcs)
		return;
	ktlshd_status_add(st, "proxy.connections", "%llu", atomic_load(&proxy_stats.connections));
	ktlshd_status_add(st, "proxy.active", "%u", atomic_load(&proxy_stats.active));
	ktlshd_status_add(st, "proxy.fallback", "%llu", atomic_load(&proxy_stats.fallback));
	ktlshd_status_add(st, "proxy.refused", "%llu", atomic_load(&proxy_stats.refused));
	ktlshd_status_add(st, "proxy.failed", "%llu", atomic_load(&proxy_stats.failed));
	ktlshd_status_add(st, "proxy.bytes_tls_to_plain", "%llu",
			 atomic_load(&proxy_stats.bytes_tls_to_plain));
	ktlshd_status_add(st, "proxy.bytes_plain_to_tls", "%llu",
			 atomic_load(&proxy_stats.bytes_plain_to_tls));
	for (i = 0; i < proxy_n_svcs; i++) {
		snprintf(key, sizeof(key), "proxy.service.%s", proxy_svcs[i].name);
		ktlshd_status_add(st, key, "listen=%s active=%u connections=%llu",
				 proxy_svcs[i].listen, atomic_load(&proxy_svcs[i].active),
				 atomic_load(&proxy_svcs[i].connections));
	}
}
