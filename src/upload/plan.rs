//! A pure planner: which ranges of a file's new content are copied server-side from the old
//! object (UploadPartCopy) and which are uploaded, within S3's multipart rules.

use std::ops::Range;

/// Every part but the last must be at least this large (S3's rule).
pub const MIN_PART: u64 = 5 << 20;
/// No part may be larger.
pub const MAX_PART: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;

/// The size of part `n` (from 1) of an upload streamed while the file is written, its final
/// size unknown: 8 MiB, doubling every 1,000 parts, so that 10,000 parts hold more than 5 TiB.
pub fn stream_part_size(n: i32) -> u64 {
    let doublings = (n.max(1) as u64 - 1) / 1_000;
    (8u64 << 20 << doublings.min(10)).min(MAX_PART)
}

/// Starts at 8 MiB and doubles until `size` fits in 10,000 parts (5 TiB at most).
pub fn part_size(size: u64) -> u64 {
    let mut p: u64 = 8 << 20;
    while p.saturating_mul(MAX_PARTS) < size && p < MAX_PART {
        p *= 2;
    }
    p.min(MAX_PART)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Copy these bytes of the old object (same offsets in the new one).
    Copy(Range<u64>),
    Upload(Range<u64>),
}

impl Part {
    pub fn range(&self) -> &Range<u64> {
        match self {
            Part::Copy(r) | Part::Upload(r) => r,
        }
    }
}

/// Plans the parts of an object of `new_size` bytes whose `copyable` ranges (sorted, disjoint)
/// equal the old object at the same offsets. Copies only runs of at least `MIN_PART`, so a small
/// edit is re-sent with a little context rather than breaking the part-size rules.
pub fn plan(new_size: u64, copyable: &[Range<u64>], part: u64) -> Vec<Part> {
    let part = part.clamp(MIN_PART, MAX_PART);
    let long_run_at = |pos: u64| {
        copyable
            .iter()
            .find(|r| r.start <= pos && pos < r.end && r.end - pos >= MIN_PART)
    };
    let mut parts = Vec::new();
    let mut pos = 0;
    while pos < new_size {
        if let Some(r) = long_run_at(pos) {
            let end = r.end.min(pos + MAX_PART).min(new_size);
            parts.push(Part::Copy(pos..end));
            pos = end;
            continue;
        }
        let mut end = (pos + part).min(new_size);
        // Stop early where a long copyable run begins, if this part stays large enough.
        if let Some(r) = copyable
            .iter()
            .find(|r| r.start > pos && r.start < end && r.end - r.start >= MIN_PART)
        {
            if r.start - pos >= MIN_PART {
                end = r.start;
            }
        }
        parts.push(Part::Upload(pos..end));
        pos = end;
    }
    parts
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::upload::ranges::RangeSet;

    const MIB: u64 = 1 << 20;

    fn check_rules(parts: &[Part], size: u64) {
        let mut pos = 0;
        for (i, p) in parts.iter().enumerate() {
            let r = p.range();
            assert_eq!(r.start, pos, "parts are contiguous: {parts:?}");
            assert!(r.end > r.start);
            assert!(r.end - r.start <= MAX_PART);
            if i + 1 < parts.len() {
                assert!(
                    r.end - r.start >= MIN_PART,
                    "non-last part too small: {parts:?}"
                );
            }
            pos = r.end;
        }
        assert_eq!(pos, size);
        assert!(parts.len() as u64 <= MAX_PARTS);
    }

    #[test]
    fn appending_copies_the_old_object() {
        let old = 1024 * MIB;
        let parts = plan(old + MIB, &[0..old], 8 * MIB);
        assert_eq!(
            parts,
            vec![Part::Copy(0..old), Part::Upload(old..old + MIB)]
        );
        check_rules(&parts, old + MIB);
    }

    #[test]
    fn an_edit_in_the_middle_uploads_only_around_it() {
        let size = 100 * MIB;
        let copyable = [0..50 * MIB, 50 * MIB + 10..size];
        let parts = plan(size, &copyable, 8 * MIB);
        check_rules(&parts, size);
        let uploaded: u64 = parts
            .iter()
            .filter_map(|p| match p {
                Part::Upload(r) => Some(r.end - r.start),
                _ => None,
            })
            .sum();
        assert!(
            uploaded <= 8 * MIB,
            "uploads {uploaded} bytes for a 10-byte edit: {parts:?}"
        );
    }

    #[test]
    fn short_copyable_runs_are_uploaded() {
        let parts = plan(12 * MIB, &[0..4 * MIB], 8 * MIB);
        assert_eq!(
            parts,
            vec![Part::Upload(0..8 * MIB), Part::Upload(8 * MIB..12 * MIB)]
        );
    }

    #[test]
    fn small_new_file_is_one_upload() {
        assert_eq!(plan(10, &[], 8 * MIB), vec![Part::Upload(0..10)]);
        assert!(plan(0, &[], 8 * MIB).is_empty());
    }

    #[test]
    fn huge_copies_are_split_at_5_gib() {
        let size = 12 << 30;
        let parts = plan(size, &[0..size], part_size(size));
        check_rules(&parts, size);
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn part_size_fits_5_tib_in_10000_parts() {
        assert_eq!(part_size(1 << 30), 8 * MIB);
        let p = part_size(5 << 40);
        assert!(p * MAX_PARTS >= 5 << 40 && p <= MAX_PART);
    }

    #[test]
    fn random_layouts_obey_the_rules() {
        let mut x: u64 = 99;
        let mut next = |m: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 20) % m
        };
        for _ in 0..500 {
            let size = next(200 * MIB) + 1;
            let mut set = RangeSet::new();
            for _ in 0..next(6) {
                let a = next(size);
                set.insert(a..(a + next(30 * MIB)).min(size));
            }
            let parts = plan(size, &set.to_vec(), 8 * MIB);
            check_rules(&parts, size);
            for p in &parts {
                if let Part::Copy(r) = p {
                    assert!(set.covers(r), "copies only copyable bytes");
                }
            }
        }
    }
}
