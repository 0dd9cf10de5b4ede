/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ktlshd configuration: the data model of ktlshd.conf(5), its parser and the
 * lookups the daemon makes per request.
 *
 * A loaded configuration is immutable and reference counted. The daemon keeps
 * the current one in a struct ktlsh_config_slot; each handshake takes its own
 * reference when it starts, so a SIGHUP reload can swap in a new
 * configuration while handshakes begun under the old one finish with it.
 *
 * Functions that can fail return 0 (or a pointer) on success and a negative
 * errno on failure; none of them sets errno.
 */
#ifndef KTLSH_DAEMON_CONFIG_H
#define KTLSH_DAEMON_CONFIG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef KTLSH_MUST_CHECK
#define KTLSH_MUST_CHECK __attribute__((warn_unused_result))
#endif

#define KTLSH_CONFIG_DEFAULT_PATH	"/etc/ktlsh/ktlshd.conf"
#define KTLSH_CONFIG_DEFAULT_SOCKET	"/run/ktlsh/ktlshd.sock"

/* Defaults of [global] and of the TLS settings (see ktlshd.conf(5)). */
#define KTLSH_CONFIG_DEFAULT_MAX_INFLIGHT	4096
#define KTLSH_CONFIG_DEFAULT_TIMEOUT_MS		10000
#define KTLSH_CONFIG_DEFAULT_TICKET_ROTATION	3600	/* seconds */

/* Limits the parser enforces. */
#define KTLSH_CONFIG_NAME_MAX		32	/* identity and client names */
#define KTLSH_CONFIG_MAX_CERTS		8	/* cert/key pairs per section */
#define KTLSH_CONFIG_MAX_WORKERS	1024
#define KTLSH_CONFIG_MAX_INFLIGHT	1048576
#define KTLSH_CONFIG_HOSTNAME_MAX	253
#define KTLSH_CONFIG_MAX_CONNECTIONS	1048576	/* per [service] */

/* Defaults of [service NAME] (see ktlshd.conf(5)). */
#define KTLSH_CONFIG_DEFAULT_MAX_CONNECTIONS	1024
#define KTLSH_CONFIG_DEFAULT_IDLE_TIMEOUT_MS	300000

/* Protocol versions as on the wire; equal to OpenSSL's TLS1_2_VERSION and
 * TLS1_3_VERSION, without making every user of this header include OpenSSL. */
#define KTLSH_CONFIG_TLS12	0x0303
#define KTLSH_CONFIG_TLS13	0x0304

enum ktlsh_config_verify_client {
	KTLSH_CONFIG_VERIFY_NONE = 0,	/* no CertificateRequest */
	KTLSH_CONFIG_VERIFY_OPTIONAL,	/* ask; a certificate sent must verify */
	KTLSH_CONFIG_VERIFY_REQUIRED,	/* ask; fail without a valid one */
};

/*
 * A string value with the line that set it, so that whoever interprets it
 * later (the daemon loading a key, OpenSSL rejecting a cipher name) can
 * still point the operator at "file:line". str is NULL when unset.
 */
struct ktlsh_config_str {
	char *str;
	unsigned int line;
};

/* One certificate chain (PEM, leaf first) and its private key (PEM). */
struct ktlsh_config_certkey {
	struct ktlsh_config_str cert;
	struct ktlsh_config_str key;
};

/* Which callers (SO_PEERCRED of the control socket) may use a section. */
struct ktlsh_config_acl {
	bool any;		/* "*" given: every caller */
	uid_t *uids;
	size_t n_uids;
	gid_t *gids;
	size_t n_gids;
};

/* Settings identities (server role) and client profiles share. */
struct ktlsh_config_tls {
	struct ktlsh_config_certkey certs[KTLSH_CONFIG_MAX_CERTS];
	size_t n_certs;
	char **alpn;			/* protocol names, preferred first */
	size_t n_alpn;
	unsigned char *alpn_wire;	/* the same in RFC 7301 wire format */
	size_t alpn_wire_len;
	struct ktlsh_config_str ciphers;	/* TLS 1.2 list; NULL: OpenSSL's */
	struct ktlsh_config_str ciphersuites;	/* TLS 1.3 list; NULL: OpenSSL's */
	struct ktlsh_config_str groups;		/* NULL: OpenSSL's */
	int min_version;		/* KTLSH_CONFIG_TLS12 or _TLS13 */
	bool trusted_peer;		/* set TLS_RX_EXPECT_NO_PAD */
	struct ktlsh_config_str ca_file;
	struct ktlsh_config_str ca_dir;
	struct ktlsh_config_str crl_file;
	struct ktlsh_config_acl acl;
};

/* [identity NAME]: what the daemon presents as a server. */
struct ktlsh_config_identity {
	char *name;
	unsigned int line;		/* of the section header */
	struct ktlsh_config_tls tls;
	char **server_names;		/* lower case; "*.example.com" wildcards */
	size_t n_server_names;
	bool tickets;
	enum ktlsh_config_verify_client verify_client;
};

/* [client NAME]: how the daemon connects out as a client. */
struct ktlsh_config_client {
	char *name;
	unsigned int line;
	struct ktlsh_config_tls tls;
	bool insecure;			/* verify = insecure: no chain, no name */
	char *server_name;		/* default SNI and expected name, or NULL */
};

/* [service NAME]: ktlshd's proxy mode. */
enum ktlsh_config_service_mode {
	KTLSH_SERVICE_TERMINATE = 1,	/* TLS in, plaintext on to a backend */
	KTLSH_SERVICE_ORIGINATE,	/* plaintext in, TLS on to a remote service */
};

/* When the kernel cannot carry a connection (no tls ULP, or a negotiated
 * cipher it lacks). */
enum ktlsh_config_fallback {
	KTLSH_FALLBACK_USERSPACE = 0,	/* OpenSSL in user space, same service */
	KTLSH_FALLBACK_REFUSE,		/* close the connection */
};

/* How payload crosses the daemon on a kTLS connection. */
enum ktlsh_config_data_path {
	KTLSH_DATA_AUTO = 0,		/* splice into kTLS, copy out of it (measured best) */
	KTLSH_DATA_COPY,		/* io_uring recv/send through a bounded buffer */
	KTLSH_DATA_SPLICE,		/* io_uring splice through a pipe (no copy) */
};

/* An ADDR:PORT from the file, resolved when the file is loaded. */
struct ktlsh_config_addr {
	struct sockaddr_storage ss;
	socklen_t len;			/* 0: not set */
	char *host;			/* as written, without brackets or port */
	char *text;			/* as written */
	unsigned int line;
};

struct ktlsh_config_service {
	char *name;
	unsigned int line;		/* of the section header */
	enum ktlsh_config_service_mode mode;
	struct ktlsh_config_addr listen;
	struct ktlsh_config_addr target;	/* terminate: backend; originate: connect */
	/* terminate: the [identity] presented; originate: the [client]
	 * profile (trust, client certificate). Named by identity_name /
	 * client_name (NULL: the only one there is), resolved after the whole
	 * file is read; the pointers are into this configuration. */
	struct ktlsh_config_str identity_name;
	struct ktlsh_config_str client_name;
	const struct ktlsh_config_identity *identity;
	const struct ktlsh_config_client *client;
	/* originate: SNI and the name the certificate must carry. NULL: the
	 * client profile's server_name, else the host of connect. */
	char *server_name;
	struct ktlsh_config_tls tls;	/* only alpn is used */
	bool proxy_protocol;		/* terminate: PROXY v2 header to the backend */
	unsigned int max_connections;
	unsigned int idle_timeout_ms;	/* 0: never */
	enum ktlsh_config_fallback fallback;
	enum ktlsh_config_data_path data_path;
};

/* [global] */
struct ktlsh_config_global {
	char *socket;			/* path, or "@name" for an abstract socket */
	unsigned int workers;		/* 0: one per online CPU */
	int log_level;			/* syslog priority: LOG_ERR .. LOG_DEBUG */
	unsigned int max_inflight;
	unsigned int handshake_timeout_ms;
	char *user;			/* NULL: keep running as started */
	uid_t uid;
	gid_t gid;
	unsigned int ticket_rotation_s;
	struct ktlsh_config_str ticket_key_file;
};

/*
 * [handshake]: serve the kernel's handshake upcall (generic netlink family
 * "handshake", Linux 6.5+) for in-kernel TLS consumers such as NFS
 * (xprtsec=tls|mtls) and NVMe/TCP, the way tlshd(8) does. The per-role
 * settings mirror tlshd.conf's [authenticate.client] and
 * [authenticate.server]; keyrings mirrors [authenticate] keyrings.
 */
struct ktlsh_config_hs_role {
	struct ktlsh_config_certkey certkey;	/* cert.str NULL: none */
	struct ktlsh_config_str ca_file;	/* NULL with ca_dir NULL: system store */
	struct ktlsh_config_str ca_dir;
	struct ktlsh_config_str crl_file;
};

struct ktlsh_config_handshake {
	unsigned int line;		/* of the [handshake] header; 0: none */
	bool enabled;			/* a section with enabled = yes (the default) */
	char **keyrings;		/* names or serials, linked in at start */
	size_t n_keyrings;
	unsigned int timeout_ms;	/* when the kernel gives none; 0: [global] */
	enum ktlsh_config_verify_client verify_client;	/* server role */
	struct ktlsh_config_str ciphersuites;	/* TLS 1.3 list; NULL: OpenSSL's */
	struct ktlsh_config_str groups;		/* NULL: OpenSSL's */
	struct ktlsh_config_hs_role client;
	struct ktlsh_config_hs_role server;
};

struct ktlsh_config_sni;		/* sorted SNI index, private */

struct ktlsh_config {
	atomic_uint refs;
	char *path;			/* as given to the loader */
	char *warnings;			/* "file:line: ..." lines, or NULL */
	struct ktlsh_config_global global;
	struct ktlsh_config_handshake handshake;	/* [handshake] */
	struct ktlsh_config_identity **identities;	/* in file order */
	size_t n_identities;
	struct ktlsh_config_client **clients;
	size_t n_clients;
	struct ktlsh_config_sni *sni;
	size_t n_sni;
	struct ktlsh_config_service **services;	/* in file order */
	size_t n_services;
};

/*
 * Parse and check a configuration file. On success *out holds a new
 * configuration with one reference and err is "" (warnings, if any, are in
 * (*out)->warnings). On failure *out is NULL and err (if errlen > 0) holds
 * every problem found (up to 100), one "file:line: message" per line, in
 * line order, without a final newline (as many whole lines as fit, or the
 * first cut short); the return is -EINVAL for a configuration
 * error, the negated errno of opening or reading the file (-ENOENT,
 * -EACCES, ...), -EFBIG for a file over 1 MiB, or -ENOMEM.
 *
 * Relative paths in the file are taken relative to the file's directory.
 * Files named in it (certificates, keys, CA file and directory, CRL, ticket
 * key file) must exist and be readable by the caller; user and group names
 * are resolved now.
 */
KTLSH_MUST_CHECK int ktlsh_config_load(const char *path,
				       struct ktlsh_config **out,
				       char *err, size_t errlen);

/* The same for a configuration held in memory (len bytes, need not be
 * NUL-terminated); name is used in messages and its directory as the base of
 * relative paths. */
KTLSH_MUST_CHECK int ktlsh_config_load_buffer(const char *name,
					      const char *buf, size_t len,
					      struct ktlsh_config **out,
					      char *err, size_t errlen);

/* Take and drop a reference; the last put frees. put(NULL) is a no-op. */
struct ktlsh_config *ktlsh_config_get(struct ktlsh_config *cfg);
void ktlsh_config_put(struct ktlsh_config *cfg);

/* Sections by name (exact, case-sensitive); NULL if there is none. */
const struct ktlsh_config_identity *
ktlsh_config_identity(const struct ktlsh_config *cfg, const char *name);
const struct ktlsh_config_client *
ktlsh_config_client(const struct ktlsh_config *cfg, const char *name);
const struct ktlsh_config_service *
ktlsh_config_service(const struct ktlsh_config *cfg, const char *name);

/*
 * The identity to present for a ClientHello's server name: the identity
 * whose server_names contain sni exactly (case-insensitively), else one
 * that has a matching one-label wildcard ("*.example.com" matches
 * "www.example.com", not "example.com" or "a.b.example.com"), else dflt
 * (the identity the request named, may be NULL). sni may be NULL or "".
 * The identity returned may not be one the caller is allowed to use: check
 * ktlsh_config_may_use() on the result, not only on dflt.
 */
const struct ktlsh_config_identity *
ktlsh_config_identity_for_sni(const struct ktlsh_config *cfg,
			      const struct ktlsh_config_identity *dflt,
			      const char *sni);

/*
 * May the caller with these credentials (SO_PEERCRED) use the identity or
 * client profile? 0 if so, -EACCES if not. uid 0 always may (it can read
 * the keys anyway); otherwise the uid must be in allow_uids or gid in
 * allow_gids, or either lists "*". Only the primary gid is considered.
 */
int ktlsh_config_may_use(const struct ktlsh_config *cfg,
			 const struct ktlsh_config_identity *id,
			 uid_t uid, gid_t gid);
int ktlsh_config_client_may_use(const struct ktlsh_config *cfg,
				const struct ktlsh_config_client *cl,
				uid_t uid, gid_t gid);

/*
 * The daemon's current configuration. A plain atomic pointer cannot be
 * read and referenced in one step (the reload could free the object in
 * between), so readers take the reference under a mutex that is held only
 * for the pointer copy and the increment.
 */
struct ktlsh_config_slot {
	pthread_mutex_t lock;
	struct ktlsh_config *cur;
};

/* Initialize with cfg (may be NULL); the slot takes over the reference. */
void ktlsh_config_slot_init(struct ktlsh_config_slot *slot,
			    struct ktlsh_config *cfg);
/* A new reference to the current configuration (NULL if none): put it. */
struct ktlsh_config *ktlsh_config_slot_get(struct ktlsh_config_slot *slot);
/* Install cfg (taking over its reference) and drop the slot's old one;
 * handshakes holding the old configuration keep it until they put it. */
void ktlsh_config_slot_replace(struct ktlsh_config_slot *slot,
			       struct ktlsh_config *cfg);
void ktlsh_config_slot_destroy(struct ktlsh_config_slot *slot);

#endif /* KTLSH_DAEMON_CONFIG_H */
