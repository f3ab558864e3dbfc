//! The resource limiter of one controller instance: its linear memories and its tables
//! draw from one byte budget, the controller's `memory-bytes`, and the number of core
//! instances, tables and memories it may create is capped.
//!
//! wasmtime's `StoreLimits` caps each linear memory and each table on its own, so a
//! component with several memories or tables could take a multiple of its cap, and a
//! table's elements (host memory too) counted against nothing. Here every byte a memory
//! or table grows by is charged to the one budget; going past it traps the call, like
//! any other failure to grow (the instance is replaced; its store, and so the budget, is
//! dropped with it).

use wasmtime::ResourceLimiter;

/// Bytes charged for one table element. wasmtime 48 stores a `funcref` as one pointer
/// (8 bytes on a 64-bit host), a GC reference in 4 bytes and a continuation in 16;
/// charging 16 covers every element type whatever the proposals enabled.
pub(crate) const TABLE_ELEMENT_BYTES: usize = 16;

/// Most core instances one controller instance may create. A Rust component makes a
/// handful, componentize-py one per linked library (a few dozen); each costs host
/// memory outside the byte budget.
pub(crate) const MAX_INSTANCES: usize = 500;

/// Most tables one controller instance may create. Their elements are charged to the
/// byte budget; the cap bounds the fixed cost of each table.
pub(crate) const MAX_TABLES: usize = 500;

/// Most linear memories one controller instance may create. Their bytes are charged to
/// the byte budget; the cap bounds the address space each one reserves (gigabytes of
/// virtual memory on 64-bit hosts).
pub(crate) const MAX_MEMORIES: usize = 16;

/// The limiter held in a controller instance's store.
#[derive(Debug)]
pub(crate) struct Budget {
    /// The cap: `memory-bytes`.
    cap: usize,
    /// Bytes of memory and table elements granted so far.
    used: usize,
    /// The last growth granted, taken back if wasmtime then fails to perform it.
    last: usize,
}

/// What refusing a growth says; the trap names the limit to raise.
#[derive(Debug, thiserror::Error)]
#[error(
    "growing {what} would take the instance's memories and tables to {wanted} bytes, \
     past its `memory-bytes` cap of {cap}"
)]
pub(crate) struct OverBudget {
    what: String,
    wanted: usize,
    cap: usize,
}

impl Budget {
    /// A budget of `cap` bytes, none used.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            used: 0,
            last: 0,
        }
    }

    /// Bytes granted so far.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    fn charge(&mut self, bytes: usize, what: impl FnOnce() -> String) -> Result<(), OverBudget> {
        let wanted = self.used.saturating_add(bytes);
        if wanted > self.cap {
            return Err(OverBudget {
                what: what(),
                wanted,
                cap: self.cap,
            });
        }
        self.used = wanted;
        self.last = bytes;
        Ok(())
    }

    fn refund_last(&mut self) {
        self.used -= std::mem::take(&mut self.last);
    }
}

/// Every refusal traps, including growth past a memory's or table's own declared
/// maximum (as `StoreLimits::trap_on_grow_failure` does): a guest that cannot grow is
/// not left to carry on half-broken.
impl ResourceLimiter for Budget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!(
                "growing memory to {desired} bytes: past the memory's declared maximum"
            );
        }
        self.charge(desired.saturating_sub(current), || {
            format!("memory to {desired} bytes")
        })?;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refund_last();
        Err(error.context("growing memory failed"))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!(
                "growing a table to {desired} elements: past the table's declared maximum"
            );
        }
        let bytes = desired
            .saturating_sub(current)
            .saturating_mul(TABLE_ELEMENT_BYTES);
        self.charge(bytes, || format!("a table to {desired} elements"))?;
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refund_last();
        Err(error.context("growing a table failed"))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 64 << 10;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut budget = Budget::new(4 * PAGE);
        // Two memories of two pages each fill it.
        assert!(budget.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(budget.memory_growing(0, PAGE, None).unwrap());
        assert!(budget.memory_growing(PAGE, 2 * PAGE, None).unwrap());
        assert_eq!(budget.used(), 4 * PAGE);
        // No room left for a table element, nor another page.
        let error = budget.table_growing(0, 1, None).unwrap_err();
        assert!(error.to_string().contains("memory-bytes"), "{error}");
        assert!(budget.memory_growing(2 * PAGE, 3 * PAGE, None).is_err());
        assert_eq!(budget.used(), 4 * PAGE, "refusals charge nothing");
    }

    #[test]
    fn table_elements_are_charged_per_element() {
        let mut budget = Budget::new(1000 * TABLE_ELEMENT_BYTES);
        assert!(budget.table_growing(0, 600, None).unwrap());
        assert!(budget.table_growing(600, 1000, None).unwrap());
        assert!(budget.table_growing(1000, 1001, None).is_err());
        // The 32M-element growth of a table bomb is refused outright.
        let mut budget = Budget::new(64 << 20);
        let error = budget.table_growing(1, 1 + (32 << 20), None).unwrap_err();
        assert!(error.to_string().contains("growing a table"), "{error}");
    }

    #[test]
    fn a_failed_growth_is_refunded_and_traps() {
        let mut budget = Budget::new(4 * PAGE);
        assert!(budget.memory_growing(0, 3 * PAGE, None).unwrap());
        assert!(
            budget
                .memory_grow_failed(wasmtime::format_err!("mmap failed"))
                .is_err()
        );
        assert_eq!(budget.used(), 0);
        assert!(budget.memory_growing(0, PAGE, Some(0)).is_err());
    }
}
