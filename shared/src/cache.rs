//! A small TTL cache for a warm Lambda: reads of apps, users and templates are reused for a
//! few seconds. Entries this instance changes are invalidated at once; changes made through
//! other instances are seen within the TTL (the documented staleness).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, entries: Mutex::new(HashMap::new()) }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().expect("cache lock");
        entries.get(key).filter(|(stored, _)| stored.elapsed() < self.ttl).map(|(_, value)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.capacity {
            entries.retain(|_, (stored, _)| stored.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    pub fn invalidate(&self, key: &K) {
        self.entries.lock().expect("cache lock").remove(key);
    }

    /// The cached value, or `load`'s (cached when it succeeds).
    pub async fn get_or_load<E, F>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        let value = load.await?;
        self.insert(key.clone(), value.clone());
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_invalidated() {
        let cache = TtlCache::new(Duration::from_millis(30), 10);
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.invalidate(&"a");
        assert_eq!(cache.get(&"a"), None);
        cache.insert("b", 2);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"b"), None);
    }

    #[test]
    fn a_full_cache_makes_room() {
        let cache = TtlCache::new(Duration::from_secs(60), 2);
        cache.insert(1, "one");
        cache.insert(2, "two");
        cache.insert(3, "three");
        assert_eq!(cache.get(&3), Some("three"));
        assert!(cache.entries.lock().unwrap().len() <= 2);
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = TtlCache::new(Duration::ZERO, 2);
        cache.insert(1, 1);
        assert_eq!(cache.get(&1), None);
    }

    #[tokio::test]
    async fn loads_are_cached_only_when_they_succeed() {
        let cache: TtlCache<u8, u8> = TtlCache::new(Duration::from_secs(60), 4);
        assert_eq!(cache.get_or_load(&1, async { Err::<u8, &str>("down") }).await, Err("down"));
        assert_eq!(cache.get_or_load(&1, async { Ok::<u8, &str>(7) }).await, Ok(7));
        assert_eq!(cache.get_or_load(&1, async { Ok::<u8, &str>(8) }).await, Ok(7));
    }
}
