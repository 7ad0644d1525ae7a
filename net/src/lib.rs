//! Device identity, transport and replication (arrives with the sync issue).
