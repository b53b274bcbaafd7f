//! Cutting a type's backlog into windows that each commit (and advance the
//! watermark) on their own.
//!
//! A server that counts (`_summary=count`) gets windows halved until each
//! holds at most `--max-window` resources. One that does not gets windows by
//! time: a day to start, doubled while they come back small, halved when
//! one runs long. A first crawl without counts is one window (there is no
//! lower bound to step from); its pages still commit in chunks, only its
//! watermark waits for the end.

/// Resources changed after `after` (exclusive; none: from the beginning) up
/// to `up_to` (inclusive), UTC µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: Option<i64>,
    pub up_to: i64,
}

/// Windows narrower than this are not split further (search instants are
/// milliseconds).
const NARROWEST: i64 = 2_000;
/// Lower bound used to halve a window that has none.
const EPOCH_2000: i64 = 946_684_800_000_000;
const DAY: i64 = 86_400_000_000;

impl Window {
    /// The two halves, unless the window is too narrow.
    pub fn split(&self) -> Option<(Window, Window)> {
        let lower = self.after.unwrap_or(EPOCH_2000.min(self.up_to - NARROWEST));
        if self.up_to - lower < NARROWEST {
            return None;
        }
        // Millisecond boundaries: what a server's search instants can say.
        let mid = (lower + (self.up_to - lower) / 2) / 1000 * 1000;
        Some((
            Window {
                after: self.after,
                up_to: mid,
            },
            Window {
                after: Some(mid),
                up_to: self.up_to,
            },
        ))
    }
}

/// Splits `window` until each piece holds at most `max` resources by
/// `count`; the pieces in time order, with their counts.
pub async fn plan_counted<E>(
    window: Window,
    max: u64,
    mut count: impl AsyncFnMut(&Window) -> Result<u64, E>,
) -> Result<Vec<(Window, u64)>, E> {
    let mut planned = Vec::new();
    let mut stack = vec![window];
    while let Some(w) = stack.pop() {
        let n = count(&w).await?;
        match (n > max).then(|| w.split()).flatten() {
            Some((left, right)) => {
                stack.push(right);
                stack.push(left);
            }
            None => {
                if n > 0 {
                    planned.push((w, n));
                }
            }
        }
    }
    Ok(planned)
}

/// Time windows for a server that does not count.
pub struct TimeSteps {
    after: Option<i64>,
    up_to: i64,
    step: i64,
    done: bool,
}

impl TimeSteps {
    pub fn new(window: Window) -> Self {
        Self {
            after: window.after,
            up_to: window.up_to,
            step: DAY,
            done: false,
        }
    }

    pub fn next_window(&mut self) -> Option<Window> {
        if self.done {
            return None;
        }
        let up_to = match self.after {
            Some(after) => (after + self.step).min(self.up_to),
            None => self.up_to,
        };
        if up_to >= self.up_to {
            self.done = true;
        }
        let window = Window {
            after: self.after,
            up_to,
        };
        self.after = Some(up_to);
        Some(window)
    }

    /// After a window of `entries`: the next one doubles while they come
    /// back under a quarter of `max`, halves when one ran past it.
    pub fn observe(&mut self, entries: u64, max: u64) {
        if entries > max {
            self.step = (self.step / 2).max(NARROWEST);
        } else if entries < max / 4 {
            self.step = self.step.saturating_mul(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counted_windows_halve_until_each_fits() {
        // 1,000 resources, one per second from t = 1,000 s.
        let at = |s: i64| s * 1_000_000;
        let count = async |w: &Window| -> Result<u64, ()> {
            let lo = w.after.unwrap_or(i64::MIN);
            Ok((1_000..2_000)
                .filter(|s| at(*s) > lo && at(*s) <= w.up_to)
                .count() as u64)
        };
        let whole = Window {
            after: Some(at(0)),
            up_to: at(3_000),
        };
        let plan = plan_counted(whole, 300, count).await.unwrap();
        assert!(plan.iter().all(|(_, n)| *n <= 300));
        assert_eq!(plan.iter().map(|(_, n)| n).sum::<u64>(), 1_000);
        for pair in plan.windows(2) {
            assert!(pair[0].0.up_to <= pair[1].0.after.unwrap(), "in time order");
        }
        // One instant holding more than the maximum cannot be split: one window.
        let crowded = async |_: &Window| -> Result<u64, ()> { Ok(500) };
        let narrow = Window {
            after: Some(at(5)),
            up_to: at(5) + 1_000,
        };
        assert_eq!(plan_counted(narrow, 300, crowded).await.unwrap().len(), 1);
    }

    #[test]
    fn time_steps_cover_the_range_and_adapt() {
        let mut steps = TimeSteps::new(Window {
            after: Some(0),
            up_to: 10 * DAY,
        });
        let first = steps.next_window().unwrap();
        assert_eq!((first.after, first.up_to), (Some(0), DAY));
        steps.observe(10, 1_000);
        let second = steps.next_window().unwrap();
        assert_eq!(second.up_to - second.after.unwrap(), 2 * DAY, "doubled");
        steps.observe(5_000, 1_000);
        let third = steps.next_window().unwrap();
        assert_eq!(third.up_to - third.after.unwrap(), DAY, "halved");
        let mut last = third;
        while let Some(w) = steps.next_window() {
            assert_eq!(w.after, Some(last.up_to), "contiguous");
            last = w;
        }
        assert_eq!(last.up_to, 10 * DAY);
        let mut crawl = TimeSteps::new(Window {
            after: None,
            up_to: DAY,
        });
        assert_eq!(crawl.next_window().unwrap().after, None);
        assert!(crawl.next_window().is_none());
    }
}
