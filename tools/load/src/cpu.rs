//! The CPU time each process of the deployment spends per operation, read from `/proc`: with
//! every process on the same cores, it shows where the cores go and how much an operation
//! costs in all, which latency under load follows.

use std::sync::OnceLock;
use std::time::Duration;

/// `/proc/<pid>/stat` counts in USER_HZ, which Linux fixes at 100 on x86, ARM and RISC-V.
const TICKS_PER_SECOND: u64 = 100;

/// This tool first, then the processes named on the command line.
static WATCHED: OnceLock<Vec<(String, u32)>> = OnceLock::new();

/// Counts this process and `named` from now on.
pub fn watch(named: Vec<(String, u32)>) {
    let mut all = vec![("load".to_string(), std::process::id())];
    all.extend(named);
    let _ = WATCHED.set(all);
}

/// `NAME=PID`, as given to `--cpu-of`.
pub fn parse_named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
    let pid = pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))?;
    if name.is_empty() {
        return Err("empty process name".into());
    }
    Ok((name.to_string(), pid))
}

/// Each watched process's CPU time so far (None once it has gone).
pub struct Snapshot(Vec<Option<Duration>>);

pub fn snapshot() -> Snapshot {
    Snapshot(WATCHED.get().map(|w| w.iter().map(|(_, pid)| cpu_time(*pid)).collect()).unwrap_or_default())
}

/// What each watched process spent between two snapshots.
pub fn spent(before: &Snapshot, after: &Snapshot) -> Vec<(String, Duration)> {
    let Some(watched) = WATCHED.get() else { return Vec::new() };
    watched
        .iter()
        .zip(before.0.iter().zip(&after.0))
        .filter_map(|((name, _), (b, a))| Some((name.clone(), a.as_ref()?.saturating_sub(*b.as_ref()?))))
        .collect()
}

/// User + system time of all threads of `pid`, those that ended included.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// One line: microseconds of CPU per operation for each process and in all, and how many cores
/// were busy.
pub fn per_op_line(spent: &[(String, Duration)], ops: usize, elapsed: Duration) -> Option<String> {
    if spent.is_empty() || ops == 0 || elapsed.is_zero() {
        return None;
    }
    let per_op = |d: &Duration| d.as_secs_f64() * 1e6 / ops as f64;
    let parts: Vec<String> = spent.iter().map(|(name, d)| format!("{name} {:.0}us", per_op(d))).collect();
    let total: Duration = spent.iter().map(|(_, d)| *d).sum();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Some(format!(
        "    cpu per op: {}; total {:.0}us ({:.2} of {cores} cores busy)",
        parts.join(", "),
        per_op(&total),
        total.as_secs_f64() / elapsed.as_secs_f64(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        let before = cpu_time(std::process::id()).expect("own stat");
        // Burn a little CPU so the count can only grow.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = cpu_time(std::process::id()).expect("own stat");
        assert!(after > before, "{before:?} -> {after:?}");
    }

    #[test]
    fn parses_named_pids() {
        assert_eq!(parse_named_pid("nats-server=42"), Ok(("nats-server".to_string(), 42)));
        assert!(parse_named_pid("42").is_err());
        assert!(parse_named_pid("=42").is_err());
        assert!(parse_named_pid("x=y").is_err());
    }

    #[test]
    fn per_op_line_divides_by_operations() {
        let spent = vec![("a".to_string(), Duration::from_millis(10)), ("b".to_string(), Duration::from_millis(30))];
        let line = per_op_line(&spent, 100, Duration::from_millis(40)).expect("line");
        assert!(line.contains("a 100us, b 300us; total 400us (1.00 of"), "{line}");
        assert_eq!(per_op_line(&spent, 0, Duration::from_secs(1)), None);
    }
}
