// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * preload-t: small programs for the preload shim's suite (tests/preload/run)
 * and its benchmarks. Two kinds:
 *
 *  - plaintext "applications" that run under LD_PRELOAD=libktlsh-preload.so
 *    and know nothing of TLS: app-client, app-server, fastpath;
 *  - TLS peers that do not: tls-server (OpenSSL's own record layer, so it
 *    can send NewSessionTickets and KeyUpdates when told), ktls-server (a
 *    handshake in-process with libktlsh and kTLS, for fatal alerts and as
 *    the baseline of the benchmarks), tls-client (handshake latency,
 *    throughput).
 *
 * Every mode ends by itself: --timeout (default 20 s) bounds it. Results
 * are lines of "key=value" on stdout that the run script checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <ktlsh/handshake.h>
#include <ktlsh/record.h>

#define BUF_SIZE	(64 * 1024)

static struct {
	const char *connect, *certs, *name, *send;
	int port;
	bool nonblock, use_epoll, use_readv, use_recvmsg, shut_wr, alert, keyupdate, sink, fill, eof;
	bool no_install, exec_echo;
	const char *self;
	int tickets_after, count, timeout_s, concurrency, delay_ms, listen_fd;
	long long bytes;
	const char *cert_stem;
} opt = {
	.timeout_s = 20,
	.count = 1,
	.cert_stem = "server-ecdsa",
	.listen_fd = -1,
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "preload-t: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The payload: a fixed pseudo-random stream, so both ends can hash it. */
static void pattern(uint8_t *buf, size_t len, uint64_t off)
{
	size_t i;

	for (i = 0; i < len; i++) {
		uint64_t x = (off + i) * 0x9e3779b97f4a7c15ull;

		buf[i] = (uint8_t)(x >> 56);
	}
}

static void hex(const uint8_t *d, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void parse_hostport(const char *s, struct sockaddr_in *sin)
{
	char host[64];
	const char *c = strrchr(s, ':');

	if (!c || (size_t)(c - s) >= sizeof(host))
		die("bad HOST:PORT '%s'", s);
	memcpy(host, s, (size_t)(c - s));
	host[c - s] = '\0';
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)atoi(c + 1));
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		die("bad address '%s'", host);
}

static int listen_on(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || listen(fd, 1024))
		die("listen on %d: %s", port, strerror(errno));
	return fd;
}

static int connect_to(const char *hp, bool nonblock)
{
	struct sockaddr_in sin;
	int fd, one = 1;

	parse_hostport(hp, &sin);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) && errno != EINPROGRESS) {
		printf("connect=error errno=%d (%s)\n", errno, strerror(errno));
		fflush(stdout);
		exit(1);
	}
	return fd;
}

static const char *errno_name(int e)
{
	switch (e) {
	case ECONNRESET: return "ECONNRESET";
	case EKEYEXPIRED: return "EKEYEXPIRED";
	case EBADMSG: return "EBADMSG";
	case EIO: return "EIO";
	case ECONNABORTED: return "ECONNABORTED";
	case EKEYREJECTED: return "EKEYREJECTED";
	case EPROTO: return "EPROTO";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ECONNREFUSED: return "ECONNREFUSED";
	case EAGAIN: return "EAGAIN";
	case EPIPE: return "EPIPE";
	default: return "other";
	}
}

/* ---- app-client: a plaintext client, run under the shim ----------------------------- */

/* Wait for a nonblocking connect the way event loops do. */
static void app_wait_connected(int fd)
{
	socklen_t len = sizeof(int);
	int err = 0;

	if (opt.use_epoll) {
		struct epoll_event ev = { .events = EPOLLOUT | EPOLLET, .data.fd = fd }, out;
		int ep = epoll_create1(EPOLL_CLOEXEC);

		/* Registered after connect() returned EINPROGRESS. */
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
			die("epoll: %s", strerror(errno));
		if (epoll_wait(ep, &out, 1, opt.timeout_s * 1000) != 1) {
			printf("connect=timeout\n");
			exit(1);
		}
		close(ep);
	} else {
		struct pollfd p = { .fd = fd, .events = POLLOUT };

		if (poll(&p, 1, opt.timeout_s * 1000) != 1) {
			printf("connect=timeout\n");
			exit(1);
		}
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
		printf("connect=error errno=%d (%s) name=%s\n", err, strerror(err), errno_name(err));
		exit(1);
	}
}

static ssize_t app_read(int fd, uint8_t *buf, size_t len)
{
	if (opt.use_readv) {
		struct iovec iov[2] = { { buf, len / 2 }, { buf + len / 2, len - len / 2 } };

		return readv(fd, iov, 2);
	}
	if (opt.use_recvmsg) {
		struct iovec iov = { buf, len };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

		return recvmsg(fd, &m, 0);
	}
	return read(fd, buf, len);
}

static int mode_app_client(void)
{
	uint8_t *buf = malloc(BUF_SIZE), md[32];
	char mdhex[65];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	unsigned int mdlen;
	long long total = 0;
	ssize_t n;
	int fd, e = 0;

	fd = connect_to(opt.connect, opt.nonblock);
	if (opt.nonblock) {
		app_wait_connected(fd);
		/* From here on a plain blocking client. */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	}
	printf("connect=ok\n");
	fflush(stdout);
	if (opt.send && write(fd, opt.send, strlen(opt.send)) != (ssize_t)strlen(opt.send))
		die("write: %s", strerror(errno));
	EVP_DigestInit_ex(h, EVP_sha256(), NULL);
	for (;;) {
		n = app_read(fd, buf, BUF_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			e = n < 0 ? errno : 0;
			break;
		}
		EVP_DigestUpdate(h, buf, (size_t)n);
		total += n;
	}
	EVP_DigestFinal_ex(h, md, &mdlen);
	hex(md, 32, mdhex);
	printf("bytes=%lld sha256=%s end=%s\n", total, mdhex, e ? errno_name(e) : "eof");
	if (e)
		printf("errno=%d (%s)\n", e, strerror(e));
	fflush(stdout);
	if (opt.shut_wr)
		shutdown(fd, SHUT_WR);
	close(fd);	/* the shim sends close_notify */
	EVP_MD_CTX_free(h);
	free(buf);
	return 0;
}

/* ---- app-server: a plaintext server, run under the shim ----------------------------- */

/*
 * Per connection: --sink reads until EOF and reports the rate; otherwise
 * writes --bytes of the pattern (at least 1) at once and closes. epoll,
 * edge-triggered, nonblocking listener (--nonblock) or a blocking accept
 * loop. Serves --count connections, then exits.
 */
static void serve_one(int cfd)
{
	uint8_t *buf = malloc(BUF_SIZE);
	long long left = opt.bytes > 0 ? opt.bytes : 1, total = 0, off = 0;
	uint64_t t0 = 0;
	ssize_t n;

	if (opt.fill) {
		/* Write until the socket buffer is full, then close at once. */
		fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) | O_NONBLOCK);
		for (;;) {
			pattern(buf, BUF_SIZE, (uint64_t)off);
			n = write(cfd, buf, BUF_SIZE);
			if (n <= 0)
				break;
			off += n;
		}
		printf("filled bytes=%lld then close (%s)\n", off, n < 0 ? strerror(errno) : "eof");
		fflush(stdout);
		free(buf);
		close(cfd);
		return;
	}
	fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) & ~O_NONBLOCK);
	if (opt.sink) {
		for (;;) {
			n = read(cfd, buf, BUF_SIZE);
			if (n <= 0)
				break;
			if (!t0)
				t0 = now_us();
			total += n;
		}
		printf("sink bytes=%lld us=%llu MBps=%.1f\n", total, (unsigned long long)(now_us() - t0),
		       t0 ? total / (double)(now_us() - t0) : 0.0);
		fflush(stdout);
	} else {
		t0 = now_us();
		while (left > 0) {
			size_t k = left < BUF_SIZE ? (size_t)left : BUF_SIZE;

			pattern(buf, k, (uint64_t)off);
			n = write(cfd, buf, k);
			if (n <= 0)
				break;
			left -= n;
			off += n;
		}
		if (opt.bytes > 1) {
			printf("source bytes=%lld us=%llu MBps=%.1f\n", off, (unsigned long long)(now_us() - t0),
			       off / (double)(now_us() - t0 + 1));
			fflush(stdout);
		}
	}
	free(buf);
	close(cfd);
}

static void serve_exec(int cfd, const char *self);

static int mode_app_server(void)
{
	int lfd = opt.listen_fd >= 0 ? opt.listen_fd : listen_on(opt.port), served = 0, cfd;

	printf("listening port=%d\n", opt.port);
	fflush(stdout);
	if (!opt.nonblock) {
		while (served < opt.count) {
			cfd = accept4(lfd, NULL, NULL, opt.exec_echo ? 0 : SOCK_CLOEXEC);
			if (cfd < 0)
				die("accept: %s", strerror(errno));
			if (opt.exec_echo)
				serve_exec(cfd, opt.self);
			else
				serve_one(cfd);
			served++;
		}
		return 0;
	}
	{
		struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.fd = lfd }, out;
		int ep = epoll_create1(EPOLL_CLOEXEC);

		fcntl(lfd, F_SETFL, O_NONBLOCK);
		epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
		while (served < opt.count) {
			if (epoll_wait(ep, &out, 1, opt.timeout_s * 1000) != 1)
				die("epoll_wait: timeout");
			for (;;) {
				cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
				if (cfd < 0) {
					if (errno == EAGAIN)
						break;
					die("accept4: %s", strerror(errno));
				}
				serve_one(cfd);
				served++;
			}
		}
	}
	return 0;
}

/*
 * exec-server ARGS...: listen on --port, then exec ARGS with the listening
 * socket as descriptor 3 (what systemd socket activation does, or a server
 * that re-executes itself). Then, per accepted connection, app-server
 * --listen-fd 3 forks and execs "preload-t app-echo" with the connection as
 * stdin/stdout (what inetd does).
 */
static int mode_exec_server(char **argv)
{
	int lfd = listen_on(opt.port);

	if (lfd != 3 && (dup2(lfd, 3) < 0 || close(lfd)))
		die("dup2: %s", strerror(errno));
	fcntl(3, F_SETFD, 0);	/* inherited by the program we exec */
	execvp(argv[0], argv);
	die("exec %s: %s", argv[0], strerror(errno));
}

/* app-echo: read a line from stdin, write --bytes of the pattern to stdout,
 * close both (a kTLS socket inherited across exec: close_notify). */
static int mode_app_echo(void)
{
	char line[256];
	uint8_t *buf = malloc(BUF_SIZE);
	long long off = 0;
	ssize_t n;

	n = read(0, line, sizeof(line));
	if (n <= 0)
		die("app-echo: read: %s", n < 0 ? strerror(errno) : "EOF");
	while (off < opt.bytes) {
		size_t k = opt.bytes - off < BUF_SIZE ? (size_t)(opt.bytes - off) : BUF_SIZE;

		pattern(buf, k, (uint64_t)off);
		n = write(1, buf, k);
		if (n <= 0)
			die("app-echo: write: %s", strerror(errno));
		off += n;
	}
	/* The parent closed its copy: ours is the last; shut down to end the
	 * stream whatever the parent did (close() of an inherited socket does
	 * not, by design). */
	shutdown(1, SHUT_WR);
	fprintf(stderr, "app-echo: sent %lld\n", off);
	return 0;
}

/* inetd-like: accept, fork, exec app-echo with the socket as 0 and 1. */
static void serve_exec(int cfd, const char *self)
{
	char bytes[32];
	pid_t pid;

	snprintf(bytes, sizeof(bytes), "%lld", opt.bytes);
	pid = fork();
	if (pid == 0) {
		dup2(cfd, 0);
		dup2(cfd, 1);
		execl(self, self, "app-echo", "--bytes", bytes, (char *)NULL);
		_exit(127);
	}
	close(cfd);
}

/* ---- fastpath: the benchmark loop for callgrind ------------------------------------------ */

static int mode_fastpath(void)
{
	char c;
	int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC), i, s[2];

	if (fd < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, s))
		die("setup: %s", strerror(errno));
	for (i = 0; i < opt.count; i++)
		if (read(fd, &c, 1) != 1)
			die("read");
	for (i = 0; i < opt.count; i++)
		(void)!recv(s[0], &c, 1, MSG_DONTWAIT);
	printf("fastpath calls=%d\n", opt.count);
	return 0;
}

/* ---- TLS peers ------------------------------------------------------------------------------- */

static SSL_CTX *peer_ctx(bool server)
{
	char cert[512], key[512], ca[512];
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	snprintf(cert, sizeof(cert), "%s/%s.pem", opt.certs, opt.cert_stem);
	snprintf(key, sizeof(key), "%s/%s.key", opt.certs, opt.cert_stem);
	snprintf(ca, sizeof(ca), "%s/ca.pem", opt.certs);
	if (!ctx)
		die("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (server) {
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
			die("cannot load %s", cert);
	} else {
		if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
			die("cannot load %s", ca);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	return ctx;
}

static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = opt.timeout_s };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int read_request(SSL *ssl)
{
	char line[1024];
	int n, got = 0;

	/* One line (or whatever arrives first) is the request. */
	while (got < (int)sizeof(line) - 1) {
		n = SSL_read(ssl, line + got, (int)sizeof(line) - 1 - got);
		if (n <= 0)
			return -1;
		got += n;
		if (memchr(line, '\n', (size_t)got))
			break;
	}
	return got;
}

/*
 * tls-server: OpenSSL in user space. Handshake, read one request line,
 * then (--tickets-after N) send N more NewSessionTickets, (--keyupdate) a
 * KeyUpdate, then --bytes of the pattern, then close_notify, and wait for
 * the client's close_notify. Prints what happened.
 */
static int mode_tls_server(void)
{
	SSL_CTX *ctx = peer_ctx(true);
	uint8_t md[32], *buf = malloc(BUF_SIZE);
	char mdhex[65];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	unsigned int mdlen;
	long long off = 0;
	int lfd, fd, i, n, ret, served;
	SSL *ssl;

	lfd = listen_on(opt.port);
	printf("listening port=%d\n", opt.port);
	fflush(stdout);
	for (served = 0; served < opt.count; served++) {
		fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			die("accept: %s", strerror(errno));
		set_timeouts(fd);
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) != 1) {
			printf("handshake=failed %s\n", ERR_reason_error_string(ERR_get_error()));
			fflush(stdout);
			SSL_free(ssl);
			close(fd);
			continue;
		}
		printf("handshake=ok version=%s\n", SSL_get_version(ssl));
		if (read_request(ssl) < 0) {
			printf("request=none\n");
			goto next;
		}
		for (i = 0; i < opt.tickets_after; i++)
			if (SSL_new_session_ticket(ssl) != 1)
				die("SSL_new_session_ticket");
		if (opt.tickets_after && SSL_do_handshake(ssl) != 1)
			die("sending tickets");
		if (opt.keyupdate && (SSL_key_update(ssl, SSL_KEY_UPDATE_NOT_REQUESTED) != 1 ||
				      SSL_do_handshake(ssl) != 1))
			die("SSL_key_update");
		EVP_DigestInit_ex(h, EVP_sha256(), NULL);
		for (off = 0; off < opt.bytes;) {
			int k = opt.bytes - off < BUF_SIZE ? (int)(opt.bytes - off) : BUF_SIZE;

			pattern(buf, (size_t)k, (uint64_t)off);
			EVP_DigestUpdate(h, buf, (size_t)k);
			n = SSL_write(ssl, buf, k);
			if (n <= 0)
				break;
			off += n;
		}
		EVP_DigestFinal_ex(h, md, &mdlen);
		hex(md, 32, mdhex);
		printf("sent bytes=%lld sha256=%s\n", off, mdhex);
		ret = SSL_shutdown(ssl);	/* our close_notify */
		if (ret == 0) {
			/* Wait for theirs. */
			for (;;) {
				n = SSL_read(ssl, buf, BUF_SIZE);
				if (n <= 0)
					break;
			}
		}
		printf("peer_close_notify=%s\n",
		       (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN) ? "yes" : "no");
next:
		fflush(stdout);
		SSL_free(ssl);
		close(fd);
	}
	return 0;
}

static SSL_CTX *ktls_ctx(bool server)
{
	static struct ktlsh_kcaps caps;
	SSL_CTX *ctx = peer_ctx(server);
	int ret;

	if (ktlsh_kernel_probe(&caps))
		die("kernel probe failed");
	ret = ktlsh_ssl_ctx_setup(ctx, &caps, KTLSH_CTX_REQUIRE_OFFLOAD);
	if (ret)
		die("ktlsh_ssl_ctx_setup: %s", strerror(-ret));
	return ctx;
}

/*
 * ktls-server: handshake in-process with libktlsh, kTLS from then on, the
 * same per-connection work as app-server (the benchmarks' baseline). With
 * --alert: after the request, a fatal alert (handshake_failure) instead.
 */
static int mode_ktls_server(void)
{
	SSL_CTX *ctx = opt.no_install ? peer_ctx(true) : ktls_ctx(true);
	struct ktlsh_hs_params params = { .role = KTLSH_ROLE_SERVER };
	struct ktlsh_hs_info info;
	char req[256];
	int lfd, fd, served, ret;

	lfd = listen_on(opt.port);
	printf("listening port=%d\n", opt.port);
	fflush(stdout);
	for (served = 0; served < opt.count; served++) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			die("accept: %s", strerror(errno));
		if (opt.no_install) {
			/* The benchmarks' native baseline: the handshake alone. */
			struct ktlsh_hs *hs;
			struct pollfd pfd = { .fd = fd };

			ret = ktlsh_hs_new(&hs, ctx, fd, &params);
			while (!ret && (ret = ktlsh_hs_step(hs)) == -EAGAIN) {
				pfd.events = ktlsh_hs_events(hs);
				ret = poll(&pfd, 1, opt.timeout_s * 1000) == 1 ? 0 : -ETIMEDOUT;
			}
			if (!ret)
				ktlsh_hs_free(hs);
			close(fd);
			continue;
		}
		ret = ktlsh_handshake(ctx, fd, &params, opt.timeout_s * 1000, &info);
		if (ret) {
			printf("handshake=failed %s\n", info.reason);
			fflush(stdout);
			close(fd);
			continue;
		}
		if (opt.alert) {
			set_timeouts(fd);
			(void)!ktlsh_recv(fd, req, sizeof(req), 0);
			ret = ktlsh_send_alert(fd, KTLSH_ALERT_FATAL, 40);
			printf("alert=%s\n", ret ? strerror(-ret) : "sent");
			fflush(stdout);
			usleep(200000);
			close(fd);
			continue;
		}
		serve_one(fd);
	}
	return 0;
}

/* ---- tls-client: the benchmarks' load ---------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * --count connections, one after the other. Each: connect, handshake, and
 * (without --bytes) read the first byte of the answer: the set-up time as
 * a client sees it. With --bytes and --sink... see the run script.
 */
static int mode_tls_client(void)
{
	SSL_CTX *ctx = peer_ctx(false);
	uint64_t *lat = calloc((size_t)opt.count, sizeof(*lat)), t0, t1 = 0;
	uint8_t *buf = malloc(BUF_SIZE);
	int i, fd, n, ok = 0;
	long long total;
	SSL *ssl;

	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	for (i = 0; i < opt.count; i++) {
		t0 = now_us();
		fd = connect_to(opt.connect, false);
		set_timeouts(fd);
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		SSL_set_tlsext_host_name(ssl, (char *)(opt.name ? opt.name : "localhost"));
		SSL_set1_host(ssl, opt.name ? opt.name : "localhost");
		if (SSL_connect(ssl) != 1)
			goto next;
		if (opt.delay_ms)
			usleep((useconds_t)opt.delay_ms * 1000);
		if (opt.count == 1)
			fprintf(stderr, "cipher=%s\n", SSL_get_cipher_name(ssl));
		if (opt.sink) {
			/* We send --bytes; the server reads. */
			for (total = 0; total < opt.bytes;) {
				int k = opt.bytes - total < BUF_SIZE ? (int)(opt.bytes - total) : BUF_SIZE;

				pattern(buf, (size_t)k, (uint64_t)total);
				n = SSL_write(ssl, buf, k);
				if (n <= 0)
					break;
				total += n;
			}
			/* Our close_notify, then wait for the server to close: closing
			 * with its tickets unread would reset the connection and cut
			 * off what it has not read yet. */
			SSL_shutdown(ssl);
			shutdown(fd, SHUT_WR);
			while (SSL_read(ssl, buf, BUF_SIZE) > 0)
				;
			ok++;
			goto next;
		}
		total = 0;
		if (opt.send)
			SSL_write(ssl, opt.send, (int)strlen(opt.send));
		if (opt.eof) {
			/* Everything until the end, then: how did it end? */
			while ((n = SSL_read(ssl, buf, BUF_SIZE)) > 0)
				total += n;
			lat[ok] = now_us() - t0;
			if (opt.count == 1)
				printf("bytes=%lld close_notify=%s\n", total,
				       SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN ? "yes" : "no");
			ok++;
			goto next;
		}
		do {
			n = SSL_read(ssl, buf, BUF_SIZE);
			if (n > 0 && !total)
				t1 = now_us();
			if (n > 0)
				total += n;
		} while (n > 0 && total < (opt.bytes > 1 ? opt.bytes : 1));
		if (total >= (opt.bytes > 1 ? opt.bytes : 1)) {
			lat[ok++] = t1 - t0;
			if (opt.bytes > 1) {
				/* After the data: close_notify, or the bare end of TCP? */
				n = SSL_read(ssl, buf, BUF_SIZE);
				printf("bytes=%lld close_notify=%s\n", total,
				       n == 0 && SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN ? "yes" : "no");
			}
		}
next:
		SSL_free(ssl);
		close(fd);
	}
	if (!opt.sink && ok && (!opt.eof || opt.count > 1)) {
		qsort(lat, (size_t)ok, sizeof(*lat), cmp_u64);
		printf("setup n=%d p50_us=%llu p90_us=%llu min_us=%llu\n", ok,
		       (unsigned long long)lat[ok / 2], (unsigned long long)lat[ok * 9 / 10],
		       (unsigned long long)lat[0]);
	} else {
		printf("ok=%d of %d\n", ok, opt.count);
	}
	return ok == opt.count ? 0 : 1;
}

/* freeport: a port nobody listens on now (the host is shared by other
 * test runs when there is no guest kernel). */
static int mode_freeport(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) ||
	    getsockname(fd, (struct sockaddr *)&sin, &len))
		die("freeport: %s", strerror(errno));
	printf("%d\n", ntohs(sin.sin_port));
	return 0;
}

/* ---- main --------------------------------------------------------------------------------------- */

static void on_alarm(int sig)
{
	static const char msg[] = "preload-t: timeout\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(124);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "port", required_argument, NULL, 'p' },
		{ "certs", required_argument, NULL, 'C' },
		{ "cert", required_argument, NULL, 'K' },
		{ "name", required_argument, NULL, 'n' },
		{ "send", required_argument, NULL, 's' },
		{ "bytes", required_argument, NULL, 'b' },
		{ "count", required_argument, NULL, 'N' },
		{ "timeout", required_argument, NULL, 't' },
		{ "tickets-after", required_argument, NULL, 'T' },
		{ "delay-ms", required_argument, NULL, 'D' },
		{ "nonblock", no_argument, NULL, 1 },
		{ "epoll", no_argument, NULL, 2 },
		{ "readv", no_argument, NULL, 3 },
		{ "recvmsg", no_argument, NULL, 4 },
		{ "shut-wr", no_argument, NULL, 5 },
		{ "alert", no_argument, NULL, 6 },
		{ "keyupdate", no_argument, NULL, 7 },
		{ "sink", no_argument, NULL, 8 },
		{ "fill", no_argument, NULL, 9 },
		{ "eof", no_argument, NULL, 10 },
		{ "no-install", no_argument, NULL, 11 },
		{ "listen-fd", required_argument, NULL, 'L' },
		{ "exec-echo", no_argument, NULL, 12 },
		{ NULL, 0, NULL, 0 },
	};
	const char *mode;
	int c;

	if (argc < 2)
		die("usage: preload-t MODE [options] (see the source)");
	mode = argv[1];
	opt.self = argv[0];
	optind = 2;
	/* exec-server: options up to "--", then the command to exec. */
	while ((c = getopt_long(argc, argv, "+", lo, NULL)) != -1) {
		switch (c) {
		case 'c': opt.connect = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'C': opt.certs = optarg; break;
		case 'K': opt.cert_stem = optarg; break;
		case 'n': opt.name = optarg; break;
		case 's': opt.send = optarg; break;
		case 'b': opt.bytes = atoll(optarg); break;
		case 'N': opt.count = atoi(optarg); break;
		case 't': opt.timeout_s = atoi(optarg); break;
		case 'T': opt.tickets_after = atoi(optarg); break;
		case 'D': opt.delay_ms = atoi(optarg); break;
		case 1: opt.nonblock = true; break;
		case 2: opt.use_epoll = opt.nonblock = true; break;
		case 3: opt.use_readv = true; break;
		case 4: opt.use_recvmsg = true; break;
		case 5: opt.shut_wr = true; break;
		case 6: opt.alert = true; break;
		case 7: opt.keyupdate = true; break;
		case 8: opt.sink = true; break;
		case 9: opt.fill = true; break;
		case 10: opt.eof = true; break;
		case 11: opt.no_install = true; break;
		case 12: opt.exec_echo = true; break;
		case 'L': opt.listen_fd = atoi(optarg); break;
		default: die("bad option");
		}
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	alarm((unsigned int)opt.timeout_s + 5);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "exec-server")) {
		if (optind >= argc)
			die("exec-server: no command");
		return mode_exec_server(argv + optind);
	}
	if (!strcmp(mode, "app-echo"))
		return mode_app_echo();
	if (!strcmp(mode, "app-client"))
		return mode_app_client();
	if (!strcmp(mode, "app-server"))
		return mode_app_server();
	if (!strcmp(mode, "freeport"))
		return mode_freeport();
	if (!strcmp(mode, "fastpath"))
		return mode_fastpath();
	if (!strcmp(mode, "tls-server"))
		return mode_tls_server();
	if (!strcmp(mode, "ktls-server"))
		return mode_ktls_server();
	if (!strcmp(mode, "tls-client"))
		return mode_tls_client();
	die("unknown mode '%s'", mode);
}
