/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * t_util.h: what the integration-suite drivers (tests/kernel/ktlsh-kt.c,
 * tests/daemon/ktlshd-it.c) have in common: clocks and deadlines, "# "
 * diagnostics, the case-to-runner report channel, peers as child processes
 * in their own process groups, loopback sockets, the kernel's kTLS state,
 * argv building, payloads and their SHA-256.
 *
 * A header of static functions rather than a library: the Makefile
 * builds every tests/<dir>/<name>.c into a program of its own, so a .c here
 * would become a program without main. Each function is static and marked
 * unused (T_HELPER): each driver uses only some of them, and -Wall -Werror
 * would reject the rest; not inline, so that the compiler inlines them as it
 * did when they were plain statics in the drivers (GCC's -O2 warnings such
 * as -Warray-bounds depend on it).
 *
 * The includer defines SHA256_LEN, TAIL_HEAD and TAIL_TAIL (each suite
 * sizes its own), sets t_verbose from its --verbose option, t_case_t0 when a
 * case starts and t_report_fd in the case's child.
 */
#ifndef KTLSH_TESTS_T_UTIL_H
#define KTLSH_TESTS_T_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/tls.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/err.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define T_HELPER static __attribute__((unused))

/* ---- state the helpers share with the driver ----------------------------- */

static bool t_verbose;		/* --verbose: timestamps and quiet successes shown */
static uint64_t t_case_t0;	/* when the running case began; 0 in the runner */
static int t_report_fd = -1;	/* the case's pipe to the runner; -1 in the runner */

/* ---- clocks and deadlines ---------------------------------------------------- */

T_HELPER uint64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

T_HELPER int t_ms_left(uint64_t deadline)
{
	uint64_t now = t_now_ms();

	if (now >= deadline)
		return 0;
	return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

T_HELPER int t_min_int(int a, int b)
{
	return a < b ? a : b;
}

T_HELPER void t_msleep(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ---- diagnostics --------------------------------------------------------------- */

/* Indented "# " lines, printed as they happen so that a case killed by the
 * runner still leaves its trail. */
__attribute__((format(printf, 1, 2)))
T_HELPER void t_note(const char *fmt, ...)
{
	char buf[4096];
	const char *p, *nl;
	size_t used = 0;
	va_list ap;

	/* With --verbose, time since the case began: where the seconds go. */
	if (t_verbose && t_case_t0)
		used = (size_t)snprintf(buf, sizeof(buf), "[%6.3f] ",
					(double)(t_now_ms() - t_case_t0) / 1000);
	va_start(ap, fmt);
	vsnprintf(buf + used, sizeof(buf) - used, fmt, ap);
	va_end(ap);
	for (p = buf; *p; p = nl + 1) {
		nl = strchr(p, '\n');
		if (!nl) {
			printf("    # %s\n", p);
			break;
		}
		printf("    # %.*s\n", (int)(nl - p), p);
	}
	fflush(stdout);
}

T_HELPER bool t_contains_ci(const char *hay, const char *needle)
{
	return hay && strcasestr(hay, needle) != NULL;
}

/* Output as indented lines; binary bytes shown as '.'. */
T_HELPER void t_note_indented(const char *buf, size_t len)
{
	char line[512];
	size_t i, n = 0;

	for (i = 0; i <= len; i++) {
		if (i == len || buf[i] == '\n' || n == sizeof(line) - 1) {
			if (n || (i < len && buf[i] == '\n'))
				t_note("  | %.*s", (int)n, line);
			n = 0;
			if (i < len && buf[i] != '\n')
				line[n++] = buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : '.';
			continue;
		}
		line[n++] = buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : '.';
	}
}

/* Keep the first and the last few KiB of a stream: enough to diagnose a
 * peer without storing the 32 MiB gnutls-serv writes to stderr. */
struct t_tail {
	char head[TAIL_HEAD + 1];
	size_t head_len;
	char tail[TAIL_TAIL + 1];
	size_t tail_len;
	size_t total;
};

T_HELPER void t_tail_add(struct t_tail *t, const char *buf, size_t n)
{
	size_t take;

	t->total += n;
	take = TAIL_HEAD - t->head_len;
	if (take > n)
		take = n;
	memcpy(t->head + t->head_len, buf, take);
	t->head_len += take;
	t->head[t->head_len] = '\0';
	buf += take;
	n -= take;
	if (!n)
		return;
	if (n >= TAIL_TAIL) {
		memcpy(t->tail, buf + n - TAIL_TAIL, TAIL_TAIL);
		t->tail_len = TAIL_TAIL;
	} else {
		if (t->tail_len + n > TAIL_TAIL) {
			size_t drop = t->tail_len + n - TAIL_TAIL;

			memmove(t->tail, t->tail + drop, t->tail_len - drop);
			t->tail_len -= drop;
		}
		memcpy(t->tail + t->tail_len, buf, n);
		t->tail_len += n;
	}
	t->tail[t->tail_len] = '\0';
}

/* strstr over a stream that may hold NULs: replace them for searching. */
T_HELPER bool t_tail_contains(const struct t_tail *t, const char *needle)
{
	char h[TAIL_HEAD + 1], tl[TAIL_TAIL + 1];
	size_t i;

	for (i = 0; i < t->head_len; i++)
		h[i] = t->head[i] ? t->head[i] : ' ';
	h[t->head_len] = '\0';
	for (i = 0; i < t->tail_len; i++)
		tl[i] = t->tail[i] ? t->tail[i] : ' ';
	tl[t->tail_len] = '\0';
	return t_contains_ci(h, needle) || t_contains_ci(tl, needle);
}

T_HELPER void t_tail_note(const struct t_tail *t, const char *what)
{
	if (!t->total)
		return;
	t_note("%s (%zu bytes):", what, t->total);
	t_note_indented(t->head, t->head_len);
	if (t->total > t->head_len + t->tail_len)
		t_note("  [... %zu bytes ...]", t->total - t->head_len - t->tail_len);
	t_note_indented(t->tail, t->tail_len);
}

/* ---- results and the channel to the runner ------------------------------- */

enum t_verdict { T_PASS, T_FAIL, T_SKIP };

struct t_result {
	enum t_verdict verdict;
	char why[512];
};

/* One line to the runner ("peer PID", "result V WHY"): the runner kills
 * what a case reported if the case overruns. */
__attribute__((format(printf, 1, 2)))
T_HELPER void t_report(const char *fmt, ...)
{
	char buf[700];
	va_list ap;
	int n;

	if (t_report_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(t_report_fd, buf, (size_t)n) < 0)
		return;
}

/* The first failure is the one worth reporting; later ones are noted. */
__attribute__((format(printf, 2, 3)))
T_HELPER int t_fail(struct t_result *r, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (r->verdict != T_FAIL) {
		r->verdict = T_FAIL;
		snprintf(r->why, sizeof(r->why), "%s", buf);
	}
	t_note("FAIL: %s", buf);
	return -1;
}

/* ---- descriptors ---------------------------------------------------------------- */

T_HELPER int t_set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

T_HELPER void t_close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Entries in a directory, "." and ".." not counted; -1 if it cannot be read. */
T_HELPER int t_count_dir(const char *path)
{
	DIR *d = opendir(path);
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

/* Open descriptors: every case checks it closed all it opened. */
T_HELPER int t_count_fds(void)
{
	int n = t_count_dir("/proc/self/fd");

	return n < 0 ? n : n - 1;	/* the directory's own fd */
}

/* ---- peer processes -------------------------------------------------------- */

struct t_peer {
	char name[32];
	pid_t pid;		/* 0: none started */
	int pidfd;
	int in_fd, out_fd, err_fd;
	bool exited;
	int status;
	struct t_tail out, err;
	char log_path[PATH_MAX];	/* a log file it writes (gnutls-cli --logfile), "" if none */
};

T_HELPER void t_peer_init(struct t_peer *p)
{
	memset(p, 0, sizeof(*p));
	p->pidfd = p->in_fd = p->out_fd = p->err_fd = -1;
}

/*
 * Start argv (or fn(arg) in a forked child when argv is NULL) in its own
 * process group with pipes on 0/1/2, or with stdout and stderr appended to
 * log_path. PR_SET_PDEATHSIG ties its life to the case process: when the
 * runner kills a case, its peers (and a daemon) die with it.
 */
T_HELPER int t_peer_start(struct t_peer *p, const char *name, char *const argv[],
			       int (*fn)(void *), void *arg, const char *log_path)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
	pid_t parent = getpid();
	sigset_t all;
	int ret, lfd;

	snprintf(p->name, sizeof(p->name), "%s", name);
	if (pipe2(in, O_CLOEXEC) || (!log_path && (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)))) {
		ret = -errno;
		goto fail;
	}
	fflush(stdout);
	fflush(stderr);
	p->pid = fork();
	if (p->pid < 0) {
		ret = -errno;
		p->pid = 0;
		goto fail;
	}
	if (p->pid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		if (log_path) {
			lfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			if (lfd < 0 || dup2(in[0], 0) < 0 || dup2(lfd, 1) < 0 || dup2(lfd, 2) < 0)
				_exit(127);
		} else if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0) {
			_exit(127);
		}
		if (!argv) {
			/* No exec: drop every inherited descriptor but 0-2. */
			syscall(SYS_close_range, 3U, ~0U, 0U);
			_exit(fn(arg));
		}
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	setpgid(p->pid, p->pid);	/* either side may win the race; both set it */
	t_report("peer %d", (int)p->pid);
	close(in[0]);
	p->in_fd = in[1];
	(void)t_set_nonblock(p->in_fd, true);
	if (!log_path) {
		close(out[1]);
		close(err[1]);
		p->out_fd = out[0];
		p->err_fd = err[0];
		(void)t_set_nonblock(p->out_fd, true);
		(void)t_set_nonblock(p->err_fd, true);
	}
	p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	if (t_verbose && argv) {
		char line[2048] = "";
		size_t used = 0;
		int i;

		for (i = 0; argv[i] && used < sizeof(line) - 1; i++)
			used += (size_t)snprintf(line + used, sizeof(line) - used, "%s ", argv[i]);
		t_note("start %s: %s", name, line);
	}
	return 0;
fail:
	t_close_fd(&in[0]);
	t_close_fd(&in[1]);
	t_close_fd(&out[0]);
	t_close_fd(&out[1]);
	t_close_fd(&err[0]);
	t_close_fd(&err[1]);
	return ret;
}

T_HELPER bool t_peer_running(struct t_peer *p)
{
	int st;

	if (!p->pid || p->exited)
		return false;
	if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
		p->exited = true;
		p->status = st;
		return false;
	}
	return true;
}

T_HELPER const char *t_peer_status_str(const struct t_peer *p, char *buf, size_t len)
{
	if (!p->pid)
		snprintf(buf, len, "not started");
	else if (!p->exited)
		snprintf(buf, len, "still running");
	else if (WIFEXITED(p->status))
		snprintf(buf, len, "exit %d", WEXITSTATUS(p->status));
	else if (WIFSIGNALED(p->status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(p->status));
	else
		snprintf(buf, len, "status 0x%x", p->status);
	return buf;
}

/* Read whatever the peer has written into t (the kernel suite's pump reads
 * stdout as data instead). Returns true if anything was read. */
T_HELPER bool t_peer_drain_fd(int *fd, struct t_tail *t)
{
	char buf[65536];
	bool any = false;
	ssize_t n;

	while (*fd >= 0) {
		n = read(*fd, buf, sizeof(buf));
		if (n > 0) {
			t_tail_add(t, buf, (size_t)n);
			any = true;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			t_close_fd(fd);
		break;
	}
	return any;
}

T_HELPER void t_peer_drain(struct t_peer *p)
{
	t_peer_drain_fd(&p->out_fd, &p->out);
	t_peer_drain_fd(&p->err_fd, &p->err);
}

/* Wait for the peer to exit on its own, draining its output meanwhile. */
T_HELPER int t_peer_wait(struct t_peer *p, uint64_t deadline)
{
	struct pollfd pfd[3];
	int n;

	while (t_peer_running(p)) {
		int left = t_ms_left(deadline);

		if (!left)
			return -ETIMEDOUT;
		n = 0;
		if (p->out_fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = p->out_fd, .events = POLLIN };
		if (p->err_fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = p->err_fd, .events = POLLIN };
		if (p->pidfd >= 0)
			pfd[n++] = (struct pollfd){ .fd = p->pidfd, .events = POLLIN };
		/* Without a pidfd, poll a little and look again. */
		poll(pfd, (nfds_t)n, t_min_int(left, p->pidfd >= 0 ? 1000 : 20));
		t_peer_drain(p);
	}
	t_peer_drain(p);
	return 0;
}

/* Make sure the peer is gone: TERM its group, give it a moment, KILL. */
T_HELPER void t_peer_stop(struct t_peer *p)
{
	if (!p->pid)
		return;
	if (t_peer_running(p)) {
		kill(-p->pid, SIGTERM);
		if (t_peer_wait(p, t_now_ms() + 2000)) {
			kill(-p->pid, SIGKILL);
			if (waitpid(p->pid, &p->status, 0) == p->pid)
				p->exited = true;
		}
	}
	/* Its group may hold others (none of ours fork, but be sure). */
	kill(-p->pid, SIGKILL);
	t_peer_drain(p);
	t_close_fd(&p->in_fd);
	t_close_fd(&p->out_fd);
	t_close_fd(&p->err_fd);
	t_close_fd(&p->pidfd);
}

/* ---- sockets on our side ------------------------------------------------- */

/* A listener on 127.0.0.1, port chosen by the kernel and returned in *port. */
T_HELPER int t_listen_local(int *port, int backlog)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int one = 1, fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, backlog) ||
	    getsockname(fd, (struct sockaddr *)&a, &alen)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

/* A port for a peer's listener: bind 0, read it back, close. */
T_HELPER int t_free_port(void)
{
	int port = 0, fd = t_listen_local(&port, 1);

	if (fd < 0)
		return fd;
	close(fd);
	return port;
}

/* Connect to the peer's listener, retrying with backoff (doubling from 10 ms
 * up to max_delay_ms) while it starts: process start costs up to a second
 * in the UML guest. */
T_HELPER int t_connect_retry(int port, struct t_peer *p, uint64_t deadline, int max_delay_ms,
				  struct t_result *r)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int delay = 10, fd, err;
	char st[64];

	for (;;) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return t_fail(r, "socket: %s", strerror(errno));
		if (!connect(fd, (struct sockaddr *)&a, sizeof(a)))
			return fd;
		err = errno;
		close(fd);
		if (err != ECONNREFUSED && err != EINTR)
			return t_fail(r, "connect 127.0.0.1:%d: %s", port, strerror(err));
		t_peer_drain(p);
		if (!t_peer_running(p))
			return t_fail(r, "%s exited (%s) before listening", p->name,
				      t_peer_status_str(p, st, sizeof(st)));
		if (!t_ms_left(deadline))
			return t_fail(r, "%s never listened on port %d", p->name, port);
		t_msleep(t_min_int(delay, t_ms_left(deadline)));
		delay = t_min_int(delay * 2, max_delay_ms);
	}
}

/* The socket's upper-layer protocol ("tls" once kTLS is on), "" if none. */
T_HELPER int t_ulp_name(int fd, char *buf, size_t len)
{
	socklen_t l = (socklen_t)(len - 1);

	memset(buf, 0, len);
	if (getsockopt(fd, SOL_TCP, TCP_ULP, buf, &l))
		return -errno;
	buf[l < len ? l : len - 1] = '\0';
	return 0;
}

/* ---- kernel TLS state ------------------------------------------------------ */

/* The kernel's view of one direction: version, cipher and the record
 * sequence number it will use next. The readback includes the key, so the
 * buffer is wiped before return. */
T_HELPER int t_ktls_readback(int fd, int optname, unsigned *version, unsigned *cipher,
			    uint64_t *seq)
{
	union {
		struct tls_crypto_info info;
		struct tls12_crypto_info_aes_gcm_128 g128;
		struct tls12_crypto_info_aes_gcm_256 g256;
		struct tls12_crypto_info_aes_ccm_128 ccm;
		struct tls12_crypto_info_chacha20_poly1305 chacha;
	} u;
	socklen_t len = sizeof(u.info);
	const unsigned char *rec_seq;
	int ret = 0, i;

	memset(&u, 0, sizeof(u));
	if (getsockopt(fd, SOL_TLS, optname, &u, &len))
		return -errno;
	*version = u.info.version;
	*cipher = u.info.cipher_type;
	switch (u.info.cipher_type) {
	case TLS_CIPHER_AES_GCM_128:
		len = sizeof(u.g128);
		rec_seq = u.g128.rec_seq;
		break;
	case TLS_CIPHER_AES_GCM_256:
		len = sizeof(u.g256);
		rec_seq = u.g256.rec_seq;
		break;
	case TLS_CIPHER_AES_CCM_128:
		len = sizeof(u.ccm);
		rec_seq = u.ccm.rec_seq;
		break;
	case TLS_CIPHER_CHACHA20_POLY1305:
		len = sizeof(u.chacha);
		rec_seq = u.chacha.rec_seq;
		break;
	default:
		return -EPROTONOSUPPORT;
	}
	if (getsockopt(fd, SOL_TLS, optname, &u, &len)) {
		ret = -errno;
		goto out;
	}
	*seq = 0;
	for (i = 0; i < 8; i++)
		*seq = (*seq << 8) | rec_seq[i];
out:
	explicit_bzero(&u, sizeof(u));
	return ret;
}

/* ---- argv building --------------------------------------------------------- */

struct t_argv {
	char *v[64];
	int n;
};

/* Append one formatted argument; past the 63rd they are dropped. */
__attribute__((format(printf, 2, 3)))
T_HELPER void t_arg_add(struct t_argv *a, const char *fmt, ...)
{
	char buf[PATH_MAX + 64];
	va_list ap;

	if (a->n >= (int)(sizeof(a->v) / sizeof(a->v[0])) - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	a->v[a->n++] = strdup(buf);
	a->v[a->n] = NULL;
}

/* A real ClientHello (SNI localhost), made by OpenSSL into a memory BIO:
 * its length in buf, or -1. */
T_HELPER ssize_t t_make_client_hello(uint8_t *buf, size_t len)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	ssize_t n = -1;

	if (!ssl || !rb || !wb) {
		BIO_free(rb);
		BIO_free(wb);
		goto out;
	}
	SSL_set_bio(ssl, rb, wb);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set_connect_state(ssl);
	SSL_do_handshake(ssl);	/* wants a read: the hello is in wb */
	n = BIO_read(wb, buf, (int)len);
out:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return n;
}

/*
 * The openssl peers both drivers run, on 127.0.0.1:PORT with the test PKI
 * in CERTS: mutual TLS, each side verifying the other against ca.pem, the
 * client checking the name "localhost". NAME is the pair the peer presents
 * (CERTS/NAME.pem and .key); the caller adds versions, ciphers and ALPN.
 */
T_HELPER void t_arg_s_client(struct t_argv *a, const char *openssl, int port, const char *certs,
			     const char *name)
{
	t_arg_add(a, "%s", openssl);
	t_arg_add(a, "s_client");
	t_arg_add(a, "-quiet");
	t_arg_add(a, "-no_ign_eof");
	t_arg_add(a, "-nocommands");
	t_arg_add(a, "-connect");
	t_arg_add(a, "127.0.0.1:%d", port);
	t_arg_add(a, "-servername");
	t_arg_add(a, "localhost");
	t_arg_add(a, "-verify_hostname");
	t_arg_add(a, "localhost");
	t_arg_add(a, "-CAfile");
	t_arg_add(a, "%s/ca.pem", certs);
	t_arg_add(a, "-verify_return_error");
	t_arg_add(a, "-cert");
	t_arg_add(a, "%s/%s.pem", certs, name);
	t_arg_add(a, "-key");
	t_arg_add(a, "%s/%s.key", certs, name);
}

/* One connection, then it exits. */
T_HELPER void t_arg_s_server(struct t_argv *a, const char *openssl, int port, const char *certs,
			     const char *name)
{
	t_arg_add(a, "%s", openssl);
	t_arg_add(a, "s_server");
	t_arg_add(a, "-quiet");
	t_arg_add(a, "-naccept");
	t_arg_add(a, "1");
	t_arg_add(a, "-accept");
	t_arg_add(a, "127.0.0.1:%d", port);
	t_arg_add(a, "-cert");
	t_arg_add(a, "%s/%s.pem", certs, name);
	t_arg_add(a, "-key");
	t_arg_add(a, "%s/%s.key", certs, name);
	t_arg_add(a, "-CAfile");
	t_arg_add(a, "%s/ca.pem", certs);
	t_arg_add(a, "-Verify");
	t_arg_add(a, "1");
	t_arg_add(a, "-verify_return_error");
}

T_HELPER void t_argv_free(struct t_argv *a)
{
	while (a->n > 0)
		free(a->v[--a->n]);
}

/* A program's path from $PATH, "" if it is not there. */
T_HELPER void t_find_tool(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");
	char dir[PATH_MAX];
	const char *p, *colon;

	out[0] = '\0';
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p; p = colon + 1) {
		colon = strchrnul(p, ':');
		snprintf(dir, sizeof(dir), "%.*s/%s", (int)(colon - p), p, name);
		if (!access(dir, X_OK)) {
			snprintf(out, len, "%s", dir);
			return;
		}
		if (!*colon)
			break;
	}
}

/* ---- payloads and their hashes ------------------------------------------- */

T_HELPER void t_sha256(const void *buf, size_t len, uint8_t out[SHA256_LEN])
{
	unsigned n = 0;

	EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL);
}

/*
 * A random payload. gnutls-serv --echo echoes text lines only, so for it
 * the bytes become base64-alphabet lines ending in '\n' (no '*', which
 * starts its commands; no '\r', which it rewrites).
 */
T_HELPER uint8_t *t_payload_make(size_t len, bool text)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint8_t *p = malloc(len ? len : 1);
	size_t i;

	if (!p || RAND_bytes(p, (int)len) != 1) {
		free(p);
		return NULL;
	}
	if (text) {
		for (i = 0; i < len; i++)
			p[i] = (i % 65 == 64) ? '\n' : (uint8_t)alpha[p[i] & 63];
		if (len)
			p[len - 1] = '\n';
	}
	return p;
}

/* Bytes seen in one direction, hashed as they come, against what was sent. */
struct t_stream {
	EVP_MD_CTX *md;
	size_t n, expect;
	uint8_t want[SHA256_LEN];
};

/* want: the SHA-256 of the expect bytes that were sent (NULL: set later). */
T_HELPER int t_stream_init(struct t_stream *s, size_t expect, const uint8_t *want)
{
	s->n = 0;
	s->expect = expect;
	if (want)
		memcpy(s->want, want, SHA256_LEN);
	s->md = EVP_MD_CTX_new();
	return s->md && EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) ? 0 : -ENOMEM;
}

T_HELPER int t_stream_add(struct t_stream *s, const void *buf, size_t n, char *err,
			       size_t errlen, const char *what)
{
	if (s->n + n > s->expect) {
		snprintf(err, errlen, "%s: %zu bytes more than the %zu expected", what,
			 s->n + n - s->expect, s->expect);
		return -1;
	}
	EVP_DigestUpdate(s->md, buf, n);
	s->n += n;
	return 0;
}

T_HELPER void t_stream_free(struct t_stream *s)
{
	EVP_MD_CTX_free(s->md);
	s->md = NULL;
}

/* ---- the runner: every case in a child process --------------------------- */

/* Past its own deadline a case gets this long before the runner kills it:
 * the case's deadline fires first and says what it was waiting for. */
#define T_RUNNER_GRACE_MS	15000

struct t_totals {
	unsigned passed, failed, skipped, num;
};

struct t_outcome {
	int verdict;		/* enum t_verdict */
	char why[600];
	double secs;
};

/* Reap every child (the runner is the child subreaper, so orphans of a
 * killed case come back to it); whatever is still alive after a few
 * seconds is killed. */
T_HELPER void t_reap_children(void)
{
	uint64_t deadline = t_now_ms() + 5000;
	char path[300], line[128];
	struct dirent *e;
	pid_t me = getpid();
	int ppid;
	DIR *d;
	FILE *f;

	for (;;) {
		pid_t pid = waitpid(-1, NULL, WNOHANG);

		if (pid < 0)
			return;		/* ECHILD: none left */
		if (pid > 0)
			continue;
		if (!t_ms_left(deadline))
			break;
		t_msleep(10);
	}
	d = opendir("/proc");
	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/status", e->d_name);
		f = fopen(path, "re");
		while (f && fgets(line, sizeof(line), f))
			if (sscanf(line, "PPid: %d", &ppid) == 1) {
				if (ppid == me) {
					printf("    # killing leftover process %s\n", e->d_name);
					kill(atoi(e->d_name), SIGKILL);
				}
				break;
			}
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	while (waitpid(-1, NULL, 0) > 0)
		;
}

/*
 * Run child(arg) in a forked process under timeout_s plus the grace. The
 * child reports on t_report_fd ("peer PID" for what it starts, "result V
 * WHY" once) and exits. One that overruns is killed; either way the peers
 * it named are killed by process group and every child is reaped. A case
 * that overran or died without a result is T_FAIL, and why says so.
 */
T_HELPER void t_run_forked(int timeout_s, void (*child)(const void *arg), const void *arg,
			   struct t_outcome *o)
{
	pid_t peers[64], pid;
	unsigned n_peers = 0, i;
	char buf[1024], line[1024];
	size_t line_len = 0;
	int p[2], st = 0;
	uint64_t t0 = t_now_ms(), deadline;
	bool timed_out = false;
	ssize_t n;

	o->verdict = -1;
	o->why[0] = '\0';
	o->secs = 0;
	if (pipe2(p, O_CLOEXEC)) {
		o->verdict = T_FAIL;
		snprintf(o->why, sizeof(o->why), "pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		t_report_fd = p[1];
		child(arg);
		exit(0);
	}
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		o->verdict = T_FAIL;
		snprintf(o->why, sizeof(o->why), "fork: %s", strerror(errno));
		return;
	}
	deadline = t0 + (uint64_t)timeout_s * 1000 + T_RUNNER_GRACE_MS;
	for (;;) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		int left = t_ms_left(deadline);

		if (!left) {
			timed_out = true;
			break;
		}
		if (poll(&pfd, 1, left) <= 0)
			continue;
		n = read(p[0], buf, sizeof(buf));
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			break;
		}
		for (i = 0; i < (unsigned)n; i++) {
			if (buf[i] != '\n') {
				if (line_len < sizeof(line) - 1)
					line[line_len++] = buf[i];
				continue;
			}
			line[line_len] = '\0';
			line_len = 0;
			if (!strncmp(line, "peer ", 5) && n_peers < sizeof(peers) / sizeof(peers[0]))
				peers[n_peers++] = (pid_t)atoi(line + 5);
			else if (!strncmp(line, "result ", 7))
				sscanf(line + 7, "%d %599[^\n]", &o->verdict, o->why);
		}
	}
	close(p[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	/* Whatever the case left: its peers die with it (PDEATHSIG); make
	 * sure, by process group, and reap them. */
	for (i = 0; i < n_peers; i++)
		kill(-peers[i], SIGKILL);
	for (i = 0; i < n_peers; i++)
		kill(peers[i], SIGKILL);
	t_reap_children();
	o->secs = (double)(t_now_ms() - t0) / 1000;
	if (timed_out) {
		snprintf(o->why, sizeof(o->why), "still running %d s past its %d s deadline; killed "
			 "with its peers", T_RUNNER_GRACE_MS / 1000, timeout_s);
		o->verdict = T_FAIL;
	} else if (o->verdict < 0) {
		if (WIFSIGNALED(st))
			snprintf(o->why, sizeof(o->why), "case process killed by signal %d",
				 WTERMSIG(st));
		else
			snprintf(o->why, sizeof(o->why), "case process exited %d without a result",
				 WEXITSTATUS(st));
		o->verdict = T_FAIL;
	}
}

/* The TAP-style line for one case ("ok N - name (s)", "SKIP name: why",
 * "not ok N - name: why"), counted in tot. */
T_HELPER void t_count_outcome(const char *name, const struct t_outcome *o, struct t_totals *tot)
{
	switch (o->verdict) {
	case T_PASS:
		printf("ok %u - %s (%.1f s)\n", ++tot->num, name, o->secs);
		tot->passed++;
		break;
	case T_SKIP:
		printf("SKIP %s: %s\n", name, o->why);
		tot->skipped++;
		break;
	default:
		printf("not ok %u - %s: %s\n", ++tot->num, name, o->why);
		tot->failed++;
		break;
	}
	fflush(stdout);
}

#endif
