//! Quiet hours: a daily window of local time in which non-urgent messages are held until the
//! window ends. Read in the recipient's time zone, with its daylight-saving rules (the tz
//! database bundled in the binary: the Lambda runtime image has none of its own).

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::{Deserialize, Serialize};

use super::user::{TimeZoneName, UserProfile};

/// A local time of day, to the minute (`"22:00"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay {
    minutes: u16,
}

impl TimeOfDay {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("{text:?} is not a time of day as HH:MM (00:00 to 23:59)");
        let (hours, minutes) = text.split_once(':').ok_or_else(invalid)?;
        if hours.len() != 2 || minutes.len() != 2 {
            return Err(invalid());
        }
        let (hours, minutes): (u16, u16) =
            (hours.parse().map_err(|_| invalid())?, minutes.parse().map_err(|_| invalid())?);
        if hours > 23 || minutes > 59 {
            return Err(invalid());
        }
        Ok(Self { minutes: hours * 60 + minutes })
    }

    fn hour(self) -> i8 {
        (self.minutes / 60) as i8
    }

    fn minute(self) -> i8 {
        (self.minutes % 60) as i8
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<TimeOfDay> for String {
    fn from(time: TimeOfDay) -> String {
        format!("{:02}:{:02}", time.hour(), time.minute())
    }
}

/// The window: from `start` until `end`, local time; a window whose end is not after its start
/// crosses midnight (`22:00`–`08:00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Window", into = "Window")]
pub struct QuietHours {
    start: TimeOfDay,
    end: TimeOfDay,
}

/// The wire shape of [`QuietHours`], checked on the way in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    start: TimeOfDay,
    end: TimeOfDay,
}

impl TryFrom<Window> for QuietHours {
    type Error = String;
    fn try_from(window: Window) -> Result<Self, String> {
        Self::new(window.start, window.end)
    }
}

impl From<QuietHours> for Window {
    fn from(quiet: QuietHours) -> Self {
        Window { start: quiet.start, end: quiet.end }
    }
}

impl QuietHours {
    pub fn new(start: TimeOfDay, end: TimeOfDay) -> Result<Self, String> {
        if start == end {
            return Err("start and end must differ (an empty window holds nothing)".into());
        }
        Ok(Self { start, end })
    }

    pub fn start(&self) -> TimeOfDay {
        self.start
    }

    pub fn end(&self) -> TimeOfDay {
        self.end
    }

    /// `"22:00-08:00"`, as the deployment's default is configured.
    pub fn parse_range(text: &str) -> Result<Self, String> {
        let (start, end) = text.split_once('-').ok_or_else(|| format!("{text:?} is not a window as HH:MM-HH:MM"))?;
        Self::new(TimeOfDay::parse(start.trim())?, TimeOfDay::parse(end.trim())?)
    }

    /// Whether local time of day `minutes` is inside the window.
    fn contains(&self, minutes: u16) -> bool {
        let (start, end) = (self.start.minutes, self.end.minutes);
        if start < end { (start..end).contains(&minutes) } else { minutes >= start || minutes < end }
    }

    /// Until when (epoch ms) a message due at `now_ms` is held, in `zone`: the end of the
    /// window it falls in, or `None` outside one. An end the clocks skip (a daylight-saving
    /// gap) is the moment they jump past it; an end they show twice (the hour repeated when
    /// daylight saving ends) is its first showing, and in the repeated hour nothing is held
    /// again.
    pub fn hold_until(&self, now_ms: i64, zone: &TimeZone) -> Option<i64> {
        let now = Timestamp::from_millisecond(now_ms).ok()?;
        let local = now.to_zoned(zone.clone());
        let minutes = local.hour() as u16 * 60 + local.minute() as u16;
        if !self.contains(minutes) {
            return None;
        }
        let today = local.date();
        let end_date = if minutes < self.end.minutes { today } else { today.tomorrow().ok()? };
        let end = end_date.at(self.end.hour(), self.end.minute(), 0, 0);
        let ends = first_instant_at_or_after(zone, end)?;
        (ends > now).then(|| ends.as_millisecond())
    }
}

/// The first instant the clocks of `zone` show `local` or later.
fn first_instant_at_or_after(zone: &TimeZone, local: DateTime) -> Option<Timestamp> {
    match zone.to_ambiguous_zoned(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
        // Read with the offset before the gap, `local` is an instant past the jump; the jump
        // itself is the transition just before it.
        AmbiguousOffset::Gap { before, .. } => {
            let past_the_jump = before.to_timestamp(local).ok()?;
            Some(zone.preceding(past_the_jump).next()?.timestamp())
        }
    }
}

/// The zone a recipient's quiet hours are read in: theirs, else the deployment's default, else
/// UTC.
pub fn zone_of(user: Option<&TimeZoneName>, default: Option<&TimeZoneName>) -> TimeZone {
    user.or(default).and_then(|name| TimeZone::get(name.as_str()).ok()).unwrap_or(TimeZone::UTC)
}

/// The deployment's defaults (template parameters `DefaultTimeZone`, `DefaultQuietHours`), for
/// users who set none.
#[derive(Clone, Debug, Default)]
pub struct QuietHoursPolicy {
    pub default_zone: Option<TimeZoneName>,
    pub default_window: Option<QuietHours>,
}

impl QuietHoursPolicy {
    /// Until when (epoch ms) a message to `user` due at `now_ms` is held: the end of their
    /// window (theirs, else the default), read in their zone (theirs, else the default).
    pub fn hold_until(&self, user: &UserProfile, now_ms: i64) -> Option<i64> {
        let window = user.preferences.quiet_hours.or(self.default_window)?;
        window.hold_until(now_ms, &zone_of(user.timezone.as_ref(), self.default_zone.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, end: &str) -> QuietHours {
        QuietHours::new(TimeOfDay::parse(start).unwrap(), TimeOfDay::parse(end).unwrap()).unwrap()
    }

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn hold(quiet: QuietHours, now: &str, name: &str) -> Option<String> {
        quiet.hold_until(at(now), &zone(name)).map(|ms| Timestamp::from_millisecond(ms).unwrap().to_string())
    }

    #[test]
    fn times_and_windows_are_checked() {
        assert_eq!(String::from(TimeOfDay::parse("07:05").unwrap()), "07:05");
        for bad in ["7:05", "24:00", "12:60", "noon", "12-00", "", "12:0"] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
        }
        assert!(QuietHours::parse_range("22:00-08:00").is_ok());
        assert!(QuietHours::parse_range("08:00-08:00").is_err());
        let parsed: QuietHours = serde_json::from_str(r#"{"start":"22:00","end":"08:00"}"#).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), r#"{"start":"22:00","end":"08:00"}"#);
        assert!(serde_json::from_str::<QuietHours>(r#"{"start":"22:00","end":"08:00","x":1}"#).is_err());
    }

    #[test]
    fn a_window_across_midnight_holds_until_its_end_the_next_morning_in_the_users_zone() {
        let night = window("22:00", "08:00");
        // 23:30 in Paris (UTC+1 in January) is held until 08:00 Paris the next day.
        assert_eq!(hold(night, "2027-01-14T22:30:00Z", "Europe/Paris").as_deref(), Some("2027-01-15T07:00:00Z"));
        // 03:00 Paris, after midnight: until 08:00 the same day.
        assert_eq!(hold(night, "2027-01-15T02:00:00Z", "Europe/Paris").as_deref(), Some("2027-01-15T07:00:00Z"));
        // The same instant is 21:00 in New York: outside.
        assert_eq!(hold(night, "2027-01-15T02:00:00Z", "America/New_York"), None);
        assert_eq!(hold(night, "2027-01-15T07:00:00Z", "Europe/Paris"), None, "the end itself is outside");
        let afternoon = window("13:00", "14:00");
        assert_eq!(hold(afternoon, "2027-01-15T13:59:59Z", "UTC").as_deref(), Some("2027-01-15T14:00:00Z"));
        assert_eq!(hold(afternoon, "2027-01-15T12:59:59Z", "UTC"), None);
    }

    #[test]
    fn an_end_the_clocks_skip_is_the_moment_they_jump() {
        // New York, 2027-03-14: 02:00 EST jumps to 03:00 EDT (07:00Z). A window ending at
        // 02:30 ends at the jump, not at a 02:30 that never shows.
        let quiet = window("22:00", "02:30");
        assert_eq!(hold(quiet, "2027-03-14T05:00:00Z", "America/New_York").as_deref(), Some("2027-03-14T07:00:00Z"));
        // Ending at 08:00 on that day: 08:00 EDT, one hour earlier in UTC than the day before.
        let night = window("22:00", "08:00");
        assert_eq!(hold(night, "2027-03-14T05:00:00Z", "America/New_York").as_deref(), Some("2027-03-14T12:00:00Z"));
        assert_eq!(hold(night, "2027-03-13T05:00:00Z", "America/New_York").as_deref(), Some("2027-03-13T13:00:00Z"));
    }

    #[test]
    fn an_end_the_clocks_show_twice_ends_the_window_once() {
        // New York, 2027-11-07: 02:00 EDT goes back to 01:00 EST (06:00Z); 01:30 shows twice.
        let quiet = window("22:00", "01:30");
        // 00:30 EDT: held until the first 01:30 (EDT, 05:30Z).
        assert_eq!(hold(quiet, "2027-11-07T04:30:00Z", "America/New_York").as_deref(), Some("2027-11-07T05:30:00Z"));
        // 01:10 EST, the repeated hour: the window already ended; not held again.
        assert_eq!(hold(quiet, "2027-11-07T06:10:00Z", "America/New_York"), None);
    }

    #[test]
    fn the_users_zone_comes_first_then_the_default_then_utc() {
        let paris = TimeZoneName::parse("Europe/Paris").unwrap();
        let tokyo = TimeZoneName::parse("Asia/Tokyo").unwrap();
        assert_eq!(zone_of(Some(&paris), Some(&tokyo)).iana_name(), Some("Europe/Paris"));
        assert_eq!(zone_of(None, Some(&tokyo)).iana_name(), Some("Asia/Tokyo"));
        assert_eq!(zone_of(None, None), TimeZone::UTC);
    }
}
