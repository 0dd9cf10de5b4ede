// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ktlsh-mkcerts DIR: write the test PKI the kernel suite and the unit tests
 * use. Everything is made with OpenSSL's EVP/X509 API so the suite needs no
 * openssl(1) scripting and runs the same inside the UML guest.
 *
 *   ca.pem ca.key                 ECDSA P-256 root, "ktlsh test CA"
 *   other-ca.pem other-ca.key     an unrelated root
 *   other-server.pem .key         CN=localhost issued by other-ca (wrong CA)
 *   server-ecdsa.pem .key         P-256, CN=localhost, SAN DNS:localhost IP:127.0.0.1
 *   server-rsa.pem .key           RSA-2048, same names
 *   client.pem client.key         P-256, CN=ktlsh-test-client, clientAuth (mTLS)
 *   expired.pem expired.key       like server-ecdsa, valid -10 days .. -1 day
 *   wrongname.pem wrongname.key   SAN DNS:wrong.example only
 *
 * Idempotent: when every file is already there it does nothing. Concurrent
 * runs serialise on DIR/.lock so a reader never sees keys that do not match
 * their certificates; every file is written to a temporary name and renamed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define DAY_SECONDS	(24L * 60 * 60)

enum key_kind {
	KEY_EC_P256,
	KEY_RSA_2048,
};

struct cert_spec {
	const char *name;		/* file stem: NAME.pem, NAME.key */
	const char *cn;
	const char *san;		/* subjectAltName value, NULL for none */
	const char *issuer;		/* stem of the issuing CA, NULL: self-signed CA */
	enum key_kind key;
	int is_ca;
	const char *eku;		/* extendedKeyUsage, NULL for none */
	long not_before_days;		/* relative to now */
	long not_after_days;
};

/* Issuers first: a leaf looks its CA up among the ones already made. */
static const struct cert_spec specs[] = {
	{ "ca", "ktlsh test CA", NULL, NULL, KEY_EC_P256, 1, NULL, -1, 3650 },
	{ "other-ca", "ktlsh unrelated CA", NULL, NULL, KEY_EC_P256, 1, NULL, -1, 3650 },
	{ "server-ecdsa", "localhost", "DNS:localhost,IP:127.0.0.1", "ca", KEY_EC_P256, 0,
	  "serverAuth,clientAuth", -1, 3650 },
	{ "server-rsa", "localhost", "DNS:localhost,IP:127.0.0.1", "ca", KEY_RSA_2048, 0,
	  "serverAuth,clientAuth", -1, 3650 },
	{ "client", "ktlsh-test-client", NULL, "ca", KEY_EC_P256, 0, "clientAuth", -1, 3650 },
	{ "expired", "localhost", "DNS:localhost,IP:127.0.0.1", "ca", KEY_EC_P256, 0,
	  "serverAuth,clientAuth", -10, -1 },
	{ "wrongname", "wrong.example", "DNS:wrong.example", "ca", KEY_EC_P256, 0,
	  "serverAuth,clientAuth", -1, 3650 },
	{ "other-server", "localhost", "DNS:localhost,IP:127.0.0.1", "other-ca", KEY_EC_P256, 0,
	  "serverAuth,clientAuth", -1, 3650 },
};

#define N_SPECS (sizeof(specs) / sizeof(specs[0]))

struct made {
	EVP_PKEY *key;
	X509 *cert;
};

static void die_ssl(const char *what)
{
	fprintf(stderr, "ktlsh-mkcerts: %s failed\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static int all_present(const char *dir)
{
	char path[4096];
	size_t i;

	for (i = 0; i < N_SPECS; i++) {
		snprintf(path, sizeof(path), "%s/%s.pem", dir, specs[i].name);
		if (access(path, R_OK))
			return 0;
		snprintf(path, sizeof(path), "%s/%s.key", dir, specs[i].name);
		if (access(path, R_OK))
			return 0;
	}
	return 1;
}

static EVP_PKEY *make_key(enum key_kind kind)
{
	EVP_PKEY *key;

	if (kind == KEY_RSA_2048)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	else
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key)
		die_ssl("key generation");
	return key;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext || !X509_add_ext(cert, ext, -1))
		die_ssl(OBJ_nid2sn(nid));
	X509_EXTENSION_free(ext);
}

static X509 *make_cert(const struct cert_spec *s, EVP_PKEY *key, const struct made *ca)
{
	unsigned char serial[16];
	X509_NAME *name;
	X509 *cert, *issuer;
	EVP_PKEY *sign_key;
	BIGNUM *bn;
	char san[256];

	cert = X509_new();
	if (!cert)
		die_ssl("X509_new");
	if (!X509_set_version(cert, X509_VERSION_3))
		die_ssl("X509_set_version");

	/* Random positive 127-bit serial: unique enough that no verifier
	 * confuses two runs' certificates. */
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		die_ssl("RAND_bytes");
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)))
		die_ssl("serial");
	BN_free(bn);

	if (!X509_gmtime_adj(X509_getm_notBefore(cert), s->not_before_days * DAY_SECONDS) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), s->not_after_days * DAY_SECONDS))
		die_ssl("validity");
	if (!X509_set_pubkey(cert, key))
		die_ssl("X509_set_pubkey");

	name = X509_get_subject_name(cert);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
					(const unsigned char *)"ktlsh tests", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const unsigned char *)s->cn, -1, -1, 0))
		die_ssl("subject");

	issuer = ca ? ca->cert : cert;
	sign_key = ca ? ca->key : key;
	if (!X509_set_issuer_name(cert, X509_get_subject_name(issuer)))
		die_ssl("issuer");

	add_ext(cert, issuer, NID_subject_key_identifier, "hash");
	/* The self-signed root's AKI would point at itself; leave it out. */
	if (ca)
		add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always");
	if (s->is_ca) {
		add_ext(cert, issuer, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(cert, issuer, NID_key_usage,
			s->key == KEY_RSA_2048 ? "critical,digitalSignature,keyEncipherment"
					       : "critical,digitalSignature");
	}
	if (s->eku)
		add_ext(cert, issuer, NID_ext_key_usage, s->eku);
	if (s->san) {
		snprintf(san, sizeof(san), "%s", s->san);
		add_ext(cert, issuer, NID_subject_alt_name, san);
	}

	if (!X509_sign(cert, sign_key, EVP_sha256()))
		die_ssl("X509_sign");
	return cert;
}

/* Write DIR/.NAME.EXT.tmp, then rename it into place. */
static void write_pem(const char *dir, const char *name, const char *ext,
		      EVP_PKEY *key, X509 *cert)
{
	char tmp[4096], path[4096];
	FILE *f;
	int fd, ok;

	snprintf(tmp, sizeof(tmp), "%s/.%s.%s.tmp", dir, name, ext);
	snprintf(path, sizeof(path), "%s/%s.%s", dir, name, ext);
	/* Keys 0600: the test PKI is throwaway, but a tool that writes keys
	 * world-readable teaches the wrong habit. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, key ? 0600 : 0644);
	if (fd < 0) {
		fprintf(stderr, "ktlsh-mkcerts: %s: %s\n", tmp, strerror(errno));
		exit(1);
	}
	f = fdopen(fd, "w");
	if (!f) {
		fprintf(stderr, "ktlsh-mkcerts: fdopen: %s\n", strerror(errno));
		exit(1);
	}
	if (key)
		ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	else
		ok = PEM_write_X509(f, cert);
	if (!ok)
		die_ssl("PEM write");
	if (fclose(f)) {
		fprintf(stderr, "ktlsh-mkcerts: %s: %s\n", tmp, strerror(errno));
		exit(1);
	}
	if (rename(tmp, path)) {
		fprintf(stderr, "ktlsh-mkcerts: rename %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

static const struct made *find_made(const struct made *made, const char *name)
{
	size_t i;

	for (i = 0; i < N_SPECS; i++)
		if (!strcmp(specs[i].name, name) && made[i].cert)
			return &made[i];
	return NULL;
}

int main(int argc, char **argv)
{
	struct made made[N_SPECS];
	const char *dir;
	char lock_path[4096];
	size_t i;
	int lock_fd;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: ktlsh-mkcerts DIR\n");
		return 2;
	}
	dir = argv[1];
	if (mkdir(dir, 0755) && errno != EEXIST) {
		fprintf(stderr, "ktlsh-mkcerts: mkdir %s: %s\n", dir, strerror(errno));
		return 1;
	}

	snprintf(lock_path, sizeof(lock_path), "%s/.lock", dir);
	lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX)) {
		fprintf(stderr, "ktlsh-mkcerts: lock %s: %s\n", lock_path, strerror(errno));
		return 1;
	}
	if (all_present(dir))
		return 0;

	memset(made, 0, sizeof(made));
	for (i = 0; i < N_SPECS; i++) {
		const struct cert_spec *s = &specs[i];
		const struct made *ca = NULL;

		if (s->issuer) {
			ca = find_made(made, s->issuer);
			if (!ca) {
				fprintf(stderr, "ktlsh-mkcerts: %s: issuer %s not made yet\n",
					s->name, s->issuer);
				return 1;
			}
		}
		made[i].key = make_key(s->key);
		made[i].cert = make_cert(s, made[i].key, ca);
	}
	/* Keys first, so that a .pem never exists without its key even for a
	 * reader that does not take the lock. */
	for (i = 0; i < N_SPECS; i++) {
		write_pem(dir, specs[i].name, "key", made[i].key, NULL);
		write_pem(dir, specs[i].name, "pem", NULL, made[i].cert);
	}
	for (i = 0; i < N_SPECS; i++) {
		X509_free(made[i].cert);
		EVP_PKEY_free(made[i].key);
	}
	printf("ktlsh-mkcerts: wrote test PKI to %s\n", dir);
	close(lock_fd);
	return 0;
}
