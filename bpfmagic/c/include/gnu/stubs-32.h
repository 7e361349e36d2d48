/* glibc's <gnu/stubs.h> picks stubs-32.h when __x86_64__ is not defined, as
 * with clang -target bpf; Debian installs only stubs-64.h. The stubs only
 * mark unimplemented libc functions, which BPF programs never call. */
