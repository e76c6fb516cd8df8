//! Tests of telling transient handler failures from the others.

use super::*;

#[test]
fn only_outages_are_transient() {
    assert!(HandleError::Database(sqlx::Error::PoolTimedOut).is_transient());
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert!(HandleError::Database(sqlx::Error::Io(io)).is_transient());
    assert!(!HandleError::Database(sqlx::Error::RowNotFound).is_transient());
    assert!(!HandleError::Other("OrderPlaced without a total".into()).is_transient());
}
