//! What each service may do on the broker, made from its [`Role`]: write
//! the topic it publishes on and the dead-letter topic, read the topics it
//! consumes, and use its own consumer group. Nothing else: no other topic
//! or group, no creating or deleting topics, no cluster operations. With
//! `allow.everyone.if.no.acl.found=false` on the broker, whatever is not
//! granted here is refused.

use shipshape_proto::{DEAD_LETTER_TOPIC, Role};

/// The kind of thing a grant is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Topic,
    Group,
}

/// What a grant allows. Both imply `DESCRIBE`, which a client needs to see
/// the topic's metadata; `WRITE` also implies the idempotent producer's
/// `IDEMPOTENT_WRITE` (KIP-679).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
}

/// One ALLOW rule, from any host, on a resource named exactly `name`
/// (never a prefix: a service's rights must not grow with new topics).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// Kafka's principal: `User:<name>`.
    pub principal: String,
    pub resource: Resource,
    pub name: String,
    pub operation: Operation,
}

/// The login name of `service` in a deployment whose topics start with
/// `prefix`: stacks sharing one broker then have principals of their own.
pub fn username(prefix: &str, service: &str) -> String {
    format!("{prefix}{service}")
}

/// The consumer group `service` joins unless `KAFKA_GROUP_ID` says
/// otherwise.
pub fn group_id(prefix: &str, service: &str) -> String {
    format!("{prefix}shipshape-{service}")
}

/// Everything `role`'s service may do, in a deployment whose topics and
/// groups start with `prefix`.
pub fn grants(role: &Role, prefix: &str) -> Vec<Grant> {
    let principal = format!("User:{}", username(prefix, role.service));
    let grant = |resource, name: String, operation| Grant {
        principal: principal.clone(),
        resource,
        name,
        operation,
    };
    let mut grants = vec![
        grant(
            Resource::Topic,
            format!("{prefix}{}", role.publishes),
            Operation::Write,
        ),
        grant(
            Resource::Topic,
            format!("{prefix}{DEAD_LETTER_TOPIC}"),
            Operation::Write,
        ),
        grant(
            Resource::Group,
            group_id(prefix, role.service),
            Operation::Read,
        ),
    ];
    let mut read: Vec<&str> = role.consumes.iter().chain(role.replays).copied().collect();
    read.sort_unstable();
    read.dedup();
    grants.extend(
        read.into_iter()
            .map(|topic| grant(Resource::Topic, format!("{prefix}{topic}"), Operation::Read)),
    );
    grants
}

#[cfg(test)]
mod tests {
    use shipshape_proto::{
        INVENTORY_EVENTS, ORDER_EVENTS, ORDER_ROLE, PAYMENT_EVENTS, PAYMENT_ROLE, ROLES,
        SHIPPING_EVENTS,
    };

    use super::*;

    fn allowed(role: &Role, resource: Resource, name: &str, operation: Operation) -> bool {
        grants(role, "t1.").iter().any(|grant| {
            grant.resource == resource && grant.name == name && grant.operation == operation
        })
    }

    #[test]
    fn each_topic_has_exactly_one_writer_its_publisher() {
        for topic in [
            ORDER_EVENTS,
            INVENTORY_EVENTS,
            PAYMENT_EVENTS,
            SHIPPING_EVENTS,
        ] {
            let writers: Vec<&str> = ROLES
                .iter()
                .filter(|role| {
                    allowed(
                        role,
                        Resource::Topic,
                        &format!("t1.{topic}"),
                        Operation::Write,
                    )
                })
                .map(|role| role.service)
                .collect();
            assert_eq!(
                writers,
                [shipshape_proto::producer_of(topic).unwrap_or("?")]
            );
        }
    }

    #[test]
    fn payment_reads_what_it_consumes_and_writes_only_its_own_topic_and_dead_letters() {
        let role = &PAYMENT_ROLE;
        assert!(allowed(
            role,
            Resource::Topic,
            "t1.order.events",
            Operation::Read
        ));
        assert!(!allowed(
            role,
            Resource::Topic,
            "t1.order.events",
            Operation::Write
        ));
        assert!(allowed(
            role,
            Resource::Topic,
            "t1.payment.events",
            Operation::Write
        ));
        assert!(allowed(
            role,
            Resource::Topic,
            "t1.dead-letters",
            Operation::Write
        ));
        assert!(!allowed(
            role,
            Resource::Topic,
            "t1.dead-letters",
            Operation::Read
        ));
        assert!(allowed(
            role,
            Resource::Group,
            "t1.shipshape-payment",
            Operation::Read
        ));
        assert!(!allowed(
            role,
            Resource::Group,
            "t1.shipshape-order",
            Operation::Read
        ));
    }

    #[test]
    fn order_reads_every_event_topic_to_rebuild_its_timelines_and_payment_does_not_read_its_own() {
        for topic in [
            ORDER_EVENTS,
            INVENTORY_EVENTS,
            PAYMENT_EVENTS,
            SHIPPING_EVENTS,
        ] {
            let name = format!("t1.{topic}");
            assert!(allowed(
                &ORDER_ROLE,
                Resource::Topic,
                &name,
                Operation::Read
            ));
        }
        let reads = grants(&ORDER_ROLE, "t1.")
            .into_iter()
            .filter(|grant| grant.operation == Operation::Read && grant.resource == Resource::Topic)
            .count();
        assert_eq!(reads, 4, "each topic is granted once");
        assert!(!allowed(
            &PAYMENT_ROLE,
            Resource::Topic,
            "t1.payment.events",
            Operation::Read
        ));
    }

    #[test]
    fn principals_and_groups_carry_the_deployments_prefix() {
        let grants = grants(&ORDER_ROLE, "t1.");
        assert!(
            grants
                .iter()
                .all(|grant| grant.principal == "User:t1.order")
        );
        assert!(grants.iter().all(|grant| grant.name.starts_with("t1.")));
        assert_eq!(username("", "order"), "order");
        assert_eq!(group_id("", "order"), "shipshape-order");
    }
}
