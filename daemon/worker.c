// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Workers: one thread and one epoll loop each, many nonblocking handshakes
 * per loop, a deadline per handshake kept in a min-heap so the loop's
 * timeout is the nearest one.
 *
 * Why epoll and not io_uring here: a handshake is a few small flights
 * driven by OpenSSL reading and writing the socket itself (readiness, not
 * completion); with io_uring OpenSSL would need a memory BIO and an extra
 * copy per flight for no saving in system calls at this size. The proxy's
 * bulk data path is where io_uring pays, and uses it.
 *
 * A job is owned by exactly one worker from submission to reply; after the
 * reply nothing about the connection remains here.
 */
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <openssl/x509v3.h>

#include "ktlshd.h"

bool ktlshd_handshake_only;

struct ktlshd_worker {
	pthread_t thread;
	unsigned index;
	int epfd;
	int evfd;			/* new jobs, stop */
	pthread_mutex_t lock;		/* protects queue and stopping */
	struct ktlshd_job *queue_head, *queue_tail;
	bool stopping;

	/* owned by the worker thread */
	struct ktlshd_job **heap;
	size_t heap_len, heap_cap;
	size_t peak;			/* most handshakes at once since the last trim */
	uint64_t idle_since_us;		/* when the heap last became empty */
};

/*
 * After a burst, give the memory it freed back to the kernel. glibc keeps
 * what a burst freed in its arenas (the buffers, SSL objects and jobs of
 * every handshake that was in flight at once: about 47 KiB each), so a
 * daemon that once held thousands of silent connections would otherwise
 * keep that RSS for good. A worker that has been idle (nothing in flight)
 * for KTLSHD_TRIM_IDLE_US after holding at least KTLSHD_TRIM_MIN_PEAK
 * handshakes at once calls malloc_trim(0), which trims every arena (the
 * main thread's, where jobs are allocated, too). A steady trickle never
 * reaches the peak, so it never pays for the trim and the page faults that
 * follow one.
 */
#define KTLSHD_TRIM_IDLE_US	100000
#define KTLSHD_TRIM_MIN_PEAK	32

static struct ktlshd_worker *ktlshd_workers;
static unsigned ktlshd_n_workers;
static atomic_uint ktlshd_rr;
static int ktlshd_job_idx = -1;

uint64_t ktlshd_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

struct ktlshd_job *ktlshd_job_of(const SSL *ssl)
{
	return ktlshd_job_idx < 0 ? NULL : SSL_get_ex_data(ssl, ktlshd_job_idx);
}

unsigned ktlshd_workers_count(void)
{
	return ktlshd_n_workers;
}

SSL *ktlshd_job_keep_ssl(struct ktlshd_job *job)
{
	SSL *ssl = job->hs ? ktlsh_hs_ssl(job->hs) : NULL;

	if (!ssl || !SSL_up_ref(ssl))
		return NULL;
	job->user_space = true;
	/* ktlsh_hs_free() drops the handshake's reference; its message and
	 * info callbacks point into the handshake, which goes with it. */
	SSL_set_msg_callback(ssl, NULL);
	SSL_set_info_callback(ssl, NULL);
	return ssl;
}

void ktlshd_job_free(struct ktlshd_job *job)
{
	if (!job)
		return;
	if (job->fd >= 0)
		close(job->fd);
	ktlshd_conn_put(job->conn);
	ktlshd_runtime_put(job->rt);
	free(job);
}

/* ---- deadline heap ---- */

static void ktlshd_heap_swap(struct ktlshd_worker *w, size_t a, size_t b)
{
	struct ktlshd_job *t = w->heap[a];

	w->heap[a] = w->heap[b];
	w->heap[b] = t;
	w->heap[a]->heap_idx = a;
	w->heap[b]->heap_idx = b;
}

static void ktlshd_heap_up(struct ktlshd_worker *w, size_t i)
{
	while (i && w->heap[(i - 1) / 2]->deadline_us > w->heap[i]->deadline_us) {
		ktlshd_heap_swap(w, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void ktlshd_heap_down(struct ktlshd_worker *w, size_t i)
{
	size_t l, r, m;

	for (;;) {
		l = 2 * i + 1;
		r = l + 1;
		m = i;
		if (l < w->heap_len && w->heap[l]->deadline_us < w->heap[m]->deadline_us)
			m = l;
		if (r < w->heap_len && w->heap[r]->deadline_us < w->heap[m]->deadline_us)
			m = r;
		if (m == i)
			return;
		ktlshd_heap_swap(w, i, m);
		i = m;
	}
}

static int ktlshd_heap_push(struct ktlshd_worker *w, struct ktlshd_job *job)
{
	struct ktlshd_job **h;

	if (w->heap_len == w->heap_cap) {
		size_t cap = w->heap_cap ? 2 * w->heap_cap : 256;

		h = realloc(w->heap, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		w->heap = h;
		w->heap_cap = cap;
	}
	job->heap_idx = w->heap_len;
	w->heap[w->heap_len++] = job;
	ktlshd_heap_up(w, job->heap_idx);
	if (w->heap_len > w->peak)
		w->peak = w->heap_len;
	return 0;
}

static void ktlshd_heap_remove(struct ktlshd_worker *w, struct ktlshd_job *job)
{
	size_t i = job->heap_idx;

	w->heap_len--;
	if (i != w->heap_len) {
		ktlshd_heap_swap(w, i, w->heap_len);
		ktlshd_heap_down(w, i);
		ktlshd_heap_up(w, i);
	}
}

/* ---- replies ---- */

/* Certificate text goes into a protocol "text" field: printable ASCII only,
 * so a truncated multi-byte sequence cannot make the reply unencodable. */
static void ktlshd_text_copy(char *dst, size_t len, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < len && src[i]; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || (unsigned char)src[i] >= 0x7f ? '?' : src[i];
	if (len)
		dst[i] = '\0';
}

static int ktlshd_is_token(const char *s)
{
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return 0;
	return 1;
}

static void ktlshd_reply_peer(struct ktlsh_proto_reply *rep, SSL *ssl)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	GENERAL_NAMES *sans;
	char buf[KTLSH_PROTO_SUBJECT_LEN];
	unsigned int md_len = sizeof(rep->peer_fingerprint);
	BIO *bio;
	int i, n;

	if (!cert)
		return;
	bio = BIO_new(BIO_s_mem());
	if (bio) {
		X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0,
				   XN_FLAG_RFC2253);
		n = BIO_read(bio, buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = '\0';
		ktlshd_text_copy(rep->peer_subject, sizeof(rep->peer_subject), buf);
		BIO_free(bio);
	}
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (i = 0; sans && i < sk_GENERAL_NAME_num(sans) && rep->n_peer_sans < KTLSH_PROTO_SAN_MAX;
	     i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		char ip[INET6_ADDRSTRLEN];

		if (gn->type == GEN_DNS) {
			snprintf(buf, sizeof(buf), "DNS:%.*s", ASN1_STRING_length(gn->d.dNSName),
				 (const char *)ASN1_STRING_get0_data(gn->d.dNSName));
		} else if (gn->type == GEN_IPADD && ASN1_STRING_length(gn->d.iPAddress) == 4) {
			inet_ntop(AF_INET, ASN1_STRING_get0_data(gn->d.iPAddress), ip, sizeof(ip));
			snprintf(buf, sizeof(buf), "IP:%s", ip);
		} else if (gn->type == GEN_IPADD && ASN1_STRING_length(gn->d.iPAddress) == 16) {
			inet_ntop(AF_INET6, ASN1_STRING_get0_data(gn->d.iPAddress), ip, sizeof(ip));
			snprintf(buf, sizeof(buf), "IP:%s", ip);
		} else {
			continue;
		}
		ktlshd_text_copy(rep->peer_san[rep->n_peer_sans], KTLSH_PROTO_NAME_LEN, buf);
		rep->n_peer_sans++;
	}
	GENERAL_NAMES_free(sans);
	if (X509_digest(cert, EVP_sha256(), rep->peer_fingerprint, &md_len) == 1 &&
	    md_len == sizeof(rep->peer_fingerprint))
		rep->has_peer_fingerprint = true;
}

/* The default completion: a HANDSHAKE_REPLY on the control connection,
 * built now and sent once the daemon's copy of the socket is closed. */
static void ktlshd_job_reply_ctl(struct ktlshd_job *job, int status)
{
	const struct ktlsh_hs_info *info = job->hs ? ktlsh_hs_info(job->hs) : NULL;
	/* About 9 KiB (room for 32 SANs): malloc, not calloc, since
	 * ktlsh_proto_reply_init() clears it anyway. */
	struct ktlsh_proto_reply *rep = malloc(sizeof(*rep));
	uint64_t us = ktlshd_now_us() - job->start_us;

	job->reply = rep;
	if (!rep)
		return;
	ktlsh_proto_reply_init(rep, KTLSH_PROTO_HANDSHAKE_REPLY, job->id);
	if (info) {
		ktlshd_text_copy(rep->reason, sizeof(rep->reason), info->reason);
		rep->alert_sent = info->alert_sent;
		rep->alert_received = info->alert_received;
		if (info->cipher_name[0] && status != -ETIMEDOUT) {
			rep->tls_version = (uint32_t)info->version;
			if (ktlshd_is_token(info->cipher_name))
				snprintf(rep->cipher, sizeof(rep->cipher), "%s", info->cipher_name);
			if (ktlshd_is_token(info->group) && strcmp(info->group, "-"))
				snprintf(rep->group, sizeof(rep->group), "%s", info->group);
			if (ktlshd_is_token(info->alpn))
				snprintf(rep->alpn, sizeof(rep->alpn), "%s", info->alpn);
			rep->resumed = info->resumed;
		}
		if (!status) {
			rep->tx_seq = info->tx_seq;
			rep->rx_seq = info->rx_seq;
		}
		ktlshd_reply_peer(rep, ktlsh_hs_ssl(job->hs));
	}
	if (status == -ETIMEDOUT)
		snprintf(rep->reason, sizeof(rep->reason), "handshake timed out after %llu ms",
			 (unsigned long long)(us / 1000));
	else if (status == -EOPNOTSUPP && ktlshd_handshake_only)
		snprintf(rep->reason, sizeof(rep->reason),
			 "handshake completed; not offloaded (ktlshd --handshake-only)");
	rep->handshake_us = us;
	rep->status = status;	/* fail closed: only here does it become 0 */
}

static void ktlshd_job_finish(struct ktlshd_worker *w, struct ktlshd_job *job, int status)
{
	const struct ktlsh_hs_info *info = job->hs ? ktlsh_hs_info(job->hs) : NULL;
	uint64_t us = ktlshd_now_us() - job->start_us;
	enum ktlshd_outcome outcome = ktlshd_outcome_of(status);
	/* Empty when the request came in below log level info (ctl.c). */
	const char *peer = job->peer[0] ? job->peer : "-";

	ktlshd_heap_remove(w, job);
	if (job->hs && job->role == KTLSH_ROLE_SERVER && !job->server_name[0]) {
		const char *sni = SSL_get_servername(ktlsh_hs_ssl(job->hs), TLSEXT_NAMETYPE_host_name);

		if (sni)
			ktlshd_text_copy(job->server_name, sizeof(job->server_name), sni);
	}
	if (job->events)
		(void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, job->fd, NULL);
	/* The completion may keep the socket (it sets job->fd to -1), or the
	 * SSL to carry on in user space (ktlshd_job_keep_ssl: logged as such). */
	if (job->done)
		job->done(job, status);
	else
		ktlshd_job_reply_ctl(job, status);
	if (status == 0 || (status == -EOPNOTSUPP && ktlshd_handshake_only) || job->user_space)
		log_info("handshake ok peer=%s role=%s identity=%s sni=%s version=%s cipher=%s "
			 "resumed=%d ms=%.3f%s", peer,
			 job->role == KTLSH_ROLE_SERVER ? "server" : "client",
			 job->identity[0] ? job->identity : "-",
			 job->server_name[0] ? job->server_name : "-",
			 info && info->version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2",
			 info ? info->cipher_name : "-", info ? info->resumed : 0, us / 1000.0,
			 !status ? "" : !job->user_space ? " (not installed)" :
			 " (kernel TLS not installed: continuing in user space)");
	else
		log_info("handshake failed peer=%s role=%s identity=%s sni=%s ms=%.3f err=%s "
			 "reason=\"%s\"", peer,
			 job->role == KTLSH_ROLE_SERVER ? "server" : "client",
			 job->identity[0] ? job->identity : "-",
			 job->server_name[0] ? job->server_name : "-", us / 1000.0,
			 strerror(-status), status == -ETIMEDOUT ? "timed out" :
			 info ? info->reason : "");
	atomic_fetch_add(&ktlshd_stats.outcomes[outcome], 1);
	if (info && info->resumed && !status)
		atomic_fetch_add(&ktlshd_stats.resumed, 1);

	if (job->hs)
		SSL_set_ex_data(ktlsh_hs_ssl(job->hs), ktlshd_job_idx, NULL);

	/* Give the socket back as found, then let go of it before replying: when
	 * the application reads the reply the daemon holds nothing of it. */
	ktlsh_hs_free(job->hs);
	job->hs = NULL;
	if (job->fd >= 0)
		close(job->fd);
	job->fd = -1;
	/* Out of flight before the caller can read its answer, so that status
	 * asked right after a reply never counts this handshake. */
	atomic_fetch_sub(&ktlshd_stats.inflight, 1);
	if (job->reply) {
		/* Not wiped: nothing in a reply is secret (the caller was just
		 * sent all of it), and clearing its 9 KiB again costs more than
		 * ktlshd's whole parsing of the key log. */
		(void)ktlshd_conn_send_reply(job->conn, job->reply);
		free(job->reply);
		job->reply = NULL;
	} else if (!job->done) {
		/* No memory for the full reply. The caller still gets its answer,
		 * and fails closed: a socket it is never told about would sit in
		 * its hands until its own deadline. */
		ktlshd_reply_refused(job->conn, job->id, status ? status : -ENOMEM,
				     "ktlshd out of memory while replying");
	}
	if (job->released)
		job->released(job);
	ktlshd_job_free(job);
}

static void ktlshd_job_step(struct ktlshd_worker *w, struct ktlshd_job *job)
{
	struct epoll_event ev;
	short want;
	int ret;

	ret = ktlsh_hs_step(job->hs);
	if (ret == -EAGAIN) {
		want = ktlsh_hs_events(job->hs);
		if (want != job->events) {
			ev.events = want == POLLOUT ? EPOLLOUT : EPOLLIN;
			ev.data.ptr = job;
			if (epoll_ctl(w->epfd, job->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, job->fd,
				      &ev) < 0) {
				ktlshd_job_finish(w, job, -errno);
				return;
			}
			job->events = want;
		}
		return;
	}
	if (ret == 0)
		ret = ktlshd_handshake_only ? -EOPNOTSUPP : ktlsh_hs_install(job->hs);
	ktlshd_job_finish(w, job, ret);
}

static void ktlshd_job_start(struct ktlshd_worker *w, struct ktlshd_job *job)
{
	struct ktlsh_hs_params params = {
		.role = job->role,
		.server_name = job->server_name[0] ? job->server_name : NULL,
		.flags = (job->flags & KTLSH_PROTO_F_TRUSTED_PEER ? KTLSH_HS_TRUSTED_PEER : 0) |
			 (job->flags & KTLSH_PROTO_F_TX_ZEROCOPY_RO ? KTLSH_HS_TX_ZEROCOPY_RO : 0),
		.trace = ktlshd_log_level >= LOG_DEBUG ? ktlshd_log_trace : NULL,
	};
	SSL *ssl;
	int ret;

	job->events = 0;
	if (ktlshd_heap_push(w, job)) {
		/* Not in the heap: reply without the heap removal. */
		log_err("worker %u: out of memory for a handshake", w->index);
		job->heap_idx = 0;
		atomic_fetch_add(&ktlshd_stats.outcomes[KTLSHD_FAIL_OTHER], 1);
		atomic_fetch_sub(&ktlshd_stats.inflight, 1);
		ktlshd_reply_error(job->conn, job->id, -ENOMEM, "out of memory");
		if (job->released)
			job->released(job);	/* done never ran: nothing was kept */
		ktlshd_job_free(job);
		return;
	}
	ret = ktlsh_hs_new(&job->hs, job->ctx, job->fd, &params);
	if (ret) {
		ktlshd_job_finish(w, job, ret);
		return;
	}
	ssl = ktlsh_hs_ssl(job->hs);
	SSL_set_ex_data(ssl, ktlshd_job_idx, job);
	if (job->role == KTLSH_ROLE_CLIENT && job->alpn_wire_len &&
	    SSL_set_alpn_protos(ssl, (const unsigned char *)job->alpn_wire,
				(unsigned)job->alpn_wire_len)) {
		ktlshd_job_finish(w, job, -EINVAL);
		return;
	}
	if (job->prepare) {
		ret = job->prepare(job, ssl);
		if (ret) {
			ktlshd_job_finish(w, job, ret);
			return;
		}
	}
	ktlshd_job_step(w, job);
}

static void ktlshd_worker_drain_queue(struct ktlshd_worker *w)
{
	struct ktlshd_job *job, *next;
	uint64_t v;

	(void)!read(w->evfd, &v, sizeof(v));
	pthread_mutex_lock(&w->lock);
	job = w->queue_head;
	w->queue_head = w->queue_tail = NULL;
	pthread_mutex_unlock(&w->lock);
	for (; job; job = next) {
		next = job->next;
		job->next = NULL;
		ktlshd_job_start(w, job);
	}
}

static void *ktlshd_worker_main(void *arg)
{
	struct ktlshd_worker *w = arg;
	struct epoll_event evs[64];
	uint64_t now;
	int i, n, timeout;
	bool stopping;

	for (;;) {
		pthread_mutex_lock(&w->lock);
		stopping = w->stopping && !w->queue_head;
		pthread_mutex_unlock(&w->lock);
		if (stopping && !w->heap_len)
			break;
		timeout = -1;
		if (w->heap_len) {
			now = ktlshd_now_us();
			timeout = w->heap[0]->deadline_us <= now ? 0 :
				  (int)((w->heap[0]->deadline_us - now + 999) / 1000);
		} else if (w->peak >= KTLSHD_TRIM_MIN_PEAK) {
			now = ktlshd_now_us();
			if (now - w->idle_since_us >= KTLSHD_TRIM_IDLE_US) {
				log_debug("worker %u: idle after %zu handshakes at once; returning "
					  "freed memory (malloc_trim)", w->index, w->peak);
				(void)malloc_trim(0);
				w->peak = 0;
			} else {
				timeout = (int)((w->idle_since_us + KTLSHD_TRIM_IDLE_US - now +
						 999) / 1000);
			}
		}
		n = epoll_wait(w->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
		if (n < 0 && errno != EINTR) {
			log_err("worker %u: epoll_wait: %s", w->index, strerror(errno));
			break;
		}
		for (i = 0; i < n; i++) {
			if (!evs[i].data.ptr)
				ktlshd_worker_drain_queue(w);
			else
				ktlshd_job_step(w, evs[i].data.ptr);
		}
		now = ktlshd_now_us();
		while (w->heap_len && w->heap[0]->deadline_us <= now)
			ktlshd_job_finish(w, w->heap[0], -ETIMEDOUT);
		if (w->heap_len)
			w->idle_since_us = 0;
		else if (!w->idle_since_us)
			w->idle_since_us = now;
	}
	return NULL;
}

int ktlshd_workers_start(unsigned n)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	unsigned i;
	int ret;

	ktlshd_job_idx = SSL_get_ex_new_index(0, "ktlshd_job", NULL, NULL, NULL);
	if (ktlshd_job_idx < 0)
		return -ENOMEM;
	ktlshd_workers = calloc(n, sizeof(*ktlshd_workers));
	if (!ktlshd_workers)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct ktlshd_worker *w = &ktlshd_workers[i];

		w->index = i;
		pthread_mutex_init(&w->lock, NULL);
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w->epfd < 0 || w->evfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) < 0)
			return -errno;
		ret = pthread_create(&w->thread, NULL, ktlshd_worker_main, w);
		if (ret)
			return -ret;
		ktlshd_n_workers++;
	}
	return 0;
}

int ktlshd_workers_submit(struct ktlshd_job *job, unsigned max_inflight)
{
	struct ktlshd_worker *w;
	uint64_t one = 1;

	if (atomic_fetch_add(&ktlshd_stats.inflight, 1) >= max_inflight) {
		atomic_fetch_sub(&ktlshd_stats.inflight, 1);
		return -EBUSY;
	}
	w = &ktlshd_workers[atomic_fetch_add(&ktlshd_rr, 1) % ktlshd_n_workers];
	job->next = NULL;
	pthread_mutex_lock(&w->lock);
	if (w->queue_tail)
		w->queue_tail->next = job;
	else
		w->queue_head = job;
	w->queue_tail = job;
	pthread_mutex_unlock(&w->lock);
	(void)!write(w->evfd, &one, sizeof(one));
	return 0;
}

void ktlshd_workers_stop(void)
{
	uint64_t one = 1;
	unsigned i;

	for (i = 0; i < ktlshd_n_workers; i++) {
		pthread_mutex_lock(&ktlshd_workers[i].lock);
		ktlshd_workers[i].stopping = true;
		pthread_mutex_unlock(&ktlshd_workers[i].lock);
		(void)!write(ktlshd_workers[i].evfd, &one, sizeof(one));
	}
	for (i = 0; i < ktlshd_n_workers; i++) {
		pthread_join(ktlshd_workers[i].thread, NULL);
		close(ktlshd_workers[i].epfd);
		close(ktlshd_workers[i].evfd);
		free(ktlshd_workers[i].heap);
		pthread_mutex_destroy(&ktlshd_workers[i].lock);
	}
	free(ktlshd_workers);
	ktlshd_workers = NULL;
	ktlshd_n_workers = 0;
}
