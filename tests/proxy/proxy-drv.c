// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * proxy-drv: both ends of ktlshd's proxy tests and benchmark.
 *
 *   proxy-drv backend --listen ADDR:PORT [--tls CERT KEY] [--proxy-v2]
 *   proxy-drv client --connect ADDR:PORT [--tls] [--ca FILE] [--sni NAME] ...
 *   proxy-drv silent --connect ADDR:PORT --count N --within MS
 *   proxy-drv port        a free TCP port on 127.0.0.1 (for scripts)
 *
 * The client opens a connection (TLS or plain), sends a 40-byte request
 * (seed, bytes each way, mode), then bytes of a seeded pattern; the backend
 * sends the other pattern back. Each side checks every byte it receives
 * against the pattern and keeps a SHA-256 of what it sent and received. In
 * the modes where the backend writes last it ends with a verdict byte and
 * the SHA-256 of what it received, which the client compares with the one
 * of what it sent: both directions are checked end to end.
 *
 *   concurrent     both directions at once; the client half-closes
 *                  (close_notify / FIN) when done sending, the backend
 *                  replies with the verdict after that EOF, then closes
 *   client-first   the client sends everything and half-closes; only then
 *                  does the backend send (half-close client -> backend)
 *   backend-first  the backend sends everything and half-closes first; the
 *                  client sends after that EOF (half-close backend ->
 *                  client); the backend prints its verdict
 *
 * The backend prints one line per connection ("backend ... verdict=ok"),
 * with the PROXY protocol v2 header it parsed when --proxy-v2 is given.
 * The client ends with "client: ok=N failed=M ..." and exits 0 iff M is 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define CHUNK		65536
#define HDR_LEN		40
#define TRAILER_LEN	33	/* verdict + SHA-256 */

enum mode { MODE_CONCURRENT = 0, MODE_CLIENT_FIRST, MODE_BACKEND_FIRST };
static const char *const mode_names[] = { "concurrent", "client-first", "backend-first" };
#define F_NOVERIFY	0x1	/* benchmark: no pattern check, no SHA */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((format(printf, 1, 2)))
static void say(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&out_lock);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the pattern: xorshift64*, 8 bytes a step, position-exact ---------- */

struct pat {
	uint64_t s;
	uint8_t word[8];
	unsigned wpos;
};

static void pat_init(struct pat *p, uint64_t seed)
{
	p->s = seed * 0x9E3779B97F4A7C15ull + 0x1234567;
	if (!p->s)
		p->s = 1;
	p->wpos = 8;
}

static void pat_fill(struct pat *p, uint8_t *buf, size_t n)
{
	uint64_t v;

	while (n) {
		if (p->wpos == 8) {
			p->s ^= p->s >> 12;
			p->s ^= p->s << 25;
			p->s ^= p->s >> 27;
			v = p->s * 0x2545F4914F6CDD1Dull;
			memcpy(p->word, &v, 8);
			p->wpos = 0;
		}
		*buf++ = p->word[p->wpos++];
		n--;
	}
}

static void hex(const uint8_t *d, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* ---- I/O over a nonblocking socket, plain or OpenSSL --------------------- */

struct io {
	int fd;
	SSL *ssl;
	bool shut_sent;
};

/* >0 bytes, 0 EOF, -EAGAIN (*want = POLLIN/POLLOUT), other -errno. */
static ssize_t io_read(struct io *io, void *buf, size_t n, short *want)
{
	ssize_t r;
	int e;

	if (!io->ssl) {
		r = recv(io->fd, buf, n, 0);
		if (r >= 0)
			return r;
		if (errno == EAGAIN || errno == EINTR) {
			*want = POLLIN;
			return -EAGAIN;
		}
		return -errno;
	}
	ERR_clear_error();
	errno = 0;
	r = SSL_read(io->ssl, buf, (int)n);
	if (r > 0)
		return r;
	e = SSL_get_error(io->ssl, (int)r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		return -EAGAIN;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (e == SSL_ERROR_SYSCALL && !ERR_peek_error() && !errno)
		return -EPIPE;		/* FIN without close_notify: truncation */
	return errno ? -errno : -EPROTO;
}

static ssize_t io_write(struct io *io, const void *buf, size_t n, short *want)
{
	ssize_t r;
	int e;

	if (!io->ssl) {
		r = send(io->fd, buf, n, MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno == EAGAIN || errno == EINTR) {
			*want = POLLOUT;
			return -EAGAIN;
		}
		return -errno;
	}
	ERR_clear_error();
	errno = 0;
	r = SSL_write(io->ssl, buf, (int)n);
	if (r > 0)
		return r;
	e = SSL_get_error(io->ssl, (int)r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		return -EAGAIN;
	}
	return errno ? -errno : -EPROTO;
}

/* Half-close: close_notify (TLS) or FIN (plain). 0, -EAGAIN or -errno. */
static int io_shut(struct io *io, short *want)
{
	int r, e;

	if (io->shut_sent)
		return 0;
	if (!io->ssl) {
		io->shut_sent = true;
		return shutdown(io->fd, SHUT_WR) < 0 ? -errno : 0;
	}
	ERR_clear_error();
	r = SSL_shutdown(io->ssl);
	if (r >= 0) {
		io->shut_sent = true;
		return 0;
	}
	e = SSL_get_error(io->ssl, r);
	if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
		*want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		return -EAGAIN;
	}
	return -EPROTO;
}

/* ---- one transfer: send a pattern, receive and check one --------------- */

struct xfer {
	struct io *io;
	bool verify;
	/* sending */
	const uint8_t *pre;		/* sent first (the request header) */
	size_t pre_len, pre_off;
	uint64_t send_total, sent;
	struct pat spat;
	uint8_t *sbuf;
	size_t soff, slen;
	const uint8_t *post;		/* sent after the pattern (the verdict) */
	size_t post_len, post_off;
	bool shut_after;		/* half-close when everything is sent */
	uint64_t key_update_at;		/* SSL_key_update() once sent reaches it (0: never) */
	bool key_updated;
	EVP_MD_CTX *tx_sha;
	/* receiving */
	uint64_t expect;		/* pattern bytes expected; after them, the trailer */
	uint64_t rcvd;
	struct pat rpat;
	uint8_t *rbuf, *ebuf;
	uint8_t trailer[64];
	size_t trailer_len;
	bool eof;
	bool mismatch;
	bool read_needed;		/* stop when EOF is seen */
	EVP_MD_CTX *rx_sha;
	int err;
};

static void xfer_init(struct xfer *x, struct io *io, bool verify)
{
	memset(x, 0, sizeof(*x));
	x->io = io;
	x->verify = verify;
	x->sbuf = malloc(CHUNK);
	x->rbuf = malloc(CHUNK);
	x->ebuf = malloc(CHUNK);
	x->tx_sha = EVP_MD_CTX_new();
	x->rx_sha = EVP_MD_CTX_new();
	EVP_DigestInit_ex(x->tx_sha, EVP_sha256(), NULL);
	EVP_DigestInit_ex(x->rx_sha, EVP_sha256(), NULL);
}

static void xfer_free(struct xfer *x)
{
	free(x->sbuf);
	free(x->rbuf);
	free(x->ebuf);
	EVP_MD_CTX_free(x->tx_sha);
	EVP_MD_CTX_free(x->rx_sha);
}

static bool xfer_send_done(const struct xfer *x)
{
	return x->pre_off == x->pre_len && x->sent == x->send_total && x->soff == x->slen &&
	       x->post_off == x->post_len;
}

/* One attempt to send; true if bytes moved. */
static bool xfer_try_send(struct xfer *x, short *want)
{
	const uint8_t *p;
	size_t n;
	ssize_t r;

	if (x->pre_off < x->pre_len) {
		p = x->pre + x->pre_off;
		n = x->pre_len - x->pre_off;
	} else if (x->soff < x->slen || x->sent < x->send_total) {
		if (x->soff == x->slen) {
			n = x->send_total - x->sent > CHUNK ? CHUNK : (size_t)(x->send_total - x->sent);
			if (x->verify || !x->slen)
				pat_fill(&x->spat, x->sbuf, n);
			if (x->verify)
				EVP_DigestUpdate(x->tx_sha, x->sbuf, n);
			x->soff = 0;
			x->slen = n;
			x->sent += n;
		}
		if (x->key_update_at && !x->key_updated && x->sent >= x->key_update_at &&
		    x->io->ssl) {
			x->key_updated = true;
			if (!SSL_key_update(x->io->ssl, SSL_KEY_UPDATE_NOT_REQUESTED)) {
				x->err = -EPROTO;
				return false;
			}
		}
		p = x->sbuf + x->soff;
		n = x->slen - x->soff;
	} else if (x->post_off < x->post_len) {
		p = x->post + x->post_off;
		n = x->post_len - x->post_off;
	} else {
		return false;
	}
	r = io_write(x->io, p, n, want);
	if (r == -EAGAIN)
		return false;
	if (r < 0) {
		x->err = (int)r;
		return false;
	}
	if (x->pre_off < x->pre_len)
		x->pre_off += (size_t)r;
	else if (x->soff < x->slen)
		x->soff += (size_t)r;
	else
		x->post_off += (size_t)r;
	return true;
}

static bool xfer_try_recv(struct xfer *x, short *want)
{
	ssize_t r;
	size_t n, pat_n;

	r = io_read(x->io, x->rbuf, CHUNK, want);
	if (r == -EAGAIN)
		return false;
	if (r == 0) {
		x->eof = true;
		return true;
	}
	if (r < 0) {
		x->err = (int)r;
		return false;
	}
	n = (size_t)r;
	pat_n = x->rcvd >= x->expect ? 0 : x->expect - x->rcvd < n ? (size_t)(x->expect - x->rcvd) : n;
	if (pat_n && x->verify) {
		pat_fill(&x->rpat, x->ebuf, pat_n);
		if (memcmp(x->ebuf, x->rbuf, pat_n))
			x->mismatch = true;
		EVP_DigestUpdate(x->rx_sha, x->rbuf, pat_n);
	}
	x->rcvd += pat_n;
	if (n > pat_n) {
		if (x->trailer_len + (n - pat_n) > sizeof(x->trailer)) {
			x->mismatch = true;
		} else {
			memcpy(x->trailer + x->trailer_len, x->rbuf + pat_n, n - pat_n);
			x->trailer_len += n - pat_n;
		}
	}
	return true;
}

/*
 * Run until what was asked is done: everything sent (and half-closed if
 * shut_after), and, if read_needed, EOF read. 0 or -errno (-ETIMEDOUT).
 */
static int xfer_run(struct xfer *x, uint64_t deadline)
{
	struct pollfd pfd = { .fd = x->io->fd };
	short wsend, wrecv, wshut;
	bool moved, want_send, want_recv, want_shut;
	int r;
	uint64_t t;

	for (;;) {
		moved = false;
		wsend = wrecv = wshut = 0;
		want_send = !xfer_send_done(x);
		if (want_send)
			moved |= xfer_try_send(x, &wsend);
		if (x->err)
			return x->err;
		want_recv = x->read_needed && !x->eof;
		if (want_recv)
			moved |= xfer_try_recv(x, &wrecv);
		if (x->err)
			return x->err;
		want_shut = x->shut_after && xfer_send_done(x) && !x->io->shut_sent;
		if (want_shut) {
			r = io_shut(x->io, &wshut);
			if (r && r != -EAGAIN)
				return r;
			if (!r)
				moved = true;
		}
		if (xfer_send_done(x) && (!x->shut_after || x->io->shut_sent) &&
		    (!x->read_needed || x->eof))
			return 0;
		if (moved)
			continue;
		t = now_ms();
		if (t >= deadline)
			return -ETIMEDOUT;
		pfd.events = wsend | wrecv | wshut;
		if (!pfd.events)
			pfd.events = POLLIN;
		r = poll(&pfd, 1, (int)(deadline - t));
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* ---- the request header -------------------------------------------------- */

struct request {
	uint32_t seed;
	uint64_t up, down;
	uint32_t mode, flags, client_port;
};

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void req_encode(const struct request *rq, uint8_t *b)
{
	memset(b, 0, HDR_LEN);
	memcpy(b, "KTP1", 4);
	put32(b + 4, rq->seed);
	put64(b + 8, rq->up);
	put64(b + 16, rq->down);
	put32(b + 24, rq->mode);
	put32(b + 28, rq->flags);
	put32(b + 32, rq->client_port);
}

static int req_decode(const uint8_t *b, struct request *rq)
{
	if (memcmp(b, "KTP1", 4))
		return -EBADMSG;
	rq->seed = get32(b + 4);
	rq->up = get64(b + 8);
	rq->down = get64(b + 16);
	rq->mode = get32(b + 24);
	rq->flags = get32(b + 28);
	rq->client_port = get32(b + 32);
	return rq->mode <= MODE_BACKEND_FIRST ? 0 : -EBADMSG;
}

/* Blocking exact read with a deadline (nonblocking fd, plain or TLS). */
static int io_read_exact(struct io *io, uint8_t *buf, size_t n, uint64_t deadline)
{
	struct pollfd pfd = { .fd = io->fd };
	size_t got = 0;
	ssize_t r;
	short want = POLLIN;
	uint64_t t;

	while (got < n) {
		r = io_read(io, buf + got, n - got, &want);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r == 0)
			return -ECONNRESET;
		if (r != -EAGAIN)
			return (int)r;
		t = now_ms();
		if (t >= deadline)
			return -ETIMEDOUT;
		pfd.events = want;
		(void)poll(&pfd, 1, (int)(deadline - t));
	}
	return 0;
}

/* ---- addresses ----------------------------------------------------------- */

static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, rb - s - 1);
		host[rb - s - 1] = 0;
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, colon - s);
		host[colon - s] = 0;
	}
	if (getaddrinfo(host, colon + 1, &hints, &res))
		return -EINVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void addr_text(const void *addr, int fam, uint16_t port_be, char *out, size_t len)
{
	char h[INET6_ADDRSTRLEN];

	inet_ntop(fam, addr, h, sizeof(h));
	snprintf(out, len, fam == AF_INET6 ? "[%s]:%u" : "%s:%u", h, ntohs(port_be));
}

/* ---- backend ---------------------------------------------------------------- */

static SSL_CTX *backend_ctx;
static bool backend_pp2;
static uint64_t backend_timeout_ms = 60000;
static atomic_ulong backend_conn_no;

/* A port as it is on the wire (network order), unaligned. */
static uint16_t be16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return v;
}

/* PROXY protocol v2: "pp2 src=... dst=... alpn=... authority=... ssl=...". */
static int backend_read_pp2(struct io *io, char *out, size_t outlen, uint16_t *src_port,
			    uint64_t deadline)
{
	static const uint8_t sig[12] = "\r\n\r\n\0\r\nQUIT\n";
	uint8_t h[16], body[1024];
	char src[64] = "-", dst[64] = "-", alpn[64] = "-", auth[256] = "-", ver[32] = "-",
	     cipher[80] = "-";
	size_t len, off;
	int r, fam;

	r = io_read_exact(io, h, 16, deadline);
	if (r)
		return r;
	if (memcmp(h, sig, 12) || (h[12] & 0xf0) != 0x20)
		return -EBADMSG;
	len = (size_t)h[14] << 8 | h[15];
	if (len > sizeof(body))
		return -EBADMSG;
	r = io_read_exact(io, body, len, deadline);
	if (r)
		return r;
	fam = h[13];
	off = 0;
	*src_port = 0;
	if ((h[12] & 0x0f) == 1 && fam == 0x11 && len >= 12) {
		addr_text(body, AF_INET, be16(body + 8), src, sizeof(src));
		addr_text(body + 4, AF_INET, be16(body + 10), dst, sizeof(dst));
		*src_port = (uint16_t)(body[8] << 8 | body[9]);
		off = 12;
	} else if ((h[12] & 0x0f) == 1 && fam == 0x21 && len >= 36) {
		addr_text(body, AF_INET6, be16(body + 32), src, sizeof(src));
		addr_text(body + 16, AF_INET6, be16(body + 34), dst, sizeof(dst));
		*src_port = (uint16_t)(body[32] << 8 | body[33]);
		off = 36;
	} else if ((h[12] & 0x0f) != 0) {
		return -EBADMSG;
	}
	while (off + 3 <= len) {
		uint8_t t = body[off];
		size_t l = (size_t)body[off + 1] << 8 | body[off + 2];
		const uint8_t *v = body + off + 3;

		if (off + 3 + l > len)
			return -EBADMSG;
		if (t == 0x01)
			snprintf(alpn, sizeof(alpn), "%.*s", (int)l, v);
		else if (t == 0x02)
			snprintf(auth, sizeof(auth), "%.*s", (int)l, v);
		else if (t == 0x20 && l >= 5) {
			size_t so = 5;

			while (so + 3 <= l) {
				uint8_t st = v[so];
				size_t sl = (size_t)v[so + 1] << 8 | v[so + 2];

				if (so + 3 + sl > l)
					return -EBADMSG;
				if (st == 0x21)
					snprintf(ver, sizeof(ver), "%.*s", (int)sl, v + so + 3);
				else if (st == 0x23)
					snprintf(cipher, sizeof(cipher), "%.*s", (int)sl, v + so + 3);
				so += 3 + sl;
			}
			if (so != l)
				return -EBADMSG;
			if (!(v[0] & 0x01))
				snprintf(ver, sizeof(ver), "not-ssl");
		}
		off += 3 + l;
	}
	if (off != len)
		return -EBADMSG;
	snprintf(out, outlen, " pp2 src=%s dst=%s alpn=%s authority=%s ssl_version=%s cipher=%s",
		 src, dst, alpn, auth, ver, cipher);
	return 0;
}

static void *backend_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	unsigned long no = atomic_fetch_add(&backend_conn_no, 1);
	struct io io = { .fd = fd };
	struct request rq;
	struct xfer x;
	uint8_t hdr[HDR_LEN], verdict[TRAILER_LEN];
	unsigned char sha[32];
	char pp2[512] = "", shahex[65] = "-";
	uint64_t deadline = now_ms() + backend_timeout_ms;
	uint16_t pp2_port = 0;
	bool ok;
	int r;

	if (backend_ctx) {
		struct timeval tv = { .tv_sec = 20 };

		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		io.ssl = SSL_new(backend_ctx);
		SSL_set_fd(io.ssl, fd);
		if (SSL_accept(io.ssl) != 1) {
			say("backend conn=%lu tls handshake failed\n", no);
			goto out;
		}
	}
	set_nonblock(fd);
	if (backend_pp2) {
		r = backend_read_pp2(&io, pp2, sizeof(pp2), &pp2_port, deadline);
		if (r) {
			say("backend conn=%lu pp2 BAD (%s)\n", no, strerror(-r));
			goto out;
		}
	}
	r = io_read_exact(&io, hdr, HDR_LEN, deadline);
	if (r || req_decode(hdr, &rq)) {
		say("backend conn=%lu request %s%s\n", no, r ? "lost: " : "malformed",
		    r ? strerror(-r) : "");
		goto out;
	}
	xfer_init(&x, &io, !(rq.flags & F_NOVERIFY));
	pat_init(&x.spat, (uint64_t)rq.seed * 2 + 1);
	pat_init(&x.rpat, (uint64_t)rq.seed * 2);
	x.expect = rq.up;
	x.read_needed = true;
	x.send_total = rq.down;
	r = 0;
	if (rq.mode == MODE_CLIENT_FIRST) {
		x.send_total = 0;
		r = xfer_run(&x, deadline);		/* read until the client's EOF */
		x.send_total = rq.down;
	} else if (rq.mode == MODE_BACKEND_FIRST) {
		x.read_needed = false;
		x.shut_after = true;
		r = xfer_run(&x, deadline);		/* send all, then half-close */
		x.read_needed = true;
	}
	if (!r && rq.mode != MODE_BACKEND_FIRST) {
		/* The verdict goes after the pattern, once the client's EOF is in. */
		x.send_total = rq.down;
		r = xfer_run(&x, deadline);
		if (!r) {
			EVP_MD_CTX *c = EVP_MD_CTX_new();

			EVP_MD_CTX_copy_ex(c, x.rx_sha);
			EVP_DigestFinal_ex(c, sha, NULL);
			EVP_MD_CTX_free(c);
			verdict[0] = x.rcvd == rq.up && !x.mismatch && !x.trailer_len ? 'K' : 'X';
			memcpy(verdict + 1, sha, 32);
			x.post = verdict;
			x.post_len = TRAILER_LEN;
			x.shut_after = true;
			r = xfer_run(&x, deadline);
		}
	} else if (!r) {
		r = xfer_run(&x, deadline);
	}
	ok = !r && x.rcvd == rq.up && !x.mismatch && !x.trailer_len;
	if (x.verify) {
		EVP_DigestFinal_ex(x.rx_sha, sha, NULL);
		hex(sha, 32, shahex);
	}
	say("backend conn=%lu seed=%u mode=%s rx=%llu tx=%llu rx_sha256=%s verdict=%s%s%s%s\n", no,
	    rq.seed, mode_names[rq.mode], (unsigned long long)x.rcvd,
	    (unsigned long long)x.sent, shahex, ok ? "ok" : "BAD", r ? " err=" : "",
	    r ? strerror(-r) : "", pp2);
	if (backend_pp2)
		say("backend conn=%lu pp2_src_port=%s\n", no,
		    pp2_port == rq.client_port ? "match" : "MISMATCH");
	xfer_free(&x);
out:
	if (io.ssl)
		SSL_free(io.ssl);
	close(fd);
	return NULL;
}

static int cmd_backend(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "tls", required_argument, NULL, 't' },
		{ "proxy-v2", no_argument, NULL, 'p' },
		{ "timeout", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 },
	};
	struct sockaddr_storage ss;
	socklen_t sl;
	const char *listen_at = NULL, *cert = NULL;
	pthread_attr_t attr;
	pthread_t th;
	int c, lfd, fd, one = 1;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen_at = optarg; break;
		case 't': cert = optarg; break;
		case 'p': backend_pp2 = true; break;
		case 'T': backend_timeout_ms = strtoull(optarg, NULL, 10); break;
		default: return 2;
		}
	}
	if (!listen_at || parse_addr(listen_at, &ss, &sl)) {
		fprintf(stderr, "backend: --listen ADDR:PORT\n");
		return 2;
	}
	if (cert) {
		/* --tls CERT (the key beside it: same stem, .key) */
		char key[4096];
		size_t n = strlen(cert);

		snprintf(key, sizeof(key), "%.*s.key", (int)(n > 4 ? n - 4 : n), cert);
		backend_ctx = SSL_CTX_new(TLS_server_method());
		if (!backend_ctx || SSL_CTX_use_certificate_chain_file(backend_ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(backend_ctx, key, SSL_FILETYPE_PEM) != 1) {
			fprintf(stderr, "backend: cannot load %s / %s\n", cert, key);
			return 2;
		}
		SSL_CTX_set_mode(backend_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	}
	lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&ss, sl) < 0 || listen(lfd, 1024) < 0) {
		fprintf(stderr, "backend: listen %s: %s\n", listen_at, strerror(errno));
		return 1;
	}
	say("backend listening on %s\n", listen_at);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
				continue;
			return 1;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (pthread_create(&th, &attr, backend_conn, (void *)(intptr_t)fd))
			close(fd);
	}
}

/* ---- client ------------------------------------------------------------------ */

struct client_opts {
	struct sockaddr_storage ss;
	socklen_t sl;
	bool tls;
	SSL_CTX *ctx;
	const char *sni;
	uint64_t up, down;
	enum mode mode;
	unsigned conns, parallel;
	uint32_t seed;
	uint64_t timeout_ms;
	bool expect_close;		/* a clean close right after the handshake */
	bool expect_refused;		/* no TLS session (refused, reset) */
	uint64_t hold_ms;
	uint64_t key_update_at;
	bool verify;
	bool barrier;
	bool verbose;
};

static struct client_opts copt;
static atomic_uint next_conn;
static atomic_uint n_ok, n_fail;
static atomic_ullong bytes_up, bytes_down;
static pthread_barrier_t start_barrier;

static int client_connect(struct io *io, uint16_t *lport, char *why, size_t whylen)
{
	struct sockaddr_in6 la;
	socklen_t ll = sizeof(la);
	struct timeval tv = { .tv_sec = (time_t)(copt.timeout_ms / 1000) + 1 };
	int one = 1, fd, r;

	fd = socket(copt.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -errno;
	}
	io->fd = fd;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&copt.ss, copt.sl) < 0) {
		snprintf(why, whylen, "connect: %s", strerror(errno));
		return -errno;
	}
	getsockname(fd, (struct sockaddr *)&la, &ll);
	*lport = ntohs(la.sin6_port);	/* same offset in sockaddr_in */
	if (!copt.tls)
		return 0;
	io->ssl = SSL_new(copt.ctx);
	SSL_set_fd(io->ssl, fd);
	if (copt.sni) {
		SSL_set_tlsext_host_name(io->ssl, copt.sni);
		SSL_set1_host(io->ssl, copt.sni);
	}
	ERR_clear_error();
	r = SSL_connect(io->ssl);
	if (r != 1) {
		unsigned long e = ERR_peek_error();

		snprintf(why, whylen, "TLS handshake: %s",
			 e ? ERR_reason_error_string(e) : errno ? strerror(errno) : "peer closed");
		ERR_clear_error();
		return -EPROTO;
	}
	return 0;
}

static const char *client_ssl_info(struct io *io, char *buf, size_t len)
{
	if (!io->ssl)
		return "plain";
	snprintf(buf, len, "%s/%s", SSL_get_version(io->ssl),
		 SSL_CIPHER_get_name(SSL_get_current_cipher(io->ssl)));
	return buf;
}

static int client_one(unsigned idx)
{
	struct io io = { .fd = -1 };
	struct request rq = {
		.seed = copt.seed + idx,
		.up = copt.up,
		.down = copt.down,
		.mode = copt.mode,
		.flags = copt.verify ? 0 : F_NOVERIFY,
	};
	struct xfer x;
	uint8_t hdr[HDR_LEN], buf[256];
	unsigned char sha_tx[32];
	char why[256] = "", info[128], h1[65], h2[65];
	uint64_t deadline = now_ms() + copt.timeout_ms;
	uint16_t lport = 0;
	short want;
	ssize_t r;
	int ret;

	ret = client_connect(&io, &lport, why, sizeof(why));
	if (copt.barrier)
		pthread_barrier_wait(&start_barrier);
	if (copt.expect_refused) {
		/* Refused: no connection, no handshake, or a session that ends
		 * before any byte of data. */
		bool refused = ret != 0;

		if (!ret) {
			set_nonblock(io.fd);
			want = POLLIN;
			for (;;) {
				r = io_read(&io, buf, sizeof(buf), &want);
				if (r != -EAGAIN || now_ms() >= deadline)
					break;
				poll(&(struct pollfd){ .fd = io.fd, .events = want }, 1, 100);
			}
			refused = r != -EAGAIN && r <= 0;
		}
		if (io.ssl)
			SSL_free(io.ssl);
		if (io.fd >= 0)
			close(io.fd);
		if (refused) {
			if (copt.verbose)
				say("conn %u: refused as expected (%s)\n", idx, why[0] ? why : "closed");
			return 0;
		}
		say("conn %u: FAIL: not refused\n", idx);
		return -1;
	}
	if (ret)
		goto fail;
	set_nonblock(io.fd);
	if (copt.hold_ms)
		usleep((useconds_t)copt.hold_ms * 1000);
	if (copt.expect_close) {
		/* Nothing is sent: the daemon must end the session cleanly. */
		want = POLLIN;
		for (;;) {
			r = io_read(&io, buf, sizeof(buf), &want);
			if (r != -EAGAIN)
				break;
			if (now_ms() >= deadline) {
				r = -ETIMEDOUT;
				break;
			}
			poll(&(struct pollfd){ .fd = io.fd, .events = want }, 1,
			     (int)(deadline - now_ms()));
		}
		ret = r == 0 ? 0 : -1;
		snprintf(why, sizeof(why), "%s", r == 0 ? "clean close" : r > 0 ? "got data" :
			 r == -EPIPE ? "FIN without close_notify" : strerror((int)-r));
		if (ret)
			goto fail;
		if (copt.verbose)
			say("conn %u: %s\n", idx, why);
		goto done;
	}
	rq.client_port = lport;
	req_encode(&rq, hdr);
	xfer_init(&x, &io, copt.verify);
	pat_init(&x.spat, (uint64_t)rq.seed * 2);
	pat_init(&x.rpat, (uint64_t)rq.seed * 2 + 1);
	x.pre = hdr;
	x.pre_len = HDR_LEN;
	x.expect = copt.down;
	x.key_update_at = copt.key_update_at;
	if (copt.mode == MODE_BACKEND_FIRST) {
		/* Header, then the backend's whole stream and its EOF, then ours. */
		x.send_total = 0;
		x.read_needed = true;
		ret = xfer_run(&x, deadline);
		x.send_total = copt.up;
		x.read_needed = false;
		x.shut_after = true;
		if (!ret)
			ret = xfer_run(&x, deadline);
	} else {
		x.send_total = copt.up;
		x.shut_after = true;
		x.read_needed = true;
		ret = xfer_run(&x, deadline);
	}
	EVP_DigestFinal_ex(x.tx_sha, sha_tx, NULL);
	bytes_up += x.sent;
	bytes_down += x.rcvd;
	if (ret) {
		snprintf(why, sizeof(why), "%s after %llu up / %llu down", strerror(-ret),
			 (unsigned long long)x.sent, (unsigned long long)x.rcvd);
	} else if (x.rcvd != copt.down || x.mismatch) {
		snprintf(why, sizeof(why), "received %llu of %llu bytes%s",
			 (unsigned long long)x.rcvd, (unsigned long long)copt.down,
			 x.mismatch ? ", CONTENT MISMATCH" : "");
		ret = -1;
	} else if (copt.mode != MODE_BACKEND_FIRST &&
		   (x.trailer_len != TRAILER_LEN || x.trailer[0] != 'K' ||
		    (copt.verify && memcmp(x.trailer + 1, sha_tx, 32)))) {
		snprintf(why, sizeof(why), "backend verdict %s",
			 x.trailer_len != TRAILER_LEN ? "missing" :
			 x.trailer[0] != 'K' ? "BAD" : "SHA-256 differs");
		ret = -1;
	}
	if (!ret && (copt.verbose || copt.conns == 1) && copt.verify) {
		unsigned char sha_rx[32];

		EVP_DigestFinal_ex(x.rx_sha, sha_rx, NULL);
		hex(sha_tx, 32, h1);
		hex(sha_rx, 32, h2);
		say("conn %u: %s up=%llu sha256=%s%s down=%llu sha256=%s\n", idx,
		    client_ssl_info(&io, info, sizeof(info)), (unsigned long long)x.sent, h1,
		    copt.mode != MODE_BACKEND_FIRST ? " (backend's matches)" : "",
		    (unsigned long long)x.rcvd, h2);
	}
	xfer_free(&x);
	if (ret)
		goto fail;
done:
	if (io.ssl)
		SSL_free(io.ssl);
	close(io.fd);
	return 0;
fail:
	say("conn %u: FAIL: %s\n", idx, why);
	if (io.ssl)
		SSL_free(io.ssl);
	if (io.fd >= 0)
		close(io.fd);
	return -1;
}

static void *client_thread(void *arg)
{
	unsigned i;

	(void)arg;
	while ((i = atomic_fetch_add(&next_conn, 1)) < copt.conns) {
		if (client_one(i))
			n_fail++;
		else
			n_ok++;
	}
	return NULL;
}

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 10);

	if (*end == 'k' || *end == 'K')
		v <<= 10;
	else if (*end == 'm' || *end == 'M')
		v <<= 20;
	else if (*end == 'g' || *end == 'G')
		v <<= 30;
	return v;
}

static int cmd_client(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "tls", no_argument, NULL, 't' },
		{ "ca", required_argument, NULL, 'a' },
		{ "sni", required_argument, NULL, 's' },
		{ "cipher", required_argument, NULL, 'C' },
		{ "ciphersuites", required_argument, NULL, 'S' },
		{ "tls12", no_argument, NULL, '2' },
		{ "alpn", required_argument, NULL, 'A' },
		{ "up", required_argument, NULL, 'u' },
		{ "down", required_argument, NULL, 'd' },
		{ "mode", required_argument, NULL, 'm' },
		{ "conns", required_argument, NULL, 'n' },
		{ "parallel", required_argument, NULL, 'P' },
		{ "seed", required_argument, NULL, 'e' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "expect-close", no_argument, NULL, 'x' },
		{ "expect-refused", no_argument, NULL, 'r' },
		{ "hold", required_argument, NULL, 'H' },
		{ "key-update-after", required_argument, NULL, 'k' },
		{ "no-verify", no_argument, NULL, 'N' },
		{ "barrier", no_argument, NULL, 'b' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	const char *ca = NULL, *cipher = NULL, *suites = NULL, *alpn = NULL;
	bool tls12 = false;
	pthread_attr_t attr;
	pthread_t *th;
	uint64_t t0, ms;
	unsigned i;
	int c;

	copt.conns = copt.parallel = 1;
	copt.timeout_ms = 60000;
	copt.verify = true;
	copt.seed = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_addr(optarg, &copt.ss, &copt.sl)) {
				fprintf(stderr, "client: bad --connect %s\n", optarg);
				return 2;
			}
			break;
		case 't': copt.tls = true; break;
		case 'a': ca = optarg; break;
		case 's': copt.sni = optarg; break;
		case 'C': cipher = optarg; break;
		case 'S': suites = optarg; break;
		case '2': tls12 = true; break;
		case 'A': alpn = optarg; break;
		case 'u': copt.up = parse_size(optarg); break;
		case 'd': copt.down = parse_size(optarg); break;
		case 'm':
			for (i = 0; i < 3 && strcmp(optarg, mode_names[i]); i++)
				;
			if (i == 3)
				return 2;
			copt.mode = i;
			break;
		case 'n': copt.conns = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'P': copt.parallel = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'e': copt.seed = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'T': copt.timeout_ms = strtoull(optarg, NULL, 10); break;
		case 'x': copt.expect_close = true; break;
		case 'r': copt.expect_refused = true; break;
		case 'H': copt.hold_ms = strtoull(optarg, NULL, 10); break;
		case 'k': copt.key_update_at = parse_size(optarg); break;
		case 'N': copt.verify = false; break;
		case 'b': copt.barrier = true; break;
		case 'v': copt.verbose = true; break;
		default: return 2;
		}
	}
	if (!copt.sl) {
		fprintf(stderr, "client: --connect ADDR:PORT\n");
		return 2;
	}
	if (copt.tls) {
		copt.ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_verify(copt.ctx, ca ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
		if (ca && SSL_CTX_load_verify_locations(copt.ctx, ca, NULL) != 1)
			return 2;
		if (cipher && !SSL_CTX_set_cipher_list(copt.ctx, cipher))
			return 2;
		if (suites && !SSL_CTX_set_ciphersuites(copt.ctx, suites))
			return 2;
		if (tls12)
			SSL_CTX_set_max_proto_version(copt.ctx, TLS1_2_VERSION);
		if (alpn) {
			unsigned char wire[256];
			size_t l = strlen(alpn);

			wire[0] = (unsigned char)l;
			memcpy(wire + 1, alpn, l);
			SSL_CTX_set_alpn_protos(copt.ctx, wire, (unsigned)l + 1);
		}
		SSL_CTX_set_mode(copt.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		SSL_CTX_set_session_cache_mode(copt.ctx, SSL_SESS_CACHE_OFF);
	}
	if (copt.parallel > copt.conns)
		copt.parallel = copt.conns;
	if (copt.barrier && copt.parallel != copt.conns) {
		fprintf(stderr, "client: --barrier needs --parallel = --conns\n");
		return 2;
	}
	if (copt.barrier)
		pthread_barrier_init(&start_barrier, NULL, copt.parallel);
	th = calloc(copt.parallel, sizeof(*th));
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	t0 = now_ms();
	for (i = 0; i < copt.parallel; i++)
		if (pthread_create(&th[i], &attr, client_thread, NULL)) {
			fprintf(stderr, "client: cannot start thread %u\n", i);
			return 1;
		}
	for (i = 0; i < copt.parallel; i++)
		pthread_join(th[i], NULL);
	ms = now_ms() - t0;
	say("client: ok=%u failed=%u up=%llu down=%llu ms=%llu MB/s=%.1f\n", n_ok, n_fail,
	    (unsigned long long)bytes_up, (unsigned long long)bytes_down,
	    (unsigned long long)ms,
	    ms ? (double)(bytes_up + bytes_down) / 1e6 / ((double)ms / 1000) : 0.0);
	free(th);
	SSL_CTX_free(copt.ctx);
	return n_fail ? 1 : 0;
}

/* ---- silent clients ------------------------------------------------------------ */

static int cmd_silent(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "count", required_argument, NULL, 'n' },
		{ "within", required_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	unsigned n = 10, i, closed = 0;
	uint64_t within = 10000, t0, last = 0;
	struct pollfd *p;
	char b[64];
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_addr(optarg, &ss, &sl))
				return 2;
			break;
		case 'n': n = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'w': within = strtoull(optarg, NULL, 10); break;
		default: return 2;
		}
	}
	if (!sl)
		return 2;
	p = calloc(n, sizeof(*p));
	t0 = now_ms();
	for (i = 0; i < n; i++) {
		p[i].fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		p[i].events = POLLIN;
		if (connect(p[i].fd, (struct sockaddr *)&ss, sl) < 0) {
			printf("silent: connect: %s\n", strerror(errno));
			return 1;
		}
	}
	say("silent: %u connections open, saying nothing\n", n);
	while (closed < n && now_ms() - t0 < within) {
		if (poll(p, n, 100) <= 0)
			continue;
		for (i = 0; i < n; i++) {
			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (recv(p[i].fd, b, sizeof(b), MSG_DONTWAIT) > 0)
				continue;
			close(p[i].fd);
			p[i].fd = -1;
			closed++;
			last = now_ms() - t0;
		}
	}
	say("silent: %u of %u closed by the daemon, the last after %llu ms\n", closed, n,
	    (unsigned long long)last);
	for (i = 0; i < n; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
	free(p);
	return closed == n ? 0 : 1;
}

static int cmd_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		return 1;
	printf("%u\n", ntohs(a.sin_port));
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		fprintf(stderr, "usage: proxy-drv backend|client|silent [options]\n");
		return 2;
	}
	if (!strcmp(argv[1], "backend"))
		return cmd_backend(argc - 1, argv + 1);
	if (!strcmp(argv[1], "client"))
		return cmd_client(argc - 1, argv + 1);
	if (!strcmp(argv[1], "silent"))
		return cmd_silent(argc - 1, argv + 1);
	if (!strcmp(argv[1], "port"))
		return cmd_port();
	fprintf(stderr, "proxy-drv: unknown command %s\n", argv[1]);
	return 2;
}
