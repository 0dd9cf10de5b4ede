// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The main thread: start-up, the control-socket loop, signals as events
 * (signalfd), reload, status, and an orderly stop that lets in-flight
 * handshakes finish.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <systemd/sd-daemon.h>

#include "ktlshd.h"
#include "ctl.h"
#include "daemon.h"

uint64_t ktlshd_start_us;
static char ktlshd_listen_desc[160];	/* the control socket, for logs and STATUS= */
const char *ktlshd_config_path;
static struct ktlsh_kcaps ktlshd_caps;
static int ktlshd_log_override = -1;

static void ktlshd_caps_names(uint32_t bits, char *out, size_t len)
{
	int c;
	size_t n = 0;

	out[0] = '\0';
	for (c = KTLSH_CIPHER_NONE + 1; c < KTLSH_CIPHER_COUNT; c++)
		if (bits & KTLSH_CIPHER_BIT(c))
			n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%s%s", n ? "," : "",
					      ktlsh_cipher_name(c));
	if (!out[0])
		snprintf(out, len, "none");
}

int ktlshd_reload(char *err, size_t errlen)
{
	struct ktlsh_config *cfg = NULL;
	struct ktlshd_runtime *rt = NULL, *old;
	struct timespec now;
	int ret;

	/* MONOTONIC_USEC= lets systemd >= 253 (Type=notify-reload) match this
	 * RELOADING=1 to the reload it asked for; older versions ignore it. */
	clock_gettime(CLOCK_MONOTONIC, &now);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
		   (unsigned long long)now.tv_sec * 1000000ull + (unsigned long long)now.tv_nsec / 1000,
		   ktlshd_config_path);
	ret = ktlsh_config_load(ktlshd_config_path, &cfg, err, errlen);
	if (ret)
		goto fail;
	ret = ktlshd_runtime_build(cfg, &ktlshd_caps, &rt, err, errlen);
	if (ret)
		goto fail;
	old = ktlshd_current_get();
	if (old && (strcmp(old->cfg->global.socket, cfg->global.socket) ||
		    old->cfg->global.workers != cfg->global.workers))
		log_warn("reload: socket and workers take effect only after a restart");
	ktlshd_runtime_put(old);
	if (ktlshd_tickets_reload(cfg))
		log_warn("reload: session ticket keys unchanged");
	ktlshd_log_level = ktlshd_log_override >= 0 ? ktlshd_log_override : cfg->global.log_level;
	ktlshd_current_set(rt);
	log_info("configuration reloaded from %s (generation %llu)", ktlshd_config_path,
		 (unsigned long long)rt->generation);
	sd_notifyf(0, "READY=1\nSTATUS=serving on %s (configuration generation %llu)",
		   ktlshd_listen_desc, (unsigned long long)rt->generation);
	ktlsh_config_put(cfg);
	return 0;
fail:
	/* The old configuration keeps serving. */
	log_err("reload rejected, keeping the running configuration: %s", err);
	sd_notifyf(0, "READY=1\nSTATUS=reload rejected, serving the previous configuration: %.*s",
		   (int)strcspn(err, "\n"), err);
	ktlsh_config_put(cfg);
	return ret;
}

void ktlshd_status_add(struct ktlsh_proto_status *st, const char *key, const char *fmt, ...)
{
	struct ktlsh_proto_item *it;
	va_list ap;

	if (st->n_items >= KTLSH_PROTO_ITEMS_MAX)
		return;
	it = &st->items[st->n_items++];
	snprintf(it->key, sizeof(it->key), "%s", key);
	va_start(ap, fmt);
	vsnprintf(it->value, sizeof(it->value), fmt, ap);
	va_end(ap);
}

void ktlshd_status_fill(struct ktlsh_proto_status *st)
{
	struct ktlshd_runtime *rt = ktlshd_current_get();
	char names[128], key[KTLSH_PROTO_KEY_LEN + 64], line[256], stat_name[40];
	unsigned long long v, total = 0;
	FILE *f;
	int o;

	ktlshd_status_add(st, "version", "%s", KTLSHD_VERSION);
	ktlshd_status_add(st, "pid", "%d", (int)getpid());
	ktlshd_status_add(st, "uptime_s", "%llu",
			  (unsigned long long)((ktlshd_now_us() - ktlshd_start_us) / 1000000));
	ktlshd_status_add(st, "config", "%s", ktlshd_config_path);
	ktlshd_status_add(st, "config.generation", "%llu",
			  (unsigned long long)(rt ? rt->generation : 0));
	ktlshd_status_add(st, "workers", "%u", ktlshd_workers_count());
	ktlshd_status_add(st, "handshakes.inflight", "%u", atomic_load(&ktlshd_stats.inflight));
	if (rt)
		ktlshd_status_add(st, "handshakes.max_inflight", "%u",
				  rt->cfg->global.max_inflight);
	for (o = 0; o < KTLSHD_OUTCOME_COUNT; o++) {
		v = atomic_load(&ktlshd_stats.outcomes[o]);
		total += v;
		snprintf(key, sizeof(key), "handshakes.%s", ktlshd_outcome_name(o));
		ktlshd_status_add(st, key, "%llu", v);
	}
	ktlshd_status_add(st, "handshakes.total", "%llu", total);
	ktlshd_status_add(st, "handshakes.resumed", "%llu", atomic_load(&ktlshd_stats.resumed));
	ktlshd_status_add(st, "control.connections", "%llu",
			  atomic_load(&ktlshd_stats.ctl_connections));
	ktlshd_status_add(st, "control.bad_messages", "%llu",
			  atomic_load(&ktlshd_stats.ctl_bad_messages));
	if (ktlshd_caps.ulp_err) {
		ktlshd_status_add(st, "kernel.tls", "unavailable (%s)", strerror(-ktlshd_caps.ulp_err));
	} else {
		ktlshd_caps_names(ktlshd_caps.tls13_tx & ktlshd_caps.tls13_rx, names, sizeof(names));
		ktlshd_status_add(st, "kernel.tls13", "%s", names);
		ktlshd_caps_names(ktlshd_caps.tls12_tx & ktlshd_caps.tls12_rx, names, sizeof(names));
		ktlshd_status_add(st, "kernel.tls12", "%s", names);
	}
	if (ktlshd_handshake_only)
		ktlshd_status_add(st, "mode", "handshake-only (nothing is offloaded)");
	f = fopen("/proc/net/tls_stat", "re");
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%39s %llu", stat_name, &v) == 2) {
			snprintf(key, sizeof(key), "tls_stat.%s", stat_name);
			ktlshd_status_add(st, key, "%llu", v);
		}
	}
	if (f)
		fclose(f);
	ktlshd_proxy_status(st);
	ktlshd_runtime_put(rt);
}

/* Every handshake in flight holds a socket, and SCM_RIGHTS fails quietly
 * (MSG_CTRUNC) when none is left: take the hard limit, and say when even
 * that is below what max_inflight needs. */
static void ktlshd_raise_nofile(const struct ktlsh_config *cfg)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)cfg->global.max_inflight + 256;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need)
		log_warn("open file limit %llu is below max_inflight %u + 256: raise LimitNOFILE "
			 "or lower max_inflight", (unsigned long long)rl.rlim_cur,
			 cfg->global.max_inflight);
}

static int ktlshd_drop_privileges(const struct ktlsh_config *cfg)
{
	if (!cfg->global.user || geteuid() != 0)
		return 0;
	if (setgroups(0, NULL) < 0 || setgid(cfg->global.gid) < 0 || setuid(cfg->global.uid) < 0)
		return -errno;
	log_info("running as user %s (uid %u)", cfg->global.user, (unsigned)cfg->global.uid);
	return 0;
}

/* The listening socket: systemd's (socket activation) or our own. */
static int ktlshd_listener(const struct ktlsh_config *cfg, int *fd, bool *owned)
{
	struct sockaddr_un sun = { 0 };
	socklen_t sunlen = sizeof(sun);
	int n = sd_listen_fds(1);

	*owned = false;
	if (n > 1) {
		log_err("systemd passed %d sockets; ktlshd.socket must have exactly one", n);
		return -EINVAL;
	}
	if (n == 1) {
		if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_SEQPACKET, 1, NULL, 0) <= 0) {
			log_err("the socket systemd passed is not a listening AF_UNIX SOCK_SEQPACKET socket");
			return -EINVAL;
		}
		/* systemd passes a blocking socket unless the service says
		 * NonBlocking=yes, and the main loop accepts until EAGAIN. */
		if (fcntl(SD_LISTEN_FDS_START, F_SETFL,
			  fcntl(SD_LISTEN_FDS_START, F_GETFL) | O_NONBLOCK) < 0 ||
		    fcntl(SD_LISTEN_FDS_START, F_SETFD, FD_CLOEXEC) < 0)
			return -errno;
		*fd = SD_LISTEN_FDS_START;
		if (getsockname(*fd, (struct sockaddr *)&sun, &sunlen) == 0 &&
		    sunlen > offsetof(struct sockaddr_un, sun_path) && sun.sun_path[0])
			snprintf(ktlshd_listen_desc, sizeof(ktlshd_listen_desc), "%.*s (from systemd)",
				 (int)(sunlen - offsetof(struct sockaddr_un, sun_path)), sun.sun_path);
		else
			snprintf(ktlshd_listen_desc, sizeof(ktlshd_listen_desc), "the socket from systemd");
		log_info("control socket from systemd (socket activation)");
		return 0;
	}
	*owned = cfg->global.socket[0] != '@';
	snprintf(ktlshd_listen_desc, sizeof(ktlshd_listen_desc), "%s", cfg->global.socket);
	return ktlshd_ctl_listen(cfg->global.socket, fd);
}

int ktlshd_check_config(const char *path)
{
	char err[8192];
	struct ktlsh_config *cfg = NULL;
	struct ktlshd_runtime *rt = NULL;
	struct ktlsh_kcaps caps = { .ulp_err = -ENOENT };	/* check what OpenSSL accepts */
	int ret;

	ret = ktlsh_config_load(path, &cfg, err, sizeof(err));
	if (!ret)
		ret = ktlshd_runtime_build(cfg, &caps, &rt, err, sizeof(err));
	if (!ret)
		ret = ktlshd_netlink_check(rt, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "%s%s", err, err[0] && err[strlen(err) - 1] == '\n' ? "" : "\n");
	} else {
		if (cfg->warnings)
			fprintf(stderr, "%s\n", cfg->warnings);
		printf("configuration OK\n");
	}
	ktlshd_runtime_put(rt);
	ktlsh_config_put(cfg);
	return ret ? 1 : 0;
}

#define KTLSHD_EV_LISTEN	((void *)1)
#define KTLSHD_EV_SIGNAL	((void *)2)

/*
 * Other event sources of the main loop (the kernel's handshake upcall, the
 * proxy's listeners) register here; their handler runs on the main thread
 * when the fd is readable.
 */
struct ktlshd_source {
	int fd;
	void (*handle)(void *arg);
	void *arg;
	struct ktlshd_source *next;	/* ktlshd_sources, for the end */
};

static int ktlshd_ep = -1;
/* Registered for the life of the loop; freed when it ends. */
static struct ktlshd_source *ktlshd_sources;

int ktlshd_loop_add(int fd, void (*handle)(void *arg), void *arg)
{
	struct ktlshd_source *src;
	struct epoll_event ev = { .events = EPOLLIN };

	if (ktlshd_ep < 0)
		return -EBADF;
	src = calloc(1, sizeof(*src));
	if (!src)
		return -ENOMEM;
	src->fd = fd;
	src->handle = handle;
	src->arg = arg;
	ev.data.ptr = src;
	if (epoll_ctl(ktlshd_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		free(src);
		return -errno;
	}
	src->next = ktlshd_sources;
	ktlshd_sources = src;
	return 0;
}

struct ktlshd_conn_node {
	struct ktlshd_source src;	/* .handle NULL: a control connection */
	struct ktlshd_conn *c;
	struct ktlshd_conn_node *prev, *next;
};

int ktlshd_run(const struct ktlshd_opts *opts)
{
	char err[8192], names13[128], names12[128];
	struct ktlsh_config *cfg = NULL;
	struct ktlshd_runtime *rt = NULL;
	struct epoll_event ev, evs[64];
	struct ktlshd_conn_node *conns = NULL, *node;
	struct signalfd_siginfo si;
	bool owned_socket = false, running = true;
	uint8_t *buf = NULL;
	sigset_t mask;
	int lfd = -1, sfd = -1, ep = -1, i, n, ret;
	unsigned workers;

	/* Private keys and ticket keys live in this process: keep them out of
	 * core dumps and away from same-uid ptrace. */
	(void)prctl(PR_SET_DUMPABLE, 0);
	ktlshd_start_us = ktlshd_now_us();
	ktlshd_config_path = opts->config;
	ktlshd_log_override = opts->log_level;
	ktlshd_handshake_only = opts->handshake_only;
	ktlshd_log_init(getenv("JOURNAL_STREAM") != NULL);

	ret = ktlsh_config_load(opts->config, &cfg, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "ktlshd: %s%s", err, err[0] && err[strlen(err) - 1] == '\n' ? "" : "\n");
		goto out;
	}
	ktlshd_log_level = opts->log_level >= 0 ? opts->log_level : cfg->global.log_level;
	if (cfg->warnings)
		log_warn("%s", cfg->warnings);

	ktlshd_raise_nofile(cfg);
	ret = ktlsh_kernel_probe(&ktlshd_caps);
	if (ret) {
		log_err("kernel TLS probe failed: %s", strerror(-ret));
		goto out;
	}
	if (ktlshd_caps.ulp_err) {
		log_warn("kernel TLS unavailable (tls ULP: %s): %s", strerror(-ktlshd_caps.ulp_err),
			 ktlshd_handshake_only ? "handshake-only mode" :
			 "every handshake request will be refused until ktlshd restarts with tls loaded");
	} else {
		ktlshd_caps_names(ktlshd_caps.tls13_tx & ktlshd_caps.tls13_rx, names13, sizeof(names13));
		ktlshd_caps_names(ktlshd_caps.tls12_tx & ktlshd_caps.tls12_rx, names12, sizeof(names12));
		log_info("kernel TLS: TLS 1.3 %s; TLS 1.2 %s", names13, names12);
	}
	ret = ktlshd_runtime_build(cfg, &ktlshd_caps, &rt, err, sizeof(err));
	if (ret) {
		log_err("%s", err);
		goto out;
	}
	ret = ktlshd_tickets_init(cfg);
	if (ret)
		goto out;
	ktlshd_current_set(ktlshd_runtime_get(rt));

	ret = ktlshd_listener(cfg, &lfd, &owned_socket);
	if (ret) {
		log_err("control socket %s: %s", cfg->global.socket, strerror(-ret));
		goto out;
	}

	/* Signals become events; threads created after this inherit the mask. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ktlshd_ep = ep;
	buf = malloc(KTLSH_PROTO_MAX_MSG);
	ret = -errno;
	if (sfd < 0 || ep < 0 || !buf)
		goto out;
	ev.events = EPOLLIN;
	ev.data.ptr = KTLSHD_EV_LISTEN;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	ev.data.ptr = KTLSHD_EV_SIGNAL;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);

	workers = cfg->global.workers ? cfg->global.workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	ret = ktlshd_workers_start(workers ? workers : 1);
	if (ret) {
		log_err("cannot start workers: %s", strerror(-ret));
		goto out;
	}
	(void)ktlshd_netlink_start(cfg);
	if ((ret = ktlshd_proxy_start(rt)) != 0)
		goto stop;
	ret = ktlshd_drop_privileges(cfg);
	if (ret) {
		log_err("cannot drop privileges to %s: %s", cfg->global.user, strerror(-ret));
		goto stop;
	}
	log_info("ktlshd %s ready: %u workers, %zu identities, %zu client profiles, socket %s",
		 KTLSHD_VERSION, ktlshd_workers_count(), rt->n_idents, rt->n_clients,
		 ktlshd_listen_desc);
	sd_notifyf(0, "READY=1\nSTATUS=serving on %s with %u workers", ktlshd_listen_desc,
		   ktlshd_workers_count());

	while (running) {
		n = epoll_wait(ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), 1000);
		if (n < 0 && errno != EINTR) {
			ret = -errno;
			log_err("epoll_wait: %s", strerror(errno));
			break;
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == KTLSHD_EV_LISTEN) {
				struct ktlshd_conn *c;

				while ((c = ktlshd_ctl_accept(lfd))) {
					node = calloc(1, sizeof(*node));
					ev.events = EPOLLIN;
					ev.data.ptr = node;
					if (!node || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
						free(node);
						ktlshd_conn_put(c);
						continue;
					}
					node->c = c;
					node->next = conns;
					if (conns)
						conns->prev = node;
					conns = node;
				}
			} else if (evs[i].data.ptr == KTLSHD_EV_SIGNAL) {
				while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
					if (si.ssi_signo == SIGHUP) {
						log_info("SIGHUP: reloading %s", ktlshd_config_path);
						(void)ktlshd_reload(err, sizeof(err));
					} else {
						log_info("%s: stopping", strsignal((int)si.ssi_signo));
						running = false;
					}
				}
			} else if (((struct ktlshd_source *)evs[i].data.ptr)->handle) {
				struct ktlshd_source *src = evs[i].data.ptr;

				src->handle(src->arg);
			} else {
				node = evs[i].data.ptr;
				if (ktlshd_ctl_handle(node->c, buf, KTLSH_PROTO_MAX_MSG)) {
					epoll_ctl(ep, EPOLL_CTL_DEL, node->c->fd, NULL);
					if (node->prev)
						node->prev->next = node->next;
					else
						conns = node->next;
					if (node->next)
						node->next->prev = node->prev;
					ktlshd_conn_put(node->c);
					free(node);
				}
			}
		}
		ktlshd_runtime_put(rt);
		rt = ktlshd_current_get();
		ktlshd_tickets_tick(rt->cfg);
	}
	ret = 0;
stop:
	sd_notify(0, "STOPPING=1\nSTATUS=finishing handshakes in flight");
	close(lfd);
	lfd = -1;
	ktlshd_workers_stop();
	ktlshd_proxy_stop();
	log_info("stopped");
out:
	while (conns) {
		node = conns;
		conns = node->next;
		ktlshd_conn_put(node->c);
		free(node);
	}
	if (owned_socket)
		(void)unlink(cfg->global.socket);
	if (lfd >= 0)
		close(lfd);
	if (sfd >= 0)
		close(sfd);
	if (ep >= 0)
		close(ep);
	ktlshd_ep = -1;
	while (ktlshd_sources) {
		struct ktlshd_source *src = ktlshd_sources;

		ktlshd_sources = src->next;
		free(src);
	}
	free(buf);
	ktlshd_current_set(NULL);
	ktlshd_runtime_put(rt);
	ktlshd_tickets_destroy();
	ktlsh_config_put(cfg);
	return ret ? 1 : 0;
}
