//! What belongs to a file (an inode) rather than to a key: its pending writes, how many handles
//! it has open, and whether it lost its name while open (then which object version its last
//! close deletes). Keyed by inode, so an unlink or a rename moves or orphans this state, and a
//! name reused by another file never inherits it (DESIGN.md, "Files, not keys").

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::upload::WriteState;

/// The object a file that lost its name still holds in the bucket, deleted at its last close
/// if the key still holds that version.
#[derive(Debug, Clone, PartialEq)]
pub struct Doomed {
    pub key: String,
    /// Empty when unknown (the object was never seen by a HEAD or a listing).
    pub etag: String,
}

struct Entry<S> {
    write: Option<Arc<WriteState<S>>>,
    open: usize,
    /// The file has no name any more (unlinked or renamed over while open).
    orphan: bool,
    doomed: Option<Doomed>,
}

impl<S> Default for Entry<S> {
    fn default() -> Self {
        Entry {
            write: None,
            open: 0,
            orphan: false,
            doomed: None,
        }
    }
}

/// What the last close of a file has to finish.
pub struct LastClose<S> {
    pub write: Option<Arc<WriteState<S>>>,
    pub orphan: bool,
    pub doomed: Option<Doomed>,
}

struct Inner<S> {
    by_ino: HashMap<u64, Entry<S>>,
    /// Keys of orphaned files still in the bucket, with the version each holds: that version
    /// is hidden from listings and lookups until its last close deletes it, or until this
    /// mount puts a new object there (another client's new object is never hidden).
    hidden: HashMap<String, (u64, String)>,
}

/// The per-file table; one lock, never held across an await.
pub struct Files<S> {
    inner: Mutex<Inner<S>>,
}

impl<S> Default for Files<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Files<S> {
    pub fn new() -> Self {
        Files {
            inner: Mutex::new(Inner {
                by_ino: HashMap::new(),
                hidden: HashMap::new(),
            }),
        }
    }

    pub fn write_of(&self, ino: u64) -> Option<Arc<WriteState<S>>> {
        self.inner.lock().by_ino.get(&ino)?.write.clone()
    }

    pub fn has_write(&self, ino: u64) -> bool {
        self.inner
            .lock()
            .by_ino
            .get(&ino)
            .is_some_and(|e| e.write.is_some())
    }

    /// The file's write state: `state` unless it has one already.
    pub fn write_or_insert(&self, ino: u64, state: Arc<WriteState<S>>) -> Arc<WriteState<S>> {
        let mut g = self.inner.lock();
        g.by_ino
            .entry(ino)
            .or_default()
            .write
            .get_or_insert(state)
            .clone()
    }

    /// Replaces the file's write state (a new file created over it); returns the old one.
    pub fn replace_write(&self, ino: u64, state: Arc<WriteState<S>>) -> Option<Arc<WriteState<S>>> {
        self.inner
            .lock()
            .by_ino
            .entry(ino)
            .or_default()
            .write
            .replace(state)
    }

    /// Forgets the write state of a file nobody has open (a truncate by path, committed).
    pub fn drop_write_if_closed(&self, ino: u64) {
        let mut g = self.inner.lock();
        if let Some(e) = g.by_ino.get_mut(&ino) {
            if e.open == 0 {
                g.by_ino.remove(&ino);
            }
        }
    }

    pub fn opened(&self, ino: u64) {
        self.inner.lock().by_ino.entry(ino).or_default().open += 1;
    }

    pub fn is_open(&self, ino: u64) -> bool {
        self.inner
            .lock()
            .by_ino
            .get(&ino)
            .is_some_and(|e| e.open > 0)
    }

    pub fn is_orphan(&self, ino: u64) -> bool {
        self.inner.lock().by_ino.get(&ino).is_some_and(|e| e.orphan)
    }

    /// One handle closed; whether it was the last.
    pub fn closed(&self, ino: u64) -> bool {
        let mut g = self.inner.lock();
        match g.by_ino.get_mut(&ino) {
            Some(e) => {
                e.open = e.open.saturating_sub(1);
                e.open == 0
            }
            None => true,
        }
    }

    /// After the last close has committed: takes what is left, unless the file was opened
    /// again meanwhile (the new handles share the state then).
    pub fn take_if_closed(&self, ino: u64) -> Option<LastClose<S>> {
        let mut g = self.inner.lock();
        if g.by_ino.get(&ino).is_some_and(|e| e.open > 0) {
            return None;
        }
        let e = g.by_ino.remove(&ino)?;
        if let Some(d) = &e.doomed {
            if g.hidden.get(&d.key).is_some_and(|(i, _)| *i == ino) {
                g.hidden.remove(&d.key);
            }
        }
        Some(LastClose {
            write: e.write,
            orphan: e.orphan,
            doomed: e.doomed,
        })
    }

    /// The file lost its name while open. `doomed`: its object, kept (and hidden) for its
    /// descriptors until the last close.
    pub fn orphan(&self, ino: u64, doomed: Option<Doomed>) -> Option<Arc<WriteState<S>>> {
        let mut g = self.inner.lock();
        if let Some(d) = &doomed {
            g.hidden.insert(d.key.clone(), (ino, d.etag.clone()));
        }
        let e = g.by_ino.entry(ino).or_default();
        e.orphan = true;
        e.doomed = doomed;
        e.write.clone()
    }

    /// This mount put a new object at `key` (create, rename onto it): an orphan that held
    /// the key has nothing left there to delete, and the key is visible again.
    pub fn key_reused(&self, key: &str) {
        let mut g = self.inner.lock();
        if let Some((ino, _)) = g.hidden.remove(key) {
            if let Some(e) = g.by_ino.get_mut(&ino) {
                e.doomed = None;
            }
        }
    }

    /// Whether the object `key` at version `etag` belongs to an orphan (an unknown version
    /// recorded as empty hides whatever is there).
    pub fn is_hidden(&self, key: &str, etag: &str) -> bool {
        self.inner
            .lock()
            .hidden
            .get(key)
            .is_some_and(|(_, e)| e.is_empty() || e == etag)
    }

    /// How many keys under `prefix` are hidden.
    pub fn hidden_under(&self, prefix: &str) -> usize {
        self.inner
            .lock()
            .hidden
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
    }

    /// Files with a write state that still have a name.
    pub fn pending(&self) -> Vec<(u64, Arc<WriteState<S>>)> {
        self.inner
            .lock()
            .by_ino
            .iter()
            .filter(|(_, e)| !e.orphan)
            .filter_map(|(i, e)| Some((*i, e.write.clone()?)))
            .collect()
    }

    /// Takes the write state of a file whose commit failed at unmount.
    pub fn take_write(&self, ino: u64) -> Option<Arc<WriteState<S>>> {
        self.inner.lock().by_ino.get_mut(&ino)?.write.take()
    }
}
