//! Model test of the per-CPU slab: random sequences of push, pop, batch
//! push/pop, grow, drain, cache switches and injected aborts, run on the
//! real critical sections (through a fake, unregistered rseq area whose
//! cache index the test sets), must agree step by step with a plain model.

// Built only with the test hooks (RSEQALLOC_TEST_HOOKS=1, build.rs).
#![cfg(rseqalloc_test_hooks)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use proptest::prelude::*;
use rseqalloc::test_hooks::{FakeArea, Index, Slab};

/// Regions in the test slab; each proptest case uses three fresh ones.
const NCPU: usize = 1020;
const CPUS_PER_CASE: usize = 3;
/// A small budget so that it, not the partition, often limits growth.
const BUDGET: usize = 64 * 1024;
/// Classes exercised: 16 B, 1 KiB, 32 KiB (size, max capacity differ).
const CLASSES: [(usize, usize); 3] = [(1, 16), (20, 1024), (40, 32768)];

fn max_capacity(size: usize) -> usize {
    // Mirrors SizeClass::max_capacity for the classes above.
    ((128 * 1024) / size).clamp(4, 1024)
}

#[derive(Clone, Debug)]
enum Op {
    SetCpu(usize),
    Push(usize),
    Pop(usize),
    PushBatch(usize, usize),
    PopBatch(usize, usize),
    Grow(usize, usize, usize),
    Drain(usize, usize),
    AbortedPush(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let class = 0..CLASSES.len();
    prop_oneof![
        1 => (0..CPUS_PER_CASE + 1).prop_map(Op::SetCpu),
        4 => class.clone().prop_map(Op::Push),
        4 => class.clone().prop_map(Op::Pop),
        1 => (class.clone(), 0usize..40).prop_map(|(c, n)| Op::PushBatch(c, n)),
        1 => (class.clone(), 0usize..40).prop_map(|(c, n)| Op::PopBatch(c, n)),
        1 => (0..CPUS_PER_CASE, class.clone(), 0usize..100).prop_map(|(cpu, c, n)| Op::Grow(cpu, c, n)),
        1 => (0..CPUS_PER_CASE, class.clone()).prop_map(|(cpu, c)| Op::Drain(cpu, c)),
        1 => class.prop_map(Op::AbortedPush),
    ]
}

struct Fixture {
    slab: Slab,
    area: &'static FakeArea,
    cases: AtomicUsize,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let area = FakeArea::new(NCPU as u32);
        // SAFETY: this test binary never allocates through RseqAlloc, and
        // proptest runs the cases on this one thread.
        let slab = unsafe { Slab::install(NCPU, BUDGET, Index::Fake(area)) };
        Fixture { slab, area, cases: AtomicUsize::new(0) }
    })
}

/// The model: per (cpu, class) a stack and a capacity; per cpu the budget
/// in use and whether the region was laid out.
#[derive(Default)]
struct Model {
    stacks: HashMap<(usize, usize), Vec<usize>>,
    capacity: HashMap<(usize, usize), usize>,
    used: HashMap<usize, usize>,
    laid_out: HashMap<usize, bool>,
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let f = fixture();
    let case = f.cases.fetch_add(1, Ordering::Relaxed);
    prop_assume!((case + 1) * CPUS_PER_CASE <= NCPU);
    let base = case * CPUS_PER_CASE;
    let mut model = Model::default();
    let mut next_token = 1usize;
    let mut cpu: Option<usize> = None; // None: an index the sections must reject
    f.area.set(NCPU as u32);
    let junk = 0xdead_0000usize as *mut u8;
    let restarts_before = rseqalloc::test_hooks::restarts();

    for op in ops {
        match op {
            Op::SetCpu(i) => {
                cpu = (i < CPUS_PER_CASE).then_some(i);
                // Past the last case's CPUs: out of range, must miss.
                f.area.set(cpu.map_or(NCPU as u32 + i as u32, |c| (base + c) as u32));
            }
            Op::Push(c) => {
                let (class, _) = CLASSES[c];
                let token = next_token << 4;
                next_token += 1;
                let pushed = f.slab.push(class, token as *mut u8);
                let room = cpu.is_some_and(|cpu| {
                    let len = model.stacks.get(&(cpu, c)).map_or(0, Vec::len);
                    len < *model.capacity.get(&(cpu, c)).unwrap_or(&0)
                });
                prop_assert_eq!(pushed, room);
                if pushed {
                    model.stacks.entry((cpu.unwrap(), c)).or_default().push(token);
                }
            }
            Op::Pop(c) => {
                let (class, _) = CLASSES[c];
                let got = f.slab.pop(class).map(|p| p as usize);
                let want = cpu.and_then(|cpu| model.stacks.entry((cpu, c)).or_default().pop());
                prop_assert_eq!(got, want);
            }
            Op::PushBatch(c, n) => {
                let (class, _) = CLASSES[c];
                let items: Vec<*mut u8> = (0..n).map(|i| ((next_token + i) << 4) as *mut u8).collect();
                next_token += n;
                let k = f.slab.push_batch(class, &items);
                let expected = cpu.map_or(0, |cpu| {
                    let len = model.stacks.get(&(cpu, c)).map_or(0, Vec::len);
                    n.min(model.capacity.get(&(cpu, c)).unwrap_or(&0) - len)
                });
                prop_assert_eq!(k, expected);
                if let Some(cpu) = cpu {
                    model.stacks.entry((cpu, c)).or_default().extend(items[..k].iter().map(|&p| p as usize));
                }
            }
            Op::PopBatch(c, n) => {
                let (class, _) = CLASSES[c];
                let mut out = vec![std::ptr::null_mut(); n];
                let k = f.slab.pop_batch(class, &mut out);
                let mut want = Vec::new();
                if let Some(cpu) = cpu {
                    let stack = model.stacks.entry((cpu, c)).or_default();
                    for _ in 0..n.min(stack.len()) {
                        want.push(stack.pop().unwrap());
                    }
                }
                let got: Vec<usize> = out[..k].iter().map(|&p| p as usize).collect();
                prop_assert_eq!(got, want);
            }
            Op::Grow(cpu_i, c, n) => {
                let (class, size) = CLASSES[c];
                let added = f.slab.grow(base + cpu_i, class, n);
                model.laid_out.insert(cpu_i, true);
                let cap = model.capacity.entry((cpu_i, c)).or_default();
                let used = model.used.entry(cpu_i).or_default();
                let expected = n.min(max_capacity(size) - *cap).min((BUDGET - *used) / size);
                prop_assert_eq!(added, expected);
                *cap += added;
                *used += added * size;
            }
            Op::Drain(cpu_i, c) => {
                let (class, _) = CLASSES[c];
                let got: Vec<usize> = f.slab.drain(base + cpu_i, class).into_iter().map(|p| p as usize).collect();
                let mut want = std::mem::take(model.stacks.entry((cpu_i, c)).or_default());
                want.reverse();
                prop_assert_eq!(got, want);
            }
            Op::AbortedPush(c) => {
                if let Some(cpu) = cpu {
                    if model.laid_out.get(&cpu).copied().unwrap_or(false) {
                        f.slab.scribble_above_top(base + cpu, CLASSES[c].0, junk);
                    }
                }
            }
        }
        // Invariant after every step: begin <= current <= end, and the
        // header's depth and room match the model.
        for cpu_i in 0..CPUS_PER_CASE {
            for (c, &(class, _)) in CLASSES.iter().enumerate() {
                let h = f.slab.header(base + cpu_i, class);
                prop_assert!(h.begin <= h.current && h.current <= h.end);
                prop_assert_eq!((h.current - h.begin) as usize, model.stacks.get(&(cpu_i, c)).map_or(0, Vec::len));
                prop_assert_eq!((h.end - h.begin) as usize, *model.capacity.get(&(cpu_i, c)).unwrap_or(&0));
            }
        }
    }
    // Everything still cached comes back exactly once, and never the junk.
    for cpu_i in 0..CPUS_PER_CASE {
        for (c, &(class, _)) in CLASSES.iter().enumerate() {
            let got: Vec<usize> = f.slab.drain(base + cpu_i, class).into_iter().map(|p| p as usize).collect();
            let mut want = model.stacks.remove(&(cpu_i, c)).unwrap_or_default();
            want.reverse();
            prop_assert_eq!(got, want);
        }
    }
    // A fake area is invisible to the kernel: nothing can have restarted.
    prop_assert_eq!(rseqalloc::test_hooks::restarts(), restarts_before);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn percpu_slab_agrees_with_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops)?;
    }
}
