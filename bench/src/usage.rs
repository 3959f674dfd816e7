//! What the processes of a benchmark use, read from `/proc`: resident
//! memory, and CPU time by process name and for the whole machine.

use std::collections::{BTreeMap, HashMap};

/// Clock ticks per second in `/proc` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The name this benchmark's own process is reported under: it runs the
/// control-plane nodes, the operator and the simulator.
pub const SELF_NAME: &str = "ndc (3 nodes, operator, simulator)";

/// Resident memory of a process, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The fields of `/proc/<pid>/stat` after the command name, which may hold
/// spaces and parentheses: the name and the rest.
fn stat_of(pid: u32) -> Option<(String, Vec<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<(String, Vec<u64>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // state ppid pgrp ...: the state is a letter, read as 0.
    let rest = stat
        .get(close + 2..)?
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Some((name, rest))
}

/// A process of the benchmark: its name, pid, and CPU time so far in ticks
/// (user and system, with that of the children it has waited for: a
/// PostgreSQL backend that ended is in the postmaster's).
#[derive(Debug, Clone)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    cpu_ticks: u64,
}

/// This process and its descendants (Garage, PostgreSQL and its workers),
/// read from /proc once.
pub fn processes() -> Vec<Proc> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents: HashMap<u32, u32> = HashMap::new();
    let mut all: HashMap<u32, Proc> = HashMap::new();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some((name, rest)) = stat_of(pid) else {
            continue;
        };
        parents.insert(pid, rest.get(1).copied().unwrap_or(0) as u32);
        let cpu_ticks = cpu_of(&rest).unwrap_or(0);
        let name = if pid == me {
            SELF_NAME.to_string()
        } else {
            name
        };
        all.insert(
            pid,
            Proc {
                name,
                pid,
                cpu_ticks,
            },
        );
    }
    let descends = |mut pid: u32| {
        for _ in 0..8 {
            match parents.get(&pid) {
                Some(&p) if p == me => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    all.into_values()
        .filter(|p| p.pid == me || descends(p.pid))
        .collect()
}

fn cpu_of(rest: &[u64]) -> Option<u64> {
    // utime, stime, cutime and cstime are fields 14 to 17 of stat; `rest`
    // starts at field 3.
    Some(rest.get(11..15)?.iter().sum())
}

/// Busy and total CPU time of the whole machine so far (every core), in
/// ticks, from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine(s.lines().next()?)
}

fn parse_machine(line: &str) -> Option<(u64, u64)> {
    let f: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already
    // in user).
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3)? + f.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU time used from the meter's start, by process name, and the machine's.
/// Processes are read each time [`CpuMeter::sample`] is called. A process
/// that has ended is dropped from the count: its whole time is then in its
/// parent's count of waited-for children, so an ended child is counted once
/// and in full (as long as its parent is still running).
pub struct CpuMeter {
    start: HashMap<u32, u64>,
    last: HashMap<u32, (String, u64)>,
    machine_start: (u64, u64),
    machine_last: (u64, u64),
}

/// CPU seconds by process name, and the machine's busy and total seconds.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CpuUse {
    pub by_process: BTreeMap<String, f64>,
    pub machine_busy_s: f64,
    pub machine_total_s: f64,
}

impl CpuMeter {
    /// Starts counting: what processes used before now is left out.
    pub fn start() -> Self {
        let start = processes()
            .into_iter()
            .map(|p| (p.pid, p.cpu_ticks))
            .collect();
        let machine = machine_ticks().unwrap_or_default();
        CpuMeter {
            start,
            last: HashMap::new(),
            machine_start: machine,
            machine_last: machine,
        }
    }

    /// Takes `procs`, every process of the benchmark as just read.
    pub fn sample(&mut self, procs: &[Proc]) {
        self.last = procs
            .iter()
            .map(|p| (p.pid, (p.name.clone(), p.cpu_ticks)))
            .collect();
        if let Some(m) = machine_ticks() {
            self.machine_last = m;
        }
    }

    pub fn usage(&self) -> CpuUse {
        let mut by_process: BTreeMap<String, f64> = BTreeMap::new();
        for (pid, (name, t)) in &self.last {
            let since = t.saturating_sub(self.start.get(pid).copied().unwrap_or(0));
            *by_process.entry(name.clone()).or_default() += since as f64 / TICKS_PER_SEC;
        }
        CpuUse {
            by_process,
            machine_busy_s: self.machine_last.0.saturating_sub(self.machine_start.0) as f64
                / TICKS_PER_SEC,
            machine_total_s: self.machine_last.1.saturating_sub(self.machine_start.1) as f64
                / TICKS_PER_SEC,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_names() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 1 0 5 0 0";
        let (name, rest) = parse_stat(line).unwrap();
        assert_eq!(name, "a (b) c");
        assert_eq!(rest[1], 7, "the parent");
        assert_eq!(rest[11] + rest[12], 380, "user and system ticks");
        assert_eq!(cpu_of(&rest), Some(380), "no waited-for children yet");
        let waited = "9 (postgres) S 1 9 9 0 -1 0 0 0 0 0 250 130 70 30 20 0 1 0 5 0 0";
        let (_, rest) = parse_stat(waited).unwrap();
        assert_eq!(cpu_of(&rest), Some(480), "with the children it waited for");
        assert_eq!(cpu_of(&rest[..10]), None, "a cut-off line");
    }

    #[test]
    fn machine_time_leaves_idle_and_iowait_out_of_busy() {
        let (busy, total) = parse_machine("cpu  100 5 50 800 40 3 2 0 0 0").unwrap();
        assert_eq!(total, 1000);
        assert_eq!(busy, 160);
        assert!(parse_machine("intr 1 2 3").is_none());
    }

    #[test]
    fn the_meter_counts_this_process_from_its_start() {
        let mut meter = CpuMeter::start();
        // Some work of this process, until it shows: /proc counts in ticks,
        // and a loaded machine may give this thread few of them at first.
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let (u, me) = loop {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(30);
            while std::time::Instant::now() < until {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            meter.sample(&processes());
            let u = meter.usage();
            let me = u.by_process.get(SELF_NAME).copied().unwrap_or(-1.0);
            if me > 0.0 || std::time::Instant::now() > give_up {
                break (u, me);
            }
        };
        std::hint::black_box(x);
        assert!(me > 0.0 && me < 30.0, "{u:?}");
        assert!(u.machine_total_s >= u.machine_busy_s && u.machine_busy_s > 0.0);
    }
}
