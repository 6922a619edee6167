/*
 * asm/abi.h: the constants that asm/percpu_x86_64.S shares with Rust.
 *
 * Every value here has a Rust twin. build.rs turns this file into
 * `$OUT_DIR/abi_h.rs`, and src/rseq/abi.rs and src/cache/region.rs assert at compile
 * time that each twin (an `offset_of!` or a `const`) equals the value here.
 * Change one side and the build fails until the other follows.
 */
#ifndef RSEQALLOC_ABI_H
#define RSEQALLOC_ABI_H

/* glibc's RSEQ_SIG on x86: the kernel compares it with the 4 bytes before
 * every abort handler (kernel/rseq.c, rseq_get_rseq_cs()). */
#define RSEQ_SIG 0x53053053

/* struct rseq (include/uapi/linux/rseq.h): the fields we read or write. */
#define RSEQ_OFF_CPU_ID 4
#define RSEQ_OFF_RSEQ_CS 8
#define RSEQ_OFF_MM_CID 24
#define RSEQ_AREA_SIZE 32

/* struct rseq_cs: version, flags, start_ip, post_commit_offset, abort_ip. */
#define RSEQ_CS_SIZE 32

/* One per-CPU region is 1 << REGION_SHIFT bytes:
 *   [0, 64)           RegionMeta (lock, hit counters, slow-path counters)
 *   [64, 64 + 8*N)    one 8-byte ClassHeader per size class
 *   [FIRST_SLOT*8, )  object pointer slots, partitioned among the classes */
#define REGION_SHIFT 17
#define META_OFF_ALLOC_HITS 8
#define META_OFF_FREE_HITS 16
#define HEADERS_OFF 64

/* ClassHeader: {u16 current, u16 aux, u16 end, u16 begin}, slot indices
 * from the region start. Pop needs current > begin; push needs current < end.
 * The critical sections only ever store `current`. A stopped header (end 0,
 * begin 0xFFFF) makes every section miss: the slow paths stop a header
 * before they change it under sections that may be running. The slow paths
 * read and replace a header as one little-endian 64-bit word, in which a
 * field's shift is its byte offset times 8. */
#define HDR_OFF_CURRENT 0
#define HDR_OFF_AUX 2
#define HDR_OFF_END 4
#define HDR_OFF_BEGIN 6
#define HDR_SIZE 8

/* The C library's freed stamp (src/front/check.rs): the word of a small block
 * that C `free` stamps and the small malloc clears (the second: the first
 * is the central slab's free-list link). */
#define OBJ_OFF_STAMP 8

/* The control block `rseqalloc_ctl` (Rust: rseq::cs::Ctl), written once by
 * the init code and read by every critical section. Until init publishes it,
 * ncpu is 0 and every section reports a miss.
 *   IDX_FIELD  offset of the cache index in struct rseq (cpu_id or mm_cid)
 *   AREA_OFF   thread-pointer offset of the rseq area every thread uses
 *              (glibc's or our own TLS block's: one offset for all threads)
 *   IDX_OFF    AREA_OFF + IDX_FIELD, for the region copies, which only read
 * Before init, the first resolver points them at our own area's cpu_id,
 * which reads -1 until the thread registers the area (OWN_AREA_DEFAULT). */
#define CTL_OFF_IDX_FIELD 0
#define CTL_OFF_SLABS 8
#define CTL_OFF_NCPU 16
#define CTL_OFF_AREA_OFF 24
#define CTL_OFF_IDX_OFF 32
#define CTL_SIZE 64

/* Our thread-local block `rseqalloc_own_tls` (Rust: rseq::abi::OwnTls):
 *   [0, 32)  our own struct rseq, registered only where glibc registered none
 *   32       this thread's registration state of the area in use
 *   36       its count of users of that registration, where the area is
 *            ours and no object defines __rseq_refcount */
#define OWN_TLS_OFF_STATE 32
#define OWN_TLS_OFF_COUNT 36
#define OWN_TLS_SIZE 64

/* Restart counters: one per kind of critical section (the small entry
 * points count with the pop and push they inline). */
#define SITE_POP 0
#define SITE_PUSH 1
#define SITE_POP_BATCH 2
#define SITE_PUSH_BATCH 3
#define NUM_SITES 4

/* Descriptors in our part of __rseq_cs: six sections, each as a mainline
 * and a region copy, and the two small ones with a second mainline
 * copy (one per index field). tests/rseq_cs_section.rs counts them. */
#define NUM_SECTIONS 14

/* prctl(2) restart regions (kernel-patch/, include/uapi/linux/prctl.h):
 * the option, its QUERY, ADD, REMOVE and GET operations (flags in arg5, 0),
 * the errno of an ADD that overlaps a region already there, and
 * the size of struct rseq_region {size, sig, start, post_commit, restart}. */
#define PR_RSEQ_REGIONS 74
#define PR_RSEQ_REGIONS_QUERY 1
#define PR_RSEQ_REGIONS_ADD 2
#define PR_RSEQ_REGIONS_REMOVE 3
#define PR_RSEQ_REGIONS_GET 4
#define EEXIST 17
#define RSEQ_REGION_SIZE 32

#endif
