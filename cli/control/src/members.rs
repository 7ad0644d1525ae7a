//! The folder's member list on the control socket: [`Members`] lists it, [`Remove`] takes a
//! device out of the folder for every member.

use serde::{Deserialize, Serialize};

/// The members of the folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members;

/// Remove a device from the folder: every member refuses it from then on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remove {
    /// Its id, a unique prefix of its id, or its name.
    pub id: String,
}

/// `members`: every member, who added it, and how it is connected to this device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MembersReply {
    /// Whether the list has been founded (a device that joined and has not heard from any
    /// member yet has an empty list).
    pub founded: bool,
    /// The members, founder first.
    pub members: Vec<MemberInfo>,
    /// How many keys the folder has had that this device holds: 1, plus one per rotation
    /// (each removal of a member makes a new key).
    #[serde(default)]
    pub keys: u64,
    /// The id of the key new files are sealed under (16 hex digits; all zeros: the folder's
    /// first key).
    #[serde(default)]
    pub current_key: String,
}

/// One member in `members`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its device id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Who added it (its own id for the founder).
    pub added_by: String,
    /// That device's name, when it is a member.
    pub added_by_name: String,
    /// When it was added, by the adder's clock (unix seconds).
    pub added_unix: u64,
    /// Whether it is this device.
    pub this_device: bool,
    /// Whether this device has a link to it now.
    pub connected: bool,
    /// When this device last had a link to it (unix seconds), if ever.
    pub last_seen_unix: Option<u64>,
    /// The link's path, while connected (as in `status`).
    #[serde(default)]
    pub path: Option<crate::PathKind>,
    /// The link's quality, while connected (as in `status`).
    #[serde(default)]
    pub quality: Option<crate::Quality>,
    /// The link's round trip in milliseconds, while connected.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_keep_their_wire_form() {
        let r = MembersReply {
            founded: true,
            members: vec![MemberInfo {
                id: "AAAAAAA".into(),
                name: "laptop".into(),
                added_by: "BBBBBBB".into(),
                added_by_name: "desk".into(),
                added_unix: 5,
                this_device: false,
                connected: true,
                last_seen_unix: Some(6),
                path: Some(crate::PathKind::Lan),
                quality: Some(crate::Quality::Excellent),
                rtt_ms: Some(0.5),
            }],
            keys: 2,
            current_key: "00000000000000ab".into(),
        };
        let wire = json!({"founded": true, "members": [{"id": "AAAAAAA", "name": "laptop",
            "added_by": "BBBBBBB", "added_by_name": "desk", "added_unix": 5,
            "this_device": false, "connected": true, "last_seen_unix": 6,
            "path": "lan", "quality": "excellent", "rtt_ms": 0.5}],
            "keys": 2, "current_key": "00000000000000ab"});
        assert_eq!(serde_json::to_value(&r).unwrap(), wire);
        assert_eq!(serde_json::from_value::<MembersReply>(wire).unwrap(), r);
        let req: crate::Request =
            serde_json::from_str(r#"{"cmd":"remove","id":"laptop"}"#).unwrap();
        assert_eq!(
            req,
            Remove {
                id: "laptop".into()
            }
            .into()
        );
    }
}
