//! Tests of capping a dead letter's reason.

use super::*;

#[test]
fn reasons_are_capped_on_a_character_boundary() {
    assert_eq!(capped("short", 1024), "short");
    let long = "é".repeat(600);
    let cut = capped(&long, 1024);
    assert!(cut.len() <= 1024);
    assert_eq!(cut.chars().count(), 512);
}
