//! Tests of `install`.

use super::*;

#[test]
fn the_pinned_version_is_the_one_maven_resolves() {
    assert!(
        POM.contains(&format!("<kafka.version>{KAFKA_VERSION}</kafka.version>")),
        "deploy/kafka/pom.xml pins another Kafka than {KAFKA_VERSION}"
    );
}

#[test]
fn java_versions_are_read_from_the_banner() {
    let banner = "openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime Environment";
    assert_eq!(java_version(banner).as_deref(), Some("17.0.15"));
    assert_eq!(major_version("17.0.15"), Some(17));
    assert_eq!(major_version("21"), Some(21));
    assert_eq!(major_version("1.8.0_392"), Some(8));
    assert_eq!(java_version("no quotes here"), None);
}
