// prism_jax._native -- small native helpers for prism_jax (pybind11, C++17).
//
//   perf_counter_ns()                 steady_clock in ns (timer for the tuner)
//   load_symbol_capsule(path, sym)    dlopen + dlsym -> unnamed PyCapsule, the
//                                     form jax.ffi.register_ffi_target accepts
//   cuda_compiled()                   was the CUDA probe built?
//   cuda_device_count()               CUDA devices visible (0 when none/absent)
//   version()                         package version baked in at build time

#include <dlfcn.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include <pybind11/pybind11.h>

#include "runtime/prism_runtime.h"

#ifndef PRISM_JAX_VERSION
#define PRISM_JAX_VERSION "0.0.0+unknown"
#endif

#ifndef PRISM_JAX_CUDA_PROBE_NAME
#define PRISM_JAX_CUDA_PROBE_NAME "_cuda_probe.so"
#endif

namespace py = pybind11;

static_assert(prism_jax::rt::ceil_div(7, 2) == 4, "prism_runtime.h sanity");
static_assert(prism_jax::rt::round_up(7, 4) == 8, "prism_runtime.h sanity");

namespace {

std::int64_t perf_counter_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// dlopen handles are kept for the life of the process: a capsule handed to
// XLA must never dangle, so libraries are never closed.
std::mutex g_handles_mu;
std::unordered_map<std::string, void*> g_handles;

void* open_library(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_handles_mu);
  auto it = g_handles.find(path);
  if (it != g_handles.end()) return it->second;
  dlerror();  // clear
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    throw std::runtime_error("prism_jax: dlopen('" + path + "') failed: " +
                             (err ? err : "unknown error"));
  }
  g_handles.emplace(path, handle);
  return handle;
}

py::capsule load_symbol_capsule(const std::string& path, const std::string& symbol) {
  void* handle = open_library(path);
  dlerror();  // clear
  void* sym = dlsym(handle, symbol.c_str());
  const char* err = dlerror();
  if (err != nullptr || sym == nullptr) {
    throw std::runtime_error("prism_jax: dlsym('" + symbol + "') in '" + path + "' failed: " +
                             (err ? err : "symbol resolved to NULL"));
  }
  // Unnamed capsule without destructor, exactly like jax.ffi.pycapsule().
  PyObject* cap = PyCapsule_New(sym, nullptr, nullptr);
  if (cap == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::capsule>(cap);
}

constexpr bool cuda_compiled() {
#ifdef PRISM_JAX_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

// Directory holding this extension module (found via dladdr on our own code).
std::string module_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&perf_counter_ns), &info) == 0 || info.dli_fname == nullptr) {
    return {};
  }
  std::string p(info.dli_fname);
  auto slash = p.rfind('/');
  return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

int cuda_device_count() {
  if (!cuda_compiled()) return 0;
  static int cached = -1;
  static std::once_flag once;
  std::call_once(once, [] {
    cached = 0;
    std::string dir = module_dir();
    if (dir.empty()) return;
    std::string lib = dir + "/" + PRISM_JAX_CUDA_PROBE_NAME;
    void* handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) return;
    using Fn = int (*)();
    auto fn = reinterpret_cast<Fn>(dlsym(handle, "prism_jax_cuda_device_count"));
    if (fn != nullptr) cached = fn();
  });
  return cached;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "Native helpers for prism_jax (timer, FFI symbol loading, CUDA probe).";

  m.def("perf_counter_ns", &perf_counter_ns,
        "Monotonic steady_clock reading in nanoseconds (int).");
  m.def("load_symbol_capsule", &load_symbol_capsule, py::arg("path"), py::arg("symbol"),
        "dlopen(path, RTLD_NOW|RTLD_LOCAL) and dlsym(symbol); return the address as an "
        "unnamed PyCapsule (accepted by jax.ffi.register_ffi_target). The library stays "
        "loaded for the life of the process. Raises RuntimeError on failure.");
  m.def("cuda_compiled", &cuda_compiled, "True if the CUDA probe was compiled (nvcc found).");
  m.def("cuda_device_count", &cuda_device_count,
        py::call_guard<py::gil_scoped_release>(),
        "Number of CUDA devices visible to the CUDA runtime; 0 if CUDA was not compiled, "
        "no driver or no device.");
  m.def("version", [] { return std::string(PRISM_JAX_VERSION); }, "Package version.");
  m.attr("__version__") = PRISM_JAX_VERSION;
}
