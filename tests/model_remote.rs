//! Model test of the remote-operation protocol: a simulated
//! CPU runs the critical sections' loads and stores one at a time on a real
//! region, exactly as the asm orders them; a remote thread shrinks or drains
//! a class with the real `LockedRegion::resize`; the schedule interleaves
//! them at random, including inside the remote operation's fence window,
//! after which the section still in flight must abort (what membarrier-RSEQ
//! or a migration guarantees). Every object stays accounted for, and none is
//! ever handed out twice.

// Built only with the test hooks (RSEQALLOC_TEST_HOOKS=1, build.rs).
#![cfg(rseqalloc_test_hooks)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use proptest::prelude::*;
use rseqalloc::test_hooks::{FakeArea, Index, Slab, HEADERS_OFF, NUM_CLASSES};

/// Regions the cases cycle through.
const NCPU: usize = 1024;
const BUDGET: usize = 1 << 20;
/// Class indices exercised: 16 B (deep stacks) and 1 KiB.
const CLASSES: [usize; 2] = [1, 20];
/// The first slot after the meta block and the class headers.
const FIRST_SLOT: usize = (HEADERS_OFF + 8 * NUM_CLASSES) / 8;

#[derive(Clone, Debug)]
enum Op {
    /// The CPU starts a pop (`Some(n)`: a batch pop of n) or a push of n
    /// objects; a section already in flight there was preempted: it aborts.
    Start { class: usize, push: bool, n: usize },
    /// The section in flight executes its next load or store.
    Step,
    /// The section in flight is preempted or signalled.
    Abort,
    /// A remote thread sets a class's capacity; the next `window` operations
    /// run between its stop and its fence.
    Remote { class: usize, capacity: usize, window: usize },
    /// A slow path grows a class under the region lock (laying the region
    /// out first, with a fence; the next `window` operations run before it).
    Grow { class: usize, slots: usize, window: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let class = 0..CLASSES.len();
    prop_oneof![
        3 => (class.clone(), any::<bool>(), 1usize..5).prop_map(|(class, push, n)| Op::Start { class, push, n }),
        8 => Just(Op::Step),
        1 => Just(Op::Abort),
        2 => (class.clone(), 0usize..8, 0usize..12).prop_map(|(class, capacity, window)| Op::Remote { class, capacity, window }),
        2 => (class, 0usize..48, 0usize..4).prop_map(|(class, slots, window)| Op::Grow { class, slots, window }),
    ]
}

/// A section in flight: what it has loaded so far, as the asm holds it in
/// registers.
struct Section {
    class: usize,
    push: bool,
    /// Objects to push, or how many to pop.
    objects: Vec<usize>,
    want: usize,
    /// Loaded `current`, then the clamped count k, then slots done.
    current: Option<u16>,
    count: Option<usize>,
    done: usize,
    popped: Vec<usize>,
}

struct Sim<'a> {
    slab: &'a Slab,
    cpu: usize,
    base: usize,
    /// Objects the program holds.
    held: Vec<usize>,
    /// Objects a remote operation took out of the cache.
    spilled: Vec<usize>,
    next_token: usize,
    section: Option<Section>,
}

impl Sim<'_> {
    fn header(&self, class: usize) -> &AtomicU64 {
        // SAFETY: the header lies in the region the slab mapped.
        unsafe { &*((self.base + HEADERS_OFF + 8 * class) as *const AtomicU64) }
    }

    fn current(&self, class: usize) -> &AtomicU16 {
        // SAFETY: `current` is the header's first u16.
        unsafe { &*((self.base + HEADERS_OFF + 8 * class) as *const AtomicU16) }
    }

    fn slot(&self, i: usize) -> *mut usize {
        (self.base + 8 * i) as *mut usize
    }

    fn start(&mut self, class: usize, push: bool, n: usize) {
        self.section = None; // preempted: a section in flight aborts
        let objects = if push {
            (0..n)
                .map(|_| {
                    self.held.pop().unwrap_or_else(|| {
                        self.next_token += 1;
                        self.next_token << 4
                    })
                })
                .collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        // Objects being pushed stay the program's until the commit.
        self.held.extend(&objects);
        let class = CLASSES[class];
        self.section =
            Some(Section { class, push, objects, want: n, current: None, count: None, done: 0, popped: Vec::new() });
    }

    /// One load or store of the section in flight, in the asm's order:
    /// current; begin (pop) or end (push); then each slot; then the commit.
    fn step(&mut self) -> Result<(), TestCaseError> {
        let Some(mut s) = self.section.take() else { return Ok(()) };
        let field = |word: u64, shift: u32| (word >> shift) as u16;
        match (s.current, s.count) {
            (None, _) => s.current = Some(self.current(s.class).load(Ordering::Relaxed)),
            (Some(current), None) => {
                let word = self.header(s.class).load(Ordering::Relaxed);
                let current = current as i64;
                let available =
                    if s.push { field(word, 32) as i64 - current } else { current - field(word, 48) as i64 };
                if available <= 0 {
                    return Ok(()); // miss: the section ends without a commit
                }
                s.count = Some((available as usize).min(s.want));
            }
            (Some(current), Some(count)) if s.done < count => {
                let i = s.done;
                if s.push {
                    // A push must stay in the slots: below them lie the meta
                    // block and the headers.
                    prop_assert!(current as usize >= FIRST_SLOT, "a push would write slot {}", current);
                    // SAFETY: current + i < the loaded end, inside the slots.
                    unsafe { *self.slot(current as usize + i) = s.objects[i] };
                } else {
                    // SAFETY: current - 1 - i >= the loaded begin.
                    s.popped.push(unsafe { *self.slot(current as usize - 1 - i) });
                }
                s.done += 1;
            }
            (Some(current), Some(count)) => {
                // The single push and pop commit with `incw`/`decw` on
                // `current` rather than a store of the loaded value: the two
                // agree only if nothing else wrote `current` meanwhile.
                let now = self.current(s.class).load(Ordering::Relaxed);
                prop_assert_eq!(now, current, "current changed under a section");
                let new = if s.push { current + count as u16 } else { current - count as u16 };
                self.current(s.class).store(new, Ordering::Release);
                if s.push {
                    self.held.retain(|o| !s.objects[..count].contains(o));
                } else {
                    for &o in &s.popped {
                        prop_assert!(!self.held.contains(&o), "object {:#x} handed out twice", o);
                        prop_assert!(!self.spilled.contains(&o), "spilled object {:#x} handed out", o);
                        self.held.push(o);
                    }
                }
                return Ok(());
            }
        }
        self.section = Some(s);
        Ok(())
    }

    /// The CPU's own operations among the `window` after `ops[*i]`, which
    /// are consumed.
    fn window(ops: &[Op], i: &mut usize, window: usize) -> Vec<Op> {
        let taken: Vec<Op> = ops[*i + 1..]
            .iter()
            .take(window)
            .filter(|o| matches!(o, Op::Start { .. } | Op::Step | Op::Abort))
            .cloned()
            .collect();
        *i += window.min(ops.len() - *i - 1);
        taken
    }

    /// Applies one of the CPU's own operations.
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Start { class, push, n } => self.start(*class, *push, *n),
            Op::Step => return self.step(),
            _ => self.section = None,
        }
        Ok(())
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), TestCaseError> {
        let mut i = 0;
        while i < ops.len() {
            match ops[i].clone() {
                op @ (Op::Start { .. } | Op::Step | Op::Abort) => self.apply(&op)?,
                Op::Grow { class, slots, window } => {
                    let window_ops = Self::window(ops, &mut i, window);
                    let mut result = Ok(());
                    let sim = &mut *self;
                    // Laying the region out fences it: the CPU runs on until
                    // the fence, then a section in flight aborts.
                    sim.slab.grow_fenced(sim.cpu, CLASSES[class], slots, || {
                        for op in &window_ops {
                            result = result.clone().and(sim.apply(op));
                        }
                        sim.section = None;
                    });
                    result?;
                }
                Op::Remote { class, capacity, window } => {
                    let window_ops = Self::window(ops, &mut i, window);
                    let (before_fence, after_fence) = window_ops.split_at(window_ops.len() / 2);
                    let mut result = Ok(());
                    let mut fences = 0;
                    let sim = &mut *self;
                    let spilled = sim.slab.shrink_remote(sim.cpu, CLASSES[class], capacity, || {
                        fences += 1;
                        // The CPU runs on while the remote thread works: at
                        // the first fence, sections that read the header
                        // before the stop may commit first; whatever is in
                        // flight at a fence aborts; sections started after
                        // the first fence may still be in flight when the
                        // operation ends.
                        if fences == 1 {
                            for op in before_fence {
                                result = result.clone().and(sim.apply(op));
                            }
                        }
                        sim.section = None;
                        if fences == 1 {
                            for op in after_fence {
                                result = result.clone().and(sim.apply(op));
                            }
                        }
                    });
                    result?;
                    for p in spilled {
                        let o = p as usize;
                        prop_assert!(!self.held.contains(&o) && !self.spilled.contains(&o), "spilled twice {:#x}", o);
                        self.spilled.push(o);
                    }
                }
            }
            for &class in &CLASSES {
                let h = self.slab.header(self.cpu, class);
                prop_assert!(h.begin <= h.current && h.current <= h.end, "{:?}", h);
            }
            i += 1;
        }
        Ok(())
    }
}

fn slab() -> &'static Slab {
    static SLAB: OnceLock<Slab> = OnceLock::new();
    SLAB.get_or_init(|| {
        // An index no cache has: only the simulated CPU touches regions.
        let area = FakeArea::new(u32::MAX);
        // SAFETY: this test never allocates through RseqAlloc, and no real
        // section runs in it.
        unsafe { Slab::install(NCPU, BUDGET, Index::Fake(area)) }
    })
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    static CASES: AtomicUsize = AtomicUsize::new(0);
    // Regions are reused: a case leaves its region empty (drained below),
    // and whatever capacity it had is a fine starting point for the next.
    let cpu = CASES.fetch_add(1, Ordering::Relaxed) % NCPU;
    let slab = slab();
    let mut sim = Sim {
        slab,
        cpu,
        base: slab.region_base(cpu),
        held: Vec::new(),
        spilled: Vec::new(),
        next_token: 0,
        section: None,
    };
    sim.run(&ops)?;
    sim.section = None;
    // Conservation: every object ever made is held, spilled or cached, once.
    let mut everything: Vec<usize> = sim.held.clone();
    everything.extend(&sim.spilled);
    for &class in &CLASSES {
        everything.extend(slab.drain(cpu, class).into_iter().map(|p| p as usize));
    }
    let distinct: HashSet<usize> = everything.iter().copied().collect();
    prop_assert_eq!(distinct.len(), everything.len(), "an object is in two places");
    prop_assert_eq!(everything.len(), sim.next_token, "objects lost");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    #[test]
    fn remote_operations_conserve_every_object(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops)?;
    }
}
