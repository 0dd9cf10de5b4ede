// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-sources: libktlsh/proto.c
/*
 * libFuzzer target for the control-protocol codec: arbitrary bytes are
 * decoded as a request, a reply and a status reply; whatever decodes must
 * encode again, decode to the same struct, and encode to the same bytes
 * (the decoder accepts nothing the encoder cannot say).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude -Ilibktlsh \
 *	tests/fuzz/fuzz_proto.c libktlsh/proto.c -o fuzz_proto
 *   ./fuzz_proto -max_len=65600 tests/fuzz/corpus/proto
 *
 * Built with -DKTLSH_FUZZ_MAIN instead of -fsanitize=fuzzer it has its own
 * main: "--seeds DIR" writes the seed corpus from the encoder, and any
 * other arguments are files to run once each (a regression run with any
 * compiler).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ktlsh/proto.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t enc1[KTLSH_PROTO_MAX_MSG], enc2[KTLSH_PROTO_MAX_MSG];

static void check_ret(int ret)
{
	if (ret != 0 && ret != -EBADMSG && ret != -EMSGSIZE && ret != -EPROTO)
		abort();
}

/* Both encodings came from structs that compared equal: same bytes. */
static void check_same(const struct ktlsh_buf *a, const struct ktlsh_buf *b)
{
	if (a->len != b->len || memcmp(a->data, b->data, a->len))
		abort();
}

/*
 * The structs are compared with memcmp: each decoder zeroes its struct
 * before filling it, so padding and unused string tails are zero in both.
 */
static void fuzz_request(const uint8_t *data, size_t size)
{
	static struct ktlsh_proto_request a, b;
	struct ktlsh_buf e1, e2;
	int ret = ktlsh_proto_decode_request(data, size, &a);

	check_ret(ret);
	if (ret)
		return;
	ktlsh_buf_init(&e1, enc1, sizeof(enc1));
	ktlsh_buf_init(&e2, enc2, sizeof(enc2));
	if (ktlsh_proto_encode_request(&e1, &a) ||
	    ktlsh_proto_decode_request(e1.data, e1.len, &b) ||
	    memcmp(&a, &b, sizeof(a)) ||
	    ktlsh_proto_encode_request(&e2, &b))
		abort();
	check_same(&e1, &e2);
}

static void fuzz_reply(const uint8_t *data, size_t size)
{
	static struct ktlsh_proto_reply a, b;
	struct ktlsh_buf e1, e2;
	int ret = ktlsh_proto_decode_reply(data, size, &a);

	check_ret(ret);
	if (ret) {
		if (a.status != ret)		/* fails closed */
			abort();
		return;
	}
	if (a.type == KTLSH_PROTO_ERROR && a.status >= 0)
		abort();
	ktlsh_buf_init(&e1, enc1, sizeof(enc1));
	ktlsh_buf_init(&e2, enc2, sizeof(enc2));
	if (ktlsh_proto_encode_reply(&e1, &a) ||
	    ktlsh_proto_decode_reply(e1.data, e1.len, &b) ||
	    memcmp(&a, &b, sizeof(a)) ||
	    ktlsh_proto_encode_reply(&e2, &b))
		abort();
	check_same(&e1, &e2);
}

static void fuzz_status(const uint8_t *data, size_t size)
{
	static struct ktlsh_proto_status a, b;
	struct ktlsh_buf e1, e2;
	int ret = ktlsh_proto_decode_status(data, size, &a);

	check_ret(ret);
	if (ret)
		return;
	ktlsh_buf_init(&e1, enc1, sizeof(enc1));
	ktlsh_buf_init(&e2, enc2, sizeof(enc2));
	if (ktlsh_proto_encode_status(&e1, &a) ||
	    ktlsh_proto_decode_status(e1.data, e1.len, &b) ||
	    memcmp(&a, &b, sizeof(a)) ||
	    ktlsh_proto_encode_status(&e2, &b))
		abort();
	check_same(&e1, &e2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ktlsh_proto_hdr hdr;
	int ret = ktlsh_proto_decode_header(data, size, &hdr);

	check_ret(ret);
	if (!ret && (hdr.len < KTLSH_PROTO_HDR_LEN || hdr.len > KTLSH_PROTO_MAX_MSG || hdr.len % 4))
		abort();
	fuzz_request(data, size);
	fuzz_reply(data, size);
	fuzz_status(data, size);
	return 0;
}

#ifdef KTLSH_FUZZ_MAIN
static int write_seed(const char *dir, const char *name, const struct ktlsh_buf *b)
{
	char path[4096];
	FILE *f;
	int ret = -EIO;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		goto out;
	if (fwrite(b->data, 1, b->len, f) == b->len)
		ret = 0;
	if (fclose(f))
		ret = -EIO;
out:
	if (ret)
		fprintf(stderr, "fuzz_proto: cannot write %s\n", path);
	return ret;
}

/* One seed per message type, from the encoder, so the fuzzer starts from
 * valid messages rather than having to discover the magic. */
static int write_seeds(const char *dir)
{
	static struct ktlsh_proto_status st;
	struct ktlsh_proto_request req;
	struct ktlsh_proto_reply rep;
	struct ktlsh_buf b;
	int ret;

#define SEED(name, call) do {						\
	ktlsh_buf_init(&b, enc1, sizeof(enc1));				\
	ret = (call);							\
	if (!ret)							\
		ret = write_seed(dir, name, &b);			\
	if (ret)							\
		goto out;						\
} while (0)

	ktlsh_proto_request_init(&req, KTLSH_PROTO_HANDSHAKE_REQ, 1);
	req.role = KTLSH_PROTO_ROLE_CLIENT;
	req.flags = KTLSH_PROTO_F_TRUSTED_PEER;
	req.timeout_ms = 10000;
	strcpy(req.identity, "default");
	strcpy(req.server_name, "example.com");
	req.n_alpn = 2;
	strcpy(req.alpn[0], "h2");
	strcpy(req.alpn[1], "http/1.1");
	SEED("handshake_req", ktlsh_proto_encode_request(&b, &req));

	ktlsh_proto_request_init(&req, KTLSH_PROTO_STATUS_REQ, 2);
	SEED("status_req", ktlsh_proto_encode_request(&b, &req));
	ktlsh_proto_request_init(&req, KTLSH_PROTO_RELOAD_REQ, 3);
	SEED("reload_req", ktlsh_proto_encode_request(&b, &req));

	ktlsh_proto_reply_init(&rep, KTLSH_PROTO_HANDSHAKE_REPLY, 1);
	rep.status = 0;
	rep.tls_version = 0x0304;
	strcpy(rep.cipher, "TLS_AES_256_GCM_SHA384");
	strcpy(rep.group, "x25519");
	strcpy(rep.alpn, "h2");
	rep.resumed = true;
	strcpy(rep.peer_subject, "CN=peer.example.com");
	rep.n_peer_sans = 2;
	strcpy(rep.peer_san[0], "DNS:peer.example.com");
	strcpy(rep.peer_san[1], "IP:192.0.2.7");
	rep.has_peer_fingerprint = true;
	memset(rep.peer_fingerprint, 0xab, sizeof(rep.peer_fingerprint));
	rep.handshake_us = 850;
	rep.tx_seq = 2;
	rep.rx_seq = 0;
	SEED("handshake_reply", ktlsh_proto_encode_reply(&b, &rep));

	ktlsh_proto_reply_init(&rep, KTLSH_PROTO_HANDSHAKE_REPLY, 4);
	rep.status = -EKEYREJECTED;
	rep.alert_sent = 42;
	strcpy(rep.reason, "certificate verify failed");
	SEED("handshake_reply_failed", ktlsh_proto_encode_reply(&b, &rep));

	ktlsh_proto_reply_init(&rep, KTLSH_PROTO_RELOAD_REPLY, 3);
	rep.status = 0;
	SEED("reload_reply", ktlsh_proto_encode_reply(&b, &rep));

	ktlsh_proto_reply_init(&rep, KTLSH_PROTO_ERROR, 9);
	rep.status = -EPROTO;
	strcpy(rep.reason, "unsupported protocol version");
	SEED("error", ktlsh_proto_encode_reply(&b, &rep));

	ktlsh_proto_status_init(&st, 2);
	st.status = 0;
	st.n_items = 3;
	strcpy(st.items[0].key, "version");
	strcpy(st.items[0].value, "0.1");
	strcpy(st.items[1].key, "handshakes.ok");
	strcpy(st.items[1].value, "12345");
	strcpy(st.items[2].key, "kernel.ciphers");
	SEED("status_reply", ktlsh_proto_encode_status(&b, &st));
#undef SEED
	ret = 0;
out:
	return ret;
}

static int run_file(const char *path)
{
	static uint8_t buf[KTLSH_PROTO_MAX_MSG * 2];
	size_t n;
	FILE *f = fopen(path, "rb");

	if (!f) {
		fprintf(stderr, "fuzz_proto: cannot open %s\n", path);
		return -ENOENT;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	return LLVMFuzzerTestOneInput(buf, n);
}

int main(int argc, char **argv)
{
	int i;

	if (argc == 3 && !strcmp(argv[1], "--seeds"))
		return write_seeds(argv[2]) ? 1 : 0;
	for (i = 1; i < argc; i++)
		if (run_file(argv[i]))
			return 1;
	return 0;
}
#endif
