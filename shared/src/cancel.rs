//! Cancelling: a caller takes back its notifications' deliveries that have not started sending,
//! one notification by id or every one it sent with a cancellation key. A notification's
//! deliveries are cancelled together in one conditional write, from the lifecycle table's cancel
//! row, so a claim racing the cancel either takes a delivery first (it is sent, and the cancel
//! does not report it) or finds it cancelled (it is never sent).

use futures::StreamExt;

use crate::domain::channel::Channel;
use crate::domain::notification::{
    CANCELLATION_SHARDS, CancellationKey, DeliveryId, NotificationId, NotificationRecord,
};
use crate::error::{DependencyError, FailureClass};
use crate::ports::DeliveryLog;

/// Tries of one notification's cancel whose write found the record changed (a dispatcher
/// claimed or released a delivery meanwhile) before giving up as contended.
const TRIES: usize = 5;

/// Notifications one cancel by key looks at; a key on more is cancelled over several calls
/// (each takes the ones it finished out of the index).
pub const MAX_PER_KEY_CALL: usize = 1_000;

/// Notifications cancelled at once by one cancel by key.
const CONCURRENCY: usize = 16;

/// A notification some of whose deliveries were cancelled now.
#[derive(Debug, PartialEq)]
pub struct CancelledNow {
    /// The deliveries cancelled.
    pub deliveries: Vec<(DeliveryId, Channel)>,
    /// The record as it is after.
    pub record: Box<NotificationRecord>,
}

/// What cancelling one notification came to.
#[derive(Debug, PartialEq)]
pub enum Cancelled {
    Now(CancelledNow),
    /// Nothing left to cancel: every delivery is sending or has an outcome.
    NothingLeft(Box<NotificationRecord>),
    /// No such notification of this app (another app's is not told apart from none).
    NotFound,
}

/// What a cancel by key came to.
#[derive(Debug, Default, PartialEq)]
pub struct CancelledByKey {
    /// Deliveries cancelled, over every notification.
    pub deliveries: usize,
    /// The notifications with a delivery cancelled now.
    pub notifications: Vec<CancelledNow>,
    /// Whether every notification with the key was looked at (else call again).
    pub complete: bool,
}

/// Cancels what is left to cancel of notification `id`, sent by app `app_key`.
pub async fn cancel_notification<L: DeliveryLog>(
    log: &L,
    app_key: &str,
    id: &NotificationId,
) -> Result<Cancelled, DependencyError> {
    let mut found = log.get(id).await?;
    for _ in 0..TRIES {
        let now_ms = crate::time::now_epoch_millis();
        let Some(record) = found.filter(|record| record.app_key == app_key && record.expires_at > now_ms / 1000) else {
            return Ok(Cancelled::NotFound);
        };
        let cancelling = record.cancellable(now_ms);
        if cancelling.is_empty() {
            if record.finished() && record.cancel_scope.is_some() {
                // Finished without a cancel: out of the key's index, so that a cancel by key
                // over more notifications than one call looks at moves on past it.
                if let Err(changed) = log.cancel(id, &[], true).await? {
                    found = changed;
                    continue;
                }
            }
            return Ok(Cancelled::NothingLeft(Box::new(record)));
        }
        let nothing_left = record.deliveries.iter().all(|(delivery_id, delivery)| {
            delivery.status.is_final() || cancelling.iter().any(|(c, _)| c == delivery_id)
        });
        match log.cancel(id, &cancelling, nothing_left).await? {
            Ok(record) => {
                return Ok(Cancelled::Now(CancelledNow { deliveries: cancelling, record: Box::new(record) }));
            }
            Err(changed) => found = changed,
        }
    }
    Err(DependencyError {
        class: FailureClass::Transient,
        service: "dynamodb",
        operation: "UpdateItem",
        code: "CancelContended".into(),
        message: format!("notification {id} kept changing while it was being cancelled; try again"),
    })
}

/// Cancels what is left to cancel of every notification app `app_key` sent with `key` (to user
/// `user_id` only, if given), up to [`MAX_PER_KEY_CALL`] of them, starting none after
/// `stop_at_ms` (epoch ms): the caller's answer must not wait for a slow table past its own
/// deadline, and what is not started is left for the next call.
pub async fn cancel_by_key<L: DeliveryLog>(
    log: &L,
    app_key: &str,
    key: &CancellationKey,
    user_id: Option<&str>,
    stop_at_ms: i64,
) -> Result<CancelledByKey, DependencyError> {
    let mut ids = Vec::new();
    for shard in 0..CANCELLATION_SHARDS {
        let found = log.with_cancel_scope(&key.scope(app_key, shard)).await?;
        ids.extend(found.into_iter().filter(|(_, user)| user_id.is_none_or(|wanted| wanted == user)).map(|(id, _)| id));
    }
    let mut complete = ids.len() <= MAX_PER_KEY_CALL;
    ids.truncate(MAX_PER_KEY_CALL);
    let looking_at = ids.len();
    let outcomes: Vec<Result<Cancelled, DependencyError>> = futures::stream::iter(ids)
        .take_while(|_| std::future::ready(crate::time::now_epoch_millis() < stop_at_ms))
        .map(|id| async move { cancel_notification(log, app_key, &id).await })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    complete &= outcomes.len() == looking_at;
    let mut report = CancelledByKey { complete, ..CancelledByKey::default() };
    for outcome in outcomes {
        if let Cancelled::Now(now) = outcome? {
            report.deliveries += now.deliveries.len();
            report.notifications.push(now);
        }
    }
    report.notifications.sort_by(|a, b| a.record.id.as_str().cmp(b.record.id.as_str()));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::lifecycle::TimelineKind;
    use crate::domain::notification::{DeliveryRecord, DeliveryStatus};
    use crate::memory::{MemoryLog, logged};
    use crate::ports::Claim;

    const APP: &str = "ak_0123456789abcdef0123";
    /// A cancel by key's stop time that never comes.
    const NO_STOP: i64 = i64::MAX;

    /// A notification with an SMS and an email delivery in these statuses, sent with `key`.
    fn notification(id: &str, (sms, email): (DeliveryStatus, DeliveryStatus), key: Option<&str>) -> NotificationRecord {
        let mut record = logged(id, "sms", Channel::Sms, sms);
        let mut delivery = DeliveryRecord::queued(Channel::Email, "a@example.com".into(), "t", None);
        delivery.status = email;
        record.deliveries.insert("email".into(), delivery);
        record.cancellation_key = key.map(|key| CancellationKey::parse(key).unwrap());
        record.cancel_scope = record.cancellation_key.as_ref().map(|key| key.scope_of(APP, &record.id));
        record
    }

    fn statuses(log: &MemoryLog, id: &str) -> (DeliveryStatus, DeliveryStatus) {
        (log.delivery(id, "sms").unwrap().status, log.delivery(id, "email").unwrap().status)
    }

    #[tokio::test]
    async fn a_queued_notification_is_cancelled_once_and_only_by_its_app() {
        let log = MemoryLog::default();
        log.insert(notification("n1", (DeliveryStatus::Queued, DeliveryStatus::Parked), Some("k")));
        assert_eq!(cancel_notification(&log, "ak_another", &"n1".into()).await.unwrap(), Cancelled::NotFound);
        let Cancelled::Now(CancelledNow { deliveries, record }) =
            cancel_notification(&log, APP, &"n1".into()).await.unwrap()
        else {
            panic!("cancelled")
        };
        assert_eq!(deliveries, [("email".into(), Channel::Email), ("sms".into(), Channel::Sms)]);
        assert_eq!(statuses(&log, "n1"), (DeliveryStatus::Cancelled, DeliveryStatus::Cancelled));
        assert_eq!(record.events.iter().filter(|event| event.kind == TimelineKind::Cancelled).count(), 2);
        assert_eq!(record.cancel_scope, None, "nothing left for a cancel by key to find");
        assert!(matches!(cancel_notification(&log, APP, &"n1".into()).await.unwrap(), Cancelled::NothingLeft(_)));
        assert_eq!(cancel_notification(&log, APP, &"n2".into()).await.unwrap(), Cancelled::NotFound);
    }

    #[tokio::test]
    async fn a_delivery_sending_or_sent_is_left_as_it_is() {
        let log = MemoryLog::default();
        log.insert(notification("n1", (DeliveryStatus::Sending, DeliveryStatus::Queued), Some("k")));
        let Cancelled::Now(CancelledNow { deliveries, record }) =
            cancel_notification(&log, APP, &"n1".into()).await.unwrap()
        else {
            panic!("cancelled")
        };
        assert_eq!(deliveries, [("email".into(), Channel::Email)]);
        assert_eq!(statuses(&log, "n1"), (DeliveryStatus::Sending, DeliveryStatus::Cancelled));
        assert!(record.cancel_scope.is_some(), "the SMS may come back to the queue (retrying): still findable");
        log.insert(notification("n2", (DeliveryStatus::Sent, DeliveryStatus::Skipped), None));
        assert!(matches!(cancel_notification(&log, APP, &"n2".into()).await.unwrap(), Cancelled::NothingLeft(_)));
    }

    #[tokio::test]
    async fn a_cancel_racing_a_claim_ends_with_the_delivery_sent_or_cancelled_never_both() {
        // Every interleaving of the cancel's read and write with the claim's write.
        for claim_after in 0..8 {
            let log = MemoryLog::default();
            log.insert(notification("n1", (DeliveryStatus::Queued, DeliveryStatus::Sent), None));
            let claim = async {
                for _ in 0..claim_after {
                    tokio::task::yield_now().await;
                }
                log.claim(&"n1".into(), &"sms".into(), Channel::Sms, 1_000, Duration::from_secs(60)).await.unwrap()
            };
            let id = NotificationId::from("n1");
            let (claim, cancel) = tokio::join!(claim, cancel_notification(&log, APP, &id));
            match (claim, cancel.unwrap()) {
                (Claim::Taken { .. }, Cancelled::NothingLeft(_)) => {
                    assert_eq!(log.delivery("n1", "sms").unwrap().status, DeliveryStatus::Sending, "{claim_after}");
                }
                (Claim::Finished(DeliveryStatus::Cancelled), Cancelled::Now(now)) => {
                    assert_eq!(now.deliveries, [("sms".into(), Channel::Sms)], "{claim_after}");
                }
                other => panic!("after {claim_after} yields: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_cancel_by_key_takes_back_the_apps_notifications_with_the_key_for_one_user_or_all() {
        let log = MemoryLog::default();
        for (id, key) in [("n1", Some("spring")), ("n2", Some("spring")), ("n3", Some("summer")), ("n4", None)] {
            log.insert(notification(id, (DeliveryStatus::Queued, DeliveryStatus::Sent), key));
        }
        let mut other_user = notification("n5", (DeliveryStatus::Queued, DeliveryStatus::Queued), Some("spring"));
        other_user.user_id = "u-2".into();
        log.insert(other_user);
        let spring = CancellationKey::parse("spring").unwrap();

        let mine = cancel_by_key(&log, APP, &spring, Some("u-2"), NO_STOP).await.unwrap();
        assert_eq!((mine.deliveries, mine.complete), (2, true));
        assert_eq!(mine.notifications.iter().map(|now| now.record.id.as_str()).collect::<Vec<_>>(), ["n5"]);

        let all = cancel_by_key(&log, APP, &spring, None, NO_STOP).await.unwrap();
        assert_eq!(all.notifications.iter().map(|now| now.record.id.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
        assert_eq!(all.deliveries, 2);
        assert_eq!(statuses(&log, "n3"), (DeliveryStatus::Queued, DeliveryStatus::Sent), "another key");
        assert_eq!(statuses(&log, "n4"), (DeliveryStatus::Queued, DeliveryStatus::Sent), "no key");
        assert_eq!(
            cancel_by_key(&log, APP, &spring, None, NO_STOP).await.unwrap(),
            CancelledByKey { complete: true, ..Default::default() }
        );
        assert_eq!(
            cancel_by_key(&log, "ak_another", &spring, None, NO_STOP).await.unwrap().deliveries,
            0,
            "another app's key"
        );
    }

    #[tokio::test]
    async fn a_key_on_more_notifications_than_one_call_looks_at_is_cancelled_over_several() {
        let log = MemoryLog::default();
        for n in 0..MAX_PER_KEY_CALL + 5 {
            log.insert(notification(&format!("sent-{n:04}"), (DeliveryStatus::Sent, DeliveryStatus::Sent), Some("k")));
        }
        log.insert(notification("waiting", (DeliveryStatus::Queued, DeliveryStatus::Queued), Some("k")));
        let key = CancellationKey::parse("k").unwrap();
        let mut calls = Vec::new();
        loop {
            let report = cancel_by_key(&log, APP, &key, None, NO_STOP).await.unwrap();
            calls.push((report.deliveries, report.complete));
            if report.complete {
                break;
            }
            assert!(calls.len() < 3, "each call moves on: {calls:?}");
        }
        assert_eq!(calls.iter().map(|(deliveries, _)| deliveries).sum::<usize>(), 2, "{calls:?}");
        assert_eq!(statuses(&log, "waiting"), (DeliveryStatus::Cancelled, DeliveryStatus::Cancelled));
    }

    #[tokio::test]
    async fn a_cancel_by_key_out_of_time_starts_nothing_more_and_says_so() {
        let log = MemoryLog::default();
        log.insert(notification("n1", (DeliveryStatus::Queued, DeliveryStatus::Queued), Some("k")));
        let key = CancellationKey::parse("k").unwrap();
        let past = crate::time::now_epoch_millis();
        assert_eq!(
            cancel_by_key(&log, APP, &key, None, past).await.unwrap(),
            CancelledByKey { complete: false, ..Default::default() }
        );
        assert_eq!(statuses(&log, "n1"), (DeliveryStatus::Queued, DeliveryStatus::Queued), "not started");
        let next = cancel_by_key(&log, APP, &key, None, NO_STOP).await.unwrap();
        assert_eq!((next.deliveries, next.complete), (2, true));
    }

    #[test]
    fn a_keys_notifications_spread_over_every_shard() {
        let key = CancellationKey::parse("campaign-7").unwrap();
        let scopes: std::collections::BTreeSet<String> = (0..200)
            .map(|_| key.scope_of(APP, &NotificationId::from(uuid::Uuid::now_v7().to_string().as_str())))
            .collect();
        assert_eq!(scopes.len(), CANCELLATION_SHARDS as usize);
        assert_eq!(CancellationKey::parse("").unwrap_err(), "must be a string of 1 to 255 characters");
        assert!(CancellationKey::parse(&"k".repeat(256)).is_err());
        assert!(CancellationKey::parse(&"é".repeat(255)).is_ok(), "characters, not bytes");
    }
}
