// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-sources: libktlsh/record.c libktlsh/hello.c libktlsh/proto.c -lssl -lcrypto
/*
 * libFuzzer target for the TLS parsers that read bytes a peer sent: the
 * classifier of records read after handover (ktlsh_record_classify) and the
 * ClientHello / ServerHello summaries of the handshake trace. The first
 * input byte picks the content type; the rest is the record or hello body.
 *
 *   scripts/fuzz tls 60
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ktlsh_hello_summary s;
	struct ktlsh_record rec;

	if (!size)
		return 0;
	ktlsh_record_classify(data[0], data + 1, size - 1, &rec);
	if (rec.len != size - 1 || rec.type != data[0])
		__builtin_trap();
	if (rec.kind == KTLSH_REC_DATA && data[0] != KTLSH_CT_APPLICATION_DATA)
		__builtin_trap();
	if (!ktlsh_hello_parse_client(data + 1, size - 1, &s) &&
	    (s.sni[sizeof(s.sni) - 1] != '\0' || memchr(s.sni, 0, sizeof(s.sni)) == NULL))
		__builtin_trap();
	(void)ktlsh_hello_parse_server(data + 1, size - 1, &s);
	return 0;
}
