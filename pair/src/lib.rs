//! Invitations and the pairing handshake (arrives with the sync issue).
