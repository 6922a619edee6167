/* librseqlib.so: a small rseq user that follows the sharing convention of
 * older librseq and the kernel's selftests, as a library beside
 * rseqalloc would (tests/c/rseqshare.c and tests/rseq_share.rs load it).
 *   __rseq_abi       the thread's rseq area: initial-exec TLS, default
 *                    visibility, so the first definition in the process is
 *                    the one every user registers and reads;
 *   __rseq_refcount  the thread's users of the registration: register
 *                    when it was 0, unregister when it drops to 0.
 * rseqlib_inc runs a real critical section on the area: a per-CPU counter
 * increment that the kernel restarts when the thread is preempted,
 * migrated or signalled inside it. */
#define _GNU_SOURCE
#include <linux/rseq.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SIG 0x53053053

__thread struct rseq __rseq_abi __attribute__((tls_model("initial-exec"), aligned(32))) = {
    .cpu_id = RSEQ_CPU_ID_UNINITIALIZED,
};
__thread uint32_t __rseq_refcount __attribute__((tls_model("initial-exec")));

static int sys_rseq(int flags) {
    return syscall(__NR_rseq, &__rseq_abi, sizeof(struct rseq), flags, SIG);
}

/* 0 on success, -1 (errno set) if the kernel refused. */
int rseqlib_register(void) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int ret = 0;
    if (__rseq_refcount++ == 0 && sys_rseq(0) != 0) {
        __rseq_refcount--;
        ret = -1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ret;
}

int rseqlib_unregister(void) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int ret = 0;
    if (__rseq_refcount == 0)
        ret = -1;
    else if (--__rseq_refcount == 0 && sys_rseq(RSEQ_FLAG_UNREGISTER) != 0)
        ret = -1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ret;
}

/* The CPU the area says (negative: not registered). */
int rseqlib_cpu(void) {
    return (int)*(volatile uint32_t *)&__rseq_abi.cpu_id;
}

/* This thread's count of users of the registration. */
uint32_t rseqlib_refcount(void) {
    return __rseq_refcount;
}

/* counters[cpu] += 1 for the CPU the thread runs on, in a critical section:
 * the CPU is read inside it and the one add to memory commits it. */
void rseqlib_inc(long *counters) {
    __asm__ __volatile__(
        ".pushsection __rseq_cs, \"aw\"\n\t"
        ".balign 32\n\t"
        "3: .long 0, 0\n\t"
        ".quad 1f, 2f - 1f, 4f\n\t"
        ".popsection\n\t"
        "0: movq __rseq_abi@gottpoff(%%rip), %%rcx\n\t"
        "leaq 3b(%%rip), %%rax\n\t"
        "movq %%rax, %%fs:8(%%rcx)\n\t"
        "1: movl %%fs:4(%%rcx), %%eax\n\t"
        "addq $1, (%[c], %%rax, 8)\n\t"
        "2:\n\t"
        ".pushsection .text.rseqlib_abort, \"ax\"\n\t"
        ".long 0x53053053\n\t"
        "4: jmp 0b\n\t"
        ".popsection\n\t"
        :
        : [c] "r"(counters)
        : "rax", "rcx", "memory", "cc");
}
