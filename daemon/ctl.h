/* SPDX-License-Identifier: GPL-2.0-or-later */
#ifndef KTLSHD_CTL_H
#define KTLSHD_CTL_H

#include <stddef.h>
#include <stdint.h>

struct ktlshd_conn;

/* Bind and listen on path ("@name" for the abstract namespace). */
int ktlshd_ctl_listen(const char *path, int *out);
/* Accept one connection and record its SO_PEERCRED; NULL when none. */
struct ktlshd_conn *ktlshd_ctl_accept(int lfd);
/* Handle everything readable on c; -ECONNRESET: close it. */
int ktlshd_ctl_handle(struct ktlshd_conn *c, uint8_t *buf, size_t buflen);

#endif
