/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Post-handover helpers for a socket with kTLS installed.
 *
 * Once TLS_RX is set, a record that is not application data (an alert, a
 * NewSessionTicket, a KeyUpdate) makes plain read()/recv() fail with EIO;
 * it can only be read with recvmsg() and a TLS_GET_RECORD_TYPE control
 * message. These helpers do that, classify the record, and send control
 * records (close_notify, alerts) with TLS_SET_RECORD_TYPE.
 *
 * Returns: >= 0 on success, negative errno on failure; errno is not set.
 */
#ifndef KTLSH_RECORD_H
#define KTLSH_RECORD_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TLS content types (RFC 8446 5.1) */
#define KTLSH_CT_CHANGE_CIPHER_SPEC	20
#define KTLSH_CT_ALERT			21
#define KTLSH_CT_HANDSHAKE		22
#define KTLSH_CT_APPLICATION_DATA	23

/* Alert levels and the descriptions ktlsh names (RFC 8446 6) */
#define KTLSH_ALERT_WARNING		1
#define KTLSH_ALERT_FATAL		2
#define KTLSH_ALERT_CLOSE_NOTIFY	0

/* The largest record payload the kernel hands back (2^14 plus slack). */
#define KTLSH_RECORD_MAX		(16384 + 256)

enum ktlsh_rec_kind {
	KTLSH_REC_DATA = 0,
	KTLSH_REC_CLOSE_NOTIFY,
	KTLSH_REC_ALERT_WARNING,	/* a warning alert other than close_notify */
	KTLSH_REC_ALERT_FATAL,
	KTLSH_REC_NEW_SESSION_TICKET,	/* one or more NewSessionTicket messages */
	KTLSH_REC_KEY_UPDATE,		/* contains a KeyUpdate */
	KTLSH_REC_HANDSHAKE_OTHER,	/* another post-handshake message (e.g. CertificateRequest) */
	KTLSH_REC_MALFORMED,		/* truncated message, bad length, unknown content type */
};

struct ktlsh_record {
	uint8_t type;			/* TLS content type */
	enum ktlsh_rec_kind kind;
	uint8_t alert_level;		/* for alerts */
	uint8_t alert_desc;
	uint8_t key_update_request;	/* KeyUpdate: 1 if the peer asked us to update too */
	unsigned n_messages;		/* handshake messages in the record */
	size_t len;			/* payload bytes */
};

/* Classify a record payload already read. Pure: no I/O. */
void ktlsh_record_classify(uint8_t type, const void *buf, size_t len, struct ktlsh_record *rec);

const char *ktlsh_rec_kind_name(enum ktlsh_rec_kind kind);
const char *ktlsh_alert_name(uint8_t desc);

/* recvmsg() with a TLS_GET_RECORD_TYPE control message: reads (part of)
 * one record and reports its content type. Returns bytes read. */
ssize_t ktlsh_record_recv(int fd, void *buf, size_t len, int flags, uint8_t *type);

/* Send one record of the given content type with TLS_SET_RECORD_TYPE. */
ssize_t ktlsh_record_send(int fd, uint8_t type, const void *buf, size_t len, int flags);

int ktlsh_send_alert(int fd, uint8_t level, uint8_t desc);
int ktlsh_send_close_notify(int fd);

/* Read the pending non-data record (the one that made recv() fail with
 * EIO) and classify it. */
int ktlsh_recv_control(int fd, struct ktlsh_record *rec);

/*
 * recv() for a kTLS socket that handles control records the way an
 * application expects: NewSessionTicket is consumed and reading continues,
 * close_notify is end of file (0), a fatal alert is -ECONNRESET, a KeyUpdate
 * is -EKEYEXPIRED (the kernel cannot rekey the RX direction before Linux
 * 6.14; the connection cannot continue), anything malformed is -EBADMSG.
 * Only the failure path costs more than recv().
 */
ssize_t ktlsh_recv(int fd, void *buf, size_t len, int flags);

#ifdef __cplusplus
}
#endif
#endif /* KTLSH_RECORD_H */
