/*
 * asm/percpu_x86_64.S: the restartable critical sections of rseqalloc's
 * per-CPU caches, for x86-64 Linux.
 *
 * Each section pushes or pops object pointers on one size class's stack in
 * the current CPU's region (src/cache/region.rs draws the layout). The kernel runs
 * it as if alone on its CPU: if the thread is preempted, migrated or
 * signalled between `start` and `commit`, the kernel moves it to `abort`
 * before it returns to user space (kernel/rseq.c, rseq_ip_fixup()).
 *
 *        arm:    area = %fs + ctl.area_off        (glibc's area or ours)
 *                area->rseq_cs = &descriptor      (outside: a restart re-arms)
 *        start:  idx = area->cpu_id or mm_cid     (read inside: it is current)
 *                if idx >= ncpu: return miss      (covers -1, -2, hot-plug)
 *                region = slabs + idx << REGION_SHIFT
 *                ... loads, slot writes nobody can see yet ...
 *                header.current = new value       <- the single commit store
 *                (pop and push: `decw`/`incw` on it, one instruction; the
 *                value it reads is the one the section loaded, since only
 *                this CPU's sections change `current` while a section runs:
 *                a remote operation fences before it writes)
 *        commit: return
 *
 *        .long RSEQ_SIG                           (checked by the kernel)
 *        abort:  restarts[site] += 1; goto arm    (never on the fast path)
 *
 * Rules every section keeps: its last instruction is its only committing
 * store; it makes no call and no syscall; it never writes the kernel's
 * fields of struct rseq (only rseq_cs, which is ours); its inputs stay in
 * registers it does not modify, so the abort path simply starts over.
 *
 * Each section's 32-byte descriptor goes in section __rseq_cs and a pointer to
 * it in __rseq_cs_ptr_array, the conventions debuggers, DynamoRIO and our own
 * test (tests/rseq_cs_section.rs) use to find every section. Both sections
 * are marked retained ("R", SHF_GNU_RETAIN): nothing references the pointer
 * array, and the linker's --gc-sections would otherwise drop it.
 *
 * Every thread finds its area at the same thread-pointer offset, so one
 * word of the control block names it. Until init, that is our own area,
 * whose cpu_id and mm_cid start at -1; and ncpu is 0: every section misses,
 * and no "initialised?" test is needed on the fast path. In own-registration
 * mode a thread's index stays -1 (a miss) until its first slow path
 * registers the area (or another user of the shared area did).
 *
 * Two entry points, the small ones, take a size instead of a class and jump
 * to the Rust slow path themselves on a miss, so that `RseqAlloc::alloc` and
 * `::dealloc` are a size check and a tail call
 * (benches/fastpath-instructions.sh counts them). Each has a second entry
 * after its size lookup, for callers that hold the class (C `free`). In the
 * C library (built with RSEQALLOC_C_API, feature `capi`) the small malloc
 * also clears the block's freed stamp once it owns the block (src/front/check.rs),
 * so that C `malloc` is one tail call too.
 *
 * Two copies of every section, from the same macros:
 *   <name>_mainline  arms its descriptor in the thread's rseq area, as above;
 *   <name>_region    stores no descriptor: the kernel knows its range from
 *                    the restart-region table (prctl PR_RSEQ_REGIONS) that
 *                    src/rseq/regions.rs registers once per process from the
 *                    descriptors below, and moves an interrupted thread to
 *                    the same abort handler (its `restart`).
 * The small entry points have two mainline copies, <name>_mainline_cpu
 * and <name>_mainline_cid, which read that index field at a constant offset
 * (ENTRY_BY_INDEX).
 * <name> itself is a GNU indirect function: its resolver runs once, when the
 * loader (or static-pie start-up) fills the GOT slot, and returns the region
 * copy only on a kernel that has restart regions and without
 * RSEQALLOC_MODE=mainline|fallback. Rust already reaches the entry points
 * through that GOT slot, so choosing costs the mainline fast path nothing.
 * Region copies still read cpu_id / mm_cid from the thread's rseq area,
 * which stays registered; its rseq_cs stays 0, since only mainline copies
 * write it. The kernel applies an armed rseq_cs first and then the regions
 * to the resulting IP: an abort handler is in no region, so a thread is
 * never moved twice. The signature before each abort handler only matters
 * to mainline rseq; region copies keep it so that every descriptor in
 * __rseq_cs is valid for both.
 *
 * Constants come from abi.h; src/rseq/cs.rs declares these functions to Rust
 * with their safety contracts.
 */
#include "abi.h"

#define CTL_IDX_FIELD (rseqalloc_ctl + CTL_OFF_IDX_FIELD)(%rip)
#define CTL_SLABS   (rseqalloc_ctl + CTL_OFF_SLABS)(%rip)
#define CTL_NCPU    (rseqalloc_ctl + CTL_OFF_NCPU)(%rip)
#define CTL_AREA_OFF (rseqalloc_ctl + CTL_OFF_AREA_OFF)(%rip)
#define CTL_IDX_OFF (rseqalloc_ctl + CTL_OFF_IDX_OFF)(%rip)
#define CURRENT_OF(region, cls) (HEADERS_OFF + HDR_OFF_CURRENT)(region, cls, HDR_SIZE)
#define END_OF(region, cls)     (HEADERS_OFF + HDR_OFF_END)(region, cls, HDR_SIZE)
#define BEGIN_OF(region, cls)   (HEADERS_OFF + HDR_OFF_BEGIN)(region, cls, HDR_SIZE)
/* The class is in %rdi unless a macro says otherwise. */
#define CURRENT(region) CURRENT_OF(region, %rdi)
#define END(region)     END_OF(region, %rdi)
#define BEGIN(region)   BEGIN_OF(region, %rdi)

/* ------------------------------------------------------------------------ */
/* Helper macros                                                            */
/* ------------------------------------------------------------------------ */

/* FUNCTION_BEGIN(name): a hidden, 16-byte aligned function with CFI. */
.macro FUNCTION_BEGIN name
	.text
	.globl \name
	.hidden \name
	.type \name, @function
	.p2align 4
\name:
	.cfi_startproc
.endm

.macro FUNCTION_END name
	.cfi_endproc
	.size \name, . - \name
.endm

/* RSEQ_DESCRIPTOR(name): emits name's struct rseq_cs {version 0, flags 0,
 * start_ip, post_commit_offset, abort_ip} into __rseq_cs and a pointer to it
 * into __rseq_cs_ptr_array. Expects labels .L<name>_start, _commit, _abort. */
.macro RSEQ_DESCRIPTOR name
	.pushsection __rseq_cs, "awR"
	.balign RSEQ_CS_SIZE
.L\name\()_cs:
	.long 0, 0
	.quad .L\name\()_start
	.quad .L\name\()_commit - .L\name\()_start
	.quad .L\name\()_abort
	.popsection
	.pushsection __rseq_cs_ptr_array, "awR"
	.balign 8
	.quad .L\name\()_cs
	.popsection
.endm

/* ARM(name, mode): in a mainline copy, find this thread's rseq area (its
 * thread-pointer offset, in %rax) and publish name's descriptor in it. A
 * region copy publishes nothing: its range is in the kernel's table. A
 * restart comes back here.
 *
 *	arm:	if (mode == mainline) {
 *			rax = ctl.area_off;
 *			rcx = &name_cs;
 *			((struct rseq *)(fs + rax))->rseq_cs = rcx;
 *		}
 */
.macro ARM name, mode
.L\name\()_arm:
	.ifc \mode, mainline
	movq CTL_AREA_OFF, %rax
	leaq .L\name\()_cs(%rip), %rcx
	movq %rcx, %fs:RSEQ_OFF_RSEQ_CS(%rax)
	.endif
.endm

/* REGION(reg, reg32, miss, mode, field): inside a section, read this CPU's
 * index, bounds-check it, and turn it into its region's address. A mainline
 * copy reads it from the area at %rax, where it armed its descriptor: an
 * index from any other area would not be protected by it. Its `field` is
 * the index's offset in struct rseq when the copy is specialised for one
 * (the small entry points: one load fewer), else `any`: the offset
 * init published. A region copy needs only the index's own offset.
 *
 *	reg = mode == region ? *(u32 *)(fs + ctl.idx_off)
 *	    : field == any   ? *(u32 *)(fs + rax + ctl.idx_field)
 *	    :                  *(u32 *)(fs + rax + field);
 *	if (reg >= ctl.ncpu) goto miss;		(unsigned: -1 and -2 miss)
 *	reg = ctl.slabs + (reg << REGION_SHIFT);	(the region)
 */
.macro REGION reg, reg32, miss, mode, field
	.ifc \mode, region
	movq CTL_IDX_OFF, \reg
	movl %fs:(\reg), \reg32
	.else
	.ifc \field, any
	movq CTL_IDX_FIELD, \reg
	movl %fs:(%rax, \reg), \reg32
	.else
	movl %fs:\field(%rax), \reg32
	.endif
	.endif
	cmpl CTL_NCPU, \reg32
	jae \miss
	shlq $REGION_SHIFT, \reg
	addq CTL_SLABS, \reg
.endm

/* POP(name, miss, mode, field): the pop section for the class in %rdi; the
 * object ends in %rax. Clobbers %rcx, %rdx. With `hdr` the class's header
 * (region + HEADERS_OFF + rdi * HDR_SIZE) and `slot` the region as an
 * array of pointers:
 *
 *	arm:	ARM
 *	start:	rdx = REGION;				(or goto miss)
 *		rcx = hdr->current;
 *		if (rcx <= hdr->begin) goto miss;	(empty, or stopped)
 *		rax = slot[rcx - 1];
 *		meta.alloc_hits++;
 *		hdr->current--;				<- commit
 *	commit:
 */
.macro POP name, miss, mode, field
	ARM \name, \mode
.L\name\()_start:
	REGION %rdx, %edx, \miss, \mode, \field
	movzwl CURRENT(%rdx), %ecx
	cmpw BEGIN(%rdx), %cx
	jbe \miss
	movq -8(%rdx, %rcx, 8), %rax
	incq META_OFF_ALLOC_HITS(%rdx)
	decw CURRENT(%rdx)
.L\name\()_commit:
.endm

/* PUSH(name, miss, cls, obj, mode, field): the push section of the object
 * in register `obj` on the class in register `cls`. Clobbers %rax, %rcx,
 * %rdx. With `hdr` the header of class `cls`, as in POP:
 *
 *	arm:	ARM
 *	start:	rdx = REGION;				(or goto miss)
 *		rcx = hdr->current;
 *		if (rcx >= hdr->end) goto miss;		(full, or stopped)
 *		slot[rcx] = obj;
 *		meta.free_hits++;
 *		hdr->current++;				<- commit
 *	commit:
 */
.macro PUSH name, miss, cls, obj, mode, field
	ARM \name, \mode
.L\name\()_start:
	REGION %rdx, %edx, \miss, \mode, \field
	movzwl CURRENT_OF(%rdx, \cls), %ecx
	cmpw END_OF(%rdx, \cls), %cx
	jae \miss
	movq \obj, (%rdx, %rcx, 8)
	incq META_OFF_FREE_HITS(%rdx)
	incw CURRENT_OF(%rdx, \cls)
.L\name\()_commit:
.endm

/* STAMP_CLEAR: after a small pop has committed, in the C library, clears
 * the freed stamp of the object in %rax (the object is the caller's now;
 * src/front/check.rs stamps it when C `free` takes it). MALLOC_MISS: where the
 * small malloc goes on a miss; the C library's miss also clears the stamp
 * and applies C's rules for failure (errno, blocks during init). */
#ifdef RSEQALLOC_C_API
#define STAMP_CLEAR movq $0, OBJ_OFF_STAMP(%rax)
#define MALLOC_MISS rseqalloc_c_malloc_miss
#else
#define STAMP_CLEAR
#define MALLOC_MISS rseqalloc_alloc_slow
#endif

/* ABORT(name, site): the signed abort handler. The signature is hidden in a
 * `nopl RSEQ_SIG(%rip)` so that a disassembler or a stray fall-through sees
 * a harmless instruction; the kernel reads the 4 bytes at abort_ip - 4.
 *
 *		.long RSEQ_SIG			(inside the nopl)
 *	abort:	restarts[site]++;		(atomic: any CPU may abort)
 *		goto arm;			(inputs are untouched: start over)
 */
.macro ABORT name, site
	.byte 0x0f, 0x1f, 0x05
	.long RSEQ_SIG
.L\name\()_abort:
	lock incq (rseqalloc_restarts + 8 * \site)(%rip)
	jmp .L\name\()_arm
.endm

/* OWN_AREA_DEFAULT: in a resolver, points the control block at our own
 * area if nothing has named an area yet. A section can only be reached
 * through an entry point, after its resolver ran, so it never sees area
 * offset 0 (which would make a mainline copy store its descriptor over the
 * TCB at %fs:8). The loader applies our TLS offset's relocation before any
 * indirect function's (glibc defers IRELATIVE to the end of each object);
 * in an executable the offset is a link-time constant. A resolver may run
 * again after init (lazy binding of a later object), hence the test: it
 * must not undo `publish`. Clobbers %rax. */
.macro OWN_AREA_DEFAULT
	cmpq $0, CTL_AREA_OFF
	jne 1f
	movq $RSEQ_OFF_CPU_ID, CTL_IDX_FIELD
	movq rseqalloc_own_tls@gottpoff(%rip), %rax
	movq %rax, CTL_AREA_OFF
	addq $RSEQ_OFF_CPU_ID, %rax
	movq %rax, CTL_IDX_OFF
1:
.endm

/* RESOLVER_BEGIN(name, default) / RESOLVER_END(name): the frame of the
 * indirect function `name`: its resolver runs during relocation, before TLS
 * and errno exist (the Rust side it calls uses raw system calls only), names
 * our own area in the control block, and keeps its callees' stack
 * 16-aligned in one 8-byte slot, which holds the copy it will return:
 * `default` unless a CHOOSE_IF step picks another. */
.macro RESOLVER_BEGIN name, default
	.text
	.globl \name
	.hidden \name
	.type \name, @gnu_indirect_function
	.p2align 4
\name:
	.cfi_startproc
	OWN_AREA_DEFAULT
	subq $8, %rsp
	.cfi_adjust_cfa_offset 8
	leaq \default(%rip), %rcx
	movq %rcx, (%rsp)
.endm

.macro RESOLVER_END name
	movq (%rsp), %rax
	addq $8, %rsp
	.cfi_adjust_cfa_offset -8
	ret
	.cfi_endproc
	.size \name, . - \name
.endm

/* CHOOSE_IF(query, copy): in a resolver, makes `copy` the answer if the
 * Rust function `query` (src/rseq/resolve.rs) returns true. */
.macro CHOOSE_IF query, copy
	call \query
	testb %al, %al
	jz 1f
	leaq \copy(%rip), %rcx
	movq %rcx, (%rsp)
1:
.endm

/* ENTRY(name): the indirect function `name`: name_region when the region
 * copies were chosen, else name_mainline. */
.macro ENTRY name
RESOLVER_BEGIN \name, \name\()_mainline
	CHOOSE_IF rseqalloc_regions_chosen, \name\()_region
RESOLVER_END \name
.endm

/* ENTRY_BY_INDEX(name): as ENTRY, for a section whose mainline copy comes
 * in two, name_mainline_cpu and name_mainline_cid, by the index init will
 * publish (the same answer: rseqalloc_mm_cid_chosen). The region copy, if
 * chosen, wins. */
.macro ENTRY_BY_INDEX name
RESOLVER_BEGIN \name, \name\()_mainline_cpu
	CHOOSE_IF rseqalloc_mm_cid_chosen, \name\()_mainline_cid
	CHOOSE_IF rseqalloc_regions_chosen, \name\()_region
RESOLVER_END \name
.endm

/* ------------------------------------------------------------------------ */
/* Critical sections: each macro emits one copy; `mode` is mainline|region  */
/* ------------------------------------------------------------------------ */

/* Our descriptors in __rseq_cs, as one symbol sized at the end of this file:
 * src/rseq/regions.rs turns them into the region table. (gas cannot check
 * their count against NUM_SECTIONS, alignment being resolved late;
 * tests/rseq_cs_section.rs does.) */
	.pushsection __rseq_cs, "awR"
	.balign RSEQ_CS_SIZE
	.globl rseqalloc_rseq_cs
	.hidden rseqalloc_rseq_cs
	.type rseqalloc_rseq_cs, @object
rseqalloc_rseq_cs:
.Lrseq_cs_begin:
	.popsection

/* CLASS_OF(size, scratch): replaces a size <= MAX_SMALL by its class, with
 * one load from the Rust table `rseqalloc_class_of` (src/platform/size_class.rs),
 * indexed by the size itself. */
.macro CLASS_OF size, scratch
	leaq rseqalloc_class_of(%rip), \scratch
	movzbq (\scratch, \size), \size
.endm

/* SECOND_ENTRY(name): a second entry point inside the function being
 * emitted, for callers that already hold what the code before it computes. */
.macro SECOND_ENTRY name
	.globl \name
	.hidden \name
	.type \name, @function
\name:
.endm

/*
 * void *rseqalloc_malloc_small(size_t size)
 *   rdi = size <= MAX_SMALL, for alignment <= 16.
 * void *rseqalloc_malloc_class(size_t class)
 *   rdi = class (the second entry, after the size lookup: for callers that
 *   know the class, such as the over-aligned path).
 *   Both return an object of the class from this CPU's cache, or tail-call
 *   MALLOC_MISS(class).
 *
 *	malloc_small:	rdi = rseqalloc_class_of[rdi];	(rax: the table)
 *	malloc_class:	POP(rdi) -> rax, or goto miss;
 *			STAMP_CLEAR;			(C library: rax->stamp = 0)
 *			return rax;
 *	miss:		return MALLOC_MISS(rdi);	(tail call)
 */
.macro MALLOC_SMALL copy, mode, field
FUNCTION_BEGIN rseqalloc_malloc_small_\copy
	CLASS_OF %rdi, %rax
SECOND_ENTRY rseqalloc_malloc_class_\copy
	POP rseqalloc_malloc_small_\copy, .Lrseqalloc_malloc_small_\copy\()_miss, \mode, \field
	STAMP_CLEAR
	ret
.Lrseqalloc_malloc_small_\copy\()_miss:
	jmp MALLOC_MISS
	ABORT rseqalloc_malloc_small_\copy, SITE_POP
FUNCTION_END rseqalloc_malloc_small_\copy
RSEQ_DESCRIPTOR rseqalloc_malloc_small_\copy
.endm

/*
 * void rseqalloc_free_small(void *object, size_t size)
 *   rdi = a block allocated at alignment <= 16, rsi = its size <= MAX_SMALL
 *   (the order of __rust_dealloc's arguments, so nothing moves).
 * void rseqalloc_free_class(void *object, size_t class)
 *   rdi = an object, rsi = its class (the second entry: C `free` knows the
 *   class from the class map).
 *   Both push it on this CPU's cache of its class, or tail-call
 *   rseqalloc_free_slow(object, class).
 *
 *	free_small:	rsi = rseqalloc_class_of[rsi];	(rax: the table)
 *	free_class:	PUSH(cls rsi, obj rdi), or goto miss;
 *			return;
 *	miss:		return rseqalloc_free_slow(rdi, rsi);	(tail call)
 */
.macro FREE_SMALL copy, mode, field
FUNCTION_BEGIN rseqalloc_free_small_\copy
	CLASS_OF %rsi, %rax
SECOND_ENTRY rseqalloc_free_class_\copy
	PUSH rseqalloc_free_small_\copy, .Lrseqalloc_free_small_\copy\()_miss, %rsi, %rdi, \mode, \field
	ret
.Lrseqalloc_free_small_\copy\()_miss:
	jmp rseqalloc_free_slow
	ABORT rseqalloc_free_small_\copy, SITE_PUSH
FUNCTION_END rseqalloc_free_small_\copy
RSEQ_DESCRIPTOR rseqalloc_free_small_\copy
.endm

/*
 * void *rseqalloc_cs_pop(size_t class)
 *   rdi = class. Returns the top object of this CPU's stack for `class`, or
 *   NULL if the stack is empty, stopped, or the thread has no usable index.
 *   Clobbers rax, rcx, rdx.
 *
 *	POP(rdi) -> rax, or goto miss;
 *	return rax;
 *	miss: return NULL;
 */
.macro CS_POP mode
FUNCTION_BEGIN rseqalloc_cs_pop_\mode
	POP rseqalloc_cs_pop_\mode, .Lrseqalloc_cs_pop_\mode\()_miss, \mode, any
	ret
.Lrseqalloc_cs_pop_\mode\()_miss:
	xorl %eax, %eax
	ret
	ABORT rseqalloc_cs_pop_\mode, SITE_POP
FUNCTION_END rseqalloc_cs_pop_\mode
RSEQ_DESCRIPTOR rseqalloc_cs_pop_\mode
.endm

/*
 * bool rseqalloc_cs_push(size_t class, void *object)
 *   rdi = class, rsi = object. Pushes `object` on this CPU's stack for
 *   `class`; returns 1, or 0 if the stack is full, stopped, or unusable.
 *   Clobbers rax, rcx, rdx.
 *
 *	PUSH(cls rdi, obj rsi), or goto miss;
 *	return 1;
 *	miss: return 0;
 */
.macro CS_PUSH mode
FUNCTION_BEGIN rseqalloc_cs_push_\mode
	PUSH rseqalloc_cs_push_\mode, .Lrseqalloc_cs_push_\mode\()_miss, %rdi, %rsi, \mode, any
	movl $1, %eax
	ret
.Lrseqalloc_cs_push_\mode\()_miss:
	xorl %eax, %eax
	ret
	ABORT rseqalloc_cs_push_\mode, SITE_PUSH
FUNCTION_END rseqalloc_cs_push_\mode
RSEQ_DESCRIPTOR rseqalloc_cs_push_\mode
.endm

/*
 * size_t rseqalloc_cs_pop_batch(size_t class, void **out, size_t n)
 *   rdi = class, rsi = out, rdx = n. Moves k = min(n, stack depth) objects
 *   from the top of this CPU's stack to out[0..k] and returns k; one commit.
 *   Clobbers rax, rcx, r8-r11. With `hdr` and `slot` as in POP:
 *
 *		if (rdx == 0) goto miss;
 *	arm:	ARM
 *	start:	r8 = REGION;				(or goto miss)
 *		rcx = hdr->current;
 *		r9 = hdr->begin;
 *		rax = rcx - r9;				(signed: the depth)
 *		if (rax <= 0) goto miss;		(empty, or stopped)
 *		rax = min(rax, rdx);			(k)
 *		for (r10 = 0; r10 < rax; r10++)
 *			rsi[r10] = slot[--rcx];		(through r11)
 *		hdr->current = cx;			<- commit
 *	commit:	return rax;
 *	miss:	return 0;
 */
.macro CS_POP_BATCH mode
FUNCTION_BEGIN rseqalloc_cs_pop_batch_\mode
	testq %rdx, %rdx
	jz .Lrseqalloc_cs_pop_batch_\mode\()_miss
	ARM rseqalloc_cs_pop_batch_\mode, \mode
.Lrseqalloc_cs_pop_batch_\mode\()_start:
	REGION %r8, %r8d, .Lrseqalloc_cs_pop_batch_\mode\()_miss, \mode, any
	movzwl CURRENT(%r8), %ecx
	movzwl BEGIN(%r8), %r9d
	movq %rcx, %rax
	subq %r9, %rax			/* depth; <= 0 when empty or stopped */
	jle .Lrseqalloc_cs_pop_batch_\mode\()_miss
	cmpq %rdx, %rax
	cmovaq %rdx, %rax		/* k = min(n, depth) */
	xorl %r10d, %r10d
1:	decq %rcx
	movq (%r8, %rcx, 8), %r11
	movq %r11, (%rsi, %r10, 8)
	incq %r10
	cmpq %rax, %r10
	jb 1b
	movw %cx, CURRENT(%r8)
.Lrseqalloc_cs_pop_batch_\mode\()_commit:
	ret
.Lrseqalloc_cs_pop_batch_\mode\()_miss:
	xorl %eax, %eax
	ret
	ABORT rseqalloc_cs_pop_batch_\mode, SITE_POP_BATCH
FUNCTION_END rseqalloc_cs_pop_batch_\mode
RSEQ_DESCRIPTOR rseqalloc_cs_pop_batch_\mode
.endm

/*
 * size_t rseqalloc_cs_push_batch(size_t class, void *const *items, size_t n)
 *   rdi = class, rsi = items, rdx = n. Pushes items[0..k], k = min(n, free
 *   slots), on this CPU's stack and returns k; one commit.
 *   Clobbers rax, rcx, r8-r11. With `hdr` and `slot` as in POP:
 *
 *		if (rdx == 0) goto miss;
 *	arm:	ARM
 *	start:	r8 = REGION;				(or goto miss)
 *		rcx = hdr->current;
 *		rax = hdr->end - rcx;			(signed: the free slots)
 *		if (rax <= 0) goto miss;		(full, or stopped)
 *		rax = min(rax, rdx);			(k)
 *		for (r10 = 0; r10 < rax; r10++)
 *			slot[rcx++] = rsi[r10];		(through r11)
 *		hdr->current = cx;			<- commit
 *	commit:	return rax;
 *	miss:	return 0;
 */
.macro CS_PUSH_BATCH mode
FUNCTION_BEGIN rseqalloc_cs_push_batch_\mode
	testq %rdx, %rdx
	jz .Lrseqalloc_cs_push_batch_\mode\()_miss
	ARM rseqalloc_cs_push_batch_\mode, \mode
.Lrseqalloc_cs_push_batch_\mode\()_start:
	REGION %r8, %r8d, .Lrseqalloc_cs_push_batch_\mode\()_miss, \mode, any
	movzwl CURRENT(%r8), %ecx
	movzwl END(%r8), %eax
	subq %rcx, %rax			/* free slots; <= 0 when full or stopped */
	jle .Lrseqalloc_cs_push_batch_\mode\()_miss
	cmpq %rdx, %rax
	cmovaq %rdx, %rax		/* k = min(n, free slots) */
	xorl %r10d, %r10d
1:	movq (%rsi, %r10, 8), %r11
	movq %r11, (%r8, %rcx, 8)
	incq %rcx
	incq %r10
	cmpq %rax, %r10
	jb 1b
	movw %cx, CURRENT(%r8)
.Lrseqalloc_cs_push_batch_\mode\()_commit:
	ret
.Lrseqalloc_cs_push_batch_\mode\()_miss:
	xorl %eax, %eax
	ret
	ABORT rseqalloc_cs_push_batch_\mode, SITE_PUSH_BATCH
FUNCTION_END rseqalloc_cs_push_batch_\mode
RSEQ_DESCRIPTOR rseqalloc_cs_push_batch_\mode
.endm

/* Every section twice (the small entry points three times: their
 * mainline copies are specialised by index field), and the entry points
 * choosing between the copies. NUM_SECTIONS in abi.h counts the
 * descriptors this emits. */
.irp section, MALLOC_SMALL, FREE_SMALL
	\section mainline_cpu, mainline, RSEQ_OFF_CPU_ID
	\section mainline_cid, mainline, RSEQ_OFF_MM_CID
	\section region, region, any
.endr
.irp section, CS_POP, CS_PUSH, CS_POP_BATCH, CS_PUSH_BATCH
	\section mainline
	\section region
.endr
ENTRY_BY_INDEX rseqalloc_malloc_small
ENTRY_BY_INDEX rseqalloc_malloc_class
ENTRY_BY_INDEX rseqalloc_free_small
ENTRY_BY_INDEX rseqalloc_free_class
ENTRY rseqalloc_cs_pop
ENTRY rseqalloc_cs_push
ENTRY rseqalloc_cs_pop_batch
ENTRY rseqalloc_cs_push_batch

	.pushsection __rseq_cs, "awR"
.Lrseq_cs_end:
	.size rseqalloc_rseq_cs, .Lrseq_cs_end - .Lrseq_cs_begin
	.popsection

/* ------------------------------------------------------------------------ */
/* Thread-pointer helpers (no critical sections)                            */
/* ------------------------------------------------------------------------ */

/* intptr_t rseqalloc_own_tls_offset(void): the offset of this module's
 * initial-exec TLS block (own rseq area, state and count words) from the
 * thread pointer. The same for every thread, so init stores it once. */
FUNCTION_BEGIN rseqalloc_own_tls_offset
	movq rseqalloc_own_tls@gottpoff(%rip), %rax
	ret
FUNCTION_END rseqalloc_own_tls_offset

/* intptr_t rseqalloc_shared_area_offset(void),
 * rseqalloc_shared_refcount_offset(void): the thread-pointer offsets of
 * `__rseq_abi` and `__rseq_refcount` (see Data), through the GOT, so that
 * they are those of whichever object defines the symbols first; 0 where no
 * object does (only in a C library that references them weakly: Data). */
FUNCTION_BEGIN rseqalloc_shared_area_offset
	movq __rseq_abi@gottpoff(%rip), %rax
	ret
FUNCTION_END rseqalloc_shared_area_offset

FUNCTION_BEGIN rseqalloc_shared_refcount_offset
	movq __rseq_refcount@gottpoff(%rip), %rax
	ret
FUNCTION_END rseqalloc_shared_refcount_offset

/* intptr_t rseqalloc_own_shared_offset(void): the thread-pointer offset of
 * this object's own definition of the shared area, which `__rseq_abi` may
 * or may not be bound to; 0 in a C library that defines none (Data). */
FUNCTION_BEGIN rseqalloc_own_shared_offset
#if defined(RSEQALLOC_C_API) && !defined(RSEQALLOC_EXPORT_AREA)
	xorl %eax, %eax
#else
	movq rseqalloc_shared_storage@gottpoff(%rip), %rax
#endif
	ret
FUNCTION_END rseqalloc_own_shared_offset

/* void *rseqalloc_thread_pointer(void): this thread's %fs base (glibc keeps
 * it at %fs:0, tcbhead_t.tcb). */
FUNCTION_BEGIN rseqalloc_thread_pointer
	movq %fs:0, %rax
	ret
FUNCTION_END rseqalloc_thread_pointer

/* bool rseqalloc_glibc_rseq(intptr_t *offset, unsigned *size): reads glibc's
 * __rseq_offset and __rseq_size (glibc >= 2.35). They are weak references:
 * on an older glibc they resolve to 0 and this returns 0. Stable Rust has no
 * weak linkage, and dlsym may allocate, hence this helper. */
	.weak __rseq_offset
	.weak __rseq_size
FUNCTION_BEGIN rseqalloc_glibc_rseq
	movq __rseq_size@GOTPCREL(%rip), %rax
	testq %rax, %rax
	jz 1f
	movl (%rax), %eax
	movl %eax, (%rsi)
	movq __rseq_offset@GOTPCREL(%rip), %rax
	testq %rax, %rax
	jz 1f
	movq (%rax), %rax
	movq %rax, (%rdi)
	movl $1, %eax
	ret
1:	xorl %eax, %eax
	ret
FUNCTION_END rseqalloc_glibc_rseq

/* bool rseqalloc_librseq(intptr_t *offset, unsigned *size): reads
 * librseq's `rseq_offset` and `rseq_size` (librseq 0.1 and later, and the
 * kernel's rseq selftests, which keep their area private and publish it
 * through these): weak references, resolved where such an object was
 * loaded with the program; 0 (absent) otherwise. */
	.weak rseq_offset
	.weak rseq_size
FUNCTION_BEGIN rseqalloc_librseq
	movq rseq_size@GOTPCREL(%rip), %rax
	testq %rax, %rax
	jz 1f
	movq rseq_offset@GOTPCREL(%rip), %rcx
	testq %rcx, %rcx
	jz 1f
	movl (%rax), %eax
	movl %eax, (%rsi)
	movq (%rcx), %rax
	movq %rax, (%rdi)
	movl $1, %eax
	ret
1:	xorl %eax, %eax
	ret
FUNCTION_END rseqalloc_librseq

/* ------------------------------------------------------------------------ */
/* Data                                                                     */
/* ------------------------------------------------------------------------ */

/* RSEQ_AREA_INIT: a struct rseq as a thread starts with it: cpu_id and
 * mm_cid -1 (RSEQ_CPU_ID_UNINITIALIZED), the rest 0. */
.macro RSEQ_AREA_INIT
	.long 0			/* cpu_id_start */
	.long -1		/* cpu_id */
	.quad 0			/* rseq_cs */
	.long 0			/* flags */
	.long 0			/* node_id */
	.long -1		/* mm_cid */
	.long 0			/* padding */
.endm

/* The Rust symbols the sections reach; hidden so that the shared library
 * does not export them (the strictest visibility of a symbol wins). */
	.hidden rseqalloc_class_of
	.hidden MALLOC_MISS
	.hidden rseqalloc_free_slow
	.hidden rseqalloc_regions_chosen
	.hidden rseqalloc_mm_cid_chosen

/* The control block (Rust: rseq::cs::Ctl). Zero until the first resolver
 * names our own area in it (OWN_AREA_DEFAULT), and ncpu 0 until init
 * publishes it. */
	.bss
	.globl rseqalloc_ctl
	.hidden rseqalloc_ctl
	.type rseqalloc_ctl, @object
	.balign 64
rseqalloc_ctl:
	.zero CTL_SIZE
	.size rseqalloc_ctl, CTL_SIZE

/* Restart counters, bumped only on abort paths. */
	.globl rseqalloc_restarts
	.hidden rseqalloc_restarts
	.type rseqalloc_restarts, @object
	.balign 64
rseqalloc_restarts:
	.zero 8 * NUM_SITES
	.size rseqalloc_restarts, 8 * NUM_SITES

/* The rseq area shared with other rseq users, by the convention of older
 * librseq and the kernel's selftests: `__rseq_abi` is the thread's area
 * (initial-exec TLS, 32 bytes, 32-aligned), `__rseq_refcount` counts the
 * thread's users of its registration (a user registers only when it was 0
 * and unregisters only when it drops to 0). The dynamic linker binds every
 * reference to the first object in the process that defines them, so all
 * users share one area.
 * - A program built with this crate defines both, with default
 *   visibility: libraries linked into it bind to them (and libraries
 *   preloaded or opened later do too if it exports them:
 *   -Wl,--export-dynamic-symbol=__rseq_abi,--export-dynamic-symbol=__rseq_refcount).
 *   The definitions are weak, so that another static definition in the
 *   program (a static librseq, TCMalloc's) links and wins.
 * - The C library exports only the names rustc lists in its version
 *   script, and stable Rust cannot define a thread-local symbol. So here
 *   the storage has hidden names (RSEQALLOC_EXPORT_AREA), Rust defines
 *   placeholders named `__rseq_abi` and `__rseq_refcount` that put the
 *   names in the version script (rseq::export), and build.rs points the
 *   names at this storage with `--defsym`: a linker assignment overrides
 *   an object's definition, and lld gives the name its target's TLS type.
 *   The names keep default visibility, so our references bind to an
 *   earlier definition where one exists. Only lld links this (GNU ld
 *   refuses a TLS reference to a name a placeholder defines); where
 *   build.rs finds none, the C library references the names weakly: it
 *   shares the area of any object loaded with the program that defines
 *   them, and uses its own (below) otherwise. */
#if defined(RSEQALLOC_C_API) && !defined(RSEQALLOC_EXPORT_AREA)
	.weak __rseq_abi
	.weak __rseq_refcount
#else
#ifdef RSEQALLOC_EXPORT_AREA
#define SHARED_AREA rseqalloc_shared_abi
#define SHARED_COUNT rseqalloc_shared_refcount
	.globl SHARED_AREA
	.hidden SHARED_AREA
	.globl SHARED_COUNT
	.hidden SHARED_COUNT
#else
#define SHARED_AREA __rseq_abi
#define SHARED_COUNT __rseq_refcount
	.weak SHARED_AREA
	.weak SHARED_COUNT
#endif
	.section .tdata, "awT", @progbits
	.type SHARED_AREA, @object
	.globl rseqalloc_shared_storage
	.hidden rseqalloc_shared_storage
	.type rseqalloc_shared_storage, @object
	.balign RSEQ_AREA_SIZE
SHARED_AREA:
rseqalloc_shared_storage:
	RSEQ_AREA_INIT
	.size SHARED_AREA, RSEQ_AREA_SIZE
	.size rseqalloc_shared_storage, RSEQ_AREA_SIZE

	.section .tbss, "awT", @nobits
	.type SHARED_COUNT, @object
	.balign 4
SHARED_COUNT:
	.zero 4
	.size SHARED_COUNT, 4
#endif

/* Our thread-local block (abi.h): the private area (the resolvers'
 * default, and the C library's area where it does not export the shared
 * one and no object defines `__rseq_abi`), the registration state and the
 * private count. It is initialised TLS (.tdata), not .tbss: a new thread
 * starts with cpu_id = mm_cid = -1 (RSEQ_CPU_ID_UNINITIALIZED), so every
 * section that reads this area misses until the thread registers it. State
 * 0 is "not tried". */
	.section .tdata, "awT", @progbits
	.globl rseqalloc_own_tls
	.hidden rseqalloc_own_tls
	.type rseqalloc_own_tls, @object
	.balign RSEQ_AREA_SIZE
rseqalloc_own_tls:
	RSEQ_AREA_INIT
	.long 0			/* state (OWN_TLS_OFF_STATE) */
	.long 0			/* count (OWN_TLS_OFF_COUNT) */
	.zero OWN_TLS_SIZE - OWN_TLS_OFF_COUNT - 4
	.size rseqalloc_own_tls, OWN_TLS_SIZE

	.section .note.GNU-stack, "", @progbits
