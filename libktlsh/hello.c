// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Summaries of ClientHello and ServerHello for the handshake trace: what was
 * offered and what was chosen. The bytes come from the peer, so every read
 * goes through a bounded cursor; a malformed hello yields -EBADMSG and
 * OpenSSL rejects it on its own.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define KTLSH_EXT_SERVER_NAME		0
#define KTLSH_EXT_SUPPORTED_GROUPS	10
#define KTLSH_EXT_SUPPORTED_VERSIONS	43
#define KTLSH_EXT_KEY_SHARE		51

static void ktlsh_hello_add(uint16_t *arr, unsigned cap, unsigned *n, uint16_t v)
{
	if (*n < cap)
		arr[*n] = v;
	(*n)++;
}

static int ktlsh_hello_u16_list(struct ktlsh_cur *c, size_t len_bytes, uint16_t *arr,
				unsigned cap, unsigned *n)
{
	struct ktlsh_cur list;
	uint16_t len16, v;
	uint8_t len8 = 0;
	int ret;

	if (len_bytes == 1) {
		ret = ktlsh_cur_get_u8(c, &len8);
		len16 = len8;
	} else {
		ret = ktlsh_cur_get_u16(c, &len16);
	}
	if (ret || ktlsh_cur_sub(c, len16, &list) || (len16 & 1))
		return -EBADMSG;
	*n = 0;
	while (list.left) {
		if (ktlsh_cur_get_u16(&list, &v))
			return -EBADMSG;
		ktlsh_hello_add(arr, cap, n, v);
	}
	return 0;
}

static int ktlsh_hello_sni(struct ktlsh_cur *c, char *out, size_t outlen)
{
	struct ktlsh_cur list, name;
	uint16_t len;
	uint8_t type;

	if (ktlsh_cur_get_u16(c, &len) || ktlsh_cur_sub(c, len, &list))
		return -EBADMSG;
	while (list.left) {
		if (ktlsh_cur_get_u8(&list, &type) || ktlsh_cur_get_u16(&list, &len) ||
		    ktlsh_cur_sub(&list, len, &name))
			return -EBADMSG;
		if (type == 0 && len < outlen && !memchr(name.p, 0, len)) {
			memcpy(out, name.p, len);
			out[len] = '\0';
		}
	}
	return 0;
}

static int ktlsh_hello_extensions(struct ktlsh_cur *c, int server, struct ktlsh_hello_summary *s)
{
	struct ktlsh_cur exts, ext;
	uint16_t total, type, len, v;
	int ret = 0;

	if (!c->left)
		return 0;	/* TLS 1.2 allows no extensions at all */
	if (ktlsh_cur_get_u16(c, &total) || ktlsh_cur_sub(c, total, &exts))
		return -EBADMSG;
	while (exts.left && !ret) {
		if (ktlsh_cur_get_u16(&exts, &type) || ktlsh_cur_get_u16(&exts, &len) ||
		    ktlsh_cur_sub(&exts, len, &ext))
			return -EBADMSG;
		switch (type) {
		case KTLSH_EXT_SERVER_NAME:
			if (!server)
				ret = ktlsh_hello_sni(&ext, s->sni, sizeof(s->sni));
			break;
		case KTLSH_EXT_SUPPORTED_GROUPS:
			if (!server)
				ret = ktlsh_hello_u16_list(&ext, 2, s->groups,
							   KTLSH_ARRAY_SIZE(s->groups), &s->n_groups);
			break;
		case KTLSH_EXT_SUPPORTED_VERSIONS:
			if (server) {
				ret = ktlsh_cur_get_u16(&ext, &v);
				if (!ret) {
					s->n_versions = 0;
					ktlsh_hello_add(s->versions, KTLSH_ARRAY_SIZE(s->versions),
							&s->n_versions, v);
				}
			} else {
				ret = ktlsh_hello_u16_list(&ext, 1, s->versions,
							   KTLSH_ARRAY_SIZE(s->versions),
							   &s->n_versions);
			}
			break;
		case KTLSH_EXT_KEY_SHARE:
			if (server)
				ret = ktlsh_cur_get_u16(&ext, &s->key_share_group);
			break;
		}
	}
	return ret;
}

/* Common prefix: legacy_version, random, legacy_session_id. */
static int ktlsh_hello_prefix(struct ktlsh_cur *c, struct ktlsh_hello_summary *s)
{
	uint16_t legacy;
	uint8_t sid_len;

	memset(s, 0, sizeof(*s));
	if (ktlsh_cur_get_u16(c, &legacy) || ktlsh_cur_skip(c, 32) || ktlsh_cur_get_u8(c, &sid_len) ||
	    sid_len > 32 || ktlsh_cur_skip(c, sid_len))
		return -EBADMSG;
	ktlsh_hello_add(s->versions, KTLSH_ARRAY_SIZE(s->versions), &s->n_versions, legacy);
	return 0;
}

int ktlsh_hello_parse_client(const uint8_t *body, size_t len, struct ktlsh_hello_summary *s)
{
	struct ktlsh_cur c = { body, len }, comp;
	uint8_t comp_len;

	if (ktlsh_hello_prefix(&c, s) ||
	    ktlsh_hello_u16_list(&c, 2, s->ciphers, KTLSH_ARRAY_SIZE(s->ciphers), &s->n_ciphers) ||
	    ktlsh_cur_get_u8(&c, &comp_len) || ktlsh_cur_sub(&c, comp_len, &comp))
		return -EBADMSG;
	return ktlsh_hello_extensions(&c, 0, s);
}

int ktlsh_hello_parse_server(const uint8_t *body, size_t len, struct ktlsh_hello_summary *s)
{
	struct ktlsh_cur c = { body, len };
	uint16_t cipher;
	uint8_t comp;

	if (ktlsh_hello_prefix(&c, s) || ktlsh_cur_get_u16(&c, &cipher) || ktlsh_cur_get_u8(&c, &comp))
		return -EBADMSG;
	s->n_ciphers = 0;
	ktlsh_hello_add(s->ciphers, KTLSH_ARRAY_SIZE(s->ciphers), &s->n_ciphers, cipher);
	return ktlsh_hello_extensions(&c, 1, s);
}

static int ktlsh_is_grease(uint16_t v)
{
	/* RFC 8701: 0x?A?A with both bytes equal */
	return (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff);
}

const char *ktlsh_version_name(uint16_t v)
{
	switch (v) {
	case 0x0304: return "TLSv1.3";
	case 0x0303: return "TLSv1.2";
	case 0x0302: return "TLSv1.1";
	case 0x0301: return "TLSv1.0";
	case 0x0300: return "SSLv3";
	default: return ktlsh_is_grease(v) ? "grease" : "unknown";
	}
}

const char *ktlsh_group_name(uint16_t g)
{
	switch (g) {
	case 0x0017: return "secp256r1";
	case 0x0018: return "secp384r1";
	case 0x0019: return "secp521r1";
	case 0x001d: return "x25519";
	case 0x001e: return "x448";
	case 0x0100: return "ffdhe2048";
	case 0x0101: return "ffdhe3072";
	case 0x0102: return "ffdhe4096";
	case 0x0103: return "ffdhe6144";
	case 0x0104: return "ffdhe8192";
	default: return ktlsh_is_grease(g) ? "grease" : "unknown";
	}
}
