//! The ports one stack listens on: the standard ones or free ones, for
//! every replica it may run.

use std::collections::BTreeMap;

use anyhow::Context;

use super::service::all_replicas;
use super::{Replica, Service};

/// The ports one stack uses.
#[derive(Clone, Debug)]
pub(super) struct PortMap {
    pub(super) gateway_http: u16,
    pub(super) psp_http: u16,
    pub(super) broker: u16,
    pub(super) broker_controller: u16,
    /// The gRPC port of every replica of order and inventory.
    grpc: BTreeMap<Replica, u16>,
    /// The ops port of every replica.
    pub(super) ops: BTreeMap<Replica, u16>,
}

/// How far apart the standard ports of two replicas of a service are:
/// order's gRPC is 50051, 50061, 50071, ...; its ops port 9101, 9111, ...
const STANDARD_REPLICA_STRIDE: u16 = 10;

impl PortMap {
    /// The standard ports for `replicas` replicas of each replicated service.
    pub(super) fn standard(replicas: usize) -> Self {
        let mut ports = Self {
            gateway_http: 8080,
            psp_http: 8090,
            broker: 9092,
            broker_controller: 9093,
            grpc: BTreeMap::new(),
            ops: BTreeMap::new(),
        };
        for replica in all_replicas(replicas) {
            let offset = STANDARD_REPLICA_STRIDE * replica.index as u16;
            ports
                .ops
                .insert(replica, replica.service.standard_ops_port() + offset);
            let grpc = match replica.service {
                Service::Order => 50051,
                Service::Inventory => 50052,
                _ => continue,
            };
            ports.grpc.insert(replica, grpc + offset);
        }
        ports
    }

    /// Free ports for `replicas` replicas of each replicated service.
    pub(super) fn free(replicas: usize) -> anyhow::Result<Self> {
        let replicas_list = all_replicas(replicas);
        let grpc_count = replicas_list
            .iter()
            .filter(|r| matches!(r.service, Service::Order | Service::Inventory))
            .count();
        let mut ports = crate::ports::free_ports(4 + replicas_list.len() + grpc_count)
            .context("finding free ports on 127.0.0.1")?
            .into_iter();
        let mut next = || ports.next().context("fewer free ports than asked for");
        let mut map = Self {
            gateway_http: next()?,
            psp_http: next()?,
            broker: next()?,
            broker_controller: next()?,
            grpc: BTreeMap::new(),
            ops: BTreeMap::new(),
        };
        for replica in replicas_list {
            map.ops.insert(replica, next()?);
            if matches!(replica.service, Service::Order | Service::Inventory) {
                map.grpc.insert(replica, next()?);
            }
        }
        Ok(map)
    }

    pub(super) fn ops(&self, replica: Replica) -> u16 {
        self.ops[&replica]
    }

    /// The gRPC port of a replica of order or inventory.
    pub(super) fn grpc(&self, replica: Replica) -> Option<u16> {
        self.grpc.get(&replica).copied()
    }

    /// The gRPC ports of every replica of `service`, first replica first.
    pub(super) fn grpc_of(&self, service: Service) -> Vec<u16> {
        self.grpc
            .iter()
            .filter(|(replica, _)| replica.service == service)
            .map(|(_, port)| *port)
            .collect()
    }

    /// Every port with what it is for.
    pub(super) fn describe(&self) -> Vec<(String, u16)> {
        let mut all = vec![
            ("gateway HTTP".to_owned(), self.gateway_http),
            ("PSP HTTP".to_owned(), self.psp_http),
            ("broker".to_owned(), self.broker),
            ("broker controller".to_owned(), self.broker_controller),
        ];
        all.extend(
            self.grpc
                .iter()
                .map(|(replica, port)| (format!("{replica} gRPC"), *port)),
        );
        all.extend(
            self.ops
                .iter()
                .map(|(replica, port)| (format!("{replica} ops"), *port)),
        );
        all
    }
}
