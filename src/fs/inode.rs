//! The inode table: stable numbers for paths, with the kernel's lookup counts.

use std::collections::HashMap;
use std::time::Instant;

use super::Found;

pub const ROOT: u64 = 1;

#[derive(Debug, Clone)]
pub struct Node {
    pub path: String,
    pub found: Found,
    /// The kernel may cache this node's attributes until then; we trust them until then too.
    pub valid_until: Instant,
    pub lookups: u64,
    /// ETag at the last open, to keep the kernel's page cache when the object did not change.
    pub open_etag: Option<String>,
}

pub struct Inodes {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Inodes {
    pub fn new(root: Found) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                path: String::new(),
                found: root,
                valid_until: Instant::now(),
                lookups: 1,
                open_etag: None,
            },
        );
        let mut by_path = HashMap::new();
        by_path.insert(String::new(), ROOT);
        Inodes {
            nodes,
            by_path,
            next: ROOT + 1,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    pub fn by_path(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Records what `path` is now and counts one kernel lookup (if `count`). A path that changed
    /// kind gets a new inode, so the kernel never sees a file turn into a directory in place.
    pub fn upsert(&mut self, path: &str, found: Found, valid_until: Instant, count: bool) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            let node = self.nodes.get_mut(&ino).expect("by_path and nodes agree");
            if node.found.kind == found.kind || ino == ROOT {
                node.found = found;
                node.valid_until = valid_until;
                node.lookups += count as u64;
                return ino;
            }
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                path: path.to_string(),
                found,
                valid_until,
                lookups: count as u64,
                open_etag: None,
            },
        );
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    /// The name is gone from the bucket; the inode lives on until the kernel forgets it.
    pub fn detach(&mut self, path: &str) {
        self.by_path.remove(path);
    }

    /// Moves `src` (and, for a directory, everything under it) to `dst`; whatever `dst` named
    /// before is detached.
    pub fn rename(&mut self, src: &str, dst: &str) {
        let inner = format!("{dst}/");
        self.by_path
            .retain(|p, _| p != dst && !p.starts_with(&inner));
        let src_inner = format!("{src}/");
        for (ino, node) in self.nodes.iter_mut() {
            // Only named inodes move: a file that lost its name (unlinked while open) keeps
            // none under the new path either.
            let named = self.by_path.get(&node.path) == Some(ino);
            if named && (node.path == src || node.path.starts_with(&src_inner)) {
                let new = format!("{dst}{}", &node.path[src.len()..]);
                self.by_path.remove(&node.path);
                self.by_path.insert(new.clone(), *ino);
                node.path = new;
            }
        }
    }

    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            let node = self.nodes.remove(&ino).expect("present");
            if self.by_path.get(&node.path) == Some(&ino) {
                self.by_path.remove(&node.path);
            }
        }
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::meta::Kind;

    fn found(kind: Kind) -> Found {
        Found::implicit(kind)
    }

    #[test]
    fn same_path_same_inode_until_forgotten() {
        let mut t = Inodes::new(found(Kind::Dir));
        let now = Instant::now();
        let a = t.upsert("a", found(Kind::File), now, true);
        assert_eq!(t.upsert("a", found(Kind::File), now, true), a);
        t.forget(a, 1);
        assert!(t.get(a).is_some());
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert_eq!(t.count(), 1);
        assert_ne!(t.upsert("a", found(Kind::File), now, true), a);
    }

    #[test]
    fn kind_change_gets_a_new_inode() {
        let mut t = Inodes::new(found(Kind::Dir));
        let now = Instant::now();
        let a = t.upsert("a", found(Kind::File), now, true);
        let b = t.upsert("a", found(Kind::Dir), now, true);
        assert_ne!(a, b);
        assert_eq!(t.by_path("a"), Some(b));
        t.forget(a, 1);
        assert_eq!(
            t.by_path("a"),
            Some(b),
            "forgetting the old inode keeps the new mapping"
        );
    }
}
