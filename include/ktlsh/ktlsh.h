/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libktlsh client API: hand a connected TCP socket to ktlshd, which performs
 * the TLS handshake with the identity its configuration names, installs the
 * traffic keys in the kernel (kTLS) and answers with the outcome. From then
 * on the application reads and writes plaintext on the same descriptor and
 * the kernel encrypts; the private keys never enter the application.
 *
 * The control socket is AF_UNIX SOCK_SEQPACKET; Documentation/protocol.md
 * specifies the messages, <ktlsh/proto.h> is their codec. The daemon
 * authorizes callers by SO_PEERCRED of the connection: nothing is sent for
 * that.
 *
 * Two ways to use it:
 *
 *  - ktlsh_handshake_fd(): blocking, one call per socket, safe from any
 *    thread and across fork(). Connections to the daemon are kept in a
 *    small process-wide pool.
 *  - ktlsh_submit() / ktlsh_complete() on a struct ktlsh_client: for event
 *    loops. Submit never blocks; ktlsh_client_fd() becomes readable when a
 *    reply is ready. Several handshakes may be in flight on one client;
 *    replies come back in completion order, matched by id. A client belongs
 *    to one thread (or event loop) at a time, like a liburing ring: callers
 *    that share one serialize their calls themselves. It also belongs to the
 *    process that opened it: after fork() the child may only close it.
 *
 * Every function that can fail returns 0 (or a count) on success and a
 * negative errno on failure, and never sets errno.
 *
 * Failing closed. A handshake succeeded only when the reply's status is 0:
 * then kTLS TX and RX are installed on the socket. On any other status, on a
 * channel error, or when no reply came, the socket may carry half a
 * handshake or TX keys already installed: the caller must close it and must
 * never send plaintext on it. While a request is in flight the daemon holds
 * a duplicate of the descriptor; the caller must not read, write or close
 * the socket until the reply arrives (or it gives up on the reply, and then
 * only close it).
 */
#ifndef KTLSH_H
#define KTLSH_H

#include <stdint.h>
#include <ktlsh/proto.h>
#include <ktlsh/record.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KTLSH_VERSION_STRING	"0.1.0"

/* Where the daemon listens unless told otherwise. A path that starts with
 * '@' names a Linux abstract socket ("@ktlshd" is "\0ktlshd"). */
#define KTLSH_SOCKET_DEFAULT	"/run/ktlsh/ktlshd.sock"
#define KTLSH_SOCKET_ENV	"KTLSH_SOCKET"

/*
 * How long the blocking calls wait for a reply: the request's timeout_ms
 * plus KTLSH_WAIT_MARGIN_MS (the daemon counts the deadline from its receipt
 * of the request and still has to send the reply), or KTLSH_WAIT_DEFAULT_MS
 * when timeout_ms is 0 and the daemon's default applies. ktlsh_status() and
 * ktlsh_reload() wait KTLSH_WAIT_DEFAULT_MS.
 */
#define KTLSH_WAIT_DEFAULT_MS	30000
#define KTLSH_WAIT_MARGIN_MS	1000

/* Idle connections ktlsh_handshake_fd() keeps for reuse, per process. */
#define KTLSH_POOL_MAX		8

/* struct ktlsh_request.flags: the protocol's FLAGS bits. */
#define KTLSH_F_TRUSTED_PEER	KTLSH_PROTO_F_TRUSTED_PEER	/* TLS 1.3: TLS_RX_EXPECT_NO_PAD */
#define KTLSH_F_TX_ZEROCOPY_RO	KTLSH_PROTO_F_TX_ZEROCOPY_RO	/* TLS_TX_ZEROCOPY_RO for sendfile() */

/*
 * What to do with one socket. NULL or "" strings and zero numbers mean
 * "the daemon's configuration decides".
 */
struct ktlsh_request {
	enum ktlsh_proto_role role;	/* which side the daemon plays on the socket */
	const char *identity;		/* config identity/profile; NULL: the role's default */
	const char *server_name;	/* client: SNI and the name to verify; server: expected client name */
	const char *const *alpn;	/* n_alpn protocols, in preference order */
	unsigned int n_alpn;		/* at most KTLSH_PROTO_ALPN_MAX */
	unsigned int timeout_ms;	/* handshake deadline; 0: the daemon's default */
	unsigned int flags;		/* KTLSH_F_* */
};

struct ktlsh_client;

/*
 * The socket path the calls below use for path: path itself, or when it is
 * NULL, $KTLSH_SOCKET (ignored in set-user-ID programs), or
 * KTLSH_SOCKET_DEFAULT. For messages; never NULL.
 */
const char *ktlsh_client_path(const char *path);

/*
 * Connect to the daemon (see ktlsh_client_path() for path). Fails closed:
 * -ECONNREFUSED or -ENOENT when no daemon listens, -EACCES when the socket
 * may not be opened, -ENAMETOOLONG for a path that does not fit, -EAGAIN
 * when the daemon's listen queue stayed full for 10 seconds. The socket is
 * close-on-exec. *cp is NULL on failure.
 */
KTLSH_MUST_CHECK int ktlsh_client_open(struct ktlsh_client **cp, const char *path);

/* Close the connection and free c (NULL is a no-op). The daemon cancels the
 * handshakes still in flight on it: their sockets must be closed. */
void ktlsh_client_close(struct ktlsh_client *c);

/* The descriptor to poll: readable when ktlsh_complete() has something to
 * say (a reply, or a channel error). It stays open until
 * ktlsh_client_close(), even after a channel error. */
int ktlsh_client_fd(const struct ktlsh_client *c);

/*
 * Send a HANDSHAKE_REQ for fd (a connected TCP socket; a duplicate travels
 * with SCM_RIGHTS). Never blocks. On success *id (if id is not NULL)
 * receives the request's id, which the reply will carry. Returns:
 *   -EAGAIN       the socket buffer is full: poll ktlsh_client_fd() for
 *                 POLLOUT, or complete some requests, then retry
 *   -EINVAL       a bad request (role, flags, an empty or malformed name,
 *                 more than KTLSH_PROTO_ALPN_MAX ALPN entries)
 *   -ENAMETOOLONG identity, server name or an ALPN entry over its limit
 *   -EBADF        fd is not a descriptor
 *   -EPIPE, -ECONNRESET, or an earlier channel error: see ktlsh_complete()
 *   -ESTALE       c was opened by the parent of this process (fork()):
 *                 close it and open a new one
 * Nothing was sent when it fails.
 */
KTLSH_MUST_CHECK int ktlsh_submit(struct ktlsh_client *c, int fd, const struct ktlsh_request *req,
				  uint32_t *id);

/*
 * Receive one reply without blocking. Returns 0 with *rep filled: rep->id is
 * the id ktlsh_submit() gave, rep->status the handshake's outcome (0: kTLS
 * is installed; -errno: it failed, rep->reason says why, and the socket
 * must be closed). rep->type is KTLSH_PROTO_HANDSHAKE_REPLY, or
 * KTLSH_PROTO_ERROR when the daemon could not take the request at all.
 *
 * -EAGAIN: no reply yet (rep is not touched). Any other negative value is a
 * failure of the control channel itself, and it is sticky: every later call
 * returns it. The client must then treat every socket still in flight on c
 * as failed (close them) and close c:
 *   -ECONNRESET, -EPIPE  the daemon went away
 *   -EBADMSG             a reply that does not decode, an unsolicited one,
 *                        or one that carried file descriptors (closed here)
 *   -EMSGSIZE            a reply larger than KTLSH_PROTO_MAX_MSG
 *   -EPROTO              the daemon speaks another protocol version, or
 *                        refused a message it could not attribute to a request
 * On a channel error rep->type is 0 and rep->status the error. -ESTALE as
 * for ktlsh_submit().
 */
KTLSH_MUST_CHECK int ktlsh_complete(struct ktlsh_client *c, struct ktlsh_proto_reply *rep);

/*
 * Blocking handshake: take an idle connection to the daemon at path from
 * the process-wide pool (or open one), submit, wait for the reply (see
 * KTLSH_WAIT_DEFAULT_MS) and put the connection back. Safe from any thread;
 * a child after fork() never uses its parent's connections. A pooled
 * connection the daemon closed (it was restarted) is replaced transparently.
 *
 * Returns rep->status when a reply arrived (0 means kTLS is installed on
 * fd), otherwise the channel error: -ECONNREFUSED/-ENOENT (no daemon),
 * -ETIMEDOUT (no reply in time; the connection is dropped, since a late
 * reply would confuse its next user), and those of ktlsh_submit() and
 * ktlsh_complete(). rep may be NULL; otherwise it always receives the
 * outcome, and rep->type is 0 when no reply arrived. Non-zero: close fd.
 */
KTLSH_MUST_CHECK int ktlsh_handshake_fd(const char *path, int fd, const struct ktlsh_request *req,
					struct ktlsh_proto_reply *rep);

/* Close the pool's idle connections (before a sandbox takes away connect(),
 * or for leak checkers). Connections in use are not affected. */
void ktlsh_pool_flush(void);

/*
 * STATUS_REQ on a connection of its own: st receives the daemon's status
 * items (in display order). Returns st->status when a reply arrived (0, or
 * e.g. -EACCES when the caller may not ask), else the channel error as for
 * ktlsh_handshake_fd(); st->type is 0 when no reply arrived. st is ~33 KiB:
 * allocate it.
 */
KTLSH_MUST_CHECK int ktlsh_status(const char *path, struct ktlsh_proto_status *st);

/*
 * RELOAD_REQ (what SIGHUP does) on a connection of its own. Returns
 * rep->status when a reply arrived: 0 when the new configuration was taken,
 * -EINVAL when it was refused (rep->reason: "file:line: what is wrong"; the
 * old one keeps serving), -EACCES when the caller may not reload; else the
 * channel error, with rep->type 0.
 */
KTLSH_MUST_CHECK int ktlsh_reload(const char *path, struct ktlsh_proto_reply *rep);

#ifdef __cplusplus
}
#endif
#endif /* KTLSH_H */
