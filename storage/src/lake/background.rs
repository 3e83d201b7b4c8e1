//! CPU work that must not slow writes down: sorting and encoding Parquet for persistence and
//! compaction.
//!
//! Such work runs on a thread of its own at a lower scheduling priority (nice 10 on Linux),
//! so that when ingest keeps every core busy the kernel gives it most of the CPU and the
//! encoder the rest (about a tenth of a core), and when ingest pauses the encoder gets all
//! it can use. Persistence therefore never starves: the more it falls behind, the fuller the
//! buffer, and past half the buffer's limit writes wait for persist rounds (leaving the
//! encoder the CPU); a full buffer answers them with 503.

use tokio::sync::oneshot;

/// Nice value of background threads: a weight of about a tenth of a normal thread's.
const BACKGROUND_NICE: i32 = 10;

/// Runs `work` on a new low-priority thread and waits for its result. A panic in `work` comes
/// back as an error.
pub(crate) async fn run_in_background<T, F>(name: &str, work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("sluice-{name}"))
        .spawn(move || {
            lower_priority();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(result);
        })
        .map_err(|e| format!("could not start a {name} thread: {e}"))?;
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(format!(
            "{name} panicked: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
        Err(_) => Err(format!("{name} thread ended without an answer")),
    }
}

/// Hands the allocator's free memory back to the kernel: called once a persist or a
/// compaction step let its rows go. The server keeps freed memory for reuse (see
/// `keep_freed_memory` in `src/main.rs`), which saves requests page faults but leaves what a
/// load's many small blocks freed held by the process; the large arrays of the next
/// compaction range are mapped afresh beside it rather than in it. Trimming here, at most
/// about once per persist round, returns that memory (glibc's `malloc_trim` also releases
/// free pages inside the heaps) before the next large step needs its own.
pub(crate) fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's heaps to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lowers the calling thread's priority (on Linux the nice value is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read their arguments.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE)
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower the priority of a background thread"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_result_and_reports_panics() {
        assert_eq!(run_in_background("test", || 6 * 7).await, Ok(42));
        let err = run_in_background("test", || -> u32 { panic!("boom") })
            .await
            .unwrap_err();
        assert!(err.contains("test panicked: boom"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn runs_at_a_lower_priority() {
        let nice = run_in_background("test", || unsafe {
            libc::getpriority(
                libc::PRIO_PROCESS,
                libc::syscall(libc::SYS_gettid) as libc::id_t,
            )
        })
        .await
        .unwrap();
        assert_eq!(nice, BACKGROUND_NICE);
    }
}
