// The PJRT C API calls Contrail makes. Argument structs are declared here with the ABI's field order;
// each ends with reserved zero bytes and passes its full size, because plugins reject a struct_size
// smaller than the one they were built with and read fields added after ours only when the size says
// they are present (zero is their default).
#include "CPJRT.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESERVED uint8_t reserved[64]
#define ARGS(type, name) type name; memset(&name, 0, sizeof name); name.struct_size = sizeof name

typedef void pjrt_error;
typedef void pjrt_event;
typedef pjrt_error *(*pjrt_fn)(void *args);

// Function-table slots (1-based positions after the version struct in PJRT_Api).
enum {
    ERROR_DESTROY = 1, ERROR_MESSAGE = 2, ERROR_GET_CODE = 3, PLUGIN_INITIALIZE = 4, EVENT_DESTROY = 6, EVENT_AWAIT = 9,
    CLIENT_CREATE = 11, CLIENT_DESTROY = 12, CLIENT_PLATFORM_NAME = 13, CLIENT_ADDRESSABLE_DEVICES = 17, CLIENT_COMPILE = 21,
    CLIENT_BUFFER_FROM_HOST = 23, DEVICE_DESCRIPTION_ID = 24, DEVICE_GET_DESCRIPTION = 30, EXECUTABLE_DESTROY = 41, EXECUTABLE_NUM_OUTPUTS = 45, LOADED_EXECUTABLE_DESTROY = 51,
    LOADED_EXECUTABLE_GET_EXECUTABLE = 52, LOADED_EXECUTABLE_EXECUTE = 56, BUFFER_DESTROY = 59, BUFFER_COPY_TO_DEVICE = 70,
    BUFFER_TO_HOST = 71,
    LAST_SLOT = 71
};

struct api_version { size_t struct_size; void *extension_start; int major_version, minor_version; };
struct api { size_t struct_size; void *extension_start; struct api_version version; pjrt_fn fn[]; };

struct contrail_pjrt {
    void *handle;
    const struct api *api;
};

struct simple_args { size_t struct_size; void *extension_start; void *object; RESERVED; };
struct error_message_args { size_t struct_size; void *extension_start; const void *error; const char *message; size_t message_size; RESERVED; };
struct error_code_args { size_t struct_size; void *extension_start; const void *error; int code; RESERVED; };
struct named_value {
    size_t struct_size; void *extension_start; const char *name; size_t name_size; int type;
    union { const char *string_value; int64_t int64_value; const int64_t *int64_array_value; float float_value; bool bool_value; };
    size_t value_size;
};
struct client_create_args {
    size_t struct_size; void *extension_start; const struct named_value *create_options; size_t num_options;
    void *kv_get_callback; void *kv_get_user_arg; void *kv_put_callback; void *kv_put_user_arg; void *client;
    void *kv_try_get_callback; void *kv_try_get_user_arg; RESERVED;
};
struct platform_name_args { size_t struct_size; void *extension_start; void *client; const char *name; size_t name_size; RESERVED; };
struct devices_args { size_t struct_size; void *extension_start; void *client; void *const *devices; size_t count; RESERVED; };
struct program { size_t struct_size; void *extension_start; char *code; size_t code_size; const char *format; size_t format_size; RESERVED; };
struct compile_args {
    size_t struct_size; void *extension_start; void *client; const struct program *program; const char *compile_options;
    size_t compile_options_size; void *executable; RESERVED;
};
struct device_description_args { size_t struct_size; void *extension_start; void *device; void *description; RESERVED; };
struct device_id_args { size_t struct_size; void *extension_start; void *description; int id; RESERVED; };
struct get_executable_args { size_t struct_size; void *extension_start; void *loaded; void *executable; RESERVED; };
struct num_outputs_args { size_t struct_size; void *extension_start; void *executable; size_t num_outputs; RESERVED; };
struct from_host_args {
    size_t struct_size; void *extension_start; void *client; const void *data; int type; const int64_t *dims; size_t num_dims;
    const int64_t *byte_strides; size_t num_byte_strides; int host_buffer_semantics; void *device; void *memory;
    void *device_layout; pjrt_event *done_with_host_buffer; void *buffer; RESERVED;
};
struct copy_to_device_args { size_t struct_size; void *extension_start; void *buffer; void *dst_device; void *dst_buffer; RESERVED; };
struct to_host_args { size_t struct_size; void *extension_start; void *src; void *host_layout; void *dst; size_t dst_size; pjrt_event *event; RESERVED; };
struct execute_options {
    size_t struct_size; void *extension_start; void **send_callbacks; void **recv_callbacks; size_t num_send_ops;
    size_t num_recv_ops; int launch_id; const int64_t *non_donatable_input_indices; size_t num_non_donatable_input_indices;
    void *context; const char *call_location; size_t num_tasks; int *task_ids; int64_t *incarnation_ids; RESERVED;
};
struct execute_args {
    size_t struct_size; void *extension_start; void *executable; struct execute_options *options;
    void *const *const *argument_lists; size_t num_devices; size_t num_args; void **const *output_lists;
    pjrt_event **device_complete_events; void *execute_device; RESERVED;
};

static int fail(char *msg, size_t cap, const char *text) {
    snprintf(msg, cap, "%s", text);
    return -1;
}

/// Copies the error's message and code, destroys it, and returns the code (never 0).
static int take_error(contrail_pjrt *p, pjrt_error *error, char *msg, size_t cap) {
    ARGS(struct error_message_args, m);
    m.error = error;
    ((void (*)(void *))p->api->fn[ERROR_MESSAGE - 1])(&m);
    snprintf(msg, cap, "%.*s", (int)m.message_size, m.message ? m.message : "");
    ARGS(struct error_code_args, c);
    c.error = error;
    p->api->fn[ERROR_GET_CODE - 1](&c);
    ARGS(struct simple_args, d);
    d.object = error;
    ((void (*)(void *))p->api->fn[ERROR_DESTROY - 1])(&d);
    return c.code > 0 ? c.code : 2;  // UNKNOWN when the plugin gave no code
}

static int call(contrail_pjrt *p, int slot, void *args, char *msg, size_t cap) {
    pjrt_error *e = p->api->fn[slot - 1](args);
    return e ? take_error(p, e, msg, cap) : 0;
}

static void destroy(contrail_pjrt *p, int slot, void *object) {
    if (object == NULL) return;
    ARGS(struct simple_args, a);
    a.object = object;
    pjrt_error *e = p->api->fn[slot - 1](&a);
    if (e) {
        char ignored[8];
        take_error(p, e, ignored, sizeof ignored);
    }
}

/// Waits for an event, destroys it, and returns its outcome.
static int await_event(contrail_pjrt *p, pjrt_event *event, char *msg, size_t cap) {
    if (event == NULL) return 0;
    ARGS(struct simple_args, a);
    a.object = event;
    int rc = call(p, EVENT_AWAIT, &a, msg, cap);
    destroy(p, EVENT_DESTROY, event);
    return rc;
}

contrail_pjrt *contrail_pjrt_open(const char *path, char *msg, size_t cap) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(msg, cap, "cannot load PJRT plugin %s: %s", path, dlerror());
        return NULL;
    }
    const struct api *(*get)(void) = (const struct api *(*)(void))dlsym(handle, "GetPjrtApi");
    if (get == NULL) {
        snprintf(msg, cap, "%s is not a PJRT plugin: it exports no GetPjrtApi", path);
        dlclose(handle);
        return NULL;
    }
    const struct api *api = get();
    if (api == NULL || api->struct_size < sizeof(struct api) + LAST_SLOT * sizeof(pjrt_fn)) {
        snprintf(msg, cap, "%s: GetPjrtApi returned %s", path, api ? "a function table too small for PJRT API 0.81+" : "NULL");
        dlclose(handle);
        return NULL;
    }
    if (api->version.major_version != 0 || api->version.minor_version < 81) {
        snprintf(msg, cap, "%s: PJRT API %d.%d is not supported (0.81 or later is)", path, api->version.major_version,
                 api->version.minor_version);
        dlclose(handle);
        return NULL;
    }
    contrail_pjrt *p = calloc(1, sizeof *p);
    p->handle = handle;
    p->api = api;
    ARGS(struct simple_args, init);
    if (call(p, PLUGIN_INITIALIZE, &init, msg, cap) != 0) {
        // Plugins keep global state: never unloaded once their code ran.
        free(p);
        return NULL;
    }
    return p;
}

void contrail_pjrt_api_version(const contrail_pjrt *p, int *major, int *minor) {
    *major = p->api->version.major_version;
    *minor = p->api->version.minor_version;
}

int contrail_pjrt_client_create(contrail_pjrt *p, int64_t cpu_device_count, void **client, char *msg, size_t cap) {
    struct named_value option;
    memset(&option, 0, sizeof option);
    option.struct_size = sizeof option;
    option.name = "cpu_device_count";
    option.name_size = strlen(option.name);
    option.type = 1;  // kInt64
    option.int64_value = cpu_device_count;
    option.value_size = 1;
    ARGS(struct client_create_args, a);
    if (cpu_device_count >= 1) {
        a.create_options = &option;
        a.num_options = 1;
    }
    int rc = call(p, CLIENT_CREATE, &a, msg, cap);
    *client = a.client;
    return rc;
}

void contrail_pjrt_client_destroy(contrail_pjrt *p, void *client) { destroy(p, CLIENT_DESTROY, client); }

int contrail_pjrt_platform_name(contrail_pjrt *p, void *client, char *out, size_t out_cap, char *msg, size_t cap) {
    ARGS(struct platform_name_args, a);
    a.client = client;
    int rc = call(p, CLIENT_PLATFORM_NAME, &a, msg, cap);
    if (rc == 0) snprintf(out, out_cap, "%.*s", (int)a.name_size, a.name ? a.name : "");
    return rc;
}

int contrail_pjrt_devices(contrail_pjrt *p, void *client, void *const **devices, size_t *count, char *msg, size_t cap) {
    ARGS(struct devices_args, a);
    a.client = client;
    int rc = call(p, CLIENT_ADDRESSABLE_DEVICES, &a, msg, cap);
    *devices = a.devices;
    *count = rc == 0 ? a.count : 0;
    return rc;
}

int contrail_pjrt_compile(contrail_pjrt *p, void *client, const char *code, size_t code_size, const void *options,
                          size_t options_size, void **executable, char *msg, size_t cap) {
    // An empty CompileOptionsProto makes plugins abort the process (a CHECK), so refuse it here.
    if (options == NULL || options_size == 0) return fail(msg, cap, "compile options are required (serialized CompileOptionsProto)");
    struct program prog;
    memset(&prog, 0, sizeof prog);
    prog.struct_size = sizeof prog;
    prog.code = (char *)code;
    prog.code_size = code_size;
    prog.format = "mlir";
    prog.format_size = 4;
    ARGS(struct compile_args, a);
    a.client = client;
    a.program = &prog;
    a.compile_options = (const char *)options;
    a.compile_options_size = options_size;
    int rc = call(p, CLIENT_COMPILE, &a, msg, cap);
    *executable = a.executable;
    return rc;
}

int contrail_pjrt_num_outputs(contrail_pjrt *p, void *executable, size_t *count, char *msg, size_t cap) {
    ARGS(struct get_executable_args, g);
    g.loaded = executable;
    int rc = call(p, LOADED_EXECUTABLE_GET_EXECUTABLE, &g, msg, cap);
    if (rc != 0) return rc;
    ARGS(struct num_outputs_args, n);
    n.executable = g.executable;
    rc = call(p, EXECUTABLE_NUM_OUTPUTS, &n, msg, cap);
    *count = n.num_outputs;
    destroy(p, EXECUTABLE_DESTROY, g.executable);
    return rc;
}

void contrail_pjrt_executable_destroy(contrail_pjrt *p, void *executable) { destroy(p, LOADED_EXECUTABLE_DESTROY, executable); }

int contrail_pjrt_buffer_from_host(contrail_pjrt *p, void *client, void *device, const void *data, int type,
                                   const int64_t *dims, size_t num_dims, void **buffer, char *msg, size_t cap) {
    ARGS(struct from_host_args, a);
    a.client = client;
    a.data = data;
    a.type = type;
    a.dims = dims;
    a.num_dims = num_dims;
    a.host_buffer_semantics = 0;  // kImmutableOnlyDuringCall
    a.device = device;
    int rc = call(p, CLIENT_BUFFER_FROM_HOST, &a, msg, cap);
    *buffer = a.buffer;
    if (rc != 0) return rc;
    // The host memory may be freed only after this event.
    rc = await_event(p, a.done_with_host_buffer, msg, cap);
    if (rc != 0) {
        destroy(p, BUFFER_DESTROY, a.buffer);
        *buffer = NULL;
    }
    return rc;
}

int contrail_pjrt_buffer_size(contrail_pjrt *p, void *buffer, size_t *size, char *msg, size_t cap) {
    ARGS(struct to_host_args, a);
    a.src = buffer;  // dst NULL: asks for the size
    int rc = call(p, BUFFER_TO_HOST, &a, msg, cap);
    *size = a.dst_size;
    return rc;
}

int contrail_pjrt_buffer_to_host(contrail_pjrt *p, void *buffer, void *dst, size_t size, char *msg, size_t cap) {
    ARGS(struct to_host_args, a);
    a.src = buffer;
    a.dst = dst;
    a.dst_size = size;
    int rc = call(p, BUFFER_TO_HOST, &a, msg, cap);
    if (rc != 0) return rc;
    return await_event(p, a.event, msg, cap);
}

void contrail_pjrt_buffer_destroy(contrail_pjrt *p, void *buffer) { destroy(p, BUFFER_DESTROY, buffer); }

int contrail_pjrt_buffer_copy_to_device(contrail_pjrt *p, void *buffer, void *device, void **copy, char *msg, size_t cap) {
    ARGS(struct copy_to_device_args, a);
    a.buffer = buffer;
    a.dst_device = device;
    int rc = call(p, BUFFER_COPY_TO_DEVICE, &a, msg, cap);
    *copy = a.dst_buffer;
    return rc;
}

int contrail_pjrt_execute(contrail_pjrt *p, void *executable, void *device, size_t num_devices, void *const *args, size_t num_args,
                          void **outputs, size_t num_outputs, char *msg, size_t cap) {
    if (num_devices == 0 || num_devices > 64) return fail(msg, cap, "execute: between 1 and 64 devices");
    ARGS(struct execute_options, options);
    void *const *argument_lists[64];
    void **output_lists[64];
    pjrt_event *complete[64];
    for (size_t d = 0; d < num_devices; d++) {
        argument_lists[d] = args + d * num_args;
        output_lists[d] = outputs + d * num_outputs;
        complete[d] = NULL;
    }
    for (size_t i = 0; i < num_devices * num_outputs; i++) outputs[i] = NULL;
    ARGS(struct execute_args, a);
    a.executable = executable;
    a.options = &options;
    a.argument_lists = argument_lists;
    a.num_devices = num_devices;
    a.num_args = num_args;
    a.output_lists = output_lists;
    a.device_complete_events = complete;
    a.execute_device = device;
    int rc = call(p, LOADED_EXECUTABLE_EXECUTE, &a, msg, cap);
    if (rc != 0) return rc;
    // Every device's event is awaited (and destroyed) even after one fails; the first failure is reported.
    for (size_t d = 0; d < num_devices; d++) {
        char other[256];
        int r = await_event(p, complete[d], rc == 0 ? msg : other, rc == 0 ? cap : sizeof other);
        if (rc == 0) rc = r;
    }
    return rc;
}

int contrail_pjrt_device_id(contrail_pjrt *p, void *device, int *id, char *msg, size_t cap) {
    ARGS(struct device_description_args, d);
    d.device = device;
    int rc = call(p, DEVICE_GET_DESCRIPTION, &d, msg, cap);
    if (rc != 0) return rc;
    ARGS(struct device_id_args, a);
    a.description = d.description;
    rc = call(p, DEVICE_DESCRIPTION_ID, &a, msg, cap);
    *id = a.id;
    return rc;
}
