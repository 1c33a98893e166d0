//! Which serving thread a request runs on, as a value the request carries
//! from its connection to the upstream socket and the plugin runtime. Made once per serving
//! thread by the server's `Shards`; whatever needs per-thread state (the provider's idle
//! connections, whether slow plugin work moves off the thread) reads it from the request, so
//! no module asks a thread-local which thread it is on.

/// A request's serving thread, or none (model discovery, the CLI, tests and benches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Affinity(Option<u16>);

impl Affinity {
    /// Not on a serving thread.
    pub const NONE: Self = Self(None);

    /// Serving thread `i`.
    ///
    /// # Panics
    /// If `i` does not fit in a `u16` (no machine has that many serving threads).
    #[must_use]
    pub fn shard(i: usize) -> Self {
        Self(Some(u16::try_from(i).expect("fewer than 65536 serving threads")))
    }

    /// The serving thread's index, if any.
    #[inline]
    #[must_use]
    pub fn index(self) -> Option<usize> {
        self.0.map(usize::from)
    }

    /// Whether the request runs on a serving thread.
    #[inline]
    #[must_use]
    pub fn is_serving(self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_knows_its_index_and_none_has_none() {
        assert_eq!(Affinity::shard(3).index(), Some(3));
        assert!(Affinity::shard(0).is_serving());
        assert_eq!(Affinity::NONE.index(), None);
        assert!(!Affinity::NONE.is_serving());
        assert_eq!(Affinity::default(), Affinity::NONE);
    }
}
