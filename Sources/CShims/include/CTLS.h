#ifndef CONTRAIL_CTLS_H
#define CONTRAIL_CTLS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// An OpenSSL server context: the PEM certificate chain and key, TLS 1.2 minimum, ALPN preferring
/// h2 then http/1.1. Returns an SSL_CTX* (as void*), or NULL with a message in `error`.
void *contrail_tls_server_context(const char *cert_path, const char *key_path, char *error, size_t error_capacity);

/// A server SSL* on `ctx` reading from and writing to memory BIOs (the event loop moves the bytes).
void *contrail_tls_session(void *ctx);
void contrail_tls_session_free(void *ssl);

/// Feeds received ciphertext. Returns bytes taken or -1.
int contrail_tls_feed(void *ssl, const void *data, int length);
/// Runs the handshake / reads plaintext: returns bytes read (>0), 0 when more input is needed,
/// -1 on a fatal error (message in `error`), -2 when the peer sent close_notify.
int contrail_tls_read(void *ssl, void *buffer, int capacity, char *error, size_t error_capacity);
/// Encrypts plaintext; returns bytes consumed or -1.
int contrail_tls_write(void *ssl, const void *data, int length);
/// Ciphertext waiting to be sent, drained into `buffer`; returns bytes (0 when none).
int contrail_tls_drain(void *ssl, void *buffer, int capacity);
/// 1 once the handshake is complete.
int contrail_tls_established(void *ssl);
/// The ALPN protocol chosen ("h2", "http/1.1") or "" when none.
void contrail_tls_alpn(void *ssl, char *out, size_t capacity);
/// Queues a close_notify alert.
void contrail_tls_shutdown(void *ssl);

#ifdef __cplusplus
}
#endif

#endif
