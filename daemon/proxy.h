/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ktlshd proxy mode, internals shared by proxy.c (listeners, handshakes,
 * status) and proxy_pump.c (the io_uring data pump).
 *
 * A connection's life and who owns it at each step:
 *
 *   main thread  accepts on a service's listener, counts it against
 *                max_connections; terminate: hands the TLS socket to a
 *                handshake worker; originate: hands the plaintext socket to
 *                a pump, which connects out first.
 *   worker       the handshake (ktlshd_job, role server or client); its done
 *                hook keeps the socket (kTLS installed) or the socket and
 *                the SSL (fallback to user space); its released hook passes
 *                the connection to its pump.
 *   pump         connects the backend (terminate), sends the PROXY v2
 *                header, then moves bytes both ways until both directions
 *                are closed, then frees the connection.
 *
 * At any moment exactly one thread owns a connection; the hand-offs are a
 * locked queue plus an eventfd.
 */
#ifndef KTLSHD_PROXY_H
#define KTLSHD_PROXY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "ktlshd.h"

/* Bounded buffering: what one direction of one connection may hold. */
#define PROXY_BUF_SIZE		(32 * 1024)	/* copy path: ring buffer */
#define PROXY_PIPE_SIZE		(64 * 1024)	/* splice path: pipe capacity asked for */

enum proxy_stage {
	PROXY_STAGE_CONNECT,		/* pump: connecting the outbound socket */
	PROXY_STAGE_HANDSHAKE,		/* a worker has it */
	PROXY_STAGE_HEADER,		/* pump: sending the PROXY v2 header */
	PROXY_STAGE_DATA,		/* pump: moving bytes */
};

/* One io_uring request slot; at most one request in flight per slot. */
struct proxy_op {
	struct proxy_conn *c;		/* NULL: the pump's own (eventfd, tick) */
	uint8_t kind;			/* PROXY_OP_*, proxy_pump.c */
	uint8_t dir;
	uint8_t then;			/* a poll: what to retry when it fires */
	bool busy;
};

/* One direction: src's bytes to dst, through buf (copy) or a pipe (splice). */
struct proxy_dir {
	int src, dst;
	bool src_tls, dst_tls;		/* that end is the TLS side */
	uint8_t *buf;			/* PROXY_BUF_SIZE, copy path */
	uint64_t head, tail;		/* ring offsets: filled = tail - head */
	int pipe_r, pipe_w;		/* splice path */
	uint32_t pipe_cap, inpipe;
	bool splice;			/* this direction's data path */
	bool stalled;			/* splice: pipe full, wait for the writer */
	bool eof;			/* src sent its last byte (FIN, close_notify) */
	bool shut;			/* dst's write side is closed */
	struct proxy_op rd, wr;
	uint64_t bytes;			/* delivered to dst */
};

#define PROXY_UP	0	/* TLS side -> plaintext side */
#define PROXY_DOWN	1	/* plaintext side -> TLS side */

struct proxy_svc;
struct proxy_pump;

struct proxy_conn {
	struct proxy_svc *svc;
	const struct ktlsh_config_service *sc;	/* in rt->cfg */
	struct ktlshd_runtime *rt;		/* reference */
	struct proxy_pump *pump;
	struct proxy_conn *prev, *next;		/* the pump's list */
	struct proxy_conn *qnext;		/* hand-off queue */

	enum proxy_stage stage;
	int tls_fd, plain_fd;
	bool in_list;
	bool ktls;				/* keys in the kernel */
	SSL *ssl;				/* fallback: OpenSSL in user space */
	int hs_status;
	bool hs_ok;
	bool refused;				/* fallback = refuse said no (counted) */
	char fallback_why[256];

	/* Who and what, for logs and the PROXY header. */
	char peer[64];
	struct sockaddr_storage client_addr, local_addr;
	socklen_t client_len, local_len;
	int tls_version;
	char cipher[64];
	char sni[256];
	char alpn[256];

	uint64_t start_us, last_us, deadline_us;
	unsigned inflight;			/* io_uring requests not yet completed */
	bool closing;
	bool dead;				/* on the pump's list to free */
	bool reset;				/* abortive close (RST) */
	const char *end;			/* why it ended, for the log */

	struct proxy_dir dir[2];
	struct proxy_op misc;			/* connect, header, poll for connect */

	uint8_t *hdr;				/* PROXY v2 header being sent */
	size_t hdr_len, hdr_off;

	/* kTLS control records: recvmsg with TLS_GET_RECORD_TYPE, and the
	 * close_notify sendmsg with TLS_SET_RECORD_TYPE. */
	uint8_t *ctl_buf;
	struct msghdr ctl_msg;
	struct iovec ctl_iov;
	union {
		char buf[CMSG_SPACE(sizeof(uint8_t))];
		struct cmsghdr align;
	} ctl_cmsg;
	struct msghdr cn_msg;
	struct iovec cn_iov;
	uint8_t cn_alert[2];
	union {
		char buf[CMSG_SPACE(sizeof(uint8_t))];
		struct cmsghdr align;
	} cn_cmsg;
};

/* A configured service: one listening socket, for the daemon's lifetime. */
struct proxy_svc {
	char name[KTLSH_CONFIG_NAME_MAX + 1];
	char listen[96];
	int lfd;
	atomic_uint active;
	atomic_ullong connections;
	atomic_bool fallback_logged;
	uint64_t refuse_logged_us;		/* main thread only */
};

struct proxy_stats {
	atomic_ullong connections;		/* accepted */
	atomic_uint active;
	atomic_ullong fallback;			/* carried by OpenSSL in user space */
	atomic_ullong refused;			/* limit, no kernel TLS and fallback = refuse */
	atomic_ullong failed;			/* handshake or connect failed */
	atomic_ullong bytes_tls_to_plain;
	atomic_ullong bytes_plain_to_tls;
};
extern struct proxy_stats proxy_stats;

/* proxy_pump.c */
int proxy_pumps_start(unsigned n);
void proxy_pumps_stop(void);
/* Round robin. */
struct proxy_pump *proxy_pump_pick(void);
/* Hand a connection to its pump (any thread); the pump owns it from here. */
void proxy_pump_queue(struct proxy_conn *c);

/* proxy.c */
/* Submit the handshake for c (its tls_fd is connected); -errno if it
 * could not be submitted (c untouched, still the caller's). */
int proxy_handshake_submit(struct proxy_conn *c);
/* Free everything c holds and count it gone (any thread, c owned). */
void proxy_conn_free(struct proxy_conn *c);
/* The PROXY protocol v2 header for c into buf; its length, or 0. */
size_t proxy_v2_header(const struct proxy_conn *c, uint8_t *buf, size_t len);
/* "service X: kernel TLS cannot carry ...; serving in user space", once. */
void proxy_note_fallback(struct proxy_conn *c);

#endif /* KTLSHD_PROXY_H */
