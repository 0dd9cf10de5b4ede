// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ktls-bench: measure TLS handshakes and bulk data, kernel TLS against
 * user-space TLS, with the physical limit printed beside the result.
 *
 *   ktls-bench handshake  handshakes/s, latency percentiles, server CPU per
 *                         handshake against the crypto bound
 *   ktls-bench bulk       throughput and CPU per GiB: plaintext, OpenSSL,
 *                         kTLS send/recv, sendfile, splice, io_uring
 *   ktls-bench handover   connection set-up through ktlshd vs in-process
 *   ktls-bench memory     server memory per handshake in flight
 *   ktls-bench crypto     the crypto bound alone (openssl speed style)
 *
 * Same work, same run: every configuration of a command runs once per
 * repeat, in turn, so ratios compare measurements taken side by side.
 * See ktls-bench(1) and Documentation/performance.md.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <linux/tls.h>

#include <openssl/ssl.h>

#if defined(__has_include)
#if __has_include(<liburing.h>)
#include <liburing.h>
#define KB_HAVE_URING 1
#endif
#endif

#include <ktlsh/handshake.h>
#include <ktlsh/ktlsh.h>
#include <ktlsh/record.h>

#include "bench-out.h"
#include "bench-crypto.h"

#define KB_EXIT_FAIL	1
#define KB_EXIT_USAGE	2

#define KB_MAX_TARGETS	8
#define KB_MAX_PIDS	32
#define KB_HS_TIMEOUT_NS	(10ull * 1000000000ull)	/* one handshake, client side */

/* ---- options ---- */

enum kb_cmd {
	KB_CMD_HANDSHAKE = 1 << 0,
	KB_CMD_BULK = 1 << 1,
	KB_CMD_HANDOVER = 1 << 2,
	KB_CMD_MEMORY = 1 << 3,
	KB_CMD_CRYPTO = 1 << 4,
};
#define KB_CMD_ALL (KB_CMD_HANDSHAKE | KB_CMD_BULK | KB_CMD_HANDOVER | KB_CMD_MEMORY | KB_CMD_CRYPTO)

struct kb_opts {
	bool json, markdown, quiet;
	const char *json_file;		/* JSON here too, beside the table */
	int repeat;
	double duration;		/* seconds per measurement */
	double warmup;			/* seconds before the window (handshake) */
	int clients;			/* concurrent clients */
	long count;			/* handshakes (handshake), iterations (handover), connections (memory) */
	const char *cert, *key;		/* in-process server identity (PEM) */
	const char *tls, *groups, *sigs, *modes;	/* comma lists */
	const char *targets[KB_MAX_TARGETS];
	int ntargets;
	const char *server_pids;
	const char *server_name;
	const char *identity;
	int server_threads;
	/* bulk */
	const char *ciphers, *sizes, *dirs;
	uint64_t max_bytes;
	const char *states;		/* memory: silent,mid */
};

static struct kb_opts o = {
	.repeat = 1,
	.duration = -1,
	.warmup = -1,
	.clients = 8,
	.server_name = "localhost",
	.server_threads = 1,
};

static struct ktlsh_kcaps kb_caps;
static int kb_caps_err;		/* the probe itself failed */

__attribute__((format(printf, 1, 2), noreturn))
static void kb_die(const char *fmt, ...)
{
	va_list ap;

	kb_progress_clear();
	fprintf(stderr, "ktls-bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(KB_EXIT_FAIL);
}

/* Split a comma list into at most max items (modifies a copy). */
static int kb_split(const char *list, char items[][48], int max)
{
	char buf[512], *save = NULL, *tok;
	int n = 0;

	snprintf(buf, sizeof(buf), "%s", list);
	for (tok = strtok_r(buf, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		if (*tok)
			snprintf(items[n++], 48, "%s", tok);
	}
	return n;
}

static int kb_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	switch (tolower((unsigned char)*end)) {
	case '\0':
		break;
	case 'k':
		v *= 1024;
		end++;
		break;
	case 'm':
		v *= 1024 * 1024;
		end++;
		break;
	case 'g':
		v *= 1024.0 * 1024 * 1024;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

static void kb_fmt_size(char *buf, size_t len, uint64_t v)
{
	if (v >= (1u << 20) && !(v % (1u << 20)))
		snprintf(buf, len, "%lluM", (unsigned long long)(v >> 20));
	else if (v >= 1024 && !(v % 1024))
		snprintf(buf, len, "%lluk", (unsigned long long)(v >> 10));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* ---- the machine ---- */

static void kb_machine_probe(void)
{
	struct utsname u;
	char line[256];
	FILE *f;
	int ret;

	snprintf(kb_machine.cpu, sizeof(kb_machine.cpu), "unknown");
	f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *c = strchr(line, ':');

		if (!strncmp(line, "model name", 10) && c) {
			c++;
			while (*c == ' ')
				c++;
			c[strcspn(c, "\n")] = '\0';
			snprintf(kb_machine.cpu, sizeof(kb_machine.cpu), "%s", c);
			break;
		}
	}
	if (f)
		fclose(f);
	kb_machine.cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (!uname(&u))
		snprintf(kb_machine.kernel, sizeof(kb_machine.kernel), "%.20s %.100s %.20s",
			 u.sysname, u.release, u.machine);
	snprintf(kb_machine.openssl, sizeof(kb_machine.openssl), "%s",
		 OpenSSL_version(OPENSSL_VERSION));
#ifdef KB_HAVE_URING
#ifdef IO_URING_VERSION_MAJOR
	snprintf(kb_machine.liburing, sizeof(kb_machine.liburing), "%d.%d", IO_URING_VERSION_MAJOR,
		 IO_URING_VERSION_MINOR);
#else
	snprintf(kb_machine.liburing, sizeof(kb_machine.liburing), "yes");
#endif
#else
	snprintf(kb_machine.liburing, sizeof(kb_machine.liburing), "none (built without)");
#endif
	ret = ktlsh_kernel_probe(&kb_caps);
	if (ret) {
		kb_caps_err = ret;
		memset(&kb_caps, 0, sizeof(kb_caps));
		kb_caps.ulp_err = ret;
		snprintf(kb_machine.ktls, sizeof(kb_machine.ktls), "probe failed: %s",
			 strerror(-ret));
	} else if (kb_caps.ulp_err) {
		snprintf(kb_machine.ktls, sizeof(kb_machine.ktls), "unavailable (TCP_ULP \"tls\": %s)",
			 strerror(-kb_caps.ulp_err));
	} else {
		char *p = kb_machine.ktls;
		size_t left = sizeof(kb_machine.ktls);
		int c, n;

		n = snprintf(p, left, "TLS 1.3:");
		for (c = KTLSH_CIPHER_NONE + 1; c < KTLSH_CIPHER_COUNT && n > 0 && (size_t)n < left; c++) {
			if (ktlsh_kcaps_has(&kb_caps, TLS1_3_VERSION, c)) {
				p += n;
				left -= (size_t)n;
				n = snprintf(p, left, " %s", ktlsh_cipher_name(c));
			}
		}
		if (n > 0 && (size_t)n < left) {
			p += n;
			left -= (size_t)n;
			n = snprintf(p, left, "; TLS 1.2:");
		}
		for (c = KTLSH_CIPHER_NONE + 1; c < KTLSH_CIPHER_COUNT && n > 0 && (size_t)n < left; c++) {
			if (ktlsh_kcaps_has(&kb_caps, TLS1_2_VERSION, c)) {
				p += n;
				left -= (size_t)n;
				n = snprintf(p, left, " %s", ktlsh_cipher_name(c));
			}
		}
	}
}

/* The step of the thread CPU clock, measured: UML's ticks at HZ (10 ms),
 * which makes short CPU measurements coarse. */
static double kb_cpu_step_s(void)
{
	uint64_t t0 = kb_clock_ns(CLOCK_THREAD_CPUTIME_ID), t1, t2, end = kb_now_ns() + 60000000ull;

	while ((t1 = kb_clock_ns(CLOCK_THREAD_CPUTIME_ID)) == t0 && kb_now_ns() < end)
		;
	while ((t2 = kb_clock_ns(CLOCK_THREAD_CPUTIME_ID)) == t1 && kb_now_ns() < end)
		;
	return t2 > t1 ? (double)(t2 - t1) / 1e9 : 0.06;
}

static void kb_note_cpu_clock(void)
{
	double step = kb_cpu_step_s();

	if (step > 0.0005)
		kb_note("this kernel's CPU clock advances in %.0f ms steps: CPU figures of "
			"runs shorter than a few seconds are coarse", step * 1e3);
}

static bool kb_have_ktls(void)
{
	return !kb_caps_err && !kb_caps.ulp_err;
}

static const char *kb_no_ktls_reason(void)
{
	static char buf[400];

	snprintf(buf, sizeof(buf), "no kernel TLS on %s (%s)", kb_machine.kernel,
		 kb_machine.ktls);
	return buf;
}

/* Is libktlsh-preload.so interposing in this process? */
static bool kb_under_shim(void)
{
	const char *p = getenv("LD_PRELOAD");

	return p && strstr(p, "libktlsh-preload");
}

static int kb_shim_port;	/* --shim-port: the listener the shim manages */

static const char *kb_shim_na(void)
{
	static char buf[300];

	if (!kb_have_ktls())
		return kb_no_ktls_reason();
	if (!kb_under_shim()) {
		snprintf(buf, sizeof(buf), "not running under LD_PRELOAD=libktlsh-preload.so "
			 "(with KTLSH_PRELOAD='server=127.0.0.1:%d,...')", kb_shim_port);
		return buf;
	}
	if (!kb_shim_port)
		return "no --shim-port: the port the shim's configuration names";
	return NULL;
}

/* Does fd carry the "tls" ULP (kTLS installed)? */
static bool kb_fd_is_ktls(int fd)
{
	char ulp[16] = "";
	socklen_t len = sizeof(ulp);

	return !getsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, &len) && !strcmp(ulp, "tls");
}

static int kb_listen_port(struct sockaddr_in *addr, int port, int backlog)
{
	int fd, one = 1;

	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr->sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 || listen(fd, backlog) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/* ---- other processes: CPU time and memory from /proc ---- */

/*
 * CPU nanoseconds of a process, all threads: the sum of the tasks'
 * schedstat (ns resolution) where the kernel has it, else utime + stime of
 * /proc/PID/stat (clock ticks). Returns -1 if the process is gone.
 */
static int64_t kb_pid_cpu_ns(pid_t pid)
{
	char path[300], line[512];
	unsigned long long ns, ut, st;
	int64_t total = 0;
	bool any = false;
	struct dirent *d;
	DIR *dir;
	FILE *f;
	char *p;
	long hz;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return -1;
	while ((d = readdir(dir))) {
		if (d->d_name[0] < '0' || d->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fscanf(f, "%llu", &ns) == 1) {
			total += (int64_t)ns;
			any = true;
		}
		fclose(f);
	}
	closedir(dir);
	if (any)
		return total;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	p = fgets(line, sizeof(line), f);
	fclose(f);
	if (!p)
		return -1;
	/* after "pid (comm) ": state, then utime and stime are fields 14, 15 */
	p = strrchr(line, ')');
	hz = sysconf(_SC_CLK_TCK);
	if (!p || hz <= 0 ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (int64_t)((ut + st) * (1000000000ull / (unsigned long long)hz));
}

static int64_t kb_pids_cpu_ns(const pid_t *pids, int n)
{
	int64_t total = 0, v;
	int i;

	for (i = 0; i < n; i++) {
		v = kb_pid_cpu_ns(pids[i]);
		if (v < 0)
			return -1;
		total += v;
	}
	return total;
}

/* Resident set in KiB (VmRSS), summed over pids; -1 if one is gone. */
static long kb_pids_rss_kib(const pid_t *pids, int n)
{
	char path[64], line[256];
	long total = 0, v;
	bool found;
	FILE *f;
	int i;

	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "/proc/%d/status", (int)pids[i]);
		f = fopen(path, "r");
		if (!f)
			return -1;
		found = false;
		while (fgets(line, sizeof(line), f)) {
			if (sscanf(line, "VmRSS: %ld kB", &v) == 1) {
				total += v;
				found = true;
				break;
			}
		}
		fclose(f);
		if (!found)
			return -1;
	}
	return total;
}

static int kb_parse_pids(const char *list, pid_t *pids, int max)
{
	char items[KB_MAX_PIDS][48];
	int n, i;
	long v;
	char *end;

	n = kb_split(list, items, max < KB_MAX_PIDS ? max : KB_MAX_PIDS);
	for (i = 0; i < n; i++) {
		errno = 0;
		v = strtol(items[i], &end, 10);
		if (errno || *end || v <= 0 || v > INT_MAX)
			return -EINVAL;
		pids[i] = (pid_t)v;
	}
	return n;
}

/* Raise the descriptor limit to the hard limit: memory and many clients
 * hold thousands of sockets. */
static void kb_raise_nofile(void)
{
	struct rlimit rl;

	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* ---- targets ---- */

enum kb_tkind {
	KB_T_INPROCESS = 1,
	KB_T_KTLSHD,
	KB_T_HOST,
	KB_T_SHIM,		/* handover: accept() on a listener libktlsh-preload.so manages */
};

struct kb_target {
	enum kb_tkind kind;
	char label[64];			/* as the output names it */
	char spec[300];
	char sock[256];			/* ktlshd: control socket ("" = default) */
	struct sockaddr_storage addr;	/* host */
	socklen_t alen;
	pid_t pids[KB_MAX_PIDS];	/* whose CPU and memory count as the server's */
	int npids;
	int port;			/* shim */
};

static struct kb_target kb_targets[KB_MAX_TARGETS];
static int kb_ntargets;

static int kb_resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256], *port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	int ret;

	snprintf(host, sizeof(host), "%s", hostport);
	port = strrchr(host, ':');
	if (!port || port == host)
		return -EINVAL;
	*port++ = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	ret = getaddrinfo(host, port, &hints, &res);
	if (ret || !res)
		return -EHOSTUNREACH;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int kb_target_parse(const char *spec, struct kb_target *t)
{
	const char *eq = strchr(spec, '=');

	memset(t, 0, sizeof(*t));
	/* "LABEL=SPEC" names the target in the output */
	if (eq && eq != spec && (size_t)(eq - spec) < sizeof(t->label) &&
	    strspn(spec, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") ==
	    (size_t)(eq - spec)) {
		snprintf(t->label, sizeof(t->label), "%.*s", (int)(eq - spec), spec);
		spec = eq + 1;
	} else {
		snprintf(t->label, sizeof(t->label), "%.63s", spec);
	}
	snprintf(t->spec, sizeof(t->spec), "%s", spec);
	if (!strcmp(spec, "inprocess")) {
		t->kind = KB_T_INPROCESS;
		t->pids[0] = getpid();
		t->npids = 0;	/* measured per thread instead */
		return 0;
	}
	if (!strncmp(spec, "shim:", 5)) {
		char *end;
		long port;

		errno = 0;
		port = strtol(spec + 5, &end, 10);
		if (errno || *end || port <= 0 || port > 65535)
			return -EINVAL;
		t->kind = KB_T_SHIM;
		t->port = (int)port;
		return 0;
	}
	if (!strcmp(spec, "ktlshd") || !strncmp(spec, "ktlshd:", 7)) {
		t->kind = KB_T_KTLSHD;
		if (spec[6] == ':')
			snprintf(t->sock, sizeof(t->sock), "%s", spec + 7);
		return 0;
	}
	t->kind = KB_T_HOST;
	return kb_resolve(spec, &t->addr, &t->alen);
}

/* The daemon's pid, from SO_PEERCRED of a control connection. */
static pid_t kb_ktlshd_pid(struct ktlsh_client *kc)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(ktlsh_client_fd(kc), SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -1;
	return cr.pid;
}

/* ---- TLS contexts ---- */

struct kb_ident {
	EVP_PKEY *ec, *rsa;
	X509 *ec_cert, *rsa_cert;
	bool from_files;
	char desc[128];
};

static struct kb_ident kb_ident;

/* The in-process server's identity: --cert/--key, or generated keys with
 * self-signed certificates (ECDSA P-256; RSA-2048 when need_rsa). */
static void kb_ident_load(bool need_rsa)
{
	if (o.cert || o.key) {
		if (!o.cert || !o.key)
			kb_die("--cert and --key go together");
		if (kb_ident.from_files)
			return;
		kb_ident.from_files = true;
		snprintf(kb_ident.desc, sizeof(kb_ident.desc), "%s", o.cert);
		return;
	}
	if (!kb_ident.ec) {
		kb_ident.ec = kb_key_gen(EVP_PKEY_EC, 0, "P-256");
		kb_ident.ec_cert = kb_ident.ec ? kb_cert_self(kb_ident.ec) : NULL;
		if (!kb_ident.ec_cert)
			kb_die("cannot generate an ECDSA P-256 test certificate");
	}
	if (need_rsa && !kb_ident.rsa) {
		kb_ident.rsa = kb_key_gen(EVP_PKEY_RSA, 2048, NULL);
		kb_ident.rsa_cert = kb_ident.rsa ? kb_cert_self(kb_ident.rsa) : NULL;
		if (!kb_ident.rsa_cert)
			kb_die("cannot generate an RSA-2048 test certificate");
	}
	snprintf(kb_ident.desc, sizeof(kb_ident.desc), "generated self-signed %s",
		 kb_ident.rsa ? "ECDSA P-256 + RSA-2048" : "ECDSA P-256");
}

static void kb_ctx_use_ident(SSL_CTX *ctx)
{
	if (kb_ident.from_files) {
		if (SSL_CTX_use_certificate_chain_file(ctx, o.cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, o.key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1)
			kb_die("cannot load --cert %s / --key %s", o.cert, o.key);
		return;
	}
	if (SSL_CTX_use_certificate(ctx, kb_ident.ec_cert) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, kb_ident.ec) != 1)
		kb_die("cannot use the generated ECDSA key");
	if (kb_ident.rsa && (SSL_CTX_use_certificate(ctx, kb_ident.rsa_cert) != 1 ||
			     SSL_CTX_use_PrivateKey(ctx, kb_ident.rsa) != 1))
		kb_die("cannot use the generated RSA key");
}

/* A server context as ktlshd builds one: stateless tickets, no session
 * cache, ktlsh's callbacks. ktls: for handshakes whose keys go to the
 * kernel (ktlsh engine); else plain user-space OpenSSL. */
static SSL_CTX *kb_server_ctx(bool ktls, int tickets)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx)
		kb_die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, (size_t)tickets);
	if (!tickets)
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	kb_ctx_use_ident(ctx);
	if (ktls) {
		if (ktlsh_ssl_ctx_setup(ctx, &kb_caps, 0))
			kb_die("ktlsh_ssl_ctx_setup failed");
	} else {
		SSL_CTX_clear_options(ctx, SSL_OP_ENABLE_KTLS);
		SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	}
	return ctx;
}

/* Client side of a configuration: version, group, signature kind. */
struct kb_suite_req {
	int version;		/* TLS1_3_VERSION / TLS1_2_VERSION */
	char group[32];		/* canonical OpenSSL group name */
	char sig[16];		/* "ecdsa", "rsa", "any" */
	char cipher[48];	/* optional: TLS 1.3 suite or TLS 1.2 cipher */
};

static SSL_CTX *kb_client_ctx(const struct kb_suite_req *r, bool ktls, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	const char *sigalgs = NULL, *c12 = NULL;

	if (!ctx)
		kb_die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, r->version);
	SSL_CTX_set_max_proto_version(ctx, r->version);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (r->group[0]) {
		char groups[96];

		/* TLS 1.2 (RFC 8422): the supported groups also name the curves the
		 * client accepts in the server's ECDSA certificate; offer the common
		 * ones after the one asked for, which the server picks first */
		snprintf(groups, sizeof(groups), "%s%s", r->group,
			 r->version == TLS1_2_VERSION && strcmp(r->sig, "rsa") &&
			 strncmp(r->group, "P-", 2) ? ":P-256:P-384" : "");
		if (!SSL_CTX_set1_groups_list(ctx, groups)) {
			snprintf(err, errlen, "OpenSSL does not know group %s", r->group);
			goto fail;
		}
	}
	if (!strcmp(r->sig, "ecdsa")) {
		sigalgs = "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512";
		c12 = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
		      "ECDHE-ECDSA-CHACHA20-POLY1305";
	} else if (!strcmp(r->sig, "rsa")) {
		sigalgs = "RSA-PSS+SHA256:RSA-PSS+SHA384:RSA+SHA256:RSA+SHA384";
		c12 = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
		      "ECDHE-RSA-CHACHA20-POLY1305";
	}
	if (sigalgs && !SSL_CTX_set1_sigalgs_list(ctx, sigalgs)) {
		snprintf(err, errlen, "OpenSSL refused signature algorithms %s", sigalgs);
		goto fail;
	}
	if (r->cipher[0]) {
		if (r->version == TLS1_3_VERSION ? !SSL_CTX_set_ciphersuites(ctx, r->cipher) :
		    !SSL_CTX_set_cipher_list(ctx, r->cipher)) {
			snprintf(err, errlen, "OpenSSL refused cipher %s", r->cipher);
			goto fail;
		}
	} else if (c12 && r->version == TLS1_2_VERSION && !SSL_CTX_set_cipher_list(ctx, c12)) {
		snprintf(err, errlen, "OpenSSL refused ciphers %s", c12);
		goto fail;
	}
	if (ktls) {
		if (ktlsh_ssl_ctx_setup(ctx, &kb_caps, 0)) {
			snprintf(err, errlen, "ktlsh_ssl_ctx_setup failed");
			goto fail;
		}
	} else {
		SSL_CTX_clear_options(ctx, SSL_OP_ENABLE_KTLS);
		SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	}
	ERR_clear_error();
	return ctx;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

static void kb_ssl_reason(char *buf, size_t len, SSL *ssl, int err, const char *what)
{
	unsigned long e = ERR_peek_error();

	if (e)
		snprintf(buf, len, "%s: %s", what, ERR_reason_error_string(e) ?
			 ERR_reason_error_string(e) : "TLS error");
	else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
		snprintf(buf, len, "%s: connection closed by the server%s%s", what,
			 errno ? ": " : "", errno ? strerror(errno) : "");
	else
		snprintf(buf, len, "%s: TLS error %d in %s", what, err,
			 ssl ? SSL_state_string_long(ssl) : "?");
	ERR_clear_error();
}

/* A loopback listener on an ephemeral port. */
static int kb_listen_loopback(struct sockaddr_in *addr, int backlog, bool nonblock)
{
	socklen_t len = sizeof(*addr);
	int fd, one = 1;

	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 || listen(fd, backlog) < 0 ||
	    getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/* Close without TIME_WAIT: the benchmark opens tens of thousands of
 * connections and must not run out of ports. */
static void kb_set_linger0(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

static void kb_set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- the in-process server: threads running libktlsh's engine ---- */

struct kb_sconn {
	int fd;
	uint16_t port;
	short events;
	struct ktlsh_hs *hs;
	struct kb_sconn *prev, *next;
};

struct kb_srv;

struct kb_srv_thread {
	struct kb_srv *srv;
	pthread_t th;
	clockid_t clk;
	int ep;
	struct kb_sconn *conns;
};

struct kb_srv {
	SSL_CTX *ctx;
	int lfd;
	struct sockaddr_in addr;
	int notify_rd, notify_wr;	/* uint32: port | KB_NOTIFY_OK */
	int stopfd;
	bool install;			/* install kTLS after the handshake */
	int nthreads;
	struct kb_srv_thread th[16];
	pthread_mutex_t lock;
	char fail_reason[256];
	atomic_long ok, failed;
};

#define KB_NOTIFY_OK 0x10000u

static void kb_srv_notify(struct kb_srv *srv, uint16_t port, bool ok, const char *why)
{
	uint32_t msg = port | (ok ? KB_NOTIFY_OK : 0);

	if (ok) {
		atomic_fetch_add(&srv->ok, 1);
	} else {
		atomic_fetch_add(&srv->failed, 1);
		pthread_mutex_lock(&srv->lock);
		if (!srv->fail_reason[0] && why)
			snprintf(srv->fail_reason, sizeof(srv->fail_reason), "%s", why);
		pthread_mutex_unlock(&srv->lock);
	}
	if (srv->notify_wr >= 0)
		(void)!write(srv->notify_wr, &msg, sizeof(msg));
}

static void kb_sconn_free(struct kb_srv_thread *t, struct kb_sconn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		t->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->events)
		epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
	ktlsh_hs_free(c->hs);
	close(c->fd);
	free(c);
}

static void kb_sconn_step(struct kb_srv_thread *t, struct kb_sconn *c)
{
	struct epoll_event ev;
	short want;
	int ret;

	ret = ktlsh_hs_step(c->hs);
	if (ret == -EAGAIN) {
		want = ktlsh_hs_events(c->hs);
		if (want != c->events) {
			ev.events = want == POLLOUT ? EPOLLOUT : EPOLLIN;
			ev.data.ptr = c;
			if (epoll_ctl(t->ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0) {
				kb_srv_notify(t->srv, c->port, false, strerror(errno));
				kb_sconn_free(t, c);
				return;
			}
			c->events = want;
		}
		return;
	}
	if (!ret && t->srv->install)
		ret = ktlsh_hs_install(c->hs);
	kb_srv_notify(t->srv, c->port, ret == 0, ret ? ktlsh_hs_info(c->hs)->reason : NULL);
	kb_sconn_free(t, c);
}

static void kb_srv_accept(struct kb_srv_thread *t)
{
	struct ktlsh_hs_params p = { .role = KTLSH_ROLE_SERVER };
	struct sockaddr_in peer;
	socklen_t plen;
	struct kb_sconn *c;
	int fd, ret;

	for (;;) {
		plen = sizeof(peer);
		fd = accept4(t->srv->lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		if (fd < 0)
			return;
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->port = ntohs(peer.sin_port);
		c->next = t->conns;
		if (t->conns)
			t->conns->prev = c;
		t->conns = c;
		ret = ktlsh_hs_new(&c->hs, t->srv->ctx, fd, &p);
		if (ret) {
			kb_srv_notify(t->srv, c->port, false, strerror(-ret));
			kb_sconn_free(t, c);
			continue;
		}
		kb_sconn_step(t, c);
	}
}

static void *kb_srv_main(void *arg)
{
	struct kb_srv_thread *t = arg;
	struct epoll_event evs[64];
	int i, n;

	for (;;) {
		n = epoll_wait(t->ep, evs, 64, -1);
		if (n < 0 && errno != EINTR)
			break;
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == &t->srv->lfd)
				kb_srv_accept(t);
			else if (evs[i].data.ptr == &t->srv->stopfd)
				goto out;
			else
				kb_sconn_step(t, evs[i].data.ptr);
		}
	}
out:
	while (t->conns)
		kb_sconn_free(t, t->conns);
	return NULL;
}

static int kb_srv_start(struct kb_srv *srv, SSL_CTX *ctx, int nthreads, bool install)
{
	struct epoll_event ev;
	int p[2], i;

	memset(srv, 0, sizeof(*srv));
	pthread_mutex_init(&srv->lock, NULL);
	srv->ctx = ctx;
	srv->install = install;
	srv->lfd = kb_listen_loopback(&srv->addr, 4096, true);
	if (srv->lfd < 0)
		return srv->lfd;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	srv->notify_rd = p[0];
	srv->notify_wr = p[1];
	fcntl(srv->notify_rd, F_SETFL, O_NONBLOCK);
	srv->stopfd = eventfd(0, EFD_CLOEXEC);
	if (nthreads > 16)
		nthreads = 16;
	for (i = 0; i < nthreads; i++) {
		struct kb_srv_thread *t = &srv->th[i];

		t->srv = srv;
		t->ep = epoll_create1(EPOLL_CLOEXEC);
		ev.events = EPOLLIN | EPOLLEXCLUSIVE;
		ev.data.ptr = &srv->lfd;
		epoll_ctl(t->ep, EPOLL_CTL_ADD, srv->lfd, &ev);
		ev.events = EPOLLIN;
		ev.data.ptr = &srv->stopfd;
		epoll_ctl(t->ep, EPOLL_CTL_ADD, srv->stopfd, &ev);
		if (pthread_create(&t->th, NULL, kb_srv_main, t))
			return -EAGAIN;
		pthread_getcpuclockid(t->th, &t->clk);
		srv->nthreads++;
	}
	return 0;
}

static int64_t kb_srv_cpu_ns(struct kb_srv *srv)
{
	int64_t total = 0;
	int i;

	for (i = 0; i < srv->nthreads; i++)
		total += (int64_t)kb_clock_ns(srv->th[i].clk);
	return total;
}

static void kb_srv_stop(struct kb_srv *srv)
{
	uint64_t one = 1;
	int i;

	if (!srv->nthreads)
		return;
	(void)!write(srv->stopfd, &one, sizeof(one));
	for (i = 0; i < srv->nthreads; i++) {
		pthread_join(srv->th[i].th, NULL);
		close(srv->th[i].ep);
	}
	srv->nthreads = 0;
	close(srv->lfd);
	close(srv->notify_rd);
	close(srv->notify_wr);
	close(srv->stopfd);
	pthread_mutex_destroy(&srv->lock);
}

/* ---- the handshake load generator: N clients on one epoll loop ---- */

enum kb_slot_state {
	KB_S_IDLE = 0,
	KB_S_HANDSHAKE,		/* client handshake in progress */
	KB_S_TICKET,		/* TLS 1.3: waiting for a NewSessionTicket */
	KB_S_WAIT_SERVER,	/* client done, the server has not said so yet */
};

struct kb_slot {
	enum kb_slot_state state;
	int fd;
	SSL *ssl;
	uint16_t port;
	uint32_t gen;
	bool server_done, server_ok, got_ticket;
	uint64_t t0, t_client, ticket_deadline;
	char server_reason[160];
};

struct kb_job {
	bool used;
	uint32_t id;
	int fd;			/* our copy of the accepted socket */
	int slot;
	uint32_t gen;
};

struct kb_pending {
	int fd, slot;
	uint32_t gen;
};

/* epoll tags */
#define KB_EV_SLOT	1ull
#define KB_EV_LISTEN	2ull
#define KB_EV_KTLSH	3ull
#define KB_EV_NOTIFY	4ull
#define KB_EV(tag, i)	(((uint64_t)(tag) << 32) | (uint32_t)(i))

struct kb_hs {
	/* configuration */
	const struct kb_target *t;
	SSL_CTX *cctx;
	SSL_SESSION *sess;		/* resume with this one */
	bool want_ticket;		/* TLS 1.3: wait for a ticket after the handshake */
	bool capture;			/* keep the first ticket in captured */
	int nslots;
	long max_count;			/* stop after this many (0: by time) */
	double warmup_s, duration_s;
	struct kb_srv *srv;		/* inprocess */
	const char *ktlshd_path;

	/* machinery */
	int ep;
	struct kb_slot *slots;
	int32_t *port_slot;		/* local port -> slot + 1 */
	int lfd;
	struct sockaddr_in laddr;
	struct ktlsh_client *kc;
	pid_t daemon_pid;
	struct kb_job *jobs;		/* by id & 0xffff */
	struct kb_pending *pending;
	int npending;
	int active;

	/* results */
	bool in_window, window_done, stopping;
	uint64_t t_win0, t_win1;
	int64_t srv_cpu0, srv_cpu1;
	uint64_t proc_cpu0, proc_cpu1;
	long completed, completed_win, failed, failed_win, resumed_win, not_offloaded, no_ticket;
	double *lat_us;
	size_t nlat, cap_lat;
	char fail_reason[320];
	struct kb_suite suite;
	SSL_SESSION *captured;
	bool fatal;
};

/* SSL app data is the slot; the hs run is reachable through this. */
static struct kb_hs *kb_hs_current;

static int kb_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct kb_slot *s = SSL_get_app_data(ssl);
	struct kb_hs *h = kb_hs_current;

	if (s)
		s->got_ticket = true;
	/* a copy: the SSL's own session object is marked not resumable when
	 * the SSL goes away without a shutdown */
	if (h && h->capture && !h->captured && SSL_SESSION_is_resumable(sess))
		h->captured = SSL_SESSION_dup(sess);
	return 0;
}

static void kb_hs_fail_reason(struct kb_hs *h, const char *why)
{
	if (!h->fail_reason[0] && why && why[0])
		snprintf(h->fail_reason, sizeof(h->fail_reason), "%.300s", why);
}

static uint64_t kb_proc_cpu_ns(void)
{
	return kb_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

static int64_t kb_hs_server_cpu(struct kb_hs *h)
{
	if (h->t->kind == KB_T_INPROCESS)
		return kb_srv_cpu_ns(h->srv);
	if (h->t->kind == KB_T_KTLSHD)
		return h->daemon_pid > 0 ? kb_pid_cpu_ns(h->daemon_pid) : -1;
	return h->t->npids ? kb_pids_cpu_ns(h->t->pids, h->t->npids) : -1;
}

static void kb_hs_window_open(struct kb_hs *h, uint64_t now)
{
	h->in_window = true;
	h->t_win0 = now;
	h->srv_cpu0 = kb_hs_server_cpu(h);
	h->proc_cpu0 = kb_proc_cpu_ns();
}

static void kb_hs_window_close(struct kb_hs *h, uint64_t now)
{
	h->in_window = false;
	h->window_done = true;
	h->t_win1 = now;
	h->srv_cpu1 = kb_hs_server_cpu(h);
	h->proc_cpu1 = kb_proc_cpu_ns();
	h->stopping = true;
}

static void kb_slot_close(struct kb_hs *h, int i)
{
	struct kb_slot *s = &h->slots[i];

	if (s->state == KB_S_IDLE)
		return;
	if (s->fd >= 0) {
		epoll_ctl(h->ep, EPOLL_CTL_DEL, s->fd, NULL);
		if (s->ssl) {
			/* closed without close_notify on purpose (a reset): say so, or
			 * OpenSSL invalidates the session */
			SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
			SSL_free(s->ssl);
		}
		close(s->fd);
	}
	if (h->port_slot[s->port] == i + 1)
		h->port_slot[s->port] = 0;
	s->ssl = NULL;
	s->fd = -1;
	s->state = KB_S_IDLE;
	h->active--;
}

static void kb_slot_start(struct kb_hs *h, int i);

static void kb_slot_finish(struct kb_hs *h, int i, bool ok, const char *why)
{
	struct kb_slot *s = &h->slots[i];
	uint64_t now = kb_now_ns();

	if (ok) {
		h->completed++;
		if (h->in_window) {
			h->completed_win++;
			if (s->ssl && SSL_session_reused(s->ssl))
				h->resumed_win++;
			if (h->nlat == h->cap_lat) {
				size_t cap = h->cap_lat ? 2 * h->cap_lat : 4096;
				double *v = realloc(h->lat_us, cap * sizeof(*v));

				if (v) {
					h->lat_us = v;
					h->cap_lat = cap;
				}
			}
			if (h->nlat < h->cap_lat)
				h->lat_us[h->nlat++] = (double)(now - s->t0) / 1e3;
		}
	} else {
		h->failed++;
		if (h->in_window)
			h->failed_win++;
		kb_hs_fail_reason(h, why);
	}
	kb_slot_close(h, i);
	if (h->max_count && h->completed + h->failed >= h->max_count && !h->window_done)
		kb_hs_window_close(h, now);
	if (!h->stopping)
		kb_slot_start(h, i);
}

/* The client finished (and read its ticket if it waits for one). */
static void kb_slot_client_done(struct kb_hs *h, int i)
{
	struct kb_slot *s = &h->slots[i];

	if (h->t->kind == KB_T_HOST || s->server_done) {
		kb_slot_finish(h, i, s->server_done ? s->server_ok : true, s->server_reason);
		return;
	}
	epoll_ctl(h->ep, EPOLL_CTL_DEL, s->fd, NULL);
	s->state = KB_S_WAIT_SERVER;
}

static void kb_slot_wait(struct kb_hs *h, int i, uint32_t events)
{
	struct kb_slot *s = &h->slots[i];
	struct epoll_event ev = { .events = events, .data.u64 = KB_EV(KB_EV_SLOT, i) };

	if (epoll_ctl(h->ep, EPOLL_CTL_MOD, s->fd, &ev) < 0)
		epoll_ctl(h->ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static void kb_slot_step(struct kb_hs *h, int i)
{
	struct kb_slot *s = &h->slots[i];
	char why[256], buf[512];
	int r, err;

	if (s->state == KB_S_HANDSHAKE) {
		ERR_clear_error();
		errno = 0;
		r = SSL_do_handshake(s->ssl);
		if (r != 1) {
			err = SSL_get_error(s->ssl, r);
			if (err == SSL_ERROR_WANT_READ) {
				kb_slot_wait(h, i, EPOLLIN);
				return;
			}
			if (err == SSL_ERROR_WANT_WRITE) {
				kb_slot_wait(h, i, EPOLLOUT);
				return;
			}
			kb_ssl_reason(why, sizeof(why), s->ssl, err, "client handshake");
			if (s->server_done && !s->server_ok && s->server_reason[0])
				snprintf(why, sizeof(why), "%s", s->server_reason);
			kb_slot_finish(h, i, false, why);
			return;
		}
		s->t_client = kb_now_ns();
		if (!h->suite.valid)
			kb_suite_from_ssl(s->ssl, &h->suite);
		if (h->want_ticket && SSL_version(s->ssl) == TLS1_3_VERSION && !s->got_ticket) {
			s->state = KB_S_TICKET;
			s->ticket_deadline = s->t_client + (h->capture ? 2000000000ull : 200000000ull);
		} else {
			kb_slot_client_done(h, i);
			return;
		}
	}
	if (s->state == KB_S_TICKET) {
		for (;;) {
			if (s->got_ticket)
				break;
			ERR_clear_error();
			r = SSL_read(s->ssl, buf, sizeof(buf));
			if (r > 0)
				continue;
			err = SSL_get_error(s->ssl, r);
			if (err == SSL_ERROR_WANT_READ && !s->got_ticket) {
				kb_slot_wait(h, i, EPOLLIN);
				return;
			}
			ERR_clear_error();
			break;	/* a ticket, or closed: the server is done with it */
		}
		if (!s->got_ticket)
			h->no_ticket++;
		kb_slot_client_done(h, i);
	}
}

static void kb_slot_start(struct kb_hs *h, int i)
{
	struct kb_slot *s = &h->slots[i];
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	const struct sockaddr *dst;
	socklen_t dlen;
	int fd;
	uint16_t port;

	if (h->t->kind == KB_T_HOST) {
		dst = (const struct sockaddr *)&h->t->addr;
		dlen = h->t->alen;
	} else if (h->t->kind == KB_T_INPROCESS) {
		dst = (const struct sockaddr *)&h->srv->addr;
		dlen = sizeof(h->srv->addr);
	} else {
		dst = (const struct sockaddr *)&h->laddr;
		dlen = sizeof(h->laddr);
	}
	{
		uint32_t gen = s->gen;

		memset(s, 0, sizeof(*s));
		s->gen = gen + 1;
	}
	s->fd = -1;
	fd = socket(dst->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		kb_hs_fail_reason(h, strerror(errno));
		h->fatal = true;
		return;
	}
	kb_set_nodelay(fd);
	kb_set_linger0(fd);
	s->t0 = kb_now_ns();
	if (connect(fd, dst, dlen) < 0 && errno != EINPROGRESS) {
		char why[400];

		snprintf(why, sizeof(why), "connect to %s: %s", h->t->spec, strerror(errno));
		kb_hs_fail_reason(h, why);
		close(fd);
		h->failed++;
		if (errno == ECONNREFUSED || errno == EADDRNOTAVAIL || errno == ENETUNREACH)
			h->fatal = true;
		return;
	}
	if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0) {
		close(fd);
		h->fatal = true;
		return;
	}
	port = ntohs(local.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&local)->sin6_port :
					      ((struct sockaddr_in *)&local)->sin_port);
	s->fd = fd;
	s->port = port;
	h->port_slot[port] = i + 1;
	s->ssl = SSL_new(h->cctx);
	if (!s->ssl || !SSL_set_fd(s->ssl, fd)) {
		h->fatal = true;
		kb_hs_fail_reason(h, "SSL_new failed");
		close(fd);
		return;
	}
	SSL_set_connect_state(s->ssl);
	SSL_set_app_data(s->ssl, s);
	if (o.server_name && o.server_name[0])
		SSL_set_tlsext_host_name(s->ssl, o.server_name);
	if (h->sess) {
		/* OpenSSL's client treats a TLS 1.3 ticket as single use (it marks
		 * the session not resumable once resumed): each connection gets a
		 * copy of the one ticket, which a server with stateless tickets
		 * accepts any number of times. */
		SSL_SESSION *d = SSL_SESSION_dup(h->sess);

		if (d) {
			SSL_set_session(s->ssl, d);
			SSL_SESSION_free(d);
		}
	}
	s->state = KB_S_HANDSHAKE;
	h->active++;
	{
		struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = KB_EV(KB_EV_SLOT, i) };

		epoll_ctl(h->ep, EPOLL_CTL_ADD, fd, &ev);
	}
	kb_slot_step(h, i);
}

/* The server side of slot i's connection is done (ok or not). */
static void kb_slot_server_done(struct kb_hs *h, int i, uint32_t gen, bool ok, const char *why)
{
	struct kb_slot *s;

	if (i < 0 || i >= h->nslots)
		return;
	s = &h->slots[i];
	if (s->state == KB_S_IDLE || (gen && s->gen != gen))
		return;
	s->server_done = true;
	s->server_ok = ok;
	if (!ok && why)
		snprintf(s->server_reason, sizeof(s->server_reason), "server: %.150s", why);
	if (s->state == KB_S_WAIT_SERVER || !ok)
		kb_slot_finish(h, i, ok, s->server_reason);
}

static void kb_hs_submit(struct kb_hs *h, int fd, int slot, uint32_t gen)
{
	struct ktlsh_request req = {
		.role = KTLSH_PROTO_ROLE_SERVER,
		.identity = o.identity,
		.timeout_ms = 10000,
	};
	uint32_t id;
	int ret;

	ret = ktlsh_submit(h->kc, fd, &req, &id);
	if (ret == -EAGAIN) {
		h->pending[h->npending].fd = fd;
		h->pending[h->npending].slot = slot;
		h->pending[h->npending].gen = gen;
		h->npending++;
		return;
	}
	if (ret) {
		char why[200];

		snprintf(why, sizeof(why), "ktlsh_submit: %s", strerror(-ret));
		close(fd);
		kb_slot_server_done(h, slot, gen, false, why);
		if (ret != -EINVAL && ret != -EBADF)
			h->fatal = true;
		return;
	}
	if (h->jobs[id & 0xffff].used) {
		/* 65536 in flight: cannot happen with our slot count */
		close(h->jobs[id & 0xffff].fd);
	}
	h->jobs[id & 0xffff] = (struct kb_job){ .used = true, .id = id, .fd = fd, .slot = slot,
						.gen = gen };
}

static void kb_hs_accept(struct kb_hs *h)
{
	struct sockaddr_in peer;
	socklen_t plen;
	int fd, slot;

	for (;;) {
		plen = sizeof(peer);
		fd = accept4(h->lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		if (fd < 0)
			return;
		slot = h->port_slot[ntohs(peer.sin_port)] - 1;
		if (slot < 0) {
			close(fd);
			continue;
		}
		kb_set_linger0(fd);
		if (h->npending)
			h->pending[h->npending++] = (struct kb_pending){ fd, slot, h->slots[slot].gen };
		else
			kb_hs_submit(h, fd, slot, h->slots[slot].gen);
	}
}

static void kb_hs_retry_pending(struct kb_hs *h)
{
	struct kb_pending p[64];
	int n = h->npending < 64 ? h->npending : 64, i;

	memcpy(p, h->pending, (size_t)n * sizeof(p[0]));
	memmove(h->pending, h->pending + n, (size_t)(h->npending - n) * sizeof(p[0]));
	h->npending -= n;
	for (i = 0; i < n; i++) {
		if (h->npending) {	/* still full: keep the order */
			memmove(h->pending + (n - i), h->pending, (size_t)h->npending * sizeof(p[0]));
			memcpy(h->pending, p + i, (size_t)(n - i) * sizeof(p[0]));
			h->npending += n - i;
			return;
		}
		kb_hs_submit(h, p[i].fd, p[i].slot, p[i].gen);
	}
}

static void kb_hs_replies(struct kb_hs *h)
{
	struct ktlsh_proto_reply rep;
	struct kb_job *j;
	bool ok;
	int ret;

	while ((ret = ktlsh_complete(h->kc, &rep)) == 0) {
		j = &h->jobs[rep.id & 0xffff];
		if (!j->used || j->id != rep.id)
			continue;
		close(j->fd);
		j->used = false;
		/* --handshake-only: the handshake completed and nothing was
		 * installed; that is the daemon's whole work on a host without
		 * kernel TLS, so it counts. */
		ok = rep.type == KTLSH_PROTO_HANDSHAKE_REPLY &&
		     (rep.status == 0 ||
		      (rep.status == -EOPNOTSUPP && strstr(rep.reason, "not offloaded")));
		if (ok && rep.status)
			h->not_offloaded++;
		kb_slot_server_done(h, j->slot, j->gen, ok,
				    rep.reason[0] ? rep.reason : strerror(-rep.status));
	}
	if (ret != -EAGAIN) {
		char why[200];

		snprintf(why, sizeof(why), "ktlshd control connection: %s", strerror(-ret));
		kb_hs_fail_reason(h, why);
		h->fatal = true;
	}
}

static void kb_hs_notify(struct kb_hs *h)
{
	uint32_t msg[256];
	ssize_t n;
	int k;

	while ((n = read(h->srv->notify_rd, msg, sizeof(msg))) > 0) {
		for (k = 0; k < n / (ssize_t)sizeof(msg[0]); k++) {
			int slot = h->port_slot[msg[k] & 0xffff] - 1;

			kb_slot_server_done(h, slot, 0, msg[k] & KB_NOTIFY_OK,
					    h->srv->fail_reason[0] ? h->srv->fail_reason :
								     "server failed");
		}
	}
}

static int kb_hs_setup(struct kb_hs *h)
{
	struct epoll_event ev;
	int ret;

	h->ep = epoll_create1(EPOLL_CLOEXEC);
	h->slots = calloc((size_t)h->nslots, sizeof(*h->slots));
	h->port_slot = calloc(65536, sizeof(*h->port_slot));
	if (h->ep < 0 || !h->slots || !h->port_slot)
		return -ENOMEM;
	h->lfd = -1;
	if (h->t->kind == KB_T_KTLSHD) {
		h->jobs = calloc(65536, sizeof(*h->jobs));
		h->pending = calloc((size_t)h->nslots * 2 + 64, sizeof(*h->pending));
		if (!h->jobs || !h->pending)
			return -ENOMEM;
		ret = ktlsh_client_open(&h->kc, h->ktlshd_path);
		if (ret)
			return ret;
		h->daemon_pid = kb_ktlshd_pid(h->kc);
		h->lfd = kb_listen_loopback(&h->laddr, 4096, true);
		if (h->lfd < 0)
			return h->lfd;
		ev.events = EPOLLIN;
		ev.data.u64 = KB_EV(KB_EV_LISTEN, 0);
		epoll_ctl(h->ep, EPOLL_CTL_ADD, h->lfd, &ev);
		ev.data.u64 = KB_EV(KB_EV_KTLSH, 0);
		epoll_ctl(h->ep, EPOLL_CTL_ADD, ktlsh_client_fd(h->kc), &ev);
	} else if (h->t->kind == KB_T_INPROCESS) {
		ev.events = EPOLLIN;
		ev.data.u64 = KB_EV(KB_EV_NOTIFY, 0);
		epoll_ctl(h->ep, EPOLL_CTL_ADD, h->srv->notify_rd, &ev);
	}
	return 0;
}

static void kb_hs_teardown(struct kb_hs *h)
{
	int i;

	for (i = 0; h->slots && i < h->nslots; i++)
		kb_slot_close(h, i);
	if (h->jobs) {
		for (i = 0; i < 65536; i++)
			if (h->jobs[i].used)
				close(h->jobs[i].fd);
	}
	for (i = 0; i < h->npending; i++)
		close(h->pending[i].fd);
	if (h->t->kind == KB_T_INPROCESS && h->srv) {
		/* drain late notifications so the next run starts clean */
		uint32_t msg[256];

		while (read(h->srv->notify_rd, msg, sizeof(msg)) > 0)
			;
	}
	ktlsh_client_close(h->kc);
	if (h->lfd >= 0)
		close(h->lfd);
	if (h->ep >= 0)
		close(h->ep);
	free(h->slots);
	free(h->port_slot);
	free(h->jobs);
	free(h->pending);
	h->slots = NULL;
	h->port_slot = NULL;
	h->jobs = NULL;
	h->pending = NULL;
}

/*
 * Run the load: nslots clients, each starting a new connection as soon as
 * its last one is done. The measurement window opens after warmup_s and
 * lasts duration_s (or, with max_count, covers the first max_count
 * handshakes); then no new connection starts and the ones in flight get 3 s
 * to finish. Returns 0, or -errno when the run could not happen at all.
 */
static int kb_hs_run(struct kb_hs *h)
{
	struct epoll_event evs[256];
	uint64_t t_start, now, drain_deadline = 0, t_warm, t_end;
	int i, n, ret, timeout;

	kb_hs_current = h;
	ret = kb_hs_setup(h);
	if (ret)
		goto out;
	t_start = kb_now_ns();
	t_warm = t_start + (h->max_count ? 0 : (uint64_t)(h->warmup_s * 1e9));
	t_end = t_warm + (uint64_t)(h->duration_s * 1e9);
	if (h->max_count)
		kb_hs_window_open(h, t_start);
	for (i = 0; i < h->nslots && !h->fatal; i++)
		kb_slot_start(h, i);
	for (;;) {
		now = kb_now_ns();
		if (!h->in_window && !h->window_done && now >= t_warm)
			kb_hs_window_open(h, now);
		if (h->in_window && !h->max_count && now >= t_end)
			kb_hs_window_close(h, now);
		if (h->max_count && h->in_window && now >= t_start + 60000000000ull) {
			kb_hs_fail_reason(h, "no progress in 60 s");
			kb_hs_window_close(h, now);
		}
		if (h->fatal && !h->stopping) {
			if (h->in_window)
				kb_hs_window_close(h, now);
			h->stopping = true;
		}
		if (h->stopping) {
			if (!drain_deadline)
				drain_deadline = now + 3000000000ull;
			if (!h->active || now > drain_deadline)
				break;
		}
		/* client-side deadlines */
		for (i = 0; i < h->nslots; i++) {
			struct kb_slot *s = &h->slots[i];

			if (s->state == KB_S_TICKET && now > s->ticket_deadline) {
				h->no_ticket++;
				kb_slot_client_done(h, i);
			} else if (s->state != KB_S_IDLE && now - s->t0 > KB_HS_TIMEOUT_NS) {
				kb_slot_finish(h, i, false, s->state == KB_S_WAIT_SERVER ?
					       "the server never reported completion (10 s)" :
					       "handshake timed out (10 s)");
			}
		}
		/* refill slots that failed to start (connect error) */
		if (!h->stopping && !h->fatal)
			for (i = 0; i < h->nslots; i++)
				if (h->slots[i].state == KB_S_IDLE)
					kb_slot_start(h, i);
		if (h->npending)
			kb_hs_retry_pending(h);
		timeout = h->npending ? 1 : 20;
		n = epoll_wait(h->ep, evs, 256, timeout);
		for (i = 0; i < n; i++) {
			uint32_t tag = (uint32_t)(evs[i].data.u64 >> 32);
			uint32_t idx = (uint32_t)evs[i].data.u64;

			switch (tag) {
			case KB_EV_SLOT:
				if (h->slots[idx].state == KB_S_HANDSHAKE ||
				    h->slots[idx].state == KB_S_TICKET)
					kb_slot_step(h, (int)idx);
				break;
			case KB_EV_LISTEN:
				kb_hs_accept(h);
				break;
			case KB_EV_KTLSH:
				kb_hs_replies(h);
				break;
			case KB_EV_NOTIFY:
				kb_hs_notify(h);
				break;
			}
		}
	}
	if (!h->window_done)
		kb_hs_window_close(h, kb_now_ns());
out:
	kb_hs_teardown(h);
	kb_hs_current = NULL;
	return ret;
}

/* The AEADs by short name: TLS 1.3 suite, TLS 1.2 ECDSA and RSA ciphers. */
static const struct {
	const char *name;
	const char *tls13, *tls12, *tls12_rsa;
	enum ktlsh_cipher kc;
} kb_bciphers[] = {
	{ "aes128gcm", "TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256",
	  "ECDHE-RSA-AES128-GCM-SHA256", KTLSH_CIPHER_AES_GCM_128 },
	{ "aes256gcm", "TLS_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384",
	  "ECDHE-RSA-AES256-GCM-SHA384", KTLSH_CIPHER_AES_GCM_256 },
	{ "chacha20", "TLS_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
	  "ECDHE-RSA-CHACHA20-POLY1305", KTLSH_CIPHER_CHACHA20_POLY1305 },
	{ "aes128ccm", "TLS_AES_128_CCM_SHA256", "ECDHE-ECDSA-AES128-CCM", NULL,
	  KTLSH_CIPHER_AES_CCM_128 },
};
#define KB_NCIPHERS ((int)(sizeof(kb_bciphers) / sizeof(kb_bciphers[0])))

/* ---- ktls-bench handshake ---- */

struct kb_hs_cfg {
	int target;
	struct kb_suite_req req;
	bool resumed;
};

static struct kb_hs_cfg kb_hs_cfgs[KB_MAX_ROWS];
static struct kb_srv kb_srv_inproc;

static const char *kb_tls_name(int v)
{
	return v == TLS1_3_VERSION ? "1.3" : v == TLS1_2_VERSION ? "1.2" : "?";
}

static int kb_tls_parse(const char *s)
{
	if (!strcmp(s, "1.3") || !strcasecmp(s, "tls1.3") || !strcasecmp(s, "TLSv1.3"))
		return TLS1_3_VERSION;
	if (!strcmp(s, "1.2") || !strcasecmp(s, "tls1.2") || !strcasecmp(s, "TLSv1.2"))
		return TLS1_2_VERSION;
	return 0;
}

static void kb_hs_row_run(struct kb_row *r, const struct kb_hs_cfg *c, int rep)
{
	const struct kb_target *t = &kb_targets[c->target];
	struct kb_hs h = { 0 }, p;
	SSL_SESSION *sess = NULL;
	struct kb_bound b;
	char err[256];
	SSL_CTX *cctx;
	double win_s, srv_us = NAN, cli_us;
	int ret;

	cctx = kb_client_ctx(&c->req, false, err, sizeof(err));
	if (!cctx) {
		kb_row_set(r, KB_NA, "%s", err);
		return;
	}
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT |
					     SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(cctx, kb_new_session_cb);
	if (c->resumed) {
		/* one full handshake for a ticket to resume with */
		memset(&p, 0, sizeof(p));
		p.t = t;
		p.cctx = cctx;
		p.want_ticket = p.capture = true;
		p.nslots = 1;
		p.max_count = 1;
		p.srv = &kb_srv_inproc;
		p.ktlshd_path = t->sock[0] ? t->sock : NULL;
		ret = kb_hs_run(&p);
		free(p.lat_us);
		sess = p.captured;
		if (ret || !p.completed) {
			kb_row_set(r, KB_FAIL, "%s", ret ? strerror(-ret) : p.fail_reason);
			goto out;
		}
		if (!sess) {
			kb_row_set(r, KB_NA, "the server issued no session ticket to resume with");
			goto out;
		}
	}
	memset(&h, 0, sizeof(h));
	h.t = t;
	h.cctx = cctx;
	h.sess = sess;
	h.want_ticket = t->kind == KB_T_HOST;
	h.nslots = o.clients;
	h.max_count = o.count > 0 ? o.count : 0;
	h.warmup_s = o.warmup;
	h.duration_s = o.duration;
	h.srv = &kb_srv_inproc;
	h.ktlshd_path = t->sock[0] ? t->sock : NULL;
	ret = kb_hs_run(&h);
	if (h.captured)
		SSL_SESSION_free(h.captured);
	if (ret) {
		if (t->kind == KB_T_KTLSHD)
			kb_row_set(r, KB_FAIL, "cannot reach ktlshd at %s: %s",
				   ktlsh_client_path(h.ktlshd_path), strerror(-ret));
		else
			kb_row_set(r, KB_FAIL, "%s", strerror(-ret));
		goto out;
	}
	if (!h.completed_win) {
		kb_row_set(r, KB_FAIL, "no handshake completed: %s",
			   h.fail_reason[0] ? h.fail_reason : "(no reason)");
		goto out;
	}
	r->status = KB_OK;
	if (h.failed_win || h.fatal)
		kb_warn("%s %s: %ld of %ld handshakes failed in run %d: %s", t->label,
			c->resumed ? "resumed" : "full", h.failed_win, h.failed_win + h.completed_win,
			rep + 1, h.fail_reason);
	if (c->resumed && h.resumed_win < h.completed_win * 9 / 10)
		kb_warn("%s resumed: only %ld of %ld handshakes resumed in run %d", t->label,
			h.resumed_win, h.completed_win, rep + 1);
	if (h.suite.valid && h.suite.version != c->req.version)
		kb_warn("%s: asked for TLS %s, negotiated %s", t->label, kb_tls_name(c->req.version),
			kb_tls_name(h.suite.version));
	win_s = (double)(h.t_win1 - h.t_win0) / 1e9;
	kb_set(r, rep, "handshakes", "handshakes", "count", 0, 0, (double)h.completed_win);
	kb_set(r, rep, "failed", "failed", "count", 0, 0, (double)h.failed_win);
	kb_set(r, rep, "hs_per_s", "hs/s", "1/s", 0, KB_T | KB_S, h.completed_win / win_s);
	kb_set(r, rep, "lat_p50_us", "p50 µs", "µs", 0, KB_T | KB_S,
	       kb_percentile(h.lat_us, h.nlat, 0.50));
	kb_set(r, rep, "lat_p90_us", "p90 µs", "µs", 0, KB_T, kb_percentile(h.lat_us, h.nlat, 0.90));
	kb_set(r, rep, "lat_p99_us", "p99 µs", "µs", 0, KB_T, kb_percentile(h.lat_us, h.nlat, 0.99));
	kb_set(r, rep, "lat_max_us", "max µs", "µs", 0, KB_T, kb_percentile(h.lat_us, h.nlat, 1.0));
	if (h.srv_cpu0 >= 0 && h.srv_cpu1 > h.srv_cpu0) {
		srv_us = (double)(h.srv_cpu1 - h.srv_cpu0) / 1e3 / (double)h.completed_win;
		kb_set(r, rep, "server_cpu_us", "srv CPU µs/hs", "µs", 1, KB_T | KB_S, srv_us);
		kb_set(r, rep, "hs_per_cpu_s", "hs/srv-CPU-s", "1/s", 0, KB_T, 1e6 / srv_us);
	}
	cli_us = (double)(h.proc_cpu1 - h.proc_cpu0) / 1e3 / (double)h.completed_win;
	if (t->kind == KB_T_INPROCESS && !isnan(srv_us))
		cli_us -= srv_us;
	kb_set(r, rep, "client_cpu_us", "client CPU µs/hs", "µs", 1, 0,
	       cli_us > 0 ? cli_us : NAN);
	if (h.no_ticket)
		kb_set(r, rep, "no_ticket", "no ticket", "count", 0, 0, (double)h.no_ticket);
	if (h.not_offloaded)
		kb_set(r, rep, "not_offloaded", "not offloaded", "count", 0, 0,
		       (double)h.not_offloaded);
	if (h.suite.valid) {
		char neg[160];

		snprintf(neg, sizeof(neg), "TLS %s %s %s %s%s", kb_tls_name(h.suite.version),
			 h.suite.group, h.suite.sig_name, h.suite.cipher,
			 h.suite.resumed ? " resumed" : "");
		if (!kb_param_get(r, "negotiated")[0])
			kb_param(r, "negotiated", false, "%s", neg);
		b = kb_bound_for(&h.suite, rep);
		kb_set(r, rep, "bound_keygen_us", "keygen µs", "µs", 1, 0, b.keygen_us);
		kb_set(r, rep, "bound_derive_us", "derive µs", "µs", 1, 0, b.derive_us);
		if (!h.suite.resumed)
			kb_set(r, rep, "bound_sign_us", "sign µs", "µs", 1, 0, b.sign_us);
		kb_set(r, rep, "bound_us", "bound µs", "µs", 1, KB_T, b.total_us);
		if (b.total_us > 0 && !isnan(srv_us))
			kb_set(r, rep, "cpu_vs_bound", "CPU/bound", "ratio", 2, KB_T | KB_S,
			       srv_us / b.total_us);
	}
out:
	free(h.lat_us);
	if (sess)
		SSL_SESSION_free(sess);
	SSL_CTX_free(cctx);
}

/* Per repeat: each target's handshakes per server CPU-second relative to
 * the first target's in the same configuration. */
static void kb_hs_derive(int rep)
{
	int i, j;

	for (i = 0; i < kb_out.nrows; i++) {
		struct kb_row *r = &kb_out.rows[i];
		const struct kb_hs_cfg *c = r->priv;

		if (!c || c->target == 0 || r->status != KB_OK)
			continue;
		for (j = 0; j < kb_out.nrows; j++) {
			const struct kb_row *f = &kb_out.rows[j];
			const struct kb_hs_cfg *fc = f->priv;

			if (fc->target != 0 || fc->resumed != c->resumed ||
			    fc->req.version != c->req.version || strcmp(fc->req.group, c->req.group) ||
			    strcmp(fc->req.sig, c->req.sig) || strcmp(fc->req.cipher, c->req.cipher))
				continue;
			kb_set(r, rep, "per_core_vs_first", "vs first", "ratio", 2, KB_T,
			       kb_sample(r, "hs_per_cpu_s", rep) / kb_sample(f, "hs_per_cpu_s", rep));
			kb_set(r, rep, "hs_per_s_vs_first", "hs/s vs first", "ratio", 2, 0,
			       kb_sample(r, "hs_per_s", rep) / kb_sample(f, "hs_per_s", rep));
			break;
		}
	}
}

static int kb_cmd_handshake(void)
{
	char tls[4][48], groups[8][48], sigs[4][48], modes[2][48], ciphers[8][48];
	int nt, ng, ns, nm, nc, ti, a, b, c, d, e, i, rep, total, done = 0;
	bool inproc = false, need_rsa = false;

	if (o.duration < 0)
		o.duration = 2;
	if (o.warmup < 0)
		o.warmup = 0.3;
	if (!o.ntargets)
		o.targets[o.ntargets++] = "inprocess";
	nt = kb_split(o.tls ? o.tls : "1.3", tls, 4);
	ng = kb_split(o.groups ? o.groups : "x25519", groups, 8);
	ns = kb_split(o.sigs ? o.sigs : "ecdsa", sigs, 4);
	nm = kb_split(o.modes ? o.modes : "full,resumed", modes, 2);
	nc = kb_split(o.ciphers ? o.ciphers : "default", ciphers, 8);
	for (i = 0; i < o.ntargets; i++) {
		if (kb_target_parse(o.targets[i], &kb_targets[i]) ||
		    kb_targets[i].kind == KB_T_SHIM)
			kb_die("bad --target %s (inprocess, ktlshd[:SOCKET] or HOST:PORT; a server "
			       "under the shim is a HOST:PORT)", o.targets[i]);
		if (kb_targets[i].kind == KB_T_INPROCESS)
			inproc = true;
		if (kb_targets[i].kind == KB_T_HOST && o.server_pids) {
			kb_targets[i].npids = kb_parse_pids(o.server_pids, kb_targets[i].pids,
							    KB_MAX_PIDS);
			if (kb_targets[i].npids <= 0)
				kb_die("bad --server-pid %s", o.server_pids);
		}
	}
	kb_ntargets = o.ntargets;
	for (i = 0; i < ns; i++) {
		if (strcmp(sigs[i], "ecdsa") && strcmp(sigs[i], "rsa") && strcmp(sigs[i], "any"))
			kb_die("bad --sig %s (ecdsa, rsa or any)", sigs[i]);
		if (strcmp(sigs[i], "ecdsa"))
			need_rsa = true;
	}
	for (ti = 0; ti < o.ntargets; ti++) {
		for (a = 0; a < nt; a++) {
			for (b = 0; b < ng; b++) {
				for (c = 0; c < ns; c++) {
					for (d = 0; d < nm; d++) for (e = 0; e < nc; e++) {
						struct kb_row *r = kb_row_new();
						struct kb_hs_cfg *cfg = &kb_hs_cfgs[kb_out.nrows - 1];
						const char *g = kb_group_canon(groups[b]);

						cfg->target = ti;
						cfg->req.version = kb_tls_parse(tls[a]);
						if (!cfg->req.version)
							kb_die("bad --tls %s (1.3 or 1.2)", tls[a]);
						if (strcmp(ciphers[e], "default")) {
							for (i = 0; i < KB_NCIPHERS; i++)
								if (!strcmp(ciphers[e], kb_bciphers[i].name))
									break;
							if (i == KB_NCIPHERS)
								kb_die("bad --cipher %s (default, aes128gcm, aes256gcm, "
								       "chacha20, aes128ccm)", ciphers[e]);
							snprintf(cfg->req.cipher, sizeof(cfg->req.cipher), "%s",
								 cfg->req.version == TLS1_3_VERSION ?
								 kb_bciphers[i].tls13 :
								 strcmp(sigs[c], "rsa") ? kb_bciphers[i].tls12 :
								 kb_bciphers[i].tls12_rsa);
						}
						if (!g)
							kb_die("bad --group %s (x25519, x448, p256, p384, p521)",
							       groups[b]);
						snprintf(cfg->req.group, sizeof(cfg->req.group), "%s", g);
						snprintf(cfg->req.sig, sizeof(cfg->req.sig), "%.15s", sigs[c]);
						if (strcmp(modes[d], "full") && strcmp(modes[d], "resumed"))
							kb_die("bad --mode %s (full or resumed)", modes[d]);
						cfg->resumed = !strcmp(modes[d], "resumed");
						r->priv = cfg;
						kb_param(r, "target", true, "%s", kb_targets[ti].label);
						kb_param(r, "endpoint", false, "%s", kb_targets[ti].spec);
						kb_param(r, "mode", true, "%s", modes[d]);
						kb_param(r, "tls", true, "%s", kb_tls_name(cfg->req.version));
						kb_param(r, "group", true, "%s", g);
						kb_param(r, "sig", true, "%s", sigs[c]);
						kb_param(r, "cipher", nc > 1 || strcmp(ciphers[0], "default"),
							 "%s", ciphers[e]);
						kb_param(r, "clients", false, "%d", o.clients);
					}
				}
			}
		}
	}
	if (inproc) {
		SSL_CTX *sctx;
		int ret;

		kb_ident_load(need_rsa);
		sctx = kb_server_ctx(true, 1);	/* one ticket, as ktlshd sends */
		ret = kb_srv_start(&kb_srv_inproc, sctx, o.server_threads, false);
		if (ret)
			kb_die("cannot start the in-process server: %s", strerror(-ret));
		kb_note("inprocess: %d server thread(s) running libktlsh's handshake engine "
			"(ktlsh_hs_*) on an OpenSSL context set up like ktlshd's; key: %s",
			o.server_threads, kb_ident.desc);
	}
	snprintf(kb_out.title, sizeof(kb_out.title),
		 "ktls-bench handshake: %d clients, %.1f s per run after %.1f s warm-up",
		 o.clients, o.duration, o.warmup);
	kb_note("srv CPU = server CPU time per handshake (inprocess: its threads; ktlshd: "
		"all its threads, /proc/PID/task/*/schedstat; HOST:PORT: --server-pid). "
		"bound = the server's public-key work for the negotiated suite, timed here "
		"(full: keygen + derive + sign; TLS 1.3 resumed: keygen + derive; TLS 1.2 resumed: 0)");
	kb_note_cpu_clock();
	if (o.ntargets > 1)
		kb_note("vs first = handshakes per server CPU-second relative to %s, "
			"same configuration, same repeat", kb_targets[0].label);
	total = kb_out.nrows * o.repeat;
	for (rep = 0; rep < o.repeat; rep++) {
		for (i = 0; i < kb_out.nrows; i++) {
			struct kb_row *r = &kb_out.rows[i];

			done++;
			if (r->status == KB_NA || r->status == KB_FAIL)
				continue;
			kb_progress("[%d/%d] handshake %s %s TLS %s %s %s", done, total,
				    kb_param_get(r, "target"), kb_param_get(r, "mode"),
				    kb_param_get(r, "tls"), kb_param_get(r, "group"),
				    kb_param_get(r, "sig"));
			kb_hs_row_run(r, r->priv, rep);
		}
		kb_hs_derive(rep);
	}
	if (inproc)
		kb_srv_stop(&kb_srv_inproc);
	return 0;
}

/* ---- ktls-bench bulk ---- */

enum kb_bmode {
	KB_M_PLAIN,
	KB_M_PLAIN_SENDFILE,
	KB_M_OPENSSL,
	KB_M_KTLS,
	KB_M_KTLS_SENDFILE,
	KB_M_KTLS_SPLICE,
	KB_M_KTLS_URING,
	KB_M_KTLS_URING_ZC,
	KB_M_SHIM,
	KB_M_COUNT,
};

static const struct {
	const char *name;
	bool tls, ktls, send_only;
	const char *desc;
} kb_bmodes[KB_M_COUNT] = {
	[KB_M_PLAIN] = { "plain", false, false, false, "plaintext TCP, send()/recv()" },
	[KB_M_PLAIN_SENDFILE] = { "plain-sendfile", false, false, true,
				  "plaintext TCP, sendfile() from a memfd" },
	[KB_M_OPENSSL] = { "openssl", true, false, false,
			   "user-space OpenSSL, SSL_write()/SSL_read() on both ends" },
	[KB_M_KTLS] = { "ktls", true, true, false, "kernel TLS, send()/recv()" },
	[KB_M_KTLS_SENDFILE] = { "ktls-sendfile", true, true, true,
				 "kernel TLS, sendfile() from a memfd" },
	[KB_M_KTLS_SPLICE] = { "ktls-splice", true, true, false,
			       "kernel TLS, splice(): memfd -> pipe -> socket, socket -> pipe -> /dev/null" },
	[KB_M_KTLS_URING] = { "ktls-uring", true, true, false,
			      "kernel TLS, io_uring SEND/RECV, one in flight" },
	[KB_M_KTLS_URING_ZC] = { "ktls-uring-zc", true, true, true,
				 "kernel TLS, io_uring SEND_ZC (zero copy), one in flight" },
	[KB_M_SHIM] = { "shim", true, true, false,
			"kernel TLS installed by ktlshd through libktlsh-preload.so: accept() "
			"on a managed listener, then write()/read() through the shim" },
};


/* How one end moves bytes. */
enum kb_io {
	KB_IO_SEND,		/* send() */
	KB_IO_RECV,		/* recv() */
	KB_IO_KTLS_RECV,	/* recv(), control records through ktlsh_recv() */
	KB_IO_SSL_WRITE,
	KB_IO_SSL_READ,
	KB_IO_SENDFILE,
	KB_IO_SPLICE_OUT,	/* memfd -> pipe -> socket */
	KB_IO_SPLICE_IN,	/* socket -> pipe -> /dev/null */
	KB_IO_URING_SEND,
	KB_IO_URING_RECV,
	KB_IO_URING_SEND_ZC,
	KB_IO_WRITE,		/* write(): through the shim's interposer */
	KB_IO_READ,		/* read(): likewise */
};

struct kb_bcfg {
	int mode;
	bool recv_dir;		/* the measured end receives */
	int cipher;		/* index, -1 for plaintext */
	int version;
	size_t size;
};

static struct kb_bcfg kb_bcfgs[KB_MAX_ROWS];

struct kb_bside {
	int fd;
	SSL *ssl;
	bool server;
	enum kb_io io;
	bool ktls_setup;		/* handshake with ktlsh and install */
	SSL_CTX *ctx;
	size_t size;
	/* results */
	uint64_t bytes, t_start, t_end, cpu_ns;
	int err;
	bool na;
	char why[200];
};

struct kb_bpair {
	pthread_barrier_t bar;
	struct kb_bside a, b;		/* a: measured end (client role), b: peer (server role) */
	uint64_t pcpu0;			/* process CPU when the transfer started */
	double duration_s;
	uint64_t max_bytes;
};

static int kb_memfd = -1;
static size_t kb_memfd_size;

static int kb_memfd_setup(size_t want)
{
	size_t size = 16u << 20, off;
	char chunk[65536];

	if (kb_memfd >= 0)
		return 0;
	if (o.max_bytes && o.max_bytes < size)
		size = o.max_bytes;
	if (size < want)
		size = want;
	kb_memfd = memfd_create("ktls-bench", MFD_CLOEXEC);
	if (kb_memfd < 0)
		return -errno;
	for (off = 0; off < sizeof(chunk); off++)
		chunk[off] = (char)('a' + off % 26);
	for (off = 0; off < size;) {
		size_t n = size - off < sizeof(chunk) ? size - off : sizeof(chunk);
		ssize_t w = pwrite(kb_memfd, chunk, n, (off_t)off);

		if (w <= 0)
			return -errno;
		off += (size_t)w;
	}
	kb_memfd_size = size;
	return 0;
}

__attribute__((format(printf, 3, 4)))
static void kb_bside_fail(struct kb_bside *s, int err, const char *fmt, ...)
{
	va_list ap;

	if (s->err)
		return;
	s->err = err ? err : -EIO;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
}

/* TLS set-up of one end: kTLS through libktlsh's engine, or OpenSSL kept
 * in user space. */
static void kb_bside_tls(struct kb_bside *s)
{
	struct ktlsh_hs_params p = { .role = s->server ? KTLSH_ROLE_SERVER : KTLSH_ROLE_CLIENT };
	struct ktlsh_hs_info info;
	int ret, err;

	if (!s->ctx)
		return;
	if (s->ktls_setup) {
		ret = ktlsh_handshake(s->ctx, s->fd, &p, 10000, &info);
		if (ret) {
			kb_bside_fail(s, ret, "%s kTLS set-up: %s", s->server ? "server" : "client",
				      info.reason[0] ? info.reason : strerror(-ret));
			if (ret == -ENOENT || ret == -ENOPROTOOPT || ret == -EOPNOTSUPP)
				s->na = true;
		}
		return;
	}
	s->ssl = SSL_new(s->ctx);
	if (!s->ssl || !SSL_set_fd(s->ssl, s->fd)) {
		kb_bside_fail(s, -ENOMEM, "SSL_new failed");
		return;
	}
	ret = s->server ? SSL_accept(s->ssl) : SSL_connect(s->ssl);
	if (ret != 1) {
		err = SSL_get_error(s->ssl, ret);
		kb_ssl_reason(s->why, sizeof(s->why), s->ssl, err,
			      s->server ? "OpenSSL accept" : "OpenSSL connect");
		s->err = -EPROTO;
	}
}

#ifdef KB_HAVE_URING
static bool kb_uring_has(int op, char *why, size_t len)
{
	struct io_uring_probe *p = io_uring_get_probe();
	bool ok;

	if (!p) {
		snprintf(why, len, "io_uring unavailable (io_uring_setup: %s)", strerror(errno));
		return false;
	}
	ok = io_uring_opcode_supported(p, op);
	io_uring_free_probe(p);
	if (!ok)
		snprintf(why, len, "this kernel's io_uring lacks %s",
			 op == IORING_OP_SEND_ZC ? "IORING_OP_SEND_ZC (6.0+)" : "the operation");
	return ok;
}

/* One operation in flight; returns bytes or -errno. ZC: also reaps the
 * notifications that say a buffer is free again. */
static ssize_t kb_uring_op(struct io_uring *ring, enum kb_io io, int fd, void *buf, size_t len,
			   int *notifs)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	ssize_t res = -EAGAIN;
	bool have = false;
	int ret;

	if (!sqe)
		return -EBUSY;
	if (io == KB_IO_URING_SEND)
		io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
	else if (io == KB_IO_URING_RECV)
		io_uring_prep_recv(sqe, fd, buf, len, 0);
	else
		io_uring_prep_send_zc(sqe, fd, buf, len, MSG_NOSIGNAL, 0);
	sqe->user_data = 1;
	ret = io_uring_submit(ring);
	if (ret < 0)
		return ret;
	while (!have) {
		ret = io_uring_wait_cqe(ring, &cqe);
		if (ret < 0)
			return ret;
		if (cqe->flags & IORING_CQE_F_NOTIF) {
			(*notifs)--;
		} else {
			res = cqe->res;
			have = true;
			if (cqe->flags & IORING_CQE_F_MORE)
				(*notifs)++;
		}
		io_uring_cqe_seen(ring, cqe);
	}
	return res;
}
#endif

static void kb_bside_send(struct kb_bside *s, double duration_s, uint64_t max_bytes, char *buf)
{
	uint64_t deadline = s->t_start + (uint64_t)(duration_s * 1e9);
	off_t off = 0;
	int pipefd[2] = { -1, -1 };
	ssize_t n, m;
	size_t left;
	int err;
#ifdef KB_HAVE_URING
	struct io_uring ring;
	bool ring_up = false;
	int notifs = 0;

	if (s->io == KB_IO_URING_SEND || s->io == KB_IO_URING_SEND_ZC) {
		err = io_uring_queue_init(8, &ring, 0);
		if (err) {
			kb_bside_fail(s, err, "io_uring_queue_init: %s", strerror(-err));
			s->na = true;
			goto out;
		}
		ring_up = true;
	}
#endif
	if (s->io == KB_IO_SPLICE_OUT) {
		if (pipe2(pipefd, O_CLOEXEC) < 0) {
			kb_bside_fail(s, -errno, "pipe: %s", strerror(errno));
			goto out;
		}
		fcntl(pipefd[1], F_SETPIPE_SZ, (int)(s->size > 65536 ? s->size : 65536));
	}
	while (kb_now_ns() < deadline && (!max_bytes || s->bytes < max_bytes)) {
		switch (s->io) {
		case KB_IO_SEND:
			n = send(s->fd, buf, s->size, MSG_NOSIGNAL);
			if (n < 0)
				n = -errno;
			break;
		case KB_IO_WRITE:
			n = write(s->fd, buf, s->size);
			if (n < 0)
				n = -errno;
			break;
		case KB_IO_SSL_WRITE:
			n = SSL_write(s->ssl, buf, (int)s->size);
			if (n <= 0) {
				kb_ssl_reason(s->why, sizeof(s->why), s->ssl,
					      SSL_get_error(s->ssl, (int)n), "SSL_write");
				n = -EPROTO;
			}
			break;
		case KB_IO_SENDFILE:
			if ((size_t)off + s->size > kb_memfd_size)
				off = 0;
			n = sendfile(s->fd, kb_memfd, &off, s->size);
			if (n < 0)
				n = -errno;
			break;
		case KB_IO_SPLICE_OUT:
			if ((size_t)off + s->size > kb_memfd_size)
				off = 0;
			n = splice(kb_memfd, &off, pipefd[1], NULL, s->size, SPLICE_F_MOVE);
			if (n < 0) {
				n = -errno;
				break;
			}
			for (left = (size_t)n; left;) {
				m = splice(pipefd[0], NULL, s->fd, NULL, left, SPLICE_F_MOVE);
				if (m <= 0) {
					n = m < 0 ? -errno : -EPIPE;
					break;
				}
				left -= (size_t)m;
			}
			break;
#ifdef KB_HAVE_URING
		case KB_IO_URING_SEND:
		case KB_IO_URING_SEND_ZC:
			n = kb_uring_op(&ring, s->io, s->fd, buf, s->size, &notifs);
			if (n == -EOPNOTSUPP && !s->bytes && s->io == KB_IO_URING_SEND_ZC) {
				kb_bside_fail(s, (int)n, "IORING_OP_SEND_ZC on a kernel TLS socket: %s "
					      "(kernel %s)", strerror(EOPNOTSUPP), kb_machine.kernel);
				s->na = true;
				goto out;
			}
			break;
#endif
		default:
			n = -EINVAL;
			break;
		}
		if (n < 0) {
			err = (int)n;
			kb_bside_fail(s, err, "send side (%d bytes written): %s",
				      (int)(s->bytes > INT_MAX ? INT_MAX : s->bytes),
				      s->why[0] ? s->why : strerror(-err));
			goto out;
		}
		s->bytes += (uint64_t)n;
	}
out:
#ifdef KB_HAVE_URING
	if (ring_up) {
		struct io_uring_cqe *cqe;

		while (notifs > 0 && !io_uring_wait_cqe(&ring, &cqe)) {
			if (cqe->flags & IORING_CQE_F_NOTIF)
				notifs--;
			io_uring_cqe_seen(&ring, cqe);
		}
		io_uring_queue_exit(&ring);
	}
#endif
	if (pipefd[0] >= 0) {
		close(pipefd[0]);
		close(pipefd[1]);
	}
	/* end of stream: the receiver reads 0 */
	shutdown(s->fd, SHUT_WR);
	s->t_end = kb_now_ns();
}

static void kb_bside_recv(struct kb_bside *s, char *buf)
{
	int pipefd[2] = { -1, -1 }, devnull = -1;
	struct ktlsh_record rec;
	ssize_t n, m;
	size_t left;
	int err;
#ifdef KB_HAVE_URING
	struct io_uring ring;
	bool ring_up = false;
	int notifs = 0;

	if (s->io == KB_IO_URING_RECV) {
		err = io_uring_queue_init(8, &ring, 0);
		if (err) {
			kb_bside_fail(s, err, "io_uring_queue_init: %s", strerror(-err));
			s->na = true;
			goto out;
		}
		ring_up = true;
	}
#endif
	if (s->io == KB_IO_SPLICE_IN) {
		devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (devnull < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
			kb_bside_fail(s, -errno, "pipe: %s", strerror(errno));
			goto out;
		}
		fcntl(pipefd[1], F_SETPIPE_SZ, (int)(s->size > 65536 ? s->size : 65536));
	}
	for (;;) {
		switch (s->io) {
		case KB_IO_RECV:
			n = recv(s->fd, buf, s->size, 0);
			if (n < 0)
				n = -errno;
			break;
		case KB_IO_KTLS_RECV:
			n = ktlsh_recv(s->fd, buf, s->size, 0);
			break;
		case KB_IO_READ:
			n = read(s->fd, buf, s->size);
			if (n < 0)
				n = -errno;
			break;
		case KB_IO_SSL_READ:
			n = SSL_read(s->ssl, buf, (int)s->size);
			if (n <= 0) {
				err = SSL_get_error(s->ssl, (int)n);
				if (err == SSL_ERROR_ZERO_RETURN) {
					n = 0;
					break;
				}
				kb_ssl_reason(s->why, sizeof(s->why), s->ssl, err, "SSL_read");
				n = -EPROTO;
			}
			break;
		case KB_IO_SPLICE_IN:
			n = splice(s->fd, NULL, pipefd[1], NULL, s->size, SPLICE_F_MOVE);
			if (n < 0 && errno == EIO) {
				/* a control record is next: read it the slow way */
				err = ktlsh_recv_control(s->fd, &rec);
				if (err < 0) {
					n = err;
					break;
				}
				if (rec.kind == KTLSH_REC_CLOSE_NOTIFY)
					n = 0;
				else
					continue;
				break;
			}
			if (n < 0) {
				n = -errno;
				break;
			}
			for (left = (size_t)n; left;) {
				m = splice(pipefd[0], NULL, devnull, NULL, left, SPLICE_F_MOVE);
				if (m <= 0) {
					n = -errno;
					break;
				}
				left -= (size_t)m;
			}
			break;
#ifdef KB_HAVE_URING
		case KB_IO_URING_RECV:
			n = kb_uring_op(&ring, s->io, s->fd, buf, s->size, &notifs);
			if (n == -EIO) {
				err = ktlsh_recv_control(s->fd, &rec);
				if (err < 0) {
					n = err;
					break;
				}
				if (rec.kind == KTLSH_REC_CLOSE_NOTIFY)
					n = 0;
				else
					continue;
			}
			break;
#endif
		default:
			n = -EINVAL;
			break;
		}
		if (n == 0)
			break;
		if (n < 0) {
			err = (int)n;
			kb_bside_fail(s, err, "receive side: %s", s->why[0] ? s->why : strerror(-err));
			shutdown(s->fd, SHUT_RDWR);	/* unblock the sender */
			break;
		}
		s->bytes += (uint64_t)n;
	}
out:
#ifdef KB_HAVE_URING
	if (ring_up)
		io_uring_queue_exit(&ring);
#endif
	if (pipefd[0] >= 0) {
		close(pipefd[0]);
		close(pipefd[1]);
	}
	if (devnull >= 0)
		close(devnull);
	s->t_end = kb_now_ns();
}

static bool kb_io_sends(enum kb_io io)
{
	return io == KB_IO_SEND || io == KB_IO_WRITE || io == KB_IO_SSL_WRITE || io == KB_IO_SENDFILE ||
	       io == KB_IO_SPLICE_OUT || io == KB_IO_URING_SEND || io == KB_IO_URING_SEND_ZC;
}

static void kb_bside_run(struct kb_bpair *p, struct kb_bside *s, struct kb_bside *other)
{
	char *buf;
	uint64_t cpu0;
	int r;

	buf = aligned_alloc(4096, (s->size + 4095) & ~(size_t)4095);
	if (buf)
		memset(buf, 'x', s->size);
	else
		kb_bside_fail(s, -ENOMEM, "out of memory");
	if (!s->err)
		kb_bside_tls(s);
	if (s->err)
		shutdown(s->fd, SHUT_RDWR);	/* the other end's handshake ends too */
	r = pthread_barrier_wait(&p->bar);
	(void)r;
	if (s->err || other->err)
		goto out;
	cpu0 = kb_clock_ns(CLOCK_THREAD_CPUTIME_ID);
	if (s == &p->a)
		p->pcpu0 = kb_proc_cpu_ns();
	s->t_start = kb_now_ns();
	if (kb_io_sends(s->io))
		kb_bside_send(s, p->duration_s, p->max_bytes, buf);
	else
		kb_bside_recv(s, buf);
	s->cpu_ns = kb_clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
out:
	free(buf);
}

static void *kb_bpeer_main(void *arg)
{
	struct kb_bpair *p = arg;

	kb_bside_run(p, &p->b, &p->a);
	return NULL;
}

static SSL_CTX *kb_bctx_server[2][2];	/* [ktls][tls13] */

static SSL_CTX *kb_bulk_server_ctx(bool ktls, int version)
{
	SSL_CTX **slot = &kb_bctx_server[ktls][version == TLS1_3_VERSION];

	if (!*slot) {
		*slot = kb_server_ctx(ktls, 0);
		SSL_CTX_set_ciphersuites(*slot, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
					 "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256");
		SSL_CTX_set_cipher_list(*slot, "ECDHE-ECDSA-AES128-GCM-SHA256:"
					"ECDHE-ECDSA-AES256-GCM-SHA384:"
					"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-CCM");
		SSL_CTX_set_max_proto_version(*slot, version);
	}
	return *slot;
}

static void kb_bulk_row_run(struct kb_row *r, const struct kb_bcfg *c, int rep)
{
	struct kb_bpair p;
	struct sockaddr_in addr;
	char why[200];
	bool ktls = kb_bmodes[c->mode].ktls, tls = kb_bmodes[c->mode].tls;
	enum kb_io mine, peer;
	SSL_CTX *cctx = NULL;
	pthread_t th;
	uint64_t pcpu1, recv_bytes, sent_bytes, t_end;
	int lfd, ret;
	double gib, wall;

	if (c->mode == KB_M_SHIM && kb_shim_na()) {
		kb_row_set(r, KB_NA, "%s", kb_shim_na());
		return;
	}
	if (ktls && !kb_have_ktls()) {
		kb_row_set(r, KB_NA, "%s", kb_no_ktls_reason());
		return;
	}
	if (ktls && !ktlsh_kcaps_has(&kb_caps, c->version, kb_bciphers[c->cipher].kc)) {
		kb_row_set(r, KB_NA, "this kernel's TLS lacks %s for TLS %s",
			   ktlsh_cipher_name(kb_bciphers[c->cipher].kc), kb_tls_name(c->version));
		return;
	}
#ifndef KB_HAVE_URING
	if (c->mode == KB_M_KTLS_URING || c->mode == KB_M_KTLS_URING_ZC) {
		kb_row_set(r, KB_NA, "ktls-bench was built without liburing");
		return;
	}
#else
	if ((c->mode == KB_M_KTLS_URING &&
	     !kb_uring_has(c->recv_dir ? IORING_OP_RECV : IORING_OP_SEND, why, sizeof(why))) ||
	    (c->mode == KB_M_KTLS_URING_ZC && !kb_uring_has(IORING_OP_SEND_ZC, why, sizeof(why)))) {
		kb_row_set(r, KB_NA, "%s", why);
		return;
	}
#endif
	switch (c->mode) {
	case KB_M_PLAIN:
		mine = c->recv_dir ? KB_IO_RECV : KB_IO_SEND;
		break;
	case KB_M_PLAIN_SENDFILE:
	case KB_M_KTLS_SENDFILE:
		mine = KB_IO_SENDFILE;
		break;
	case KB_M_OPENSSL:
		mine = c->recv_dir ? KB_IO_SSL_READ : KB_IO_SSL_WRITE;
		break;
	case KB_M_KTLS:
		mine = c->recv_dir ? KB_IO_KTLS_RECV : KB_IO_SEND;
		break;
	case KB_M_KTLS_SPLICE:
		mine = c->recv_dir ? KB_IO_SPLICE_IN : KB_IO_SPLICE_OUT;
		break;
	case KB_M_KTLS_URING:
		mine = c->recv_dir ? KB_IO_URING_RECV : KB_IO_URING_SEND;
		break;
	case KB_M_SHIM:
		mine = c->recv_dir ? KB_IO_READ : KB_IO_WRITE;
		break;
	default:
		mine = KB_IO_URING_SEND_ZC;
		break;
	}
	if (c->mode == KB_M_OPENSSL)
		peer = c->recv_dir ? KB_IO_SSL_WRITE : KB_IO_SSL_READ;
	else if (ktls)
		peer = c->recv_dir ? KB_IO_SEND : KB_IO_KTLS_RECV;
	else
		peer = c->recv_dir ? KB_IO_SEND : KB_IO_RECV;
	if ((mine == KB_IO_SENDFILE || mine == KB_IO_SPLICE_OUT) && (ret = kb_memfd_setup(c->size))) {
		kb_row_set(r, KB_FAIL, "memfd: %s", strerror(-ret));
		return;
	}
	if (tls) {
		struct kb_suite_req req = { .version = c->version, .sig = "ecdsa" };

		snprintf(req.cipher, sizeof(req.cipher), "%s",
			 c->version == TLS1_3_VERSION ? kb_bciphers[c->cipher].tls13 :
							kb_bciphers[c->cipher].tls12);
		cctx = kb_client_ctx(&req, ktls, why, sizeof(why));
		if (!cctx) {
			kb_row_set(r, KB_NA, "%s", why);
			return;
		}
	}
	memset(&p, 0, sizeof(p));
	p.duration_s = o.duration;
	p.max_bytes = o.max_bytes;
	p.a.size = p.b.size = c->size;
	p.a.io = mine;
	p.b.io = peer;
	p.b.server = true;
	p.a.ktls_setup = p.b.ktls_setup = ktls;
	p.a.ctx = cctx;
	p.b.ctx = tls ? kb_bulk_server_ctx(ktls, c->version) : NULL;
	if (c->mode == KB_M_SHIM) {
		/* the peer is the TLS client; this end gets its socket from
		 * accept(), which the shim returns once ktlshd installed kTLS */
		p.a.ctx = NULL;
		p.a.ktls_setup = false;
		p.b.ctx = cctx;
		p.b.server = false;
		lfd = kb_listen_port(&addr, kb_shim_port, 4);
	} else {
		lfd = kb_listen_loopback(&addr, 4, false);
	}
	if (lfd < 0) {
		kb_row_set(r, KB_FAIL, "listen: %s", strerror(-lfd));
		goto out;
	}
	if (c->mode == KB_M_SHIM) {
		p.b.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (p.b.fd < 0 || connect(p.b.fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			kb_row_set(r, KB_FAIL, "connect: %s", strerror(errno));
			close(lfd);
			goto out;
		}
		p.a.fd = -1;
	} else {
		p.a.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (p.a.fd < 0 || connect(p.a.fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			kb_row_set(r, KB_FAIL, "connect: %s", strerror(errno));
			close(lfd);
			goto out;
		}
		p.b.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		close(lfd);
		if (p.b.fd < 0) {
			kb_row_set(r, KB_FAIL, "accept: %s", strerror(errno));
			close(p.a.fd);
			goto out;
		}
	}
	kb_set_nodelay(p.b.fd);
	if (p.a.fd >= 0)
		kb_set_nodelay(p.a.fd);
	pthread_barrier_init(&p.bar, NULL, 2);
	if (pthread_create(&th, NULL, kb_bpeer_main, &p)) {
		kb_row_set(r, KB_FAIL, "pthread_create failed");
		if (p.a.fd >= 0)
			close(p.a.fd);
		close(p.b.fd);
		if (c->mode == KB_M_SHIM)
			close(lfd);
		pthread_barrier_destroy(&p.bar);
		goto out;
	}
	if (c->mode == KB_M_SHIM) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };

		/* the shim reports readiness once the handshake is done */
		if (poll(&pfd, 1, 15000) > 0)
			p.a.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		close(lfd);
		if (p.a.fd < 0)
			kb_bside_fail(&p.a, -errno, "accept through the shim: %s",
				      errno ? strerror(errno) : "timed out");
		else if (!kb_fd_is_ktls(p.a.fd))
			kb_bside_fail(&p.a, -EPROTO, "the accepted socket has no kernel TLS: does "
				      "KTLSH_PRELOAD name 127.0.0.1:%d?", kb_shim_port);
		if (p.a.err) {
			shutdown(p.b.fd, SHUT_RDWR);
			if (p.a.fd < 0)
				p.a.fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		}
	}
	kb_bside_run(&p, &p.a, &p.b);
	pthread_join(th, NULL);
	pthread_barrier_destroy(&p.bar);
	/* process CPU from the start of the transfer to both ends done: both
	 * threads and any io_uring workers are in it */
	pcpu1 = kb_proc_cpu_ns();
	if (p.a.ssl)
		SSL_free(p.a.ssl);
	if (p.b.ssl)
		SSL_free(p.b.ssl);
	close(p.a.fd);
	close(p.b.fd);
	if (p.a.err || p.b.err) {
		struct kb_bside *bad = p.a.err ? &p.a : &p.b;

		if (p.a.err && p.b.err && p.b.na && !p.a.na)
			bad = &p.b;
		kb_row_set(r, bad->na ? KB_NA : KB_FAIL, "%s", bad->why);
		goto out;
	}
	sent_bytes = kb_io_sends(p.a.io) ? p.a.bytes : p.b.bytes;
	recv_bytes = kb_io_sends(p.a.io) ? p.b.bytes : p.a.bytes;
	if (sent_bytes != recv_bytes || !recv_bytes) {
		kb_row_set(r, KB_FAIL, "inconsistent: %llu bytes sent, %llu received",
			   (unsigned long long)sent_bytes, (unsigned long long)recv_bytes);
		goto out;
	}
	r->status = KB_OK;
	t_end = p.a.t_end > p.b.t_end ? p.a.t_end : p.b.t_end;
	wall = (double)(t_end - (p.a.t_start < p.b.t_start ? p.a.t_start : p.b.t_start)) / 1e9;
	gib = (double)recv_bytes / (1024.0 * 1024 * 1024);
	kb_set(r, rep, "bytes", "bytes", "B", 0, 0, (double)recv_bytes);
	kb_set(r, rep, "seconds", "s", "s", 3, 0, wall);
	kb_set(r, rep, "mib_s", "MiB/s", "MiB/s", 0, KB_T | KB_S,
	       (double)recv_bytes / (1024.0 * 1024) / wall);
	/* zero CPU is a run shorter than a tick of a coarse clock: no figure */
	kb_set(r, rep, "cpu_s_gib", "CPU s/GiB", "s/GiB", 3, KB_T | KB_S,
	       pcpu1 > p.pcpu0 ? (double)(pcpu1 - p.pcpu0) / 1e9 / gib : NAN);
	kb_set(r, rep, "side_cpu_s_gib", "this end s/GiB", "s/GiB", 3, KB_T,
	       p.a.cpu_ns ? (double)p.a.cpu_ns / 1e9 / gib : NAN);
	kb_set(r, rep, "peer_cpu_s_gib", "peer s/GiB", "s/GiB", 3, 0,
	       p.b.cpu_ns ? (double)p.b.cpu_ns / 1e9 / gib : NAN);
out:
	SSL_CTX_free(cctx);
}

/* Per repeat: throughput and CPU relative to user-space OpenSSL (same
 * cipher, size and direction) and to plaintext (same size and direction). */
static void kb_bulk_derive(int rep)
{
	int i, j;

	for (i = 0; i < kb_out.nrows; i++) {
		struct kb_row *r = &kb_out.rows[i];
		const struct kb_bcfg *c = r->priv;

		if (r->status != KB_OK)
			continue;
		for (j = 0; j < kb_out.nrows; j++) {
			const struct kb_row *f = &kb_out.rows[j];
			const struct kb_bcfg *fc = f->priv;

			if (f->status != KB_OK || fc->size != c->size || fc->recv_dir != c->recv_dir)
				continue;
			if (fc->mode == KB_M_OPENSSL && c->cipher >= 0 && fc->cipher == c->cipher &&
			    fc->version == c->version) {
				kb_set(r, rep, "tput_vs_openssl", "tput/openssl", "ratio", 2, KB_T,
				       kb_sample(r, "mib_s", rep) / kb_sample(f, "mib_s", rep));
				kb_set(r, rep, "cpu_vs_openssl", "CPU/openssl", "ratio", 2, KB_T,
				       kb_sample(r, "cpu_s_gib", rep) / kb_sample(f, "cpu_s_gib", rep));
			}
			if (fc->mode == KB_M_PLAIN)
				kb_set(r, rep, "cpu_vs_plain", "CPU/plain", "ratio", 2, 0,
				       kb_sample(r, "cpu_s_gib", rep) / kb_sample(f, "cpu_s_gib", rep));
			if (c->mode == KB_M_SHIM && fc->mode == KB_M_KTLS && fc->cipher == c->cipher &&
			    fc->version == c->version) {
				kb_set(r, rep, "tput_vs_ktls", "tput/ktls", "ratio", 3, KB_T,
				       kb_sample(r, "mib_s", rep) / kb_sample(f, "mib_s", rep));
				kb_set(r, rep, "cpu_vs_ktls", "CPU/ktls", "ratio", 3, KB_T,
				       kb_sample(r, "cpu_s_gib", rep) / kb_sample(f, "cpu_s_gib", rep));
			}
		}
	}
}

static int kb_cmd_bulk(void)
{
	char modes[KB_M_COUNT][48], ciphers[8][48], sizes[8][48], dirs[2][48], tls[2][48];
	int nm, nc, ns, nd, nt, a, b, c, d, e, m, i, rep, total, done = 0;
	uint64_t sz;

	if (o.duration < 0)
		o.duration = 1;
	nm = kb_split(o.modes ? o.modes : "plain,plain-sendfile,openssl,ktls,ktls-sendfile,"
				  "ktls-splice,ktls-uring,ktls-uring-zc", modes, KB_M_COUNT);
	nc = kb_split(o.ciphers ? o.ciphers : "aes128gcm,aes256gcm,chacha20", ciphers, 8);
	ns = kb_split(o.sizes ? o.sizes : "16k", sizes, 8);
	nd = kb_split(o.dirs ? o.dirs : "send,recv", dirs, 2);
	nt = kb_split(o.tls ? o.tls : "1.3", tls, 2);
	kb_ident_load(false);
	for (a = 0; a < nm; a++) {
		for (m = 0; m < KB_M_COUNT; m++)
			if (!strcmp(modes[a], kb_bmodes[m].name))
				break;
		if (m == KB_M_COUNT)
			kb_die("bad --mode %s (see --help)", modes[a]);
		for (e = 0; e < (kb_bmodes[m].tls ? nt : 1); e++) {
			for (b = 0; b < (kb_bmodes[m].tls ? nc : 1); b++) {
				for (c = 0; c < ns; c++) {
					for (d = 0; d < nd; d++) {
						struct kb_row *r;
						struct kb_bcfg *cfg;
						char szs[32];

						/* sendfile and SEND_ZC only send */
						if (kb_bmodes[m].send_only && !strcmp(dirs[d], "recv"))
							continue;
						r = kb_row_new();
						cfg = &kb_bcfgs[kb_out.nrows - 1];

						cfg->mode = m;
						cfg->version = kb_tls_parse(tls[e]);
						if (!cfg->version)
							kb_die("bad --tls %s", tls[e]);
						cfg->cipher = -1;
						if (kb_bmodes[m].tls) {
							for (i = 0; i < KB_NCIPHERS; i++)
								if (!strcmp(ciphers[b], kb_bciphers[i].name))
									cfg->cipher = i;
							if (cfg->cipher < 0)
								kb_die("bad --cipher %s (aes128gcm, aes256gcm, "
								       "chacha20, aes128ccm)", ciphers[b]);
						}
						if (kb_parse_size(sizes[c], &sz) || !sz || sz > (64u << 20))
							kb_die("bad --size %s", sizes[c]);
						cfg->size = (size_t)sz;
						if (strcmp(dirs[d], "send") && strcmp(dirs[d], "recv"))
							kb_die("bad --dir %s (send or recv)", dirs[d]);
						cfg->recv_dir = !strcmp(dirs[d], "recv");
						r->priv = cfg;
						kb_fmt_size(szs, sizeof(szs), sz);
						kb_param(r, "mode", true, "%s", kb_bmodes[m].name);
						kb_param(r, "dir", true, "%s", dirs[d]);
						kb_param(r, "tls", true, "%s", kb_bmodes[m].tls ?
							 kb_tls_name(cfg->version) : "-");
						kb_param(r, "cipher", true, "%s", kb_bmodes[m].tls ?
							 kb_bciphers[cfg->cipher].name : "-");
						kb_param(r, "size", true, "%s", szs);
					}
				}
			}
		}
	}
	snprintf(kb_out.title, sizeof(kb_out.title),
		 "ktls-bench bulk: loopback, both ends in this process, %.1f s%s per run",
		 o.duration, o.max_bytes ? " (or --bytes)" : "");
	kb_note("dir send: this end writes with the mode and the peer reads; dir recv: the "
		"peer writes, this end reads with the mode (sendfile and SEND_ZC modes only "
		"send). The peer uses the same TLS (OpenSSL for openssl, kTLS for ktls-*) "
		"with plain send()/recv().");
	kb_note("CPU s/GiB = CPU time of the whole process (both ends, any io_uring "
		"workers) per GiB moved; this end s/GiB = the measured end's thread alone. "
		"On loopback the sender's thread also does the TCP receive processing");
	if (!kb_have_ktls())
		kb_note("kTLS rows: %s", kb_no_ktls_reason());
	kb_note_cpu_clock();
	total = kb_out.nrows * o.repeat;
	for (rep = 0; rep < o.repeat; rep++) {
		for (i = 0; i < kb_out.nrows; i++) {
			struct kb_row *r = &kb_out.rows[i];

			done++;
			if (r->status == KB_NA || r->status == KB_FAIL)
				continue;
			kb_progress("[%d/%d] bulk %s %s %s %s", done, total,
				    kb_param_get(r, "mode"), kb_param_get(r, "dir"),
				    kb_param_get(r, "cipher"), kb_param_get(r, "size"));
			kb_bulk_row_run(r, r->priv, rep);
		}
		kb_bulk_derive(rep);
	}
	return 0;
}

/* ---- ktls-bench handover ---- */

/* A blocking TLS client on its own thread: one connection per "go". */
struct kb_ho_client {
	pthread_t th;
	sem_t go, release, done;
	SSL_CTX *ctx;
	struct sockaddr_in addr;
	_Atomic uint64_t t0;
	atomic_bool stop;
	int fd;
	bool ok;
	char why[200];
};

static void *kb_ho_client_main(void *arg)
{
	struct kb_ho_client *c = arg;
	struct timeval tv = { .tv_sec = 10 };
	SSL *ssl;
	int fd, r;

	for (;;) {
		sem_wait(&c->go);
		if (atomic_load(&c->stop))
			break;
		c->ok = false;
		c->why[0] = '\0';
		ssl = NULL;
		atomic_store(&c->t0, kb_now_ns());
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			snprintf(c->why, sizeof(c->why), "socket: %s", strerror(errno));
			goto wait;
		}
		kb_set_nodelay(fd);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr *)&c->addr, sizeof(c->addr)) < 0) {
			snprintf(c->why, sizeof(c->why), "connect: %s", strerror(errno));
			goto wait;
		}
		ssl = SSL_new(c->ctx);
		if (!ssl || !SSL_set_fd(ssl, fd))
			goto wait;
		if (o.server_name && o.server_name[0])
			SSL_set_tlsext_host_name(ssl, o.server_name);
		ERR_clear_error();
		r = SSL_connect(ssl);
		if (r == 1)
			c->ok = true;
		else
			kb_ssl_reason(c->why, sizeof(c->why), ssl, SSL_get_error(ssl, r),
				      "client handshake");
wait:
		/* keep the connection until the server side is ready */
		sem_wait(&c->release);
		if (fd >= 0) {
			kb_set_linger0(fd);
			SSL_free(ssl);
			close(fd);
		}
		sem_post(&c->done);
	}
	return NULL;
}

/* In-process: libktlsh's engine on this thread, then the kTLS install
 * where the kernel has it. Returns 0 or -errno. */
static int kb_inproc_handshake(SSL_CTX *ctx, int fd, bool install, char *why, size_t len)
{
	struct ktlsh_hs_params p = { .role = KTLSH_ROLE_SERVER };
	struct pollfd pfd = { .fd = fd };
	struct ktlsh_hs *hs = NULL;
	int ret;

	ret = ktlsh_hs_new(&hs, ctx, fd, &p);
	if (ret) {
		snprintf(why, len, "ktlsh_hs_new: %s", strerror(-ret));
		return ret;
	}
	while ((ret = ktlsh_hs_step(hs)) == -EAGAIN) {
		pfd.events = ktlsh_hs_events(hs);
		if (poll(&pfd, 1, 10000) == 0) {
			ret = -ETIMEDOUT;
			break;
		}
	}
	if (!ret && install)
		ret = ktlsh_hs_install(hs);
	if (ret)
		snprintf(why, len, "%s", ktlsh_hs_info(hs)->reason[0] ? ktlsh_hs_info(hs)->reason :
			 strerror(-ret));
	ktlsh_hs_free(hs);
	return ret;
}

struct kb_ho_cfg {
	int target;
};

static struct kb_ho_cfg kb_ho_cfgs[KB_MAX_TARGETS];

static void kb_ho_derive(int rep)
{
	int i, j;

	for (i = 0; i < kb_out.nrows; i++) {
		struct kb_row *r = &kb_out.rows[i];
		const struct kb_ho_cfg *c = r->priv;

		if (r->status != KB_OK || kb_targets[c->target].kind == KB_T_INPROCESS)
			continue;
		for (j = 0; j < kb_out.nrows; j++) {
			const struct kb_row *f = &kb_out.rows[j];
			const struct kb_ho_cfg *fc = f->priv;

			if (f->status != KB_OK || kb_targets[fc->target].kind != KB_T_INPROCESS)
				continue;
			kb_set(r, rep, "delta_p50_us", "Δp50 µs", "µs", 1, KB_T,
			       kb_sample(r, "p50_us", rep) - kb_sample(f, "p50_us", rep));
			kb_set(r, rep, "delta_p90_us", "Δp90 µs", "µs", 1, KB_T,
			       kb_sample(r, "p90_us", rep) - kb_sample(f, "p90_us", rep));
			kb_set(r, rep, "ratio_p50", "p50/inprocess", "ratio", 2, KB_T,
			       kb_sample(r, "p50_us", rep) / kb_sample(f, "p50_us", rep));
			break;
		}
	}
}

static int kb_cmd_handover(void)
{
	struct kb_ho_client cl;
	struct kb_suite_req req = { 0 };
	struct ktlsh_request kreq = { .role = KTLSH_PROTO_ROLE_SERVER, .timeout_ms = 10000 };
	struct ktlsh_proto_reply rep;
	char why[256], gl[1][48];
	double *setup[KB_MAX_TARGETS], *accepted[KB_MAX_TARGETS], *inside[KB_MAX_TARGETS];
	size_t nset[KB_MAX_TARGETS];
	long failed[KB_MAX_TARGETS];
	char fail_why[KB_MAX_TARGETS][256];
	SSL_CTX *sctx = NULL;
	bool install = kb_have_ktls();
	struct sockaddr_in shim_addr, direct_addr;
	int lfd, i, k, rp, ti, warm = 10, ret, shim_lfd = -1;
	long iters;

	if (!o.ntargets) {
		o.targets[o.ntargets++] = "ktlshd";
		o.targets[o.ntargets++] = "inprocess";
	}
	iters = o.count > 0 ? o.count : 200;
	req.version = kb_tls_parse(o.tls ? o.tls : "1.3");
	if (!req.version)
		kb_die("bad --tls %s", o.tls);
	kb_split(o.groups ? o.groups : "x25519", gl, 1);
	if (!kb_group_canon(gl[0]))
		kb_die("bad --group %s", gl[0]);
	snprintf(req.group, sizeof(req.group), "%s", kb_group_canon(gl[0]));
	snprintf(req.sig, sizeof(req.sig), "%s", o.sigs ? o.sigs : "ecdsa");
	kreq.identity = o.identity;
	for (i = 0; i < o.ntargets; i++) {
		struct kb_row *r;

		if (kb_target_parse(o.targets[i], &kb_targets[i]) ||
		    kb_targets[i].kind == KB_T_HOST)
			kb_die("bad --target %s (handover: inprocess, ktlshd[:SOCKET] or shim:PORT)",
			       o.targets[i]);
		r = kb_row_new();
		kb_ho_cfgs[i].target = i;
		r->priv = &kb_ho_cfgs[i];
		kb_param(r, "target", true, "%s", kb_targets[i].label);
		kb_param(r, "endpoint", false, "%s", kb_targets[i].spec);
		kb_param(r, "tls", true, "%s", kb_tls_name(req.version));
		kb_param(r, "group", true, "%s", req.group);
		kb_param(r, "sig", true, "%s", req.sig);
		kb_param(r, "install", true, "%s", install ? "kTLS" : "none");
		if (kb_targets[i].kind == KB_T_SHIM) {
			kb_shim_port = kb_targets[i].port;
			if (kb_shim_na())
				kb_row_set(r, KB_NA, "%s", kb_shim_na());
			shim_lfd = kb_listen_port(&shim_addr, kb_targets[i].port, 64);
			if (!kb_shim_na() && shim_lfd < 0)
				kb_row_set(r, KB_FAIL, "listen on 127.0.0.1:%d: %s", kb_targets[i].port,
					   strerror(-shim_lfd));
		}
		if (kb_targets[i].kind == KB_T_INPROCESS && !sctx) {
			kb_ident_load(strcmp(req.sig, "ecdsa") != 0);
			sctx = kb_server_ctx(true, 1);	/* one ticket, as ktlshd sends */
		}
		setup[i] = calloc((size_t)iters, sizeof(double));
		accepted[i] = calloc((size_t)iters, sizeof(double));
		inside[i] = calloc((size_t)iters, sizeof(double));
		if (!setup[i] || !accepted[i] || !inside[i])
			kb_die("out of memory");
	}
	kb_ntargets = o.ntargets;
	snprintf(kb_out.title, sizeof(kb_out.title),
		 "ktls-bench handover: connection set-up, one at a time, %ld per target per run",
		 iters);
	kb_note("setup = from the client's connect() to the server side holding a ready "
		"socket (the daemon's reply / the in-process handshake and install returned / "
		"the shim's accept() returned); targets alternate connection by connection. "
		"in daemon = the handshake time the daemon reports (from its receipt of the "
		"request to its reply): accept->ready minus that is the hand-over itself");
	if (!install)
		kb_note("install none: %s; run ktlshd with --handshake-only here, and both "
			"sides stop after the handshake (the install is measured in the harness)",
			kb_no_ktls_reason());
	memset(&cl, 0, sizeof(cl));
	cl.ctx = kb_client_ctx(&req, false, why, sizeof(why));
	if (!cl.ctx)
		kb_die("%s", why);
	lfd = kb_listen_loopback(&direct_addr, 64, false);
	if (lfd < 0)
		kb_die("listen: %s", strerror(-lfd));
	sem_init(&cl.go, 0, 0);
	sem_init(&cl.release, 0, 0);
	sem_init(&cl.done, 0, 0);
	if (pthread_create(&cl.th, NULL, kb_ho_client_main, &cl))
		kb_die("pthread_create failed");
	for (rp = 0; rp < o.repeat; rp++) {
		memset(nset, 0, sizeof(nset));
		memset(failed, 0, sizeof(failed));
		memset(fail_why, 0, sizeof(fail_why));
		for (k = 0; k < iters + warm; k++) {
			for (i = 0; i < o.ntargets; i++) {
				/* alternate the order so neither always goes first */
				struct pollfd pfd = { .fd = lfd, .events = POLLIN };
				struct kb_row *r;
				uint64_t t_acc, t_ready, daemon_us = 0;
				int fd;
				bool ok;

				ti = k % 2 ? o.ntargets - 1 - i : i;
				r = &kb_out.rows[ti];
				if (r->status == KB_NA || r->status == KB_FAIL)
					continue;
				if (!(k % 20))
					kb_progress("[run %d/%d] handover %d/%ld", rp + 1, o.repeat, k,
						    iters + warm);
				cl.addr = kb_targets[ti].kind == KB_T_SHIM ? shim_addr : direct_addr;
				if (kb_targets[ti].kind == KB_T_SHIM)
					pfd.fd = shim_lfd;
				sem_post(&cl.go);
				/* the shim's listener is readable once a handshake is done */
				if (poll(&pfd, 1, 15000) <= 0)
					kb_die("handover: no connection to accept on %s",
					       kb_targets[ti].spec);
				fd = accept4(pfd.fd, NULL, NULL, SOCK_CLOEXEC);
				t_acc = kb_now_ns();
				if (fd < 0)
					kb_die("accept: %s", strerror(errno));
				why[0] = '\0';
				if (kb_targets[ti].kind == KB_T_SHIM) {
					ok = kb_fd_is_ktls(fd);
					if (!ok)
						snprintf(why, sizeof(why), "the accepted socket has no "
							 "kernel TLS: does KTLSH_PRELOAD name 127.0.0.1:%d?",
							 kb_targets[ti].port);
				} else if (kb_targets[ti].kind == KB_T_KTLSHD) {
					ret = ktlsh_handshake_fd(kb_targets[ti].sock[0] ?
								 kb_targets[ti].sock : NULL,
								 fd, &kreq, &rep);
					ok = !ret || (ret == -EOPNOTSUPP &&
						      strstr(rep.reason, "not offloaded"));
					daemon_us = rep.type ? rep.handshake_us : 0;
					if (!ok && !rep.type)
						snprintf(why, sizeof(why), "cannot reach ktlshd at %s: %s",
							 ktlsh_client_path(kb_targets[ti].sock[0] ?
									   kb_targets[ti].sock : NULL),
							 strerror(-ret));
					else if (!ok)
						snprintf(why, sizeof(why), "ktlshd: %.240s", rep.reason[0] ?
							 rep.reason : strerror(-ret));
				} else {
					ret = kb_inproc_handshake(sctx, fd, install, why, sizeof(why));
					ok = !ret;
				}
				t_ready = kb_now_ns();
				if (!ok)
					shutdown(fd, SHUT_RDWR);
				sem_post(&cl.release);
				sem_wait(&cl.done);
				close(fd);
				if (ok && !cl.ok) {
					ok = false;
					snprintf(why, sizeof(why), "%s", cl.why);
				}
				if (!ok) {
					failed[ti]++;
					if (!fail_why[ti][0])
						snprintf(fail_why[ti], sizeof(fail_why[ti]), "%s", why);
					if (failed[ti] >= 10 && !nset[ti]) {
						kb_row_set(r, KB_FAIL, "%s", fail_why[ti]);
					}
					continue;
				}
				if (k < warm)
					continue;
				setup[ti][nset[ti]] = (double)(t_ready - atomic_load(&cl.t0)) / 1e3;
				accepted[ti][nset[ti]] = (double)(t_ready - t_acc) / 1e3;
				inside[ti][nset[ti]] = (double)daemon_us;
				nset[ti]++;
			}
		}
		for (ti = 0; ti < o.ntargets; ti++) {
			struct kb_row *r = &kb_out.rows[ti];
			double sum = 0;
			size_t n = nset[ti];

			if (r->status == KB_NA || r->status == KB_FAIL)
				continue;
			if (!n) {
				kb_row_set(r, KB_FAIL, "%s", fail_why[ti]);
				continue;
			}
			r->status = KB_OK;
			if (failed[ti])
				kb_warn("%s: %ld of %ld connections failed in run %d: %s",
					kb_targets[ti].label, failed[ti], failed[ti] + (long)n, rp + 1,
					fail_why[ti]);
			for (size_t j = 0; j < n; j++)
				sum += setup[ti][j];
			kb_set(r, rp, "count", "n", "count", 0, 0, (double)n);
			kb_set(r, rp, "mean_us", "mean µs", "µs", 1, 0, sum / (double)n);
			kb_set(r, rp, "p50_us", "p50 µs", "µs", 1, KB_T | KB_S,
			       kb_percentile(setup[ti], n, 0.5));
			kb_set(r, rp, "p90_us", "p90 µs", "µs", 1, KB_T,
			       kb_percentile(setup[ti], n, 0.9));
			kb_set(r, rp, "p99_us", "p99 µs", "µs", 1, KB_T,
			       kb_percentile(setup[ti], n, 0.99));
			kb_set(r, rp, "max_us", "max µs", "µs", 1, 0, kb_percentile(setup[ti], n, 1.0));
			kb_set(r, rp, "accept_p50_us", "accept→ready p50 µs", "µs", 1, KB_T,
			       kb_percentile(accepted[ti], n, 0.5));
			if (kb_targets[ti].kind == KB_T_KTLSHD)
				kb_set(r, rp, "daemon_p50_us", "in daemon p50 µs", "µs", 1, KB_T,
				       kb_percentile(inside[ti], n, 0.5));
		}
		kb_ho_derive(rp);
	}
	atomic_store(&cl.stop, true);
	sem_post(&cl.go);
	pthread_join(cl.th, NULL);
	close(lfd);
	if (shim_lfd >= 0)
		close(shim_lfd);
	SSL_CTX_free(cl.ctx);
	SSL_CTX_free(sctx);
	ktlsh_pool_flush();
	for (i = 0; i < o.ntargets; i++) {
		free(setup[i]);
		free(accepted[i]);
		free(inside[i]);
	}
	return 0;
}

/* ---- ktls-bench memory ---- */

/* A ClientHello for cctx, made with memory BIOs: the same bytes go to every
 * connection (a server does the full work for each). */
static int kb_client_hello(SSL_CTX *cctx, unsigned char **out, size_t *len)
{
	SSL *ssl = SSL_new(cctx);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int ret = -ENOMEM;

	if (!ssl || !rb || !wb)
		goto out;
	SSL_set_bio(ssl, rb, wb);
	rb = wb = NULL;
	SSL_set_connect_state(ssl);
	if (o.server_name && o.server_name[0])
		SSL_set_tlsext_host_name(ssl, o.server_name);
	(void)SSL_do_handshake(ssl);
	n = BIO_get_mem_data(SSL_get_wbio(ssl), &data);
	ret = -EPROTO;
	if (n <= 0)
		goto out;
	*out = malloc((size_t)n);
	if (!*out) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(*out, data, (size_t)n);
	*len = (size_t)n;
	ret = 0;
out:
	ERR_clear_error();
	BIO_free(rb);
	BIO_free(wb);
	SSL_free(ssl);
	return ret;
}

static long kb_ktlshd_inflight(const char *path)
{
	struct ktlsh_proto_status *st = malloc(sizeof(*st));
	long v = -1;
	unsigned i;

	if (!st)
		return -1;
	if (!ktlsh_status(path, st))
		for (i = 0; i < st->n_items; i++)
			if (!strcmp(st->items[i].key, "handshakes.inflight"))
				v = atol(st->items[i].value);
	free(st);
	return v;
}

struct kb_mem_cfg {
	int target;
	bool mid;
};

static struct kb_mem_cfg kb_mem_cfgs[KB_MAX_ROWS];

static void kb_sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void kb_mem_row_run(struct kb_row *r, const struct kb_mem_cfg *c, int rep, SSL_CTX *cctx,
			   const unsigned char *hello, size_t hello_len)
{
	const struct kb_target *t = &kb_targets[c->target];
	const char *path = t->sock[0] ? t->sock : NULL;
	struct ktlsh_request kreq = { .role = KTLSH_PROTO_ROLE_SERVER, .identity = o.identity,
				      .timeout_ms = 60000 };
	struct ktlsh_client *kc = NULL;
	struct ktlsh_proto_reply rep_msg;
	struct sockaddr_in laddr;
	const struct sockaddr *dst;
	socklen_t dlen;
	pid_t pids[KB_MAX_PIDS];
	int npids = 0, lfd = -1, *cfd = NULL, *sfd = NULL, ret;
	long n = o.count > 0 ? o.count : 2000, opened = 0, i, inflight, rss0, rss1, rss2, replies = 0;
	/* let the server settle before reading its RSS; less for a smoke test */
	int settle_ms = n >= 500 ? 300 : 60;
	uint64_t deadline;
	struct kb_hs warm;

	/* warm up the server's allocator and OpenSSL's lazy state first */
	memset(&warm, 0, sizeof(warm));
	warm.t = t;
	warm.cctx = cctx;
	warm.nslots = 4;
	warm.max_count = n >= 500 ? 40 : 8;
	warm.ktlshd_path = path;
	ret = kb_hs_run(&warm);
	free(warm.lat_us);
	if (ret || !warm.completed) {
		kb_row_set(r, KB_FAIL, "warm-up handshakes failed: %s",
			   ret ? strerror(-ret) : warm.fail_reason);
		return;
	}
	if (t->kind == KB_T_KTLSHD) {
		ret = ktlsh_client_open(&kc, path);
		if (ret) {
			kb_row_set(r, KB_FAIL, "cannot reach ktlshd at %s: %s", ktlsh_client_path(path),
				   strerror(-ret));
			return;
		}
		pids[npids++] = kb_ktlshd_pid(kc);
		lfd = kb_listen_loopback(&laddr, 4096, false);
		if (lfd < 0) {
			kb_row_set(r, KB_FAIL, "listen: %s", strerror(-lfd));
			goto out;
		}
		dst = (const struct sockaddr *)&laddr;
		dlen = sizeof(laddr);
	} else {
		memcpy(pids, t->pids, sizeof(pids));
		npids = t->npids;
		dst = (const struct sockaddr *)&t->addr;
		dlen = t->alen;
	}
	cfd = calloc((size_t)n, sizeof(int));
	sfd = calloc((size_t)n, sizeof(int));
	if (!cfd || !sfd) {
		kb_row_set(r, KB_FAIL, "out of memory");
		goto out;
	}
	kb_sleep_ms(settle_ms);
	rss0 = kb_pids_rss_kib(pids, npids);
	if (rss0 < 0) {
		kb_row_set(r, KB_FAIL, "cannot read the server's RSS");
		goto out;
	}
	for (i = 0; i < n; i++) {
		cfd[i] = socket(dst->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (cfd[i] < 0 || connect(cfd[i], dst, dlen) < 0) {
			kb_row_set(r, KB_FAIL, "connection %ld: %s", i, strerror(errno));
			if (cfd[i] >= 0)
				close(cfd[i]);
			goto close;
		}
		kb_set_linger0(cfd[i]);
		kb_set_nodelay(cfd[i]);
		opened = i + 1;
		sfd[i] = -1;
		if (kc) {
			sfd[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (sfd[i] < 0) {
				kb_row_set(r, KB_FAIL, "accept: %s", strerror(errno));
				goto close;
			}
			kb_set_linger0(sfd[i]);
			while ((ret = ktlsh_submit(kc, sfd[i], &kreq, NULL)) == -EAGAIN) {
				struct pollfd pfd = { .fd = ktlsh_client_fd(kc), .events = POLLOUT };

				poll(&pfd, 1, 100);
			}
			if (ret) {
				kb_row_set(r, KB_FAIL, "ktlsh_submit: %s", strerror(-ret));
				goto close;
			}
		}
		if (c->mid && send(cfd[i], hello, hello_len, MSG_NOSIGNAL) != (ssize_t)hello_len) {
			kb_row_set(r, KB_FAIL, "sending the ClientHello: %s", strerror(errno));
			goto close;
		}
		if (!(i % 250))
			kb_progress("memory %s %s: %ld/%ld connections", t->spec,
				    c->mid ? "mid" : "silent", i, n);
	}
	/* wait until the server holds them all in the state asked for */
	deadline = kb_now_ns() + 30000000000ull;
	if (c->mid) {
		for (i = 0; i < n && kb_now_ns() < deadline;) {
			int avail = 0;

			if (ioctl(cfd[i], FIONREAD, &avail) == 0 && avail > 0)
				i++;
			else
				kb_sleep_ms(5);
		}
		if (i < n) {
			kb_row_set(r, KB_FAIL, "the server answered only %ld of %ld ClientHellos in 30 s",
				   i, n);
			goto close;
		}
	}
	if (kc) {
		while ((inflight = kb_ktlshd_inflight(path)) < n && kb_now_ns() < deadline)
			kb_sleep_ms(20);
		if (inflight < n) {
			kb_row_set(r, KB_FAIL, "ktlshd holds %ld of %ld handshakes (max_inflight?)",
				   inflight, n);
			goto close;
		}
	} else if (!c->mid) {
		kb_sleep_ms(4 * settle_ms);	/* nothing to observe: give it time to accept */
	}
	kb_sleep_ms(settle_ms);
	rss1 = kb_pids_rss_kib(pids, npids);
	r->status = KB_OK;
	kb_set(r, rep, "connections", "n", "count", 0, 0, (double)n);
	kb_set(r, rep, "rss_before_kib", "RSS before KiB", "KiB", 0, KB_T, (double)rss0);
	kb_set(r, rep, "rss_inflight_kib", "RSS in flight KiB", "KiB", 0, KB_T, (double)rss1);
	kb_set(r, rep, "kib_per_hs", "KiB/handshake", "KiB", 1, KB_T | KB_S,
	       (double)(rss1 - rss0) / (double)n);
close:
	for (i = 0; i < opened; i++) {
		close(cfd[i]);
		if (sfd[i] >= 0)
			close(sfd[i]);
	}
	if (kc) {
		/* every handshake ends (peer reset) and is answered */
		deadline = kb_now_ns() + 20000000000ull;
		while (replies < opened && kb_now_ns() < deadline) {
			struct pollfd pfd = { .fd = ktlsh_client_fd(kc), .events = POLLIN };

			if (poll(&pfd, 1, 100) > 0) {
				while ((ret = ktlsh_complete(kc, &rep_msg)) == 0)
					replies++;
				if (ret != -EAGAIN)
					break;
			}
		}
	} else {
		kb_sleep_ms(2 * settle_ms);
	}
	if (r->status == KB_OK) {
		kb_sleep_ms(settle_ms);
		rss2 = kb_pids_rss_kib(pids, npids);
		kb_set(r, rep, "rss_after_kib", "RSS after KiB", "KiB", 0, KB_T, (double)rss2);
	}
out:
	free(cfd);
	free(sfd);
	if (lfd >= 0)
		close(lfd);
	ktlsh_client_close(kc);
}

static int kb_cmd_memory(void)
{
	char states[2][48], gl[1][48];
	struct kb_suite_req req = { 0 };
	unsigned char *hello = NULL;
	size_t hello_len = 0;
	SSL_CTX *cctx;
	char why[256];
	int ns, i, s, rep;

	if (!o.ntargets)
		o.targets[o.ntargets++] = "ktlshd";
	ns = kb_split(o.states ? o.states : "silent,mid", states, 2);
	req.version = kb_tls_parse(o.tls ? o.tls : "1.3");
	if (!req.version)
		kb_die("bad --tls %s", o.tls);
	kb_split(o.groups ? o.groups : "x25519", gl, 1);
	if (!kb_group_canon(gl[0]))
		kb_die("bad --group %s", gl[0]);
	snprintf(req.group, sizeof(req.group), "%s", kb_group_canon(gl[0]));
	snprintf(req.sig, sizeof(req.sig), "%s", o.sigs ? o.sigs : "ecdsa");
	cctx = kb_client_ctx(&req, false, why, sizeof(why));
	if (!cctx)
		kb_die("%s", why);
	if (kb_client_hello(cctx, &hello, &hello_len))
		kb_die("cannot make a ClientHello");
	for (i = 0; i < o.ntargets; i++) {
		if (kb_target_parse(o.targets[i], &kb_targets[i]) ||
		    kb_targets[i].kind == KB_T_INPROCESS || kb_targets[i].kind == KB_T_SHIM)
			kb_die("bad --target %s (memory: ktlshd[:SOCKET] or HOST:PORT with "
			       "--server-pid)", o.targets[i]);
		if (kb_targets[i].kind == KB_T_HOST) {
			if (!o.server_pids)
				kb_die("memory --target %s needs --server-pid", o.targets[i]);
			kb_targets[i].npids = kb_parse_pids(o.server_pids, kb_targets[i].pids,
							    KB_MAX_PIDS);
			if (kb_targets[i].npids <= 0)
				kb_die("bad --server-pid %s", o.server_pids);
		}
		for (s = 0; s < ns; s++) {
			struct kb_row *r = kb_row_new();
			struct kb_mem_cfg *c = &kb_mem_cfgs[kb_out.nrows - 1];

			if (strcmp(states[s], "silent") && strcmp(states[s], "mid"))
				kb_die("bad --state %s (silent or mid)", states[s]);
			c->target = i;
			c->mid = !strcmp(states[s], "mid");
			r->priv = c;
			kb_param(r, "target", true, "%s", kb_targets[i].label);
			kb_param(r, "endpoint", false, "%s", kb_targets[i].spec);
			kb_param(r, "state", true, "%s", states[s]);
			kb_param(r, "tls", true, "%s", kb_tls_name(req.version));
			kb_param(r, "group", true, "%s", req.group);
		}
	}
	kb_ntargets = o.ntargets;
	snprintf(kb_out.title, sizeof(kb_out.title),
		 "ktls-bench memory: server RSS with %ld handshakes in flight",
		 o.count > 0 ? o.count : 2000);
	kb_note("silent: connected, nothing sent; mid: ClientHello sent and the server's "
		"flight received, Finished withheld (the server holds keys, transcript and "
		"buffers). KiB/handshake = (RSS in flight - RSS before) / n, RSS = VmRSS of "
		"the server's processes; RSS after = once every connection was reset");
	for (rep = 0; rep < o.repeat; rep++)
		for (i = 0; i < kb_out.nrows; i++) {
			struct kb_row *r = &kb_out.rows[i];

			if (r->status == KB_NA || r->status == KB_FAIL)
				continue;
			kb_mem_row_run(r, r->priv, rep, cctx, hello, hello_len);
		}
	/* freed memory stays in the server's heap and is reused: a later row
	 * then looks cheaper than it is */
	for (i = 1; i < kb_out.nrows; i++) {
		const struct kb_row *r = &kb_out.rows[i];
		const struct kb_mem_cfg *c = r->priv;
		double first = NAN;
		int j;

		for (j = 0; j < i && isnan(first); j++)
			if (((const struct kb_mem_cfg *)kb_out.rows[j].priv)->target == c->target)
				first = kb_sample(&kb_out.rows[j], "rss_before_kib", 0);
		if (!isnan(first) && kb_sample(r, "rss_before_kib", 0) > first * 1.1 + 1024)
			kb_warn("%s %s: the server's RSS before this row (%.0f KiB) still holds "
				"memory from the one before (%.0f KiB at the start): its heap reuses "
				"it, so this row reads low. Measure each --state against a freshly "
				"started server (scripts/bench does)", kb_param_get(r, "target"),
				kb_param_get(r, "state"), kb_sample(r, "rss_before_kib", 0), first);
	}
	free(hello);
	SSL_CTX_free(cctx);
	return 0;
}

/* ---- ktls-bench crypto ---- */

static int kb_cmd_crypto(void)
{
	char groups[8][48], sigs[4][48];
	int ng, ns, i, rep;

	ng = kb_split(o.groups ? o.groups : "x25519,p256", groups, 8);
	ns = kb_split(o.sigs ? o.sigs : "ecdsa,rsa", sigs, 4);
	for (i = 0; i < ng; i++) {
		struct kb_row *r = kb_row_new();

		if (!kb_group_canon(groups[i]))
			kb_die("bad --group %s", groups[i]);
		kb_param(r, "operation", true, "%s keygen + derive", kb_group_canon(groups[i]));
		kb_param(r, "kind", false, "kex");
		kb_param(r, "name", false, "%s", kb_group_canon(groups[i]));
	}
	for (i = 0; i < ns; i++) {
		struct kb_row *r = kb_row_new();

		if (strcmp(sigs[i], "ecdsa") && strcmp(sigs[i], "rsa"))
			kb_die("bad --sig %s (ecdsa or rsa)", sigs[i]);
		kb_param(r, "operation", true, "%s sign", !strcmp(sigs[i], "ecdsa") ?
			 "ECDSA P-256 SHA-256" : "RSA-2048 PSS SHA-256");
		kb_param(r, "kind", false, "sig");
		kb_param(r, "name", false, "%s", sigs[i]);
	}
	snprintf(kb_out.title, sizeof(kb_out.title),
		 "ktls-bench crypto: CPU per operation, EVP, contexts reused (openssl speed style)");
	for (rep = 0; rep < o.repeat; rep++) {
		for (i = 0; i < kb_out.nrows; i++) {
			struct kb_row *r = &kb_out.rows[i];

			kb_progress("[%d/%d] crypto %s", rep * kb_out.nrows + i + 1,
				    o.repeat * kb_out.nrows, kb_param_get(r, "operation"));
			if (!strcmp(kb_param_get(r, "kind"), "kex")) {
				double kg, dv;

				if (kb_bound_kex(kb_param_get(r, "name"), &kg, &dv)) {
					kb_row_set(r, KB_NA, "OpenSSL cannot do %s here",
						   kb_param_get(r, "name"));
					continue;
				}
				r->status = KB_OK;
				kb_set(r, rep, "keygen_us", "keygen µs", "µs", 1, KB_T | KB_S, kg);
				kb_set(r, rep, "derive_us", "derive µs", "µs", 1, KB_T | KB_S, dv);
				kb_set(r, rep, "us", "total µs", "µs", 1, KB_T, kg + dv);
				kb_set(r, rep, "ops_s", "ops/s", "1/s", 0, KB_T, 1e6 / (kg + dv));
			} else {
				bool rsa = !strcmp(kb_param_get(r, "name"), "rsa");
				struct kb_suite s = { .key_type = rsa ? EVP_PKEY_RSA : EVP_PKEY_EC,
						      .key_bits = rsa ? 2048 : 256 };
				EVP_PKEY *k;
				double us;

				if (!rsa)
					snprintf(s.key_group, sizeof(s.key_group), "P-256");
				k = kb_sign_key_like(&s);
				us = k ? kb_bound_sign(k, rsa ? EVP_PKEY_RSA_PSS : EVP_PKEY_EC,
						       NID_sha256) : NAN;
				if (isnan(us)) {
					kb_row_set(r, KB_NA, "cannot sign with %s", kb_param_get(r, "name"));
					continue;
				}
				r->status = KB_OK;
				kb_set(r, rep, "sign_us", "sign µs", "µs", 1, KB_T | KB_S, us);
				kb_set(r, rep, "us", "total µs", "µs", 1, KB_T, us);
				kb_set(r, rep, "ops_s", "ops/s", "1/s", 0, KB_T, 1e6 / us);
			}
		}
	}
	kb_note("a full handshake's bound is the group's keygen + derive plus one signature");
	return 0;
}

/* ---- main ---- */

static void kb_usage(FILE *f)
{
	fprintf(f,
"usage: ktls-bench COMMAND [OPTIONS]\n"
"\n"
"Commands:\n"
"  handshake  full and resumed handshakes/s, latency p50/p90/p99/max, server CPU\n"
"             per handshake and the crypto bound beside it\n"
"  bulk       throughput and CPU per GiB: plaintext, user-space OpenSSL, kTLS with\n"
"             send/recv, sendfile, splice, io_uring (SEND_ZC too); per cipher, size\n"
"             and direction, over loopback with both ends in this process\n"
"  handover   connection set-up latency through ktlshd (libktlsh) against an\n"
"             in-process OpenSSL handshake + kTLS install\n"
"  memory     server memory per handshake in flight (RSS delta over N connections)\n"
"  crypto     the crypto bound alone: key exchange and signature costs\n"
"\n"
"Output and repeats (all commands):\n"
"  --json               JSON on stdout instead of the table\n"
"  --markdown           the table as Markdown\n"
"  --json-file FILE     also write the JSON to FILE\n"
"  -r, --repeat N       run every configuration N times, in turn; report the\n"
"                       median and spread, warn when a spread exceeds 10%%\n"
"  -q, --quiet          no progress line (it only goes to a terminal anyway)\n"
"\n"
"Handshake, handover, memory:\n"
"  -t, --target [LABEL=]T  inprocess | ktlshd[:SOCKET] | HOST:PORT | shim:PORT\n"
"                       (repeatable; handshake defaults to inprocess, handover\n"
"                       to ktlshd and inprocess, memory to ktlshd; shim:PORT is\n"
"                       for handover under libktlsh-preload.so)\n"
"      --server-pid P[,P]  processes whose CPU (handshake) and RSS (memory) count\n"
"                       as a HOST:PORT server's (e.g. nginx's workers)\n"
"      --tls LIST       1.3, 1.2 (default 1.3)\n"
"      --group LIST     x25519, p256, p384, x448, p521 (default x25519)\n"
"      --sig LIST       ecdsa, rsa, any: the server certificate the client's\n"
"                       signature algorithms select (default ecdsa)\n"
"      --mode LIST      handshake: full, resumed (default both); bulk: see below\n"
"  -c, --clients N      concurrent clients (handshake; default 8)\n"
"      --cipher LIST    handshake: what the client offers: default (OpenSSL's\n"
"                       client list), aes128gcm, aes256gcm, chacha20\n"
"  -d, --duration S     seconds per run (handshake 2, bulk 1)\n"
"  -w, --warmup S       seconds before the handshake window opens (0.3)\n"
"  -n, --count N        handshake: stop after N handshakes instead of by time;\n"
"                       handover: connections per target per run (200);\n"
"                       memory: connections held (2000)\n"
"      --server-name N  SNI sent by the clients (default localhost)\n"
"      --identity ID    ktlshd identity to request\n"
"      --server-threads N  in-process server threads (default 1)\n"
"      --cert F --key F the in-process server's certificate chain and key (PEM);\n"
"                       default: generated ECDSA P-256 (+ RSA-2048 for --sig rsa)\n"
"      --state LIST     memory: silent, mid (default both)\n"
"      --bound-time S   CPU seconds per crypto operation timed (default 0.2)\n"
"\n"
"Bulk:\n"
"      --mode LIST      plain, plain-sendfile, openssl, ktls, ktls-sendfile,\n"
"                       ktls-splice, ktls-uring, ktls-uring-zc (default: these),\n"
"                       shim (under libktlsh-preload.so, with --shim-port)\n"
"      --shim-port P    the 127.0.0.1 port KTLSH_PRELOAD names (mode shim)\n"
"      --cipher LIST    aes128gcm, aes256gcm, chacha20, aes128ccm\n"
"                       (default aes128gcm,aes256gcm,chacha20)\n"
"      --size LIST      bytes per write/read, e.g. 4k,16k,64k (default 16k)\n"
"      --dir LIST       send, recv (default both)\n"
"      --tls LIST       1.3, 1.2 (default 1.3)\n"
"      --bytes N        stop a run after N bytes (e.g. 16M) even before --duration\n"
"\n"
"Modes that need kernel TLS print n/a and why when this kernel has none.\n"
"See ktls-bench(1).\n");
}

enum {
	KB_O_JSON = 256, KB_O_MARKDOWN, KB_O_TLS, KB_O_GROUP, KB_O_SIG, KB_O_MODE,
	KB_O_SERVER_PID, KB_O_SERVER_NAME, KB_O_IDENTITY, KB_O_SERVER_THREADS, KB_O_CERT,
	KB_O_KEY, KB_O_CIPHER, KB_O_SIZE, KB_O_DIR, KB_O_BYTES, KB_O_STATE, KB_O_BOUND_TIME,
	KB_O_SHIM_PORT, KB_O_JSON_FILE,
};

/* Which commands take each option. */
static const struct {
	int val;
	unsigned cmds;
} kb_opt_cmds[] = {
	{ 't', KB_CMD_HANDSHAKE | KB_CMD_HANDOVER | KB_CMD_MEMORY },
	{ 'c', KB_CMD_HANDSHAKE },
	{ 'd', KB_CMD_HANDSHAKE | KB_CMD_BULK },
	{ 'w', KB_CMD_HANDSHAKE },
	{ 'n', KB_CMD_HANDSHAKE | KB_CMD_HANDOVER | KB_CMD_MEMORY },
	{ KB_O_TLS, KB_CMD_HANDSHAKE | KB_CMD_BULK | KB_CMD_HANDOVER | KB_CMD_MEMORY },
	{ KB_O_GROUP, KB_CMD_HANDSHAKE | KB_CMD_HANDOVER | KB_CMD_MEMORY | KB_CMD_CRYPTO },
	{ KB_O_SIG, KB_CMD_HANDSHAKE | KB_CMD_HANDOVER | KB_CMD_MEMORY | KB_CMD_CRYPTO },
	{ KB_O_MODE, KB_CMD_HANDSHAKE | KB_CMD_BULK },
	{ KB_O_SERVER_PID, KB_CMD_HANDSHAKE | KB_CMD_MEMORY },
	{ KB_O_SERVER_NAME, KB_CMD_HANDSHAKE | KB_CMD_HANDOVER | KB_CMD_MEMORY },
	{ KB_O_IDENTITY, KB_CMD_HANDSHAKE | KB_CMD_HANDOVER | KB_CMD_MEMORY },
	{ KB_O_SERVER_THREADS, KB_CMD_HANDSHAKE },
	{ KB_O_CERT, KB_CMD_HANDSHAKE | KB_CMD_BULK | KB_CMD_HANDOVER },
	{ KB_O_KEY, KB_CMD_HANDSHAKE | KB_CMD_BULK | KB_CMD_HANDOVER },
	{ KB_O_CIPHER, KB_CMD_BULK | KB_CMD_HANDSHAKE },
	{ KB_O_SIZE, KB_CMD_BULK },
	{ KB_O_DIR, KB_CMD_BULK },
	{ KB_O_BYTES, KB_CMD_BULK },
	{ KB_O_STATE, KB_CMD_MEMORY },
	{ KB_O_BOUND_TIME, KB_CMD_HANDSHAKE | KB_CMD_CRYPTO },
	{ KB_O_SHIM_PORT, KB_CMD_BULK },
};

static double kb_parse_double(const char *name, const char *s, double min)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < min || isnan(v))
		kb_die("bad %s '%s'", name, s);
	return v;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, KB_O_JSON },
		{ "markdown", no_argument, NULL, KB_O_MARKDOWN },
		{ "repeat", required_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "target", required_argument, NULL, 't' },
		{ "clients", required_argument, NULL, 'c' },
		{ "duration", required_argument, NULL, 'd' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "count", required_argument, NULL, 'n' },
		{ "tls", required_argument, NULL, KB_O_TLS },
		{ "group", required_argument, NULL, KB_O_GROUP },
		{ "sig", required_argument, NULL, KB_O_SIG },
		{ "mode", required_argument, NULL, KB_O_MODE },
		{ "server-pid", required_argument, NULL, KB_O_SERVER_PID },
		{ "server-name", required_argument, NULL, KB_O_SERVER_NAME },
		{ "identity", required_argument, NULL, KB_O_IDENTITY },
		{ "server-threads", required_argument, NULL, KB_O_SERVER_THREADS },
		{ "cert", required_argument, NULL, KB_O_CERT },
		{ "key", required_argument, NULL, KB_O_KEY },
		{ "cipher", required_argument, NULL, KB_O_CIPHER },
		{ "size", required_argument, NULL, KB_O_SIZE },
		{ "dir", required_argument, NULL, KB_O_DIR },
		{ "bytes", required_argument, NULL, KB_O_BYTES },
		{ "state", required_argument, NULL, KB_O_STATE },
		{ "bound-time", required_argument, NULL, KB_O_BOUND_TIME },
		{ "shim-port", required_argument, NULL, KB_O_SHIM_PORT },
		{ "json-file", required_argument, NULL, KB_O_JSON_FILE },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct {
		const char *name;
		enum kb_cmd cmd;
		int (*fn)(void);
	} cmds[] = {
		{ "handshake", KB_CMD_HANDSHAKE, kb_cmd_handshake },
		{ "bulk", KB_CMD_BULK, kb_cmd_bulk },
		{ "handover", KB_CMD_HANDOVER, kb_cmd_handover },
		{ "memory", KB_CMD_MEMORY, kb_cmd_memory },
		{ "crypto", KB_CMD_CRYPTO, kb_cmd_crypto },
	};
	const char *cmd_name = NULL;
	unsigned cmd = 0;
	size_t k, used = 0;
	int c, i, ret, ci = -1;
	uint64_t v;

	/* the command may come first or after global options */
	for (i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		for (k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++)
			if (!strcmp(argv[i], cmds[k].name))
				break;
		if (k < sizeof(cmds) / sizeof(cmds[0])) {
			cmd_name = argv[i];
			cmd = cmds[k].cmd;
			ci = (int)k;
			/* take it out of argv for getopt */
			memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof(argv[0]));
			argc--;
		}
		break;
	}
	for (i = 0; i < argc && used < sizeof(kb_out.argv_line) - 1; i++)
		used += (size_t)snprintf(kb_out.argv_line + used, sizeof(kb_out.argv_line) - used,
					 "%s%s", i ? " " : "",
					 i == 1 && cmd_name ? cmd_name : "");
	used = 0;
	kb_out.argv_line[0] = '\0';
	used += (size_t)snprintf(kb_out.argv_line, sizeof(kb_out.argv_line), "ktls-bench%s%s",
				 cmd_name ? " " : "", cmd_name ? cmd_name : "");
	for (i = 1; i < argc && used < sizeof(kb_out.argv_line) - 1; i++)
		used += (size_t)snprintf(kb_out.argv_line + used, sizeof(kb_out.argv_line) - used,
					 " %s", argv[i]);

	while ((c = getopt_long(argc, argv, "r:qt:c:d:w:n:hV", lo, NULL)) != -1) {
		for (k = 0; k < sizeof(kb_opt_cmds) / sizeof(kb_opt_cmds[0]); k++)
			if (kb_opt_cmds[k].val == c)
				break;
		if (cmd && k < sizeof(kb_opt_cmds) / sizeof(kb_opt_cmds[0]) &&
		    !(kb_opt_cmds[k].cmds & cmd)) {
			for (i = 0; lo[i].name && lo[i].val != c; i++)
				;
			fprintf(stderr, "ktls-bench: --%s does not apply to %s\n", lo[i].name,
				cmd_name);
			return KB_EXIT_USAGE;
		}
		switch (c) {
		case KB_O_JSON:
			o.json = true;
			break;
		case KB_O_MARKDOWN:
			o.markdown = true;
			break;
		case KB_O_JSON_FILE:
			o.json_file = optarg;
			break;
		case 'r':
			o.repeat = (int)kb_parse_double("--repeat", optarg, 1);
			if (o.repeat > KB_MAX_REPEAT)
				kb_die("--repeat is at most %d", KB_MAX_REPEAT);
			break;
		case 'q':
			o.quiet = true;
			break;
		case 't':
			if (o.ntargets >= KB_MAX_TARGETS)
				kb_die("at most %d --target", KB_MAX_TARGETS);
			o.targets[o.ntargets++] = optarg;
			break;
		case 'c':
			o.clients = (int)kb_parse_double("--clients", optarg, 1);
			if (o.clients > 20000)
				kb_die("--clients is at most 20000");
			break;
		case 'd':
			o.duration = kb_parse_double("--duration", optarg, 0.01);
			break;
		case 'w':
			o.warmup = kb_parse_double("--warmup", optarg, 0);
			break;
		case 'n':
			o.count = (long)kb_parse_double("--count", optarg, 1);
			break;
		case KB_O_TLS:
			o.tls = optarg;
			break;
		case KB_O_GROUP:
			o.groups = optarg;
			break;
		case KB_O_SIG:
			o.sigs = optarg;
			break;
		case KB_O_MODE:
			o.modes = optarg;
			break;
		case KB_O_SERVER_PID:
			o.server_pids = optarg;
			break;
		case KB_O_SERVER_NAME:
			o.server_name = optarg;
			break;
		case KB_O_IDENTITY:
			o.identity = optarg;
			break;
		case KB_O_SERVER_THREADS:
			o.server_threads = (int)kb_parse_double("--server-threads", optarg, 1);
			if (o.server_threads > 16)
				kb_die("--server-threads is at most 16");
			break;
		case KB_O_CERT:
			o.cert = optarg;
			break;
		case KB_O_KEY:
			o.key = optarg;
			break;
		case KB_O_CIPHER:
			o.ciphers = optarg;
			break;
		case KB_O_SIZE:
			o.sizes = optarg;
			break;
		case KB_O_DIR:
			o.dirs = optarg;
			break;
		case KB_O_BYTES:
			if (kb_parse_size(optarg, &v) || !v)
				kb_die("bad --bytes '%s'", optarg);
			o.max_bytes = v;
			break;
		case KB_O_STATE:
			o.states = optarg;
			break;
		case KB_O_BOUND_TIME:
			kb_bound_time_s = kb_parse_double("--bound-time", optarg, 0.001);
			break;
		case KB_O_SHIM_PORT:
			kb_shim_port = (int)kb_parse_double("--shim-port", optarg, 1);
			if (kb_shim_port > 65535)
				kb_die("bad --shim-port %s", optarg);
			break;
		case 'h':
			kb_usage(stdout);
			return 0;
		case 'V':
			printf("ktls-bench (ktlsh) %s\n", KTLSH_VERSION_STRING);
			return 0;
		default:
			kb_usage(stderr);
			return KB_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ktls-bench: unexpected argument '%s'\n", argv[optind]);
		return KB_EXIT_USAGE;
	}
	if (!cmd) {
		kb_usage(stderr);
		return KB_EXIT_USAGE;
	}
	if (o.json && o.markdown)
		kb_die("--json and --markdown exclude each other");
	signal(SIGPIPE, SIG_IGN);
	kb_raise_nofile();
	kb_progress_on = !o.quiet && isatty(STDERR_FILENO);
	kb_out.command = cmd_name;
	kb_out.repeat = o.repeat;
	kb_machine_probe();
	ret = cmds[ci].fn();
	kb_progress_clear();
	kb_check_spreads();
	if (o.json_file) {
		FILE *jf = fopen(o.json_file, "w");

		if (!jf)
			kb_die("cannot write %s: %s", o.json_file, strerror(errno));
		kb_print_json(jf);
		if (fclose(jf))
			kb_die("cannot write %s: %s", o.json_file, strerror(errno));
	}
	if (o.json) {
		kb_print_json(stdout);
	} else {
		printf("machine: %s, %d cores; %s; %s; kernel TLS: %s\n\n", kb_machine.cpu,
		       kb_machine.cores, kb_machine.kernel, kb_machine.openssl, kb_machine.ktls);
		kb_print_table(stdout, o.markdown);
	}
	fflush(stdout);
	for (i = 0; i < kb_out.nrows; i++)
		if (kb_out.rows[i].status == KB_FAIL)
			return KB_EXIT_FAIL;
	return ret ? KB_EXIT_FAIL : 0;
}
