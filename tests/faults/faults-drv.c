// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * faults-drv: the helpers of the fault-injection suite (tests/faults/run)
 * and the soak (tests/soak/run). Every mode ends by itself (--timeout,
 * default 20 s) and reports "key=value" lines on stdout.
 *
 *   proxy --port P --to PORT --dir c2s|s2c --records N [--bytes B]
 *         --action reset|stall|close|none
 *       One connection: forwards a real TLS exchange between a client on P
 *       and a server on 127.0.0.1:PORT, counting TLS records each way.
 *       Once direction DIR has forwarded N whole records (plus B bytes of
 *       the next), it stops forwarding and resets both sides (RST), stalls
 *       (holds both open, forwards nothing, until --timeout) or closes them
 *       (FIN). It also checks that everything the server sent is shaped as
 *       TLS records (type 20..23, version 3.x, length <= 2^14 + 256): any
 *       other byte is reported as plaintext=yes.
 *
 *   garbage --connect HOST:PORT --certs DIR [--kind K]
 *       A TLS 1.3 client (OpenSSL, verifies the server as "localhost") that
 *       completes a handshake and then writes, raw on the TCP socket, a
 *       record the server's kTLS cannot accept: K = badtag (application
 *       data record of random bytes), oversize (length 2^15), badtype
 *       (content type 99), badversion. Then reads raw until EOF/reset and
 *       reports how the server ended the connection and whether any byte
 *       came back that is not a TLS record (plaintext=yes).
 *
 *   app-recv --port P [--count N]
 *       A plaintext server for running under the shim: accept (blocking),
 *       read until EOF or error, print "recv bytes=N end=ERRNO hex=..." and
 *       close.
 *
 *   echo-server --port P [--count N]
 *       A plaintext epoll echo server for running under the shim (nonblocking
 *       listener, edge-triggered): serves until N connections have closed.
 *
 *   hold --connect HOST:PORT --certs DIR --count N [--hold S]
 *       N TLS connections opened one after another and kept open; then on
 *       each a 16-byte ping that must come back (echo-server), S seconds
 *       of holding, a second ping, close_notify and close. Prints
 *       "hold opened=N echoed=M".
 *
 *   raw --connect HOST:PORT [--send STR]
 *       A plaintext TCP client (the recording peer): sends STR, reads until
 *       EOF/reset/timeout and says whether what came back was TLS-shaped.
 *
 *   deny-tls-rx --trigger FILE -- PROGRAM [ARGS...]
 *       Runs PROGRAM (exec, same pid) under a seccomp filter that hands
 *       every setsockopt(SOL_TLS, TLS_RX) to a supervisor (a forked child,
 *       SECCOMP_RET_USER_NOTIF): while FILE exists the kernel answers the
 *       call with EINVAL, as a kernel lacking the receive side of a cipher
 *       does; otherwise the call goes through. Start-up probes pass, and the
 *       test decides when the refusals begin. The supervisor prints
 *       "deny-tls-rx allowed=N refused=M" to stderr when PROGRAM ends.
 *
 *   deny-connect --trigger FILE -- PROGRAM [ARGS...]
 *       The same for connect(): the first TCP connect() (AF_INET/AF_INET6)
 *       made while FILE exists fails with ECONNREFUSED, and FILE is removed;
 *       every other connect() (the shim's AF_UNIX control connection
 *       included) goes through. Prints "deny-connect allowed=N refused=M".
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
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
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/tls.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

static struct {
	const char *connect, *certs, *dir, *action, *kind, *send, *trigger;
	int port, to, records, bytes, count, timeout_s, hold_s;
} opt = {
	.dir = "s2c", .action = "reset", .kind = "badtag", .count = 1, .timeout_s = 20,
};

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "faults-drv: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static const char *errno_name(int e)
{
	switch (e) {
	case 0: return "eof";
	case EBADMSG: return "EBADMSG";
	case ECONNRESET: return "ECONNRESET";
	case EIO: return "EIO";
	case EMSGSIZE: return "EMSGSIZE";
	case EPIPE: return "EPIPE";
	case EPROTO: return "EPROTO";
	case EINVAL: return "EINVAL";
	case EAGAIN: return "EAGAIN";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ECONNABORTED: return "ECONNABORTED";
	default: return "other";
	}
}

static int listen_on(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || listen(fd, 4096))
		die("listen on %d: %s", port, strerror(errno));
	return fd;
}

static int connect_to(const char *hp, int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	char host[64] = "127.0.0.1";
	int fd, one = 1;

	if (hp) {
		const char *c = strrchr(hp, ':');

		if (!c || (size_t)(c - hp) >= sizeof(host))
			die("bad HOST:PORT '%s'", hp);
		memcpy(host, hp, (size_t)(c - hp));
		host[c - hp] = '\0';
		port = atoi(c + 1);
	}
	sin.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		die("bad address '%s'", host);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)))
		die("connect %s:%d: %s", host, port, strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void rst_close(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

/* ---- TLS record shape tracking ----------------------------------------------- */

struct rec_track {
	uint8_t hdr[5];
	unsigned hdr_have;
	unsigned long body_left;
	unsigned long records;		/* whole records seen */
	bool bad;			/* a byte that is not a TLS record */
	uint8_t first_bad[32];
	unsigned first_bad_len;
	long extra;			/* bytes forwarded past the record limit */
};

/* Feed n bytes; returns how many of them may be forwarded before the limit
 * (limit_records whole records, then limit_bytes bytes of the next) is
 * reached (*hit), or n. limit_records < 0: no limit. */
static void rec_byte(struct rec_track *t, uint8_t b)
{
	if (t->body_left) {
		if (!--t->body_left)
			t->records++;
		return;
	}
	t->hdr[t->hdr_have++] = b;
	if (t->hdr_have == 5) {
		unsigned len = (unsigned)t->hdr[3] << 8 | t->hdr[4];

		if (t->hdr[0] < 20 || t->hdr[0] > 23 || t->hdr[1] != 3 || len > 16384 + 256 || len == 0) {
			if (!t->bad) {
				t->first_bad_len = 5;
				memcpy(t->first_bad, t->hdr, 5);
			}
			t->bad = true;
		}
		t->body_left = len;
		t->hdr_have = 0;
		if (!len)
			t->records++;
	}
}

static size_t rec_feed(struct rec_track *t, const uint8_t *p, size_t n, long limit_records,
		       long limit_bytes, bool *hit)
{
	size_t i;

	*hit = false;
	for (i = 0; i < n; i++) {
		if (limit_records >= 0 && (long)t->records >= limit_records) {
			if (t->extra >= limit_bytes) {
				*hit = true;
				return i;
			}
			t->extra++;
		}
		rec_byte(t, p[i]);
	}
	if (limit_records >= 0 && (long)t->records >= limit_records && t->extra >= limit_bytes)
		*hit = true;
	return n;
}

/* ---- proxy ---------------------------------------------------------------- */

static int mode_proxy(void)
{
	int lfd = listen_on(opt.port), c, s;
	struct rec_track tr[2] = { 0 };	/* 0: c2s, 1: s2c */
	int cut_dir = !strcmp(opt.dir, "c2s") ? 0 : 1;
	bool cut = false;
	uint8_t buf[65536];
	unsigned long long bytes[2] = { 0, 0 };

	printf("listening port=%d\n", opt.port);
	fflush(stdout);
	c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		die("accept: %s", strerror(errno));
	close(lfd);
	s = connect_to(NULL, opt.to);
	for (;;) {
		struct pollfd pf[2] = { { .fd = c, .events = POLLIN }, { .fd = s, .events = POLLIN } };
		int i;

		if (poll(pf, 2, 200) < 0)
			die("poll: %s", strerror(errno));
		for (i = 0; i < 2; i++) {
			int from = i == 0 ? c : s, to = i == 0 ? s : c;
			ssize_t n;
			size_t ok;
			bool hit = false;

			if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(from, buf, sizeof(buf));
			if (n <= 0) {
				printf("end=%s side=%s c2s_records=%lu s2c_records=%lu cut=no plaintext=%s\n",
				       n == 0 ? "eof" : errno_name(errno), i == 0 ? "client" : "server",
				       tr[0].records, tr[1].records, tr[1].bad ? "yes" : "no");
				close(c);
				close(s);
				return 0;
			}
			bytes[i] += (unsigned long long)n;
			if (i == cut_dir)
				ok = rec_feed(&tr[i], buf, (size_t)n, opt.records, opt.bytes, &hit);
			else
				ok = rec_feed(&tr[i], buf, (size_t)n, -1, 0, &hit);
			if (ok && write(to, buf, ok) != (ssize_t)ok)
				fprintf(stderr, "faults-drv: short forward\n");
			if (hit) {
				cut = true;
				break;
			}
		}
		if (cut)
			break;
	}
	printf("cut dir=%s after_records=%d action=%s c2s_records=%lu s2c_records=%lu\n", opt.dir,
	       opt.records, opt.action, tr[0].records, tr[1].records);
	fflush(stdout);
	if (!strcmp(opt.action, "reset")) {
		rst_close(c);
		rst_close(s);
	} else if (!strcmp(opt.action, "close")) {
		close(c);
		close(s);
	} else {
		/* stall: hold both, read (and record) what the server sends, forward nothing */
		time_t end = time(NULL) + opt.timeout_s;

		while (time(NULL) < end) {
			struct pollfd pf = { .fd = s, .events = POLLIN };
			bool hit;
			ssize_t n;

			if (poll(&pf, 1, 200) > 0) {
				n = read(s, buf, sizeof(buf));
				if (n <= 0)
					break;
				rec_feed(&tr[1], buf, (size_t)n, -1, 0, &hit);
			}
		}
		printf("stall ended: server %s\n", time(NULL) < end ? "closed" : "still open");
		close(c);
		close(s);
	}
	printf("end=cut plaintext=%s\n", tr[1].bad ? "yes" : "no");
	return 0;
}

/* ---- TLS client helpers ------------------------------------------------------ */

static SSL_CTX *client_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char ca[512];

	if (!opt.certs)
		die("--certs needed");
	snprintf(ca, sizeof(ca), "%s/ca.pem", opt.certs);
	if (!ctx || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		die("CA %s", ca);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
}

static void set_timeouts(int fd, int secs)
{
	struct timeval tv = { .tv_sec = secs };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Read raw until EOF/error/timeout; track shape. */
static void drain_raw(int fd, const char *what)
{
	struct rec_track t = { 0 };
	uint8_t buf[16384];
	unsigned long long total = 0;
	ssize_t n;
	bool hit;
	int e = 0;

	set_timeouts(fd, 5);
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n <= 0) {
			e = n < 0 ? errno : 0;
			break;
		}
		total += (unsigned long long)n;
		rec_feed(&t, buf, (size_t)n, -1, 0, &hit);
	}
	printf("%s bytes=%llu records=%lu end=%s plaintext=%s", what, total, t.records,
	       e == EAGAIN ? "timeout" : errno_name(e), t.bad ? "yes" : "no");
	if (t.bad) {
		printf(" first=");
		for (unsigned i = 0; i < t.first_bad_len; i++)
			printf("%02x", t.first_bad[i]);
	}
	printf("\n");
}

static int mode_garbage(void)
{
	SSL_CTX *ctx = client_ctx();
	SSL *ssl = SSL_new(ctx);
	int fd = connect_to(opt.connect, 0);
	uint8_t rec[5 + 512];
	size_t len = 5 + 64;

	set_timeouts(fd, opt.timeout_s);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (SSL_connect(ssl) != 1) {
		printf("handshake=failed %s\n", ERR_reason_error_string(ERR_get_error()));
		return 1;
	}
	printf("handshake=ok cipher=%s\n", SSL_get_cipher_name(ssl));
	/* One good record first: the server application must see it. */
	if (opt.send)
		SSL_write(ssl, opt.send, (int)strlen(opt.send));
	usleep(200 * 1000);
	RAND_bytes(rec, sizeof(rec));
	rec[0] = 23;
	rec[1] = 3;
	rec[2] = 3;
	if (!strcmp(opt.kind, "oversize")) {
		rec[3] = 0x80;	/* 32768: more than any TLS 1.3 record */
		rec[4] = 0;
		len = sizeof(rec);
	} else if (!strcmp(opt.kind, "badtype")) {
		rec[0] = 99;
	} else if (!strcmp(opt.kind, "badversion")) {
		rec[1] = 2;
		rec[2] = 0;
	}
	if (strcmp(opt.kind, "oversize")) {
		rec[3] = 0;
		rec[4] = 64;
	}
	if (write(fd, rec, len) != (ssize_t)len)
		printf("write=error %s\n", strerror(errno));
	printf("sent garbage kind=%s bytes=%zu\n", opt.kind, len);
	fflush(stdout);
	drain_raw(fd, "after");
	close(fd);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return 0;
}

/* ---- app-recv / echo-server: plaintext apps for the shim ----------------------- */

static int mode_app_recv(void)
{
	int lfd = listen_on(opt.port), i;

	printf("listening port=%d\n", opt.port);
	fflush(stdout);
	for (i = 0; i < opt.count; i++) {
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), e = 0;
		unsigned long long total = 0;
		uint8_t buf[65536], first[32];
		size_t nfirst = 0;
		ssize_t n;

		if (cfd < 0) {
			printf("accept=error %s\n", errno_name(errno));
			fflush(stdout);
			continue;
		}
		set_timeouts(cfd, opt.timeout_s);
		for (;;) {
			n = read(cfd, buf, sizeof(buf));
			if (n <= 0) {
				e = n < 0 ? errno : 0;
				break;
			}
			if (nfirst < sizeof(first)) {
				size_t k = (size_t)n < sizeof(first) - nfirst ? (size_t)n : sizeof(first) - nfirst;

				memcpy(first + nfirst, buf, k);
				nfirst += k;
			}
			total += (unsigned long long)n;
		}
		printf("recv bytes=%llu end=%s errno=%d data=", total, errno_name(e), e);
		for (size_t k = 0; k < nfirst; k++)
			printf("%c", first[k] >= 32 && first[k] < 127 ? first[k] : '.');
		printf("\n");
		fflush(stdout);
		close(cfd);
	}
	return 0;
}

static int mode_echo_server(void)
{
	int lfd = listen_on(opt.port), ep = epoll_create1(EPOLL_CLOEXEC), closed = 0, open = 0, maxopen = 0;
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, evs[64];
	uint8_t buf[16384];

	fcntl(lfd, F_SETFL, O_NONBLOCK);
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("listening port=%d\n", opt.port);
	fflush(stdout);
	while (closed < opt.count) {
		int n = epoll_wait(ep, evs, 64, opt.timeout_s * 1000), i;

		if (n == 0)
			die("echo-server: idle for %d s (%d open, %d closed)", opt.timeout_s, open, closed);
		for (i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == lfd) {
				for (;;) {
					int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
					struct epoll_event cev = { .events = EPOLLIN };

					if (cfd < 0)
						break;
					cev.data.fd = cfd;
					epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
					if (++open > maxopen)
						maxopen = open;
				}
				continue;
			}
			for (;;) {
				ssize_t r = read(fd, buf, sizeof(buf));

				if (r > 0) {
					if (write(fd, buf, (size_t)r) != r) {
						/* small pings: a short write means trouble */
						r = -1;
					} else {
						continue;
					}
				}
				if (r < 0 && errno == EAGAIN)
					break;
				epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
				close(fd);
				open--;
				closed++;
				break;
			}
		}
	}
	printf("echo-server closed=%d max_open=%d\n", closed, maxopen);
	return 0;
}

/* ---- hold: many long-lived TLS connections ------------------------------------ */

static bool ping(SSL *ssl, int i)
{
	char out[16], in[16];
	int got = 0, n;

	snprintf(out, sizeof(out), "ping%011d", i);
	if (SSL_write(ssl, out, 16) != 16)
		return false;
	while (got < 16) {
		n = SSL_read(ssl, in + got, 16 - got);
		if (n <= 0)
			return false;
		got += n;
	}
	return !memcmp(in, out, 16);
}

static int mode_hold(void)
{
	SSL_CTX *ctx = client_ctx();
	SSL **ssl = calloc((size_t)opt.count, sizeof(*ssl));
	int i, opened = 0, echoed = 0, echoed2 = 0;
	struct rlimit rl;

	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)opt.count + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	for (i = 0; i < opt.count; i++) {
		int fd = connect_to(opt.connect, 0);

		set_timeouts(fd, opt.timeout_s);
		ssl[i] = SSL_new(ctx);
		SSL_set_fd(ssl[i], fd);
		SSL_set_tlsext_host_name(ssl[i], "localhost");
		SSL_set1_host(ssl[i], "localhost");
		if (SSL_connect(ssl[i]) != 1) {
			fprintf(stderr, "hold: handshake %d failed: %s\n", i,
				ERR_reason_error_string(ERR_get_error()));
			SSL_free(ssl[i]);
			close(fd);
			ssl[i] = NULL;
			continue;
		}
		opened++;
	}
	printf("hold opened=%d of %d\n", opened, opt.count);
	fflush(stdout);
	for (i = 0; i < opt.count; i++)
		if (ssl[i] && ping(ssl[i], i))
			echoed++;
	printf("hold first_ping=%d\n", echoed);
	fflush(stdout);
	if (opt.hold_s)
		sleep((unsigned)opt.hold_s);
	for (i = 0; i < opt.count; i++)
		if (ssl[i] && ping(ssl[i], i))
			echoed2++;
	for (i = 0; i < opt.count; i++) {
		if (!ssl[i])
			continue;
		SSL_shutdown(ssl[i]);
		close(SSL_get_fd(ssl[i]));
		SSL_free(ssl[i]);
	}
	printf("hold opened=%d echoed=%d echoed_after_hold=%d\n", opened, echoed, echoed2);
	SSL_CTX_free(ctx);
	free(ssl);
	return opened == opt.count && echoed == opened && echoed2 == opened ? 0 : 1;
}

/* ---- raw: the recording plaintext client ---------------------------------------- */

static int mode_raw(void)
{
	int fd = connect_to(opt.connect, 0);

	if (opt.send && write(fd, opt.send, strlen(opt.send)) < 0)
		printf("write=error %s\n", errno_name(errno));
	drain_raw(fd, "raw");
	close(fd);
	return 0;
}

static void on_alarm(int sig)
{
	static const char msg[] = "faults-drv: timeout\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(124);
}

/* ---- deny-tls-rx, deny-connect ---------------------------------------------------- */

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static const char *deny_mode;
static volatile unsigned long deny_allowed, deny_refused;

static void deny_report(int sig)
{
	char buf[80];
	int n;

	(void)sig;
	n = snprintf(buf, sizeof(buf), "%s allowed=%lu refused=%lu\n", deny_mode, deny_allowed,
		     deny_refused);
	(void)!write(2, buf, (size_t)n);
	_exit(0);
}

/* deny-connect: the address family connect() was given, read from the
 * caller's memory; -1 if it cannot be read. */
static int deny_family(int lfd, const struct seccomp_notif *req)
{
	char path[64];
	sa_family_t fam;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%u/mem", req->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = pread(fd, &fam, sizeof(fam), (off_t)req->data.args[1]);
	close(fd);
	/* The pid may have been reused since the call was made. */
	if (n != (ssize_t)sizeof(fam) || ioctl(lfd, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id))
		return -1;
	return fam;
}

/* The answer to one notified call: 0 lets it through, else -errno. */
static int deny_decide(int lfd, const struct seccomp_notif *req)
{
	struct stat st;
	int fam;

	if (stat(opt.trigger, &st))
		return 0;
	if (!strcmp(deny_mode, "deny-tls-rx"))
		return -EINVAL;	/* as a kernel lacking the receive side of a cipher */
	fam = deny_family(lfd, req);
	if (fam != AF_INET && fam != AF_INET6)
		return 0;
	unlink(opt.trigger);	/* one refusal per trigger */
	return -ECONNREFUSED;
}

/* The supervisor is under the filter too, so the listener never reports
 * "no tasks left": it ends with PROGRAM through PR_SET_PDEATHSIG. */
static void deny_supervise(int lfd, pid_t parent)
{
	struct seccomp_notif_sizes sz;
	struct seccomp_notif *req;
	struct seccomp_notif_resp *resp;

	signal(SIGTERM, deny_report);
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) || getppid() != parent)
		deny_report(0);

	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sz))
		die("SECCOMP_GET_NOTIF_SIZES: %s", strerror(errno));
	req = calloc(1, sz.seccomp_notif > sizeof(*req) ? sz.seccomp_notif : sizeof(*req));
	resp = calloc(1, sz.seccomp_notif_resp > sizeof(*resp) ? sz.seccomp_notif_resp :
		      sizeof(*resp));
	if (!req || !resp)
		die("out of memory");
	for (;;) {
		memset(req, 0, sz.seccomp_notif);
		if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_RECV, req)) {
			if (errno == EINTR)
				continue;
			break;	/* ENOENT: every task under the filter is gone */
		}
		memset(resp, 0, sz.seccomp_notif_resp);
		resp->id = req->id;
		resp->error = deny_decide(lfd, req);
		if (resp->error) {
			deny_refused++;
		} else {
			resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
			deny_allowed++;
		}
		(void)ioctl(lfd, SECCOMP_IOCTL_NOTIF_SEND, resp);
	}
	deny_report(0);
}

/* A filter's start: any call but NR (on x86-64) is allowed. */
#define DENY_ONLY_SYSCALL(NR)								\
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),	\
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),			\
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),					\
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),		\
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (NR), 1, 0),				\
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static int mode_deny(const char *mode, char **prog)
{
	/* setsockopt(SOL_TLS, TLS_RX), or connect(): to the supervisor. */
	struct sock_filter rx[] = {
		DENY_ONLY_SYSCALL(SYS_setsockopt),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOL_TLS, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TLS_RX, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
	};
	struct sock_filter conn[] = {
		DENY_ONLY_SYSCALL(SYS_connect),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
	};
	bool is_rx = !strcmp(mode, "deny-tls-rx");
	struct sock_fprog fp = {
		.len = is_rx ? sizeof(rx) / sizeof(rx[0]) : sizeof(conn) / sizeof(conn[0]),
		.filter = is_rx ? rx : conn,
	};
	pid_t pid, self = getpid();
	int lfd;

	deny_mode = mode;
	if (!opt.trigger || !prog[0])
		die("usage: faults-drv %s --trigger FILE -- PROGRAM [ARGS...]", mode);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	lfd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
			   &fp);
	if (lfd < 0)
		die("seccomp user notification unavailable: %s", strerror(errno));
	/* The supervisor is a child, so that PROGRAM keeps this pid (the
	 * test watches its descriptors). It makes none of the calls it is
	 * asked about: no setsockopt(SOL_TLS), no connect(). */
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		alarm(0);
		deny_supervise(lfd, self);
	}
	close(lfd);
	alarm(0);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGALRM, SIG_DFL);
	execvp(prog[0], prog);
	die("exec %s: %s", prog[0], strerror(errno));
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "port", required_argument, NULL, 'p' },
		{ "to", required_argument, NULL, 'o' },
		{ "certs", required_argument, NULL, 'C' },
		{ "dir", required_argument, NULL, 'd' },
		{ "records", required_argument, NULL, 'r' },
		{ "bytes", required_argument, NULL, 'b' },
		{ "action", required_argument, NULL, 'a' },
		{ "kind", required_argument, NULL, 'k' },
		{ "send", required_argument, NULL, 's' },
		{ "count", required_argument, NULL, 'N' },
		{ "timeout", required_argument, NULL, 't' },
		{ "hold", required_argument, NULL, 'H' },
		{ "trigger", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 },
	};
	const char *mode;
	int c;

	if (argc < 2)
		die("usage: faults-drv MODE [options] (see the source)");
	mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'c': opt.connect = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'o': opt.to = atoi(optarg); break;
		case 'C': opt.certs = optarg; break;
		case 'd': opt.dir = optarg; break;
		case 'r': opt.records = atoi(optarg); break;
		case 'b': opt.bytes = atoi(optarg); break;
		case 'a': opt.action = optarg; break;
		case 'k': opt.kind = optarg; break;
		case 's': opt.send = optarg; break;
		case 'N': opt.count = atoi(optarg); break;
		case 't': opt.timeout_s = atoi(optarg); break;
		case 'H': opt.hold_s = atoi(optarg); break;
		case 'T': opt.trigger = optarg; break;
		default: die("bad option");
		}
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	alarm((unsigned)(opt.timeout_s + opt.hold_s + 10));
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "proxy"))
		return mode_proxy();
	if (!strcmp(mode, "garbage"))
		return mode_garbage();
	if (!strcmp(mode, "app-recv"))
		return mode_app_recv();
	if (!strcmp(mode, "echo-server"))
		return mode_echo_server();
	if (!strcmp(mode, "hold"))
		return mode_hold();
	if (!strcmp(mode, "raw"))
		return mode_raw();
	if (!strcmp(mode, "deny-tls-rx") || !strcmp(mode, "deny-connect"))
		return mode_deny(mode, argv + optind);
	die("unknown mode '%s'", mode);
}
