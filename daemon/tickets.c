// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Session ticket keys, shared by every worker and every identity so that a
 * client resumes on whichever worker it reaches. Keys rotate on a schedule
 * (the newest encrypts, the previous one still decrypts and asks for a new
 * ticket), or come from a file the operator rotates across a fleet.
 *
 * Ticket key file: a multiple of 80 bytes; each key is name (16), AES-256
 * key (32), HMAC-SHA256 key (32). The first key encrypts, all decrypt.
 * (nginx's 80-byte files order the two keys the other way round: not
 * interchangeable.)
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ktlshd.h"

#define KTLSHD_TICKET_KEYS_MAX	8

struct ktlshd_ticket_key {
	uint8_t name[16];
	uint8_t aes[32];
	uint8_t hmac[32];
};

static struct {
	pthread_rwlock_t lock;
	struct ktlshd_ticket_key keys[KTLSHD_TICKET_KEYS_MAX];	/* [0] encrypts */
	size_t n;
	uint64_t rotated_us;
	bool from_file;
	struct timespec file_mtime;
} ktlshd_tk = { .lock = PTHREAD_RWLOCK_INITIALIZER };

static int ktlshd_tickets_generate(void)
{
	struct ktlshd_ticket_key k;
	int ret = 0;

	if (RAND_bytes((unsigned char *)&k, sizeof(k)) != 1)
		return -EIO;
	pthread_rwlock_wrlock(&ktlshd_tk.lock);
	/* Keep one previous key so tickets issued just before rotation resume. */
	ktlshd_tk.keys[1] = ktlshd_tk.keys[0];
	ktlshd_tk.keys[0] = k;
	ktlshd_tk.n = ktlshd_tk.n ? 2 : 1;
	ktlshd_tk.rotated_us = ktlshd_now_us();
	ktlshd_tk.from_file = false;
	pthread_rwlock_unlock(&ktlshd_tk.lock);
	explicit_bzero(&k, sizeof(k));
	return ret;
}

static int ktlshd_tickets_load_file(const char *path, unsigned line)
{
	struct ktlshd_ticket_key keys[KTLSHD_TICKET_KEYS_MAX];
	struct stat st;
	ssize_t n;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		log_err("ticket key file %s (config line %u): %s", path, line, strerror(-ret));
		return ret;
	}
	ret = -EINVAL;
	if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size % 80 ||
	    (size_t)st.st_size > sizeof(keys)) {
		log_err("ticket key file %s: size must be a multiple of 80 bytes, at most %zu",
			path, sizeof(keys));
		goto out;
	}
	n = read(fd, keys, (size_t)st.st_size);
	if (n != st.st_size) {
		log_err("ticket key file %s: short read", path);
		goto out;
	}
	pthread_rwlock_wrlock(&ktlshd_tk.lock);
	memcpy(ktlshd_tk.keys, keys, (size_t)n);
	ktlshd_tk.n = (size_t)n / 80;
	ktlshd_tk.from_file = true;
	ktlshd_tk.file_mtime = st.st_mtim;
	ktlshd_tk.rotated_us = ktlshd_now_us();
	pthread_rwlock_unlock(&ktlshd_tk.lock);
	log_info("loaded %zu session ticket key(s) from %s", (size_t)n / 80, path);
	ret = 0;
out:
	explicit_bzero(keys, sizeof(keys));
	close(fd);
	return ret;
}

int ktlshd_tickets_reload(const struct ktlsh_config *cfg)
{
	const struct ktlsh_config_str *f = &cfg->global.ticket_key_file;

	if (f->str)
		return ktlshd_tickets_load_file(f->str, f->line);
	if (ktlshd_tk.from_file || !ktlshd_tk.n)
		return ktlshd_tickets_generate();
	return 0;
}

int ktlshd_tickets_init(const struct ktlsh_config *cfg)
{
	return ktlshd_tickets_reload(cfg);
}

void ktlshd_tickets_tick(const struct ktlsh_config *cfg)
{
	const struct ktlsh_config_str *f = &cfg->global.ticket_key_file;
	uint64_t period_us = (uint64_t)cfg->global.ticket_rotation_s * 1000000;
	struct stat st;

	if (f->str) {
		/* The operator rotates the file; pick it up when it changes. */
		if (stat(f->str, &st) == 0 &&
		    (st.st_mtim.tv_sec != ktlshd_tk.file_mtime.tv_sec ||
		     st.st_mtim.tv_nsec != ktlshd_tk.file_mtime.tv_nsec))
			(void)ktlshd_tickets_load_file(f->str, f->line);
		return;
	}
	if (period_us && ktlshd_now_us() - ktlshd_tk.rotated_us >= period_us) {
		if (ktlshd_tickets_generate() == 0)
			log_info("rotated session ticket key");
	}
}

/* OpenSSL's ticket key callback: 1 = key set, 2 = decrypted with an old key
 * (issue a fresh ticket), 0 = unknown key (full handshake), -1 = error. */
static int ktlshd_ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
			    EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM params[3];
	const struct ktlshd_ticket_key *k = NULL;
	size_t i;
	int ret = -1;

	pthread_rwlock_rdlock(&ktlshd_tk.lock);
	if (enc) {
		if (!ktlshd_tk.n || RAND_bytes(iv, 16) != 1)
			goto out;
		k = &ktlshd_tk.keys[0];
		memcpy(key_name, k->name, 16);
		if (EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
			goto out;
		ret = 1;
	} else {
		for (i = 0; i < ktlshd_tk.n; i++) {
			if (!memcmp(key_name, ktlshd_tk.keys[i].name, 16)) {
				k = &ktlshd_tk.keys[i];
				break;
			}
		}
		if (!k) {
			ret = 0;
			goto out;
		}
		if (EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
			goto out;
		ret = i == 0 ? 1 : 2;
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, 32);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1) {
		ret = -1;
		goto out;
	}
out:
	pthread_rwlock_unlock(&ktlshd_tk.lock);
	(void)ssl;
	return ret;
}

void ktlshd_tickets_attach(SSL_CTX *ctx)
{
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ktlshd_ticket_cb);
}

void ktlshd_tickets_destroy(void)
{
	pthread_rwlock_wrlock(&ktlshd_tk.lock);
	explicit_bzero(ktlshd_tk.keys, sizeof(ktlshd_tk.keys));
	ktlshd_tk.n = 0;
	pthread_rwlock_unlock(&ktlshd_tk.lock);
}
