// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ktlshctl: talk to a running ktlshd over its control socket.
 *
 *   ktlshctl [-s SOCKET] status [--json]
 *   ktlshctl [-s SOCKET] reload
 *   ktlshctl [-s SOCKET] handshake --connect HOST:PORT [options]
 *
 * Only the public libktlsh API is used, so this doubles as its example.
 * Exit status: 0 success, 1 the operation failed, 2 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ktlsh/ktlsh.h>

#define CTL_EXIT_FAIL		1
#define CTL_EXIT_USAGE		2
#define CTL_TIMEOUT_MS		10000	/* TCP connect and reads of --send's answer */
#define CTL_ALPN_MAX		KTLSH_PROTO_ALPN_MAX

static const char *ctl_socket;		/* NULL: libktlsh's default */

static void ctl_usage(FILE *out)
{
	fprintf(out,
		"usage: ktlshctl [-s SOCKET] COMMAND [OPTIONS]\n"
		"\n"
		"Commands:\n"
		"  status [--json]          show the daemon's counters and settings\n"
		"  reload                   reload the configuration (what SIGHUP does)\n"
		"  handshake --connect HOST:PORT | --listen [HOST:]PORT\n"
		"            [--server-name NAME] [--identity ID]\n"
		"            [--alpn P1,P2] [--timeout MS] [--send STRING]\n"
		"                           connect to HOST:PORT (or accept one connection\n"
		"                           on PORT), have ktlshd handshake as the client\n"
		"                           (server), print the result; --send writes\n"
		"                           STRING (\\r \\n \\t \\\\ \\xHH understood) over kTLS\n"
		"                           and prints the answer until the peer closes\n"
		"\n"
		"Options:\n"
		"  -s, --socket SOCKET      control socket; @NAME is an abstract socket\n"
		"                           (default: $%s, else %s)\n"
		"  -h, --help               show this help\n"
		"  -V, --version            show the version\n",
		KTLSH_SOCKET_ENV, KTLSH_SOCKET_DEFAULT);
}

/* Say why the daemon could not be asked, with a hint where one helps. */
static int ctl_channel_error(int err)
{
	const char *path = ktlsh_client_path(ctl_socket);
	const char *hint = "";
	const char *what = "no usable reply from";

	switch (err) {
	case -ECONNREFUSED:
	case -ENOENT:
		hint = " (is ktlshd running?)";
		/* fall through */
	case -EACCES:
	case -EPERM:
	case -ENOTDIR:
	case -ENAMETOOLONG:
	case -EINVAL:
	case -EAGAIN:
		what = "cannot reach";
		break;
	case -EPROTO:
		hint = " (ktlshd speaks another protocol version?)";
		break;
	}
	fprintf(stderr, "ktlshctl: %s ktlshd at %s: %s%s\n", what, path, strerror(-err), hint);
	return CTL_EXIT_FAIL;
}

/* ---- status ---- */

static void ctl_json_str(const char *s)
{
	const unsigned char *p;

	putchar('"');
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* A plain decimal integer that a JSON reader holds exactly (|v| < 2^53). */
static bool ctl_is_int(const char *s)
{
	size_t i = s[0] == '-';
	size_t digits = strspn(s + i, "0123456789");

	if (!digits || s[i + digits] || digits > 15)
		return false;
	return !(s[i] == '0' && digits > 1);
}

static void ctl_status_json(const struct ktlsh_proto_status *st)
{
	unsigned int i;

	printf("{\n  \"socket\": ");
	ctl_json_str(ktlsh_client_path(ctl_socket));
	printf(",\n  \"status\": %d,\n  \"items\": {", st->status);
	for (i = 0; i < st->n_items; i++) {
		printf("%s\n    ", i ? "," : "");
		ctl_json_str(st->items[i].key);
		printf(": ");
		/* counters as numbers so that jq can add them; anything else
		 * stays text */
		if (ctl_is_int(st->items[i].value))
			printf("%s", st->items[i].value);
		else
			ctl_json_str(st->items[i].value);
	}
	printf("%s}\n}\n", st->n_items ? "\n  " : "");
}

static void ctl_status_table(const struct ktlsh_proto_status *st)
{
	unsigned int i;
	int width = 0, n;

	for (i = 0; i < st->n_items; i++) {
		n = (int)strlen(st->items[i].key);
		if (n > width)
			width = n;
	}
	for (i = 0; i < st->n_items; i++)
		printf("%-*s  %s\n", width, st->items[i].key, st->items[i].value);
}

static int ctl_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ktlsh_proto_status *st = NULL;
	bool json = false;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'h':
			ctl_usage(stdout);
			return 0;
		default:
			return CTL_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ktlshctl: status: unexpected argument '%s'\n", argv[optind]);
		return CTL_EXIT_USAGE;
	}
	/* ~33 KiB: not for the stack */
	st = malloc(sizeof(*st));
	if (!st) {
		fprintf(stderr, "ktlshctl: %s\n", strerror(ENOMEM));
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	ret = ktlsh_status(ctl_socket, st);
	if (ret && !st->type) {
		ret = ctl_channel_error(ret);
		goto out;
	}
	if (ret) {
		fprintf(stderr, "ktlshctl: status refused: %s\n",
			st->reason[0] ? st->reason : strerror(-ret));
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	if (json)
		ctl_status_json(st);
	else
		ctl_status_table(st);
out:
	free(st);
	return ret;
}

/* ---- reload ---- */

static int ctl_reload(int argc, char **argv)
{
	struct ktlsh_proto_reply *rep = NULL;
	int ret;

	if (argc > 1) {
		if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
			ctl_usage(stdout);
			return 0;
		}
		fprintf(stderr, "ktlshctl: reload: unexpected argument '%s'\n", argv[1]);
		return CTL_EXIT_USAGE;
	}
	rep = malloc(sizeof(*rep));
	if (!rep) {
		fprintf(stderr, "ktlshctl: %s\n", strerror(ENOMEM));
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	ret = ktlsh_reload(ctl_socket, rep);
	if (ret && !rep->type) {
		ret = ctl_channel_error(ret);
		goto out;
	}
	if (ret) {
		fprintf(stderr, "ktlshctl: reload refused: %s\n",
			rep->reason[0] ? rep->reason : strerror(-ret));
		if (ret == -EINVAL)
			fprintf(stderr, "ktlshctl: the previous configuration is still in use\n");
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	printf("%s\n", rep->reason[0] ? rep->reason : "configuration reloaded");
out:
	free(rep);
	return ret;
}

/* ---- handshake ---- */

struct ctl_hs {
	const char *connect;
	const char *listen;
	const char *server_name;
	const char *identity;
	char *alpn_list;
	const char *alpn[CTL_ALPN_MAX];
	unsigned int n_alpn;
	const char *send;
	unsigned int timeout_ms;
};

/* Split "a,b,c" in place. */
static int ctl_split_alpn(struct ctl_hs *o)
{
	char *p, *save = NULL;

	for (p = strtok_r(o->alpn_list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		if (o->n_alpn == CTL_ALPN_MAX) {
			fprintf(stderr, "ktlshctl: --alpn: at most %d protocols\n", CTL_ALPN_MAX);
			return -EINVAL;
		}
		o->alpn[o->n_alpn++] = p;
	}
	return 0;
}

/* HOST:PORT or [V6]:PORT, split in place. */
static int ctl_split_hostport(char *s, char **host, char **port)
{
	char *colon;

	if (s[0] == '[') {
		colon = strchr(s, ']');
		if (!colon || colon[1] != ':')
			return -EINVAL;
		*colon = 0;
		*host = s + 1;
		*port = colon + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		*colon = 0;
		*host = s;
		*port = colon + 1;
	}
	return **host && **port ? 0 : -EINVAL;
}

/* Connect one address without waiting longer than timeout_ms. */
static int ctl_connect_one(const struct addrinfo *ai, unsigned int timeout_ms)
{
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int fd, err = 0, ret;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS) {
		ret = -errno;
		goto out;
	}
	pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
	ret = poll(&pfd, 1, (int)timeout_ms);
	if (ret <= 0) {
		ret = ret ? -errno : -ETIMEDOUT;
		goto out;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
		ret = err ? -err : -errno;
		goto out;
	}
	/* the handshake runs in the daemon; what we keep is a blocking socket */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)) {
		ret = -errno;
		goto out;
	}
	return fd;
out:
	close(fd);
	return ret;
}

static int ctl_connect(const char *host, const char *port, unsigned int timeout_ms)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL, *ai;
	int ret, fd = -ENOENT;

	ret = getaddrinfo(host, port, &hints, &res);
	if (ret) {
		fprintf(stderr, "ktlshctl: %s:%s: %s\n", host, port, gai_strerror(ret));
		return -EHOSTUNREACH;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = ctl_connect_one(ai, timeout_ms);
		if (fd >= 0)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0)
		fprintf(stderr, "ktlshctl: connect to %s port %s: %s\n", host, port, strerror(-fd));
	return fd;
}

/* --listen: accept one connection on HOST:PORT (the server role's socket). */
static int ctl_accept_one(const char *host, const char *port, unsigned int timeout_ms)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct addrinfo *res = NULL;
	struct pollfd pfd;
	int one = 1, lfd = -1, fd = -1, ret;

	ret = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (ret) {
		fprintf(stderr, "ktlshctl: %s:%s: %s\n", host, port, gai_strerror(ret));
		return -EINVAL;
	}
	lfd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(lfd, res->ai_addr, res->ai_addrlen) || listen(lfd, 1)) {
		fd = -errno;
		fprintf(stderr, "ktlshctl: listen on %s port %s: %s\n", host, port, strerror(errno));
		goto out;
	}
	fprintf(stderr, "ktlshctl: listening on %s port %s\n", host[0] ? host : "*", port);
	pfd = (struct pollfd){ .fd = lfd, .events = POLLIN };
	ret = poll(&pfd, 1, (int)timeout_ms);
	if (ret <= 0) {
		fd = ret ? -errno : -ETIMEDOUT;
		fprintf(stderr, "ktlshctl: no connection on port %s: %s\n", port, strerror(-fd));
		goto out;
	}
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		fd = -errno;
		fprintf(stderr, "ktlshctl: accept: %s\n", strerror(-fd));
	}
out:
	if (lfd >= 0)
		close(lfd);
	freeaddrinfo(res);
	return fd;
}

static bool ctl_is_ip(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static const char *ctl_tls_version(uint32_t v)
{
	switch (v) {
	case 0x0301:
		return "TLSv1.0";
	case 0x0302:
		return "TLSv1.1";
	case 0x0303:
		return "TLSv1.2";
	case 0x0304:
		return "TLSv1.3";
	}
	return "unknown";
}

#define CTL_KEY_WIDTH	"14"

static void ctl_field(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ctl_field(const char *key, const char *fmt, ...)
{
	va_list ap;

	printf("%-" CTL_KEY_WIDTH "s", key);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void ctl_print_reply(const struct ktlsh_proto_reply *rep)
{
	char hex[KTLSH_PROTO_FINGERPRINT_LEN * 3];
	unsigned int i;

	if (rep->status)
		ctl_field("status", "%d (%s)", rep->status, strerror(-rep->status));
	else
		ctl_field("status", "0 (kTLS installed)");
	if (rep->reason[0])
		ctl_field("reason", "%s", rep->reason);
	if (rep->alert_sent >= 0)
		ctl_field("alert_sent", "%d (%s)", rep->alert_sent,
			  ktlsh_alert_name((uint8_t)rep->alert_sent));
	if (rep->alert_received >= 0)
		ctl_field("alert_received", "%d (%s)", rep->alert_received,
			  ktlsh_alert_name((uint8_t)rep->alert_received));
	if (rep->tls_version)
		ctl_field("version", "%s", ctl_tls_version(rep->tls_version));
	if (rep->cipher[0])
		ctl_field("cipher", "%s", rep->cipher);
	if (rep->group[0])
		ctl_field("group", "%s", rep->group);
	if (rep->tls_version) {
		ctl_field("alpn", "%s", rep->alpn[0] ? rep->alpn : "(none)");
		ctl_field("resumed", "%s", rep->resumed ? "yes" : "no");
	}
	if (rep->peer_subject[0])
		ctl_field("peer_subject", "%s", rep->peer_subject);
	for (i = 0; i < rep->n_peer_sans; i++)
		ctl_field("peer_san", "%s", rep->peer_san[i]);
	if (rep->has_peer_fingerprint) {
		for (i = 0; i < KTLSH_PROTO_FINGERPRINT_LEN; i++)
			snprintf(hex + 3 * i, sizeof(hex) - 3 * i, "%02x%s", rep->peer_fingerprint[i],
				 i + 1 < KTLSH_PROTO_FINGERPRINT_LEN ? ":" : "");
		ctl_field("peer_sha256", "%s", hex);
	}
	if (rep->handshake_us)
		ctl_field("handshake_us", "%llu", (unsigned long long)rep->handshake_us);
	if (!rep->status) {
		ctl_field("tx_seq", "%llu", (unsigned long long)rep->tx_seq);
		ctl_field("rx_seq", "%llu", (unsigned long long)rep->rx_seq);
	}
}

static int ctl_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* --send's escapes, so that "GET / HTTP/1.0\r\n\r\n" can be typed. The
 * result is never longer than the input. */
static size_t ctl_unescape(const char *in, char *out)
{
	size_t n = 0;

	for (; *in; in++) {
		if (*in != '\\' || !in[1]) {
			out[n++] = *in;
			continue;
		}
		switch (*++in) {
		case 'r':
			out[n++] = '\r';
			break;
		case 'n':
			out[n++] = '\n';
			break;
		case 't':
			out[n++] = '\t';
			break;
		case '\\':
			out[n++] = '\\';
			break;
		case 'x':
			if (ctl_hexval(in[1]) >= 0 && ctl_hexval(in[2]) >= 0) {
				out[n++] = (char)(ctl_hexval(in[1]) << 4 | ctl_hexval(in[2]));
				in += 2;
				break;
			}
			/* fall through */
		default:
			out[n++] = '\\';
			out[n++] = *in;
			break;
		}
	}
	return n;
}

/* Write STRING through kTLS, then copy the answer to stdout until the peer
 * closes (close_notify is end of file) or stays quiet for timeout_ms. */
static int ctl_exchange(int fd, const char *send_str, unsigned int timeout_ms)
{
	char *msg = NULL, buf[KTLSH_RECORD_MAX];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t len, off = 0;
	ssize_t n;
	int ret;

	msg = malloc(strlen(send_str) + 1);
	if (!msg) {
		ret = -ENOMEM;
		goto out;
	}
	len = ctl_unescape(send_str, msg);
	while (off < len) {
		n = send(fd, msg + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			fprintf(stderr, "ktlshctl: send: %s\n", strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	for (;;) {
		ret = poll(&pfd, 1, (int)timeout_ms);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			ret = ret ? -errno : -ETIMEDOUT;
			fprintf(stderr, "ktlshctl: receive: %s\n", strerror(-ret));
			goto out;
		}
		/* ktlsh_recv: alerts, tickets and close_notify handled */
		n = ktlsh_recv(fd, buf, sizeof(buf), 0);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			ret = (int)n;
			fprintf(stderr, "ktlshctl: receive: %s\n", strerror(-ret));
			goto out;
		}
		if (n == 0)
			break;
		fwrite(buf, 1, (size_t)n, stdout);
	}
	fflush(stdout);
	ret = 0;
out:
	free(msg);
	return ret;
}

static int ctl_handshake(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "server-name", required_argument, NULL, 'n' },
		{ "identity", required_argument, NULL, 'i' },
		{ "alpn", required_argument, NULL, 'a' },
		{ "timeout", required_argument, NULL, 't' },
		{ "send", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl_hs o = { .timeout_ms = CTL_TIMEOUT_MS };
	struct ktlsh_proto_reply *rep = NULL;
	struct ktlsh_request req = { .role = KTLSH_PROTO_ROLE_CLIENT };
	char *hostport = NULL, *host, *port, *end;
	unsigned long ms;
	int c, fd = -1, ret;

	while ((c = getopt_long(argc, argv, "+c:l:n:i:a:t:S:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o.connect = optarg;
			break;
		case 'l':
			o.listen = optarg;
			break;
		case 'n':
			o.server_name = optarg;
			break;
		case 'i':
			o.identity = optarg;
			break;
		case 'a':
			o.alpn_list = optarg;
			break;
		case 't':
			errno = 0;
			ms = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || !ms || ms > 3600000) {
				fprintf(stderr, "ktlshctl: --timeout: milliseconds, 1 to 3600000\n");
				return CTL_EXIT_USAGE;
			}
			o.timeout_ms = (unsigned int)ms;
			break;
		case 'S':
			o.send = optarg;
			break;
		case 'h':
			ctl_usage(stdout);
			return 0;
		default:
			return CTL_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ktlshctl: handshake: unexpected argument '%s'\n", argv[optind]);
		return CTL_EXIT_USAGE;
	}
	if (!o.connect == !o.listen) {
		fprintf(stderr, "ktlshctl: handshake: one of --connect HOST:PORT or --listen [HOST:]PORT\n");
		return CTL_EXIT_USAGE;
	}
	if (o.alpn_list && ctl_split_alpn(&o))
		return CTL_EXIT_USAGE;
	if (o.listen) {
		/* "PORT" alone listens on every address */
		if (!strchr(o.listen, ':') && asprintf(&hostport, ":%s", o.listen) < 0)
			hostport = NULL;
		else if (strchr(o.listen, ':'))
			hostport = strdup(o.listen);
	} else {
		hostport = strdup(o.connect);
	}
	rep = malloc(sizeof(*rep));
	if (!hostport || !rep) {
		fprintf(stderr, "ktlshctl: %s\n", strerror(ENOMEM));
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	if (hostport[0] == ':') {
		hostport[0] = '\0';
		host = hostport;
		port = hostport + 1;
	} else if (ctl_split_hostport(hostport, &host, &port)) {
		fprintf(stderr, "ktlshctl: expected HOST:PORT or [IPV6]:PORT, got '%s'\n",
			o.connect ? o.connect : o.listen);
		ret = CTL_EXIT_USAGE;
		goto out;
	}
	if (o.listen) {
		req.role = KTLSH_PROTO_ROLE_SERVER;
		fd = ctl_accept_one(host, port, o.timeout_ms);
	} else {
		/* Like s_client and curl: a host name is also the name to verify. */
		if (!o.server_name && !ctl_is_ip(host))
			o.server_name = host;
		fd = ctl_connect(host, port, o.timeout_ms);
	}
	if (fd < 0) {
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	req.identity = o.identity;
	req.server_name = o.server_name;
	req.alpn = o.alpn;
	req.n_alpn = o.n_alpn;
	req.timeout_ms = o.timeout_ms;
	ret = ktlsh_handshake_fd(ctl_socket, fd, &req, rep);
	if (ret && !rep->type) {
		if (ret == -EINVAL || ret == -ENAMETOOLONG)
			fprintf(stderr, "ktlshctl: handshake: bad request: %s\n", strerror(-ret));
		else
			ctl_channel_error(ret);
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	ctl_print_reply(rep);
	if (ret) {
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	if (o.send && ctl_exchange(fd, o.send, o.timeout_ms)) {
		ret = CTL_EXIT_FAIL;
		goto out;
	}
	/* An orderly end: the peer learns it was not truncated. */
	ret = ktlsh_send_close_notify(fd) < 0 ? CTL_EXIT_FAIL : 0;
	if (ret)
		fprintf(stderr, "ktlshctl: close_notify: not sent\n");
out:
	/* after a failure the socket may hold half a handshake: only close it */
	if (fd >= 0)
		close(fd);
	free(rep);
	free(hostport);
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static char name[64];
	const char *cmd;
	int c;

	/* "+": options after the command belong to the command */
	while ((c = getopt_long(argc, argv, "+s:hV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			ctl_socket = optarg;
			break;
		case 'h':
			ctl_usage(stdout);
			return 0;
		case 'V':
			printf("ktlshctl (ktlsh) %s, control protocol %d\n", KTLSH_VERSION_STRING,
			       KTLSH_PROTO_VERSION);
			return 0;
		default:
			ctl_usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (optind == argc) {
		ctl_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	/* getopt's messages then say "ktlshctl status: unrecognized option" */
	snprintf(name, sizeof(name), "ktlshctl %s", cmd);
	argv[0] = name;
	/* 0, not 1: glibc then forgets the scan state of the first pass */
	optind = 0;
	if (!strcmp(cmd, "status"))
		return ctl_status(argc, argv);
	if (!strcmp(cmd, "reload"))
		return ctl_reload(argc, argv);
	if (!strcmp(cmd, "handshake"))
		return ctl_handshake(argc, argv);
	if (!strcmp(cmd, "help")) {
		ctl_usage(stdout);
		return 0;
	}
	fprintf(stderr, "ktlshctl: unknown command '%s' (try ktlshctl --help)\n", cmd);
	return CTL_EXIT_USAGE;
}
