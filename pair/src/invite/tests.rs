use std::net::{Ipv6Addr, SocketAddrV6};

use proptest::prelude::*;

use super::*;

const NOW: u64 = 1_750_000_000;

fn typical() -> Invitation {
    Invitation {
        version: INVITE_VERSION,
        inviter: [0xA5; 32],
        inviter_name: "Alice's work laptop!".to_owned(), // 20 characters
        addrs: vec![
            "192.168.1.23:41641".parse().unwrap(),
            "203.0.113.9:41641".parse().unwrap(),
            "[2001:db8:85a3::8a2e:370:7334]:41641".parse().unwrap(),
        ],
        rendezvous: Some("rv.fybrk.example:7000".parse().unwrap()),
        folder: [0x3C; 16],
        secret: [0x77; 16],
        expires_unix: NOW + INVITE_TTL_SECS,
    }
}

#[test]
fn typical_round_trip_in_any_case_and_spacing() {
    let inv = typical();
    let text = inv.encode();
    assert!(text.starts_with("fybrk1:"));
    assert_eq!(Invitation::parse(&text, NOW).unwrap(), inv);
    assert_eq!(Invitation::parse(&inv.encode_qr(), NOW).unwrap(), inv);
    assert_eq!(Invitation::parse(&text.to_lowercase(), NOW).unwrap(), inv);
    // Pasted with surrounding blanks, and wrapped by a narrow terminal.
    let (a, b) = text.split_at(40);
    let wrapped = format!("  \n\t{a}\n{b} \r\n");
    assert_eq!(Invitation::parse(&wrapped, NOW).unwrap(), inv);
}

#[test]
fn typical_invitation_makes_a_small_qr_code() {
    let inv = typical();
    for text in [inv.encode_qr(), inv.encode()] {
        let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
            .unwrap();
        let qrcode::Version::Normal(v) = code.version() else {
            panic!("micro QR")
        };
        assert!(v <= 10, "QR version {v} for {} characters", text.len());
    }
    // All upper case, so the QR code is pure alphanumeric mode.
    let qr = inv.encode_qr();
    assert!(qr
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b':'));
}

#[test]
fn new_makes_fresh_secrets_and_normalises() {
    let many: Vec<SocketAddr> = (0..12)
        .map(|i| SocketAddr::from(([10, 0, 0, i], 4000)))
        .collect();
    let scoped = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 7, 3));
    let a = Invitation::new([1; 32], &"x".repeat(50), &many, None, [2; 16], NOW).unwrap();
    let b = Invitation::new([1; 32], "b", &[scoped], None, [2; 16], NOW).unwrap();
    assert_ne!(a.secret, b.secret);
    assert_ne!(a.secret, [0; 16]);
    assert_eq!(a.expires_unix, NOW + INVITE_TTL_SECS);
    assert_eq!(a.addrs.len(), MAX_ADDRS);
    assert_eq!(a.inviter_name.len(), crate::MAX_NAME_LEN);
    assert_eq!(
        b.addrs[0],
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0))
    );
    assert_eq!(Invitation::parse(&a.encode(), NOW).unwrap(), a);
    assert_eq!(Invitation::parse(&b.encode(), NOW).unwrap(), b);
}

#[test]
fn debug_hides_the_secret() {
    let mut inv = typical();
    inv.secret = *b"SUPERSECRETVALUE";
    let shown = format!("{inv:?}");
    assert!(
        !shown.contains("SUPERSECRET") && !shown.contains("83, 85"),
        "{shown}"
    );
    assert!(shown.contains("<hidden>"));
}

#[test]
fn not_an_invitation() {
    for text in [
        "",
        "   ",
        "hello",
        "https://example.com/",
        "syncthing:ABC",
        "fybrk:ABC",
        "fybrkx:A",
    ] {
        let err = Invitation::parse(text, NOW).unwrap_err();
        assert!(
            matches!(err, InviteError::NotAnInvitation),
            "{text:?}: {err:?}"
        );
    }
    let msg = InviteError::NotAnInvitation.to_string();
    assert!(msg.contains("fybrk pair"), "{msg}");
}

#[test]
fn wrong_version_from_prefix_or_body() {
    let err = Invitation::parse("fybrk2:MZXW6YTB", NOW).unwrap_err();
    assert!(
        matches!(err, InviteError::WrongVersion { found: 2 }),
        "{err:?}"
    );
    let mut future = typical();
    future.version = 7;
    let err = Invitation::parse(&future.encode(), NOW).unwrap_err();
    assert!(
        matches!(err, InviteError::WrongVersion { found: 7 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[test]
fn truncated() {
    let text = typical().encode();
    // Cut anywhere past the prefix: always rejected, and a cut well inside is reported as such.
    for cut in PREFIX.len()..text.len() {
        assert!(
            Invitation::parse(&text[..cut], NOW).is_err(),
            "cut at {cut}"
        );
    }
    for cut in [
        PREFIX.len(),
        PREFIX.len() + 10,
        text.len() - 16,
        text.len() - 8,
    ] {
        let err = Invitation::parse(&text[..cut], NOW).unwrap_err();
        assert!(
            matches!(err, InviteError::Truncated),
            "cut at {cut}: {err:?}"
        );
    }
    assert!(InviteError::Truncated
        .to_string()
        .contains("copy the whole line again"));
}

#[test]
fn corrupt() {
    let text = typical().encode();
    let mut bytes = text.into_bytes();
    let i = PREFIX.len() + 30;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let err = Invitation::parse(std::str::from_utf8(&bytes).unwrap(), NOW).unwrap_err();
    assert!(matches!(err, InviteError::Corrupt), "{err:?}");
    // A character outside the base32 alphabet (0, 1, 8 and 9 are not in it).
    bytes[i] = b'0';
    let err = Invitation::parse(std::str::from_utf8(&bytes).unwrap(), NOW).unwrap_err();
    assert!(matches!(err, InviteError::Corrupt), "{err:?}");
    assert!(
        err.to_string().contains("copy the whole line again"),
        "{err}"
    );
}

/// Wraps `body` in a valid checksum and prefix, to reach the checks behind the checksum.
fn with_checksum(body: &[u8]) -> String {
    let mut data = body.to_vec();
    data.extend_from_slice(&checksum(body));
    format!("{PREFIX}{}", base32::encode(&data))
}

#[test]
fn malformed_behind_a_good_checksum() {
    let good = body::write(&typical());
    let mut extra = good.clone();
    extra.push(0);
    // An unknown rendezvous tag (the last byte of a body without a rendezvous).
    let mut no_rv = typical();
    no_rv.rendezvous = None;
    let mut bad_tag = body::write(&no_rv);
    *bad_tag.last_mut().unwrap() = 9;
    let mut short = good.clone();
    short.truncate(good.len() - 3);
    for (what, body) in [("extra", extra), ("tag", bad_tag), ("short", short)] {
        let err = Invitation::parse(&with_checksum(&body), NOW).unwrap_err();
        assert!(matches!(err, InviteError::Malformed(_)), "{what}: {err:?}");
        assert!(err.to_string().contains("fybrk pair"), "{err}");
    }
    // A name with an escape sequence, which `encode` never writes.
    let mut inv = typical();
    inv.inviter_name = String::new();
    let mut body = body::write(&inv);
    let at = 1 + 32 + 16 + 16 + 5; // the name length, after a 5-byte expiry
    body[at] = 3;
    for (k, b) in b"\x1b[H".iter().enumerate() {
        body.insert(at + 1 + k, *b);
    }
    let err = Invitation::parse(&with_checksum(&body), NOW).unwrap_err();
    assert!(matches!(err, InviteError::Malformed(_)), "{err:?}");
}

#[test]
fn expired() {
    let inv = typical();
    let text = inv.encode();
    // Within the clock grace it still parses; past it, it is refused with how long ago.
    assert!(Invitation::parse(&text, inv.expires_unix + PARSE_CLOCK_GRACE_SECS).is_ok());
    let late = inv.expires_unix + 3600;
    let err = Invitation::parse(&text, late).unwrap_err();
    assert!(
        matches!(err, InviteError::Expired { ago_secs: 3600 }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("1 h") && msg.contains("fybrk pair"), "{msg}");
    // `decode` does not look at the clock.
    assert_eq!(Invitation::decode(&text).unwrap(), inv);
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn arb_rendezvous() -> impl Strategy<Value = Option<Rendezvous>> {
    prop_oneof![
        Just(None),
        arb_addr().prop_map(|a| Some(Rendezvous::Addr(a))),
        ("[a-zA-Z0-9.-]{1,60}", any::<u16>())
            .prop_map(|(h, p)| Some(Rendezvous::Host(HostPort::new(&h, p).unwrap()))),
    ]
}

prop_compose! {
    fn arb_invitation()(
        inviter in any::<[u8; 32]>(),
        name in "\\PC{0,40}",
        addrs in proptest::collection::vec(arb_addr(), 0..=MAX_ADDRS),
        rendezvous in arb_rendezvous(),
        folder in any::<[u8; 16]>(),
        secret in any::<[u8; 16]>(),
        expires_unix in prop_oneof![any::<u64>(), NOW..NOW + 10_000],
    ) -> Invitation {
        Invitation {
            version: INVITE_VERSION,
            inviter,
            inviter_name: crate::sanitize_name(&name),
            addrs,
            rendezvous,
            folder,
            secret,
            expires_unix,
        }
    }
}

/// Characters a typo or a bad copy might leave: the alphabet in both cases, digits outside it,
/// punctuation, and a space (which parsing drops, so it acts like a deletion).
const REPLACEMENTS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:-_/+= ";

proptest! {
    #[test]
    fn round_trip(inv in arb_invitation()) {
        prop_assert_eq!(Invitation::decode(&inv.encode()).unwrap(), inv.clone());
        prop_assert_eq!(Invitation::decode(&inv.encode_qr()).unwrap(), inv);
    }

    #[test]
    fn any_single_change_is_rejected(
        inv in arb_invitation(),
        pos in any::<prop::sample::Index>(),
        with in prop::sample::select(REPLACEMENTS),
    ) {
        let text = inv.encode();
        let i = pos.index(text.len());
        let old = text.as_bytes()[i];
        // Changing only the letter case is not a change: parsing ignores case.
        prop_assume!(!old.eq_ignore_ascii_case(&with));
        let mut bytes = text.into_bytes();
        bytes[i] = with;
        let changed = String::from_utf8(bytes).unwrap();
        let result = Invitation::decode(&changed);
        prop_assert!(result.is_err(), "{:?} parsed as {:?}", changed, result);
    }

    #[test]
    fn any_truncation_or_deletion_is_rejected(
        inv in arb_invitation(),
        pos in any::<prop::sample::Index>(),
    ) {
        let text = inv.encode();
        let i = pos.index(text.len());
        prop_assert!(Invitation::decode(&text[..i]).is_err());
        let deleted = format!("{}{}", &text[..i], &text[i + 1..]);
        prop_assert!(Invitation::decode(&deleted).is_err());
    }
}
