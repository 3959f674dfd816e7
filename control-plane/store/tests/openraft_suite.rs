//! openraft's own storage conformance suite, run against the RocksDB log
//! store and state machine.

use ndc_store::{LogStore, StateMachine, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let store = ndc_store::open(dir.path(), 1000)
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        Ok((dir, store.log, store.state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
