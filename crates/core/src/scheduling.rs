//! The threads that do a stream's bulk work (a pipeline's reading,
//! decoding, analysis and checkpoints, the detectors' calls, the history's
//! writes) run as batch work: Linux's `SCHED_BATCH`, which any process may
//! choose. A broker client's own threads keep the class of the thread that
//! made it: a source's are made at start-up (normal), a checkpoint table's
//! by its pipeline (batch).
//!
//! On a loaded host those threads outnumber the cores. In the normal class
//! each one that wakes (a window handed over, a queue with room again)
//! preempts the thread on its core: the decoder is cut off mid-line and
//! finds its caches cold, thousands of times a run. A batch thread that
//! wakes waits for the running one's time slice to end instead; what a
//! thread gets over a second is the same. The threads that must answer at
//! once (the epoch ticker that stops a runaway plugin, the HTTP server,
//! the plugin watcher) stay in the normal class and still preempt them.

/// Run the calling thread as batch work from now on; the threads it starts
/// after this inherit it. Where Linux forbids it, the thread runs as before
/// and the error says why; on other systems this does nothing.
pub fn run_as_batch_work() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call; pid 0 is the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's policy.
    #[cfg(target_os = "linux")]
    fn policy() -> i32 {
        // SAFETY: pid 0 is the calling thread; the call only reads.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_runs_as_batch_work_and_those_it_starts_too() {
        let before = policy();
        let policies = std::thread::spawn(|| {
            run_as_batch_work().expect("any thread may choose SCHED_BATCH");
            (policy(), std::thread::spawn(policy).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(policies, (libc::SCHED_BATCH, libc::SCHED_BATCH));
        // The thread that started it is left as it was (whatever class the tests run in).
        assert_eq!(policy(), before);
    }
}
