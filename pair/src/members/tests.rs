//! The member log with real Ed25519 keys: who counts, forgeries, removal, merging in any order.

use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::*;

const FOLDER: [u8; 16] = [7; 16];
const T0: u64 = 1_750_000_000;

struct Device {
    key: Ed25519KeyPair,
}

impl Device {
    fn new() -> Device {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Device {
            key: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        }
    }
    fn pk(&self) -> [u8; 32] {
        self.key.public_key().as_ref().try_into().unwrap()
    }
    fn id(&self) -> [u8; 32] {
        device_id(&self.pk())
    }
    fn sign(&self) -> impl FnOnce(&[u8]) -> [u8; 64] + '_ {
        |msg| self.key.sign(msg).as_ref().try_into().unwrap()
    }
    fn append(&self, log: &mut MemberLog, op: Op) -> Signed {
        log.append(self.pk(), op, T0, self.sign()).unwrap()
    }
    fn found(&self, log: &mut MemberLog) -> Signed {
        self.append(
            log,
            Op::Found {
                folder: FOLDER,
                name: "founder".into(),
            },
        )
    }
    fn add(&self, log: &mut MemberLog, other: &Device, name: &str) -> Signed {
        self.append(
            log,
            Op::Add {
                device: other.id(),
                name: name.into(),
            },
        )
    }
    fn remove(&self, log: &mut MemberLog, other: &Device) -> Signed {
        self.append(log, Op::Remove { device: other.id() })
    }
}

fn ids(log: &MemberLog) -> Vec<[u8; 32]> {
    let mut v: Vec<[u8; 32]> = log.members().iter().map(|m| m.device).collect();
    v.sort_unstable();
    v
}

fn sorted(mut v: Vec<[u8; 32]>) -> Vec<[u8; 32]> {
    v.sort_unstable();
    v
}

/// Gives `to` everything `from` holds.
fn sync(from: &MemberLog, to: &mut MemberLog) {
    let (_, err) = to.insert_all(from.entries());
    assert_eq!(err, None);
}

#[test]
fn the_founder_adds_and_everyone_sees_who_added_whom() {
    let (a, b, c) = (Device::new(), Device::new(), Device::new());
    let mut log = MemberLog::new(FOLDER);
    assert!(!log.is_founded());
    a.found(&mut log);
    a.add(&mut log, &b, "laptop");
    b.add(&mut log, &c, "phone");
    assert_eq!(ids(&log), sorted(vec![a.id(), b.id(), c.id()]));
    let phone = log.members().iter().find(|m| m.device == c.id()).unwrap();
    assert_eq!((phone.name.as_str(), phone.added_by), ("phone", b.id()));
    let founder = log.members().iter().find(|m| m.device == a.id()).unwrap();
    assert_eq!(founder.added_by, a.id());

    // Another device gets the same list from the entries alone.
    let mut other = MemberLog::new(FOLDER);
    sync(&log, &mut other);
    assert_eq!(ids(&other), ids(&log));
    assert_eq!(other.heads(), log.heads());
}

#[test]
fn forged_and_foreign_entries_count_for_nothing() {
    let (a, b, stranger) = (Device::new(), Device::new(), Device::new());
    let mut log = MemberLog::new(FOLDER);
    a.found(&mut log);

    // A stranger signs "a adds me": the author key is a's, the signature is not.
    let entry = Entry {
        parents: log.heads(),
        author_key: a.pk(),
        at_unix: T0,
        op: Op::Add {
            device: stranger.id(),
            name: "me".into(),
        },
    };
    let forged = Signed::new(&entry, stranger.sign());
    assert_eq!(log.insert(forged), Err(InsertError::BadSignature));
    // Valid signature, body changed afterwards.
    let mut tampered = a.add(&mut MemberLog::new(FOLDER), &b, "x");
    tampered.body[1] ^= 1;
    assert!(log.insert(tampered).is_err());

    // A stranger adds itself on top of the log, signed properly: not a member, so no effect.
    let mut copy = log.clone();
    stranger.add(&mut copy, &stranger, "me");
    sync(&copy, &mut log);
    assert_eq!(ids(&log), vec![a.id()]);
    // Its own founding entry for this folder loses to the older root... or wins by id? Either
    // way only one root counts, and one founder.
    let mut rival = MemberLog::new(FOLDER);
    stranger.found(&mut rival);
    sync(&rival, &mut log);
    assert_eq!(log.members().len(), 1);

    // A founding entry for another folder is refused outright.
    let mut elsewhere = MemberLog::new([9; 16]);
    let e = elsewhere
        .append(
            a.pk(),
            Op::Found {
                folder: [9; 16],
                name: "x".into(),
            },
            T0,
            a.sign(),
        )
        .unwrap();
    assert_eq!(log.insert(e), Err(InsertError::OtherFolder));
}

#[test]
fn a_removed_device_stays_out_and_cannot_add_anyone_after() {
    let (a, b, c, d) = (Device::new(), Device::new(), Device::new(), Device::new());
    let mut on_a = MemberLog::new(FOLDER);
    a.found(&mut on_a);
    a.add(&mut on_a, &b, "b");
    a.add(&mut on_a, &c, "c");
    let mut on_c = on_a.clone();
    let mut on_b = on_a.clone();

    a.remove(&mut on_a, &c);
    assert!(!on_a.is_member(&c.id()) && on_a.is_removed(&c.id()));

    // c, not yet told (or pretending not to be), adds d on top of what it had seen.
    c.add(&mut on_c, &d, "d");
    assert!(
        on_c.is_member(&d.id()),
        "in c's own view, before it hears of its removal"
    );
    sync(&on_c, &mut on_a);
    assert!(
        !on_a.is_member(&d.id()),
        "the remover had not seen it: it counts for nothing"
    );
    assert!(!on_a.is_member(&c.id()));

    // b was offline through all of it and learns in any order.
    sync(&on_c, &mut on_b);
    sync(&on_a, &mut on_b);
    assert_eq!(ids(&on_b), ids(&on_a));
    assert_eq!(ids(&on_b), sorted(vec![a.id(), b.id()]));

    // Adding c back does not bring it back.
    b.add(&mut on_b, &c, "c again");
    assert!(!on_b.is_member(&c.id()));
}

#[test]
fn two_members_removing_each_other_are_both_out() {
    let (a, b, c) = (Device::new(), Device::new(), Device::new());
    let mut on_a = MemberLog::new(FOLDER);
    a.found(&mut on_a);
    a.add(&mut on_a, &b, "b");
    a.add(&mut on_a, &c, "c");
    let mut on_b = on_a.clone();
    let mut on_c = on_a.clone();
    b.remove(&mut on_b, &c);
    c.remove(&mut on_c, &b);
    sync(&on_b, &mut on_a);
    sync(&on_c, &mut on_a);
    assert_eq!(ids(&on_a), vec![a.id()]);
}

#[test]
fn entries_wait_for_their_parents() {
    let (a, b, c) = (Device::new(), Device::new(), Device::new());
    let mut log = MemberLog::new(FOLDER);
    let found = a.found(&mut log);
    let add_b = a.add(&mut log, &b, "b");
    let add_c = b.add(&mut log, &c, "c");
    let mut late = MemberLog::new(FOLDER);
    assert_eq!(late.insert(add_c.clone()), Ok(true));
    assert_eq!(late.insert(add_b), Ok(true));
    assert!(late.members().is_empty(), "no root yet");
    assert_eq!(late.insert(found), Ok(true));
    assert_eq!(ids(&late), ids(&log));
    assert_eq!(late.insert(add_c), Ok(false), "already held");
}

#[test]
fn the_log_is_bounded() {
    let a = Device::new();
    let mut log = MemberLog::new(FOLDER);
    a.found(&mut log);
    // A chain of removals of made-up devices, built outside and taken in one go.
    let mut parent = log.heads()[0];
    let mut chain = Vec::new();
    for i in 0..MAX_ENTRIES as u64 {
        let entry = Entry {
            parents: vec![parent],
            author_key: a.pk(),
            at_unix: T0 + i,
            op: Op::Remove {
                device: device_id(&[(i % 251) as u8; 32]),
            },
        };
        let s = Signed::new(&entry, a.sign());
        parent = s.id();
        chain.push(s);
    }
    let started = std::time::Instant::now();
    let (new, err) = log.insert_all(chain);
    assert_eq!(new, MAX_ENTRIES - 1);
    assert_eq!(err, Some(InsertError::Full));
    assert!(log.is_member(&a.id()));
    // Deciding over a full log is cheap enough to do after every entry.
    let one = std::time::Instant::now();
    log.recompute_for_test();
    assert!(
        one.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        one.elapsed()
    );
    let _ = started;
}

/// One step of a random history: device `by` adds or removes device `whom`, or two devices
/// exchange logs.
#[derive(Debug, Clone)]
enum Step {
    Add { by: usize, whom: usize },
    Remove { by: usize, whom: usize },
    Sync { from: usize, to: usize },
}

fn arb_step(n: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..n, 0..n).prop_map(|(by, whom)| Step::Add { by, whom }),
        (0..n, 0..n).prop_map(|(by, whom)| Step::Remove { by, whom }),
        (0..n, 0..n).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any history on four devices: once every log has every entry, all agree on the members,
    /// whatever order the entries arrived in; nobody removed is a member; and every member was
    /// added by the founder or by a device that was a member when it added it. Members rekey
    /// as the daemon does (when a removal is not covered); once everything is delivered and the
    /// members have rekeyed, all choose the same key, and one that covers every removal.
    #[test]
    fn every_device_converges_on_the_same_members(
        steps in proptest::collection::vec(arb_step(4), 1..40),
    ) {
        let devs: Vec<Device> = (0..4).map(|_| Device::new()).collect();
        let mut logs: Vec<MemberLog> = (0..4).map(|_| MemberLog::new(FOLDER)).collect();
        devs[0].found(&mut logs[0]);
        let mut next_key = 1u64;
        let mut rekey = |dev: &Device, log: &mut MemberLog| {
            if log.is_member(&dev.id()) && log.write_key(|_| true) == WriteKey::NeedNew {
                dev.append(log, Op::Rekey { key_id: next_key });
                next_key += 1;
            }
        };
        for s in &steps {
            match *s {
                Step::Add { by, whom } => {
                    if logs[by].is_member(&devs[by].id()) {
                        devs[by].add(&mut logs[by], &devs[whom], "n");
                    }
                }
                Step::Remove { by, whom } => {
                    if logs[by].is_member(&devs[by].id()) {
                        devs[by].remove(&mut logs[by], &devs[whom]);
                        rekey(&devs[by], &mut logs[by]);
                    }
                }
                Step::Sync { from, to } => {
                    let entries = logs[from].entries();
                    logs[to].insert_all(entries);
                    rekey(&devs[to], &mut logs[to]);
                }
            }
        }
        let mut all = MemberLog::new(FOLDER);
        for l in &logs {
            all.insert_all(l.entries());
        }
        let want = ids(&all);
        for (i, l) in logs.iter_mut().enumerate() {
            // Delivered in reverse order this time.
            let mut entries = all.entries();
            entries.reverse();
            l.insert_all(entries);
            prop_assert_eq!(ids(l), want.clone(), "device {}", i);
            prop_assert_eq!(l.heads(), all.heads());
        }
        for m in all.members() {
            prop_assert!(!all.is_removed(&m.device));
        }

        // The members that see an uncovered removal rekey at once; then everything is
        // delivered again.
        for (d, l) in devs.iter().zip(logs.iter_mut()) {
            rekey(d, l);
        }
        for l in &logs {
            all.insert_all(l.entries());
        }
        let chosen = all.write_key(|_| true);
        if !all.members().is_empty() {
            prop_assert!(chosen != WriteKey::NeedNew, "a member made a covering key");
        }
        for (i, l) in logs.iter_mut().enumerate() {
            l.insert_all(all.entries());
            prop_assert_eq!(l.write_key(|_| true), chosen, "device {}", i);
            prop_assert_eq!(l.key_ids(), all.key_ids());
        }
    }

    /// Arbitrary bytes never panic the decoder or the log.
    #[test]
    fn hostile_bytes_are_refused_cleanly(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        sig in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut log = MemberLog::new(FOLDER);
        let r = log.insert(Signed { body, sig });
        prop_assert!(r.is_err());
        prop_assert!(log.members().is_empty());
    }
}

#[test]
fn a_removal_needs_a_new_key_and_a_rekey_after_it_covers_it() {
    let (a, b, c) = (Device::new(), Device::new(), Device::new());
    let mut log = MemberLog::new(FOLDER);
    a.found(&mut log);
    a.add(&mut log, &b, "b");
    a.add(&mut log, &c, "c");
    let all = |_: u64| true;
    assert_eq!(log.write_key(all), WriteKey::First, "nobody removed");
    a.remove(&mut log, &c);
    assert_eq!(log.write_key(all), WriteKey::NeedNew);
    assert_eq!(
        log.removals(),
        &[Removal {
            device: c.id(),
            name: "c".into(),
            by: a.id(),
            at_unix: T0
        }]
    );
    a.append(&mut log, Op::Rekey { key_id: 11 });
    assert_eq!(log.write_key(all), WriteKey::Later(11));
    assert_eq!(
        log.write_key(|_| false),
        WriteKey::NeedNew,
        "a key not held yet"
    );
    assert_eq!(log.key_ids(), vec![11]);

    // B learns everything and removes nobody: it writes under the same key.
    let mut at_b = MemberLog::new(FOLDER);
    sync(&log, &mut at_b);
    assert_eq!(at_b.write_key(all), WriteKey::Later(11));
}

#[test]
fn concurrent_removals_need_a_key_that_postdates_both() {
    let (a, b, c, d) = (Device::new(), Device::new(), Device::new(), Device::new());
    let mut at_a = MemberLog::new(FOLDER);
    a.found(&mut at_a);
    a.add(&mut at_a, &b, "b");
    a.add(&mut at_a, &c, "c");
    a.add(&mut at_a, &d, "d");
    let mut at_b = MemberLog::new(FOLDER);
    sync(&at_a, &mut at_b);
    // A removes C and rekeys (the key may reach D); B removes D and rekeys (it may reach C).
    a.remove(&mut at_a, &c);
    a.append(&mut at_a, Op::Rekey { key_id: 21 });
    b.remove(&mut at_b, &d);
    b.append(&mut at_b, Op::Rekey { key_id: 23 });
    let all = |_: u64| true;
    assert_eq!(at_a.write_key(all), WriteKey::Later(21));
    sync(&at_b, &mut at_a);
    sync(&at_a, &mut at_b);
    assert_eq!(
        at_a.write_key(all),
        WriteKey::NeedNew,
        "neither key covers both"
    );
    assert_eq!(at_b.write_key(all), WriteKey::NeedNew);
    // Both make one at once: both cover both removals, and both devices pick the same.
    a.append(&mut at_a, Op::Rekey { key_id: 31 });
    b.append(&mut at_b, Op::Rekey { key_id: 33 });
    sync(&at_b, &mut at_a);
    sync(&at_a, &mut at_b);
    let chosen = at_a.write_key(all);
    assert!(matches!(chosen, WriteKey::Later(31 | 33)), "{chosen:?}");
    assert_eq!(at_b.write_key(all), chosen, "the same choice on both");
    // Until the other's key arrives, each may use its own: both cover both removals.
    assert_eq!(at_a.write_key(|id| id == 31), WriteKey::Later(31));
}

#[test]
fn a_removed_device_cannot_rekey_and_the_first_key_cannot_come_back() {
    let (a, b, c) = (Device::new(), Device::new(), Device::new());
    let mut at_a = MemberLog::new(FOLDER);
    a.found(&mut at_a);
    a.add(&mut at_a, &b, "b");
    a.add(&mut at_a, &c, "c");
    let mut at_c = MemberLog::new(FOLDER);
    sync(&at_a, &mut at_c);
    a.remove(&mut at_a, &c);
    a.append(&mut at_a, Op::Rekey { key_id: 41 });
    // C, not yet knowing, rekeys on its own (a key it would know): unseen by the remover, so
    // it counts for nothing.
    c.append(&mut at_c, Op::Rekey { key_id: 43 });
    sync(&at_c, &mut at_a);
    let all = |_: u64| true;
    assert_eq!(at_a.write_key(all), WriteKey::Later(41));
    assert_eq!(at_a.key_ids(), vec![41]);
    // A member writing a "rekey" to the first key: never chosen.
    b.append(&mut at_a, Op::Rekey { key_id: 0 });
    assert_eq!(at_a.write_key(all), WriteKey::Later(41));
}
