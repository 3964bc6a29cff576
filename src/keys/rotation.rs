//! The key lifecycle as pure functions of `(now, keys, policy)`.
//!
//! [`plan`] decides what the keyset needs at `now` (first keys, a scheduled
//! or manual rotation, a replacement `next` key, pruning of retired keys);
//! [`plan_revoke`] handles an emergency revocation. They return [`Action`]s
//! that the manager applies in one transaction. Nothing here reads a clock,
//! a database or a random source, so unit tests drive years of schedule in
//! milliseconds.
//!
//! Timeline of one key (see docs/key-rotation.md):
//! generated as `next` (published) → after at least `prepublish`, promoted
//! to `current` at a scheduled rotation → `retired` at the next rotation
//! (still published) → pruned at `retired_at + retire_after`.

use chrono::DateTime;

use super::{KeyState, NewKeyState, SigningAlg};

/// What the lifecycle depends on.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Algorithm new tokens must be signed with.
    pub alg: SigningAlg,
    /// When rotations are due (UTC, with seconds).
    pub schedule: cron::Schedule,
    /// Minimum seconds a key is published before it signs.
    pub prepublish: i64,
    /// Seconds a retired key stays published: access TTL + leeway.
    pub retire_after: i64,
}

/// The lifecycle facts of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// State.
    pub state: KeyState,
    /// First published.
    pub published_at: i64,
    /// Started signing.
    pub activated_at: Option<i64>,
    /// Stopped signing.
    pub retired_at: Option<i64>,
}

/// Why a rotation is being considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The scheduler's periodic check (and start-up).
    Scheduled,
    /// An operator asked; `force` skips the prepublish wait.
    Manual {
        /// Rotate even if `next` has not been published long enough.
        force: bool,
    },
}

/// One change to the keyset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Generate a key of the policy's algorithm in this state.
    Generate(NewKeyState),
    /// `next` → `current`.
    Promote(String),
    /// `current` → `retired`.
    Retire(String),
    /// Remove a retired key whose tokens have all expired.
    Prune(String),
    /// Remove a `next` key that never signed (its algorithm is no longer used,
    /// or it was replaced by an imported key).
    Drop(String),
    /// Remove from the JWKS at once and destroy the private half.
    Revoke(String),
}

/// The actions due now and what that leaves for later.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Changes to apply now, in order.
    pub actions: Vec<Action>,
    /// A due rotation was postponed because `next` is too fresh; it will
    /// happen at this time.
    pub postponed_until: Option<i64>,
}

impl Plan {
    /// Whether the plan rotates (promotes a key).
    pub fn rotates(&self) -> bool {
        self.actions.iter().any(|a| matches!(a, Action::Promote(_)))
    }
}

/// Refusals of the planner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// A manual rotation before `next` has been published for `prepublish`.
    #[error("the next key has not been published long enough; rotation possible from {earliest}")]
    TooEarly {
        /// Unix seconds from which the rotation is allowed.
        earliest: i64,
    },
    /// No key with this id (or it is already revoked).
    #[error("no such key")]
    NotFound,
}

fn cron_after(schedule: &cron::Schedule, at: i64) -> Option<i64> {
    let at = DateTime::from_timestamp(at, 0)?;
    schedule.after(&at).next().map(|t| t.timestamp())
}

/// The key that signs: the policy's algorithm first, then the most recently
/// activated.
pub fn signer<'a>(keys: &'a [KeyMeta], policy: &Policy) -> Option<&'a KeyMeta> {
    keys.iter()
        .filter(|k| k.state == KeyState::Current)
        .max_by_key(|k| (k.alg == policy.alg, k.activated_at))
}

/// The `next` key the next rotation will promote: the oldest of the policy's
/// algorithm.
pub fn successor<'a>(keys: &'a [KeyMeta], policy: &Policy) -> Option<&'a KeyMeta> {
    keys.iter()
        .filter(|k| k.state == KeyState::Next && k.alg == policy.alg)
        .min_by_key(|k| (k.published_at, k.kid.as_str()))
}

/// When the schedule wants the next rotation (ignoring prepublish): the
/// first cron time after the signer's activation, or now if the signer is
/// of another algorithm (a migration) or there is none.
fn rotation_due_at(now: i64, keys: &[KeyMeta], policy: &Policy) -> Option<i64> {
    match signer(keys, policy) {
        None => Some(now),
        Some(k) if k.alg != policy.alg => Some(k.activated_at.unwrap_or(now).min(now)),
        Some(k) => cron_after(&policy.schedule, k.activated_at.unwrap_or(now)),
    }
}

/// When the next rotation will actually happen: when it is due and the
/// successor has been published for `prepublish` (a successor generated at
/// that rotation is assumed if there is none yet).
pub fn next_rotation_at(now: i64, keys: &[KeyMeta], policy: &Policy) -> Option<i64> {
    let due = rotation_due_at(now, keys, policy)?;
    let ready = successor(keys, policy).map_or(now + policy.prepublish, |k| {
        k.published_at + policy.prepublish
    });
    Some(due.max(ready))
}

/// The next time the published keyset will change on its own (rotation or
/// prune): the JWKS must not be cached past it.
pub fn next_change_at(now: i64, keys: &[KeyMeta], policy: &Policy) -> Option<i64> {
    let prune = keys
        .iter()
        .filter(|k| k.state == KeyState::Retired)
        .filter_map(|k| k.retired_at.map(|t| t + policy.retire_after))
        .min();
    [next_rotation_at(now, keys, policy), prune]
        .into_iter()
        .flatten()
        .min()
}

/// What the keyset needs at `now`.
pub fn plan(
    now: i64,
    keys: &[KeyMeta],
    policy: &Policy,
    trigger: Trigger,
) -> Result<Plan, RotationError> {
    let mut plan = Plan::default();
    for key in keys {
        if key.state == KeyState::Retired
            && key.retired_at.unwrap_or(now) + policy.retire_after <= now
        {
            plan.actions.push(Action::Prune(key.kid.clone()));
        }
    }

    let signer = signer(keys, policy);
    let successor = successor(keys, policy);
    let mut successor_consumed = false;
    match signer {
        // No key signs (first start, or every signer gone): signing must
        // resume now, so a waiting key is promoted or a key generated.
        None => match successor {
            Some(next) => {
                plan.actions.push(Action::Promote(next.kid.clone()));
                successor_consumed = true;
            }
            None => plan.actions.push(Action::Generate(NewKeyState::Current)),
        },
        Some(_) => {
            let wanted = match trigger {
                Trigger::Manual { .. } => true,
                Trigger::Scheduled => rotation_due_at(now, keys, policy).is_some_and(|t| t <= now),
            };
            let force = matches!(trigger, Trigger::Manual { force: true });
            if wanted {
                match successor {
                    Some(next) if force || next.published_at + policy.prepublish <= now => {
                        plan.actions.push(Action::Promote(next.kid.clone()));
                        successor_consumed = true;
                    }
                    None if force => plan.actions.push(Action::Generate(NewKeyState::Current)),
                    _ => {
                        let earliest = successor.map_or(now + policy.prepublish, |k| {
                            k.published_at + policy.prepublish
                        });
                        if matches!(trigger, Trigger::Manual { .. }) {
                            return Err(RotationError::TooEarly { earliest });
                        }
                        plan.postponed_until = Some(earliest);
                    }
                }
                let rotating = plan.actions.iter().any(|a| {
                    matches!(
                        a,
                        Action::Promote(_) | Action::Generate(NewKeyState::Current)
                    )
                });
                if rotating {
                    for key in keys.iter().filter(|k| k.state == KeyState::Current) {
                        plan.actions.push(Action::Retire(key.kid.clone()));
                    }
                }
            }
        }
    }

    if successor.is_none() || successor_consumed {
        plan.actions.push(Action::Generate(NewKeyState::Next));
    }
    // Next keys of another algorithm will never sign; once the policy's
    // algorithm signs (or is about to), they leave the JWKS.
    let policy_alg_signs = signer.is_some_and(|k| k.alg == policy.alg)
        || plan.rotates()
        || plan
            .actions
            .contains(&Action::Generate(NewKeyState::Current));
    if policy_alg_signs {
        for key in keys
            .iter()
            .filter(|k| k.state == KeyState::Next && k.alg != policy.alg)
        {
            plan.actions.push(Action::Drop(key.kid.clone()));
        }
    }
    Ok(plan)
}

/// Emergency removal of `kid`; keeps a key signing and a successor waiting.
pub fn plan_revoke(
    kid: &str,
    keys: &[KeyMeta],
    policy: &Policy,
) -> Result<Vec<Action>, RotationError> {
    let target = keys
        .iter()
        .find(|k| k.kid == kid && k.state != KeyState::Revoked)
        .ok_or(RotationError::NotFound)?;
    let mut actions = vec![Action::Revoke(kid.to_owned())];
    let remaining: Vec<KeyMeta> = keys.iter().filter(|k| k.kid != kid).cloned().collect();
    let mut successor = successor(&remaining, policy).map(|k| k.kid.clone());
    let still_signing = remaining.iter().any(|k| k.state == KeyState::Current);
    if target.state == KeyState::Current && !still_signing {
        match successor.take() {
            Some(next) => actions.push(Action::Promote(next)),
            None => actions.push(Action::Generate(NewKeyState::Current)),
        }
    }
    if successor.is_none() {
        actions.push(Action::Generate(NewKeyState::Next));
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    const HOUR: i64 = 3600;
    const DAY: i64 = 24 * HOUR;

    fn policy(alg: SigningAlg) -> Policy {
        Policy {
            alg,
            schedule: cron::Schedule::from_str("0 0 3 * * Sun").unwrap(),
            prepublish: HOUR,
            retire_after: 15 * 60 + 30,
        }
    }

    /// Applies actions the way the manager does, with generated kids.
    fn apply(now: i64, keys: &mut Vec<KeyMeta>, actions: &[Action], policy: &Policy, n: &mut u32) {
        for action in actions {
            match action {
                Action::Generate(state) => {
                    *n += 1;
                    keys.push(KeyMeta {
                        kid: format!("k{n}"),
                        alg: policy.alg,
                        state: (*state).into(),
                        published_at: now,
                        activated_at: (*state == NewKeyState::Current).then_some(now),
                        retired_at: None,
                    });
                }
                Action::Promote(kid) => {
                    let k = keys.iter_mut().find(|k| &k.kid == kid).unwrap();
                    k.state = KeyState::Current;
                    k.activated_at = Some(now);
                }
                Action::Retire(kid) => {
                    let k = keys.iter_mut().find(|k| &k.kid == kid).unwrap();
                    k.state = KeyState::Retired;
                    k.retired_at = Some(now);
                }
                Action::Prune(kid) | Action::Drop(kid) => keys.retain(|k| &k.kid != kid),
                Action::Revoke(kid) => {
                    keys.iter_mut().find(|k| &k.kid == kid).unwrap().state = KeyState::Revoked;
                }
            }
        }
    }

    fn count(keys: &[KeyMeta], state: KeyState) -> usize {
        keys.iter().filter(|k| k.state == state).count()
    }

    // 2026-01-01T00:00:00Z, a Thursday.
    const START: i64 = 1_767_225_600;

    #[test]
    fn first_start_generates_current_and_next() {
        let p = policy(SigningAlg::Rs256);
        let plan = plan(START, &[], &p, Trigger::Scheduled).unwrap();
        assert_eq!(
            plan.actions,
            vec![
                Action::Generate(NewKeyState::Current),
                Action::Generate(NewKeyState::Next)
            ]
        );
    }

    #[test]
    fn two_years_of_weekly_rotation_minute_by_minute_hours() {
        let p = policy(SigningAlg::Rs256);
        let mut keys = Vec::new();
        let mut n = 0;
        let mut rotations = 0;
        // Which key signed at each step, to check the prepublish and
        // retention rules over the whole timeline.
        let mut signed_by: Vec<(i64, String)> = Vec::new();
        let mut now = START;
        while now < START + 2 * 365 * DAY {
            let plan = plan(now, &keys, &p, Trigger::Scheduled).unwrap();
            if plan.rotates() {
                rotations += 1;
            }
            apply(now, &mut keys, &plan.actions, &p, &mut n);
            assert_eq!(count(&keys, KeyState::Current), 1, "one signer at {now}");
            assert_eq!(count(&keys, KeyState::Next), 1, "one successor at {now}");
            let signer = signer(&keys, &p).unwrap().clone();
            // A key signs only after prepublish (except the very first key).
            if signer.kid != "k1" {
                assert!(signer.published_at + p.prepublish <= now);
            }
            signed_by.push((now, signer.kid.clone()));
            // Every key that signed within the access TTL is still published.
            for (t, kid) in signed_by.iter().rev() {
                if *t + p.retire_after - 30 < now {
                    break;
                }
                assert!(
                    keys.iter().any(|k| &k.kid == kid),
                    "{kid} signed at {t}, gone at {now}"
                );
            }
            now += 15 * 60;
        }
        // 104 or 105 Sundays in two years; the first one comes after START.
        assert!((104..=105).contains(&rotations), "{rotations}");
        assert!(keys.len() <= 3, "retired keys are pruned: {keys:?}");
    }

    #[test]
    fn missed_schedules_rotate_once() {
        let p = policy(SigningAlg::Rs256);
        let mut keys = Vec::new();
        let mut n = 0;
        let first = plan(START, &keys, &p, Trigger::Scheduled).unwrap();
        apply(START, &mut keys, &first.actions, &p, &mut n);
        // Down for five weeks.
        let later = START + 35 * DAY;
        let plan1 = plan(later, &keys, &p, Trigger::Scheduled).unwrap();
        assert!(plan1.rotates());
        apply(later, &mut keys, &plan1.actions, &p, &mut n);
        let plan2 = plan(later + 60, &keys, &p, Trigger::Scheduled).unwrap();
        assert!(!plan2.rotates(), "one rotation, not one per missed tick");
        assert!(next_rotation_at(later + 60, &keys, &p).unwrap() > later + DAY);
    }

    #[test]
    fn due_rotation_waits_for_prepublish() {
        let p = policy(SigningAlg::Rs256);
        // Signer activated long ago; the successor was published 10 minutes ago.
        let keys = vec![
            KeyMeta {
                kid: "cur".into(),
                alg: SigningAlg::Rs256,
                state: KeyState::Current,
                published_at: START - 30 * DAY,
                activated_at: Some(START - 30 * DAY),
                retired_at: None,
            },
            KeyMeta {
                kid: "nxt".into(),
                alg: SigningAlg::Rs256,
                state: KeyState::Next,
                published_at: START - 600,
                activated_at: None,
                retired_at: None,
            },
        ];
        let plan1 = plan(START, &keys, &p, Trigger::Scheduled).unwrap();
        assert!(!plan1.rotates());
        assert_eq!(plan1.postponed_until, Some(START - 600 + HOUR));
        assert_eq!(
            super::plan(START, &keys, &p, Trigger::Manual { force: false }),
            Err(RotationError::TooEarly {
                earliest: START - 600 + HOUR
            })
        );
        let forced = super::plan(START, &keys, &p, Trigger::Manual { force: true }).unwrap();
        assert_eq!(
            forced.actions,
            vec![
                Action::Promote("nxt".into()),
                Action::Retire("cur".into()),
                Action::Generate(NewKeyState::Next)
            ]
        );
        let on_time = super::plan(START - 600 + HOUR, &keys, &p, Trigger::Scheduled).unwrap();
        assert!(on_time.rotates());
    }

    #[test]
    fn algorithm_migration_prepublishes_then_switches() {
        let rs = policy(SigningAlg::Rs256);
        let mut keys = Vec::new();
        let mut n = 0;
        let first = plan(START, &keys, &rs, Trigger::Scheduled).unwrap();
        apply(START, &mut keys, &first.actions, &rs, &mut n);
        // Restart with EdDSA: an EdDSA successor is published, RS256 keeps signing.
        let ed = policy(SigningAlg::EdDsa);
        let t1 = START + DAY;
        let p1 = plan(t1, &keys, &ed, Trigger::Scheduled).unwrap();
        assert!(!p1.rotates());
        apply(t1, &mut keys, &p1.actions, &ed, &mut n);
        assert_eq!(signer(&keys, &ed).unwrap().alg, SigningAlg::Rs256);
        assert!(
            keys.iter()
                .any(|k| k.alg == SigningAlg::EdDsa && k.state == KeyState::Next)
        );
        // Before prepublish has passed nothing changes.
        let p2 = plan(t1 + HOUR - 1, &keys, &ed, Trigger::Scheduled).unwrap();
        assert!(!p2.rotates());
        // Then EdDSA signs, RS256 retires (still published), the RS256 next is dropped.
        let t3 = t1 + HOUR;
        let p3 = plan(t3, &keys, &ed, Trigger::Scheduled).unwrap();
        assert!(p3.rotates());
        apply(t3, &mut keys, &p3.actions, &ed, &mut n);
        let signer = signer(&keys, &ed).unwrap();
        assert_eq!(signer.alg, SigningAlg::EdDsa);
        assert!(
            keys.iter()
                .any(|k| k.alg == SigningAlg::Rs256 && k.state == KeyState::Retired)
        );
        assert!(
            !keys
                .iter()
                .any(|k| k.alg == SigningAlg::Rs256 && k.state == KeyState::Next)
        );
        // After the retire window the RS256 key is pruned.
        let t4 = t3 + ed.retire_after;
        let p4 = plan(t4, &keys, &ed, Trigger::Scheduled).unwrap();
        apply(t4, &mut keys, &p4.actions, &ed, &mut n);
        assert!(keys.iter().all(|k| k.alg == SigningAlg::EdDsa));
    }

    #[test]
    fn revoking_keys_keeps_signing() {
        let p = policy(SigningAlg::EdDsa);
        let mut keys = Vec::new();
        let mut n = 0;
        let first = plan(START, &keys, &p, Trigger::Scheduled).unwrap();
        apply(START, &mut keys, &first.actions, &p, &mut n);
        // Revoke the signer: the successor is promoted at once, a new successor generated.
        let signer_kid = signer(&keys, &p).unwrap().kid.clone();
        let actions = plan_revoke(&signer_kid, &keys, &p).unwrap();
        apply(START + 10, &mut keys, &actions, &p, &mut n);
        assert_eq!(count(&keys, KeyState::Current), 1);
        assert_eq!(count(&keys, KeyState::Next), 1);
        // Revoke the new signer and the successor, one after the other.
        for _ in 0..3 {
            let kid = signer(&keys, &p).unwrap().kid.clone();
            let actions = plan_revoke(&kid, &keys, &p).unwrap();
            apply(START + 20, &mut keys, &actions, &p, &mut n);
            let kid = successor(&keys, &p).unwrap().kid.clone();
            let actions = plan_revoke(&kid, &keys, &p).unwrap();
            apply(START + 20, &mut keys, &actions, &p, &mut n);
            assert_eq!(count(&keys, KeyState::Current), 1);
            assert_eq!(count(&keys, KeyState::Next), 1);
        }
        assert_eq!(plan_revoke("nope", &keys, &p), Err(RotationError::NotFound));
        let revoked = keys
            .iter()
            .find(|k| k.state == KeyState::Revoked)
            .unwrap()
            .kid
            .clone();
        assert_eq!(
            plan_revoke(&revoked, &keys, &p),
            Err(RotationError::NotFound)
        );
    }

    #[test]
    fn next_change_never_past_prune_or_rotation() {
        let p = policy(SigningAlg::Rs256);
        let keys = vec![
            KeyMeta {
                kid: "old".into(),
                alg: SigningAlg::Rs256,
                state: KeyState::Retired,
                published_at: START - 10 * DAY,
                activated_at: Some(START - 10 * DAY),
                retired_at: Some(START - 60),
            },
            KeyMeta {
                kid: "cur".into(),
                alg: SigningAlg::Rs256,
                state: KeyState::Current,
                published_at: START - 10 * DAY,
                activated_at: Some(START - 60),
                retired_at: None,
            },
        ];
        assert_eq!(
            next_change_at(START, &keys, &p),
            Some(START - 60 + p.retire_after)
        );
    }
}
