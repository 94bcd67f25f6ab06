//! A linearizability checker that searches: Wing and Gong's algorithm with Lowe's
//! memoization of (linearized set, model state), as Porcupine and Knossos do, over a
//! key-value model of registers written by any number of clients.
//!
//! A history is a list of operations with the times the client called them and saw them
//! return. A write that failed or timed out is indeterminate: it may have taken effect
//! at any instant after its call, or never (its return time is infinity, as in etcd's
//! robustness tests); a read that failed tells nothing and is left out by the caller.
//! Keys are independent registers, and linearizability is compositional, so each key is
//! searched on its own.
//!
//! Pure: no clock, no I/O. [`crate::check`] turns recorded cluster histories into these
//! operations.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

/// What a client did to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the key to a value.
    Write(u64),
    /// Read the key: the value seen (`None`: absent).
    Read(Option<u64>),
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub action: Action,
    pub call: Duration,
    /// `None`: a write that failed or timed out, so it may have happened at any time
    /// after its call, or not at all.
    pub ret: Option<Duration>,
}

/// Why a key's history has no linearization, with what the search reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// The deepest point of the search: how many operations it placed, the value the
    /// register held there, and the operations that could not come next.
    pub placed: usize,
    pub of: usize,
    pub value: Option<u64>,
    pub stuck: Vec<Operation>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key {}: not linearizable: after {} of {} operations the value is {:?}, and none of these fits next: ",
            self.key, self.placed, self.of, self.value
        )?;
        for (index, op) in self.stuck.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            let ret = op
                .ret
                .map(|ret| format!("{:.3}s", ret.as_secs_f64()))
                .unwrap_or_else(|| "never".into());
            write!(
                f,
                "client {} {:?} [{:.3}s - {ret}]",
                op.client,
                op.action,
                op.call.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// Every key whose history is not linearizable, each with the search's deepest point.
/// `initial` is what a key held before the history (usually `None`).
pub fn check(history: &[Operation], initial: &BTreeMap<String, u64>) -> Vec<Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    by_key
        .into_iter()
        .filter_map(|(key, ops)| {
            let ops = without_unseen_indeterminate_writes(ops);
            check_register(key, &ops, initial.get(key).copied()).err()
        })
        .collect()
}

/// Drops the indeterminate writes whose value no read returned. Whether such a write
/// happened changes nothing: had it happened, the next operation on the key after it
/// must have been a write (a read would have returned its value), so the history is
/// linearizable with it exactly when it is without it. Left in, each one doubles the
/// states the search may visit (placed or not, at every later point).
fn without_unseen_indeterminate_writes(ops: Vec<&Operation>) -> Vec<&Operation> {
    let read_values: HashSet<Option<u64>> = ops
        .iter()
        .filter_map(|op| match op.action {
            Action::Read(value) => Some(value),
            Action::Write(_) => None,
        })
        .collect();
    ops.into_iter()
        .filter(|op| match op.action {
            Action::Write(value) => op.ret.is_some() || read_values.contains(&Some(value)),
            Action::Read(_) => true,
        })
        .collect()
}

/// Fixed-size set of operation indexes, hashable for the memo.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn has(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }
    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
    fn clear(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
    /// The lowest index not in the set (the length when all are).
    fn first_clear(&self) -> usize {
        self.0
            .iter()
            .position(|word| *word != u64::MAX)
            .map(|word| word * 64 + self.0[word].trailing_ones() as usize)
            .unwrap_or(self.0.len() * 64)
    }
}

/// Depth-first search for an order of `ops` that respects real time and the register's
/// semantics. An operation may come next only if no unplaced operation returned before
/// it was called; indeterminate writes may be left out altogether.
///
/// Operations are sorted by call time, and the earliest return among the unplaced ones
/// (the horizon) is kept in an ordered set, so the candidates at each step are a short
/// run of the sorted list rather than the whole history.
fn check_register(key: &str, ops: &[&Operation], initial: Option<u64>) -> Result<(), Violation> {
    let mut ops: Vec<&Operation> = ops.to_vec();
    ops.sort_by_key(|op| op.call);
    let n = ops.len();
    let mut placed = Bits::new(n);
    let mut pending_returns: BTreeSet<(Duration, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(index, op)| op.ret.map(|ret| (ret, index)))
        .collect();
    let mut seen: HashSet<(Bits, Option<u64>)> = HashSet::new();
    // Each frame: the value before it, the operation it placed, where to resume.
    let mut stack: Vec<(Option<u64>, usize, usize)> = Vec::new();
    let mut value = initial;
    let mut next = 0usize;
    let mut deepest: (usize, Option<u64>, Vec<Operation>) = (0, initial, Vec::new());
    loop {
        // Every operation that returned is placed; indeterminate ones left are dropped.
        if pending_returns.is_empty() {
            return Ok(());
        }
        let horizon = pending_returns.first().map(|(ret, _)| *ret);
        let fits = |index: usize, value: Option<u64>| match ops[index].action {
            Action::Write(_) => true,
            Action::Read(seen_value) => seen_value == value,
        };
        let start = next.max(placed.first_clear());
        let candidate = (start..n)
            .take_while(|&index| horizon.is_none_or(|horizon| ops[index].call <= horizon))
            .find(|&index| !placed.has(index) && fits(index, value));
        match candidate {
            Some(index) => {
                let after = match ops[index].action {
                    Action::Write(written) => Some(written),
                    Action::Read(_) => value,
                };
                placed.set(index);
                if seen.insert((placed.clone(), after)) {
                    stack.push((value, index, index + 1));
                    if let Some(ret) = ops[index].ret {
                        pending_returns.remove(&(ret, index));
                    }
                    value = after;
                    next = 0;
                    if stack.len() > deepest.0 {
                        deepest = (stack.len(), value, Vec::new());
                    }
                } else {
                    placed.clear(index);
                    next = index + 1;
                }
            }
            None => {
                if stack.len() == deepest.0 && deepest.2.is_empty() {
                    deepest.2 = (placed.first_clear()..n)
                        .take_while(|&index| {
                            horizon.is_none_or(|horizon| ops[index].call <= horizon)
                        })
                        .filter(|&index| !placed.has(index))
                        .map(|index| ops[index].clone())
                        .collect();
                }
                let Some((before, index, resume)) = stack.pop() else {
                    return Err(Violation {
                        key: key.to_string(),
                        placed: deepest.0,
                        of: n,
                        value: deepest.1,
                        stuck: deepest.2,
                    });
                };
                placed.clear(index);
                if let Some(ret) = ops[index].ret {
                    pending_returns.insert((ret, index));
                }
                value = before;
                next = resume;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn write(client: usize, value: u64, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            client,
            key: "k".into(),
            action: Action::Write(value),
            call: s(call),
            ret: ret.map(s),
        }
    }

    fn read(client: usize, value: Option<u64>, call: u64, ret: u64) -> Operation {
        Operation {
            client,
            key: "k".into(),
            action: Action::Read(value),
            call: s(call),
            ret: Some(s(ret)),
        }
    }

    fn verdict(history: &[Operation]) -> Result<(), String> {
        let started = std::time::Instant::now();
        let violations = check(history, &BTreeMap::new());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the search took {:?}",
            started.elapsed()
        );
        match violations.as_slice() {
            [] => Ok(()),
            found => Err(found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")),
        }
    }

    #[test]
    fn known_bad_histories_are_found() {
        let bad: Vec<(&str, Vec<Operation>)> = vec![
            (
                "a stale read of a value whose write timed out: 5 was seen, then 8 acknowledged, then 5 read again",
                vec![
                    write(1, 5, 0, None),
                    read(3, Some(5), 10, 20),
                    write(2, 8, 30, Some(40)),
                    read(3, Some(5), 50, 60),
                ],
            ),
            (
                "a read that goes backwards: 8, then 5, then 8, with two writers",
                vec![
                    write(1, 5, 0, Some(10)),
                    write(2, 8, 20, Some(30)),
                    read(3, Some(8), 40, 50),
                    read(3, Some(5), 60, 70),
                    read(3, Some(8), 80, 90),
                ],
            ),
            (
                "a flip-flop through a timed-out write: 1, 2 (timed out), back to 1",
                vec![
                    write(1, 1, 0, Some(10)),
                    write(1, 2, 20, None),
                    read(2, Some(2), 30, 40),
                    read(2, Some(1), 50, 60),
                ],
            ),
            (
                "a value nobody wrote",
                vec![write(1, 1, 0, Some(10)), read(2, Some(7), 20, 30)],
            ),
            (
                "a read of a value before its write was called",
                vec![read(2, Some(3), 0, 10), write(1, 3, 20, Some(30))],
            ),
            (
                "an acknowledged write lost: the final read sees the older value",
                vec![
                    write(1, 1, 0, Some(10)),
                    write(2, 2, 20, Some(30)),
                    read(3, Some(1), 100, 110),
                ],
            ),
            (
                "an acknowledged write lost: absent after it was acknowledged",
                vec![write(1, 4, 0, Some(10)), read(2, None, 20, 30)],
            ),
            (
                "two readers who saw the writes in opposite orders",
                vec![
                    write(1, 1, 0, Some(100)),
                    write(2, 2, 0, Some(100)),
                    read(3, Some(1), 10, 20),
                    read(3, Some(2), 30, 40),
                    read(4, Some(2), 10, 20),
                    read(4, Some(1), 30, 40),
                ],
            ),
        ];
        for (what, history) in bad {
            let err = verdict(&history).expect_err(what);
            assert!(err.contains("not linearizable"), "{what}: {err}");
        }
    }

    #[test]
    fn known_good_histories_pass() {
        let good: Vec<(&str, Vec<Operation>)> = vec![
            ("nothing at all", vec![]),
            ("absent before any write", vec![read(1, None, 0, 10)]),
            (
                "concurrent write and reads that see either side",
                vec![
                    write(1, 1, 0, Some(10)),
                    write(2, 2, 20, Some(60)),
                    read(3, Some(1), 25, 30),
                    read(4, Some(2), 30, 40),
                    read(3, Some(2), 70, 80),
                ],
            ),
            (
                "a timed-out write that never took effect",
                vec![
                    write(1, 1, 0, Some(10)),
                    write(1, 2, 20, None),
                    read(2, Some(1), 30, 40),
                    read(2, Some(1), 50, 60),
                ],
            ),
            (
                "a timed-out write that took effect late",
                vec![
                    write(1, 1, 0, Some(10)),
                    write(1, 2, 20, None),
                    read(2, Some(1), 30, 40),
                    read(2, Some(2), 500, 510),
                ],
            ),
            (
                "a timed-out write taking effect after a later acknowledged one",
                vec![
                    write(1, 5, 0, None),
                    write(2, 8, 10, Some(20)),
                    read(3, Some(5), 30, 40),
                ],
            ),
            (
                "two writers racing, the later-called one first",
                vec![
                    write(1, 1, 0, Some(100)),
                    write(2, 2, 10, Some(50)),
                    read(3, Some(2), 60, 70),
                    read(3, Some(1), 80, 90),
                    read(4, Some(1), 110, 120),
                ],
            ),
        ];
        for (what, history) in good {
            verdict(&history).unwrap_or_else(|err| panic!("{what}: {err}"));
        }
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut other = write(1, 9, 0, Some(10));
        other.key = "other".into();
        let history = vec![other, write(1, 1, 20, Some(30)), read(2, Some(9), 40, 50)];
        let violations = check(&history, &BTreeMap::new());
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].key, "k");
        let initial = BTreeMap::from([("k".to_string(), 3)]);
        assert!(check(&[read(1, Some(3), 0, 1)], &initial).is_empty());
    }

    /// Four writers and four readers over 2,000 operations with overlapping calls and a
    /// tenth of the writes timed out: a correct register's history, checked well within
    /// a second; the same with one late read flipped back is found.
    #[test]
    fn a_long_history_of_several_writers_is_searched_quickly() {
        let mut history = Vec::new();
        let mut value: Option<u64> = None;
        let mut next_value = 1;
        for round in 0..250u64 {
            let base = round * 100;
            // Writes overlap each other; each takes effect at base + 10 + client.
            for client in 0..4u64 {
                let written = next_value;
                next_value += 1;
                let timed_out = (round + client) % 10 == 0;
                history.push(write(
                    client as usize,
                    written,
                    base + client,
                    (!timed_out).then_some(base + 40),
                ));
                value = Some(written);
            }
            // Reads after every write of the round returned.
            for client in 4..8u64 {
                history.push(read(client as usize, value, base + 50 + client, base + 90));
            }
        }
        verdict(&history).expect("a correct register");
        let last = history.len() - 1;
        // Value 2 was written and acknowledged in the first round (value 1 timed out,
        // so it could take effect at any time and would not show this).
        history[last].action = Action::Read(Some(2));
        let err = verdict(&history).expect_err("a stale last read");
        assert!(err.contains("not linearizable"), "{err}");
    }
}
