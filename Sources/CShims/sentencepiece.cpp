// extern "C" face of libsentencepiece, so Swift needs no C++ interop.
#include "CShims.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <string>
#include <vector>

struct contrail_spm {
    sentencepiece::SentencePieceProcessor processor;
};

static void write_error(char *error, size_t capacity, const std::string &message) {
    if (error == nullptr || capacity == 0) return;
    size_t n = message.size() < capacity - 1 ? message.size() : capacity - 1;
    std::memcpy(error, message.data(), n);
    error[n] = '\0';
}

extern "C" contrail_spm *contrail_spm_load(const void *model, size_t length, char *error, size_t error_capacity) {
    auto *spm = new (std::nothrow) contrail_spm();
    if (spm == nullptr) {
        write_error(error, error_capacity, "out of memory");
        return nullptr;
    }
    try {
        auto status = spm->processor.LoadFromSerializedProto(
            std::string_view(static_cast<const char *>(model), length));
        if (!status.ok()) {
            write_error(error, error_capacity, status.ToString());
            delete spm;
            return nullptr;
        }
    } catch (const std::exception &e) {
        write_error(error, error_capacity, e.what());
        delete spm;
        return nullptr;
    }
    return spm;
}

extern "C" void contrail_spm_free(contrail_spm *spm) { delete spm; }

extern "C" int32_t contrail_spm_vocab_size(const contrail_spm *spm) { return spm->processor.GetPieceSize(); }
extern "C" int32_t contrail_spm_bos_id(const contrail_spm *spm) { return spm->processor.bos_id(); }
extern "C" int32_t contrail_spm_eos_id(const contrail_spm *spm) { return spm->processor.eos_id(); }
extern "C" int32_t contrail_spm_unk_id(const contrail_spm *spm) { return spm->processor.unk_id(); }
extern "C" int32_t contrail_spm_pad_id(const contrail_spm *spm) { return spm->processor.pad_id(); }

extern "C" int64_t contrail_spm_encode(const contrail_spm *spm, const char *text, size_t length, int32_t *ids,
                                       size_t capacity) {
    std::vector<int> out;
    try {
        if (!spm->processor.Encode(std::string_view(text, length), &out).ok()) return -1;
    } catch (...) {
        return -1;
    }
    for (size_t i = 0; i < out.size() && i < capacity; i++) ids[i] = out[i];
    return static_cast<int64_t>(out.size());
}

extern "C" int64_t contrail_spm_decode(const contrail_spm *spm, const int32_t *ids, size_t count, char *text,
                                       size_t capacity) {
    std::vector<int> in(ids, ids + count);
    std::string out;
    try {
        if (!spm->processor.Decode(in, &out).ok()) return -1;
    } catch (...) {
        return -1;
    }
    std::memcpy(text, out.data(), out.size() < capacity ? out.size() : capacity);
    return static_cast<int64_t>(out.size());
}

extern "C" const char *contrail_spm_piece(const contrail_spm *spm, int32_t id, size_t *length) {
    const std::string &piece = spm->processor.IdToPiece(id);
    *length = piece.size();
    return piece.data();
}
