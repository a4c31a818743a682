//! The threads that do a stream's bulk work (reading, decoding, the
//! detectors' calls, the history's writes) run as batch work: Linux's
//! `SCHED_BATCH`, which any process may choose.
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
/// after this inherit it. Where the system has no such class, or forbids
/// it, the thread runs as before: the error says why.
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

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_runs_as_batch_work_and_those_it_starts_too() {
        let policies = std::thread::spawn(|| {
            run_as_batch_work().expect("any thread may choose SCHED_BATCH");
            // SAFETY: pid 0 is the calling thread.
            let own = unsafe { libc::sched_getscheduler(0) };
            let child = std::thread::spawn(|| unsafe { libc::sched_getscheduler(0) }).join().unwrap();
            (own, child)
        })
        .join()
        .unwrap();
        assert_eq!(policies, (libc::SCHED_BATCH, libc::SCHED_BATCH));
        // The thread that started it is left as it was.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
