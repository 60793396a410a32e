//! Thread pools for `threads=`: one cached rayon pool per requested size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

static POOLS: Mutex<Option<HashMap<usize, Arc<rayon::ThreadPool>>>> = Mutex::new(None);

/// Where parallel work runs: rayon's global pool (all cores) or a sized one.
#[derive(Clone, Default)]
pub struct Threads(Option<Arc<rayon::ThreadPool>>);

impl Threads {
    /// `None` means every core; `Some(n)` caps the work at `n` threads.
    pub fn new(threads: Option<usize>) -> PyResult<Self> {
        let Some(n) = threads else {
            return Ok(Self(None));
        };
        if n == 0 {
            return Err(PyValueError::new_err("threads must be at least 1"));
        }
        let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
        let pools = pools.get_or_insert_with(HashMap::new);
        if let Some(pool) = pools.get(&n) {
            return Ok(Self(Some(pool.clone())));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("amber-{i}"))
            .build()
            .map_err(|e| PyValueError::new_err(format!("cannot start {n} threads: {e}")))?;
        let pool = Arc::new(pool);
        pools.insert(n, pool.clone());
        Ok(Self(Some(pool)))
    }

    /// Starts `f` on a thread of this pool and returns at once.
    pub fn spawn(&self, f: Box<dyn FnOnce() + Send>) {
        match &self.0 {
            Some(pool) => pool.spawn(f),
            None => rayon::spawn(f),
        }
    }

    /// The number of threads of this pool.
    pub fn count(&self) -> usize {
        match &self.0 {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Runs `f` in this pool.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.0 {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}
