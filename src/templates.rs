//! Helpers shared by page view models: times shown as "3 days ago" with the exact UTC time
//! on hover, and pagination.

use time::{OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description};

use crate::clock::from_unix;

/// A timestamp prepared for display.
#[derive(Debug, Clone)]
pub struct TimeView {
    /// Machine-readable (`<time datetime>`).
    pub iso: String,
    /// Exact, in UTC (hover title, exports).
    pub exact: String,
    /// Human: "in 3 days", "5 minutes ago".
    pub relative: String,
}

impl TimeView {
    pub fn new(ts: i64, now: i64) -> Self {
        let t = from_unix(ts);
        Self {
            iso: t.format(&Rfc3339).unwrap_or_default(),
            exact: exact_utc(t),
            relative: relative(ts - now),
        }
    }
    pub fn opt(ts: Option<i64>, now: i64) -> Option<Self> {
        ts.map(|t| Self::new(t, now))
    }
}

/// RFC 3339 in UTC (`2026-11-23T01:32:05Z`), for JSON.
pub fn rfc3339(ts: i64) -> String {
    from_unix(ts).format(&Rfc3339).unwrap_or_default()
}

/// `2026-11-23 01:32:05 UTC`.
pub fn exact_utc(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.format(&fmt).unwrap_or_default()
}

fn relative(delta: i64) -> String {
    let future = delta > 0;
    let d = delta.unsigned_abs();
    let (n, unit) = match d {
        0..=44 => return "just now".into(),
        45..=3599 => (((d + 30) / 60).clamp(1, 59), "minute"),
        3600..=86_399 => (((d + 1800) / 3600).clamp(1, 23), "hour"),
        86_400..=3_887_999 => ((d + 43_200) / 86_400, "day"),
        3_888_000..=31_535_999 => (((d + 1_296_000) / 2_592_000).min(11), "month"),
        _ => ((d / 31_536_000).max(1), "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if future {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

/// Page navigation for lists.
#[derive(Debug, Clone)]
pub struct Pager {
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    pub first_item: i64,
    pub last_item: i64,
    /// Query string of the current filters, without `page`, ready to append `&page=N`.
    pub base_query: String,
}

impl Pager {
    pub fn new(page: i64, per_page: i64, total: i64, base_query: String) -> Self {
        let pages = ((total + per_page - 1) / per_page).max(1);
        let page = page.clamp(1, pages);
        let first_item = if total == 0 {
            0
        } else {
            (page - 1) * per_page + 1
        };
        Self {
            page,
            pages,
            total,
            first_item,
            last_item: (page * per_page).min(total),
            base_query,
        }
    }
    /// Highest page number accepted from a URL.
    pub const MAX_PAGE: i64 = 1_000_000;

    pub fn offset(page: i64, per_page: i64) -> i64 {
        (page.clamp(1, Self::MAX_PAGE) - 1).saturating_mul(per_page)
    }

    /// The last page's URL when `page` is beyond it (so a stale link does not show an
    /// empty list), else `None`.
    pub fn beyond_end(
        page: i64,
        per_page: i64,
        total: i64,
        path: &str,
        base_query: &str,
    ) -> Option<String> {
        let pages = ((total + per_page - 1) / per_page).max(1);
        (page > pages && total > 0).then(|| {
            let sep = if base_query.is_empty() { "" } else { "&" };
            format!("{path}?{base_query}{sep}page={pages}")
        })
    }
    pub fn has_prev(&self) -> bool {
        self.page > 1
    }
    pub fn has_next(&self) -> bool {
        self.page < self.pages
    }
    pub fn prev(&self) -> i64 {
        self.page - 1
    }
    pub fn next(&self) -> i64 {
        self.page + 1
    }
}

/// Builds a query string from non-empty pairs.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", urlencoding::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        assert_eq!(relative(0), "just now");
        assert_eq!(relative(-120), "2 minutes ago");
        assert_eq!(relative(3 * 86_400), "in 3 days");
        assert_eq!(relative(30 * 86_400), "in 30 days");
        assert_eq!(relative(-3600), "1 hour ago");
        assert_eq!(relative(365 * 86_400), "in 1 year");
        assert_eq!(relative(-59 * 60), "59 minutes ago");
        assert_eq!(relative(60 * 86_400), "in 2 months");
        assert_eq!(relative(2 * 365 * 86_400), "in 2 years");
    }

    #[test]
    fn pager_bounds() {
        let p = Pager::new(3, 25, 60, String::new());
        assert_eq!((p.page, p.pages, p.first_item, p.last_item), (3, 3, 51, 60));
        assert!(!p.has_next() && p.has_prev());
        let empty = Pager::new(1, 25, 0, String::new());
        assert_eq!((empty.first_item, empty.last_item, empty.pages), (0, 0, 1));
    }
}
