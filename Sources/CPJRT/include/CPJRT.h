#ifndef CONTRAIL_CPJRT_H
#define CONTRAIL_CPJRT_H
// The slice of the PJRT C API that Contrail calls, behind plain C functions: a plugin is dlopen'd, its
// `GetPjrtApi` table read, and every call made here with argument structs laid out as the ABI defines
// them (struct layouts and function-table slots are facts of the ABI; the declarations are ours, in
// pjrt.c). Each function returns 0, or a PJRT error code (1..16, absl codes) with the plugin's message
// copied into `msg`; -1 is an error of ours (bad argument, missing symbol) with its message.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct contrail_pjrt contrail_pjrt;

/// Element types, numbered as PJRT_Buffer_Type numbers them.
enum { CONTRAIL_PJRT_PRED = 1, CONTRAIL_PJRT_S8 = 2, CONTRAIL_PJRT_S32 = 4, CONTRAIL_PJRT_S64 = 5, CONTRAIL_PJRT_U8 = 6,
       CONTRAIL_PJRT_U32 = 8, CONTRAIL_PJRT_F16 = 10, CONTRAIL_PJRT_F32 = 11, CONTRAIL_PJRT_BF16 = 13 };

/// dlopen(RTLD_NOW|RTLD_LOCAL) → GetPjrtApi() → PJRT_Plugin_Initialize. NULL with a message on failure.
contrail_pjrt *contrail_pjrt_open(const char *path, char *msg, size_t cap);
/// The API version the plugin was built with.
void contrail_pjrt_api_version(const contrail_pjrt *p, int *major, int *minor);

/// A client; `cpu_device_count` ≥ 1 passes the CPU plugin's option of that name, < 1 passes none.
int contrail_pjrt_client_create(contrail_pjrt *p, int64_t cpu_device_count, void **client, char *msg, size_t cap);
void contrail_pjrt_client_destroy(contrail_pjrt *p, void *client);
/// The platform name ("cpu", "cuda", "tpu"), NUL-terminated into `out`.
int contrail_pjrt_platform_name(contrail_pjrt *p, void *client, char *out, size_t out_cap, char *msg, size_t cap);
/// The addressable devices (owned by the client).
int contrail_pjrt_devices(contrail_pjrt *p, void *client, void *const **devices, size_t *count, char *msg, size_t cap);

/// Compiles StableHLO MLIR text (format "mlir") with serialized CompileOptionsProto bytes.
int contrail_pjrt_compile(contrail_pjrt *p, void *client, const char *code, size_t code_size, const void *options,
                          size_t options_size, void **executable, char *msg, size_t cap);
int contrail_pjrt_num_outputs(contrail_pjrt *p, void *executable, size_t *count, char *msg, size_t cap);
void contrail_pjrt_executable_destroy(contrail_pjrt *p, void *executable);

/// Copies host data into a new device buffer and waits until the host memory may be reused.
int contrail_pjrt_buffer_from_host(contrail_pjrt *p, void *client, void *device, const void *data, int type,
                                   const int64_t *dims, size_t num_dims, void **buffer, char *msg, size_t cap);
/// The bytes a buffer takes on the host.
int contrail_pjrt_buffer_size(contrail_pjrt *p, void *buffer, size_t *size, char *msg, size_t cap);
/// Copies a device buffer to host memory of `size` bytes and waits for it.
int contrail_pjrt_buffer_to_host(contrail_pjrt *p, void *buffer, void *dst, size_t size, char *msg, size_t cap);
void contrail_pjrt_buffer_destroy(contrail_pjrt *p, void *buffer);
/// A copy of `buffer` on another device of the same client (prefill → generate devices).
int contrail_pjrt_buffer_copy_to_device(contrail_pjrt *p, void *buffer, void *device, void **copy, char *msg, size_t cap);

/// Runs `executable` on `num_devices` devices: one, `device`, for a portable executable (NULL: the one it
/// was compiled for), or every device of its device assignment (`device` NULL), partition by partition.
/// `args` holds `num_args` buffers per device, device after device; `outputs` receives `num_outputs` new
/// buffers per device the same way. Waits for every device to finish.
int contrail_pjrt_execute(contrail_pjrt *p, void *executable, void *device, size_t num_devices, void *const *args, size_t num_args,
                          void **outputs, size_t num_outputs, char *msg, size_t cap);

/// The device's id (what a DeviceAssignmentProto names), which need not be its position in the list.
int contrail_pjrt_device_id(contrail_pjrt *p, void *device, int *id, char *msg, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
