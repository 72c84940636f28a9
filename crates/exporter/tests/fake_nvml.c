/* A stand-in for libnvidia-ml.so.1 with NVML's documented C ABI (nvml.h),
 * for testing the exporter's run-time loading where no NVIDIA driver is
 * installed. Its state comes from the file STATE_FILE (set at compile
 * time): "driver-not-loaded", or one utilisation per line per device
 * ("x" makes that device's query fail). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned int nvmlReturn_t;
typedef struct { unsigned int gpu; unsigned int memory; } nvmlUtilization_t;
typedef void *nvmlDevice_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_UNKNOWN 999

static int initialized = 0;
static char lines[16][32];
static int count = 0;

static int load_state(void) {
    FILE *f = fopen(STATE_FILE, "r");
    count = 0;
    if (!f) return -1;
    while (count < 16 && fgets(lines[count], sizeof lines[count], f)) {
        lines[count][strcspn(lines[count], "\n")] = 0;
        if (lines[count][0]) count++;
    }
    fclose(f);
    return 0;
}

nvmlReturn_t nvmlInit_v2(void) {
    if (load_state() != 0) return NVML_ERROR_UNKNOWN;
    if (count > 0 && strcmp(lines[0], "driver-not-loaded") == 0) return NVML_ERROR_DRIVER_NOT_LOADED;
    initialized++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    initialized--;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!n) return NVML_ERROR_INVALID_ARGUMENT;
    *n = (unsigned int)count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!d || i >= (unsigned int)count) return NVML_ERROR_INVALID_ARGUMENT;
    *d = (nvmlDevice_t)(lines[i]);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!d || !u) return NVML_ERROR_INVALID_ARGUMENT;
    /* Re-read so a test can change the values; the handle is the line's index. */
    int i = (int)(((char (*)[32])d) - lines);
    load_state();
    if (i >= count || strcmp(lines[i], "x") == 0) return NVML_ERROR_UNKNOWN;
    u->gpu = (unsigned int)atoi(lines[i]);
    u->memory = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}
