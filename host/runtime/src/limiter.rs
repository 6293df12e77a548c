//! The store's resource limiter: one budget for all linear memories and
//! tables of an instance together, and caps on how many instances,
//! memories and tables a component may create, the same under the pooling
//! and the on-demand allocator.
//!
//! wasmtime asks the limiter before it creates a memory or table (with a
//! current size of 0) and before each growth, one memory at a time; adding
//! up the answers is what makes the budget cover a component with sixteen
//! memories as it covers one with a single memory.

use rollcage_core::Limits;
use wasmtime::ResourceLimiter;

/// Table elements are counted at this size against `memory_mb` (a
/// function reference is one pointer).
pub const TABLE_ELEMENT_BYTES: usize = 8;

/// Counts what an instance holds against its plugin's limits.
pub struct StoreLimiter {
    limit_bytes: usize,
    instances: usize,
    memories: usize,
    tables: usize,
    /// Bytes of all memories and tables now.
    held: usize,
    /// The budget was reached: the trap that follows is reported as the
    /// memory limit, not as a crash.
    pub exceeded: bool,
}

impl StoreLimiter {
    pub fn new(limits: &Limits) -> Self {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        StoreLimiter {
            limit_bytes: limits.memory_bytes(),
            instances: count(limits.instances),
            memories: count(limits.memories),
            tables: count(limits.tables),
            held: 0,
            exceeded: false,
        }
    }

    /// Grow one memory or table from `current` to `desired` bytes if the
    /// total stays within the budget.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.held.saturating_sub(current).saturating_add(desired);
        if total > self.limit_bytes {
            self.exceeded = true;
            return false;
        }
        self.held = total;
        true
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.memories
    }

    fn tables(&self) -> usize {
        self.tables
    }
}

/// The limit named by wasmtime's refusal to create one more instance,
/// memory or table ("resource limit exceeded: memory count too high at 5").
pub fn count_limit(error: &str) -> Option<&'static str> {
    let rest = error.split("resource limit exceeded: ").nth(1)?;
    if rest.starts_with("instance count") {
        Some("instances")
    } else if rest.starts_with("memory count") {
        Some("memories")
    } else if rest.starts_with("table count") {
        Some("tables")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let limits = Limits {
            memory_mb: 1,
            ..Limits::default()
        };
        let mut l = StoreLimiter::new(&limits);
        // Two memories of 512 KiB fit; a third does not.
        assert!(l.memory_growing(0, 512 << 10, None).unwrap());
        assert!(l.memory_growing(0, 512 << 10, None).unwrap());
        assert!(!l.memory_growing(0, 64 << 10, None).unwrap());
        assert!(l.exceeded);
        // A table counts too, by its elements.
        let mut l = StoreLimiter::new(&limits);
        assert!(l.memory_growing(0, 1 << 19, None).unwrap());
        assert!(!l.table_growing(0, (1 << 19) / 8 + 1, None).unwrap());
        assert!(l.table_growing(0, (1 << 19) / 8, None).unwrap());
        // Growing one memory counts only the difference.
        let mut l = StoreLimiter::new(&limits);
        assert!(l.memory_growing(0, 1 << 19, None).unwrap());
        assert!(l.memory_growing(1 << 19, 1 << 20, None).unwrap());
        assert_eq!(l.held, 1 << 20);
    }

    #[test]
    fn count_refusals_name_their_limit() {
        assert_eq!(
            count_limit("resource limit exceeded: memory count too high at 5"),
            Some("memories")
        );
        assert_eq!(
            count_limit("x: resource limit exceeded: instance count too high at 33"),
            Some("instances")
        );
        assert_eq!(count_limit("something else"), None);
    }
}
