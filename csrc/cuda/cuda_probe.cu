// Tiny CUDA probe, built into prism_jax/_cuda_probe.so only when nvcc is found.
// It is loaded lazily (dlopen) by prism_jax._native.cuda_device_count(), so a
// machine without a CUDA driver can still import the package.
#include <cuda_runtime.h>

extern "C" __attribute__((visibility("default"))) int prism_jax_cuda_device_count() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error state
    return 0;
  }
  return count;
}
