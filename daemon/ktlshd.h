/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ktlshd internals: the pieces of the daemon and who owns what.
 *
 *   main thread   config load/reload, signals (signalfd), the control
 *                 socket (accept, decode, authorize, dispatch), status,
 *                 ticket key rotation — one epoll loop.
 *   workers       one epoll loop each; own the handshakes handed to them
 *                 from accept to reply; nothing survives a reply.
 *
 * Shared state and its owner:
 *   struct ktlshd_runtime   immutable after build (config + SSL_CTXs),
 *                           refcounted; main swaps it on SIGHUP, each
 *                           handshake holds the one it started with.
 *   struct ktlshd_conn      a control connection; refcounted; main owns the
 *                           fd's epoll registration, workers only send
 *                           replies on it.
 *   struct ktlshd_tickets   session ticket keys; main rotates them under a
 *                           rwlock, OpenSSL's ticket callback reads them on
 *                           any worker.
 *   struct ktlshd_stats     counters; atomics, written by anyone.
 */
#ifndef KTLSHD_H
#define KTLSHD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include <ktlsh/handshake.h>
#include <ktlsh/proto.h>

#include "config.h"

#define KTLSHD_VERSION "0.1.0"

/* ---- log.c ---- */
extern int ktlshd_log_level;	/* syslog priority, LOG_ERR .. LOG_DEBUG */
void ktlshd_log_init(bool syslog_prefix);
__attribute__((format(printf, 2, 3)))
void ktlshd_log(int prio, const char *fmt, ...);
#define log_err(...)	ktlshd_log(LOG_ERR, __VA_ARGS__)
#define log_warn(...)	ktlshd_log(LOG_WARNING, __VA_ARGS__)
#define log_info(...)	ktlshd_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...)	ktlshd_log(LOG_DEBUG, __VA_ARGS__)
/* The handshake trace callback (ktlsh_trace_fn): one debug line per step. */
void ktlshd_log_trace(void *arg, const char *line);

/* ---- stats.c ---- */
enum ktlshd_outcome {
	KTLSHD_OK = 0,
	KTLSHD_FAIL_PROTO,		/* TLS protocol failure */
	KTLSHD_FAIL_CERT,		/* certificate rejected */
	KTLSHD_FAIL_RESET,		/* peer reset or closed */
	KTLSHD_FAIL_TIMEOUT,
	KTLSHD_FAIL_KERNEL,		/* install refused by the kernel */
	KTLSHD_FAIL_DENIED,		/* caller not authorized */
	KTLSHD_FAIL_BUSY,		/* too many in flight */
	KTLSHD_FAIL_BADREQ,		/* bad request or bad fd */
	KTLSHD_FAIL_OTHER,
	KTLSHD_OUTCOME_COUNT,
};

struct ktlshd_stats {
	atomic_ullong outcomes[KTLSHD_OUTCOME_COUNT];
	atomic_ullong resumed;
	atomic_uint inflight;
	atomic_ullong ctl_connections;
	atomic_ullong ctl_bad_messages;
};
extern struct ktlshd_stats ktlshd_stats;
const char *ktlshd_outcome_name(enum ktlshd_outcome o);
enum ktlshd_outcome ktlshd_outcome_of(int err);

/* ---- tickets.c ---- */
int ktlshd_tickets_init(const struct ktlsh_config *cfg);
/* Rotate if the period elapsed (or reload the operator's key file). */
void ktlshd_tickets_tick(const struct ktlsh_config *cfg);
int ktlshd_tickets_reload(const struct ktlsh_config *cfg);
void ktlshd_tickets_attach(SSL_CTX *ctx);
void ktlshd_tickets_destroy(void);

/* ---- runtime.c: config + the SSL_CTXs built from it ---- */
struct ktlshd_ident {
	const struct ktlsh_config_identity *cfg;
	SSL_CTX *ctx;
};

struct ktlshd_client_profile {
	const struct ktlsh_config_client *cfg;
	SSL_CTX *ctx;
};

struct ktlshd_runtime {
	atomic_uint refs;
	struct ktlsh_config *cfg;
	struct ktlshd_ident *idents;
	size_t n_idents;
	struct ktlshd_client_profile *clients;
	size_t n_clients;
	struct ktlsh_kcaps caps;
	uint64_t generation;
};

/* Build SSL_CTXs for every identity and client profile; err gets
 * "file:line: ..." for what OpenSSL refused (a key that does not match, a
 * cipher list it does not know). Takes over no reference of cfg. */
int ktlshd_runtime_build(struct ktlsh_config *cfg, const struct ktlsh_kcaps *caps,
			 struct ktlshd_runtime **out, char *err, size_t errlen);
struct ktlshd_runtime *ktlshd_runtime_get(struct ktlshd_runtime *rt);
void ktlshd_runtime_put(struct ktlshd_runtime *rt);
const struct ktlshd_ident *ktlshd_runtime_ident(const struct ktlshd_runtime *rt, const char *name);
const struct ktlshd_client_profile *ktlshd_runtime_client(const struct ktlshd_runtime *rt,
							   const char *name);

/* The current runtime (main swaps, everyone else takes references). */
struct ktlshd_runtime *ktlshd_current_get(void);
void ktlshd_current_set(struct ktlshd_runtime *rt);

/* ---- ctl.c: control connections ---- */
struct ktlshd_conn {
	atomic_uint refs;
	int fd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
};
struct ktlshd_conn *ktlshd_conn_get(struct ktlshd_conn *c);
void ktlshd_conn_put(struct ktlshd_conn *c);
/* Send one encoded reply; safe from any thread (SOCK_SEQPACKET sends are
 * atomic per message). */
int ktlshd_conn_send_reply(struct ktlshd_conn *c, const struct ktlsh_proto_reply *rep);

/* ---- worker.c ---- */
struct ktlshd_job {
	int fd;				/* the socket to handshake on (daemon's copy) */
	enum ktlsh_role role;
	uint32_t id;			/* request id, echoed in the reply */
	uint32_t flags;			/* KTLSH_PROTO_F_* */
	char server_name[KTLSH_PROTO_NAME_LEN];
	char identity[KTLSH_PROTO_IDENTITY_LEN];
	char alpn_wire[KTLSH_PROTO_ALPN_MAX * KTLSH_PROTO_NAME_LEN];
	size_t alpn_wire_len;
	uint64_t start_us;
	uint64_t deadline_us;
	struct ktlshd_conn *conn;	/* reference */
	struct ktlshd_runtime *rt;	/* reference */
	SSL_CTX *ctx;			/* borrowed from rt */

	char peer[64];			/* "addr:port" for logs */

	/*
	 * How the outcome is delivered. NULL: a HANDSHAKE_REPLY on conn. Else
	 * called on the worker when the handshake ends (status 0 = kTLS
	 * installed, or -errno), while ktlsh_hs_ssl(job->hs) is still there
	 * to read the peer from; it may keep the socket by setting job->fd to
	 * -1, may keep the SSL with ktlshd_job_keep_ssl() (a user-space data
	 * path where the kernel could not take the keys), and may leave a
	 * reply for conn in job->reply. Used by the kernel's handshake upcall
	 * and the proxy.
	 */
	void (*done)(struct ktlshd_job *job, int status);
	/* Optional: per-connection SSL settings (PSK, keyring certificates)
	 * before the first step; -errno fails the handshake. */
	int (*prepare)(struct ktlshd_job *job, SSL *ssl);
	/* Optional: called on the worker once it has let go of the handshake
	 * (after done, before the job is freed): from here on what done kept
	 * may move to another thread. */
	void (*released)(struct ktlshd_job *job);
	void *done_arg;
	struct ktlsh_proto_reply *reply;
	bool user_space;		/* done kept the SSL (ktlshd_job_keep_ssl) */

	/* worker-private */
	struct ktlsh_hs *hs;
	size_t heap_idx;
	short events;
	struct ktlshd_job *next;	/* submission queue */
};

int ktlshd_workers_start(unsigned n);
/* Hand a job to a worker (round robin); takes ownership. -EBUSY if the
 * in-flight limit is reached (the caller still owns the job then). */
int ktlshd_workers_submit(struct ktlshd_job *job, unsigned max_inflight);
/* Stop accepting, let in-flight handshakes finish (bounded by their
 * deadlines), join. */
void ktlshd_workers_stop(void);
unsigned ktlshd_workers_count(void);
void ktlshd_job_free(struct ktlshd_job *job);
/* From a done hook: a reference of the caller's own to the handshake's
 * SSL, detached from the handshake's callbacks, to carry on in user space
 * (only where the kernel took no key: ktlsh_hs_install() failed before
 * TLS_TX). NULL if there is none. */
SSL *ktlshd_job_keep_ssl(struct ktlshd_job *job);
/* The job an SSL belongs to (for OpenSSL callbacks), or NULL. */
struct ktlshd_job *ktlshd_job_of(const SSL *ssl);
/* Daemon-wide switches set from the command line. */
extern bool ktlshd_handshake_only;	/* benchmark: handshake, never install, reply -EOPNOTSUPP */

/* Reply to a request that never became a job (refused up front). */
void ktlshd_reply_error(struct ktlshd_conn *c, uint32_t id, int status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* A bare HANDSHAKE_REPLY carrying only status and reason: a request refused
 * up front, or one whose full reply could not be built. */
void ktlshd_reply_refused(struct ktlshd_conn *c, uint32_t id, int status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

uint64_t ktlshd_now_us(void);

/* ---- daemon.c: the main loop ---- */
/* Watch fd on the main thread; handle(arg) runs when it is readable.
 * Sources live as long as the daemon runs. */
int ktlshd_loop_add(int fd, void (*handle)(void *arg), void *arg);

/* ---- netlink.c: the kernel's handshake upcall ([handshake]) ---- */
/* Join the "handshake" family's "tlshd" group and serve its requests on the
 * workers; call after the workers start, before privileges drop. A kernel
 * without the family is logged, not fatal: the rest keeps working. */
int ktlshd_netlink_start(const struct ktlsh_config *cfg);
/* --check-config: build [handshake]'s TLS contexts once, as a request would;
 * 0 or -errno with "file:line: ..." in err. */
int ktlshd_netlink_check(const struct ktlshd_runtime *rt, char *err, size_t errlen);

/* ---- proxy.c: [service NAME] sections (terminate / originate) ---- */
/* Bind every service's listener, register it with the main loop and start
 * the io_uring data pumps (after the workers, before privileges drop);
 * logs and returns -errno on failure. Nothing to do without services. */
int ktlshd_proxy_start(struct ktlshd_runtime *rt);
/* After the workers stopped: close the listeners, end every connection. */
void ktlshd_proxy_stop(void);
/* proxy.* items for `ktlshctl status` (none without services). */
void ktlshd_proxy_status(struct ktlsh_proto_status *st);

/* ---- main.c ---- */
extern uint64_t ktlshd_start_us;
extern const char *ktlshd_config_path;
/* Reload config + runtime; 0 on success, else -errno with err filled. */
int ktlshd_reload(char *err, size_t errlen);
/* One "key value" item of a status reply (dropped when the reply is full). */
void ktlshd_status_add(struct ktlsh_proto_status *st, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void ktlshd_status_fill(struct ktlsh_proto_status *st);

#endif /* KTLSHD_H */
