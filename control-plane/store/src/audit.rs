//! Checking the hash-chained audit log as it is stored: every record in
//! key order, each hash, each link, and the head. The hashing rule itself is
//! the core's ([`ndc_core::domain::record_hash`]).

use serde::{Deserialize, Serialize};

use ndc_core::domain::{record_hash, AuditHead, AuditRecord};

use crate::keys::audit_key;

/// The outcome of checking the chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    /// The first record found altered, missing or out of place, and why.
    pub problem: Option<(u64, String)>,
}

/// Walks the records in order and checks each hash, each link and the head.
pub fn verify_chain(records: &[(String, Vec<u8>)], head: Option<&AuditHead>) -> VerifyReport {
    let mut prev = AuditHead::default();
    let mut checked = 0;
    for (key, bytes) in records {
        let expected_seq = prev.seq + 1;
        let r: AuditRecord = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                return VerifyReport {
                    checked,
                    problem: Some((expected_seq, format!("record {key} cannot be read: {e}"))),
                }
            }
        };
        if key != &audit_key(r.seq) {
            return VerifyReport {
                checked,
                problem: Some((
                    expected_seq,
                    format!("record stored at {key} says it is number {}", r.seq),
                )),
            };
        }
        if r.seq != expected_seq {
            return VerifyReport {
                checked,
                problem: Some((
                    expected_seq,
                    format!("record {expected_seq} is missing (next found is {})", r.seq),
                )),
            };
        }
        if r.prev_hash != prev.hash {
            return VerifyReport {
                checked,
                problem: Some((
                    r.seq,
                    "its link to the previous record does not match".into(),
                )),
            };
        }
        if record_hash(&r) != r.hash {
            return VerifyReport {
                checked,
                problem: Some((
                    r.seq,
                    "its content does not match its hash: it was altered".into(),
                )),
            };
        }
        checked += 1;
        prev = AuditHead {
            seq: r.seq,
            hash: r.hash,
        };
    }
    if let Some(h) = head {
        if h.seq != prev.seq || h.hash != prev.hash {
            return VerifyReport {
                checked,
                problem: Some((
                    prev.seq + 1,
                    format!(
                        "the chain ends at record {} but the head says {}: records were removed",
                        prev.seq, h.seq
                    ),
                )),
            };
        }
    }
    VerifyReport {
        checked,
        problem: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndc_core::domain::AuditEntry;

    /// Record `seq` of a test chain, linked to `prev`.
    fn rec(seq: u64, prev: &str) -> AuditRecord {
        let e = AuditEntry {
            revision: seq * 10,
            at_ms: 1,
            actor: "op".into(),
            action: "tenant.create".into(),
            target: format!("t{seq}"),
            decision: None,
        };
        AuditHead {
            seq: seq - 1,
            hash: prev.into(),
        }
        .chain(e)
    }

    fn chain(n: u64) -> (Vec<(String, Vec<u8>)>, AuditHead) {
        let mut out = Vec::new();
        let mut prev = String::new();
        for s in 1..=n {
            let r = rec(s, &prev);
            prev = r.hash.clone();
            out.push((audit_key(s), serde_json::to_vec(&r).unwrap()));
        }
        (out, AuditHead { seq: n, hash: prev })
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (records, head) = chain(5);
        assert_eq!(
            verify_chain(&records, Some(&head)),
            VerifyReport {
                checked: 5,
                problem: None
            }
        );
    }

    #[test]
    fn alterations_are_found_at_the_first_bad_record() {
        let (mut records, head) = chain(5);
        let mut r: AuditRecord = serde_json::from_slice(&records[2].1).unwrap();
        r.actor = "someone else".into();
        records[2].1 = serde_json::to_vec(&r).unwrap();
        let rep = verify_chain(&records, Some(&head));
        assert_eq!(rep.checked, 2);
        assert_eq!(rep.problem.as_ref().map(|p| p.0), Some(3));

        let (mut records, head) = chain(5);
        records.remove(1);
        assert_eq!(
            verify_chain(&records, Some(&head)).problem.map(|p| p.0),
            Some(2)
        );

        let (mut records, head) = chain(5);
        records.pop();
        assert!(verify_chain(&records, Some(&head))
            .problem
            .is_some_and(|p| p.1.contains("removed")));
    }
}
