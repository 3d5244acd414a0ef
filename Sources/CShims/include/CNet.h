#ifndef CONTRAIL_CNET_H
#define CONTRAIL_CNET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/// epoll without Swift touching the packed `struct epoll_event` (ops: 1 add, 2 del, 3 mod).
int contrail_epoll_create(void);
int contrail_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// Waits and unpacks up to `max` events into parallel arrays; returns the count or -1 (errno set).
int contrail_epoll_wait(int epfd, uint64_t *data, uint32_t *events, int max, int timeout_ms);

/// A non-blocking listening TCP socket on host:port (IPv4 or IPv6 literal, or "" for all), with
/// SO_REUSEADDR. Returns the fd, or -1 with errno set.
int contrail_listen_tcp(const char *host, uint16_t port, int backlog);
/// The port a socket is bound to (for port 0 in tests).
int contrail_local_port(int fd);
/// accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC and TCP_NODELAY set; -1 with errno on failure.
int contrail_accept(int listen_fd);
/// A blocking client connection to a host name or literal (getaddrinfo), TCP_NODELAY, with connect,
/// send and receive timeouts of `timeout_ms` (for `contrail bench`); -1 with errno on failure.
int contrail_connect_blocking(const char *host, uint16_t port, int timeout_ms);

/// eventfd for cross-thread wake-ups.
int contrail_eventfd(void);
/// Blocks SIGTERM/SIGINT/SIGPIPE in the calling thread (inherited by threads it starts) and returns a
/// signalfd for SIGTERM and SIGINT.
int contrail_signalfd_term(void);
/// Reads one signal number from a signalfd; -1 if none.
int contrail_signalfd_read(int fd);
/// Ignores SIGPIPE process-wide (writes to closed sockets then fail with EPIPE instead of killing us).
void contrail_ignore_sigpipe(void);

/// Thread-safe monotonic nanoseconds.
uint64_t contrail_now_ns(void);

/// Names the calling thread (first 15 bytes) for top, perf and gdb.
void contrail_set_thread_name(const char *name);

#ifdef __cplusplus
}
#endif

#endif
