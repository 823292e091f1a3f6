//! What the mount knows of names, as opposed to files: the inode table, cached directory
//! listings and negative entries, object metadata seen by a HEAD, directory markers known to
//! exist, and keys already warned about. Per-file state (pending writes, open handles, files
//! unlinked while open) is in `files.rs`, keyed by inode.
//!
//! Each map has its own lock, held only for a lookup or an update and never across an await.
//! Where two are held at once, `inodes` is taken first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;

use super::Found;
use super::inode::Inodes;

/// Objects whose metadata (mode, owner, symlink) is remembered across listings.
const META_CACHE_ENTRIES: usize = 65_536;
/// Names known not to exist, remembered for the TTL.
const NEGATIVE_ENTRIES: usize = 65_536;
/// Keys that could not be shown, logged once each.
const WARNED_KEYS: usize = 10_000;
/// Cached listings kept before expired ones are pruned.
pub const LISTINGS_BEFORE_PRUNE: usize = 4096;

pub type Listing = BTreeMap<String, Found>;

pub struct Namespace {
    pub inodes: Mutex<Inodes>,
    /// Directory path → (fresh until, entries).
    listings: Mutex<HashMap<String, (Instant, Arc<Listing>)>>,
    negative: Mutex<LruCache<String, Instant>>,
    /// key → (ETag, Last-Modified, what its headers said): listings carry no metadata.
    metas: Mutex<LruCache<String, (String, SystemTime, Found)>>,
    /// Directory markers known to exist (so removing a last entry keeps its directory).
    markers: Mutex<HashSet<String>>,
    warned: Mutex<HashSet<String>>,
}

impl Namespace {
    pub fn new(root: Found) -> Self {
        Namespace {
            inodes: Mutex::new(Inodes::new(root)),
            listings: Mutex::new(HashMap::new()),
            negative: Mutex::new(LruCache::new(NEGATIVE_ENTRIES.try_into().unwrap())),
            metas: Mutex::new(LruCache::new(META_CACHE_ENTRIES.try_into().unwrap())),
            markers: Mutex::new(HashSet::new()),
            warned: Mutex::new(HashSet::new()),
        }
    }

    pub fn warn_once(&self, key: &str, why: &str) {
        let mut w = self.warned.lock();
        if w.len() < WARNED_KEYS && w.insert(key.to_string()) {
            tracing::warn!(key, "{why}; not shown in the mount");
        }
    }

    /// The cached listing of `dir` while it is fresh, with its expiry.
    pub fn listing(&self, dir: &str, now: Instant) -> Option<(Instant, Arc<Listing>)> {
        match self.listings.lock().get(dir) {
            Some((until, l)) if *until > now => Some((*until, l.clone())),
            _ => None,
        }
    }

    /// The expiry of `dir`'s cached listing, fresh or not.
    pub fn listing_until(&self, dir: &str) -> Option<Instant> {
        self.listings.lock().get(dir).map(|(u, _)| *u)
    }

    /// Caches a listing until `until`; expired ones are pruned as new ones come in, so a `find`
    /// over a huge tree keeps memory bounded by what is fresh.
    pub fn remember_listing(&self, dir: &str, listing: Arc<Listing>, until: Instant) {
        let mut listings = self.listings.lock();
        if listings.len() >= LISTINGS_BEFORE_PRUNE {
            let now = Instant::now();
            listings.retain(|_, (until, _)| *until > now);
            if listings.len() >= LISTINGS_BEFORE_PRUNE {
                // All fresh (a long TTL): drop the largest half rather than grow without bound.
                let mut sizes: Vec<(usize, String)> = listings
                    .iter()
                    .map(|(p, (_, l))| (l.len(), p.clone()))
                    .collect();
                sizes.sort_unstable_by(|a, b| b.cmp(a));
                for (_, p) in sizes.into_iter().take(LISTINGS_BEFORE_PRUNE / 2) {
                    listings.remove(&p);
                }
            }
        }
        listings.insert(dir.to_string(), (until, listing));
    }

    #[cfg(test)]
    pub fn listings_cached(&self) -> usize {
        self.listings.lock().len()
    }

    pub fn forget_listing(&self, dir: &str) {
        self.listings.lock().remove(dir);
    }

    pub fn forget_listings(&self) {
        self.listings.lock().clear();
    }

    /// Puts what this mount just did into the cached listing of `path`'s directory (keeping
    /// its expiry), so lookups of names created or removed there need no request.
    pub fn listing_set(&self, path: &str, found: Option<Found>) {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        if let Some((_, listing)) = self.listings.lock().get_mut(parent) {
            let entries = Arc::make_mut(listing);
            match found {
                Some(f) => entries.insert(name.to_string(), f),
                None => entries.remove(name),
            };
        }
    }

    /// Whether `path` is known not to exist (until when).
    pub fn is_negative(&self, path: &str, now: Instant) -> bool {
        self.negative.lock().peek(path).is_some_and(|u| *u > now)
    }

    pub fn set_negative(&self, path: String, until: Instant) {
        self.negative.lock().put(path, until);
    }

    pub fn clear_negative(&self, path: &str) {
        self.negative.lock().pop(path);
    }

    pub fn remember_meta(&self, key: &str, found: &Found) {
        if found.has_meta {
            self.metas.lock().put(
                key.to_string(),
                (found.etag.clone(), found.last_modified, found.clone()),
            );
        }
    }

    /// Fills a listing entry with metadata seen earlier for the same version of the object.
    pub fn known_meta(&self, key: &str, found: &mut Found) {
        if let Some((etag, lm, known)) = self.metas.lock().get(key) {
            if *etag == found.etag && *lm == found.last_modified {
                *found = known.clone();
            }
        }
    }

    /// What a HEAD said of `key` no longer holds (this mount rewrote it).
    pub fn forget_meta(&self, key: &str) {
        self.metas.lock().pop(key);
    }

    pub fn has_marker(&self, marker: &str) -> bool {
        self.markers.lock().contains(marker)
    }

    pub fn add_marker(&self, marker: String) {
        self.markers.lock().insert(marker);
    }

    pub fn remove_marker(&self, marker: &str) {
        self.markers.lock().remove(marker);
    }

    /// A directory renamed: markers under `from` are gone.
    pub fn remove_markers_under(&self, from: &str) {
        self.markers.lock().retain(|m| !m.starts_with(from));
    }
}
