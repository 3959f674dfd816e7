//! What this host offers, read from the host itself.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ndc_api::inventory::Capacity;

/// CPU cores, memory from /proc/meminfo and the total size of the data paths.
pub fn measure(data_paths: &[PathBuf]) -> Result<Capacity> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
    let memory_bytes = mem_total(&meminfo).context("no MemTotal in /proc/meminfo")?;
    let mut storage_bytes = 0u64;
    for p in data_paths {
        let st = nix::sys::statvfs::statvfs(p)
            .with_context(|| format!("cannot stat the filesystem of {}", p.display()))?;
        storage_bytes += st.blocks() * st.fragment_size();
    }
    Ok(Capacity {
        cpu_millis: cores * 1000,
        memory_bytes,
        storage_bytes,
    })
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A simulated host: a common 2-socket server.
pub fn simulated() -> Capacity {
    Capacity {
        cpu_millis: 64_000,
        memory_bytes: 512 << 30,
        storage_bytes: 8 << 40,
    }
}

pub fn hostname() -> Result<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read /proc/sys/kernel/hostname")?;
    Ok(raw.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host() {
        assert_eq!(
            mem_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
        assert_eq!(mem_total("nothing"), None);
        let c = measure(&[PathBuf::from("/")]).expect("this host");
        assert!(
            c.cpu_millis >= 1000 && c.memory_bytes > 0 && c.storage_bytes > 0,
            "{c:?}"
        );
        assert!(measure(&[PathBuf::from("/no/such/path")]).is_err());
    }
}
