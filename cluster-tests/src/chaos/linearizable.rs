//! A linearizability checker for one register (one shared tag), in the
//! style of Wing & Gong with Lowe's memoisation (as in Porcupine and
//! Knossos): a depth-first search for an order of the operations that
//! respects real time (an operation may come next only if it was invoked
//! before every remaining operation returned) and register semantics (a
//! read returns the last written value), skipping states already seen.
//!
//! A write whose outcome is unknown (timeout, error) has no return time:
//! it may take effect at any moment after its start, or never (placed
//! after everything else it changes nothing observed; one whose value no
//! read returned is therefore dropped before the search). Failed reads
//! observed nothing and are not given to the checker. The caller bounds
//! the operations per register, and the search has a step budget, so a
//! check always ends; running out of budget is reported, never hidden.

use std::collections::{HashMap, HashSet};

/// A register value: `None` is "tag absent".
pub type Value = Option<String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Write(Value),
    Read(Value),
}

/// One operation on the register, with times in microseconds since the
/// run started.
#[derive(Debug, Clone)]
pub struct Op {
    pub start_us: u64,
    /// `None`: the outcome is unknown (only meaningful for writes).
    pub end_us: Option<u64>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists; `deepest` ops of the history could be ordered.
    Violation {
        deepest: usize,
        ops: usize,
    },
    /// The search ran out of steps before deciding.
    Unknown {
        steps: u64,
    },
}

struct Search {
    start: Vec<u64>,
    end: Vec<u64>,
    read: Vec<Option<u32>>,
    write: Vec<Option<u32>>,
    required: usize,
    seen: HashSet<(Vec<u64>, u32)>,
    steps: u64,
    budget: u64,
    deepest: usize,
}

/// Checks `ops` against a register that starts as `init`. Reads with an
/// unknown outcome are ignored.
pub fn check(init: &Value, ops: &[Op], budget: u64) -> Verdict {
    // Every written value is distinct (the workload makes it so). A write
    // with an unknown outcome whose value no read returned can always be
    // placed last, where it changes nothing observed: dropping it keeps
    // the verdict and spares the search most of its branching.
    let read_values: HashSet<&Value> = ops
        .iter()
        .filter(|o| o.end_us.is_some())
        .filter_map(|o| match &o.kind {
            Kind::Read(v) => Some(v),
            Kind::Write(_) => None,
        })
        .collect();
    let mut ops: Vec<&Op> = ops
        .iter()
        .filter(|o| match &o.kind {
            Kind::Write(v) => o.end_us.is_some() || read_values.contains(v),
            Kind::Read(_) => o.end_us.is_some(),
        })
        .collect();
    ops.sort_by_key(|o| o.start_us);
    let mut ids: HashMap<Value, u32> = HashMap::new();
    let mut id_of = |v: &Value| {
        let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        *ids.entry(v.clone()).or_insert(next)
    };
    let init_id = id_of(init);
    let mut s = Search {
        start: ops.iter().map(|o| o.start_us).collect(),
        end: ops.iter().map(|o| o.end_us.unwrap_or(u64::MAX)).collect(),
        read: Vec::new(),
        write: Vec::new(),
        required: ops.iter().filter(|o| o.end_us.is_some()).count(),
        seen: HashSet::new(),
        steps: 0,
        budget,
        deepest: 0,
    };
    for o in &ops {
        match &o.kind {
            Kind::Read(v) => {
                s.read.push(Some(id_of(v)));
                s.write.push(None);
            }
            Kind::Write(v) => {
                s.read.push(None);
                s.write.push(Some(id_of(v)));
            }
        }
    }
    let words = ops.len().div_ceil(64);
    let mut done = vec![0u64; words];
    match s.dfs(&mut done, init_id, 0, 0) {
        Some(true) => Verdict::Linearizable,
        Some(false) => Verdict::Violation {
            deepest: s.deepest,
            ops: ops.len(),
        },
        None => Verdict::Unknown { steps: s.steps },
    }
}

fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

impl Search {
    /// `Some(found)`, or `None` when the budget ran out.
    fn dfs(
        &mut self,
        done: &mut Vec<u64>,
        value: u32,
        linearized: usize,
        required_done: usize,
    ) -> Option<bool> {
        self.deepest = self.deepest.max(linearized);
        if required_done == self.required {
            return Some(true);
        }
        self.steps += 1;
        if self.steps > self.budget {
            return None;
        }
        if !self.seen.insert((done.clone(), value)) {
            return Some(false);
        }
        let n = self.start.len();
        let min_end = (0..n)
            .filter(|&i| !is_set(done, i))
            .map(|i| self.end[i])
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..n {
            if self.start[i] > min_end {
                // Sorted by start: no later op may come next either.
                break;
            }
            if is_set(done, i) {
                continue;
            }
            let next = match (self.read[i], self.write[i]) {
                (Some(r), _) if r != value => continue,
                (Some(_), _) => value,
                (None, Some(w)) => w,
                (None, None) => continue,
            };
            let required = usize::from(self.end[i] != u64::MAX);
            flip(done, i);
            let r = self.dfs(done, next, linearized + 1, required_done + required);
            flip(done, i);
            match r {
                Some(false) => {}
                other => return other,
            }
        }
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: u64, e: Option<u64>, v: &str) -> Op {
        Op {
            start_us: s,
            end_us: e,
            kind: Kind::Write(Some(v.into())),
        }
    }
    fn r(s: u64, e: u64, v: Option<&str>) -> Op {
        Op {
            start_us: s,
            end_us: Some(e),
            kind: Kind::Read(v.map(String::from)),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            w(0, Some(10), "a"),
            r(11, 12, Some("a")),
            w(13, Some(20), "b"),
            r(21, 22, Some("b")),
        ];
        assert_eq!(check(&None, &h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not() {
        let h = [
            w(0, Some(10), "a"),
            w(11, Some(20), "b"),
            r(21, 22, Some("a")),
        ];
        assert!(matches!(
            check(&None, &h, 10_000),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn a_read_of_absent_after_a_write_is_not() {
        let h = [w(0, Some(10), "a"), r(11, 12, None)];
        assert!(matches!(
            check(&None, &h, 10_000),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn concurrent_ops_may_order_either_way() {
        let h = [
            w(0, Some(10), "a"),
            w(1, Some(9), "b"),
            r(2, 11, Some("a")),
            r(12, 13, Some("a")),
        ];
        assert_eq!(check(&None, &h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        let late = [w(0, None, "a"), r(5, 6, None), r(50, 60, Some("a"))];
        assert_eq!(check(&None, &late, 10_000), Verdict::Linearizable);
        let never = [w(0, None, "a"), r(50, 60, None)];
        assert_eq!(check(&None, &never, 10_000), Verdict::Linearizable);
        // Once seen, it cannot be un-done.
        let flicker = [w(0, None, "a"), r(5, 6, Some("a")), r(50, 60, None)];
        assert!(matches!(
            check(&None, &flicker, 10_000),
            Verdict::Violation { .. }
        ));
    }
}
