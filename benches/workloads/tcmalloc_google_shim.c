/* Preload shim for Google TCMalloc (built by build_tcmalloc_google.sh): forwards the C allocation
 * API to the TCMallocInternal* entry points compiled by the crates.io sys crate libtcmalloc-sys
 * (which builds tcmalloc with TCMALLOC_INTERNAL_METHODS_ONLY, i.e. without its own libc override). */
#include <stddef.h>
#include <errno.h>
#define EXPORT __attribute__((visibility("default")))
void *TCMallocInternalMalloc(size_t);
void TCMallocInternalFree(void *);
void *TCMallocInternalRealloc(void *, size_t);
void *TCMallocInternalCalloc(size_t, size_t);
void *TCMallocInternalMemalign(size_t, size_t);
void *TCMallocInternalAlignedAlloc(size_t, size_t);
int TCMallocInternalPosixMemalign(void **, size_t, size_t);
void *TCMallocInternalValloc(size_t);
void *TCMallocInternalPvalloc(size_t);
size_t TCMallocInternalMallocSize(void *);
int TCMallocInternalMallocTrim(size_t);
void *TCMallocInternalReallocArray(void *, size_t, size_t);
void TCMallocInternalFreeSized(void *, size_t);
void TCMallocInternalFreeAlignedSized(void *, size_t, size_t);
EXPORT void *malloc(size_t n) { return TCMallocInternalMalloc(n); }
EXPORT void free(void *p) { TCMallocInternalFree(p); }
EXPORT void cfree(void *p) { TCMallocInternalFree(p); }
EXPORT void *realloc(void *p, size_t n) { return TCMallocInternalRealloc(p, n); }
EXPORT void *reallocarray(void *p, size_t a, size_t b) { return TCMallocInternalReallocArray(p, a, b); }
EXPORT void *calloc(size_t a, size_t b) { return TCMallocInternalCalloc(a, b); }
EXPORT void *memalign(size_t a, size_t n) { return TCMallocInternalMemalign(a, n); }
EXPORT void *aligned_alloc(size_t a, size_t n) { return TCMallocInternalAlignedAlloc(a, n); }
EXPORT int posix_memalign(void **r, size_t a, size_t n) { return TCMallocInternalPosixMemalign(r, a, n); }
EXPORT void *valloc(size_t n) { return TCMallocInternalValloc(n); }
EXPORT void *pvalloc(size_t n) { return TCMallocInternalPvalloc(n); }
EXPORT size_t malloc_usable_size(void *p) { return p ? TCMallocInternalMallocSize(p) : 0; }
EXPORT int malloc_trim(size_t pad) { return TCMallocInternalMallocTrim(pad); }
EXPORT void free_sized(void *p, size_t n) { TCMallocInternalFreeSized(p, n); }
EXPORT void free_aligned_sized(void *p, size_t a, size_t n) { TCMallocInternalFreeAlignedSized(p, a, n); }
EXPORT void *__libc_malloc(size_t n) { return TCMallocInternalMalloc(n); }
EXPORT void __libc_free(void *p) { TCMallocInternalFree(p); }
EXPORT void *__libc_realloc(void *p, size_t n) { return TCMallocInternalRealloc(p, n); }
EXPORT void *__libc_calloc(size_t a, size_t b) { return TCMallocInternalCalloc(a, b); }
EXPORT void *__libc_memalign(size_t a, size_t n) { return TCMallocInternalMemalign(a, n); }
void TCMallocInternalMallocStats(void);
EXPORT void malloc_stats(void) { TCMallocInternalMallocStats(); }
