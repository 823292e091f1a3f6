//! A set of byte ranges (what a file being written has dirty, or has dropped locally), kept in a
//! B-tree so that each random write costs O(log n) rather than a pass over every range.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent ranges: start → end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
    total: u64,
}

impl RangeSet {
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// The ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    pub fn to_vec(&self) -> Vec<Range<u64>> {
        self.iter().collect()
    }

    /// The ranges that overlap `r`, clipped to it, in order.
    pub fn overlapping(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        // An empty (or reversed) `r` overlaps nothing.
        let r = r.start..r.end.max(r.start);
        // The range starting at or before r.start may reach into r.
        let first = self
            .map
            .range(..=r.start)
            .next_back()
            .map_or(r.start, |(&s, _)| s);
        self.map
            .range(first..r.end)
            .filter(move |(_, e)| **e > r.start)
            .map(move |(&s, &e)| s.max(r.start)..e.min(r.end))
    }

    /// Bytes of `r` already covered.
    pub fn covered_len(&self, r: Range<u64>) -> u64 {
        self.overlapping(r).map(|x| x.end - x.start).sum()
    }

    pub fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Merge with the range that starts at or before `start` and touches it.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
                self.total -= e - s;
            }
        }
        // Swallow ranges that start inside (or right at the end of) the new one.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            end = end.max(e);
            self.map.remove(&s);
            self.total -= e - s;
        }
        self.map.insert(start, end);
        self.total += end - start;
    }

    /// Drops everything at or past `len`.
    pub fn truncate(&mut self, len: u64) {
        let cut: Vec<u64> = self.map.range(len..).map(|(&s, _)| s).collect();
        for s in cut {
            let e = self.map.remove(&s).expect("listed");
            self.total -= e - s;
        }
        if let Some((&s, e)) = self.map.range_mut(..len).next_back() {
            if *e > len {
                self.total -= *e - len;
                *e = len;
            }
            debug_assert!(s < len);
        }
    }

    /// Whether all of `r` is covered.
    pub fn covers(&self, r: &Range<u64>) -> bool {
        r.is_empty()
            || self
                .map
                .range(..=r.start)
                .next_back()
                .is_some_and(|(_, &e)| e >= r.end)
    }

    /// The parts of `within` not covered.
    pub fn gaps(&self, within: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut pos = within.start;
        for x in self.overlapping(within.clone()) {
            if x.start > pos {
                out.push(pos..x.start);
            }
            pos = pos.max(x.end);
        }
        if pos < within.end {
            out.push(pos..within.end);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_finds_gaps() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(20..25);
        assert_eq!(s.to_vec(), [10..25, 30..40]);
        assert_eq!(s.gaps(0..50), vec![0..10, 25..30, 40..50]);
        let (hi, lo) = (35, 20);
        assert!(s.gaps(hi..lo).is_empty(), "a reversed range has no gaps");
        assert_eq!(s.covered_len(hi..lo), 0);
        assert_eq!(s.covered_len(12..35), 13 + 5);
        assert!(s.covers(&(12..24)));
        assert!(!s.covers(&(12..26)));
        s.insert(0..100);
        assert_eq!(s.iter().next(), Some(0..100));
        assert_eq!(s.to_vec().len(), 1);
        s.truncate(42);
        assert_eq!((s.iter().next(), s.len()), (Some(0..42), 42));
    }

    /// Against a bitmap, over random inserts and truncations.
    #[test]
    fn agrees_with_a_bitmap() {
        let mut x: u64 = 7;
        let mut next = |m: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 20) % m
        };
        for _ in 0..300 {
            let mut s = RangeSet::new();
            let mut bits = [false; 200];
            for _ in 0..20 {
                let a = next(200);
                let b = (a + next(30)).min(200);
                if next(8) == 0 {
                    s.truncate(a);
                    bits[a as usize..].iter_mut().for_each(|v| *v = false);
                } else {
                    let before = s.covered_len(a..b);
                    let want = bits[a as usize..b as usize].iter().filter(|v| **v).count();
                    assert_eq!(before, want as u64);
                    s.insert(a..b);
                    bits[a as usize..b as usize]
                        .iter_mut()
                        .for_each(|v| *v = true);
                }
                let from_bits: Vec<Range<u64>> = {
                    let mut out: Vec<Range<u64>> = Vec::new();
                    for (i, &v) in bits.iter().enumerate() {
                        let i = i as u64;
                        match out.last_mut() {
                            Some(r) if v && r.end == i => r.end += 1,
                            _ if v => out.push(i..i + 1),
                            _ => {}
                        }
                    }
                    out
                };
                assert_eq!(s.to_vec(), from_bits);
                assert_eq!(s.len(), bits.iter().filter(|v| **v).count() as u64);
                let (a, b) = (next(200), next(200));
                let (a, b) = (a.min(b), a.max(b));
                let all = bits[a as usize..b as usize].iter().all(|v| *v);
                assert_eq!(s.covers(&(a..b)), all);
            }
        }
    }
}
