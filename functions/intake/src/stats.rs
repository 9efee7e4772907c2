//! `GET /v1/stats` (scope `status`): delivery counts and rates per template and channel over a
//! time range, from the counters the functions maintain as events happen.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::app::AppRecord;
use notify::domain::notification::{NotificationRecord, SkipReason};
use notify::domain::stats::{ACCEPTED, StatsQuery, skipped_counter};
use notify::store::stats::Counted;

use crate::Intake;
use crate::problem::{ApiError, json_response};

impl Intake {
    pub(crate) async fn get_stats(
        &self,
        app: &AppRecord,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let parameter = |name: &str| request.query_string_parameters.first(name);
        let query = StatsQuery::parse(
            parameter("template"),
            parameter("channel"),
            parameter("from"),
            parameter("to"),
            notify::time::now_epoch_seconds(),
        )
        .map_err(ApiError::Validation)?;
        // An app sees the counts of its own notifications only.
        Ok(json_response(200, "application/json", &self.stats.report(&[app.app_key.as_str()], &query).await?))
    }

    /// Counts a newly accepted notification: each delivery and each channel skipped for the
    /// user's sake (a channel the template has no content for is no delivery: not counted).
    pub(crate) fn count_accepted(&self, record: &NotificationRecord) {
        let skipped: Vec<_> = record.skipped.iter().filter(|skipped| skipped.reason != SkipReason::NoContent).collect();
        let channels = record.deliveries.values().map(|delivery| delivery.channel);
        let counted = Counted { app_key: &record.app_key, template: &record.template };
        for channel in channels.chain(skipped.iter().map(|skipped| skipped.channel)) {
            self.stats.count(counted, channel, ACCEPTED);
            notify::metrics::delivery(channel, notify::metrics::DeliveryMetric::Accepted);
        }
        for skipped in skipped {
            self.stats.count(counted, skipped.channel, &skipped_counter(skipped.reason));
            notify::metrics::delivery(skipped.channel, notify::metrics::DeliveryMetric::Skipped);
        }
    }
}
