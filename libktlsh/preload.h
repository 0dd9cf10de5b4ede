/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libktlsh-preload.so internals: shared between libktlsh/preload*.c and the
 * configuration parser's unit test. Not installed; not an ABI.
 *
 * The shim is four parts:
 *   preload.c         load time, the per-fd table, the interposed calls
 *                     (pass-through fast path, control records, close_notify)
 *   preload_conf.c    the configuration: parsing and address matching (pure)
 *   preload_engine.c  this process's connection to ktlshd, the completion
 *                     thread and the handshakes in flight
 *   preload_server.c  managed listeners: accept, the shared completion queue,
 *                     wake-up connections
 *   preload_client.c  managed connect(), blocking and nonblocking
 */
#ifndef KTLSH_PRELOAD_H
#define KTLSH_PRELOAD_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/epoll.h>
#include <netinet/in.h>

#include <ktlsh/ktlsh.h>

#define PL_HIDDEN __attribute__((visibility("hidden")))

/* ---- configuration (preload_conf.c) ------------------------------------ */

#define PL_ENV_INLINE		"KTLSH_PRELOAD"
#define PL_ENV_FILE		"KTLSH_PRELOAD_CONFIG"
#define PL_RULES_MAX		64
#define PL_ALPN_MAX		8
#define PL_NAME_LEN		256
#define PL_IDENT_LEN		64
#define PL_ERR_LEN		512
#define PL_MAX_PENDING_DEFAULT	1024
#define PL_CONF_FILE_MAX	(64 * 1024)

enum pl_role {
	PL_ROLE_SERVER = 1,
	PL_ROLE_CLIENT = 2,
};

/* A configured endpoint. family AF_UNSPEC with any: "*:port". */
struct pl_endpoint {
	int family;			/* AF_INET, AF_INET6, AF_UNSPEC */
	bool any;			/* wildcard address: *, 0.0.0.0, [::] */
	uint8_t addr[16];		/* AF_INET: the first 4 bytes */
	uint16_t port;			/* host order, never 0 */
};

struct pl_rule {
	enum pl_role role;
	struct pl_endpoint ep;
	char text[80];			/* "server=0.0.0.0:443", for log lines */
	char identity[PL_IDENT_LEN];	/* server: identity; client: profile */
	char name[PL_NAME_LEN];		/* client: SNI/verified name; server: expected client name */
	char alpn[PL_ALPN_MAX][PL_NAME_LEN];
	const char *alpn_ptr[PL_ALPN_MAX];
	unsigned int n_alpn;
	unsigned int timeout_ms;	/* 0: the daemon's default */
	unsigned int flags;		/* KTLSH_F_* */
};

enum pl_log_target {
	PL_LOG_STDERR = 0,
	PL_LOG_SYSLOG,
	PL_LOG_NONE,
	PL_LOG_FILE,
};

struct pl_conf {
	char socket[110];		/* "" means ktlsh_client_path(NULL) */
	enum pl_log_target log;
	char log_file[256];
	bool verbose;			/* log every handshake, not only failures */
	unsigned int max_pending;	/* handshakes in flight per process */
	unsigned int n_rules;
	struct pl_rule rules[PL_RULES_MAX];
	char err[PL_ERR_LEN];		/* the first error, "where: what" */
};

void pl_conf_init(struct pl_conf *c);
/* Parse text (items separated by ';' or newlines) into c, appending rules.
 * where names the source in messages ("KTLSH_PRELOAD", a file name); file
 * sources count lines. Returns 0, or -EINVAL with c->err set. */
int pl_conf_parse(struct pl_conf *c, const char *text, const char *where, bool is_file);
/* Read and parse a file (at most PL_CONF_FILE_MAX bytes). */
int pl_conf_load_file(struct pl_conf *c, const char *path);
/* The rule for a local listening address, or for a destination of
 * connect(); NULL when the configuration does not name it. */
const struct pl_rule *pl_conf_match(const struct pl_conf *c, enum pl_role role,
				    const struct sockaddr *sa, socklen_t len);
/* Does a server rule cover some address a listener bound to sa accepts on,
 * without covering all of them? (A listener on 0.0.0.0:443 with a rule for
 * 127.0.0.1:443 only.) Then each connection is matched by its own local
 * address. */
bool pl_conf_listener_partial(const struct pl_conf *c, const struct sockaddr *sa, socklen_t len);
/* "1.2.3.4:443", "[::1]:443" */
void pl_addr_str(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap);
/* Normalise a socket address (IPv4-mapped IPv6 becomes IPv4). Returns
 * false for anything that is not AF_INET/AF_INET6. */
bool pl_addr_norm(const struct sockaddr *sa, socklen_t len, int *family, uint8_t addr[16],
		  uint16_t *port);

/* ---- the per-fd table (preload.c) -------------------------------------- */

/* Kind, in the low bits. 0 is the fast path: not ours. */
#define PL_FD_KIND		0x07
#define PL_FD_KTLS		0x01	/* kTLS installed by ktlshd */
#define PL_FD_LISTEN		0x02	/* a managed listener */
#define PL_FD_PENDING		0x03	/* nonblocking connect: a placeholder */
#define PL_FD_FAILED		0x04	/* connect failed: shut down, error pending */
/* Flags, for PL_FD_KTLS */
#define PL_FD_SHARED		0x10	/* may be open elsewhere: close() sends no close_notify */
#define PL_FD_CN_SENT		0x20	/* close_notify sent */
#define PL_FD_EOF		0x40	/* close_notify received: reads return 0 */

extern uint8_t *pl_fds PL_HIDDEN;
extern unsigned int pl_nfds PL_HIDDEN;
extern uint8_t *pl_fd_err PL_HIDDEN;	/* PL_FD_FAILED: the errno to report */
extern unsigned int pl_fd_hiwat PL_HIDDEN;	/* the highest fd ever marked */

static inline unsigned int pl_fd_get(int fd)
{
	return (unsigned int)fd < pl_nfds ? __atomic_load_n(&pl_fds[fd], __ATOMIC_RELAXED) : 0;
}

static inline void pl_fd_set(int fd, unsigned int v)
{
	if ((unsigned int)fd >= pl_nfds)
		return;
	__atomic_store_n(&pl_fds[fd], (uint8_t)v, __ATOMIC_RELAXED);
	if (v && (unsigned int)fd > __atomic_load_n(&pl_fd_hiwat, __ATOMIC_RELAXED))
		__atomic_store_n(&pl_fd_hiwat, (unsigned int)fd, __ATOMIC_RELAXED);
}

static inline void pl_fd_or(int fd, unsigned int v)
{
	if ((unsigned int)fd < pl_nfds)
		__atomic_fetch_or(&pl_fds[fd], (uint8_t)v, __ATOMIC_RELAXED);
}

/* ---- the real functions (preload.c) ------------------------------------ */

struct pl_real {
	int (*socket)(int, int, int);
	int (*close)(int);
	int (*shutdown)(int, int);
	int (*listen)(int, int);
	int (*accept)(int, struct sockaddr *, socklen_t *);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*readv)(int, const struct iovec *, int);
	ssize_t (*recv)(int, void *, size_t, int);
	ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
	int (*getsockopt)(int, int, int, void *, socklen_t *);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*getpeername)(int, struct sockaddr *, socklen_t *);
	int (*getsockname)(int, struct sockaddr *, socklen_t *);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*close_range)(unsigned int, unsigned int, int);	/* may be NULL */
	void (*closefrom)(int);					/* may be NULL */
};

extern struct pl_real pl_real PL_HIDDEN;

/* ---- process-wide state ------------------------------------------------ */

extern struct pl_conf *pl_conf PL_HIDDEN;	/* NULL: no configuration */
extern bool pl_broken PL_HIDDEN;		/* the configuration did not parse: fail closed */
extern const char *pl_sock_path PL_HIDDEN;	/* the daemon's socket */

/* Logging: one line, "ktlsh-preload[pid]: ..." on the configured target. */
void pl_log(const char *fmt, ...) __attribute__((format(printf, 1, 2))) PL_HIDDEN;
/* Per-connection lines: at most PL_LOG_BURST a second, then a count. */
void pl_log_conn(const char *fmt, ...) __attribute__((format(printf, 1, 2))) PL_HIDDEN;
#define PL_LOG_BURST 20

int64_t pl_now_ms(void) PL_HIDDEN;
int pl_set_nonblock(int fd, bool on) PL_HIDDEN;

/* ---- engine (preload_engine.c) ----------------------------------------- */

struct pl_listener;

/* Hand a connected raw socket to ktlshd. Takes fd: on failure it is closed
 * and logged. kind: PL_JOB_ACCEPT (l, peer) or PL_JOB_CONNECT (pc). */
enum pl_job_kind {
	PL_JOB_ACCEPT = 1,
	PL_JOB_CONNECT,
};

struct pl_pconn;

struct pl_job {
	enum pl_job_kind kind;
	uint32_t id;
	int fd;				/* our descriptor of the socket */
	int64_t deadline;		/* give up on the reply */
	const struct pl_rule *rule;
	struct pl_listener *l;		/* ACCEPT */
	bool nonblock;			/* ACCEPT: as accept4() asked */
	struct sockaddr_storage peer;	/* ACCEPT */
	socklen_t peer_len;
	struct pl_pconn *pc;		/* CONNECT */
	struct pl_job *next;		/* backlog list */
};

void pl_engine_submit(struct pl_job *job) PL_HIDDEN;
void pl_engine_submit_locked(struct pl_job *job) PL_HIDDEN;
/* Handshakes in flight or waiting to be submitted, in this process. */
unsigned int pl_engine_load(void) PL_HIDDEN;
/* Wake the completion thread (new nonblocking connect to watch). */
void pl_engine_kick(void) PL_HIDDEN;
/* Send close_notify on fd (ours, a duplicate) when the socket has room,
 * then shutdown(SHUT_WR) if shut, then close it; give up after
 * PL_LINGER_MS. */
void pl_engine_linger(int fd, bool shut) PL_HIDDEN;
#define PL_LINGER_MS 5000
int pl_engine_start_locked(void) PL_HIDDEN;
void pl_engine_lock(void) PL_HIDDEN;
void pl_engine_unlock(void) PL_HIDDEN;
void pl_engine_atfork_prepare(void) PL_HIDDEN;
void pl_engine_atfork_parent(void) PL_HIDDEN;
void pl_engine_atfork_child(void) PL_HIDDEN;
/* A reply (or a failure with rep NULL and status) for job, lock held. */
void pl_server_done_locked(struct pl_job *job, int status, const struct ktlsh_proto_reply *rep) PL_HIDDEN;
void pl_client_done_locked(struct pl_job *job, int status, const struct ktlsh_proto_reply *rep) PL_HIDDEN;
/* Poll set contributions of the server (wake sockets) and client
 * (connects in progress, placeholders to retire) parts, lock held. */
struct pollfd;
unsigned int pl_server_pollfds_locked(struct pollfd *p, unsigned int cap, int64_t *next) PL_HIDDEN;
void pl_server_events_locked(const struct pollfd *p, unsigned int n) PL_HIDDEN;
unsigned int pl_client_pollfds_locked(struct pollfd *p, unsigned int cap, int64_t *next) PL_HIDDEN;
void pl_client_events_locked(const struct pollfd *p, unsigned int n) PL_HIDDEN;
/* Map a daemon status to the errno connect() reports. */
int pl_client_errno(int status) PL_HIDDEN;
const char *pl_status_str(int status) PL_HIDDEN;

/* ---- server (preload_server.c) ----------------------------------------- */

/* listen() succeeded on fd: manage it if the configuration names it. */
void pl_server_listen(int fd) PL_HIDDEN;
/* Scan inherited descriptors at load (systemd sockets, exec after fork). */
void pl_server_adopt(int fd) PL_HIDDEN;
int pl_server_accept(int fd, struct sockaddr *addr, socklen_t *alen, int flags) PL_HIDDEN;
void pl_server_close(int fd) PL_HIDDEN;
void pl_server_dup(int oldfd, int newfd) PL_HIDDEN;
void pl_server_atfork_child(void) PL_HIDDEN;

/* ---- client (preload_client.c) ----------------------------------------- */

int pl_client_connect(int fd, const struct sockaddr *sa, socklen_t len,
		      const struct pl_rule *rule) PL_HIDDEN;
int pl_client_getsockopt(int fd, int level, int name, void *val, socklen_t *len) PL_HIDDEN;
int pl_client_setsockopt(int fd, int level, int name, const void *val, socklen_t len) PL_HIDDEN;
int pl_client_name(int fd, bool peer, struct sockaddr *sa, socklen_t *len) PL_HIDDEN;
void pl_client_close(int fd) PL_HIDDEN;
void pl_client_epoll_ctl(int epfd, int op, int fd, const struct epoll_event *ev) PL_HIDDEN;
void pl_client_atfork_child(void) PL_HIDDEN;

#endif /* KTLSH_PRELOAD_H */
