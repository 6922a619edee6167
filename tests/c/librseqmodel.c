/* librseqmodel.so: a model of how librseq 0.1 and later (and the kernel's
 * rseq selftests since Linux 5.18) register rseq, written from their
 * documented behaviour, for tests/c/librseqshare.c. librseq is not packaged
 * here, so the tests load this instead; what it models:
 *   - the area is private: static initial-exec TLS, 1024-aligned, never a
 *     shared symbol;
 *   - it publishes the area as `rseq_offset` (from the thread pointer),
 *     `rseq_size` (-1 before its constructor; 0 until a thread registered;
 *     then the kernel's feature size) and `rseq_flags`;
 *   - its constructor takes glibc's registration where glibc made one
 *     (`__rseq_size` > 0); else it owns the registration;
 *   - rseq_register_current_thread() registers the calling thread's area
 *     (owner only; under glibc it just succeeds), returns -1 with errno on
 *     failure, and aborts the process if a registration fails after
 *     another thread's succeeded;
 *   - a per-CPU counter increment as a critical section on that area.
 * LIBRSEQMODEL_ALLOC_IN_INIT=1 makes the constructor allocate before it
 * publishes the area, as a constructor that allocates (or one that runs
 * after another's first malloc) would: an allocator brought up by that
 * allocation sees librseq loaded but not yet initialised. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/rseq.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SIG 0x53053053
#define AREA_ALIGN 1024
#define ORIG_ALLOC_SIZE 32
#ifndef AT_RSEQ_FEATURE_SIZE
#define AT_RSEQ_FEATURE_SIZE 27
#endif

static __thread struct rseq area __attribute__((tls_model("initial-exec"), aligned(AREA_ALIGN))) = {
    .cpu_id = RSEQ_CPU_ID_UNINITIALIZED,
};

ptrdiff_t rseq_offset;
unsigned int rseq_size = -1U;
unsigned int rseq_flags;
static int owner;

static void *thread_pointer(void) {
    void *tp;
    __asm__("movq %%fs:0, %0" : "=r"(tp));
    return tp;
}

static unsigned int feature_size(void) {
    unsigned long size = getauxval(AT_RSEQ_FEATURE_SIZE);
    return size ? (unsigned int)size : 20;
}

__attribute__((constructor)) static void init(void) {
    if (getenv("LIBRSEQMODEL_ALLOC_IN_INIT")) {
        void *volatile block = malloc(24); /* volatile: not optimised away */
        free(block);
    }
    const unsigned int *glibc_size = dlsym(RTLD_NEXT, "__rseq_size");
    const ptrdiff_t *glibc_offset = dlsym(RTLD_NEXT, "__rseq_offset");
    if (glibc_size && glibc_offset && *glibc_size) {
        rseq_offset = *glibc_offset;
        rseq_size = *glibc_size;
        return;
    }
    owner = 1;
    rseq_offset = (char *)&area - (char *)thread_pointer();
    rseq_flags = 0;
    __atomic_store_n(&rseq_size, 0, __ATOMIC_RELEASE);
}

static int sys_rseq(int flags) {
    unsigned int size = __atomic_load_n(&rseq_size, __ATOMIC_ACQUIRE);
    return syscall(__NR_rseq, &area, size < ORIG_ALLOC_SIZE ? ORIG_ALLOC_SIZE : size, flags, SIG);
}

int rseq_register_current_thread(void) {
    if (!owner)
        return 0;
    if (sys_rseq(0) != 0) {
        if (__atomic_load_n(&rseq_size, __ATOMIC_ACQUIRE) > 0)
            abort(); /* incoherent: another thread registered */
        return -1;
    }
    unsigned int zero = 0;
    __atomic_compare_exchange_n(&rseq_size, &zero, feature_size(), 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    return 0;
}

int rseq_unregister_current_thread(void) {
    return owner ? sys_rseq(RSEQ_FLAG_UNREGISTER) : 0;
}

/* The CPU this thread's area says (negative: not registered). */
int rseqmodel_cpu(void) {
    return (int)*(volatile uint32_t *)((char *)thread_pointer() + rseq_offset + offsetof(struct rseq, cpu_id));
}

/* counters[cpu] += 1 in a critical section on the area at rseq_offset. */
void rseqmodel_inc(long *counters) {
    __asm__ __volatile__(
        ".pushsection __rseq_cs, \"aw\"\n\t"
        ".balign 32\n\t"
        "3: .long 0, 0\n\t"
        ".quad 1f, 2f - 1f, 4f\n\t"
        ".popsection\n\t"
        "0: leaq 3b(%%rip), %%rax\n\t"
        "movq %%rax, %%fs:8(%[off])\n\t"
        "1: movl %%fs:4(%[off]), %%eax\n\t"
        "addq $1, (%[c], %%rax, 8)\n\t"
        "2:\n\t"
        ".pushsection .text.rseqmodel_abort, \"ax\"\n\t"
        ".long 0x53053053\n\t"
        "4: jmp 0b\n\t"
        ".popsection\n\t"
        :
        : [c] "r"(counters), [off] "r"(rseq_offset)
        : "rax", "memory", "cc");
}
