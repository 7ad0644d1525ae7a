//! Invitations and the pairing handshake (being written).
