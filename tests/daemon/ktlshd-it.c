// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ktlshd-it: the daemon integration suite.
 *
 * Every case starts the real ktlshd (from the build tree) with a
 * configuration written for it into a scratch directory, on an abstract
 * control socket unique to the run, and talks to it the way applications
 * do: through libktlsh (ktlsh_handshake_fd, ktlsh_submit/ktlsh_complete,
 * ktlsh_status, ktlsh_reload), through ktlshctl, and with raw SOCK_SEQPACKET
 * messages where the point is to misbehave. The TLS peers are real:
 * openssl s_server/s_client, gnutls-serv/gnutls-cli and Python's ssl as
 * child processes, and OpenSSL in a thread of this program where a case
 * needs to look at what the peer saw (the certificate SNI picked, the
 * session it resumes, the ALPN it got).
 *
 * Where the kernel has no kTLS the daemon runs with --handshake-only: a
 * completed handshake then comes back as -EOPNOTSUPP "handshake completed;
 * not offloaded", which the handshake cases count as success, and the cases
 * that need data through the kernel print SKIP. Inside the kernel harness
 * (scripts/ktest, $KTEST_KERNEL set) everything runs for real and the load
 * cases are scaled down (UML: a system call costs 30-170 us, a process start
 * up to a second, one vCPU); natively they run at full size in
 * handshake-only mode and print the daemon's handshake rate, CPU per
 * handshake and RSS. The scale in use is printed at the start.
 *
 * The cases (--list prints them):
 *   interop/ROLE/PEER   handshake with openssl, GnuTLS and Python's ssl in both
 *                       roles (mutual TLS, ALPN); every reply field checked
 *   data/ROLE/PEER      the same, then 1 MiB each way through kTLS, SHA-256
 *   sni/ mtls/ alpn/ resume/   certificate selection (and SNI to an identity
 *                       the caller may not use), verify_client, ALPN both
 *                       ways, TLS 1.3 and 1.2 resumption across 4 workers
 *   timeout/ abort/     silent clients beside normal ones; resets, FINs and
 *                       garbage mid-handshake
 *   ctl/                garbage, truncated and lying messages, wrong kinds
 *                       of descriptors, a socket with a ULP, a client that
 *                       never reads its replies
 *   acl/ config/ status/   uid 65534 refused; SIGHUP/RELOAD_REQ with a broken
 *                       file; --check-config; ktlshctl status against what
 *                       the case did
 *   load/               1000 (UML: 200) concurrent handshakes from 4
 *                       processes; fd count and RSS flat over 10000 (1000);
 *                       20 reloads during 2000 (800) handshakes
 *
 * Every case runs in a forked child under a deadline; the runner kills it,
 * its daemon and its peers (each in its own process group, tied to the case
 * with PR_SET_PDEATHSIG and reported to the runner) if it overruns, and
 * removes the case's scratch directory. Output:
 *
 *   ok N - name            not ok N - name: why        SKIP name: why
 *   daemon: N passed, M failed, K skipped
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <linux/tls.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <ktlsh/handshake.h>
#include <ktlsh/ktlsh.h>
#include <ktlsh/proto.h>
#include <ktlsh/record.h>

#define KIB			1024
#define MIB			(1024 * 1024)
#define CASE_TIMEOUT_S		90
#define SHA256_LEN		32
#define TAIL_HEAD		2048
#define TAIL_TAIL		6144
#define IO_CHUNK		(256 * 1024)
#define PAYLOAD			MIB		/* each way, interop cases */
#define GNUTLS_CLI_OUT		(16 * KIB)	/* it writes its stdout a byte at a time */
#define LOAD_PROCS_MAX		16

#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))

/* Helpers shared with the other integration-suite driver (t_*). */
#include "../lib/t_util.h"

/* ---- options and global facts ------------------------------------------ */

static struct {
	const char *certs;
	const char *build;
	const char *filters[16];
	unsigned n_filters;
	bool list;
	int timeout_s;
	const char *scale;	/* "full", "uml", NULL: from $KTEST_KERNEL */
} opt;

/* How big the load cases are: natively (full) and inside UML. */
static struct scale {
	const char *name;
	bool uml;
	unsigned concurrent;		/* handshakes in flight at once */
	unsigned concurrent_procs;
	unsigned churn_warmup, churn_n;	/* fd/RSS flatness */
	unsigned hup_n, hup_reloads;	/* SIGHUP under load */
	unsigned silent, silent_normal;
	unsigned silent_timeout_ms;
	int slow;			/* multiplier for deadlines */
} sc;

static struct ktlsh_kcaps caps;
static bool ktls_ok;
static char ktls_why[256];
static char tool_openssl[PATH_MAX], tool_gnutls_serv[PATH_MAX], tool_gnutls_cli[PATH_MAX];
static char tool_python[PATH_MAX];
static char bin_ktlshd[PATH_MAX], bin_ktlshctl[PATH_MAX];
static char case_dir[1024];		/* the running case's scratch directory */
static char sock_name[108];		/* the running case's control socket */
static bool am_root;

/* ---- small utilities ----------------------------------------------------- */

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Numbers for the lead: not asserted, printed where the runner keeps them. */
__attribute__((format(printf, 1, 2)))
static void measure(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("    # measure: %s\n", buf);
	fflush(stdout);
}

static void set_timeouts(int fd, int ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void hex_str(const uint8_t *b, size_t n, char *out, size_t outlen)
{
	size_t i;

	out[0] = '\0';
	for (i = 0; i < n && 2 * i + 2 < outlen; i++)
		snprintf(out + 2 * i, outlen - 2 * i, "%02x", b[i]);
}

static void cert_path(char *buf, size_t len, const char *stem, const char *ext)
{
	snprintf(buf, len, "%s/%s.%s", opt.certs, stem, ext);
}

/* SHA-256 of a certificate file's DER: what PEER_FINGERPRINT must carry. */
static int cert_fp(const char *stem, uint8_t out[SHA256_LEN])
{
	char path[PATH_MAX];
	unsigned len = SHA256_LEN;
	X509 *x = NULL;
	FILE *f;
	int ret = -1;

	cert_path(path, sizeof(path), stem, "pem");
	f = fopen(path, "re");
	if (!f)
		return -1;
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (x && X509_digest(x, EVP_sha256(), out, &len) == 1 && len == SHA256_LEN)
		ret = 0;
	X509_free(x);
	return ret;
}

static const char *fp_name(const uint8_t fp[SHA256_LEN])
{
	static const char *const stems[] = { "server-ecdsa", "server-rsa", "client", "wrongname",
					     "other-server", "expired" };
	uint8_t f[SHA256_LEN];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(stems); i++)
		if (!cert_fp(stems[i], f) && !memcmp(f, fp, SHA256_LEN))
			return stems[i];
	return "an unknown certificate";
}

/* ---- results and the channel to the runner ------------------------------- */

__attribute__((format(printf, 2, 3)))
static void skip(struct t_result *r, const char *fmt, ...)
{
	va_list ap;

	if (r->verdict == T_FAIL)
		return;
	r->verdict = T_SKIP;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
}

/* A check that passes quietly (noted with --verbose) or fails the case. */
__attribute__((format(printf, 3, 4)))
static bool check(struct t_result *r, bool ok, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (!ok)
		t_fail(r, "%s", buf);
	else if (t_verbose)
		t_note("ok: %s", buf);
	return ok;
}

/* ---- child processes (peers, the daemon, helpers) ------------------------ */

static void peer_diagnose(const struct t_peer *p)
{
	char st[64];

	if (!p->pid)
		return;
	t_note("%s: %s", p->name, t_peer_status_str(p, st, sizeof(st)));
	t_tail_note(&p->err, "its stderr");
	t_tail_note(&p->out, "its stdout");
}

/* Run a program to the end (its output collected); -1 if it overran. */
static int run_prog(struct t_peer *p, const char *name, char *const argv[], int timeout_ms)
{
	t_peer_init(p);
	if (t_peer_start(p, name, argv, NULL, NULL, NULL))
		return -1;
	t_close_fd(&p->in_fd);
	if (t_peer_wait(p, t_now_ms() + (uint64_t)timeout_ms)) {
		t_peer_stop(p);
		return -1;
	}
	t_peer_stop(p);
	return 0;
}

/* ---- the daemon ------------------------------------------------------------ */

struct cfg {
	char buf[32768];
	size_t len;
};

__attribute__((format(printf, 2, 3)))
static void cfg_add(struct cfg *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(c->buf + c->len, sizeof(c->buf) - c->len, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(c->buf) - c->len)
		c->len += (size_t)n;
}

/* The line the next cfg_add() starts on. */
static unsigned cfg_next_line(const struct cfg *c)
{
	unsigned n = 1;
	size_t i;

	for (i = 0; i < c->len; i++)
		n += c->buf[i] == '\n';
	return n;
}

/* [global] with this case's socket; extra lines after it. */
static void cfg_global(struct cfg *c, const char *extra)
{
	c->len = 0;
	cfg_add(c, "# ktlshd-it: generated for one case\n[global]\nsocket = %s\nlog_level = info\n%s\n",
		sock_name, extra ? extra : "");
}

/* [identity NAME] with the certificate stems' files; extra lines after. */
static void cfg_identity(struct cfg *c, const char *name, const char *stem, const char *extra)
{
	cfg_add(c, "[identity %s]\ncert = %s/%s.pem\nkey = %s/%s.key\n%s\n", name, opt.certs, stem,
		opt.certs, stem, extra ? extra : "");
}

struct dmn {
	struct t_peer p;
	char conf[PATH_MAX];
	char log[PATH_MAX];
	bool handshake_only;
	bool started;
};

static int write_file(const char *path, const char *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, buf, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

/* The whole log (NUL-terminated, NULs replaced); free() it. */
static char *dmn_log_read(const struct dmn *d)
{
	struct stat st;
	char *buf;
	ssize_t n;
	size_t i;
	int fd = open(d->log, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return strdup("");
	if (fstat(fd, &st) < 0 || !(buf = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return strdup("");
	}
	n = read(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n < 0)
		n = 0;
	for (i = 0; i < (size_t)n; i++)
		if (!buf[i])
			buf[i] = ' ';
	buf[n] = '\0';
	return buf;
}

static unsigned dmn_log_count(const struct dmn *d, const char *needle)
{
	char *log = dmn_log_read(d), *p = log;
	unsigned n = 0;

	while ((p = strstr(p, needle))) {
		n++;
		p += strlen(needle);
	}
	free(log);
	return n;
}

static bool dmn_log_has(const struct dmn *d, const char *needle)
{
	return dmn_log_count(d, needle) > 0;
}

/* The log line that contains needle, for messages. */
static void dmn_log_line(const struct dmn *d, const char *needle, char *out, size_t len)
{
	char *log = dmn_log_read(d), *p = strstr(log, needle), *b, *e;

	out[0] = '\0';
	if (p) {
		for (b = p; b > log && b[-1] != '\n'; b--)
			;
		e = strchr(p, '\n');
		snprintf(out, len, "%.*s", (int)(e ? e - b : (long)strlen(b)), b);
	}
	free(log);
}

static bool dmn_wait_log(const struct dmn *d, const char *needle, unsigned count, int timeout_ms)
{
	uint64_t deadline = t_now_ms() + (uint64_t)timeout_ms;

	do {
		if (dmn_log_count(d, needle) >= count)
			return true;
		t_msleep(10);
	} while (t_ms_left(deadline));
	return dmn_log_count(d, needle) >= count;
}

static void dmn_log_note(const struct dmn *d, int max_lines)
{
	char *log = dmn_log_read(d), *p;
	int lines = 0;

	for (p = log + strlen(log); p > log; p--)
		if (p[-1] == '\n' && ++lines > max_lines)
			break;
	t_note("daemon log (%s%s):", p > log ? "last lines of " : "", d->log);
	t_note_indented(p, strlen(p));
	free(log);
}

static int dmn_write_config(struct dmn *d, const struct cfg *c)
{
	return write_file(d->conf, c->buf, c->len);
}

/* Start ktlshd on the case's configuration and wait until it serves. */
static int dmn_start(struct dmn *d, const struct cfg *c, struct t_result *r)
{
	char *argv[6];
	int n = 0, ret;
	uint64_t deadline;
	char st[64];

	memset(d, 0, sizeof(*d));
	t_peer_init(&d->p);
	snprintf(d->conf, sizeof(d->conf), "%s/ktlshd.conf", case_dir);
	snprintf(d->log, sizeof(d->log), "%s/ktlshd.log", case_dir);
	d->handshake_only = !ktls_ok;
	ret = dmn_write_config(d, c);
	if (ret)
		return t_fail(r, "writing %s: %s", d->conf, strerror(-ret));
	argv[n++] = bin_ktlshd;
	argv[n++] = (char *)"-c";
	argv[n++] = d->conf;
	if (d->handshake_only)
		argv[n++] = (char *)"--handshake-only";
	argv[n] = NULL;
	ret = t_peer_start(&d->p, "ktlshd", argv, NULL, NULL, d->log);
	if (ret)
		return t_fail(r, "starting ktlshd: %s", strerror(-ret));
	t_close_fd(&d->p.in_fd);
	d->started = true;
	deadline = t_now_ms() + 20000ull * (uint64_t)sc.slow;
	while (!dmn_log_has(d, " ready: ")) {
		if (!t_peer_running(&d->p)) {
			dmn_log_note(d, 30);
			return t_fail(r, "ktlshd exited (%s) before it was ready",
				    t_peer_status_str(&d->p, st, sizeof(st)));
		}
		if (!t_ms_left(deadline)) {
			dmn_log_note(d, 30);
			return t_fail(r, "ktlshd not ready after %d s", 20 * sc.slow);
		}
		t_msleep(5);
	}
	return 0;
}

/* SIGTERM: the daemon must stop by itself, promptly, with status 0. */
static void dmn_stop(struct dmn *d, struct t_result *r)
{
	char st[64];
	int ms = 10000 * sc.slow;

	if (!d->started)
		return;
	d->started = false;
	if (t_peer_running(&d->p)) {
		kill(d->p.pid, SIGTERM);
		if (t_peer_wait(&d->p, t_now_ms() + (uint64_t)ms))
			t_fail(r, "ktlshd did not stop within %d s of SIGTERM", ms / 1000);
	}
	if (!d->p.exited || !WIFEXITED(d->p.status) || WEXITSTATUS(d->p.status))
		t_fail(r, "ktlshd ended with %s", t_peer_status_str(&d->p, st, sizeof(st)));
	t_peer_stop(&d->p);
	if (r->verdict == T_FAIL || t_verbose)
		dmn_log_note(d, t_verbose ? 400 : 40);
}

static bool dmn_alive(struct dmn *d)
{
	return t_peer_running(&d->p);
}

static int dmn_fds(const struct dmn *d)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->p.pid);
	return t_count_dir(path);
}

static long dmn_rss_kib(const struct dmn *d)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)d->p.pid);
	f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

/* A sanitizer build (make SAN=1) keeps freed memory in quarantine. */
static bool dmn_sanitized(const struct dmn *d)
{
	char path[64], line[512];
	bool asan = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)d->p.pid);
	f = fopen(path, "re");
	while (f && !asan && fgets(line, sizeof(line), f))
		asan = strstr(line, "libasan") != NULL;
	if (f)
		fclose(f);
	return asan;
}

/* The daemon's CPU time (user + system), microseconds. */
static uint64_t dmn_cpu_us(const struct dmn *d)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->p.pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (ut + st) * 1000000ull / (unsigned long long)sysconf(_SC_CLK_TCK);
}

/* STATUS_REQ; *st allocated here (free it). */
static int dmn_status(struct ktlsh_proto_status **st, struct t_result *r)
{
	int ret;

	*st = calloc(1, sizeof(**st));
	if (!*st)
		return t_fail(r, "out of memory");
	ret = ktlsh_status(sock_name, *st);
	if (ret)
		return t_fail(r, "ktlsh_status: %s (%s)", strerror(-ret), (*st)->reason);
	return 0;
}

static const char *st_get(const struct ktlsh_proto_status *st, const char *key)
{
	unsigned i;

	for (i = 0; st && i < st->n_items; i++)
		if (!strcmp(st->items[i].key, key))
			return st->items[i].value;
	return NULL;
}

static long long st_num(const struct ktlsh_proto_status *st, const char *key)
{
	const char *v = st_get(st, key);

	return v ? strtoll(v, NULL, 10) : -1;
}

/* One counter, read now. */
static long long dmn_counter(const char *key, struct t_result *r)
{
	struct ktlsh_proto_status *st = NULL;
	long long v = -1;

	if (!dmn_status(&st, r))
		v = st_num(st, key);
	free(st);
	return v;
}

/* A counter that must reach want soon (the daemon decrements
 * handshakes.inflight just after it sends the reply). */
static bool dmn_counter_soon(const char *key, long long want, struct t_result *r)
{
	uint64_t deadline = t_now_ms() + 2000ull * (uint64_t)sc.slow;
	long long v;

	while ((v = dmn_counter(key, r)) != want && t_ms_left(deadline))
		t_msleep(10);
	return v == want;
}

/* Wait until nothing is in flight and the fd count stops moving (the
 * daemon closes a control connection when it sees its EOF). */
static int dmn_settle(struct dmn *d, struct t_result *r)
{
	uint64_t deadline = t_now_ms() + 5000ull * (uint64_t)sc.slow;
	int last = -1, same = 0, n;

	/* our own idle pooled connection would count as the daemon's */
	ktlsh_pool_flush();

	while (t_ms_left(deadline)) {
		long long inflight = dmn_counter("handshakes.inflight", r);

		/* after the status connection's EOF has reached the daemon */
		t_msleep(30 * sc.slow);
		if (inflight == 0) {
			n = dmn_fds(d);
			same = n == last ? same + 1 : 0;
			last = n;
			if (same >= 3)
				return n;
		}
	}
	return dmn_fds(d);
}

/* ---- sockets ------------------------------------------------------------- */

/* A connected loopback TCP pair: *c dialed, *s was accepted. */
static int tcp_pair(int *c, int *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int port, lfd = t_listen_local(&port, 4), ret = 0;

	*c = *s = -1;
	if (lfd < 0)
		return lfd;
	a.sin_port = htons((uint16_t)port);
	*c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*c < 0 || connect(*c, (struct sockaddr *)&a, sizeof(a)) ||
	    (*s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
		ret = -errno;
		t_close_fd(c);
	}
	close(lfd);
	return ret;
}

/* Accept one connection; fail early if the peer died instead of dialing. */
static int accept_deadline(int lfd, struct t_peer *p, uint64_t deadline, struct t_result *r)
{
	struct pollfd pfd;
	char st[64];
	int fd;

	for (;;) {
		int left = t_ms_left(deadline);

		if (!left)
			return t_fail(r, "no connection from %s before the deadline", p->name);
		pfd = (struct pollfd){ .fd = lfd, .events = POLLIN };
		poll(&pfd, 1, t_min_int(left, 50));
		if (pfd.revents & POLLIN) {
			fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				return fd;
		}
		t_peer_drain(p);
		if (!t_peer_running(p))
			return t_fail(r, "%s exited (%s) before connecting", p->name,
				    t_peer_status_str(p, st, sizeof(st)));
	}
}

/* Read and drop what arrives until EOF (or an error, or the time is up). */
static void drain_until_eof(int fd, int ms)
{
	uint64_t deadline = t_now_ms() + (uint64_t)ms;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[4096];
	ssize_t n;

	while (t_ms_left(deadline)) {
		poll(&pfd, 1, t_min_int(t_ms_left(deadline), 100));
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return;
	}
}

/* The kernel's record sequence number for one direction. */
static int ktls_seq(int fd, int optname, uint64_t *seq)
{
	unsigned version, cipher;

	return t_ktls_readback(fd, optname, &version, &cipher, seq);
}

/* ---- an OpenSSL peer in a thread --------------------------------------- */

/*
 * The other end of a handshake the daemon performs, when a case needs to
 * see what that end saw. Blocking OpenSSL on its own socket (with socket
 * timeouts, so it cannot hang); after the handshake it echoes whatever
 * arrives until the connection ends, which also reads the session tickets
 * a TLS 1.3 server sends after its Finished.
 */
struct cpeer {
	/* what it does */
	bool server;
	const char *cert;		/* stem of its certificate, NULL: none */
	const char *sni;		/* client: SNI to send */
	const char *verify_host;	/* client: verify the chain and this name */
	bool require_client_cert;	/* server: against ca.pem */
	const char *alpn;		/* "a,b": client offer / server preference */
	const char *sigalgs;		/* client: signature algorithms to offer */
	SSL_SESSION *resume;		/* client: offer this session */
	int max_version;		/* 0: OpenSSL's */
	/* what happened */
	int fd;
	bool hs_ok;
	char err[300];
	int version;
	char cipher[64], alpn_sel[256];
	bool reused;
	bool has_cert;
	uint8_t fp[SHA256_LEN];
	SSL_SESSION *session;		/* client: a copy of the newest session */
	unsigned sessions;
	size_t echoed;
	pthread_t th;
	bool started;
};

static int cpeer_idx = -1;

static int cpeer_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct cpeer *p = SSL_get_ex_data(ssl, cpeer_idx);

	if (p) {
		/* A copy: OpenSSL marks the original unresumable if the
		 * connection later ends badly. */
		SSL_SESSION_free(p->session);
		p->session = SSL_SESSION_dup(sess);
		p->sessions++;
	}
	return 0;
}

static size_t alpn_wire(const char *list, unsigned char *out, size_t cap)
{
	char tmp[512], *tok, *save = NULL;
	size_t n = 0, l;

	snprintf(tmp, sizeof(tmp), "%s", list);
	for (tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		l = strlen(tok);
		if (n + 1 + l > cap)
			break;
		out[n++] = (unsigned char)l;
		memcpy(out + n, tok, l);
		n += l;
	}
	return n;
}

static int cpeer_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			     const unsigned char *in, unsigned inlen, void *arg)
{
	struct cpeer *p = arg;
	static __thread unsigned char wire[256];
	size_t n = alpn_wire(p->alpn, wire, sizeof(wire));
	unsigned char *sel;

	if (SSL_select_next_proto(&sel, outlen, wire, (unsigned)n, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static void cpeer_err(struct cpeer *p, SSL *ssl, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

	snprintf(p->err, sizeof(p->err), "%s: %s%s%s", what,
		 e ? ERR_reason_error_string(e) ?: "OpenSSL error" : "no OpenSSL error (EOF?)",
		 v != X509_V_OK ? "; verify: " : "", v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
	ERR_clear_error();
}

static void *cpeer_main(void *arg)
{
	struct cpeer *p = arg;
	char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
	unsigned char wire[256], buf[16384];
	const unsigned char *sel = NULL;
	unsigned sel_len = 0, md_len = SHA256_LEN;
	SSL_CTX *ctx;
	SSL *ssl = NULL;
	X509 *pc;
	size_t n;
	int rc;

	cert_path(ca, sizeof(ca), "ca", "pem");
	ctx = SSL_CTX_new(p->server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		cpeer_err(p, NULL, "SSL_CTX_new");
		goto out;
	}
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (p->max_version)
		SSL_CTX_set_max_proto_version(ctx, p->max_version);
	if (p->cert) {
		cert_path(cert, sizeof(cert), p->cert, "pem");
		cert_path(key, sizeof(key), p->cert, "key");
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
			cpeer_err(p, NULL, "loading the peer's certificate");
			goto out;
		}
	}
	if (p->server) {
		if (p->require_client_cert) {
			SSL_CTX_load_verify_locations(ctx, ca, NULL);
			SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		}
		if (p->alpn)
			SSL_CTX_set_alpn_select_cb(ctx, cpeer_alpn_select, p);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
					       SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, cpeer_new_session);
		if (p->verify_host) {
			SSL_CTX_load_verify_locations(ctx, ca, NULL);
			SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		}
		if (p->alpn) {
			n = alpn_wire(p->alpn, wire, sizeof(wire));
			SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)n);
		}
		if (p->sigalgs && !SSL_CTX_set1_sigalgs_list(ctx, p->sigalgs)) {
			cpeer_err(p, NULL, "sigalgs");
			goto out;
		}
	}
	ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_fd(ssl, p->fd)) {
		cpeer_err(p, ssl, "SSL_new");
		goto out;
	}
	SSL_set_ex_data(ssl, cpeer_idx, p);
	if (!p->server) {
		if (p->sni)
			SSL_set_tlsext_host_name(ssl, p->sni);
		if (p->verify_host)
			SSL_set1_host(ssl, p->verify_host);
		if (p->resume) {
			/* A copy: an OpenSSL client uses a TLS 1.3 ticket once
			 * (it marks the session it resumed unresumable), and
			 * the cases offer one ticket many times on purpose. */
			SSL_SESSION *copy = SSL_SESSION_dup(p->resume);

			SSL_set_session(ssl, copy);
			SSL_SESSION_free(copy);
		}
	}
	rc = p->server ? SSL_accept(ssl) : SSL_connect(ssl);
	if (rc != 1) {
		cpeer_err(p, ssl, p->server ? "SSL_accept" : "SSL_connect");
		goto out;
	}
	p->hs_ok = true;
	p->version = SSL_version(ssl);
	snprintf(p->cipher, sizeof(p->cipher), "%s", SSL_get_cipher_name(ssl));
	SSL_get0_alpn_selected(ssl, &sel, &sel_len);
	snprintf(p->alpn_sel, sizeof(p->alpn_sel), "%.*s", (int)sel_len, sel ? (const char *)sel : "");
	p->reused = SSL_session_reused(ssl);
	pc = SSL_get0_peer_certificate(ssl);
	if (pc && X509_digest(pc, EVP_sha256(), p->fp, &md_len) == 1)
		p->has_cert = true;
	/* Echo until the connection ends (tickets are read on the way). */
	for (;;) {
		rc = SSL_read(ssl, buf, sizeof(buf));
		if (rc > 0) {
			if (SSL_write(ssl, buf, rc) != rc)
				break;
			p->echoed += (size_t)rc;
			continue;
		}
		if (SSL_get_error(ssl, rc) == SSL_ERROR_ZERO_RETURN)
			SSL_shutdown(ssl);	/* answer close_notify */
		break;
	}
	ERR_clear_error();
out:
	if (ssl) {
		SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(ssl);
	}
	SSL_CTX_free(ctx);
	t_close_fd(&p->fd);
	ERR_clear_error();
	return NULL;
}

static int cpeer_start(struct cpeer *p, int fd)
{
	p->fd = fd;
	set_timeouts(fd, 20000 * sc.slow);
	if (pthread_create(&p->th, NULL, cpeer_main, p)) {
		t_close_fd(&p->fd);
		return -1;
	}
	p->started = true;
	return 0;
}

static void cpeer_join(struct cpeer *p)
{
	if (p->started)
		pthread_join(p->th, NULL);
	p->started = false;
}

static void cpeer_free(struct cpeer *p)
{
	cpeer_join(p);
	SSL_SESSION_free(p->session);
	p->session = NULL;
}

/* ---- one handshake through the daemon, with a peer in a thread ---------- */

struct hs {
	struct ktlsh_request req;	/* role: the daemon's */
	const char *alpn[4];
	struct cpeer peer;
	struct ktlsh_proto_reply rep;
	int ret;
	bool installed;			/* kTLS went in (status 0) */
	bool exchanged;			/* a message went through the kernel both ways */
};

static void hs_init(struct hs *h, enum ktlsh_proto_role role, const char *identity)
{
	memset(h, 0, sizeof(*h));
	h->req.role = role;
	h->req.identity = identity;
	h->req.alpn = h->alpn;
	h->peer.server = role == KTLSH_PROTO_ROLE_CLIENT;
	h->peer.fd = -1;
	if (h->peer.server)
		h->peer.cert = "server-ecdsa";
}

/* Did the daemon's handshake succeed, for the mode it runs in? */
static bool rep_ok(const struct ktlsh_proto_reply *rep, int ret)
{
	if (ktls_ok)
		return ret == 0 && rep->status == 0;
	return ret == -EOPNOTSUPP && rep->status == -EOPNOTSUPP && strstr(rep->reason, "not offloaded");
}

static const char *errname(int e)
{
	const char *n = e < 0 ? strerrorname_np(-e) : e == 0 ? "0" : NULL;

	return n ? n : "?";
}

static void rep_note(const char *what, const struct ktlsh_proto_reply *rep)
{
	char fp[2 * SHA256_LEN + 1] = "-", sans[600] = "";
	size_t used = 0;
	unsigned i;

	if (rep->has_peer_fingerprint)
		hex_str(rep->peer_fingerprint, 8, fp, sizeof(fp));
	for (i = 0; i < rep->n_peer_sans && used < sizeof(sans); i++)
		used += (size_t)snprintf(sans + used, sizeof(sans) - used, "%s%s", i ? "," : "",
					 rep->peer_san[i]);
	t_note("%s: %s status %d (%s) \"%s\" %s %s %s alpn=%s resumed=%d peer=\"%s\" sans=%s "
	     "fp=%s%s us=%llu seq=%llu/%llu alerts=%d/%d", what, ktlsh_proto_type_name(rep->type),
	     rep->status, errname(rep->status), rep->reason,
	     rep->tls_version == 0x0304 ? "TLSv1.3" : rep->tls_version == 0x0303 ? "TLSv1.2" : "-",
	     rep->cipher[0] ? rep->cipher : "-", rep->group[0] ? rep->group : "-",
	     rep->alpn[0] ? rep->alpn : "-", rep->resumed, rep->peer_subject, sans[0] ? sans : "-",
	     fp, rep->has_peer_fingerprint ? "..." : "", (unsigned long long)rep->handshake_us,
	     (unsigned long long)rep->tx_seq, (unsigned long long)rep->rx_seq, rep->alert_sent,
	     rep->alert_received);
}

/* After status 0: the kernel has kTLS with the reply's sequence numbers,
 * and a message goes through it to the peer and back. */
static void hs_exchange(struct hs *h, int fd, struct t_result *r)
{
	static const char msg[] = "ktlshd-it: through the kernel and back\n";
	char ulp[32], buf[256];
	uint64_t tx = 0, rx = 0;
	size_t got = 0;
	ssize_t n;

	if (t_ulp_name(fd, ulp, sizeof(ulp)) || strcmp(ulp, "tls")) {
		t_fail(r, "status 0 but TCP_ULP is \"%s\", not \"tls\"", ulp);
		return;
	}
	if (ktls_seq(fd, TLS_TX, &tx) || ktls_seq(fd, TLS_RX, &rx)) {
		t_fail(r, "getsockopt(SOL_TLS, TLS_TX/RX): %s", strerror(errno));
		return;
	}
	if (tx != h->rep.tx_seq || rx != h->rep.rx_seq)
		t_fail(r, "the kernel has sequence numbers tx %llu rx %llu, the reply says %llu/%llu",
		     (unsigned long long)tx, (unsigned long long)rx,
		     (unsigned long long)h->rep.tx_seq, (unsigned long long)h->rep.rx_seq);
	set_timeouts(fd, 10000 * sc.slow);
	if (send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(msg) - 1) {
		t_fail(r, "send over kTLS: %s", strerror(errno));
		return;
	}
	while (got < sizeof(msg) - 1) {
		n = ktlsh_recv(fd, buf + got, sizeof(buf) - got, 0);
		if (n <= 0) {
			t_fail(r, "reading the echo over kTLS: %s", n ? strerror((int)-n) : "EOF");
			return;
		}
		got += (size_t)n;
	}
	if (got != sizeof(msg) - 1 || memcmp(buf, msg, got)) {
		t_fail(r, "the echo over kTLS differs from what was sent");
		return;
	}
	h->exchanged = true;
	if (ktlsh_send_close_notify(fd) == 0 && shutdown(fd, SHUT_WR) == 0)
		while (ktlsh_recv(fd, buf, sizeof(buf), 0) > 0)
			;
}

/*
 * One handshake: a loopback TCP pair, the peer on one end (in a thread),
 * ktlsh_handshake_fd() on the other, then (kTLS) an echo through the kernel
 * and close_notify, or (handshake-only) close. The reply is in h->rep.
 */
static int hs_run(struct hs *h, struct t_result *r)
{
	int c, s, ours, theirs, ret;

	ret = tcp_pair(&c, &s);
	if (ret)
		return t_fail(r, "loopback TCP pair: %s", strerror(-ret));
	ours = h->req.role == KTLSH_PROTO_ROLE_SERVER ? s : c;
	theirs = ours == s ? c : s;
	if (cpeer_start(&h->peer, theirs)) {
		close(ours);
		return t_fail(r, "pthread_create failed");
	}
	h->ret = ktlsh_handshake_fd(sock_name, ours, &h->req, &h->rep);
	if (t_verbose)
		rep_note("reply", &h->rep);
	h->installed = h->ret == 0 && h->rep.status == 0;
	if (h->installed) {
		hs_exchange(h, ours, r);
	} else {
		/* FIN, and read until the peer closes too, so that unread
		 * tickets do not turn our close into a reset under it. */
		shutdown(ours, SHUT_WR);
		drain_until_eof(ours, 5000 * sc.slow);
	}
	close(ours);
	cpeer_join(&h->peer);
	if (t_verbose && h->peer.err[0])
		t_note("peer: %s", h->peer.err);
	return 0;
}

/* The handshake must have succeeded (status 0, or handshake-only's
 * -EOPNOTSUPP) with the peer content. */
static bool hs_expect_ok(struct hs *h, const char *what, struct t_result *r)
{
	if (!rep_ok(&h->rep, h->ret)) {
		rep_note(what, &h->rep);
		if (h->peer.err[0])
			t_note("peer: %s", h->peer.err);
		t_fail(r, "%s: handshake failed: %d (%s) \"%s\"", what, h->ret, errname(h->ret),
		     h->rep.reason);
		return false;
	}
	if (h->rep.type != KTLSH_PROTO_HANDSHAKE_REPLY) {
		t_fail(r, "%s: reply type %s, not HANDSHAKE_REPLY", what,
		     ktlsh_proto_type_name(h->rep.type));
		return false;
	}
	if (!h->peer.hs_ok) {
		t_fail(r, "%s: the daemon reports success but the peer failed: %s", what, h->peer.err);
		return false;
	}
	/* hs_exchange() has failed the case already when the kernel part
	 * went wrong */
	return !h->installed || h->exchanged;
}

/* It must have failed with status want (and the socket not be offloaded). */
static bool hs_expect_fail(struct hs *h, const char *what, int want, struct t_result *r)
{
	if (h->ret != want || h->rep.status != want) {
		rep_note(what, &h->rep);
		t_fail(r, "%s: status %d (%s) \"%s\", expected %d (%s)", what, h->rep.status,
		     errname(h->rep.status), h->rep.reason, want, errname(want));
		return false;
	}
	if (!h->rep.reason[0])
		t_fail(r, "%s: a failure without a reason", what);
	if (t_verbose)
		t_note("%s: %s \"%s\" as expected", what, errname(want), h->rep.reason);
	return true;
}

/* The peer's certificate, as the daemon reports it, is stem's. */
static void check_peer_cert(const struct ktlsh_proto_reply *rep, const char *stem, const char *cn,
			    const char *const *sans, const char *what, struct t_result *r)
{
	uint8_t fp[SHA256_LEN];
	char want[80];
	unsigned i, n = 0;

	if (cert_fp(stem, fp)) {
		t_fail(r, "cannot read %s/%s.pem", opt.certs, stem);
		return;
	}
	snprintf(want, sizeof(want), "CN=%s", cn);
	check(r, strstr(rep->peer_subject, want) != NULL, "%s: peer subject \"%s\" contains %s", what,
	      rep->peer_subject, want);
	check(r, rep->has_peer_fingerprint && !memcmp(rep->peer_fingerprint, fp, SHA256_LEN),
	      "%s: peer fingerprint is %s's (it is %s)", what, stem,
	      rep->has_peer_fingerprint ? fp_name(rep->peer_fingerprint) : "absent");
	while (sans && sans[n])
		n++;
	if (!check(r, rep->n_peer_sans == n, "%s: %u peer SANs, expected %u", what, rep->n_peer_sans, n))
		return;
	for (i = 0; i < n; i++)
		check(r, !strcmp(rep->peer_san[i], sans[i]), "%s: peer SAN %u is \"%s\", expected \"%s\"",
		      what, i, rep->peer_san[i], sans[i]);
}

static void check_no_peer_cert(const struct ktlsh_proto_reply *rep, const char *what,
			       struct t_result *r)
{
	check(r, !rep->peer_subject[0] && !rep->has_peer_fingerprint && !rep->n_peer_sans,
	      "%s: no peer certificate in the reply (subject \"%s\")", what, rep->peer_subject);
}

/* The certificate the peer saw is stem's. */
static void check_seen_cert(const struct cpeer *p, const char *stem, const char *what,
			    struct t_result *r)
{
	uint8_t fp[SHA256_LEN];

	if (cert_fp(stem, fp)) {
		t_fail(r, "cannot read %s.pem", stem);
		return;
	}
	check(r, p->has_cert && !memcmp(p->fp, fp, SHA256_LEN), "%s: the peer saw %s, expected %s",
	      what, p->has_cert ? fp_name(p->fp) : "no certificate", stem);
}

/* One ordinary handshake on identity main, which must succeed. */
static bool one_handshake(const char *what, struct t_result *r)
{
	struct hs h;
	bool ok = false;

	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "main");
	h.peer.sni = "localhost";
	h.peer.verify_host = "localhost";
	if (!hs_run(&h, r))
		ok = hs_expect_ok(&h, what, r);
	cpeer_free(&h.peer);
	return ok;
}

/* Fork a child that drops to uid/gid 65534 and runs fn; its verdict merges
 * into r. The child shares our stdout for notes. */
static void as_nobody(void (*fn)(void *, struct t_result *), void *arg, struct t_result *r)
{
	struct t_result cr;
	int p[2], st;
	pid_t pid;
	ssize_t n;

	if (pipe2(p, O_CLOEXEC)) {
		t_fail(r, "pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		memset(&cr, 0, sizeof(cr));
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			t_fail(&cr, "dropping to uid 65534: %s", strerror(errno));
		else
			fn(arg, &cr);
		fflush(stdout);
		n = write(p[1], &cr, sizeof(cr));
		_exit(n == (ssize_t)sizeof(cr) ? 0 : 1);
	}
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		t_fail(r, "fork: %s", strerror(errno));
		return;
	}
	t_report("peer %d", (int)pid);
	n = read(p[0], &cr, sizeof(cr));
	close(p[0]);
	waitpid(pid, &st, 0);
	if (n != (ssize_t)sizeof(cr))
		t_fail(r, "the uid 65534 child died (status 0x%x)", st);
	else if (cr.verdict == T_FAIL)
		t_fail(r, "as uid 65534: %s", cr.why);
}

/* ---- interop: real TLS stacks as the peer ----------------------------------- */

enum tool {
	T_S_CLIENT,		/* the daemon is the server */
	T_GNUTLS_CLI,
	T_PY_CLIENT,
	T_S_SERVER,		/* the daemon is the client */
	T_GNUTLS_SERV,
	T_PY_SERVER,
};

static const char *const tool_names[] = {
	[T_S_CLIENT] = "openssl s_client", [T_GNUTLS_CLI] = "gnutls-cli",
	[T_PY_CLIENT] = "python3 ssl client", [T_S_SERVER] = "openssl s_server",
	[T_GNUTLS_SERV] = "gnutls-serv", [T_PY_SERVER] = "python3 ssl server",
};

/* Python's ssl module as either end: verifies the other, presents its own
 * certificate, offers or selects ALPN, then echoes until the connection
 * ends. Its report goes to stderr. */
static const char py_peer[] =
	"import socket, ssl, sys\n"
	"role, port, certs = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
	"if role == 'server':\n"
	"    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
	"    ctx.load_cert_chain(certs + '/server-ecdsa.pem', certs + '/server-ecdsa.key')\n"
	"    ctx.load_verify_locations(certs + '/ca.pem')\n"
	"    ctx.verify_mode = ssl.CERT_REQUIRED\n"
	"    ctx.set_alpn_protocols(['http/1.1'])\n"
	"    ls = socket.socket()\n"
	"    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
	"    ls.bind(('127.0.0.1', port))\n"
	"    ls.listen(1)\n"
	"    c, _ = ls.accept()\n"
	"    s = ctx.wrap_socket(c, server_side=True)\n"
	"else:\n"
	"    ctx = ssl.create_default_context(cafile=certs + '/ca.pem')\n"
	"    ctx.load_cert_chain(certs + '/client.pem', certs + '/client.key')\n"
	"    ctx.set_alpn_protocols(['http/1.1', 'h2'])\n"
	"    c = socket.create_connection(('127.0.0.1', port))\n"
	"    s = ctx.wrap_socket(c, server_hostname='localhost')\n"
	"peer = dict(x[0] for x in s.getpeercert()['subject'])['commonName']\n"
	"print('python: %s cipher=%s alpn=%s peer=%s' % (s.version(), s.cipher()[0],\n"
	"      s.selected_alpn_protocol(), peer), file=sys.stderr, flush=True)\n"
	"n = 0\n"
	"while True:\n"
	"    b = s.recv(65536)\n"
	"    if not b:\n"
	"        break\n"
	"    s.sendall(b)\n"
	"    n += len(b)\n"
	"print('python: echoed %d bytes' % n, file=sys.stderr, flush=True)\n"
	"try:\n"
	"    s.unwrap()\n"
	"except Exception:\n"
	"    pass\n";

static void tool_argv(struct t_argv *a, enum tool t, int port, const char *logfile)
{
	const char *c = opt.certs;

	switch (t) {
	case T_S_CLIENT:
		t_arg_s_client(a, tool_openssl, port, c, "client");
		t_arg_add(a, "-alpn");
		t_arg_add(a, "h2,http/1.1");
		break;
	case T_S_SERVER:
		t_arg_s_server(a, tool_openssl, port, c, "server-ecdsa");
		t_arg_add(a, "-alpn");
		t_arg_add(a, "http/1.1");
		break;
	case T_GNUTLS_CLI:
		t_arg_add(a, "%s", tool_gnutls_cli);
		t_arg_add(a, "--logfile=%s", logfile);
		t_arg_add(a, "--port=%d", port);
		t_arg_add(a, "--x509cafile=%s/ca.pem", c);
		t_arg_add(a, "--x509certfile=%s/client.pem", c);
		t_arg_add(a, "--x509keyfile=%s/client.key", c);
		t_arg_add(a, "--sni-hostname=localhost");
		t_arg_add(a, "--verify-hostname=localhost");
		t_arg_add(a, "--alpn=h2");
		t_arg_add(a, "--alpn=http/1.1");
		t_arg_add(a, "127.0.0.1");
		break;
	case T_GNUTLS_SERV:
		t_arg_add(a, "%s", tool_gnutls_serv);
		t_arg_add(a, "--quiet");
		t_arg_add(a, "--echo");
		t_arg_add(a, "--port=%d", port);
		t_arg_add(a, "--x509cafile=%s/ca.pem", c);
		t_arg_add(a, "--x509certfile=%s/server-ecdsa.pem", c);
		t_arg_add(a, "--x509keyfile=%s/server-ecdsa.key", c);
		t_arg_add(a, "--require-client-cert");
		t_arg_add(a, "--verify-client-cert");
		t_arg_add(a, "--alpn=http/1.1");
		break;
	case T_PY_CLIENT:
	case T_PY_SERVER:
		t_arg_add(a, "%s", tool_python);
		t_arg_add(a, "-c");
		t_arg_add(a, "%s", py_peer);
		t_arg_add(a, "%s", t == T_PY_SERVER ? "server" : "client");
		t_arg_add(a, "%d", port);
		t_arg_add(a, "%s", c);
		break;
	}
}

/* A stream that must carry exactly the expect bytes at data. */
static int stream_init(struct t_stream *s, size_t expect, const uint8_t *data)
{
	uint8_t want[SHA256_LEN];

	t_sha256(data, expect, want);
	return t_stream_init(s, expect, want);
}

static void stream_verify(struct t_stream *s, const char *what, struct t_result *r)
{
	uint8_t got[SHA256_LEN];
	unsigned len = 0;
	char a[20];

	if (s->n != s->expect) {
		t_fail(r, "%s: %zu of %zu bytes", what, s->n, s->expect);
		return;
	}
	EVP_DigestFinal_ex(s->md, got, &len);
	if (memcmp(got, s->want, SHA256_LEN)) {
		t_fail(r, "%s: SHA-256 mismatch", what);
		return;
	}
	hex_str(got, 8, a, sizeof(a));
	t_note("%s: %zu bytes, SHA-256 %s... matches", what, s->n, a);
}

/* Our kTLS socket both ways, the peer's stdin and stdout, in one loop. */
struct xfer {
	int fd;
	struct t_peer *p;
	const uint8_t *tx;
	size_t tx_len, tx_off;
	const uint8_t *in;
	size_t in_len, in_off;
	struct t_stream rx, out;
	bool out_is_data, rx_eof;
	char err[300];
};

static bool xfer_done(const struct xfer *x)
{
	return x->tx_off == x->tx_len && x->in_off == x->in_len && x->rx.n == x->rx.expect &&
	       (!x->out_is_data || x->out.n == x->out.expect);
}

static int xfer_run(struct xfer *x, uint64_t deadline)
{
	static uint8_t buf[IO_CHUNK];
	struct pollfd pfd[4];
	ssize_t n;
	int k, i;

	while (!xfer_done(x)) {
		if (!t_ms_left(deadline)) {
			snprintf(x->err, sizeof(x->err), "timed out: sent %zu/%zu, received %zu/%zu, "
				 "peer stdin %zu/%zu, peer stdout %zu/%zu", x->tx_off, x->tx_len,
				 x->rx.n, x->rx.expect, x->in_off, x->in_len, x->out.n, x->out.expect);
			return -1;
		}
		if (x->rx_eof) {
			snprintf(x->err, sizeof(x->err), "our socket reached EOF after %zu of %zu bytes",
				 x->rx.n, x->rx.expect);
			return -1;
		}
		k = 0;
		pfd[k++] = (struct pollfd){ .fd = x->fd,
					    .events = POLLIN | (x->tx_off < x->tx_len ? POLLOUT : 0) };
		if (x->p->in_fd >= 0 && x->in_off < x->in_len)
			pfd[k++] = (struct pollfd){ .fd = x->p->in_fd, .events = POLLOUT };
		if (x->p->out_fd >= 0)
			pfd[k++] = (struct pollfd){ .fd = x->p->out_fd, .events = POLLIN };
		if (x->p->err_fd >= 0)
			pfd[k++] = (struct pollfd){ .fd = x->p->err_fd, .events = POLLIN };
		poll(pfd, (nfds_t)k, t_min_int(t_ms_left(deadline), 200));
		for (i = 0; i < 64; i++) {
			n = ktlsh_recv(x->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n == -EAGAIN)
				break;
			if (n == 0) {
				x->rx_eof = true;
				break;
			}
			if (n < 0) {
				snprintf(x->err, sizeof(x->err), "ktlsh_recv: %s", strerror((int)-n));
				return -1;
			}
			if (t_stream_add(&x->rx, buf, (size_t)n, x->err, sizeof(x->err), "our socket"))
				return -1;
		}
		for (i = 0; i < 16 && x->tx_off < x->tx_len; i++) {
			size_t want = x->tx_len - x->tx_off > IO_CHUNK ? IO_CHUNK : x->tx_len - x->tx_off;

			n = send(x->fd, x->tx + x->tx_off, want, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (n <= 0) {
				snprintf(x->err, sizeof(x->err), "send: %s", strerror(errno));
				return -1;
			}
			x->tx_off += (size_t)n;
		}
		while (x->p->in_fd >= 0 && x->in_off < x->in_len) {
			size_t want = x->in_len - x->in_off > 65536 ? 65536 : x->in_len - x->in_off;

			n = write(x->p->in_fd, x->in + x->in_off, want);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (n <= 0) {
				snprintf(x->err, sizeof(x->err), "writing the peer's stdin: %s",
					 strerror(errno));
				return -1;
			}
			x->in_off += (size_t)n;
		}
		for (i = 0; i < 64 && x->p->out_fd >= 0; i++) {
			n = read(x->p->out_fd, buf, sizeof(buf));
			if (n > 0) {
				if (!x->out_is_data)
					t_tail_add(&x->p->out, (char *)buf, (size_t)n);
				else if (t_stream_add(&x->out, buf, (size_t)n, x->err, sizeof(x->err),
						    "peer's stdout"))
					return -1;
				continue;
			}
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				t_close_fd(&x->p->out_fd);
			break;
		}
		t_peer_drain_fd(&x->p->err_fd, &x->p->err);
	}
	return 0;
}

/* After our close_notify: read (through kTLS) until the peer's close
 * arrives, keeping its pipes drained. */
static void wait_close(int fd, struct t_peer *p, int ms)
{
	uint64_t deadline = t_now_ms() + (uint64_t)ms;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[4096];
	ssize_t n;

	while (t_ms_left(deadline)) {
		poll(&pfd, 1, t_min_int(t_ms_left(deadline), 100));
		t_peer_drain(p);
		n = ktlsh_recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == -EAGAIN)
			continue;
		if (n <= 0) {
			t_note("after our close_notify the peer %s", n == 0 ? "closed too" :
			     "ended the connection with an error");
			return;
		}
	}
	t_note("the peer did not close within %d ms of our close_notify", ms);
}

/*
 * One connection with a real TLS stack on the other end: the handshake and
 * every field of the reply; with data, 1 MiB each way through the kernel.
 */
static void interop(enum tool t, bool data, struct t_result *r)
{
	static const char *const server_sans[] = { "DNS:localhost", "IP:127.0.0.1", NULL };
	bool daemon_server = t <= T_PY_CLIENT;
	bool echo = t == T_GNUTLS_SERV || t == T_PY_CLIENT || t == T_PY_SERVER;
	const char *want_alpn = daemon_server ? "h2" : "http/1.1";
	const char *alpn[2] = { "h2", "http/1.1" };
	struct ktlsh_request req = {
		.role = daemon_server ? KTLSH_PROTO_ROLE_SERVER : KTLSH_PROTO_ROLE_CLIENT,
		.identity = "interop",
		.server_name = daemon_server ? NULL : "localhost",
		.alpn = daemon_server ? NULL : alpn,
		.n_alpn = daemon_server ? 0 : 2,
	};
	struct ktlsh_proto_reply rep;
	struct t_argv a = { .n = 0 };
	struct xfer x = { .fd = -1 };
	struct t_peer p;
	struct dmn d;
	struct cfg c;
	char logfile[PATH_MAX + 32], line[300];
	uint8_t *out_buf = NULL, *in_buf = NULL;
	size_t out_len = PAYLOAD, in_len = echo ? 0 : PAYLOAD;
	uint64_t deadline = t_now_ms() + 60000ull * (uint64_t)sc.slow;
	int lfd = -1, fd = -1, port, ret;

	t_peer_init(&p);
	cfg_global(&c, "workers = 2\n");
	cfg_identity(&c, "interop", "server-ecdsa",
		     "server_names = localhost\nalpn = h2, http/1.1\nverify_client = required\n"
		     "allow_uids = *\n");
	cfg_add(&c, "ca_file = %s/ca.pem\n\n[client interop]\nca_file = %s/ca.pem\n"
		"cert = %s/client.pem\nkey = %s/client.key\nallow_uids = *\n", opt.certs, opt.certs,
		opt.certs, opt.certs);
	if (dmn_start(&d, &c, r))
		goto out;

	if (daemon_server) {
		lfd = t_listen_local(&port, 4);
		if (lfd < 0) {
			t_fail(r, "listen: %s", strerror(-lfd));
			goto out;
		}
	} else {
		port = t_free_port();
	}
	snprintf(logfile, sizeof(logfile), "%s/gnutls-cli.log", case_dir);
	tool_argv(&a, t, port, logfile);
	ret = t_peer_start(&p, tool_names[t], a.v, NULL, NULL, NULL);
	t_argv_free(&a);
	if (ret) {
		t_fail(r, "starting %s: %s", tool_names[t], strerror(-ret));
		goto out;
	}
	if (daemon_server) {
		fd = accept_deadline(lfd, &p, deadline, r);
		t_close_fd(&lfd);
	} else {
		fd = t_connect_retry(port, &p, deadline, 100, r);
	}
	if (fd < 0)
		goto out;

	ret = ktlsh_handshake_fd(sock_name, fd, &req, &rep);
	rep_note("reply", &rep);
	if (!rep_ok(&rep, ret)) {
		t_fail(r, "handshake with %s: %d (%s) \"%s\"", tool_names[t], ret, errname(ret),
		     rep.reason);
		goto out;
	}
	check(r, rep.type == KTLSH_PROTO_HANDSHAKE_REPLY, "reply type %s",
	      ktlsh_proto_type_name(rep.type));
	check(r, rep.tls_version == 0x0304, "TLS version 0x%04x, expected TLS 1.3", rep.tls_version);
	check(r, !strcmp(rep.cipher, "TLS_AES_128_GCM_SHA256") ||
		 !strcmp(rep.cipher, "TLS_AES_256_GCM_SHA384") ||
		 !strcmp(rep.cipher, "TLS_CHACHA20_POLY1305_SHA256"),
	      "cipher \"%s\" is a TLS 1.3 AEAD suite", rep.cipher);
	check(r, rep.group[0] != '\0', "key exchange group \"%s\" reported", rep.group);
	check(r, !strcmp(rep.alpn, want_alpn), "ALPN \"%s\", expected \"%s\"", rep.alpn, want_alpn);
	check(r, !rep.resumed, "a first connection is not resumed");
	check(r, rep.handshake_us > 0 && rep.handshake_us < 60000000ull,
	      "handshake time %llu us is plausible", (unsigned long long)rep.handshake_us);
	if (daemon_server)
		check_peer_cert(&rep, "client", "ktlsh-test-client", NULL, "client certificate", r);
	else
		check_peer_cert(&rep, "server-ecdsa", "localhost", server_sans, "server certificate", r);
	if (ktls_ok) {
		/* TLS 1.3: the server's NewSessionTicket (ktlshd sends one,
		 * daemon/runtime.c) went out under the application keys before
		 * handover; a client starts at 0. */
		uint64_t want_tx = daemon_server ? 1 : 0;
		uint64_t ktx = ~0ull, krx = ~0ull;

		check(r, rep.tx_seq == want_tx && rep.rx_seq == 0, "tx_seq %llu rx_seq %llu, expected %llu/0",
		      (unsigned long long)rep.tx_seq, (unsigned long long)rep.rx_seq,
		      (unsigned long long)want_tx);
		if (ktls_seq(fd, TLS_TX, &ktx) || ktls_seq(fd, TLS_RX, &krx))
			t_fail(r, "getsockopt(SOL_TLS): %s", strerror(errno));
		else
			check(r, ktx == rep.tx_seq && krx == rep.rx_seq,
			      "the kernel's sequence numbers %llu/%llu match the reply",
			      (unsigned long long)ktx, (unsigned long long)krx);
	} else {
		check(r, rep.tx_seq == 0 && rep.rx_seq == 0, "no sequence numbers when not installed");
	}
	if (r->verdict == T_FAIL)
		goto out;

	if (!data) {
		/* The handshake is the point: end it without data. With kTLS,
		 * with close_notify through the kernel; without (handshake-only),
		 * the way a client that got no offload would, with a FIN. Either
		 * way read what the peer still sends (tickets, its close) so that
		 * our close does not reset the connection under it. */
		if (ktls_ok) {
			t_set_nonblock(fd, true);
			if (ktlsh_send_close_notify(fd))
				t_fail(r, "ktlsh_send_close_notify failed");
			shutdown(fd, SHUT_WR);
			t_close_fd(&p.in_fd);
			wait_close(fd, &p, 10000 * sc.slow);
		} else {
			shutdown(fd, SHUT_WR);
			drain_until_eof(fd, 5000 * sc.slow);
		}
		t_close_fd(&fd);
		if (t != T_GNUTLS_SERV)
			t_peer_wait(&p, t_now_ms() + 5000ull * (uint64_t)sc.slow);
		goto check_peer;
	}

	/* 1 MiB each way through the kernel (16 KiB towards gnutls-cli, which
	 * writes what it receives a byte at a time); the echo peers send back
	 * what they got. */
	if (t == T_GNUTLS_CLI)
		out_len = GNUTLS_CLI_OUT;
	out_buf = t_payload_make(out_len, echo);
	in_buf = t_payload_make(in_len, false);
	if (!out_buf || !in_buf) {
		t_fail(r, "out of memory");
		goto out;
	}
	x.fd = fd;
	x.p = &p;
	x.tx = out_buf;
	x.tx_len = out_len;
	x.in = in_buf;
	x.in_len = in_len;
	x.out_is_data = !echo;
	if (stream_init(&x.rx, echo ? out_len : in_len, echo ? out_buf : in_buf) ||
	    stream_init(&x.out, echo ? 0 : out_len, out_buf)) {
		t_fail(r, "out of memory");
		goto out;
	}
	if (t_set_nonblock(fd, true) || xfer_run(&x, deadline)) {
		t_fail(r, "data through kTLS with %s: %s", tool_names[t], x.err);
		goto out;
	}
	stream_verify(&x.rx, echo ? "echoed back to us through kTLS" : "received by us through kTLS", r);
	if (!echo)
		stream_verify(&x.out, "received by the peer", r);
	/* close_notify from us, EOF to the peer's stdin: it answers with its
	 * own close (and ends, except gnutls-serv, which serves on). */
	if (ktlsh_send_close_notify(fd))
		t_fail(r, "ktlsh_send_close_notify failed");
	shutdown(fd, SHUT_WR);
	t_close_fd(&p.in_fd);
	wait_close(fd, &p, 10000 * sc.slow);
	if (t != T_GNUTLS_SERV && t_peer_wait(&p, t_now_ms() + 10000ull * (uint64_t)sc.slow))
		t_note("%s still running 10 s after close_notify; stopped", tool_names[t]);
check_peer:
	t_peer_stop(&p);
	if (t_tail_contains(&p.err, "Traceback") || t_tail_contains(&p.err, "bad record mac") ||
	    t_tail_contains(&p.err, "decryption failed") || t_tail_contains(&p.err, "Decryption has failed") ||
	    (ktls_ok && t_tail_contains(&p.err, "*** Fatal")))
		t_fail(r, "%s reported an error on its stderr", tool_names[t]);
	if (t == T_PY_CLIENT || t == T_PY_SERVER) {
		snprintf(line, sizeof(line), "cipher=%s alpn=%s peer=%s", rep.cipher, want_alpn,
			 daemon_server ? "localhost" : "ktlsh-test-client");
		check(r, t_tail_contains(&p.err, line), "python saw \"%s\"", line);
		if (data)
			check(r, t_tail_contains(&p.err, "python: echoed"), "python echoed and ended cleanly");
	}
out:
	if (r->verdict == T_FAIL)
		peer_diagnose(&p);
	t_peer_stop(&p);
	t_close_fd(&fd);
	t_close_fd(&lfd);
	t_stream_free(&x.rx);
	t_stream_free(&x.out);
	free(out_buf);
	free(in_buf);
	dmn_stop(&d, r);
}

static void case_interop_s_client(struct t_result *r) { interop(T_S_CLIENT, false, r); }
static void case_interop_gnutls_cli(struct t_result *r) { interop(T_GNUTLS_CLI, false, r); }
static void case_interop_py_client(struct t_result *r) { interop(T_PY_CLIENT, false, r); }
static void case_interop_s_server(struct t_result *r) { interop(T_S_SERVER, false, r); }
static void case_interop_gnutls_serv(struct t_result *r) { interop(T_GNUTLS_SERV, false, r); }
static void case_interop_py_server(struct t_result *r) { interop(T_PY_SERVER, false, r); }
static void case_data_s_client(struct t_result *r) { interop(T_S_CLIENT, true, r); }
static void case_data_gnutls_cli(struct t_result *r) { interop(T_GNUTLS_CLI, true, r); }
static void case_data_py_client(struct t_result *r) { interop(T_PY_CLIENT, true, r); }
static void case_data_s_server(struct t_result *r) { interop(T_S_SERVER, true, r); }
static void case_data_gnutls_serv(struct t_result *r) { interop(T_GNUTLS_SERV, true, r); }
static void case_data_py_server(struct t_result *r) { interop(T_PY_SERVER, true, r); }

/* ---- SNI, mutual TLS, ALPN, resumption ------------------------------------ */

/* One handshake on identity main with this SNI; the peer must see stem. */
static void sni_try(const char *sni, const char *sigalgs, const char *stem, struct t_result *r)
{
	char what[128];
	struct hs h;

	snprintf(what, sizeof(what), "SNI %s%s%s", sni ? sni : "(none)", sigalgs ? ", sigalgs " : "",
		 sigalgs ? sigalgs : "");
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "main");
	h.peer.sni = sni;
	h.peer.sigalgs = sigalgs;
	if (!hs_run(&h, r) && hs_expect_ok(&h, what, r))
		check_seen_cert(&h.peer, stem, what, r);
	cpeer_free(&h.peer);
}

static void sni_nobody(void *arg, struct t_result *r)
{
	/* Named by SNI, but root-only: the daemon stays on the identity the
	 * request named instead of refusing or leaking the other's cert. */
	sni_try("restricted.example", NULL, "server-ecdsa", r);
	sni_try("wrong.example", NULL, "wrongname", r);
}

static void case_sni(struct t_result *r)
{
	struct dmn d;
	struct cfg c;
	char extra[1024];

	cfg_global(&c, "workers = 2\n");
	snprintf(extra, sizeof(extra), "cert = %s/server-rsa.pem\nkey = %s/server-rsa.key\n"
		 "server_names = localhost\nallow_uids = *\n", opt.certs, opt.certs);
	cfg_identity(&c, "main", "server-ecdsa", extra);
	cfg_identity(&c, "alt", "wrongname", "server_names = wrong.example\nallow_uids = *\n");
	cfg_identity(&c, "restricted", "other-server", "server_names = restricted.example\n");
	if (dmn_start(&d, &c, r))
		goto out;
	sni_try("localhost", NULL, "server-ecdsa", r);
	sni_try(NULL, NULL, "server-ecdsa", r);
	sni_try("unknown.example", NULL, "server-ecdsa", r);
	sni_try("wrong.example", NULL, "wrongname", r);
	sni_try("WRONG.Example", NULL, "wrongname", r);
	/* the RSA pair of the same identity, for a client that takes only RSA */
	sni_try("localhost", "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pkcs1_sha256", "server-rsa", r);
	if (am_root) {
		/* root may use every identity, so SNI switches for it */
		sni_try("restricted.example", NULL, "other-server", r);
		as_nobody(sni_nobody, NULL, r);
	} else {
		t_note("not root: the uid 65534 part is left out");
	}
out:
	dmn_stop(&d, r);
}

/* One handshake on identity id, the peer presenting cert (or none). */
static void mtls_try(const char *id, const char *cert, const char *expect_name, int want,
		     bool want_peer_cert, struct t_result *r)
{
	char what[160];
	struct hs h;

	snprintf(what, sizeof(what), "%s with %s%s%s", id, cert ? cert : "no client certificate",
		 expect_name ? ", expected name " : "", expect_name ? expect_name : "");
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, id);
	h.req.server_name = expect_name;
	h.peer.cert = cert;
	h.peer.sni = "localhost";
	h.peer.verify_host = "localhost";
	if (hs_run(&h, r))
		goto out;
	if (want) {
		if (hs_expect_fail(&h, what, want, r) && !cert)
			check(r, h.rep.alert_sent == 116, "%s: alert %d sent, expected 116 "
			      "(certificate_required)", what, h.rep.alert_sent);
	} else if (hs_expect_ok(&h, what, r)) {
		if (want_peer_cert)
			check_peer_cert(&h.rep, "client", "ktlsh-test-client", NULL, what, r);
		else
			check_no_peer_cert(&h.rep, what, r);
	}
out:
	cpeer_free(&h.peer);
}

static void case_mtls(struct t_result *r)
{
	struct dmn d;
	struct cfg c;
	char extra[512];

	cfg_global(&c, "workers = 2\n");
	snprintf(extra, sizeof(extra), "verify_client = required\nca_file = %s/ca.pem\nallow_uids = *\n",
		 opt.certs);
	cfg_identity(&c, "required", "server-ecdsa", extra);
	snprintf(extra, sizeof(extra), "verify_client = optional\nca_file = %s/ca.pem\nallow_uids = *\n",
		 opt.certs);
	cfg_identity(&c, "optional", "server-ecdsa", extra);
	cfg_identity(&c, "none", "server-ecdsa", "verify_client = none\nallow_uids = *\n");
	if (dmn_start(&d, &c, r))
		goto out;
	mtls_try("required", "client", NULL, 0, true, r);
	mtls_try("required", NULL, NULL, -EPROTO, false, r);	/* alert certificate_required */
	mtls_try("required", "other-server", NULL, -EKEYREJECTED, false, r);
	mtls_try("required", "expired", NULL, -EKEYREJECTED, false, r);
	mtls_try("required", "client", "ktlsh-test-client", 0, true, r);
	mtls_try("required", "client", "someone-else.example", -EKEYREJECTED, false, r);
	/* A name to check needs a certificate to check it on. */
	mtls_try("optional", NULL, "ktlsh-test-client", -EPROTO, false, r);
	mtls_try("optional", "client", "ktlsh-test-client", 0, true, r);
	mtls_try("none", "client", "ktlsh-test-client", -EINVAL, false, r);
	mtls_try("optional", NULL, NULL, 0, false, r);
	mtls_try("optional", "client", NULL, 0, true, r);
	mtls_try("optional", "other-server", NULL, -EKEYREJECTED, false, r);
	mtls_try("none", "client", NULL, 0, false, r);
	mtls_try("none", NULL, NULL, 0, false, r);
	check(r, dmn_counter("handshakes.certificate_rejected", r) == 4,
	      "handshakes.certificate_rejected is 4");
out:
	dmn_stop(&d, r);
}

/* The daemon as server: the client offers offer, the request may override
 * the identity's list; want "" means no ALPN, NULL a failed handshake. */
static void alpn_server(const char *offer, const char *req_alpn, const char *want, struct t_result *r)
{
	char what[160];
	struct hs h;

	snprintf(what, sizeof(what), "server, client offers %s%s%s", offer ? offer : "nothing",
		 req_alpn ? ", request accepts " : "", req_alpn ? req_alpn : "");
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "web");
	h.peer.alpn = offer;
	h.peer.sni = "localhost";
	if (req_alpn) {
		h.alpn[0] = req_alpn;
		h.req.n_alpn = 1;
	}
	if (hs_run(&h, r))
		goto out;
	if (!want) {
		/* RFC 7301 3.2: no common protocol is a fatal no_application_protocol */
		if (hs_expect_fail(&h, what, -EPROTO, r))
			check(r, h.rep.alert_sent == 120, "%s: alert sent %d, expected 120 "
			      "(no_application_protocol)", what, h.rep.alert_sent);
	} else if (hs_expect_ok(&h, what, r)) {
		check(r, !strcmp(h.rep.alpn, want), "%s: the daemon chose \"%s\", expected \"%s\"",
		      what, h.rep.alpn, want);
		check(r, !strcmp(h.peer.alpn_sel, want), "%s: the client got \"%s\", expected \"%s\"",
		      what, h.peer.alpn_sel, want);
	}
out:
	cpeer_free(&h.peer);
}

/* The daemon as client: it offers (request list or profile's), the peer
 * server picks by its own preference. */
static void alpn_client(const char *profile, const char *req1, const char *req2,
			const char *server_pref, const char *want, struct t_result *r)
{
	char what[160];
	struct hs h;

	snprintf(what, sizeof(what), "client profile %s offers %s%s%s, server prefers %s", profile,
		 req1 ? req1 : "(profile's list)", req2 ? "," : "", req2 ? req2 : "", server_pref);
	hs_init(&h, KTLSH_PROTO_ROLE_CLIENT, profile);
	h.req.server_name = "localhost";
	h.peer.alpn = server_pref;
	if (req1)
		h.alpn[h.req.n_alpn++] = req1;
	if (req2)
		h.alpn[h.req.n_alpn++] = req2;
	if (!hs_run(&h, r) && hs_expect_ok(&h, what, r)) {
		check(r, !strcmp(h.rep.alpn, want), "%s: the daemon got \"%s\", expected \"%s\"", what,
		      h.rep.alpn, want);
		check(r, !strcmp(h.peer.alpn_sel, want), "%s: the server chose \"%s\", expected \"%s\"",
		      what, h.peer.alpn_sel, want);
		check_peer_cert(&h.rep, "server-ecdsa", "localhost",
				(const char *const[]){ "DNS:localhost", "IP:127.0.0.1", NULL }, what, r);
	}
	cpeer_free(&h.peer);
}

static void case_alpn(struct t_result *r)
{
	struct dmn d;
	struct cfg c;

	cfg_global(&c, "workers = 2\n");
	cfg_identity(&c, "web", "server-ecdsa",
		     "server_names = localhost\nalpn = h2, http/1.1\nallow_uids = *\n");
	cfg_add(&c, "[client plain]\nca_file = %s/ca.pem\nallow_uids = *\n\n"
		"[client h2only]\nca_file = %s/ca.pem\nalpn = h2\nallow_uids = *\n", opt.certs,
		opt.certs);
	if (dmn_start(&d, &c, r))
		goto out;
	alpn_server("http/1.1,h2", NULL, "h2", r);	/* the server's preference wins */
	alpn_server("http/1.1", NULL, "http/1.1", r);
	alpn_server(NULL, NULL, "", r);
	alpn_server("h2,http/1.1", "http/1.1", "http/1.1", r);
	alpn_server("spdy/3", NULL, NULL, r);
	alpn_client("plain", "h2", "http/1.1", "http/1.1,h2", "http/1.1", r);
	alpn_client("plain", "h2", NULL, "http/1.1,h2", "h2", r);
	alpn_client("h2only", NULL, NULL, "http/1.1,h2", "h2", r);
out:
	dmn_stop(&d, r);
}

/* A handshake on identity id offering sess; reports whether it resumed. */
static int resume_try(const char *id, SSL_SESSION *sess, int max_version, SSL_SESSION **out,
		      const char *what, struct t_result *r)
{
	struct hs h;
	int resumed = -1;

	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, id);
	h.peer.sni = "localhost";
	h.peer.verify_host = "localhost";
	h.peer.resume = sess;
	h.peer.max_version = max_version;
	if (!hs_run(&h, r) && hs_expect_ok(&h, what, r)) {
		resumed = h.rep.resumed;
		if (h.rep.resumed != h.peer.reused)
			t_fail(r, "%s: the daemon says resumed=%d, the client %d", what, h.rep.resumed,
			     h.peer.reused);
		if (out) {
			*out = h.peer.session;
			h.peer.session = NULL;
		}
		if (t_verbose)
			t_note("%s: resumed=%d, %u session(s) offered to the client", what, resumed,
			     h.peer.sessions);
	}
	cpeer_free(&h.peer);
	return resumed;
}

static void case_resume(struct t_result *r)
{
	SSL_SESSION *s13 = NULL, *s12 = NULL, *snt = NULL;
	unsigned i, n13 = 8, n12 = 4, ok13 = 0, ok12 = 0;
	char what[64];
	struct dmn d;
	struct cfg c;

	cfg_global(&c, "workers = 4\n");
	cfg_identity(&c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
	cfg_identity(&c, "other", "server-ecdsa", "allow_uids = *\n");
	cfg_identity(&c, "notickets", "server-ecdsa", "tickets = no\nallow_uids = *\n");
	if (dmn_start(&d, &c, r))
		goto out;

	/* TLS 1.3: a full handshake, then n13 resumptions with its ticket. The
	 * daemon hands requests to its 4 workers round robin, so consecutive
	 * ones land on different workers: the ticket keys must be shared. */
	if (resume_try("main", NULL, 0, &s13, "TLS 1.3 full handshake", r) != 0 || !s13) {
		t_fail(r, "TLS 1.3: %s", s13 ? "the first handshake resumed?" : "no session ticket arrived");
		goto out;
	}
	for (i = 0; i < n13; i++) {
		snprintf(what, sizeof(what), "TLS 1.3 resumption %u", i + 1);
		ok13 += resume_try("main", s13, 0, NULL, what, r) == 1;
	}
	check(r, ok13 == n13, "TLS 1.3: %u of %u connections resumed across 4 workers", ok13, n13);

	/* TLS 1.2 session tickets, the same way */
	if (resume_try("main", NULL, TLS1_2_VERSION, &s12, "TLS 1.2 full handshake", r) != 0 || !s12) {
		t_fail(r, "TLS 1.2: no session ticket");
		goto out;
	}
	for (i = 0; i < n12; i++) {
		snprintf(what, sizeof(what), "TLS 1.2 resumption %u", i + 1);
		ok12 += resume_try("main", s12, TLS1_2_VERSION, NULL, what, r) == 1;
	}
	check(r, ok12 == n12, "TLS 1.2: %u of %u connections resumed across 4 workers", ok12, n12);

	/* Not across identities (the session id context binds it) ... */
	check(r, resume_try("other", s13, 0, NULL, "main's ticket on identity other", r) == 0,
	      "a ticket of identity main does not resume on identity other");
	/* ... and not where tickets are off. */
	if (resume_try("notickets", NULL, 0, &snt, "tickets = no, full handshake", r) == 0)
		check(r, !snt, "an identity with tickets = no issues no ticket");
	check(r, resume_try("notickets", s13, 0, NULL, "main's ticket on tickets = no", r) == 0,
	      "an identity with tickets = no resumes nothing");
	if (ktls_ok)
		check(r, dmn_counter("handshakes.resumed", r) == (long long)(n13 + n12),
		      "handshakes.resumed counts the %u resumptions", n13 + n12);
	t_note("%u TLS 1.3 and %u TLS 1.2 resumptions over 4 workers (round robin: every worker "
	     "took some)", ok13, ok12);
out:
	SSL_SESSION_free(s13);
	SSL_SESSION_free(s12);
	SSL_SESSION_free(snt);
	dmn_stop(&d, r);
}

/* ---- the nonblocking API: submit now, complete later ------------------------ */

static int submit1(struct ktlsh_client *kc, int fd, const struct ktlsh_request *req, uint32_t *id,
		   struct t_result *r)
{
	int ret = ktlsh_submit(kc, fd, req, id);

	if (ret)
		t_fail(r, "ktlsh_submit: %s", strerror(-ret));
	return ret;
}

/* Wait for any reply on kc (ms at most): 0 with *rep, or -errno. */
static int complete1(struct ktlsh_client *kc, struct ktlsh_proto_reply *rep, int ms)
{
	uint64_t deadline = t_now_ms() + (uint64_t)ms;
	struct pollfd pfd = { .fd = ktlsh_client_fd(kc), .events = POLLIN };
	int ret;

	for (;;) {
		ret = ktlsh_complete(kc, rep);
		if (ret != -EAGAIN)
			return ret;
		if (!t_ms_left(deadline))
			return -ETIMEDOUT;
		poll(&pfd, 1, t_ms_left(deadline));
	}
}

/* ---- silent peers and peers that give up -------------------------------- */

static void case_silent(struct t_result *r)
{
	unsigned n = sc.silent, i, got = 0, normal_ok = 0, early = 0, late = 0;
	unsigned tmo = sc.silent_timeout_ms, short_tmo = sc.silent_timeout_ms / 4;
	struct ktlsh_request req = { .role = KTLSH_PROTO_ROLE_SERVER, .identity = "main" };
	struct ktlsh_proto_reply rep;
	struct ktlsh_client *kc = NULL;
	int *cfd = calloc(n + 1, sizeof(int)), *sfd = calloc(n + 1, sizeof(int));
	uint64_t t0 = 0, normal_max = 0, normal_done = 0, el, first = ~0ull, last = 0;
	uint32_t short_id = 0, id;
	char extra[128];
	struct dmn d;
	struct cfg c;
	int ret;

	if (!cfd || !sfd) {
		t_fail(r, "out of memory");
		goto out;
	}
	for (i = 0; i <= n; i++)
		cfd[i] = sfd[i] = -1;
	snprintf(extra, sizeof(extra), "handshake_timeout = %ums\n", tmo);
	cfg_global(&c, extra);
	cfg_identity(&c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
	if (dmn_start(&d, &c, r))
		goto out;
	ret = ktlsh_client_open(&kc, sock_name);
	if (ret) {
		t_fail(r, "ktlsh_client_open: %s", strerror(-ret));
		goto out;
	}
	/* n silent clients: connected, never a byte. One more asks for a
	 * shorter deadline in its request. */
	t0 = t_now_ms();
	for (i = 0; i <= n; i++) {
		ret = tcp_pair(&cfd[i], &sfd[i]);
		if (ret) {
			t_fail(r, "tcp pair: %s", strerror(-ret));
			goto out;
		}
		req.timeout_ms = i == n ? short_tmo : 0;
		if (submit1(kc, sfd[i], &req, &id, r))
			goto out;
		if (i == n)
			short_id = id;
	}
	/* Meanwhile ordinary handshakes go through, each promptly. */
	for (i = 0; i < sc.silent_normal; i++) {
		uint64_t t1 = t_now_ms();
		struct hs h;

		hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "main");
		h.peer.sni = "localhost";
		h.peer.verify_host = "localhost";
		if (!hs_run(&h, r) && hs_expect_ok(&h, "a normal handshake beside silent ones", r))
			normal_ok++;
		cpeer_free(&h.peer);
		if (t_now_ms() - t1 > normal_max)
			normal_max = t_now_ms() - t1;
	}
	normal_done = t_now_ms() - t0;
	t_note("%u normal handshakes beside %u silent ones: slowest %llu ms, all done %llu ms after "
	     "the silent ones arrived (their timeout: %u ms)", normal_ok, n + 1,
	     (unsigned long long)normal_max, (unsigned long long)normal_done, tmo);
	check(r, normal_ok == sc.silent_normal, "%u of %u normal handshakes succeeded", normal_ok,
	      sc.silent_normal);
	check(r, normal_max < tmo / 4, "the slowest normal handshake took %llu ms (< %u ms)",
	      (unsigned long long)normal_max, tmo / 4);
	check(r, normal_done < short_tmo + tmo / 4 || normal_done < tmo,
	      "the normal handshakes finished before the silent ones timed out");

	/* Every silent one times out at its deadline, the short one first. */
	while (got <= n) {
		ret = complete1(kc, &rep, (int)(2 * tmo + 5000u * (unsigned)sc.slow));
		if (ret) {
			t_fail(r, "%u of %u silent handshakes answered, then: %s", got, n + 1,
			     strerror(-ret));
			break;
		}
		got++;
		el = t_now_ms() - t0;
		if (rep.status != -ETIMEDOUT) {
			rep_note("silent", &rep);
			t_fail(r, "a silent client's handshake ended with %d (%s), not -ETIMEDOUT",
			     rep.status, errname(rep.status));
			continue;
		}
		if (rep.id == short_id) {
			t_note("the request with timeout_ms = %u timed out after %llu ms: \"%s\"", short_tmo,
			     (unsigned long long)el, rep.reason);
			check(r, el >= short_tmo * 9 / 10 && el < tmo,
			      "the request's own %u ms deadline applied (%llu ms)", short_tmo,
			      (unsigned long long)el);
			continue;
		}
		first = el < first ? el : first;
		last = el > last ? el : last;
		early += el < tmo * 9 / 10;
		late += el > tmo + 2000u * (unsigned)sc.slow;
	}
	t_note("%u silent handshakes timed out between %llu and %llu ms (handshake_timeout %u ms)", n,
	     (unsigned long long)first, (unsigned long long)last, tmo);
	check(r, !early && !late, "%u timed out early, %u late", early, late);
	check(r, dmn_counter("handshakes.timeout", r) == (long long)n + 1,
	      "handshakes.timeout counts the %u silent clients", n + 1);
	check(r, dmn_counter_soon("handshakes.inflight", 0, r), "nothing left in flight");
out:
	ktlsh_client_close(kc);
	for (i = 0; cfd && sfd && i <= n; i++) {
		t_close_fd(&cfd[i]);
		t_close_fd(&sfd[i]);
	}
	free(cfd);
	free(sfd);
	dmn_stop(&d, r);
}

static void tcp_reset(int *fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(*fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	t_close_fd(fd);
}

enum abort_mode { AB_RESET_MID, AB_CLOSE_MID, AB_GARBAGE, AB_SERVER_RESET };

static void abort_try(struct ktlsh_client *kc, enum abort_mode m, int want, struct t_result *r)
{
	static const char *const names[] = {
		[AB_RESET_MID] = "server; the client sends half a ClientHello, then RST",
		[AB_CLOSE_MID] = "server; the client sends half a ClientHello, then FIN",
		[AB_GARBAGE] = "server; the client sends an HTTP request",
		[AB_SERVER_RESET] = "client; the server reads the ClientHello, then RST",
	};
	static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
	struct ktlsh_request req = { .role = KTLSH_PROTO_ROLE_SERVER, .identity = "main" };
	struct ktlsh_proto_reply rep;
	uint8_t ch[2048];
	struct pollfd pfd;
	ssize_t n;
	int c, s, ours, raw, ret;

	if (tcp_pair(&c, &s)) {
		t_fail(r, "tcp pair: %s", strerror(errno));
		return;
	}
	if (m == AB_SERVER_RESET) {
		req.role = KTLSH_PROTO_ROLE_CLIENT;
		req.identity = "cli";
		req.server_name = "localhost";
		ours = c;
		raw = s;
	} else {
		ours = s;
		raw = c;
	}
	if (submit1(kc, ours, &req, NULL, r))
		goto out;
	switch (m) {
	case AB_RESET_MID:
	case AB_CLOSE_MID:
		n = t_make_client_hello(ch, sizeof(ch));
		if (n < 40 || write(raw, ch, (size_t)n / 2) != n / 2) {
			t_fail(r, "sending half a ClientHello failed");
			goto out;
		}
		t_msleep(100 * sc.slow);	/* the daemon sits mid-handshake */
		if (m == AB_RESET_MID)
			tcp_reset(&raw);
		else
			t_close_fd(&raw);
		break;
	case AB_GARBAGE:
		if (write(raw, http, sizeof(http) - 1) != (ssize_t)sizeof(http) - 1)
			t_fail(r, "write: %s", strerror(errno));
		break;
	case AB_SERVER_RESET:
		pfd = (struct pollfd){ .fd = raw, .events = POLLIN };
		poll(&pfd, 1, 10000 * sc.slow);
		n = read(raw, ch, sizeof(ch));
		if (t_verbose)
			t_note("read %zd bytes of the daemon's ClientHello; resetting", n);
		tcp_reset(&raw);
		break;
	}
	ret = complete1(kc, &rep, 20000 * sc.slow);
	if (ret) {
		t_fail(r, "%s: no reply: %s", names[m], strerror(-ret));
		goto out;
	}
	if (rep.status != want) {
		rep_note(names[m], &rep);
		t_fail(r, "%s: status %d (%s) \"%s\", expected %s", names[m], rep.status,
		     errname(rep.status), rep.reason, errname(want));
	} else {
		t_note("%s: %s \"%s\"", names[m], errname(rep.status), rep.reason);
	}
out:
	t_close_fd(&c);
	t_close_fd(&s);
	(void)raw;
}

static void case_abort(struct t_result *r)
{
	struct ktlsh_client *kc = NULL;
	struct dmn d;
	struct cfg c;
	struct hs h;
	int ret;

	cfg_global(&c, "workers = 2\n");
	cfg_identity(&c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
	cfg_add(&c, "[client cli]\nca_file = %s/ca.pem\nallow_uids = *\n", opt.certs);
	if (dmn_start(&d, &c, r))
		goto out;
	ret = ktlsh_client_open(&kc, sock_name);
	if (ret) {
		t_fail(r, "ktlsh_client_open: %s", strerror(-ret));
		goto out;
	}
	abort_try(kc, AB_RESET_MID, -ECONNRESET, r);
	abort_try(kc, AB_CLOSE_MID, -ECONNRESET, r);
	abort_try(kc, AB_GARBAGE, -EPROTO, r);
	abort_try(kc, AB_SERVER_RESET, -ECONNRESET, r);
	/* and it still serves */
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "main");
	h.peer.sni = "localhost";
	if (!hs_run(&h, r))
		hs_expect_ok(&h, "a normal handshake afterwards", r);
	cpeer_free(&h.peer);
	check(r, dmn_counter("handshakes.peer_reset", r) == 3, "handshakes.peer_reset is 3");
	check(r, dmn_counter("handshakes.tls_error", r) == 1, "handshakes.tls_error is 1");
out:
	ktlsh_client_close(kc);
	dmn_stop(&d, r);
}

/* ---- the control socket, spoken raw ---------------------------------------- */

static int ctl_connect(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t len = strlen(sock_name);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	memcpy(sun.sun_path, sock_name, len);
	sun.sun_path[0] = '\0';		/* "@name": abstract */
	if (connect(fd, (struct sockaddr *)&sun, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len))) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static int ctl_send(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(16 * sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (nfds) {
		memset(&cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
	}
	return sendmsg(fd, &msg, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -errno;
}

enum ctl_outcome { CTL_REPLY, CTL_CLOSED, CTL_SILENT, CTL_UNDECODABLE };

/* What came back for one message: a reply (decoded into rep, status items
 * ignored), the connection closed, nothing, or bytes that do not decode. */
static enum ctl_outcome ctl_recv(int fd, struct ktlsh_proto_reply *rep, int ms)
{
	static uint8_t buf[KTLSH_PROTO_MAX_MSG];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct ktlsh_proto_status *st;
	struct ktlsh_proto_hdr hdr;
	ssize_t n;

	if (poll(&pfd, 1, ms) <= 0)
		return CTL_SILENT;
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n <= 0)
		return CTL_CLOSED;
	if (ktlsh_proto_decode_header(buf, (size_t)n, &hdr) == 0 && hdr.type == KTLSH_PROTO_STATUS_REPLY) {
		st = calloc(1, sizeof(*st));
		if (!st || ktlsh_proto_decode_status(buf, (size_t)n, st)) {
			free(st);
			return CTL_UNDECODABLE;
		}
		ktlsh_proto_reply_init(rep, KTLSH_PROTO_STATUS_REPLY, st->id);
		rep->type = KTLSH_PROTO_STATUS_REPLY;
		rep->status = st->status;
		free(st);
		return CTL_REPLY;
	}
	return ktlsh_proto_decode_reply(buf, (size_t)n, rep) ? CTL_UNDECODABLE : CTL_REPLY;
}

static const char *ctl_outcome_str(enum ctl_outcome o, const struct ktlsh_proto_reply *rep,
				   char *buf, size_t len)
{
	switch (o) {
	case CTL_REPLY:
		snprintf(buf, len, "%s id %u status %d (%s) \"%s\"", ktlsh_proto_type_name(rep->type),
			 rep->id, rep->status, errname(rep->status), rep->reason);
		break;
	case CTL_CLOSED:
		snprintf(buf, len, "the connection closed");
		break;
	case CTL_SILENT:
		snprintf(buf, len, "no answer");
		break;
	default:
		snprintf(buf, len, "an answer that does not decode");
		break;
	}
	return buf;
}

static size_t enc_request(uint8_t *buf, size_t cap, enum ktlsh_proto_type type, uint32_t id,
			  const char *identity)
{
	struct ktlsh_proto_request req;
	struct ktlsh_buf b;

	ktlsh_proto_request_init(&req, type, id);
	if (type == KTLSH_PROTO_HANDSHAKE_REQ) {
		req.role = KTLSH_PROTO_ROLE_SERVER;
		if (identity)
			snprintf(req.identity, sizeof(req.identity), "%s", identity);
		snprintf(req.server_name, sizeof(req.server_name), "ktlsh-test-client");
		req.n_alpn = 2;
		snprintf(req.alpn[0], sizeof(req.alpn[0]), "h2");
		snprintf(req.alpn[1], sizeof(req.alpn[1]), "http/1.1");
		req.timeout_ms = 5000;
	}
	ktlsh_buf_init(&b, buf, cap);
	return ktlsh_proto_encode_request(&b, &req) ? 0 : b.len;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Does the connection still work? A STATUS_REQ must get a STATUS_REPLY. */
static bool ctl_still_open(int fd)
{
	struct ktlsh_proto_reply rep;
	uint8_t buf[64];
	size_t n = enc_request(buf, sizeof(buf), KTLSH_PROTO_STATUS_REQ, 4242, NULL);

	return !ctl_send(fd, buf, n, NULL, 0) && ctl_recv(fd, &rep, 5000 * sc.slow) == CTL_REPLY &&
	       rep.type == KTLSH_PROTO_STATUS_REPLY && rep.id == 4242;
}

enum expect { X_CLOSE, X_ERROR, X_CLOSE_OR_ERROR };

/* One bad message on a fresh connection; the daemon must close it, or
 * answer ERROR with status want (id echoed) and keep the connection. */
static void garbage_try(const char *what, const void *buf, size_t len, enum expect x, int want,
			uint32_t id, struct t_result *r)
{
	struct ktlsh_proto_reply rep;
	enum ctl_outcome o;
	char got[400];
	int fd = ctl_connect();

	if (fd < 0) {
		t_fail(r, "%s: cannot connect: %s", what, strerror(-fd));
		return;
	}
	if (ctl_send(fd, buf, len, NULL, 0)) {
		/* A packet over the socket's limits may be refused at send. */
		t_note("%s: refused by the kernel at send (%s)", what, strerror(errno));
		close(fd);
		return;
	}
	o = ctl_recv(fd, &rep, 5000 * sc.slow);
	ctl_outcome_str(o, &rep, got, sizeof(got));
	if (o == CTL_CLOSED && x != X_ERROR) {
		t_note("%s: %s", what, got);
	} else if (o == CTL_REPLY && x != X_CLOSE && rep.type == KTLSH_PROTO_ERROR &&
		   rep.status == want && rep.id == id) {
		t_note("%s: %s", what, got);
		check(r, ctl_still_open(fd), "%s: the connection still serves after the ERROR", what);
	} else {
		t_fail(r, "%s: %s; expected %s%s%s (id %u)", what, got,
		     x == X_ERROR ? "" : "the connection closed", x == X_CLOSE_OR_ERROR ? " or " : "",
		     x == X_CLOSE ? "" : errname(want), id);
	}
	close(fd);
}

static void case_ctl_garbage(struct t_result *r)
{
	uint8_t valid[8192], buf[8192], *big = NULL;
	struct ktlsh_proto_reply rep;
	unsigned i, replies = 0, closes = 0, iters = sc.uml ? 60 : 400;
	size_t vlen, blen;
	int fds0, fds1, fd = -1;
	struct dmn d;
	struct cfg c;
	struct hs h;

	cfg_global(&c, "workers = 2\n");
	cfg_identity(&c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
	if (dmn_start(&d, &c, r))
		goto out;
	fds0 = dmn_settle(&d, r);
	vlen = enc_request(valid, sizeof(valid), KTLSH_PROTO_HANDSHAKE_REQ, 7, "main");
	if (!vlen) {
		t_fail(r, "cannot encode a request");
		goto out;
	}

	/* not the protocol at all: hang up */
	RAND_bytes(buf, 64);
	buf[0] = 'x';
	garbage_try("64 random bytes", buf, 64, X_CLOSE, 0, 0, r);
	garbage_try("8 bytes (shorter than a header)", valid, 8, X_CLOSE, 0, 0, r);
	garbage_try("an empty packet", valid, 0, X_CLOSE_OR_ERROR, -EBADMSG, 0, r);
	/* a valid header whose length lies */
	memcpy(buf, valid, 16);
	put32(buf + 8, 64);
	garbage_try("a 16-byte header that claims 64 bytes", buf, 16, X_ERROR, -EBADMSG, 7, r);
	memcpy(buf, valid, vlen);
	put32(buf + 8, (uint32_t)vlen - 8);
	garbage_try("a request whose length field is 8 short", buf, vlen, X_ERROR, -EBADMSG, 7, r);
	put32(buf + 8, (uint32_t)vlen + 2);
	garbage_try("a length that is not a multiple of 4", buf, vlen, X_CLOSE_OR_ERROR, -EBADMSG, 7, r);
	put32(buf + 8, 0x7fffffff);
	garbage_try("a length of 2 GiB", buf, vlen, X_CLOSE_OR_ERROR, -EMSGSIZE, 7, r);
	/* truncated: the length field agrees, the attributes run past it */
	memcpy(buf, valid, vlen);
	put32(buf + 8, 28);
	garbage_try("a request cut inside its attributes", buf, 28, X_ERROR, -EBADMSG, 7, r);
	/* an attribute whose own length lies */
	memcpy(buf, valid, vlen);
	buf[18] = 0x0f;
	buf[19] = 0xf0;
	garbage_try("an attribute claiming 4080 bytes", buf, vlen, X_ERROR, -EBADMSG, 7, r);
	/* other versions and types */
	memcpy(buf, valid, vlen);
	buf[4] = 2;
	garbage_try("protocol version 2", buf, vlen, X_ERROR, -EPROTO, 7, r);
	memcpy(buf, valid, vlen);
	buf[5] = 99;
	garbage_try("message type 99", buf, vlen, X_ERROR, -EPROTO, 7, r);
	memcpy(buf, valid, vlen);
	buf[5] = KTLSH_PROTO_HANDSHAKE_REPLY;
	garbage_try("a HANDSHAKE_REPLY sent to the daemon", buf, vlen, X_ERROR, -EBADMSG, 7, r);
	memcpy(buf, valid, vlen);
	buf[7] = 1;
	garbage_try("unknown header flags", buf, vlen, X_ERROR, -EPROTO, 7, r);
	/* bigger than any message */
	big = calloc(1, 70000);
	if (big) {
		memcpy(big, valid, vlen);
		put32(big + 8, 70000);
		garbage_try("a 70000-byte packet", big, 70000, X_CLOSE_OR_ERROR, -EMSGSIZE, 7, r);
	}

	/* Mutations of a valid request on one connection (no descriptor):
	 * every one is answered or the connection is closed; never a crash. */
	for (i = 0; i < iters; i++) {
		enum ctl_outcome o;
		unsigned k, flips = 1 + (unsigned)(random() % 4);

		if (fd < 0 && (fd = ctl_connect()) < 0) {
			t_fail(r, "connect: %s", strerror(-fd));
			goto out;
		}
		memcpy(buf, valid, vlen);
		blen = vlen;
		for (k = 0; k < flips; k++)
			buf[16 + (size_t)random() % (vlen - 16)] ^= (uint8_t)(1 + random() % 255);
		if (random() % 4 == 0)
			blen = 16 + (size_t)random() % (vlen - 16);
		if (ctl_send(fd, buf, blen, NULL, 0)) {
			t_close_fd(&fd);
			continue;
		}
		o = ctl_recv(fd, &rep, 5000 * sc.slow);
		if (o == CTL_REPLY) {
			replies++;
			if (rep.status >= 0)
				t_fail(r, "mutation %u got status %d", i, rep.status);
		} else if (o == CTL_CLOSED) {
			closes++;
			t_close_fd(&fd);
		} else {
			t_fail(r, "mutation %u: %s", i, o == CTL_SILENT ? "no answer" : "undecodable answer");
			t_close_fd(&fd);
		}
		if (!dmn_alive(&d)) {
			t_fail(r, "ktlshd died on mutation %u", i);
			goto out;
		}
	}
	t_close_fd(&fd);
	t_note("%u mutated requests: %u error replies, %u closed connections", iters, replies, closes);

	/* still serving, nothing leaked */
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "main");
	h.peer.sni = "localhost";
	if (!hs_run(&h, r))
		hs_expect_ok(&h, "a handshake after the garbage", r);
	cpeer_free(&h.peer);
	fds1 = dmn_settle(&d, r);
	check(r, fds1 == fds0, "the daemon has %d descriptors open, %d before the garbage", fds1, fds0);
	check(r, dmn_counter("control.bad_messages", r) > 0, "control.bad_messages counts them");
out:
	t_close_fd(&fd);
	free(big);
	dmn_stop(&d, r);
}

/* A HANDSHAKE_REQ carrying fds; the reply must be a HANDSHAKE_REPLY (the
 * spec's table) with status want, and the connection must stay usable. */
static void badfd_try(int cfd, const char *what, const int *fds, int nfds, int want,
		      struct t_result *r)
{
	static uint32_t id = 100;
	struct ktlsh_proto_reply rep;
	enum ctl_outcome o;
	uint8_t buf[4096];
	size_t len = enc_request(buf, sizeof(buf), KTLSH_PROTO_HANDSHAKE_REQ, ++id, "main");
	char got[400];

	if (ctl_send(cfd, buf, len, fds, nfds)) {
		t_fail(r, "%s: sendmsg: %s", what, strerror(errno));
		return;
	}
	o = ctl_recv(cfd, &rep, 5000 * sc.slow);
	ctl_outcome_str(o, &rep, got, sizeof(got));
	t_note("%s: %s", what, got);
	if (o != CTL_REPLY || rep.status != want || rep.id != id) {
		t_fail(r, "%s: %s, expected status %s", what, got, errname(want));
		return;
	}
	check(r, rep.type == KTLSH_PROTO_HANDSHAKE_REPLY,
	      "%s: refused with %s, not the HANDSHAKE_REPLY protocol.md specifies", what,
	      ktlsh_proto_type_name(rep.type));
	check(r, rep.reason[0] != '\0', "%s: the refusal has a reason", what);
}

static void case_ctl_badfd(struct t_result *r)
{
	int cfd = -1, a = -1, b = -1, a2 = -1, b2 = -1, p[2] = { -1, -1 }, u[2] = { -1, -1 };
	int udp = -1, tcp = -1, lst = -1, nul = -1, many[10], fds0, fds1, i, port;
	struct ktlsh_proto_reply rep;
	enum ctl_outcome o;
	uint8_t buf[256];
	size_t len;
	char got[400];
	struct dmn d;
	struct cfg c;

	for (i = 0; i < 10; i++)
		many[i] = -1;
	cfg_global(&c, "workers = 2\n");
	cfg_identity(&c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
	if (dmn_start(&d, &c, r))
		goto out;
	fds0 = dmn_settle(&d, r);
	cfd = ctl_connect();
	if (cfd < 0 || tcp_pair(&a, &b) || tcp_pair(&a2, &b2) || pipe2(p, O_CLOEXEC) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, u) ||
	    (udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 ||
	    (tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    (lst = t_listen_local(&port, 1)) < 0 || (nul = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
		t_fail(r, "setting up descriptors: %s", strerror(errno));
		goto out;
	}
	badfd_try(cfd, "no descriptor", NULL, 0, -EBADF, r);
	badfd_try(cfd, "two connected TCP sockets", (int[]){ a, a2 }, 2, -EBADF, r);
	badfd_try(cfd, "a pipe", &p[0], 1, -ENOTSOCK, r);
	badfd_try(cfd, "/dev/null", &nul, 1, -ENOTSOCK, r);
	badfd_try(cfd, "a UDP socket", &udp, 1, -EPROTOTYPE, r);
	badfd_try(cfd, "an AF_UNIX stream socket", &u[0], 1, -EPROTOTYPE, r);
	badfd_try(cfd, "an unconnected TCP socket", &tcp, 1, -ENOTCONN, r);
	badfd_try(cfd, "a listening TCP socket", &lst, 1, -ENOTCONN, r);
	t_close_fd(&b2);		/* a2 is now in CLOSE_WAIT */
	t_msleep(20);
	badfd_try(cfd, "a TCP socket whose peer closed", &a2, 1, -ENOTCONN, r);

	/* a descriptor with a request that takes none */
	len = enc_request(buf, sizeof(buf), KTLSH_PROTO_STATUS_REQ, 77, NULL);
	if (ctl_send(cfd, buf, len, &a, 1) == 0) {
		o = ctl_recv(cfd, &rep, 5000 * sc.slow);
		ctl_outcome_str(o, &rep, got, sizeof(got));
		t_note("a STATUS_REQ with a descriptor: %s", got);
		check(r, o == CTL_REPLY && rep.id == 77 && rep.status == -EBADF,
		      "a STATUS_REQ with a descriptor is refused with -EBADF (%s)", got);
	}
	check(r, ctl_still_open(cfd), "the control connection still serves after the refusals");

	/* more descriptors than the daemon takes in one message */
	for (i = 0; i < 10; i++)
		many[i] = dup(a);
	len = enc_request(buf, sizeof(buf), KTLSH_PROTO_HANDSHAKE_REQ, 88, "main");
	if (ctl_send(cfd, buf, len, many, 10) == 0) {
		o = ctl_recv(cfd, &rep, 5000 * sc.slow);
		ctl_outcome_str(o, &rep, got, sizeof(got));
		t_note("a request with 10 descriptors: %s", got);
		check(r, o == CTL_CLOSED || (o == CTL_REPLY && rep.status == -EBADF),
		      "10 descriptors: -EBADF or a closed connection (%s)", got);
	}
	t_close_fd(&cfd);
	for (i = 0; i < 10; i++)
		t_close_fd(&many[i]);

	/* Every descriptor it received is closed again: a, b must be usable,
	 * and the daemon's count is back where it was. */
	fds1 = dmn_settle(&d, r);
	check(r, fds1 == fds0, "the daemon holds %d descriptors, %d before: it closed what it "
	      "refused", fds1, fds0);
out:
	t_close_fd(&cfd);
	t_close_fd(&a);
	t_close_fd(&b);
	t_close_fd(&a2);
	t_close_fd(&b2);
	t_close_fd(&p[0]);
	t_close_fd(&p[1]);
	t_close_fd(&u[0]);
	t_close_fd(&u[1]);
	t_close_fd(&udp);
	t_close_fd(&tcp);
	t_close_fd(&lst);
	t_close_fd(&nul);
	dmn_stop(&d, r);
}

static void case_ctl_ulp(struct t_result *r)
{
	struct ktlsh_request req = { .role = KTLSH_PROTO_ROLE_SERVER, .identity = "main" };
	struct ktlsh_proto_reply rep;
	struct dmn d;
	struct cfg c;
	int a = -1, b = -1, ret;

	cfg_global(&c, "workers = 1\n");
	cfg_identity(&c, "main", "server-ecdsa", "allow_uids = *\n");
	if (dmn_start(&d, &c, r))
		goto out;
	if (tcp_pair(&a, &b) || setsockopt(a, SOL_TCP, TCP_ULP, "tls", 3)) {
		t_fail(r, "attaching the tls ULP: %s", strerror(errno));
		goto out;
	}
	ret = ktlsh_handshake_fd(sock_name, a, &req, &rep);
	rep_note("a socket with the tls ULP already", &rep);
	check(r, ret == -EALREADY && rep.status == -EALREADY, "status %d (%s), expected -EALREADY",
	      rep.status, errname(rep.status));
	check(r, rep.type == KTLSH_PROTO_HANDSHAKE_REPLY, "reply type %s, expected HANDSHAKE_REPLY",
	      ktlsh_proto_type_name(rep.type));
out:
	t_close_fd(&a);
	t_close_fd(&b);
	dmn_stop(&d, r);
}

/*
 * A client that sends requests and never reads the replies. Its socket
 * buffer fills; the daemon must not wait on it (nor spend its main loop on
 * it) while another client needs a handshake.
 */
static void case_ctl_slow_reader(struct t_result *r)
{
	uint8_t req[64];
	size_t len = enc_request(req, sizeof(req), KTLSH_PROTO_STATUS_REQ, 1, NULL);
	unsigned sent = 0, limit = 400;
	uint64_t t0, took;
	int fd = -1;
	struct dmn d;
	struct cfg c;
	struct hs h;

	cfg_global(&c, "workers = 2\n");
	cfg_identity(&c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
	if (dmn_start(&d, &c, r))
		goto out;
	fd = ctl_connect();
	if (fd < 0) {
		t_fail(r, "connect: %s", strerror(-fd));
		goto out;
	}
	/* STATUS_REPLY is a few KiB: a few hundred fill any socket buffer */
	while (sent < limit && send(fd, req, len, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)len)
		sent++;
	t_note("a client sent %u STATUS_REQs and reads nothing", sent);
	t_msleep(200 * sc.slow);
	t0 = t_now_ms();
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "main");
	h.peer.sni = "localhost";
	h.req.timeout_ms = 3000u * (unsigned)sc.slow;	/* fail in seconds, not 30 */
	if (!hs_run(&h, r))
		hs_expect_ok(&h, "a handshake from another client meanwhile", r);
	cpeer_free(&h.peer);
	took = t_now_ms() - t0;
	t_note("the other client's handshake took %llu ms", (unsigned long long)took);
	check(r, took < 1000u * (unsigned)sc.slow,
	      "another client's handshake is not held up by one that does not read (%llu ms)",
	      (unsigned long long)took);
	t_close_fd(&fd);
	check(r, dmn_alive(&d), "the daemon is still running");
out:
	t_close_fd(&fd);
	dmn_stop(&d, r);
}

/* ---- who may use what ---------------------------------------------------- */

static void acl_nobody(void *arg, struct t_result *r)
{
	struct ktlsh_request req = { .role = KTLSH_PROTO_ROLE_SERVER, .identity = "rootonly" };
	struct ktlsh_proto_reply rep;
	int a, b, ret;
	struct hs h;

	(void)arg;
	if (tcp_pair(&a, &b)) {
		t_fail(r, "tcp pair");
		return;
	}
	ret = ktlsh_handshake_fd(sock_name, b, &req, &rep);
	rep_note("uid 65534, identity rootonly", &rep);
	check(r, ret == -EACCES && rep.status == -EACCES, "identity rootonly: %d (%s), expected -EACCES",
	      rep.status, errname(rep.status));
	check(r, rep.type == KTLSH_PROTO_HANDSHAKE_REPLY, "the refusal is a %s, not a HANDSHAKE_REPLY",
	      ktlsh_proto_type_name(rep.type));
	check(r, strstr(rep.reason, "65534") != NULL, "the reason names the uid: \"%s\"", rep.reason);
	close(a);
	close(b);

	if (tcp_pair(&a, &b) == 0) {
		req = (struct ktlsh_request){ .role = KTLSH_PROTO_ROLE_CLIENT, .identity = "rootcli",
					      .server_name = "localhost" };
		ret = ktlsh_handshake_fd(sock_name, a, &req, &rep);
		rep_note("uid 65534, client profile rootcli", &rep);
		check(r, ret == -EACCES, "client profile rootcli: %d (%s), expected -EACCES", ret,
		      errname(ret));
		close(a);
		close(b);
	}

	/* what it may use works */
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "main");
	h.peer.sni = "localhost";
	if (!hs_run(&h, r))
		hs_expect_ok(&h, "uid 65534, identity main (allow_uids = *)", r);
	cpeer_free(&h.peer);

	/* reload is for root and the daemon's user (protocol.md: -EACCES) */
	ret = ktlsh_reload(sock_name, &rep);
	t_note("uid 65534 asks for a reload: %d (%s) \"%s\"", ret, errname(ret), rep.reason);
	check(r, ret == -EACCES, "a reload from uid 65534 is refused with -EACCES (got %s)",
	      errname(ret));
}

static void case_acl(struct t_result *r)
{
	char line[512];
	struct dmn d;
	struct cfg c;
	struct hs h;

	if (!am_root) {
		skip(r, "needs root to run a request as uid 65534");
		return;
	}
	cfg_global(&c, "workers = 2\n");
	cfg_identity(&c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
	cfg_identity(&c, "rootonly", "server-ecdsa", "allow_uids = 0\n");
	cfg_add(&c, "[client rootcli]\nca_file = %s/ca.pem\n", opt.certs);
	if (dmn_start(&d, &c, r))
		goto out;
	as_nobody(acl_nobody, NULL, r);
	dmn_log_line(&d, "may not use identity", line, sizeof(line));
	check(r, strstr(line, "uid 65534") && strstr(line, "rootonly"),
	      "a log line says uid 65534 may not use rootonly: \"%s\"", line);
	dmn_log_line(&d, "may not use client profile", line, sizeof(line));
	check(r, strstr(line, "uid 65534") && strstr(line, "rootcli"),
	      "a log line says uid 65534 may not use rootcli: \"%s\"", line);
	check(r, dmn_counter("handshakes.denied", r) == 2, "handshakes.denied is 2");
	/* root may */
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "rootonly");
	h.peer.sni = "localhost";
	if (!hs_run(&h, r))
		hs_expect_ok(&h, "root, identity rootonly", r);
	cpeer_free(&h.peer);
out:
	dmn_stop(&d, r);
}

/* ---- configuration: reload and --check-config ----------------------------- */

static void cfg_reload_base(struct cfg *c)
{
	cfg_global(c, "workers = 2\n");
	cfg_identity(c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
}


static void case_reload(struct t_result *r)
{
	struct ktlsh_proto_reply rep;
	char where[PATH_MAX + 32], line[512];
	unsigned bad_line;
	struct dmn d;
	struct cfg c;
	int ret;

	cfg_reload_base(&c);
	if (dmn_start(&d, &c, r))
		goto out;
	check(r, dmn_counter("config.generation", r) == 1, "config.generation starts at 1");

	/* a good reload by signal */
	kill(d.p.pid, SIGHUP);
	check(r, dmn_wait_log(&d, "configuration reloaded", 1, 10000 * sc.slow),
	      "SIGHUP: \"configuration reloaded\" logged");
	check(r, dmn_counter("config.generation", r) == 2, "config.generation is 2 after SIGHUP");

	/* a typo: SIGHUP must log file:line and keep the old one */
	cfg_reload_base(&c);
	bad_line = cfg_next_line(&c);
	cfg_add(&c, "cerf = %s/server-ecdsa.pem\n", opt.certs);
	if (dmn_write_config(&d, &c)) {
		t_fail(r, "rewriting the config");
		goto out;
	}
	snprintf(where, sizeof(where), "%s:%u:", d.conf, bad_line);
	kill(d.p.pid, SIGHUP);
	if (check(r, dmn_wait_log(&d, "reload rejected", 1, 10000 * sc.slow),
		  "SIGHUP with a typo: \"reload rejected\" logged")) {
		dmn_log_line(&d, "reload rejected", line, sizeof(line));
		t_note("log: %s", line);
		check(r, dmn_log_has(&d, where), "the log points at %s", where);
	}
	check(r, dmn_counter("config.generation", r) == 2, "config.generation still 2");
	one_handshake("a handshake with the old configuration", r);

	/* the same through RELOAD_REQ */
	ret = ktlsh_reload(sock_name, &rep);
	t_note("RELOAD_REQ with the typo: %d (%s) \"%s\"", ret, errname(ret), rep.reason);
	check(r, ret == -EINVAL && rep.type == KTLSH_PROTO_RELOAD_REPLY,
	      "ktlsh_reload returns -EINVAL in a RELOAD_REPLY");
	check(r, strstr(rep.reason, where) != NULL, "its reason points at %s", where);

	/* a key file that went missing */
	cfg_reload_base(&c);
	cfg_add(&c, "[identity gone]\ncert = %s/server-ecdsa.pem\nkey = %s/no-such.key\n", opt.certs,
		case_dir);
	dmn_write_config(&d, &c);
	ret = ktlsh_reload(sock_name, &rep);
	t_note("RELOAD_REQ with a missing key file: %d (%s) \"%s\"", ret, errname(ret), rep.reason);
	check(r, ret == -EINVAL && strstr(rep.reason, "no-such.key"),
	      "a missing key file is refused and named");
	check(r, dmn_counter("config.generation", r) == 2, "config.generation still 2");
	one_handshake("a handshake after two refused reloads", r);

	/* fixed: taken */
	cfg_reload_base(&c);
	cfg_add(&c, "[identity second]\ncert = %s/server-rsa.pem\nkey = %s/server-rsa.key\n"
		"allow_uids = *\n", opt.certs, opt.certs);
	dmn_write_config(&d, &c);
	ret = ktlsh_reload(sock_name, &rep);
	check(r, ret == 0 && rep.status == 0, "RELOAD_REQ with a good file: %d \"%s\"", ret, rep.reason);
	check(r, dmn_counter("config.generation", r) == 3, "config.generation is 3");
	one_handshake("a handshake after the good reload", r);
out:
	dmn_stop(&d, r);
}

static void check_config_run(const char *conf, int want_rc, const char *want_out,
			     const char *want_err, const char *what, struct t_result *r)
{
	char *argv[] = { bin_ktlshd, (char *)"--check-config", (char *)"-c", (char *)conf, NULL };
	struct t_peer p;
	int rc;

	if (run_prog(&p, "ktlshd --check-config", argv, 20000 * sc.slow)) {
		t_fail(r, "%s: ktlshd --check-config did not finish", what);
		return;
	}
	rc = WIFEXITED(p.status) ? WEXITSTATUS(p.status) : -1;
	t_note("%s: exit %d, stdout \"%.*s\", stderr \"%.*s\"", what, rc,
	     (int)strcspn(p.out.head, "\n"), p.out.head, (int)strcspn(p.err.head, "\n"), p.err.head);
	check(r, rc == want_rc, "%s: exit status %d, expected %d", what, rc, want_rc);
	if (want_out)
		check(r, t_tail_contains(&p.out, want_out), "%s: stdout says \"%s\"", what, want_out);
	if (want_err)
		check(r, t_tail_contains(&p.err, want_err), "%s: stderr says \"%s\"", what, want_err);
}

static void case_check_config(struct t_result *r)
{
	char path[PATH_MAX], want[PATH_MAX + 64], key[PATH_MAX + 16];
	unsigned line;
	struct cfg c;

	snprintf(sock_name, sizeof(sock_name), "@ktlsh-it-check-%d", (int)getpid());
	snprintf(path, sizeof(path), "%s/good.conf", case_dir);
	cfg_reload_base(&c);
	write_file(path, c.buf, c.len);
	check_config_run(path, 0, "configuration OK", NULL, "a good file", r);

	snprintf(path, sizeof(path), "%s/typo.conf", case_dir);
	cfg_reload_base(&c);
	line = cfg_next_line(&c);
	cfg_add(&c, "min_verison = 1.3\n");
	write_file(path, c.buf, c.len);
	snprintf(want, sizeof(want), "%s:%u:", path, line);
	check_config_run(path, 1, NULL, want, "a misspelt key", r);

	snprintf(path, sizeof(path), "%s/nokey.conf", case_dir);
	cfg_reload_base(&c);
	snprintf(key, sizeof(key), "%s/missing.key", case_dir);
	cfg_add(&c, "[identity nokey]\ncert = %s/server-ecdsa.pem\nkey = %s\n", opt.certs, key);
	write_file(path, c.buf, c.len);
	check_config_run(path, 1, NULL, "missing.key", "a missing key file", r);
	check_config_run(path, 1, NULL, "No such file", "a missing key file (why)", r);

	snprintf(path, sizeof(path), "%s/mismatch.conf", case_dir);
	c.len = 0;
	cfg_global(&c, NULL);
	cfg_add(&c, "[identity odd]\ncert = %s/server-ecdsa.pem\nkey = %s/client.key\n", opt.certs,
		opt.certs);
	write_file(path, c.buf, c.len);
	check_config_run(path, 1, NULL, "client.key", "a key that is not the certificate's", r);
	check_config_run(path, 1, NULL, "mismatch", "a key that is not the certificate's (why)", r);

	snprintf(path, sizeof(path), "%s/absent.conf", case_dir);
	check_config_run(path, 1, NULL, "absent.conf", "a file that does not exist", r);
}

/* ---- ktlshctl status ------------------------------------------------------ */

static void status_nobody(void *arg, struct t_result *r)
{
	struct ktlsh_request req = { .role = KTLSH_PROTO_ROLE_SERVER, .identity = "rootonly" };
	struct ktlsh_proto_reply rep;
	int a, b;

	(void)arg;
	if (tcp_pair(&a, &b) == 0) {
		check(r, ktlsh_handshake_fd(sock_name, b, &req, &rep) == -EACCES, "denied");
		close(a);
		close(b);
	}
}

static void case_status(struct t_result *r)
{
	char *argv[] = { bin_ktlshctl, (char *)"-s", sock_name, (char *)"status", NULL };
	char *argv_json[] = { bin_ktlshctl, (char *)"-s", sock_name, (char *)"status", (char *)"--json",
			      NULL };
	const char *ok_key = ktls_ok ? "handshakes.ok" : "handshakes.kernel_refused";
	struct ktlsh_proto_status *st = NULL;
	struct ktlsh_request req = { .role = KTLSH_PROTO_ROLE_SERVER, .identity = "main",
				     .timeout_ms = 300 };
	struct ktlsh_proto_reply rep;
	char want[128], extra[256];
	unsigned i, n_ok = 3;
	struct t_peer p;
	struct dmn d;
	struct cfg c;
	struct hs h;
	int a, b, ret;

	cfg_global(&c, "workers = 3\nmax_inflight = 777\n");
	snprintf(extra, sizeof(extra), "server_names = localhost\nallow_uids = *\n"
		 "verify_client = optional\nca_file = %s/ca.pem\n", opt.certs);
	cfg_identity(&c, "main", "server-ecdsa", extra);
	cfg_identity(&c, "rootonly", "server-ecdsa", "");
	if (dmn_start(&d, &c, r))
		goto out;
	/* a known mix: n_ok good, one certificate refused, one timeout, one
	 * TLS error, one denied (if we can be someone else) */
	for (i = 0; i < n_ok; i++)
		one_handshake("a good handshake", r);
	hs_init(&h, KTLSH_PROTO_ROLE_SERVER, "main");
	h.peer.cert = "other-server";
	h.peer.sni = "localhost";
	if (!hs_run(&h, r))
		hs_expect_fail(&h, "a client certificate from another CA", -EKEYREJECTED, r);
	cpeer_free(&h.peer);
	if (tcp_pair(&a, &b) == 0) {	/* a silent client, 300 ms */
		check(r, ktlsh_handshake_fd(sock_name, b, &req, &rep) == -ETIMEDOUT, "a silent client");
		close(a);
		close(b);
	}
	if (tcp_pair(&a, &b) == 0) {	/* not TLS */
		check(r, write(a, "HELO\r\n\r\n\r\n\r\n", 12) == 12, "write");
		req.timeout_ms = 10000;
		check(r, ktlsh_handshake_fd(sock_name, b, &req, &rep) == -EPROTO, "not TLS");
		close(a);
		close(b);
	}
	if (tcp_pair(&a, &b) == 0) {	/* an identity that is not there */
		req.identity = "no-such-identity";
		ret = ktlsh_handshake_fd(sock_name, b, &req, &rep);
		check(r, ret == -ENOENT, "an unknown identity: %d (%s), expected -ENOENT", ret,
		      errname(ret));
		close(a);
		close(b);
	}
	if (am_root)
		as_nobody(status_nobody, NULL, r);

	if (run_prog(&p, "ktlshctl status", argv, 20000 * sc.slow)) {
		t_fail(r, "ktlshctl status did not finish");
		goto out;
	}
	t_note("ktlshctl status:");
	t_note_indented(p.out.head, p.out.head_len);
	check(r, WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0, "ktlshctl status exits 0");
	if (dmn_status(&st, r))
		goto out;
	/* every key ktlshctl printed is one STATUS_REQ returns, and the other
	 * way round */
	for (i = 0; i < st->n_items; i++)
		check(r, t_tail_contains(&p.out, st->items[i].key), "ktlshctl prints %s",
		      st->items[i].key);
	snprintf(want, sizeof(want), "%d", (int)d.p.pid);
	check(r, st_get(st, "pid") && !strcmp(st_get(st, "pid"), want), "pid is the daemon's");
	check(r, st_get(st, "version") && !strcmp(st_get(st, "version"), KTLSH_VERSION_STRING),
	      "version %s", st_get(st, "version"));
	check(r, st_num(st, "uptime_s") >= 0, "uptime_s present");
	check(r, st_get(st, "config") && !strcmp(st_get(st, "config"), d.conf), "config path");
	check(r, st_num(st, "config.generation") == 1, "config.generation 1");
	check(r, st_num(st, "workers") == 3, "workers 3");
	check(r, st_num(st, "handshakes.max_inflight") == 777, "handshakes.max_inflight 777");
	check(r, st_num(st, "handshakes.inflight") == 0, "handshakes.inflight 0");
	check(r, st_num(st, "handshakes.bad_request") == 1,
	      "handshakes.bad_request counts the request for an unknown identity (got %lld; "
	      "kernel_refused %lld)", st_num(st, "handshakes.bad_request"),
	      st_num(st, "handshakes.kernel_refused"));
	check(r, st_num(st, ok_key) == n_ok, "%s is %u (got %lld)", ok_key, n_ok, st_num(st, ok_key));
	check(r, st_num(st, "handshakes.certificate_rejected") == 1, "handshakes.certificate_rejected 1");
	check(r, st_num(st, "handshakes.timeout") == 1, "handshakes.timeout 1");
	check(r, st_num(st, "handshakes.tls_error") == 1, "handshakes.tls_error 1");
	check(r, st_num(st, "handshakes.denied") == (am_root ? 1 : 0), "handshakes.denied");
	check(r, st_num(st, "handshakes.total") == (long long)n_ok + 4 + (am_root ? 1 : 0),
	      "handshakes.total is the sum (got %lld)", st_num(st, "handshakes.total"));
	check(r, st_num(st, "handshakes.resumed") == 0, "handshakes.resumed 0");
	/* ktlsh_handshake_fd() reuses pooled connections: at least that one,
	 * ktlshctl's and this STATUS_REQ's */
	check(r, st_num(st, "control.connections") >= 3, "control.connections counts ours (%lld)",
	      st_num(st, "control.connections"));
	check(r, st_num(st, "control.bad_messages") == 0, "control.bad_messages 0");
	if (ktls_ok) {
		check(r, st_get(st, "kernel.tls13") && strstr(st_get(st, "kernel.tls13"), "AES-GCM-128"),
		      "kernel.tls13 lists AES-GCM-128 (\"%s\")", st_get(st, "kernel.tls13"));
		check(r, st_get(st, "kernel.tls12") != NULL, "kernel.tls12 present");
		check(r, st_num(st, "tls_stat.TlsCurrTxSw") >= 0 && st_num(st, "tls_stat.TlsTxSw") >= n_ok,
		      "tls_stat.* counters present, TlsTxSw >= %u", n_ok);
	} else {
		check(r, st_get(st, "kernel.tls") && strstr(st_get(st, "kernel.tls"), "unavailable"),
		      "kernel.tls says unavailable");
		check(r, st_get(st, "mode") && strstr(st_get(st, "mode"), "handshake-only"),
		      "mode says handshake-only");
	}
	if (run_prog(&p, "ktlshctl status --json", argv_json, 20000 * sc.slow)) {
		t_fail(r, "ktlshctl status --json did not finish");
		goto out;
	}
	snprintf(want, sizeof(want), "\"%s\": %u", ok_key, n_ok);
	check(r, p.out.head[0] == '{' && t_tail_contains(&p.out, want), "--json has %s", want);
out:
	free(st);
	dmn_stop(&d, r);
}

/* ---- load: many handshakes from several processes --------------------------- */

/*
 * One load process: `count` handshakes, at most `window` in flight, all on
 * one libktlsh client with the nonblocking API. Each is a loopback
 * connection whose accepted end goes to the daemon (server role) and whose
 * dialing end is an OpenSSL client driven by the same poll loop.
 */
struct load_spec {
	unsigned procs, per_proc, window;
	unsigned req_timeout_ms;
	int deadline_ms;
};

struct load_res {
	unsigned ok, failed;
	uint64_t us_sum, us_max;
	int first_status;
	char first_why[240];
};

struct slot {
	bool used, submitted, replied, ssl_done, ssl_failed;
	int cfd, sfd;
	SSL *ssl;
	uint32_t id;
	short want;
	int status;
	char reason[KTLSH_PROTO_REASON_LEN];
	uint64_t us;
};

static void slot_free(struct slot *s)
{
	if (s->ssl) {
		SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(s->ssl);
	}
	if (s->cfd >= 0)
		close(s->cfd);
	if (s->sfd >= 0)
		close(s->sfd);
	memset(s, 0, sizeof(*s));
	s->cfd = s->sfd = -1;
}

static void load_fail(struct load_res *res, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void load_fail(struct load_res *res, int status, const char *fmt, ...)
{
	va_list ap;

	if (!res->failed++) {
		res->first_status = status;
		va_start(ap, fmt);
		vsnprintf(res->first_why, sizeof(res->first_why), fmt, ap);
		va_end(ap);
	}
}

static void slot_drive(struct slot *s)
{
	int rc, e;

	if (s->ssl_done || s->ssl_failed)
		return;
	ERR_clear_error();
	rc = SSL_do_handshake(s->ssl);
	if (rc == 1) {
		s->ssl_done = true;
		s->want = 0;
		return;
	}
	e = SSL_get_error(s->ssl, rc);
	if (e == SSL_ERROR_WANT_READ)
		s->want = POLLIN;
	else if (e == SSL_ERROR_WANT_WRITE)
		s->want = POLLOUT;
	else {
		s->ssl_failed = true;
		s->want = 0;
		ERR_clear_error();
	}
}

static int load_proc(const struct load_spec *sp, unsigned count, int out_fd)
{
	struct ktlsh_request req = { .role = KTLSH_PROTO_ROLE_SERVER, .identity = "main",
				     .timeout_ms = sp->req_timeout_ms };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	uint64_t deadline = t_now_ms() + (uint64_t)sp->deadline_ms;
	struct ktlsh_client *kc = NULL;
	struct ktlsh_proto_reply rep;
	struct load_res res = { 0 };
	struct slot *slots = calloc(sp->window, sizeof(*slots));
	struct pollfd *pfd = calloc(sp->window + 1, sizeof(*pfd));
	unsigned *map = calloc(sp->window + 1, sizeof(*map));
	unsigned started = 0, done = 0, running = 0, i, k;
	char ca[PATH_MAX];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int lfd, port, ret;
	bool blocked = false;

	cert_path(ca, sizeof(ca), "ca", "pem");
	lfd = t_listen_local(&port, 4096);
	if (!slots || !pfd || !map || !ctx || lfd < 0 ||
	    SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		load_fail(&res, -ENOMEM, "load process set-up failed");
		goto out;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	a.sin_port = htons((uint16_t)port);
	ret = ktlsh_client_open(&kc, sock_name);
	if (ret) {
		load_fail(&res, ret, "ktlsh_client_open: %s", strerror(-ret));
		goto out;
	}
	for (i = 0; i < sp->window; i++)
		slots[i].cfd = slots[i].sfd = -1;

	while (done < count) {
		if (!t_ms_left(deadline)) {
			load_fail(&res, -ETIMEDOUT, "%u handshakes still unanswered at the deadline",
				  count - done);
			res.failed += count - done - 1;
			break;
		}
		/* start: connect, accept, submit the accepted end */
		for (i = 0; i < sp->window && started < count && !blocked; i++) {
			struct slot *s = &slots[i];

			if (s->used)
				continue;
			s->cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
			if (s->cfd < 0 || (connect(s->cfd, (struct sockaddr *)&a, sizeof(a)) &&
					   errno != EINPROGRESS) ||
			    (s->sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
				load_fail(&res, -errno, "connect/accept: %s", strerror(errno));
				slot_free(s);
				started++;
				done++;
				continue;
			}
			s->ssl = SSL_new(ctx);
			SSL_set_fd(s->ssl, s->cfd);
			SSL_set_tlsext_host_name(s->ssl, "localhost");
			SSL_set1_host(s->ssl, "localhost");
			SSL_set_connect_state(s->ssl);
			s->used = true;
			started++;
			running++;
		}
		/* submit what is not yet submitted */
		blocked = false;
		for (i = 0; i < sp->window && !blocked; i++) {
			struct slot *s = &slots[i];

			if (!s->used || s->submitted)
				continue;
			ret = ktlsh_submit(kc, s->sfd, &req, &s->id);
			if (ret == -EAGAIN) {
				blocked = true;
				break;
			}
			if (ret) {
				load_fail(&res, ret, "ktlsh_submit: %s", strerror(-ret));
				slot_free(s);
				running--;
				done++;
				continue;
			}
			s->submitted = true;
			slot_drive(s);
		}
		/* poll the client and the TLS clients that wait */
		k = 0;
		pfd[k] = (struct pollfd){ .fd = ktlsh_client_fd(kc),
					  .events = POLLIN | (blocked ? POLLOUT : 0) };
		map[k++] = ~0u;
		for (i = 0; i < sp->window; i++)
			if (slots[i].used && slots[i].submitted && slots[i].want) {
				pfd[k] = (struct pollfd){ .fd = slots[i].cfd, .events = slots[i].want };
				map[k++] = i;
			}
		if (poll(pfd, k, t_min_int(t_ms_left(deadline), 200)) < 0 && errno != EINTR)
			break;
		for (i = 1; i < k; i++)
			if (pfd[i].revents)
				slot_drive(&slots[map[i]]);
		/* replies */
		for (;;) {
			ret = ktlsh_complete(kc, &rep);
			if (ret == -EAGAIN)
				break;
			if (ret) {
				load_fail(&res, ret, "control channel: %s", strerror(-ret));
				res.failed += count - done - 1;
				done = count;
				break;
			}
			for (i = 0; i < sp->window; i++)
				if (slots[i].used && slots[i].submitted && slots[i].id == rep.id)
					break;
			if (i == sp->window) {
				load_fail(&res, -EBADMSG, "a reply for id %u, which is not in flight", rep.id);
				continue;
			}
			slots[i].replied = true;
			slots[i].status = rep.status;
			slots[i].us = rep.handshake_us;
			snprintf(slots[i].reason, sizeof(slots[i].reason), "%s", rep.reason);
			if (rep_ok(&rep, rep.status))
				slot_drive(&slots[i]);
		}
		/* finish what has its reply */
		for (i = 0; i < sp->window; i++) {
			struct slot *s = &slots[i];
			char ulp[16];

			if (!s->used || !s->replied)
				continue;
			if (!(ktls_ok ? s->status == 0 :
			      s->status == -EOPNOTSUPP && strstr(s->reason, "not offloaded"))) {
				load_fail(&res, s->status, "status %d (%s): %s", s->status,
					  errname(s->status), s->reason);
			} else if (!s->ssl_done) {
				load_fail(&res, -EPROTO, "the daemon reported success, the client %s",
					  s->ssl_failed ? "failed" : "had not finished");
			} else if (ktls_ok && (t_ulp_name(s->sfd, ulp, sizeof(ulp)) || strcmp(ulp, "tls"))) {
				load_fail(&res, -EPROTO, "status 0 but no tls ULP on the socket");
			} else {
				res.ok++;
				res.us_sum += s->us;
				if (s->us > res.us_max)
					res.us_max = s->us;
			}
			slot_free(s);
			running--;
			done++;
		}
	}
out:
	for (i = 0; slots && i < sp->window; i++)
		if (slots[i].used)
			slot_free(&slots[i]);
	ktlsh_client_close(kc);
	SSL_CTX_free(ctx);
	if (lfd >= 0)
		close(lfd);
	free(slots);
	free(pfd);
	free(map);
	return write(out_fd, &res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 1;
}

struct load_run {
	pid_t pid[LOAD_PROCS_MAX];
	int fd[LOAD_PROCS_MAX];
	unsigned n, total;
	uint64_t t0, cpu0;
	struct load_spec spec;
};

static int load_start(struct load_run *lr, const struct load_spec *sp, const struct dmn *d,
		      struct t_result *r)
{
	unsigned i;
	int p[2];

	memset(lr, 0, sizeof(*lr));
	lr->spec = *sp;
	lr->total = sp->procs * sp->per_proc;
	lr->cpu0 = dmn_cpu_us(d);
	lr->t0 = now_us();
	fflush(stdout);
	for (i = 0; i < sp->procs && i < LOAD_PROCS_MAX; i++) {
		if (pipe2(p, O_CLOEXEC))
			return t_fail(r, "pipe: %s", strerror(errno));
		lr->pid[i] = fork();
		if (lr->pid[i] == 0) {
			close(p[0]);
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			_exit(load_proc(sp, sp->per_proc, p[1]));
		}
		close(p[1]);
		if (lr->pid[i] < 0) {
			close(p[0]);
			return t_fail(r, "fork: %s", strerror(errno));
		}
		t_report("peer %d", (int)lr->pid[i]);
		lr->fd[i] = p[0];
		lr->n++;
	}
	return 0;
}

static bool load_running(struct load_run *lr)
{
	unsigned i;

	for (i = 0; i < lr->n; i++)
		if (lr->pid[i] > 0 && waitpid(lr->pid[i], NULL, WNOHANG) == 0)
			return true;
	return false;
}

/* Collect the processes' results; the summary is noted, failures fail r. */
static int load_finish(struct load_run *lr, const struct dmn *d, const char *what,
		       struct load_res *tot, struct t_result *r)
{
	uint64_t deadline = t_now_ms() + (uint64_t)lr->spec.deadline_ms + 10000;
	struct load_res res;
	uint64_t us, cpu;
	unsigned i;
	ssize_t n;

	memset(tot, 0, sizeof(*tot));
	for (i = 0; i < lr->n; i++) {
		struct pollfd pfd = { .fd = lr->fd[i], .events = POLLIN };

		n = poll(&pfd, 1, t_ms_left(deadline)) == 1 ? read(lr->fd[i], &res, sizeof(res)) : -1;
		close(lr->fd[i]);
		if (n != (ssize_t)sizeof(res)) {
			kill(lr->pid[i], SIGKILL);
			memset(&res, 0, sizeof(res));
			res.failed = lr->spec.per_proc;
			snprintf(res.first_why, sizeof(res.first_why), "load process %u gave no result", i);
		}
		waitpid(lr->pid[i], NULL, 0);
		lr->pid[i] = 0;
		if (res.failed && !tot->failed) {
			tot->first_status = res.first_status;
			snprintf(tot->first_why, sizeof(tot->first_why), "%s", res.first_why);
		}
		tot->ok += res.ok;
		tot->failed += res.failed;
		tot->us_sum += res.us_sum;
		if (res.us_max > tot->us_max)
			tot->us_max = res.us_max;
	}
	us = now_us() - lr->t0;
	cpu = dmn_cpu_us(d) - lr->cpu0;
	measure("%s: %u handshakes (%u processes x %u, up to %u in flight each) in %.2f s: %.0f/s; "
		"daemon CPU %.0f us per handshake; daemon-side handshake time mean %.2f ms, max %.2f ms%s",
		what, tot->ok + tot->failed, lr->n, lr->spec.per_proc, lr->spec.window, us / 1e6,
		(tot->ok + tot->failed) / (us / 1e6), (double)cpu / (tot->ok + tot->failed ?: 1),
		tot->ok ? tot->us_sum / 1000.0 / tot->ok : 0.0, tot->us_max / 1000.0,
		ktls_ok ? "" : " (handshake-only)");
	if (tot->failed)
		return t_fail(r, "%s: %u of %u handshakes failed; first: %s", what, tot->failed,
			    tot->ok + tot->failed, tot->first_why);
	return 0;
}

static void cfg_load(struct cfg *c, const char *global_extra)
{
	char extra[256];

	snprintf(extra, sizeof(extra), "handshake_timeout = %us\n%s", sc.uml ? 120 : 60,
		 global_extra ? global_extra : "");
	cfg_global(c, extra);
	cfg_identity(c, "main", "server-ecdsa", "server_names = localhost\nallow_uids = *\n");
}

static void case_load_concurrent(struct t_result *r)
{
	struct load_spec sp = { .procs = sc.concurrent_procs,
				.per_proc = sc.concurrent / sc.concurrent_procs,
				.deadline_ms = 120000 * sc.slow };
	const char *ok_key = ktls_ok ? "handshakes.ok" : "handshakes.kernel_refused";
	struct ktlsh_proto_status *st = NULL;
	struct load_res tot;
	struct load_run lr;
	long long inflight, max_inflight = 0;
	long rss0 = 0, rss, rss_peak = 0, rss_at_max = 0;
	struct dmn d;
	struct cfg c;

	sp.window = sp.per_proc;	/* all submitted before any is driven */
	cfg_load(&c, NULL);
	if (dmn_start(&d, &c, r))
		goto out;
	if (load_start(&lr, &sp, &d, r))
		goto out;
	rss0 = dmn_rss_kib(&d);
	while (load_running(&lr)) {
		inflight = dmn_counter("handshakes.inflight", r);
		rss = dmn_rss_kib(&d);
		if (inflight > max_inflight) {
			max_inflight = inflight;
			rss_at_max = rss;
		}
		if (rss > rss_peak)
			rss_peak = rss;
		t_msleep(10 * sc.slow);
	}
	load_finish(&lr, &d, "concurrent", &tot, r);
	t_note("the daemon reported up to %lld handshakes in flight at once (sampled)", max_inflight);
	check(r, max_inflight >= sc.concurrent / 2,
	      "at least %u in flight at once were seen (the load submits all before driving any)",
	      sc.concurrent / 2);
	if (dmn_status(&st, r))
		goto out;
	check(r, st_num(st, ok_key) == (long long)sc.concurrent, "%s is %u (got %lld)", ok_key,
	      sc.concurrent, st_num(st, ok_key));
	check(r, st_num(st, "handshakes.total") == (long long)sc.concurrent, "handshakes.total is %u",
	      sc.concurrent);
	check(r, dmn_counter_soon("handshakes.inflight", 0, r), "nothing in flight afterwards");
	measure("daemon RSS %ld KiB before; %ld KiB with %lld in flight (%.1f KiB per handshake in "
		"flight); peak %ld KiB; %ld KiB after", rss0, rss_at_max, max_inflight,
		max_inflight > 0 ? (double)(rss_at_max - rss0) / (double)max_inflight : 0.0, rss_peak,
		dmn_rss_kib(&d));
out:
	free(st);
	dmn_stop(&d, r);
}

static void case_load_churn(struct t_result *r)
{
	struct load_spec sp = { .procs = 2, .window = 16, .deadline_ms = 300000 * sc.slow };
	struct load_res tot;
	struct load_run lr;
	long rss0, rss1, rss_start;
	int fds0, fds1;
	struct dmn d;
	struct cfg c;

	cfg_load(&c, NULL);
	if (dmn_start(&d, &c, r))
		goto out;
	rss_start = dmn_rss_kib(&d);
	sp.per_proc = sc.churn_warmup / sp.procs;
	if (load_start(&lr, &sp, &d, r) || load_finish(&lr, &d, "warm-up", &tot, r))
		goto out;
	fds0 = dmn_settle(&d, r);
	rss0 = dmn_rss_kib(&d);
	sp.per_proc = sc.churn_n / sp.procs;
	if (load_start(&lr, &sp, &d, r) || load_finish(&lr, &d, "churn", &tot, r))
		goto out;
	fds1 = dmn_settle(&d, r);
	rss1 = dmn_rss_kib(&d);
	measure("daemon RSS: %ld KiB at start, %ld KiB after %u warm-up handshakes, %ld KiB after %u "
		"more (%+ld KiB); descriptors %d -> %d", rss_start, rss0, sc.churn_warmup, rss1,
		sc.churn_n, rss1 - rss0, fds0, fds1);
	check(r, fds1 == fds0, "the daemon's descriptor count is flat: %d after warm-up, %d after %u "
	      "more handshakes", fds0, fds1, sc.churn_n);
	if (dmn_sanitized(&d))
		t_note("the daemon runs with AddressSanitizer (its quarantine holds freed memory): RSS "
		     "not judged");
	else
		check(r, rss1 - rss0 < 2048, "the daemon's RSS grew %ld KiB over %u handshakes "
		      "(limit 2048)", rss1 - rss0, sc.churn_n);
out:
	dmn_stop(&d, r);
}

static void case_load_sighup(struct t_result *r)
{
	struct load_spec sp = { .procs = 4, .window = 16, .deadline_ms = 300000 * sc.slow };
	unsigned i, reloads = 0, during = 0;
	long long gen0, gen, total;
	struct load_res tot;
	struct load_run lr;
	uint64_t deadline;
	struct dmn d;
	struct cfg c;

	sp.per_proc = sc.hup_n / sp.procs;
	cfg_load(&c, NULL);
	if (dmn_start(&d, &c, r))
		goto out;
	gen0 = dmn_counter("config.generation", r);
	if (load_start(&lr, &sp, &d, r))
		goto out;
	/* Wait until the load is well under way, then reload, each time until
	 * the new generation serves. */
	deadline = t_now_ms() + 30000ull * (uint64_t)sc.slow;
	do {
		total = dmn_counter("handshakes.total", r);
		t_msleep(5);
	} while (total < (long long)sc.hup_n / 10 && t_ms_left(deadline) && load_running(&lr));
	for (i = 0; i < sc.hup_reloads; i++) {
		/* Alternate the file too, so that each reload really changes it. */
		cfg_load(&c, i % 2 ? "max_inflight = 4096\n" : "max_inflight = 4095\n");
		dmn_write_config(&d, &c);
		kill(d.p.pid, SIGHUP);
		deadline = t_now_ms() + 10000ull * (uint64_t)sc.slow;
		for (;;) {
			gen = dmn_counter("config.generation", r);
			if (gen >= gen0 + (long long)i + 1 || !t_ms_left(deadline))
				break;
			t_msleep(2);
		}
		if (gen < gen0 + (long long)i + 1) {
			t_fail(r, "reload %u did not take effect (generation %lld)", i + 1, gen);
			break;
		}
		reloads++;
		during += load_running(&lr);
		t_msleep(10 * sc.slow);
	}
	total = dmn_counter("handshakes.total", r);
	load_finish(&lr, &d, "SIGHUP under load", &tot, r);
	t_note("%u reloads (%u of them while the load still ran; %lld of %u handshakes had been "
	     "answered after the last)", reloads, during, total, sc.hup_n);
	check(r, reloads == sc.hup_reloads, "%u reloads took effect", reloads);
	check(r, during == sc.hup_reloads, "every reload happened under load (%u of %u)", during,
	      sc.hup_reloads);
	check(r, dmn_log_count(&d, "configuration reloaded") == sc.hup_reloads,
	      "%u \"configuration reloaded\" log lines", sc.hup_reloads);
	check(r, dmn_counter("config.generation", r) == gen0 + (long long)sc.hup_reloads,
	      "config.generation is %lld", gen0 + (long long)sc.hup_reloads);
out:
	dmn_stop(&d, r);
}

/* ---- the case table -------------------------------------------------------- */

enum need {
	N_OPENSSL = 1, N_GNUTLS_SERV = 2, N_GNUTLS_CLI = 4, N_PYTHON = 8,
};

struct it_case {
	const char *name;
	void (*fn)(struct t_result *r);
	bool needs_ktls;
	unsigned needs;
	int timeout_s;		/* native; UML gets sc.slow times as much */
};

static const struct it_case cases[] = {
	{ "interop/server/openssl-s_client", case_interop_s_client, false, N_OPENSSL, 60 },
	{ "interop/client/openssl-s_server", case_interop_s_server, false, N_OPENSSL, 60 },
	{ "interop/server/gnutls-cli", case_interop_gnutls_cli, false, N_GNUTLS_CLI, 60 },
	{ "interop/client/gnutls-serv", case_interop_gnutls_serv, false, N_GNUTLS_SERV, 60 },
	{ "interop/server/python-ssl", case_interop_py_client, false, N_PYTHON, 60 },
	{ "interop/client/python-ssl", case_interop_py_server, false, N_PYTHON, 60 },
	{ "data/server/openssl-s_client", case_data_s_client, true, N_OPENSSL, 60 },
	{ "data/client/openssl-s_server", case_data_s_server, true, N_OPENSSL, 60 },
	{ "data/server/gnutls-cli", case_data_gnutls_cli, true, N_GNUTLS_CLI, 60 },
	{ "data/client/gnutls-serv", case_data_gnutls_serv, true, N_GNUTLS_SERV, 60 },
	{ "data/server/python-ssl", case_data_py_client, true, N_PYTHON, 60 },
	{ "data/client/python-ssl", case_data_py_server, true, N_PYTHON, 60 },
	{ "sni/certificate-selection", case_sni, false, 0, 60 },
	{ "mtls/required-optional-none", case_mtls, false, 0, 60 },
	{ "alpn/server-select-and-client-offer", case_alpn, false, 0, 60 },
	{ "resume/across-workers", case_resume, false, 0, 60 },
	{ "timeout/silent-clients", case_silent, false, 0, 60 },
	{ "abort/resets-mid-handshake", case_abort, false, 0, 60 },
	{ "ctl/garbage-and-truncated", case_ctl_garbage, false, 0, 60 },
	{ "ctl/wrong-descriptors", case_ctl_badfd, false, 0, 60 },
	{ "ctl/socket-with-ulp", case_ctl_ulp, true, 0, 30 },
	{ "ctl/reader-that-never-reads", case_ctl_slow_reader, false, 0, 60 },
	{ "acl/unauthorized-uid", case_acl, false, 0, 60 },
	{ "config/reload-broken", case_reload, false, 0, 60 },
	{ "config/check-config", case_check_config, false, 0, 60 },
	{ "status/counters", case_status, false, 0, 60 },
	{ "load/concurrent", case_load_concurrent, false, 0, 180 },
	{ "load/fd-and-rss-flat", case_load_churn, false, 0, 300 },
	{ "load/sighup-under-load", case_load_sighup, false, 0, 180 },
};

static bool case_selected(const struct it_case *c)
{
	unsigned i;

	if (!opt.n_filters)
		return true;
	for (i = 0; i < opt.n_filters; i++)
		if (strstr(c->name, opt.filters[i]))
			return true;
	return false;
}

static const char *case_skip_reason(const struct it_case *c, char *buf, size_t len)
{
	if ((c->needs & N_OPENSSL) && !tool_openssl[0])
		snprintf(buf, len, "openssl not found in PATH");
	else if ((c->needs & N_GNUTLS_SERV) && !tool_gnutls_serv[0])
		snprintf(buf, len, "gnutls-serv (gnutls-bin) not found in PATH");
	else if ((c->needs & N_GNUTLS_CLI) && !tool_gnutls_cli[0])
		snprintf(buf, len, "gnutls-cli (gnutls-bin) not found in PATH");
	else if ((c->needs & N_PYTHON) && !tool_python[0])
		snprintf(buf, len, "python3 not found");
	else if (c->needs_ktls && !ktls_ok)
		snprintf(buf, len, "needs kernel TLS: %s", ktls_why);
	else
		return NULL;
	return buf;
}

/* In the forked case process: run, report, exit. */
static void case_child(const struct it_case *c)
{
	struct t_result r = { .verdict = T_PASS };
	int fds0 = t_count_fds(), fds1;

	t_case_t0 = t_now_ms();
	srandom((unsigned)getpid());
	c->fn(&r);
	ktlsh_pool_flush();
	fds1 = t_count_fds();
	if (fds1 != fds0)
		t_fail(&r, "descriptor leak in the test: %d open before the case, %d after", fds0, fds1);
	fflush(stdout);
	t_report("result %d %s", (int)r.verdict, r.why);
	exit(0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void case_entry(const void *arg)
{
	case_child(arg);
}

/*
 * One case in a child process (t_run_forked: under its deadline plus
 * grace, killed with its daemon and peers if it overruns), in a scratch
 * directory of its own that is removed either way.
 */
static void run_case(const struct it_case *c, unsigned idx, const char *tmp, struct t_totals *tot)
{
	char skipbuf[300];
	const char *skip_why;
	struct t_outcome o;

	skip_why = case_skip_reason(c, skipbuf, sizeof(skipbuf));
	if (skip_why) {
		printf("SKIP %s: %s\n", c->name, skip_why);
		tot->skipped++;
		return;
	}
	snprintf(case_dir, sizeof(case_dir), "%s/ktlshd-it.XXXXXX", tmp);
	if (!mkdtemp(case_dir)) {
		printf("not ok %u - %s: mkdtemp in %s: %s\n", ++tot->num, c->name, tmp, strerror(errno));
		tot->failed++;
		return;
	}
	snprintf(sock_name, sizeof(sock_name), "@ktlsh-it-%d-%u", (int)getpid(), idx);
	t_run_forked((opt.timeout_s ? opt.timeout_s : c->timeout_s) * sc.slow, case_entry, c, &o);
	nftw(case_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	t_count_outcome(c->name, &o, tot);
}

/* ---- start-up ---------------------------------------------------------------- */

static void probe_kernel(void)
{
	struct utsname u;
	int ret;

	uname(&u);
	memset(&caps, 0, sizeof(caps));
	ret = ktlsh_kernel_probe(&caps);
	if (ret)
		snprintf(ktls_why, sizeof(ktls_why), "ktlsh_kernel_probe failed: %s", strerror(-ret));
	else if (caps.ulp_err)
		snprintf(ktls_why, sizeof(ktls_why), "kernel %s: TCP_ULP \"tls\" fails with %s",
			 u.release, strerrorname_np(-caps.ulp_err) ?: "?");
	else if (!ktlsh_kcaps_has(&caps, TLS1_3_VERSION, KTLSH_CIPHER_AES_GCM_128))
		snprintf(ktls_why, sizeof(ktls_why), "kernel %s: no TLS 1.3 AES-GCM-128", u.release);
	else
		ktls_ok = true;
	printf("# ktlshd-it: kernel %s %s, kTLS %s%s%s\n", u.sysname, u.release,
	       ktls_ok ? "available: the daemon installs keys" :
	       "unavailable: the daemon runs --handshake-only", ktls_ok ? "" : "; ",
	       ktls_ok ? "" : ktls_why);
}

static void scale_pick(void)
{
	const char *k = getenv("KTEST_KERNEL");
	bool uml = opt.scale ? !strcmp(opt.scale, "uml") : k && *k;

	if (uml) {
		sc = (struct scale){ .name = "uml", .uml = true, .concurrent = 200,
				     .concurrent_procs = 4, .churn_warmup = 200, .churn_n = 1000,
				     .hup_n = 800, .hup_reloads = 20, .silent = 50,
				     .silent_normal = 8, .silent_timeout_ms = 8000, .slow = 4 };
	} else {
		sc = (struct scale){ .name = "full", .concurrent = 1000, .concurrent_procs = 4,
				     .churn_warmup = 1000, .churn_n = 10000, .hup_n = 2000,
				     .hup_reloads = 20, .silent = 50, .silent_normal = 20,
				     .silent_timeout_ms = 2000, .slow = 1 };
	}
	printf("# scale: %s (%u concurrent handshakes from %u processes; fd/RSS over %u after %u "
	       "warm-up; %u reloads during %u handshakes; %u silent clients, timeout %u ms)\n",
	       sc.name, sc.concurrent, sc.concurrent_procs, sc.churn_n, sc.churn_warmup,
	       sc.hup_reloads, sc.hup_n, sc.silent, sc.silent_timeout_ms);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ktlshd-it [--certs DIR] [--build DIR] [--filter SUBSTR]... [--list]\n"
		"                 [--scale full|uml] [--timeout SECONDS] [--verbose] [--quick]\n"
		"\n"
		"  --certs DIR     the test PKI (ktlsh-mkcerts; default $KTLSH_CERTS or\n"
		"                  build/tests/certs)\n"
		"  --build DIR     where ktlshd and ktlshctl are (default: this program's\n"
		"                  build tree)\n"
		"  --filter S      run only cases whose name contains S (repeatable)\n"
		"  --list          print the case names and exit\n"
		"  --scale S       load case sizes: full (1000 concurrent, 10000 handshakes)\n"
		"                  or uml (200, 1000); default: uml inside the kernel harness\n"
		"  --timeout S     per-case deadline in seconds (default: per case)\n"
		"  --verbose       every check, peer command lines and the daemon's log\n"
		"  --quick         accepted for scripts/check; changes nothing (the payloads\n"
		"                  are 1 MiB already)\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "certs", required_argument, NULL, 'c' },
		{ "build", required_argument, NULL, 'b' },
		{ "filter", required_argument, NULL, 'f' },
		{ "list", no_argument, NULL, 'l' },
		{ "scale", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char self[PATH_MAX], build[PATH_MAX], path[PATH_MAX + 32];
	static char certs_abs[PATH_MAX];
	const char *tmp = getenv("TMPDIR");
	struct t_totals tot = { 0 };
	struct sigaction sa;
	struct stat stt;
	unsigned i;
	int o, fds0, fds1;
	ssize_t n;
	uint8_t b;

	opt.certs = getenv("KTLSH_CERTS") ?: "build/tests/certs";
	while ((o = getopt_long(argc, argv, "c:b:f:ls:t:vqh", longopts, NULL)) != -1) {
		switch (o) {
		case 'c':
			opt.certs = optarg;
			break;
		case 'b':
			opt.build = optarg;
			break;
		case 'f':
			if (opt.n_filters < ARRAY_SIZE(opt.filters))
				opt.filters[opt.n_filters++] = optarg;
			break;
		case 'l':
			opt.list = true;
			break;
		case 's':
			if (strcmp(optarg, "full") && strcmp(optarg, "uml")) {
				usage(stderr);
				return 2;
			}
			opt.scale = optarg;
			break;
		case 't':
			opt.timeout_s = atoi(optarg);
			break;
		case 'v':
			t_verbose = true;
			break;
		case 'q':
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (opt.list) {
		for (i = 0; i < ARRAY_SIZE(cases); i++)
			if (case_selected(&cases[i]))
				printf("%s\n", cases[i].name);
		return 0;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	am_root = geteuid() == 0;

	/* the daemon and ktlshctl: --build, else this program's build tree
	 * (BUILD/tests/daemon/ktlshd-it) */
	if (opt.build) {
		snprintf(build, sizeof(build), "%s", opt.build);
	} else {
		n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		self[n > 0 ? n : 0] = '\0';
		for (i = 0; i < 3 && strrchr(self, '/'); i++)
			*strrchr(self, '/') = '\0';
		snprintf(build, sizeof(build), "%s", self);
	}
	snprintf(bin_ktlshd, sizeof(bin_ktlshd), "%.*s/ktlshd", (int)(sizeof(bin_ktlshd) - 8), build);
	snprintf(bin_ktlshctl, sizeof(bin_ktlshctl), "%.*s/ktlshctl", (int)(sizeof(bin_ktlshctl) - 10),
		 build);
	/* The daemon reads relative paths from its config file's directory. */
	if (realpath(opt.certs, certs_abs))
		opt.certs = certs_abs;
	snprintf(path, sizeof(path), "%s/ca.pem", opt.certs);
	if (access(bin_ktlshd, X_OK) || access(bin_ktlshctl, X_OK) || access(path, R_OK)) {
		printf("# missing %s, %s or the test PKI in %s: run make and ktlsh-mkcerts\n",
		       bin_ktlshd, bin_ktlshctl, opt.certs);
		printf("daemon: 0 passed, 1 failed, 0 skipped\n");
		return 1;
	}
	/* Scratch: $TMPDIR, else tmpfs (/dev/shm: the guest's own inside UML,
	 * where hostfs writes are slow), else /tmp. */
	if (!tmp || !*tmp)
		tmp = !stat("/dev/shm", &stt) && S_ISDIR(stt.st_mode) && !access("/dev/shm", W_OK)
		      ? "/dev/shm" : "/tmp";

	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL);
	RAND_bytes(&b, 1);
	cpeer_idx = SSL_get_ex_new_index(0, "ktlshd-it peer", NULL, NULL, NULL);
	SSL_CTX_free(SSL_CTX_new(TLS_method()));
	t_find_tool("openssl", tool_openssl, sizeof(tool_openssl));
	t_find_tool("gnutls-serv", tool_gnutls_serv, sizeof(tool_gnutls_serv));
	t_find_tool("gnutls-cli", tool_gnutls_cli, sizeof(tool_gnutls_cli));
	/* The distribution's python3 first: version-manager shims cost a
	 * shell start, which is slow inside UML. */
	if (!access("/usr/bin/python3", X_OK))
		snprintf(tool_python, sizeof(tool_python), "/usr/bin/python3");
	else
		t_find_tool("python3", tool_python, sizeof(tool_python));
	probe_kernel();
	scale_pick();
	printf("# ktlshd %s; peers: %s, %s, %s, %s; scratch in %s%s\n", bin_ktlshd,
	       tool_openssl[0] ? tool_openssl : "no openssl",
	       tool_gnutls_serv[0] ? tool_gnutls_serv : "no gnutls-serv",
	       tool_gnutls_cli[0] ? tool_gnutls_cli : "no gnutls-cli",
	       tool_python[0] ? tool_python : "no python3", tmp, am_root ? "" : "; not root");

	fds0 = t_count_fds();
	for (i = 0; i < ARRAY_SIZE(cases); i++)
		if (case_selected(&cases[i]))
			run_case(&cases[i], i, tmp, &tot);
	fds1 = t_count_fds();
	if (fds1 != fds0) {
		printf("not ok %u - runner: %d open descriptors before the cases, %d after\n",
		       ++tot.num, fds0, fds1);
		tot.failed++;
	}
	printf("daemon: %u passed, %u failed, %u skipped\n", tot.passed, tot.failed, tot.skipped);
	return tot.failed ? 1 : 0;
}
