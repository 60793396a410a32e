//! Decoding a load's compressed arrays on several threads at once, the
//! waiting one included.
//!
//! A load decodes the next arrays on background threads while the unpickler
//! builds objects from the previous ones. When the unpickler gets ahead and
//! has to wait, its thread would sleep while the decoding it waits for runs
//! elsewhere; with [`Fill`] it takes pieces of that work itself instead
//! ([`Fill::wait`]), so no core idles and the background threads can be
//! fewer than the cores (the unpickler keeps a core of its own while it
//! runs).
//!
//! The work is a list of [`Piece`]s (see [`Container::pieces`]), each
//! claimed once, in the order the unpickler needs the arrays. An array with
//! checks left for its copy ([`DeferredChecks`]) is one piece, checked by
//! the thread that decoded it, so it is handed over only once the checks
//! have passed on exactly the bytes handed over.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use amber_format::{Container, FormatError, Piece, Source};
use amber_scan::Issue;

use crate::DeferredChecks;

/// Why filling buffers with arrays failed.
#[derive(Debug)]
pub enum FillFailure {
    /// Reading them: damage, a truncated file, ...
    Read(FormatError),
    /// A deferred check refused array `index`'s copy.
    Check {
        /// The array.
        index: usize,
        /// What the check found.
        issue: Issue,
    },
}

/// Compressed arrays being decoded into a load's buffers (lifetime `'d`),
/// by whichever threads call [`Fill::help`] or [`Fill::wait`].
pub struct Fill<'d, B> {
    container: Arc<Container<B>>,
    checks: Arc<DeferredChecks>,
    /// The buffers, until the first thread to help splits the work.
    dests: Mutex<Vec<(usize, &'d mut [u8])>>,
    pieces: OnceLock<Vec<Mutex<Option<Piece<'d>>>>>,
    next: AtomicUsize,
    stop: AtomicBool,
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// Pieces finished (decoded, failed or skipped), and the failure to report.
struct Progress {
    done: usize,
    /// The failure to report, ranked by (is a check, piece): damage first,
    /// then the first piece in order.
    failure: Option<((bool, usize), FillFailure)>,
}

impl<'d, B: Source> Fill<'d, B> {
    /// The work of decoding the compressed arrays `dests` (array index and
    /// a buffer of exactly its size), running `checks` on the arrays they
    /// name. The first thread to help splits it into pieces (so the thread
    /// that starts the work does not); a failure to split it (a damaged entry) is
    /// reported by [`Self::wait`], with no work left to do.
    #[must_use]
    pub fn new(
        container: Arc<Container<B>>,
        dests: Vec<(usize, &'d mut [u8])>,
        checks: Arc<DeferredChecks>,
    ) -> Self {
        Fill {
            container,
            checks,
            dests: Mutex::new(dests),
            pieces: OnceLock::new(),
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            progress: Mutex::new(Progress {
                done: 0,
                failure: None,
            }),
            changed: Condvar::new(),
        }
    }

    /// The pieces, split on the first call.
    fn pieces(&self) -> &[Mutex<Option<Piece<'d>>>] {
        self.pieces.get_or_init(|| {
            let dests = std::mem::take(
                &mut *self
                    .dests
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            let dests = dests
                .into_iter()
                .map(|(i, d)| (i, d, !self.checks.has(i)))
                .collect();
            match self.container.pieces(dests) {
                Ok(pieces) => pieces.into_iter().map(|p| Mutex::new(Some(p))).collect(),
                Err(e) => {
                    self.stop.store(true, Ordering::Relaxed);
                    self.lock().failure = Some(((false, 0), FillFailure::Read(e)));
                    Vec::new()
                }
            }
        })
    }

    /// Whether every piece has been claimed (there is nothing left to help with).
    #[must_use]
    pub fn claimed(&self) -> bool {
        self.pieces
            .get()
            .is_some_and(|p| self.next.load(Ordering::Relaxed) >= p.len())
    }

    /// Claims and decodes pieces on this thread until none is left.
    pub fn help(&self) {
        let pieces = self.pieces();
        loop {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = pieces.get(k) else {
                return;
            };
            let piece = slot.lock().ok().and_then(|mut p| p.take());
            let failure = match piece {
                Some(piece) if !self.stop.load(Ordering::Relaxed) => self.run(piece).err(),
                _ => None,
            };
            let mut progress = self.lock();
            progress.done = progress.done.saturating_add(1);
            if let Some(failure) = failure {
                self.stop.store(true, Ordering::Relaxed);
                let rank = (matches!(failure, FillFailure::Check { .. }), k);
                if progress.failure.as_ref().is_none_or(|(was, _)| rank < *was) {
                    progress.failure = Some((rank, failure));
                }
            }
            if progress.done >= pieces.len() {
                self.changed.notify_all();
            }
        }
    }

    fn run(&self, piece: Piece<'d>) -> Result<(), FillFailure> {
        let whole = piece.whole;
        let (index, bytes) = self
            .container
            .decode_piece(piece)
            .map_err(FillFailure::Read)?;
        // A split array has no checks (see `new`): only whole ones do.
        match self.checks.check(index, bytes).filter(|_| whole) {
            Some(issue) => Err(FillFailure::Check { index, issue }),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// With `help`, helps until every piece is claimed; then blocks until
    /// every piece is finished: the buffers are then filled and checked, or
    /// the first failure (by array order, damage before a refused check) is
    /// returned. Only the first call reports the failure.
    ///
    /// # Errors
    /// What decoding or a check met.
    pub fn wait(&self, help: bool) -> Result<(), FillFailure> {
        if help {
            self.help();
        }
        let count = self.pieces().len();
        let mut progress = self.lock();
        while progress.done < count {
            progress = self
                .changed
                .wait(progress)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        match progress.failure.take() {
            Some((_, failure)) => Err(failure),
            None => Ok(()),
        }
    }
}
