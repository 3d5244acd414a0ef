// OpenSSL glue for the event loop: contexts with ALPN, and sessions over memory BIOs so sockets stay
// non-blocking and owned by Swift.
#include "CTLS.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

static void last_error(char *error, size_t capacity, const char *what) {
    if (error == NULL || capacity == 0) return;
    unsigned long e = ERR_get_error();
    char detail[256] = "";
    if (e != 0) ERR_error_string_n(e, detail, sizeof detail);
    snprintf(error, capacity, "%s%s%s", what, detail[0] ? ": " : "", detail);
    ERR_clear_error();
}

static const unsigned char server_protocols[] = "\x02h2\x08http/1.1";

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
    (void)ssl;
    (void)arg;
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, outlen, server_protocols, sizeof server_protocols - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;  // no common protocol: continue without ALPN (HTTP/1.1)
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

void *contrail_tls_server_context(const char *cert_path, const char *key_path, char *error, size_t error_capacity) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        last_error(error, error_capacity, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        char what[512];
        snprintf(what, sizeof what, "cannot load certificate %s", cert_path);
        last_error(error, error_capacity, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
        char what[512];
        snprintf(what, sizeof what, "cannot load private key %s", key_path);
        last_error(error, error_capacity, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        last_error(error, error_capacity, "private key does not match the certificate");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    return ctx;
}

void *contrail_tls_session(void *ctx) {
    SSL *ssl = SSL_new((SSL_CTX *)ctx);
    if (ssl == NULL) return NULL;
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_accept_state(ssl);
    return ssl;
}

void contrail_tls_session_free(void *ssl) { SSL_free((SSL *)ssl); }

int contrail_tls_feed(void *ssl, const void *data, int length) {
    return BIO_write(SSL_get_rbio((SSL *)ssl), data, length);
}

int contrail_tls_read(void *ssl, void *buffer, int capacity, char *error, size_t error_capacity) {
    SSL *s = (SSL *)ssl;
    if (!SSL_is_init_finished(s)) {
        int rc = SSL_do_handshake(s);
        if (rc != 1) {
            int e = SSL_get_error(s, rc);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
            last_error(error, error_capacity, "TLS handshake failed");
            return -1;
        }
    }
    int n = SSL_read(s, buffer, capacity);
    if (n > 0) return n;
    int e = SSL_get_error(s, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    if (e == SSL_ERROR_ZERO_RETURN) return -2;
    last_error(error, error_capacity, "TLS read failed");
    return -1;
}

int contrail_tls_write(void *ssl, const void *data, int length) {
    if (length == 0) return 0;
    int n = SSL_write((SSL *)ssl, data, length);
    return n > 0 ? n : -1;
}

int contrail_tls_drain(void *ssl, void *buffer, int capacity) {
    BIO *w = SSL_get_wbio((SSL *)ssl);
    if (BIO_ctrl_pending(w) == 0) return 0;
    int n = BIO_read(w, buffer, capacity);
    return n > 0 ? n : 0;
}

int contrail_tls_established(void *ssl) { return SSL_is_init_finished((SSL *)ssl) ? 1 : 0; }

void contrail_tls_alpn(void *ssl, char *out, size_t capacity) {
    const unsigned char *p = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected((SSL *)ssl, &p, &len);
    if (len >= capacity) len = (unsigned int)capacity - 1;
    if (p != NULL) memcpy(out, p, len);
    out[len] = '\0';
}

void contrail_tls_shutdown(void *ssl) { SSL_shutdown((SSL *)ssl); }
