//! This node's clock, for the times written into commands.

/// This node's clock in milliseconds since the epoch: the time a proposer
/// writes into a command (apply never reads a clock).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
