//! This process's resident memory and CPU time, read from the operating system at each
//! snapshot (cheap: one small read and one system call).

use super::snapshot::ProcessUsage;

pub fn usage() -> ProcessUsage {
    ProcessUsage { rss_bytes: rss_bytes(), cpu_seconds: cpu_seconds() }
}

/// Resident pages (`/proc/self/statm`, second field) times the page size.
#[cfg(target_os = "linux")]
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page_size).ok().map(|size| pages * size)
}

/// Not read on other systems yet (their peak RSS is not the current one).
#[cfg(not(target_os = "linux"))]
fn rss_bytes() -> Option<u64> {
    None
}

/// User plus system CPU time of every thread of the process.
#[cfg(unix)]
fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[cfg(not(unix))]
fn cpu_seconds() -> Option<f64> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn reads_memory_and_cpu_time() {
        let before = super::usage();
        let rss = before.rss_bytes.expect("rss on linux");
        assert!(rss > 1024 * 1024, "a test process holds more than 1 MiB: {rss}");
        // Burn a little CPU so the time moves.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = super::usage().cpu_seconds.expect("cpu time");
        assert!(after > before.cpu_seconds.expect("cpu time"), "cpu time grows");
    }
}
