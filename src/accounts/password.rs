//! Password hashing: argon2id at OWASP parameters, on threads of its own
//! behind a semaphore, so a login flood queues here instead of starving the
//! reactor (and with it the JWKS and token verification). The hashing
//! threads run [`HASHING_NICE`] steps below the process's priority: when a
//! reactor thread wakes for a request, the scheduler gives it the core at
//! once instead of letting a 20-40 ms hash finish its slice, so the JWKS
//! tail holds during a login flood, and hashes still get every cycle
//! nothing else wants.
//!
//! The permit travels into the blocking job, so a request dropped by its
//! client (connect, send, close) keeps its slot until the hash it started
//! has finished: at most `concurrency` hashes run, ever. The queue in front
//! is bounded too: past `concurrency + queue` admitted hashes, callers get
//! [`HashError::Busy`] at once (503 with `Retry-After`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use std::cell::RefCell;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use tokio::sync::{Semaphore, oneshot};

/// Hashing could not run; never a wrong password. Each variant keeps its
/// cause as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The argon2 parameters were refused.
    #[error("password hashing failed: invalid argon2 parameters")]
    Params(#[source] argon2::Error),
    /// argon2 could not hash the password.
    #[error("password hashing failed")]
    Hash(#[source] argon2::password_hash::Error),
    /// The hashing pool was shut down.
    #[error("password hashing failed: the hashing pool is closed")]
    Closed(#[from] tokio::sync::AcquireError),
    /// The hashing thread panicked on this hash.
    #[error("password hashing failed: the hashing worker died")]
    Worker(#[from] oneshot::error::RecvError),
    /// The hashing threads could not be started.
    #[error("password hashing failed: cannot start the hashing threads")]
    Threads(#[source] std::io::Error),
    /// The hashing queue is full; retry shortly.
    #[error("the server is busy checking passwords; retry shortly")]
    Busy,
}

/// Hashes waiting per hashing thread before callers are turned away: deep
/// enough for a burst of honest logins, shallow enough that a waiter gets
/// an answer within about a second (argon2 takes ~20-40 ms here).
const QUEUE_PER_THREAD: usize = 32;

/// How many steps of `nice` below the process the hashing threads run.
/// CFS weights a nice-10 thread 110 against 1024 for the reactor's: a
/// tenth of a contended core, all of an idle one.
pub const HASHING_NICE: i32 = 10;

/// The most argon2 working memory a hashing thread keeps between hashes
/// (64 MiB, over three times the OWASP 19 MiB); a stored hash asking for
/// more gets memory of its own, freed after it.
const MAX_KEPT_BLOCKS: usize = 64 * 1024;

thread_local! {
    /// A hashing thread's argon2 working memory, allocated by its first
    /// hash and reused by every later one. Freed memory of that size is
    /// not given back by the allocator (glibc keeps it in the thread's
    /// arena), so one block per hashing thread, kept, is what bounds
    /// memory: RSS stays flat however many logins come. `None` on every
    /// other thread.
    static WORKING_MEMORY: RefCell<Option<Vec<Block>>> = const { RefCell::new(None) };
}

/// Runs `f` on `blocks` argon2 blocks: the hashing thread's kept memory
/// when it may hold them, else memory allocated for this call.
fn with_working_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    match WORKING_MEMORY.take() {
        Some(mut memory) if blocks <= MAX_KEPT_BLOCKS => {
            if memory.len() < blocks {
                memory.resize(blocks, Block::new());
            }
            let result = f(&mut memory[..blocks]);
            WORKING_MEMORY.set(Some(memory));
            result
        }
        kept => {
            WORKING_MEMORY.set(kept);
            f(&mut vec![Block::new(); blocks])
        }
    }
}

/// A hash (or a test's stand-in) for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// The threads that run nothing but hashes; they end when the last
/// [`PasswordHasher`] clone is dropped.
struct HashThreads {
    jobs: mpsc::Sender<Job>,
}

impl HashThreads {
    fn start(count: usize) -> Result<Self, HashError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..count {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("keyturn-argon2-{n}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    WORKING_MEMORY.set(Some(Vec::new()));
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = next else { return };
                        // A panicking job loses its own answer (its caller
                        // hears `Worker`), not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })
                .map_err(HashError::Threads)?;
        }
        Ok(Self { jobs })
    }
}

/// Moves the calling thread [`HASHING_NICE`] steps down (never up: that
/// would need privileges), and says so if the system refuses.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    // Linux keeps a nice value per thread, addressed by its thread id.
    let me = Some(rustix::thread::gettid());
    let lowered = getpriority_process(me)
        .and_then(|now| setpriority_process(me, (now + HASHING_NICE).min(19)));
    if let Err(err) = lowered {
        tracing::warn!(error = %err, "hashing thread runs at the reactor's priority");
    }
}

/// Elsewhere `setpriority` would lower the whole process: left alone.
#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

/// Live counters of the hashing pool (for `/metrics` and tests).
#[derive(Debug, Default)]
pub struct HashLoad {
    /// Hashes admitted: waiting for a permit or running.
    admitted: AtomicUsize,
    running: AtomicUsize,
    peak_running: AtomicUsize,
    completed: AtomicU64,
    refused: AtomicU64,
}

/// A snapshot of [`HashLoad`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLoadSnapshot {
    /// Hashes allowed to run at once.
    pub concurrency: usize,
    /// Hashes allowed to wait beyond those.
    pub queue: usize,
    /// Hashes waiting now.
    pub waiting: usize,
    /// Hashes running now.
    pub running: usize,
    /// Most hashes ever seen running at once.
    pub peak_running: usize,
    /// Hashes finished (every argon2 evaluation, dummy ones included).
    pub completed: u64,
    /// Hashes refused because the queue was full.
    pub refused: u64,
}

/// A slot among the admitted hashes, given back on drop.
struct Admitted(Arc<HashLoad>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A hash running on a blocking thread, counted until it ends (even by a
/// panic).
struct Running(Arc<HashLoad>);

impl Running {
    fn start(load: Arc<HashLoad>) -> Self {
        let now = load.running.fetch_add(1, Ordering::AcqRel) + 1;
        load.peak_running.fetch_max(now, Ordering::AcqRel);
        Self(load)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.completed.fetch_add(1, Ordering::Relaxed);
    }
}

/// argon2id hasher with bounded concurrency.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    concurrency: usize,
    queue: usize,
    load: Arc<HashLoad>,
    threads: Arc<HashThreads>,
    /// Verified against when the user does not exist, so unknown users cost
    /// the same time as wrong passwords.
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    /// OWASP minimum: m=19456 KiB, t=2, p=1. Concurrency is one below the
    /// core count (at least one), leaving a core for the reactor.
    pub fn owasp() -> Result<Self, HashError> {
        let params = Params::new(19_456, 2, 1, None).map_err(HashError::Params)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let concurrency = cores.saturating_sub(1).max(1);
        Self::with(params, concurrency, concurrency * QUEUE_PER_THREAD)
    }

    fn with(params: Params, concurrency: usize, queue: usize) -> Result<Self, HashError> {
        let dummy = hash_blocking(&params, b"keyturn dummy password")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            queue,
            load: Arc::default(),
            threads: Arc::new(HashThreads::start(concurrency)?),
            dummy_hash: Arc::new(dummy),
        })
    }

    /// The pool's counters now.
    pub fn load(&self) -> HashLoadSnapshot {
        let load = &self.load;
        let admitted = load.admitted.load(Ordering::Acquire);
        let running = load.running.load(Ordering::Acquire);
        HashLoadSnapshot {
            concurrency: self.concurrency,
            queue: self.queue,
            waiting: admitted.saturating_sub(running),
            running,
            peak_running: load.peak_running.load(Ordering::Acquire),
            completed: load.completed.load(Ordering::Relaxed),
            refused: load.refused.load(Ordering::Relaxed),
        }
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move || hash_blocking(&params, password.expose_secret().as_bytes()))
            .await?
    }

    /// Checks `password` against `stored`, or against a dummy hash when there
    /// is no user, taking the same time either way.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let exists = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy_hash.as_str().to_owned(), str::to_owned);
        let password = password.clone();
        let matches = self
            .run(move || verify_blocking(&hash, password.expose_secret().as_bytes()))
            .await?;
        Ok(exists && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let admitted = self.admit()?;
        let permit = Arc::clone(&self.permits).acquire_owned().await?;
        let load = Arc::clone(&self.load);
        let (answer, answered) = oneshot::channel();
        // Permit and slot live in the job: if this future is dropped (the
        // client went away), they are held until the hash really ends.
        // There are as many threads as permits, so a job never waits here.
        let job: Job = Box::new(move || {
            let _held = (permit, admitted);
            let result = {
                let _running = Running::start(load);
                work()
            };
            // Counted as completed before the caller hears the answer, so a
            // caller that reads the counters next sees its own hash.
            let _ = answer.send(result);
        });
        // Sending fails only with every thread gone: `answered` says so.
        let _ = self.threads.jobs.send(job);
        Ok(answered.await?)
    }

    /// Takes a slot among the admitted hashes, or refuses when the queue is
    /// full.
    fn admit(&self) -> Result<Admitted, HashError> {
        let bound = self.concurrency + self.queue;
        let load = &self.load;
        let taken = load
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Admitted(Arc::clone(load))),
            Err(_) => {
                load.refused.fetch_add(1, Ordering::Relaxed);
                Err(HashError::Busy)
            }
        }
    }
}

/// argon2id of `password` with a fresh salt, as a PHC string: what
/// `PasswordHasher::hash_password` makes, on the thread's working memory.
fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(HashError::Hash)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        with_working_memory(params.block_count(), |memory| {
            argon2.hash_password_into_with_memory(password, salt_bytes, out, memory)
        })
        .map_err(argon2::password_hash::Error::from)
    })
    .map_err(HashError::Hash)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(HashError::Hash)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored` (any argon2 variant,
/// version and parameters it names), compared in constant time; what
/// `PasswordVerifier::verify_password` does, on the thread's working
/// memory. An unreadable hash matches nothing.
fn verify_blocking(stored: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut computed = vec![0u8; expected.len()];
    let hashed = with_working_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, salt_bytes, &mut computed, memory)
    });
    hashed.is_ok() && bool::from(computed.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric `keyturn_password_hashes_total` reads `completed`: a hash
    /// the caller has its answer for is counted already (it was counted
    /// after the answer, so a caller reading the counters next could miss
    /// its own hash: throttle::concurrent_bad_logins_… saw 6 for 5).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hash_is_counted_before_its_caller_hears_the_answer() {
        let params = Params::new(8, 1, 1, None).unwrap();
        let hasher = PasswordHasher::with(params, 1, 4).unwrap();
        let pw = SecretString::from("correct horse");
        for done in 1..=2000 {
            hasher.hash(&pw).await.unwrap();
            assert_eq!(hasher.load().completed, done);
        }
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let hasher = PasswordHasher::owasp().unwrap();
        let pw = SecretString::from("correct horse");
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(hasher.verify(&pw, Some(&hash)).await.unwrap());
        assert!(
            !hasher
                .verify(&SecretString::from("wrong"), Some(&hash))
                .await
                .unwrap()
        );
        assert!(!hasher.verify(&pw, None).await.unwrap());
    }

    #[tokio::test]
    async fn failures_keep_their_cause() {
        use std::error::Error as _;
        let hasher = PasswordHasher::owasp().unwrap();
        hasher.permits.close();
        let err = hasher.hash(&SecretString::from("pw")).await.unwrap_err();
        assert!(matches!(err, HashError::Closed(_)), "{err:?}");
        assert!(err.source().is_some(), "the semaphore's error is kept");

        let hasher = PasswordHasher::owasp().unwrap();
        let dies = || -> u8 { panic!("worker died") };
        let err = hasher.run(dies).await.unwrap_err();
        assert!(matches!(err, HashError::Worker(_)), "{err:?}");
        assert!(err.source().is_some(), "the channel's error is kept");
        assert!(hasher.run(|| 7).await.is_ok(), "the thread survived");
    }

    /// The nice value of the calling thread (field 19 of its stat line).
    #[cfg(target_os = "linux")]
    fn nice_of_this_thread() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = stat.rsplit(')').next().unwrap();
        after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn hashes_are_standard_phc_strings_either_implementation_reads() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(1024, 1, 1, None).unwrap();
        let ours = hash_blocking(&params, b"pw").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"px", &parsed).is_err());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = Argon2::new(Algorithm::Argon2i, Version::V0x10, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(verify_blocking(&theirs, b"pw"), "{theirs}");
        assert!(!verify_blocking(&theirs, b"px"));
        assert!(!verify_blocking("$argon2id$v=19$m=1024,t=1,p=1$bad", b"pw"));
        assert!(!verify_blocking("not a hash", b"pw"));
    }

    #[tokio::test]
    async fn many_hashes_reuse_one_working_memory_per_thread() {
        // One thread, so every job below runs on it.
        let params = Params::new(19_456, 2, 1, None).unwrap();
        let hasher = PasswordHasher::with(params, 1, 4).unwrap();
        let pw = SecretString::from("pw");
        let stored = hasher.hash(&pw).await.unwrap();
        let kept =
            || WORKING_MEMORY.with_borrow(|m| m.as_ref().map(|v| (v.as_ptr() as usize, v.len())));
        let first = hasher.run(kept).await.unwrap();
        for _ in 0..3 {
            assert!(hasher.verify(&pw, Some(&stored)).await.unwrap());
        }
        let later = hasher.run(kept).await.unwrap();
        assert_eq!(
            first.map(|(_, len)| len),
            Some(19_456),
            "one OWASP block kept"
        );
        assert_eq!(
            first, later,
            "the same memory, not a new allocation per hash"
        );
        // Other threads keep nothing.
        assert_eq!(kept(), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_below_the_reactors_priority() {
        let hasher = PasswordHasher::owasp().unwrap();
        let reactor = nice_of_this_thread();
        let hashing = hasher.run(nice_of_this_thread).await.unwrap();
        assert_eq!(
            hashing,
            (reactor + HASHING_NICE).min(19),
            "reactor at {reactor}"
        );
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_dropped_callers_keep_their_slot() {
        let params = Params::new(19_456, 2, 1, None).unwrap();
        let hasher = PasswordHasher::with(params, 1, 2).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let blocked = |wait: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>| {
            move || {
                let _ = wait.lock().unwrap().recv();
            }
        };
        // One running (held by the channel), two waiting: full.
        let running = tokio::spawn({
            let (h, w) = (hasher.clone(), Arc::clone(&wait));
            async move { h.run(blocked(w)).await }
        });
        while hasher.load().running == 0 {
            tokio::task::yield_now().await;
        }
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (h, w) = (hasher.clone(), Arc::clone(&wait));
                tokio::spawn(async move { h.run(blocked(w)).await })
            })
            .collect();
        while hasher.load().waiting < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(hasher.run(|| ()).await, Err(HashError::Busy)));
        assert_eq!(hasher.load().refused, 1);
        // The caller of the running hash goes away: its slot stays taken.
        running.abort();
        let _ = running.await;
        assert_eq!(hasher.load().running, 1);
        assert!(matches!(hasher.run(|| ()).await, Err(HashError::Busy)));
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        let load = hasher.load();
        assert_eq!((load.running, load.waiting, load.peak_running), (0, 0, 1));
    }
}
