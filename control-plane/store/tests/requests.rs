//! Request ids through the state machine itself: a retried command is
//! answered, not re-applied, until the id falls out of the retention window.

use ndc_store::keys::{REQUEST_PRUNE_EVERY, REQUEST_RETENTION};
use ndc_store::{Command, Op, Response, StateMachine, Txn, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload,
    }
}

fn put_once(id: &str, value: &str) -> EntryPayload<TypeConfig> {
    EntryPayload::Normal(Command::Once {
        request_id: id.into(),
        command: Box::new(Command::Txn(Txn {
            compares: vec![],
            ops: vec![Op::Put {
                key: "/k".into(),
                value: value.as_bytes().to_vec(),
            }],
        })),
    })
}

async fn apply(sm: &mut StateMachine, e: Entry<TypeConfig>) -> Response {
    sm.apply([e]).await.expect("apply").remove(0)
}

#[tokio::test]
async fn a_request_id_is_remembered_then_forgotten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ndc_store::open(dir.path(), 1000).expect("open");
    let mut sm = store.state_machine;
    let reader = store.reader;

    let first = apply(&mut sm, entry(5, put_once("request-0001", "a"))).await;
    assert!(
        matches!(first, Response::Applied { revision: 5, .. }),
        "{first:?}"
    );
    // The retry, even with another value, gets the first answer.
    let again = apply(&mut sm, entry(6, put_once("request-0001", "b"))).await;
    assert_eq!(again, first);
    let (obj, revision) = reader.get("/k").expect("get");
    assert_eq!((obj.map(|o| o.value), revision), (Some(b"a".to_vec()), 5));

    // Far later, at a prune point past the retention window, it is forgotten.
    let later = (REQUEST_RETENTION / REQUEST_PRUNE_EVERY + 1) * REQUEST_PRUNE_EVERY;
    assert!(later - REQUEST_RETENTION > 5);
    apply(&mut sm, entry(later, EntryPayload::Blank)).await;
    let reused = apply(&mut sm, entry(later + 1, put_once("request-0001", "c"))).await;
    assert!(
        matches!(reused, Response::Applied { revision, .. } if revision == later + 1),
        "{reused:?}"
    );
    let (obj, _) = reader.get("/k").expect("get");
    assert_eq!(obj.map(|o| o.value), Some(b"c".to_vec()));
}
