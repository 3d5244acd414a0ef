#ifndef CONTRAIL_CSHIMS_H
#define CONTRAIL_CSHIMS_H

#include <stddef.h>
#include <stdint.h>

#include "CNet.h"
#include "CTLS.h"

#ifdef __cplusplus
extern "C" {
#endif

/// An opaque libsentencepiece processor (sentencepiece::SentencePieceProcessor).
typedef struct contrail_spm contrail_spm;

/// Loads a serialized SentencePiece model. On failure returns NULL and writes a message into `error`.
contrail_spm *contrail_spm_load(const void *model, size_t length, char *error, size_t error_capacity);
void contrail_spm_free(contrail_spm *spm);

int32_t contrail_spm_vocab_size(const contrail_spm *spm);
int32_t contrail_spm_bos_id(const contrail_spm *spm);
int32_t contrail_spm_eos_id(const contrail_spm *spm);
int32_t contrail_spm_unk_id(const contrail_spm *spm);
int32_t contrail_spm_pad_id(const contrail_spm *spm);

/// Encodes UTF-8 text to ids. Writes at most `capacity` ids and returns how many there are in all
/// (call again with a larger buffer when the result exceeds `capacity`), or -1 on error.
int64_t contrail_spm_encode(const contrail_spm *spm, const char *text, size_t length, int32_t *ids, size_t capacity);

/// Decodes ids to UTF-8 text. Writes at most `capacity` bytes and returns the full length, or -1 on error.
int64_t contrail_spm_decode(const contrail_spm *spm, const int32_t *ids, size_t count, char *text, size_t capacity);

/// The piece string of `id` (not NUL-terminated; valid as long as the processor lives).
const char *contrail_spm_piece(const contrail_spm *spm, int32_t id, size_t *length);

#ifdef __cplusplus
}
#endif

#endif
